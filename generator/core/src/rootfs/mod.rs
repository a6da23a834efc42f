//! The rootfs a bundle is assembled in, behind one trait: a directory on
//! disk ([`RootDir`], when the directory is the only output) or a tree in
//! memory whose file contents sit in one spool, memory then a file
//! ([`MemoryRootfs`], whenever an archive is written: no tree of files is
//! written, synced and read back to be archived; a kept directory is
//! written out from memory while the archive is compressed). Unpacking,
//! the pipeline's stages and the archive writer see the same operations
//! with the same confinement and the same results, so both give the same
//! bytes.
//!
//! Paths are inside the root; parent components are resolved as inside a
//! chroot (symlinks followed, never above the root), the final component is
//! never followed unless a method says so.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bundlegen_protocol::manifest::NodeKind;
use bundlegen_protocol::root::{EntryKind, MissingDirs, RootDir, RootError};
use nix::sys::stat::{futimens, makedev};
use nix::sys::time::TimeSpec;

mod memory;

pub use memory::MemoryRootfs;

/// The mode and mtime of an entry unpacked from a layer, set exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub mode: u32,
    pub mtime: i64,
}

/// A regular file opened for reading.
pub struct RootFile {
    pub size: u64,
    reader: Box<dyn Read>,
}

impl RootFile {
    pub fn new(size: u64, reader: Box<dyn Read>) -> RootFile {
        RootFile { size, reader }
    }
}

impl Read for RootFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

pub trait Rootfs {
    /// Where `path` is: its parents resolved (created with
    /// [`MissingDirs::Create`]), the final component kept as it is.
    fn resolve(&mut self, path: &Path, missing: MissingDirs) -> Result<PathBuf, RootError>;

    /// What the entry at `path` is; `None` if it or a parent is missing.
    fn kind(&mut self, path: &Path) -> Result<Option<EntryKind>, RootError>;

    /// Where `path` really is, symlinks followed in every component, the
    /// last one too. Fails if it does not exist.
    fn resolve_follow(&mut self, path: &Path) -> Result<PathBuf, RootError>;

    /// Names and kinds in a directory, sorted by name bytes.
    fn read_dir(&mut self, path: &Path) -> Result<Vec<(OsString, EntryKind)>, RootError>;

    /// Opens a regular file (a symlink as the final component is an error).
    fn open_file(&mut self, path: &Path) -> Result<RootFile, RootError>;

    /// Removes the entry and, for a directory, everything below it; false if
    /// there was nothing. Never follows symlinks.
    fn remove_all(&mut self, path: &Path) -> Result<bool, RootError>;

    /// Creates a directory (`mode` under the umask); fails if the entry exists.
    fn mkdir(&mut self, path: &Path, mode: u32, missing: MissingDirs) -> Result<(), RootError>;

    /// Creates a new regular file (parents created) holding what `data`
    /// yields; fails if the entry exists. With a stamp, its mode and mtime
    /// are set exactly; without, it is 0644 under the umask, written now.
    /// Returns the bytes written.
    fn write_file(&mut self, path: &Path, data: &mut dyn Read, stamp: Option<Stamp>) -> Result<u64, RootError>;

    /// Creates a symlink (target stored verbatim) with the given mtime.
    fn symlink(&mut self, path: &Path, target: &Path, mtime: i64) -> Result<(), RootError>;

    /// Creates a device node or fifo with exactly this mode and mtime.
    fn mknod(&mut self, path: &Path, kind: NodeKind, dev: (u32, u32), stamp: Stamp) -> Result<(), RootError>;

    /// Creates a hard link at `path` to the entry at `existing` (a symlink
    /// there is linked itself).
    fn hardlink(&mut self, existing: &Path, path: &Path) -> Result<(), RootError>;

    /// Sets a directory's mode and mtime; anything else at `path` is left alone.
    fn set_dir_stamp(&mut self, path: &Path, stamp: Stamp) -> Result<(), RootError>;

    /// The tree in memory, if this rootfs is not the `rootfs/` directory
    /// on disk: the archive is read from it, and the directory, when it is
    /// an output, written from it.
    fn in_memory(&mut self) -> Option<&mut MemoryRootfs> {
        None
    }

    /// [`Rootfs::resolve_follow`], then [`Rootfs::open_file`]; also returns the real path.
    fn open_file_follow(&mut self, path: &Path) -> Result<(RootFile, PathBuf), RootError> {
        let real = self.resolve_follow(path)?;
        Ok((self.open_file(&real)?, real))
    }
}

/// Why an entry of this kind cannot be opened as a regular file.
fn not_a_file(kind: Option<EntryKind>) -> Option<nix::errno::Errno> {
    use nix::errno::Errno;
    match kind? {
        EntryKind::File => None,
        EntryKind::Dir => Some(Errno::EISDIR),
        EntryKind::Symlink => Some(Errno::ELOOP),
        _ => Some(Errno::ENXIO),
    }
}

fn io_failed(root: &RootDir, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootError + use<> {
    let (root, path) = (root.host_path().to_path_buf(), path.to_path_buf());
    move |source| RootError::io(op, root, path, source)
}

impl Rootfs for RootDir {
    fn resolve(&mut self, path: &Path, missing: MissingDirs) -> Result<PathBuf, RootError> {
        Ok(RootDir::resolve(self, path, missing)?.real_path)
    }

    fn kind(&mut self, path: &Path) -> Result<Option<EntryKind>, RootError> {
        Ok(self.lstat(path)?.map(|st| EntryKind::from_mode(st.st_mode)))
    }

    fn resolve_follow(&mut self, path: &Path) -> Result<PathBuf, RootError> {
        RootDir::resolve_follow(self, path)
    }

    fn read_dir(&mut self, path: &Path) -> Result<Vec<(OsString, EntryKind)>, RootError> {
        RootDir::read_dir(self, path)
    }

    fn open_file(&mut self, path: &Path) -> Result<RootFile, RootError> {
        // Only regular files: opening a fifo an image put where a file is
        // expected would wait for a writer forever.
        if let Some(errno) = not_a_file(Rootfs::kind(self, path)?) {
            let real = Rootfs::resolve(self, path, MissingDirs::Fail)?;
            return Err(io_failed(self, "open", &real)(errno.into()));
        }
        let file = RootDir::open_file(self, path)?;
        let size = file.metadata().map_err(io_failed(self, "stat", path))?.len();
        Ok(RootFile::new(size, Box::new(file)))
    }

    fn remove_all(&mut self, path: &Path) -> Result<bool, RootError> {
        RootDir::remove_all(self, path)
    }

    fn mkdir(&mut self, path: &Path, mode: u32, missing: MissingDirs) -> Result<(), RootError> {
        RootDir::mkdir(self, path, mode, missing).map(drop)
    }

    fn write_file(&mut self, path: &Path, data: &mut dyn Read, stamp: Option<Stamp>) -> Result<u64, RootError> {
        // Private until written: the final mode may grant more, or less.
        let mode = if stamp.is_some() { 0o600 } else { 0o644 };
        let (mut file, resolved) = self.create_file(path, mode, MissingDirs::Create)?;
        let failed = io_failed(self, "write", &resolved.real_path);
        let result = (|| {
            let written = io::copy(data, &mut file)?;
            if let Some(stamp) = stamp {
                let mode = nix::sys::stat::Mode::from_bits_truncate(stamp.mode & 0o7777);
                nix::sys::stat::fchmod(&file, mode)?;
                let time = TimeSpec::new(stamp.mtime, 0);
                futimens(&file, &time, &time)?;
            }
            Ok(written)
        })();
        result.map_err(failed)
    }

    fn symlink(&mut self, path: &Path, target: &Path, mtime: i64) -> Result<(), RootError> {
        let resolved = RootDir::symlink(self, path, target, MissingDirs::Create)?;
        self.set_mtime(&resolved, mtime)
    }

    fn mknod(&mut self, path: &Path, kind: NodeKind, dev: (u32, u32), stamp: Stamp) -> Result<(), RootError> {
        let dev = makedev(u64::from(dev.0), u64::from(dev.1));
        let resolved = RootDir::mknod(self, path, kind, stamp.mode, dev, MissingDirs::Create)?;
        // mknod applies the umask; set the exact mode.
        self.set_mode(&resolved, stamp.mode)?;
        self.set_mtime(&resolved, stamp.mtime)
    }

    fn hardlink(&mut self, existing: &Path, path: &Path) -> Result<(), RootError> {
        RootDir::hardlink(self, existing, path, MissingDirs::Create).map(drop)
    }

    fn set_dir_stamp(&mut self, path: &Path, stamp: Stamp) -> Result<(), RootError> {
        let resolved = RootDir::resolve(self, path, MissingDirs::Fail)?;
        match self.lstat_resolved(&resolved)? {
            Some(st) if EntryKind::from_mode(st.st_mode) == EntryKind::Dir => {}
            _ => return Ok(()),
        }
        self.set_mode(&resolved, stamp.mode)?;
        self.set_mtime(&resolved, stamp.mtime)
    }
}

#[cfg(test)]
mod tests;
