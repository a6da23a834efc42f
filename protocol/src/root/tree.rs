//! Whole-tree operations of [`RootDir`]: listing a directory, removing a
//! tree without following its symlinks, and flushing a tree to disk.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{EntryKind, MissingDirs, Resolved, RootDir, RootError, Symlinks};

impl RootDir {
    /// Lists a directory: names and kinds, sorted by name bytes.
    pub fn read_dir(&mut self, path: &Path) -> Result<Vec<(OsString, EntryKind)>, RootError> {
        let resolved = self.resolve(path, MissingDirs::Fail)?;
        let dir_fd = self.open_dir_for_listing(&resolved)?;
        let mut entries = list_dir(dir_fd).map_err(|e| self.io_error("list", &resolved.real_path, e))?;
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(entries)
    }

    fn open_dir_for_listing(&self, resolved: &Resolved) -> Result<OwnedFd, RootError> {
        let name: &OsStr = if resolved.name.is_empty() {
            OsStr::new(".")
        } else {
            &resolved.name
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(resolved.dir(), name, flags, Mode::empty())
            .map_err(|e| self.io_error("open directory", &resolved.real_path, e))
    }

    /// Removes the entry at `path` and, for a directory, everything below it.
    /// Returns false if there was nothing to remove. Never follows symlinks.
    pub fn remove_all(&mut self, path: &Path) -> Result<bool, RootError> {
        let resolved = match self.resolve(path, MissingDirs::Fail) {
            Ok(resolved) => resolved,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        if resolved.name.is_empty() {
            return Err(RootError::InvalidPath {
                path: path.to_path_buf(),
                reason: "the root itself cannot be removed",
            });
        }
        let Some(st) = self.lstat_resolved(&resolved)? else {
            return Ok(false);
        };
        let kind = EntryKind::from_mode(st.st_mode);
        if matches!(kind, EntryKind::Dir | EntryKind::Symlink) {
            self.forget_cache();
        }
        remove_entry(resolved.dir(), &resolved.name, kind)
            .map_err(|e| self.io_error("remove", &resolved.real_path, e))?;
        Ok(true)
    }

    /// Flushes everything below the root to disk: each file, then each
    /// directory, deepest first; never the rest of the filesystem (a
    /// `syncfs` would wait for every other writer on a shared host).
    pub fn sync(&self) -> Result<(), RootError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(&*self.fd, ".", flags, Mode::empty()).map_err(|e| self.io_error("open", Path::new(""), e))?;
        let mut unreadable = false;
        sync_tree(&fd, Path::new(""), &mut unreadable).map_err(|(path, e)| self.io_error("sync", &path, e))?;
        if unreadable {
            // A file its owner may not read (mode 000) cannot be opened to
            // be synced: the filesystem is, then.
            nix::unistd::syncfs(&fd).map_err(|e| self.io_error("sync", Path::new(""), e))?;
        }
        Ok(())
    }
}

/// Removes the directory tree at a host path, including read-only
/// directories an unprivileged user could not otherwise empty. For the
/// program's own staging directories; symlinks inside are never followed.
pub fn remove_tree(path: &Path) -> Result<bool, RootError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| RootError::InvalidPath {
        path: path.to_path_buf(),
        reason: "has no final component to remove",
    })?;
    RootDir::open(parent, Symlinks::FollowInRoot)?.remove_all(Path::new(name))
}

/// fsyncs the regular files and directories below `dir` (an open
/// directory), then `dir`; symlinks are not followed. A file that cannot be
/// opened for reading sets `unreadable`. Errors name the path.
fn sync_tree(dir: &OwnedFd, path: &Path, unreadable: &mut bool) -> Result<(), (PathBuf, Errno)> {
    let at = |name: &OsStr| path.join(name);
    let listing = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| (path.to_path_buf(), e))?;
    let entries = list_dir(listing).map_err(|e| (path.to_path_buf(), e))?;
    for (name, kind) in entries {
        match kind {
            EntryKind::File => {
                let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
                match openat(dir, name.as_os_str(), flags, Mode::empty()) {
                    Ok(file) => nix::unistd::fsync(&file).map_err(|e| (at(&name), e))?,
                    Err(Errno::EACCES | Errno::EPERM) => *unreadable = true,
                    Err(e) => return Err((at(&name), e)),
                }
            }
            EntryKind::Dir => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                match openat(dir, name.as_os_str(), flags, Mode::empty()) {
                    Ok(child) => sync_tree(&child, &at(&name), unreadable)?,
                    Err(Errno::EACCES | Errno::EPERM) => *unreadable = true,
                    Err(e) => return Err((at(&name), e)),
                }
            }
            _ => {}
        }
    }
    nix::unistd::fsync(dir).map_err(|e| (path.to_path_buf(), e))
}

fn list_dir(fd: OwnedFd) -> Result<Vec<(OsString, EntryKind)>, Errno> {
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut listed = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = entry.file_type().map(|kind| match kind {
            nix::dir::Type::Directory => EntryKind::Dir,
            nix::dir::Type::Symlink => EntryKind::Symlink,
            nix::dir::Type::CharacterDevice => EntryKind::CharDevice,
            nix::dir::Type::BlockDevice => EntryKind::BlockDevice,
            nix::dir::Type::Fifo => EntryKind::Fifo,
            nix::dir::Type::Socket => EntryKind::Socket,
            nix::dir::Type::File => EntryKind::File,
        });
        listed.push((OsStr::from_bytes(name).to_os_string(), kind));
    }
    // Some filesystems do not report types in readdir; ask lstat then.
    listed
        .into_iter()
        .map(|(name, kind)| match kind {
            Some(kind) => Ok((name, kind)),
            None => {
                let st = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                Ok((name, EntryKind::from_mode(st.st_mode)))
            }
        })
        .collect()
}

/// Removes `name` in `parent`, recursing into directories without following
/// symlinks. Directories without owner write permission are opened up first so
/// an unprivileged user can empty them.
fn remove_entry(parent: BorrowedFd<'_>, name: &OsStr, kind: EntryKind) -> Result<(), Errno> {
    if kind != EntryKind::Dir {
        return match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        };
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty())?;
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & 0o700 != 0o700 {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate((st.st_mode | 0o700) & 0o7777))?;
    }
    for (child, child_kind) in list_dir(nix::unistd::dup(&fd)?)? {
        remove_entry(fd.as_fd(), &child, child_kind)?;
    }
    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
