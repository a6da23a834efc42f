//! Steps 1 and 2: where the archive comes from (a URL, the generator
//! service's lookup, a pushed file), and downloading it.

use std::path::PathBuf;

use serde::Deserialize;
use tokio::sync::watch;

use super::{InstallRequest, Source};
use crate::agent::{Agent, InstallError};
use crate::download::DownloadError;

/// What the service says about a bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceBundle {
    download_url: String,
    sha256: String,
    signature: String,
    format: String,
}

/// The archive on the box, and what it must be.
pub(super) struct Fetched {
    pub archive: PathBuf,
    pub sha256: Option<String>,
    pub signature: Option<String>,
    pub format: Option<String>,
}

impl Agent {
    /// Steps 1 and 2: where the archive comes from, and the archive itself.
    pub(super) async fn resolve_and_fetch(
        &self,
        handle: &str,
        request: &InstallRequest,
        cancel: &watch::Receiver<bool>,
    ) -> Result<Fetched, InstallError> {
        let (app, version) = (request.app.as_str(), request.version.as_str());
        let (url, sha256, signature, format) = match &request.source {
            Source::File(path) => {
                return Ok(Fetched {
                    archive: path.clone(),
                    sha256: request.sha256.clone(),
                    signature: request.signature.clone(),
                    format: request.format.clone(),
                });
            }
            Source::Url(url) => (
                url.clone(),
                request.sha256.clone(),
                request.signature.clone(),
                request.format.clone(),
            ),
            Source::Service => {
                let bundle = self.lookup(app, version, cancel).await?;
                if let Some(expected) = &request.sha256
                    && !expected.eq_ignore_ascii_case(&bundle.sha256)
                {
                    return Err(InstallError::Integrity {
                        what: "the service's bundle",
                        expected: expected.clone(),
                        actual: bundle.sha256,
                    });
                }
                let base = self.http.server().unwrap_or_default().to_string();
                (
                    format!("{base}{}", bundle.download_url),
                    Some(bundle.sha256),
                    Some(bundle.signature),
                    Some(bundle.format),
                )
            }
        };
        Ok(Fetched {
            archive: self.fetch(handle, app, version, &url, cancel).await?,
            sha256,
            signature,
            format,
        })
    }

    /// Downloads with progress 0-80 %, checking space and quota first.
    async fn fetch(
        &self,
        handle: &str,
        app: &str,
        version: &str,
        url: &str,
        cancel: &watch::Receiver<bool>,
    ) -> Result<PathBuf, InstallError> {
        let dir = self.store.download_dir(app, version);
        let room = self.room();
        let progress = |done: u64, total: Option<u64>| {
            if let Some(total) = total.filter(|t| *t > 0) {
                self.progress(handle, (done.min(total) * 80 / total) as u32, "downloading");
            }
        };
        self.http
            .download(url, &dir, self.config.download_attempts, &room, &progress, cancel)
            .await
            .map_err(|e| match e {
                DownloadError::Cancelled => InstallError::Cancelled("cancelled while downloading"),
                DownloadError::NoRoom(no_room) => InstallError::NoRoom(no_room),
                source => InstallError::Download {
                    url: url.to_string(),
                    source,
                },
            })
    }

    /// Asks the service for the app version's bundle for this platform,
    /// waiting while it is generated.
    async fn lookup(
        &self,
        app: &str,
        version: &str,
        cancel: &watch::Receiver<bool>,
    ) -> Result<ServiceBundle, InstallError> {
        let server = self.http.server().unwrap_or_default().to_string();
        let platform = self.config.platform.clone().unwrap_or_default();
        let service = |e: String| InstallError::Service(e);
        for _ in 0..120 {
            if *cancel.borrow() {
                return Err(InstallError::Cancelled(
                    "cancelled while the service generated the bundle",
                ));
            }
            let mut url = reqwest::Url::parse(&format!("{server}/v1/lookup")).map_err(|e| service(e.to_string()))?;
            url.query_pairs_mut()
                .append_pair("app", app)
                .append_pair("version", version)
                .append_pair("platform", &platform)
                .append_pair("wait", "30");
            let response = self
                .http
                .request(reqwest::Method::GET, url.as_str())
                .send()
                .await
                .map_err(|e| {
                    service(format!(
                        "{url}: {}",
                        bundlegen_protocol::tls::explain(&e, &crate::download::REMEDIES)
                    ))
                })?;
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            match status.as_u16() {
                200 => {
                    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    return serde_json::from_value(body["bundle"].clone())
                        .map_err(|e| service(format!("unexpected answer: {e}")));
                }
                202 => continue,
                _ => {
                    let (code, message) = bundlegen_protocol::http::error_of(&bytes);
                    return Err(service(format!("{status}: {code}: {message}")));
                }
            }
        }
        Err(service("the service did not finish the bundle in an hour".into()))
    }
}
