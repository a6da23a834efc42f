use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use super::*;

fn file(bytes: &[u8]) -> Inode {
    Inode {
        mode: 0o644,
        kind: InodeKind::File {
            size: bytes.len() as u64,
            data: FileData::Bytes(Arc::from(bytes)),
        },
    }
}

fn dir() -> Inode {
    Inode {
        mode: 0o755,
        kind: InodeKind::Dir(BTreeMap::new()),
    }
}

/// A tree with every kind of entry and data layout.
fn sample() -> Tree {
    let mut tree = Tree::new(0o755);
    let text: Vec<u8> = (0..100_000u32)
        .map(|i| b"erofs writer sample text "[(i % 25) as usize])
        .collect();
    let bin = tree.add(ROOT, b"bin", dir()).unwrap();
    let app = tree.add(bin, b"app", file(&text)).unwrap();
    tree.link(ROOT, b"app-link", app).unwrap();
    tree.add(bin, b"small", file(b"hello\n")).unwrap();
    tree.add(bin, b"empty", file(b"")).unwrap();
    tree.add(bin, b"block", file(&[7u8; 4096])).unwrap();
    tree.add(bin, b"tail", file(&[9u8; 4096 * 2 + 4070])).unwrap();
    tree.add(
        ROOT,
        b"sh",
        Inode {
            mode: 0o777,
            kind: InodeKind::Symlink(b"bin/app".to_vec()),
        },
    )
    .unwrap();
    tree.add(
        ROOT,
        b"pipe",
        Inode {
            mode: 0o600,
            kind: InodeKind::Fifo,
        },
    )
    .unwrap();
    let wide = tree.add(ROOT, b"wide", dir()).unwrap();
    for i in 0..600 {
        tree.add(
            wide,
            format!("entry-{i:04}-{}", "x".repeat(i % 40)).as_bytes(),
            file(&[i as u8; 3]),
        )
        .unwrap();
    }
    tree
}

fn write(tree: &Tree, compression: Compression) -> (tempfile::NamedTempFile, Written) {
    let image = tempfile::NamedTempFile::new().unwrap();
    let options = Options {
        compression,
        build_time: 1_700_000_000,
        threads: 2,
    };
    let written = write_image(tree, &options, image.as_file()).unwrap();
    (image, written)
}

#[test]
fn superblock_and_size() {
    let (image, written) = write(&sample(), Compression::LZ4HC);
    let bytes = std::fs::read(image.path()).unwrap();
    assert_eq!(bytes.len() as u64, written.size);
    assert_eq!(written.size % BLOCK, 0);
    assert_eq!(&bytes[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
    assert_eq!(bytes[1024 + 12], 12, "4 KiB blocks");
    assert_eq!(written.inodes, 1 + 1 + 5 + 2 + 1 + 600);
    assert!(written.compressed_files >= 1, "the text file compresses");
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    for compression in [Compression::LZ4HC, Compression::Zstd { level: 3 }, Compression::None] {
        let (a, _) = write(&sample(), compression);
        let (b, _) = write(&sample(), compression);
        assert_eq!(
            std::fs::read(a.path()).unwrap(),
            std::fs::read(b.path()).unwrap(),
            "{compression:?}"
        );
    }
}

#[test]
fn names_are_checked() {
    let mut tree = Tree::new(0o755);
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256]] {
        assert!(tree.add(ROOT, bad, file(b"")).is_err(), "{bad:?}");
    }
    tree.add(ROOT, b"once", file(b"")).unwrap();
    assert!(tree.add(ROOT, b"once", file(b"")).is_err());
}

/// `fsck.erofs` (erofs-utils 1.5; no zstd) decodes every file and extracts
/// the tree; it must come out as it went in.
#[test]
fn fsck_erofs_extracts_what_went_in() {
    if Command::new("fsck.erofs").arg("-V").output().is_err() {
        eprintln!("skipped: fsck.erofs is not installed (tests/install-peers installs it)");
        return;
    }
    for compression in [Compression::LZ4HC, Compression::None] {
        let tree = sample();
        let (image, _) = write(&tree, compression);
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("x");
        let output = Command::new("fsck.erofs")
            .arg(format!("--extract={}", target.display()))
            .arg("--no-preserve")
            .arg(image.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{compression:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let app = std::fs::read(target.join("bin/app")).unwrap();
        let InodeKind::File {
            data: FileData::Bytes(expected),
            ..
        } = &tree.inodes()[2].kind
        else {
            panic!()
        };
        assert_eq!(&app[..], &expected[..]);
        assert_eq!(std::fs::read(target.join("app-link")).unwrap(), app);
        assert_eq!(std::fs::read(target.join("bin/small")).unwrap(), b"hello\n");
        assert_eq!(
            std::fs::read(target.join("bin/tail")).unwrap(),
            vec![9u8; 4096 * 2 + 4070]
        );
        assert_eq!(
            std::fs::read_link(target.join("sh")).unwrap(),
            std::path::Path::new("bin/app")
        );
        assert_eq!(std::fs::read_dir(target.join("wide")).unwrap().count(), 600);
        assert_eq!(
            std::fs::read(target.join("wide/entry-0599-").to_string_lossy().to_string() + &"x".repeat(599 % 40))
                .unwrap(),
            vec![87u8; 3]
        );
    }
}

/// Everything the reader finds: path → (kind, mode, data or target).
fn read_all(image: &std::fs::File) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    let len = image.metadata().unwrap().len();
    let reader = read::ErofsImage::open(image, 0, len).unwrap();
    let mut out = BTreeMap::new();
    reader
        .walk(|path, inode| {
            let data = match inode.kind {
                read::Kind::File | read::Kind::Symlink => reader.data(inode, 1 << 30)?,
                _ => Vec::new(),
            };
            out.insert(
                path.display().to_string(),
                (format!("{:?}", inode.kind), inode.mode, data),
            );
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn the_reader_reads_what_the_writer_wrote() {
    let tree = sample();
    for compression in [Compression::LZ4HC, Compression::Zstd { level: 3 }, Compression::None] {
        let (image, _) = write(&tree, compression);
        let all = read_all(image.as_file());
        assert_eq!(
            all.len(),
            tree.inodes().len() - 1 + 1,
            "{compression:?}: every name (the hard link twice)"
        );
        let InodeKind::File {
            data: FileData::Bytes(text),
            ..
        } = &tree.inodes()[2].kind
        else {
            panic!()
        };
        assert_eq!(all["bin/app"].2, &text[..]);
        assert_eq!(all["app-link"].2, &text[..]);
        assert_eq!(all["bin/tail"].2, vec![9u8; 4096 * 2 + 4070]);
        assert_eq!(all["sh"], ("Symlink".into(), 0o777, b"bin/app".to_vec()));
        assert_eq!(all["pipe"].0, "Fifo");
        assert_eq!(
            all[&format!("wide/entry-0599-{}", "x".repeat(599 % 40))].2,
            vec![87u8; 3]
        );
    }
}

/// erofs-utils' images use compact compression indexes; read them too.
#[test]
fn the_reader_reads_mkfs_erofs_images() {
    if Command::new("mkfs.erofs").arg("--help").output().is_err() {
        eprintln!("skipped: no mkfs.erofs (tests/install-peers installs erofs-utils)");
        return;
    }
    let source = tempfile::tempdir().unwrap();
    let mut state = 1u32;
    let mut expected = BTreeMap::new();
    for (i, size) in [0usize, 5, 4096, 9000, 70_000, 300_000, 1_000_003]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..size)
            .map(|n| {
                if (n / 5000) % 3 == 0 {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                } else {
                    b"abcabcabd"[n % 9]
                }
            })
            .collect();
        let name = format!("dir{}/file{i}", i % 2);
        std::fs::create_dir_all(source.path().join(format!("dir{}", i % 2))).unwrap();
        std::fs::write(source.path().join(&name), &data).unwrap();
        expected.insert(name, data);
    }
    for flags in [&["-zlz4hc", "-C4096"][..], &["-zlz4"], &[]] {
        let image = tempfile::NamedTempFile::new().unwrap();
        let output = Command::new("mkfs.erofs")
            .args(flags)
            .args(["-T0", "--all-root", "-x-1", "--quiet"])
            .arg(image.path())
            .arg(source.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let all = read_all(image.as_file());
        for (name, data) in &expected {
            assert!(all[name].2 == *data, "{flags:?}: {name} differs");
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// A damaged image is an error, never a panic or a read past it.
    #[test]
    fn damaged_images_are_errors(flips in proptest::collection::vec((0usize..200_000, 1u8..=255), 1..20), cut in proptest::option::of(1024usize..200_000)) {
        let (image, written) = write(&sample(), Compression::LZ4HC);
        let mut bytes = std::fs::read(image.path()).unwrap();
        for (at, mask) in flips {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.min(bytes.len()));
        }
        let damaged = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(damaged.path(), &bytes).unwrap();
        let file = damaged.as_file();
        let _ = written;
        if let Ok(reader) = read::ErofsImage::open(file, 0, bytes.len() as u64) {
            let _ = reader.walk(|_, inode| {
                let _ = reader.data(inode, 1 << 24);
                Ok(())
            });
        }
    }
}
