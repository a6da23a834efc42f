//! A bundle under construction: a staging directory next to its final place,
//! holding `rootfs/`, plus the config and ownership manifest that go with it.
//!
//! The staging directory is removed if the bundle is dropped, so a failure at
//! any step leaves nothing half-written behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bundlegen_protocol::archive::{CONFIG_FILE, ROOTFS_DIR};
use bundlegen_protocol::idmap::IdMapping;
use bundlegen_protocol::manifest::Manifest;
use bundlegen_protocol::root::{MissingDirs, RootDir, RootError, Symlinks};
use bundlegen_protocol::runtime::{Mount, RuntimeConfig, User};

use crate::image::Image;
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

/// Where a bundle goes, and where it is assembled.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The bundle directory's final path (archives go next to it).
    pub output: &'a Path,
    /// Where to assemble it instead of next to `output`.
    pub work_dir: Option<&'a Path>,
}

pub struct Bundle {
    staging: PathBuf,
    placed: bool,
    pub rootfs: RootDir,
    pub config: RuntimeConfig,
    pub manifest: Manifest,
    /// Archive entries' mtimes are clamped to this (seconds since the epoch).
    pub epoch: i64,
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
        let rootfs = match RootDir::create(&staging.join(ROOTFS_DIR), Symlinks::FollowInRoot) {
            Ok(rootfs) => rootfs,
            Err(e) => {
                let _ = bundlegen_protocol::root::remove_tree(&staging);
                return Err(e.into());
            }
        };
        // From here on, Drop removes the staging directory (it may hold
        // read-only directories, which tempfile could not remove).
        Ok(Bundle {
            staging,
            placed: false,
            rootfs,
            config: RuntimeConfig::default(),
            manifest: Manifest::default(),
            epoch: 0,
        })
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
        let mut bundle = Bundle::create(place)?;
        let (manifest, stats) = unpack_image(image, &mut bundle.rootfs, options, progress)?;
        bundle.manifest = manifest;
        bundle.config = runtime_config::from_image(&image.config, &mut bundle.rootfs, uid_map, gid_map)?;
        bundle.epoch = reproducible_epoch(image);
        Ok((bundle, stats))
    }

    /// The staging directory (holds `rootfs/`, and `config.json` once written).
    pub fn path(&self) -> &Path {
        &self.staging
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
        if self.rootfs.lstat(path)?.is_some() {
            return Ok(());
        }
        if directory {
            self.rootfs.mkdir(path, 0o755, MissingDirs::Create)?;
        } else {
            self.rootfs.create_file(path, 0o644, MissingDirs::Create)?;
        }
        Ok(())
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

    /// Marks the staging directory as moved into place: it is not removed.
    pub(crate) fn placed(mut self) {
        self.placed = true;
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if !self.placed
            && let Err(e) = bundlegen_protocol::root::remove_tree(&self.staging)
        {
            tracing::warn!("could not remove the staging directory: {e}");
        }
    }
}
