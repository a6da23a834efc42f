//! [`Service`]: what every request handler and job shares, opened at start.

use std::path::Path;
use std::sync::Arc;

use bundlegen_protocol::config::operator::OperatorConfig;

use crate::blobs::BlobStore;
use crate::metrics::Metrics;
use crate::probes::UploadLimiter;
use crate::queue::Queue;
use crate::signing::Signer;
use crate::store::NewToken;
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
    /// Signs RALF packages (`--package-signing-key` and `-cert`); without
    /// it, the service makes no packages.
    pub package_signer: Option<Arc<bundlegen_core::package::SigningIdentity>>,
    pub metrics: Arc<Metrics>,
    pub operator: OperatorConfig,
    /// Part of every bundle's key: a new operator config makes new bundles.
    pub operator_fingerprint: String,
    /// Names this process in job records.
    pub worker_id: String,
    /// Devices' probe uploads, per token.
    pub probe_uploads: Arc<UploadLimiter>,
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
        for weak in config.weak_settings() {
            tracing::warn!("{weak}");
        }
        // Every configuration is checked before anything is written: a
        // refused start (exit 78) leaves no database, key or directory.
        let bootstrap = match &config.bootstrap_token {
            Some(path) => read_bootstrap_token(path)?,
            None => None,
        };
        let operator = match &config.operator_config {
            Some(path) => {
                bundlegen_protocol::config::load::<OperatorConfig>(path)
                    .map_err(|e| ServiceError::Config(e.to_string()))?
                    .value
            }
            None => OperatorConfig::default(),
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
        let package_signer = match &config.package_signing {
            Some(files) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let identity = bundlegen_core::package::SigningIdentity::load(files, now)
                    .map_err(|e| ServiceError::Config(format!("package signing: {e}")))?;
                Some(Arc::new(identity))
            }
            None => None,
        };
        let key_path = config.signing_key_path();
        let existing_key = match key_path.exists() {
            true => Some(Signer::load(&key_path)?),
            false => None,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
        let store = Store {
            db: db::Db::open(&config.database_url()).await?,
        };
        let queue = Queue::open(config.queue.as_deref()).await?;
        let signer = Arc::new(match existing_key {
            Some(signer) => signer,
            None => {
                let signer = Signer::generate(&key_path)?;
                tracing::info!("a new signing key is in {}", key_path.display());
                signer
            }
        });
        let worker_id = format!(
            "{}-{}-{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "host".into()),
            std::process::id(),
            &auth::new_id("w")[2..8]
        );
        let config_probe_uploads = config.probe_uploads_per_hour;
        let service = Service {
            config: Arc::new(config),
            store,
            blobs,
            queue,
            signer,
            package_signer,
            metrics: Arc::new(Metrics::default()),
            operator_fingerprint: crate::jobs::operator_fingerprint(&operator),
            operator,
            worker_id,
            probe_uploads: Arc::new(UploadLimiter::new(config_probe_uploads)),
        };
        service.bootstrap_admin(bootstrap).await?;
        for dir in [
            Some(&service.config.data_dir.join("bundles")),
            service.config.bundle_store_dir.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let dir = dir.clone();
            let _ = tokio::task::spawn_blocking(move || crate::blobs::remove_abandoned_partials(&dir)).await;
        }
        Ok(service)
    }

    /// Makes sure an admin can log in the first time, and only then: the
    /// bootstrap token (`bootstrap`, read before anything was written)
    /// becomes an admin while the database has none; without a file, one is
    /// written. A revoked bootstrap token stays revoked.
    async fn bootstrap_admin(&self, bootstrap: Option<String>) -> Result<(), ServiceError> {
        let Some(path) = &self.config.bootstrap_token else {
            return Ok(());
        };
        let token = match bootstrap {
            Some(token) => token,
            None if self.store.count_tokens("admin").await? > 0 => return Ok(()),
            None => {
                let (_, token) = auth::new_token();
                bundlegen_protocol::fsutil::write_file_atomic(path, format!("{token}\n").as_bytes(), 0o600).map_err(
                    |source| ServiceError::Io {
                        what: path.display().to_string(),
                        source,
                    },
                )?;
                tracing::info!("the first admin token is in {}", path.display());
                token
            }
        };
        let hash = auth::hash_token(&token);
        match self.store.token_by_hash(&hash).await? {
            Some(record) if record.revoked_at.is_some() => {
                tracing::warn!(
                    "{}: this bootstrap token was revoked and stays revoked (remove the file)",
                    path.display()
                );
                Ok(())
            }
            Some(_) => Ok(()),
            None if self.store.count_tokens("admin").await? > 0 => {
                tracing::warn!(
                    "{}: not used, the database has an admin already (remove the file)",
                    path.display()
                );
                Ok(())
            }
            None => {
                let (id, _) = auth::new_token();
                self.store
                    .add_token(&NewToken {
                        id: &id,
                        name: "bootstrap",
                        role: "admin",
                        hash: &hash,
                        platform: None,
                        device: None,
                        expires_at: None,
                    })
                    .await?;
                tracing::info!("admin token {id} from {}", path.display());
                Ok(())
            }
        }
    }
}

/// The bootstrap token file, checked before anything is written: private
/// to its owner, and holding a strong token. `None` if there is none yet.
fn read_bootstrap_token(path: &Path) -> Result<Option<String>, ServiceError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |why: String| ServiceError::Config(format!("{}: {why}", path.display()));
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ServiceError::Io {
                what: path.display().to_string(),
                source,
            });
        }
    };
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(bad(format!(
            "readable by others (mode {:o}); chmod 600 it",
            metadata.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ServiceError::Io {
        what: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("empty token file".into()));
    }
    if auth::entropy_bits(token) < MIN_BOOTSTRAP_BITS {
        return Err(bad(format!(
            "the token is too weak (under {MIN_BOOTSTRAP_BITS} bits); remove the file to have one written"
        )));
    }
    Ok(Some(token.to_string()))
}

/// The least entropy of a bootstrap token: 32 random bytes.
const MIN_BOOTSTRAP_BITS: f64 = 256.0;

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
