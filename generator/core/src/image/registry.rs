//! An OCI distribution registry (`docker://`): images are pulled from it,
//! and the service keeps bundles in one ([`Repository`]).
//!
//! Blobs are streamed into a content-addressed cache (an OCI layout's `blobs/`
//! directory), verified against their digest and size before they are renamed
//! into place; a later run finds them there. The distribution token flow
//! (`WWW-Authenticate: Bearer`) and basic auth are supported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bundlegen_protocol::http::{HttpError, client_builder};
use oci_spec::image::{Descriptor, Digest, MediaType};
use reqwest::{StatusCode, header};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, Semaphore};

use super::blob::BlobCheck;
use super::resolve::{DocumentKind, Documents, StoredDocuments, resolve};
use super::store::{DirFiles, StoreFile};
use super::{Image, ImageError, ImageFiles, Selector, TargetPlatform, blob_path};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";
const ATTEMPTS: u32 = 3;

/// User name and password for a registry (`-c user:pass`).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.user)
    }
}

impl std::str::FromStr for Credentials {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err("credentials must be USER:PASSWORD".to_string()),
        }
    }
}

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub credentials: Option<Credentials>,
    /// Use `http://` (only for a local test registry).
    pub plain_http: bool,
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

struct Session {
    client: reqwest::Client,
    /// `https://host/v2/`.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<Authorization>>,
}

/// What a registry's challenge asked for.
#[derive(Clone)]
enum Authorization {
    Basic,
    Bearer(String),
}

/// One `key=value` list of a `WWW-Authenticate` header, with its scheme.
fn parse_challenge(value: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_string();
        }
        params.insert(key, value);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

impl Session {
    fn url(&self, tail: &str) -> String {
        format!("{}{}/{}", self.base, self.repository, tail)
    }

    fn error(&self, url: &str, message: impl Into<String>) -> ImageError {
        ImageError::Registry {
            url: url.to_string(),
            message: message.into(),
        }
    }

    /// Answers a 401 challenge.
    async fn authenticate(&self, url: &str, challenge: &str) -> Result<Authorization, ImageError> {
        let (scheme, params) =
            parse_challenge(challenge).ok_or_else(|| self.error(url, "unreadable WWW-Authenticate"))?;
        match scheme.as_str() {
            "basic" if self.credentials.is_some() => Ok(Authorization::Basic),
            "basic" => Err(self.error(url, "the registry requires a login; pass -c USER:PASSWORD")),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| self.error(url, "token challenge without a realm"))?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut query = vec![("scope", scope.as_str())];
                if let Some(service) = params.get("service") {
                    query.push(("service", service));
                }
                let token_url = reqwest::Url::parse_with_params(realm, &query)
                    .map_err(|e| self.error(url, format!("bad token realm {realm:?}: {e}")))?;
                let mut request = self.client.get(token_url.clone());
                if let Some(creds) = &self.credentials {
                    request = request.basic_auth(&creds.user, Some(&creds.password));
                }
                let response = request.send().await.map_err(|e| {
                    self.error(
                        token_url.as_str(),
                        format!("token request failed: {}", bundlegen_protocol::error_chain(&e)),
                    )
                })?;
                let status = response.status();
                if !status.is_success() {
                    let hint = if status == StatusCode::UNAUTHORIZED {
                        " (check -c/--creds)"
                    } else {
                        ""
                    };
                    return Err(self.error(token_url.as_str(), format!("token request refused: {status}{hint}")));
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| self.error(token_url.as_str(), format!("bad token response: {e}")))?;
                let token = body
                    .token
                    .or(body.access_token)
                    .ok_or_else(|| self.error(token_url.as_str(), "token response has no token"))?;
                Ok(Authorization::Bearer(token))
            }
            other => Err(self.error(url, format!("unsupported authentication scheme {other:?}"))),
        }
    }

    /// GET with authentication and retries of transient failures.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, ImageError> {
        let mut headers = header::HeaderMap::new();
        if let Some(accept) = accept.and_then(|a| header::HeaderValue::from_str(a).ok()) {
            headers.insert(header::ACCEPT, accept);
        }
        self.send(reqwest::Method::GET, url, headers, None).await
    }

    /// A request with authentication (answering 401 challenges once) and
    /// retries of transient failures; `body` makes a fresh body per attempt.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: header::HeaderMap,
        body: Option<&(dyn Fn() -> Result<reqwest::Body, ImageError> + Sync)>,
    ) -> Result<reqwest::Response, ImageError> {
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            attempt += 1;
            let mut request = self.client.request(method.clone(), url).headers(headers.clone());
            if let Some(body) = body {
                request = request.body(body()?);
            }
            match (self.authorization.lock().await.clone(), &self.credentials) {
                (Some(Authorization::Bearer(token)), _) => request = request.bearer_auth(token),
                (Some(Authorization::Basic), Some(creds)) => {
                    request = request.basic_auth(&creds.user, Some(&creds.password))
                }
                _ => {}
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if attempt < ATTEMPTS && (e.is_connect() || e.is_timeout()) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(self.error(url, format!("request failed: {}", bundlegen_protocol::error_chain(&e))));
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| self.error(url, "401 without a WWW-Authenticate challenge"))?
                    .to_string();
                let auth = self.authenticate(url, &challenge).await?;
                *self.authorization.lock().await = Some(auth);
                authenticated = true;
                continue;
            }
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) && attempt < ATTEMPTS {
                let wait = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or_else(|| backoff(attempt), |s| Duration::from_secs(s.min(30)));
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(response);
        }
    }

    async fn check_status(
        &self,
        url: &str,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, ImageError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound(format!("{what} at {url}")));
        }
        let body = response.text().await.unwrap_or_default();
        let detail: String = body.chars().take(300).collect();
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check -c/--creds)",
            _ => "",
        };
        Err(self.error(url, format!("{what}: {status}{hint}: {detail}")))
    }

    /// Fetches a manifest or index and checks its digest.
    async fn manifest(&self, reference: &str, expected: Option<&Digest>) -> Result<(Vec<u8>, Digest), ImageError> {
        let url = self.url(&format!("manifests/{reference}"));
        let response = self.get(&url, Some(MANIFEST_TYPES)).await?;
        let response = self.check_status(&url, response, "manifest").await?;
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.error(&url, format!("reading manifest: {e}")))?
            .to_vec();
        if bytes.len() as u64 > super::blob::MAX_DOCUMENT_BYTES {
            return Err(self.error(&url, "manifest larger than 8 MiB"));
        }
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
    async fn blob(&self, digest: &Digest, size: u64, cache: &Path) -> Result<(), ImageError> {
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

/// A registry repository the service keeps bundles in: blobs pushed and
/// read back by digest, manifests pushed by tag.
pub struct Repository {
    session: Session,
}

impl Repository {
    pub fn new(host: &str, repository: &str, options: &RegistryOptions) -> Result<Repository, ImageError> {
        let scheme = if options.plain_http { "http" } else { "https" };
        Ok(Repository {
            session: Session {
                client: build_client(options)?,
                base: format!("{scheme}://{}/v2/", api_host(host)),
                repository: repository.to_string(),
                credentials: options.credentials.clone(),
                authorization: Mutex::new(None),
            },
        })
    }

    /// `host/repository`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}{}",
            self.session.base.trim_end_matches("v2/"),
            self.session.repository
        )
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
        let body = move || -> Result<reqwest::Body, ImageError> {
            let file = std::fs::File::open(&path).map_err(|source| ImageError::Io {
                what: path.display().to_string(),
                source,
            })?;
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
        let body = move || -> Result<reqwest::Body, ImageError> { Ok(reqwest::Body::from(bytes.clone())) };
        let response = self
            .session
            .send(reqwest::Method::PUT, &url, headers, Some(&body))
            .await?;
        self.session.check_status(&url, response, "manifest upload").await?;
        Ok(digest)
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

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(attempt.saturating_sub(1)))
}

fn build_client(options: &RegistryOptions) -> Result<reqwest::Client, ImageError> {
    let http_error = |e: HttpError| match e {
        HttpError::File { path, message } => ImageError::Store(format!("CA file {}: {message}", path.display())),
        other => ImageError::Store(other.to_string()),
    };
    client_builder(
        concat!("bundlegen-rs/", env!("CARGO_PKG_VERSION")),
        options.ca_file.as_deref(),
    )
    .map_err(http_error)?
    .read_timeout(Duration::from_secs(120))
    .build()
    .map_err(|e| ImageError::Store(format!("cannot set up the HTTP client: {e}")))
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
    let scheme = if options.plain_http { "http" } else { "https" };
    let reference = format!("docker://{host}/{repository}{selector}");
    let session = Arc::new(Session {
        client: build_client(options)?,
        base: format!("{scheme}://{}/v2/", api_host(host)),
        repository: repository.to_string(),
        credentials: options.credentials.clone(),
        authorization: Mutex::new(None),
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_quoted_commas() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(scheme, "basic");
        assert_eq!(params["realm"], "Registry Realm");
    }

    #[test]
    fn credentials_need_a_user_and_a_colon() {
        let creds: Credentials = "user:pa:ss".parse().unwrap();
        assert_eq!((creds.user.as_str(), creds.password.as_str()), ("user", "pa:ss"));
        assert!("nocolon".parse::<Credentials>().is_err());
        assert!(":pass".parse::<Credentials>().is_err());
        assert_eq!(format!("{creds:?}"), "Credentials(user:***)");
    }
}
