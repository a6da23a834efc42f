//! What the service accepts of a box's probe report. A report decides what
//! bundles bind-mount from the box, so one from a device token is checked
//! (paths where libraries live, sizes bounded) and one that changes what
//! every container runs on (libc, the loader, the graphics libraries the
//! template mounts) waits for a platform team's review, unless the platform
//! accepts such changes by itself. Devices upload at a bounded rate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::probe::ProbeReport;

/// Where libraries live on a Linux box.
const LIBRARY_DIRS: [&str; 9] = [
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/libx32/",
    "/usr/lib/",
    "/usr/lib32/",
    "/usr/lib64/",
    "/usr/libx32/",
    "/usr/local/lib/",
];
/// Where programs that run in containers (Dobby's init) live.
const PROGRAM_DIRS: [&str; 6] = [
    "/usr/libexec/",
    "/usr/bin/",
    "/bin/",
    "/usr/sbin/",
    "/sbin/",
    "/usr/lib/",
];
const MAX_LIBRARIES: usize = 50_000;
const MAX_DEVICES: usize = 20_000;
const MAX_PROGRAMS: usize = 64;
const MAX_PATH: usize = 4096;

/// A path with no `.`/`..` component, no empty component, absolute.
fn clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_PATH
        && !path.contains('\0')
        && path[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The problems of a report for `template`'s platform; none: acceptable.
pub fn check_report(report: &ProbeReport, template: &PlatformTemplate) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, count, limit) in [
        ("libraries", report.libraries.len(), MAX_LIBRARIES),
        ("devices", report.devices.len(), MAX_DEVICES),
        ("programs", report.programs.len(), MAX_PROGRAMS),
    ] {
        if count > limit {
            problems.push(format!("{count} {what}, more than the {limit} accepted"));
        }
    }
    // The template (the platform team's) may name library directories of its own.
    let template_dirs: Vec<String> = template
        .gpu
        .iter()
        .flat_map(|gpu| gpu.gfx_libs.iter().map(|lib| lib.src.clone()))
        .chain(template.dobby().plugin_dependencies)
        .filter_map(|path| path.rsplit_once('/').map(|(dir, _)| format!("{dir}/")))
        .collect();
    let in_library_dir = |path: &str| {
        LIBRARY_DIRS.iter().any(|dir| path.starts_with(dir)) || template_dirs.iter().any(|dir| path.starts_with(dir))
    };
    for library in &report.libraries {
        for path in std::iter::once(&library.path).chain(&library.names) {
            if !clean_absolute(path) {
                problems.push(format!("library {path:?}: not a clean absolute path"));
            } else if !in_library_dir(path) {
                problems.push(format!("library {path}: not in a library directory"));
            }
        }
        for dependency in library.deps.iter().filter_map(|d| d.path.as_ref()) {
            if !clean_absolute(dependency) || !in_library_dir(dependency) {
                problems.push(format!(
                    "library {}: dependency {dependency:?} outside the library directories",
                    library.path
                ));
            }
        }
    }
    let dobby_init = template.dobby().dobby_init().to_string();
    for program in &report.programs {
        let allowed = program.path == dobby_init || PROGRAM_DIRS.iter().any(|dir| program.path.starts_with(dir));
        if !clean_absolute(&program.path) || !allowed {
            problems.push(format!("program {:?}: not a program the containers run", program.path));
        }
    }
    for device in &report.devices {
        if !clean_absolute(&device.path) || !device.path.starts_with("/dev/") {
            problems.push(format!("device {:?}: not under /dev", device.path));
        }
    }
    problems.truncate(20);
    problems
}

/// What every container runs on: libc, the loader and the graphics
/// libraries the template mounts, with the content hash the report gives.
fn foundations(report: &ProbeReport, template: &PlatformTemplate) -> BTreeMap<String, String> {
    let sha256 = |path: &str| {
        report
            .libraries
            .iter()
            .find(|l| l.path == path || l.names.iter().any(|n| n == path))
            .map_or_else(|| "(absent)".to_string(), |l| l.sha256.clone())
    };
    let mut paths: Vec<String> = Vec::new();
    paths.extend(report.system.libc.as_ref().map(|libc| libc.path.clone()));
    paths.extend(report.system.loader.clone());
    paths.extend(
        template
            .gpu
            .iter()
            .flat_map(|gpu| gpu.gfx_libs.iter().map(|l| l.src.clone())),
    );
    paths
        .into_iter()
        .map(|p| (sha256(&p), p))
        .map(|(h, p)| (p, h))
        .collect()
}

/// Why a report needs review before it is used: the foundations it changes
/// (all of them for a platform's first report). None: it may be used.
pub fn review_reasons(
    previous: Option<&ProbeReport>,
    report: &ProbeReport,
    template: &PlatformTemplate,
) -> Vec<String> {
    let new = foundations(report, template);
    let Some(previous) = previous else {
        return vec!["the platform's first probe report".into()];
    };
    let old = foundations(previous, template);
    let mut reasons: Vec<String> = new
        .iter()
        .filter(|(path, hash)| old.get(*path) != Some(hash))
        .map(|(path, _)| format!("{path} changed"))
        .collect();
    reasons.extend(
        old.keys()
            .filter(|path| !new.contains_key(*path))
            .map(|path| format!("{path} is gone")),
    );
    reasons
}

/// At most `per_hour` uploads per token in any hour.
pub struct UploadLimiter {
    per_hour: usize,
    recent: Mutex<BTreeMap<String, VecDeque<Instant>>>,
}

impl UploadLimiter {
    pub fn new(per_hour: usize) -> UploadLimiter {
        UploadLimiter {
            per_hour,
            recent: Mutex::default(),
        }
    }

    /// Records an upload by `token`; `Err(wait)` if it is one too many.
    pub fn admit(&self, token: &str) -> Result<(), Duration> {
        let hour = Duration::from_secs(3600);
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let times = recent.entry(token.to_string()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= hour) {
            times.pop_front();
        }
        if times.len() >= self.per_hour {
            let oldest = *times.front().expect("non-empty when full");
            return Err(hour.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bundlegen_protocol::probe::{Libc, Library};
    use serde_json::json;

    use super::*;

    fn template() -> PlatformTemplate {
        serde_json::from_value(json!({
            "platformName": "p", "os": "linux", "arch": {"arch": "arm"},
            "rdk": {"version": "1", "supportedFeatures": []}, "hardware": {"graphics": true},
            "network": {"options": ["open"]},
            "gpu": {"gfxLibs": [{"src": "/vendor/gl/libEGL.so.1", "dst": "/usr/lib/libEGL.so.1"}]}
        }))
        .unwrap()
    }

    fn library(path: &str, sha256: &str) -> Library {
        serde_json::from_value(json!({
            "path": path, "names": [path], "abi": {"bits": 32, "endian": "little", "machine": 40, "floatAbi": "hard"},
            "needed": [], "deps": [], "versions": [], "size": 1, "sha256": sha256
        }))
        .unwrap()
    }

    fn report(libraries: Vec<Library>) -> ProbeReport {
        let mut report: ProbeReport = serde_json::from_value(json!({
            "formatVersion": 1, "tool": "test", "system": {"librariesFingerprint": "x"},
            "libraries": [], "devices": []
        }))
        .unwrap();
        report.system.libc = Some(Libc {
            flavour: "glibc".into(),
            version: None,
            path: "/lib/libc.so.6".into(),
        });
        report.system.loader = Some("/lib/ld-linux-armhf.so.3".into());
        report.libraries = libraries;
        report
    }

    #[test]
    fn libraries_must_live_in_library_directories() {
        let good = report(vec![
            library("/lib/libc.so.6", "a"),
            library("/usr/lib/dri/vc4_dri.so", "b"),
            library("/vendor/gl/libEGL.so.1", "c"),
        ]);
        assert!(check_report(&good, &template()).is_empty());
        for bad in [
            "/etc/shadow",
            "/lib/../etc/shadow",
            "lib/libx.so",
            "/usr/lib//x.so",
            "/home/u/libx.so",
        ] {
            let problems = check_report(&report(vec![library(bad, "a")]), &template());
            assert!(!problems.is_empty(), "{bad} is accepted");
        }
    }

    #[test]
    fn changes_of_libc_the_loader_or_graphics_libraries_need_review() {
        let base = report(vec![
            library("/lib/libc.so.6", "a"),
            library("/lib/ld-linux-armhf.so.3", "b"),
            library("/vendor/gl/libEGL.so.1", "c"),
            library("/usr/lib/libz.so.1", "d"),
        ]);
        assert_eq!(
            review_reasons(None, &base, &template()),
            ["the platform's first probe report"]
        );
        assert!(review_reasons(Some(&base), &base, &template()).is_empty());
        let mut other = base.clone();
        other.libraries[3].sha256 = "e".into();
        assert!(
            review_reasons(Some(&base), &other, &template()).is_empty(),
            "libz is no foundation"
        );
        for (index, path) in [
            (0, "/lib/libc.so.6"),
            (1, "/lib/ld-linux-armhf.so.3"),
            (2, "/vendor/gl/libEGL.so.1"),
        ] {
            let mut changed = base.clone();
            changed.libraries[index].sha256 = "new".into();
            assert_eq!(
                review_reasons(Some(&base), &changed, &template()),
                [format!("{path} changed")]
            );
        }
    }

    #[test]
    fn uploads_are_limited_per_token() {
        let limiter = UploadLimiter::new(2);
        assert!(limiter.admit("a").is_ok());
        assert!(limiter.admit("a").is_ok());
        let wait = limiter.admit("a").unwrap_err();
        assert!(wait > Duration::from_secs(3500));
        assert!(limiter.admit("b").is_ok(), "per token");
    }
}
