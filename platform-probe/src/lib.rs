//! Inventories the shared libraries and device nodes of a set-top box (live,
//! or a rootfs image of one), so nobody writes library lists by hand.
//!
//! The generator uses the same ELF and loader rules to inventory an app
//! image, so both sides of library matching are read alike.

use std::path::{Path, PathBuf};

use bundlegen_protocol::config::platform::GpuDevice;
use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::probe::{HostProgram, ProbeReport, REPORT_FORMAT_VERSION};
use bundlegen_protocol::root::{RootDir, RootError, Symlinks};

pub mod cache;
pub mod devices;
pub mod elf;
pub mod formats;
pub mod gpu_layer;
pub mod ldcache;
pub mod libraries;
pub mod loader;
pub mod system;
pub mod upload;

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The box's root: `/` on the box, or a mounted or unpacked rootfs.
    pub root: PathBuf,
    /// Device nodes a platform template expects (its `gpu.devs`).
    pub expected_devices: Vec<GpuDevice>,
    /// Programs of the box that bundles run inside containers (Dobby's
    /// init, [`DEFAULT_PROGRAMS`]): recorded with what they need.
    pub programs: Vec<String>,
    /// Where what was read of each library is remembered between probes
    /// ([`cache`]); none: every file is read.
    pub cache: Option<PathBuf>,
}

/// What runs inside every Dobby-mode container: Dobby's init.
pub const DEFAULT_PROGRAMS: &[&str] = &[bundlegen_protocol::config::platform::DEFAULT_DOBBY_INIT];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open the root {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: RootError,
    },
}

/// Whether `root` is this system's own `/`.
fn is_live(root: &Path) -> bool {
    std::fs::canonicalize(root).is_ok_and(|p| p == Path::new("/"))
}

/// Probes libraries and devices under `options.root`. Problems with single
/// files become warnings in the report; only an unreadable root fails.
pub fn probe(options: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    let mut root = RootDir::open(&options.root, Symlinks::FollowInRoot).map_err(|source| ProbeError::Root {
        path: options.root.clone(),
        source,
    })?;
    let mut cache = match &options.cache {
        Some(file) => cache::ProbeCache::load(file),
        None => cache::ProbeCache::new(),
    };
    let scan = libraries::scan(&mut root, &mut cache);
    let mut system = system::describe(&mut root, &scan, is_live(&options.root));
    let mut warnings = scan.warnings.clone();
    let devices = devices::inventory(&mut devices::RootDevices(&mut root), &mut warnings);
    let device_mismatches = devices::check_expected(&devices, &options.expected_devices);
    let mut programs = Vec::new();
    for path in &options.programs {
        match libraries::describe_program(&mut root, &scan, path) {
            Ok(program) => programs.push(program),
            Err(warning) => warnings.push(warning),
        }
    }
    let libraries: Vec<_> = scan.libraries.into_values().collect();
    system.libraries_fingerprint = fingerprint(&libraries, &programs);
    if let Some(file) = &options.cache
        && let Err(e) = cache.save(file)
    {
        warnings.push(format!("{}: the probe cache was not saved: {e}", file.display()));
    }
    warnings.sort();
    warnings.dedup();
    Ok(ProbeReport {
        format_version: REPORT_FORMAT_VERSION,
        tool: concat!("platform-probe ", env!("CARGO_PKG_VERSION")).into(),
        system,
        libraries,
        devices,
        programs,
        device_mismatches,
        warnings,
    })
}

/// sha256 over each library's path, names and content hash, and each
/// program's path and hash, in order.
fn fingerprint(libraries: &[bundlegen_protocol::probe::Library], programs: &[HostProgram]) -> String {
    let mut text = String::new();
    for library in libraries {
        text.push_str(&library.path);
        for name in &library.names {
            text.push(' ');
            text.push_str(name);
        }
        text.push(' ');
        text.push_str(&library.sha256);
        text.push('\n');
    }
    for program in programs {
        text.push_str(&format!("program {} {}\n", program.path, program.sha256));
    }
    Sha256Digest::of(text.as_bytes()).hex()
}
