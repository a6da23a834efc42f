//! `dobby-test-double`: a stand-in for DobbyDaemon in tests (not Dobby; see
//! the library's documentation for what it checks and what it simulates).

use anyhow::{Context, Result};
use clap::Parser;

/// Serves org.rdk.dobby (a test double of Dobby) on a D-Bus bus.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Bus address (`unix:path=...`); default: the system bus.
    #[arg(
        long,
        env = "DBUS_SYSTEM_BUS_ADDRESS",
        default_value = "unix:path=/run/dbus/system_bus_socket"
    )]
    address: String,
    /// Run crun-mode bundles (no rdkPlugins) with real crun.
    #[arg(long)]
    crun: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let _connection = dobby_double::serve(&cli.address, dobby_double::Dobby::new(cli.crun))
        .await
        .with_context(|| format!("serving {} on {}", dobby_double::BUS_NAME, cli.address))?;
    eprintln!(
        "dobby-test-double: serving {} on {}",
        dobby_double::BUS_NAME,
        cli.address
    );
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}
