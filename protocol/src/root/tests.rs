use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use super::*;

/// A root directory next to an "outside" directory holding a file that no
/// operation on the root may touch.
struct Fixture {
    _tmp: tempfile::TempDir,
    root_path: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root_path).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"host data").unwrap();
        fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        Fixture {
            _tmp: tmp,
            root_path,
            outside,
        }
    }

    fn root(&self, symlinks: Symlinks) -> RootDir {
        RootDir::open(&self.root_path, symlinks).unwrap()
    }

    fn link(&self, name: &str, target: &str) {
        symlink(target, self.root_path.join(name)).unwrap();
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("secret")], "outside directory changed");
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"host data");
        assert_eq!(
            fs::metadata(self.outside.join("secret")).unwrap().mode() & 0o7777,
            0o600
        );
    }
}

#[test]
fn clean_path_table() {
    let ok = [
        ("a/b", "a/b"),
        ("/a//b/./c", "a/b/c"),
        ("./etc/passwd", "etc/passwd"),
        ("./", ""),
        ("/", ""),
        ("", ""),
        ("usr/lib/", "usr/lib"),
        ("...", "..."),
        ("a/..b", "a/..b"),
    ];
    for (input, expected) in ok {
        assert_eq!(clean_path(Path::new(input)).unwrap(), Path::new(expected), "{input}");
    }
    let long = "a/".repeat(2100);
    let bad = ["..", "../etc", "a/../../b", "a/..", "/../x", "a\0b", long.as_str()];
    for input in bad {
        assert!(
            matches!(clean_path(Path::new(input)), Err(RootError::InvalidPath { .. })),
            "{input:?} should be rejected"
        );
    }
}

#[test]
fn absolute_symlink_parents_resolve_inside_the_root() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.root_path.join("usr/lib")).unwrap();
    fx.link("lib", "/usr/lib");
    let mut root = fx.root(Symlinks::FollowInRoot);
    let (_, resolved) = root
        .create_file(Path::new("lib/libfoo.so.1"), 0o644, MissingDirs::Fail)
        .unwrap();
    assert_eq!(resolved.real_path, Path::new("usr/lib/libfoo.so.1"));
    assert!(fx.root_path.join("usr/lib/libfoo.so.1").is_file());
}

#[test]
fn escapes_through_symlinks_stay_inside() {
    // Each case: a symlink planted in the root, then a path through it. The
    // write must land inside the root (at `lands`) or fail; never outside.
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("abs", "/", "abs/escaped", Some("escaped")),
        ("up", "../../../..", "up/escaped", Some("escaped")),
        ("dotdots", "a/../../..", "dotdots/escaped", Some("escaped")),
        ("host", "OUTSIDE", "host/secret", Some("OUTSIDE_IN_ROOT/secret")),
    ];
    for (link, target, path, lands) in cases {
        let fx = Fixture::new();
        let outside = fx.outside.to_str().unwrap().trim_start_matches('/').to_string();
        let target = target.replace("OUTSIDE", fx.outside.to_str().unwrap());
        fx.link(link, &target);
        let mut root = fx.root(Symlinks::FollowInRoot);
        let result = root.create_file(Path::new(path), 0o644, MissingDirs::Create);
        match lands {
            Some(lands) => {
                let (mut file, resolved) = result.unwrap_or_else(|e| panic!("{path}: {e}"));
                io::Write::write_all(&mut file, b"x").unwrap();
                let lands = lands.replace("OUTSIDE_IN_ROOT", &outside);
                assert_eq!(resolved.real_path, Path::new(&lands), "{path}");
                assert!(fx.root_path.join(&lands).is_file(), "{path} should land at {lands}");
            }
            None => assert!(result.is_err(), "{path} should fail"),
        }
        fx.assert_outside_untouched();
    }
}

#[test]
fn reads_and_links_cannot_reach_outside() {
    let fx = Fixture::new();
    fx.link("host", fx.outside.to_str().unwrap());
    fx.link("secretlink", fx.outside.join("secret").to_str().unwrap());
    let mut root = fx.root(Symlinks::FollowInRoot);
    assert!(root.open_file(Path::new("host/secret")).is_err());
    // The final component is never followed.
    assert!(root.open_file(Path::new("secretlink")).is_err());
    assert!(
        root.hardlink(Path::new("host/secret"), Path::new("stolen"), MissingDirs::Fail)
            .is_err()
    );
    // Linking the symlink itself is allowed and links the symlink, not its target.
    root.hardlink(Path::new("secretlink"), Path::new("alias"), MissingDirs::Fail)
        .unwrap();
    assert!(
        fs::symlink_metadata(fx.root_path.join("alias"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // chmod of a symlink never reaches its target.
    let resolved = root.resolve(Path::new("secretlink"), MissingDirs::Fail).unwrap();
    root.set_mode(&resolved, 0o777).unwrap();
    fx.assert_outside_untouched();
}

#[test]
fn remove_all_removes_links_not_their_targets() {
    let fx = Fixture::new();
    fx.link("host", fx.outside.to_str().unwrap());
    fs::create_dir_all(fx.root_path.join("d/sub")).unwrap();
    symlink(&fx.outside, fx.root_path.join("d/sub/out")).unwrap();
    fs::set_permissions(fx.root_path.join("d/sub"), fs::Permissions::from_mode(0o555)).unwrap();
    let mut root = fx.root(Symlinks::FollowInRoot);
    assert!(root.remove_all(Path::new("host")).unwrap());
    assert!(root.remove_all(Path::new("d")).unwrap());
    assert!(!root.remove_all(Path::new("d")).unwrap());
    assert!(root.remove_all(Path::new("")).is_err());
    assert_eq!(fs::read_dir(&fx.root_path).unwrap().count(), 0);
    fx.assert_outside_untouched();
}

#[test]
fn symlink_loops_fail_cleanly() {
    let fx = Fixture::new();
    fx.link("loop1", "loop2");
    fx.link("loop2", "/loop1");
    let mut root = fx.root(Symlinks::FollowInRoot);
    let err = root
        .create_file(Path::new("loop1/x"), 0o644, MissingDirs::Create)
        .unwrap_err();
    assert!(matches!(err, RootError::TooManySymlinks { .. }), "{err}");
}

#[test]
fn reject_mode_refuses_any_symlink_in_parents() {
    let fx = Fixture::new();
    fs::create_dir(fx.root_path.join("real")).unwrap();
    fx.link("inside", "real");
    let mut root = fx.root(Symlinks::Reject);
    let err = root
        .create_file(Path::new("inside/x"), 0o644, MissingDirs::Fail)
        .unwrap_err();
    assert!(matches!(err, RootError::SymlinkInPath { .. }), "{err}");
    root.create_file(Path::new("real/x"), 0o644, MissingDirs::Fail).unwrap();
}

#[test]
fn file_as_parent_is_not_a_directory() {
    let fx = Fixture::new();
    fs::write(fx.root_path.join("file"), b"").unwrap();
    let mut root = fx.root(Symlinks::FollowInRoot);
    let err = root
        .create_file(Path::new("file/x"), 0o644, MissingDirs::Create)
        .unwrap_err();
    assert!(matches!(err, RootError::NotADirectory { .. }), "{err}");
}

#[test]
fn cache_is_invalidated_when_a_parent_is_replaced() {
    let fx = Fixture::new();
    let mut root = fx.root(Symlinks::FollowInRoot);
    root.create_file(Path::new("a/b/one"), 0o644, MissingDirs::Create)
        .unwrap();
    // Replace a/b with a symlink to elsewhere: the cached descriptor of the old
    // a/b must not be used for the next file.
    root.remove_all(Path::new("a/b")).unwrap();
    root.mkdir(Path::new("elsewhere"), 0o755, MissingDirs::Fail).unwrap();
    root.symlink(Path::new("a/b"), Path::new("/elsewhere"), MissingDirs::Fail)
        .unwrap();
    let (_, resolved) = root
        .create_file(Path::new("a/b/two"), 0o644, MissingDirs::Create)
        .unwrap();
    assert_eq!(resolved.real_path, Path::new("elsewhere/two"));
    assert!(fx.root_path.join("elsewhere/two").is_file());
}

#[test]
fn read_dir_is_sorted_and_typed() {
    let fx = Fixture::new();
    fs::create_dir(fx.root_path.join("b")).unwrap();
    fs::write(fx.root_path.join("a"), b"").unwrap();
    fx.link("c", "a");
    let mut root = fx.root(Symlinks::FollowInRoot);
    let listed = root.read_dir(Path::new("")).unwrap();
    assert_eq!(
        listed,
        vec![
            (OsString::from("a"), EntryKind::File),
            (OsString::from("b"), EntryKind::Dir),
            (OsString::from("c"), EntryKind::Symlink),
        ]
    );
}

#[test]
fn resolve_follow_follows_the_last_component_inside_the_root() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.root_path.join("usr/lib")).unwrap();
    fs::write(fx.root_path.join("usr/lib/libc.so.6"), b"elf").unwrap();
    fx.link("lib", "usr/lib");
    symlink("libc.so.6", fx.root_path.join("usr/lib/libc.so")).unwrap();
    symlink("/lib/libc.so", fx.root_path.join("usr/lib/abs.so")).unwrap();
    symlink("../../../../../usr/lib/libc.so.6", fx.root_path.join("usr/lib/up.so")).unwrap();
    symlink(fx.outside.join("secret"), fx.root_path.join("host.so")).unwrap();
    let mut root = fx.root(Symlinks::FollowInRoot);
    for link in ["lib/libc.so", "usr/lib/abs.so", "usr/lib/up.so"] {
        assert_eq!(
            root.resolve_follow(Path::new(link)).unwrap(),
            Path::new("usr/lib/libc.so.6"),
            "{link}"
        );
    }
    let (mut file, _) = root.open_file_follow(Path::new("lib/abs.so")).unwrap();
    let mut text = String::new();
    io::Read::read_to_string(&mut file, &mut text).unwrap();
    assert_eq!(text, "elf");
    // A link to a host path resolves inside the root, where it does not exist.
    assert!(root.open_file_follow(Path::new("host.so")).is_err());
}

#[test]
fn sync_flushes_the_tree_even_with_files_nobody_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = RootDir::create(&dir.path().join("root"), Symlinks::Reject).unwrap();
    std::fs::create_dir_all(dir.path().join("root/a/b")).unwrap();
    std::fs::write(dir.path().join("root/a/b/file"), b"data").unwrap();
    std::os::unix::fs::symlink("/nowhere", dir.path().join("root/a/link")).unwrap();
    let secret = dir.path().join("root/a/secret");
    std::fs::write(&secret, b"x").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let locked = dir.path().join("root/locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    root.sync().unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
}
