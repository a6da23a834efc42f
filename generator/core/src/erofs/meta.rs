//! The metadata phase: each inode's record (header, then inline data or a
//! compression index), records packed into metadata blocks after the file
//! data, directories (which name their children's inode numbers) and long
//! symlinks in blocks after that, and the superblock last.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use super::compress::ZSTD_WINDOW_LOG;
use super::data::{FilePlacement, PlacedData};
use super::format::*;
use super::tree::Links;
use super::{Compression, ErofsError, InodeKind, Options, ROOT, Tree, write_at};

/// An inode's record: its header's layout and what follows the header.
struct Record {
    header_len: u64,
    layout: DataLayout,
    /// Inline data, or map header and index; for directories, the inline
    /// tail's length until the inode numbers are known.
    extra: Vec<u8>,
    size: u64,
    union: u32,
}

/// Packs records into metadata blocks: one of at most a block goes into the
/// fullest block it fits in, never across a block boundary; a larger one (a
/// big file's compression index) starts a block of its own.
#[derive(Default)]
struct MetaAllocator {
    end: u64,
    /// (free bytes at the block's end, block).
    free: BTreeSet<(u64, u64)>,
}

impl MetaAllocator {
    fn place(&mut self, len: u64) -> u64 {
        let len = len.next_multiple_of(SLOT);
        if len <= BLOCK
            && let Some(&(free, block)) = self.free.range((len, 0)..).next()
        {
            self.free.remove(&(free, block));
            if free - len >= SLOT {
                self.free.insert((free - len, block));
            }
            return (block + 1) * BLOCK - free;
        }
        let offset = self.end.next_multiple_of(BLOCK);
        self.end = offset + len;
        let rest = self.end.next_multiple_of(BLOCK) - self.end;
        if rest >= SLOT {
            self.free.insert((rest, self.end / BLOCK));
        }
        offset
    }
}

fn names_of(children: &BTreeMap<Vec<u8>, usize>) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = vec![b".", b".."];
    names.extend(children.keys().map(Vec::as_slice));
    names.sort();
    names
}

fn records(tree: &Tree, links: &Links, mut placements: BTreeMap<usize, FilePlacement>, algorithm: u8) -> Vec<Record> {
    let flat = |inline: bool| {
        if inline {
            DataLayout::FlatInline
        } else {
            DataLayout::FlatPlain
        }
    };
    tree.inodes()
        .iter()
        .enumerate()
        .map(|(index, inode)| {
            let nlink = links.nlink[index];
            match &inode.kind {
                InodeKind::Dir(children) => {
                    let size = directory_size(&names_of(children));
                    let header_len = header_len(size, nlink);
                    let inline = tail_fits(header_len, size % BLOCK);
                    Record {
                        header_len,
                        layout: flat(inline),
                        extra: if inline {
                            vec![0; (size % BLOCK) as usize]
                        } else {
                            Vec::new()
                        },
                        size,
                        union: 0,
                    }
                }
                InodeKind::Symlink(target) => {
                    let size = target.len() as u64;
                    let header_len = header_len(size, nlink);
                    let inline = tail_fits(header_len, size) && size < BLOCK;
                    Record {
                        header_len,
                        layout: flat(inline),
                        extra: if inline { target.clone() } else { Vec::new() },
                        size,
                        union: 0,
                    }
                }
                InodeKind::Fifo => Record {
                    header_len: header_len(0, nlink),
                    layout: DataLayout::FlatPlain,
                    extra: Vec::new(),
                    size: 0,
                    union: 0,
                },
                InodeKind::File { size, .. } => {
                    let header_len = header_len(*size, nlink);
                    match placements.remove(&index).expect("every file was placed") {
                        FilePlacement::Flat { blkaddr, inline_tail } => Record {
                            header_len,
                            layout: flat(inline_tail.is_some()),
                            extra: inline_tail.unwrap_or_default(),
                            size: *size,
                            union: blkaddr,
                        },
                        // The map header follows the header directly (both
                        // are multiples of 8 long).
                        FilePlacement::Compressed { mut index, blocks } => {
                            index[6] = algorithm;
                            Record {
                                header_len,
                                layout: DataLayout::CompressedFull,
                                extra: index,
                                size: *size,
                                union: blocks,
                            }
                        }
                    }
                }
            }
        })
        .collect()
}

fn file_type(kind: &InodeKind) -> u8 {
    match kind {
        InodeKind::Dir(_) => FT_DIR,
        InodeKind::File { .. } => FT_REG,
        InodeKind::Symlink(_) => FT_SYMLINK,
        InodeKind::Fifo => FT_FIFO,
    }
}

fn mode_type(kind: &InodeKind) -> u32 {
    match kind {
        InodeKind::Dir(_) => S_IFDIR,
        InodeKind::File { .. } => S_IFREG,
        InodeKind::Symlink(_) => S_IFLNK,
        InodeKind::Fifo => S_IFIFO,
    }
}

/// Writes metadata, directory and symlink blocks and the superblock after
/// the file data; returns the image's size.
pub fn write_metadata(
    tree: &Tree,
    links: &Links,
    data: PlacedData,
    options: &Options,
    out: &File,
) -> Result<u64, ErofsError> {
    let inodes = tree.inodes();
    let (algorithm, feature_incompat, compression_field, configs) = match options.compression {
        Compression::Zstd { .. } => (
            ALGORITHM_ZSTD,
            FEATURE_ZERO_PADDING | FEATURE_COMPR_CFGS,
            1u16 << ALGORITHM_ZSTD,
            zstd_config(ZSTD_WINDOW_LOG),
        ),
        Compression::Lz4 { .. } => (ALGORITHM_LZ4, FEATURE_ZERO_PADDING, 0, Vec::new()),
        Compression::None => (ALGORITHM_LZ4, 0, 0, Vec::new()),
    };
    let mut records = records(tree, links, data.placements, algorithm);

    // Inode numbers: where the records land in the metadata area.
    let mut allocator = MetaAllocator::default();
    let offsets: Vec<u64> = records
        .iter()
        .map(|r| allocator.place(r.header_len + r.extra.len() as u64))
        .collect();
    let nid = |index: usize| offsets[index] / SLOT;
    if nid(ROOT) > u64::from(u16::MAX) {
        return Err(ErofsError::TooLarge("a root inode number of 16 bits"));
    }
    let meta_blkaddr = data.end_block;
    let meta_blocks = allocator.end.div_ceil(BLOCK).max(1);

    // Directory and long-symlink blocks come after the metadata.
    let mut next_block = meta_blkaddr + meta_blocks;
    for (index, inode) in inodes.iter().enumerate() {
        let record = &mut records[index];
        match &inode.kind {
            InodeKind::Dir(children) => {
                let mut entries: Vec<(&[u8], u64, u8)> =
                    vec![(b".", nid(index), FT_DIR), (b"..", nid(links.parent[index]), FT_DIR)];
                entries.extend(
                    children
                        .iter()
                        .map(|(name, &child)| (name.as_slice(), nid(child), file_type(&inodes[child].kind))),
                );
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut blocks = directory_blocks(&entries);
                if record.layout == DataLayout::FlatInline {
                    record.extra = blocks.pop().expect("a directory has . and ..");
                }
                record.union = next_block as u32;
                for block in &mut blocks {
                    block.resize(BLOCK as usize, 0);
                    write_at(out, block, next_block * BLOCK)?;
                    next_block += 1;
                }
            }
            InodeKind::Symlink(target) if record.layout == DataLayout::FlatPlain => {
                let mut block = target.clone();
                block.resize(BLOCK as usize, 0);
                record.union = next_block as u32;
                write_at(out, &block, next_block * BLOCK)?;
                next_block += 1;
            }
            _ => {}
        }
    }
    let blocks = u32::try_from(next_block).map_err(|_| ErofsError::TooLarge("2^32 blocks"))?;

    let mut meta = vec![0u8; (meta_blocks * BLOCK) as usize];
    for (index, record) in records.iter().enumerate() {
        let at = offsets[index] as usize;
        let header = InodeHeader {
            extended: record.header_len == EXTENDED_INODE,
            layout: record.layout,
            mode: mode_type(&inodes[index].kind) | inodes[index].mode,
            nlink: links.nlink[index] as u32,
            size: record.size,
            union: record.union,
            ino: index as u32 + 1,
            mtime: options.build_time,
        };
        header.encode(&mut meta[at..at + record.header_len as usize]);
        let extra_at = at + record.header_len as usize;
        meta[extra_at..extra_at + record.extra.len()].copy_from_slice(&record.extra);
    }
    write_at(out, &meta, meta_blkaddr * BLOCK)?;

    let superblock = Superblock {
        root_nid: nid(ROOT) as u16,
        inodes: inodes.len() as u64,
        build_time: options.build_time,
        blocks,
        meta_blkaddr: meta_blkaddr as u32,
        feature_incompat,
        compression_field,
    };
    write_at(out, &superblock.encode(&configs), 0)?;
    let size = next_block * BLOCK;
    out.set_len(size).map_err(ErofsError::Write)?;
    Ok(size)
}
