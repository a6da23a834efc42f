//! The Linux kernel as the reader of the EROFS images we write: each one is
//! loop-mounted (root only; CI runs as root) and the mounted tree compared
//! with the source: names, types, modes, sizes, contents, symlink targets,
//! hard links, owners.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlegen_core::erofs::{Compression, Options, Tree, write_image};
use proptest::prelude::*;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: mounting images needs root (CI runs as root)");
    false
}

/// What a tree holds, as comparable facts: per path (type, mode, size,
/// content hash or link target), and which paths share an inode.
fn describe(root: &Path) -> (BTreeMap<PathBuf, String>, Vec<Vec<PathBuf>>) {
    let mut facts = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let kind = meta.file_type();
            let fact = if kind.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else if kind.is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if kind.is_file() {
                inodes.entry(meta.ino()).or_default().push(relative.clone());
                let digest = bundlegen_protocol::digest::Sha256Digest::of(&fs::read(&path).unwrap());
                format!("file {mode:o} {} {digest}", meta.len())
            } else {
                format!("other {mode:o} {:o}", meta.mode() & 0o170000)
            };
            facts.insert(relative, fact);
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes.into_values().filter(|g| g.len() > 1).collect();
    for group in &mut groups {
        group.sort();
    }
    groups.sort();
    (facts, groups)
}

struct Mounted {
    point: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.point.path()).status();
    }
}

fn mount(image: &Path) -> Mounted {
    let point = tempfile::tempdir().unwrap();
    let output = Command::new("mount")
        .args(["-t", "erofs", "-o", "loop,ro"])
        .arg(image)
        .arg(point.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Mounted { point }
}

fn image_of(source: &Path, compression: Compression) -> tempfile::NamedTempFile {
    let tree = Tree::from_dir(source).unwrap();
    let image = tempfile::NamedTempFile::new().unwrap();
    let options = Options {
        compression,
        build_time: 1_600_000_000,
        threads: 2,
    };
    write_image(&tree, &options, image.as_file()).unwrap();
    image
}

fn assert_same_tree(source: &Path, compression: Compression) {
    let image = image_of(source, compression);
    let mounted = mount(image.path());
    let expected = describe(source);
    let actual = describe(mounted.point.path());
    for (path, fact) in &expected.0 {
        assert_eq!(actual.0.get(path), Some(fact), "{compression:?}: {}", path.display());
    }
    assert_eq!(actual.0.len(), expected.0.len(), "{compression:?}: entry count");
    assert_eq!(actual.1, expected.1, "{compression:?}: hard links");
    let root_meta = fs::metadata(mounted.point.path()).unwrap();
    assert_eq!((root_meta.uid(), root_meta.gid()), (0, 0), "all-root");
}

const ALL: [Compression; 4] = [
    Compression::LZ4HC,
    Compression::Lz4 { depth: 1 },
    Compression::Zstd { level: 3 },
    Compression::None,
];

/// Every kind of entry and size that makes the writer choose a layout.
fn varied_tree(dir: &Path) {
    let write = |path: &str, bytes: &[u8], mode: u32| {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    let text: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| format!("line {} of a log {}\n", i % 977, i / 3000).into_bytes())
        .take(9 << 20)
        .collect();
    let mut state = 0x9e37_79b9u32;
    let noise: Vec<u8> = (0..(5 << 20) + 123)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    write("usr/share/log.txt", &text, 0o644);
    // Compressible and incompressible runs in one file (as in ELF files):
    // plain and compressed extents side by side, a plain one last.
    let mut mixed = Vec::new();
    for (i, run) in [9000usize, 5000, 3000, 7000, 3100].iter().enumerate() {
        if i % 2 == 0 {
            mixed.extend(text[..*run].iter());
        } else {
            mixed.extend(noise[i * 10_000..i * 10_000 + run].iter());
        }
    }
    mixed.extend(noise[..3500].iter());
    write("usr/lib/mixed.so", &mixed, 0o755);
    write("usr/lib/random.bin", &noise, 0o644);
    write("usr/bin/tool", &text[..40_000], 0o4755);
    write("empty", b"", 0o600);
    write("exact-block", &[1u8; 4096], 0o644);
    write("inline-tail", &[2u8; 4096 + 4000], 0o644);
    write("no-inline-tail", &[3u8; 4096 + 4090], 0o644);
    write("small", b"hello world\n", 0o640);
    fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool-alias")).unwrap();
    symlink("usr/bin/tool", dir.join("tool-link")).unwrap();
    symlink("x".repeat(4000), dir.join("long-link")).unwrap();
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o620)).unwrap();
    write(&format!("names/{}", "n".repeat(255)), b"long name", 0o644);
    let mut deep = String::from("deep");
    for i in 0..40 {
        deep.push_str(&format!("/level{i}"));
    }
    write(&format!("{deep}/leaf"), b"leaf", 0o644);
    for i in 0..3000 {
        write(&format!("wide/file-{i:05}"), format!("{i}").as_bytes(), 0o644);
    }
    fs::create_dir(dir.join("empty-dir")).unwrap();
    fs::set_permissions(dir.join("empty-dir"), fs::Permissions::from_mode(0o1777)).unwrap();
}

#[test]
fn the_kernel_reads_every_variant_as_the_source() {
    if !root() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    varied_tree(source.path());
    for compression in ALL {
        assert_same_tree(source.path(), compression);
    }
}

#[test]
fn fsck_erofs_accepts_what_it_can_read() {
    let source = tempfile::tempdir().unwrap();
    if Command::new("fsck.erofs").arg("-V").output().is_err() {
        eprintln!("skipped: no fsck.erofs (tests/install-peers installs erofs-utils)");
        return;
    }
    varied_tree(source.path());
    // erofs-utils 1.5 has no zstd.
    for compression in [Compression::LZ4HC, Compression::None] {
        let image = image_of(source.path(), compression);
        let output = Command::new("fsck.erofs").arg(image.path()).output().unwrap();
        assert!(
            output.status.success(),
            "{compression:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = Command::new("dump.erofs").arg(image.path()).output().unwrap();
        assert!(
            output.status.success(),
            "{compression:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A file over 4 GiB (sparse in the source): 64-bit sizes, extended inodes.
#[test]
fn a_file_over_4_gib() {
    if !root() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    let big = source.path().join("big.img");
    let file = fs::File::create(&big).unwrap();
    let size = (4u64 << 30) + 12_345;
    file.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"in the middle", 3 << 30).unwrap();
    file.write_all_at(b"at the end", size - 10).unwrap();
    drop(file);
    let image = image_of(source.path(), Compression::LZ4HC);
    let mounted = mount(image.path());
    let read = fs::File::open(mounted.point.path().join("big.img")).unwrap();
    assert_eq!(read.metadata().unwrap().len(), size);
    let mut buffer = [0u8; 13];
    read.read_exact_at(&mut buffer, 3 << 30).unwrap();
    assert_eq!(&buffer, b"in the middle");
    let mut buffer = [0u8; 10];
    read.read_exact_at(&mut buffer, size - 10).unwrap();
    assert_eq!(&buffer, b"at the end");
    read.read_exact_at(&mut buffer, 1 << 30).unwrap();
    assert_eq!(buffer, [0u8; 10]);
}

/// Random trees: what goes in comes out.
fn random_tree() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = "[a-z]{1,12}";
    let path = proptest::collection::vec(name, 1..4).prop_map(|parts| parts.join("/"));
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..9000),
        (0usize..40_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        (0usize..3000).prop_map(|n| (0..n).flat_map(|i| (i as u32).to_le_bytes()).collect()),
    ];
    proptest::collection::vec((path, data), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn random_trees_come_back_the_same(files in random_tree(), pick in 0usize..4) {
        if !root() {
            return Ok(());
        }
        let source = tempfile::tempdir().unwrap();
        for (path, data) in &files {
            let path = source.path().join(path);
            // A name used as both a file and a directory: the first wins.
            if fs::create_dir_all(path.parent().unwrap()).is_ok() && !path.exists() {
                fs::write(&path, data).unwrap();
            }
        }
        assert_same_tree(source.path(), ALL[pick]);
    }
}
