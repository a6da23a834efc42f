//! `bundlegen`: command line of the bundle generator. A drop-in for
//! BundleGen's `bundlegen generate` (same flags, environment variables and
//! exit codes: 0 success, 1 error, 2 incompatible app).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bundlegen_core::generate::{self, GenerateError, Generated};
use bundlegen_core::image::{ImageReference, RegistryOptions, TargetPlatform, registry::Credentials};
use bundlegen_core::output::{self, Format, OutputOptions, Written};
use bundlegen_core::pipeline;
use bundlegen_core::pipeline::libraries::{LibraryOptions, MatchMode};
use bundlegen_core::unpack::{DeviceNodes, Limits, UnpackOptions, UnpackStats};
use bundlegen_protocol::archive::ArchiveOptions;
use bundlegen_protocol::config::app::AppMetadata;
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::{PlatformTemplate, find_template, load_platform};
use bundlegen_protocol::config::{Parsed, Validate, load};
use bundlegen_protocol::idmap::IdMapping;
use clap::{Args, Parser, Subcommand};

mod service;

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
    Generate(Box<GenerateArgs>),
    /// Check platform templates, app metadata and operator config without an image.
    Validate(ValidateArgs),
    /// Unpack an image into a plain OCI bundle, as `umoci unpack --rootless`
    /// does, and archive it.
    Unpack(Box<UnpackArgs>),
    /// Run the generator service: HTTP API (and, without --queue, its job workers).
    Serve(Box<service::ServeArgs>),
    /// Run bundle jobs from RabbitMQ (scale-out; also BundleGen's queue).
    Worker(Box<service::WorkerArgs>),
    /// Send a bundle archive to a test box in developer mode: installed as
    /// version `dev` of its app, and optionally launched.
    Push(PushArgs),
}

#[derive(Args)]
struct PushArgs {
    /// The box: HOST[:PORT] (HTTPS, port 9443 by default) or an http(s) URL.
    #[arg(long)]
    device: String,
    /// File with the box's developer token.
    #[arg(long)]
    token: PathBuf,
    /// The app id; default: the archive's name without its extension.
    #[arg(long)]
    app: Option<String>,
    /// Launch the app once it is installed (a running one is stopped first).
    #[arg(long)]
    launch: bool,
    /// A CA certificate (PEM) to trust for the box's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The bundle archive (.tar.gz, .tar.zst or .ipk).
    bundle: PathBuf,
}

#[derive(Args)]
struct UnpackArgs {
    /// Image reference (see `generate`).
    image: String,
    /// Bundle directory; archives are written next to it.
    output_dir: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Operating system to pick from a multi-platform image.
    #[arg(long, default_value = "linux")]
    os: String,
    /// Architecture to pick (aarch64, arm64, armv7, arm, x86_64, amd64, ...); default: this machine's.
    #[arg(long)]
    arch: Option<String>,
    /// Architecture variant (v7, v8, ...).
    #[arg(long)]
    variant: Option<String>,
    /// User id mapping CONTAINER:HOST:SIZE for the config and the archive's owners (repeatable).
    #[arg(long, value_name = "C:H:S", value_parser = parse_mapping)]
    uid_map: Vec<IdMapping>,
    /// Group id mapping CONTAINER:HOST:SIZE (repeatable).
    #[arg(long, value_name = "C:H:S", value_parser = parse_mapping)]
    gid_map: Vec<IdMapping>,
    /// Octal mask applied to every archive entry's mode, e.g. 0755.
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    file_mask: Option<u32>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Image reference: oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME:TAG], docker://[HOST/]REPO[:TAG|@DIGEST].
    image: String,
    /// Bundle directory; the archive is written next to it (OUTPUTDIR.tar.gz).
    output_dir: PathBuf,
    #[command(flatten)]
    templates: TemplateArgs,
    /// App metadata file (default: /appmetadata.json in the image).
    #[arg(short = 'a', long = "appmetadata", value_name = "PATH")]
    app_metadata: Option<PathBuf>,
    /// Operator configuration applied to every platform.
    #[arg(long, value_name = "FILE", env = "BUNDLEGEN_OPERATOR_CONFIG")]
    operator_config: Option<PathBuf>,
    /// No dependency walking or version matching (graphics libraries and
    /// plugin dependencies are still mounted from the box).
    #[arg(short = 'n', long = "nodepwalking")]
    no_dep_walking: bool,
    /// Library matching mode: normal (by symbol versions), image (keep the
    /// image's copies) or host (take the box's).
    #[arg(short = 'm', long = "libmatchingmode", default_value = "normal")]
    lib_matching_mode: MatchMode,
    /// Delete libraries no program of the image needs (keeps what the
    /// metadata lists as dlopen'ed and names found in binaries).
    #[arg(long)]
    prune_unused: bool,
    /// Create mount points in the rootfs (for read-only rootfs platforms).
    #[arg(short = 'r', long = "createmountpoints")]
    create_mount_points: bool,
    /// Override the app id of the metadata.
    #[arg(short = 'x', long = "appid")]
    app_id: Option<String>,
    /// A plain OCI bundle for crun, without Dobby (works with any metadata).
    #[arg(short = 'u', long)]
    crun: bool,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct TemplateArgs {
    /// Platform template name (NAME.json and NAME_libs.json in the search path).
    #[arg(short = 'p', long = "platform", env = "RDK_PLATFORM")]
    platform: Option<String>,
    /// Directory searched (recursively) for platform templates.
    #[arg(
        short = 's',
        long = "searchpath",
        env = "RDK_PLATFORM_SEARCHPATH",
        default_value = "templates"
    )]
    search_path: PathBuf,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    templates: TemplateArgs,
    /// App metadata file to check (and, with -p, to check against the platform).
    #[arg(short = 'a', long = "appmetadata", value_name = "PATH")]
    app_metadata: Option<PathBuf>,
    /// Operator configuration file to check.
    #[arg(long, value_name = "FILE", env = "BUNDLEGEN_OPERATOR_CONFIG")]
    operator_config: Option<PathBuf>,
}

/// How registries are reached (`generate`, `unpack`, `serve` and `worker`).
#[derive(Args)]
struct RegistryArgs {
    /// Registry credentials.
    #[arg(
        short = 'c',
        long = "creds",
        value_name = "USER:PASSWORD",
        env = "RDK_OCI_REGISTRY_CREDS",
        hide_env_values = true
    )]
    creds: Option<Credentials>,
    /// Talk plain HTTP to registries (local test registries only).
    #[arg(long)]
    plain_http: bool,
    /// Extra CA certificates (PEM) to trust for registries.
    #[arg(long, value_name = "FILE")]
    registry_ca: Option<PathBuf>,
    /// Keep downloaded blobs here between runs (default: a temporary directory).
    #[arg(long, value_name = "DIR", env = "BUNDLEGEN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            credentials: self.creds.clone(),
            plain_http: self.plain_http,
            ca_file: self.registry_ca.clone(),
            cache_dir: self.cache_dir.clone(),
            parallel_downloads: 0,
        }
    }
}

/// Where the image comes from.
#[derive(Args)]
struct SourceArgs {
    #[command(flatten)]
    registry: RegistryArgs,
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
        Command::Generate(args) => run_generate(&args),
        Command::Validate(args) => run_validate(&args),
        Command::Unpack(args) => run_unpack(&args),
        Command::Serve(args) => service::serve(&args),
        Command::Worker(args) => service::worker(&args),
        Command::Push(args) => run_push(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn run_push(args: &PushArgs) -> Result<(), Failure> {
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
            "{} {}: installed ({} bytes) and launched (descriptor {descriptor})",
            pushed.app, pushed.version, pushed.bytes
        ),
        None => println!("{} {}: installed ({} bytes)", pushed.app, pushed.version, pushed.bytes),
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn unpack_options(source: &SourceArgs) -> UnpackOptions {
    UnpackOptions {
        limits: Limits {
            max_bytes: source.max_bytes,
            max_entries: source.max_entries,
        },
        device_nodes: DeviceNodes::for_current_user(),
    }
}

fn output_options(args: &OutputArgs) -> OutputOptions {
    OutputOptions {
        format: if args.ipk { Format::Ipk } else { args.format },
        keep_dir: !args.archive_only,
        replace: args.yes,
        archive: ArchiveOptions::default(),
        level: args.compression_level,
        threads: args.threads,
        ipk: None,
    }
}

/// A progress bar over layers on a terminal; nothing otherwise.
fn layer_progress() -> impl FnMut(usize, usize, &UnpackStats) {
    let bar = indicatif::ProgressBar::new(0);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("unpacking layers [{bar:30}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    move |index, layers, stats| {
        bar.set_length(layers as u64);
        bar.set_position(index as u64 + 1);
        bar.set_message(format!("{} MB", stats.file_bytes / 1_000_000));
        tracing::info!(
            "applied layer {}/{layers} ({} entries, {} bytes so far)",
            index + 1,
            stats.entries,
            stats.file_bytes
        );
        if index + 1 == layers {
            bar.finish_and_clear();
        }
    }
}

/// BundleGen asks before deleting an existing output; so do we, on a terminal.
fn confirm_replace(output_dir: &Path, options: &mut OutputOptions) -> Result<()> {
    if options.replace || output::check_destination(output_dir, options).is_ok() || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{} exists. Replace it? [y/N] ", output_dir.display());
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        options.replace = true;
        Ok(())
    } else {
        anyhow::bail!("{} exists; not replaced", output_dir.display())
    }
}

fn load_template(args: &TemplateArgs) -> Result<Parsed<PlatformTemplate>> {
    let name = args
        .platform
        .as_deref()
        .context("no platform: pass -p NAME (or set RDK_PLATFORM)")?;
    let files = find_template(&args.search_path, name)?;
    Ok(load_platform(&files)?)
}

fn warn_all(warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

fn run_generate(args: &GenerateArgs) -> Result<(), Failure> {
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
        registry: &args.source.registry.options(),
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

/// Loads `file` if given, printing its warnings and that it is fine.
fn validate_file<T: serde::de::DeserializeOwned + Validate>(
    file: Option<&Path>,
    what: &str,
) -> Result<Option<T>, Failure> {
    let Some(file) = file else { return Ok(None) };
    let parsed: Parsed<T> = load(file)?;
    warn_all(&parsed.warnings);
    println!("{what} {}: ok", file.display());
    Ok(Some(parsed.value))
}

fn run_validate(args: &ValidateArgs) -> Result<(), Failure> {
    let platform = match &args.templates.platform {
        Some(_) => {
            let parsed = load_template(&args.templates)?;
            warn_all(&parsed.warnings);
            println!("platform {}: ok", parsed.value.platform_name);
            Some(parsed.value)
        }
        None => None,
    };
    let app: Option<AppMetadata> = validate_file(args.app_metadata.as_deref(), "app metadata")?;
    let operator: Option<OperatorConfig> = validate_file(args.operator_config.as_deref(), "operator config")?;
    if platform.is_none() && app.is_none() && operator.is_none() {
        return Err(anyhow::anyhow!("nothing to check: pass -p NAME, -a FILE or --operator-config FILE").into());
    }
    if let (Some(platform), Some(app)) = (&platform, &app) {
        let warnings =
            generate::check_compatibility(platform, app, &operator.unwrap_or_default()).map_err(|e| Failure {
                code: e.exit_code(),
                error: e.into(),
            })?;
        warn_all(&warnings);
        println!("{} can run on {}", app.id, platform.platform_name);
    }
    Ok(())
}

fn run_unpack(args: &UnpackArgs) -> Result<(), Failure> {
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
        registry: &args.source.registry.options(),
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
