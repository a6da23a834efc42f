//! `platform-probe --format gpu-layer`: the GPU layer RALF apps are overlaid
//! with, from crafted box roots of two architectures.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use bundlegen_fixtures::elf::ElfSpec;
use bundlegen_fixtures::rootfs::RootBuilder;
use serde_json::Value;

fn build_box(root: &Path, library: fn(&str) -> ElfSpec, loader: &str) {
    let b = RootBuilder::new(root);
    b.elf(
        loader,
        &library(loader.rsplit('/').next().unwrap()).defines(&["GLIBC_2.4"]),
    )
    .elf("/lib/libc.so.6", &library("libc.so.6").defines(&["GLIBC_2.4"]))
    .elf(
        "/usr/lib/libEGL.so.1.4.0",
        &library("libEGL.so.1").needs(&["libmali.so.0", "libc.so.6"]),
    )
    .symlink("/usr/lib/libEGL.so.1", "libEGL.so.1.4.0")
    .elf(
        "/usr/lib/libGLESv2.so.2",
        &library("libGLESv2.so.2").needs(&["libmali.so.0"]),
    )
    .elf(
        "/usr/lib/libGLESv1_CM.so.1",
        &library("libGLESv1_CM.so.1").needs(&["libmali.so.0"]),
    )
    .elf(
        "/usr/lib/libwayland-egl.so.1",
        &library("libwayland-egl.so.1").needs(&["libwayland-client.so.0"]),
    )
    .elf(
        "/usr/lib/libwayland-client.so.0",
        &library("libwayland-client.so.0").needs(&["libffi.so.8", "libc.so.6"]),
    )
    .elf("/usr/lib/libffi.so.8", &library("libffi.so.8").needs(&["libc.so.6"]))
    .elf(
        "/usr/lib/libmali.so.0",
        &library("libmali.so.0").needs(&["libdrm.so.2", "libm.so.6"]),
    )
    .elf("/usr/lib/libdrm.so.2", &library("libdrm.so.2").needs(&["libc.so.6"]))
    .elf(
        "/lib/libm.so.6",
        &library("libm.so.6").needs(&["libc.so.6"]).defines(&["GLIBC_2.4"]),
    )
    .elf("/usr/lib/libz.so.1", &library("libz.so.1").needs(&["libc.so.6"]))
    .file(
        "/usr/share/glvnd/egl_vendor.d/10_mali.json",
        br#"{"file_format_version":"1.0.0","ICD":{"library_path":"libEGL.so.1"}}"#,
    )
    .dir("/dev");
    if nix::unistd::geteuid().is_root() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        for (path, major, minor, gid) in [
            ("dev/mali0", 10, 60, 44),
            ("dev/dri/renderD128", 226, 128, 44),
            ("dev/dma_heap/system", 250, 0, 0),
            ("dev/input/event0", 13, 64, 0),
        ] {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o660),
                makedev(major, minor),
            )
            .unwrap();
            nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid))).unwrap();
        }
    }
}

fn probe(root: &Path, out: &Path, extra: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_platform-probe"))
        .arg("--root")
        .arg(root)
        .args(["--format", "gpu-layer", "-o"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_layer_holds_the_graphics_closure_and_its_devices() {
    for (arch, library, loader) in [
        (
            "arm",
            ElfSpec::arm_library as fn(&str) -> ElfSpec,
            "/lib/ld-linux-armhf.so.3",
        ),
        ("x86_64", ElfSpec::x86_64_library, "/lib64/ld-linux-x86-64.so.2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("box");
        build_box(&root, library, loader);
        let out = dir.path().join("gpu-layer");
        probe(&root, &out, &[]);
        let layer = out.join("rootfs");
        for name in [
            "libEGL.so.1.4.0",
            "libGLESv2.so.2",
            "libGLESv1_CM.so.1",
            "libwayland-egl.so.1",
            "libwayland-client.so.0",
            "libffi.so.8",
            "libmali.so.0",
            "libdrm.so.2",
        ] {
            let inside = layer.join("usr/lib").join(name);
            let source = root.join("usr/lib").join(name);
            assert_eq!(fs::read(&inside).unwrap(), fs::read(&source).unwrap(), "{arch}: {name}");
            assert_eq!(
                fs::metadata(&inside).unwrap().ino(),
                fs::metadata(&source).unwrap().ino(),
                "{arch}: {name} is a hard link"
            );
        }
        assert_eq!(
            fs::read_link(layer.join("usr/lib/libEGL.so.1")).unwrap(),
            Path::new("libEGL.so.1.4.0")
        );
        for absent in ["lib/libc.so.6", "lib/libm.so.6", &loader[1..], "usr/lib/libz.so.1"] {
            assert!(
                fs::symlink_metadata(layer.join(absent)).is_err(),
                "{arch}: {absent} must stay out"
            );
        }
        let config: Value = serde_json::from_slice(&fs::read(out.join("config.json")).unwrap()).unwrap();
        let support = &config["vendorGpuSupport"];
        assert_eq!(
            support["files"][0]["source"],
            "/usr/share/glvnd/egl_vendor.d/10_mali.json"
        );
        assert_eq!(support["files"][0]["type"], "bind");
        if nix::unistd::geteuid().is_root() {
            let nodes: Vec<&str> = support["devNodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            for node in ["/dev/mali0", "/dev/dri/renderD128", "/dev/dma_heap/system"] {
                assert!(nodes.contains(&node), "{arch}: {nodes:?}");
            }
            assert!(!nodes.contains(&"/dev/input/event0"), "input stays on the host");
            assert_eq!(support["groupIds"], serde_json::json!([44]));
        }
        // Copies on request; and a new layer replaces the old whole.
        fs::remove_file(root.join("usr/lib/libGLESv1_CM.so.1")).unwrap();
        probe(&root, &out, &["--copy"]);
        assert!(
            fs::symlink_metadata(layer.join("usr/lib/libGLESv1_CM.so.1")).is_err(),
            "the old layer is gone"
        );
        let copied = layer.join("usr/lib/libEGL.so.1.4.0");
        assert_ne!(
            fs::metadata(&copied).unwrap().ino(),
            fs::metadata(root.join("usr/lib/libEGL.so.1.4.0")).unwrap().ino()
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "nothing left beside it: {leftovers:?}");
    }
}

#[test]
fn a_box_without_graphics_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    RootBuilder::new(dir.path()).elf("/lib/libc.so.6", &ElfSpec::arm_library("libc.so.6"));
    let output = Command::new(env!("CARGO_BIN_EXE_platform-probe"))
        .arg("--root")
        .arg(dir.path())
        .args(["--format", "gpu-layer", "-o"])
        .arg(dir.path().join("layer"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no graphics libraries"));
    let output = Command::new(env!("CARGO_BIN_EXE_platform-probe"))
        .arg("--root")
        .arg(dir.path())
        .args(["--format", "gpu-layer"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass -o DIR"));
}
