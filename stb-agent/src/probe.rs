//! Keeps the service's picture of this box current: probes the box at
//! start, then every interval (and on SIGHUP), and uploads the report when
//! the box's software changed since the last upload; with
//! `packages.gpu_layer = "probe"`, also remakes the GPU layer when the box
//! changed. It runs on its own and never holds up installs; failures are
//! retried with back-off.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::probe::ProbeReport;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::agent::Agent;
use crate::config::GpuLayerSource;
use crate::download::REMEDIES;
use crate::systemd;

/// Longest wait between two upload attempts.
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// What the last upload was.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Uploaded {
    /// Fingerprint of the box's software when uploaded.
    fingerprint: String,
    version: i64,
}

/// What identifies the box's software: its libraries and its system facts.
pub fn fingerprint(report: &ProbeReport) -> String {
    let system = serde_json::json!({
        "libraries": report.system.libraries_fingerprint,
        "osRelease": report.system.os_release,
        "firmware": report.system.firmware,
        "kernels": report.system.kernels,
        "devices": report.devices.iter().map(|d| (&d.path, d.major, d.minor)).collect::<Vec<_>>(),
    });
    Sha256Digest::of(system.to_string().as_bytes()).hex()
}

fn state_file(agent: &Agent) -> PathBuf {
    agent.store.root().join("state/probe.json")
}

/// What the probe read of each library (only changed files are read again).
pub fn cache_file(storage_root: &std::path::Path) -> PathBuf {
    storage_root.join("state/probe-cache.json")
}

/// Where reports go: the service's URL and the device token's file.
struct Upload {
    url: String,
    token_file: PathBuf,
}

/// Runs the probe loop until the process ends; `reprobe` wakes it early.
pub fn spawn(agent: Arc<Agent>, reprobe: Arc<Notify>) {
    let upload = match (
        agent.config.server.clone(),
        agent.config.platform.clone(),
        agent.config.token_file.clone(),
    ) {
        (Some(server), Some(platform), Some(token_file)) => Some(Upload {
            url: format!("{}/v1/platforms/{platform}/probe", server.trim_end_matches('/')),
            token_file,
        }),
        _ => None,
    };
    let gpu_layer = agent.config.packages.gpu_layer_source() == GpuLayerSource::Probe;
    if upload.is_none() && !gpu_layer {
        tracing::info!("probe: no server, platform and token configured; not uploading");
        return;
    }
    tokio::spawn(async move {
        let mut retry = Duration::from_secs(5);
        loop {
            match probe_once(&agent, upload.as_ref(), gpu_layer).await {
                Ok(outcome) => {
                    systemd::status(&outcome);
                    retry = Duration::from_secs(5);
                    let interval = Duration::from_secs(agent.config.probe_interval_seconds.max(60));
                    let _ = tokio::time::timeout(interval, reprobe.notified()).await;
                }
                Err(e) => {
                    tracing::warn!("probe: {e}; retrying in {retry:?}");
                    let _ = tokio::time::timeout(retry, reprobe.notified()).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    });
}

/// One round: probe, remake the GPU layer if asked, upload if configured.
async fn probe_once(agent: &Agent, upload: Option<&Upload>, gpu_layer: bool) -> Result<String, String> {
    let options = platform_probe::ProbeOptions {
        root: agent.config.probe_root.clone(),
        expected_devices: Vec::new(),
        programs: platform_probe::DEFAULT_PROGRAMS.iter().map(|p| p.to_string()).collect(),
        cache: Some(cache_file(agent.store.root())),
    };
    let report = tokio::task::spawn_blocking(move || platform_probe::probe(&options))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let report = Arc::new(report);
    if gpu_layer {
        let (config, report, in_use) = (agent.config.clone(), report.clone(), agent.gpu_layers_in_use());
        let made = tokio::task::spawn_blocking(move || crate::agent::gpu_layer_from(&config, &report, &in_use))
            .await
            .map_err(|e| e.to_string())?;
        match made {
            Ok(layer) => tracing::debug!("GPU layer: {}", layer.display()),
            // A box without graphics has no layer to give; apps still run.
            Err(e) => tracing::warn!("GPU layer: {e}"),
        }
    }
    match upload {
        Some(upload) => upload_if_changed(agent, &report, upload).await,
        None => Ok("probe: the GPU layer is current".into()),
    }
}

async fn upload_if_changed(agent: &Agent, report: &ProbeReport, upload: &Upload) -> Result<String, String> {
    let fingerprint = fingerprint(report);
    let state = state_file(agent);
    let last: Uploaded = std::fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if last.fingerprint == fingerprint {
        return Ok(format!("probe: unchanged since version {} was uploaded", last.version));
    }
    let token = bundlegen_protocol::http::read_token(&upload.token_file).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    let accepted =
        platform_probe::upload::upload(&upload.url, &token, body, agent.config.ca_file.as_deref(), &REMEDIES)
            .await
            .map_err(|e| e.to_string())?;
    let uploaded = Uploaded {
        fingerprint,
        version: accepted.version,
    };
    bundlegen_protocol::fsutil::write_file_atomic(&state, &serde_json::to_vec(&uploaded).unwrap_or_default(), 0o644)
        .map_err(|e| e.to_string())?;
    if accepted.held {
        return Ok(format!(
            "probe: uploaded as version {} of platform {}, held for the platform team's review ({})",
            accepted.version,
            accepted.name,
            accepted.reasons.join("; ")
        ));
    }
    Ok(format!(
        "probe: uploaded, platform {} is at version {}",
        accepted.name, accepted.version
    ))
}
