//! Bundle outputs: archive formats read back by GNU tar, zstd and ar (and by
//! the on-box reader), reproducibility, owners mapped by range, mode masks,
//! and refusal to clobber.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlegen_protocol::archive::{ReadOptions, unpack_bundle};
use bundlegen_protocol::tar_read::{TarEntry, TarKind, TarReader};
use serde_json::json;
use support::*;

/// An image with owners, a setuid file, links and a device node.
fn sample_layout(dir: &Path) -> LayoutBuilder {
    let layer = LayerBuilder::default()
        .dir("bin", 0o755)
        .file("bin/app", b"#!/bin/sh\necho app\n", 0o4755)
        .hardlink("bin/app-alias", "bin/app")
        .symlink("bin/sh", "/bin/app")
        .dir("home", 0o755)
        .owned_file("home/data", b"user data", 1000, 1000)
        .dir("dev", 0o755)
        .char_device("dev/null", 1, 3)
        .tar();
    let layout = LayoutBuilder::new(dir);
    let image = layout.image(
        &[(layer, Compress::Gzip)],
        "arm",
        Some("v7"),
        json!({"Cmd": ["/bin/app"]}),
    );
    layout.tag(image, "latest")
}

fn unpack(image: &Path, out: &Path, args: &[&str]) -> String {
    let output = run(bundlegen()
        .args(["unpack", "--arch", "armv7"])
        .args(args)
        .arg(format!("oci:{}", image.display()))
        .arg(out));
    String::from_utf8(output.stdout).unwrap()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

fn tar_entries(archive: &Path) -> BTreeMap<String, TarEntry> {
    let bytes = fs::read(archive).unwrap();
    let decoded: Vec<u8> = if archive.to_string_lossy().ends_with(".zst") {
        zstd::decode_all(bytes.as_slice()).unwrap()
    } else {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes.as_slice()), &mut out).unwrap();
        out
    };
    let mut reader = TarReader::new(Cursor::new(decoded));
    let mut entries = BTreeMap::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        entries.insert(entry.path.to_string_lossy().into_owned(), entry);
    }
    entries
}

#[test]
fn archives_are_reproducible_and_report_their_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout(&tmp.path().join("layout"));
    let mut archives = Vec::new();
    for (n, threads) in ["1", "2", "5"].iter().enumerate() {
        let out = tmp.path().join(format!("run{n}/bundle"));
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let printed = unpack(&layout.dir, &out, &["--threads", threads]);
        let archive = with_suffix(&out, ".tar.gz");
        let bytes = fs::read(&archive).unwrap();
        let digest = sha256(&bytes);
        assert!(
            printed.contains(&format!("{digest} {} bytes", bytes.len())),
            "{printed}"
        );
        let sidecar = fs::read_to_string(with_suffix(&out, ".tar.gz.sha256")).unwrap();
        assert_eq!(
            sidecar,
            format!("{}  bundle.tar.gz\n", digest.trim_start_matches("sha256:"))
        );
        run(Command::new("sha256sum")
            .arg("-c")
            .arg("bundle.tar.gz.sha256")
            .current_dir(out.parent().unwrap()));
        archives.push(bytes);
    }
    assert!(
        archives.iter().all(|a| *a == archives[0]),
        "archives differ between runs"
    );

    // mtimes: clamped to the image's creation time (2024-05-01T10:00:00Z),
    // or to SOURCE_DATE_EPOCH when set.
    let entries = tar_entries(&tmp.path().join("run0/bundle.tar.gz"));
    assert!(
        entries.values().all(|e| e.mtime <= 1_714_557_600),
        "clamped to the creation time"
    );
    assert_eq!(entries["config.json"].mtime, 1_714_557_600);
    let epoch = tmp.path().join("epoch");
    run(bundlegen()
        .env("SOURCE_DATE_EPOCH", "1000")
        .args(["unpack", "--arch", "armv7", "--format", "tar.zst"])
        .arg(format!("oci:{}", layout.dir.display()))
        .arg(&epoch));
    assert!(
        tar_entries(&with_suffix(&epoch, ".tar.zst"))
            .values()
            .all(|e| e.mtime <= 1000)
    );
}

#[test]
fn archive_layout_owners_and_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout(&tmp.path().join("layout"));
    let out = tmp.path().join("bundle");
    unpack(
        &layout.dir,
        &out,
        &["--uid-map", "0:100000:65536", "--gid-map", "0:200000:65536"],
    );
    let entries = tar_entries(&with_suffix(&out, ".tar.gz"));
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "config.json",
            "rootfs",
            "rootfs/bin",
            "rootfs/bin/app",
            "rootfs/bin/app-alias",
            "rootfs/bin/sh",
            "rootfs/dev",
            "rootfs/dev/null",
            "rootfs/home",
            "rootfs/home/data"
        ]
    );
    let owner = |path: &str| (entries[path].uid, entries[path].gid);
    assert_eq!(owner("rootfs/home/data"), (101_000, 201_000));
    assert_eq!(owner("rootfs/bin/app"), (100_000, 200_000));
    assert_eq!(owner("config.json"), (100_000, 200_000));
    assert_eq!(entries["rootfs/bin/app"].mode, 0o4755);
    assert_eq!(entries["rootfs/bin/app-alias"].kind, TarKind::HardLink);
    assert_eq!(
        entries["rootfs/bin/sh"].link_target.as_deref(),
        Some(Path::new("/bin/app"))
    );
    let null = &entries["rootfs/dev/null"];
    assert_eq!((null.kind, null.dev_major, null.dev_minor), (TarKind::CharDevice, 1, 3));
    let config: serde_json::Value = serde_json::from_slice(&fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}])
    );

    // GNU tar, the peer, reads the same owners.
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(with_suffix(&out, ".tar.gz")));
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.contains("101000/201000") && l.ends_with("rootfs/home/data")),
        "{listing}"
    );

    // A mode mask strips what it masks, on every entry.
    let masked = tmp.path().join("masked");
    unpack(&layout.dir, &masked, &["--file-mask", "0755"]);
    let entries = tar_entries(&with_suffix(&masked, ".tar.gz"));
    assert_eq!(entries["rootfs/bin/app"].mode, 0o755);
    assert!(entries.values().all(|e| e.mode & !0o755 == 0));
}

#[test]
fn every_format_is_read_by_the_standard_tools_and_the_box_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout(&tmp.path().join("layout"));
    let dir_out = tmp.path().join("dir");
    unpack(&layout.dir, &dir_out, &["--format", "dir"]);
    assert!(!with_suffix(&dir_out, ".tar.gz").exists());
    let reference = snapshot(&dir_out);

    // tar.gz and tar.zst extracted by GNU tar give the directory back.
    for (format, flag) in [("tar.gz", "-xzf"), ("tar.zst", "--zstd")] {
        let out = tmp.path().join(format.replace('.', "-"));
        unpack(&layout.dir, &out, &["--format", format, "--archive-only"]);
        assert!(!out.exists(), "--archive-only writes no directory");
        let extracted = tmp.path().join(format!("extracted-{format}"));
        fs::create_dir(&extracted).unwrap();
        let archive = with_suffix(&out, &format!(".{format}"));
        let mut tar = Command::new("tar");
        if flag == "--zstd" {
            tar.args(["--zstd", "-xf"]);
        } else {
            tar.arg(flag);
        }
        run(tar
            .arg(&archive)
            .arg("-C")
            .arg(&extracted)
            .arg("--exclude=rootfs/dev/null"));
        let mut theirs = snapshot(&extracted);
        let mut ours = reference.clone();
        ours.remove("rootfs/dev/null");
        theirs.remove("rootfs/dev/null");
        assert_eq!(tree_differences(&ours, &theirs), Vec::<String>::new(), "{format}");

        // The box's reader takes it too (devices refused, setuid cleared).
        let installed = tmp.path().join(format!("installed-{format}"));
        let report = unpack_bundle(fs::File::open(&archive).unwrap(), &installed, &ReadOptions::default()).unwrap();
        assert_eq!(report.skipped_nodes, vec![PathBuf::from("rootfs/dev/null")]);
        assert_eq!(fs::read(installed.join("rootfs/home/data")).unwrap(), b"user data");
    }

    // ipk: an ar archive opkg understands, with the bundle as data.tar.gz.
    let ipk_out = tmp.path().join("com.example.app");
    unpack(&layout.dir, &ipk_out, &["-i"]);
    let ipk = with_suffix(&ipk_out, ".ipk");
    let members = run(Command::new("ar").arg("t").arg(&ipk));
    assert_eq!(
        String::from_utf8_lossy(&members.stdout),
        "debian-binary\ncontrol.tar.gz\ndata.tar.gz\n"
    );
    let control = run(Command::new("sh")
        .arg("-c")
        .arg(format!("ar p {} control.tar.gz | tar -xzO control", ipk.display())));
    let control = String::from_utf8(control.stdout).unwrap();
    assert!(
        control.contains("Package: com.example.app\n") && control.contains("Architecture: armv7\n"),
        "{control}"
    );
    let data = run(Command::new("sh")
        .arg("-c")
        .arg(format!("ar p {} data.tar.gz | tar -tz", ipk.display())));
    assert!(
        String::from_utf8_lossy(&data.stdout)
            .lines()
            .any(|l| l == "config.json")
    );
    let installed = tmp.path().join("installed-ipk");
    unpack_bundle(fs::File::open(&ipk).unwrap(), &installed, &ReadOptions::default()).unwrap();
    assert!(installed.join("rootfs/bin/app").is_file());
}

#[test]
fn existing_outputs_are_kept_unless_replacing() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout(&tmp.path().join("layout"));
    let out = tmp.path().join("bundle");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("mine"), b"keep me").unwrap();
    let mut command = bundlegen();
    command
        .args(["unpack", "--arch", "armv7"])
        .arg(format!("oci:{}", layout.dir.display()))
        .arg(&out);
    let err = run_failing(&mut command);
    assert!(err.contains("already exists") && err.contains("-y"), "{err}");
    assert_eq!(fs::read(out.join("mine")).unwrap(), b"keep me");
    assert_eq!(dir_names(tmp.path()), vec!["bundle", "layout"]);

    unpack(&layout.dir, &out, &["-y"]);
    assert!(!out.join("mine").exists() && out.join("rootfs/bin/app").is_file());
    assert_eq!(
        dir_names(tmp.path()),
        vec!["bundle", "bundle.tar.gz", "bundle.tar.gz.sha256", "layout"]
    );
}

#[test]
fn a_work_dir_holds_the_assembly_and_is_left_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout(&tmp.path().join("layout"));
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let out = tmp.path().join("out/bundle");
    fs::create_dir(out.parent().unwrap()).unwrap();
    unpack(
        &layout.dir,
        &out,
        &["--archive-only", "--work-dir", work.to_str().unwrap()],
    );
    assert!(with_suffix(&out, ".tar.gz").is_file());
    assert!(
        dir_names(&work).is_empty(),
        "work dir not cleaned: {:?}",
        dir_names(&work)
    );
    // With the directory kept, a work dir on the same filesystem works too.
    unpack(&layout.dir, &out, &["-y", "--work-dir", work.to_str().unwrap()]);
    assert!(out.join("rootfs/bin/app").is_file());
    assert!(dir_names(&work).is_empty());
}

/// With an archive, the rootfs is assembled in memory and the directory,
/// if kept, written from there: the same tree as unpacking to a directory,
/// the same archive bytes with or without it in every format, and nothing
/// left behind.
#[test]
fn the_archive_is_the_same_with_or_without_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout(&tmp.path().join("layout"));
    for format in ["tar.gz", "tar.zst", "ipk"] {
        let kept = tmp.path().join(format!("kept-{format}/bundle"));
        let archive_only = tmp.path().join(format!("archive-{format}/bundle"));
        for out in [&kept, &archive_only] {
            fs::create_dir_all(out.parent().unwrap()).unwrap();
        }
        unpack(&layout.dir, &kept, &["--format", format]);
        unpack(&layout.dir, &archive_only, &["--format", format, "--archive-only"]);
        let unpacked = tmp.path().join(format!("dir-{format}/bundle"));
        fs::create_dir_all(unpacked.parent().unwrap()).unwrap();
        unpack(&layout.dir, &unpacked, &["--format", "dir"]);
        assert_eq!(snapshot(&unpacked.join("rootfs")), snapshot(&kept.join("rootfs")));
        let suffix = format!(".{format}");
        let archive = fs::read(with_suffix(&kept, &suffix)).unwrap();
        assert!(
            archive == fs::read(with_suffix(&archive_only, &suffix)).unwrap(),
            "{format}: the archives differ"
        );
        assert_eq!(
            dir_names(archive_only.parent().unwrap()),
            vec![format!("bundle{suffix}"), format!("bundle{suffix}.sha256")]
        );
    }
}
