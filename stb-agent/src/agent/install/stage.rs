//! Step 4: the unpack into place, and what puts back the previous state if
//! it fails.

use std::path::{Path, PathBuf};

use bundlegen_protocol::archive::{ReadOptions, unpack_bundle};

use crate::agent::{InstallError, random_handle};
use crate::store::{AppRecord, Store, StoreError, VersionRecord, io, remove_tree};

/// An unpack into place, with what puts back the previous state if it fails.
pub(super) struct Staging {
    pub app: String,
    pub version: String,
    pub archive: PathBuf,
    pub options: ReadOptions,
}

impl Staging {
    pub fn run(self, store: &Store, record: AppRecord, entry: VersionRecord) -> Result<PathBuf, InstallError> {
        let bundle_dir = store.bundle_dir(&self.app, &self.version);
        // A reinstall: the old copy goes aside until the new one is in place.
        let aside = if bundle_dir.exists() {
            let aside = bundle_dir.with_file_name(format!(".{}.old-{}", self.version, random_handle("r")));
            std::fs::rename(&bundle_dir, &aside).map_err(io(&bundle_dir))?;
            Some(aside)
        } else {
            None
        };
        let before = store.app(&self.app);
        let mut installing = before.clone().unwrap_or(record);
        installing.versions.insert(self.version.clone(), entry);
        store.save_app(&installing)?;
        match self.unpack(&bundle_dir) {
            Ok(()) => {
                if let Some(aside) = aside {
                    remove_tree(&aside)?;
                }
                Ok(bundle_dir)
            }
            Err(cause) => match self.roll_back(store, &bundle_dir, aside, before.unwrap_or(installing)) {
                Ok(()) => Err(cause),
                Err(source) => Err(InstallError::RollbackFailed {
                    cause: Box::new(cause),
                    source,
                }),
            },
        }
    }

    fn unpack(&self, bundle_dir: &Path) -> Result<(), InstallError> {
        let apps_dir = bundle_dir.parent().expect("apps/<app>");
        std::fs::create_dir_all(apps_dir).map_err(io(apps_dir))?;
        let file = std::fs::File::open(&self.archive).map_err(io(&self.archive))?;
        let report = unpack_bundle(std::io::BufReader::new(file), bundle_dir, &self.options).map_err(|source| {
            InstallError::BadArchive {
                archive: self.archive.clone(),
                source,
            }
        })?;
        if !bundle_dir.join("config.json").is_file() {
            remove_tree(bundle_dir)?;
            return Err(InstallError::NoConfig {
                archive: self.archive.clone(),
            });
        }
        // Dobby writes into the bundle and needs to enter it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bundle_dir, std::fs::Permissions::from_mode(0o755)).map_err(io(bundle_dir))?;
        if !report.skipped_nodes.is_empty() || !report.cleared_setuid.is_empty() {
            tracing::warn!(
                "{}: {} device nodes skipped, {} setuid bits cleared",
                bundle_dir.display(),
                report.skipped_nodes.len(),
                report.cleared_setuid.len()
            );
        }
        Ok(())
    }

    /// Back to how it was: the old copy (on a reinstall) and its record.
    fn roll_back(
        &self,
        store: &Store,
        bundle_dir: &Path,
        aside: Option<PathBuf>,
        mut restored: AppRecord,
    ) -> Result<(), StoreError> {
        let reinstall = aside.is_some();
        if let Some(aside) = aside {
            std::fs::rename(&aside, bundle_dir).map_err(io(&aside))?;
        }
        if !reinstall {
            restored.versions.remove(&self.version);
        }
        store.save_app(&restored)?;
        if restored.versions.is_empty() {
            let _ = std::fs::remove_dir(store.app_dir(&self.app));
        }
        Ok(())
    }
}
