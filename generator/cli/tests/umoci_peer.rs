//! Correctness peer: our rootfs must equal `umoci unpack --rootless` of the
//! same image (paths, types, modes, contents, link targets, hardlink groups).

mod support;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::*;

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args));
}

/// Unpacks `image` with umoci and with us, and compares the rootfs trees.
fn assert_same_as_umoci(work: &Path, image_dir: &Path, tag: &str) {
    let theirs = work.join("umoci-bundle");
    let ours = work.join("our-bundle");
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:{tag}", image_dir.display()),
        theirs.to_str().unwrap(),
    ]);
    run(bundlegen()
        .args(["unpack", "--format", "dir", "--arch", "amd64"])
        .arg(format!("oci:{}:{tag}", image_dir.display()))
        .arg(&ours));
    let differences = tree_differences(&snapshot(&ours.join("rootfs")), &snapshot(&theirs.join("rootfs")));
    assert!(
        differences.is_empty(),
        "rootfs differs from umoci's:\n{}",
        differences.join("\n")
    );
}

fn write(path: &Path, data: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn images_built_with_umoci_insert() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let layout = work.join("image");
    let image = format!("{}:app", layout.display());
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);

    // Layer 1: a base tree with every kind of entry.
    let base = work.join("base");
    write(&base.join("usr/bin/app"), "#!/bin/sh\necho app\n", 0o755);
    write(&base.join("usr/bin/suid"), "s", 0o4755);
    write(&base.join("usr/lib/libfoo.so.1.2"), "elf", 0o644);
    symlink("libfoo.so.1.2", base.join("usr/lib/libfoo.so.1")).unwrap();
    symlink("/usr/lib", base.join("lib")).unwrap();
    fs::hard_link(base.join("usr/bin/app"), base.join("usr/bin/app-alias")).unwrap();
    write(&base.join("etc/secret"), "s", 0o600);
    write(&base.join("etc/removed"), "gone soon", 0o644);
    write(&base.join("var/cache/dir/file"), "c", 0o644);
    write(&base.join("opt/app/old/config"), "old", 0o644);
    write(&base.join("opt/app/keep-not"), "old", 0o644);
    write(&base.join("srv/a name with spaces/ünïcödé"), "u", 0o644);
    let deep = format!("deep/{}/{}/file", "d".repeat(90), "e".repeat(90));
    write(&base.join(&deep), "long name", 0o644);
    fs::create_dir_all(base.join("ro/inner")).unwrap();
    write(&base.join("ro/inner/f"), "f", 0o644);
    fs::set_permissions(base.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    run(Command::new("mkfifo").arg(base.join("var/pipe")));
    umoci(&["insert", "--image", &image, base.to_str().unwrap(), "/"]);

    // Layer 2: a file into an existing directory.
    write(&work.join("extra"), "extra", 0o640);
    umoci(&[
        "insert",
        "--image",
        &image,
        work.join("extra").to_str().unwrap(),
        "/usr/share/extra",
    ]);
    // Layers 3 and 4: whiteouts of a file and of a directory.
    umoci(&["insert", "--image", &image, "--whiteout", "/etc/removed"]);
    umoci(&["insert", "--image", &image, "--whiteout", "/var/cache/dir"]);
    // Layer 5: an opaque replacement of a directory.
    write(&work.join("newapp/new/config"), "new", 0o644);
    umoci(&[
        "insert",
        "--image",
        &image,
        "--opaque",
        work.join("newapp").to_str().unwrap(),
        "/opt/app",
    ]);
    // Layer 6: a directory swapped for a symlink; layer 7: and a symlink for a directory.
    symlink("/usr/share", work.join("swap-link")).unwrap();
    umoci(&[
        "insert",
        "--image",
        &image,
        work.join("swap-link").to_str().unwrap(),
        "/var/cache",
    ]);
    write(&work.join("swap-dir/inside"), "i", 0o644);
    umoci(&[
        "insert",
        "--image",
        &image,
        work.join("swap-dir").to_str().unwrap(),
        "/lib",
    ]);

    assert_same_as_umoci(work, &layout, "app");
    // And the expected results are really there (umoci and we could agree on a wrong tree).
    let rootfs = work.join("our-bundle/rootfs");
    assert!(!rootfs.join("etc/removed").exists());
    assert!(!rootfs.join("opt/app/old").exists() && rootfs.join("opt/app/new/config").is_file());
    assert_eq!(
        fs::read_link(rootfs.join("var/cache")).unwrap(),
        Path::new("/usr/share")
    );
    assert!(fs::symlink_metadata(rootfs.join("lib")).unwrap().is_dir());
    assert!(rootfs.join(&deep).is_file());
}

#[test]
fn crafted_layers_with_cross_layer_hardlinks_and_out_of_order_opaque_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = LayoutBuilder::new(&tmp.path().join("image"));
    let layers = vec![
        LayerBuilder::default()
            .dir("bin", 0o755)
            .file("bin/busybox", b"bb", 0o755)
            .dir("data", 0o755)
            .file("data/lower1", b"l1", 0o644)
            .dir("data/sub", 0o755)
            .file("data/sub/lower2", b"l2", 0o644)
            .file("swap", b"file first", 0o644)
            .dir("gone", 0o700)
            .file("gone/x", b"x", 0o644)
            .tar(),
        LayerBuilder::default()
            // Hardlinks to a file of the layer below.
            .hardlink("bin/sh", "bin/busybox")
            .hardlink("bin/ls", "bin/busybox")
            // The opaque marker after this layer's own entries.
            .dir("data", 0o750)
            .file("data/upper", b"u", 0o644)
            .whiteout("data/.wh..wh..opq")
            // A file replaced by a directory.
            .dir("swap", 0o711)
            .file("swap/inside", b"in", 0o644)
            .whiteout(".wh.gone")
            .tar(),
        LayerBuilder::default()
            .dir("swap", 0o755)
            .whiteout("swap/.wh.inside")
            .file("final", b"f", 0o644)
            .tar(),
    ];
    let image = layout.image(
        &layers.into_iter().map(|l| (l, Compress::Gzip)).collect::<Vec<_>>(),
        "amd64",
        None,
        json!({"Cmd": ["/bin/sh"]}),
    );
    let layout = layout.tag(image, "latest");
    assert_same_as_umoci(tmp.path(), &layout.dir, "latest");
    let rootfs = tmp.path().join("our-bundle/rootfs");
    assert!(!rootfs.join("data/lower1").exists() && !rootfs.join("data/sub").exists());
    assert!(rootfs.join("data/upper").is_file());
    assert!(!rootfs.join("gone").exists());
}

#[test]
fn the_conformance_image_unpacks_like_umoci() {
    let tmp = tempfile::tempdir().unwrap();
    let image = conformance().join("bundlegen/images/dac-image-wayland-egl-test-oci");
    // umoci wants a writable layout (it takes a lock); copy it.
    let copy = tmp.path().join("image");
    run(Command::new("cp").arg("-r").arg(&image).arg(&copy));
    run(Command::new("chmod").args(["-R", "u+w"]).arg(&copy));
    let ours = tmp.path().join("our-bundle");
    let theirs = tmp.path().join("umoci-bundle");
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:latest", copy.display()),
        theirs.to_str().unwrap(),
    ]);
    run(bundlegen()
        .args(["unpack", "--format", "dir", "--arch", "armv7"])
        .arg(format!("oci:{}", image.display()))
        .arg(&ours));
    let differences = tree_differences(&snapshot(&ours.join("rootfs")), &snapshot(&theirs.join("rootfs")));
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The config is umoci's too (both run as the same user, so umoci's user
    // namespace map, the invoking user, equals our default 0:0).
    let read =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p.join("config.json")).unwrap()).unwrap() };
    if nix::unistd::geteuid().is_root() {
        assert_eq!(read(&ours), read(&theirs));
    }
}
