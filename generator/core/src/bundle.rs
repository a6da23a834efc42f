//! A bundle under construction: a staging directory next to its final place,
//! holding `rootfs/`, plus the config and ownership manifest that go with it.
//!
//! The staging directory is removed if the bundle is dropped, so a failure at
//! any step leaves nothing half-written behind. The rootfs is a directory in
//! it, or, when an archive is written, a [`MemoryRootfs`] spooling its file
//! contents to memory and, past 16 MiB, to a file there.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bundlegen_protocol::archive::{CONFIG_FILE, ROOTFS_DIR};
use bundlegen_protocol::config::app::AppMetadata;
use bundlegen_protocol::config::{ConfigError, Parsed, parse};
use bundlegen_protocol::idmap::IdMapping;
use bundlegen_protocol::manifest::Manifest;
use bundlegen_protocol::root::{MissingDirs, RootDir, RootError, Symlinks};
use bundlegen_protocol::runtime::{Mount, RuntimeConfig, User};

use crate::image::Image;
use crate::rootfs::{MemoryRootfs, Rootfs};
use crate::runtime_config::{self, RuntimeConfigError};
use crate::unpack::{UnpackError, UnpackOptions, UnpackStats, unpack_image};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Unpack(Box<UnpackError>),
    #[error(transparent)]
    RuntimeConfig(#[from] RuntimeConfigError),
}

impl From<UnpackError> for BundleError {
    fn from(error: UnpackError) -> Self {
        BundleError::Unpack(Box::new(error))
    }
}

/// Where BundleGen images keep their metadata.
pub const IMAGE_METADATA: &str = "appmetadata.json";

/// Where a bundle goes, and where it is assembled.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The bundle directory's final path (archives go next to it).
    pub output: &'a Path,
    /// Where to assemble it instead of next to `output`.
    pub work_dir: Option<&'a Path>,
}

/// The stages take `&mut Bundle<dyn Rootfs>`, whichever rootfs it has.
pub struct Bundle<R: Rootfs + ?Sized = RootDir> {
    staging: PathBuf,
    placed: bool,
    pub config: RuntimeConfig,
    pub manifest: Manifest,
    /// Archive entries' mtimes are clamped to this (seconds since the epoch).
    pub epoch: i64,
    /// Last, so that a bundle of any rootfs is also a `Bundle<dyn Rootfs>`.
    pub rootfs: R,
}

/// The mtime clamp: `SOURCE_DATE_EPOCH` if set, else the image's creation
/// time, else 0.
pub fn reproducible_epoch(image: &Image) -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or_else(|| image.config.created().as_deref().and_then(crate::time::unix_seconds))
        .unwrap_or(0)
        .max(0)
}

impl Bundle {
    /// Creates an empty bundle for `place.output`, staged in `place.work_dir`,
    /// or next to the output (same filesystem, so placing it is a rename).
    pub fn create(place: &Place<'_>) -> Result<Bundle, BundleError> {
        Bundle::staged(place, |rootfs, _| Ok(RootDir::open(rootfs, Symlinks::FollowInRoot)?))
    }

    /// Unpacks `image` into a new bundle (see [`Bundle::create`]) and derives
    /// its base config.
    pub fn from_image(
        image: &Image,
        place: &Place<'_>,
        options: &UnpackOptions,
        uid_map: &[IdMapping],
        gid_map: &[IdMapping],
        progress: impl FnMut(usize, usize, &UnpackStats),
    ) -> Result<(Bundle, UnpackStats), BundleError> {
        Bundle::create(place)?.unpack(image, options, uid_map, gid_map, progress)
    }
}

impl Bundle<MemoryRootfs> {
    /// [`Bundle::create`] with the rootfs in memory, for an archive: file
    /// contents go to memory and then a spool file in the staging directory,
    /// and a tree of files is written only if the directory is kept (see
    /// [`crate::output`]).
    pub fn create_in_memory(place: &Place<'_>) -> Result<Bundle<MemoryRootfs>, BundleError> {
        Bundle::staged(place, |rootfs, staging| {
            MemoryRootfs::new(rootfs, staging).map_err(|source| BundleError::Io {
                path: staging.to_path_buf(),
                source,
            })
        })
    }
}

impl<R: Rootfs> Bundle<R> {
    /// Makes the staging directory with an empty `rootfs/` in it (the
    /// archive lists it, whichever rootfs holds the tree) and opens the
    /// rootfs with `open(rootfs path, staging path)`.
    fn staged(
        place: &Place<'_>,
        open: impl FnOnce(&Path, &Path) -> Result<R, BundleError>,
    ) -> Result<Bundle<R>, BundleError> {
        let output = place.output;
        let next_to_output = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // `bundlegen generate IMAGE out/app` works without `out/`, as with BundleGen (umoci makes it).
        std::fs::create_dir_all(next_to_output).map_err(|source| BundleError::Io {
            path: next_to_output.to_path_buf(),
            source,
        })?;
        let parent = place.work_dir.unwrap_or(next_to_output);
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // 0700 as umoci makes it: the rootfs may hold setuid programs.
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.bundlegen-"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|source| BundleError::Io {
                path: parent.to_path_buf(),
                source,
            })?
            .keep();
        let rootfs_path = staging.join(ROOTFS_DIR);
        let rootfs = std::fs::create_dir(&rootfs_path)
            .map_err(|source| BundleError::Io {
                path: rootfs_path.clone(),
                source,
            })
            .and_then(|()| open(&rootfs_path, &staging));
        let rootfs = match rootfs {
            Ok(rootfs) => rootfs,
            Err(e) => {
                let _ = bundlegen_protocol::root::remove_tree(&staging);
                return Err(e);
            }
        };
        // From here on, Drop removes the staging directory (it may hold
        // read-only directories, which tempfile could not remove).
        Ok(Bundle {
            staging,
            placed: false,
            config: RuntimeConfig::default(),
            manifest: Manifest::default(),
            epoch: 0,
            rootfs,
        })
    }

    /// Unpacks `image` into this (empty) bundle and derives its base config.
    pub fn unpack(
        mut self,
        image: &Image,
        options: &UnpackOptions,
        uid_map: &[IdMapping],
        gid_map: &[IdMapping],
        progress: impl FnMut(usize, usize, &UnpackStats),
    ) -> Result<(Bundle<R>, UnpackStats), BundleError> {
        let (manifest, stats) = unpack_image(image, &mut self.rootfs, options, progress)?;
        self.manifest = manifest;
        self.config = runtime_config::from_image(&image.config, &mut self.rootfs, uid_map, gid_map)?;
        self.epoch = reproducible_epoch(image);
        Ok((self, stats))
    }

    /// Marks the staging directory as moved into place: it is not removed.
    pub(crate) fn placed(mut self) {
        self.placed = true;
    }
}

impl<R: Rootfs + ?Sized> Bundle<R> {
    /// The staging directory (holds `rootfs/`, and `config.json` once written).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The image's `/appmetadata.json`, parsed, or `None` if it has none.
    /// It is taken out of the rootfs, with the file a symlink there leads to.
    pub fn take_image_metadata<E: From<ConfigError> + From<BundleError>>(
        &mut self,
    ) -> Result<Option<Parsed<AppMetadata>>, E> {
        let in_image = Path::new(IMAGE_METADATA);
        let Ok((file, real)) = self.rootfs.open_file_follow(in_image) else {
            return Ok(None);
        };
        let mut text = String::new();
        file.take(8 << 20)
            .read_to_string(&mut text)
            .map_err(|source| ConfigError::Read {
                file: PathBuf::from("/").join(in_image),
                source,
            })?;
        let parsed = parse(&text, &Path::new("image:/").join(in_image))?;
        for path in [in_image.to_path_buf(), real] {
            self.rootfs.remove_all(&path).map_err(BundleError::from)?;
            self.manifest.remove_tree(&path);
        }
        Ok(Some(parsed))
    }

    /// The staging directory, the manifest and the rootfs, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&Path, &Manifest, &mut R) {
        (&self.staging, &self.manifest, &mut self.rootfs)
    }

    /// Writes `config.json`.
    pub fn write_config(&self) -> Result<(), BundleError> {
        let path = self.path().join(CONFIG_FILE);
        let io_error = |source| BundleError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::create(&path).map_err(io_error)?;
        file.write_all(self.config.to_json().as_bytes()).map_err(io_error)?;
        Ok(())
    }

    /// Adds a mount unless the same one is there.
    pub fn add_mount(&mut self, mount: Mount) {
        if !self.config.mounts.contains(&mount) {
            self.config.mounts.push(mount);
        }
    }

    /// Makes sure a mount point exists in the rootfs (`-r`): a directory, or
    /// an empty file for file mounts. Never replaces what is there.
    pub fn create_mount_point(&mut self, destination: &str, directory: bool) -> Result<(), RootError> {
        let path = Path::new(destination);
        if self.rootfs.kind(path)?.is_some() {
            return Ok(());
        }
        if directory {
            self.rootfs.mkdir(path, 0o755, MissingDirs::Create)
        } else {
            self.rootfs.write_file(path, &mut std::io::empty(), None).map(drop)
        }
    }

    /// The value of `name` in the app's process environment (`NAME=value`;
    /// the last entry wins).
    pub fn env_value(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        self.config
            .process
            .as_ref()?
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(&prefix))
    }

    /// The user the app's process runs as (root without a process).
    pub fn process_user(&self) -> User {
        self.config.process.as_ref().map(|p| p.user.clone()).unwrap_or_default()
    }
}

impl<R: Rootfs + ?Sized> Drop for Bundle<R> {
    fn drop(&mut self) {
        if !self.placed
            && let Err(e) = bundlegen_protocol::root::remove_tree(&self.staging)
        {
            tracing::warn!("could not remove the staging directory: {e}");
        }
    }
}
