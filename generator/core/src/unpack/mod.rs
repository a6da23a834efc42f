//! Applying an image's layers into a rootfs, rootless and confined.
//!
//! Semantics follow the OCI image spec's layer changesets: entries replace
//! what lower layers had at their path (a directory over a directory only
//! updates its metadata), `.wh.NAME` removes `NAME` from lower layers and
//! `.wh..wh..opq` removes every lower-layer child of its directory, wherever
//! the marker appears in the layer (paths written by the layer itself are
//! tracked and kept). Every path is resolved through [`RootDir`], so no entry,
//! symlink, hardlink or whiteout reaches outside the rootfs.
//!
//! Owners are recorded in a [`Manifest`] instead of applied; device nodes are
//! created only when allowed (root) and recorded otherwise.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bundlegen_protocol::manifest::{Manifest, NodeKind, Owner, SpecialNode};
use bundlegen_protocol::root::{DeferredDirs, EntryKind, MissingDirs, RootDir, RootError, clean_path};
use bundlegen_protocol::tar_read::{TarEntry, TarError, TarKind, TarReader};
use nix::sys::stat::{futimens, makedev};
use nix::sys::time::TimeSpec;

use crate::image::{Image, ImageError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Bounds against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of file data written, over all layers.
    pub max_bytes: u64,
    /// Most entries, over all layers.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What to do with device nodes (fifos are always created: that needs no privilege).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNodes {
    /// `mknod` them (needs `CAP_MKNOD`).
    Create,
    /// Record them in the manifest only; the bundle archive carries them.
    Record,
}

impl DeviceNodes {
    /// Create when running as root, record otherwise.
    pub fn for_current_user() -> DeviceNodes {
        if nix::unistd::geteuid().is_root() {
            DeviceNodes::Create
        } else {
            DeviceNodes::Record
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub limits: Limits,
    pub device_nodes: DeviceNodes,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            limits: Limits::default(),
            device_nodes: DeviceNodes::for_current_user(),
        }
    }
}

/// Totals over the layers applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub layers: u64,
    pub entries: u64,
    pub file_bytes: u64,
    pub whiteouts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{layer}")]
    Tar {
        layer: String,
        #[source]
        source: TarError,
    },
    #[error("{layer}: entry {path:?}")]
    Root {
        layer: String,
        path: PathBuf,
        #[source]
        source: Box<RootError>,
    },
    #[error("{layer}: entry {path:?}: {reason}")]
    BadEntry {
        layer: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{layer}: writing {path:?}")]
    Write {
        layer: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the image exceeds the limit of {limit} {what} (a decompression bomb?)")]
    LimitExceeded { what: &'static str, limit: u64 },
}

/// Applies every layer of `image` into `root`, in order, and returns the
/// ownership manifest.
pub fn unpack_image(
    image: &Image,
    root: &mut RootDir,
    options: &UnpackOptions,
    mut progress: impl FnMut(usize, usize, &UnpackStats),
) -> Result<(Manifest, UnpackStats), UnpackError> {
    let mut state = UnpackState::default();
    for index in 0..image.layers.len() {
        let name = image.layer_name(index);
        let mut stream = image.open_layer(index)?;
        apply_layer(root, &mut state, &mut stream, &name, options)?;
        stream.finish()?;
        progress(index, image.layers.len(), &state.stats);
    }
    state.finish(root)?;
    Ok((state.manifest, state.stats))
}

/// What persists across layers while unpacking.
#[derive(Debug, Default)]
pub struct UnpackState {
    pub manifest: Manifest,
    pub stats: UnpackStats,
    /// Directory modes and mtimes, applied after the last layer.
    dirs: DeferredDirs,
}

impl UnpackState {
    /// Applies the deferred directory metadata.
    pub fn finish(&mut self, root: &mut RootDir) -> Result<(), UnpackError> {
        self.dirs.apply(root).map_err(|(path, source)| UnpackError::Root {
            layer: "finishing".into(),
            path,
            source: Box::new(source),
        })
    }

    fn forget(&mut self, real: &Path) {
        self.manifest.remove_tree(real);
        self.dirs.forget_tree(real);
    }
}

/// Applies one layer's tar stream. Exposed for tests and the fuzz target.
pub fn apply_layer(
    root: &mut RootDir,
    state: &mut UnpackState,
    stream: &mut dyn Read,
    layer: &str,
    options: &UnpackOptions,
) -> Result<(), UnpackError> {
    let mut applier = LayerApplier {
        root,
        state,
        options,
        layer,
        written: HashSet::new(),
        mixed: HashSet::new(),
    };
    let mut tar = TarReader::new(BufReader::with_capacity(256 * 1024, stream));
    while let Some(entry) = tar.next_entry().map_err(|source| UnpackError::Tar {
        layer: layer.to_string(),
        source,
    })? {
        applier.apply(&entry, &mut tar.data())?;
    }
    applier.state.stats.layers += 1;
    // Leave the rest of the stream to the caller, who drains it to verify digests.
    let _ = tar.into_inner();
    Ok(())
}

struct LayerApplier<'a> {
    root: &'a mut RootDir,
    state: &'a mut UnpackState,
    options: &'a UnpackOptions,
    layer: &'a str,
    /// Real paths this layer created (whole subtrees), which its own
    /// whiteouts never remove.
    written: HashSet<PathBuf>,
    /// Directories holding both this layer's entries and possibly lower ones:
    /// ancestors of written paths and directories this layer only updated.
    /// Whiteouts descend into them instead of removing them.
    mixed: HashSet<PathBuf>,
}

impl LayerApplier<'_> {
    fn root_error(&self, path: &Path) -> impl FnOnce(RootError) -> UnpackError + use<> {
        let (layer, path) = (self.layer.to_string(), path.to_path_buf());
        move |source| UnpackError::Root {
            layer,
            path,
            source: Box::new(source),
        }
    }

    fn bad(&self, path: &Path, reason: impl Into<String>) -> UnpackError {
        UnpackError::BadEntry {
            layer: self.layer.to_string(),
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn mark_written(&mut self, real: &Path) {
        self.written.insert(real.to_path_buf());
        self.mark_ancestors_mixed(real);
    }

    fn mark_ancestors_mixed(&mut self, real: &Path) {
        let mut ancestor = real.parent();
        while let Some(dir) = ancestor {
            if !self.mixed.insert(dir.to_path_buf()) {
                break;
            }
            ancestor = dir.parent();
        }
    }

    fn apply(&mut self, entry: &TarEntry, data: &mut dyn Read) -> Result<(), UnpackError> {
        let stats = &mut self.state.stats;
        stats.entries += 1;
        if stats.entries > self.options.limits.max_entries {
            return Err(UnpackError::LimitExceeded {
                what: "entries",
                limit: self.options.limits.max_entries,
            });
        }
        let path = clean_path(&entry.path).map_err(self.root_error(&entry.path))?;
        let Some(name) = path.file_name() else {
            // The layer's "./": metadata of the rootfs directory itself.
            if entry.kind == TarKind::Dir {
                self.state.dirs.set(Path::new(""), entry.mode, entry.mtime);
                self.record_owner(Path::new(""), entry);
            }
            return Ok(());
        };
        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&path, target);
        }
        let resolved = self
            .root
            .resolve(&path, MissingDirs::Create)
            .map_err(self.root_error(&path))?;
        let real = resolved.real_path.clone();
        let existing = self
            .root
            .lstat_resolved(&resolved)
            .map_err(self.root_error(&path))?
            .map(|st| EntryKind::from_mode(st.st_mode));
        let recorded = self.state.manifest.node(&real).is_some();

        if entry.kind == TarKind::Dir && existing == Some(EntryKind::Dir) {
            // Directory over directory: only its metadata changes; its lower
            // children stay unless a whiteout says otherwise.
            self.state.dirs.set(&real, entry.mode, entry.mtime);
            self.record_owner(&real, entry);
            self.mixed.insert(real.clone());
            self.mark_ancestors_mixed(&real);
            return Ok(());
        }
        if entry.kind == TarKind::HardLink {
            return self.hardlink(entry, &path, &real, existing.is_some() || recorded);
        }
        if existing.is_some() {
            self.root.remove_all(&real).map_err(self.root_error(&path))?;
        }
        if existing.is_some() || recorded {
            self.state.forget(&real);
        }
        match entry.kind {
            TarKind::Dir => {
                self.root
                    .mkdir(&real, 0o755, MissingDirs::Create)
                    .map_err(self.root_error(&path))?;
                self.state.dirs.set(&real, entry.mode, entry.mtime);
            }
            TarKind::File => self.write_file(entry, &real, data)?,
            TarKind::Symlink => {
                let target = entry
                    .link_target
                    .as_deref()
                    .filter(|t| !t.as_os_str().is_empty())
                    .ok_or_else(|| self.bad(&path, "symlink without a target"))?;
                let resolved = self
                    .root
                    .symlink(&real, target, MissingDirs::Create)
                    .map_err(self.root_error(&path))?;
                self.root
                    .set_mtime(&resolved, entry.mtime)
                    .map_err(self.root_error(&path))?;
            }
            TarKind::CharDevice | TarKind::BlockDevice | TarKind::Fifo => self.node(entry, &real)?,
            TarKind::HardLink => unreachable!("handled above"),
        }
        self.record_owner(&real, entry);
        self.mark_written(&real);
        Ok(())
    }

    fn record_owner(&mut self, real: &Path, entry: &TarEntry) {
        // Ids beyond u32 cannot exist on Linux; such headers are clamped to
        // the overflow id, as the kernel would show them.
        let id = |value: u64| u32::try_from(value).unwrap_or(65_534);
        self.state.manifest.set_owner(
            real,
            Owner {
                uid: id(entry.uid),
                gid: id(entry.gid),
            },
        );
    }

    fn write_file(&mut self, entry: &TarEntry, real: &Path, data: &mut dyn Read) -> Result<(), UnpackError> {
        let limits = self.options.limits;
        if self.state.stats.file_bytes + entry.size > limits.max_bytes {
            return Err(UnpackError::LimitExceeded {
                what: "bytes",
                limit: limits.max_bytes,
            });
        }
        let (mut file, _) = self
            .root
            .create_file(real, 0o600, MissingDirs::Create)
            .map_err(self.root_error(real))?;
        let write_error = |source| UnpackError::Write {
            layer: self.layer.to_string(),
            path: real.to_path_buf(),
            source,
        };
        let copied = io::copy(data, &mut file).map_err(write_error)?;
        self.state.stats.file_bytes += copied;
        let mode = nix::sys::stat::Mode::from_bits_truncate(entry.mode & 0o7777);
        nix::sys::stat::fchmod(&file, mode).map_err(|e| write_error(e.into()))?;
        let time = TimeSpec::new(entry.mtime, 0);
        futimens(&file, &time, &time).map_err(|e| write_error(e.into()))?;
        Ok(())
    }

    fn node(&mut self, entry: &TarEntry, real: &Path) -> Result<(), UnpackError> {
        let kind = match entry.kind {
            TarKind::CharDevice => NodeKind::CharDevice,
            TarKind::BlockDevice => NodeKind::BlockDevice,
            _ => NodeKind::Fifo,
        };
        if kind != NodeKind::Fifo && self.options.device_nodes == DeviceNodes::Record {
            self.state.manifest.add_node(
                real,
                SpecialNode {
                    kind,
                    major: entry.dev_major,
                    minor: entry.dev_minor,
                    mode: entry.mode,
                    mtime: entry.mtime,
                },
            );
            return Ok(());
        }
        let entry_kind = match kind {
            NodeKind::CharDevice => EntryKind::CharDevice,
            NodeKind::BlockDevice => EntryKind::BlockDevice,
            NodeKind::Fifo => EntryKind::Fifo,
        };
        let dev = makedev(u64::from(entry.dev_major), u64::from(entry.dev_minor));
        let resolved = self
            .root
            .mknod(real, entry_kind, entry.mode, dev, MissingDirs::Create)
            .map_err(self.root_error(real))?;
        // mknod applies the umask; set the exact mode.
        self.root
            .set_mode(&resolved, entry.mode)
            .map_err(self.root_error(real))?;
        self.root
            .set_mtime(&resolved, entry.mtime)
            .map_err(self.root_error(real))
    }

    fn hardlink(&mut self, entry: &TarEntry, path: &Path, real: &Path, exists: bool) -> Result<(), UnpackError> {
        let target = entry
            .link_target
            .as_deref()
            .ok_or_else(|| self.bad(path, "hardlink without a target"))?;
        let target = clean_path(target).map_err(self.root_error(path))?;
        let target_resolved = match self.root.resolve(&target, MissingDirs::Fail) {
            Ok(resolved) => resolved,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                return Err(self.bad(path, format!("hardlink to {target:?}, which does not exist")));
            }
            Err(e) => return Err(self.root_error(path)(e)),
        };
        let target_real = target_resolved.real_path.clone();
        let target_stat = self
            .root
            .lstat_resolved(&target_resolved)
            .map_err(self.root_error(path))?;
        if target_real == real {
            // A link to itself: nothing to do.
            return Ok(());
        }
        if let Some(node) = self.state.manifest.node(&target_real).copied() {
            if exists {
                self.root.remove_all(real).map_err(self.root_error(path))?;
                self.state.forget(real);
            }
            self.state.manifest.add_node(real, node);
        } else {
            match target_stat.map(|st| EntryKind::from_mode(st.st_mode)) {
                None => return Err(self.bad(path, format!("hardlink to {target:?}, which does not exist"))),
                Some(EntryKind::Dir) => return Err(self.bad(path, format!("hardlink to the directory {target:?}"))),
                Some(_) => {}
            }
            if exists {
                self.root.remove_all(real).map_err(self.root_error(path))?;
                self.state.forget(real);
            }
            self.root
                .hardlink(&target_real, real, MissingDirs::Create)
                .map_err(self.root_error(path))?;
        }
        self.record_owner(real, entry);
        self.mark_written(real);
        Ok(())
    }

    fn whiteout(&mut self, path: &Path, target: &[u8]) -> Result<(), UnpackError> {
        self.state.stats.whiteouts += 1;
        let parent = path.parent().unwrap_or(Path::new(""));
        let marker = &path.file_name().unwrap_or_default().as_bytes();
        if *marker == OPAQUE_MARKER.as_bytes() {
            let dir = match self.root.resolve(&parent.join("x"), MissingDirs::Create) {
                Ok(resolved) => resolved.real_path.parent().unwrap_or(Path::new("")).to_path_buf(),
                Err(e) => return Err(self.root_error(path)(e)),
            };
            self.mixed.insert(dir.clone());
            self.mark_ancestors_mixed(&dir);
            return self.remove_lower_children(&dir);
        }
        if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping, not changes.
            return Ok(());
        }
        if target.is_empty() {
            return Err(self.bad(path, "whiteout without a name"));
        }
        let victim = parent.join(OsStr::from_bytes(target));
        let resolved = match self.root.resolve(&victim, MissingDirs::Fail) {
            Ok(resolved) => resolved,
            // Nothing below to hide.
            Err(e) if matches!(e.io_kind(), Some(io::ErrorKind::NotFound)) => return Ok(()),
            Err(RootError::NotADirectory { .. }) => return Ok(()),
            Err(e) => return Err(self.root_error(path)(e)),
        };
        self.remove_lower(&resolved.real_path)
    }

    /// Removes `real` unless this layer wrote it (or something below it), in
    /// which case only the lower-layer parts below it go.
    fn remove_lower(&mut self, real: &Path) -> Result<(), UnpackError> {
        let mixed = self.mixed.contains(real);
        if !mixed && !self.written.contains(real) {
            self.root.remove_all(real).map_err(self.root_error(real))?;
            self.state.forget(real);
            return Ok(());
        }
        let is_dir = self
            .root
            .lstat(real)
            .map_err(self.root_error(real))?
            .is_some_and(|st| EntryKind::from_mode(st.st_mode) == EntryKind::Dir);
        if is_dir && mixed {
            self.remove_lower_children(real)?;
        }
        Ok(())
    }

    fn remove_lower_children(&mut self, dir: &Path) -> Result<(), UnpackError> {
        let mut children: Vec<PathBuf> = match self.root.read_dir(dir) {
            Ok(listing) => listing.into_iter().map(|(name, _)| dir.join(name)).collect(),
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => Vec::new(),
            Err(RootError::Io { source, .. }) if source.raw_os_error() == Some(nix::libc::ENOTDIR) => return Ok(()),
            Err(e) => return Err(self.root_error(dir)(e)),
        };
        children.extend(self.state.manifest.nodes_in(dir).map(|(name, _)| dir.join(name)));
        for child in children {
            self.remove_lower(&child)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
