//! `bundlegen`: command line of the bundle generator. A drop-in for
//! BundleGen's `bundlegen generate` (same flags, environment variables and
//! exit codes: 0 success, 1 error, 2 incompatible app).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod app;
mod args;
mod generate;
mod key;
mod package;
mod platform;
mod push;
mod remote;
mod service;
mod token;
mod unpack;
mod validate;

#[derive(Parser)]
#[command(
    name = "bundlegen",
    version,
    about = "Turns OCI images into OCI bundles for RDK set-top boxes"
)]
struct Cli {
    /// More output: -v info, -vv debug (every library decision), -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a bundle of IMAGE for a platform (BundleGen's command).
    Generate(Box<generate::GenerateArgs>),
    /// Check platform templates, app metadata and operator config without an image.
    Validate(validate::ValidateArgs),
    /// Unpack an image into a plain OCI bundle, as `umoci unpack --rootless`
    /// does, and archive it.
    Unpack(Box<unpack::UnpackArgs>),
    /// Run the generator service: HTTP API (and, without --queue, its job workers).
    Serve(Box<service::ServeArgs>),
    /// Run bundle jobs from RabbitMQ (scale-out; also BundleGen's queue).
    Worker(Box<service::WorkerArgs>),
    /// Send a bundle archive to a test box in developer mode: installed as
    /// version `dev` of its app, and optionally launched.
    Push(push::PushArgs),
    /// A service's platforms: list, show, upload, versions, diff, accept, policy.
    Platform(platform::PlatformArgs),
    /// A service's app versions: register, show, list, look up their bundles.
    App(app::AppArgs),
    /// A service's tokens (admin): create, list, revoke.
    Token(token::TokenArgs),
    /// The bundle signing key: generate one, show its public key.
    Key(key::KeyArgs),
    /// A deployment's records and key: export them, import them elsewhere.
    Service(service::TransferArgs),
    /// Make a RALF package (RDK's signed OCI-artifact app package) of IMAGE.
    Package(Box<package::PackageArgs>),
    /// Verify a RALF package: signature, certificate chain, every blob, dm-verity.
    VerifyPackage(package::VerifyArgs),
    /// Show what a RALF package holds.
    PackageInfo(package::InfoArgs),
    /// Push a RALF package to an OCI registry (its signature under the cosign tag).
    PackagePush(package::PushArgs),
    /// Pull a RALF package from an OCI registry into a .ralf file.
    PackagePull(package::PullArgs),
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUNDLEGEN_LOG").unwrap_or_else(|_| {
        let ours = ["bundlegen", "bundlegen_core", "bundlegen_service", "bundlegen_protocol"];
        let directives: Vec<String> = ours.iter().map(|target| format!("{target}={level}")).collect();
        tracing_subscriber::EnvFilter::new(format!("{},warn", directives.join(",")))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// An error with the exit code it ends the program with.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Worker(_));
    init_logging(if long_running { cli.verbose.max(1) } else { cli.verbose });
    let result = match cli.command {
        Command::Generate(args) => generate::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Unpack(args) => unpack::run(&args),
        Command::Serve(args) => service::serve(&args),
        Command::Worker(args) => service::worker(&args),
        Command::Push(args) => push::run(&args),
        Command::Platform(args) => platform::run(&args),
        Command::App(args) => app::run(&args),
        Command::Token(args) => token::run(&args),
        Command::Key(args) => key::run(&args),
        Command::Service(args) => service::transfer(&args),
        Command::Package(args) => package::run(&args),
        Command::VerifyPackage(args) => package::verify_package(&args),
        Command::PackageInfo(args) => package::package_info(&args),
        Command::PackagePush(args) => package::package_push(&args),
        Command::PackagePull(args) => package::package_pull(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
