//! Installed versions: listing, uninstall, locks, metadata and storage.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Agent, InvalidParams, VersionError, check_app, check_version, random_handle};
use crate::store::free_bytes;
use crate::store::{LockRecord, Store, StoreError, VersionRecord, VersionState, io, remove_tree};

/// An installed version, for `List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledVersion {
    pub app: String,
    pub version: String,
    /// The version `Launch` starts.
    pub current: bool,
    pub sha256: String,
    pub disk_size: u64,
    pub locks: u32,
}

/// Removes a version's bundle and record (its data stays). Out of the way
/// first, so a crash leaves either the bundle or nothing.
pub(super) fn remove_version(store: &Store, app: &str, version: &str) -> Result<(), StoreError> {
    let dir = store.bundle_dir(app, version);
    let aside = dir.with_file_name(format!(".{version}.removing-{}", random_handle("r")));
    if dir.exists() {
        std::fs::rename(&dir, &aside).map_err(io(&dir))?;
    }
    let mut remaining = 0;
    if let Some(mut record) = store.app(app) {
        record.versions.remove(version);
        if record.current.as_deref() == Some(version) {
            record.current = record.versions.keys().next_back().cloned();
        }
        store.save_app(&record)?;
        remaining = record.versions.len();
    }
    if aside.exists() {
        remove_tree(&aside)?;
    }
    if remaining == 0 {
        // Fails harmlessly if something is left.
        let _ = std::fs::remove_dir(store.app_dir(app));
    }
    Ok(())
}

impl Agent {
    /// Installed versions, of every app or of `app`.
    pub fn installed_versions(&self, app: Option<&str>) -> Vec<InstalledVersion> {
        self.store
            .apps()
            .into_iter()
            .filter(|r| app.is_none_or(|app| r.app == app))
            .flat_map(|r| {
                r.versions
                    .into_iter()
                    .filter(|(_, v)| v.state == VersionState::Installed)
                    .map(|(version, v)| InstalledVersion {
                        locks: self.store.locks_of(&r.app, &version).len() as u32,
                        current: r.current.as_deref() == Some(&version),
                        app: r.app.clone(),
                        version,
                        sha256: v.sha256,
                        disk_size: v.disk_size,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Queues an uninstall: `full` also deletes the app's data once no
    /// version is left; `upgrade` keeps it.
    pub fn uninstall(self: &Arc<Self>, app: &str, version: &str, mode: &str) -> Result<String, VersionError> {
        check_app(app)?;
        check_version(version)?;
        let full = match mode {
            "full" | "" => true,
            "upgrade" => false,
            other => return Err(InvalidParams(format!("mode {other:?}: full or upgrade")).into()),
        };
        // Refused at once when it is clear already (checked again when it runs).
        self.uninstallable(app, version)?;
        let (app, version) = (app.to_string(), version.to_string());
        let (handle, _) = self.start_operation(
            "Uninstalling",
            &app.clone(),
            &version.clone(),
            move |agent, handle, _cancel| {
                Box::pin(async move {
                    let record = agent.uninstallable(&app, &version)?;
                    if record.current.as_deref() == Some(&version) && agent.is_running(&app).await {
                        return Err(VersionError::Running { app }.into());
                    }
                    if agent.is_package(&app, &version) && !agent.is_running(&app).await {
                        // What a stop the agent missed left behind.
                        agent.tear_down_instance(&app).await;
                    }
                    agent.progress(&handle, 50, "removing");
                    let (removed_app, removed_version) = (app.clone(), version.clone());
                    agent
                        .blocking(move |store| -> Result<(), StoreError> {
                            remove_version(store, &removed_app, &removed_version)?;
                            let data = store.data_dir(&removed_app);
                            if full && store.app(&removed_app).is_none() && data.exists() {
                                remove_tree(&data)?;
                            }
                            Ok(())
                        })
                        .await
                        .map_err(VersionError::from)?;
                    Ok(format!("{app} {version} removed"))
                })
            },
        );
        Ok(handle)
    }

    /// The app's record, if the version is installed and not locked.
    fn uninstallable(&self, app: &str, version: &str) -> Result<crate::store::AppRecord, VersionError> {
        let record = self
            .store
            .app(app)
            .filter(|r| r.versions.contains_key(version))
            .ok_or_else(|| VersionError::NotInstalled {
                app: app.to_string(),
                version: version.to_string(),
            })?;
        if !self.store.locks_of(app, version).is_empty() {
            return Err(VersionError::Locked {
                app: app.to_string(),
                version: version.to_string(),
            });
        }
        let dependants = self.store.dependants(app, version);
        if !dependants.is_empty() {
            return Err(VersionError::Dependants {
                app: app.to_string(),
                version: version.to_string(),
                dependants,
            });
        }
        Ok(record)
    }

    /// The record of an installed (not installing) version.
    pub(super) fn installed(&self, app: &str, version: &str) -> Result<VersionRecord, VersionError> {
        self.store
            .app(app)
            .and_then(|r| r.versions.get(version).cloned())
            .filter(|v| v.state == VersionState::Installed)
            .ok_or_else(|| VersionError::NotInstalled {
                app: app.to_string(),
                version: version.to_string(),
            })
    }

    pub fn metadata(&self, app: &str, version: &str) -> Result<BTreeMap<String, String>, VersionError> {
        Ok(self.installed(app, version)?.metadata)
    }

    /// Sets (`Some`) or clears (`None`; an empty key clears all) a metadata key.
    pub async fn set_metadata(
        &self,
        app: &str,
        version: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), VersionError> {
        let app_lock = self.app_lock(app);
        let _same_app = app_lock.lock().await;
        self.installed(app, version)?;
        if value.is_some() && key.is_empty() {
            return Err(InvalidParams("an empty metadata key".into()).into());
        }
        let not_installed = || VersionError::NotInstalled {
            app: app.to_string(),
            version: version.to_string(),
        };
        let mut record = self.store.app(app).ok_or_else(not_installed)?;
        let entry = record.versions.get_mut(version).ok_or_else(not_installed)?;
        match (key, value) {
            (key, Some(value)) => {
                entry.metadata.insert(key.to_string(), value.to_string());
            }
            ("", None) => entry.metadata.clear(),
            (key, None) => {
                entry.metadata.remove(key);
            }
        }
        Ok(self.blocking(move |store| store.save_app(&record)).await?)
    }

    /// (used, quota, free) bytes.
    pub fn storage(&self) -> (u64, u64, u64) {
        (
            self.store.used(),
            self.config.quota.bytes(),
            free_bytes(self.store.root()),
        )
    }

    pub async fn lock(&self, app: &str, version: &str, reason: &str, owner: &str) -> Result<String, VersionError> {
        self.installed(app, version)?;
        let handle = random_handle("lock");
        let lock = LockRecord {
            handle: handle.clone(),
            app: app.to_string(),
            version: version.to_string(),
            reason: reason.to_string(),
            owner: owner.to_string(),
        };
        self.blocking(move |store| store.add_lock(lock)).await?;
        Ok(handle)
    }

    pub async fn unlock(&self, handle: &str) -> Result<(), VersionError> {
        let lock = handle.to_string();
        if self.blocking(move |store| store.remove_lock(&lock)).await? {
            Ok(())
        } else {
            Err(VersionError::NoSuchLock(handle.to_string()))
        }
    }

    pub fn lock_info(&self, app: &str, version: &str) -> Result<Vec<LockRecord>, VersionError> {
        self.installed(app, version)?;
        Ok(self.store.locks_of(app, version))
    }
}
