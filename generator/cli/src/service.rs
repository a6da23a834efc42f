//! `bundlegen serve` and `bundlegen worker`: options, then the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bundlegen_protocol::server::Limits;

use bundlegen_service::{self as service, ServiceConfig, ServiceError};
use clap::Args;

use crate::Failure;
use crate::args::RegistryArgs;

/// Exit code of a configuration that cannot work (`EX_CONFIG`); units use
/// `RestartPreventExitStatus=78` so systemd does not restart-loop on it.
pub const EXIT_BAD_CONFIG: u8 = 78;

/// Where a deployment keeps its records and key (`serve`, `worker`,
/// `service export|import`).
#[derive(Args)]
pub struct StoreArgs {
    /// Database, work files, bundles and the signing key live here.
    #[arg(
        long,
        value_name = "DIR",
        env = "BUNDLEGEN_DATA_DIR",
        default_value = "/var/lib/bundlegen"
    )]
    data_dir: PathBuf,
    /// PostgreSQL for the records (postgres://USER:PASS@HOST/DB); default: SQLite in --data-dir.
    #[arg(long, value_name = "URL", env = "BUNDLEGEN_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// The bundle signing key (ed25519 PKCS#8; created if missing); default: in --data-dir.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

impl StoreArgs {
    fn config(&self) -> ServiceConfig {
        ServiceConfig {
            database: self.database.clone(),
            signing_key: self.signing_key.clone(),
            ..ServiceConfig::embedded(&self.data_dir, SocketAddr::from(([127, 0, 0, 1], 0)))
        }
    }
}

/// What `serve` and `worker` share.
#[derive(Args)]
pub struct CommonArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// RabbitMQ for the jobs (amqp://USER:PASS@HOST:5672/%2f); default: in this process.
    #[arg(long, value_name = "URL", env = "BUNDLEGEN_QUEUE", hide_env_values = true)]
    queue: Option<String>,
    /// Keep bundles in this registry repository (HOST[:PORT]/REPOSITORY) as OCI artifacts; default: --data-dir.
    #[arg(long, value_name = "HOST/REPO", env = "BUNDLEGEN_BUNDLE_REGISTRY")]
    bundle_registry: Option<String>,
    // For images and the bundle registry.
    #[command(flatten)]
    registry: RegistryArgs,
    /// Jobs this process runs at once.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Operator policy applied to every bundle.
    #[arg(long, value_name = "FILE")]
    operator_config: Option<PathBuf>,
    /// Accept oci:/oci-archive:/docker-archive: images from under this directory.
    #[arg(long, value_name = "DIR")]
    local_images: Option<PathBuf>,
    /// Platform templates on disk, for BundleGen-queue requests naming unknown platforms.
    #[arg(long, value_name = "DIR", env = "RDK_PLATFORM_SEARCHPATH")]
    template_dir: Option<PathBuf>,
    /// An admin token file: read at start, or written if missing and no admin exists yet.
    #[arg(long, value_name = "FILE")]
    bootstrap_token: Option<PathBuf>,
    /// Attempts per job before a transient failure is final.
    #[arg(long, default_value_t = 3)]
    max_attempts: i64,
    /// Jobs pull only from these registries (HOST[:PORT], repeatable); default: any.
    #[arg(long, value_name = "HOST")]
    allow_registry: Vec<String>,
    /// Probe reports one device token may upload in an hour.
    #[arg(long, value_name = "N", default_value_t = 12)]
    probe_uploads_per_hour: usize,
    /// Also serve /metrics without a token on this address (plain HTTP; a
    /// private one), for a scraper; workers have no other HTTP.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Sign RALF packages with this key (PEM, ECDSA P-256 or RSA) ...
    #[arg(
        long,
        value_name = "PEM",
        env = "BUNDLEGEN_PACKAGE_SIGNING_KEY",
        requires = "package_signing_cert"
    )]
    package_signing_key: Option<PathBuf>,
    /// ... and this certificate (valid 3 more years at least).
    #[arg(
        long,
        value_name = "PEM",
        env = "BUNDLEGEN_PACKAGE_SIGNING_CERT",
        requires = "package_signing_key"
    )]
    package_signing_cert: Option<PathBuf>,
    /// Intermediate certificates for package signatures (repeatable).
    #[arg(long, value_name = "PEM", requires = "package_signing_cert")]
    package_signing_chain: Vec<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy).
    #[arg(long)]
    insecure_listen: bool,
    /// Connections held at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Close a connection after this many seconds with no request in progress and no byte moving.
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Also consume BundleGen's `bundlegen-requests` queue (replaces bundlegen-rabbitmq).
    #[arg(long)]
    bundlegen_queue: bool,
    /// Where BundleGen-queue bundles are copied when a request names no outputdir.
    #[arg(long, value_name = "DIR", env = "BUNDLE_STORE_DIR")]
    bundle_store_dir: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

fn config(common: &CommonArgs, listen: SocketAddr) -> Result<ServiceConfig, Failure> {
    let registry = common.registry.options(None).map_err(|error| Failure {
        code: EXIT_BAD_CONFIG,
        error,
    })?;
    Ok(ServiceConfig {
        queue: common.queue.clone(),
        bundle_registry: common.bundle_registry.clone(),
        registry,
        allowed_registries: common.allow_registry.clone(),
        probe_uploads_per_hour: common.probe_uploads_per_hour,
        metrics_listen: common.metrics_listen,
        workers: common.workers,
        operator_config: common.operator_config.clone(),
        local_images: common.local_images.clone(),
        template_dir: common.template_dir.clone(),
        bootstrap_token: common.bootstrap_token.clone(),
        package_signing: common
            .package_signing_key
            .clone()
            .zip(common.package_signing_cert.clone())
            .map(|(key, certificate)| bundlegen_core::package::SigningFiles {
                key,
                certificate: Some(certificate),
                chain: common.package_signing_chain.clone(),
                skip_expiry_check: false,
            }),
        max_attempts: common.max_attempts.max(1),
        listen,
        ..common.store.config()
    })
}

/// Runs `future` to its end; a configuration error exits 78.
fn run<T>(future: impl Future<Output = Result<T, ServiceError>>) -> Result<T, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime.block_on(future).map_err(|error| Failure {
        code: if matches!(error, ServiceError::Config(_)) {
            EXIT_BAD_CONFIG
        } else {
            1
        },
        error: error.into(),
    })
}

pub fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let mut config = config(&args.common, args.listen)?;
    config.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    config.insecure_listen = args.insecure_listen;
    config.connections = Limits {
        max_connections: args.max_connections.max(1),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        ..Limits::default()
    };
    run(service::serve(config))
}

pub fn worker(args: &WorkerArgs) -> Result<(), Failure> {
    let mut config = config(&args.common, SocketAddr::from(([127, 0, 0, 1], 0)))?;
    config.bundlegen_queue = args.bundlegen_queue;
    config.bundle_store_dir = args.bundle_store_dir.clone();
    run(service::worker(config))
}

#[derive(Args)]
pub struct TransferArgs {
    #[command(subcommand)]
    command: TransferCommand,
}

#[derive(clap::Subcommand)]
enum TransferCommand {
    /// Writes a deployment's platforms (every version), apps, tokens (their
    /// hashes) and signing key to FILE (mode 0600), to move it elsewhere.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Reads an export into a new, empty deployment (its database, and the
    /// key where it keeps one). Bundles are made again on the first lookup.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        file: PathBuf,
    },
}

pub fn transfer(args: &TransferArgs) -> Result<(), Failure> {
    match &args.command {
        TransferCommand::Export { store, out } => {
            let config = store.config();
            let deployment = run(service::transfer::export(&config))?;
            let text = serde_json::to_vec_pretty(&deployment).map_err(anyhow::Error::from)?;
            bundlegen_protocol::fsutil::write_file_atomic(out, &text, 0o600)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            let records = &deployment.records;
            println!(
                "{}: {} platforms, {} apps, {} tokens{}",
                out.display(),
                records.platforms.len(),
                records.apps.len(),
                records.tokens.len(),
                if deployment.signing_key.is_some() {
                    ", the signing key"
                } else {
                    ""
                }
            );
        }
        TransferCommand::Import { store, file } => {
            let text = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let deployment: service::transfer::Deployment = serde_json::from_slice(&text).map_err(|e| Failure {
                code: EXIT_BAD_CONFIG,
                error: anyhow::anyhow!("{}: not an export: {e}", file.display()),
            })?;
            let imported = run(service::transfer::import(&store.config(), &deployment))?;
            println!(
                "imported {} platforms ({} versions), {} apps, {} tokens{}",
                imported.platforms,
                imported.versions,
                imported.apps,
                imported.tokens,
                if imported.key_written {
                    "; the signing key written"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
