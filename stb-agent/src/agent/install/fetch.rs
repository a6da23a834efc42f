//! Steps 1 and 2: where the archive comes from (a URL, the generator
//! service's lookup, a pushed file), and downloading it.

use std::path::PathBuf;

use serde::Deserialize;
use tokio::sync::watch;

use super::{InstallRequest, Source};
use crate::agent::{Agent, InstallError, InvalidParams};
use crate::download::DownloadError;

/// What the service says about a bundle or package.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceBundle {
    download_url: String,
    sha256: String,
    signature: String,
    format: String,
    /// `APP@VERSION` of a package the looked-up one is layered on.
    #[serde(default)]
    pub dependency: Option<String>,
}

/// The service's answer to a lookup.
#[derive(Debug, Clone, Deserialize)]
struct Lookup {
    bundle: ServiceBundle,
    /// Packages it is layered on that the box does not have.
    #[serde(default)]
    dependencies: Vec<ServiceBundle>,
}

/// The format the service gives RALF packages.
const PACKAGE_FORMAT: &str = "ralf";

/// The archive on the box, and what it must be.
pub(super) struct Fetched {
    pub archive: PathBuf,
    pub sha256: Option<String>,
    pub signature: Option<String>,
    pub format: Option<String>,
    /// What the source offers of what a package is layered on.
    pub dependencies: Vec<ServiceBundle>,
}

impl ServiceBundle {
    /// An install of this dependency from the service's URL.
    pub fn request(&self, server: &str) -> Option<InstallRequest> {
        let (app, version) = self.dependency.as_deref()?.split_once('@')?;
        Some(InstallRequest {
            app: app.to_string(),
            version: version.to_string(),
            source: Source::Url(format!("{server}{}", self.download_url)),
            sha256: Some(self.sha256.clone()),
            signature: Some(self.signature.clone()).filter(|s| !s.is_empty()),
            format: Some(self.format.clone()),
            reinstall: false,
        })
    }
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
        let mut offered = Vec::new();
        let (url, sha256, signature, format) = match &request.source {
            Source::File(path) => {
                return Ok(Fetched {
                    archive: path.clone(),
                    sha256: request.sha256.clone(),
                    signature: request.signature.clone(),
                    format: request.format.clone(),
                    dependencies: Vec::new(),
                });
            }
            Source::Registry(reference) => {
                let reference = reference.parse().map_err(InvalidParams)?;
                return Ok(Fetched {
                    archive: self.pull_package(handle, request, &reference, cancel).await?,
                    sha256: request.sha256.clone(),
                    signature: None,
                    format: Some(PACKAGE_FORMAT.into()),
                    dependencies: Vec::new(),
                });
            }
            Source::Url(url) => (
                url.clone(),
                request.sha256.clone(),
                request.signature.clone(),
                request.format.clone(),
            ),
            Source::Service => {
                let Lookup { bundle, dependencies } = self.lookup(app, version, cancel).await?;
                offered = dependencies;
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
        let package = format.as_deref() == Some(PACKAGE_FORMAT);
        Ok(Fetched {
            archive: self.fetch(handle, app, version, &url, package, cancel).await?,
            sha256,
            signature,
            format,
            dependencies: offered,
        })
    }

    /// Downloads with progress 0-80 %, checking space and quota first (a
    /// file known to be a package is stored as it is, not unpacked).
    async fn fetch(
        &self,
        handle: &str,
        app: &str,
        version: &str,
        url: &str,
        package: bool,
        cancel: &watch::Receiver<bool>,
    ) -> Result<PathBuf, InstallError> {
        let dir = self.store.download_dir(app, version);
        let room = if package {
            self.store.room(self.config.quota.bytes(), 1)
        } else {
            self.room()
        };
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
    /// waiting while it is generated; a package comes with what it is
    /// layered on that the box does not have.
    async fn lookup(&self, app: &str, version: &str, cancel: &watch::Receiver<bool>) -> Result<Lookup, InstallError> {
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
            let have: Vec<String> = self
                .store
                .package_versions()
                .into_iter()
                .flat_map(|(id, versions)| versions.into_iter().map(move |v| format!("{id}@{v}")))
                .collect();
            if !have.is_empty() {
                url.query_pairs_mut().append_pair("have", &have.join(","));
            }
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
                    return serde_json::from_slice(&bytes).map_err(|e| service(format!("unexpected answer: {e}")));
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
