//! Reading a bundle archive on the box: nothing in it is trusted.
//!
//! Entries are unpacked into a staging directory next to the destination with
//! [`Symlinks::Reject`] (a bundle is a plain tree, so no path may go through a
//! symlink), then synced and renamed into place: the bundle is either complete
//! at `dest` or absent.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, RenameFlags, renameat2};
use nix::unistd::{Gid, Uid, fchownat};

use super::{ArchiveError, Compression, ipk};
use crate::idmap::IdMapping;
use crate::root::{DeferredDirs, EntryKind, MissingDirs, Resolved, RootDir, Symlinks, clean_path};
use crate::tar_read::{TarEntry, TarKind, TarReader};

/// Limits and policy for unpacking.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Most bytes of file data accepted.
    pub max_bytes: u64,
    /// Most entries accepted.
    pub max_entries: u64,
    /// Keep setuid/setgid bits (otherwise they are cleared, on files and
    /// directories).
    pub allow_setuid: bool,
    pub owners: Owners,
}

/// What becomes of the archive's owners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Owners {
    /// Not applied: everything belongs to whoever unpacks.
    #[default]
    Unpacker,
    /// Applied (needs root). Each owner must lie within these host id
    /// ranges, a user namespace's maps; an empty map allows any id.
    Archive {
        uid_map: Vec<IdMapping>,
        gid_map: Vec<IdMapping>,
    },
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_bytes: 8 << 30,
            max_entries: 1_000_000,
            allow_setuid: false,
            owners: Owners::Unpacker,
        }
    }
}

/// Whether host id `id` lies within `map`'s host ranges (an empty map
/// allows every id).
fn within(map: &[IdMapping], id: u32) -> bool {
    map.is_empty() || map.iter().any(|m| m.covers_host(id))
}

/// What was unpacked, and what was refused along the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Device nodes and fifos, which a bundle never needs, were not created.
    pub skipped_nodes: Vec<PathBuf>,
    /// Files and directories whose setuid/setgid bits were cleared.
    pub cleared_setuid: Vec<PathBuf>,
}

/// The content of the archive's root entry `name` (such as `config.json`),
/// at most `limit` bytes; `None` if the archive has no such entry. Reads
/// only as far as that entry.
pub fn read_root_file<R: Read>(archive: R, name: &str, limit: u64) -> Result<Option<Vec<u8>>, ArchiveError> {
    let mut archive = archive;
    let mut tar = TarReader::new(tar_stream(&mut archive)?);
    while let Some(entry) = tar.next_entry()? {
        if clean_path(&entry.path)? != Path::new(name) {
            continue;
        }
        if entry.kind != TarKind::File {
            return Err(bad_entry(&entry.path, "not a regular file"));
        }
        if entry.size > limit {
            return Err(ArchiveError::LimitExceeded { what: "bytes", limit });
        }
        let mut content = Vec::new();
        tar.data()
            .read_to_end(&mut content)
            .map_err(ArchiveError::io("read", &entry.path))?;
        return Ok(Some(content));
    }
    Ok(None)
}

/// Unpacks a bundle archive (`.tar`, `.tar.gz`, `.tar.zst` or `.ipk`) into
/// `dest`, which must not exist yet.
pub fn unpack_bundle<R: Read>(archive: R, dest: &Path, options: &ReadOptions) -> Result<UnpackReport, ArchiveError> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest.file_name().ok_or_else(|| ArchiveError::BadEntry {
        path: dest.to_path_buf(),
        reason: "destination has no file name".into(),
    })?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.unpack-", name.to_string_lossy()))
        .tempdir_in(parent)
        .map_err(ArchiveError::io("create staging directory in", parent))?;
    let mut root = RootDir::open(staging.path(), Symlinks::Reject)?;
    let mut archive = archive;
    let report = unpack_stream(&mut archive, &mut root, options)?;
    root.sync()?;
    renameat2(
        nix::fcntl::AT_FDCWD,
        staging.path(),
        nix::fcntl::AT_FDCWD,
        dest,
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| ArchiveError::Io {
        op: "move the unpacked bundle to",
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    let _ = staging.keep();
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(ArchiveError::io("sync", parent))?;
    Ok(report)
}

fn unpack_stream(
    archive: &mut dyn Read,
    root: &mut RootDir,
    options: &ReadOptions,
) -> Result<UnpackReport, ArchiveError> {
    unpack_tar(tar_stream(archive)?, root, options)
}

/// The tar stream of an archive: the data member of an `.ipk`, inflated or
/// decompressed as its first bytes say.
fn tar_stream<'a>(archive: &'a mut dyn Read) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    let mut input = BufReader::with_capacity(256 * 1024, archive);
    let head = input.fill_buf().map_err(ArchiveError::io("read", "archive"))?;
    if head.starts_with(ipk::AR_MAGIC) {
        let data = ipk::data_member(input)?;
        let mut data = BufReader::with_capacity(256 * 1024, data);
        let head = data.fill_buf().map_err(ArchiveError::io("read", "ipk data"))?;
        return decompressed(Compression::sniff(head), data);
    }
    decompressed(Compression::sniff(head), input)
}

fn decompressed<'a>(compression: Compression, input: impl BufRead + 'a) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input).map_err(ArchiveError::io("decompress", "archive"))?,
        ),
        Compression::None => Box::new(input),
    })
}

fn unpack_tar<R: Read>(stream: R, root: &mut RootDir, options: &ReadOptions) -> Result<UnpackReport, ArchiveError> {
    let mut tar = TarReader::new(stream);
    let mut report = UnpackReport::default();
    let mut dirs = DeferredDirs::default();
    while let Some(entry) = tar.next_entry()? {
        report.entries += 1;
        if report.entries > options.max_entries {
            return Err(ArchiveError::LimitExceeded {
                what: "entries",
                limit: options.max_entries,
            });
        }
        let path = clean_path(&entry.path)?;
        if path.as_os_str().is_empty() {
            continue;
        }
        let mut mode = entry.mode;
        if !options.allow_setuid && mode & 0o6000 != 0 && matches!(entry.kind, TarKind::File | TarKind::Dir) {
            mode &= !0o6000;
            report.cleared_setuid.push(path.clone());
        }
        let existing = root.lstat(&path)?.map(|st| EntryKind::from_mode(st.st_mode));
        if entry.kind == TarKind::Dir && existing == Some(EntryKind::Dir) {
            dirs.set(&path, mode, entry.mtime);
            continue;
        }
        if matches!(entry.kind, TarKind::CharDevice | TarKind::BlockDevice | TarKind::Fifo) {
            report.skipped_nodes.push(path);
            continue;
        }
        if existing.is_some() {
            root.remove_all(&path)?;
            dirs.forget_tree(&path);
        }
        if entry.kind == TarKind::Dir {
            dirs.set(&path, mode, entry.mtime);
        }
        let Some(resolved) = create_entry(root, &entry, &path, &mut tar, options, &mut report)? else {
            continue;
        };
        if let Owners::Archive { uid_map, gid_map } = &options.owners {
            chown(&resolved, &entry, &path, uid_map, gid_map)?;
        }
        if entry.kind == TarKind::File {
            root.set_mode(&resolved, mode)?;
            root.set_mtime(&resolved, entry.mtime)?;
        } else if entry.kind == TarKind::Symlink {
            root.set_mtime(&resolved, entry.mtime)?;
        }
    }
    dirs.apply(root).map_err(|(_, e)| e)?;
    Ok(report)
}

fn bad_entry(path: &Path, reason: &str) -> ArchiveError {
    ArchiveError::BadEntry {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Creates a directory (its final mode comes later), file, symlink or
/// hardlink; returns what needs owner, mode and mtime (`None`: a hardlink,
/// which shares its target's).
fn create_entry<R: Read>(
    root: &mut RootDir,
    entry: &TarEntry,
    path: &Path,
    tar: &mut TarReader<R>,
    options: &ReadOptions,
    report: &mut UnpackReport,
) -> Result<Option<Resolved>, ArchiveError> {
    let target = |kind: &str| {
        entry
            .link_target
            .as_deref()
            .ok_or_else(|| bad_entry(path, &format!("{kind} without a target")))
    };
    let resolved = match entry.kind {
        TarKind::Dir => root.mkdir(path, 0o700, MissingDirs::Create)?,
        TarKind::File => {
            report.file_bytes += entry.size;
            if report.file_bytes > options.max_bytes {
                return Err(ArchiveError::LimitExceeded {
                    what: "bytes",
                    limit: options.max_bytes,
                });
            }
            let (mut file, resolved) = root.create_file(path, 0o600, MissingDirs::Create)?;
            io::copy(&mut tar.data(), &mut file).map_err(ArchiveError::io("write", path))?;
            resolved
        }
        TarKind::Symlink => root.symlink(path, target("symlink")?, MissingDirs::Create)?,
        TarKind::HardLink => {
            let target = clean_path(target("hardlink")?)?;
            match root.lstat(&target)? {
                Some(st) if EntryKind::from_mode(st.st_mode) != EntryKind::Dir => {}
                Some(_) => return Err(bad_entry(path, "hardlink to a directory")),
                None => {
                    return Err(bad_entry(
                        path,
                        "hardlink to an entry that is not in the archive before it",
                    ));
                }
            }
            root.hardlink(&target, path, MissingDirs::Create)?;
            return Ok(None);
        }
        TarKind::CharDevice | TarKind::BlockDevice | TarKind::Fifo => {
            unreachable!("device nodes and fifos are skipped")
        }
    };
    Ok(Some(resolved))
}

/// Gives an entry the archive's owner (without following a symlink), if it
/// lies within the allowed ranges.
fn chown(
    resolved: &Resolved,
    entry: &TarEntry,
    path: &Path,
    uid_map: &[IdMapping],
    gid_map: &[IdMapping],
) -> Result<(), ArchiveError> {
    let uid = u32::try_from(entry.uid).map_err(|_| bad_entry(path, "uid out of range"))?;
    let gid = u32::try_from(entry.gid).map_err(|_| bad_entry(path, "gid out of range"))?;
    if !within(uid_map, uid) || !within(gid_map, gid) {
        return Err(bad_entry(
            path,
            &format!("owner {uid}:{gid} lies outside the bundle's user namespace maps"),
        ));
    }
    fchownat(
        resolved.dir(),
        resolved.name.as_os_str(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| ArchiveError::Io {
        op: "chown",
        path: path.to_path_buf(),
        source: e.into(),
    })
}
