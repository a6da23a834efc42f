//! A native EROFS image writer: a [`Tree`] in, an image out, as RDK's
//! package spec asks of `mkfs.erofs` (4 KiB blocks and physical clusters,
//! lz4, zstd or no compression, inline data, no dedupe, fragments,
//! tail-packing or xattrs, all-root owners, one clamped mtime, no random
//! UUID): the same tree gives the same bytes.
//!
//! The image is laid out as `[superblock][file data][metadata][directory
//! and symlink blocks]`: file data streams out first (compressed in
//! parallel, see [`compress`]), because only then is each file's layout
//! known; inodes are then packed into metadata blocks (best fit, an inode
//! and its inline tail never split across blocks), and directories, which
//! name their children's inode numbers, come last.
//!
//! `generator/core/tests/erofs_kernel.rs` mounts what this writes with the
//! kernel and compares it with the tree; `fsck.erofs` checks it too.

use std::fs::File;
use std::io;
use std::path::PathBuf;

mod compress;
mod data;
mod format;
mod lz4;
mod meta;
pub mod read;
mod tree;

pub use format::BLOCK;
pub use tree::{FileData, Inode, InodeKind, ROOT, Tree};

#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the image: {0}")]
    Write(#[source] io::Error),
    #[error("{path}: {reason}")]
    Name { path: String, reason: &'static str },
    #[error("{path}: its data changed while the image was written (now {actual} bytes, {expected} expected)")]
    Changed { path: PathBuf, expected: u64, actual: u64 },
    #[error("zstd: {0}")]
    Zstd(#[source] io::Error),
    #[error("the image would exceed {0}")]
    TooLarge(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// lz4 (kernel-decodable LZ4 blocks); `depth` candidates searched per
    /// position, more for smaller images.
    Lz4 {
        depth: usize,
    },
    Zstd {
        level: i32,
    },
    None,
}

impl Compression {
    /// What `-zlz4hc` stands for here.
    pub const LZ4HC: Compression = Compression::Lz4 { depth: 64 };
}

#[derive(Debug, Clone)]
pub struct Options {
    pub compression: Compression,
    /// Every inode's mtime (seconds since the epoch).
    pub build_time: u64,
    /// Compression threads (0: all cores).
    pub threads: usize,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The image's size in bytes (a multiple of 4096).
    pub size: u64,
    pub inodes: u64,
    /// Regular files stored compressed.
    pub compressed_files: u64,
}

/// Writes `tree` as an EROFS image at the start of `out`.
pub fn write_image(tree: &Tree, options: &Options, out: &File) -> Result<Written, ErofsError> {
    let links = tree::Links::of(tree);
    let data = data::write_file_data(tree, &links, options, out)?;
    let compressed_files = data.compressed_files;
    let size = meta::write_metadata(tree, &links, data, options, out)?;
    Ok(Written {
        size,
        inodes: tree.inodes().len() as u64,
        compressed_files,
    })
}

fn write_at(out: &File, bytes: &[u8], offset: u64) -> Result<(), ErofsError> {
    use std::os::unix::fs::FileExt;
    out.write_all_at(bytes, offset).map_err(ErofsError::Write)
}

#[cfg(test)]
mod tests;
