//! A package's content layer from an unpacked root filesystem: a tar
//! (plain, gzip or zstd; all-root, mtimes clamped), or an EROFS image with
//! its dm-verity tree and the annotations that describe it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use bundlegen_protocol::archive::{ArchiveOptions, write_rootfs};
use bundlegen_protocol::digest::{HashingWriter, Sha256Digest, to_hex};
use bundlegen_protocol::manifest::{Manifest, Owner};
use bundlegen_protocol::ralf::verity;
use bundlegen_protocol::ralf::{ContentKind, ErofsCompression, media};
use sha2::{Digest, Sha256};

use super::PackageError;
use crate::erofs::{self, Compression, Tree};
use crate::output::pgzip::ParallelGzWriter;

/// Content over this size becomes EROFS lz4 by default, as ralfpack does.
pub const EROFS_FROM: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct ContentOptions {
    pub kind: ContentKind,
    /// Every mtime is clamped to this.
    pub epoch: i64,
    pub threads: usize,
    /// A dm-verity salt; derived from the image when not given.
    pub salt: Option<Vec<u8>>,
}

/// A written content blob.
pub struct Content {
    pub kind: ContentKind,
    pub file: File,
    pub size: u64,
    pub digest: Sha256Digest,
    pub annotations: BTreeMap<String, String>,
}

fn io_error(what: &'static str) -> impl Fn(io::Error) -> PackageError {
    move |source| PackageError::Io { what, source }
}

/// Refuses device nodes: the spec allows none in a package.
pub fn refuse_device_nodes(manifest: &Manifest) -> Result<(), PackageError> {
    let nodes: Vec<String> = manifest
        .nodes()
        .map(|(path, _)| format!("/{}", path.display()))
        .collect();
    if nodes.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = nodes.iter().take(5).map(String::as_str).collect();
    Err(PackageError::DeviceNodes {
        count: nodes.len(),
        first: shown.join(", "),
    })
}

/// Writes the content of `rootfs` into a new temporary file in `dir`.
pub fn write_content(
    rootfs: &Path,
    manifest: &Manifest,
    options: &ContentOptions,
    dir: &Path,
) -> Result<Content, PackageError> {
    refuse_device_nodes(manifest)?;
    let file = tempfile::tempfile_in(dir).map_err(io_error("creating the content file"))?;
    match options.kind {
        ContentKind::Erofs { compression, .. } => erofs_content(rootfs, options, compression, file),
        ContentKind::Empty => Err(PackageError::Content(
            "an empty content layer carries no image content".into(),
        )),
        kind => tar_content(rootfs, manifest, options, kind, file),
    }
}

fn tar_content(
    rootfs: &Path,
    manifest: &Manifest,
    options: &ContentOptions,
    kind: ContentKind,
    file: File,
) -> Result<Content, PackageError> {
    let archive = ArchiveOptions {
        mtime_clamp: options.epoch,
        owner_override: Some(Owner::default()),
        ..ArchiveOptions::default()
    };
    let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let hashing = match kind {
        ContentKind::Tar => write_rootfs(rootfs, manifest, &archive, hashing)?.0,
        ContentKind::TarGzip => {
            let gz = ParallelGzWriter::new(hashing, 6, options.threads).map_err(io_error("compressing the content"))?;
            write_rootfs(rootfs, manifest, &archive, gz)?
                .0
                .finish()
                .map_err(io_error("compressing the content"))?
        }
        ContentKind::TarZstd => {
            let mut zstd =
                zstd::stream::write::Encoder::new(hashing, 3).map_err(io_error("compressing the content"))?;
            zstd.multithread(options.threads.max(1) as u32)
                .and_then(|()| zstd.include_checksum(true))
                .map_err(io_error("compressing the content"))?;
            write_rootfs(rootfs, manifest, &archive, zstd)?
                .0
                .finish()
                .map_err(io_error("compressing the content"))?
        }
        _ => unreachable!("tar kinds only"),
    };
    let (buffered, digest, size) = hashing.finish();
    let file = buffered.into_inner().map_err(|e| PackageError::Io {
        what: "writing the content",
        source: e.into_error(),
    })?;
    Ok(Content {
        kind,
        file,
        size,
        digest,
        annotations: BTreeMap::new(),
    })
}

/// The salt when none is given: from the image's bytes, so the same image
/// gets the same salt (and package) every time.
fn derived_salt(file: &mut File, size: u64) -> Result<Vec<u8>, PackageError> {
    let mut hasher = HashingWriter::new(io::sink());
    hasher
        .write_all(b"bundlegen ralf dm-verity salt\0")
        .map_err(io_error("reading the EROFS image"))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, &mut *file).take(size);
    io::copy(&mut reader, &mut hasher).map_err(io_error("reading the EROFS image"))?;
    Ok(hasher.finish().1.as_bytes().to_vec())
}

/// A UUID for the verity superblock, from the salt (version 4 layout).
fn derived_uuid(salt: &[u8]) -> [u8; 16] {
    let digest = Sha256::new_with_prefix(b"bundlegen ralf dm-verity uuid\0")
        .chain_update(salt)
        .finalize();
    let mut uuid: [u8; 16] = digest[..16].try_into().unwrap();
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn erofs_content(
    rootfs: &Path,
    options: &ContentOptions,
    compression: ErofsCompression,
    mut file: File,
) -> Result<Content, PackageError> {
    let tree = Tree::from_dir(rootfs)?;
    let erofs_options = erofs::Options {
        compression: match compression {
            ErofsCompression::Lz4 => Compression::LZ4HC,
            ErofsCompression::Zstd => Compression::Zstd { level: 3 },
            ErofsCompression::None => Compression::None,
        },
        build_time: options.epoch.max(0) as u64,
        threads: options.threads,
    };
    let written = erofs::write_image(&tree, &erofs_options, &file)?;
    let salt = match &options.salt {
        Some(salt) => salt.clone(),
        None => {
            file.rewind().map_err(io_error("reading the EROFS image"))?;
            derived_salt(&mut file, written.size)?
        }
    };
    let tree = verity::append_tree(&file, written.size, &salt, derived_uuid(&salt))?;
    let size = written.size + tree.tree_size;
    file.rewind().map_err(io_error("reading the content"))?;
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(
        &mut io::BufReader::with_capacity(1 << 20, &mut file).take(size),
        &mut hasher,
    )
    .map_err(io_error("reading the content"))?;
    let (_, digest, _) = hasher.finish();
    let annotations = BTreeMap::from([
        (media::ROOT_HASH.to_string(), to_hex(&tree.root_hash)),
        (media::SALT.to_string(), to_hex(&tree.salt)),
        (media::OFFSET.to_string(), tree.hash_offset.to_string()),
    ]);
    Ok(Content {
        kind: options.kind,
        file,
        size,
        digest,
        annotations,
    })
}
