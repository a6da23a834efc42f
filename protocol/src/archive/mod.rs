//! The bundle archive: how the generator writes a bundle (`config.json` and
//! `rootfs/` at the archive root, the BundleGen layout) and how the box reads
//! one back without trusting it.
//!
//! Archives are reproducible: entries are sorted, owners come from the
//! [`Manifest`](crate::manifest::Manifest) (mapped to host ids), mtimes are
//! clamped to a fixed epoch, and no user or group names are stored.

use std::io;
use std::path::PathBuf;

use crate::root::RootError;
use crate::tar_read::TarError;

pub mod ipk;
mod read;
mod write;

pub use read::{Owners, ReadOptions, UnpackReport, read_root_file, unpack_bundle};
pub use write::{
    ArchiveOptions, ArchiveSource, ArchiveSummary, HostDir, SourceEntry, SourceKind, write_bundle, write_bundle_from,
    write_rootfs,
};

/// Name of the root filesystem directory inside a bundle.
pub const ROOTFS_DIR: &str = "rootfs";
/// Name of the runtime configuration inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// Compression of an archive stream, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// Recognises gzip and zstd magic numbers; anything else is taken as plain.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: cannot {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("archive entry {path:?}: {reason}")]
    BadEntry { path: PathBuf, reason: String },
    #[error("archive exceeds the limit of {limit} {what}")]
    LimitExceeded { what: &'static str, limit: u64 },
    #[error("ipk package: {0}")]
    Ipk(String),
}

impl ArchiveError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { op, path, source }
    }
}

#[cfg(test)]
mod tests;
