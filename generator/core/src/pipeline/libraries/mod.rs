//! The library matching stage: which shared libraries the box provides, so
//! the bundle holds only what the box cannot. [`decide`] has the rules (a
//! plan from the image's inventory and the box's libraries); this module
//! gathers the inputs and applies the plan to the bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use bundlegen_protocol::probe::ProbeReport;
use bundlegen_protocol::runtime::Mount;
use platform_probe::elf::Abi;

use crate::bundle::Bundle;
use crate::pipeline::{Inputs, StageError};
use crate::rootfs::Rootfs;

mod box_libs;
pub mod decide;
mod inventory;

pub use box_libs::BoxLibraries;
pub use decide::{HostProgramNeeds, LibraryMount, MatchMode, MatchRequest, Plan, RootfsView};
pub use inventory::Inventory;

/// The CLI's library options.
#[derive(Debug, Clone)]
pub struct LibraryOptions {
    pub mode: MatchMode,
    /// `--nodepwalking` turns this off.
    pub walk: bool,
    /// Delete libraries no program needs (`--prune-unused`).
    pub prune_unused: bool,
}

impl Default for LibraryOptions {
    fn default() -> Self {
        LibraryOptions {
            mode: MatchMode::Normal,
            walk: true,
            prune_unused: false,
        }
    }
}

/// What matching did, for the run's report.
#[derive(Debug, Default)]
pub struct LibraryReport {
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// A probe report of another architecture than the template's is a
/// mistake in the platform's files, not something to match against.
fn check_report_abi(report: &ProbeReport, box_abi: Option<Abi>, arch: &str) -> Result<(), StageError> {
    match (report.system.abi, box_abi) {
        (Some(probed), Some(expected)) if !expected.can_load(&probed) => Err(StageError::Failed {
            stage: "library matching",
            message: format!(
                "the platform's probe report describes a {} box, but the template's arch is {arch:?}",
                probed.arch_name()
            ),
        }),
        _ => Ok(()),
    }
}

struct RootView<'a>(&'a mut dyn Rootfs);

impl RootfsView for RootView<'_> {
    fn real_path(&mut self, path: &str) -> Option<String> {
        self.0
            .resolve_follow(Path::new(path))
            .ok()
            .map(|p| format!("/{}", p.display()))
    }
}

/// The stage: matches the image's libraries against the box's and edits
/// the bundle.
pub fn apply(
    bundle: &mut Bundle<dyn Rootfs>,
    inputs: &Inputs<'_>,
    entrypoint: Option<&str>,
) -> Result<LibraryReport, StageError> {
    let options = &inputs.options.libraries;
    let platform = inputs.platform;
    let box_abi = platform.abi();
    let libs = match &platform.probe {
        Some(report) => {
            check_report_abi(report, box_abi, &platform.arch.arch)?;
            BoxLibraries::from_report(report)
        }
        None => BoxLibraries::new(&platform.libs),
    };
    let mut forced = Vec::new();
    if inputs.app.graphics
        && let Some(gpu) = &platform.gpu
    {
        forced.extend(gpu.gfx_libs.iter().map(|l| (l.src.clone(), l.dst.clone())));
    }
    let host_or_image = if inputs.options.crun {
        Vec::new()
    } else {
        platform.dobby().plugin_dependencies
    };
    let app_hints = inputs.app.libraries.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    let mut host_programs = Vec::new();
    if !inputs.options.crun {
        let init = platform.dobby().dobby_init().to_string();
        match host_program(platform.probe.as_deref(), &libs, &init) {
            Some(program) => host_programs.push(program),
            None if libs.is_empty() => {}
            // A BundleGen library list never describes programs: expected,
            // so said only with -v, with the fix.
            None if platform.probe.is_none() => tracing::info!(
                "the libraries {init} (Dobby's init) needs in the container are not checked: a library list \
                 does not describe programs; a probe report (platform-probe, NAME_probe.json) does"
            ),
            None => warnings.push(format!(
                "the platform's probe report does not describe {init} (Dobby's init): the libraries it needs in \
                 the container are not checked; probe the box again, or set dobby.dobbyInitPath in the template"
            )),
        }
    }
    let request = MatchRequest {
        mode: options.mode,
        walk: options.walk && !libs.is_empty(),
        forced,
        host_or_image,
        match_image: !libs.is_empty(),
        pins: inputs
            .operator
            .library_pins
            .iter()
            .chain(&app_hints.pins)
            .cloned()
            .collect(),
        box_abi,
        entrypoint: entrypoint.map(str::to_string),
        host_programs,
    };
    let ld_library_path: Vec<String> = bundle
        .env_value("LD_LIBRARY_PATH")
        .map(|v| v.split(':').filter(|p| !p.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let inventory = Inventory::scan(&mut bundle.rootfs, &ld_library_path);
    let plan = decide::plan(&inventory, &libs, &mut RootView(&mut bundle.rootfs), &request);
    if !plan.problems.is_empty() {
        return Err(StageError::Incompatible(plan.problems));
    }
    warnings.extend(plan.unresolved.iter().cloned());
    let mut outcome = LibraryReport {
        notes: plan.notes.clone(),
        warnings,
    };
    outcome.warnings.extend(
        inventory
            .unreadable
            .iter()
            .map(|(path, why)| format!("{path}: not a readable ELF file ({why})")),
    );
    apply_plan(bundle, inputs, &plan)?;
    if options.prune_unused {
        let pruned = prune(bundle, &inventory, &plan, &app_hints.dlopen)?;
        outcome.notes.extend(
            pruned
                .iter()
                .map(|p| format!("{p}: deleted, no program needs it (--prune-unused)")),
        );
    }
    Ok(outcome)
}

/// What a program of the box run in the container needs: from the probe
/// report (with symbol versions), else from BundleGen's library list (the
/// probe lists programs there too, without versions).
fn host_program(report: Option<&ProbeReport>, libs: &BoxLibraries, path: &str) -> Option<HostProgramNeeds> {
    if let Some(program) = report.and_then(|r| r.programs.iter().find(|p| p.path == path)) {
        return Some(HostProgramNeeds {
            path: path.to_string(),
            interpreter: program.interpreter.clone(),
            deps: program.deps.iter().map(|d| (d.name.clone(), d.path.clone())).collect(),
            version_needs: program.versions_known.then(|| {
                program
                    .version_needs
                    .iter()
                    .map(|(name, versions)| (name.clone(), versions.iter().cloned().collect()))
                    .collect()
            }),
        });
    }
    let entry = libs.get(path)?;
    Some(HostProgramNeeds {
        path: path.to_string(),
        interpreter: None,
        deps: entry
            .deps
            .iter()
            .map(|dep| (inventory::split(dep).1.to_string(), Some(dep.clone())))
            .collect(),
        version_needs: None,
    })
}

/// Deletes what the plan replaces and adds its read-only bind mounts.
fn apply_plan(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, plan: &Plan) -> Result<(), StageError> {
    for path in &plan.remove {
        remove(bundle, path)?;
    }
    for LibraryMount { source, destination } in &plan.mounts {
        bundle.add_mount(Mount::new(
            destination,
            "bind",
            source,
            &["rbind", "nosuid", "nodev", "ro"],
        ));
        if inputs.options.create_mount_points {
            bundle
                .create_mount_point(destination, false)
                .map_err(StageError::rootfs("mount points"))?;
        }
    }
    Ok(())
}

fn remove(bundle: &mut Bundle<dyn Rootfs>, path: &str) -> Result<(), StageError> {
    let relative = Path::new(path.trim_start_matches('/'));
    bundle
        .rootfs
        .remove_all(relative)
        .map_err(StageError::rootfs("library matching"))?;
    bundle.manifest.remove_tree(relative);
    Ok(())
}

/// Deletes libraries no program needs, and the symlinks to them.
fn prune(
    bundle: &mut Bundle<dyn Rootfs>,
    inventory: &Inventory,
    plan: &Plan,
    dlopen: &[String],
) -> Result<Vec<String>, StageError> {
    let names = names_in_binaries(bundle, inventory);
    let removed: BTreeSet<&String> = plan.remove.iter().collect();
    let unused: Vec<String> = decide::unused_libraries(inventory, dlopen, &names)
        .into_iter()
        .filter(|p| !removed.contains(p))
        .collect();
    let mut deleted = Vec::new();
    for path in &unused {
        // The symlinks to it in its directory go too, before the file itself.
        let (dir, _) = inventory::split(path);
        let entries = bundle
            .rootfs
            .read_dir(Path::new(dir.trim_start_matches('/')))
            .unwrap_or_default();
        for (name, kind) in entries {
            let link = format!("{}/{}", dir.trim_end_matches('/'), name.to_string_lossy());
            if kind == bundlegen_protocol::root::EntryKind::Symlink
                && RootView(&mut bundle.rootfs).real_path(&link).as_deref() == Some(path.as_str())
            {
                remove(bundle, &link)?;
                deleted.push(link);
            }
        }
        remove(bundle, path)?;
        deleted.push(path.clone());
    }
    Ok(deleted)
}

/// Library-like strings (`libfoo.so`, `libfoo.so.1`) in each of the image's
/// ELF files: what it may `dlopen`.
fn names_in_binaries(bundle: &mut Bundle<dyn Rootfs>, inventory: &Inventory) -> BTreeMap<String, BTreeSet<String>> {
    let mut all = BTreeMap::new();
    for path in inventory.objects.keys() {
        let mut names = BTreeSet::new();
        let Ok(mut file) = bundle.rootfs.open_file(Path::new(path.trim_start_matches('/'))) else {
            continue;
        };
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            continue;
        }
        for run in bytes.split(|b| !(b.is_ascii_graphic())) {
            let Ok(text) = std::str::from_utf8(run) else { continue };
            if let Some(position) = text.find(".so") {
                let start = text[..position].rfind('/').map_or(0, |i| i + 1);
                names.insert(text[start..].to_string());
            }
        }
        all.insert(path.clone(), names);
    }
    all
}
