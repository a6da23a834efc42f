//! One registry repository over HTTP: authentication (basic, and the
//! distribution token flow answering `WWW-Authenticate: Bearer`), retries
//! of transient failures, and verified manifest and blob downloads.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bundlegen_protocol::http::{HttpError, client_builder};
use oci_spec::image::Digest;
use reqwest::{StatusCode, header};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Credentials, RegistryOptions};
use crate::image::blob::{BlobCheck, MAX_DOCUMENT_BYTES};
use crate::image::{ImageError, blob_path};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";
const ATTEMPTS: u32 = 3;

pub struct Session {
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
    /// A session with `repository` on `host` (`docker.io` means Docker Hub's API host).
    pub fn new(host: &str, repository: &str, options: &RegistryOptions) -> Result<Session, ImageError> {
        let scheme = if options.plain_http { "http" } else { "https" };
        Ok(Session {
            client: build_client(options)?,
            base: format!("{scheme}://{}/v2/", api_host(host)),
            repository: repository.to_string(),
            credentials: options.credentials.clone(),
            authorization: Mutex::new(None),
        })
    }

    /// `host/repository`, for messages.
    pub fn describe(&self) -> String {
        format!("{}{}", self.base.trim_end_matches("v2/"), self.repository)
    }

    pub fn url(&self, tail: &str) -> String {
        format!("{}{}/{}", self.base, self.repository, tail)
    }

    pub fn error(&self, url: &str, message: impl Into<String>) -> ImageError {
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
    pub async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, ImageError> {
        let mut headers = header::HeaderMap::new();
        if let Some(accept) = accept.and_then(|a| header::HeaderValue::from_str(a).ok()) {
            headers.insert(header::ACCEPT, accept);
        }
        self.send(reqwest::Method::GET, url, headers, None).await
    }

    /// A request with authentication (answering 401 challenges once) and
    /// retries of transient failures; `body` makes a fresh body per attempt.
    pub async fn send(
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

    pub async fn check_status(
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
    pub async fn manifest(&self, reference: &str, expected: Option<&Digest>) -> Result<(Vec<u8>, Digest), ImageError> {
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
        if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
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
}
