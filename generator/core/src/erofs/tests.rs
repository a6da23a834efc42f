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
