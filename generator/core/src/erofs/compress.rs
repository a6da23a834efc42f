//! Compressing file data into 4 KiB physical clusters, in parallel.
//!
//! Files are cut into segments (4 MiB) that compress independently, so two
//! cores share even one large file; each segment becomes extents, each
//! extent one physical cluster: compressed (the block ends with the
//! compressed bytes, zero-padded at its start, as `ZERO_PADDING` wants) or,
//! where compression would not hold more than a block's worth of input,
//! plain (the next 4096 bytes as they are). Every extent but a segment's
//! last holds at least 4096 bytes, so no two start in one logical cluster.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use super::format::BLOCK;
use super::lz4::Lz4Compressor;
use super::{Compression, ErofsError, FileData};

/// Input bytes compressed independently of their neighbours.
pub const SEGMENT: u64 = 4 << 20;
/// Most input one physical cluster may hold (decoded as one piece).
const MAX_EXTENT: usize = 256 << 10;
/// zstd's window: 2^(10 + this), enough for `MAX_EXTENT`.
pub const ZSTD_WINDOW_LOG: u8 = 8;

/// Part of a file to compress.
#[derive(Debug, Clone)]
pub struct Segment {
    pub inode: usize,
    pub start: u64,
    pub len: u64,
    pub file_size: u64,
}

/// One physical cluster's worth of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// File offset of its first byte.
    pub start: u64,
    pub len: u64,
    /// Stored as it is rather than compressed.
    pub plain: bool,
}

/// A compressed segment: its extents and their blocks, one block each.
pub struct Compressed {
    pub extents: Vec<Extent>,
    pub blocks: Vec<u8>,
}

enum Codec {
    Lz4(Box<Lz4Compressor>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl Codec {
    fn new(compression: &Compression) -> Result<Codec, ErofsError> {
        Ok(match compression {
            Compression::Lz4 { depth } => Codec::Lz4(Box::new(Lz4Compressor::new(*depth))),
            Compression::Zstd { level } => {
                let mut compressor = zstd::bulk::Compressor::new(*level).map_err(ErofsError::Zstd)?;
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::WindowLog(u32::from(10 + ZSTD_WINDOW_LOG)))
                    .map_err(ErofsError::Zstd)?;
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))
                    .map_err(ErofsError::Zstd)?;
                Codec::Zstd(Box::new(compressor))
            }
            Compression::None => unreachable!("nothing is compressed without compression"),
        })
    }

    /// Compresses a prefix of `data[start..]` into at most one block;
    /// returns the bytes consumed and appends the compressed bytes.
    fn fill_block(&mut self, data: &[u8], start: usize, out: &mut Vec<u8>) -> Result<usize, ErofsError> {
        let limit = data.len().min(start + MAX_EXTENT);
        match self {
            Codec::Lz4(lz4) => Ok(lz4.compress_prefix(data, start, limit, BLOCK as usize, out)),
            Codec::Zstd(zstd) => zstd_fill(zstd, &data[start..limit], out),
        }
    }
}

/// zstd has no "fill this much output" mode: search for the longest input
/// whose frame fits, starting from a guess and correcting by the ratio seen.
fn zstd_fill(
    compressor: &mut zstd::bulk::Compressor<'static>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, ErofsError> {
    let capacity = BLOCK as usize;
    let mut best: Option<(usize, Vec<u8>)> = None;
    let mut too_long = input.len() + 1;
    let mut try_len = input.len().min(capacity * 3);
    for _ in 0..12 {
        let frame = compressor.compress(&input[..try_len]).map_err(ErofsError::Zstd)?;
        if frame.len() <= capacity {
            let fuller = best.as_ref().is_none_or(|b| try_len > b.0);
            if fuller {
                best = Some((try_len, frame.clone()));
            }
            if try_len == input.len() || frame.len() * 100 >= capacity * 97 {
                break;
            }
            let grown = (try_len as u64 * capacity as u64 * 97 / 100 / frame.len().max(1) as u64) as usize;
            let next = grown.max(try_len + 64).min(input.len()).min(too_long - 1);
            if next <= try_len {
                break;
            }
            try_len = next;
        } else {
            too_long = too_long.min(try_len);
            let shrunk = (try_len as u64 * capacity as u64 * 95 / 100 / frame.len() as u64) as usize;
            let floor = best.as_ref().map_or(0, |b| b.0);
            let next = shrunk.min(try_len - 1).max(floor + 1);
            if next >= too_long || next <= floor {
                break;
            }
            try_len = next;
        }
    }
    match best {
        Some((len, frame)) => {
            out.extend_from_slice(&frame);
            Ok(len)
        }
        None => Ok(0),
    }
}

/// Compresses one segment's bytes (`data`, starting at file offset `start`
/// of a file of `file_size` bytes).
fn compress_segment(codec: &mut Codec, data: &[u8], start: u64, file_size: u64) -> Result<Compressed, ErofsError> {
    if let Codec::Lz4(lz4) = codec {
        lz4.begin();
    }
    let mut extents = Vec::new();
    let mut blocks = Vec::with_capacity(data.len() / 2);
    let mut at = 0usize;
    let mut compressed = Vec::with_capacity(BLOCK as usize);
    while at < data.len() {
        compressed.clear();
        let consumed = codec.fill_block(data, at, &mut compressed)?;
        let block_start = blocks.len();
        let rest = data.len() - at;
        let mut len = rest.min(BLOCK as usize);
        // The kernel maps a plain extent to the end of the logical cluster
        // being read; at the end of the file that must not run past one
        // block, so a last plain extent never crosses a logical cluster
        // boundary. Where it would, the rest goes compressed if it fits in
        // a block (as mkfs.erofs does), else the rest gets a block of its own.
        let offset = start + at as u64;
        let in_cluster = (offset % BLOCK) as usize;
        let split = offset + len as u64 == file_size && in_cluster + len > BLOCK as usize;
        if split {
            len = BLOCK as usize - in_cluster;
        }
        if consumed > BLOCK as usize || (split && consumed == rest) {
            blocks.resize(block_start + BLOCK as usize - compressed.len(), 0);
            blocks.extend_from_slice(&compressed);
            extents.push(Extent {
                start: start + at as u64,
                len: consumed as u64,
                plain: false,
            });
            at += consumed;
        } else {
            blocks.extend_from_slice(&data[at..at + len]);
            blocks.resize(block_start + BLOCK as usize, 0);
            extents.push(Extent {
                start: start + at as u64,
                len: len as u64,
                plain: true,
            });
            at += len;
        }
    }
    Ok(Compressed { extents, blocks })
}

fn read_segment(data: &FileData, segment: &Segment) -> Result<Vec<u8>, ErofsError> {
    match data {
        FileData::Bytes(bytes) => Ok(bytes[segment.start as usize..(segment.start + segment.len) as usize].to_vec()),
        FileData::Path(path) => {
            let mut buffer = vec![0u8; segment.len as usize];
            let file = File::open(path).map_err(|source| ErofsError::Read {
                path: path.clone(),
                source,
            })?;
            file.read_exact_at(&mut buffer, segment.start)
                .map_err(|source| ErofsError::Read {
                    path: path.clone(),
                    source,
                })?;
            Ok(buffer)
        }
    }
}

/// Runs `segments` through `threads` compressors and hands each result to
/// `consume` in order. At most a few segments wait to be consumed, so
/// memory stays bounded whatever the tree's size.
pub fn compress_all(
    segments: &[Segment],
    source: impl Fn(usize) -> FileData + Sync,
    compression: &Compression,
    threads: usize,
    mut consume: impl FnMut(&Segment, Compressed) -> Result<(), ErofsError>,
) -> Result<(), ErofsError> {
    let threads = threads.max(1);
    let window = threads * 2;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let consumed = (Mutex::new(0usize), Condvar::new());
    let (sender, receiver) = mpsc::channel::<(usize, Result<Compressed, ErofsError>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let sender = sender.clone();
            let (next, stop, consumed, source) = (&next, &stop, &consumed, &source);
            scope.spawn(move || {
                let mut codec = match Codec::new(compression) {
                    Ok(codec) => codec,
                    Err(e) => {
                        let _ = sender.send((next.fetch_add(1, Ordering::SeqCst), Err(e)));
                        return;
                    }
                };
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= segments.len() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    {
                        let (done, turn) = consumed;
                        let mut done = done.lock().unwrap();
                        while index >= *done + window && !stop.load(Ordering::SeqCst) {
                            done = turn.wait(done).unwrap();
                        }
                    }
                    let segment = &segments[index];
                    let result = read_segment(&source(segment.inode), segment)
                        .and_then(|data| compress_segment(&mut codec, &data, segment.start, segment.file_size));
                    if sender.send((index, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(sender);
        let mut waiting = BTreeMap::new();
        let mut expected = 0;
        let outcome = (|| {
            while expected < segments.len() {
                let (index, result) = receiver.recv().expect("a worker reports every segment it takes");
                waiting.insert(index, result);
                while let Some(result) = waiting.remove(&expected) {
                    consume(&segments[expected], result?)?;
                    expected += 1;
                    let (done, turn) = &consumed;
                    *done.lock().unwrap() = expected;
                    turn.notify_all();
                }
            }
            Ok(())
        })();
        if outcome.is_err() {
            stop.store(true, Ordering::SeqCst);
            consumed.1.notify_all();
        }
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4_segment(data: &[u8]) -> Compressed {
        let mut codec = Codec::new(&Compression::Lz4 { depth: 16 }).unwrap();
        compress_segment(&mut codec, data, 0, data.len() as u64).unwrap()
    }

    #[test]
    fn extents_cover_the_segment_and_decode() {
        let text: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8 ^ (i / 1000) as u8).collect();
        let out = lz4_segment(&text);
        assert_eq!(out.blocks.len(), out.extents.len() * BLOCK as usize);
        let mut decoded = Vec::new();
        for (extent, block) in out.extents.iter().zip(out.blocks.chunks(BLOCK as usize)) {
            assert_eq!(extent.start, decoded.len() as u64);
            if extent.plain {
                decoded.extend_from_slice(&block[..extent.len as usize]);
            } else {
                let zeros = block.iter().take_while(|b| **b == 0).count();
                decoded.extend(super::super::lz4::decompress(&block[zeros..], extent.len as usize).unwrap());
            }
        }
        assert_eq!(decoded, text);
        let middle = &out.extents[..out.extents.len() - 1];
        assert!(
            middle.iter().all(|e| e.len >= BLOCK),
            "only the last extent may be short"
        );
    }

    #[test]
    fn a_last_plain_extent_stays_in_its_logical_cluster() {
        let mut state = 7u32;
        let mut data: Vec<u8> = b"compressible ".repeat(700);
        data.extend((0..6000).map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 16) as u8
        }));
        let out = lz4_segment(&data);
        let last = out.extents.last().unwrap();
        assert!(last.plain);
        assert!(last.start % BLOCK + last.len <= BLOCK, "{:?}", out.extents);
        assert_eq!(last.start + last.len, data.len() as u64);
    }

    #[test]
    fn a_compressible_tail_is_not_split_in_two_blocks() {
        // About 2:1 for lz4: eight-byte pieces drawn from 64 random ones,
        // so a block holds ~8 KiB and the file's end leaves short tails.
        let mut state = 11u32;
        let mut next = || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            state >> 16
        };
        let pieces: Vec<[u8; 8]> = (0..64).map(|_| std::array::from_fn(|_| next() as u8)).collect();
        let text: Vec<u8> = (0..4_000).flat_map(|_| pieces[next() as usize % 64]).collect();
        for end in (20_000..30_000).step_by(97) {
            let out = lz4_segment(&text[..end]);
            let (last, before) = out.extents.split_last().unwrap();
            assert!(
                before.iter().all(|e| e.len >= BLOCK),
                "{end}: a short extent before the last: {:?}",
                out.extents
            );
            assert_eq!(last.start + last.len, end as u64);
        }
    }

    #[test]
    fn zstd_frames_fit_a_block_and_decode() {
        let text: Vec<u8> = (0..200_000u32)
            .map(|i| b"abcdefghij"[(i * 7 % 10) as usize] ^ (i / 4096) as u8)
            .collect();
        let mut codec = Codec::new(&Compression::Zstd { level: 3 }).unwrap();
        let out = compress_segment(&mut codec, &text, 0, text.len() as u64).unwrap();
        let mut decoded = Vec::new();
        for (extent, block) in out.extents.iter().zip(out.blocks.chunks(BLOCK as usize)) {
            if extent.plain {
                decoded.extend_from_slice(&block[..extent.len as usize]);
            } else {
                let zeros = block.iter().take_while(|b| **b == 0).count();
                decoded.extend(zstd::bulk::decompress(&block[zeros..], MAX_EXTENT).unwrap());
            }
        }
        assert_eq!(decoded, text);
        assert!(out.extents.len() < text.len() / BLOCK as usize, "it compresses");
    }
}
