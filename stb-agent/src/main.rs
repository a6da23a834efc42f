//! `stb-agent`: the on-box bundle agent daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stb_agent::RunError;
use stb_agent::config::{AgentConfig, DEFAULT_PATH};

/// Exit code of a configuration that cannot work (`EX_CONFIG`); the unit
/// has `RestartPreventExitStatus=78`.
const EXIT_BAD_CONFIG: u8 = 78;

/// Installs bundles atomically and launches them through Dobby (D-Bus
/// org.rdk.dac.BundleAgent); probes the box for the generator service.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML); without it, the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "STB_AGENT_LOG", default_value = "info")]
    log: tracing::Level,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    let config = match &cli.config {
        Some(path) => AgentConfig::load(path),
        None if std::path::Path::new(DEFAULT_PATH).exists() => AgentConfig::load(std::path::Path::new(DEFAULT_PATH)),
        None => Ok(AgentConfig::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stb_agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(RunError::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
