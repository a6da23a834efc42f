//! Writing a finished bundle: the directory (`OUTPUTDIR/`), and an archive
//! next to it (`OUTPUTDIR.tar.gz`, `.tar.zst` or `.ipk`), each written to a
//! temporary name, synced and renamed, so either is complete or absent.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bundlegen_protocol::archive::ipk::{IpkControl, write_ipk};
use bundlegen_protocol::archive::{
    ArchiveError, ArchiveOptions, ArchiveSource, ArchiveSummary, HostDir, ROOTFS_DIR, SourceEntry, write_bundle_from,
};
use bundlegen_protocol::digest::{HashingWriter, Sha256Digest};
use bundlegen_protocol::fsutil::write_file_atomic;
use bundlegen_protocol::manifest::Manifest;
use bundlegen_protocol::root::{RootDir, Symlinks};

use crate::bundle::{Bundle, BundleError};
use crate::rootfs::{MemoryRootfs, Rootfs};

pub mod pgzip;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dir,
    TarGz,
    TarZst,
    Ipk,
}

impl Format {
    /// File name suffix of the archive.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Format::Dir => None,
            Format::TarGz => Some("tar.gz"),
            Format::TarZst => Some("tar.zst"),
            Format::Ipk => Some("ipk"),
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "dir" => Ok(Format::Dir),
            "tar.gz" | "tgz" => Ok(Format::TarGz),
            "tar.zst" => Ok(Format::TarZst),
            "ipk" => Ok(Format::Ipk),
            other => Err(format!("unknown format {other:?}: use dir, tar.gz, tar.zst or ipk")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension().unwrap_or("dir"))
    }
}

#[derive(Debug, Clone)]
pub struct OutputOptions {
    pub format: Format,
    /// Keep the bundle directory next to the archive (BundleGen does).
    pub keep_dir: bool,
    /// Replace an existing output instead of failing.
    pub replace: bool,
    /// Owners, mode mask (the mtime clamp comes from the bundle).
    pub archive: ArchiveOptions,
    /// Compression level (gzip 1-9, zstd 1-22); `None` for the default.
    pub level: Option<u32>,
    /// Compression threads (0: all cores).
    pub threads: usize,
    /// Control fields of an `.ipk`.
    pub ipk: Option<IpkControl>,
}

pub const DEFAULT_GZIP_LEVEL: u32 = 6;
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} already exists; pass -y/--yes to replace it")]
    Exists(PathBuf),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Bundle(Box<BundleError>),
    #[error("an .ipk needs package control fields")]
    MissingIpkControl,
    #[error(
        "cannot move the bundle to {0}: the work directory is on another filesystem; use it only with --archive-only"
    )]
    WorkDirElsewhere(PathBuf),
}

impl From<BundleError> for OutputError {
    fn from(error: BundleError) -> Self {
        OutputError::Bundle(Box::new(error))
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OutputError + use<> {
    let path = path.to_path_buf();
    move |source| OutputError::Io { path, source }
}

/// A written archive.
#[derive(Debug, Clone)]
pub struct ArchiveInfo {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub summary: ArchiveSummary,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: Option<PathBuf>,
    pub archive: Option<ArchiveInfo>,
}

/// `OUTPUTDIR.<ext>` for archive formats.
pub fn archive_path(output: &Path, format: Format) -> Option<PathBuf> {
    let extension = format.extension()?;
    let mut name = output.file_name()?.to_os_string();
    name.push(".");
    name.push(extension);
    Some(output.with_file_name(name))
}

fn writes_dir(options: &OutputOptions) -> bool {
    options.format == Format::Dir || options.keep_dir
}

/// Fails early (before any work) if an output exists and may not be replaced.
pub fn check_destination(output: &Path, options: &OutputOptions) -> Result<(), OutputError> {
    if options.replace {
        return Ok(());
    }
    let mut targets: Vec<PathBuf> = archive_path(output, options.format).into_iter().collect();
    if writes_dir(options) {
        targets.push(output.to_path_buf());
    }
    match targets.into_iter().find(|t| fs::symlink_metadata(t).is_ok()) {
        Some(existing) => Err(OutputError::Exists(existing)),
        None => Ok(()),
    }
}

/// Whether the rootfs is assembled in memory for `options`: whenever an
/// archive is written. The directory, when it is kept too, is then written
/// from memory while the archive is compressed.
pub fn assemble_in_memory(options: &OutputOptions) -> bool {
    options.format != Format::Dir
}

/// Writes `bundle` as asked and consumes it.
pub fn write<R: Rootfs>(mut bundle: Bundle<R>, output: &Path, options: &OutputOptions) -> Result<Written, OutputError> {
    check_destination(output, options)?;
    bundle.write_config()?;
    let archive_options = ArchiveOptions {
        mtime_clamp: bundle.epoch,
        ..options.archive.clone()
    };
    let archive_path = archive_path(output, options.format);
    let epoch = bundle.epoch;
    let (staging, manifest, rootfs) = bundle.parts();
    let memory = match rootfs.in_memory() {
        Some(memory) => Some(memory.sealed().map_err(io_error(staging))?),
        None => None,
    };
    let tree = Tree {
        staging,
        manifest,
        memory,
        epoch,
    };
    let (archive, written_out) = std::thread::scope(|scope| {
        let writing_out = memory
            .filter(|_| writes_dir(options))
            .map(|memory| scope.spawn(move || write_out(memory, staging)));
        let archive = archive_path
            .as_deref()
            .map(|path| write_archive(tree, path, &archive_options, options))
            .transpose();
        let written_out = writing_out
            .map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .transpose();
        (archive, written_out)
    });
    let archive = archive?;
    written_out?;
    let dir = if writes_dir(options) {
        place_dir(bundle, output, options.replace)?;
        Some(output.to_path_buf())
    } else {
        // The staging tree goes before the archive is synced: its files'
        // pages are dropped, not written to the disk by that sync.
        drop(bundle);
        None
    };
    let archive = archive.map(Unsynced::commit).transpose()?;
    Ok(Written { dir, archive })
}

/// Writes a tree assembled in memory into the staging `rootfs/` directory.
fn write_out(memory: &MemoryRootfs, staging: &Path) -> Result<(), OutputError> {
    let mut rootfs = RootDir::open(&staging.join(ROOTFS_DIR), Symlinks::FollowInRoot).map_err(BundleError::from)?;
    memory.write_out(&mut rootfs).map_err(BundleError::from)?;
    Ok(())
}

fn threads(options: &OutputOptions) -> usize {
    match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// What an archive is written from: the staging directory, with its
/// rootfs there or in memory.
#[derive(Clone, Copy)]
struct Tree<'a> {
    staging: &'a Path,
    manifest: &'a Manifest,
    memory: Option<&'a MemoryRootfs>,
    /// The mtime clamp.
    epoch: i64,
}

/// A bundle as the archive sees it: `config.json` from the staging
/// directory, `rootfs/` from there too or from the rootfs in memory.
struct BundleSource<'a> {
    staging: HostDir<'a>,
    memory: Option<&'a MemoryRootfs>,
}

impl<'a> BundleSource<'a> {
    fn new(tree: Tree<'a>) -> BundleSource<'a> {
        BundleSource {
            staging: HostDir(tree.staging),
            memory: tree.memory,
        }
    }

    /// The path inside the rootfs in memory, if `path` is read from there.
    fn in_memory<'p>(&self, path: &'p Path) -> Option<(&'a MemoryRootfs, &'p Path)> {
        Some((self.memory?, path.strip_prefix(ROOTFS_DIR).ok()?))
    }
}

impl ArchiveSource for BundleSource<'_> {
    fn list(&mut self, dir: &Path) -> Result<Vec<std::ffi::OsString>, ArchiveError> {
        match self.in_memory(dir) {
            Some((mut memory, inside)) => memory.list(inside),
            None => self.staging.list(dir),
        }
    }

    fn entry(&mut self, path: &Path) -> Result<SourceEntry, ArchiveError> {
        match self.in_memory(path) {
            Some((mut memory, inside)) => memory.entry(inside),
            None => self.staging.entry(path),
        }
    }

    fn open(&mut self, path: &Path) -> Result<Box<dyn io::Read + '_>, ArchiveError> {
        match self.in_memory(path) {
            Some((memory, inside)) => Ok(Box::new(memory.archived_file(inside)?)),
            None => self.staging.open(path),
        }
    }
}

/// Writes the bundle's tar stream through `format`'s compressor into `out`.
fn write_compressed<W: Write>(
    tree: Tree<'_>,
    format: Format,
    archive: &ArchiveOptions,
    options: &OutputOptions,
    out: W,
) -> Result<(W, ArchiveSummary), OutputError> {
    let failed = io_error(tree.staging);
    let mut source = BundleSource::new(tree);
    match format {
        Format::TarZst => {
            let mut encoder =
                zstd::stream::write::Encoder::new(out, options.level.unwrap_or(DEFAULT_ZSTD_LEVEL) as i32)
                    .map_err(io_error(tree.staging))?;
            // At least one worker even on one core: zstd's output is the same
            // for any worker count >= 1, but differs without workers.
            encoder
                .multithread(threads(options) as u32)
                .and_then(|()| encoder.include_checksum(true))
                .map_err(io_error(tree.staging))?;
            let (encoder, summary) = write_bundle_from(&mut source, tree.manifest, archive, encoder)?;
            Ok((encoder.finish().map_err(failed)?, summary))
        }
        _ => {
            let level = options.level.unwrap_or(DEFAULT_GZIP_LEVEL);
            let gz = pgzip::ParallelGzWriter::new(out, level, threads(options)).map_err(io_error(tree.staging))?;
            let (gz, summary) = write_bundle_from(&mut source, tree.manifest, archive, gz)?;
            Ok((gz.finish().map_err(failed)?, summary))
        }
    }
}

/// An archive written next to its place, not yet synced nor renamed.
struct Unsynced {
    partial: tempfile::NamedTempFile,
    file: File,
    info: ArchiveInfo,
    replace: bool,
}

impl Unsynced {
    /// Syncs it, renames it into place, writes its checksum file.
    fn commit(self) -> Result<ArchiveInfo, OutputError> {
        let path = &self.info.path;
        self.file.sync_all().map_err(io_error(path))?;
        replace_file(self.partial, path, self.replace)?;
        write_checksum_file(path, &self.info.sha256)?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
        Ok(self.info)
    }
}

fn write_archive(
    tree: Tree<'_>,
    path: &Path,
    archive: &ArchiveOptions,
    options: &OutputOptions,
) -> Result<Unsynced, OutputError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempfile_in(parent)
        .map_err(io_error(parent))?;
    let file = partial.reopen().map_err(io_error(partial.path()))?;
    // Compressed blocks are larger and go straight to the file.
    let hashing = HashingWriter::new(BufWriter::with_capacity(64 << 10, file));
    let (hashing, summary) = match options.format {
        Format::Ipk => {
            let control = options.ipk.as_ref().ok_or(OutputError::MissingIpkControl)?;
            // The data member's size must be known first: stage the tar.gz.
            let mut data = tempfile::tempfile_in(parent).map_err(io_error(parent))?;
            let (data_out, summary) =
                write_compressed(tree, Format::TarGz, archive, options, BufWriter::new(&mut data))?;
            data_out.into_inner().map_err(|e| io_error(parent)(e.into_error()))?;
            let size = data.stream_position().map_err(io_error(parent))?;
            data.rewind().map_err(io_error(parent))?;
            (write_ipk(control, &mut data, size, tree.epoch, hashing)?, summary)
        }
        format => write_compressed(tree, format, archive, options, hashing)?,
    };
    let (buffered, sha256, size) = hashing.finish();
    let file = buffered.into_inner().map_err(|e| io_error(path)(e.into_error()))?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_error(path))?;
    Ok(Unsynced {
        partial,
        file,
        info: ArchiveInfo {
            path: path.to_path_buf(),
            sha256,
            size,
            summary,
        },
        replace: options.replace,
    })
}

fn replace_file(partial: tempfile::NamedTempFile, path: &Path, replace: bool) -> Result<(), OutputError> {
    let result = if replace {
        partial.persist(path)
    } else {
        partial.persist_noclobber(path)
    };
    result.map(drop).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            OutputError::Exists(path.to_path_buf())
        } else {
            io_error(path)(e.error)
        }
    })
}

/// `ARCHIVE.sha256` in `sha256sum -c` format.
fn write_checksum_file(archive: &Path, sha256: &Sha256Digest) -> Result<(), OutputError> {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    let line = format!("{}  {}\n", sha256.hex(), name.to_string_lossy());
    name.push(".sha256");
    let path = archive.with_file_name(name);
    write_file_atomic(&path, line.as_bytes(), 0o644).map_err(io_error(&path))
}

fn sync_dir(dir: &Path) -> Result<(), OutputError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// Moves the staged bundle to `output`, replacing an old one only after the
/// new one is complete.
fn place_dir<R: Rootfs>(bundle: Bundle<R>, output: &Path, replace: bool) -> Result<(), OutputError> {
    // Everything on disk before the rename makes it visible.
    RootDir::open(&bundle.path().join(ROOTFS_DIR), Symlinks::FollowInRoot)
        .and_then(|rootfs| rootfs.sync())
        .map_err(BundleError::from)?;
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let old = if fs::symlink_metadata(output).is_ok() {
        if !replace {
            return Err(OutputError::Exists(output.to_path_buf()));
        }
        let name = output.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let aside = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(parent)
            .map_err(io_error(parent))?
            .keep();
        let old = aside.join("old");
        fs::rename(output, &old).map_err(io_error(output))?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = fs::rename(bundle.path(), output) {
        if let Some(aside) = &old {
            let _ = fs::rename(aside.join("old"), output);
            let _ = fs::remove_dir(aside);
        }
        if e.kind() == io::ErrorKind::CrossesDevices {
            return Err(OutputError::WorkDirElsewhere(output.to_path_buf()));
        }
        return Err(io_error(output)(e));
    }
    bundle.placed();
    sync_dir(parent)?;
    if let Some(aside) = old {
        bundlegen_protocol::root::remove_tree(&aside).map_err(BundleError::from)?;
    }
    Ok(())
}
