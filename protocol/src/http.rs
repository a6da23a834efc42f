//! The HTTP client side every part of the workspace shares: one client
//! builder (rustls with ring, timeouts, an extra CA for a private
//! certificate), bearer token files, and the error answers of the service
//! and the agent (`{"error": {"code": ..., "message": ...}}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A local file the request needs (token, CA, body).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// The client could not be set up (TLS, the system's certificates).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// The request did not get an answer, or an unreadable one.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// The peer answered with an error.
    #[error("{url}: refused: {status} {code}: {message}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
}

/// A client builder with the workspace's TLS (rustls with ring), a connect
/// timeout, and `ca` (PEM) trusted besides the system's roots.
pub fn client_builder(user_agent: &str, ca: Option<&Path>) -> Result<reqwest::ClientBuilder, HttpError> {
    // reqwest is built without a default crypto provider; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let file_error = |message: String| HttpError::File {
            path: ca.to_path_buf(),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| file_error(e.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| file_error(e.to_string()))?;
        builder = builder.tls_certs_merge(certificates);
    }
    Ok(builder)
}

/// A client as [`client_builder`] sets it up, whose requests give up after
/// `timeout`.
pub fn client(user_agent: &str, ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, HttpError> {
    client_builder(user_agent, ca)?
        .timeout(timeout)
        .build()
        .map_err(|e| HttpError::Setup(e.to_string()))
}

/// Reads a bearer token file (one line; surrounding whitespace ignored).
pub fn read_token(path: &Path) -> Result<String, HttpError> {
    let error = |message: String| HttpError::File {
        path: path.to_path_buf(),
        message,
    };
    let token = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(error("empty token file".into()));
    }
    Ok(token.to_string())
}

/// The code and message of an error answer; for any other body, "unknown"
/// and the body's first 300 characters.
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

/// Sends `request` to `url` and reads a JSON answer: a success is parsed as
/// `T`, an error status becomes [`HttpError::Refused`] with the peer's code;
/// TLS trouble is explained with `remedies`.
pub async fn send_for_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
    remedies: &crate::tls::Remedies,
) -> Result<T, HttpError> {
    let transport = |message: String| HttpError::Transport {
        url: url.to_string(),
        message,
    };
    let response = request
        .send()
        .await
        .map_err(|e| transport(crate::tls::explain(&e, remedies)))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport(e.to_string()))?;
    if !status.is_success() {
        let (code, message) = error_of(&body);
        return Err(HttpError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            code,
            message,
        });
    }
    // No body (204) reads as JSON null.
    let body: &[u8] = if body.is_empty() { b"null" } else { &body };
    serde_json::from_slice(body).map_err(|e| transport(format!("unexpected answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_give_their_code_and_other_bodies_their_start() {
        assert_eq!(
            error_of(br#"{"error": {"code": "forbidden", "message": "no"}}"#),
            ("forbidden".to_string(), "no".to_string())
        );
        let html = format!("<html>{}</html>", "x".repeat(400));
        let (code, message) = error_of(html.as_bytes());
        assert_eq!(code, "unknown");
        assert_eq!(message.chars().count(), 300);
        assert!(message.starts_with("<html>"));
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  bgt_abc\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "bgt_abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read_token(&path), Err(HttpError::File { message, .. }) if message == "empty token file"));
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
