//! Talking to one repository of an OCI distribution registry, for whoever
//! pulls or pushes (the generator's images and packages, the agent's
//! packages): authentication (basic, and the distribution token flow
//! answering `WWW-Authenticate: Bearer`), credentials bound to the
//! registry's origin, retries of transient failures, and bodies read within
//! limits. What is fetched and how it is checked is the caller's.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{StatusCode, header};
use tokio::sync::Mutex;

use crate::http::{HttpError, client_builder};
use crate::tls::Remedies;

const ATTEMPTS: u32 = 3;
/// Largest token response read.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Client(String),
}

/// User name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
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

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Access {
    /// For this registry's host only.
    pub credentials: Option<Credentials>,
    /// `http://` (only for a local test registry).
    pub plain_http: bool,
    /// Token servers on other hosts that may receive the credentials (over
    /// HTTPS only), as `host[:port]`. Docker Hub's own is always allowed.
    pub token_realms: Vec<String>,
    /// Extra CA certificates (PEM) trusted besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    pub user_agent: &'static str,
    /// What to tell a user about TLS trouble, in the caller's terms.
    pub remedies: Remedies,
    /// Hint for a refused login, in the caller's terms (`--creds`, ...).
    pub credentials_hint: &'static str,
}

/// A registry host as credentials and allow-lists name it: scheme and path
/// dropped, lower case, Docker Hub's names as `docker.io`.
pub fn normalize_host(name: &str) -> String {
    let name = name.trim().trim_start_matches("https://").trim_start_matches("http://");
    let host = name.split('/').next().unwrap_or(name).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    }
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

/// One repository of a registry.
pub struct RepositoryClient {
    client: reqwest::Client,
    /// `https://host/v2/`.
    base: String,
    /// `base`, parsed: requests to its origin carry the authorization.
    origin: reqwest::Url,
    repository: String,
    access: Access,
    authorization: Mutex<Option<Authorization>>,
}

impl RepositoryClient {
    /// A client of `repository` on `host` (`docker.io` means Docker Hub's API host).
    pub fn new(host: &str, repository: &str, access: Access) -> Result<RepositoryClient, RegistryError> {
        let scheme = if access.plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{}/v2/", api_host(host));
        let origin = reqwest::Url::parse(&base).map_err(|e| RegistryError::Request {
            url: host.to_string(),
            message: format!("not a registry host: {e}"),
        })?;
        let client = client_builder(access.user_agent, access.ca_file.as_deref())
            .map_err(|e| match e {
                HttpError::File { path, message } => {
                    RegistryError::Client(format!("CA file {}: {message}", path.display()))
                }
                other => RegistryError::Client(other.to_string()),
            })?
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| RegistryError::Client(format!("cannot set up the HTTP client: {e}")))?;
        Ok(RepositoryClient {
            client,
            base,
            origin,
            repository: repository.to_string(),
            access,
            authorization: Mutex::new(None),
        })
    }

    /// `host/repository`, for messages.
    pub fn describe(&self) -> String {
        format!("{}{}", self.base.trim_end_matches("v2/"), self.repository)
    }

    /// The URL of `tail` (`manifests/TAG`, `blobs/DIGEST`, `tags/list`) in the repository.
    pub fn url(&self, tail: &str) -> String {
        format!("{}{}/{}", self.base, self.repository, tail)
    }

    pub fn error(&self, url: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Request {
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
    /// the registry's host (over plain HTTP only for a registry reached that
    /// way), or over HTTPS on a host configured as a token realm (Docker
    /// Hub's is built in).
    fn realm_gets_credentials(&self, realm: &reqwest::Url) -> bool {
        let https = realm.scheme() == "https";
        let Some(host) = realm.host_str() else { return false };
        if Some(host) == self.origin.host_str() {
            return https || (self.access.plain_http && realm.scheme() == "http");
        }
        let docker_hub = self.origin.host_str() == Some("registry-1.docker.io") && host == "auth.docker.io";
        https
            && (docker_hub
                || self
                    .access
                    .token_realms
                    .iter()
                    .any(|r| r == host || *r == normalize_host(realm.as_str())))
    }

    /// Answers a 401 challenge.
    async fn authenticate(&self, url: &str, challenge: &str) -> Result<Authorization, RegistryError> {
        let (scheme, params) =
            parse_challenge(challenge).ok_or_else(|| self.error(url, "unreadable WWW-Authenticate"))?;
        match scheme.as_str() {
            "basic" if self.access.credentials.is_some() => Ok(Authorization::Basic),
            "basic" => Err(self.error(
                url,
                format!("the registry requires a login ({})", self.access.credentials_hint),
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
                match &self.access.credentials {
                    Some(creds) if self.realm_gets_credentials(&token_url) => {
                        request = request.basic_auth(&creds.user, Some(&creds.password));
                    }
                    Some(_) => tracing::warn!(
                        "{}: not sending the credentials of {} to the token server at {}; \
                         allow that host as a token realm (HTTPS only)",
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
                            crate::tls::explain(&e, &self.access.remedies)
                        ),
                    )
                })?;
                let status = response.status();
                if !status.is_success() {
                    let hint = if status == StatusCode::UNAUTHORIZED {
                        format!(" ({})", self.access.credentials_hint)
                    } else {
                        String::new()
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
    pub async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, RegistryError> {
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
        body: Option<&(dyn Fn() -> Result<reqwest::Body, RegistryError> + Sync)>,
    ) -> Result<reqwest::Response, RegistryError> {
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
            match (self.authorization.lock().await.clone(), &self.access.credentials) {
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
                        format!("request failed: {}", crate::tls::explain(&e, &self.access.remedies)),
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

    /// The response if it succeeded; otherwise an error naming `what` (404
    /// is [`RegistryError::NotFound`]).
    pub async fn check_status(
        &self,
        url: &str,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(format!("{what} at {url}")));
        }
        // The body is the registry's, not ours to pass on (it may be anyone's
        // server): logged for the operator, left out of the error.
        if let Ok(body) = read_limited(response, 4096).await {
            tracing::debug!("{url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(" ({})", self.access.credentials_hint),
            _ => String::new(),
        };
        Err(self.error(url, format!("{what}: {status}{hint}")))
    }

    /// The repository's tags (`tags/list`), at most `limit` bytes of them.
    pub async fn tags(&self, limit: u64) -> Result<Vec<String>, RegistryError> {
        let url = self.url("tags/list");
        let response = self.get(&url, None).await?;
        let response = self.check_status(&url, response, "tags").await?;
        let body = read_limited(response, limit)
            .await
            .map_err(|m| self.error(&url, format!("tags: {m}")))?;
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let tags: Tags = serde_json::from_slice(&body).map_err(|e| self.error(&url, format!("tags: {e}")))?;
        Ok(tags.tags.unwrap_or_default())
    }
}

/// A response's body, at most `limit` bytes (a peer decides how many it sends).
pub async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
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
    fn credentials_parse_and_hide_the_password() {
        let creds: Credentials = "user:pa:ss".parse().unwrap();
        assert_eq!(creds.password, "pa:ss");
        assert!("nocolon".parse::<Credentials>().is_err());
        assert!(":pass".parse::<Credentials>().is_err());
        assert_eq!(format!("{creds:?}"), "Credentials(user:***)");
    }
}
