//! `bundlegen serve` and `bundlegen worker`: the generator as the cloud
//! service boxes and platform teams talk to.
//!
//! - [`api`]: the HTTP API (platforms, apps, bundle jobs, downloads, tokens).
//! - [`store`] over [`db`]: records in SQLite (embedded) or PostgreSQL.
//! - [`queue`]: jobs to workers, in-process or through RabbitMQ.
//! - [`jobs`]: running a job with the CLI's pipeline.
//! - [`blobs`]: finished bundles in a directory or an OCI registry.
//! - [`signing`], [`auth`], [`metrics`], [`diff`], [`bundlegen_queue`].
//!
//! Embedded (the default) is one process with everything under a data
//! directory. Scale-out shares PostgreSQL, RabbitMQ and a registry between
//! any number of `serve` and `worker` processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bundlegen_protocol::config::operator::OperatorConfig;
use futures_util::StreamExt;

use bundlegen_core::generate::{GenerateError, check_compatibility};
use bundlegen_core::image::{ImageReference, RegistryOptions};
use bundlegen_core::pipeline::StageError;

pub mod api;
pub mod auth;
pub mod blobs;
pub mod bundlegen_queue;
pub mod db;
pub mod diff;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod queue;
pub mod signing;
pub mod store;
mod tls;

use blobs::BlobStore;
use error::ApiError;
use jobs::{BundleRequest, Outcome, StoredRequest, job_key, platform_template};
use metrics::Metrics;
use queue::Queue;
use signing::Signer;
use store::{JobRecord, JobState, NewJob, Store};

/// Longest a client may wait for a job in one request, in seconds.
const MAX_WAIT_SECONDS: u64 = 600;

/// How a service process is set up.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow plain HTTP on an address other than loopback.
    pub insecure_listen: bool,
    /// Database, work directory, bundles and the signing key (by default).
    pub data_dir: PathBuf,
    /// `postgres://...`; default: SQLite in the data directory.
    pub database: Option<String>,
    /// `amqp://...`; default: the in-process queue.
    pub queue: Option<String>,
    /// `HOST[:PORT]/REPOSITORY` of a registry for bundles; default: a directory.
    pub bundle_registry: Option<String>,
    /// Image registries (credentials, CA, plain HTTP), also the bundle registry.
    pub registry: RegistryOptions,
    /// Jobs run at once in this process.
    pub workers: usize,
    pub signing_key: Option<PathBuf>,
    pub operator_config: Option<PathBuf>,
    /// `oci:`/`oci-archive:` images are accepted from under this directory only.
    pub local_images: Option<PathBuf>,
    /// Templates on disk for BundleGen-queue requests naming a platform the
    /// service does not have.
    pub template_dir: Option<PathBuf>,
    /// Holds an admin token: read at start (or written there, if the file
    /// does not exist and the database has no admin yet).
    pub bootstrap_token: Option<PathBuf>,
    /// Attempts per job before a transient failure is final.
    pub max_attempts: i64,
    /// Also consume BundleGen's `bundlegen-requests` queue (worker).
    pub bundlegen_queue: bool,
    /// Where BundleGen-queue bundles are copied (`BUNDLE_STORE_DIR`).
    pub bundle_store_dir: Option<PathBuf>,
}

impl ServiceConfig {
    /// A configuration with every default, for `data_dir`.
    pub fn embedded(data_dir: &Path, listen: SocketAddr) -> ServiceConfig {
        ServiceConfig {
            listen,
            tls: None,
            insecure_listen: false,
            data_dir: data_dir.to_path_buf(),
            database: None,
            queue: None,
            bundle_registry: None,
            registry: RegistryOptions::default(),
            workers: 2,
            signing_key: None,
            operator_config: None,
            local_images: None,
            template_dir: None,
            bootstrap_token: None,
            max_attempts: 3,
            bundlegen_queue: false,
            bundle_store_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A configuration that cannot work (exit code 78, no restart loop).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a request handler or a job needs, shared.
#[derive(Clone)]
pub struct Service {
    pub config: Arc<ServiceConfig>,
    pub store: Store,
    pub blobs: BlobStore,
    pub queue: Queue,
    pub signer: Arc<Signer>,
    pub metrics: Arc<Metrics>,
    pub operator: OperatorConfig,
    /// Names this process in job records.
    pub worker_id: String,
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl Service {
    /// Opens the database, queue, bundle store and key.
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |source| ServiceError::Io { what, source }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
        let database = config
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", config.data_dir.join("bundlegen.db").display()));
        let store = Store {
            db: db::Db::open(&database).await?,
        };
        let blobs = match &config.bundle_registry {
            Some(spec) => {
                let (host, repository) = spec.split_once('/').ok_or_else(|| {
                    ServiceError::Config(format!("--bundle-registry {spec:?}: use HOST[:PORT]/REPOSITORY"))
                })?;
                let repository = bundlegen_core::image::registry::Repository::new(host, repository, &config.registry)
                    .map_err(|e| ServiceError::Config(format!("--bundle-registry {spec}: {e}")))?;
                BlobStore::Registry(Arc::new(repository))
            }
            None => BlobStore::Dir(config.data_dir.join("bundles")),
        };
        let queue = Queue::open(config.queue.as_deref()).await?;
        let key_path = config
            .signing_key
            .clone()
            .unwrap_or_else(|| config.data_dir.join("signing-key.p8"));
        let signer = Arc::new(Signer::load_or_create(&key_path)?);
        let operator = match &config.operator_config {
            Some(path) => {
                bundlegen_protocol::config::load::<OperatorConfig>(path)
                    .map_err(|e| ServiceError::Config(e.to_string()))?
                    .value
            }
            None => OperatorConfig::default(),
        };
        let worker_id = format!(
            "{}-{}-{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "host".into()),
            std::process::id(),
            &auth::new_id("w")[2..8]
        );
        let service = Service {
            config: Arc::new(config),
            store,
            blobs,
            queue,
            signer,
            metrics: Arc::new(Metrics::default()),
            operator,
            worker_id,
        };
        service.bootstrap_admin().await?;
        Ok(service)
    }

    /// Makes sure an admin can log in the first time.
    async fn bootstrap_admin(&self) -> Result<(), ServiceError> {
        let Some(path) = &self.config.bootstrap_token else {
            return Ok(());
        };
        let token = match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
            Ok(_) => return Err(ServiceError::Config(format!("{}: empty token file", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.store.count_tokens("admin").await? > 0 {
                    return Ok(());
                }
                let (_, token) = auth::new_token();
                bundlegen_protocol::fsutil::write_file_atomic(path, format!("{token}\n").as_bytes(), 0o600).map_err(
                    |source| ServiceError::Io {
                        what: path.display().to_string(),
                        source,
                    },
                )?;
                token
            }
            Err(source) => {
                return Err(ServiceError::Io {
                    what: path.display().to_string(),
                    source,
                });
            }
        };
        let hash = auth::hash_token(&token);
        if self.store.token_by_hash(&hash).await?.is_none() {
            let (id, _) = auth::new_token();
            self.store.add_token(&id, "bootstrap", "admin", &hash).await?;
        }
        Ok(())
    }

    /// Parses an image reference a client sent: registry images always;
    /// local layouts and archives only under the configured directory.
    pub fn image_reference(&self, text: &str) -> Result<ImageReference, ApiError> {
        let reference: ImageReference = text.parse().map_err(|e: bundlegen_core::image::ImageError| {
            ApiError::bad_request("invalid_image_reference", e.to_string())
        })?;
        let local = match &reference {
            ImageReference::Registry { .. } => return Ok(reference),
            ImageReference::OciLayout { dir, .. } => dir.clone(),
            ImageReference::OciArchive { file, .. } | ImageReference::DockerArchive { file, .. } => file.clone(),
        };
        let refused = || {
            ApiError::bad_request(
                "invalid_image_reference",
                format!("{text}: only registry images (docker://) are accepted here"),
            )
        };
        let allowed = self.config.local_images.as_ref().ok_or_else(refused)?;
        let (Ok(allowed), Ok(local)) = (std::fs::canonicalize(allowed), std::fs::canonicalize(&local)) else {
            return Err(ApiError::unprocessable(
                "image_not_found",
                format!("{text}: no such image"),
            ));
        };
        if local.starts_with(&allowed) {
            Ok(reference)
        } else {
            Err(refused())
        }
    }

    /// Queues a request (or finds the identical one). Inputs that can be
    /// checked without the image are checked here, so the client hears at once.
    pub async fn submit(&self, request: BundleRequest) -> Result<JobRecord, ApiError> {
        request
            .options
            .validate()
            .map_err(|e| ApiError::unprocessable("invalid_request", e))?;
        let version = self
            .store
            .platform_version(&request.platform, None)
            .await?
            .ok_or_else(|| {
                ApiError::not_found("platform_not_found", format!("no platform named {}", request.platform))
            })?;
        self.image_reference(&request.image)?;
        if let Some(id) = &request.app_id
            && let Some(reason) = bundlegen_protocol::config::app::container_id_problem(id)
        {
            return Err(ApiError::unprocessable(
                "invalid_app_id",
                format!("appId {id:?}: {reason}"),
            ));
        }
        if let Some(metadata) = &request.app_metadata {
            let app = api::parse_metadata(metadata)?;
            let platform = platform_template(&version).map_err(|e| ApiError::internal(e.to_string()))?;
            match check_compatibility(&platform.value, &app, &self.operator) {
                Ok(_) => {}
                Err(GenerateError::Stage(StageError::Incompatible(reasons))) => {
                    return Err(ApiError::unprocessable("incompatible_app", reasons.join("; ")));
                }
                Err(e) => return Err(ApiError::unprocessable("invalid_metadata", e.to_string())),
            }
        }
        let key = job_key(&request, version.version);
        let stored = serde_json::to_string(&StoredRequest {
            request: request.clone(),
            platform_version: version.version,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
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
            self.queue.announce(&job.id).await.map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "queue_unavailable",
                    e.to_string(),
                )
            })?;
        }
        Ok(job)
    }

    /// Polls until the job is finished or `seconds` pass.
    pub async fn wait_for(&self, mut job: JobRecord, seconds: u64) -> Result<JobRecord, ApiError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds.min(MAX_WAIT_SECONDS));
        while matches!(job.state, JobState::Queued | JobState::Running) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            job = self
                .store
                .job(&job.id)
                .await?
                .ok_or_else(|| ApiError::internal(format!("job {} vanished", job.id)))?;
        }
        Ok(job)
    }

    /// Records a job's outcome; false if another worker took it over.
    async fn record(&self, job: &JobRecord, outcome: &Outcome, last_attempt: bool) -> bool {
        let result = match outcome {
            Outcome::Succeeded(bundle) => self.store.finish_job(&job.id, &self.worker_id, Ok(bundle)).await,
            Outcome::Transient { code, message } if last_attempt => {
                let message = format!("{message} (gave up after {} attempts)", job.attempts);
                self.store
                    .finish_job(&job.id, &self.worker_id, Err((code, &message)))
                    .await
            }
            Outcome::Transient { .. } => self.store.requeue_job(&job.id).await.map(|()| true),
            Outcome::Failed { code, message } => {
                self.store
                    .finish_job(&job.id, &self.worker_id, Err((code, message)))
                    .await
            }
        };
        match result {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::error!("job {}: cannot record its outcome: {e}", job.id);
                false
            }
        }
    }

    /// Runs one claimed job and records how it ended; true if it should be
    /// offered again (a transient failure with attempts left).
    pub async fn run_claimed(&self, job: JobRecord) -> bool {
        tracing::info!("job {}: attempt {} on {}", job.id, job.attempts, self.worker_id);
        let outcome = jobs::run(self, &job).await;
        let last_attempt = job.attempts >= self.config.max_attempts;
        let retry = matches!(outcome, Outcome::Transient { .. }) && !last_attempt;
        if !self.record(&job, &outcome, last_attempt).await {
            tracing::warn!("job {}: taken over by another worker; this outcome is dropped", job.id);
        }
        match &outcome {
            Outcome::Succeeded(bundle) => tracing::info!("job {}: bundle {bundle}", job.id),
            other => tracing::warn!("job {}: {}", job.id, other.code()),
        }
        retry
    }

    /// Embedded mode after a restart: jobs that were running when the
    /// process stopped go back to the queue (or fail, out of attempts).
    pub async fn recover_interrupted_jobs(&self) -> Result<(), ServiceError> {
        for job in self.store.jobs_in(store::JobState::Running).await? {
            if job.attempts >= self.config.max_attempts {
                let worker = job.worker.clone().unwrap_or_default();
                self.store
                    .finish_job(
                        &job.id,
                        &worker,
                        Err(("interrupted", "the service stopped during every attempt of this job")),
                    )
                    .await?;
            } else {
                self.store.requeue_job(&job.id).await?;
            }
        }
        let _ = std::fs::remove_dir_all(self.config.data_dir.join("work"));
        Ok(())
    }

    /// The embedded worker pool: `workers` loops claiming queued jobs.
    pub fn spawn_local_workers(&self) {
        for _ in 0..self.config.workers.max(1) {
            let service = self.clone();
            tokio::spawn(async move {
                loop {
                    match service.store.claim_next_job(&service.worker_id).await {
                        Ok(Some(job)) => {
                            if service.run_claimed(job).await {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                        Ok(None) => service.queue.wait_local().await,
                        Err(e) => {
                            tracing::error!("claiming jobs: {e}");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            });
        }
    }

    /// A worker process: consumes job ids from RabbitMQ and runs them,
    /// `workers` at a time, until the connection ends.
    pub async fn consume_amqp_jobs(&self) -> Result<(), ServiceError> {
        let Queue::Amqp(amqp) = &self.queue else {
            return Err(ServiceError::Config("a worker needs --queue amqp://...".into()));
        };
        let workers = self.config.workers.max(1);
        let messages = queue::consume_jobs(amqp, workers as u16).await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(workers));
        let mut messages = std::pin::pin!(messages);
        while let Some(message) = messages.next().await {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let service = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match service
                    .store
                    .claim_job(&message.job_id, &service.worker_id, message.redelivered)
                    .await
                {
                    Ok(Some(job)) => {
                        if service.run_claimed(job).await {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            message.requeue().await;
                        } else {
                            message.ack().await;
                        }
                    }
                    // Finished already, or running on a live worker.
                    Ok(None) => message.ack().await,
                    Err(e) => {
                        tracing::error!("job {}: {e}", message.job_id);
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        message.requeue().await;
                    }
                }
            });
        }
        Err(ServiceError::Config("the job queue's connection closed".into()))
    }

    /// Scale-out API start: announces jobs still queued (their message may
    /// have been lost with a process that stopped between the database
    /// write and the publish; a second message for a job is harmless).
    pub async fn announce_queued_jobs(&self) -> Result<(), ServiceError> {
        for job in self.store.jobs_in(store::JobState::Queued).await? {
            self.queue.announce(&job.id).await?;
        }
        Ok(())
    }
}

/// `bundlegen serve`: the API, plus the job workers in embedded mode.
pub async fn serve(config: ServiceConfig) -> Result<(), ServiceError> {
    check_listen_policy(&config)?;
    let service = Service::start(config).await?;
    if service.queue.is_local() {
        service.recover_interrupted_jobs().await?;
        service.spawn_local_workers();
    } else {
        service.announce_queued_jobs().await?;
    }
    let router = api::router(service.clone());
    tls::serve(&service.config, router).await
}

/// `bundlegen worker`: runs jobs from RabbitMQ (and BundleGen's queue)
/// until SIGTERM or SIGINT. Jobs cut short are redelivered by the broker.
pub async fn worker(config: ServiceConfig) -> Result<(), ServiceError> {
    let service = Service::start(config).await?;
    if service.config.bundlegen_queue {
        let compat = service.clone();
        tokio::spawn(async move {
            if let Err(e) = bundlegen_queue::consume(&compat).await {
                tracing::error!("BundleGen queue: {e}");
            }
        });
    }
    tokio::select! {
        result = service.consume_amqp_jobs() => result,
        () = tls::shutdown_signal() => Ok(()),
    }
}

/// Refuses plain HTTP on a non-loopback address unless told otherwise.
fn check_listen_policy(config: &ServiceConfig) -> Result<(), ServiceError> {
    if config.tls.is_none() && !config.listen.ip().is_loopback() && !config.insecure_listen {
        return Err(ServiceError::Config(format!(
            "refusing to serve plain HTTP on {}: give --tls-cert and --tls-key, listen on a loopback \
             address, or pass --insecure-listen (behind a TLS-terminating proxy)",
            config.listen
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://bundlegen:secret@db.example:5432/bg"),
            "postgres://bundlegen:***@db.example:5432/bg"
        );
        assert_eq!(redact("amqp://localhost:5672/%2f"), "amqp://localhost:5672/%2f");
    }

    #[test]
    fn plain_http_stays_on_loopback_unless_allowed() {
        let dir = Path::new("/tmp");
        let public = ServiceConfig::embedded(dir, "0.0.0.0:8080".parse().unwrap());
        assert!(matches!(check_listen_policy(&public), Err(ServiceError::Config(_))));
        let allowed = ServiceConfig {
            insecure_listen: true,
            ..public.clone()
        };
        assert!(check_listen_policy(&allowed).is_ok());
        let tls = ServiceConfig {
            tls: Some(("cert.pem".into(), "key.pem".into())),
            ..public
        };
        assert!(check_listen_policy(&tls).is_ok());
        let local = ServiceConfig::embedded(dir, "127.0.0.1:8080".parse().unwrap());
        assert!(check_listen_policy(&local).is_ok());
        let v6 = ServiceConfig::embedded(dir, "[::1]:8080".parse().unwrap());
        assert!(check_listen_policy(&v6).is_ok());
    }
}
