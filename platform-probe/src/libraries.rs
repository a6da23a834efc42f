//! Finds every shared library the loader could use under a root, with the
//! names that lead to it and where each of its dependencies resolves.
//!
//! Sources, so that no single stale or missing one loses a library:
//! `ld.so.cache` (parsed), the `ld.so.conf` directories, the standard and
//! multiarch directories (walked recursively, as BundleGen's
//! `generate_libs_json` does for `/lib` and `/usr/lib`), and whatever a
//! RUNPATH or RPATH points at. Every path is read inside the root, so an
//! absolute symlink in a box image never reaches the build host's files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::probe::{Dependency, HostProgram, Library};
use bundlegen_protocol::root::{EntryKind, RootDir};

use crate::cache::{self, DirNode, FileKey, Listed, ProbeCache, ReadLibrary};
use crate::elf::{Abi, ElfInfo, ElfKind, is_elf};
use crate::ldcache::{self, LdCache};
use crate::loader::{SearchPath, candidates, ld_so_conf_dirs};

/// Directories walked on every box (missing ones are skipped).
const STANDARD_DIRS: &[&str] = &[
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libx32",
    "/usr/local/lib",
];
/// Deepest directory level walked below a library directory.
const MAX_DEPTH: usize = 24;
/// Files larger than this are reported, not read.
const MAX_LIBRARY_BYTES: u64 = 1 << 30;

/// Libraries found under a root.
#[derive(Debug, Default)]
pub struct LibraryScan {
    /// By real path.
    pub libraries: BTreeMap<String, Library>,
    /// The loader's view of each library, by real path (shared: the
    /// dependency walk holds one while it adds libraries).
    pub elf: BTreeMap<String, Arc<ElfInfo>>,
    pub cache: Option<LdCache>,
    /// The `ld.so.conf` directories.
    pub configured_dirs: Vec<String>,
    pub warnings: Vec<String>,
}

/// `/a/b` for a path relative to the root.
fn absolute(relative: &Path) -> String {
    format!("/{}", relative.display())
}

fn relative(absolute: &str) -> &Path {
    Path::new(absolute.trim_start_matches('/'))
}

fn parent_dir(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

/// Whether `path` lies in directory `dir` or below it.
fn is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// BundleGen's file name filter (`^\S+\.so\S*$`).
fn looks_like_library(name: &str) -> bool {
    !name.chars().any(char::is_whitespace) && name.find(".so").is_some_and(|at| at > 0)
}

/// A library directory as the loader names it, and where it really is.
#[derive(Debug, Clone)]
struct TopDir {
    name: String,
    real: String,
}

/// What the walk found: each name in the library directories and the real
/// file it leads to.
#[derive(Debug, Default)]
struct Names {
    by_name: BTreeMap<String, String>,
}

/// Scans the libraries under `root`; files `cache` knows unchanged are not
/// read again.
pub fn scan(root: &mut RootDir, cache: &mut ProbeCache) -> LibraryScan {
    let mut scan = LibraryScan {
        configured_dirs: ld_so_conf_dirs(root),
        ..LibraryScan::default()
    };
    scan.cache = read_cache(root, &mut scan.warnings);

    let mut wanted: Vec<String> = STANDARD_DIRS.iter().map(|d| d.to_string()).collect();
    wanted.extend(scan.configured_dirs.iter().cloned());
    if let Some(cache) = &scan.cache {
        wanted.extend(cache.entries.iter().map(|e| parent_dir(&e.path).to_string()));
    }
    let tops = top_dirs(root, wanted);
    cache.prefetch(root);
    let mut names = Names::default();
    walk(root, &tops, &mut names, &mut scan.warnings, cache);
    if let Some(cache) = &scan.cache {
        for entry in &cache.entries {
            if names.by_name.contains_key(&entry.path) {
                continue;
            }
            match root.resolve_follow(relative(&entry.path)) {
                Ok(real) => {
                    names.by_name.insert(entry.path.clone(), absolute(&real));
                }
                Err(_) => scan.warnings.push(format!(
                    "ld.so.cache is stale: {} ({}) does not exist; run ldconfig",
                    entry.path, entry.key
                )),
            }
        }
    }
    let reals: BTreeSet<String> = names.by_name.values().cloned().collect();
    read_libraries(root, reals, &mut scan, cache);
    for (name, real) in &names.by_name {
        if let Some(library) = scan.libraries.get_mut(real) {
            library.names.push(name.clone());
        }
    }
    let walked: Vec<String> = tops.iter().map(|t| t.name.clone()).collect();
    resolve_dependencies(root, &mut scan, &walked, cache);
    for library in scan.libraries.values_mut() {
        library.names.sort();
        library.names.dedup();
    }
    scan
}

fn read_cache(root: &mut RootDir, warnings: &mut Vec<String>) -> Option<LdCache> {
    let (mut file, _) = root.open_file_follow(Path::new("etc/ld.so.cache")).ok()?;
    let mut data = Vec::new();
    if let Err(e) = file.read_to_end(&mut data) {
        warnings.push(format!("/etc/ld.so.cache: cannot read it: {e}"));
        return None;
    }
    match ldcache::parse(&data) {
        Ok(cache) => Some(cache),
        Err(e) => {
            warnings.push(format!("/etc/ld.so.cache: ignored, {e}"));
            None
        }
    }
}

/// The existing directories among `wanted`, each with its real path; a
/// directory inside another one is covered by that one's walk.
fn top_dirs(root: &mut RootDir, wanted: Vec<String>) -> Vec<TopDir> {
    let mut tops: Vec<TopDir> = Vec::new();
    for name in wanted {
        let name = crate::loader::normalize(&name);
        if tops.iter().any(|t| t.name == name) {
            continue;
        }
        let Ok(real) = root.resolve_follow(relative(&name)) else {
            continue;
        };
        if root
            .lstat(&real)
            .ok()
            .flatten()
            .map(|st| EntryKind::from_mode(st.st_mode))
            != Some(EntryKind::Dir)
        {
            continue;
        }
        tops.push(TopDir {
            name,
            real: absolute(&real),
        });
    }
    tops
}

/// Walks each real directory once (merged-/usr boxes reach `/usr/lib` also
/// as `/lib`), and names every library file under each top directory that
/// leads to it. Symlinked subdirectories are not followed. Directories the
/// cache knows unchanged are not listed again.
fn walk(root: &mut RootDir, tops: &[TopDir], names: &mut Names, warnings: &mut Vec<String>, cache: &mut ProbeCache) {
    let mut reals: Vec<&str> = tops.iter().map(|t| t.real.as_str()).collect();
    reals.sort();
    reals.dedup();
    let outermost: Vec<String> = reals
        .iter()
        .copied()
        .filter(|r| !reals.iter().any(|other| other != r && is_within(r, other)))
        .map(str::to_string)
        .collect();
    for start in outermost {
        let old = cache.take_tree(&start);
        // Every directory the last walk saw, stat'ed up front on all cores.
        let mut paths = Vec::new();
        if let Some(old) = &old {
            tree_paths(&start, old, &mut paths);
        }
        let keys: HashMap<String, Option<FileKey>> = cache::stat_all(root, &paths.iter().collect::<Vec<_>>())
            .into_iter()
            .collect();
        let mut walk = Walk {
            root: &mut *root,
            tops,
            names: &mut *names,
            warnings: &mut *warnings,
            cache: &mut *cache,
            keys,
            changed: false,
        };
        let tree = walk.dir(&start, 0, old);
        let changed = walk.changed;
        cache.put_tree(&start, tree, changed);
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The paths of a cached tree's directories.
fn tree_paths(dir: &str, node: &DirNode, out: &mut Vec<String>) {
    out.push(dir.to_string());
    for (name, child) in &node.dirs {
        tree_paths(&child_path(dir, name), child, out);
    }
}

type Subdirs = Vec<(String, Option<DirNode>)>;

/// One walk from a top directory.
struct Walk<'a> {
    root: &'a mut RootDir,
    tops: &'a [TopDir],
    names: &'a mut Names,
    warnings: &'a mut Vec<String>,
    cache: &'a mut ProbeCache,
    /// Directories' keys, stat'ed up front.
    keys: HashMap<String, Option<FileKey>>,
    /// Whether some directory was listed again.
    changed: bool,
}

impl Walk<'_> {
    /// Walks `dir` (`old`: what the last walk kept of it); returns what to
    /// keep of it now.
    fn dir(&mut self, dir: &str, depth: usize, old: Option<DirNode>) -> DirNode {
        let key = match self.keys.get(dir) {
            Some(key) => *key,
            None => cache::key_now(self.root, dir),
        };
        // Its library-like entries, and its subdirectories with what the
        // last walk kept of each.
        let (files, subdirs): (Vec<(String, Listed)>, Subdirs) = match old {
            Some(node) if node.holds(key.as_ref()) => {
                self.cache.hit();
                (node.files, node.dirs.into_iter().map(|(n, c)| (n, Some(c))).collect())
            }
            old => {
                self.changed = true;
                let mut old_children = old.map(|n| n.dirs).unwrap_or_default();
                let entries = match self.root.read_dir(relative(dir)) {
                    Ok(entries) => entries,
                    Err(e) => {
                        self.warnings.push(format!("{dir}: cannot list it: {e}"));
                        return DirNode::default();
                    }
                };
                let mut files = Vec::new();
                let mut subdirs = Vec::new();
                for (name, kind) in entries {
                    let name = name.to_string_lossy().into_owned();
                    match kind {
                        EntryKind::Dir => {
                            let old_child = old_children.remove(&name);
                            subdirs.push((name, old_child));
                        }
                        EntryKind::File if looks_like_library(&name) => files.push((name, Listed::File)),
                        EntryKind::Symlink if looks_like_library(&name) => files.push((name, Listed::Symlink)),
                        _ => {}
                    }
                }
                (files, subdirs)
            }
        };
        for (name, kind) in &files {
            let path = child_path(dir, name);
            match kind {
                Listed::File => add_names(self.tops, &path, &path, self.names),
                Listed::Symlink => match self.root.resolve_follow(relative(&path)) {
                    Ok(real) => {
                        let real = absolute(&real);
                        let is_file = self
                            .root
                            .lstat(relative(&real))
                            .ok()
                            .flatten()
                            .is_some_and(|st| EntryKind::from_mode(st.st_mode) == EntryKind::File);
                        if is_file {
                            add_names(self.tops, &path, &real, self.names);
                        }
                    }
                    Err(e) => self.warnings.push(format!("{path}: dangling or looping symlink ({e})")),
                },
            }
        }
        let mut dirs = BTreeMap::new();
        for (name, old_child) in subdirs {
            let path = child_path(dir, &name);
            let child = if depth < MAX_DEPTH {
                self.dir(&path, depth + 1, old_child)
            } else {
                self.warnings
                    .push(format!("{path}: deeper than {MAX_DEPTH} levels, not walked"));
                DirNode::default()
            };
            dirs.insert(name, child);
        }
        DirNode {
            key: key.filter(|k| self.cache.keeps(k)),
            files,
            dirs,
        }
    }
}

/// Records `found` (a path under some top directory's real path) under
/// every top directory name that reaches it.
fn add_names(tops: &[TopDir], found: &str, real: &str, names: &mut Names) {
    for top in tops {
        if let Some(rest) = found.strip_prefix(top.real.as_str())
            && (rest.starts_with('/') || top.real == "/")
        {
            let name = crate::loader::normalize(&format!("{}/{}", top.name, rest));
            names.by_name.insert(name, real.to_string());
        }
    }
}

/// Reads, parses and hashes each real file the cache does not know
/// unchanged (in parallel: on a box the hashing is most of the work). Files
/// that are not ELF shared objects (linker scripts such as `libc.so`,
/// executables) are left out.
fn read_libraries(root: &mut RootDir, reals: BTreeSet<String>, scan: &mut LibraryScan, cache: &mut ProbeCache) {
    let mut files: Vec<(String, File, FileKey)> = Vec::new();
    for real in reals {
        if scan.libraries.contains_key(&real) {
            continue;
        }
        // A file the cache knows unchanged is not even opened.
        let known = cache.key_of(root, &real).and_then(|key| cache.get(&real, &key));
        if let Some(known) = known {
            add_library(scan, real, known);
            continue;
        }
        let opened = root
            .open_file(relative(&real))
            .map_err(|e| e.to_string())
            .and_then(|file| Ok((FileKey::of(&file.metadata().map_err(|e| e.to_string())?), file)));
        match opened {
            Ok((key, file)) => files.push((real, file, key)),
            Err(e) => scan.warnings.push(format!("{real}: cannot open it: {e}")),
        }
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, FileKey, ReadResult)>> = Mutex::default();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // One buffer per worker: fresh allocations per file would
                // cost a page fault per 4 KiB of every library.
                let mut buffer = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((real, file, key)) = files.get(index) else {
                        break;
                    };
                    let result = read_library(file, &mut buffer);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((real.clone(), *key, result));
                }
            });
        }
    });
    for (real, key, result) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match result {
            Ok(read) => {
                cache.insert(&real, key, read.clone());
                add_library(scan, real, read);
            }
            Err(reason) => scan.warnings.push(format!("{real}: {reason}")),
        }
    }
}

fn add_library(scan: &mut LibraryScan, real: String, read: Option<ReadLibrary>) {
    if let Some(read) = read {
        scan.libraries.insert(real.clone(), library_record(&real, &read));
        scan.elf.insert(real, Arc::new(read.info));
    }
}

/// `None` for files that are not ELF shared objects; `Err` says why a file
/// could not be read.
type ReadResult = Result<Option<ReadLibrary>, String>;

/// One file, read into `bytes`.
fn read_library(file: &File, bytes: &mut Vec<u8>) -> ReadResult {
    let Some(info) = read_elf(file, bytes)? else {
        return Ok(None);
    };
    let shared = info.kind == ElfKind::SharedObject || info.soname.is_some();
    if !shared {
        return Ok(None);
    }
    Ok(Some(ReadLibrary {
        info,
        size: bytes.len() as u64,
        sha256: Sha256Digest::of(bytes).hex(),
    }))
}

/// An ELF file, read into `bytes` (at most [`MAX_LIBRARY_BYTES`]) and
/// parsed; `None` when the file is not ELF.
fn read_elf(mut file: &File, bytes: &mut Vec<u8>) -> Result<Option<ElfInfo>, String> {
    let size = file.metadata().map_err(|e| format!("cannot stat it: {e}"))?.len();
    let mut head = [0u8; 4];
    if file.read_exact(&mut head).is_err() || !is_elf(&head) {
        return Ok(None);
    }
    if size > MAX_LIBRARY_BYTES {
        return Err(format!("{size} bytes is too large to inspect"));
    }
    bytes.clear();
    bytes.extend_from_slice(&head);
    file.read_to_end(bytes).map_err(|e| format!("cannot read it: {e}"))?;
    ElfInfo::parse(bytes).map(Some).map_err(|e| e.to_string())
}

fn library_record(real: &str, read: &ReadLibrary) -> Library {
    let info = &read.info;
    Library {
        path: real.to_string(),
        names: Vec::new(),
        soname: info.soname.clone(),
        abi: info.abi,
        needed: info.needed.iter().chain(&info.filters).cloned().collect(),
        deps: Vec::new(),
        rpath: info.rpath.clone(),
        runpath: info.runpath.clone(),
        versions: info.version_definitions.clone(),
        versions_known: info.versions_known,
        size: read.size,
        sha256: read.sha256.clone(),
    }
}

/// A program of the box that runs inside containers (Dobby's init): its
/// loader, the libraries it needs (resolved on the box as its loader would)
/// and the symbol versions it needs from them.
pub fn describe_program(root: &mut RootDir, scan: &LibraryScan, path: &str) -> Result<HostProgram, String> {
    let file = root
        .open_file(relative(path))
        .map_err(|e| format!("{path}: not on this box ({e}); bundles that run it cannot be checked"))?;
    let mut bytes = Vec::new();
    let info = read_elf(&file, &mut bytes)
        .map_err(|e| format!("{path}: {e}"))?
        .ok_or_else(|| format!("{path}: not an ELF file"))?;
    let known: BTreeMap<&str, &Library> = scan
        .libraries
        .values()
        .flat_map(|l| l.names.iter().map(move |n| (n.as_str(), l)))
        .collect();
    let search = SearchPath {
        ld_library_path: Vec::new(),
        configured: scan.configured_dirs.clone(),
    };
    let origin = parent_dir(path).to_string();
    let deps = info
        .needed
        .iter()
        .chain(&info.filters)
        .map(|name| Dependency {
            name: name.clone(),
            path: candidates(name, &info, &origin, &search)
                .into_iter()
                .find(|candidate| known.get(candidate.as_str()).is_some_and(|l| info.abi.can_load(&l.abi))),
        })
        .collect();
    Ok(HostProgram {
        path: path.to_string(),
        abi: info.abi,
        interpreter: info.interpreter.clone(),
        deps,
        version_needs: info
            .version_needs
            .iter()
            .map(|(name, versions)| (name.clone(), versions.iter().cloned().collect()))
            .collect(),
        versions_known: info.versions_known,
        sha256: Sha256Digest::of(&bytes).hex(),
    })
}

/// Resolves every library's needed names as the loader would, reading
/// libraries found only through a RUNPATH or RPATH as they turn up.
/// `walked` are the directories the walk covered completely: a name there
/// that the walk did not find does not exist.
fn resolve_dependencies(root: &mut RootDir, scan: &mut LibraryScan, walked: &[String], cache: &mut ProbeCache) {
    let search = SearchPath {
        ld_library_path: Vec::new(),
        configured: scan.configured_dirs.clone(),
    };
    // Every name a library is known by, to its real path.
    let mut known: BTreeMap<String, String> = scan
        .libraries
        .values()
        .flat_map(|l| l.names.iter().map(move |n| (n.clone(), l.path.clone())))
        .collect();
    let mut absent: BTreeSet<String> = BTreeSet::new();
    let mut resolved: HashMap<(String, Abi), Option<String>> = HashMap::new();
    let mut pending: Vec<String> = scan.libraries.keys().cloned().collect();
    while let Some(real) = pending.pop() {
        let Some(info) = scan.elf.get(&real).cloned() else {
            continue;
        };
        let origin = parent_dir(&real).to_string();
        // Without RPATH or RUNPATH a name resolves the same for every
        // library of an ABI: worked out once (most needs are libc's family).
        let plain = info.rpath.is_empty() && info.runpath.is_empty();
        let mut deps = Vec::new();
        for name in info.needed.iter().chain(&info.filters) {
            let memo_key = (name.clone(), info.abi);
            if plain
                && !name.contains('/')
                && let Some(found) = resolved.get(&memo_key)
            {
                if found.is_none() {
                    scan.warnings
                        .push(format!("{real}: needs {name}, which the loader cannot find"));
                }
                deps.push(Dependency {
                    name: name.clone(),
                    path: found.clone(),
                });
                continue;
            }
            let mut found = None;
            for candidate in candidates(name, &info, &origin, &search) {
                let target = if let Some(target) = known.get(&candidate) {
                    target.clone()
                } else if absent.contains(&candidate) || walked.iter().any(|dir| is_within(&candidate, dir)) {
                    continue;
                } else if let Some((target, new)) = discover(root, &candidate, scan, cache) {
                    known.insert(candidate.clone(), target.clone());
                    if let Some(library) = scan.libraries.get_mut(&target) {
                        library.names.push(candidate.clone());
                    }
                    if new {
                        pending.push(target.clone());
                    }
                    target
                } else {
                    absent.insert(candidate);
                    continue;
                };
                // The loader passes over libraries of another ABI.
                if scan.elf.get(&target).is_some_and(|lib| info.abi.can_load(&lib.abi)) {
                    found = Some(candidate);
                    break;
                }
            }
            if found.is_none() {
                scan.warnings
                    .push(format!("{real}: needs {name}, which the loader cannot find"));
            }
            if plain && !name.contains('/') {
                resolved.insert(memo_key, found.clone());
            }
            deps.push(Dependency {
                name: name.clone(),
                path: found,
            });
        }
        if let Some(library) = scan.libraries.get_mut(&real) {
            library.deps = deps;
        }
    }
}

/// A library outside the walked directories (reached through a RUNPATH or
/// RPATH): reads it if it is one. Returns its real path, and whether it was
/// read just now.
fn discover(root: &mut RootDir, path: &str, scan: &mut LibraryScan, cache: &mut ProbeCache) -> Option<(String, bool)> {
    let real = absolute(&root.resolve_follow(relative(path)).ok()?);
    if scan.libraries.contains_key(&real) {
        return Some((real, false));
    }
    let is_file = root
        .lstat(relative(&real))
        .ok()
        .flatten()
        .is_some_and(|st| EntryKind::from_mode(st.st_mode) == EntryKind::File);
    if !is_file {
        return None;
    }
    read_libraries(root, BTreeSet::from([real.clone()]), scan, cache);
    scan.libraries.contains_key(&real).then_some((real, true))
}

#[cfg(test)]
mod tests;
