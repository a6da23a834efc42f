use bundlegen_fixtures::elf::ElfSpec;
use bundlegen_fixtures::rootfs::RootBuilder;
use bundlegen_protocol::root::Symlinks;

use super::*;
use crate::cache::ProbeCache;

#[test]
fn library_file_names_follow_bundlegens_filter() {
    let cases = [
        ("libc.so.6", true),
        ("libc.so", true),
        ("ld-linux-armhf.so.3", true),
        ("libfoo-1.2.so", true),
        ("pam_unix.so", true),
        ("libfoo.sox", true),
        (".so", false),
        ("libfoo.a", false),
        ("lib foo.so.1", false),
        ("README", false),
    ];
    for (name, expected) in cases {
        assert_eq!(looks_like_library(name), expected, "{name}");
    }
}

#[test]
fn paths_within_directories() {
    let cases = [
        ("/usr/lib/libz.so", "/usr/lib", true),
        ("/usr/lib", "/usr/lib", true),
        ("/usr/lib64/libz.so", "/usr/lib", false),
        ("/anything", "/", true),
    ];
    for (path, dir, expected) in cases {
        assert_eq!(is_within(path, dir), expected, "{path} in {dir}");
    }
}

/// On a merged-/usr box `/lib` is `/usr/lib`: each library is read once
/// and known under both names, as the loader knows it.
#[test]
fn merged_usr_names_libraries_under_both_directories() {
    let dir = tempfile::tempdir().unwrap();
    let b = RootBuilder::new(dir.path());
    b.elf(
        "/usr/lib/arm-linux-gnueabihf/libc.so.6",
        &ElfSpec::arm_library("libc.so.6").defines(&["GLIBC_2.4"]),
    )
    .elf(
        "/usr/lib/arm-linux-gnueabihf/libz.so.1.2.13",
        &ElfSpec::arm_library("libz.so.1").needs(&["libc.so.6"]),
    )
    .symlink("/usr/lib/arm-linux-gnueabihf/libz.so.1", "libz.so.1.2.13")
    .symlink("/lib", "usr/lib")
    .file("/etc/ld.so.conf", b"/lib/arm-linux-gnueabihf\n");
    let mut root = RootDir::open(dir.path(), Symlinks::FollowInRoot).unwrap();
    let scan = scan(&mut root, &mut ProbeCache::new());
    assert_eq!(scan.warnings, Vec::<String>::new());
    assert_eq!(scan.libraries.len(), 2);
    let zlib = &scan.libraries["/usr/lib/arm-linux-gnueabihf/libz.so.1.2.13"];
    assert_eq!(
        zlib.names,
        [
            "/lib/arm-linux-gnueabihf/libz.so.1",
            "/lib/arm-linux-gnueabihf/libz.so.1.2.13",
            "/usr/lib/arm-linux-gnueabihf/libz.so.1",
            "/usr/lib/arm-linux-gnueabihf/libz.so.1.2.13",
        ]
    );
    // The configured directory comes first in the loader's search.
    assert_eq!(zlib.deps[0].path.as_deref(), Some("/lib/arm-linux-gnueabihf/libc.so.6"));
}

#[test]
fn an_empty_root_is_an_empty_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = RootDir::open(dir.path(), Symlinks::FollowInRoot).unwrap();
    let scan = scan(&mut root, &mut ProbeCache::new());
    assert!(scan.libraries.is_empty());
    assert!(scan.cache.is_none());
    assert!(scan.warnings.is_empty());
}
