//! Installing a bundle version, in five steps:
//!
//! 1. **resolve**: where the archive comes from (a URL, the generator
//!    service's lookup, a pushed file) and what it must be;
//! 2. **fetch**: download it (resumable; space and quota checked first);
//! 3. **verify**: its sha256 and, with trusted keys, its signature;
//! 4. **stage**: recorded as installing, then unpacked into staging and
//!    renamed into `<root>/apps/<app>/<version>/`; a failure puts back the
//!    previous state (and says so if that fails too);
//! 5. **commit**: installed and current; the old version goes unless it is
//!    locked or running.
//!
//! Steps 1-2 are in [`fetch`], step 4's unpack and rollback in [`stage`].
//! A RALF package (told from a bundle by its content) is verified against
//! the CA roots instead, layered on installed packages (installed first
//! when the source offers them) and stored as it is: [`package`].
//! The request is kept in the download directory until the install ends,
//! so one a restart interrupted is resumed at the next start.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundlegen_protocol::archive::ReadOptions;
use bundlegen_protocol::signature::{SignedIdentity, verify};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Agent, InstallError, InvalidParams, OperationResult, check_app, check_version};
use crate::download::discard;
use crate::store::{AppRecord, StoreError, VersionRecord, VersionState, disk_usage, io, now};

mod fetch;
pub(in crate::agent) mod package;
mod registry;
mod stage;

use fetch::{Fetched, ServiceBundle};
use package::VerifiedPackage;
use stage::{Staged, Staging};

/// Where an install comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A bundle archive at a URL.
    Url(String),
    /// The generator service's bundle of the app version for this platform.
    Service,
    /// A file already on the box (a developer push).
    File(PathBuf),
    /// A RALF package in an OCI registry (`docker://HOST/REPOSITORY:TAG`).
    Registry(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRequest {
    pub app: String,
    pub version: String,
    pub source: Source,
    /// The archive's sha256 (hex), if the caller knows it.
    pub sha256: Option<String>,
    /// The generator's signature (base64), for URL installs.
    pub signature: Option<String>,
    /// `tar.gz`, `tar.zst` or `ipk` (for the signature; default: from the file).
    pub format: Option<String>,
    /// Install again even if this version is installed.
    pub reinstall: bool,
}

/// An archive whose content is what was asked for.
struct Verified {
    archive: PathBuf,
    sha256: String,
    size: u64,
    /// What it is, if it is a RALF package.
    package: Option<VerifiedPackage>,
}

/// The bundle format of an archive, from its first bytes.
fn sniff_format(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 8];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    match head {
        [0x1f, 0x8b, ..] => Some("tar.gz"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("tar.zst"),
        _ if head.starts_with(b"!<arch>") => Some("ipk"),
        _ => None,
    }
}

fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = bundlegen_protocol::digest::HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    Ok(hasher.finish().1.hex())
}

impl Agent {
    /// Queues an install; returns its handle.
    pub async fn install(self: &Arc<Self>, request: InstallRequest) -> Result<String, InstallError> {
        self.start_install(request).await.map(|(handle, _)| handle)
    }

    /// Queues an install; returns its handle and result.
    pub async fn start_install(
        self: &Arc<Self>,
        request: InstallRequest,
    ) -> Result<(String, OperationResult), InstallError> {
        check_app(&request.app)?;
        check_version(&request.version)?;
        if let Some(sha256) = &request.sha256
            && (sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(InvalidParams(format!("sha256 {sha256:?} is not 64 hex digits")).into());
        }
        match &request.source {
            Source::Url(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                return Err(InvalidParams(format!("source {url:?}: an http(s) URL, or \"service\"")).into());
            }
            // Whoever serves the URL must not choose what gets installed.
            Source::Url(url) if request.sha256.is_none() && request.signature.is_none() => {
                return Err(InvalidParams(format!(
                    "source {url:?}: an install by URL needs a sha256 or a signature"
                ))
                .into());
            }
            Source::Service if self.http.server().is_none() || self.config.platform.is_none() => {
                return Err(InvalidParams("no service or platform configured".into()).into());
            }
            Source::Registry(reference) => {
                reference.parse::<registry::PackageReference>().map_err(InvalidParams)?;
            }
            _ => {}
        }
        // Refused at once when it is clear already (checked again when it runs).
        if !request.reinstall
            && self
                .store
                .app(&request.app)
                .is_some_and(|r| r.versions.contains_key(&request.version))
        {
            return Err(InstallError::AlreadyInstalled {
                app: request.app,
                version: request.version,
            });
        }
        // Kept until the install ends, so a restart resumes it.
        if !matches!(request.source, Source::File(_)) {
            let bytes = serde_json::to_vec(&request).expect("requests serialise");
            let (app, version) = (request.app.clone(), request.version.clone());
            self.blocking(move |store| -> Result<(), StoreError> {
                let dir = store.download_dir(&app, &version);
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let path = dir.join("request.json");
                bundlegen_protocol::fsutil::write_file_atomic(&path, &bytes, 0o644).map_err(io(&path))
            })
            .await?;
        }
        let (app, version) = (request.app.clone(), request.version.clone());
        Ok(
            self.start_operation("Installing", &app, &version, move |agent, handle, cancel| {
                Box::pin(async move { Ok(agent.run_install(&handle, request, cancel).await?) })
            }),
        )
    }

    /// Installs that a restart interrupted, queued again.
    pub async fn resume_interrupted(self: &Arc<Self>) -> Vec<String> {
        let downloads = self.store.root().join("downloads");
        let mut handles = Vec::new();
        let Ok(entries) = std::fs::read_dir(&downloads) else {
            return handles;
        };
        for entry in entries.flatten() {
            let request = std::fs::read(entry.path().join("request.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<InstallRequest>(&b).ok());
            match request {
                Some(request) => match self.install(request).await {
                    Ok(handle) => handles.push(handle),
                    // Finished just before the restart (installed), or no
                    // longer valid: nothing to resume, so nothing to keep.
                    Err(e) => {
                        tracing::warn!("{}: not resumed: {e}", entry.path().display());
                        discard(&entry.path());
                    }
                },
                None => discard(&entry.path()),
            }
        }
        handles
    }

    async fn run_install(
        self: &Arc<Self>,
        handle: &str,
        request: InstallRequest,
        cancel: watch::Receiver<bool>,
    ) -> Result<String, InstallError> {
        let download_dir = self.store.download_dir(&request.app, &request.version);
        let result = self.install_steps(handle, &request, &cancel, &[], 0).await;
        self.blocking(move |_| match &result {
            // What was downloaded stays, so installing again resumes it; but
            // a failed install is not retried by itself after a restart.
            Err(InstallError::Download { .. }) => {
                let _ = std::fs::remove_file(download_dir.join("request.json"));
                result
            }
            _ => {
                discard(&download_dir);
                result
            }
        })
        .await
    }

    /// The steps; `inherited` is what the source of a package this one is
    /// a dependency of offered, `depth` how deep in such dependencies.
    async fn install_steps(
        self: &Arc<Self>,
        handle: &str,
        request: &InstallRequest,
        cancel: &watch::Receiver<bool>,
        inherited: &[ServiceBundle],
        depth: usize,
    ) -> Result<String, InstallError> {
        let record = self.check_installable(request)?;
        self.progress(handle, 0, "resolving");
        let fetched = self.resolve_and_fetch(handle, request, cancel).await?;
        let offered = if fetched.dependencies.is_empty() {
            inherited.to_vec()
        } else {
            fetched.dependencies.clone()
        };
        self.progress(handle, 80, "verifying");
        let mut verified = self.verify(request, fetched, cancel).await?;
        if let Some(package) = &mut verified.package {
            let pinned = self
                .resolve_dependencies(handle, request, package, &offered, cancel, depth)
                .await?;
            package.record.dependencies = pinned;
        }
        self.progress(
            handle,
            85,
            if verified.package.is_some() {
                "storing"
            } else {
                "unpacking"
            },
        );
        let bundle_dir = self.stage(request, &verified, record).await?;
        self.progress(handle, 98, "committing");
        if verified.package.is_some() {
            self.forget_verified(&request.app, &request.version);
        }
        self.commit(request, &bundle_dir).await?;
        Ok(format!("installed at {}", bundle_dir.display()))
    }

    /// The app's record, unless the version is installed (without
    /// `reinstall`) or a lock forbids replacing it or the current one.
    fn check_installable(&self, request: &InstallRequest) -> Result<AppRecord, InstallError> {
        let (app, version) = (request.app.as_str(), request.version.as_str());
        let record = self.store.app(app).unwrap_or(AppRecord {
            app: app.to_string(),
            current: None,
            versions: BTreeMap::new(),
        });
        let locked = |version: &str, upgrade: bool| InstallError::Locked {
            app: app.to_string(),
            version: version.to_string(),
            upgrade,
        };
        if record.versions.contains_key(version) && !request.reinstall {
            return Err(InstallError::AlreadyInstalled {
                app: app.to_string(),
                version: version.to_string(),
            });
        }
        if let Some(current) = record.current.as_deref().filter(|c| *c != version)
            && !self.store.locks_of(app, current).is_empty()
        {
            return Err(locked(current, true));
        }
        if record.versions.contains_key(version) && !self.store.locks_of(app, version).is_empty() {
            return Err(locked(version, false));
        }
        Ok(record)
    }

    /// Step 3: the archive's sha256 and, with trusted keys, its signature
    /// (developer pushes are trusted by developer mode itself); a package's
    /// own signature and blobs instead of the bundle signature.
    async fn verify(
        &self,
        request: &InstallRequest,
        fetched: Fetched,
        cancel: &watch::Receiver<bool>,
    ) -> Result<Verified, InstallError> {
        let (app, version) = (request.app.as_str(), request.version.as_str());
        let archive = fetched.archive;
        let (actual, size, sniffed, is_package) = self
            .blocking({
                let archive = archive.clone();
                move |_| -> Result<_, StoreError> {
                    let size = std::fs::metadata(&archive).map_err(io(&archive))?.len();
                    Ok((
                        sha256_file(&archive)?,
                        size,
                        sniff_format(&archive),
                        package::is_package(&archive),
                    ))
                }
            })
            .await?;
        if let Some(expected) = &fetched.sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(InstallError::Integrity {
                what: "the archive",
                expected: expected.clone(),
                actual,
            });
        }
        if *cancel.borrow() {
            return Err(InstallError::Cancelled("cancelled before unpacking"));
        }
        if is_package {
            let policy = self.package_policy();
            let (checked, app, version) = (archive.clone(), app.to_string(), version.to_string());
            let package = self
                .blocking(move |_| package::verify_package(&checked, &app, &version, &policy))
                .await?;
            return Ok(Verified {
                archive,
                sha256: actual,
                size,
                package: Some(package),
            });
        }
        let format = fetched.format.or_else(|| sniffed.map(str::to_string));
        // Pushed files come through the developer token, never signed.
        if !matches!(request.source, Source::File(_)) {
            self.check_signature(app, version, &actual, format.as_deref(), fetched.signature.as_deref())?;
        }
        Ok(Verified {
            archive,
            sha256: actual,
            size,
            package: None,
        })
    }

    /// The signature policy: with trusted keys, a signature must verify
    /// with one of them; a bundle without one installs only when
    /// `allow_unsigned` is set.
    pub(super) fn check_signature(
        &self,
        app: &str,
        version: &str,
        sha256: &str,
        format: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), InstallError> {
        let signature = match signature {
            Some(signature) if !self.trusted_keys.is_empty() => signature,
            _ if self.config.allow_unsigned => return Ok(()),
            Some(_) => {
                return Err(InstallError::Signature(
                    "no trusted_keys are configured to verify the signature with".into(),
                ));
            }
            None => {
                return Err(InstallError::Signature(
                    "the bundle has no signature (allow_unsigned is false)".into(),
                ));
            }
        };
        let identity = SignedIdentity {
            sha256,
            app_id: app,
            app_version: version,
            platform: self.config.platform.as_deref().unwrap_or(""),
            format: format.unwrap_or(""),
        };
        if !self.trusted_keys.iter().any(|key| verify(key, &identity, signature)) {
            return Err(InstallError::Signature(format!(
                "the signature does not verify for {app} {version} on {} with any trusted key",
                identity.platform
            )));
        }
        Ok(())
    }

    /// Step 4: recorded as installing first, so a crash after the rename is
    /// completed at the next start and one before it is dropped; then
    /// unpacked into place. Returns the bundle's directory.
    async fn stage(
        &self,
        request: &InstallRequest,
        verified: &Verified,
        record: AppRecord,
    ) -> Result<PathBuf, InstallError> {
        let entry = VersionRecord {
            state: VersionState::Installing,
            sha256: verified.sha256.clone(),
            archive_size: verified.size,
            disk_size: 0,
            source: match &request.source {
                Source::Url(url) | Source::Registry(url) => url.clone(),
                Source::Service => "service".into(),
                Source::File(_) => "developer push".into(),
            },
            installed_at: now(),
            metadata: BTreeMap::new(),
            package: verified.package.as_ref().map(|p| p.record.clone()),
        };
        let staging = Staging {
            app: request.app.clone(),
            version: request.version.clone(),
            archive: verified.archive.clone(),
            staged: match &verified.package {
                Some(package) => Staged::Package(package.content),
                None => Staged::Bundle,
            },
            options: ReadOptions {
                max_bytes: self.config.quota.bytes(),
                ..ReadOptions::default()
            },
            box_abi: self.box_abi,
        };
        self.blocking(move |store| staging.run(store, record, entry)).await
    }

    /// Step 5: installed and current; the version it replaces goes, unless
    /// it is locked, running or what other packages are layered on.
    async fn commit(&self, request: &InstallRequest, bundle_dir: &Path) -> Result<(), InstallError> {
        let (app, version) = (request.app.clone(), request.version.clone());
        let running = self.is_running(&app).await;
        let bundle_dir = bundle_dir.to_path_buf();
        self.blocking(move |store| -> Result<(), StoreError> {
            let data_dir = store.data_dir(&app);
            std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
            let mut record = store.app(&app).unwrap_or_default();
            let previous = record.current.replace(version.clone());
            if let Some(entry) = record.versions.get_mut(&version) {
                entry.state = VersionState::Installed;
                entry.disk_size = disk_usage(&bundle_dir);
            }
            store.save_app(&record)?;
            if let Some(previous) = previous.filter(|p| *p != version)
                && store.locks_of(&app, &previous).is_empty()
                && store.dependants(&app, &previous).is_empty()
                && !running
            {
                super::versions::remove_version(store, &app, &previous)?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}
