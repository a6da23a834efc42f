//! One registry repository for images: the protocol crate's
//! [`RepositoryClient`] (authentication, credentials bound to their host,
//! retries, limits), with manifests and blobs verified against their
//! digests (any algorithm OCI allows).

use std::path::Path;

use bundlegen_protocol::registry::{Access, RegistryError, RepositoryClient, read_limited};
use oci_spec::image::Digest;
use reqwest::header;
use tokio::io::AsyncWriteExt;

use super::{RegistryOptions, normalize_host};
use crate::image::blob::{BlobCheck, MAX_DOCUMENT_BYTES};
use crate::image::{ImageError, blob_path};

/// What to do about TLS trouble with a registry, in the CLI's words.
const REMEDIES: bundlegen_protocol::tls::Remedies = bundlegen_protocol::tls::Remedies {
    plain_http: "a registry without TLS (a local test registry) needs --plain-http",
    trust_ca: "pass the CA that signed the registry's certificate with --registry-ca FILE",
};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

impl From<RegistryError> for ImageError {
    fn from(error: RegistryError) -> ImageError {
        match error {
            RegistryError::Request { url, message } => ImageError::Registry { url, message },
            RegistryError::NotFound(what) => ImageError::NotFound(what),
            RegistryError::Client(message) => ImageError::Store(message),
        }
    }
}

pub struct Session {
    client: RepositoryClient,
}

impl Session {
    /// A session with `repository` on `host` (`docker.io` means Docker Hub's API host).
    pub fn new(host: &str, repository: &str, options: &RegistryOptions) -> Result<Session, ImageError> {
        let access = Access {
            credentials: options.credentials.for_host(host).cloned(),
            plain_http: options.plain_http,
            token_realms: options.token_realms.iter().map(|r| normalize_host(r)).collect(),
            ca_file: options.ca_file.clone(),
            user_agent: concat!("bundlegen-rs/", env!("CARGO_PKG_VERSION")),
            remedies: REMEDIES,
            credentials_hint: "check --creds HOST=USER:PASSWORD for this registry's host",
        };
        Ok(Session {
            client: RepositoryClient::new(host, repository, access)?,
        })
    }

    /// `host/repository`, for messages.
    pub fn describe(&self) -> String {
        self.client.describe()
    }

    pub fn url(&self, tail: &str) -> String {
        self.client.url(tail)
    }

    pub fn error(&self, url: &str, message: impl Into<String>) -> ImageError {
        self.client.error(url, message).into()
    }

    pub async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, ImageError> {
        Ok(self.client.get(url, accept).await?)
    }

    /// A request with authentication and retries; `body` makes a fresh body
    /// per attempt.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: header::HeaderMap,
        body: Option<&(dyn Fn() -> Result<reqwest::Body, RegistryError> + Sync)>,
    ) -> Result<reqwest::Response, ImageError> {
        Ok(self.client.send(method, url, headers, body).await?)
    }

    pub async fn check_status(
        &self,
        url: &str,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, ImageError> {
        Ok(self.client.check_status(url, response, what).await?)
    }

    /// Fetches a manifest or index and checks its digest.
    pub async fn manifest(&self, reference: &str, expected: Option<&Digest>) -> Result<(Vec<u8>, Digest), ImageError> {
        let url = self.url(&format!("manifests/{reference}"));
        let response = self.get(&url, Some(MANIFEST_TYPES)).await?;
        let response = self.check_status(&url, response, "manifest").await?;
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = read_limited(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|m| self.error(&url, format!("manifest: {m}")))?;
        let digest = match expected.or(announced.as_ref()) {
            Some(digest) => digest.clone(),
            None => bundlegen_protocol::digest::Sha256Digest::of(&bytes)
                .to_string()
                .parse()
                .map_err(|e| self.error(&url, format!("{e}")))?,
        };
        let mut check = BlobCheck::new(&digest, Some(bytes.len() as u64))?;
        check
            .update(&bytes)
            .and_then(|()| check.finish())
            .map_err(|m| self.error(&url, format!("manifest {m}")))?;
        Ok((bytes, digest))
    }

    /// Downloads a blob into the cache unless it is there already.
    pub async fn blob(&self, digest: &Digest, size: u64, cache: &Path) -> Result<(), ImageError> {
        let dest = cache.join(blob_path(digest));
        if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.len() == size) {
            return Ok(());
        }
        let url = self.url(&format!("blobs/{digest}"));
        let io_error = |what: String| move |source| ImageError::Io { what, source };
        let parent = dest.parent().unwrap_or(cache);
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_error(parent.display().to_string()))?;
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{}.partial-", digest.digest()))
            .tempfile_in(parent)
            .map_err(io_error(parent.display().to_string()))?;
        let response = self.get(&url, None).await?;
        let mut response = self.check_status(&url, response, &format!("blob {digest}")).await?;
        let mut file = tokio::fs::File::from_std(
            partial
                .reopen()
                .map_err(io_error(partial.path().display().to_string()))?,
        );
        let mut check = BlobCheck::new(digest, Some(size))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            self.error(
                &url,
                format!("download interrupted: {}", bundlegen_protocol::error_chain(&e)),
            )
        })? {
            check
                .update(&chunk)
                .map_err(|m| self.error(&url, format!("blob {digest}: {m}")))?;
            file.write_all(&chunk)
                .await
                .map_err(io_error(partial.path().display().to_string()))?;
        }
        check
            .finish()
            .map_err(|m| self.error(&url, format!("blob {digest}: {m}")))?;
        file.sync_all()
            .await
            .map_err(io_error(partial.path().display().to_string()))?;
        partial.persist(&dest).map_err(|e| ImageError::Io {
            what: dest.display().to_string(),
            source: e.error,
        })?;
        Ok(())
    }
}
