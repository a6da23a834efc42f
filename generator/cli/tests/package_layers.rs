//! Layered RALF packages: an app package leaves out what its base and
//! runtime packages provide (identical files, and libraries in a compatible
//! version at the same path), says why with -vv, and the box's overlay of
//! the layers runs the app: real `mount -t overlay` of loop-mounted EROFS
//! content, and real `crun`.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlegen_core::erofs::read::{ErofsImage, Kind};
use bundlegen_fixtures::elf::ElfSpec;
use bundlegen_protocol::ralf::package::{PackageFile, read_layout, verity_annotations};
use bundlegen_protocol::ralf::version::{Constraint, Version};
use serde_json::{Value, json};
use support::*;

/// Files of a layer: (path, bytes, mode).
type Files = Vec<(String, Vec<u8>, u32)>;

/// An image layout of these layers.
fn image(dir: &Path, layers: &[Files]) -> String {
    let mut tars = Vec::new();
    for (index, files) in layers.iter().enumerate() {
        let mut layer = LayerBuilder::default();
        if index == 0 {
            // What a container runtime mounts over, as real base images have.
            layer = layer.dir("dev", 0o755).dir("proc", 0o555);
        }
        for (path, bytes, mode) in files {
            layer = layer.file(path.trim_start_matches('/'), bytes, *mode);
        }
        tars.push((layer.tar(), Compress::Gzip));
    }
    let layout = LayoutBuilder::new(dir);
    let manifest = layout.image(&tars, "amd64", None, json!({"Cmd": ["/app/run.sh"]}));
    layout.tag(manifest, "latest");
    format!("oci:{}", dir.display())
}

fn config(dir: &Path, name: &str, id: &str, version: &str, kind: &str, entry: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(
        &path,
        json!({"id": id, "specVersion": "1.1.0", "version": version, "packageType": kind, "entryPoint": entry})
            .to_string(),
    )
    .unwrap();
    path
}

fn package(config: &Path, image: &str, output: &Path, depends_on: &[&Path]) -> String {
    let mut command = bundlegen();
    command
        .args([
            "-vv",
            "package",
            "-y",
            "--arch",
            "amd64",
            "--content",
            "erofs.lz4",
            "--config",
        ])
        .arg(config);
    for dependency in depends_on {
        command.arg("--depends-on").arg(dependency);
    }
    let output = run(command.arg(image).arg(output));
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Paths of the regular files and symlinks a package's EROFS content holds.
fn content_paths(package: &Path) -> BTreeSet<String> {
    let file = PackageFile::open(package).unwrap();
    let layout = read_layout(&file).unwrap();
    let verity = verity_annotations(&layout.content).unwrap();
    let location = file.location(&layout.content.blob_path()).unwrap();
    let image = ErofsImage::open(file.file(), location.offset, verity.offset).unwrap();
    let mut paths = BTreeSet::new();
    image
        .walk(|path, inode| {
            if inode.kind != Kind::Dir {
                paths.insert(format!("/{}", path.display()));
            }
            Ok(())
        })
        .unwrap();
    paths
}

fn package_config(package: &Path) -> Value {
    let file = PackageFile::open(package).unwrap();
    serde_json::to_value(read_layout(&file).unwrap().config).unwrap()
}

#[test]
fn libraries_are_left_out_only_in_a_compatible_version_and_the_reasons_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let lib = |soname: &str, versions: &[&str]| ElfSpec::x86_64_library(soname).defines(versions);
    let base_files = vec![
        (
            "/usr/lib/libfoo.so.1".to_string(),
            lib("libfoo.so.1", &["FOO_1.0"]).build(),
            0o755,
        ),
        (
            "/usr/lib/libbar.so.1".to_string(),
            lib("libbar.so.1", &["BAR_1.0"]).build(),
            0o755,
        ),
        ("/etc/os-release".to_string(), b"ID=test\n".to_vec(), 0o644),
    ];
    let base = package(
        &config(dir.path(), "base.json", "test.base", "2.4.1", "base", "etc/os-release"),
        &image(&dir.path().join("base-image"), std::slice::from_ref(&base_files)),
        &dir.path().join("base.ralf"),
        &[],
    );
    assert!(base.contains("test.base 2.4.1 (base)"), "{base}");
    let mut bar = lib("libbar.so.1", &["BAR_1.0"]);
    bar.runpath = Some("/another/build".into()); // other bytes, same ABI
    let app = ElfSpec::x86_64_library("x")
        .executable("/lib64/ld-linux-x86-64.so.2")
        .needs(&["libfoo.so.1", "libbar.so.1"])
        .needs_versions("libfoo.so.1", &["FOO_2.0"])
        .needs_versions("libbar.so.1", &["BAR_1.0"]);
    let app_files = vec![
        (
            "/usr/lib/libfoo.so.1".to_string(),
            lib("libfoo.so.1", &["FOO_1.0", "FOO_2.0"]).build(),
            0o755,
        ),
        ("/usr/lib/libbar.so.1".to_string(), bar.build(), 0o755),
        ("/etc/os-release".to_string(), b"ID=test\n".to_vec(), 0o644),
        ("/usr/bin/app".to_string(), app.build(), 0o755),
    ];
    let output = package(
        &config(dir.path(), "app.json", "test.app", "1.0", "application", "usr/bin/app"),
        &image(&dir.path().join("app-image"), &[app_files]),
        &dir.path().join("app.ralf"),
        &[&dir.path().join("base.ralf")],
    );
    assert!(
        output.contains("/usr/lib/libbar.so.1: left out, test.base provides it here"),
        "{output}"
    );
    assert!(output.contains("defines every version the image needs"), "{output}");
    assert!(
        output.contains("libfoo.so.1: kept: test.base's /usr/lib/libfoo.so.1 lacks [\"FOO_2.0\"]"),
        "{output}"
    );
    assert!(
        output.contains("/etc/os-release: left out, identical in test.base"),
        "{output}"
    );
    assert!(output.contains("left out 1 files and 1 libraries"), "{output}");
    let paths = content_paths(&dir.path().join("app.ralf"));
    assert_eq!(
        paths,
        BTreeSet::from(["/usr/bin/app".to_string(), "/usr/lib/libfoo.so.1".to_string()])
    );
    assert_eq!(
        package_config(&dir.path().join("app.ralf"))["dependencies"],
        json!({"test.base": "^2.4"})
    );
}

/// `ldd`'s view of a host program: (needed path, loader).
fn host_closure(program: &str) -> Vec<String> {
    let output = run(Command::new("ldd").arg(program));
    let mut paths = vec![program.to_string()];
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(path.to_string());
        }
    }
    paths
}

fn host_files(paths: &[String]) -> Files {
    paths.iter().map(|p| (p.clone(), fs::read(p).unwrap(), 0o755)).collect()
}

#[test]
fn a_chain_repeats_nothing_and_the_overlay_runs_the_app_with_crun() {
    let dir = tempfile::tempdir().unwrap();
    let shell = host_closure("/bin/sh");
    let tool = host_closure("/usr/bin/zstd");
    let base_files = host_files(&shell);
    let runtime_only: Vec<String> = tool
        .iter()
        .filter(|p| !shell.contains(p) && p.contains(".so"))
        .cloned()
        .collect();
    let runtime_files = host_files(&runtime_only);
    let app_files = vec![
        ("/usr/bin/zstd".to_string(), fs::read("/usr/bin/zstd").unwrap(), 0o755),
        (
            "/app/run.sh".to_string(),
            b"#!/bin/sh\necho app says hello\nzstd --version\n".to_vec(),
            0o755,
        ),
    ];
    // Each image is built on the one below, as images are.
    let base_image = image(&dir.path().join("base-image"), std::slice::from_ref(&base_files));
    let runtime_image = image(
        &dir.path().join("runtime-image"),
        &[base_files.clone(), runtime_files.clone()],
    );
    let app_image = image(
        &dir.path().join("app-image"),
        &[base_files.clone(), runtime_files.clone(), app_files],
    );
    let base = dir.path().join("base.ralf");
    let runtime = dir.path().join("runtime.ralf");
    let app = dir.path().join("app.ralf");
    package(
        &config(dir.path(), "b.json", "os.base", "1.2.0", "base", "bin/sh"),
        &base_image,
        &base,
        &[],
    );
    package(
        &config(dir.path(), "r.json", "zstd.runtime", "3.0.1", "runtime", "bin/sh"),
        &runtime_image,
        &runtime,
        &[&base],
    );
    let output = package(
        &config(
            dir.path(),
            "a.json",
            "com.example.app",
            "1.0.0",
            "application",
            "app/run.sh",
        ),
        &app_image,
        &app,
        &[&runtime, &base],
    );
    assert!(output.contains("left out"), "{output}");

    let base_paths = content_paths(&base);
    let runtime_paths = content_paths(&runtime);
    let app_paths = content_paths(&app);
    assert!(
        base_paths.is_disjoint(&runtime_paths),
        "the runtime repeats the base: {:?}",
        base_paths.intersection(&runtime_paths).collect::<Vec<_>>()
    );
    assert!(
        app_paths.is_disjoint(&base_paths) && app_paths.is_disjoint(&runtime_paths),
        "the app repeats: {app_paths:?}"
    );
    assert_eq!(
        app_paths,
        BTreeSet::from(["/app/run.sh".to_string(), "/usr/bin/zstd".to_string()])
    );
    // The constraints are forms boxes resolve, and accept the versions given.
    let app_config = package_config(&app);
    for (id, version) in [("os.base", "1.2.0"), ("zstd.runtime", "3.0.1")] {
        let constraint: Constraint = app_config["dependencies"][id].as_str().unwrap().parse().unwrap();
        assert!(
            constraint.matches(&version.parse::<Version>().unwrap()),
            "{id}: {constraint}"
        );
    }
    assert_eq!(package_config(&runtime)["dependencies"], json!({"os.base": "^1.2"}));

    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the overlay: mounting needs root (CI runs as root)");
        return;
    }
    let mounts = dir.path().join("mounts");
    let mut lower = Vec::new();
    for (name, package) in [("app", &app), ("runtime", &runtime), ("base", &base)] {
        let file = PackageFile::open(package).unwrap();
        let layout = read_layout(&file).unwrap();
        let verity = verity_annotations(&layout.content).unwrap();
        let offset = file.location(&layout.content.blob_path()).unwrap().offset;
        let point = mounts.join(name);
        fs::create_dir_all(&point).unwrap();
        run(Command::new("mount")
            .args(["-t", "erofs", "-o"])
            .arg(format!("loop,ro,offset={offset},sizelimit={}", verity.offset))
            .arg(package)
            .arg(&point));
        lower.push(point.display().to_string());
    }
    let bundle = dir.path().join("bundle");
    let (upper, work, rootfs) = (dir.path().join("upper"), dir.path().join("work"), bundle.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        fs::create_dir_all(d).unwrap();
    }
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        ))
        .arg(&rootfs));
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/app/run.sh"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]},
    });
    fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let script = format!(
        "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run --bundle {} ralf-layers",
        bundle.display()
    );
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = Command::new("crun").args(["delete", "-f", "ralf-layers"]).output();
    let _ = Command::new("umount").arg(&rootfs).status();
    for point in &lower {
        let _ = Command::new("umount").arg(point).status();
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "crun: {}{printed}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("app says hello") && printed.contains("Zstandard"),
        "{printed}"
    );
}
