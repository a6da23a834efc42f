//! A registry repository artifacts are kept in: the service's bundles, and
//! RALF packages (`bundlegen package-push`/`package-pull`).

use std::path::Path;

use oci_spec::image::Digest;
use reqwest::{StatusCode, header};

use super::RegistryOptions;
use super::session::Session;
use bundlegen_protocol::registry::RegistryError;

use crate::image::ImageError;

/// A registry repository of artifacts: blobs pushed and read back by
/// digest, manifests pushed and read by tag or digest.
pub struct Repository {
    session: Session,
}

impl Repository {
    pub fn new(host: &str, repository: &str, options: &RegistryOptions) -> Result<Repository, ImageError> {
        Ok(Repository {
            session: Session::new(host, repository, options)?,
        })
    }

    /// `host/repository`, for messages.
    pub fn describe(&self) -> String {
        self.session.describe()
    }

    /// Whether the registry has the blob.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, ImageError> {
        let url = self.session.url(&format!("blobs/{digest}"));
        let response = self
            .session
            .send(reqwest::Method::HEAD, &url, header::HeaderMap::new(), None)
            .await?;
        Ok(response.status().is_success())
    }

    /// Uploads a file as a blob (one monolithic PUT), unless it is there.
    pub async fn push_blob(&self, file: &Path, digest: &Digest, size: u64) -> Result<(), ImageError> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let start = self.session.url("blobs/uploads/");
        let response = self
            .session
            .send(reqwest::Method::POST, &start, header::HeaderMap::new(), None)
            .await?;
        let response = self.session.check_status(&start, response, "upload start").await?;
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.session.error(&start, "upload start without a Location"))?;
        let mut upload = reqwest::Url::parse(&start)
            .and_then(|base| base.join(location))
            .map_err(|e| {
                self.session
                    .error(&start, format!("bad upload location {location:?}: {e}"))
            })?;
        upload.query_pairs_mut().append_pair("digest", digest.as_ref());
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
        let path = file.to_path_buf();
        let body = move || -> Result<reqwest::Body, RegistryError> {
            let file =
                std::fs::File::open(&path).map_err(|e| RegistryError::Client(format!("{}: {e}", path.display())))?;
            Ok(reqwest::Body::wrap_stream(crate::stream::file_stream(
                tokio::fs::File::from_std(file),
                size,
            )))
        };
        let response = self
            .session
            .send(reqwest::Method::PUT, upload.as_str(), headers, Some(&body))
            .await?;
        self.session
            .check_status(upload.as_str(), response, &format!("upload of {digest}"))
            .await?;
        Ok(())
    }

    /// Pushes a manifest under a tag; returns its digest.
    pub async fn put_manifest(&self, tag: &str, media_type: &str, bytes: Vec<u8>) -> Result<Digest, ImageError> {
        let url = self.session.url(&format!("manifests/{tag}"));
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_str(media_type).map_err(|e| self.session.error(&url, e.to_string()))?,
        );
        let digest: Digest = bundlegen_protocol::digest::Sha256Digest::of(&bytes)
            .to_string()
            .parse()
            .map_err(|e| self.session.error(&url, format!("{e}")))?;
        let body = move || -> Result<reqwest::Body, RegistryError> { Ok(reqwest::Body::from(bytes.clone())) };
        let response = self
            .session
            .send(reqwest::Method::PUT, &url, headers, Some(&body))
            .await?;
        self.session.check_status(&url, response, "manifest upload").await?;
        Ok(digest)
    }

    /// A manifest by tag or digest, its digest checked.
    pub async fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Digest), ImageError> {
        self.session.manifest(reference, None).await
    }

    /// Downloads a blob (digest and size checked) to `dir/blobs/sha256/HEX`.
    pub async fn fetch_blob(&self, digest: &Digest, size: u64, dir: &Path) -> Result<(), ImageError> {
        self.session.blob(digest, size, dir).await
    }

    /// A blob's bytes, all of them or `range` (first and last byte, inclusive)
    /// of a blob of `size` bytes.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<(u64, u64)>,
    ) -> Result<crate::stream::ByteStream, ImageError> {
        let url = self.session.url(&format!("blobs/{digest}"));
        let mut headers = header::HeaderMap::new();
        if let Some((first, last)) = range
            && let Ok(value) = header::HeaderValue::from_str(&format!("bytes={first}-{last}"))
        {
            headers.insert(header::RANGE, value);
        }
        let response = self.session.send(reqwest::Method::GET, &url, headers, None).await?;
        let response = self
            .session
            .check_status(&url, response, &format!("blob {digest}"))
            .await?;
        let (start, length) = range.map_or((0, size), |(first, last)| (first, last - first + 1));
        // A registry that ignores Range sends everything; skip to the start.
        let skip = if range.is_some() && response.status() != StatusCode::PARTIAL_CONTENT {
            start
        } else {
            0
        };
        Ok(crate::stream::response_stream(response, skip, length))
    }
}
