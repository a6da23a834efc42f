//! Templates on disk: found by name in a search path, loaded with their
//! library list or probe report, and merged into one platform.

use std::path::{Path, PathBuf};

use super::PlatformTemplate;
use crate::config::libs::LibsFile;
use crate::config::{ConfigError, Parsed, load};
use crate::probe::ProbeReport;

/// A template found on disk: its file, its library list's file, and the
/// platform probe's report (`NAME_probe.json`), which is preferred to the
/// library list when both exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFiles {
    pub template: PathBuf,
    pub libs: Option<PathBuf>,
    pub probe: Option<PathBuf>,
}

/// All `*.json` files below `dir` (recursively, symlinked directories not
/// followed), sorted.
fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            json_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Finds `NAME.json` and `NAME_libs.json` under `search_path`, by exact file
/// name (BundleGen matched substrings, so `c` found `7218c.json`).
pub fn find_template(search_path: &Path, name: &str) -> Result<TemplateFiles, ConfigError> {
    let mut files = Vec::new();
    json_files(search_path, &mut files).map_err(|source| ConfigError::Read {
        file: search_path.to_path_buf(),
        source,
    })?;
    files.sort();
    let named = |wanted: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|f| f.file_name().is_some_and(|n| n == wanted))
            .cloned()
            .collect()
    };
    let pick = |wanted: String| -> Result<Option<PathBuf>, ConfigError> {
        match named(&wanted).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(ConfigError::AmbiguousTemplate {
                name: wanted,
                candidates: many.to_vec(),
            }),
        }
    };
    let Some(template) = pick(format!("{name}.json"))? else {
        let mut available: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_stem()?.to_str().map(str::to_string))
            .filter(|stem| !stem.ends_with("_libs") && !stem.ends_with("_probe"))
            .collect();
        available.sort();
        available.dedup();
        return Err(ConfigError::TemplateNotFound {
            name: name.to_string(),
            search_path: search_path.to_path_buf(),
            available,
        });
    };
    let libs = pick(format!("{name}_libs.json"))?;
    let probe = pick(format!("{name}_probe.json"))?;
    Ok(TemplateFiles { template, libs, probe })
}

/// Loads a platform template and its library list, merged. A probe report
/// replaces the library list (it says more: ABIs, symlinks, content hashes).
pub fn load_platform(files: &TemplateFiles) -> Result<Parsed<PlatformTemplate>, ConfigError> {
    let template: Parsed<PlatformTemplate> = load(&files.template)?;
    let libs = match &files.libs {
        Some(file) => Some((load::<LibsFile>(file)?, file.display().to_string())),
        None => None,
    };
    let probe = match &files.probe {
        Some(file) => Some((load::<ProbeReport>(file)?, file.display().to_string())),
        None => None,
    };
    Ok(merge_platform(
        template,
        &files.template.display().to_string(),
        libs,
        probe,
    ))
}

/// Puts a template and its generated parts together: the probe report if
/// there is one (its library list then replaces any other), else the
/// BundleGen library list. Each part comes with a name for warnings.
pub fn merge_platform(
    mut parsed: Parsed<PlatformTemplate>,
    template_name: &str,
    libs: Option<(Parsed<LibsFile>, String)>,
    probe: Option<(Parsed<ProbeReport>, String)>,
) -> Parsed<PlatformTemplate> {
    let replaced = |by: &str| format!("{template_name}: its libs are replaced by {by}");
    if let Some((report, probe_name)) = probe {
        if !parsed.value.libs.is_empty() {
            parsed.warnings.push(replaced(&probe_name));
        }
        if let Some((_, libs_name)) = &libs {
            parsed.warnings.push(format!(
                "{libs_name} is not used: {probe_name} describes the box's libraries"
            ));
        }
        parsed.value.libs = report.value.libs_file().libs;
        parsed.value.probe = Some(Box::new(report.value));
        parsed.warnings.extend(report.warnings);
    } else if let Some((libs, libs_name)) = libs {
        if !parsed.value.libs.is_empty() {
            parsed.warnings.push(replaced(&libs_name));
        }
        parsed.value.libs = libs.value.libs;
        parsed.warnings.extend(libs.warnings);
    } else if parsed.value.libs.is_empty() {
        parsed.warnings.push(format!(
            "{template_name}: the box's libraries are unknown (no probe report, no library list, no libs in the \
             template), so every library stays in the image and nothing is mounted from the box: run \
             platform-probe on the box and put its report beside the template as NAME_probe.json (or upload it)"
        ));
    }
    parsed
}

/// A note when the name a template is selected by differs from the
/// `platformName` inside it: fine for a family of templates sharing one
/// `platformName`, a mistake when a file was copied and not edited.
pub fn name_mismatch(selected_as: &str, template: &PlatformTemplate) -> Option<String> {
    (template.platform_name != selected_as).then(|| {
        format!(
            "the template {selected_as:?} says platformName {:?}: fine for a family of templates sharing one \
             name, a mistake if the file was copied from another platform and not edited",
            template.platform_name
        )
    })
}
