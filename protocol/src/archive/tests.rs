use std::fs;
use std::io::{self, Cursor};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ipk::{IpkControl, write_ipk};
use super::*;
use crate::idmap::IdMapping;
use crate::manifest::{Manifest, NodeKind, Owner, SpecialNode};
use crate::tar_read::{TarEntry, TarKind, TarReader};

/// A small bundle directory with every kind of entry.
fn sample_bundle(dir: &Path) -> (PathBuf, Manifest) {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join(ROOTFS_DIR);
    fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
    fs::create_dir_all(rootfs.join("home/app")).unwrap();
    fs::write(bundle.join(CONFIG_FILE), b"{}").unwrap();
    fs::write(rootfs.join("usr/bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(rootfs.join("usr/bin/app"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(rootfs.join("usr/bin/app"), rootfs.join("usr/bin/app-alias")).unwrap();
    fs::write(rootfs.join("home/app/data"), vec![b'x'; 3000]).unwrap();
    symlink("/etc/passwd", rootfs.join("passwd-link")).unwrap();
    symlink("usr/bin", rootfs.join("bin")).unwrap();
    let mut manifest = Manifest::default();
    manifest.set_owner(Path::new("home/app"), Owner { uid: 1000, gid: 1000 });
    manifest.set_owner(Path::new("home/app/data"), Owner { uid: 1000, gid: 100 });
    manifest.add_node(
        Path::new("usr/null"),
        SpecialNode {
            kind: NodeKind::CharDevice,
            major: 1,
            minor: 3,
            mode: 0o666,
            mtime: 5,
        },
    );
    (bundle, manifest)
}

fn entries(archive: &[u8]) -> Vec<TarEntry> {
    let mut reader = TarReader::new(Cursor::new(archive));
    let mut out = Vec::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        out.push(entry);
    }
    out
}

fn options() -> ArchiveOptions {
    ArchiveOptions {
        mtime_clamp: 1_000,
        ..ArchiveOptions::default()
    }
}

#[test]
fn entries_are_sorted_at_the_root_with_recorded_owners_and_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, manifest) = sample_bundle(tmp.path());
    let (archive, summary) = write_bundle(&bundle, &manifest, &options(), Vec::new()).unwrap();
    let entries = entries(&archive);
    let listing: Vec<(String, TarKind)> = entries
        .iter()
        .map(|e| (e.path.to_str().unwrap().to_string(), e.kind))
        .collect();
    let expected = [
        ("config.json", TarKind::File),
        ("rootfs", TarKind::Dir),
        ("rootfs/bin", TarKind::Symlink),
        ("rootfs/home", TarKind::Dir),
        ("rootfs/home/app", TarKind::Dir),
        ("rootfs/home/app/data", TarKind::File),
        ("rootfs/passwd-link", TarKind::Symlink),
        ("rootfs/usr", TarKind::Dir),
        ("rootfs/usr/bin", TarKind::Dir),
        ("rootfs/usr/bin/app", TarKind::File),
        ("rootfs/usr/bin/app-alias", TarKind::HardLink),
        ("rootfs/usr/null", TarKind::CharDevice),
    ];
    let expected: Vec<(String, TarKind)> = expected.iter().map(|(p, k)| (p.to_string(), *k)).collect();
    assert_eq!(listing, expected);
    let by_path = |p: &str| entries.iter().find(|e| e.path == Path::new(p)).unwrap();
    assert_eq!(
        (by_path("rootfs/home/app/data").uid, by_path("rootfs/home/app/data").gid),
        (1000, 100)
    );
    assert_eq!(
        (by_path("rootfs/usr/bin/app").uid, by_path("rootfs/usr/bin/app").gid),
        (0, 0)
    );
    assert_eq!(by_path("rootfs/usr/bin/app").mode, 0o4755);
    assert_eq!(
        by_path("rootfs/usr/bin/app-alias").link_target.as_deref(),
        Some(Path::new("rootfs/usr/bin/app"))
    );
    assert_eq!(
        by_path("rootfs/passwd-link").link_target.as_deref(),
        Some(Path::new("/etc/passwd"))
    );
    assert_eq!(
        (
            by_path("rootfs/usr/null").dev_major,
            by_path("rootfs/usr/null").dev_minor
        ),
        (1, 3)
    );
    assert!(entries.iter().all(|e| e.mtime <= 1_000), "mtimes are clamped");
    assert_eq!(summary.entries, 12);
    assert_eq!(summary.file_bytes, 2 + 18 + 3000);
}

#[test]
fn output_is_byte_identical_when_only_times_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, manifest) = sample_bundle(tmp.path());
    let (first, _) = write_bundle(&bundle, &manifest, &options(), Vec::new()).unwrap();
    // Touch a file and a directory: their mtimes are after the clamp.
    fs::write(bundle.join("rootfs/home/app/data"), vec![b'x'; 3000]).unwrap();
    fs::write(bundle.join("rootfs/usr/new"), b"").unwrap();
    fs::remove_file(bundle.join("rootfs/usr/new")).unwrap();
    let (second, _) = write_bundle(&bundle, &manifest, &options(), Vec::new()).unwrap();
    assert!(first == second, "archives differ");
}

#[test]
fn owners_are_mapped_by_range_and_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, manifest) = sample_bundle(tmp.path());
    let options = ArchiveOptions {
        mtime_clamp: 1_000,
        uid_map: vec![IdMapping {
            container_id: 0,
            host_id: 100_000,
            size: 65_536,
        }],
        gid_map: vec![IdMapping {
            container_id: 0,
            host_id: 200_000,
            size: 1000,
        }],
        owner_override: None,
        mode_mask: Some(0o755),
    };
    let (archive, summary) = write_bundle(&bundle, &manifest, &options, Vec::new()).unwrap();
    let entries = entries(&archive);
    let data = entries
        .iter()
        .find(|e| e.path == Path::new("rootfs/home/app/data"))
        .unwrap();
    assert_eq!((data.uid, data.gid), (101_000, 200_100));
    let app = entries
        .iter()
        .find(|e| e.path == Path::new("rootfs/usr/bin/app"))
        .unwrap();
    assert_eq!((app.uid, app.gid, app.mode), (100_000, 200_000, 0o755));
    // gid 1000 of home/app is outside the 1000-wide gid range: reported, kept.
    assert_eq!(summary.unmapped_owners, 1);
    assert_eq!(summary.first_unmapped.as_deref(), Some(Path::new("rootfs/home/app")));

    let same_user = ArchiveOptions {
        owner_override: Some(Owner { uid: 1000, gid: 1000 }),
        ..options
    };
    let (archive, _) = write_bundle(&bundle, &manifest, &same_user, Vec::new()).unwrap();
    assert!(entries_of_uid(&archive, 101_000));
}

fn entries_of_uid(archive: &[u8], uid: u64) -> bool {
    entries(archive).iter().all(|e| e.uid == uid)
}

#[test]
fn unpack_round_trips_and_reports_what_it_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, manifest) = sample_bundle(tmp.path());
    let (archive, _) = write_bundle(&bundle, &manifest, &options(), Vec::new()).unwrap();
    let dest = tmp.path().join("installed");
    let report = unpack_bundle(Cursor::new(&archive), &dest, &ReadOptions::default()).unwrap();
    assert_eq!(report.skipped_nodes, vec![PathBuf::from("rootfs/usr/null")]);
    assert_eq!(report.cleared_setuid, vec![PathBuf::from("rootfs/usr/bin/app")]);
    let rootfs = dest.join(ROOTFS_DIR);
    assert_eq!(fs::read(rootfs.join("usr/bin/app")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(fs::metadata(rootfs.join("usr/bin/app")).unwrap().mode() & 0o7777, 0o755);
    let app = fs::metadata(rootfs.join("usr/bin/app")).unwrap();
    let alias = fs::metadata(rootfs.join("usr/bin/app-alias")).unwrap();
    assert_eq!(app.ino(), alias.ino(), "hardlink preserved");
    assert_eq!(
        fs::read_link(rootfs.join("passwd-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read(rootfs.join("home/app/data")).unwrap().len(), 3000);
    // Nothing else is left next to the destination.
    let siblings: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings.len(), 2, "{siblings:?}");
    // The destination must not exist already.
    assert!(unpack_bundle(Cursor::new(&archive), &dest, &ReadOptions::default()).is_err());
}

/// A raw archive entry: path, kind, link target, data.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// Builds a raw archive, names written verbatim.
fn hostile_archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let raw: Vec<_> = entries
        .iter()
        .map(|&(path, kind, link, data)| bundlegen_fixtures::tar::RawEntry {
            path,
            kind,
            mode: 0o755,
            link,
            data,
            owner: (0, 0),
        })
        .collect();
    bundlegen_fixtures::tar::archive(&raw)
}

#[test]
fn hostile_archives_cannot_escape_and_leave_nothing_behind() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let cases: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
        ("dot-dot entry", vec![("../escaped", Regular, "", b"x")]),
        ("nested dot-dot", vec![("rootfs/../../escaped", Regular, "", b"x")]),
        (
            "write through symlink",
            vec![
                ("rootfs", Directory, "", b""),
                ("rootfs/link", Symlink, "/tmp", b""),
                ("rootfs/link/escaped", Regular, "", b"x"),
            ],
        ),
        (
            "write through relative symlink",
            vec![("up", Symlink, "../..", b""), ("up/escaped", Regular, "", b"x")],
        ),
        (
            "hardlink out of the root",
            vec![("stolen", Link, "../outside/secret", b"")],
        ),
        (
            "hardlink to absolute host path",
            vec![("stolen", Link, "/etc/passwd", b"")],
        ),
        (
            "hardlink to a directory",
            vec![("d", Directory, "", b""), ("l", Link, "d", b"")],
        ),
    ];
    for (name, archive_entries) in cases {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/secret"), b"s").unwrap();
        let work = tmp.path().join("a/b");
        fs::create_dir_all(&work).unwrap();
        let dest = work.join("bundle");
        let archive = hostile_archive(&archive_entries);
        let result = unpack_bundle(Cursor::new(&archive), &dest, &ReadOptions::default());
        assert!(result.is_err(), "{name}: should be refused");
        assert!(!dest.exists(), "{name}: destination must not exist after a failure");
        assert_eq!(fs::read_dir(&work).unwrap().count(), 0, "{name}: staging left behind");
        assert!(
            !tmp.path().join("a/escaped").exists() && !tmp.path().join("escaped").exists(),
            "{name}"
        );
        assert_eq!(
            fs::metadata(tmp.path().join("outside/secret")).unwrap().nlink(),
            1,
            "{name}"
        );
    }
}

#[test]
fn absolute_names_are_confined() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = hostile_archive(&[("/etc/confined", tar::EntryType::Regular, "", b"x")]);
    let dest = tmp.path().join("bundle");
    unpack_bundle(Cursor::new(&archive), &dest, &ReadOptions::default()).unwrap();
    assert_eq!(fs::read(dest.join("etc/confined")).unwrap(), b"x");
}

#[test]
fn limits_stop_bombs() {
    let tmp = tempfile::tempdir().unwrap();
    let big = vec![0u8; 10_000];
    let archive = hostile_archive(&[
        ("a", tar::EntryType::Regular, "", &big),
        ("b", tar::EntryType::Regular, "", &big),
    ]);
    let tight = ReadOptions {
        max_bytes: 15_000,
        ..ReadOptions::default()
    };
    let err = unpack_bundle(Cursor::new(&archive), &tmp.path().join("x"), &tight).unwrap_err();
    assert!(
        matches!(err, ArchiveError::LimitExceeded { what: "bytes", .. }),
        "{err}"
    );
    let few = ReadOptions {
        max_entries: 1,
        ..ReadOptions::default()
    };
    let err = unpack_bundle(Cursor::new(&archive), &tmp.path().join("y"), &few).unwrap_err();
    assert!(
        matches!(err, ArchiveError::LimitExceeded { what: "entries", .. }),
        "{err}"
    );
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn compressed_archives_are_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, manifest) = sample_bundle(tmp.path());
    let (tar, _) = write_bundle(&bundle, &manifest, &options(), Vec::new()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    for (name, bytes) in [("gz", gz), ("zst", zst), ("plain", tar.clone())] {
        let dest = tmp.path().join(name);
        unpack_bundle(Cursor::new(bytes), &dest, &ReadOptions::default()).unwrap();
        assert!(dest.join("rootfs/usr/bin/app").is_file(), "{name}");
    }
}

fn control() -> IpkControl {
    IpkControl {
        package: "com.rdk.test".into(),
        version: "1.2.3".into(),
        architecture: "armv7".into(),
        description: "test app".into(),
        priority: "optional".into(),
        depends: vec![],
    }
}

#[test]
fn ipk_is_an_ar_archive_that_ar_and_our_reader_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, manifest) = sample_bundle(tmp.path());
    let (tar, _) = write_bundle(&bundle, &manifest, &options(), Vec::new()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &tar).unwrap();
    let data = gz.finish().unwrap();
    let ipk = write_ipk(&control(), &mut data.as_slice(), data.len() as u64, 1000, Vec::new()).unwrap();
    let path = tmp.path().join("app.ipk");
    fs::write(&path, &ipk).unwrap();

    let listed = Command::new("ar").arg("t").arg(&path).output().expect("binutils ar");
    assert!(listed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "debian-binary\ncontrol.tar.gz\ndata.tar.gz\n"
    );
    let extracted = Command::new("ar")
        .arg("p")
        .arg(&path)
        .arg("control.tar.gz")
        .output()
        .unwrap();
    let control_tar = flate2::read::GzDecoder::new(extracted.stdout.as_slice());
    let mut reader = TarReader::new(control_tar);
    let mut control_text = String::new();
    while let Some(entry) = reader.next_entry().unwrap() {
        if entry.path == Path::new("control") {
            io::Read::read_to_string(&mut reader.data(), &mut control_text).unwrap();
        }
    }
    assert!(control_text.contains("Package: com.rdk.test\n"), "{control_text}");
    assert!(control_text.contains("Architecture: armv7\n"), "{control_text}");

    let dest = tmp.path().join("from-ipk");
    unpack_bundle(Cursor::new(ipk), &dest, &ReadOptions::default()).unwrap();
    assert!(dest.join("rootfs/usr/bin/app").is_file());
}

#[test]
fn ipk_control_refuses_field_injection() {
    let mut bad = control();
    bad.description = "line\nArchitecture: all".into();
    assert!(bad.render().is_err());
    let mut bad = control();
    bad.version = "1 2".into();
    assert!(bad.render().is_err());
}

#[test]
fn a_replaced_directory_keeps_none_of_its_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    use bundlegen_fixtures::tar::{RawEntry, archive};
    let archive = archive(&[
        RawEntry::dir("rootfs/a").mode(0o555),
        RawEntry::file("rootfs/a/inside", b"x"),
        RawEntry::file("rootfs/a", b"now a file").mode(0o640),
        RawEntry::dir("rootfs/b").mode(0o750),
    ]);
    let dest = tmp.path().join("bundle");
    unpack_bundle(Cursor::new(archive), &dest, &ReadOptions::default()).unwrap();
    let a = fs::metadata(dest.join("rootfs/a")).unwrap();
    assert!(a.is_file());
    assert_eq!(a.mode() & 0o7777, 0o640, "the file's own mode, not the directory's");
    assert_eq!(fs::metadata(dest.join("rootfs/b")).unwrap().mode() & 0o7777, 0o750);
}

#[test]
fn owners_are_applied_only_within_the_user_namespace_maps() {
    use bundlegen_fixtures::tar::{RawEntry, archive};
    assert!(nix::unistd::geteuid().is_root(), "giving files owners needs root");
    let tmp = tempfile::tempdir().unwrap();
    let map = vec![IdMapping {
        container_id: 0,
        host_id: 1000,
        size: 65536,
    }];
    let options = ReadOptions {
        owners: Owners::Archive {
            uid_map: map.clone(),
            gid_map: map,
        },
        ..ReadOptions::default()
    };
    let good = archive(&[
        RawEntry::dir("rootfs").owner(1000, 1000),
        RawEntry::file("rootfs/app", b"x").owner(1001, 1002),
        RawEntry::symlink("rootfs/link", "app").owner(1000, 1005),
    ]);
    let dest = tmp.path().join("good");
    unpack_bundle(Cursor::new(good), &dest, &options).unwrap();
    let owner = |path: &str| {
        let meta = fs::symlink_metadata(dest.join(path)).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner("rootfs"), (1000, 1000));
    assert_eq!(owner("rootfs/app"), (1001, 1002));
    assert_eq!(owner("rootfs/link"), (1000, 1005), "the symlink itself, not its target");

    for (uid, gid) in [(0, 1000), (1000, 0), (1000 + 65536, 1000)] {
        let outside = archive(&[
            RawEntry::dir("rootfs").owner(1000, 1000),
            RawEntry::file("rootfs/x", b"x").owner(uid, gid),
        ]);
        let dest = tmp.path().join(format!("outside-{uid}-{gid}"));
        let error = unpack_bundle(Cursor::new(outside), &dest, &options).unwrap_err();
        assert!(
            error.to_string().contains("outside the bundle's user namespace"),
            "{error}"
        );
        assert!(!dest.exists(), "nothing is left");
    }
}

#[test]
fn setgid_is_cleared_on_directories_too() {
    use bundlegen_fixtures::tar::{RawEntry, archive};
    let tmp = tempfile::tempdir().unwrap();
    let bytes = archive(&[
        RawEntry::dir("rootfs").mode(0o2775),
        RawEntry::file("rootfs/tool", b"x").mode(0o4755),
    ]);
    let dest = tmp.path().join("bundle");
    let report = unpack_bundle(Cursor::new(bytes), &dest, &ReadOptions::default()).unwrap();
    assert_eq!(fs::metadata(dest.join("rootfs")).unwrap().mode() & 0o7777, 0o775);
    assert_eq!(fs::metadata(dest.join("rootfs/tool")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        report.cleared_setuid,
        [PathBuf::from("rootfs"), PathBuf::from("rootfs/tool")]
    );
}

#[test]
fn a_root_file_is_read_without_unpacking() {
    use bundlegen_fixtures::tar::{RawEntry, archive};
    let first = archive(&[RawEntry::file("config.json", b"{\"a\": 1}"), RawEntry::dir("rootfs")]);
    let last = archive(&[RawEntry::dir("rootfs"), RawEntry::file("./config.json", b"{}")]);
    let linked = archive(&[RawEntry::symlink("config.json", "/etc/passwd")]);
    let big = archive(&[RawEntry::file("config.json", &[b' '; 100])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &first).unwrap();
    let compressed = gz.finish().unwrap();
    assert_eq!(
        read_root_file(Cursor::new(&first), CONFIG_FILE, 64).unwrap().as_deref(),
        Some(&b"{\"a\": 1}"[..])
    );
    assert_eq!(
        read_root_file(Cursor::new(compressed), CONFIG_FILE, 64)
            .unwrap()
            .as_deref(),
        Some(&b"{\"a\": 1}"[..])
    );
    assert_eq!(
        read_root_file(Cursor::new(&last), CONFIG_FILE, 64).unwrap().as_deref(),
        Some(&b"{}"[..])
    );
    assert_eq!(
        read_root_file(Cursor::new(archive(&[])), CONFIG_FILE, 64).unwrap(),
        None
    );
    assert!(
        read_root_file(Cursor::new(linked), CONFIG_FILE, 64).is_err(),
        "a symlink is refused"
    );
    assert!(read_root_file(Cursor::new(big), CONFIG_FILE, 64).is_err(), "bounded");
}
