//! The box's side of library matching: the platform's library list (or its
//! probe report, which also gives each library's ABI), indexed.

use std::collections::{BTreeMap, BTreeSet};

use bundlegen_protocol::config::libs::LibEntry;
use bundlegen_protocol::probe::ProbeReport;
use platform_probe::elf::Abi;

/// A library on the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxLibrary {
    pub path: String,
    pub versions: BTreeSet<String>,
    /// Dependencies, as paths on the box.
    pub deps: Vec<String>,
    /// For glibc's satellite libraries (libm, libpthread, ld-linux, ...):
    /// libc's path, which decides for the whole family.
    pub parent: Option<String>,
    /// Known when the list came from a probe report.
    pub abi: Option<Abi>,
}

/// Every library of the box, by path and by file name.
#[derive(Debug, Clone, Default)]
pub struct BoxLibraries {
    by_path: BTreeMap<String, BoxLibrary>,
    by_name: BTreeMap<String, Vec<String>>,
    /// libc's path and its family, if the list has a glibc.
    family: Option<(String, Vec<String>)>,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// BundleGen's glibc family test: `/lib/libX.so.N` or `/usr/lib/...` (and
/// `ld-linux*.so.N`) whose version definitions are all `GLIBC_*`.
fn glibc_candidate(entry: &LibEntry) -> bool {
    let name = entry
        .name
        .strip_prefix("/usr/lib/")
        .or_else(|| entry.name.strip_prefix("/lib/"));
    let Some(name) = name.filter(|n| !n.contains('/')) else {
        return false;
    };
    let numbered = name.rsplit_once(".so.").is_some_and(|(stem, number)| {
        !stem.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
    });
    let named = name.starts_with("lib") || name.starts_with("ld-linux");
    numbered && named && !entry.apiversions.is_empty() && entry.apiversions.iter().all(|v| v.starts_with("GLIBC_"))
}

impl BoxLibraries {
    pub fn new(entries: &[LibEntry]) -> BoxLibraries {
        let mut libraries = BoxLibraries::default();
        // libc is the candidate with the most GLIBC_ versions; the other
        // candidates are its family and follow its decision.
        let candidates: Vec<&LibEntry> = entries.iter().filter(|e| glibc_candidate(e)).collect();
        let libc = candidates
            .iter()
            .max_by(|a, b| a.apiversions.len().cmp(&b.apiversions.len()).then(b.name.cmp(&a.name)))
            .map(|e| e.name.clone());
        for entry in entries {
            let parent = match &libc {
                Some(libc) if glibc_candidate(entry) && &entry.name != libc => Some(libc.clone()),
                _ => None,
            };
            let library = BoxLibrary {
                path: entry.name.clone(),
                versions: entry.apiversions.iter().cloned().collect(),
                deps: entry.deps.clone(),
                parent,
                abi: None,
            };
            libraries
                .by_name
                .entry(file_name(&entry.name).to_string())
                .or_default()
                .push(entry.name.clone());
            libraries.by_path.insert(entry.name.clone(), library);
        }
        if let Some(libc) = libc {
            let family: Vec<String> = candidates
                .iter()
                .map(|e| e.name.clone())
                .filter(|n| n != &libc)
                .collect();
            libraries.family = Some((libc, family));
        }
        libraries
    }

    /// The libraries of a probe report: its BundleGen view, plus ABIs.
    pub fn from_report(report: &ProbeReport) -> BoxLibraries {
        let mut libraries = BoxLibraries::new(&report.libs_file().libs);
        for library in &report.libraries {
            for name in &library.names {
                if let Some(entry) = libraries.by_path.get_mut(name) {
                    entry.abi = Some(library.abi);
                }
            }
        }
        libraries
    }

    pub fn get(&self, path: &str) -> Option<&BoxLibrary> {
        self.by_path.get(path)
    }

    /// Libraries with this file name that an object of `abi` can load (when
    /// both ABIs are known), `/lib` and `/usr/lib` first.
    pub fn named(&self, name: &str, abi: Option<Abi>) -> Vec<&BoxLibrary> {
        let mut found: Vec<&BoxLibrary> = self
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|p| self.by_path.get(p))
            .filter(|l| match (abi, l.abi) {
                (Some(wanted), Some(has)) => wanted.can_load(&has),
                _ => true,
            })
            .collect();
        found.sort_by_key(|l| {
            (
                !matches!(l.path.rsplit_once('/').map(|(d, _)| d), Some("/lib" | "/usr/lib")),
                l.path.clone(),
            )
        });
        found
    }

    /// Paths of libc's family members (not libc itself).
    pub fn family_of(&self, libc: &str) -> &[String] {
        match &self.family {
            Some((path, family)) if path == libc => family,
            _ => &[],
        }
    }

    /// The glibc family's file names, libc first.
    pub fn family_names(&self) -> Vec<String> {
        match &self.family {
            Some((libc, family)) => std::iter::once(libc)
                .chain(family)
                .map(|p| file_name(p).to_string())
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, versions: &[&str], deps: &[&str]) -> LibEntry {
        LibEntry {
            name: name.into(),
            apiversions: versions.iter().map(|s| s.to_string()).collect(),
            deps: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn glibc_family_follows_libc() {
        let libs = BoxLibraries::new(&[
            entry(
                "/lib/libc.so.6",
                &["GLIBC_2.4", "GLIBC_2.30", "GLIBC_PRIVATE"],
                &["/lib/ld-linux-armhf.so.3"],
            ),
            entry("/lib/libm.so.6", &["GLIBC_2.4"], &["/lib/libc.so.6"]),
            entry("/lib/ld-linux-armhf.so.3", &["GLIBC_2.4", "GLIBC_PRIVATE"], &[]),
            entry("/usr/lib/libz.so.1", &["ZLIB_1.2.9"], &["/lib/libc.so.6"]),
            entry("/usr/lib/libfoo.so", &[], &[]),
            entry("/usr/lib/gconv/libGB.so", &["GLIBC_2.4"], &[]),
        ]);
        assert_eq!(
            libs.get("/lib/libm.so.6").unwrap().parent.as_deref(),
            Some("/lib/libc.so.6")
        );
        assert_eq!(
            libs.get("/lib/ld-linux-armhf.so.3").unwrap().parent.as_deref(),
            Some("/lib/libc.so.6")
        );
        assert_eq!(libs.get("/lib/libc.so.6").unwrap().parent, None);
        assert_eq!(libs.get("/usr/lib/libz.so.1").unwrap().parent, None);
        assert_eq!(
            libs.get("/usr/lib/gconv/libGB.so").unwrap().parent,
            None,
            "not in /lib or /usr/lib"
        );
        assert_eq!(
            libs.family_of("/lib/libc.so.6"),
            ["/lib/libm.so.6", "/lib/ld-linux-armhf.so.3"]
        );
        assert_eq!(libs.family_names(), ["libc.so.6", "libm.so.6", "ld-linux-armhf.so.3"]);
    }

    #[test]
    fn names_prefer_the_standard_directories() {
        let libs = BoxLibraries::new(&[
            entry("/opt/x/libz.so.1", &[], &[]),
            entry("/usr/lib/libz.so.1", &[], &[]),
        ]);
        let paths: Vec<&str> = libs.named("libz.so.1", None).iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["/usr/lib/libz.so.1", "/opt/x/libz.so.1"]);
    }

    /// A probe report knows each library's ABI: a 64-bit box's 32-bit
    /// compatibility copy is not offered to 64-bit apps.
    #[test]
    fn probe_reports_filter_by_abi() {
        use bundlegen_protocol::probe::{Library, SystemInfo};
        let library = |path: &str, arch: &str| Library {
            path: path.into(),
            names: vec![path.into()],
            soname: Some("libz.so.1".into()),
            abi: Abi::for_oci_arch(arch).unwrap(),
            needed: vec![],
            deps: vec![],
            rpath: vec![],
            runpath: vec![],
            versions: vec!["ZLIB_1.2.9".into()],
            versions_known: true,
            size: 0,
            sha256: String::new(),
        };
        let report = ProbeReport {
            format_version: 1,
            tool: "test".into(),
            system: SystemInfo::default(),
            libraries: vec![library("/lib/libz.so.1", "arm"), library("/lib64/libz.so.1", "arm64")],
            devices: vec![],
            programs: vec![],
            device_mismatches: vec![],
            warnings: vec![],
        };
        let libs = BoxLibraries::from_report(&report);
        let arm64 = Abi::for_oci_arch("arm64");
        let paths: Vec<&str> = libs.named("libz.so.1", arm64).iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["/lib64/libz.so.1"]);
        assert_eq!(libs.named("libz.so.1", None).len(), 2);
        assert_eq!(libs.get("/lib/libz.so.1").unwrap().versions.len(), 1);
    }
}
