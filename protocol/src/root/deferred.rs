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

    /// Takes what was recorded, deepest first (the order to apply it in:
    /// setting a directory's mode never blocks setting its children's).
    pub fn take(&mut self) -> Vec<(PathBuf, u32, i64)> {
        std::mem::take(&mut self.meta)
            .into_iter()
            .rev()
            .map(|(path, (mode, mtime))| (path, mode, mtime))
            .collect()
    }

    /// Applies them, deepest first; a path that is no longer a directory
    /// is left alone. On failure, the path and why.
    pub fn apply(&mut self, root: &mut RootDir) -> Result<(), (PathBuf, RootError)> {
        for (path, mode, mtime) in self.take() {
            let resolved = match root.resolve(&path, MissingDirs::Fail) {
                Ok(resolved) => resolved,
                Err(e) => return Err((path, e)),
            };
            match root.lstat_resolved(&resolved) {
                Ok(Some(st)) if EntryKind::from_mode(st.st_mode) == EntryKind::Dir => {}
                Ok(_) => continue,
                Err(e) => return Err((path, e)),
            }
            if let Err(e) = root
                .set_mode(&resolved, mode)
                .and_then(|()| root.set_mtime(&resolved, mtime))
            {
                return Err((path, e));
            }
        }
        Ok(())
    }
}
