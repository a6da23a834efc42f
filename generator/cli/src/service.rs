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

/// What `serve` and `worker` share.
#[derive(Args)]
pub struct CommonArgs {
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
    /// The bundle signing key (ed25519 PKCS#8; created if missing); default: in --data-dir.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
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
        database: common.database.clone(),
        queue: common.queue.clone(),
        bundle_registry: common.bundle_registry.clone(),
        registry,
        allowed_registries: common.allow_registry.clone(),
        probe_uploads_per_hour: common.probe_uploads_per_hour,
        metrics_listen: common.metrics_listen,
        workers: common.workers,
        signing_key: common.signing_key.clone(),
        operator_config: common.operator_config.clone(),
        local_images: common.local_images.clone(),
        template_dir: common.template_dir.clone(),
        bootstrap_token: common.bootstrap_token.clone(),
        max_attempts: common.max_attempts.max(1),
        ..ServiceConfig::embedded(&common.data_dir, listen)
    })
}

fn run(future: impl Future<Output = Result<(), ServiceError>>) -> Result<(), Failure> {
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
