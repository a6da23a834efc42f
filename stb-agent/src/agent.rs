//! The agent's work: operations (install, uninstall) with handles, progress
//! and events; locks; metadata; storage; launching through Dobby.
//!
//! Operations on different apps run at once (up to the configured number);
//! two on the same app wait for each other. An install goes: resolve the
//! source (a URL, or the generator service's lookup) → download (resumable)
//! → verify sha256 and, with trusted keys, the signature → unpack into
//! staging and rename into `<root>/apps/<app>/<version>/` → switch the app's
//! current version → remove the old one unless it is locked or running.
//! An interrupted install (a reboot) is resumed at the next start.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bundlegen_protocol::archive::{ReadOptions, unpack_bundle};
use bundlegen_protocol::signature::{SignedIdentity, verify};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::config::AgentConfig;
use crate::download::{DownloadError, Http, discard};
use crate::error::AgentError;
use crate::store::{AppRecord, LockRecord, Store, VersionRecord, VersionState, disk_usage, now, remove_tree};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What runs containers: Dobby on a box, a recording fake in unit tests.
pub trait Containers: Send + Sync {
    /// Starts the bundle at `bundle` (absolute) as container `id`; returns its descriptor.
    fn start<'a>(&'a self, id: &'a str, bundle: &'a Path) -> BoxFuture<'a, Result<i32, AgentError>>;
    /// Asks the container to stop; false if Dobby does not know it.
    fn stop<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<bool, AgentError>>;
    /// Running containers: (descriptor, id).
    fn running(&self) -> BoxFuture<'_, Result<Vec<(i32, String)>, AgentError>>;
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Progress,
    Success,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "Queued",
            Status::Progress => "Progress",
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::Cancelled => "Cancelled",
        }
    }
}

/// What the agent tells its clients (as D-Bus signals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Status {
        handle: String,
        operation: String,
        app: String,
        version: String,
        status: Status,
        details: String,
    },
    Progress {
        handle: String,
        percent: u32,
        stage: String,
    },
    Started {
        app: String,
        descriptor: i32,
    },
    Stopped {
        app: String,
        status: i32,
    },
}

/// An operation's state, for GetProgress.
#[derive(Debug, Clone)]
pub struct Operation {
    pub kind: &'static str,
    pub app: String,
    pub version: String,
    pub status: Status,
    pub percent: u32,
    pub stage: String,
    pub error: Option<String>,
    cancel: watch::Sender<bool>,
}

/// How an operation ended, for a caller that waits for it.
pub type Outcome = tokio::sync::oneshot::Receiver<Result<String, AgentError>>;

/// Operations kept after they end, for GetProgress.
const FINISHED_KEPT: usize = 200;

pub struct Agent {
    pub config: AgentConfig,
    pub store: Arc<Store>,
    pub http: Http,
    containers: Arc<dyn Containers>,
    operations: Mutex<BTreeMap<String, Operation>>,
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    slots: Arc<Semaphore>,
    events: broadcast::Sender<Event>,
    trusted_keys: Vec<Vec<u8>>,
}

fn random_handle(prefix: &str) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator");
    format!("{prefix}-{}", bundlegen_protocol::digest::to_hex(&bytes))
}

/// Versions are directory names: 1 to 64 of `[A-Za-z0-9._+-]`, not starting with '.'.
pub fn check_version(version: &str) -> Result<(), AgentError> {
    let valid = (1..=64).contains(&version.len())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && !version.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(AgentError::WrongParams(format!(
            "version {version:?}: 1-64 of A-Z a-z 0-9 . _ + -, not starting with '.'"
        )))
    }
}

/// App ids are Dobby container ids (and directory names).
pub fn check_app(app: &str) -> Result<(), AgentError> {
    match bundlegen_protocol::config::app::container_id_problem(app) {
        None => Ok(()),
        Some(reason) => Err(AgentError::WrongParams(format!("app id {app:?}: {reason}"))),
    }
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

fn sha256_file(path: &Path) -> Result<String, AgentError> {
    let mut file = std::fs::File::open(path).map_err(|e| AgentError::Storage(format!("{}: {e}", path.display())))?;
    let mut hasher = bundlegen_protocol::digest::HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hasher).map_err(|e| AgentError::Storage(e.to_string()))?;
    Ok(hasher.finish().1.hex())
}

/// What the service says about a bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceBundle {
    download_url: String,
    sha256: String,
    signature: String,
    format: String,
}

impl Agent {
    pub fn new(config: AgentConfig, store: Arc<Store>, http: Http, containers: Arc<dyn Containers>) -> Arc<Agent> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Agent {
            slots: Arc::new(Semaphore::new(config.max_concurrent_operations)),
            trusted_keys: config.trusted_keys(),
            config,
            store,
            http,
            containers,
            operations: Mutex::default(),
            app_locks: Mutex::default(),
            events,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn app_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.app_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(app.to_string()).or_default().clone()
    }

    fn update(&self, handle: &str, change: impl FnOnce(&mut Operation)) -> Option<Operation> {
        let mut operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let operation = operations.get_mut(handle)?;
        change(operation);
        Some(operation.clone())
    }

    fn progress(&self, handle: &str, percent: u32, stage: &str) {
        let mut changed = false;
        self.update(handle, |op| {
            changed = op.percent != percent || op.stage != stage;
            op.percent = percent;
            op.stage = stage.to_string();
            op.status = Status::Progress;
        });
        if changed {
            self.emit(Event::Progress {
                handle: handle.to_string(),
                percent,
                stage: stage.to_string(),
            });
        }
    }

    fn finish(&self, handle: &str, result: &Result<String, AgentError>) {
        let (status, details) = match result {
            Ok(details) => (Status::Success, details.clone()),
            Err(AgentError::Cancelled(why)) => (Status::Cancelled, why.clone()),
            Err(e) => (Status::Failed, format!("{}: {}", e.kind(), e.message())),
        };
        let Some(op) = self.update(handle, |op| {
            op.status = status;
            if status == Status::Success {
                op.percent = 100;
            }
            op.error = result.as_ref().err().map(|e| e.to_string());
        }) else {
            return;
        };
        self.emit(Event::Status {
            handle: handle.to_string(),
            operation: op.kind.to_string(),
            app: op.app,
            version: op.version,
            status,
            details,
        });
        let mut operations = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let finished: Vec<String> = operations
            .iter()
            .filter(|(_, op)| matches!(op.status, Status::Success | Status::Failed | Status::Cancelled))
            .map(|(h, _)| h.clone())
            .collect();
        for old in finished.iter().take(finished.len().saturating_sub(FINISHED_KEPT)) {
            operations.remove(old);
        }
    }

    /// Starts an operation: registers it and runs `work` in the background;
    /// its outcome also goes to the returned receiver (if kept).
    fn start_operation<F>(self: &Arc<Self>, kind: &'static str, app: &str, version: &str, work: F) -> (String, Outcome)
    where
        F: FnOnce(Arc<Agent>, String, watch::Receiver<bool>) -> BoxFuture<'static, Result<String, AgentError>>
            + Send
            + 'static,
    {
        let handle = random_handle("op");
        let (cancel, cancelled) = watch::channel(false);
        self.operations.lock().unwrap_or_else(|e| e.into_inner()).insert(
            handle.clone(),
            Operation {
                kind,
                app: app.to_string(),
                version: version.to_string(),
                status: Status::Queued,
                percent: 0,
                stage: "queued".into(),
                error: None,
                cancel,
            },
        );
        self.emit(Event::Status {
            handle: handle.clone(),
            operation: kind.to_string(),
            app: app.to_string(),
            version: version.to_string(),
            status: Status::Queued,
            details: String::new(),
        });
        let (agent, app, id) = (self.clone(), app.to_string(), handle.clone());
        let (outcome, receiver) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let app_lock = agent.app_lock(&app);
            let _same_app = app_lock.lock().await;
            let _slot = agent.slots.clone().acquire_owned().await.expect("never closed");
            let result = work(agent.clone(), id.clone(), cancelled).await;
            agent.finish(&id, &result);
            let _ = outcome.send(result);
        });
        (handle, receiver)
    }

    pub fn operation(&self, handle: &str) -> Result<Operation, AgentError> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
            .cloned()
            .ok_or_else(|| AgentError::WrongHandle(format!("no operation {handle}")))
    }

    /// Cancels an install still downloading or verifying.
    pub fn cancel(&self, handle: &str) -> Result<(), AgentError> {
        let operation = self.operation(handle)?;
        if matches!(operation.status, Status::Success | Status::Failed | Status::Cancelled) {
            return Err(AgentError::WrongParams(format!("operation {handle} has ended")));
        }
        let _ = operation.cancel.send(true);
        Ok(())
    }

    /// Queues an install; returns its handle.
    pub fn install(self: &Arc<Self>, request: InstallRequest) -> Result<String, AgentError> {
        self.start_install(request).map(|(handle, _)| handle)
    }

    /// Queues an install; returns its handle and outcome.
    pub fn start_install(self: &Arc<Self>, request: InstallRequest) -> Result<(String, Outcome), AgentError> {
        check_app(&request.app)?;
        check_version(&request.version)?;
        if let Some(sha256) = &request.sha256
            && (sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(AgentError::WrongParams(format!(
                "sha256 {sha256:?} is not 64 hex digits"
            )));
        }
        match &request.source {
            Source::Url(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                return Err(AgentError::WrongParams(format!(
                    "source {url:?}: an http(s) URL, or \"service\""
                )));
            }
            Source::Service if self.http.server().is_none() || self.config.platform.is_none() => {
                return Err(AgentError::WrongParams("no service or platform configured".into()));
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
            return Err(AgentError::AlreadyInstalled(format!(
                "{} {} is installed",
                request.app, request.version
            )));
        }
        // Kept until the install ends, so a restart resumes it.
        if !matches!(request.source, Source::File(_)) {
            let dir = self.store.download_dir(&request.app, &request.version);
            std::fs::create_dir_all(&dir).map_err(|e| AgentError::Storage(format!("{}: {e}", dir.display())))?;
            bundlegen_protocol::fsutil::write_file_atomic(
                &dir.join("request.json"),
                &serde_json::to_vec(&request).expect("requests serialise"),
                0o644,
            )
            .map_err(|e| AgentError::Storage(e.to_string()))?;
        }
        let (app, version) = (request.app.clone(), request.version.clone());
        Ok(
            self.start_operation("Installing", &app, &version, move |agent, handle, cancel| {
                Box::pin(async move { agent.run_install(&handle, request, cancel).await })
            }),
        )
    }

    /// Installs that a restart interrupted, queued again.
    pub fn resume_interrupted(self: &Arc<Self>) -> Vec<String> {
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
                Some(request) => match self.install(request) {
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
    ) -> Result<String, AgentError> {
        let download_dir = self.store.download_dir(&request.app, &request.version);
        let result = self.install_steps(handle, &request, &cancel).await;
        match &result {
            // What was downloaded stays, so installing again resumes it; but
            // a failed install is not retried by itself after a restart.
            Err(AgentError::Download(_)) => {
                let _ = std::fs::remove_file(download_dir.join("request.json"));
            }
            _ => discard(&download_dir),
        }
        result
    }

    async fn install_steps(
        self: &Arc<Self>,
        handle: &str,
        request: &InstallRequest,
        cancel: &watch::Receiver<bool>,
    ) -> Result<String, AgentError> {
        let (app, version) = (request.app.as_str(), request.version.as_str());
        let record = self.store.app(app).unwrap_or(AppRecord {
            app: app.to_string(),
            current: None,
            versions: BTreeMap::new(),
        });
        if record.versions.contains_key(version) && !request.reinstall {
            return Err(AgentError::AlreadyInstalled(format!("{app} {version} is installed")));
        }
        if let Some(current) = record.current.as_deref().filter(|c| *c != version)
            && !self.store.locks_of(app, current).is_empty()
        {
            return Err(AgentError::AppLocked(format!(
                "{app} {current} is locked: no upgrade until it is unlocked"
            )));
        }
        if record.versions.contains_key(version) && !self.store.locks_of(app, version).is_empty() {
            return Err(AgentError::AppLocked(format!("{app} {version} is locked")));
        }

        // Where the archive comes from, and what it must be.
        self.progress(handle, 0, "resolving");
        let (url, sha256, mut signature, mut format) = match &request.source {
            Source::Url(url) => (
                Some(url.clone()),
                request.sha256.clone(),
                request.signature.clone(),
                request.format.clone(),
            ),
            Source::Service => {
                let bundle = self.lookup(app, version, cancel).await?;
                if let Some(expected) = &request.sha256
                    && !expected.eq_ignore_ascii_case(&bundle.sha256)
                {
                    return Err(AgentError::Integrity(format!(
                        "the service's bundle has sha256 {}, the caller expected {expected}",
                        bundle.sha256
                    )));
                }
                let base = self.http.server().unwrap_or_default().to_string();
                (
                    Some(format!("{base}{}", bundle.download_url)),
                    Some(bundle.sha256),
                    Some(bundle.signature),
                    Some(bundle.format),
                )
            }
            Source::File(_) => (
                None,
                request.sha256.clone(),
                request.signature.clone(),
                request.format.clone(),
            ),
        };
        let archive = match (&request.source, url) {
            (Source::File(path), _) => path.clone(),
            (_, Some(url)) => self.fetch(handle, app, version, &url, cancel).await?,
            (_, None) => unreachable!("URL and service sources have a URL"),
        };
        let archive_size = std::fs::metadata(&archive).map_or(0, |m| m.len());

        self.progress(handle, 80, "verifying");
        let actual = tokio::task::spawn_blocking({
            let archive = archive.clone();
            move || sha256_file(&archive)
        })
        .await
        .map_err(|e| AgentError::Storage(e.to_string()))??;
        if let Some(expected) = &sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(AgentError::Integrity(format!(
                "the archive's sha256 is {actual}, expected {expected}"
            )));
        }
        if *cancel.borrow() {
            return Err(AgentError::Cancelled("cancelled before unpacking".into()));
        }
        format = format.or_else(|| sniff_format(&archive).map(str::to_string));
        // Developer pushes are trusted by developer mode itself.
        if !self.trusted_keys.is_empty() && !matches!(request.source, Source::File(_)) {
            let signature = signature.take().ok_or_else(|| {
                AgentError::Signature("trusted keys are configured and the bundle has no signature".into())
            })?;
            let identity = SignedIdentity {
                sha256: &actual,
                app_id: app,
                app_version: version,
                platform: self.config.platform.as_deref().unwrap_or(""),
                format: format.as_deref().unwrap_or(""),
            };
            if !self.trusted_keys.iter().any(|key| verify(key, &identity, &signature)) {
                return Err(AgentError::Signature(format!(
                    "the signature does not verify for {app} {version} on {} with any trusted key",
                    identity.platform
                )));
            }
        }

        // Unpack: recorded as installing first, so a crash after the rename
        // is completed at the next start, and one before it is dropped.
        self.progress(handle, 85, "unpacking");
        let bundle_dir = self.store.bundle_dir(app, version);
        let replaced = if bundle_dir.exists() {
            // A reinstall: the old copy goes aside until the new one is in place.
            let aside = bundle_dir.with_file_name(format!(".{version}.old-{}", random_handle("r")));
            std::fs::rename(&bundle_dir, &aside).map_err(|e| AgentError::Storage(e.to_string()))?;
            Some(aside)
        } else {
            None
        };
        let before = self.store.app(app);
        let mut record = before.clone().unwrap_or(record);
        record.versions.insert(
            version.to_string(),
            VersionRecord {
                state: VersionState::Installing,
                sha256: actual.clone(),
                archive_size,
                disk_size: 0,
                source: match &request.source {
                    Source::Url(url) => url.clone(),
                    Source::Service => "service".into(),
                    Source::File(_) => "developer push".into(),
                },
                installed_at: now(),
                metadata: BTreeMap::new(),
            },
        );
        self.store.save_app(&record)?;
        let options = ReadOptions {
            max_bytes: self.config.quota.bytes(),
            ..ReadOptions::default()
        };
        let unpacked = tokio::task::spawn_blocking({
            let (archive, bundle_dir) = (archive.clone(), bundle_dir.clone());
            move || -> Result<(), AgentError> {
                std::fs::create_dir_all(bundle_dir.parent().expect("apps/<app>"))
                    .map_err(|e| AgentError::Storage(e.to_string()))?;
                let file = std::fs::File::open(&archive).map_err(|e| AgentError::Storage(e.to_string()))?;
                let report = unpack_bundle(std::io::BufReader::new(file), &bundle_dir, &options)
                    .map_err(|e| AgentError::BadArchive(bundlegen_protocol::error_chain(&e)))?;
                if !bundle_dir.join("config.json").is_file() {
                    remove_tree(&bundle_dir)?;
                    return Err(AgentError::BadArchive(
                        "the archive has no config.json at its root".into(),
                    ));
                }
                // Dobby writes into the bundle and needs to enter it.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&bundle_dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| AgentError::Storage(e.to_string()))?;
                if !report.skipped_nodes.is_empty() || !report.cleared_setuid.is_empty() {
                    tracing::warn!(
                        "{}: {} device nodes skipped, {} setuid bits cleared",
                        bundle_dir.display(),
                        report.skipped_nodes.len(),
                        report.cleared_setuid.len()
                    );
                }
                Ok(())
            }
        })
        .await
        .map_err(|e| AgentError::Storage(e.to_string()))?;
        if let Err(error) = unpacked {
            // Back to how it was: the old copy (on a reinstall) and its record.
            if let Some(aside) = &replaced {
                let _ = std::fs::rename(aside, &bundle_dir);
            }
            let mut restored = before.unwrap_or(record);
            if replaced.is_none() {
                restored.versions.remove(version);
            }
            self.store.save_app(&restored)?;
            if restored.versions.is_empty() {
                self.remove_app_dir_if_empty(app);
            }
            return Err(error);
        }
        if let Some(aside) = replaced {
            remove_tree(&aside)?;
        }

        // Commit: installed, current, and the old version cleaned up.
        self.progress(handle, 98, "committing");
        let data_dir = self.store.data_dir(app);
        std::fs::create_dir_all(&data_dir).map_err(|e| AgentError::Storage(e.to_string()))?;
        let mut record = self.store.app(app).unwrap_or(record);
        let previous = record.current.replace(version.to_string());
        if let Some(entry) = record.versions.get_mut(version) {
            entry.state = VersionState::Installed;
            entry.disk_size = disk_usage(&bundle_dir);
        }
        self.store.save_app(&record)?;
        if let Some(previous) = previous.filter(|p| p != version) {
            let running = self.is_running(app).await;
            if self.store.locks_of(app, &previous).is_empty() && !running {
                self.remove_version(app, &previous)?;
            }
        }
        Ok(format!("installed at {}", bundle_dir.display()))
    }

    /// Downloads with progress 0-80 %, checking space and quota first.
    async fn fetch(
        self: &Arc<Self>,
        handle: &str,
        app: &str,
        version: &str,
        url: &str,
        cancel: &watch::Receiver<bool>,
    ) -> Result<PathBuf, AgentError> {
        let dir = self.store.download_dir(app, version);
        let factor = u64::from(self.config.unpack_factor);
        let quota = self.config.quota.bytes();
        let used = self.store.used();
        let root = self.store.root().to_path_buf();
        let space = move |remaining: u64| -> Result<(), String> {
            let free = free_bytes(&root);
            let needed = remaining.saturating_add(remaining.saturating_mul(factor));
            if free < needed {
                return Err(format!("{free} bytes free, {needed} needed (download and unpack)"));
            }
            if used.saturating_add(remaining.saturating_mul(factor)) > quota {
                return Err(format!("the quota of {quota} bytes would be exceeded ({used} used)"));
            }
            Ok(())
        };
        let progress = |done: u64, total: Option<u64>| {
            if let Some(total) = total.filter(|t| *t > 0) {
                self.progress(handle, (done.min(total) * 80 / total) as u32, "downloading");
            }
        };
        self.http
            .download(url, &dir, self.config.download_attempts, &space, &progress, cancel)
            .await
            .map_err(|e| match e {
                DownloadError::Cancelled => AgentError::Cancelled("cancelled while downloading".into()),
                DownloadError::NoSpace(why) if why.contains("quota") => AgentError::QuotaExceeded(why),
                DownloadError::NoSpace(why) => AgentError::NoSpace(why),
                other => AgentError::Download(other.to_string()),
            })
    }

    /// Asks the service for the app version's bundle for this platform,
    /// waiting while it is generated.
    async fn lookup(
        &self,
        app: &str,
        version: &str,
        cancel: &watch::Receiver<bool>,
    ) -> Result<ServiceBundle, AgentError> {
        let server = self.http.server().unwrap_or_default().to_string();
        let platform = self.config.platform.clone().unwrap_or_default();
        let service = |e: String| AgentError::Service(e);
        for _ in 0..120 {
            if *cancel.borrow() {
                return Err(AgentError::Cancelled(
                    "cancelled while the service generated the bundle".into(),
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
                .map_err(|e| service(format!("{url}: {}", bundlegen_protocol::error_chain(&e))))?;
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

    /// Removes a version's bundle and record (its data stays).
    fn remove_version(&self, app: &str, version: &str) -> Result<(), AgentError> {
        let dir = self.store.bundle_dir(app, version);
        // Out of the way first, so a crash leaves either the bundle or nothing.
        let aside = dir.with_file_name(format!(".{version}.removing-{}", random_handle("r")));
        if dir.exists() {
            std::fs::rename(&dir, &aside).map_err(|e| AgentError::Storage(e.to_string()))?;
        }
        let mut record = self
            .store
            .app(app)
            .ok_or_else(|| AgentError::NotInstalled(app.to_string()))?;
        record.versions.remove(version);
        if record.current.as_deref() == Some(version) {
            record.current = record.versions.keys().next_back().cloned();
        }
        self.store.save_app(&record)?;
        if aside.exists() {
            remove_tree(&aside)?;
        }
        if record.versions.is_empty() {
            self.remove_app_dir_if_empty(app);
        }
        Ok(())
    }

    /// `apps/<app>/` once it has no version (fails harmlessly if it has).
    fn remove_app_dir_if_empty(&self, app: &str) {
        let _ = std::fs::remove_dir(self.store.app_dir(app));
    }

    async fn is_running(&self, app: &str) -> bool {
        self.containers
            .running()
            .await
            .is_ok_and(|running| running.iter().any(|(_, id)| id == app))
    }

    /// Queues an uninstall: `full` also deletes the app's data once no
    /// version is left; `upgrade` keeps it.
    pub fn uninstall(self: &Arc<Self>, app: &str, version: &str, mode: &str) -> Result<String, AgentError> {
        check_app(app)?;
        check_version(version)?;
        let full = match mode {
            "full" | "" => true,
            "upgrade" => false,
            other => return Err(AgentError::WrongParams(format!("mode {other:?}: full or upgrade"))),
        };
        // Refused at once when it is clear already (checked again when it runs).
        if !self.store.app(app).is_some_and(|r| r.versions.contains_key(version)) {
            return Err(AgentError::NotInstalled(format!("{app} {version} is not installed")));
        }
        if !self.store.locks_of(app, version).is_empty() {
            return Err(AgentError::AppLocked(format!("{app} {version} is locked")));
        }
        let (app, version) = (app.to_string(), version.to_string());
        let (handle, _) = self.start_operation(
            "Uninstalling",
            &app.clone(),
            &version.clone(),
            move |agent, handle, _cancel| {
                Box::pin(async move {
                    let record = agent
                        .store
                        .app(&app)
                        .filter(|r| r.versions.contains_key(&version))
                        .ok_or_else(|| AgentError::NotInstalled(format!("{app} {version} is not installed")))?;
                    if !agent.store.locks_of(&app, &version).is_empty() {
                        return Err(AgentError::AppLocked(format!("{app} {version} is locked")));
                    }
                    if record.current.as_deref() == Some(&version) && agent.is_running(&app).await {
                        return Err(AgentError::AppRunning(format!("{app} is running: stop it first")));
                    }
                    agent.progress(&handle, 50, "removing");
                    agent.remove_version(&app, &version)?;
                    if full && agent.store.app(&app).is_none() {
                        let data = agent.store.data_dir(&app);
                        if data.exists() {
                            remove_tree(&data)?;
                        }
                    }
                    Ok(format!("{app} {version} removed"))
                })
            },
        );
        Ok(handle)
    }

    fn installed(&self, app: &str, version: &str) -> Result<VersionRecord, AgentError> {
        self.store
            .app(app)
            .and_then(|r| r.versions.get(version).cloned())
            .filter(|v| v.state == VersionState::Installed)
            .ok_or_else(|| AgentError::NotInstalled(format!("{app} {version} is not installed")))
    }

    pub fn metadata(&self, app: &str, version: &str) -> Result<BTreeMap<String, String>, AgentError> {
        Ok(self.installed(app, version)?.metadata)
    }

    /// Sets (`Some`) or clears (`None`; an empty key clears all) a metadata key.
    pub async fn set_metadata(
        &self,
        app: &str,
        version: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), AgentError> {
        let app_lock = self.app_lock(app);
        let _same_app = app_lock.lock().await;
        self.installed(app, version)?;
        if value.is_some() && key.is_empty() {
            return Err(AgentError::WrongParams("an empty metadata key".into()));
        }
        let mut record = self
            .store
            .app(app)
            .ok_or_else(|| AgentError::NotInstalled(app.into()))?;
        let entry = record
            .versions
            .get_mut(version)
            .ok_or_else(|| AgentError::NotInstalled(app.into()))?;
        match (key, value) {
            (key, Some(value)) => {
                entry.metadata.insert(key.to_string(), value.to_string());
            }
            ("", None) => entry.metadata.clear(),
            (key, None) => {
                entry.metadata.remove(key);
            }
        }
        self.store.save_app(&record)?;
        Ok(())
    }

    /// (used, quota, free) bytes.
    pub fn storage(&self) -> (u64, u64, u64) {
        (
            self.store.used(),
            self.config.quota.bytes(),
            free_bytes(self.store.root()),
        )
    }

    pub fn lock(&self, app: &str, version: &str, reason: &str, owner: &str) -> Result<String, AgentError> {
        self.installed(app, version)?;
        let handle = random_handle("lock");
        self.store.add_lock(LockRecord {
            handle: handle.clone(),
            app: app.to_string(),
            version: version.to_string(),
            reason: reason.to_string(),
            owner: owner.to_string(),
        })?;
        Ok(handle)
    }

    pub fn unlock(&self, handle: &str) -> Result<(), AgentError> {
        if self.store.remove_lock(handle)? {
            Ok(())
        } else {
            Err(AgentError::WrongHandle(format!("no lock {handle}")))
        }
    }

    pub fn lock_info(&self, app: &str, version: &str) -> Result<Vec<LockRecord>, AgentError> {
        self.installed(app, version)?;
        Ok(self.store.locks_of(app, version))
    }

    /// Starts an app's version (default: its current one) through Dobby.
    pub async fn launch(&self, app: &str, version: &str) -> Result<i32, AgentError> {
        check_app(app)?;
        let record = self
            .store
            .app(app)
            .ok_or_else(|| AgentError::NotInstalled(format!("{app} is not installed")))?;
        let version = if version.is_empty() {
            record
                .current
                .clone()
                .ok_or_else(|| AgentError::NotInstalled(app.into()))?
        } else {
            version.to_string()
        };
        self.installed(app, &version)?;
        if self.is_running(app).await {
            return Err(AgentError::AppRunning(format!("{app} is running")));
        }
        let bundle = self.store.bundle_dir(app, &version);
        let bundle = std::fs::canonicalize(&bundle).map_err(|e| AgentError::Storage(e.to_string()))?;
        let descriptor = self.containers.start(app, &bundle).await?;
        if descriptor < 0 {
            return Err(AgentError::Dobby(format!(
                "Dobby refused {app} {version} (it answers -1 without a reason: see its log)"
            )));
        }
        Ok(descriptor)
    }

    pub async fn stop(&self, app: &str, force: bool) -> Result<(), AgentError> {
        if self.containers.stop(app, force).await? {
            Ok(())
        } else {
            Err(AgentError::NotRunning(format!("{app} is not running")))
        }
    }

    /// Installs a file pushed by a developer as version `dev`, waiting for
    /// the outcome; optionally launches it.
    pub async fn install_pushed(
        self: &Arc<Self>,
        app: &str,
        archive: PathBuf,
        launch: bool,
    ) -> Result<Option<i32>, AgentError> {
        if launch && self.is_running(app).await {
            self.stop(app, false).await?;
        }
        let (_, outcome) = self.start_install(InstallRequest {
            app: app.to_string(),
            version: "dev".into(),
            source: Source::File(archive),
            sha256: None,
            signature: None,
            format: None,
            reinstall: true,
        })?;
        outcome
            .await
            .map_err(|_| AgentError::Storage("the install was dropped".into()))??;
        if launch {
            // Wait for a stopped container to be gone before starting again.
            for _ in 0..50 {
                if !self.is_running(app).await {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return Ok(Some(self.launch(app, "dev").await?));
        }
        Ok(None)
    }
}

/// Free bytes for an unprivileged writer on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path).map_or(0, |s| s.blocks_available() * s.fragment_size())
}
