//! The file-data phase: every regular file's bytes, from block 1 on, in
//! inode order, compressed where that takes fewer bytes than flat blocks
//! with the tail inlined, and how each file ended up.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::compress::{self, Compressed, Extent, SEGMENT, Segment};
use super::format::*;
use super::tree::Links;
use super::{Compression, ErofsError, FileData, InodeKind, Options, Tree, write_at};

/// How a regular file's data ended up.
#[derive(Debug, Clone)]
pub enum FilePlacement {
    /// Blocks from `blkaddr`; the tail inline when it fits with the inode.
    Flat { blkaddr: u32, inline_tail: Option<Vec<u8>> },
    /// A full compression index (map header included) and the number of
    /// physical clusters.
    Compressed { index: Vec<u8>, blocks: u32 },
}

pub struct PlacedData {
    pub placements: BTreeMap<usize, FilePlacement>,
    /// The first block after the file data.
    pub end_block: u64,
    pub compressed_files: u64,
}

/// Bytes a file takes stored flat: its full blocks, and its tail's block
/// unless the tail goes inline (with its inode, in the metadata).
fn flat_bytes(size: u64, nlink: u64) -> u64 {
    let tail = size % BLOCK;
    if tail == 0 || tail_fits(header_len(size, nlink), tail) {
        size
    } else {
        size - tail + BLOCK
    }
}

/// Reads a file's bytes by offset, from disk or memory.
enum Source {
    Disk { file: File, path: PathBuf },
    Memory(Arc<[u8]>),
}

impl Source {
    fn open(data: &FileData, size: u64) -> Result<Source, ErofsError> {
        Ok(match data {
            FileData::Path(path) => {
                let read_error = |source| ErofsError::Read {
                    path: path.clone(),
                    source,
                };
                let file = File::open(path).map_err(read_error)?;
                let actual = file.metadata().map_err(read_error)?.len();
                if actual != size {
                    return Err(ErofsError::Changed {
                        path: path.clone(),
                        expected: size,
                        actual,
                    });
                }
                Source::Disk {
                    file,
                    path: path.clone(),
                }
            }
            FileData::Bytes(bytes) => Source::Memory(bytes.clone()),
        })
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> Result<(), ErofsError> {
        match self {
            Source::Disk { file, path } => file.read_exact_at(buffer, offset).map_err(|source| ErofsError::Read {
                path: path.clone(),
                source,
            }),
            Source::Memory(bytes) => {
                let start = offset as usize;
                let slice = bytes.get(start..start + buffer.len()).ok_or_else(|| ErofsError::Read {
                    path: PathBuf::from("(memory)"),
                    source: io::ErrorKind::UnexpectedEof.into(),
                })?;
                buffer.copy_from_slice(slice);
                Ok(())
            }
        }
    }
}

/// A compressed file whose segments are arriving.
struct InProgress {
    inode: usize,
    start_block: u64,
    extents: Vec<(Extent, u32)>,
}

struct DataWriter<'a> {
    tree: &'a Tree,
    links: &'a Links,
    out: &'a File,
    next_block: u64,
    /// Files before this one have been placed (or are being compressed).
    next_file: usize,
    placements: BTreeMap<usize, FilePlacement>,
    compressed_files: u64,
}

impl DataWriter<'_> {
    fn block_address(&self) -> Result<u32, ErofsError> {
        u32::try_from(self.next_block).map_err(|_| ErofsError::TooLarge("2^32 blocks"))
    }

    /// Writes file `index` flat at the next block.
    fn write_flat(&mut self, index: usize) -> Result<(), ErofsError> {
        let InodeKind::File { size, data } = &self.tree.inodes()[index].kind else {
            unreachable!("only files have data")
        };
        let size = *size;
        let source = Source::open(data, size)?;
        let tail = size % BLOCK;
        let inline = tail_fits(header_len(size, self.links.nlink[index]), tail);
        let body = if inline { size - tail } else { size };
        let blkaddr = self.block_address()?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut copied = 0u64;
        while copied < body {
            let n = (body - copied).min(buffer.len() as u64) as usize;
            source.read_at(&mut buffer[..n], copied)?;
            let padded = n.next_multiple_of(BLOCK as usize);
            buffer[n..padded].fill(0);
            write_at(self.out, &buffer[..padded], self.next_block * BLOCK)?;
            self.next_block += padded as u64 / BLOCK;
            copied += n as u64;
        }
        let inline_tail = if inline {
            let mut bytes = vec![0u8; tail as usize];
            source.read_at(&mut bytes, size - tail)?;
            Some(bytes)
        } else {
            None
        };
        self.placements
            .insert(index, FilePlacement::Flat { blkaddr, inline_tail });
        Ok(())
    }

    /// Writes flat every file before `limit` not placed yet.
    fn write_flat_before(&mut self, limit: usize) -> Result<(), ErofsError> {
        while self.next_file < limit {
            let index = self.next_file;
            self.next_file += 1;
            if matches!(self.tree.inodes()[index].kind, InodeKind::File { .. }) && !self.placements.contains_key(&index)
            {
                self.write_flat(index)?;
            }
        }
        Ok(())
    }

    /// Writes a compressed segment's clusters; starts its file if it is new.
    fn add_segment(
        &mut self,
        current: &mut Option<InProgress>,
        segment: &Segment,
        compressed: Compressed,
    ) -> Result<(), ErofsError> {
        if current.as_ref().is_none_or(|c| c.inode != segment.inode) {
            self.finish(current.take())?;
            self.write_flat_before(segment.inode)?;
            self.next_file = segment.inode + 1;
            *current = Some(InProgress {
                inode: segment.inode,
                start_block: self.next_block,
                extents: Vec::new(),
            });
        }
        let file = current.as_mut().expect("set above");
        write_at(self.out, &compressed.blocks, self.next_block * BLOCK)?;
        for extent in compressed.extents {
            file.extents.push((extent, self.block_address()?));
            self.next_block += 1;
        }
        Ok(())
    }

    /// Keeps a compressed file if it takes fewer bytes than flat (a file
    /// of 4097 to 8191 bytes in one block beats a block and an inline
    /// tail), else rewrites it flat where it began.
    fn finish(&mut self, file: Option<InProgress>) -> Result<(), ErofsError> {
        let Some(file) = file else { return Ok(()) };
        let InodeKind::File { size, .. } = self.tree.inodes()[file.inode].kind else {
            unreachable!("segments are of files")
        };
        let blocks = file.extents.len() as u64;
        let index = full_index(size, &file.extents);
        if blocks * BLOCK + (index.len() as u64) < flat_bytes(size, self.links.nlink[file.inode]) {
            self.placements.insert(
                file.inode,
                FilePlacement::Compressed {
                    index,
                    blocks: blocks as u32,
                },
            );
            self.compressed_files += 1;
            Ok(())
        } else {
            self.next_block = file.start_block;
            self.write_flat(file.inode)
        }
    }
}

/// The full compression index of a file (map header, padding, one entry
/// per logical cluster) from its extents and their clusters' addresses.
fn full_index(size: u64, extents: &[(Extent, u32)]) -> Vec<u8> {
    let lclusters = size.div_ceil(BLOCK);
    let mut index = Vec::with_capacity(16 + lclusters as usize * 8);
    index.extend_from_slice(&map_header(0));
    // Full indexes start 8 bytes after the map header (the kernel's
    // Z_EROFS_FULL_INDEX_ALIGN).
    index.extend_from_slice(&[0; 8]);
    let heads: Vec<u64> = extents.iter().map(|(e, _)| e.start / BLOCK).collect();
    let mut current = 0;
    for lcn in 0..lclusters {
        while current + 1 < heads.len() && heads[current + 1] <= lcn {
            current += 1;
        }
        let (extent, blkaddr) = &extents[current];
        if heads[current] == lcn {
            let kind = if extent.plain { LCLUSTER_PLAIN } else { LCLUSTER_HEAD };
            index.extend_from_slice(&lcluster_index(kind, (extent.start % BLOCK) as u16, *blkaddr));
        } else {
            let next = heads.get(current + 1).copied().unwrap_or(lclusters);
            index.extend_from_slice(&nonhead_index((lcn - heads[current]) as u16, (next - lcn) as u16));
        }
    }
    index
}

/// Writes every regular file's data from block 1 on.
pub fn write_file_data(tree: &Tree, links: &Links, options: &Options, out: &File) -> Result<PlacedData, ErofsError> {
    let mut writer = DataWriter {
        tree,
        links,
        out,
        next_block: 1,
        next_file: 0,
        placements: BTreeMap::new(),
        compressed_files: 0,
    };
    // Files over a block could take less compressed: cut into segments.
    let mut segments = Vec::new();
    if options.compression != Compression::None {
        for (index, inode) in tree.inodes().iter().enumerate() {
            if let InodeKind::File { size, .. } = inode.kind
                && size > BLOCK
            {
                let mut start = 0;
                while start < size {
                    let len = SEGMENT.min(size - start);
                    segments.push(Segment {
                        inode: index,
                        start,
                        len,
                        file_size: size,
                    });
                    start += len;
                }
            }
        }
    }
    if !segments.is_empty() {
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let source = |index: usize| match &tree.inodes()[index].kind {
            InodeKind::File { data, .. } => data.clone(),
            _ => unreachable!("segments are of files"),
        };
        let mut current = None;
        compress::compress_all(
            &segments,
            source,
            &options.compression,
            threads,
            |segment, compressed| writer.add_segment(&mut current, segment, compressed),
        )?;
        writer.finish(current)?;
    }
    writer.write_flat_before(tree.inodes().len())?;
    Ok(PlacedData {
        placements: writer.placements,
        end_block: writer.next_block,
        compressed_files: writer.compressed_files,
    })
}
