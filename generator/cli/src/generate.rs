//! `bundlegen generate`: BundleGen's command.

use std::path::PathBuf;

use bundlegen_core::generate::{self, GenerateError, Generated};
use bundlegen_core::image::ImageReference;
use bundlegen_core::pipeline;
use bundlegen_core::pipeline::libraries::{LibraryOptions, MatchMode};
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::{Parsed, load};
use clap::Args;

use crate::Failure;
use crate::args::{
    OutputArgs, SourceArgs, TemplateArgs, confirm_replace, layer_progress, load_template, output_options, report,
    runtime, unpack_options, warn_all,
};

#[derive(Args)]
pub struct GenerateArgs {
    /// Image reference: oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME:TAG], docker://[HOST/]REPO[:TAG|@DIGEST].
    pub image: String,
    /// Bundle directory; the archive is written next to it (OUTPUTDIR.tar.gz).
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub templates: TemplateArgs,
    /// App metadata file (default: /appmetadata.json in the image).
    #[arg(short = 'a', long = "appmetadata", value_name = "PATH")]
    pub app_metadata: Option<PathBuf>,
    /// Operator configuration applied to every platform.
    #[arg(long, value_name = "FILE", env = "BUNDLEGEN_OPERATOR_CONFIG")]
    pub operator_config: Option<PathBuf>,
    /// No dependency walking or version matching (graphics libraries and
    /// plugin dependencies are still mounted from the box).
    #[arg(short = 'n', long = "nodepwalking")]
    pub no_dep_walking: bool,
    /// Library matching mode: normal (by symbol versions), image (keep the
    /// image's copies) or host (take the box's).
    #[arg(short = 'm', long = "libmatchingmode", default_value = "normal")]
    pub lib_matching_mode: MatchMode,
    /// Delete libraries no program of the image needs (keeps what the
    /// metadata lists as dlopen'ed and names found in binaries).
    #[arg(long)]
    pub prune_unused: bool,
    /// Create mount points in the rootfs (for read-only rootfs platforms).
    #[arg(short = 'r', long = "createmountpoints")]
    pub create_mount_points: bool,
    /// Override the app id of the metadata.
    #[arg(short = 'x', long = "appid")]
    pub app_id: Option<String>,
    /// A plain OCI bundle for crun, without Dobby (works with any metadata).
    #[arg(short = 'u', long)]
    pub crun: bool,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: &GenerateArgs) -> Result<(), Failure> {
    let reference: ImageReference = args.image.parse()?;
    let platform = load_template(&args.templates)?;
    warn_all(&platform.warnings);
    let operator = match &args.operator_config {
        Some(file) => {
            let parsed: Parsed<OperatorConfig> = load(file)?;
            warn_all(&parsed.warnings);
            parsed.value
        }
        None => OperatorConfig::default(),
    };
    let mut output_options = output_options(&args.output);
    confirm_replace(&args.output_dir, &mut output_options)?;
    let options = pipeline::Options {
        crun: args.crun,
        create_mount_points: args.create_mount_points,
        libraries: LibraryOptions {
            mode: args.lib_matching_mode,
            walk: !args.no_dep_walking,
            prune_unused: args.prune_unused,
        },
    };
    let request = generate::Request {
        image: &reference,
        output: &args.output_dir,
        work_dir: args.output.work_dir.as_deref(),
        platform: &platform.value,
        app_metadata: args.app_metadata.as_deref(),
        app_id: args.app_id.as_deref(),
        operator: &operator,
        options: &options,
        registry: &args.source.registry.options(reference.registry_host())?,
        unpack: &unpack_options(&args.source),
        output_options: &output_options,
    };
    let progress = layer_progress();
    let generated: Result<Generated, GenerateError> = runtime()?.block_on(generate::generate(&request, progress));
    let generated = generated.map_err(|e| Failure {
        code: e.exit_code(),
        error: e.into(),
    })?;
    warn_all(&generated.warnings);
    for note in &generated.library_notes {
        tracing::debug!("{note}");
    }
    tracing::info!(
        "{} for {}: {} entries unpacked",
        generated.app_id,
        platform.value.platform_name,
        generated.unpacked.entries
    );
    report(&generated.written);
    Ok(())
}
