//! The box's device nodes: walked in `/dev` without following symlinks out
//! of it, named by their drivers (`/proc/devices`, sysfs), classified, and
//! flagged when their numbers are handed out at boot.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use bundlegen_protocol::config::platform::GpuDevice;
use bundlegen_protocol::probe::{DeviceClass, DeviceMismatch, DeviceNode};
use bundlegen_protocol::root::{EntryKind, RootDir};

/// Directories of `/dev` that hold per-session or virtual entries only.
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "mqueue", "hugepages", "fd"];
/// The misc character major: its minors may be dynamic too.
const MISC_MAJOR: u64 = 10;
const MAX_DEPTH: usize = 8;

/// A node as found, before it is named and classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNode {
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What sysfs says about a device number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsInfo {
    pub subsystem: Option<String>,
    /// The driver bound to the device (`vc4-drm`, `snd_bcm2835`, ...).
    pub driver: Option<String>,
}

/// Where device facts come from: a box's root (live, or an image), or a fake.
pub trait DeviceSource {
    /// Device nodes under `/dev`, and `/dev` symlinks with the node path
    /// they lead to; problems go to `warnings`.
    fn nodes(&mut self, warnings: &mut Vec<String>) -> (Vec<FoundNode>, Vec<(String, String)>);
    /// The text of `/proc/devices`, if there is one.
    fn proc_devices(&mut self) -> Option<String>;
    fn sysfs(&mut self, kind: char, major: u64, minor: u64) -> SysfsInfo;
}

/// Devices read from a root directory.
pub struct RootDevices<'a>(pub &'a mut RootDir);

impl RootDevices<'_> {
    fn walk(
        &mut self,
        dir: &str,
        depth: usize,
        found: &mut (Vec<FoundNode>, Vec<(String, String)>),
        warnings: &mut Vec<String>,
    ) {
        let entries = match self.0.read_dir(Path::new(dir.trim_start_matches('/'))) {
            Ok(entries) => entries,
            Err(e) => {
                if dir != "/dev" || e.io_kind() != Some(std::io::ErrorKind::NotFound) {
                    warnings.push(format!("{dir}: cannot list it: {e}"));
                }
                return;
            }
        };
        for (name, kind) in entries {
            let name = name.to_string_lossy();
            let path = format!("{dir}/{name}");
            let relative = Path::new(path.trim_start_matches('/'));
            match kind {
                EntryKind::Dir if depth < MAX_DEPTH && !(depth == 0 && SKIPPED_DIRS.contains(&name.as_ref())) => {
                    self.walk(&path, depth + 1, found, warnings)
                }
                EntryKind::CharDevice | EntryKind::BlockDevice => match self.0.lstat(relative) {
                    Ok(Some(st)) => found.0.push(FoundNode {
                        path,
                        kind: if kind == EntryKind::CharDevice { 'c' } else { 'b' },
                        major: nix::sys::stat::major(st.st_rdev),
                        minor: nix::sys::stat::minor(st.st_rdev),
                        mode: st.st_mode & 0o7777,
                        uid: st.st_uid,
                        gid: st.st_gid,
                    }),
                    Ok(None) => {}
                    Err(e) => warnings.push(format!("{path}: cannot stat it: {e}")),
                },
                // Only links that stay inside /dev name a node; the others
                // (`/dev/fd` -> `/proc/self/fd`, ...) are not followed.
                EntryKind::Symlink => {
                    if let Ok(real) = self.0.resolve_follow(relative) {
                        let real = format!("/{}", real.display());
                        if real.starts_with("/dev/") {
                            found.1.push((path, real));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn link_name(&mut self, path: &str) -> Option<String> {
        let real = self.0.resolve_follow(Path::new(path)).ok()?;
        Some(real.file_name()?.to_string_lossy().into_owned())
    }
}

impl DeviceSource for RootDevices<'_> {
    fn nodes(&mut self, warnings: &mut Vec<String>) -> (Vec<FoundNode>, Vec<(String, String)>) {
        let mut found = (Vec::new(), Vec::new());
        self.walk("/dev", 0, &mut found, warnings);
        found
    }

    fn proc_devices(&mut self) -> Option<String> {
        let (file, _) = self.0.open_file_follow(Path::new("proc/devices")).ok()?;
        let mut text = String::new();
        file.take(1 << 20).read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn sysfs(&mut self, kind: char, major: u64, minor: u64) -> SysfsInfo {
        let class = if kind == 'c' { "char" } else { "block" };
        let base = format!("sys/dev/{class}/{major}:{minor}");
        SysfsInfo {
            subsystem: self.link_name(&format!("{base}/subsystem")),
            driver: self.link_name(&format!("{base}/device/driver")),
        }
    }
}

/// Driver names by (kind, major), from `/proc/devices`.
pub fn parse_proc_devices(text: &str) -> BTreeMap<(char, u64), String> {
    let mut names = BTreeMap::new();
    let mut kind = None;
    for line in text.lines() {
        match line.trim() {
            "Character devices:" => kind = Some('c'),
            "Block devices:" => kind = Some('b'),
            line => {
                let mut fields = line.split_whitespace();
                if let (Some(kind), Some(major), Some(name)) = (kind, fields.next(), fields.next())
                    && let Ok(major) = major.parse()
                {
                    names.entry((kind, major)).or_insert_with(|| name.to_string());
                }
            }
        }
    }
    names
}

/// Whether the kernel hands this number out at boot (Linux
/// `include/linux/fs.h`: dynamic char majors 234-254 and 384-511; block
/// majors 240-254 are for local/dynamic use and 259 is the extended
/// block range). Misc minors below 64 or above 255 come from the misc
/// driver's dynamic pool.
pub fn is_dynamic(kind: char, major: u64, minor: u64) -> bool {
    match kind {
        'c' => {
            (234..=254).contains(&major)
                || (384..=511).contains(&major)
                || (major == MISC_MAJOR && !(64..=255).contains(&minor))
        }
        _ => (240..=254).contains(&major) || major == 259,
    }
}

/// What a node is for, from its subsystem, driver and path.
pub fn classify(path: &str, driver: Option<&str>, sysfs: &SysfsInfo) -> DeviceClass {
    let name = path.strip_prefix("/dev/").unwrap_or(path);
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    let subsystem = sysfs.subsystem.as_deref().unwrap_or("");
    let driver = driver.unwrap_or("");
    if subsystem == "drm"
        || starts(&[
            "dri/", "mali", "kgsl", "pvr", "galcore", "vchiq", "nvidia", "nexus", "gpu", "ump", "v3d",
        ])
        || ["mali", "kgsl", "pvrsrvkm", "galcore", "vchiq", "nexus", "drm"].contains(&driver)
    {
        DeviceClass::Gpu
    } else if matches!(subsystem, "video4linux" | "media")
        || starts(&[
            "video",
            "media",
            "v4l-subdev",
            "vpu",
            "mpp_service",
            "amvideo",
            "amstream",
            "vcodec",
            "hevc",
            "mfc",
        ])
    {
        DeviceClass::Vpu
    } else if matches!(subsystem, "graphics" | "cec") || starts(&["fb", "cec", "hdmi"]) {
        DeviceClass::Display
    } else if matches!(subsystem, "dma_heap") || starts(&["dma_heap/", "ion", "vcsm", "vc-mem", "cma"]) {
        DeviceClass::Memory
    } else if subsystem == "input" || starts(&["input/", "uinput", "hidraw"]) {
        DeviceClass::Input
    } else if subsystem == "sound" || starts(&["snd/", "dsp", "mixer"]) {
        DeviceClass::Sound
    } else {
        DeviceClass::Other
    }
}

/// The inventory: every node, named and classified, sorted by path.
pub fn inventory(source: &mut dyn DeviceSource, warnings: &mut Vec<String>) -> Vec<DeviceNode> {
    let (found, links) = source.nodes(warnings);
    let drivers = source
        .proc_devices()
        .map(|t| parse_proc_devices(&t))
        .unwrap_or_default();
    let mut devices: Vec<DeviceNode> = found
        .into_iter()
        .map(|node| {
            let sysfs = source.sysfs(node.kind, node.major, node.minor);
            let driver = drivers.get(&(node.kind, node.major)).cloned();
            DeviceNode {
                class: classify(&node.path, driver.as_deref(), &sysfs),
                dynamic: is_dynamic(node.kind, node.major, node.minor),
                path: node.path,
                kind: node.kind.to_string(),
                major: node.major,
                minor: node.minor,
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                driver,
                device_driver: sysfs.driver,
                subsystem: sysfs.subsystem,
                links: Vec::new(),
            }
        })
        .collect();
    devices.sort_by(|a, b| a.path.cmp(&b.path));
    for (link, target) in links {
        if let Some(device) = devices.iter_mut().find(|d| d.path == target) {
            device.links.push(link);
        }
    }
    for device in &mut devices {
        device.links.sort();
    }
    devices
}

/// The nodes a template's `gpu.devs` names that the box lacks, or has with
/// another type or other numbers.
pub fn check_expected(devices: &[DeviceNode], expected: &[GpuDevice]) -> Vec<DeviceMismatch> {
    let mut mismatches = Vec::new();
    for wanted in expected {
        let mismatch = |problem: &str, detail: String| DeviceMismatch {
            path: wanted.path.clone(),
            problem: problem.into(),
            detail,
        };
        let Some(node) = devices.iter().find(|d| d.path == wanted.path) else {
            mismatches.push(mismatch(
                "absent",
                "the template names it; the box has no such node".into(),
            ));
            continue;
        };
        if node.kind != wanted.kind {
            mismatches.push(mismatch(
                "type",
                format!("the template says type {}, the box has {}", wanted.kind, node.kind),
            ));
        } else if !wanted.dynamic && (node.major as i64, node.minor as i64) != (wanted.major, wanted.minor) {
            mismatches.push(mismatch(
                "numbers",
                format!(
                    "the template says {}:{}, the box has {}:{}; update it or mark it dynamic",
                    wanted.major, wanted.minor, node.major, node.minor
                ),
            ));
        } else if !wanted.dynamic && node.dynamic {
            mismatches.push(mismatch(
                "dynamic",
                format!(
                    "{}:{} is handed out at boot and may change; mark it dynamic",
                    node.major, node.minor
                ),
            ));
        }
    }
    mismatches
}

#[cfg(test)]
mod tests;
