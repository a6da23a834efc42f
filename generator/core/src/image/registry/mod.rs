//! An OCI distribution registry (`docker://`): images are pulled from it,
//! and the service keeps bundles in one ([`Repository`]).
//!
//! Blobs are streamed into a content-addressed cache (an OCI layout's `blobs/`
//! directory), verified against their digest and size before they are renamed
//! into place; a later run finds them there. The distribution token flow
//! (`WWW-Authenticate: Bearer`) and basic auth are supported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, MediaType};
use tokio::sync::Semaphore;

use super::resolve::{DocumentKind, Documents, StoredDocuments, resolve};
use super::store::{DirFiles, StoreFile};
use super::{Image, ImageError, ImageFiles, Selector, TargetPlatform, blob_path};

mod credentials;
mod repository;
mod session;

pub use credentials::{CredentialStore, Credentials, CredentialsArg, normalize_host};
pub use repository::Repository;
use session::Session;

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Credentials by registry host; each goes to its own host only.
    pub credentials: CredentialStore,
    /// Use `http://` (only for a local test registry).
    pub plain_http: bool,
    /// Token servers (`WWW-Authenticate: Bearer realm=...`) on hosts other
    /// than their registry's that may receive the registry's credentials
    /// (over HTTPS only). Docker Hub's own is always allowed.
    pub token_realms: Vec<String>,
    /// Extra CA certificates (PEM) trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Where verified blobs are kept between runs; `None` uses a temporary
    /// directory removed with the image.
    pub cache_dir: Option<PathBuf>,
    /// Layers downloaded at once (0 means 3).
    pub parallel_downloads: usize,
}

/// The cache's files, plus the temporary directory they live in, if any.
struct CacheFiles {
    files: DirFiles,
    _temporary: Option<tempfile::TempDir>,
}

impl ImageFiles for CacheFiles {
    fn open(&self, path: &str) -> Result<StoreFile, ImageError> {
        self.files.open(path)
    }

    fn describe(&self) -> String {
        self.files.describe()
    }
}

/// A registry's documents: fetched into the cache unless it has them, then
/// read from there like any stored image's.
struct RegistryDocuments<'a> {
    session: &'a Session,
    cache: &'a Path,
    files: &'a DirFiles,
}

impl Documents for RegistryDocuments<'_> {
    async fn document(&self, descriptor: &Descriptor, kind: DocumentKind, what: &str) -> Result<Vec<u8>, ImageError> {
        let digest = descriptor.digest();
        if !self.files.exists(&blob_path(digest)) {
            match kind {
                DocumentKind::Manifest => {
                    let (bytes, _) = self.session.manifest(digest.as_ref(), Some(digest)).await?;
                    write_cached(self.cache, digest, &bytes).await?;
                }
                DocumentKind::Config => self.session.blob(digest, descriptor.size(), self.cache).await?,
            }
        }
        StoredDocuments(self.files).document(descriptor, kind, what).await
    }
}

/// Pulls `repository` from `host` into the cache and opens it.
pub async fn pull(
    host: &str,
    repository: &str,
    selector: &Selector,
    platform: &TargetPlatform,
    options: &RegistryOptions,
) -> Result<Image, ImageError> {
    let reference = format!("docker://{host}/{repository}{selector}");
    let session = Arc::new(Session::new(host, repository, options)?);
    let (cache, temporary) = match &options.cache_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("bundlegen-pull-")
                .tempdir()
                .map_err(|source| ImageError::Io {
                    what: "temporary directory".into(),
                    source,
                })?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    tokio::fs::create_dir_all(&cache)
        .await
        .map_err(|source| ImageError::Io {
            what: cache.display().to_string(),
            source,
        })?;
    let files = DirFiles::new(&cache)?;

    // A tag names a manifest only the registry knows: fetch it into the
    // cache, and go on from its descriptor as from a layout's index.
    let (first, expected) = match selector {
        Selector::Tag(tag) => (tag.clone(), None),
        Selector::Digest(digest) => (digest.to_string(), Some(digest)),
    };
    let (bytes, digest) = session.manifest(&first, expected).await?;
    write_cached(&cache, &digest, &bytes).await?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|document| Some(MediaType::from(document.get("mediaType")?.as_str()?)))
        .unwrap_or_else(|| MediaType::Other(String::new()));
    let top = Descriptor::new(media_type, bytes.len() as u64, digest);
    let documents = RegistryDocuments {
        session: &session,
        cache: &cache,
        files: &files,
    };
    let resolved = resolve(&documents, top, platform, &reference).await?;

    let parallel = match options.parallel_downloads {
        0 => 3,
        n => n.min(16),
    };
    let permits = Arc::new(Semaphore::new(parallel));
    let mut downloads = tokio::task::JoinSet::new();
    for layer in resolved.manifest.layers() {
        let (session, permits, cache) = (session.clone(), permits.clone(), cache.clone());
        let (digest, size) = (layer.digest().clone(), layer.size());
        downloads.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore is never closed");
            session.blob(&digest, size, &cache).await
        });
    }
    while let Some(result) = downloads.join_next().await {
        result.map_err(|e| ImageError::Store(format!("download task failed: {e}")))??;
    }
    let files = CacheFiles {
        files,
        _temporary: temporary,
    };
    Ok(Image::new(reference, resolved, Arc::new(files)))
}

async fn write_cached(cache: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
    let dest = cache.join(blob_path(digest));
    let io_error = |source| ImageError::Io {
        what: dest.display().to_string(),
        source,
    };
    let parent = dest.parent().unwrap_or(cache);
    tokio::fs::create_dir_all(parent).await.map_err(io_error)?;
    let partial = tempfile::Builder::new()
        .prefix(".manifest.partial-")
        .tempfile_in(parent)
        .map_err(io_error)?;
    std::fs::write(partial.path(), bytes).map_err(io_error)?;
    partial.persist(&dest).map_err(|e| io_error(e.error))?;
    Ok(())
}
