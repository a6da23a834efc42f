//! [`Service`]: what every request handler and job shares, opened at start.

use std::path::Path;
use std::sync::Arc;

use bundlegen_protocol::config::operator::OperatorConfig;

use crate::blobs::BlobStore;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::signing::Signer;
use crate::store::Store;
use crate::{ServiceConfig, ServiceError, auth, db};

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
}
