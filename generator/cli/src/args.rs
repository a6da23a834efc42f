//! Options several commands share: templates, registries, image sources,
//! outputs; and what they do with them.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bundlegen_core::image::RegistryOptions;
use bundlegen_core::image::registry::{CredentialStore, CredentialsArg};
use bundlegen_core::output::{self, Format, OutputOptions, Written};
use bundlegen_core::unpack::{DeviceNodes, Limits, UnpackOptions, UnpackStats};
use bundlegen_protocol::archive::ArchiveOptions;
use bundlegen_protocol::config::Parsed;
use bundlegen_protocol::config::platform::{PlatformTemplate, find_template, load_platform};
use bundlegen_protocol::idmap::IdMapping;
use clap::Args;

#[derive(Args)]
pub struct TemplateArgs {
    /// Platform template name (NAME.json and NAME_libs.json in the search path).
    #[arg(short = 'p', long = "platform", env = "RDK_PLATFORM")]
    pub platform: Option<String>,
    /// Directory searched (recursively) for platform templates.
    #[arg(
        short = 's',
        long = "searchpath",
        env = "RDK_PLATFORM_SEARCHPATH",
        default_value = "templates"
    )]
    pub search_path: PathBuf,
}

/// How registries are reached (`generate`, `unpack`, `serve` and `worker`).
#[derive(Args)]
pub struct RegistryArgs {
    /// Registry credentials for a host: HOST[:PORT]=USER:PASSWORD (repeatable).
    /// USER:PASSWORD alone (BundleGen's form) is for the image's registry.
    #[arg(
        short = 'c',
        long = "creds",
        value_name = "HOST=USER:PASSWORD",
        env = "RDK_OCI_REGISTRY_CREDS",
        hide_env_values = true
    )]
    pub creds: Vec<CredentialsArg>,
    /// Credentials from a docker-style auth file (as skopeo and podman write it).
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
    /// A token server on another host that may receive a registry's
    /// credentials (HTTPS only; Docker Hub's is built in). Repeatable.
    #[arg(long, value_name = "HOST")]
    pub token_realm: Vec<String>,
    /// Talk plain HTTP to registries (local test registries only).
    #[arg(long)]
    pub plain_http: bool,
    /// Extra CA certificates (PEM) to trust for registries.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
    /// Keep downloaded blobs here between runs (default: a temporary directory).
    #[arg(long, value_name = "DIR", env = "BUNDLEGEN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl RegistryArgs {
    /// The options; credentials without a host are for `image_host`, the
    /// registry of the one image this command pulls (none: refused).
    pub fn options(&self, image_host: Option<&str>) -> Result<RegistryOptions> {
        let mut credentials = CredentialStore::default();
        if let Some(file) = &self.authfile {
            credentials.load_auth_file(file).map_err(anyhow::Error::msg)?;
        }
        for arg in &self.creds {
            let host = match (&arg.host, image_host) {
                (Some(host), _) => host.as_str(),
                (None, Some(host)) => host,
                (None, None) => anyhow::bail!(
                    "--creds USER:PASSWORD names no registry: give HOST=USER:PASSWORD (credentials go to their host only)"
                ),
            };
            credentials.insert(host, arg.credentials.clone());
        }
        Ok(RegistryOptions {
            credentials,
            plain_http: self.plain_http,
            token_realms: self.token_realm.clone(),
            ca_file: self.registry_ca.clone(),
            cache_dir: self.cache_dir.clone(),
            parallel_downloads: 0,
        })
    }
}

/// Where the image comes from.
#[derive(Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Refuse images with more uncompressed bytes than this.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_bytes)]
    pub max_bytes: u64,
    /// Refuse images with more entries than this.
    #[arg(long, value_name = "COUNT", default_value_t = Limits::default().max_entries)]
    pub max_entries: u64,
}

/// What to write.
#[derive(Args)]
pub struct OutputArgs {
    /// Output format: tar.gz, tar.zst, ipk or dir (directory only).
    #[arg(long, default_value = "tar.gz")]
    pub format: Format,
    /// Same as --format ipk.
    #[arg(short = 'i', long, env = "FILE_FORMAT_IPK")]
    pub ipk: bool,
    /// Replace existing outputs without asking.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Write only the archive, not the bundle directory next to it.
    #[arg(long)]
    pub archive_only: bool,
    /// Assemble the bundle here instead of next to OUTPUTDIR (e.g. on tmpfs,
    /// with --archive-only; the directory output must be on its filesystem).
    #[arg(long, value_name = "DIR", env = "BUNDLEGEN_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long)]
    pub compression_level: Option<u32>,
    /// Compression threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn parse_mapping(text: &str) -> Result<IdMapping, String> {
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

pub fn parse_octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mask| *mask <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal mode mask"))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn unpack_options(source: &SourceArgs) -> UnpackOptions {
    UnpackOptions {
        limits: Limits {
            max_bytes: source.max_bytes,
            max_entries: source.max_entries,
        },
        device_nodes: DeviceNodes::for_current_user(),
    }
}

pub fn output_options(args: &OutputArgs) -> OutputOptions {
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
pub fn layer_progress() -> impl FnMut(usize, usize, &UnpackStats) {
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
pub fn confirm_replace(output_dir: &Path, options: &mut OutputOptions) -> Result<()> {
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

pub fn load_template(args: &TemplateArgs) -> Result<Parsed<PlatformTemplate>> {
    let name = args
        .platform
        .as_deref()
        .context("no platform: pass -p NAME (or set RDK_PLATFORM)")?;
    let files = find_template(&args.search_path, name)?;
    Ok(load_platform(&files)?)
}

pub fn warn_all(warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

pub fn report(written: &Written) {
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
