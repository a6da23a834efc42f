//! The tree going out of memory: to the archive (an [`ArchiveSource`] over
//! a sealed tree) and to the bundle directory, when it is kept.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bundlegen_protocol::archive::{ArchiveError, ArchiveSource, SourceEntry, SourceKind};
use bundlegen_protocol::root::{MissingDirs, RootDir, RootError};
use nix::errno::Errno;

use super::{Data, Dir, MemoryRootfs, Node};
use crate::rootfs::{Rootfs, Stamp};

impl MemoryRootfs {
    /// The node at a real path (no symlinks followed): for the archive.
    fn node_at(&self, path: &Path) -> Option<&Node> {
        let mut components = path.iter();
        let mut node = self.root.children.get(components.next()?)?;
        for name in components {
            match node {
                Node::Dir(dir) => node = dir.children.get(name)?,
                Node::Inode(_) => return None,
            }
        }
        Some(node)
    }

    /// Flushes the spool: from here on, the tree can be read from several
    /// threads at once (the archive and the directory written together).
    pub fn sealed(&mut self) -> io::Result<&MemoryRootfs> {
        self.spool.flush()?;
        Ok(self)
    }

    /// The contents of the regular file at `path` (a real path), for the archive.
    pub fn archived_file(&self, path: &Path) -> Result<impl Read + '_, ArchiveError> {
        match self.node_at(path) {
            Some(Node::Inode(id)) => match self.inodes[*id].data {
                Data::File { offset, len } => Ok(self.spool.read(offset, len)),
                _ => Err(missing(&self.host_path, path, "open")),
            },
            _ => Err(missing(&self.host_path, path, "open")),
        }
    }

    /// Writes the tree into `into`, an empty directory: what unpacking
    /// into it would have made, modes, mtimes and hard links included.
    pub fn write_out(&self, into: &mut RootDir) -> Result<(), RootError> {
        let mut first_links = HashMap::new();
        self.write_dir(&self.root, Path::new(""), into, &mut first_links)?;
        into.set_dir_stamp(
            Path::new(""),
            Stamp {
                mode: self.root.mode,
                mtime: self.root.mtime,
            },
        )
    }

    fn write_dir(
        &self,
        dir: &Dir,
        path: &Path,
        into: &mut RootDir,
        first_links: &mut HashMap<usize, PathBuf>,
    ) -> Result<(), RootError> {
        for (name, node) in &dir.children {
            let child = path.join(name);
            let id = match node {
                Node::Dir(sub) => {
                    // Writable until filled; its own mode and mtime come last.
                    Rootfs::mkdir(into, &child, 0o700, MissingDirs::Fail)?;
                    self.write_dir(sub, &child, into, first_links)?;
                    let stamp = Stamp {
                        mode: sub.mode,
                        mtime: sub.mtime,
                    };
                    into.set_dir_stamp(&child, stamp)?;
                    continue;
                }
                Node::Inode(id) => *id,
            };
            if let Some(first) = first_links.get(&id) {
                Rootfs::hardlink(into, first, &child)?;
                continue;
            }
            let inode = &self.inodes[id];
            if inode.links > 1 {
                first_links.insert(id, child.clone());
            }
            let stamp = Stamp {
                mode: inode.mode,
                mtime: inode.mtime,
            };
            match &inode.data {
                Data::File { offset, len } => {
                    // Large reads from the spool file, but no larger buffer
                    // than what is read from there: most files are small, or in memory.
                    let contents = self.spool.read(*offset, *len);
                    let buffer = contents.get_ref().1.left().min(1 << 20) as usize;
                    into.write_file(&child, &mut io::BufReader::with_capacity(buffer, contents), Some(stamp))?;
                }
                Data::Symlink(target) => Rootfs::symlink(into, &child, target, inode.mtime)?,
                Data::Node(node) => Rootfs::mknod(into, &child, node.kind, (node.major, node.minor), stamp)?,
            }
        }
        Ok(())
    }
}

/// The archive's view of a [sealed](MemoryRootfs::sealed) tree: paths are
/// real paths inside the rootfs, the empty path the rootfs directory itself.
impl ArchiveSource for &MemoryRootfs {
    fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, ArchiveError> {
        let dir = match self.node_at(dir) {
            None if dir.as_os_str().is_empty() => &self.root,
            Some(Node::Dir(dir)) => dir,
            _ => return Err(missing(&self.host_path, dir, "list")),
        };
        Ok(dir.children.keys().cloned().collect())
    }

    fn entry(&mut self, path: &Path) -> Result<SourceEntry, ArchiveError> {
        let node = match self.node_at(path) {
            None if path.as_os_str().is_empty() => {
                return Ok(SourceEntry {
                    kind: SourceKind::Dir,
                    mode: self.root.mode,
                    mtime: self.root.mtime,
                });
            }
            None => return Err(missing(&self.host_path, path, "stat")),
            Some(node) => node,
        };
        Ok(match node {
            Node::Dir(dir) => SourceEntry {
                kind: SourceKind::Dir,
                mode: dir.mode,
                mtime: dir.mtime,
            },
            Node::Inode(id) => {
                let inode = &self.inodes[*id];
                let kind = match &inode.data {
                    Data::File { len, .. } => SourceKind::File {
                        size: *len,
                        link: (inode.links > 1).then_some((0, *id as u64)),
                    },
                    Data::Symlink(target) => SourceKind::Symlink(target.clone()),
                    Data::Node(node) => SourceKind::Node(*node),
                };
                SourceEntry {
                    kind,
                    mode: inode.mode,
                    mtime: inode.mtime,
                }
            }
        })
    }

    fn open(&mut self, path: &Path) -> Result<Box<dyn Read + '_>, ArchiveError> {
        Ok(Box::new(self.archived_file(path)?))
    }
}

fn missing(root: &Path, path: &Path, op: &'static str) -> ArchiveError {
    ArchiveError::Io {
        op,
        path: root.join(path),
        source: Errno::ENOENT.into(),
    }
}
