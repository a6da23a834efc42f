use std::collections::BTreeMap;
use std::process::Command;

use bundlegen_protocol::manifest::NodeKind;
use bundlegen_protocol::root::{MissingDirs, RootDir, Symlinks};

use super::*;

/// A recording fake: nodes, links, `/proc/devices` and sysfs as given.
#[derive(Default)]
struct FakeSource {
    nodes: Vec<FoundNode>,
    links: Vec<(String, String)>,
    proc_devices: Option<String>,
    sysfs: BTreeMap<(char, u64, u64), SysfsInfo>,
    sysfs_asked: Vec<(char, u64, u64)>,
}

impl DeviceSource for FakeSource {
    fn nodes(&mut self, _warnings: &mut Vec<String>) -> (Vec<FoundNode>, Vec<(String, String)>) {
        (self.nodes.clone(), self.links.clone())
    }

    fn proc_devices(&mut self) -> Option<String> {
        self.proc_devices.clone()
    }

    fn sysfs(&mut self, kind: char, major: u64, minor: u64) -> SysfsInfo {
        self.sysfs_asked.push((kind, major, minor));
        self.sysfs.get(&(kind, major, minor)).cloned().unwrap_or_default()
    }
}

fn node(path: &str, kind: char, major: u64, minor: u64) -> FoundNode {
    FoundNode {
        path: path.into(),
        kind,
        major,
        minor,
        mode: 0o660,
        uid: 0,
        gid: 44,
    }
}

const PROC_DEVICES: &str = "Character devices:\n  1 mem\n 10 misc\n 13 input\n 29 fb\n 81 video4linux\n116 alsa\n\
    226 drm\n243 vchiq\n248 mali\n\nBlock devices:\n  7 loop\n259 blkext\n";

fn subsystem(name: &str) -> SysfsInfo {
    SysfsInfo {
        subsystem: Some(name.into()),
        driver: None,
    }
}

#[test]
fn nodes_are_named_classified_and_flagged() {
    let mut source = FakeSource {
        nodes: vec![
            node("/dev/vchiq", 'c', 243, 0),
            node("/dev/dri/card0", 'c', 226, 0),
            node("/dev/dri/renderD128", 'c', 226, 128),
            node("/dev/mali0", 'c', 248, 0),
            node("/dev/video10", 'c', 81, 3),
            node("/dev/fb0", 'c', 29, 0),
            node("/dev/snd/pcmC0D0p", 'c', 116, 16),
            node("/dev/input/event0", 'c', 13, 64),
            node("/dev/dma_heap/linux,cma", 'c', 251, 0),
            node("/dev/null", 'c', 1, 3),
            node("/dev/cpu_dma_latency", 'c', 10, 259),
            node("/dev/fuse", 'c', 10, 229),
            node("/dev/nvme0n1", 'b', 259, 0),
            node("/dev/loop0", 'b', 7, 0),
        ],
        links: vec![("/dev/dri/by-path/platform-gpu-card".into(), "/dev/dri/card0".into())],
        proc_devices: Some(PROC_DEVICES.into()),
        sysfs: BTreeMap::from([
            (
                ('c', 226, 0),
                SysfsInfo {
                    subsystem: Some("drm".into()),
                    driver: Some("vc4-drm".into()),
                },
            ),
            (('c', 81, 3), subsystem("video4linux")),
            (('c', 251, 0), subsystem("dma_heap")),
        ]),
        ..FakeSource::default()
    };
    let mut warnings = Vec::new();
    let devices = inventory(&mut source, &mut warnings);
    let paths: Vec<&str> = devices.iter().map(|d| d.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "sorted by path");
    let get = |path: &str| devices.iter().find(|d| d.path == path).unwrap();
    let table: &[(&str, DeviceClass, bool, Option<&str>)] = &[
        ("/dev/vchiq", DeviceClass::Gpu, true, Some("vchiq")),
        ("/dev/dri/card0", DeviceClass::Gpu, false, Some("drm")),
        ("/dev/dri/renderD128", DeviceClass::Gpu, false, Some("drm")),
        ("/dev/mali0", DeviceClass::Gpu, true, Some("mali")),
        ("/dev/video10", DeviceClass::Vpu, false, Some("video4linux")),
        ("/dev/fb0", DeviceClass::Display, false, Some("fb")),
        ("/dev/snd/pcmC0D0p", DeviceClass::Sound, false, Some("alsa")),
        ("/dev/input/event0", DeviceClass::Input, false, Some("input")),
        ("/dev/dma_heap/linux,cma", DeviceClass::Memory, true, None),
        ("/dev/null", DeviceClass::Other, false, Some("mem")),
        ("/dev/cpu_dma_latency", DeviceClass::Other, true, Some("misc")),
        ("/dev/fuse", DeviceClass::Other, false, Some("misc")),
        ("/dev/nvme0n1", DeviceClass::Other, true, Some("blkext")),
        ("/dev/loop0", DeviceClass::Other, false, Some("loop")),
    ];
    for (path, class, dynamic, driver) in table {
        let device = get(path);
        assert_eq!(
            (device.class, device.dynamic, device.driver.as_deref()),
            (*class, *dynamic, *driver),
            "{path}"
        );
    }
    let card = get("/dev/dri/card0");
    assert_eq!(card.device_driver.as_deref(), Some("vc4-drm"));
    assert_eq!(card.subsystem.as_deref(), Some("drm"));
    assert_eq!(card.links, ["/dev/dri/by-path/platform-gpu-card"]);
    assert_eq!(source.sysfs_asked.len(), 14, "sysfs is asked once per node");
    assert!(warnings.is_empty());
}

#[test]
fn proc_devices_separates_char_and_block() {
    let names = parse_proc_devices(PROC_DEVICES);
    assert_eq!(names[&('c', 226)], "drm");
    assert_eq!(names[&('b', 7)], "loop");
    assert!(!names.contains_key(&('b', 226)));
    assert!(parse_proc_devices("garbage\n 12\nx y\n").is_empty());
}

#[test]
fn expected_nodes_are_checked_against_the_box() {
    let devices = inventory(
        &mut FakeSource {
            nodes: vec![
                node("/dev/vchiq", 'c', 243, 0),
                node("/dev/dri/card0", 'c', 226, 0),
                node("/dev/snd/seq", 'c', 116, 1),
                node("/dev/nexus", 'c', 33, 0),
            ],
            ..FakeSource::default()
        },
        &mut Vec::new(),
    );
    let wanted = |path: &str, kind: &str, major: i64, minor: i64, dynamic: bool| GpuDevice {
        kind: kind.into(),
        path: path.into(),
        major,
        minor,
        dynamic,
        ..GpuDevice::default()
    };
    let mismatches = check_expected(
        &devices,
        &[
            wanted("/dev/dri/card0", "c", 226, 0, false),
            wanted("/dev/vchiq", "c", 240, 0, true),
            wanted("/dev/vchiq", "c", 240, 0, false),
            wanted("/dev/snd/seq", "c", 116, 1, false),
            wanted("/dev/nexus", "b", 33, 0, false),
            wanted("/dev/mali0", "c", 248, 0, false),
        ],
    );
    let found: Vec<(&str, &str)> = mismatches
        .iter()
        .map(|m| (m.path.as_str(), m.problem.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("/dev/vchiq", "numbers"),
            ("/dev/nexus", "type"),
            ("/dev/mali0", "absent")
        ]
    );
    let vchiq_static = check_expected(&devices, &[wanted("/dev/vchiq", "c", 243, 0, false)]);
    assert_eq!(vchiq_static[0].problem, "dynamic");
}

/// This machine's `/dev` against `stat` (the peer): same nodes, numbers,
/// modes and owners.
#[test]
fn this_machines_dev_agrees_with_stat() {
    let mut root = RootDir::open(std::path::Path::new("/"), Symlinks::FollowInRoot).unwrap();
    let mut warnings = Vec::new();
    let devices = inventory(&mut RootDevices(&mut root), &mut warnings);
    assert!(devices.iter().any(|d| d.path == "/dev/null"));
    let paths: Vec<&str> = devices.iter().map(|d| d.path.as_str()).collect();
    let output = Command::new("stat")
        .args(["-c", "%n %F %t %T %a %u %g"])
        .args(&paths)
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for (line, device) in text.lines().zip(&devices) {
        let fields: Vec<&str> = line.split(' ').collect();
        let kind = if line.contains("character special file") {
            "c"
        } else {
            "b"
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        let n = fields.len();
        assert_eq!(fields[0], device.path);
        assert_eq!(kind, device.kind, "{line}");
        assert_eq!(
            (hex(fields[n - 5]), hex(fields[n - 4])),
            (device.major, device.minor),
            "{line}"
        );
        assert_eq!(u32::from_str_radix(fields[n - 3], 8).unwrap(), device.mode, "{line}");
        assert_eq!(fields[n - 2].parse::<u32>().unwrap(), device.uid, "{line}");
        assert_eq!(fields[n - 1].parse::<u32>().unwrap(), device.gid, "{line}");
    }
    let null = devices.iter().find(|d| d.path == "/dev/null").unwrap();
    assert_eq!((null.major, null.minor, null.driver.as_deref()), (1, 3, Some("mem")));
    // Per-session and symlinked-away entries are not walked.
    assert!(
        !devices
            .iter()
            .any(|d| d.path.starts_with("/dev/pts/") || d.path.starts_with("/dev/fd/"))
    );
}

/// A box-like root with real nodes (made with mknod, so as root), a
/// `/proc/devices` file and sysfs links: what the probe reads on a box.
#[test]
fn a_box_root_is_read_through_sysfs_links() {
    assert!(nix::unistd::geteuid().is_root(), "creating device nodes needs root");
    let dir = tempfile::tempdir().unwrap();
    let mut root = RootDir::open(dir.path(), Symlinks::FollowInRoot).unwrap();
    let dev = |major: u64, minor: u64| nix::sys::stat::makedev(major, minor);
    let card = root
        .mknod(
            "dev/dri/card0".as_ref(),
            NodeKind::CharDevice,
            0o660,
            dev(226, 0),
            MissingDirs::Create,
        )
        .unwrap();
    root.set_mode(&card, 0o660).unwrap(); // past the umask
    root.mknod(
        "dev/vchiq".as_ref(),
        NodeKind::CharDevice,
        0o666,
        dev(243, 0),
        MissingDirs::Create,
    )
    .unwrap();
    root.symlink(
        "dev/dri/by-path/gpu-card".as_ref(),
        "../card0".as_ref(),
        MissingDirs::Create,
    )
    .unwrap();
    root.symlink("dev/stdin".as_ref(), "/proc/self/fd/0".as_ref(), MissingDirs::Create)
        .unwrap();
    let (mut file, _) = root
        .create_file("proc/devices".as_ref(), 0o444, MissingDirs::Create)
        .unwrap();
    std::io::Write::write_all(&mut file, PROC_DEVICES.as_bytes()).unwrap();
    root.mkdir("sys/devices/gpu/drm/card0".as_ref(), 0o755, MissingDirs::Create)
        .unwrap();
    root.mkdir("sys/class/drm".as_ref(), 0o755, MissingDirs::Create)
        .unwrap();
    root.mkdir("sys/bus/platform/drivers/vc4-drm".as_ref(), 0o755, MissingDirs::Create)
        .unwrap();
    root.symlink(
        "sys/devices/gpu/drm/card0/subsystem".as_ref(),
        "../../../../class/drm".as_ref(),
        MissingDirs::Fail,
    )
    .unwrap();
    root.symlink(
        "sys/devices/gpu/driver".as_ref(),
        "../../bus/platform/drivers/vc4-drm".as_ref(),
        MissingDirs::Fail,
    )
    .unwrap();
    root.symlink(
        "sys/devices/gpu/drm/card0/device".as_ref(),
        "../..".as_ref(),
        MissingDirs::Fail,
    )
    .unwrap();
    root.symlink(
        "sys/dev/char/226:0".as_ref(),
        "../../devices/gpu/drm/card0".as_ref(),
        MissingDirs::Create,
    )
    .unwrap();
    let mut warnings = Vec::new();
    let devices = inventory(&mut RootDevices(&mut root), &mut warnings);
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(devices.len(), 2);
    let card = &devices[0];
    assert_eq!(card.path, "/dev/dri/card0");
    assert_eq!(card.subsystem.as_deref(), Some("drm"));
    assert_eq!(card.device_driver.as_deref(), Some("vc4-drm"));
    assert_eq!(card.driver.as_deref(), Some("drm"));
    assert_eq!(card.links, ["/dev/dri/by-path/gpu-card"]);
    assert_eq!((card.mode, card.class, card.dynamic), (0o660, DeviceClass::Gpu, false));
    let vchiq = &devices[1];
    assert_eq!(
        (vchiq.path.as_str(), vchiq.dynamic, vchiq.class),
        ("/dev/vchiq", true, DeviceClass::Gpu)
    );
}
