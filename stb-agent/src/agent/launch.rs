//! Starting and stopping apps through [`super::Containers`] (Dobby), and
//! developer pushes (install as `dev`, then launch).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Agent, InstallError, InstallRequest, LaunchError, Source, VersionError, check_app};
use crate::store::io;

impl Agent {
    pub(super) async fn is_running(&self, app: &str) -> bool {
        self.containers
            .running()
            .await
            .is_ok_and(|running| running.iter().any(|(_, id)| id == app))
    }

    /// Starts an app's version (default: its current one) through Dobby.
    pub async fn launch(&self, app: &str, version: &str) -> Result<i32, LaunchError> {
        check_app(app).map_err(VersionError::from)?;
        let not_installed = || VersionError::NotInstalled {
            app: app.to_string(),
            version: version.to_string(),
        };
        let record = self.store.app(app).ok_or_else(not_installed)?;
        let version = match version {
            "" => record.current.clone().ok_or_else(not_installed)?,
            version => version.to_string(),
        };
        self.installed(app, &version)?;
        if self.is_running(app).await {
            return Err(LaunchError::Running { app: app.to_string() });
        }
        let bundle = self.store.bundle_dir(app, &version);
        let bundle = std::fs::canonicalize(&bundle).map_err(io(&bundle))?;
        tracing::info!(app, version, bundle = %bundle.display(), "launching");
        let descriptor = self.containers.start(app, &bundle).await?;
        if descriptor < 0 {
            return Err(LaunchError::Refused {
                app: app.to_string(),
                version,
            });
        }
        Ok(descriptor)
    }

    pub async fn stop(&self, app: &str, force: bool) -> Result<(), LaunchError> {
        if self.containers.stop(app, force).await? {
            Ok(())
        } else {
            Err(LaunchError::NotRunning { app: app.to_string() })
        }
    }

    /// Installs a file pushed by a developer as version `dev`, waiting for
    /// the result; optionally launches it (a running one is stopped first).
    pub async fn install_pushed(
        self: &Arc<Self>,
        app: &str,
        archive: PathBuf,
        launch: bool,
    ) -> Result<Option<i32>, LaunchError> {
        if launch && self.is_running(app).await {
            self.stop(app, false).await?;
        }
        let (_, result) = self
            .start_install(InstallRequest {
                app: app.to_string(),
                version: "dev".into(),
                source: Source::File(archive),
                sha256: None,
                signature: None,
                format: None,
                reinstall: true,
            })
            .await?;
        // No result means the install's task died (a panic).
        let dropped = || Arc::new(InstallError::Cancelled("the install ended without a result").into());
        result
            .await
            .unwrap_or_else(|_| Err(dropped()))
            .map_err(LaunchError::Install)?;
        if launch {
            // Wait for a stopped container to be gone before starting again.
            for _ in 0..50 {
                if !self.is_running(app).await {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return Ok(Some(self.launch(app, "dev").await?));
        }
        Ok(None)
    }
}
