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
use bundlegen_protocol::root::{DeferredDirs, EntryKind, MissingDirs, RootError, clean_path};
use bundlegen_protocol::tar_read::{TarEntry, TarError, TarKind, TarReader};

use crate::image::{Image, ImageError};
use crate::rootfs::{Rootfs, Stamp};

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
    #[error("the image exceeds the limit of {limit} {what} (a decompression bomb?)")]
    LimitExceeded { what: &'static str, limit: u64 },
}

/// Applies every layer of `image` into `root`, in order, and returns the
/// ownership manifest.
pub fn unpack_image(
    image: &Image,
    root: &mut dyn Rootfs,
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
    pub fn finish(&mut self, root: &mut dyn Rootfs) -> Result<(), UnpackError> {
        for (path, mode, mtime) in self.dirs.take() {
            root.set_dir_stamp(&path, Stamp { mode, mtime })
                .map_err(|source| UnpackError::Root {
                    layer: "finishing".into(),
                    path,
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    fn forget(&mut self, real: &Path) {
        self.manifest.remove_tree(real);
        self.dirs.forget_tree(real);
    }
}

/// Applies one layer's tar stream. Exposed for tests and the fuzz target.
pub fn apply_layer(
    root: &mut dyn Rootfs,
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
    root: &'a mut dyn Rootfs,
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
        let real = self
            .root
            .resolve(&path, MissingDirs::Create)
            .map_err(self.root_error(&path))?;
        let existing = self.root.kind(&real).map_err(self.root_error(&path))?;
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
                self.root
                    .symlink(&real, target, entry.mtime)
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
        let stamp = Stamp {
            mode: entry.mode,
            mtime: entry.mtime,
        };
        let copied = self
            .root
            .write_file(real, data, Some(stamp))
            .map_err(self.root_error(real))?;
        self.state.stats.file_bytes += copied;
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
        let stamp = Stamp {
            mode: entry.mode,
            mtime: entry.mtime,
        };
        self.root
            .mknod(real, kind, (entry.dev_major, entry.dev_minor), stamp)
            .map_err(self.root_error(real))
    }

    fn hardlink(&mut self, entry: &TarEntry, path: &Path, real: &Path, exists: bool) -> Result<(), UnpackError> {
        let target = entry
            .link_target
            .as_deref()
            .ok_or_else(|| self.bad(path, "hardlink without a target"))?;
        let target = clean_path(target).map_err(self.root_error(path))?;
        let target_real = match self.root.resolve(&target, MissingDirs::Fail) {
            Ok(real) => real,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                return Err(self.bad(path, format!("hardlink to {target:?}, which does not exist")));
            }
            Err(e) => return Err(self.root_error(path)(e)),
        };
        let target_kind = self.root.kind(&target_real).map_err(self.root_error(path))?;
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
            match target_kind {
                None => return Err(self.bad(path, format!("hardlink to {target:?}, which does not exist"))),
                Some(EntryKind::Dir) => return Err(self.bad(path, format!("hardlink to the directory {target:?}"))),
                Some(_) => {}
            }
            if exists {
                self.root.remove_all(real).map_err(self.root_error(path))?;
                self.state.forget(real);
            }
            self.root.hardlink(&target_real, real).map_err(self.root_error(path))?;
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
                Ok(real) => real.parent().unwrap_or(Path::new("")).to_path_buf(),
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
        let real = match self.root.resolve(&victim, MissingDirs::Fail) {
            Ok(real) => real,
            // Nothing below to hide.
            Err(e) if matches!(e.io_kind(), Some(io::ErrorKind::NotFound)) => return Ok(()),
            Err(RootError::NotADirectory { .. }) => return Ok(()),
            Err(e) => return Err(self.root_error(path)(e)),
        };
        self.remove_lower(&real)
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
        let is_dir = self.root.kind(real).map_err(self.root_error(real))? == Some(EntryKind::Dir);
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
