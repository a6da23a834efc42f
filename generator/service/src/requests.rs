//! Bundle requests: checked at once (so the client hears), then queued as a
//! job, or matched to the identical job already there.

use std::time::Duration;

use bundlegen_core::generate::{GenerateError, check_compatibility};
use bundlegen_core::image::ImageReference;
use bundlegen_core::image::registry::normalize_host;
use bundlegen_core::pipeline::StageError;

use bundlegen_protocol::config::app::{AppMetadata, container_id_problem, version_problem};
use bundlegen_protocol::config::parse;

use crate::db::DbError;
use crate::jobs::{BundleRequest, StoredRequest, job_key, platform_template};
use crate::queue::QueueError;
use crate::store::{JobRecord, JobState, NewJob};
use crate::{Service, auth};

/// Longest a client may wait for a job in one request, in seconds.
const MAX_WAIT_SECONDS: u64 = 600;

/// Why a request is not taken. [`RequestError::code`] is the stable code
/// clients branch on; the HTTP layer picks the status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// An image reference that is not accepted here.
    #[error("{0}")]
    ImageReference(String),
    #[error("{0}: no such image")]
    ImageNotFound(String),
    /// A field of the request with a value that cannot work.
    #[error("{0}")]
    Invalid(String),
    #[error("no platform named {0}")]
    PlatformNotFound(String),
    #[error("appId {id:?}: {reason}")]
    AppId { id: String, reason: String },
    /// App metadata that does not parse or check.
    #[error("{0}")]
    Metadata(String),
    /// The app cannot run on the platform.
    #[error("{}", .0.join("; "))]
    Incompatible(Vec<String>),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Database(#[from] DbError),
    /// The service's own fault.
    #[error("{0}")]
    Internal(String),
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::ImageReference(_) => "invalid_image_reference",
            RequestError::ImageNotFound(_) => "image_not_found",
            RequestError::Invalid(_) => "invalid_request",
            RequestError::PlatformNotFound(_) => "platform_not_found",
            RequestError::AppId { .. } => "invalid_app_id",
            RequestError::Metadata(_) => "invalid_metadata",
            RequestError::Incompatible(_) => "incompatible_app",
            RequestError::Queue(_) => "queue_unavailable",
            RequestError::Database(_) => "database_unavailable",
            RequestError::Internal(_) => "internal",
        }
    }

    /// The service's trouble, not the request's: worth asking again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RequestError::Queue(_) | RequestError::Database(_) | RequestError::Internal(_)
        )
    }
}

/// Checks app metadata the way the CLI reads `-a FILE`.
pub fn parse_metadata(metadata: &serde_json::Value) -> Result<AppMetadata, RequestError> {
    parse::<AppMetadata>(&metadata.to_string(), std::path::Path::new("appMetadata"))
        .map(|parsed| parsed.value)
        .map_err(|e| RequestError::Metadata(e.to_string()))
}

impl Service {
    /// Parses an image reference a client sent: registry images always;
    /// local layouts and archives only under the configured directory.
    pub fn image_reference(&self, text: &str) -> Result<ImageReference, RequestError> {
        let reference: ImageReference = text
            .parse()
            .map_err(|e: bundlegen_core::image::ImageError| RequestError::ImageReference(e.to_string()))?;
        let local = match &reference {
            ImageReference::Registry { host, .. } => {
                let allowed = &self.config.allowed_registries;
                let host = normalize_host(host);
                if allowed.is_empty() || allowed.iter().any(|a| normalize_host(a) == host) {
                    return Ok(reference);
                }
                return Err(RequestError::ImageReference(format!(
                    "{text}: registry {host} is not one this service pulls from"
                )));
            }
            ImageReference::OciLayout { dir, .. } => dir.clone(),
            ImageReference::OciArchive { file, .. } | ImageReference::DockerArchive { file, .. } => file.clone(),
        };
        let refused =
            || RequestError::ImageReference(format!("{text}: only registry images (docker://) are accepted here"));
        let allowed = self.config.local_images.as_ref().ok_or_else(refused)?;
        let (Ok(allowed), Ok(local)) = (std::fs::canonicalize(allowed), std::fs::canonicalize(&local)) else {
            return Err(RequestError::ImageNotFound(text.to_string()));
        };
        if local.starts_with(&allowed) {
            Ok(reference)
        } else {
            Err(refused())
        }
    }

    /// Queues a request (or finds the identical one). Inputs that can be
    /// checked without the image are checked here, so the client hears at once.
    pub async fn submit(&self, request: BundleRequest) -> Result<JobRecord, RequestError> {
        request.options.validate().map_err(RequestError::Invalid)?;
        if request.options.format == crate::jobs::FORMAT && self.package_signer.is_none() {
            return Err(RequestError::Invalid(
                "options.format ralf: this service signs no packages (start it with --package-signing-key and \
                 --package-signing-cert)"
                    .into(),
            ));
        }
        let version = self
            .store
            .platform_version(&request.platform, None)
            .await?
            .ok_or_else(|| RequestError::PlatformNotFound(request.platform.clone()))?;
        self.image_reference(&request.image)?;
        if let Some(id) = &request.app_id
            && let Some(reason) = container_id_problem(id)
        {
            return Err(RequestError::AppId { id: id.clone(), reason });
        }
        if let Some(version) = &request.app_version
            && let Some(reason) = version_problem(version)
        {
            return Err(RequestError::Invalid(format!("appVersion {version:?}: {reason}")));
        }
        if let Some(metadata) = &request.app_metadata {
            let app = parse_metadata(metadata)?;
            let platform = platform_template(&version).map_err(|e| RequestError::Internal(e.to_string()))?;
            match check_compatibility(&platform.value, &app, &self.operator) {
                Ok(_) => {}
                Err(GenerateError::Stage(StageError::Incompatible(reasons))) => {
                    return Err(RequestError::Incompatible(reasons));
                }
                Err(e) => return Err(RequestError::Metadata(e.to_string())),
            }
        }
        let key = job_key(&request, version.version, &self.operator_fingerprint);
        let stored = serde_json::to_string(&StoredRequest {
            request: request.clone(),
            platform_version: version.version,
        })
        .map_err(|e| RequestError::Internal(e.to_string()))?;
        let app_id = request.app_id.clone().or_else(|| {
            request
                .app_metadata
                .as_ref()
                .and_then(|m| m.get("id")?.as_str().map(str::to_string))
        });
        let id = auth::new_id("job");
        let (job, new) = self
            .store
            .insert_or_get_job(&NewJob {
                id: &id,
                key: &key,
                request: &stored,
                platform: &request.platform,
                platform_version: version.version,
                app_id: app_id.as_deref(),
                app_version: request.app_version.as_deref(),
            })
            .await?;
        if new {
            self.queue.announce(&job.id).await?;
        }
        Ok(job)
    }

    /// Polls until the job is finished or `seconds` pass.
    pub async fn wait_for(&self, mut job: JobRecord, seconds: u64) -> Result<JobRecord, RequestError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds.min(MAX_WAIT_SECONDS));
        while matches!(job.state, JobState::Queued | JobState::Running) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            job = self
                .store
                .job(&job.id)
                .await?
                .ok_or_else(|| RequestError::Internal(format!("job {} vanished", job.id)))?;
        }
        Ok(job)
    }
}
