//! `bundlegen unpack`: an image as a plain OCI bundle, as
//! `umoci unpack --rootless` makes it, and its archive.

use std::path::PathBuf;

use bundlegen_core::generate;
use bundlegen_core::image::{ImageReference, TargetPlatform};
use bundlegen_protocol::idmap::IdMapping;
use clap::Args;

use crate::Failure;
use crate::args::{
    OutputArgs, SourceArgs, confirm_replace, layer_progress, output_options, parse_mapping, parse_octal, report,
    runtime, unpack_options, warn_all,
};

#[derive(Args)]
pub struct UnpackArgs {
    /// Image reference (see `generate`).
    pub image: String,
    /// Bundle directory; archives are written next to it.
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Operating system to pick from a multi-platform image.
    #[arg(long, default_value = "linux")]
    pub os: String,
    /// Architecture to pick (aarch64, arm64, armv7, arm, x86_64, amd64, ...); default: this machine's.
    #[arg(long)]
    pub arch: Option<String>,
    /// Architecture variant (v7, v8, ...).
    #[arg(long)]
    pub variant: Option<String>,
    /// User id mapping CONTAINER:HOST:SIZE for the config and the archive's owners (repeatable).
    #[arg(long, value_name = "C:H:S", value_parser = parse_mapping)]
    pub uid_map: Vec<IdMapping>,
    /// Group id mapping CONTAINER:HOST:SIZE (repeatable).
    #[arg(long, value_name = "C:H:S", value_parser = parse_mapping)]
    pub gid_map: Vec<IdMapping>,
    /// Octal mask applied to every archive entry's mode, e.g. 0755.
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    pub file_mask: Option<u32>,
}

pub fn run(args: &UnpackArgs) -> Result<(), Failure> {
    let platform = match &args.arch {
        Some(arch) => TargetPlatform::new(&args.os, arch, args.variant.as_deref()),
        None => TargetPlatform {
            os: args.os.clone(),
            ..TargetPlatform::host()
        },
    };
    let reference: ImageReference = args.image.parse()?;
    let mut output_options = output_options(&args.output);
    output_options.archive.mode_mask = args.file_mask;
    confirm_replace(&args.output_dir, &mut output_options)?;
    let request = generate::UnpackRequest {
        image: &reference,
        platform: &platform,
        output: &args.output_dir,
        work_dir: args.output.work_dir.as_deref(),
        uid_map: &args.uid_map,
        gid_map: &args.gid_map,
        registry: &args.source.registry.options(reference.registry_host())?,
        unpack: &unpack_options(&args.source),
        output_options: &output_options,
    };
    let unpacked = runtime()?
        .block_on(generate::unpack(&request, layer_progress()))
        .map_err(|e| Failure {
            code: e.exit_code(),
            error: e.into(),
        })?;
    warn_all(&unpacked.warnings);
    tracing::info!(
        "unpacked {} entries, {} bytes",
        unpacked.unpacked.entries,
        unpacked.unpacked.file_bytes
    );
    report(&unpacked.written);
    Ok(())
}
