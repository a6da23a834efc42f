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

use super::{Credentials, RegistryOptions, normalize_host};
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
const ATTEMPTS: u32 = 3;

pub struct Session {
    client: reqwest::Client,
    /// `https://host/v2/`.
    base: String,
    /// `base`, parsed: requests to its origin carry the authorization.
    origin: reqwest::Url,
    repository: String,
    /// The credentials given for this registry's host, if any.
    credentials: Option<Credentials>,
    plain_http: bool,
    token_realms: Vec<String>,
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
        let base = format!("{scheme}://{}/v2/", api_host(host));
        let origin = reqwest::Url::parse(&base).map_err(|e| ImageError::Reference {
            input: host.to_string(),
            reason: format!("not a registry host: {e}"),
        })?;
        Ok(Session {
            client: build_client(options)?,
            base,
            origin,
            repository: repository.to_string(),
            credentials: options.credentials.for_host(host).cloned(),
            plain_http: options.plain_http,
            token_realms: options.token_realms.iter().map(|r| normalize_host(r)).collect(),
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

    /// Whether a request to `url` may carry this registry's authorization:
    /// the registry itself (same scheme, host and port), nothing else.
    fn authorizes(&self, url: &reqwest::Url) -> bool {
        url.scheme() == self.origin.scheme()
            && url.host_str() == self.origin.host_str()
            && url.port_or_known_default() == self.origin.port_or_known_default()
    }

    /// Whether the token server at `realm` may receive the credentials: on
    /// the registry's host (over plain HTTP only for a registry the user
    /// reaches that way), or over HTTPS on a host configured as a token
    /// realm (Docker Hub's is built in).
    fn realm_gets_credentials(&self, realm: &reqwest::Url) -> bool {
        let https = realm.scheme() == "https";
        let Some(host) = realm.host_str() else { return false };
        if Some(host) == self.origin.host_str() {
            return https || (self.plain_http && realm.scheme() == "http");
        }
        let docker_hub = self.origin.host_str() == Some("registry-1.docker.io") && host == "auth.docker.io";
        https
            && (docker_hub
                || self
                    .token_realms
                    .iter()
                    .any(|r| r == host || *r == normalize_host(realm.as_str())))
    }

    /// Answers a 401 challenge.
    async fn authenticate(&self, url: &str, challenge: &str) -> Result<Authorization, ImageError> {
        let (scheme, params) =
            parse_challenge(challenge).ok_or_else(|| self.error(url, "unreadable WWW-Authenticate"))?;
        match scheme.as_str() {
            "basic" if self.credentials.is_some() => Ok(Authorization::Basic),
            "basic" => Err(self.error(
                url,
                "the registry requires a login; pass --creds HOST=USER:PASSWORD for its host",
            )),
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
                match &self.credentials {
                    Some(creds) if self.realm_gets_credentials(&token_url) => {
                        request = request.basic_auth(&creds.user, Some(&creds.password));
                    }
                    Some(_) => tracing::warn!(
                        "{}: not sending the credentials of {} to the token server at {}; \
                         allow that host with --token-realm (HTTPS only)",
                        self.describe(),
                        self.origin.host_str().unwrap_or_default(),
                        token_url.origin().ascii_serialization()
                    ),
                    None => {}
                }
                let response = request.send().await.map_err(|e| {
                    self.error(
                        token_url.as_str(),
                        format!(
                            "token request failed: {}",
                            bundlegen_protocol::tls::explain(&e, &REMEDIES)
                        ),
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
                let body = read_limited(response, MAX_TOKEN_RESPONSE)
                    .await
                    .map_err(|m| self.error(token_url.as_str(), format!("token response: {m}")))?;
                let body: TokenResponse = serde_json::from_slice(&body)
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
            // An upload Location or a redirect elsewhere gets no authorization.
            let own = reqwest::Url::parse(url).is_ok_and(|u| self.authorizes(&u));
            match (self.authorization.lock().await.clone(), &self.credentials) {
                (Some(Authorization::Bearer(token)), _) if own => request = request.bearer_auth(token),
                (Some(Authorization::Basic), Some(creds)) if own => {
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
                    return Err(self.error(
                        url,
                        format!("request failed: {}", bundlegen_protocol::tls::explain(&e, &REMEDIES)),
                    ));
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
        // The body is the registry's, not ours to pass on (it may be anyone's
        // server): logged for the operator, left out of the error.
        if let Ok(body) = read_limited(response, 4096).await {
            tracing::debug!("{url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check --creds for this registry's host)",
            _ => "",
        };
        Err(self.error(url, format!("{what}: {status}{hint}")))
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

/// Largest token response read.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// A response's body, at most `limit` bytes (a peer decides how many it sends).
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
