//! BundleGen's RabbitMQ protocol (`bundlegen-rabbitmq`), so a worker can
//! replace it in an existing deployment.
//!
//! Requests arrive on the durable queue `bundlegen-requests` as msgpack maps
//! (`uuid`, `platform`, `image_url`, `app_metadata`, `lib_match_mode`,
//! `output_filename`, `outputdir`, `createmountpoints`, `app_id`; `searchpath`
//! is BundleGen's template directory and is replaced by the service's
//! platforms and its `--template-dir`). Each becomes a job of the service
//! (so identical requests share one bundle); the archive is then copied to
//! `outputdir` (default `--bundle-store-dir`, BundleGen's
//! `BUNDLE_STORE_DIR`) and the reply `{success, uuid, bundle_path}` goes to
//! the request's `reply_to`.
//!
//! Error handling as in BundleGen: a transient failure is requeued once
//! without a reply, and replied to as a failure when it comes back; a fatal
//! one (unknown platform, no image, incompatible app) is replied to and
//! dropped.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::blobs::Partial;
use crate::jobs::{BundleOptions, BundleRequest};
use crate::queue::{self, QueueError};
use crate::store::{JobState, NewVersion};
use crate::{RequestError, Service, ServiceError};

pub const REQUEST_QUEUE: &str = "bundlegen-requests";
/// Longest a request waits for its job, in seconds.
const JOB_WAIT_SECONDS: u64 = 4 * 3600;

/// A BundleGen request (`message.py`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyRequest {
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub image_url: String,
    #[serde(default)]
    pub app_metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub lib_match_mode: Option<String>,
    #[serde(default)]
    pub output_filename: Option<String>,
    #[serde(default)]
    pub searchpath: Option<String>,
    #[serde(default)]
    pub outputdir: Option<String>,
    #[serde(default)]
    pub createmountpoints: Option<bool>,
    #[serde(default)]
    pub app_id: Option<String>,
}

/// BundleGen's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyReply {
    pub success: bool,
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_path: Option<String>,
}

/// How a request ended.
enum Verdict {
    Done(String),
    Transient(String),
    Fatal(String),
}

/// Consumes BundleGen's queue until the connection ends.
pub async fn consume(service: &Service) -> Result<(), ServiceError> {
    let url = service
        .config
        .queue
        .clone()
        .ok_or_else(|| ServiceError::Config("the BundleGen queue needs --queue amqp://...".into()))?;
    let (connection, channel) = queue::amqp_connect(&url).await?;
    let prefetch = service.config.workers.max(1) as u16;
    let mut consumer = queue::consume(&connection, &url, REQUEST_QUEUE, "bundlegen-rs", prefetch).await?;
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { break };
        let (service, channel, url) = (service.clone(), channel.clone(), url.clone());
        tokio::spawn(async move {
            let request = rmp_serde::from_slice::<LegacyRequest>(&delivery.data);
            let verdict = match &request {
                Ok(request) => handle(&service, request).await,
                Err(e) => Verdict::Fatal(format!("not a BundleGen request: {e}")),
            };
            let uuid = request.as_ref().map(|r| r.uuid.clone()).unwrap_or_default();
            let requeue = matches!(verdict, Verdict::Transient(_)) && !delivery.redelivered;
            if requeue {
                tracing::warn!("BundleGen request {uuid}: transient failure, requeued");
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                return;
            }
            let reply = match &verdict {
                Verdict::Done(path) => LegacyReply {
                    success: true,
                    uuid: uuid.clone(),
                    bundle_path: Some(path.clone()),
                },
                Verdict::Transient(why) | Verdict::Fatal(why) => {
                    tracing::warn!("BundleGen request {uuid}: {why}");
                    LegacyReply {
                        success: false,
                        uuid: uuid.clone(),
                        bundle_path: None,
                    }
                }
            };
            if let Some(reply_to) = delivery.properties.reply_to() {
                let mut properties = BasicProperties::default();
                if let Some(correlation) = delivery.properties.correlation_id() {
                    properties = properties.with_correlation_id(correlation.clone());
                }
                if let Err(e) = send_reply(&channel, &url, reply_to.as_str(), &reply, properties).await {
                    tracing::warn!("BundleGen request {uuid}: reply: {e}");
                }
            }
            let _ = match verdict {
                Verdict::Done(_) => delivery.ack(BasicAckOptions::default()).await,
                _ => delivery.nack(BasicNackOptions::default()).await,
            };
        });
    }
    Err(ServiceError::Config(format!("{REQUEST_QUEUE}: the connection closed")))
}

async fn send_reply(
    channel: &Channel,
    url: &str,
    reply_to: &str,
    reply: &LegacyReply,
    properties: BasicProperties,
) -> Result<(), QueueError> {
    let payload = rmp_serde::to_vec_named(reply).map_err(|e| QueueError {
        url: crate::redact(url),
        message: e.to_string(),
    })?;
    queue::publish(channel, url, reply_to, &payload, properties).await
}

fn verdict_of(error: RequestError) -> Verdict {
    let why = format!("{}: {error}", error.code());
    if error.is_transient() {
        Verdict::Transient(why)
    } else {
        Verdict::Fatal(why)
    }
}

async fn handle(service: &Service, request: &LegacyRequest) -> Verdict {
    if request.image_url.is_empty() {
        return Verdict::Fatal("no image_url".into());
    }
    if let Err(e) = import_platform(service, &request.platform).await {
        return verdict_of(e);
    }
    let bundle_request = BundleRequest {
        image: request.image_url.clone(),
        platform: request.platform.clone(),
        app_metadata: request.app_metadata.clone(),
        app_id: request.app_id.clone().filter(|id| !id.is_empty()),
        app_version: None,
        options: BundleOptions {
            lib_match_mode: request.lib_match_mode.clone().unwrap_or_else(|| "normal".into()),
            create_mount_points: request.createmountpoints.unwrap_or(false),
            ..BundleOptions::default()
        },
    };
    let job = match service.submit(bundle_request).await {
        Ok(job) => job,
        Err(e) => return verdict_of(e),
    };
    let job = match service.wait_for(job, JOB_WAIT_SECONDS).await {
        Ok(job) => job,
        Err(e) => return verdict_of(e),
    };
    match job.state {
        JobState::Succeeded => {}
        JobState::Failed => {
            let code = job.error_code.unwrap_or_default();
            let why = format!("{code}: {}", job.error.unwrap_or_default());
            return match code.as_str() {
                "registry_unavailable" | "storage_unavailable" | "database_unavailable" => Verdict::Transient(why),
                _ => Verdict::Fatal(why),
            };
        }
        _ => return Verdict::Transient(format!("job {} did not finish in time", job.id)),
    }
    let bundle = match service.store.bundle(job.bundle_id.as_deref().unwrap_or_default()).await {
        Ok(Some(bundle)) => bundle,
        Ok(None) => return Verdict::Fatal(format!("job {} has no bundle", job.id)),
        Err(e) => return Verdict::Transient(e.to_string()),
    };
    let Some(dir) = request
        .outputdir
        .clone()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| service.config.bundle_store_dir.clone())
    else {
        return Verdict::Fatal("no outputdir in the request and no --bundle-store-dir".into());
    };
    let name = request
        .output_filename
        .clone()
        .filter(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..")
        .unwrap_or_else(|| format!("{}{}", bundle.app_id, &bundle.sha256[..6]));
    let path = dir.join(format!("{name}.{}", bundle.format));
    match copy_out(service, &bundle, &path).await {
        Ok(()) => Verdict::Done(path.display().to_string()),
        Err(e) => Verdict::Transient(e),
    }
}

/// Makes a platform known from the template directory, if the service does
/// not have it yet (BundleGen workers read templates from disk).
async fn import_platform(service: &Service, name: &str) -> Result<(), RequestError> {
    if service.store.platform_version(name, None).await?.is_some() {
        return Ok(());
    }
    let Some(dir) = &service.config.template_dir else {
        return Err(RequestError::PlatformNotFound(name.to_string()));
    };
    let (dir, wanted) = (dir.clone(), name.to_string());
    // Walking the template directory and reading files: not on the runtime's threads.
    let (template, libs, probe) = tokio::task::spawn_blocking(move || read_template(&dir, &wanted))
        .await
        .map_err(|e| RequestError::Internal(format!("reading template {name}: {e}")))??;
    service
        .store
        .add_platform_version(
            name,
            &NewVersion {
                template: &template,
                libs: libs.as_deref(),
                probe: probe.as_deref(),
                change: "import",
                created_by: "bundlegen-queue",
                held: false,
            },
        )
        .await?;
    Ok(())
}

/// A template from the template directory, checked: its text, and its
/// library list's and probe report's.
fn read_template(dir: &Path, name: &str) -> Result<(String, Option<String>, Option<String>), RequestError> {
    let files = bundlegen_protocol::config::platform::find_template(dir, name)
        .map_err(|_| RequestError::PlatformNotFound(name.to_string()))?;
    bundlegen_protocol::config::platform::load_platform(&files)
        .map_err(|e| RequestError::Invalid(format!("template {name}: {e}")))?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| RequestError::Internal(format!("{}: {e}", path.display())))
    };
    Ok((
        read(&files.template)?,
        files.libs.as_deref().map(read).transpose()?,
        files.probe.as_deref().map(read).transpose()?,
    ))
}

/// Copies a stored bundle to `path` (temporary name, sync, rename).
async fn copy_out(service: &Service, bundle: &crate::store::BundleRecord, path: &Path) -> Result<(), String> {
    let dir = path.parent().ok_or("no directory")?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let partial = Partial::create_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut file = tokio::fs::File::from_std(partial.file.reopen().map_err(|e| e.to_string())?);
    let mut read = service
        .blobs
        .read(&bundle.location, bundle.size as u64, None)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(chunk) = read.body.next().await {
        file.write_all(&chunk.map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
    }
    file.sync_all().await.map_err(|e| e.to_string())?;
    partial
        .file
        .persist(path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields BundleGen's Python client packs (msgpack with str keys,
    /// None for missing values) read into a request.
    #[test]
    fn bundlegen_requests_and_replies_round_trip_as_msgpack() {
        let request = LegacyRequest {
            uuid: "42".into(),
            platform: "rpi3_reference".into(),
            image_url: "docker://localhost:5000/app:1".into(),
            app_metadata: None,
            lib_match_mode: Some("normal".into()),
            output_filename: Some("app-rpi3".into()),
            searchpath: None,
            outputdir: Some("/bundles".into()),
            createmountpoints: Some(true),
            app_id: None,
        };
        let bytes = rmp_serde::to_vec_named(&request).unwrap();
        assert_eq!(rmp_serde::from_slice::<LegacyRequest>(&bytes).unwrap(), request);
        // A map with only some fields, as an older client sends.
        #[derive(Serialize)]
        struct Minimal<'a> {
            uuid: &'a str,
            platform: &'a str,
            image_url: &'a str,
            extra: u8,
        }
        let minimal = rmp_serde::to_vec_named(&Minimal {
            uuid: "1",
            platform: "p",
            image_url: "docker://r/i",
            extra: 1,
        })
        .unwrap();
        let parsed: LegacyRequest = rmp_serde::from_slice(&minimal).unwrap();
        assert_eq!((parsed.uuid.as_str(), parsed.lib_match_mode), ("1", None));
        let reply = LegacyReply {
            success: true,
            uuid: "42".into(),
            bundle_path: Some("/bundles/app.tar.gz".into()),
        };
        let bytes = rmp_serde::to_vec_named(&reply).unwrap();
        assert_eq!(rmp_serde::from_slice::<LegacyReply>(&bytes).unwrap(), reply);
    }
}
