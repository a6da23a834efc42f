//! The mounts a package instance is made of: EROFS content (read-only,
//! `nodev,nosuid`), a tmpfs for the writable layer, the overlay that joins
//! them; and taking down everything under a directory, deepest first,
//! which is also how stale mounts are found and cleared at start.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

fn error(what: &str, target: &Path, e: nix::errno::Errno) -> io::Error {
    io::Error::other(format!("{what} on {}: {e}", target.display()))
}

/// Mounts the EROFS image on `device` at `target`, read-only.
pub fn mount_erofs(device: &Path, target: &Path) -> io::Result<()> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    mount(Some(device), target, Some("erofs"), flags, None::<&str>).map_err(|e| error("mount -t erofs", target, e))
}

/// Binds `source` at `target`, read-only (a bind mount takes its flags
/// only when remounted).
pub fn bind_read_only(source: &Path, target: &Path) -> io::Result<()> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| error("mount --bind", target, e))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|e| {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        error("mount -o remount,bind,ro", target, e)
    })
}

/// A tmpfs of at most `size` bytes at `target`, for an instance's upper layer.
pub fn mount_tmpfs(target: &Path, size: u64) -> io::Result<()> {
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    let options = format!("size={size},mode=0755");
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options.as_str()))
        .map_err(|e| error("mount -t tmpfs", target, e))
}

/// The overlay of `lower` (uppermost first) under `upper`, at `target`.
pub fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let joined: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    if joined.iter().any(|p| p.contains(':') || p.contains(',')) {
        return Err(io::Error::other("a layer path has ':' or ',' in it"));
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        joined.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| error("mount -t overlay", target, e))
}

/// Decodes a mountinfo path (`\040` for a space, ...).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from(String::from_utf8_lossy(&out).into_owned()))
}

/// A mount, as mountinfo lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub point: PathBuf,
    /// What is mounted (a device, or `overlay`, `tmpfs`).
    pub source: PathBuf,
}

/// Mounts at or under `dir`, deepest (and latest) first.
pub fn mounted_under(dir: &Path) -> Vec<Mounted> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut mounts: Vec<Mounted> = info
        .lines()
        .filter_map(parse_line)
        .filter(|m| m.point.starts_with(&dir))
        .collect();
    mounts.reverse();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.point.components().count()));
    mounts.dedup_by(|a, b| a.point == b.point);
    mounts
}

/// A mountinfo line: `ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER`.
fn parse_line(line: &str) -> Option<Mounted> {
    let point = unescape(line.split(' ').nth(4)?);
    let (_, after) = line.split_once(" - ")?;
    let source = unescape(after.split(' ').nth(1)?);
    Some(Mounted { point, source })
}

/// Unmounts everything at or under `dir`, deepest first; a busy mount is
/// detached lazily so nothing stays in the way. Returns what was mounted.
pub fn unmount_under(dir: &Path) -> io::Result<Vec<Mounted>> {
    let mut unmounted = Vec::new();
    // Stacked mounts show once each in mountinfo: repeat until none is left.
    for _ in 0..8 {
        let mounts = mounted_under(dir);
        if mounts.is_empty() {
            break;
        }
        for mounted in mounts {
            match umount2(&mounted.point, MntFlags::empty()) {
                Ok(()) => unmounted.push(mounted),
                Err(nix::errno::Errno::EBUSY) => {
                    umount2(&mounted.point, MntFlags::MNT_DETACH).map_err(|e| error("umount", &mounted.point, e))?;
                    unmounted.push(mounted);
                }
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(error("umount", &mounted.point, e)),
            }
        }
    }
    Ok(unmounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_and_source() {
        let line = "36 35 98:0 / /run/x\\040y rw,noatime master:1 - erofs /dev/mapper/stbagent-a ro";
        assert_eq!(
            parse_line(line),
            Some(Mounted {
                point: PathBuf::from("/run/x y"),
                source: PathBuf::from("/dev/mapper/stbagent-a"),
            })
        );
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/run/a\\040b"), PathBuf::from("/run/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/trail\\04"), PathBuf::from("/trail\\04"));
    }
}
