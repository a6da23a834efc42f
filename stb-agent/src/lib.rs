//! The on-box agent: installs bundles atomically and launches them through
//! Dobby, on D-Bus (`org.rdk.dac.BundleAgent`); probes the box and keeps the
//! generator service informed; accepts developer pushes in developer mode.
//!
//! - [`config`]: the configuration file.
//! - [`store`]: what is installed (files, atomic, reconciled at start).
//! - [`download`]: resumable downloads.
//! - [`agent`]: operations (install, uninstall), locks, metadata, launching;
//!   its errors, which the D-Bus API and the push endpoint turn into replies.
//! - [`dbus`]: the D-Bus API; [`dobby`]: the Dobby client.
//! - [`ralf`]: RALF packages' instances: layers, mounts, config.json.
//! - [`probe`], [`devpush`], [`systemd`].

use std::sync::Arc;

pub mod agent;
pub mod config;
pub mod dbus;
pub mod devpush;
pub mod dobby;
pub mod download;
pub mod probe;
pub mod ralf;
pub mod store;
pub mod systemd;

use agent::{Agent, Containers};
use config::AgentConfig;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration that cannot work (exit code 78: no restart loop).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Failed(String),
}

/// A running agent: its connection and core (what tests talk to).
pub struct Running {
    pub agent: Arc<Agent>,
    pub connection: zbus::Connection,
    pub reprobe: Arc<tokio::sync::Notify>,
}

/// Starts the agent: recovers the store, serves the D-Bus API, owns the bus
/// name, resumes interrupted installs, and starts the probe and (in
/// developer mode) the push endpoint. Ready when it returns.
pub async fn start(config: AgentConfig) -> Result<Running, RunError> {
    let failed = |e: String| RunError::Failed(e);
    for weak in config.weak_settings() {
        tracing::warn!("{weak}");
    }
    let (store, recovery) = store::Store::open(&config.storage_root).map_err(|e| failed(e.to_string()))?;
    for (what, list) in [
        ("completed", &recovery.completed),
        ("dropped (never unpacked)", &recovery.dropped),
        ("removed (unknown)", &recovery.orphans),
    ] {
        if !list.is_empty() {
            tracing::warn!("recovery: {what}: {}", list.join(", "));
        }
    }
    let token = match &config.token_file {
        Some(file) => Some(bundlegen_protocol::http::read_token(file).map_err(|e| RunError::Config(e.to_string()))?),
        None => None,
    };
    let http =
        download::Http::new(config.server.clone(), token, config.ca_file.as_deref()).map_err(RunError::Config)?;
    let builder = match &config.dbus_address {
        Some(address) => zbus::connection::Builder::address(address.as_str()),
        None => zbus::connection::Builder::system(),
    };
    // Dobby's StartFromBundle answers after crun and every hook ran.
    let connection = builder
        .method_timeout(std::time::Duration::from_secs(30))
        .build()
        .await
        .map_err(|e| failed(format!("D-Bus: {e}")))?;
    let dobby = Arc::new(
        dobby::Dobby::new(&connection)
            .await
            .map_err(|e| failed(e.to_string()))?,
    );
    let containers: Arc<dyn Containers> = dobby.clone();
    let mounter = Arc::new(ralf::host::KernelMounter {
        veritysetup: config.packages.veritysetup.clone(),
    });
    let agent = Agent::new(config, Arc::new(store), http, containers, mounter);
    let emitter = agent.clone();
    if let Err(e) = dobby.forward_signals(move |event| emitter.emit(event)).await {
        tracing::warn!("Dobby's signals: {e}");
    }
    // Objects first, then the name: a client that sees the name finds them.
    connection
        .object_server()
        .at(dbus::OBJECT_PATH, dbus::BundleAgent { agent: agent.clone() })
        .await
        .map_err(|e| failed(e.to_string()))?;
    dbus::forward_events(&connection, &agent)
        .await
        .map_err(|e| failed(e.to_string()))?;
    // Instances whose containers stopped while the agent was away go
    // before clients can see the agent.
    agent.watch_instances();
    let stale = agent.reconcile_instances().await;
    if !stale.is_empty() {
        tracing::warn!("recovery: instances taken down (not running): {}", stale.join(", "));
    }
    connection
        .request_name(dbus::BUS_NAME)
        .await
        .map_err(|e| failed(format!("owning {}: {e}", dbus::BUS_NAME)))?;
    let resumed = agent.resume_interrupted().await;
    if !resumed.is_empty() {
        tracing::info!("resumed {} interrupted installs", resumed.len());
    }
    let reprobe = Arc::new(tokio::sync::Notify::new());
    if agent.config.probe {
        probe::spawn(agent.clone(), reprobe.clone());
    }
    if agent.config.developer.enabled {
        let pusher = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = devpush::serve(pusher).await {
                tracing::error!("developer push: {e}");
            }
        });
    }
    Ok(Running {
        agent,
        connection,
        reprobe,
    })
}

/// The daemon: [`start`], tell systemd, then run until SIGTERM or SIGINT
/// (SIGHUP probes again).
pub async fn run(config: AgentConfig) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = start(config).await?;
    systemd::ready(&format!(
        "serving {} with {} apps installed",
        dbus::BUS_NAME,
        running.agent.store.apps().len()
    ));
    systemd::spawn_watchdog();
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| RunError::Failed(e.to_string()))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| RunError::Failed(e.to_string()))?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hangup.recv() => running.reprobe.notify_one(),
        }
    }
    systemd::stopping();
    Ok(())
}
