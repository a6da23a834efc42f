//! What an app package can leave to the packages it is layered on: files
//! identical (content and mode) at the same path, and shared libraries a
//! dependency provides at the same path in an ABI-compatible version. The
//! libraries are decided by the same rules and code as `generate`'s library
//! matching (`pipeline::libraries::decide`), with the dependencies' merged
//! content as "the box": same SONAME, class and machine, every symbol version
//! the app's users need, pins honoured. A library a dependency has at another
//! path stays (an overlay cannot move it), as does glibc's family unless all
//! of it can go.

use std::collections::BTreeSet;
use std::path::Path;

use bundlegen_protocol::config::app::LibraryHints;
use bundlegen_protocol::probe::Abi;
use platform_probe::ProbeOptions;

use super::PackageError;
use super::dependency::{Dependencies, Fact};
use crate::bundle::Bundle;
use crate::pipeline::libraries::decide::{self, MatchMode, MatchRequest, RootfsView, is_glibc_soname};
use crate::pipeline::libraries::{BoxLibraries, Inventory};

/// What was left out, and why.
#[derive(Debug, Clone, Default)]
pub struct DedupReport {
    pub files: u64,
    pub libraries: u64,
    pub bytes: u64,
    /// One line per decision, for `-vv`.
    pub notes: Vec<String>,
}

struct View<'a>(&'a mut bundlegen_protocol::root::RootDir);

impl RootfsView for View<'_> {
    fn real_path(&mut self, path: &str) -> Option<String> {
        self.0
            .resolve_follow(Path::new(path.trim_start_matches('/')))
            .ok()
            .map(|p| format!("/{}", p.display()))
    }
}

/// Removes from the bundle's rootfs what the dependencies provide.
pub fn dedup(
    bundle: &mut Bundle,
    dependencies: &Dependencies,
    hints: &LibraryHints,
    abi: Option<Abi>,
    entry_point: Option<&str>,
) -> Result<DedupReport, PackageError> {
    let mut report = DedupReport::default();
    let names: Vec<String> = dependencies.packages.iter().map(|d| d.config.id.clone()).collect();
    let provider = names.join(" + ");
    libraries(bundle, dependencies, hints, abi, entry_point, &provider, &mut report)?;
    identical_files(bundle, dependencies, &provider, &mut report)?;
    Ok(report)
}

fn remove(bundle: &mut Bundle, path: &str) -> Result<u64, PackageError> {
    let relative = Path::new(path.trim_start_matches('/'));
    let size = bundle
        .rootfs
        .lstat(relative)
        .ok()
        .flatten()
        .map_or(0, |s| s.st_size as u64);
    bundle
        .rootfs
        .remove_all(relative)
        .map_err(crate::bundle::BundleError::from)?;
    bundle.manifest.remove_tree(relative);
    Ok(size)
}

fn libraries(
    bundle: &mut Bundle,
    dependencies: &Dependencies,
    hints: &LibraryHints,
    abi: Option<Abi>,
    entry_point: Option<&str>,
    provider: &str,
    report: &mut DedupReport,
) -> Result<(), PackageError> {
    let probe = platform_probe::probe(&ProbeOptions {
        root: dependencies.merged.path().to_path_buf(),
        expected_devices: Vec::new(),
        programs: Vec::new(),
        cache: None,
    })
    .map_err(|e| PackageError::Dependency(e.to_string()))?;
    let libs = BoxLibraries::from_report(&probe);
    if libs.is_empty() {
        return Ok(());
    }
    let ld_library_path: Vec<String> = bundle
        .env_value("LD_LIBRARY_PATH")
        .map(|v| v.split(':').filter(|p| !p.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let inventory = Inventory::scan(&mut bundle.rootfs, &ld_library_path);
    let request = MatchRequest {
        mode: MatchMode::Normal,
        walk: true,
        forced: Vec::new(),
        host_or_image: Vec::new(),
        match_image: true,
        pins: hints.pins.clone(),
        box_abi: abi,
        entrypoint: entry_point.map(|e| format!("/{}", e.trim_start_matches('/'))),
        host_programs: Vec::new(),
    };
    let plan = decide::plan(&inventory, &libs, &mut View(&mut bundle.rootfs), &request);
    let say = |note: &str| {
        note.replace("the box's", &format!("{provider}'s"))
            .replace("the box", provider)
    };
    // Only what a dependency has at the same path can be left to it.
    let same_path: Vec<&str> = plan
        .mounts
        .iter()
        .filter(|m| m.source == m.destination)
        .map(|m| m.destination.as_str())
        .collect();
    let name_of = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let glibc: Vec<&str> = plan
        .mounts
        .iter()
        .filter(|m| is_glibc_soname(&name_of(&m.destination)))
        .map(|m| m.destination.as_str())
        .collect();
    let glibc_whole = glibc.iter().all(|d| same_path.contains(d));
    let dlopened: BTreeSet<String> = hints.dlopen.iter().map(|d| name_of(d)).collect();
    for mount in &plan.mounts {
        let name = name_of(&mount.destination);
        let why = plan
            .notes
            .iter()
            .find(|n| n.starts_with(&format!("{name}:")) || n.starts_with(&format!("{}:", mount.destination)))
            .map(|n| say(n))
            .unwrap_or_default();
        let kept = if mount.source != mount.destination {
            Some(format!("{provider} has it at {}, not here", mount.source))
        } else if is_glibc_soname(&name) && !glibc_whole {
            Some("glibc's family stays whole, and not all of it is at the same paths below".into())
        } else if dlopened.contains(&name) {
            Some("the app loads it with dlopen (its needs are unknown)".into())
        } else if !inventory.objects.contains_key(&mount.destination) {
            // The app lacks it: nothing to leave out.
            None
        } else {
            report.bytes += remove(bundle, &mount.destination)?;
            report.libraries += 1;
            report.notes.push(format!(
                "{}: left out, {provider} provides it here ({why})",
                mount.destination
            ));
            continue;
        };
        if let Some(reason) = kept {
            report.notes.push(format!("{}: kept: {reason}", mount.destination));
        }
    }
    // The libraries the dependencies have in an incompatible version, and why.
    for note in &plan.notes {
        if note.contains(": the image's copy: ") {
            report.notes.push(say(note).replace(": the image's copy: ", ": kept: "));
        }
    }
    Ok(())
}

fn identical_files(
    bundle: &mut Bundle,
    dependencies: &Dependencies,
    provider: &str,
    report: &mut DedupReport,
) -> Result<(), PackageError> {
    let root = bundle.rootfs.host_path().to_path_buf();
    let app = super::dependency::describe(&root)?;
    for (path, fact) in &app {
        let Some(theirs) = dependencies.facts.get(path) else {
            continue;
        };
        let same = match (fact, theirs) {
            (
                Fact::File { mode, size, sha256 },
                Fact::File {
                    mode: m,
                    size: s,
                    sha256: h,
                },
            ) => mode == m && size == s && sha256 == h,
            (Fact::Symlink(a), Fact::Symlink(b)) => a == b,
            _ => false,
        };
        // Check again: an earlier removal (a directory's) may have taken it.
        if same && root.join(path.trim_start_matches('/')).symlink_metadata().is_ok() {
            let bytes = remove(bundle, path)?;
            report.files += 1;
            report.bytes += bytes;
            report.notes.push(format!("{path}: left out, identical in {provider}"));
        }
    }
    Ok(())
}
