//! How a service process is set up, and why it may refuse to start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bundlegen_core::image::RegistryOptions;

use crate::{db, queue, signing};

/// How a service process is set up.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow plain HTTP on an address other than loopback.
    pub insecure_listen: bool,
    /// Connections held at once, and how long they may idle.
    pub connections: bundlegen_protocol::server::Limits,
    /// Serve `/metrics` without a token here (plain HTTP), in `serve` and
    /// `worker` alike.
    pub metrics_listen: Option<SocketAddr>,
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
    /// Registries (`host[:port]`) jobs may pull from; empty: any.
    pub allowed_registries: Vec<String>,
    /// Jobs run at once in this process.
    pub workers: usize,
    pub signing_key: Option<PathBuf>,
    /// RALF packages are signed with this key and certificate (and chain).
    pub package_signing: Option<bundlegen_core::package::SigningFiles>,
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
    /// Probe reports a device token may upload in an hour.
    pub probe_uploads_per_hour: usize,
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
            connections: bundlegen_protocol::server::Limits::default(),
            metrics_listen: None,
            data_dir: data_dir.to_path_buf(),
            database: None,
            queue: None,
            bundle_registry: None,
            registry: RegistryOptions::default(),
            allowed_registries: Vec::new(),
            workers: 2,
            signing_key: None,
            package_signing: None,
            operator_config: None,
            local_images: None,
            template_dir: None,
            bootstrap_token: None,
            max_attempts: 3,
            probe_uploads_per_hour: 12,
            bundlegen_queue: false,
            bundle_store_dir: None,
        }
    }

    /// The database: `--database`, else SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("bundlegen.db").display()))
    }

    /// The signing key's file: `--signing-key`, else in the data directory.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing-key.p8"))
    }

    /// Each setting in force that weakens the service's defences, logged
    /// at start so none stays on unnoticed.
    pub fn weak_settings(&self) -> Vec<String> {
        let mut weak = Vec::new();
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            weak.push(format!(
                "plain HTTP on {} (--insecure-listen): tokens cross the network in the clear unless a TLS proxy \
                 is in front",
                self.listen
            ));
        }
        if let Some(address) = self.metrics_listen.filter(|a| !a.ip().is_loopback()) {
            weak.push(format!(
                "metrics are served without a token on {address} (--metrics-listen): keep it on a private network"
            ));
        }
        if self.allowed_registries.is_empty() {
            weak.push(
                "jobs may pull from any registry (no --allow-registry): a platform team's token can make the \
                 service fetch from any host it reaches"
                    .into(),
            );
        }
        if self.registry.plain_http {
            weak.push("registries are spoken to over plain HTTP (--plain-http)".into());
        }
        if !self.registry.token_realms.is_empty() {
            weak.push(format!(
                "registry credentials may go to token servers on other hosts: {}",
                self.registry.token_realms.join(", ")
            ));
        }
        weak
    }
}

impl From<signing::SigningError> for ServiceError {
    /// A key that cannot be used is a configuration to fix (exit 78).
    fn from(error: signing::SigningError) -> ServiceError {
        match error {
            signing::SigningError::Invalid { .. } => ServiceError::Config(error.to_string()),
            other => ServiceError::Signing(other),
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
    Signing(signing::SigningError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_weak_setting_is_named() {
        let strict = ServiceConfig {
            allowed_registries: vec!["registry.example".into()],
            ..ServiceConfig::embedded(Path::new("/d"), "127.0.0.1:8080".parse().unwrap())
        };
        assert_eq!(strict.weak_settings(), Vec::<String>::new());
        let mut loose = ServiceConfig {
            listen: "0.0.0.0:8080".parse().unwrap(),
            insecure_listen: true,
            allowed_registries: Vec::new(),
            ..strict.clone()
        };
        loose.registry.plain_http = true;
        loose.registry.token_realms = vec!["auth.example".into()];
        let weak = loose.weak_settings().join("\n");
        for mention in ["--insecure-listen", "--allow-registry", "--plain-http", "auth.example"] {
            assert!(weak.contains(mention), "{mention}: {weak}");
        }
        let tls = ServiceConfig {
            tls: Some(("c".into(), "k".into())),
            ..loose
        };
        assert!(!tls.weak_settings().join("").contains("--insecure-listen"));
    }
}
