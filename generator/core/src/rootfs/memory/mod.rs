//! A rootfs held in memory: directories, links and metadata in a tree, file
//! contents appended to one [`Spool`] (memory first, then an unnamed file).
//! Each operation does what the same operation on a
//! [`RootDir`](bundlegen_protocol::root::RootDir) of the same tree does,
//! down to the modes the umask gives, the setgid bit directories inherit
//! and the mtimes a change gives its directory, so an archive written from
//! either is the same. Permissions are not checked: it acts as root does on
//! disk, so a stage may add a mount point inside a read-only directory, which
//! a rootless run on disk could not.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bundlegen_protocol::manifest::{NodeKind, SpecialNode};
use bundlegen_protocol::root::{EntryKind, MAX_SYMLINK_FOLLOWS, MissingDirs, RootError, clean_path, join_in_root};
use nix::errno::Errno;

use super::{RootFile, Rootfs, Stamp};
use spool::{IN_MEMORY, Spool};

const SET_GID: u32 = 0o2000;

pub struct MemoryRootfs {
    /// Where the rootfs would be on disk: for messages.
    host_path: PathBuf,
    umask: u32,
    root: Dir,
    inodes: Vec<Inode>,
    spool: Spool,
}

#[derive(Debug)]
struct Dir {
    mode: u32,
    mtime: i64,
    children: BTreeMap<OsString, Node>,
}

#[derive(Debug)]
enum Node {
    Dir(Dir),
    /// Everything else, by index into the inodes: hard links share one.
    Inode(usize),
}

#[derive(Debug)]
struct Inode {
    mode: u32,
    mtime: i64,
    links: u32,
    data: Data,
}

#[derive(Debug)]
enum Data {
    File { offset: u64, len: u64 },
    Symlink(PathBuf),
    Node(SpecialNode),
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The process's umask, read without changing it (`umask(2)` would, for a
/// moment, for every thread).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            u32::from_str_radix(line.trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

impl Dir {
    fn new(mode: u32) -> Dir {
        Dir {
            mode,
            mtime: now(),
            children: BTreeMap::new(),
        }
    }
}

impl MemoryRootfs {
    /// An empty rootfs whose file contents go to memory, then to a spool
    /// file in `spool_dir`; `host_path` names it in messages.
    pub fn new(host_path: &Path, spool_dir: &Path) -> io::Result<MemoryRootfs> {
        MemoryRootfs::holding_in_memory(host_path, spool_dir, IN_MEMORY)
    }

    /// [`MemoryRootfs::new`] with the first `in_memory` bytes of file
    /// contents in memory.
    pub(crate) fn holding_in_memory(host_path: &Path, spool_dir: &Path, in_memory: usize) -> io::Result<MemoryRootfs> {
        let spool = Spool::new(spool_dir, in_memory)?;
        let umask = current_umask();
        // As `create_dir` makes the rootfs directory in the spool's directory.
        let inherited = std::os::unix::fs::PermissionsExt::mode(&spool_dir.metadata()?.permissions()) & SET_GID;
        Ok(MemoryRootfs {
            host_path: host_path.to_path_buf(),
            umask,
            root: Dir::new((0o777 & !umask) | inherited),
            inodes: Vec::new(),
            spool,
        })
    }

    fn io_error(&self, op: &'static str, path: &Path, source: impl Into<io::Error>) -> RootError {
        RootError::io(op, &self.host_path, path, source)
    }

    fn dir(&self, at: &[OsString]) -> &Dir {
        let mut dir = &self.root;
        for name in at {
            match dir.children.get(name) {
                Some(Node::Dir(child)) => dir = child,
                _ => unreachable!("resolved paths lead through directories"),
            }
        }
        dir
    }

    fn dir_mut(&mut self, at: &[OsString]) -> &mut Dir {
        let mut dir = &mut self.root;
        for name in at {
            match dir.children.get_mut(name) {
                Some(Node::Dir(child)) => dir = child,
                _ => unreachable!("resolved paths lead through directories"),
            }
        }
        dir
    }

    /// A new directory's mode under `parent`: the umask applies, and a
    /// setgid parent passes its setgid bit on.
    fn new_dir_mode(&self, parent: &Dir, mode: u32) -> u32 {
        (mode & 0o1777 & !self.umask) | (parent.mode & SET_GID)
    }

    /// Resolves the parents of `path` as [`RootDir::resolve`] does: the
    /// real parent and the final name (`None` for the root itself).
    fn resolve_parent(
        &mut self,
        path: &Path,
        missing: MissingDirs,
    ) -> Result<(Vec<OsString>, Option<OsString>), RootError> {
        let path = clean_path(path)?;
        let mut components: Vec<OsString> = path.iter().map(OsStr::to_os_string).collect();
        let Some(name) = components.pop() else {
            return Ok((Vec::new(), None));
        };
        let mut real: Vec<OsString> = Vec::new();
        let mut follows = 0;
        for component in components {
            // Components still to walk; symlink targets are spliced in.
            let mut pending = vec![component];
            while let Some(step) = pending.pop() {
                if step.is_empty() || step == "." {
                    continue;
                }
                if step == ".." {
                    real.pop();
                    continue;
                }
                let here = |real: &[OsString]| PathBuf::from_iter(real).join(&step);
                match self.dir(&real).children.get(&step) {
                    Some(Node::Dir(_)) => real.push(step),
                    None if missing == MissingDirs::Create => {
                        let parent = self.dir(&real);
                        let created = Dir::new(self.new_dir_mode(parent, 0o755));
                        let parent = self.dir_mut(&real);
                        parent.children.insert(step.clone(), Node::Dir(created));
                        parent.mtime = now();
                        real.push(step);
                    }
                    None => return Err(self.io_error("open", &here(&real), Errno::ENOENT)),
                    Some(Node::Inode(id)) => {
                        let Data::Symlink(target) = &self.inodes[*id].data else {
                            return Err(RootError::NotADirectory {
                                root: self.host_path.clone(),
                                path: path.clone(),
                                parent: here(&real),
                            });
                        };
                        follows += 1;
                        if follows > MAX_SYMLINK_FOLLOWS {
                            return Err(RootError::TooManySymlinks {
                                root: self.host_path.clone(),
                                path: path.clone(),
                            });
                        }
                        if target.has_root() {
                            real.clear();
                        }
                        pending.extend(target.iter().filter(|c| *c != "/").map(OsStr::to_os_string).rev());
                    }
                }
            }
        }
        Ok((real, Some(name)))
    }

    fn lookup(&self, parent: &[OsString], name: &Option<OsString>) -> Option<EntryKind> {
        let Some(name) = name else {
            return Some(EntryKind::Dir);
        };
        self.dir(parent).children.get(name).map(|node| self.node_kind(node))
    }

    fn node_kind(&self, node: &Node) -> EntryKind {
        match node {
            Node::Dir(_) => EntryKind::Dir,
            Node::Inode(id) => match &self.inodes[*id].data {
                Data::File { .. } => EntryKind::File,
                Data::Symlink(_) => EntryKind::Symlink,
                Data::Node(node) => match node.kind {
                    NodeKind::CharDevice => EntryKind::CharDevice,
                    NodeKind::BlockDevice => EntryKind::BlockDevice,
                    NodeKind::Fifo => EntryKind::Fifo,
                },
            },
        }
    }

    /// Adds `node` as `name` in `parent`, failing if the name is taken.
    fn insert(
        &mut self,
        op: &'static str,
        parent: &[OsString],
        name: Option<OsString>,
        node: Node,
    ) -> Result<(), RootError> {
        let real = PathBuf::from_iter(parent).join(name.as_deref().unwrap_or_default());
        let Some(name) = name else {
            return Err(self.io_error(op, &real, Errno::EEXIST));
        };
        if self.dir(parent).children.contains_key(&name) {
            return Err(self.io_error(op, &real, Errno::EEXIST));
        }
        let dir = self.dir_mut(parent);
        dir.children.insert(name, node);
        dir.mtime = now();
        Ok(())
    }

    fn new_inode(&mut self, mode: u32, mtime: i64, data: Data) -> Node {
        self.inodes.push(Inode {
            mode,
            mtime,
            links: 1,
            data,
        });
        Node::Inode(self.inodes.len() - 1)
    }

    /// Drops the links `node` holds (all of them, for a directory).
    fn unlink(&mut self, node: Node) {
        match node {
            Node::Inode(id) => self.inodes[id].links -= 1,
            Node::Dir(dir) => {
                for (_, child) in dir.children {
                    self.unlink(child);
                }
            }
        }
    }
}

impl Rootfs for MemoryRootfs {
    fn resolve(&mut self, path: &Path, missing: MissingDirs) -> Result<PathBuf, RootError> {
        let (parent, name) = self.resolve_parent(path, missing)?;
        Ok(PathBuf::from_iter(parent).join(name.unwrap_or_default()))
    }

    fn kind(&mut self, path: &Path) -> Result<Option<EntryKind>, RootError> {
        match self.resolve_parent(path, MissingDirs::Fail) {
            Ok((parent, name)) => Ok(self.lookup(&parent, &name)),
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn resolve_follow(&mut self, path: &Path) -> Result<PathBuf, RootError> {
        let mut current = clean_path(path)?;
        for _ in 0..=MAX_SYMLINK_FOLLOWS {
            let (parent, name) = self.resolve_parent(&current, MissingDirs::Fail)?;
            let real = PathBuf::from_iter(&parent).join(name.as_deref().unwrap_or_default());
            let target = match &name {
                None => return Ok(real),
                Some(name) => match self.dir(&parent).children.get(name) {
                    None => return Err(self.io_error("find", &real, Errno::ENOENT)),
                    Some(Node::Inode(id)) => match &self.inodes[*id].data {
                        Data::Symlink(target) => target.clone(),
                        _ => return Ok(real),
                    },
                    Some(Node::Dir(_)) => return Ok(real),
                },
            };
            let base = if target.has_root() {
                PathBuf::new()
            } else {
                PathBuf::from_iter(&parent)
            };
            current = join_in_root(&base, &target);
        }
        Err(RootError::TooManySymlinks {
            root: self.host_path.clone(),
            path: path.to_path_buf(),
        })
    }

    fn read_dir(&mut self, path: &Path) -> Result<Vec<(OsString, EntryKind)>, RootError> {
        let (parent, name) = self.resolve_parent(path, MissingDirs::Fail)?;
        let real = PathBuf::from_iter(&parent).join(name.as_deref().unwrap_or_default());
        let dir = match &name {
            None => &self.root,
            Some(name) => match self.dir(&parent).children.get(name) {
                Some(Node::Dir(dir)) => dir,
                Some(Node::Inode(_)) => return Err(self.io_error("open directory", &real, Errno::ENOTDIR)),
                None => return Err(self.io_error("open directory", &real, Errno::ENOENT)),
            },
        };
        Ok(dir
            .children
            .iter()
            .map(|(name, node)| (name.clone(), self.node_kind(node)))
            .collect())
    }

    fn open_file(&mut self, path: &Path) -> Result<RootFile, RootError> {
        let (parent, name) = self.resolve_parent(path, MissingDirs::Fail)?;
        let real = PathBuf::from_iter(&parent).join(name.as_deref().unwrap_or_default());
        let kind = self.lookup(&parent, &name);
        if let Some(errno) = super::not_a_file(kind) {
            return Err(self.io_error("open", &real, errno));
        }
        let (offset, len) = match name.as_ref().and_then(|name| self.dir(&parent).children.get(name)) {
            Some(Node::Inode(id)) => match self.inodes[*id].data {
                Data::File { offset, len } => (offset, len),
                _ => unreachable!("checked to be a file"),
            },
            _ => return Err(self.io_error("open", &real, Errno::ENOENT)),
        };
        self.spool.flush().map_err(|e| self.io_error("open", &real, e))?;
        Ok(RootFile::new(len, Box::new(self.spool.read_owned(offset, len))))
    }

    fn remove_all(&mut self, path: &Path) -> Result<bool, RootError> {
        let (parent, name) = match self.resolve_parent(path, MissingDirs::Fail) {
            Ok(resolved) => resolved,
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(name) = name else {
            return Err(RootError::InvalidPath {
                path: path.to_path_buf(),
                reason: "the root itself cannot be removed",
            });
        };
        let dir = self.dir_mut(&parent);
        let Some(node) = dir.children.remove(&name) else {
            return Ok(false);
        };
        dir.mtime = now();
        self.unlink(node);
        Ok(true)
    }

    fn mkdir(&mut self, path: &Path, mode: u32, missing: MissingDirs) -> Result<(), RootError> {
        let (parent, name) = self.resolve_parent(path, missing)?;
        let created = Dir::new(self.new_dir_mode(self.dir(&parent), mode));
        self.insert("create directory", &parent, name, Node::Dir(created))
    }

    fn write_file(&mut self, path: &Path, data: &mut dyn Read, stamp: Option<Stamp>) -> Result<u64, RootError> {
        let (parent, name) = self.resolve_parent(path, MissingDirs::Create)?;
        let real = PathBuf::from_iter(&parent).join(name.as_deref().unwrap_or_default());
        if self.lookup(&parent, &name).is_some() {
            return Err(self.io_error("create file", &real, Errno::EEXIST));
        }
        let offset = self.spool.len();
        // What a failed copy appended stays, never referenced.
        let len = io::copy(data, &mut self.spool).map_err(|e| self.io_error("write", &real, e))?;
        let (mode, mtime) = match stamp {
            Some(stamp) => (stamp.mode & 0o7777, stamp.mtime),
            None => (0o644 & !self.umask, now()),
        };
        let node = self.new_inode(mode, mtime, Data::File { offset, len });
        self.insert("create file", &parent, name, node)?;
        Ok(len)
    }

    fn symlink(&mut self, path: &Path, target: &Path, mtime: i64) -> Result<(), RootError> {
        let (parent, name) = self.resolve_parent(path, MissingDirs::Create)?;
        if self.lookup(&parent, &name).is_some() {
            let real = PathBuf::from_iter(&parent).join(name.as_deref().unwrap_or_default());
            return Err(self.io_error("create symlink", &real, Errno::EEXIST));
        }
        let node = self.new_inode(0o777, mtime, Data::Symlink(target.to_path_buf()));
        self.insert("create symlink", &parent, name, node)
    }

    fn mknod(&mut self, path: &Path, kind: NodeKind, dev: (u32, u32), stamp: Stamp) -> Result<(), RootError> {
        let (parent, name) = self.resolve_parent(path, MissingDirs::Create)?;
        if self.lookup(&parent, &name).is_some() {
            let real = PathBuf::from_iter(&parent).join(name.as_deref().unwrap_or_default());
            return Err(self.io_error("create node", &real, Errno::EEXIST));
        }
        let mode = stamp.mode & 0o7777;
        let special = SpecialNode {
            kind,
            major: dev.0,
            minor: dev.1,
            mode,
            mtime: stamp.mtime,
        };
        let node = self.new_inode(mode, stamp.mtime, Data::Node(special));
        self.insert("create node", &parent, name, node)
    }

    fn hardlink(&mut self, existing: &Path, path: &Path) -> Result<(), RootError> {
        let (source_parent, source_name) = self.resolve_parent(existing, MissingDirs::Fail)?;
        let source_real = PathBuf::from_iter(&source_parent).join(source_name.as_deref().unwrap_or_default());
        let id = match source_name
            .as_ref()
            .and_then(|n| self.dir(&source_parent).children.get(n))
        {
            Some(Node::Inode(id)) => *id,
            Some(Node::Dir(_)) => return Err(self.io_error("create hardlink", &source_real, Errno::EPERM)),
            None if source_name.is_none() => {
                return Err(self.io_error("create hardlink", &source_real, Errno::EPERM));
            }
            None => return Err(self.io_error("create hardlink", &source_real, Errno::ENOENT)),
        };
        let (parent, name) = self.resolve_parent(path, MissingDirs::Create)?;
        self.insert("create hardlink", &parent, name, Node::Inode(id))?;
        self.inodes[id].links += 1;
        Ok(())
    }

    fn set_dir_stamp(&mut self, path: &Path, stamp: Stamp) -> Result<(), RootError> {
        let (parent, name) = self.resolve_parent(path, MissingDirs::Fail)?;
        let dir = match &name {
            None => &mut self.root,
            Some(name) => match self.dir_mut(&parent).children.get_mut(name) {
                Some(Node::Dir(dir)) => dir,
                _ => return Ok(()),
            },
        };
        dir.mode = stamp.mode & 0o7777;
        dir.mtime = stamp.mtime;
        Ok(())
    }

    fn in_memory(&mut self) -> Option<&mut MemoryRootfs> {
        Some(self)
    }
}

mod out;
mod spool;
