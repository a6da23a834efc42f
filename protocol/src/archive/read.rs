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
use crate::root::{DeferredDirs, EntryKind, MissingDirs, Resolved, RootDir, Symlinks, clean_path};
use crate::tar_read::{TarEntry, TarKind, TarReader};

/// Limits and policy for unpacking.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Most bytes of file data accepted.
    pub max_bytes: u64,
    /// Most entries accepted.
    pub max_entries: u64,
    /// Keep setuid/setgid bits (otherwise they are cleared).
    pub allow_setuid: bool,
    /// Apply the archive's uid/gid to the files (needs root).
    pub apply_ownership: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_bytes: 8 << 30,
            max_entries: 1_000_000,
            allow_setuid: false,
            apply_ownership: false,
        }
    }
}

/// What was unpacked, and what was refused along the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Device nodes and fifos, which a bundle never needs, were not created.
    pub skipped_nodes: Vec<PathBuf>,
    /// Files whose setuid/setgid bits were cleared.
    pub cleared_setuid: Vec<PathBuf>,
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
    let mut input = BufReader::with_capacity(256 * 1024, archive);
    let head = input.fill_buf().map_err(ArchiveError::io("read", "archive"))?;
    if head.starts_with(ipk::AR_MAGIC) {
        let mut data = ipk::data_member(input)?;
        return unpack_stream(&mut data, root, options);
    }
    match Compression::sniff(head) {
        Compression::Gzip => unpack_tar(flate2::read::MultiGzDecoder::new(input), root, options),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(ArchiveError::io("decompress", "archive"))?;
            unpack_tar(decoder, root, options)
        }
        Compression::None => unpack_tar(input, root, options),
    }
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
        let existing = root.lstat(&path)?.map(|st| EntryKind::from_mode(st.st_mode));
        if entry.kind == TarKind::Dir && existing == Some(EntryKind::Dir) {
            dirs.set(&path, entry.mode, entry.mtime);
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
            dirs.set(&path, entry.mode, entry.mtime);
        }
        let Some(resolved) = create_entry(root, &entry, &path, &mut tar, options, &mut report)? else {
            continue;
        };
        if options.apply_ownership {
            chown(&resolved, &entry, &path)?;
        }
        if entry.kind == TarKind::File {
            let mut mode = entry.mode;
            if !options.allow_setuid && mode & 0o6000 != 0 {
                mode &= !0o6000;
                report.cleared_setuid.push(path.clone());
            }
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

/// Gives an entry the archive's owner (without following a symlink).
fn chown(resolved: &Resolved, entry: &TarEntry, path: &Path) -> Result<(), ArchiveError> {
    let uid = u32::try_from(entry.uid).map_err(|_| bad_entry(path, "uid out of range"))?;
    let gid = u32::try_from(entry.gid).map_err(|_| bad_entry(path, "gid out of range"))?;
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
