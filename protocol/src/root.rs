//! Confined filesystem access: every path is resolved inside a root directory.
//!
//! (Over 600 lines on purpose: every operation that resolves a path goes
//! through the one component walk below and keeps its invariants; in one
//! file, the whole confinement is reviewed at once. Whole-tree operations,
//! listing, removal and flushing, are in `root/tree.rs`.)
//!
//! [`RootDir`] is the one "join inside the rootfs" helper of the project. It walks
//! paths component by component from a directory file descriptor, so nothing an
//! image or an archive contains (absolute or relative symlinks, `..`, hardlinks)
//! can make an operation touch a file outside the root:
//!
//! - with [`Symlinks::FollowInRoot`], symlinks met in parent components are
//!   followed the way a `chroot` would: absolute targets restart at the root and
//!   `..` never climbs above it (an image's `lib -> /usr/lib` keeps working);
//! - with [`Symlinks::Reject`], any symlink in a parent component is an error
//!   (bundle archives are flat trees and never need one);
//! - the final component is never followed: operations act on the entry itself.
//!
//! Only Linux `*at` syscalls are used (no `openat2`), so it also works on the old
//! kernels of set-top boxes.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat};

use crate::manifest::NodeKind;

/// Symbolic links a resolution may follow (more is a loop or an attack).
pub const MAX_SYMLINK_FOLLOWS: usize = 40;
/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// How symlinks in parent components are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow them as inside a chroot of the root directory.
    FollowInRoot,
    /// Refuse any path that goes through a symlink.
    Reject,
}

/// What to do with missing parent directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDirs {
    /// Fail with `NotFound`.
    Fail,
    /// Create them with mode 0755 (what tar does for implied parents).
    Create,
}

/// Errors of confined filesystem operations; each names the path inside the root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("{root}: cannot {op} /{path}")]
    Io {
        op: &'static str,
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{root}: /{path}: more than {MAX_SYMLINK_FOLLOWS} symbolic links to follow")]
    TooManySymlinks { root: PathBuf, path: PathBuf },
    #[error("{root}: /{path}: parent /{parent} is not a directory")]
    NotADirectory {
        root: PathBuf,
        path: PathBuf,
        parent: PathBuf,
    },
    #[error("{root}: /{path}: goes through the symbolic link /{link}, which is not allowed here")]
    SymlinkInPath {
        root: PathBuf,
        path: PathBuf,
        link: PathBuf,
    },
}

impl RootError {
    /// `op` on `path`, inside the root at `root`, failed with `source`.
    pub fn io(
        op: &'static str,
        root: impl Into<PathBuf>,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> RootError {
        RootError::Io {
            op,
            root: root.into(),
            path: path.into(),
            source: source.into(),
        }
    }

    /// The underlying I/O error kind, if this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            RootError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Checks and normalises a path that is meant to live inside a root.
///
/// Leading `/` and `./`, repeated slashes and `.` components are dropped
/// (absolute names are confined, not rejected); `..`, NUL bytes and overlong
/// paths are rejected. The empty result means the root itself.
pub fn clean_path(path: &Path) -> Result<PathBuf, RootError> {
    let bytes = path.as_os_str().as_bytes();
    let invalid = |reason| RootError::InvalidPath {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.contains(&0) {
        return Err(invalid("contains a NUL byte"));
    }
    if bytes.len() > MAX_PATH_BYTES {
        return Err(invalid("longer than 4096 bytes"));
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("contains a '..' component")),
            Component::Prefix(_) => return Err(invalid("has a prefix")),
        }
    }
    Ok(clean)
}

/// The parent directory of a resolved path, and the final name inside it.
#[derive(Debug)]
pub struct Resolved {
    dir: Arc<OwnedFd>,
    /// The final component (empty for the root itself).
    pub name: OsString,
    /// Where the entry really is, relative to the root, after following symlinks
    /// in the parents.
    pub real_path: PathBuf,
}

impl Resolved {
    /// The parent directory's descriptor (`O_PATH`).
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// The kind of an entry, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl EntryKind {
    pub fn from_mode(mode: u32) -> EntryKind {
        match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => EntryKind::Dir,
            SFlag::S_IFLNK => EntryKind::Symlink,
            SFlag::S_IFCHR => EntryKind::CharDevice,
            SFlag::S_IFBLK => EntryKind::BlockDevice,
            SFlag::S_IFIFO => EntryKind::Fifo,
            SFlag::S_IFSOCK => EntryKind::Socket,
            _ => EntryKind::File,
        }
    }
}

/// One cached step of the last resolution: the literal component, the
/// directory it led to, and that directory's real path.
#[derive(Debug)]
struct CachedDir {
    name: OsString,
    fd: Arc<OwnedFd>,
    real_path: PathBuf,
}

/// A directory inside which all operations are confined. See the module docs.
#[derive(Debug)]
pub struct RootDir {
    fd: Arc<OwnedFd>,
    host_path: PathBuf,
    identity: (u64, u64),
    symlinks: Symlinks,
    /// Directories of the last resolved parent path, reused by the next
    /// resolution with the same prefix (tar entries come grouped by directory).
    cache: Vec<CachedDir>,
}

fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn stat_identity(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

impl RootDir {
    /// Opens an existing directory as a root.
    pub fn open(host_path: &Path, symlinks: Symlinks) -> Result<RootDir, RootError> {
        let io_err = |op| move |errno| RootError::io(op, host_path, Path::new(""), errno);
        let fd = nix::fcntl::open(
            host_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open"))?;
        let st = nix::sys::stat::fstat(&fd).map_err(io_err("stat"))?;
        Ok(RootDir {
            fd: Arc::new(fd),
            host_path: host_path.to_path_buf(),
            identity: stat_identity(&st),
            symlinks,
            cache: Vec::new(),
        })
    }

    /// Creates the directory (which must not exist) and opens it as a root.
    pub fn create(host_path: &Path, symlinks: Symlinks) -> Result<RootDir, RootError> {
        std::fs::create_dir(host_path).map_err(|source| RootError::io("create", host_path, Path::new(""), source))?;
        RootDir::open(host_path, symlinks)
    }

    /// The root's path on the host, for messages and for tools that need one.
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    fn io_error(&self, op: &'static str, path: &Path, errno: Errno) -> RootError {
        RootError::io(op, &self.host_path, path, errno)
    }

    /// Forgets cached directory descriptors. Called after anything that may
    /// remove or replace a directory or a symlink.
    fn forget_cache(&mut self) {
        self.cache.clear();
    }

    /// Resolves the parent directories of `path` and returns the parent's
    /// descriptor and the final name. `path` must be clean (see [`clean_path`]).
    pub fn resolve(&mut self, path: &Path, missing: MissingDirs) -> Result<Resolved, RootError> {
        let path = clean_path(path)?;
        let mut components: Vec<&OsStr> = path.iter().collect();
        let Some(name) = components.pop() else {
            return Ok(Resolved {
                dir: self.fd.clone(),
                name: OsString::new(),
                real_path: PathBuf::new(),
            });
        };
        let reused = self
            .cache
            .iter()
            .zip(&components)
            .take_while(|(cached, component)| cached.name == **component)
            .count();
        self.cache.truncate(reused);
        let (mut dir, mut real) = match self.cache.last() {
            Some(cached) => (cached.fd.clone(), cached.real_path.clone()),
            None => (self.fd.clone(), PathBuf::new()),
        };
        let mut follows = 0;
        for (index, component) in components.iter().enumerate().skip(reused) {
            let literal = PathBuf::from_iter(&components[..=index]);
            let (next, next_real) =
                self.walk_component(&path, &literal, dir, real, component, missing, &mut follows)?;
            dir = next;
            real = next_real;
            self.cache.push(CachedDir {
                name: component.to_os_string(),
                fd: dir.clone(),
                real_path: real.clone(),
            });
        }
        let real_path = real.join(name);
        Ok(Resolved {
            dir,
            name: name.to_os_string(),
            real_path,
        })
    }

    /// Steps from `dir` into the directory `component`, following a symlink
    /// there as inside a chroot.
    #[allow(clippy::too_many_arguments)]
    fn walk_component(
        &self,
        path: &Path,
        literal: &Path,
        dir: Arc<OwnedFd>,
        real: PathBuf,
        component: &OsStr,
        missing: MissingDirs,
        follows: &mut usize,
    ) -> Result<(Arc<OwnedFd>, PathBuf), RootError> {
        // A queue of components still to walk; symlink targets are spliced in.
        let mut pending: Vec<OsString> = vec![component.to_os_string()];
        let mut dir = dir;
        let mut real = real;
        while let Some(step) = pending.pop() {
            let step = step.as_os_str();
            if step.is_empty() || step == "." {
                continue;
            }
            if step == ".." {
                if !self.is_root(&dir)? {
                    dir = Arc::new(
                        openat(&*dir, "..", dir_flags(), Mode::empty()).map_err(|e| self.io_error("open", path, e))?,
                    );
                    real.pop();
                }
                continue;
            }
            match openat(&*dir, step, dir_flags(), Mode::empty()) {
                Ok(fd) => {
                    dir = Arc::new(fd);
                    real.push(step);
                }
                Err(Errno::ENOENT) if missing == MissingDirs::Create => {
                    match mkdirat(&*dir, step, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(self.io_error("create directory", &real.join(step), e));
                        }
                    }
                    dir = Arc::new(
                        openat(&*dir, step, dir_flags(), Mode::empty())
                            .map_err(|e| self.io_error("open", &real.join(step), e))?,
                    );
                    real.push(step);
                }
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                    let st = fstatat(&*dir, step, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| self.io_error("stat", &real.join(step), e))?;
                    if EntryKind::from_mode(st.st_mode) != EntryKind::Symlink {
                        return Err(RootError::NotADirectory {
                            root: self.host_path.clone(),
                            path: path.to_path_buf(),
                            parent: real.join(step),
                        });
                    }
                    if self.symlinks == Symlinks::Reject {
                        return Err(RootError::SymlinkInPath {
                            root: self.host_path.clone(),
                            path: path.to_path_buf(),
                            link: literal.to_path_buf(),
                        });
                    }
                    *follows += 1;
                    if *follows > MAX_SYMLINK_FOLLOWS {
                        return Err(RootError::TooManySymlinks {
                            root: self.host_path.clone(),
                            path: path.to_path_buf(),
                        });
                    }
                    let target =
                        readlinkat(&*dir, step).map_err(|e| self.io_error("read link", &real.join(step), e))?;
                    let target = Path::new(&target);
                    if target.has_root() {
                        dir = self.fd.clone();
                        real = PathBuf::new();
                    }
                    // Walk the target's components next, in order.
                    pending.extend(target.iter().filter(|c| *c != "/").map(OsStr::to_os_string).rev());
                }
                Err(e) => return Err(self.io_error("open", &real.join(step), e)),
            }
        }
        Ok((dir, real))
    }

    fn is_root(&self, dir: &OwnedFd) -> Result<bool, RootError> {
        let st = nix::sys::stat::fstat(dir).map_err(|e| self.io_error("stat", Path::new(""), e))?;
        Ok(stat_identity(&st) == self.identity)
    }

    /// `lstat` of the entry at `path`; `None` if it (or a parent) does not exist.
    pub fn lstat(&mut self, path: &Path) -> Result<Option<FileStat>, RootError> {
        let resolved = match self.resolve(path, MissingDirs::Fail) {
            Ok(resolved) => resolved,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.lstat_resolved(&resolved)
    }

    /// One `fstatat` of `path` from the root, without resolving it
    /// component by component: the kernel follows a symlink in the middle
    /// of `path`. Only for checking that an entry whose every parent the
    /// caller saw to be a directory is unchanged (a cache's check; a parent
    /// replaced by a symlink changes that parent's times, which the caller
    /// checks first); never to decide what to open or read.
    pub fn lstat_unresolved(&self, path: &Path) -> Result<Option<FileStat>, RootError> {
        let path = clean_path(path)?;
        let name: &Path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &path
        };
        match fstatat(&*self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(self.io_error("stat", &path, e)),
        }
    }

    /// `lstat` of an already resolved entry.
    pub fn lstat_resolved(&self, resolved: &Resolved) -> Result<Option<FileStat>, RootError> {
        let name: &OsStr = if resolved.name.is_empty() {
            OsStr::new(".")
        } else {
            &resolved.name
        };
        match fstatat(resolved.dir(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.io_error("stat", &resolved.real_path, e)),
        }
    }

    /// Creates a directory; fails if the entry exists.
    pub fn mkdir(&mut self, path: &Path, mode: u32, missing: MissingDirs) -> Result<Resolved, RootError> {
        let resolved = self.resolve(path, missing)?;
        mkdirat(
            resolved.dir(),
            resolved.name.as_os_str(),
            Mode::from_bits_truncate(mode & 0o7777),
        )
        .map_err(|e| self.io_error("create directory", &resolved.real_path, e))?;
        Ok(resolved)
    }

    /// Creates a new regular file (never follows or overwrites an existing entry)
    /// and returns it open for writing.
    pub fn create_file(&mut self, path: &Path, mode: u32, missing: MissingDirs) -> Result<(File, Resolved), RootError> {
        let resolved = self.resolve(path, missing)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            resolved.dir(),
            resolved.name.as_os_str(),
            flags,
            Mode::from_bits_truncate(mode & 0o777),
        )
        .map_err(|e| self.io_error("create file", &resolved.real_path, e))?;
        Ok((File::from(fd), resolved))
    }

    /// Opens an existing regular file for reading (the final component is not
    /// followed: a symlink there is an error).
    pub fn open_file(&mut self, path: &Path) -> Result<File, RootError> {
        let resolved = self.resolve(path, MissingDirs::Fail)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(resolved.dir(), resolved.name.as_os_str(), flags, Mode::empty())
            .map_err(|e| self.io_error("open", &resolved.real_path, e))?;
        Ok(File::from(fd))
    }

    /// Where `path` really is: symlinks in every component, the last one too,
    /// are followed as inside a chroot. Fails if it does not exist.
    pub fn resolve_follow(&mut self, path: &Path) -> Result<PathBuf, RootError> {
        let mut current = clean_path(path)?;
        for _ in 0..=MAX_SYMLINK_FOLLOWS {
            let resolved = self.resolve(&current, MissingDirs::Fail)?;
            let Some(st) = self.lstat_resolved(&resolved)? else {
                return Err(self.io_error("find", &resolved.real_path, Errno::ENOENT));
            };
            if EntryKind::from_mode(st.st_mode) != EntryKind::Symlink {
                return Ok(resolved.real_path);
            }
            let target = readlinkat(resolved.dir(), resolved.name.as_os_str())
                .map_err(|e| self.io_error("read link", &resolved.real_path, e))?;
            let base = if Path::new(&target).has_root() {
                PathBuf::new()
            } else {
                resolved.real_path.parent().unwrap_or(Path::new("")).to_path_buf()
            };
            current = join_in_root(&base, Path::new(&target));
        }
        Err(RootError::TooManySymlinks {
            root: self.host_path.clone(),
            path: path.to_path_buf(),
        })
    }

    /// Opens a regular file for reading, following symlinks (also the last
    /// component) inside the root. Returns the file and its real path.
    pub fn open_file_follow(&mut self, path: &Path) -> Result<(File, PathBuf), RootError> {
        let real = self.resolve_follow(path)?;
        Ok((self.open_file(&real)?, real))
    }

    /// Creates a symlink at `path` pointing to `target` (stored verbatim).
    pub fn symlink(&mut self, path: &Path, target: &Path, missing: MissingDirs) -> Result<Resolved, RootError> {
        let resolved = self.resolve(path, missing)?;
        symlinkat(target, resolved.dir(), resolved.name.as_os_str())
            .map_err(|e| self.io_error("create symlink", &resolved.real_path, e))?;
        Ok(resolved)
    }

    /// Creates a hardlink at `path` to the existing entry `existing` (both inside
    /// the root; a symlink at `existing` is linked itself, never followed).
    pub fn hardlink(&mut self, existing: &Path, path: &Path, missing: MissingDirs) -> Result<Resolved, RootError> {
        let source = self.resolve(existing, MissingDirs::Fail)?;
        let resolved = self.resolve(path, missing)?;
        linkat(
            source.dir(),
            source.name.as_os_str(),
            resolved.dir(),
            resolved.name.as_os_str(),
            AtFlags::empty(),
        )
        .map_err(|e| self.io_error("create hardlink", &resolved.real_path, e))?;
        Ok(resolved)
    }

    /// Creates a device node or fifo (needs privileges for devices).
    pub fn mknod(
        &mut self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        dev: u64,
        missing: MissingDirs,
    ) -> Result<Resolved, RootError> {
        let resolved = self.resolve(path, missing)?;
        let flag = match kind {
            NodeKind::CharDevice => SFlag::S_IFCHR,
            NodeKind::BlockDevice => SFlag::S_IFBLK,
            NodeKind::Fifo => SFlag::S_IFIFO,
        };
        mknodat(
            resolved.dir(),
            resolved.name.as_os_str(),
            flag,
            Mode::from_bits_truncate(mode & 0o7777),
            dev,
        )
        .map_err(|e| self.io_error("create node", &resolved.real_path, e))?;
        Ok(resolved)
    }

    /// Sets the permission bits of an entry. Symlinks have none on Linux and are
    /// left alone (`chmod` would follow them).
    pub fn set_mode(&mut self, resolved: &Resolved, mode: u32) -> Result<(), RootError> {
        let name: &OsStr = if resolved.name.is_empty() {
            OsStr::new(".")
        } else {
            &resolved.name
        };
        let mode = Mode::from_bits_truncate(mode & 0o7777);
        let chmod_error = |e| self.io_error("chmod", &resolved.real_path, e);
        let Some(st) = self.lstat_resolved(resolved)? else {
            return Err(chmod_error(Errno::ENOENT));
        };
        match EntryKind::from_mode(st.st_mode) {
            EntryKind::Symlink => Ok(()),
            EntryKind::Dir => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = openat(resolved.dir(), name, flags, Mode::empty()).map_err(chmod_error)?;
                nix::sys::stat::fchmod(&fd, mode).map_err(chmod_error)
            }
            // Not a symlink (checked above), so following cannot leave the root.
            _ => {
                fchmodat(resolved.dir(), name, mode, nix::sys::stat::FchmodatFlags::FollowSymlink).map_err(chmod_error)
            }
        }
    }

    /// Sets access and modification time of the entry itself (not a symlink target).
    pub fn set_mtime(&mut self, resolved: &Resolved, seconds: i64) -> Result<(), RootError> {
        let name: &OsStr = if resolved.name.is_empty() {
            OsStr::new(".")
        } else {
            &resolved.name
        };
        let time = TimeSpec::new(seconds, 0);
        utimensat(
            resolved.dir(),
            name,
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.io_error("set time of", &resolved.real_path, e))
    }
}

/// Joins a symlink target to the (symlink-free) directory holding the link;
/// `..` pops a component and never goes above the root.
pub fn join_in_root(base: &Path, target: &Path) -> PathBuf {
    let mut out = base.to_path_buf();
    for component in target.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

mod deferred;
mod tree;

pub use deferred::DeferredDirs;
pub use tree::remove_tree;

#[cfg(test)]
mod tests;
