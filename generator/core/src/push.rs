//! The developer's side of a push to a test box: sends a bundle archive or a
//! RALF package to the agent's developer endpoint
//! (`POST /v1/push?app=ID[&launch=1]`, see the stb-agent's `devpush`), which
//! installs a bundle as version `dev` of the app (a package as its own
//! version) and, when asked, launches it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bundlegen_protocol::http::{HttpError, client, send_for_json};
use bundlegen_protocol::tls::Remedies;
use serde::Deserialize;

/// What to do about TLS trouble with a box.
const REMEDIES: Remedies = Remedies {
    plain_http: "give --device as http://HOST:PORT (a box without developer.tls_cert listens in plain HTTP, \
                 on loopback only)",
    trust_ca: "pass the CA that signed the box's certificate with --ca FILE",
};

/// The agent's developer endpoint port when `--device` names none.
pub const DEFAULT_PORT: u16 = 9443;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error("--device {device:?}: {message}")]
    Device { device: String, message: String },
    /// Sending, or the box's answer (a refusal carries its status and code).
    #[error(transparent)]
    Http(#[from] HttpError),
}

#[derive(Debug, Clone)]
pub struct PushRequest {
    /// `HOST[:PORT]` (HTTPS) or an `http://` / `https://` URL.
    pub device: String,
    pub token: String,
    pub archive: PathBuf,
    /// The app id; default: a package's own id, else the archive's name
    /// without its extension.
    pub app: Option<String>,
    pub launch: bool,
    /// A CA (PEM) to trust for the box's certificate.
    pub ca_file: Option<PathBuf>,
}

/// What the box answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pushed {
    pub app: String,
    pub version: String,
    pub bytes: u64,
    /// Dobby's descriptor when launched.
    pub descriptor: Option<i32>,
}

/// The app id a bundle archive's name gives: `com.example.app.tar.gz` → `com.example.app`.
pub fn app_from_archive(archive: &Path) -> Option<String> {
    let name = archive.file_name()?.to_str()?;
    let stem = [".tar.gz", ".tgz", ".tar.zst", ".ipk", ".tar", ".ralf"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    Some(stem.to_string()).filter(|s| !s.is_empty())
}

/// The id a RALF package's config gives it, if `archive` is one.
pub fn app_of_package(archive: &Path) -> Option<String> {
    let file = bundlegen_protocol::ralf::package::PackageFile::open(archive).ok()?;
    Some(bundlegen_protocol::ralf::package::read_layout(&file).ok()?.config.id)
}

/// The endpoint's base URL for `--device`.
pub fn device_url(device: &str) -> Result<String, PushError> {
    let invalid = |message: &str| PushError::Device {
        device: device.to_string(),
        message: message.to_string(),
    };
    let url = if device.starts_with("http://") || device.starts_with("https://") {
        device.trim_end_matches('/').to_string()
    } else if device.contains('/') || device.is_empty() {
        return Err(invalid("a HOST[:PORT] or an http(s) URL"));
    } else if device
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        format!("https://{device}")
    } else {
        format!("https://{device}:{DEFAULT_PORT}")
    };
    reqwest::Url::parse(&url).map_err(|e| invalid(&e.to_string()))?;
    Ok(url)
}

/// Sends the archive (streamed) and waits for the box's answer.
pub async fn push(request: &PushRequest) -> Result<Pushed, PushError> {
    let archive_error = |message: String| PushError::Archive {
        path: request.archive.clone(),
        message,
    };
    let app = match &request.app {
        Some(app) => app.clone(),
        None => app_of_package(&request.archive)
            .or_else(|| app_from_archive(&request.archive))
            .ok_or_else(|| archive_error("no app id in the file name: give --app".into()))?,
    };
    let file = tokio::fs::File::open(&request.archive)
        .await
        .map_err(|e| archive_error(e.to_string()))?;
    let length = file.metadata().await.map_err(|e| archive_error(e.to_string()))?.len();
    let endpoint = format!("{}/v1/push", device_url(&request.device)?);
    let mut url = reqwest::Url::parse(&endpoint).map_err(|e| archive_error(e.to_string()))?;
    url.query_pairs_mut().append_pair("app", &app);
    if request.launch {
        url.query_pairs_mut().append_pair("launch", "1");
    }
    let client = client(
        concat!("bundlegen-push/", env!("CARGO_PKG_VERSION")),
        request.ca_file.as_deref(),
        // Installing (and launching) happens before the box answers.
        Duration::from_secs(600),
    )?;
    // The token is checked before the body goes: a refusal mid-body would
    // reach this side as a broken pipe instead of the box's answer.
    let _room: serde_json::Value =
        send_for_json(client.get(&endpoint).bearer_auth(&request.token), &endpoint, &REMEDIES).await?;
    let upload = client
        .post(url.clone())
        .bearer_auth(&request.token)
        .header(reqwest::header::CONTENT_LENGTH, length)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(crate::stream::file_stream(file, length)));
    Ok(send_for_json(upload, url.as_str(), &REMEDIES).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_and_device_urls() {
        for (file, app) in [
            ("out/com.example.app.tar.gz", Some("com.example.app")),
            ("b.tar.zst", Some("b")),
            ("x_1.0_arm.ipk", Some("x_1.0_arm")),
            ("plain", Some("plain")),
            ("com.example.app.ralf", Some("com.example.app")),
            (".tar.gz", None),
        ] {
            assert_eq!(app_from_archive(Path::new(file)).as_deref(), app, "{file}");
        }
        for (device, url) in [
            ("box.local", Some("https://box.local:9443")),
            ("10.0.0.7:8443", Some("https://10.0.0.7:8443")),
            ("http://127.0.0.1:9443/", Some("http://127.0.0.1:9443")),
            ("[::1]:9443", Some("https://[::1]:9443")),
            ("box/path", None),
            ("", None),
        ] {
            assert_eq!(device_url(device).ok().as_deref(), url, "{device}");
        }
    }
}
