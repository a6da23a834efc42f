//! Directory modes and mtimes, applied once everything is written: a
//! read-only directory must stay writable while it is filled, and writing
//! into a directory changes its mtime. Both tar appliers (image layers and
//! bundle archives) defer them here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{EntryKind, MissingDirs, RootDir, RootError};

#[derive(Debug, Default)]
pub struct DeferredDirs {
    /// (mode, mtime) by path in the root; the last one set wins.
    meta: BTreeMap<PathBuf, (u32, i64)>,
}

impl DeferredDirs {
    /// Records what directory `path` ends with.
    pub fn set(&mut self, path: &Path, mode: u32, mtime: i64) {
        self.meta.insert(path.to_path_buf(), (mode, mtime));
    }

    /// Forgets `path` and everything below it (removed or replaced).
    pub fn forget_tree(&mut self, path: &Path) {
        let below: Vec<PathBuf> = self
            .meta
            .range::<Path, _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for path in below {
            self.meta.remove(&path);
        }
    }

    /// Applies them, deepest first; a path that is no longer a directory
    /// is left alone. On failure, the path and why.
    pub fn apply(&mut self, root: &mut RootDir) -> Result<(), (PathBuf, RootError)> {
        for (path, (mode, mtime)) in self.meta.iter().rev() {
            let failed = |e| (path.clone(), e);
            let resolved = root.resolve(path, MissingDirs::Fail).map_err(failed)?;
            match root.lstat_resolved(&resolved).map_err(failed)? {
                Some(st) if EntryKind::from_mode(st.st_mode) == EntryKind::Dir => {}
                _ => continue,
            }
            root.set_mode(&resolved, *mode).map_err(failed)?;
            root.set_mtime(&resolved, *mtime).map_err(failed)?;
        }
        self.meta.clear();
        Ok(())
    }
}
