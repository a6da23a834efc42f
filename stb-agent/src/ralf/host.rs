//! The kernel boundary of package instances: [`Mounter`], with the kernel
//! ([`KernelMounter`]: loop devices, dm-verity through `veritysetup`, EROFS,
//! tmpfs, overlay) and a recording fake for the agent's unit tests.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{loopdev, mounts};

/// Prefix of the dm-verity devices the agent makes (`/dev/mapper/<name>`).
pub const DM_PREFIX: &str = "stbagent-";

/// What dm-verity needs of an EROFS image and its hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVerity {
    /// The device-mapper name (`stbagent-...`).
    pub name: String,
    /// The signed root hash (hex).
    pub root_hash: String,
    /// Where the verity superblock starts: the image's size.
    pub hash_offset: u64,
}

/// Where an EROFS image lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsImage {
    pub file: PathBuf,
    /// The content blob's offset in `file`.
    pub offset: u64,
    /// Bytes of the blob to map: the image alone, or with its hash tree
    /// when `verity` is given.
    pub size: u64,
    pub verity: Option<KernelVerity>,
}

pub trait Mounter: Send + Sync {
    /// Mounts an EROFS image at `target`: read-only, `nodev,nosuid`, on a
    /// loop device over its range (through dm-verity when asked).
    fn mount_erofs(&self, image: &ErofsImage, target: &Path) -> io::Result<()>;
    /// Binds a directory tree at `target`, read-only.
    fn bind_read_only(&self, source: &Path, target: &Path) -> io::Result<()>;
    fn mount_tmpfs(&self, target: &Path, size: u64) -> io::Result<()>;
    /// The overlay of `lower` (uppermost first).
    fn mount_overlay(&self, lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()>;
    /// Takes down every mount at or under `dir`, deepest first, and the
    /// dm-verity devices they used (loop devices clear themselves).
    /// Returns how many mounts there were.
    fn unmount_under(&self, dir: &Path) -> io::Result<usize>;
    /// Mount points at or under `dir`.
    fn mounted_under(&self, dir: &Path) -> Vec<PathBuf>;
    /// Closes the agent's dm-verity devices nothing mounts (left by a
    /// crash between opening one and mounting it). Returns how many.
    fn release_stale(&self) -> io::Result<usize>;
}

/// The kernel's mounts.
pub struct KernelMounter {
    pub veritysetup: PathBuf,
}

/// How long `veritysetup` may take.
const VERITYSETUP_TIMEOUT: Duration = Duration::from_secs(30);

impl KernelMounter {
    fn veritysetup(&self, args: &[&str]) -> io::Result<()> {
        let mut child = Command::new(&self.veritysetup)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::other(format!("{}: {e}", self.veritysetup.display())))?;
        let deadline = Instant::now() + VERITYSETUP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "veritysetup {} took longer than {VERITYSETUP_TIMEOUT:?}",
                    args[0]
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = io::Read::read_to_string(&mut io::Read::take(&mut pipe, 4096), &mut stderr);
        }
        Err(io::Error::other(format!(
            "veritysetup {} failed ({status}): {}",
            args[0],
            stderr.trim()
        )))
    }
}

impl Mounter for KernelMounter {
    fn mount_erofs(&self, image: &ErofsImage, target: &Path) -> io::Result<()> {
        let device = loopdev::attach(&image.file, image.offset, image.size)?;
        let Some(verity) = &image.verity else {
            return mounts::mount_erofs(&device.path, target);
        };
        let loop_path = device.path.to_string_lossy().into_owned();
        self.veritysetup(&[
            "open",
            &loop_path,
            &verity.name,
            &loop_path,
            &verity.root_hash,
            &format!("--hash-offset={}", verity.hash_offset),
        ])?;
        let mapped = Path::new("/dev/mapper").join(&verity.name);
        mounts::mount_erofs(&mapped, target).inspect_err(|_| {
            let _ = self.veritysetup(&["close", &verity.name]);
        })
    }

    fn bind_read_only(&self, source: &Path, target: &Path) -> io::Result<()> {
        mounts::bind_read_only(source, target)
    }

    fn mount_tmpfs(&self, target: &Path, size: u64) -> io::Result<()> {
        mounts::mount_tmpfs(target, size)
    }

    fn mount_overlay(&self, lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
        mounts::mount_overlay(lower, upper, work, target)
    }

    fn unmount_under(&self, dir: &Path) -> io::Result<usize> {
        let unmounted = mounts::unmount_under(dir)?;
        for mounted in &unmounted {
            let name = mounted
                .source
                .strip_prefix("/dev/mapper")
                .ok()
                .and_then(|n| n.to_str())
                .filter(|n| n.starts_with(DM_PREFIX));
            if let Some(name) = name {
                self.veritysetup(&["close", name])?;
            }
        }
        Ok(unmounted.len())
    }

    fn mounted_under(&self, dir: &Path) -> Vec<PathBuf> {
        mounts::mounted_under(dir).into_iter().map(|m| m.point).collect()
    }

    fn release_stale(&self) -> io::Result<usize> {
        let Ok(entries) = std::fs::read_dir("/sys/block") else {
            return Ok(0);
        };
        let mounted: Vec<PathBuf> = mounts::mounted_under(Path::new("/"))
            .into_iter()
            .map(|m| m.source)
            .collect();
        let mut closed = 0;
        for entry in entries.flatten() {
            let Ok(name) = std::fs::read_to_string(entry.path().join("dm/name")) else {
                continue;
            };
            let name = name.trim();
            let device = Path::new("/dev").join(entry.file_name());
            let mapped = Path::new("/dev/mapper").join(name);
            let held = std::fs::read_dir(entry.path().join("holders")).is_ok_and(|mut h| h.next().is_some());
            if name.starts_with(DM_PREFIX) && !held && !mounted.contains(&mapped) && !mounted.contains(&device) {
                self.veritysetup(&["close", name])?;
                closed += 1;
            }
        }
        Ok(closed)
    }
}

#[cfg(test)]
pub mod fake {
    use std::sync::Mutex;

    use super::*;

    /// A call the instance code made.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum MountCall {
        Erofs { image: ErofsImage, target: PathBuf },
        Bind { source: PathBuf, target: PathBuf },
        Tmpfs { target: PathBuf, size: u64 },
        Overlay { lower: Vec<PathBuf>, target: PathBuf },
        UnmountUnder { dir: PathBuf },
    }

    /// Mounts nothing: records the calls and what would be mounted; `fail`
    /// makes the first call whose kind it names (`"overlay"`, ...) fail.
    #[derive(Default)]
    pub struct RecordingMounter {
        pub calls: Mutex<Vec<MountCall>>,
        pub mounted: Mutex<Vec<PathBuf>>,
        pub fail: Mutex<Option<&'static str>>,
    }

    impl RecordingMounter {
        pub fn calls(&self) -> Vec<MountCall> {
            self.calls.lock().unwrap().clone()
        }

        fn record(&self, kind: &str, call: MountCall, target: &Path) -> io::Result<()> {
            self.calls.lock().unwrap().push(call);
            if self.fail.lock().unwrap().is_some_and(|f| f == kind) {
                *self.fail.lock().unwrap() = None;
                return Err(io::Error::other(format!("{kind} failed (as asked)")));
            }
            self.mounted.lock().unwrap().push(target.to_path_buf());
            Ok(())
        }
    }

    impl Mounter for RecordingMounter {
        fn mount_erofs(&self, image: &ErofsImage, target: &Path) -> io::Result<()> {
            let call = MountCall::Erofs {
                image: image.clone(),
                target: target.to_path_buf(),
            };
            self.record("erofs", call, target)
        }

        fn bind_read_only(&self, source: &Path, target: &Path) -> io::Result<()> {
            let call = MountCall::Bind {
                source: source.to_path_buf(),
                target: target.to_path_buf(),
            };
            self.record("bind", call, target)
        }

        fn mount_tmpfs(&self, target: &Path, size: u64) -> io::Result<()> {
            let call = MountCall::Tmpfs {
                target: target.to_path_buf(),
                size,
            };
            self.record("tmpfs", call, target)
        }

        fn mount_overlay(&self, lower: &[PathBuf], _upper: &Path, _work: &Path, target: &Path) -> io::Result<()> {
            let call = MountCall::Overlay {
                lower: lower.to_vec(),
                target: target.to_path_buf(),
            };
            self.record("overlay", call, target)
        }

        fn unmount_under(&self, dir: &Path) -> io::Result<usize> {
            self.calls
                .lock()
                .unwrap()
                .push(MountCall::UnmountUnder { dir: dir.to_path_buf() });
            let mut mounted = self.mounted.lock().unwrap();
            let before = mounted.len();
            mounted.retain(|p| !p.starts_with(dir));
            Ok(before - mounted.len())
        }

        fn mounted_under(&self, dir: &Path) -> Vec<PathBuf> {
            let mounted = self.mounted.lock().unwrap();
            mounted.iter().filter(|p| p.starts_with(dir)).cloned().collect()
        }

        fn release_stale(&self) -> io::Result<usize> {
            Ok(0)
        }
    }
}
