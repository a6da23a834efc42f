//! Where the dynamic loader looks for a library, as `ld.so(8)` describes:
//! the object's RPATH (when it has no RUNPATH), `LD_LIBRARY_PATH`, its RUNPATH,
//! the directories of `/etc/ld.so.conf` (what `ld.so.cache` is built from),
//! then the built-in directories. `$ORIGIN` is the object's directory.
//!
//! Files are read through closures, so the same rules apply to a live box, a
//! box's rootfs image or an app image (each read inside its own root).

use std::io::Read;
use std::path::Path;

use bundlegen_protocol::root::RootDir;
use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_MIPS, EM_PPC64, EM_RISCV, EM_X86_64};

use crate::elf::{Abi, ElfInfo, FloatAbi};

/// Most nested `include` levels followed in `ld.so.conf`.
const MAX_INCLUDE_DEPTH: usize = 8;

/// The search path beyond what each object carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    /// The process's `LD_LIBRARY_PATH`.
    pub ld_library_path: Vec<String>,
    /// Directories from `/etc/ld.so.conf` and its includes, in order.
    pub configured: Vec<String>,
}

/// The Debian/Ubuntu multiarch directory name of an ABI, if it has one.
pub fn multiarch_triplet(abi: &Abi) -> Option<&'static str> {
    match (abi.machine, abi.is_64, abi.little_endian, abi.float) {
        (EM_X86_64, true, _, _) => Some("x86_64-linux-gnu"),
        (EM_386, false, _, _) => Some("i386-linux-gnu"),
        (EM_AARCH64, true, true, _) => Some("aarch64-linux-gnu"),
        (EM_ARM, false, true, FloatAbi::Soft) => Some("arm-linux-gnueabi"),
        (EM_ARM, false, true, _) => Some("arm-linux-gnueabihf"),
        (EM_MIPS, false, true, _) => Some("mipsel-linux-gnu"),
        (EM_MIPS, false, false, _) => Some("mips-linux-gnu"),
        (EM_PPC64, true, true, _) => Some("powerpc64le-linux-gnu"),
        (EM_RISCV, true, _, _) => Some("riscv64-linux-gnu"),
        _ => None,
    }
}

/// The loader's built-in directories for an ABI (plus the multiarch ones,
/// which Debian-built loaders also search).
pub fn default_dirs(abi: &Abi) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(triplet) = multiarch_triplet(abi) {
        dirs.push(format!("/lib/{triplet}"));
        dirs.push(format!("/usr/lib/{triplet}"));
    }
    if abi.is_64 {
        dirs.push("/lib64".into());
        dirs.push("/usr/lib64".into());
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

/// Joins and normalises a path lexically (`..` pops, never above `/`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Expands `$ORIGIN` and `$LIB` in a RPATH/RUNPATH entry; `None` for entries
/// that cannot be expanded here (`$PLATFORM`).
fn expand(entry: &str, origin: &str, abi: &Abi) -> Option<String> {
    let lib = if abi.is_64 { "lib64" } else { "lib" };
    let expanded = entry
        .replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${LIB}", lib)
        .replace("$LIB", lib);
    if expanded.contains('$') {
        return None;
    }
    if expanded.starts_with('/') {
        Some(expanded)
    } else {
        // A relative entry is relative to the working directory; inside a
        // container that is usually `/`.
        Some(format!("/{expanded}"))
    }
}

/// Paths where the loader would look for `name`, needed by `object` which
/// lives in directory `origin`, in the order it would try them.
pub fn candidates(name: &str, object: &ElfInfo, origin: &str, search: &SearchPath) -> Vec<String> {
    let abi = &object.abi;
    if name.contains('/') {
        // A path is used as it is, after `$ORIGIN` and `$LIB` expansion.
        return expand(name, origin, abi)
            .map(|path| normalize(&path))
            .into_iter()
            .collect();
    }
    let mut dirs: Vec<String> = Vec::new();
    if object.runpath.is_empty() {
        dirs.extend(object.rpath.iter().filter_map(|e| expand(e, origin, abi)));
    }
    dirs.extend(search.ld_library_path.iter().cloned());
    dirs.extend(object.runpath.iter().filter_map(|e| expand(e, origin, abi)));
    dirs.extend(search.configured.iter().cloned());
    dirs.extend(default_dirs(abi));
    let mut seen = std::collections::BTreeSet::new();
    dirs.into_iter()
        .map(|dir| normalize(&format!("{dir}/{name}")))
        .filter(|path| seen.insert(path.clone()))
        .collect()
}

/// `*` and `?` wildcards, as `ld.so.conf` includes use them.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard_match(&pattern[1..], name) || (!name.is_empty() && wildcard_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Read access to a root filesystem's configuration files.
pub trait ConfFiles {
    /// A file's text, if it exists (symlinks followed inside the root).
    fn read(&mut self, path: &str) -> Option<String>;
    /// The names in a directory.
    fn list(&mut self, dir: &str) -> Vec<String>;
}

/// A root filesystem's files, read inside it (symlinks followed as in a chroot).
impl ConfFiles for RootDir {
    fn read(&mut self, path: &str) -> Option<String> {
        let (mut file, _) = self.open_file_follow(Path::new(path)).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn list(&mut self, dir: &str) -> Vec<String> {
        let Ok(real) = self.resolve_follow(Path::new(dir)) else {
            return Vec::new();
        };
        self.read_dir(&real)
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(name, _)| name.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The directories `/etc/ld.so.conf` names, following `include` lines.
pub fn ld_so_conf_dirs(files: &mut dyn ConfFiles) -> Vec<String> {
    let mut dirs = Vec::new();
    parse_conf("/etc/ld.so.conf", files, &mut dirs, 0);
    let mut seen = std::collections::BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn parse_conf(file: &str, files: &mut dyn ConfFiles, dirs: &mut Vec<String>, depth: usize) {
    if depth > MAX_INCLUDE_DEPTH {
        return;
    }
    let Some(text) = files.read(file) else { return };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|rest| rest.starts_with([' ', '\t']))
        {
            for pattern in pattern.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_string()
                } else {
                    format!("/etc/{pattern}")
                };
                let (dir, file_pattern) = pattern.rsplit_once('/').unwrap_or(("", &pattern));
                let dir = if dir.is_empty() { "/" } else { dir };
                let mut names: Vec<String> = files
                    .list(dir)
                    .into_iter()
                    .filter(|name| wildcard_match(file_pattern.as_bytes(), name.as_bytes()))
                    .collect();
                names.sort();
                for name in names {
                    parse_conf(&normalize(&format!("{dir}/{name}")), files, dirs, depth + 1);
                }
            }
        } else if line.starts_with("hwcap") {
            continue;
        } else {
            for dir in line.split([' ', '\t', ',', ':']).filter(|d| d.starts_with('/')) {
                // The old `DIR=TYPE` syntax.
                let dir = dir.split('=').next().unwrap_or(dir);
                dirs.push(normalize(dir));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn arm_object(rpath: &[&str], runpath: &[&str]) -> ElfInfo {
        ElfInfo {
            abi: Abi {
                is_64: false,
                little_endian: true,
                machine: EM_ARM,
                float: FloatAbi::Hard,
            },
            kind: crate::elf::ElfKind::Executable,
            interpreter: None,
            soname: None,
            needed: vec![],
            filters: vec![],
            rpath: rpath.iter().map(|s| s.to_string()).collect(),
            runpath: runpath.iter().map(|s| s.to_string()).collect(),
            version_definitions: Default::default(),
            version_needs: Default::default(),
            versions_known: true,
        }
    }

    #[test]
    fn search_order_follows_ld_so() {
        let search = SearchPath {
            ld_library_path: vec!["/opt/env".into()],
            configured: vec!["/usr/local/lib".into()],
        };
        let rpath_only = arm_object(&["$ORIGIN/../lib", "/opt/rpath"], &[]);
        assert_eq!(
            candidates("libfoo.so.1", &rpath_only, "/usr/bin", &search),
            [
                "/usr/lib/libfoo.so.1",
                "/opt/rpath/libfoo.so.1",
                "/opt/env/libfoo.so.1",
                "/usr/local/lib/libfoo.so.1",
                "/lib/arm-linux-gnueabihf/libfoo.so.1",
                "/usr/lib/arm-linux-gnueabihf/libfoo.so.1",
                "/lib/libfoo.so.1",
            ]
        );
        // With a RUNPATH the RPATH is ignored, and RUNPATH comes after LD_LIBRARY_PATH.
        let both = arm_object(&["/opt/rpath"], &["${ORIGIN}/plugins"]);
        let found = candidates("libbar.so", &both, "/app", &search);
        assert_eq!(found[..2], ["/opt/env/libbar.so", "/app/plugins/libbar.so"]);
        assert!(!found.iter().any(|c| c.starts_with("/opt/rpath")));
        assert_eq!(candidates("../x/lib.so", &both, "/app", &search), ["/x/lib.so"]);
        assert_eq!(
            candidates("$ORIGIN/../lib/libpython3.so.1", &both, "/opt/py/bin", &search),
            ["/opt/py/lib/libpython3.so.1"]
        );
    }

    #[test]
    fn ld_so_conf_includes_are_followed_in_order() {
        let files: BTreeMap<&str, &str> = BTreeMap::from([
            (
                "/etc/ld.so.conf",
                "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/first\n",
            ),
            ("/etc/ld.so.conf.d/b.conf", "/opt/b1 /opt/b2\n"),
            ("/etc/ld.so.conf.d/a.conf", "/opt/a=libc6\ninclude loop.conf\n"),
            ("/etc/loop.conf", "include /etc/loop.conf\n/opt/loop\n"),
            ("/etc/ld.so.conf.d/skip.txt", "/opt/never\n"),
        ]);
        struct Fake(BTreeMap<&'static str, &'static str>);
        impl ConfFiles for Fake {
            fn read(&mut self, path: &str) -> Option<String> {
                self.0.get(path).map(|s| s.to_string())
            }
            fn list(&mut self, dir: &str) -> Vec<String> {
                let prefix = format!("{dir}/");
                self.0
                    .keys()
                    .filter_map(|f| {
                        f.strip_prefix(&prefix)
                            .filter(|rest| !rest.contains('/'))
                            .map(str::to_string)
                    })
                    .collect()
            }
        }
        assert_eq!(
            ld_so_conf_dirs(&mut Fake(files)),
            ["/opt/a", "/opt/loop", "/opt/b1", "/opt/b2", "/opt/first"]
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"x86_64-linux-gnu.conf"));
        assert!(!wildcard_match(b"*.conf", b"a.conf.bak"));
        assert!(wildcard_match(b"lib?.conf", b"libc.conf"));
    }
}
