//! `platform-probe`: prints (or writes) what a box has, in the generator's
//! format or in BundleGen's and CDI's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::config::{ConfigError, load};
use bundlegen_protocol::fsutil::write_file_atomic;
use clap::{Parser, ValueEnum};
use platform_probe::{ProbeOptions, formats, probe};

/// Exit code for a template that cannot be read: a configuration problem,
/// which retrying will not fix.
const EXIT_BAD_CONFIG: u8 = 2;

/// Exit code for a box that does not meet the `--expect` template (another
/// architecture, device nodes missing or different); the report is still
/// written.
const EXIT_NOT_AS_EXPECTED: u8 = 3;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Everything, in the generator's own format (it prefers this one).
    Full,
    /// BundleGen's `NAME_libs.json`.
    BundlegenLibs,
    /// A Container Device Interface spec.
    Cdi,
    /// Device nodes for a BundleGen template's `gpu.devs`.
    GpuDevs,
    /// The GPU layer RALF apps are overlaid with: `-o DIR` gets `rootfs/`
    /// (the graphics libraries' closure) and `config.json` (vendorGpuSupport).
    GpuLayer,
}

/// Inventories a set-top box's shared libraries and device nodes.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The box's root filesystem: `/` on the box, or a mounted or unpacked
    /// rootfs image of it (any architecture).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    #[arg(long, value_enum, default_value = "full")]
    format: Format,
    /// Write here (atomically) instead of to standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// A platform template whose `gpu.devs` the box should have; the report
    /// lists the nodes that are missing or different.
    #[arg(long, value_name = "TEMPLATE")]
    expect: Option<PathBuf>,
    /// A program of the box that runs inside containers, recorded with the
    /// libraries and symbol versions it needs (repeat for more; the
    /// template given with --expect adds its `dobby.dobbyInitPath`).
    #[arg(long = "program", value_name = "PATH", default_values = platform_probe::DEFAULT_PROGRAMS)]
    programs: Vec<String>,
    /// Send the full report to the generator service: its
    /// `.../v1/platforms/NAME/probe` URL.
    #[arg(long, value_name = "URL", requires = "token")]
    upload: Option<String>,
    /// A file holding the service token (device or platform-team role).
    #[arg(long, value_name = "FILE", requires = "upload")]
    token: Option<PathBuf>,
    /// Trust this CA (PEM) for the service, besides the system's.
    #[arg(long, value_name = "FILE", requires = "upload")]
    ca: Option<PathBuf>,
    /// With --format gpu-layer: copy the libraries instead of hard-linking them.
    #[arg(long)]
    copy: bool,
    /// Remember what was read of each library in FILE, and read only the
    /// files that changed since (device, inode, size, mtime, ctime).
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Do not print warnings on standard error (they stay in the report).
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(Expected::Met) => ExitCode::SUCCESS,
        Ok(Expected::NotMet(differences)) => {
            eprintln!(
                "error: the box does not meet {}: {differences} difference(s), listed above",
                cli.expect.as_deref().unwrap_or(Path::new("the template")).display()
            );
            ExitCode::from(EXIT_NOT_AS_EXPECTED)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether the box meets the `--expect` template (met when none is given).
enum Expected {
    Met,
    /// How many differences were printed.
    NotMet(usize),
}

fn run(cli: &Cli) -> Result<Expected> {
    let mut programs = cli.programs.clone();
    let template = match &cli.expect {
        Some(path) => Some(load::<PlatformTemplate>(path)?.value),
        None => None,
    };
    if let Some(init) = template.as_ref().map(|t| t.dobby().dobby_init().to_string())
        && !programs.contains(&init)
    {
        programs.push(init);
    }
    let expected_devices = template
        .as_ref()
        .and_then(|t| t.gpu.as_ref())
        .map(|gpu| gpu.devs.clone())
        .unwrap_or_default();
    let report = probe(&ProbeOptions {
        root: cli.root.clone(),
        expected_devices,
        programs,
        cache: cli.cache.clone(),
    })?;
    let mut differences: Vec<String> = report
        .device_mismatches
        .iter()
        .map(|m| format!("{}: {}", m.path, m.detail))
        .collect();
    if let Some(template) = &template
        && let (Some(expected), Some(probed)) = (template.abi(), report.system.abi)
        && !expected.can_load(&probed)
    {
        differences.push(format!(
            "the box is {}, the template's arch is {:?}",
            probed.arch_name(),
            template.arch.arch
        ));
    }
    if !cli.quiet {
        for warning in &report.warnings {
            eprintln!("warning: {warning}");
        }
    }
    for difference in &differences {
        eprintln!("not as expected: {difference}");
    }
    let expected = match differences.len() {
        0 => Expected::Met,
        n => Expected::NotMet(n),
    };
    if let Some(url) = &cli.upload {
        let token = bundlegen_protocol::http::read_token(cli.token.as_deref().unwrap_or_else(|| Path::new("")))?;
        let report_json = serde_json::to_vec(&report).context("serialising the report")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let accepted = runtime.block_on(platform_probe::upload::upload(
            url,
            &token,
            report_json,
            cli.ca.as_deref(),
            &bundlegen_protocol::tls::Remedies {
                plain_http: "give --upload as an http:// URL",
                trust_ca: "pass the service's CA with --ca FILE",
            },
        ))?;
        for warning in &accepted.warnings {
            eprintln!("warning: the service says: {warning}");
        }
        if accepted.held {
            eprintln!(
                "uploaded: version {} of platform {} is held for the platform team's review ({})",
                accepted.version,
                accepted.name,
                accepted.reasons.join("; ")
            );
        } else {
            eprintln!(
                "uploaded: platform {} is now version {}",
                accepted.name, accepted.version
            );
        }
        if cli.output.is_none() {
            return Ok(expected);
        }
    }
    if let Format::GpuLayer = cli.format {
        let out = cli
            .output
            .as_deref()
            .context("--format gpu-layer writes a directory: pass -o DIR")?;
        let layer = platform_probe::gpu_layer::write(&report, &cli.root, out, cli.copy)
            .with_context(|| format!("writing the GPU layer {}", out.display()))?;
        eprintln!(
            "GPU layer {}: {} libraries, {} device nodes",
            out.display(),
            layer.libraries.len(),
            layer.config.vendor_gpu_support.dev_nodes.len()
        );
        return Ok(expected);
    }
    let mut text = match cli.format {
        Format::GpuLayer => unreachable!("written above"),
        Format::Full => serde_json::to_string_pretty(&report),
        Format::BundlegenLibs => serde_json::to_string_pretty(&report.libs_file()),
        Format::Cdi => serde_json::to_string_pretty(&formats::cdi(&report)),
        Format::GpuDevs => serde_json::to_string_pretty(&formats::gpu_devs(&report)),
    }
    .context("serialising the report")?;
    text.push('\n');
    match &cli.output {
        Some(path) => {
            write_file_atomic(path, text.as_bytes(), 0o644).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing to standard output")?,
    }
    Ok(expected)
}
