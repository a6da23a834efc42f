//! What the probe read of each library file and of each library directory,
//! remembered between probes and keyed on what changes whenever the file or
//! directory does (device, inode, size, modification and change times; the
//! change time cannot be set back by a user), so that a re-probe after a
//! boot or a package change reads and lists only what changed.
//!
//! Directories are kept as a tree (what the walk needs of each: its
//! subdirectories and the names that look like libraries), checked from
//! the top down: a directory replaced by a symlink changes its parent's
//! times, so a path whose every parent was found unchanged can be stat'ed
//! in one call. Entries changed within the last seconds before a probe are
//! not kept: another change in the same clock tick would not show in their
//! times. A cache that cannot be read is ignored: a full probe is always
//! correct.

use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bundlegen_protocol::fsutil::write_file_atomic;
use bundlegen_protocol::root::RootDir;
use serde::{Deserialize, Serialize};

use crate::elf::ElfInfo;

/// Bumped when what is stored changes meaning.
const FORMAT: u32 = 3;
/// Files and directories changed this recently before a probe are not
/// cached (timestamps are as coarse as the kernel's clock tick).
const RACY_SECONDS: i64 = 2;

/// What identifies a file's content without reading it (stored as an
/// array: the cache holds one per directory of the box).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "KeyArray", from = "KeyArray")]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

type KeyArray = (u64, u64, u64, i64, i64, i64, i64);

impl From<FileKey> for KeyArray {
    fn from(k: FileKey) -> KeyArray {
        (k.dev, k.ino, k.size, k.mtime.0, k.mtime.1, k.ctime.0, k.ctime.1)
    }
}

impl From<KeyArray> for FileKey {
    fn from(a: KeyArray) -> FileKey {
        FileKey {
            dev: a.0,
            ino: a.1,
            size: a.2,
            mtime: (a.3, a.4),
            ctime: (a.5, a.6),
        }
    }
}

impl FileKey {
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn of_stat(st: &nix::sys::stat::FileStat) -> FileKey {
        FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// Changed so shortly before `started` that a change in the same tick
    /// might not show.
    fn racy(&self, started: i64) -> bool {
        self.mtime.0 >= started - RACY_SECONDS || self.ctime.0 >= started - RACY_SECONDS
    }
}

/// The key of `path` (absolute within the root) as it is now.
pub fn key_now(root: &RootDir, path: &str) -> Option<FileKey> {
    root.lstat_unresolved(Path::new(path.trim_start_matches('/')))
        .ok()
        .flatten()
        .map(|st| FileKey::of_stat(&st))
}

/// A file that looks like a library, or a symlink to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Listed {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "l")]
    Symlink,
}

/// What the walk keeps of a directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DirNode {
    #[serde(rename = "k")]
    pub key: Option<FileKey>,
    /// Its entries that look like libraries.
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<(String, Listed)>,
    /// Its subdirectories.
    #[serde(rename = "d", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dirs: BTreeMap<String, DirNode>,
}

impl DirNode {
    /// Whether this node, listed when it had `key`, still holds.
    pub fn holds(&self, key: Option<&FileKey>) -> bool {
        key.is_some() && self.key.as_ref() == key
    }
}

/// A library as read: its ELF facts, size and sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLibrary {
    pub info: ElfInfo,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: FileKey,
    /// `None`: the file is not an ELF shared object.
    library: Option<ReadLibrary>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    format: u32,
    /// By real path in the probed root.
    files: HashMap<String, Entry>,
    /// The walked directories, by the real path each walk starts at.
    dirs: BTreeMap<String, DirNode>,
}

/// The cache of one probe: what the last one stored, and what this one saw
/// (only that is saved: what went is forgotten).
#[derive(Debug, Default)]
pub struct ProbeCache {
    /// When this probe started (seconds since the epoch).
    started: i64,
    previous: Stored,
    seen: Stored,
    /// Whether this probe learnt anything the file does not hold.
    changed: bool,
    /// Keys of the files the last probe saw, stat'ed up front.
    current: HashMap<String, Option<FileKey>>,
    /// Files and directories answered from the cache.
    pub hits: usize,
}

impl ProbeCache {
    /// What `file` holds, or an empty cache if it is missing or unreadable.
    pub fn load(file: &Path) -> ProbeCache {
        let previous = std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
            .filter(|stored| stored.format == FORMAT)
            .unwrap_or_default();
        ProbeCache {
            previous,
            ..ProbeCache::new()
        }
    }

    /// An empty cache: everything is read.
    pub fn new() -> ProbeCache {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        ProbeCache {
            started,
            seen: Stored {
                format: FORMAT,
                ..Stored::default()
            },
            ..ProbeCache::default()
        }
    }

    /// Stats the files the last probe saw, on all cores (with the
    /// directories, a stat of each is most of a re-probe).
    pub fn prefetch(&mut self, root: &RootDir) {
        let paths: Vec<&String> = self.previous.files.keys().collect();
        self.current = stat_all(root, &paths).into_iter().collect();
    }

    /// The key of file `path` as [`prefetch`](Self::prefetch) found it, else
    /// as it is now.
    pub fn key_of(&self, root: &RootDir, path: &str) -> Option<FileKey> {
        match self.current.get(path) {
            Some(key) => *key,
            None => key_now(root, path),
        }
    }

    /// What was read of `path` when it had this key: `Some(None)` for a
    /// file that is not a library, `None` if it must be read.
    pub fn get(&mut self, path: &str, key: &FileKey) -> Option<Option<ReadLibrary>> {
        let (path, entry) = self.previous.files.remove_entry(path)?;
        if entry.key != *key {
            return None;
        }
        self.hits += 1;
        let library = entry.library.clone();
        self.seen.files.insert(path, entry);
        Some(library)
    }

    pub fn insert(&mut self, path: &str, key: FileKey, library: Option<ReadLibrary>) {
        self.changed = true;
        if !key.racy(self.started) {
            self.seen.files.insert(path.to_string(), Entry { key, library });
        }
    }

    /// The last probe's tree under the walk's start `top` (the walk checks
    /// and returns it through [`put_tree`](Self::put_tree)).
    pub fn take_tree(&mut self, top: &str) -> Option<DirNode> {
        self.previous.dirs.remove(top)
    }

    /// This probe's tree under `top`; `changed`: something in it was listed
    /// again.
    pub fn put_tree(&mut self, top: &str, tree: DirNode, changed: bool) {
        self.changed |= changed;
        self.seen.dirs.insert(top.to_string(), tree);
    }

    /// Whether a directory listed now may be kept.
    pub fn keeps(&self, key: &FileKey) -> bool {
        !key.racy(self.started)
    }

    pub fn hit(&mut self) {
        self.hits += 1;
    }

    /// Saves what this probe saw (atomically), unless the file holds it
    /// already.
    pub fn save(&self, file: &Path) -> std::io::Result<()> {
        let forgotten = !self.previous.files.is_empty() || !self.previous.dirs.is_empty();
        if !self.changed && !forgotten && file.exists() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.seen).expect("the cache serializes");
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_file_atomic(file, &bytes, 0o600)
    }
}

/// The keys of `paths`, stat'ed on all cores.
pub fn stat_all(root: &RootDir, paths: &[&String]) -> Vec<(String, Option<FileKey>)> {
    if paths.is_empty() {
        return Vec::new();
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let chunk = paths.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|path| ((*path).clone(), key_now(root, path)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key as of a file changed a minute ago.
    fn settled(path: &Path) -> FileKey {
        let mut key = FileKey::of(&std::fs::metadata(path).unwrap());
        key.mtime.0 -= 60;
        key.ctime.0 -= 60;
        key
    }

    #[test]
    fn a_changed_file_is_read_again_and_gone_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libx.so");
        std::fs::write(&library, b"one").unwrap();
        let key = settled(&library);
        let cache_file = dir.path().join("cache.json");
        let mut cache = ProbeCache::load(&cache_file);
        assert_eq!(cache.get("/libx.so", &key), None);
        cache.insert("/libx.so", key, None);
        cache.insert("/gone.so", key, None);
        cache.save(&cache_file).unwrap();

        let mut cache = ProbeCache::load(&cache_file);
        assert_eq!(cache.get("/libx.so", &key), Some(None));
        assert_eq!(cache.hits, 1);
        cache.save(&cache_file).unwrap();
        let mut cache = ProbeCache::load(&cache_file);
        assert_eq!(cache.get("/gone.so", &key), None, "not seen by the last probe");

        std::fs::write(&library, b"two!").unwrap();
        let changed = settled(&library);
        assert_ne!(changed, key);
        assert_eq!(cache.get("/libx.so", &changed), None);

        std::fs::write(&cache_file, b"{not json").unwrap();
        assert_eq!(ProbeCache::load(&cache_file).get("/libx.so", &key), None);
    }

    #[test]
    fn what_changed_just_now_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libx.so");
        std::fs::write(&library, b"one").unwrap();
        let fresh = FileKey::of(&std::fs::metadata(&library).unwrap());
        let cache_file = dir.path().join("cache.json");
        let mut cache = ProbeCache::load(&cache_file);
        cache.insert("/libx.so", fresh, None);
        assert!(!cache.keeps(&fresh));
        cache.save(&cache_file).unwrap();
        let mut cache = ProbeCache::load(&cache_file);
        assert_eq!(cache.get("/libx.so", &fresh), None);
    }
}
