//! Sends a probe report to the generator service
//! (`POST /v1/platforms/NAME/probe`, bearer token).

use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: the service refused the report: {status} {code}: {message}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
}

/// What the service answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Accepted {
    pub name: String,
    pub version: i64,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Reads a token file (one line; surrounding whitespace ignored).
pub fn read_token(path: &Path) -> Result<String, UploadError> {
    let error = |message: String| UploadError::File {
        path: path.display().to_string(),
        message,
    };
    let token = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(error("empty token file".into()));
    }
    Ok(token.to_string())
}

/// An HTTP client builder with the workspace's TLS (rustls with ring), the
/// usual timeouts, and `ca` (PEM) trusted besides the system's roots, for a
/// private certificate. Shared by everything on the box that talks HTTP.
pub fn client_builder(user_agent: &str, ca: Option<&Path>) -> Result<reqwest::ClientBuilder, UploadError> {
    // reqwest is built without a default crypto provider; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let file_error = |message: String| UploadError::File {
            path: ca.display().to_string(),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| file_error(e.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| file_error(e.to_string()))?;
        builder = builder.tls_certs_merge(certificates);
    }
    Ok(builder)
}

/// The code and message of an error answer of the service or the agent
/// (`{"error": {"code": ..., "message": ...}}`); for any other body,
/// "unknown" and the body's first 300 characters.
pub fn error_of(body: &[u8]) -> (String, String) {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    (
        parsed["error"]["code"].as_str().unwrap_or("unknown").to_string(),
        parsed["error"]["message"].as_str().map_or_else(
            || String::from_utf8_lossy(body).chars().take(300).collect(),
            str::to_string,
        ),
    )
}

/// Posts `report` (JSON) to `url`; `ca` adds a trusted CA (PEM) for a
/// service with a private certificate.
pub async fn upload(url: &str, token: &str, report: Vec<u8>, ca: Option<&Path>) -> Result<Accepted, UploadError> {
    let http = |message: String| UploadError::Http {
        url: url.to_string(),
        message,
    };
    let builder =
        client_builder(concat!("platform-probe/", env!("CARGO_PKG_VERSION")), ca)?.timeout(Duration::from_secs(300));
    let client = builder.build().map_err(|e| http(e.to_string()))?;
    let response = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(report)
        .send()
        .await
        .map_err(|e| http(bundlegen_protocol::error_chain(&e)))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| http(e.to_string()))?;
    if !status.is_success() {
        let (code, message) = error_of(&body);
        return Err(UploadError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            code,
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|e| http(format!("unexpected answer: {e}")))
}
