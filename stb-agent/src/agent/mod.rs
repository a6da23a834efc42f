//! The agent's work, one file per family of operations:
//!
//! - [`operations`]: long operations with handles, progress, cancel and
//!   events;
//! - [`install`]: resolve → fetch → verify → stage → commit, resumed after
//!   a restart;
//! - [`versions`]: uninstall, locks, metadata, storage;
//! - [`launch`]: starting and stopping through [`Containers`] (Dobby), and
//!   developer pushes;
//! - [`packages`]: RALF packages' instances (mounted through
//!   [`crate::ralf::host::Mounter`]), the GPU layer, package info.
//!
//! Errors ([`error`]) are the agent's own; the D-Bus API and the developer
//! endpoint turn them into their replies. Filesystem work (fsync, unpack,
//! hashing, tree removal) runs on the blocking pool ([`Agent::blocking`]),
//! never on the threads that serve D-Bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, broadcast};

use crate::config::AgentConfig;
use crate::download::Http;
use crate::ralf::host::Mounter;
use crate::store::{Room, Store};

mod containers;
pub mod error;
mod install;
mod launch;
mod operations;
mod packages;
mod versions;

#[cfg(test)]
mod tests;

pub use containers::{BoxFuture, Containers};
pub use error::{
    ContainerError, ErrorKind, HandleError, InstallError, InstanceSetupError, InvalidParams, LaunchError,
    OperationError, VersionError,
};
pub use install::{InstallRequest, Source};
pub use operations::{Operation, OperationResult, Status};
pub use packages::PackageInfo;
pub(crate) use packages::gpu_layer_from;
pub use versions::InstalledVersion;

/// What the agent tells its clients (as D-Bus signals).
#[derive(Debug, Clone)]
pub enum Event {
    Status {
        handle: String,
        operation: String,
        app: String,
        version: String,
        status: Status,
        /// What it did, or why it failed.
        result: Result<String, Arc<OperationError>>,
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

pub struct Agent {
    pub config: AgentConfig,
    pub store: Arc<Store>,
    pub http: Http,
    containers: Arc<dyn Containers>,
    mounter: Arc<dyn Mounter>,
    operations: Mutex<operations::Registry>,
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    slots: Arc<Semaphore>,
    events: broadcast::Sender<Event>,
    trusted_keys: Vec<Vec<u8>>,
    /// What bundles must be built for: the configured `arch`, else the ABI
    /// of the box's programs (under `probe_root`), else the agent's own.
    box_abi: Option<bundlegen_protocol::probe::Abi>,
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
pub fn check_version(version: &str) -> Result<(), InvalidParams> {
    match bundlegen_protocol::config::app::version_problem(version) {
        None => Ok(()),
        Some(reason) => Err(InvalidParams(format!("version {version:?}: {reason}"))),
    }
}

/// App ids are Dobby container ids (and directory names).
pub fn check_app(app: &str) -> Result<(), InvalidParams> {
    match bundlegen_protocol::config::app::container_id_problem(app) {
        None => Ok(()),
        Some(reason) => Err(InvalidParams(format!("app id {app:?}: {reason}"))),
    }
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        store: Arc<Store>,
        http: Http,
        containers: Arc<dyn Containers>,
        mounter: Arc<dyn Mounter>,
    ) -> Arc<Agent> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Agent {
            slots: Arc::new(Semaphore::new(config.max_concurrent_operations)),
            trusted_keys: config.trusted_keys(),
            box_abi: config
                .arch
                .as_deref()
                .and_then(|arch| bundlegen_protocol::probe::Abi::for_arch(arch, None))
                .or_else(|| platform_probe::system::box_abi(&config.probe_root))
                .or_else(bundlegen_protocol::probe::Abi::of_this_program),
            config,
            store,
            http,
            containers,
            mounter,
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

    /// Serialises work on one app (operations, metadata changes).
    fn app_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.app_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(app.to_string()).or_default().clone()
    }

    /// Whether an archive fits, as of now.
    pub fn room(&self) -> Room {
        self.store
            .room(self.config.quota.bytes(), u64::from(self.config.unpack_factor))
    }

    /// Runs filesystem work on the blocking pool, with the store.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&Store) -> T + Send + 'static) -> T {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(value) => value,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
