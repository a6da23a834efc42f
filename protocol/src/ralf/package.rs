//! Reading a `.ralf` file: its container (ZIP, or plain tar), its layout,
//! and the whole verification ralfpack's `verify` makes, in its order, plus
//! the dm-verity check of EROFS content. What the agent installs and what
//! `bundlegen verify-package` accepts go through [`verify`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::UnixTime;
use sha2::{Digest, Sha256};

use super::certificate::CertificateInfo;
use super::config::PackageConfig;
use super::layout::{Descriptor, Index, Manifest};
use super::signature::{self, SignatureError, Trust};
use super::verity::{self, VerityError};
use super::zip::{self, Method, ZipError};
use super::{ContentKind, OCI_LAYOUT, media};
use crate::digest::{Sha256Digest, from_hex};
use crate::tar_read::{TarKind, TarReader};

/// Largest JSON document read into memory (index, manifests, config).
const MAX_DOCUMENT: u64 = 1 << 20;
/// Largest signature payload (ralfpack's bound).
const MAX_PAYLOAD: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a package: neither a ZIP nor a tar file")]
    UnknownContainer,
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error("tar container: {0}")]
    Tar(String),
    #[error("{file}: {reason}")]
    Layout { file: String, reason: String },
    #[error("blob {digest}: {reason}")]
    Blob { digest: Sha256Digest, reason: String },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the signature is for manifest {signed}, not the package's {actual}")]
    SignedOtherManifest { signed: Sha256Digest, actual: Sha256Digest },
    #[error("the package is not signed")]
    Unsigned,
    #[error("config blob: {0}")]
    Config(String),
    #[error("content layer: {0}")]
    Content(String),
    #[error("content layer's dm-verity tree: {0}")]
    Verity(#[from] VerityError),
}

fn layout_error(file: &str, reason: impl Into<String>) -> PackageError {
    PackageError::Layout {
        file: file.to_string(),
        reason: reason.into(),
    }
}

/// Where a file's bytes lie in the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub offset: u64,
    pub size: u64,
    /// The bytes as they are (a stored ZIP entry or a tar member); false for
    /// a deflated ZIP entry (`compressed_size` bytes at `offset`).
    pub stored: bool,
    pub compressed_size: u64,
}

/// An opened `.ralf` file and the files it holds.
pub struct PackageFile {
    file: File,
    entries: BTreeMap<String, Location>,
    crcs: BTreeMap<String, u32>,
}

impl PackageFile {
    pub fn open(path: &Path) -> Result<PackageFile, PackageError> {
        let file = File::open(path).map_err(|source| PackageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file(file)
    }

    pub fn from_file(file: File) -> Result<PackageFile, PackageError> {
        let len = file.metadata().map_err(|e| PackageError::Tar(e.to_string()))?.len();
        let mut magic = [0u8; 512];
        let read = file
            .read_at(&mut magic, 0)
            .map_err(|e| PackageError::Tar(e.to_string()))?;
        let mut entries = BTreeMap::new();
        let mut crcs = BTreeMap::new();
        if read >= 4 && magic[..4] == [b'P', b'K', 3, 4] {
            for entry in zip::read_entries(&file, len)? {
                crcs.insert(entry.name.clone(), entry.crc32);
                entries.insert(
                    entry.name,
                    Location {
                        offset: entry.data_offset,
                        size: entry.size,
                        stored: entry.method == Method::Stored,
                        compressed_size: entry.compressed_size,
                    },
                );
            }
        } else if read == 512 && &magic[257..262] == b"ustar" {
            entries = tar_entries(&file)?;
        } else {
            return Err(PackageError::UnknownContainer);
        }
        Ok(PackageFile { file, entries, crcs })
    }

    /// The names of the files it holds.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn location(&self, name: &str) -> Option<Location> {
        self.entries.get(name).copied()
    }

    /// The underlying file (to mount a stored blob in place).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A small file's bytes (a layout document), at most `limit`.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, PackageError> {
        let location = self
            .location(name)
            .ok_or_else(|| layout_error(name, "missing from the package"))?;
        if location.size > limit {
            return Err(layout_error(
                name,
                format!("{} bytes, more than {limit}", location.size),
            ));
        }
        let entry = zip::ZipEntry {
            name: name.to_string(),
            method: if location.stored {
                Method::Stored
            } else {
                Method::Deflated
            },
            data_offset: location.offset,
            compressed_size: location.compressed_size,
            size: location.size,
            crc32: self.crcs.get(name).copied().unwrap_or(0),
        };
        if self.crcs.contains_key(name) {
            return Ok(zip::read_entry(&self.file, &entry, limit)?);
        }
        let mut bytes = vec![0u8; location.size as usize];
        self.file
            .read_exact_at(&mut bytes, location.offset)
            .map_err(|e| layout_error(name, e.to_string()))?;
        Ok(bytes)
    }

    /// A reader of a file's bytes (inflated if deflated).
    pub fn reader(&self, name: &str) -> Option<Box<dyn Read + '_>> {
        let location = self.location(name)?;
        let raw = RegionReader {
            file: &self.file,
            at: location.offset,
            end: location.offset + location.compressed_size,
        };
        Some(if location.stored {
            Box::new(raw)
        } else {
            Box::new(flate2::read::DeflateDecoder::new(io::BufReader::new(raw)).take(location.size))
        })
    }

    /// A blob's bytes, checked against its descriptor's size and digest.
    pub fn read_blob(&self, descriptor: &Descriptor, limit: u64) -> Result<Vec<u8>, PackageError> {
        let blob_error = |reason: String| PackageError::Blob {
            digest: descriptor.digest,
            reason,
        };
        if descriptor.size > limit {
            return Err(blob_error(format!("{} bytes, more than {limit}", descriptor.size)));
        }
        let bytes = self
            .read(&descriptor.blob_path(), limit)
            .map_err(|e| blob_error(e.to_string()))?;
        if bytes.len() as u64 != descriptor.size {
            return Err(blob_error(format!(
                "{} bytes, the descriptor says {}",
                bytes.len(),
                descriptor.size
            )));
        }
        if Sha256Digest::of(&bytes) != descriptor.digest {
            return Err(blob_error("content does not match its digest".into()));
        }
        Ok(bytes)
    }

    /// Streams a blob through sha256 and checks its size and digest.
    pub fn check_blob(&self, descriptor: &Descriptor) -> Result<(), PackageError> {
        let blob_error = |reason: String| PackageError::Blob {
            digest: descriptor.digest,
            reason,
        };
        let path = descriptor.blob_path();
        let location = self
            .location(&path)
            .ok_or_else(|| blob_error("missing from the package".into()))?;
        if location.size != descriptor.size {
            return Err(blob_error(format!(
                "{} bytes, the descriptor says {}",
                location.size, descriptor.size
            )));
        }
        let mut reader = self.reader(&path).expect("the entry exists");
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buffer).map_err(|e| blob_error(e.to_string()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buffer[..n]);
        }
        if total != descriptor.size {
            return Err(blob_error(format!(
                "{total} bytes, the descriptor says {}",
                descriptor.size
            )));
        }
        if <[u8; 32]>::from(hasher.finalize()) != *descriptor.digest.as_bytes() {
            return Err(blob_error("content does not match its digest".into()));
        }
        Ok(())
    }
}

/// Bytes `at..end` of a file.
struct RegionReader<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for RegionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.at).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the package is truncated"));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// The regular files of a tar container, with their data offsets.
fn tar_entries(file: &File) -> Result<BTreeMap<String, Location>, PackageError> {
    let mut reader = TarReader::new(io::BufReader::new(RegionReader {
        file,
        at: 0,
        end: u64::MAX,
    }));
    let mut entries = BTreeMap::new();
    while let Some(entry) = reader.next_entry().map_err(|e| PackageError::Tar(e.to_string()))? {
        let name = entry.path.to_string_lossy().trim_start_matches("./").to_string();
        match entry.kind {
            TarKind::Dir => continue,
            TarKind::File => {}
            _ => {
                return Err(PackageError::Tar(format!(
                    "{name}: only files and directories belong in a package"
                )));
            }
        }
        if entries.len() >= zip::MAX_ENTRIES {
            return Err(PackageError::Tar(format!("more than {} files", zip::MAX_ENTRIES)));
        }
        let location = Location {
            offset: reader.offset(),
            size: entry.size,
            stored: true,
            compressed_size: entry.size,
        };
        if entries.insert(name.clone(), location).is_some() {
            return Err(PackageError::Tar(format!("{name} appears twice")));
        }
    }
    Ok(entries)
}

/// A package's layout, each document checked against its digest: the
/// package manifest, and the signature manifest if it has one.
#[derive(Debug, Clone)]
pub struct Layout {
    pub index: Index,
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub signature: Option<(Descriptor, Manifest)>,
    pub config: PackageConfig,
    pub content: Descriptor,
    pub content_kind: ContentKind,
    pub warnings: Vec<String>,
}

impl Layout {
    /// The package's id as its index names it (ralfpack's `ref.name`).
    pub fn reference(&self) -> Option<&str> {
        self.manifest_descriptor.annotation(media::REF_NAME)
    }
}

/// Reads the layout: steps 2 and 3 of ralfpack's verification, then the
/// config blob (step 9's first part) and its schema.
pub fn read_layout(package: &PackageFile) -> Result<Layout, PackageError> {
    let layout: serde_json::Value = serde_json::from_slice(&package.read("oci-layout", 1024)?)
        .map_err(|e| layout_error("oci-layout", e.to_string()))?;
    let expected: serde_json::Value = serde_json::from_slice(OCI_LAYOUT).unwrap();
    if layout != expected {
        return Err(layout_error("oci-layout", "must be {\"imageLayoutVersion\":\"1.0.0\"}"));
    }
    let index: Index = serde_json::from_slice(&package.read("index.json", MAX_DOCUMENT)?)
        .map_err(|e| layout_error("index.json", e.to_string()))?;
    if index.schema_version != 2 {
        return Err(layout_error("index.json", "schemaVersion must be 2"));
    }
    let mut package_manifest = None;
    let mut signature_manifest = None;
    for (i, descriptor) in index.manifests.iter().enumerate() {
        let at = format!("index.json manifests[{i}]");
        if descriptor.media_type != media::MANIFEST {
            return Err(layout_error(
                &at,
                format!("media type {:?} is not an image manifest", descriptor.media_type),
            ));
        }
        let bytes = package.read_blob(descriptor, MAX_DOCUMENT)?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| layout_error(&at, e.to_string()))?;
        let is_signature = manifest
            .layers
            .first()
            .is_some_and(|l| l.media_type == media::SIGNATURE_LAYER);
        let slot = if manifest.config.media_type == media::CONFIG {
            &mut package_manifest
        } else if is_signature {
            &mut signature_manifest
        } else {
            return Err(layout_error(&at, "neither a package nor a signature manifest"));
        };
        if slot.replace((descriptor.clone(), manifest)).is_some() {
            return Err(layout_error(
                &at,
                if is_signature {
                    "a second signature manifest"
                } else {
                    "a second package manifest"
                },
            ));
        }
    }
    let (manifest_descriptor, manifest) =
        package_manifest.ok_or_else(|| layout_error("index.json", "no package manifest"))?;
    if manifest.schema_version != 2 || manifest.media_type.as_deref() != Some(media::MANIFEST) {
        return Err(layout_error(
            "package manifest",
            "must have schemaVersion 2 and the image manifest mediaType",
        ));
    }
    let [content] = &manifest.layers[..] else {
        return Err(layout_error(
            "package manifest",
            format!("{} layers; a package has one", manifest.layers.len()),
        ));
    };
    let content_kind = ContentKind::from_media_type(&content.media_type).ok_or_else(|| {
        layout_error(
            "package manifest",
            format!("content layer of unknown media type {:?}", content.media_type),
        )
    })?;
    let config_bytes = package.read_blob(&manifest.config, MAX_DOCUMENT)?;
    let config = crate::config::parse::<PackageConfig>(
        std::str::from_utf8(&config_bytes).map_err(|_| PackageError::Config("not UTF-8".into()))?,
        Path::new("package config"),
    )
    .map_err(|e| PackageError::Config(e.to_string()))?
    .value;
    // Step 10: files no descriptor names are worth a warning only.
    let mut referenced: BTreeSet<String> = ["oci-layout", "index.json"].map(String::from).into();
    let mut reference = |d: &Descriptor| referenced.insert(d.blob_path());
    for d in &index.manifests {
        reference(d);
    }
    reference(&manifest.config);
    reference(content);
    if let Some((_, signature)) = &signature_manifest {
        reference(&signature.config);
        signature.layers.iter().for_each(|l| {
            reference(l);
        });
    }
    let warnings = package
        .names()
        .filter(|name| !referenced.contains(*name))
        .map(|name| format!("{name} is in the package but nothing refers to it"))
        .collect();
    Ok(Layout {
        index,
        manifest_descriptor,
        manifest: manifest.clone(),
        signature: signature_manifest,
        config,
        content: content.clone(),
        content_kind,
        warnings,
    })
}

/// A package that passed [`verify`].
#[derive(Debug, Clone)]
pub struct Verified {
    pub layout: Layout,
    pub signer: Option<CertificateInfo>,
}

/// Verifies a package as ralfpack's `verify` does, in its order: layout,
/// manifests, signature layer, trust, signature, payload, payload digest,
/// every blob; then (ours) an EROFS layer's dm-verity tree against its
/// annotations. `check_verity` may be off where the kernel checks it later.
pub fn verify(
    package: &PackageFile,
    trust: &Trust,
    now: UnixTime,
    check_verity: bool,
) -> Result<Verified, PackageError> {
    let layout = read_layout(package)?;
    let (_, signature_manifest) = layout.signature.as_ref().ok_or(PackageError::Unsigned)?;
    let [signature_layer] = &signature_manifest.layers[..] else {
        return Err(layout_error("signature manifest", "must have exactly one layer"));
    };
    if signature_layer.size == 0 || signature_layer.size > MAX_PAYLOAD {
        return Err(layout_error(
            "signature manifest",
            "the signed payload must be 1 byte to 64 KiB",
        ));
    }
    let encoded = signature_layer
        .annotation(media::SIGNATURE)
        .ok_or_else(|| layout_error("signature manifest", format!("no {} annotation", media::SIGNATURE)))?;
    let signature_bytes = crate::signature::base64_decode(encoded)
        .ok_or_else(|| layout_error("signature manifest", "the signature is not base64"))?;
    let payload = package.read_blob(signature_layer, MAX_PAYLOAD)?;
    let signer = signature::verify(
        trust,
        signature_layer.annotation(media::CERTIFICATE),
        signature_layer.annotation(media::CHAIN),
        &payload,
        &signature_bytes,
        now,
    )?;
    let parsed = signature::parse_payload(&payload)?;
    if parsed.manifest != layout.manifest_descriptor.digest {
        return Err(PackageError::SignedOtherManifest {
            signed: parsed.manifest,
            actual: layout.manifest_descriptor.digest,
        });
    }
    package.check_blob(&layout.manifest.config)?;
    package.check_blob(&layout.content)?;
    if check_verity && layout.content_kind.is_erofs() {
        check_content_verity(package, &layout)?;
    }
    Ok(Verified { layout, signer })
}

/// dm-verity facts of an EROFS content layer, from its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityAnnotations {
    pub root_hash: [u8; 32],
    pub salt: Vec<u8>,
    /// The EROFS image's size: where the superblock starts.
    pub offset: u64,
}

pub fn verity_annotations(content: &Descriptor) -> Result<VerityAnnotations, PackageError> {
    let get = |key: &str| {
        content
            .annotation(key)
            .ok_or_else(|| PackageError::Content(format!("no {key} annotation")))
    };
    let hex = |key: &str| -> Result<Vec<u8>, PackageError> {
        let text = get(key)?;
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(PackageError::Content(format!("{key} must be lowercase hex")));
        }
        from_hex(text).ok_or_else(|| PackageError::Content(format!("{key} is not hex")))
    };
    let root_hash: [u8; 32] = hex(media::ROOT_HASH)?
        .try_into()
        .map_err(|_| PackageError::Content("the root hash is not 32 bytes".into()))?;
    let salt = hex(media::SALT)?;
    if salt.len() > verity::MAX_SALT {
        return Err(PackageError::Content("the salt is longer than 256 bytes".into()));
    }
    let offset_text = get(media::OFFSET)?;
    let offset: u64 = offset_text
        .parse()
        .ok()
        .filter(|o: &u64| *o > 0 && o.is_multiple_of(verity::BLOCK) && *o < content.size)
        .ok_or_else(|| {
            PackageError::Content(format!(
                "offset {offset_text:?} is not a 4096-aligned size inside the layer"
            ))
        })?;
    if offset + verity::tree_size(offset) != content.size {
        return Err(PackageError::Content(
            "the layer's size is not the image plus its hash tree".into(),
        ));
    }
    Ok(VerityAnnotations {
        root_hash,
        salt,
        offset,
    })
}

/// Recomputes an EROFS layer's hash tree and root, and compares them with
/// the superblock and the (signed) annotations.
pub fn check_content_verity(package: &PackageFile, layout: &Layout) -> Result<(), PackageError> {
    let annotations = verity_annotations(&layout.content)?;
    let location = package
        .location(&layout.content.blob_path())
        .ok_or_else(|| PackageError::Content("missing from the package".into()))?;
    if !location.stored {
        return Err(PackageError::Content(
            "an EROFS layer must be stored, not deflated, to be mounted".into(),
        ));
    }
    verity::verify(
        package.file(),
        location.offset,
        annotations.offset,
        &annotations.root_hash,
        &annotations.salt,
    )?;
    Ok(())
}
