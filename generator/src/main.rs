//! `bundlegen`: command line of the bundle generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bundlegen::bundle::{Bundle, Place};
use bundlegen::image::{ImageReference, RegistryOptions, TargetPlatform, open_image, registry::Credentials};
use bundlegen::output::{self, Format, OutputOptions, Written};
use bundlegen::unpack::{DeviceNodes, Limits, UnpackOptions};
use bundlegen_protocol::archive::ArchiveOptions;
use bundlegen_protocol::archive::ipk::IpkControl;
use bundlegen_protocol::idmap::IdMapping;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bundlegen",
    version,
    about = "Turns OCI images into OCI bundles for RDK set-top boxes"
)]
struct Cli {
    /// More output: -v info, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Unpack an image into a plain OCI bundle, as `umoci unpack --rootless`
    /// does, and archive it.
    Unpack {
        /// Image reference: oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG],
        /// docker-archive:FILE[:NAME:TAG], docker://[HOST/]REPO[:TAG|@DIGEST].
        image: String,
        /// Bundle directory; archives are written next to it as OUTPUTDIR.tar.gz etc.
        output_dir: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Where the image comes from and which platform to pick.
#[derive(Args)]
struct SourceArgs {
    /// Registry credentials.
    #[arg(
        short = 'c',
        long = "creds",
        value_name = "USER:PASSWORD",
        env = "RDK_OCI_REGISTRY_CREDS",
        hide_env_values = true
    )]
    creds: Option<Credentials>,
    /// Talk plain HTTP to the registry (for a local test registry only).
    #[arg(long)]
    plain_http: bool,
    /// Extra CA certificates (PEM) to trust for the registry.
    #[arg(long, value_name = "FILE")]
    registry_ca: Option<PathBuf>,
    /// Keep downloaded blobs here between runs (default: a temporary directory).
    #[arg(long, value_name = "DIR", env = "BUNDLEGEN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Operating system to pick from a multi-platform image.
    #[arg(long, default_value = "linux")]
    os: String,
    /// Architecture to pick (aarch64, arm64, armv7, arm, x86_64, amd64, ...); default: this machine's.
    #[arg(long)]
    arch: Option<String>,
    /// Architecture variant (v7, v8, ...).
    #[arg(long)]
    variant: Option<String>,
    /// Refuse images with more uncompressed bytes than this.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_bytes)]
    max_bytes: u64,
    /// Refuse images with more entries than this.
    #[arg(long, value_name = "COUNT", default_value_t = Limits::default().max_entries)]
    max_entries: u64,
}

/// What to write.
#[derive(Args)]
struct OutputArgs {
    /// Output format: tar.gz, tar.zst, ipk or dir (directory only).
    #[arg(long, default_value = "tar.gz")]
    format: Format,
    /// Same as --format ipk.
    #[arg(short = 'i', long, env = "FILE_FORMAT_IPK")]
    ipk: bool,
    /// Replace existing outputs without asking.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Write only the archive, not the bundle directory next to it.
    #[arg(long)]
    archive_only: bool,
    /// Assemble the bundle here instead of next to OUTPUTDIR (e.g. on tmpfs,
    /// with --archive-only; the directory output must be on its filesystem).
    #[arg(long, value_name = "DIR", env = "BUNDLEGEN_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// User id mapping CONTAINER:HOST:SIZE for the config and the archive's owners (repeatable).
    #[arg(long, value_name = "C:H:S", value_parser = parse_mapping)]
    uid_map: Vec<IdMapping>,
    /// Group id mapping CONTAINER:HOST:SIZE (repeatable).
    #[arg(long, value_name = "C:H:S", value_parser = parse_mapping)]
    gid_map: Vec<IdMapping>,
    /// Octal mask applied to every archive entry's mode, e.g. 0755.
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    file_mask: Option<u32>,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long)]
    compression_level: Option<u32>,
    /// Compression threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_mapping(text: &str) -> Result<IdMapping, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [container, host, size] = parts.as_slice() else {
        return Err("expected CONTAINER:HOST:SIZE".into());
    };
    let number = |s: &str| s.parse::<u32>().map_err(|_| format!("{s:?} is not a number"));
    Ok(IdMapping {
        container_id: number(container)?,
        host_id: number(host)?,
        size: number(size)?,
    })
}

fn parse_octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mask| *mask <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal mode mask"))
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUNDLEGEN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("bundlegen={level},bundlegen_protocol={level},warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Unpack {
            image,
            output_dir,
            source,
            output,
        } => unpack(&image, &output_dir, &source, &output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn unpack(reference: &str, output_dir: &Path, source: &SourceArgs, args: &OutputArgs) -> Result<()> {
    let reference: ImageReference = reference.parse()?;
    let platform = match &source.arch {
        Some(arch) => TargetPlatform::new(&source.os, arch, source.variant.as_deref()),
        None => TargetPlatform {
            os: source.os.clone(),
            ..TargetPlatform::host()
        },
    };
    let format = if args.ipk { Format::Ipk } else { args.format };
    let mut options = OutputOptions {
        format,
        keep_dir: !args.archive_only,
        replace: args.yes,
        archive: ArchiveOptions {
            uid_map: args.uid_map.clone(),
            gid_map: args.gid_map.clone(),
            mode_mask: args.file_mask,
            ..ArchiveOptions::default()
        },
        level: args.compression_level,
        threads: args.threads,
        ipk: None,
    };
    output::check_destination(output_dir, &options)?;

    let registry = RegistryOptions {
        credentials: source.creds.clone(),
        plain_http: source.plain_http,
        ca_file: source.registry_ca.clone(),
        cache_dir: source.cache_dir.clone(),
        parallel_downloads: 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let image = runtime
        .block_on(open_image(&reference, &platform, &registry))
        .with_context(|| format!("opening {reference}"))?;
    let image_platform = image.platform();
    if platform.match_score(&image_platform).is_none() {
        tracing::warn!("{reference} is built for {image_platform}, not {platform}");
    }
    tracing::info!("{reference}: {} layers, for {image_platform}", image.layers.len());

    let unpack_options = UnpackOptions {
        limits: Limits {
            max_bytes: source.max_bytes,
            max_entries: source.max_entries,
        },
        device_nodes: DeviceNodes::for_current_user(),
    };
    let layers = image.layers.len();
    let place = Place {
        output: output_dir,
        work_dir: args.work_dir.as_deref(),
    };
    let (bundle, stats) = Bundle::from_image(
        &image,
        &place,
        &unpack_options,
        &args.uid_map,
        &args.gid_map,
        |index, stats| {
            tracing::info!(
                "applied layer {}/{layers} ({} entries, {} bytes so far)",
                index + 1,
                stats.entries,
                stats.file_bytes
            );
        },
    )?;
    tracing::info!("unpacked {} entries, {} bytes", stats.entries, stats.file_bytes);

    if format == Format::Ipk {
        let name = output_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        options.ipk = Some(IpkControl {
            package: name,
            version: "1.0.0".into(),
            architecture: format!(
                "{}{}",
                image_platform.architecture,
                image_platform.variant.as_deref().unwrap_or("")
            ),
            description: format!("OCI bundle of {reference}"),
            priority: "optional".into(),
            depends: Vec::new(),
        });
    }
    let written = output::write(bundle, output_dir, &options)?;
    report(&written);
    Ok(())
}

fn report(written: &Written) {
    if let Some(archive) = &written.archive {
        println!("{} {} {} bytes", archive.path.display(), archive.sha256, archive.size);
        if archive.summary.unmapped_owners > 0 {
            tracing::warn!(
                "{} entries have owners outside the id mappings (first: {}); they keep their container ids",
                archive.summary.unmapped_owners,
                archive
                    .summary
                    .first_unmapped
                    .as_deref()
                    .unwrap_or(Path::new("?"))
                    .display()
            );
        }
    }
    if let Some(dir) = &written.dir {
        println!("{}", dir.display());
    }
}
