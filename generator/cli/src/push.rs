//! `bundlegen push`: a bundle or a RALF package to a test box in developer mode.

use std::path::PathBuf;

use clap::Args;

use crate::Failure;
use crate::args::runtime;

#[derive(Args)]
pub struct PushArgs {
    /// The box: HOST[:PORT] (HTTPS, port 9443 by default) or an http(s) URL.
    #[arg(long)]
    pub device: String,
    /// File with the box's developer token.
    #[arg(long)]
    pub token: PathBuf,
    /// The app id; default: a package's own id, else the archive's name
    /// without its extension.
    #[arg(long)]
    pub app: Option<String>,
    /// Launch the app once it is installed (a running one is stopped first);
    /// an app that stops within 2 seconds is a failed launch (exit 1, with
    /// its status and the start of its log).
    #[arg(long)]
    pub launch: bool,
    /// A CA certificate (PEM) to trust for the box's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The bundle archive (.tar.gz, .tar.zst or .ipk; installed as version
    /// `dev`) or RALF package (.ralf; installed as its own version, signed
    /// by a CA the box trusts unless it allows unsigned ones).
    pub bundle: PathBuf,
}

pub fn run(args: &PushArgs) -> Result<(), Failure> {
    let request = bundlegen_core::push::PushRequest {
        device: args.device.clone(),
        token: bundlegen_protocol::http::read_token(&args.token)?,
        archive: args.bundle.clone(),
        app: args.app.clone(),
        launch: args.launch,
        ca_file: args.ca.clone(),
    };
    let pushed = runtime()?.block_on(bundlegen_core::push::push(&request))?;
    match pushed.descriptor {
        Some(descriptor) => println!(
            "{} {}: installed ({} bytes) and launched (descriptor {descriptor}); running after 2 s",
            pushed.app, pushed.version, pushed.bytes
        ),
        None => println!("{} {}: installed ({} bytes)", pushed.app, pushed.version, pushed.bytes),
    }
    Ok(())
}
