//! The tree an image is written from: inodes (the first the root
//! directory), directories naming them, hard links as several names of one
//! inode. Built by hand, or from a directory on disk ([`Tree::from_dir`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::ErofsError;
use super::format::NAME_MAX;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileData {
    Path(PathBuf),
    Bytes(std::sync::Arc<[u8]>),
}

#[derive(Debug, Clone)]
pub enum InodeKind {
    /// Children by name (kept sorted).
    Dir(BTreeMap<Vec<u8>, usize>),
    File {
        size: u64,
        data: FileData,
    },
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Inode {
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    pub kind: InodeKind,
}

/// A filesystem tree to write: inodes, the first the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    inodes: Vec<Inode>,
}

pub const ROOT: usize = 0;

impl Tree {
    pub fn new(root_mode: u32) -> Tree {
        Tree {
            inodes: vec![Inode {
                mode: root_mode & 0o7777,
                kind: InodeKind::Dir(BTreeMap::new()),
            }],
        }
    }

    /// The tree of directory `root` on disk: directories, regular files
    /// (read when the image is written), symlinks, FIFOs, hard links kept.
    /// Device nodes are refused (`node`: how the caller wants them named);
    /// sockets, which exist only while a program runs, are left out.
    pub fn from_dir(root: &Path) -> Result<Tree, ErofsError> {
        let meta = fs::symlink_metadata(root).map_err(|source| read_error(root, source))?;
        let mut tree = Tree::new(meta.mode());
        let mut links = HashMap::new();
        tree.add_dir_contents(ROOT, root, Path::new("/"), &mut links)?;
        Ok(tree)
    }

    fn add_dir_contents(
        &mut self,
        parent: usize,
        host: &Path,
        inside: &Path,
        links: &mut HashMap<(u64, u64), usize>,
    ) -> Result<(), ErofsError> {
        let mut names: Vec<OsString> = fs::read_dir(host)
            .map_err(|source| read_error(host, source))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|source| read_error(host, source))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = host.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(|source| read_error(&path, source))?;
            let kind = meta.file_type();
            let named = |reason| ErofsError::Name {
                path: inside.join(&name).display().to_string(),
                reason,
            };
            if kind.is_file()
                && meta.nlink() > 1
                && let Some(&existing) = links.get(&(meta.dev(), meta.ino()))
            {
                self.link(parent, name.as_bytes(), existing)?;
                continue;
            }
            let inode_kind = if kind.is_dir() {
                InodeKind::Dir(BTreeMap::new())
            } else if kind.is_file() {
                InodeKind::File {
                    size: meta.len(),
                    data: FileData::Path(path.clone()),
                }
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| read_error(&path, source))?;
                InodeKind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else if kind.is_fifo() {
                InodeKind::Fifo
            } else if kind.is_char_device() || kind.is_block_device() {
                return Err(named("a device node; packages cannot carry device nodes"));
            } else {
                continue;
            };
            let index = self.add(
                parent,
                name.as_bytes(),
                Inode {
                    mode: meta.mode(),
                    kind: inode_kind,
                },
            )?;
            if kind.is_file() && meta.nlink() > 1 {
                links.insert((meta.dev(), meta.ino()), index);
            }
            if kind.is_dir() {
                self.add_dir_contents(index, &path, &inside.join(&name), links)?;
            }
        }
        Ok(())
    }

    pub fn inodes(&self) -> &[Inode] {
        &self.inodes
    }

    fn check_name(name: &[u8]) -> Option<&'static str> {
        if name.is_empty() || name == b"." || name == b".." {
            Some("not a file name")
        } else if name.len() > NAME_MAX {
            Some("name longer than 255 bytes")
        } else if name.contains(&b'/') || name.contains(&0) {
            Some("name with '/' or NUL")
        } else {
            None
        }
    }

    fn children(&mut self, parent: usize) -> &mut BTreeMap<Vec<u8>, usize> {
        match &mut self.inodes[parent].kind {
            InodeKind::Dir(children) => children,
            _ => panic!("inode {parent} is not a directory"),
        }
    }

    /// Adds `inode` as `name` in directory `parent`; returns its number.
    pub fn add(&mut self, parent: usize, name: &[u8], mut inode: Inode) -> Result<usize, ErofsError> {
        if let Some(reason) = Self::check_name(name) {
            return Err(ErofsError::Name {
                path: String::from_utf8_lossy(name).into_owned(),
                reason,
            });
        }
        inode.mode &= 0o7777;
        let index = self.inodes.len();
        if self.children(parent).insert(name.to_vec(), index).is_some() {
            return Err(ErofsError::Name {
                path: String::from_utf8_lossy(name).into_owned(),
                reason: "appears twice in its directory",
            });
        }
        self.inodes.push(inode);
        Ok(index)
    }

    /// A hard link: `name` in `parent` names the existing non-directory `target`.
    pub fn link(&mut self, parent: usize, name: &[u8], target: usize) -> Result<(), ErofsError> {
        if let Some(reason) = Self::check_name(name) {
            return Err(ErofsError::Name {
                path: String::from_utf8_lossy(name).into_owned(),
                reason,
            });
        }
        assert!(
            !matches!(self.inodes[target].kind, InodeKind::Dir(_)),
            "directories cannot be hard-linked"
        );
        if self.children(parent).insert(name.to_vec(), target).is_some() {
            return Err(ErofsError::Name {
                path: String::from_utf8_lossy(name).into_owned(),
                reason: "appears twice in its directory",
            });
        }
        Ok(())
    }
}

fn read_error(path: &Path, source: std::io::Error) -> ErofsError {
    ErofsError::Read {
        path: PathBuf::from(path),
        source,
    }
}

/// Link counts and parent directories.
pub struct Links {
    pub nlink: Vec<u64>,
    pub parent: Vec<usize>,
}

impl Links {
    pub fn of(tree: &Tree) -> Links {
        let inodes = tree.inodes();
        let mut nlink = vec![0u64; inodes.len()];
        let mut parent = vec![ROOT; inodes.len()];
        nlink[ROOT] = 2;
        for (index, inode) in inodes.iter().enumerate() {
            if let InodeKind::Dir(children) = &inode.kind {
                for &child in children.values() {
                    if matches!(inodes[child].kind, InodeKind::Dir(_)) {
                        nlink[index] += 1;
                        nlink[child] += 2;
                        parent[child] = index;
                    } else {
                        nlink[child] += 1;
                    }
                }
            }
        }
        Links { nlink, parent }
    }
}
