//! The report in the formats other tools read: BundleGen's `gpu.devs`
//! template section and a CDI spec (BundleGen's `NAME_libs.json` is
//! [`ProbeReport::libs_file`], which the generator uses too).

use std::collections::BTreeSet;

use bundlegen_protocol::cdi::{CdiDevice, CdiDeviceNode, CdiMount, CdiSpec, ContainerEdits};
use bundlegen_protocol::config::platform::GpuDevice;
use bundlegen_protocol::probe::{DeviceClass, Library, ProbeReport};

/// The CDI kind of the specs we write.
pub const CDI_KIND: &str = "rdkcentral.com/device";
/// Device classes an app container may be given (input and the rest go
/// through the compositor or stay on the host).
const CONTAINER_CLASSES: &[DeviceClass] = &[
    DeviceClass::Gpu,
    DeviceClass::Vpu,
    DeviceClass::Display,
    DeviceClass::Memory,
    DeviceClass::Sound,
];
/// Library name prefixes of graphics stacks: Khronos APIs, GBM, Wayland EGL,
/// vendor GPU and VideoCore userlands.
const GRAPHICS_LIBRARIES: &[&str] = &[
    "libEGL",
    "libGLES",
    "libGLdispatch",
    "libgbm",
    "libwayland-egl",
    "libmali",
    "libMali",
    "libGAL",
    "libVSC",
    "libnexus",
    "libnxpl",
    "libbcm_host",
    "libvchiq_arm",
    "libvcos",
];
/// Mount options for libraries bind-mounted from the box.
const LIBRARY_MOUNT_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "rbind", "rprivate"];

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Device nodes for a template's `gpu.devs`: what app containers use,
/// with `access: rw` and dynamic numbers flagged.
pub fn gpu_devs(report: &ProbeReport) -> Vec<GpuDevice> {
    report
        .devices
        .iter()
        .filter(|d| CONTAINER_CLASSES.contains(&d.class))
        .map(|d| GpuDevice {
            kind: d.kind.clone(),
            path: d.path.clone(),
            major: d.major as i64,
            minor: d.minor as i64,
            access: Some("rw".into()),
            dynamic: d.dynamic,
            ..GpuDevice::default()
        })
        .collect()
}

/// Whether a library belongs to the graphics stack apps get from the box.
pub fn is_graphics_library(library: &Library) -> bool {
    let named = |name: &str| GRAPHICS_LIBRARIES.iter().any(|p| name.starts_with(p));
    library.soname.as_deref().is_some_and(named)
        || library.names.iter().any(|n| named(file_name(n)) || n.contains("/dri/"))
}

/// A CDI spec with one device per class (`gpu`, `vpu`, ...). Dynamic nodes
/// carry only their path, so the runtime reads the numbers at start; the
/// `gpu` device also mounts each graphics library's file at every name that
/// leads to it (CDI cannot create symlinks without hooks, so each name gets
/// the file itself, as BundleGen's `gfxLibs` do). `cdiVersion` is the
/// lowest that covers the fields used.
pub fn cdi(report: &ProbeReport) -> CdiSpec {
    let mut devices = Vec::new();
    for class in CONTAINER_CLASSES {
        let nodes: Vec<_> = report.devices.iter().filter(|d| d.class == *class).collect();
        if nodes.is_empty() {
            continue;
        }
        let mut edits = ContainerEdits::default();
        let mut gids = BTreeSet::new();
        for node in nodes {
            let fixed = !node.dynamic;
            edits.device_nodes.push(CdiDeviceNode {
                path: node.path.clone(),
                kind: fixed.then(|| node.kind.clone()),
                major: fixed.then_some(node.major as i64),
                minor: fixed.then_some(node.minor as i64),
                permissions: Some("rw".into()),
                ..CdiDeviceNode::default()
            });
            // Without world read-write, the app needs the node's group.
            if node.mode & 0o006 != 0o006 && node.gid != 0 {
                gids.insert(node.gid);
            }
        }
        edits.additional_gids = gids.into_iter().collect();
        if *class == DeviceClass::Gpu {
            for library in report.libraries.iter().filter(|l| is_graphics_library(l)) {
                for name in &library.names {
                    edits.mounts.push(CdiMount {
                        host_path: library.path.clone(),
                        container_path: name.clone(),
                        kind: None,
                        options: LIBRARY_MOUNT_OPTIONS.iter().map(|o| o.to_string()).collect(),
                    });
                }
            }
        }
        devices.push(CdiDevice {
            name: class.name().into(),
            container_edits: edits,
            ..CdiDevice::default()
        });
    }
    let mut spec = CdiSpec {
        kind: CDI_KIND.into(),
        devices,
        ..CdiSpec::default()
    };
    spec.cdi_version = spec.minimum_version().into();
    spec
}

#[cfg(test)]
mod tests {
    use bundlegen_protocol::probe::{Abi, Dependency, DeviceNode, SystemInfo};

    use super::*;

    fn library(path: &str, names: &[&str], soname: &str, deps: &[(&str, Option<&str>)]) -> Library {
        Library {
            path: path.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            soname: Some(soname.into()),
            abi: Abi::for_oci_arch("arm").unwrap(),
            needed: deps.iter().map(|(n, _)| n.to_string()).collect(),
            deps: deps
                .iter()
                .map(|(name, path)| Dependency {
                    name: name.to_string(),
                    path: path.map(str::to_string),
                })
                .collect(),
            rpath: vec![],
            runpath: vec![],
            versions: vec!["V_2".into(), "V_1".into()],
            versions_known: true,
            size: 1,
            sha256: "0".repeat(64),
        }
    }

    fn device(path: &str, class: DeviceClass, major: u64, mode: u32, gid: u32, dynamic: bool) -> DeviceNode {
        DeviceNode {
            path: path.into(),
            kind: "c".into(),
            major,
            minor: 0,
            mode,
            uid: 0,
            gid,
            driver: None,
            device_driver: None,
            subsystem: None,
            class,
            dynamic,
            links: vec![],
        }
    }

    fn report() -> ProbeReport {
        ProbeReport {
            format_version: 1,
            tool: "test".into(),
            system: SystemInfo::default(),
            libraries: vec![
                library(
                    "/usr/lib/libEGL.so.1.1.0",
                    &["/usr/lib/libEGL.so", "/usr/lib/libEGL.so.1", "/usr/lib/libEGL.so.1.1.0"],
                    "libEGL.so.1",
                    &[("libc.so.6", Some("/lib/libc.so.6")), ("libgone.so.1", None)],
                ),
                library(
                    "/lib/libc-2.31.so",
                    &["/lib/libc-2.31.so", "/lib/libc.so.6"],
                    "libc.so.6",
                    &[],
                ),
            ],
            devices: vec![
                device("/dev/dri/card0", DeviceClass::Gpu, 226, 0o660, 44, false),
                device("/dev/vchiq", DeviceClass::Gpu, 243, 0o666, 0, true),
                device("/dev/snd/timer", DeviceClass::Sound, 116, 0o660, 29, false),
                device("/dev/input/event0", DeviceClass::Input, 13, 0o660, 105, false),
                device("/dev/null", DeviceClass::Other, 1, 0o666, 0, false),
            ],
            programs: vec![],
            device_mismatches: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn bundlegen_libs_lists_every_name_with_resolved_deps() {
        let libs = report().libs_file();
        let names: Vec<&str> = libs.libs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "/lib/libc-2.31.so",
                "/lib/libc.so.6",
                "/usr/lib/libEGL.so",
                "/usr/lib/libEGL.so.1",
                "/usr/lib/libEGL.so.1.1.0"
            ]
        );
        let egl = &libs.libs[3];
        assert_eq!(egl.apiversions, ["V_2", "V_1"], "file order, as readelf prints them");
        assert_eq!(egl.deps, ["/lib/libc.so.6"], "unresolved ones are left out");
    }

    #[test]
    fn gpu_devs_keep_the_container_classes() {
        let devs = gpu_devs(&report());
        let paths: Vec<(&str, bool)> = devs.iter().map(|d| (d.path.as_str(), d.dynamic)).collect();
        assert_eq!(
            paths,
            [
                ("/dev/dri/card0", false),
                ("/dev/vchiq", true),
                ("/dev/snd/timer", false)
            ]
        );
        assert!(devs.iter().all(|d| d.access.as_deref() == Some("rw")));
    }

    #[test]
    fn cdi_spec_leaves_dynamic_numbers_out_and_mounts_graphics_libraries() {
        let spec = cdi(&report());
        let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["gpu", "sound"]);
        let gpu = &spec.devices[0].container_edits;
        assert_eq!(gpu.device_nodes[0].major, Some(226));
        assert_eq!(gpu.device_nodes[0].kind.as_deref(), Some("c"));
        let vchiq = &gpu.device_nodes[1];
        assert_eq!((vchiq.kind.as_ref(), vchiq.major, vchiq.minor), (None, None, None));
        assert_eq!(gpu.additional_gids, [44], "card0 is not world-writable");
        let mounts: Vec<(&str, &str)> = gpu
            .mounts
            .iter()
            .map(|m| (m.host_path.as_str(), m.container_path.as_str()))
            .collect();
        assert_eq!(mounts.len(), 3);
        assert!(mounts.iter().all(|(host, _)| *host == "/usr/lib/libEGL.so.1.1.0"));
        assert!(mounts.contains(&("/usr/lib/libEGL.so.1.1.0", "/usr/lib/libEGL.so.1")));
        assert_eq!(spec.cdi_version, "0.7.0", "additionalGids need 0.7.0");
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<CdiSpec>(&text).unwrap(), spec);

        let mut world_writable = report();
        for device in &mut world_writable.devices {
            device.mode = 0o666;
        }
        assert_eq!(cdi(&world_writable).cdi_version, "0.3.0");
    }
}
