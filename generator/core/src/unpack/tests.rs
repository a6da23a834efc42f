use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use bundlegen_fixtures::tar::RawEntry;
use bundlegen_protocol::root::{RootDir, Symlinks};
use nix::sys::stat::makedev;
use proptest::prelude::*;

use super::*;

/// One entry of a test layer. Names are written raw, so hostile ones survive.
#[derive(Debug, Clone)]
enum E {
    Dir(&'static str, u32),
    File(&'static str, &'static str),
    Owned(&'static str, &'static str, u64, u64),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str),
    Char(&'static str),
    Fifo(&'static str),
    Whiteout(&'static str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let raw: Vec<RawEntry<'_>> = entries
        .iter()
        .map(|entry| match entry {
            E::Dir(p, mode) => RawEntry::dir(p).mode(*mode),
            E::File(p, data) => RawEntry::file(p, data.as_bytes()),
            E::Owned(p, data, uid, gid) => RawEntry::file(p, data.as_bytes()).mode(0o640).owner(*uid, *gid),
            E::Link(p, target) => RawEntry::symlink(p, target),
            E::Hard(p, target) => RawEntry::hardlink(p, target),
            E::Char(p) => RawEntry::char_device(p),
            E::Fifo(p) => RawEntry {
                kind: tar::EntryType::Fifo,
                ..RawEntry::file(p, b"").mode(0o600)
            },
            E::Whiteout(p) => RawEntry::file(p, b""),
        })
        .collect();
    bundlegen_fixtures::tar::archive(&raw)
}

/// A rootfs next to a host directory that must never change.
struct Fixture {
    tmp: tempfile::TempDir,
    root: RootDir,
    state: UnpackState,
    options: UnpackOptions,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_options(UnpackOptions {
            limits: Limits::default(),
            device_nodes: DeviceNodes::Record,
        })
    }

    fn with_options(options: UnpackOptions) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("host")).unwrap();
        fs::write(tmp.path().join("host/secret"), b"host").unwrap();
        let root = RootDir::create(&tmp.path().join("rootfs"), Symlinks::FollowInRoot).unwrap();
        Fixture {
            tmp,
            root,
            state: UnpackState::default(),
            options,
        }
    }

    fn apply(&mut self, entries: &[E]) -> Result<(), UnpackError> {
        let bytes = layer(entries);
        apply_layer(
            &mut self.root,
            &mut self.state,
            &mut Cursor::new(bytes),
            "test layer",
            &self.options,
        )
    }

    fn apply_all(&mut self, layers: &[&[E]]) {
        for entries in layers {
            self.apply(entries).unwrap();
        }
        self.state.finish(&mut self.root).unwrap();
    }

    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }

    /// `path -> description` of every entry in the rootfs.
    fn tree(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.rootfs(), &self.rootfs(), &mut out);
        out
    }

    fn assert_host_untouched(&self) {
        let host: Vec<_> = fs::read_dir(self.tmp.path().join("host"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(host, vec![std::ffi::OsString::from("secret")]);
        assert_eq!(fs::read(self.tmp.path().join("host/secret")).unwrap(), b"host");
        let siblings: Vec<_> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            siblings.len(),
            2,
            "something was created next to the rootfs: {siblings:?}"
        );
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(base).unwrap().to_str().unwrap().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        let description = if meta.is_dir() {
            walk(base, &path, out);
            format!("dir {:o}", meta.mode() & 0o7777)
        } else if meta.file_type().is_symlink() {
            format!("link {}", fs::read_link(&path).unwrap().display())
        } else if meta.file_type().is_fifo() {
            "fifo".to_string()
        } else if meta.file_type().is_char_device() {
            "char".to_string()
        } else {
            format!("file {}", String::from_utf8_lossy(&fs::read(&path).unwrap()))
        };
        out.insert(rel, description);
    }
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(p, d)| (p.to_string(), d.to_string())).collect()
}

#[test]
fn layer_semantics_table() {
    use E::*;
    type Case = (&'static str, Vec<Vec<E>>, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "plain entries, implied parents",
            vec![vec![
                Dir("etc", 0o755),
                File("etc/hosts", "h"),
                File("usr/bin/app", "a"),
                Link("bin", "usr/bin"),
            ]],
            vec![
                ("bin", "link usr/bin"),
                ("etc", "dir 755"),
                ("etc/hosts", "file h"),
                ("usr", "dir 755"),
                ("usr/bin", "dir 755"),
                ("usr/bin/app", "file a"),
            ],
        ),
        (
            "whiteout of a lower file and a lower directory",
            vec![
                vec![File("a", "1"), Dir("d", 0o755), File("d/x", "x"), File("keep", "k")],
                vec![Whiteout(".wh.a"), Whiteout(".wh.d")],
            ],
            vec![("keep", "file k")],
        ),
        (
            "opaque marker before new siblings",
            vec![
                vec![Dir("a", 0o755), File("a/x", "x"), File("a/y", "y")],
                vec![Dir("a", 0o755), Whiteout("a/.wh..wh..opq"), File("a/z", "z")],
            ],
            vec![("a", "dir 755"), ("a/z", "file z")],
        ),
        (
            "opaque marker after new siblings keeps them",
            vec![
                vec![Dir("a", 0o755), File("a/x", "x")],
                vec![Dir("a", 0o755), File("a/z", "z"), Whiteout("a/.wh..wh..opq")],
            ],
            vec![("a", "dir 755"), ("a/z", "file z")],
        ),
        (
            "opaque marker clears lower children of an updated subdirectory",
            vec![
                vec![Dir("a", 0o755), Dir("a/b", 0o755), File("a/b/old", "o")],
                vec![Dir("a/b", 0o700), File("a/b/new", "n"), Whiteout("a/.wh..wh..opq")],
            ],
            vec![("a", "dir 755"), ("a/b", "dir 700"), ("a/b/new", "file n")],
        ),
        (
            "whiteout of a missing path is not an error",
            vec![
                vec![File("a", "1")],
                vec![Whiteout(".wh.nothing"), Whiteout("no/such/.wh.dir")],
            ],
            vec![("a", "file 1")],
        ),
        (
            "a layer's whiteout does not remove what the same layer wrote",
            vec![
                vec![File("x", "lower")],
                vec![File("y", "upper"), Whiteout(".wh.y"), Whiteout(".wh.x")],
            ],
            vec![("y", "file upper")],
        ),
        (
            "aufs bookkeeping names are ignored",
            vec![vec![File("a", "1"), Whiteout(".wh..wh.plnk"), Whiteout(".wh..wh.aufs")]],
            vec![("a", "file 1")],
        ),
        (
            "file replaced by a directory and back",
            vec![
                vec![File("p", "file")],
                vec![Dir("p", 0o750), File("p/child", "c")],
                vec![File("p", "again")],
            ],
            vec![("p", "file again")],
        ),
        (
            "directory over directory keeps lower children",
            vec![
                vec![Dir("d", 0o755), File("d/lower", "l")],
                vec![Dir("d", 0o700), File("d/upper", "u")],
            ],
            vec![("d", "dir 700"), ("d/lower", "file l"), ("d/upper", "file u")],
        ),
        (
            "symlink swapped for a directory: later entries follow the link inside the rootfs",
            vec![
                vec![Dir("d", 0o755), File("d/f", "f"), Dir("e", 0o755)],
                vec![Link("d", "/e")],
                vec![File("d/g", "g")],
            ],
            vec![("d", "link /e"), ("e", "dir 755"), ("e/g", "file g")],
        ),
        (
            "absolute symlink parent (merged /usr)",
            vec![
                vec![Dir("usr/lib", 0o755), Link("lib", "/usr/lib")],
                vec![File("lib/libfoo.so.1", "elf")],
            ],
            vec![
                ("lib", "link /usr/lib"),
                ("usr", "dir 755"),
                ("usr/lib", "dir 755"),
                ("usr/lib/libfoo.so.1", "file elf"),
            ],
        ),
        (
            "read-only directories are filled, then get their mode",
            vec![vec![Dir("ro", 0o555), File("ro/f", "f")], vec![File("ro/g", "g")]],
            vec![("ro", "dir 555"), ("ro/f", "file f"), ("ro/g", "file g")],
        ),
        (
            "fifos are created, devices recorded",
            vec![vec![Fifo("run/pipe"), Char("dev/null")]],
            vec![("dev", "dir 755"), ("run", "dir 755"), ("run/pipe", "fifo")],
        ),
        (
            "absolute and dot names are confined",
            vec![vec![
                File("/etc/abs", "a"),
                File("./rel", "r"),
                File("//double//slash", "d"),
            ]],
            vec![
                ("double", "dir 755"),
                ("double/slash", "file d"),
                ("etc", "dir 755"),
                ("etc/abs", "file a"),
                ("rel", "file r"),
            ],
        ),
    ];
    for (name, layers, expected) in cases {
        let mut fx = Fixture::new();
        let refs: Vec<&[E]> = layers.iter().map(Vec::as_slice).collect();
        fx.apply_all(&refs);
        assert_eq!(fx.tree(), expect(&expected), "{name}");
        fx.assert_host_untouched();
    }
}

#[test]
fn hardlinks_reach_files_of_earlier_layers() {
    use E::*;
    let mut fx = Fixture::new();
    fx.apply_all(&[
        &[File("bin/busybox", "bb")],
        &[Hard("bin/sh", "bin/busybox"), Hard("/bin/ls", "/bin/busybox")],
    ]);
    let ino = |p: &str| fs::metadata(fx.rootfs().join(p)).unwrap().ino();
    assert_eq!(ino("bin/sh"), ino("bin/busybox"));
    assert_eq!(ino("bin/ls"), ino("bin/busybox"));
}

#[test]
fn owners_and_nodes_are_recorded_not_applied() {
    use E::*;
    let mut fx = Fixture::new();
    fx.apply_all(&[
        &[
            Owned("home/app/data", "d", 1000, 1001),
            Char("dev/null"),
            Owned("replaced", "1", 5, 5),
        ],
        &[File("replaced", "2")],
    ]);
    let m = &fx.state.manifest;
    assert_eq!(m.owner(Path::new("home/app/data")), Owner { uid: 1000, gid: 1001 });
    assert_eq!(m.owner(Path::new("replaced")), Owner::default());
    let node = m.node(Path::new("dev/null")).unwrap();
    assert_eq!(
        (node.kind, node.major, node.minor, node.mode),
        (NodeKind::CharDevice, 1, 3, 0o666)
    );
    assert!(!fx.rootfs().join("dev/null").exists());
    assert_eq!(
        fs::metadata(fx.rootfs().join("home/app/data")).unwrap().mode() & 0o777,
        0o640
    );

    // A whiteout removes a recorded node too.
    fx.apply(&[Whiteout("dev/.wh.null")]).unwrap();
    assert!(fx.state.manifest.node(Path::new("dev/null")).is_none());
}

#[test]
fn device_nodes_are_created_when_asked() {
    let mut fx = Fixture::with_options(UnpackOptions {
        limits: Limits::default(),
        device_nodes: DeviceNodes::Create,
    });
    let result = fx.apply(&[E::Char("dev/null")]);
    if nix::unistd::geteuid().is_root() {
        result.unwrap();
        let meta = fs::symlink_metadata(fx.rootfs().join("dev/null")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), makedev(1, 3));
    } else {
        let err = result.unwrap_err();
        assert!(
            bundlegen_protocol::error_chain(&err).contains("Operation not permitted"),
            "{err}"
        );
    }
}

#[test]
fn escapes_are_refused_or_confined() {
    use E::*;
    type Case = (&'static str, Vec<E>, bool);
    let cases: Vec<Case> = vec![
        ("dot-dot name", vec![File("../escaped", "x")], false),
        ("nested dot-dot", vec![File("a/../../escaped", "x")], false),
        (
            "write through an absolute symlink to /",
            vec![Link("evil", "/"), File("evil/escaped", "x")],
            true,
        ),
        (
            "write through a relative symlink up",
            vec![Link("up", "../../.."), File("up/escaped", "x")],
            true,
        ),
        (
            "write through a symlink to the host dir",
            vec![Link("h", "HOST"), File("h/secret", "x")],
            true,
        ),
        ("hardlink with dot-dot", vec![Hard("stolen", "../host/secret")], false),
        ("hardlink to a host path", vec![Hard("stolen", "HOST/secret")], false),
        (
            "whiteout through a symlink to the host",
            vec![Link("h", "HOST"), Whiteout("h/.wh.secret")],
            true,
        ),
        (
            "opaque through a symlink to the host",
            vec![Link("h", "HOST"), Whiteout("h/.wh..wh..opq")],
            true,
        ),
        (
            "symlink target replaced by a file",
            vec![Link("f", "HOST/secret"), File("f", "overwrite")],
            true,
        ),
    ];
    for (name, entries, succeeds) in cases {
        let mut fx = Fixture::new();
        let host = fx.tmp.path().join("host").to_str().unwrap().to_string();
        let host: &'static str = Box::leak(host.into_boxed_str());
        let entries: Vec<E> = entries
            .into_iter()
            .map(|e| match e {
                Link(p, "HOST") => Link(p, host),
                Hard(p, "HOST/secret") => Hard(p, Box::leak(format!("{host}/secret").into_boxed_str())),
                Link(p, "HOST/secret") => Link(p, Box::leak(format!("{host}/secret").into_boxed_str())),
                other => other,
            })
            .collect();
        let result = fx.apply(&entries);
        assert_eq!(result.is_ok(), succeeds, "{name}: {result:?}");
        fx.assert_host_untouched();
    }
}

#[test]
fn limits_stop_decompression_bombs() {
    use E::*;
    let mut fx = Fixture::with_options(UnpackOptions {
        limits: Limits {
            max_bytes: 10,
            max_entries: 100,
        },
        device_nodes: DeviceNodes::Record,
    });
    let err = fx.apply(&[File("a", "123456"), File("b", "789012")]).unwrap_err();
    assert!(matches!(err, UnpackError::LimitExceeded { what: "bytes", .. }), "{err}");

    let mut fx = Fixture::with_options(UnpackOptions {
        limits: Limits {
            max_bytes: 1 << 20,
            max_entries: 2,
        },
        device_nodes: DeviceNodes::Record,
    });
    let err = fx.apply(&[File("a", ""), File("b", ""), File("c", "")]).unwrap_err();
    assert!(
        matches!(err, UnpackError::LimitExceeded { what: "entries", .. }),
        "{err}"
    );
}

#[test]
fn broken_layers_fail_with_the_entry_named() {
    use E::*;
    let mut fx = Fixture::new();
    let err = fx.apply(&[Hard("dangling", "nowhere")]).unwrap_err();
    assert!(
        err.to_string().contains("dangling") && err.to_string().contains("does not exist"),
        "{err}"
    );
    let err = fx.apply(&[Dir("d", 0o755), Hard("l", "d")]).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
    let err = fx.apply(&[Whiteout("x/.wh.")]).unwrap_err();
    assert!(err.to_string().contains("whiteout without a name"), "{err}");
    let err = fx.apply(&[File("file", "f"), File("file/child", "c")]).unwrap_err();
    assert!(
        bundlegen_protocol::error_chain(&err).contains("not a directory"),
        "{err}"
    );
}

// --- Property test: random layer stacks against a model of the semantics. ---

#[derive(Debug, Clone)]
enum Op {
    File(String, u8),
    Dir(String),
    Symlink(String),
    Whiteout(String),
    Opaque(String),
}

/// Model state: path -> "file N" | "dir" | "link".
type Model = BTreeMap<String, String>;

fn parent_of(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn remove_subtree(model: &mut Model, path: &str) {
    model.retain(|p, _| p != path && !p.starts_with(&format!("{path}/")));
}

/// Applies one layer to the model: removals hit lower entries only, then the
/// layer's entries are added (parents as directories).
fn model_apply(model: &mut Model, ops: &[Op]) {
    let lower = model.clone();
    for op in ops {
        match op {
            Op::Whiteout(p) if lower.contains_key(p) => remove_subtree(model, p),
            Op::Opaque(d) => {
                let children: Vec<String> = lower
                    .keys()
                    .filter(|p| parent_of(p) == Some(d.as_str()))
                    .cloned()
                    .collect();
                for child in children {
                    remove_subtree(model, &child);
                }
            }
            _ => {}
        }
    }
    for op in ops {
        let path = match op {
            Op::File(p, _) | Op::Dir(p) | Op::Symlink(p) | Op::Whiteout(p) | Op::Opaque(p) => p,
        };
        // Parents are written as directories, outermost first.
        let mut ancestors: Vec<&str> = Vec::new();
        let mut ancestor = parent_of(path);
        while let Some(dir) = ancestor {
            ancestors.push(dir);
            ancestor = parent_of(dir);
        }
        for dir in ancestors.into_iter().rev() {
            if model.get(dir).map(String::as_str) != Some("dir") {
                remove_subtree(model, dir);
                model.insert(dir.to_string(), "dir".into());
            }
        }
        let value = match op {
            Op::File(_, n) => format!("file {n}"),
            Op::Dir(_) | Op::Opaque(_) => "dir".to_string(),
            Op::Symlink(_) => "link".to_string(),
            Op::Whiteout(_) => continue,
        };
        if !(value == "dir" && model.get(path).map(String::as_str) == Some("dir")) {
            remove_subtree(model, path);
            model.insert(path.clone(), value);
        }
    }
}

fn actual_model(fx: &Fixture) -> Model {
    fx.tree()
        .into_iter()
        .map(|(p, d)| {
            let kind = if d.starts_with("dir") {
                "dir".to_string()
            } else if d.starts_with("link") {
                "link".to_string()
            } else {
                d
            };
            (p, kind)
        })
        .collect()
}

/// Tar entries for a layer, with a directory entry before each path's
/// children as real tools write them.
fn to_entries(ops: &[Op]) -> Vec<E> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let data = ["0", "1", "2", "3"];
    let mut entries = Vec::new();
    let mut dirs_written: Vec<String> = Vec::new();
    for op in ops {
        let path = match op {
            Op::File(p, _) | Op::Dir(p) | Op::Symlink(p) | Op::Whiteout(p) | Op::Opaque(p) => p,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let dirs = if matches!(op, Op::Opaque(_)) {
            parts.len()
        } else {
            parts.len() - 1
        };
        for depth in 1..=dirs {
            let dir = parts[..depth].join("/");
            if !dirs_written.contains(&dir) {
                entries.push(E::Dir(leak(dir.clone()), 0o755));
                dirs_written.push(dir);
            }
        }
        entries.push(match op {
            Op::File(p, n) => E::File(leak(p.clone()), data[usize::from(*n) % 4]),
            Op::Dir(p) => E::Dir(leak(p.clone()), 0o755),
            Op::Symlink(p) => E::Link(leak(p.clone()), "/nowhere"),
            Op::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, n)| (d, n));
                let marker = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                E::Whiteout(leak(marker))
            }
            Op::Opaque(d) => E::Whiteout(leak(format!("{d}/.wh..wh..opq"))),
        });
    }
    entries
}

fn path_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4).prop_map(|parts| parts.join("/"))
}

/// A layer whose entries never need a non-directory as a parent and never
/// mention a path twice, so every layer is valid on any lower state.
fn layer_strategy() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            (path_strategy(), 0u8..4).prop_map(|(p, n)| Op::File(p, n)),
            path_strategy().prop_map(Op::Dir),
            path_strategy().prop_map(Op::Symlink),
            path_strategy().prop_map(Op::Whiteout),
            path_strategy().prop_map(Op::Opaque),
        ],
        0..8,
    )
    .prop_map(|ops| {
        let mut kept: Vec<Op> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        let mut leaves: Vec<String> = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        for op in ops {
            let (path, leaf) = match &op {
                Op::File(p, _) | Op::Symlink(p) => (p.clone(), true),
                Op::Dir(p) | Op::Opaque(p) => (p.clone(), false),
                Op::Whiteout(p) => (p.clone(), true),
            };
            let below_leaf = leaves.iter().any(|l| path.starts_with(&format!("{l}/")));
            let above_leaf = leaf && seen.iter().chain(&dirs).any(|s| s.starts_with(&format!("{path}/")));
            let clashes = seen.contains(&path) || (leaf && dirs.contains(&path));
            let whiteout_over_written = matches!(op, Op::Whiteout(_))
                && seen
                    .iter()
                    .chain(&dirs)
                    .any(|s| s == &path || s.starts_with(&format!("{path}/")) || path.starts_with(&format!("{s}/")));
            if below_leaf || above_leaf || clashes || whiteout_over_written {
                continue;
            }
            let mut ancestor = parent_of(&path);
            while let Some(dir) = ancestor {
                dirs.push(dir.to_string());
                ancestor = parent_of(dir);
            }
            if matches!(op, Op::Opaque(_)) {
                dirs.push(path.clone());
            } else {
                seen.push(path.clone());
            }
            if leaf {
                leaves.push(path);
            }
            kept.push(op);
        }
        kept
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_layer_stacks_match_the_model(layers in proptest::collection::vec(layer_strategy(), 1..5)) {
        let mut fx = Fixture::new();
        let mut model = Model::new();
        for ops in &layers {
            fx.apply(&to_entries(ops)).unwrap();
            model_apply(&mut model, ops);
        }
        fx.state.finish(&mut fx.root).unwrap();
        prop_assert_eq!(actual_model(&fx), model);
    }
}
