use std::io::Cursor;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn read_all(bytes: &[u8]) -> Result<Vec<(TarEntry, Vec<u8>)>, TarError> {
    let mut reader = TarReader::new(Cursor::new(bytes));
    let mut out = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        let mut data = Vec::new();
        reader
            .data()
            .read_to_end(&mut data)
            .map_err(|source| TarError::Io { offset: 0, source })?;
        out.push((entry, data));
    }
    Ok(out)
}

fn gnu_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_600_000_000);
    header
}

/// A raw ustar header block with a correct checksum.
fn raw_header(name: &[u8], typeflag: u8, size: u64) -> [u8; 512] {
    let mut block = [0u8; 512];
    block[..name.len()].copy_from_slice(name);
    block[100..107].copy_from_slice(b"0000644");
    block[108..115].copy_from_slice(b"0000000");
    block[116..123].copy_from_slice(b"0000000");
    block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    block[136..147].copy_from_slice(b"00000000000");
    block[156] = typeflag;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    fix_checksum(&mut block);
    block
}

fn fix_checksum(block: &mut [u8; 512]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
}

#[test]
fn reads_what_the_tar_crate_writes() {
    let mut builder = tar::Builder::new(Vec::new());
    let long = format!("{}/file.txt", "d".repeat(150));
    let mut header = gnu_header(tar::EntryType::Regular, 5);
    builder.append_data(&mut header, &long, &b"hello"[..]).unwrap();
    let mut header = gnu_header(tar::EntryType::Directory, 0);
    header.set_mode(0o755);
    builder.append_data(&mut header, "dir/", io::empty()).unwrap();
    let mut header = gnu_header(tar::EntryType::Symlink, 0);
    let target = format!("/{}", "t".repeat(200));
    builder.append_link(&mut header, "link", &target).unwrap();
    let mut header = gnu_header(tar::EntryType::Link, 0);
    builder.append_link(&mut header, "hard", &long).unwrap();
    let mut header = gnu_header(tar::EntryType::Char, 0);
    header.set_device_major(1).unwrap();
    header.set_device_minor(3).unwrap();
    builder.append_data(&mut header, "dev/null", io::empty()).unwrap();
    let bytes = builder.into_inner().unwrap();

    let entries = read_all(&bytes).unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|(e, d)| (e.path.to_str().unwrap().to_string(), e.kind, e.mode, d.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (long.clone(), TarKind::File, 0o644, 5),
            ("dir/".to_string(), TarKind::Dir, 0o755, 0),
            ("link".to_string(), TarKind::Symlink, 0o644, 0),
            ("hard".to_string(), TarKind::HardLink, 0o644, 0),
            ("dev/null".to_string(), TarKind::CharDevice, 0o644, 0),
        ]
    );
    assert_eq!(entries[0].1, b"hello");
    assert_eq!(entries[2].0.link_target.as_deref(), Some(Path::new(&target)));
    assert_eq!(entries[3].0.link_target.as_deref(), Some(Path::new(&long)));
    assert_eq!((entries[4].0.dev_major, entries[4].0.dev_minor), (1, 3));
    assert_eq!(entries[0].0.mtime, 1_600_000_000);
}

#[test]
fn pax_records_override_the_header() {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("path", &b"pax/name"[..]),
            ("uid", &b"123456789"[..]),
            ("mtime", &b"1700000000.5"[..]),
            ("SCHILY.xattr.security.capability", &b"\x01\x02"[..]),
        ])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(2);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, "short", &b"ok"[..]).unwrap();
    let bytes = builder.into_inner().unwrap();
    let entries = read_all(&bytes).unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0].0;
    assert_eq!(entry.path, Path::new("pax/name"));
    assert_eq!(entry.uid, 123_456_789);
    assert_eq!(entry.mtime, 1_700_000_000);
    assert_eq!(
        entry.xattrs.get("security.capability").map(Vec::as_slice),
        Some(&b"\x01\x02"[..])
    );
}

#[test]
fn ustar_prefix_is_joined() {
    let mut block = raw_header(b"name", b'0', 0);
    block[345..351].copy_from_slice(b"prefix");
    fix_checksum(&mut block);
    let mut bytes = block.to_vec();
    bytes.extend([0u8; 1024]);
    let entries = read_all(&bytes).unwrap();
    assert_eq!(entries[0].0.path, Path::new("prefix/name"));
}

#[test]
fn base256_numbers_are_read() {
    let mut block = raw_header(b"big", b'0', 0);
    // uid 2^40 in GNU base-256.
    block[108..116].copy_from_slice(&[0x80, 0, 1, 0, 0, 0, 0, 0]);
    fix_checksum(&mut block);
    let mut bytes = block.to_vec();
    bytes.extend([0u8; 1024]);
    assert_eq!(read_all(&bytes).unwrap()[0].0.uid, 1 << 40);
}

#[test]
fn hostile_headers_are_rejected_without_buffering() {
    // A GNU long name claiming 1 GiB: rejected before any allocation.
    let huge = raw_header(b"././@LongLink", b'L', 1 << 30);
    let err = read_all(&huge).unwrap_err();
    assert!(err.to_string().contains("GNU long name"), "{err}");

    let pax = raw_header(b"pax", b'x', MAX_PAX_HEADER + 1);
    assert!(read_all(&pax).unwrap_err().to_string().contains("PAX header"));

    let mut corrupt = raw_header(b"file", b'0', 0);
    corrupt[0] = b'g';
    assert!(read_all(&corrupt).unwrap_err().to_string().contains("checksum"));

    let sparse = raw_header(b"sparse", b'S', 0);
    assert!(read_all(&sparse).unwrap_err().to_string().contains("sparse"));

    let unknown = raw_header(b"odd", b'Z', 0);
    assert!(
        read_all(&unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown entry type")
    );

    let mut truncated = raw_header(b"file", b'0', 100).to_vec();
    truncated.extend([7u8; 10]);
    assert!(read_all(&truncated).is_err());

    let mut bad_pax = raw_header(b"pax", b'x', 12).to_vec();
    bad_pax.extend(b"99 path=x\n\0\0");
    bad_pax.resize(1024, 0);
    assert!(read_all(&bad_pax).unwrap_err().to_string().contains("PAX record"));
}

#[test]
fn data_offsets_point_at_the_data() {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("a", &b"first"[..]), ("b", &b"second!"[..])] {
        let mut header = gnu_header(tar::EntryType::Regular, data.len() as u64);
        builder.append_data(&mut header, name, data).unwrap();
    }
    let bytes = builder.into_inner().unwrap();
    let mut reader = TarReader::new(Cursor::new(&bytes));
    // Skip data without reading it: offsets must still be right.
    while let Some(entry) = reader.next_entry().unwrap() {
        let start = entry.data_offset as usize;
        let expected: &[u8] = if entry.path == Path::new("a") {
            b"first"
        } else {
            b"second!"
        };
        assert_eq!(&bytes[start..start + entry.size as usize], expected);
    }
    assert_eq!(reader.offset(), bytes.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn round_trips_random_archives(
        files in proptest::collection::vec(
            ("[a-z]{1,12}(/[a-z0-9_-][a-z0-9._-]{0,39}){0,6}", proptest::collection::vec(any::<u8>(), 0..2000), 0u32..0o7777, any::<bool>()),
            0..20)
    ) {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data, mode, gnu) in &files {
            let mut header = if *gnu { tar::Header::new_gnu() } else { tar::Header::new_ustar() };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            // ustar cannot hold every long name; the tar crate errors then, skip those.
            if builder.append_data(&mut header, name, data.as_slice()).is_err() {
                return Ok(());
            }
        }
        let bytes = builder.into_inner().unwrap();
        let entries = read_all(&bytes).unwrap();
        prop_assert_eq!(entries.len(), files.len());
        for ((entry, data), (name, expected, mode, _)) in entries.iter().zip(&files) {
            prop_assert_eq!(entry.path.to_str().unwrap(), name.as_str());
            prop_assert_eq!(data, expected);
            prop_assert_eq!(entry.mode, *mode);
            prop_assert_eq!(entry.kind, TarKind::File);
        }
    }

    #[test]
    fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_all(&bytes);
    }
}

#[test]
fn archives_ending_right_after_the_last_data_are_accepted() {
    // What umoci 0.4.7 writes for a single-file insert: no padding, no end blocks.
    let mut bytes = raw_header(b"usr/share/extra", b'0', 6).to_vec();
    bytes.extend(b"extra\n");
    let entries = read_all(&bytes).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, b"extra\n");
    // But data shorter than the header says is still an error.
    bytes.truncate(bytes.len() - 2);
    assert!(read_all(&bytes).is_err());
}
