//! The two rootfs implementations against each other: the same layers and
//! the same edits, applied to a bundle on disk and to one in memory, must
//! succeed or fail alike and give the same archive, byte for byte.

use std::path::Path;

use bundlegen_fixtures::tar::RawEntry;
use bundlegen_protocol::archive::{ArchiveOptions, write_bundle};
use bundlegen_protocol::manifest::Owner;
use proptest::prelude::*;

use super::*;
use crate::bundle::{Bundle, Place};
use crate::output::{self, Format, OutputOptions};
use crate::unpack::{DeviceNodes, Limits, UnpackOptions, UnpackState, apply_layer};

/// Between the layers' mtimes (1,000,000) and now: entries keep their own
/// mtime, and what was changed while generating shows as this.
const EPOCH: i64 = 1_500_000_000;

#[derive(Debug, Clone)]
enum Entry {
    Dir(String, u32),
    File(String, u8, u32),
    Symlink(String, String),
    Hardlink(String, String),
    Char(String),
    Fifo(String),
    Whiteout(String),
    Opaque(String),
}

/// What a stage may do to the rootfs after unpacking.
#[derive(Debug, Clone)]
enum Edit {
    Remove(String),
    Mkdir(String),
    Write(String),
    MountPoint(String, bool),
}

fn raw(entries: &[Entry]) -> Vec<u8> {
    const DATA: [&[u8]; 3] = [b"", b"one", b"\x7fELF and more"];
    let raw: Vec<RawEntry<'_>> = entries
        .iter()
        .map(|entry| match entry {
            Entry::Dir(p, mode) => RawEntry::dir(p).mode(*mode),
            Entry::File(p, data, mode) => RawEntry::file(p, DATA[usize::from(*data) % 3])
                .mode(*mode)
                .owner(1000, 1000),
            Entry::Symlink(p, target) => RawEntry::symlink(p, target),
            Entry::Hardlink(p, target) => RawEntry::hardlink(p, target),
            Entry::Char(p) => RawEntry::char_device(p),
            Entry::Fifo(p) => RawEntry {
                kind: tar::EntryType::Fifo,
                ..RawEntry::file(p, b"").mode(0o620)
            },
            Entry::Whiteout(p) => RawEntry::file(p, b""),
            Entry::Opaque(d) => RawEntry::file(Box::leak(format!("{d}/.wh..wh..opq").into_boxed_str()), b""),
        })
        .collect();
    bundlegen_fixtures::tar::archive(&raw)
}

/// One bundle of each kind, unpacked and edited in step.
struct Twins {
    tmp: tempfile::TempDir,
    disk: (Bundle, UnpackState),
    memory: (Bundle<MemoryRootfs>, UnpackState),
    options: UnpackOptions,
}

impl Twins {
    /// `in_memory`: the bytes of file contents the one in memory holds
    /// in memory before its spool file, if not as many as usual.
    fn new(device_nodes: DeviceNodes, in_memory: Option<usize>) -> Twins {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, memory) = (tmp.path().join("disk"), tmp.path().join("memory"));
        let place = |output| Place { output, work_dir: None };
        let disk = Bundle::create(&place(&disk)).unwrap();
        let mut memory = Bundle::create_in_memory(&place(&memory)).unwrap();
        if let Some(in_memory) = in_memory {
            let staging = memory.path().to_path_buf();
            memory.rootfs = MemoryRootfs::holding_in_memory(&staging.join("rootfs"), &staging, in_memory).unwrap();
        }
        Twins {
            disk: (disk, UnpackState::default()),
            memory: (memory, UnpackState::default()),
            tmp,
            options: UnpackOptions {
                limits: Limits::default(),
                device_nodes,
            },
        }
    }

    /// Applies a layer to both; their results, as the user sees them, must agree.
    fn layer(&mut self, entries: &[Entry]) -> Result<(), String> {
        let bytes = raw(entries);
        let (disk, disk_state) = &mut self.disk;
        let on_disk = apply_layer(&mut disk.rootfs, disk_state, &mut &bytes[..], "layer", &self.options);
        let (memory, memory_state) = &mut self.memory;
        let in_memory = apply_layer(
            &mut memory.rootfs,
            memory_state,
            &mut &bytes[..],
            "layer",
            &self.options,
        );
        let (on_disk, in_memory) = (on_disk.map_err(|e| e.to_string()), in_memory.map_err(|e| e.to_string()));
        assert_eq!(on_disk, in_memory, "{entries:?}");
        on_disk
    }

    fn finish(&mut self) {
        for (rootfs, state) in [
            (&mut self.disk.0.rootfs as &mut dyn Rootfs, &mut self.disk.1),
            (&mut self.memory.0.rootfs, &mut self.memory.1),
        ] {
            state.finish(rootfs).unwrap();
        }
        self.disk.0.manifest = std::mem::take(&mut self.disk.1.manifest);
        self.memory.0.manifest = std::mem::take(&mut self.memory.1.manifest);
    }

    fn edit(&mut self, edit: &Edit) {
        let disk = apply_edit(&mut self.disk.0, edit);
        let memory = apply_edit(&mut self.memory.0, edit);
        assert_eq!(disk, memory, "{edit:?}");
    }

    /// Writes both bundles, directory and `.tar.gz`: the archives must be
    /// the same, and so must the directories (the one in memory written
    /// out while its archive is compressed), archived again. Returns the archive.
    fn archives(self) -> Vec<u8> {
        let options = OutputOptions {
            format: Format::TarGz,
            keep_dir: true,
            replace: false,
            archive: ArchiveOptions::default(),
            level: Some(1),
            threads: 1,
            ipk: None,
        };
        let (mut disk, mut memory) = (self.disk.0, self.memory.0);
        disk.epoch = EPOCH;
        memory.epoch = EPOCH;
        let manifest = disk.manifest.clone();
        assert_eq!(manifest, memory.manifest);
        let disk = output::write(disk, &self.tmp.path().join("disk"), &options).unwrap();
        let memory = output::write(memory, &self.tmp.path().join("memory"), &options).unwrap();
        let read = |written: &output::Written| std::fs::read(&written.archive.as_ref().unwrap().path).unwrap();
        let bytes = read(&disk);
        assert!(bytes == read(&memory), "the archives differ");
        let (disk_summary, memory_summary) = (disk.archive.unwrap().summary, memory.archive.unwrap().summary);
        assert_eq!(disk_summary, memory_summary);
        let clamped = ArchiveOptions {
            mtime_clamp: EPOCH,
            ..ArchiveOptions::default()
        };
        let tar = |dir: &Path| write_bundle(dir, &manifest, &clamped, Vec::new()).unwrap().0;
        let (disk_dir, memory_dir) = (disk.dir.unwrap(), memory.dir.unwrap());
        assert!(tar(&disk_dir) == tar(&memory_dir), "the directories differ");
        bytes
    }
}

/// What an edit did, as its caller sees it.
fn apply_edit(bundle: &mut Bundle<dyn Rootfs>, edit: &Edit) -> Result<String, Option<std::io::ErrorKind>> {
    let path = |p: &str| Path::new(p).to_path_buf();
    let result = match edit {
        Edit::Remove(p) => bundle.rootfs.remove_all(&path(p)).map(|removed| removed.to_string()),
        Edit::Mkdir(p) => bundle
            .rootfs
            .mkdir(&path(p), 0o755, MissingDirs::Create)
            .map(|()| String::new()),
        Edit::Write(p) => bundle
            .rootfs
            .write_file(&path(p), &mut &b"written"[..], None)
            .map(|n| n.to_string()),
        Edit::MountPoint(p, dir) => bundle.create_mount_point(p, *dir).map(|()| String::new()),
    };
    let listing = |bundle: &mut Bundle<dyn Rootfs>| {
        let kind = bundle.rootfs.kind(&path(match edit {
            Edit::Remove(p) | Edit::Mkdir(p) | Edit::Write(p) | Edit::MountPoint(p, _) => p,
        }));
        format!("{kind:?}")
    };
    match result {
        Ok(text) => Ok(format!("{text} {}", listing(bundle))),
        Err(e) => Err(e.io_kind()),
    }
}

#[test]
fn a_bundle_in_memory_archives_as_the_one_on_disk() {
    use Entry::*;
    let s = String::from;
    let layers = vec![
        vec![
            Dir(s("usr"), 0o755),
            Dir(s("usr/lib"), 0o2775),
            File(s("usr/notes"), 1, 0o644),
            File(s("usr/lib/libz.so.1.2"), 2, 0o755),
            Symlink(s("usr/lib/libz.so.1"), s("libz.so.1.2")),
            Symlink(s("lib"), s("/usr/lib")),
            File(s("bin/app"), 1, 0o4755),
            Hardlink(s("bin/alias"), s("bin/app")),
            Hardlink(s("bin/alias2"), s("bin/app")),
            File(s("etc/one"), 1, 0o640),
            Hardlink(s("etc/two"), s("etc/one")),
            Dir(s("ro"), 0o555),
            File(s("ro/inside"), 1, 0o444),
            Char(s("dev/null")),
            Fifo(s("run/pipe")),
            Dir(s("tmp"), 0o1777),
        ],
        vec![
            // Through the symlink parent, into the setgid directory.
            File(s("lib/new/libnew.so"), 2, 0o644),
            Whiteout(s("bin/.wh.alias2")),
            Opaque(s("ro")),
            File(s("ro/upper"), 0, 0o600),
        ],
    ];
    let edits = [
        Edit::Remove(s("usr/lib/libz.so.1.2")),
        Edit::Remove(s("lib/libz.so.1")),
        Edit::MountPoint(s("/proc"), true),
        Edit::MountPoint(s("/etc/resolv.conf"), false),
        Edit::Write(s("etc/hosts")),
        Edit::Mkdir(s("usr/lib/gpu")),
        Edit::Remove(s("bin/app")),
        // The only change to /usr: its mtime becomes the time of the change.
        Edit::Remove(s("usr/notes")),
    ];
    // Contents all in memory, none, and some files across the two.
    let cases = [DeviceNodes::Record, DeviceNodes::Create]
        .into_iter()
        .flat_map(|nodes| [None, Some(0), Some(10)].map(|in_memory| (nodes, in_memory)));
    for (nodes, in_memory) in cases {
        if nodes == DeviceNodes::Create && !nix::unistd::geteuid().is_root() {
            continue;
        }
        let mut twins = Twins::new(nodes, in_memory);
        for layer in &layers {
            twins.layer(layer).unwrap();
        }
        twins.finish();
        for edit in &edits {
            twins.edit(edit);
        }
        let archive = twins.archives();
        // The test can fail: what it compares is not empty.
        assert!(archive.len() > 200);
    }
}

#[test]
fn reading_follows_the_same_links() {
    use Entry::*;
    let s = String::from;
    // The file read is partly in memory, partly in the spool file.
    let mut twins = Twins::new(DeviceNodes::Record, Some(2));
    twins
        .layer(&[
            File(s("etc/passwd"), 1, 0o644),
            Symlink(s("etc/link"), s("../etc/./passwd")),
            Symlink(s("abs"), s("/etc/link")),
            Symlink(s("loop"), s("loop")),
            Dir(s("d"), 0o755),
            // Opening it would wait for a writer forever.
            Fifo(s("appmetadata.json")),
        ])
        .unwrap();
    twins.finish();
    let paths = [
        "abs",
        "etc/link",
        "etc/passwd",
        "loop",
        "d",
        "missing",
        "abs/x",
        "appmetadata.json",
    ];
    for path in paths {
        let read = |rootfs: &mut dyn Rootfs| {
            rootfs
                .open_file_follow(Path::new(path))
                .map(|(mut file, real)| {
                    let mut text = String::new();
                    file.read_to_string(&mut text).map(|_| (text, file.size, real)).ok()
                })
                .map_err(|e| e.io_kind())
        };
        let disk = read(&mut twins.disk.0.rootfs);
        let memory = read(&mut twins.memory.0.rootfs);
        assert_eq!(disk, memory, "{path}");
        let list = |rootfs: &mut dyn Rootfs| rootfs.read_dir(Path::new(path)).map_err(|e| e.io_kind());
        assert_eq!(
            list(&mut twins.disk.0.rootfs),
            list(&mut twins.memory.0.rootfs),
            "{path}"
        );
    }
    assert_eq!(
        twins.memory.0.manifest.owner(Path::new("etc/passwd")),
        Owner { uid: 1000, gid: 1000 }
    );
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4).prop_map(|parts| parts.join("/"))
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        path(),
        path().prop_map(|p| format!("/{p}")),
        path().prop_map(|p| format!("../{p}")),
        Just(String::from("/")),
        Just(String::from("..")),
    ]
}

fn mode() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0o755),
        Just(0o700),
        Just(0o2775),
        Just(0o1777),
        Just(0o555),
        Just(0o4711)
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (path(), mode()).prop_map(|(p, m)| Entry::Dir(p, m)),
        (path(), 0u8..3, mode()).prop_map(|(p, d, m)| Entry::File(p, d, m & 0o7755)),
        (path(), target()).prop_map(|(p, t)| Entry::Symlink(p, t)),
        (path(), path()).prop_map(|(p, t)| Entry::Hardlink(p, t)),
        path().prop_map(Entry::Char),
        path().prop_map(Entry::Fifo),
        path().prop_map(|p| match p.rsplit_once('/') {
            Some((dir, name)) => Entry::Whiteout(format!("{dir}/.wh.{name}")),
            None => Entry::Whiteout(format!(".wh.{p}")),
        }),
        path().prop_map(Entry::Opaque),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        path().prop_map(Edit::Remove),
        path().prop_map(Edit::Mkdir),
        path().prop_map(Edit::Write),
        (path(), any::<bool>()).prop_map(|(p, d)| Edit::MountPoint(p, d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any layers (hostile links, through files, over whiteouts) and any
    /// edits: the same outcome, and where both succeed, the same archive.
    #[test]
    fn random_bundles_archive_alike(
        layers in proptest::collection::vec(proptest::collection::vec(entry(), 0..10), 1..4),
        edits in proptest::collection::vec(edit(), 0..6),
        in_memory in proptest::option::of(0usize..40),
    ) {
        let mut twins = Twins::new(DeviceNodes::Record, in_memory);
        for layer in &layers {
            // A layer that fails stops where it failed, in both: the rest
            // goes on from the same state, which the archive then compares.
            let _ = twins.layer(layer);
        }
        twins.finish();
        for edit in &edits {
            twins.edit(edit);
        }
        twins.archives();
    }
}
