//! What is installed, as files under `<root>/state`: one JSON document per
//! app and one for the locks, each replaced atomically (temporary file,
//! fsync, rename), so every change is all or nothing. At start the records
//! are reconciled with the disk: a bundle is installed exactly when its
//! directory exists, since it only appears there by an atomic rename after
//! its unpack was synced.
//!
//! ```text
//! <root>/apps/<app>/<version>/     bundles (config.json, rootfs/), or RALF
//!                                  packages (package.ralf, content/ of tar ones)
//! <root>/data/<app>/               app data (kept by an upgrade uninstall)
//! <root>/downloads/<app>@<version>/ resumable downloads and their requests
//! <root>/state/apps/<app>.json     records
//! <root>/state/locks.json
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bundlegen_protocol::fsutil::write_file_atomic;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: bundlegen_protocol::root::RootError,
    },
}

/// An I/O error on `path`, as a store error.
pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Recorded before the bundle is renamed into place.
    Installing,
    Installed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub state: VersionState,
    /// sha256 of the archive it came from.
    pub sha256: String,
    pub archive_size: u64,
    /// Bytes the unpacked bundle takes.
    pub disk_size: u64,
    /// Where it came from (URL, `service`, `developer push`).
    pub source: String,
    pub installed_at: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// What a RALF package is; none for a bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageRecord>,
}

/// An installed RALF package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageRecord {
    /// `base`, `runtime`, `application`, ...
    pub package_type: String,
    /// The content's format (`erofs.lz4`, `tar.gz`, ...).
    pub content: String,
    /// What it is layered on: id → the installed version it was resolved to.
    pub dependencies: BTreeMap<String, String>,
    /// The signing certificate's subject (empty: unsigned, allowed by
    /// `allow_unsigned`).
    pub signer: String,
    /// The package manifest's digest (`sha256:...`).
    pub manifest: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub app: String,
    /// The version Launch starts.
    pub current: Option<String>,
    pub versions: BTreeMap<String, VersionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub handle: String,
    pub app: String,
    pub version: String,
    pub reason: String,
    pub owner: String,
}

#[derive(Debug, Default)]
struct State {
    apps: BTreeMap<String, AppRecord>,
    locks: Vec<LockRecord>,
}

/// What recovery found and did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Installs whose rename happened before the record said so.
    pub completed: Vec<String>,
    /// Records of bundles that never reached their directory.
    pub dropped: Vec<String>,
    /// Directories nothing recorded (removed).
    pub orphans: Vec<String>,
}

pub struct Store {
    root: PathBuf,
    state: Mutex<State>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.root.join("apps").join(app)
    }

    pub fn bundle_dir(&self, app: &str, version: &str) -> PathBuf {
        self.app_dir(app).join(version)
    }

    pub fn data_dir(&self, app: &str) -> PathBuf {
        self.root.join("data").join(app)
    }

    pub fn download_dir(&self, app: &str, version: &str) -> PathBuf {
        self.root.join("downloads").join(format!("{app}@{version}"))
    }

    fn app_file(&self, app: &str) -> PathBuf {
        self.root.join("state/apps").join(format!("{app}.json"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the store and reconciles it with the disk.
    pub fn open(root: &Path) -> Result<(Store, Recovery), StoreError> {
        for dir in ["apps", "data", "downloads", "state/apps"] {
            std::fs::create_dir_all(root.join(dir)).map_err(io(&root.join(dir)))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            state: Mutex::default(),
        };
        let mut state = State::default();
        let apps_dir = root.join("state/apps");
        for entry in std::fs::read_dir(&apps_dir).map_err(io(&apps_dir))? {
            let path = entry.map_err(io(&apps_dir))?.path();
            match std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<AppRecord>(&bytes).ok())
            {
                Some(record) => {
                    state.apps.insert(record.app.clone(), record);
                }
                // A record we cannot read (not ours, or damaged): the disk
                // decides below.
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let locks = root.join("state/locks.json");
        state.locks = std::fs::read(&locks)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        *store.lock() = state;
        let recovery = store.reconcile()?;
        Ok((store, recovery))
    }

    fn reconcile(&self) -> Result<Recovery, StoreError> {
        let mut recovery = Recovery::default();
        let mut apps = self.lock().apps.clone();
        for record in apps.values_mut() {
            let mut changed = false;
            let versions: Vec<String> = record.versions.keys().cloned().collect();
            for version in versions {
                let dir = self.bundle_dir(&record.app, &version);
                let present = dir.join("config.json").exists() || dir.join(crate::ralf::PACKAGE_FILE).exists();
                let entry = record.versions.get_mut(&version).expect("listed");
                match (present, entry.state) {
                    (true, VersionState::Installing) => {
                        entry.state = VersionState::Installed;
                        recovery.completed.push(format!("{}@{version}", record.app));
                        record.current = Some(version.clone());
                        changed = true;
                    }
                    (false, _) => {
                        record.versions.remove(&version);
                        recovery.dropped.push(format!("{}@{version}", record.app));
                        if record.current.as_deref() == Some(&version) {
                            record.current = record.versions.keys().next_back().cloned();
                        }
                        changed = true;
                    }
                    (true, VersionState::Installed) => {}
                }
            }
            if changed {
                self.save_app(record)?;
            }
        }
        // Directories no record knows, and unpack staging left by a crash.
        let apps_dir = self.root.join("apps");
        for app_entry in std::fs::read_dir(&apps_dir).map_err(io(&apps_dir))? {
            let app_path = app_entry.map_err(io(&apps_dir))?.path();
            let app = app_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for version_entry in std::fs::read_dir(&app_path).map_err(io(&app_path))? {
                let path = version_entry.map_err(io(&app_path))?.path();
                let version = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let known = self
                    .lock()
                    .apps
                    .get(&app)
                    .is_some_and(|r| r.versions.contains_key(&version));
                if !known {
                    remove_tree(&path)?;
                    recovery.orphans.push(format!("{app}/{version}"));
                }
            }
            if std::fs::read_dir(&app_path).map_err(io(&app_path))?.next().is_none() {
                let _ = std::fs::remove_dir(&app_path);
            }
        }
        // Locks of versions that are gone.
        let mut state = self.lock();
        let installed = |lock: &LockRecord| {
            state
                .apps
                .get(&lock.app)
                .is_some_and(|r| r.versions.contains_key(&lock.version))
        };
        let kept: Vec<LockRecord> = state.locks.iter().filter(|l| installed(l)).cloned().collect();
        if kept.len() != state.locks.len() {
            state.locks = kept.clone();
            drop(state);
            self.save_locks(&kept)?;
        }
        Ok(recovery)
    }

    /// Writes a record (or removes it when it has no versions).
    pub fn save_app(&self, record: &AppRecord) -> Result<(), StoreError> {
        let path = self.app_file(&record.app);
        if record.versions.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            self.lock().apps.remove(&record.app);
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(record).expect("records serialise");
        write_file_atomic(&path, &bytes, 0o644).map_err(io(&path))?;
        self.lock().apps.insert(record.app.clone(), record.clone());
        Ok(())
    }

    fn save_locks(&self, locks: &[LockRecord]) -> Result<(), StoreError> {
        let path = self.root.join("state/locks.json");
        let bytes = serde_json::to_vec_pretty(locks).expect("locks serialise");
        write_file_atomic(&path, &bytes, 0o644).map_err(io(&path))
    }

    pub fn app(&self, app: &str) -> Option<AppRecord> {
        self.lock().apps.get(app).cloned()
    }

    pub fn apps(&self) -> Vec<AppRecord> {
        self.lock().apps.values().cloned().collect()
    }

    /// Installed package versions, by id.
    pub fn package_versions(&self) -> BTreeMap<String, Vec<String>> {
        let state = self.lock();
        let mut packages: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for record in state.apps.values() {
            for (version, entry) in &record.versions {
                if entry.package.is_some() && entry.state == VersionState::Installed {
                    packages.entry(record.app.clone()).or_default().push(version.clone());
                }
            }
        }
        packages
    }

    /// `app version` of each package layered on `id version`.
    pub fn dependants(&self, id: &str, version: &str) -> Vec<String> {
        let state = self.lock();
        let mut dependants = Vec::new();
        for record in state.apps.values() {
            for (v, entry) in &record.versions {
                let pinned = entry.package.as_ref().and_then(|p| p.dependencies.get(id));
                if pinned.is_some_and(|p| p == version) {
                    dependants.push(format!("{} {v}", record.app));
                }
            }
        }
        dependants
    }

    pub fn locks_of(&self, app: &str, version: &str) -> Vec<LockRecord> {
        self.lock()
            .locks
            .iter()
            .filter(|l| l.app == app && l.version == version)
            .cloned()
            .collect()
    }

    pub fn add_lock(&self, lock: LockRecord) -> Result<(), StoreError> {
        let mut locks = self.lock().locks.clone();
        locks.push(lock);
        self.save_locks(&locks)?;
        self.lock().locks = locks;
        Ok(())
    }

    /// Removes a lock; false if there is no such handle.
    pub fn remove_lock(&self, handle: &str) -> Result<bool, StoreError> {
        let mut locks = self.lock().locks.clone();
        let before = locks.len();
        locks.retain(|l| l.handle != handle);
        if locks.len() == before {
            return Ok(false);
        }
        self.save_locks(&locks)?;
        self.lock().locks = locks;
        Ok(true)
    }

    /// Bytes all installed bundles take.
    pub fn used(&self) -> u64 {
        self.lock()
            .apps
            .values()
            .flat_map(|r| r.versions.values())
            .map(|v| v.disk_size)
            .sum()
    }

    /// Whether archives fit, as of now: `quota` bytes for bundles, each
    /// archive unpacking to `unpack_factor` times its size.
    pub fn room(&self, quota: u64, unpack_factor: u64) -> Room {
        Room {
            root: self.root.clone(),
            used: self.used(),
            quota,
            unpack_factor,
        }
    }
}

/// Whether an archive arriving on the box fits: room on the filesystem for
/// the archive and its unpacked bundle, and in the quota for the bundle.
#[derive(Debug, Clone)]
pub struct Room {
    root: PathBuf,
    used: u64,
    quota: u64,
    unpack_factor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    #[error("{free} bytes free, {needed} needed (download and unpack)")]
    Space { free: u64, needed: u64 },
    #[error("the quota of {quota} bytes would be exceeded ({used} used, {wanted} more wanted)")]
    Quota { quota: u64, used: u64, wanted: u64 },
}

impl Room {
    /// Checks an archive of which `written` bytes are on disk already and
    /// `remaining` are still to come (0 when unknown: checked again as
    /// they arrive).
    pub fn check(&self, written: u64, remaining: u64) -> Result<(), NoRoom> {
        let unpacked = written.saturating_add(remaining).saturating_mul(self.unpack_factor);
        if self.used.saturating_add(unpacked) > self.quota {
            return Err(NoRoom::Quota {
                quota: self.quota,
                used: self.used,
                wanted: unpacked,
            });
        }
        // The written bytes are no longer free: only what is to come and
        // the unpacked copy are still needed.
        let free = free_bytes(&self.root);
        let needed = remaining.saturating_add(unpacked);
        if free < needed {
            return Err(NoRoom::Space { free, needed });
        }
        Ok(())
    }
}

/// Free bytes for an unprivileged writer on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path).map_or(0, |s| s.blocks_available() * s.fragment_size())
}

/// Removes a directory tree without following symlinks (a bundle's rootfs
/// is full of them).
pub fn remove_tree(path: &Path) -> Result<(), StoreError> {
    bundlegen_protocol::root::remove_tree(path)
        .map(drop)
        .map_err(|source| StoreError::Remove {
            path: path.to_path_buf(),
            source,
        })
}

/// Bytes under a directory (files' sizes; symlinks are not followed).
pub fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(state: VersionState) -> VersionRecord {
        VersionRecord {
            state,
            sha256: "ab".into(),
            archive_size: 10,
            disk_size: 100,
            source: "test".into(),
            installed_at: 1,
            metadata: BTreeMap::new(),
            package: None,
        }
    }

    fn bundle(root: &Path, app: &str, version: &str) {
        let dir = root.join("apps").join(app).join(version);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
    }

    #[test]
    fn recovery_makes_records_and_disk_agree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        {
            let (store, recovery) = Store::open(root).unwrap();
            assert_eq!(recovery, Recovery::default());
            let mut record = AppRecord {
                app: "a".into(),
                current: Some("1".into()),
                versions: BTreeMap::new(),
            };
            record.versions.insert("1".into(), version(VersionState::Installed));
            // Renamed into place, but the record still says installing.
            record.versions.insert("2".into(), version(VersionState::Installing));
            // Recorded, never renamed.
            record.versions.insert("3".into(), version(VersionState::Installing));
            store.save_app(&record).unwrap();
            store
                .add_lock(LockRecord {
                    handle: "l1".into(),
                    app: "a".into(),
                    version: "3".into(),
                    reason: "r".into(),
                    owner: "o".into(),
                })
                .unwrap();
            store
                .add_lock(LockRecord {
                    handle: "l2".into(),
                    app: "a".into(),
                    version: "1".into(),
                    reason: "r".into(),
                    owner: "o".into(),
                })
                .unwrap();
        }
        bundle(root, "a", "1");
        bundle(root, "a", "2");
        bundle(root, "ghost", "9");
        std::fs::create_dir_all(root.join("apps/a/.4.unpack-xyz/rootfs")).unwrap();
        let (store, recovery) = Store::open(root).unwrap();
        assert_eq!(recovery.completed, ["a@2"]);
        assert_eq!(recovery.dropped, ["a@3"]);
        let mut orphans = recovery.orphans.clone();
        orphans.sort();
        assert_eq!(orphans, ["a/.4.unpack-xyz", "ghost/9"]);
        assert!(!root.join("apps/ghost").exists());
        let record = store.app("a").unwrap();
        assert_eq!(record.versions.keys().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(record.current.as_deref(), Some("2"));
        assert!(store.locks_of("a", "3").is_empty(), "a lock of a dropped version goes");
        assert_eq!(store.locks_of("a", "1").len(), 1);
        assert_eq!(store.used(), 200);
        // The recovered state is what the files say now.
        drop(store);
        let (again, recovery) = Store::open(root).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(again.app("a"), Some(record));
    }
}
