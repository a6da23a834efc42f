//! Where finished bundles live: a local directory (embedded default), or an
//! OCI registry, where each bundle is an OCI artifact (so any registry, or
//! the CDN in front of it, can serve boxes directly).
//!
//! A bundle is stored only once complete: the directory store copies it
//! under a temporary name, syncs and renames; a registry checks the blob's
//! digest before it accepts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::Digest;
use tokio::io::AsyncSeekExt;

use bundlegen_core::image::ImageError;
use bundlegen_core::image::registry::Repository;
use bundlegen_core::stream::{ByteStream, file_stream};

/// Media types of a bundle artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.rdk.bundle.v1";
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("bundle store {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] ImageError),
    #[error("bundle store: {0}")]
    Missing(String),
}

/// The layer media type of a bundle archive format.
pub fn layer_media_type(format: &str) -> &'static str {
    match format {
        "tar.zst" => "application/vnd.rdk.bundle.layer.v1.tar+zstd",
        "ipk" => "application/vnd.rdk.bundle.layer.v1.ipk",
        crate::jobs::FORMAT => "application/vnd.rdk.package.ralf.v1+zip",
        _ => "application/vnd.rdk.bundle.layer.v1.tar+gzip",
    }
}

#[derive(Clone)]
pub enum BlobStore {
    Dir(PathBuf),
    Registry(Arc<Repository>),
}

/// Bytes of a stored bundle (or a range of them).
pub struct BlobRead {
    pub body: ByteStream,
    /// Bytes in `body`.
    pub length: u64,
}

impl BlobStore {
    pub fn describe(&self) -> String {
        match self {
            BlobStore::Dir(dir) => format!("directory {}", dir.display()),
            BlobStore::Registry(repository) => format!("registry {}", repository.describe()),
        }
    }

    /// Stores a finished archive; returns its location for [`BlobStore::read`].
    pub async fn put(
        &self,
        archive: &Path,
        sha256: &str,
        size: u64,
        format: &str,
        tag: &str,
        annotations: &[(&str, &str)],
    ) -> Result<String, BlobError> {
        match self {
            BlobStore::Dir(dir) => {
                let name = format!("{sha256}.{format}");
                let dest = dir.join(&name);
                let (archive, dir) = (archive.to_path_buf(), dir.clone());
                tokio::task::spawn_blocking(move || copy_into_place(&archive, &dir, &dest))
                    .await
                    .map_err(|e| BlobError::Missing(e.to_string()))??;
                Ok(name)
            }
            BlobStore::Registry(repository) => {
                let digest: Digest = format!("sha256:{sha256}")
                    .parse()
                    .map_err(|e| BlobError::Missing(format!("{e}")))?;
                repository.push_blob(archive, &digest, size).await?;
                let empty = tempfile::NamedTempFile::new().map_err(|source| BlobError::Io {
                    what: "temporary file".into(),
                    source,
                })?;
                std::fs::write(empty.path(), b"{}").map_err(|source| BlobError::Io {
                    what: "temporary file".into(),
                    source,
                })?;
                let empty_digest: Digest = bundlegen_protocol::digest::Sha256Digest::of(b"{}")
                    .to_string()
                    .parse()
                    .map_err(|e| BlobError::Missing(format!("{e}")))?;
                repository.push_blob(empty.path(), &empty_digest, 2).await?;
                let annotations: serde_json::Map<String, serde_json::Value> = annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                    .collect();
                let manifest = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_TYPE,
                    "artifactType": ARTIFACT_TYPE,
                    "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": empty_digest.to_string(), "size": 2},
                    "layers": [{
                        "mediaType": layer_media_type(format),
                        "digest": digest.to_string(),
                        "size": size,
                        "annotations": {"org.opencontainers.image.title": format!("{tag}.{format}")},
                    }],
                    "annotations": annotations,
                });
                repository
                    .put_manifest(tag, MANIFEST_TYPE, serde_json::to_vec(&manifest).unwrap_or_default())
                    .await?;
                Ok(digest.to_string())
            }
        }
    }

    /// Reads a stored bundle of `size` bytes, all of it or `range`
    /// (inclusive first and last byte).
    pub async fn read(&self, location: &str, size: u64, range: Option<(u64, u64)>) -> Result<BlobRead, BlobError> {
        let (start, length) = match range {
            Some((first, last)) => (first, last - first + 1),
            None => (0, size),
        };
        match self {
            BlobStore::Dir(dir) => {
                let path = dir.join(location);
                let io = |source| BlobError::Io {
                    what: path.display().to_string(),
                    source,
                };
                let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
                file.seek(std::io::SeekFrom::Start(start)).await.map_err(io)?;
                Ok(BlobRead {
                    body: file_stream(file, length),
                    length,
                })
            }
            BlobStore::Registry(repository) => {
                let digest: Digest = location.parse().map_err(|e| BlobError::Missing(format!("{e}")))?;
                Ok(BlobRead {
                    body: repository.read_blob(&digest, size, range).await?,
                    length,
                })
            }
        }
    }
}

/// Name prefix of a bundle file being written into place.
const PARTIAL_PREFIX: &str = ".bundle.partial-";

/// A bundle file being written into a directory under a temporary name,
/// locked for as long as its writer lives: one found unlocked was left by
/// a killed process ([`remove_abandoned_partials`]).
pub struct Partial {
    pub file: tempfile::NamedTempFile,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Partial {
    pub fn create_in(dir: &Path) -> std::io::Result<Partial> {
        let file = tempfile::Builder::new().prefix(PARTIAL_PREFIX).tempfile_in(dir)?;
        let lock = nix::fcntl::Flock::lock(file.reopen()?, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        Ok(Partial { file, _lock: lock })
    }
}

/// Removes the partial bundle files in `dir` that no live process is
/// writing (a kill mid-copy leaves them); returns how many.
pub fn remove_abandoned_partials(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        // Locked: another process is copying it right now.
        if let Ok(_lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            "{}: removed {removed} partial bundle files a killed process left",
            dir.display()
        );
    }
    removed
}

/// Copies `archive` into `dir` as `dest`: temporary name, sync, rename.
fn copy_into_place(archive: &Path, dir: &Path, dest: &Path) -> Result<(), BlobError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| BlobError::Io { what, source }
    };
    if dest.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let partial = Partial::create_in(dir).map_err(io(dir))?;
    std::fs::copy(archive, partial.file.path()).map_err(io(archive))?;
    partial.file.as_file().sync_all().map_err(io(partial.file.path()))?;
    partial.file.persist(dest).map_err(|e| io(dest)(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
