//! Writing a bundle directory as a reproducible tar stream.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ArchiveError, ROOTFS_DIR};
use crate::idmap::{IdMapping, map_id};
use crate::manifest::{Manifest, NodeKind, Owner, SpecialNode};

/// How entries are stamped.
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// Entry mtimes are clamped to this many seconds since the epoch, so
    /// files created while generating do not make the archive differ.
    pub mtime_clamp: i64,
    /// Container-to-host uid ranges (empty: ids are written as they are).
    pub uid_map: Vec<IdMapping>,
    /// Container-to-host gid ranges.
    pub gid_map: Vec<IdMapping>,
    /// Every entry is owned by this container user (BundleGen's
    /// `tarball.fileOwnershipSameAsUser`) instead of its own owner.
    pub owner_override: Option<Owner>,
    /// Permission bits kept: `mode & mask` (BundleGen's `tarball.fileMask`).
    pub mode_mask: Option<u32>,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub entries: u64,
    pub file_bytes: u64,
    /// Entries whose owner no id mapping covers (written unmapped).
    pub unmapped_owners: u64,
    /// The first such entry, for the warning.
    pub first_unmapped: Option<PathBuf>,
}

enum Kind {
    File { size: u64 },
    Dir,
    Symlink(PathBuf),
    HardLink(PathBuf),
    Node(SpecialNode),
}

/// What the archive needs to know of one entry of the tree it writes.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    pub kind: SourceKind,
    /// Permission bits (and file type bits, which are ignored).
    pub mode: u32,
    pub mtime: i64,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Dir,
    Symlink(PathBuf),
    /// A regular file; `link` identifies it when it has other hard links.
    File {
        size: u64,
        link: Option<(u64, u64)>,
    },
    Node(SpecialNode),
    /// Sockets: they only exist while a program runs and are not archived.
    Other,
}

/// A tree the archive is written from, addressed by paths relative to its
/// top: a directory on the host ([`HostDir`]) or one the generator holds in
/// memory. Errors name the entry where the host path is unknown.
pub trait ArchiveSource {
    /// The names in directory `dir` (any order).
    fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, ArchiveError>;
    fn entry(&mut self, path: &Path) -> Result<SourceEntry, ArchiveError>;
    /// The contents of the regular file at `path`.
    fn open(&mut self, path: &Path) -> Result<Box<dyn Read + '_>, ArchiveError>;
}

/// A directory on the host as an [`ArchiveSource`]; symlinks are not followed.
pub struct HostDir<'a>(pub &'a Path);

impl ArchiveSource for HostDir<'_> {
    fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, ArchiveError> {
        let host = self.0.join(dir);
        fs::read_dir(&host)
            .map_err(ArchiveError::io("list", &host))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(ArchiveError::io("list", &host))
    }

    fn entry(&mut self, path: &Path) -> Result<SourceEntry, ArchiveError> {
        let host = self.0.join(path);
        let meta = fs::symlink_metadata(&host).map_err(ArchiveError::io("stat", &host))?;
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            SourceKind::Dir
        } else if file_type.is_symlink() {
            SourceKind::Symlink(fs::read_link(&host).map_err(ArchiveError::io("read link", &host))?)
        } else if file_type.is_file() {
            SourceKind::File {
                size: meta.len(),
                link: (meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
            }
        } else if let Some(node) = disk_node(&meta) {
            SourceKind::Node(node)
        } else {
            SourceKind::Other
        };
        Ok(SourceEntry {
            kind,
            mode: meta.mode(),
            mtime: meta.mtime(),
        })
    }

    fn open(&mut self, path: &Path) -> Result<Box<dyn Read + '_>, ArchiveError> {
        let host = self.0.join(path);
        let file = File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&host)
            .map_err(ArchiveError::io("open", &host))?;
        Ok(Box::new(file))
    }
}

struct Writer<'a, W: Write, S: ArchiveSource + ?Sized> {
    tar: tar::Builder<W>,
    source: &'a mut S,
    manifest: &'a Manifest,
    options: &'a ArchiveOptions,
    /// First archive path of each multiply-linked file, by its link identity.
    links: HashMap<(u64, u64), PathBuf>,
    summary: ArchiveSummary,
}

/// Writes `bundle` (a directory holding `config.json` and `rootfs/`) as a tar
/// stream into `out`, entries at the archive root, and returns `out`.
pub fn write_bundle<W: Write>(
    bundle: &Path,
    manifest: &Manifest,
    options: &ArchiveOptions,
    out: W,
) -> Result<(W, ArchiveSummary), ArchiveError> {
    write_bundle_from(&mut HostDir(bundle), manifest, options, out)
}

/// [`write_bundle`] from any tree laid out as a bundle.
pub fn write_bundle_from<W: Write, S: ArchiveSource + ?Sized>(
    bundle: &mut S,
    manifest: &Manifest,
    options: &ArchiveOptions,
    out: W,
) -> Result<(W, ArchiveSummary), ArchiveError> {
    write_walk(bundle, None, manifest, options, out)
}

/// Writes the contents of a root filesystem (`manifest` keyed by paths in
/// it) as a tar stream, its entries at the archive root: a package's content.
pub fn write_rootfs<W: Write>(
    rootfs: &Path,
    manifest: &Manifest,
    options: &ArchiveOptions,
    out: W,
) -> Result<(W, ArchiveSummary), ArchiveError> {
    write_walk(&mut HostDir(rootfs), Some(Path::new("")), manifest, options, out)
}

fn write_walk<W: Write, S: ArchiveSource + ?Sized>(
    source: &mut S,
    rootfs_dir: Option<&Path>,
    manifest: &Manifest,
    options: &ArchiveOptions,
    out: W,
) -> Result<(W, ArchiveSummary), ArchiveError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut writer = Writer {
        tar,
        source,
        manifest,
        options,
        links: HashMap::new(),
        summary: ArchiveSummary::default(),
    };
    writer.walk(Path::new(""), rootfs_dir)?;
    let out = writer
        .tar
        .into_inner()
        .map_err(ArchiveError::io("finish the archive of", "the bundle"))?;
    Ok((out, writer.summary))
}

impl<W: Write, S: ArchiveSource + ?Sized> Writer<'_, W, S> {
    /// Writes the children of `dir` (a path of the source, which is also its
    /// archive path); `rootfs_dir` is its path inside the rootfs, if it is in it.
    fn walk(&mut self, dir: &Path, rootfs_dir: Option<&Path>) -> Result<(), ArchiveError> {
        let mut names = self.source.list(dir)?;
        let mut recorded: HashMap<OsString, SpecialNode> = HashMap::new();
        if let Some(rootfs_dir) = rootfs_dir {
            for (name, node) in self.manifest.nodes_in(rootfs_dir) {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_os_string());
                    recorded.insert(name.to_os_string(), *node);
                }
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let archive_path = dir.join(&name);
            let in_rootfs = match rootfs_dir {
                Some(parent) => Some(parent.join(&name)),
                None if name == ROOTFS_DIR => Some(PathBuf::new()),
                None => None,
            };
            let owner = in_rootfs.as_deref().map(|p| self.manifest.owner(p)).unwrap_or_default();
            if let Some(node) = recorded.get(&name) {
                self.append(&archive_path, Kind::Node(*node), node.mode, owner, node.mtime)?;
                continue;
            }
            let entry = self.source.entry(&archive_path)?;
            let kind = match entry.kind {
                SourceKind::Dir => Kind::Dir,
                SourceKind::Symlink(target) => Kind::Symlink(target),
                SourceKind::File { size, link } => match link {
                    Some(key) => match self.links.get(&key) {
                        Some(first) => Kind::HardLink(first.clone()),
                        None => {
                            self.links.insert(key, archive_path.clone());
                            Kind::File { size }
                        }
                    },
                    None => Kind::File { size },
                },
                SourceKind::Node(node) => Kind::Node(node),
                SourceKind::Other => continue,
            };
            let is_dir = matches!(kind, Kind::Dir);
            self.append(&archive_path, kind, entry.mode, owner, entry.mtime)?;
            if is_dir {
                self.walk(&archive_path, in_rootfs.as_deref())?;
            }
        }
        Ok(())
    }

    fn host_ids(&mut self, path: &Path, owner: Owner) -> (u32, u32) {
        let owner = self.options.owner_override.unwrap_or(owner);
        let uid = map_id(&self.options.uid_map, owner.uid);
        let gid = map_id(&self.options.gid_map, owner.gid);
        if uid.is_none() || gid.is_none() {
            self.summary.unmapped_owners += 1;
            self.summary.first_unmapped.get_or_insert_with(|| path.to_path_buf());
        }
        (uid.unwrap_or(owner.uid), gid.unwrap_or(owner.gid))
    }

    fn append(&mut self, path: &Path, kind: Kind, mode: u32, owner: Owner, mtime: i64) -> Result<(), ArchiveError> {
        let (uid, gid) = self.host_ids(path, owner);
        let mut header = tar::Header::new_gnu();
        let mode = mode & 0o7777 & self.options.mode_mask.unwrap_or(0o7777);
        header.set_mode(mode);
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header.set_mtime(mtime.clamp(0, self.options.mtime_clamp.max(0)) as u64);
        header.set_size(0);
        let failed = ArchiveError::io("archive", path);
        self.summary.entries += 1;
        match kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                self.tar.append_data(&mut header, path, io::empty()).map_err(failed)
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                self.tar.append_link(&mut header, path, target).map_err(failed)
            }
            Kind::HardLink(target) => {
                header.set_entry_type(tar::EntryType::Link);
                self.tar.append_link(&mut header, path, target).map_err(failed)
            }
            Kind::Node(node) => {
                header.set_entry_type(match node.kind {
                    NodeKind::CharDevice => tar::EntryType::Char,
                    NodeKind::BlockDevice => tar::EntryType::Block,
                    NodeKind::Fifo => tar::EntryType::Fifo,
                });
                header
                    .set_device_major(node.major)
                    .map_err(ArchiveError::io("archive", path))?;
                header
                    .set_device_minor(node.minor)
                    .map_err(ArchiveError::io("archive", path))?;
                self.tar.append_data(&mut header, path, io::empty()).map_err(failed)
            }
            Kind::File { size } => {
                let file = self.source.open(path)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                self.summary.file_bytes += size;
                let exact = ExactReader {
                    inner: file,
                    left: size,
                };
                self.tar.append_data(&mut header, path, exact).map_err(failed)
            }
        }
    }
}

fn disk_node(meta: &fs::Metadata) -> Option<SpecialNode> {
    let file_type = meta.file_type();
    let kind = if file_type.is_char_device() {
        NodeKind::CharDevice
    } else if file_type.is_block_device() {
        NodeKind::BlockDevice
    } else if file_type.is_fifo() {
        NodeKind::Fifo
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(SpecialNode {
        kind,
        major: nix::sys::stat::major(rdev) as u32,
        minor: nix::sys::stat::minor(rdev) as u32,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
    })
}

/// Reads exactly `left` bytes: a file that changed size while being archived
/// is an error instead of a corrupt archive.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.left -= got as u64;
        Ok(got)
    }
}
