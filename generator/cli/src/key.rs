//! `bundlegen key`: the bundle signing key, for operators: make one, or
//! show the public key boxes pin (agent.toml's `trusted_keys`).

use std::path::PathBuf;

use bundlegen_protocol::signature::base64_encode;
use bundlegen_service::signing::Signer;
use clap::{Args, Subcommand};

use crate::Failure;

#[derive(Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Makes a new ed25519 key (PKCS#8, mode 0600; an existing file is
    /// never replaced) and prints its public key.
    Generate { file: PathBuf },
    /// Prints the public key of a key file (ours, or PKCS#8 from
    /// `openssl genpkey -algorithm ed25519`).
    Show { file: PathBuf },
}

pub fn run(args: &KeyArgs) -> Result<(), Failure> {
    let (signer, file) = match &args.command {
        KeyCommand::Generate { file } => (Signer::generate(file)?, file),
        KeyCommand::Show { file } => (Signer::load(file)?, file),
    };
    println!("{}", base64_encode(signer.public_key()));
    eprintln!(
        "the public key of {}: put it in the boxes' agent.toml trusted_keys",
        file.display()
    );
    Ok(())
}
