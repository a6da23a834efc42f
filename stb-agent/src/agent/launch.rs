//! Starting and stopping apps through [`super::Containers`] (Dobby), and
//! developer pushes (install as `dev`, or a package as its own version,
//! then launch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Agent, Event, InstallError, InstallRequest, LaunchError, Source, VersionError, check_app};
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
        let package = self.is_package(app, &version);
        let bundle = if package {
            let started = std::time::Instant::now();
            let bundle = self
                .prepare_instance(app, &version)
                .await
                .map_err(|source| LaunchError::Instance {
                    app: app.to_string(),
                    version: version.clone(),
                    source,
                })?;
            tracing::info!(app, version, "instance assembled in {:?}", started.elapsed());
            bundle
        } else {
            self.store.bundle_dir(app, &version)
        };
        let bundle = std::fs::canonicalize(&bundle).map_err(io(&bundle))?;
        tracing::info!(app, version, bundle = %bundle.display(), "launching");
        let started = self.containers.start(app, &bundle).await;
        if package && !matches!(started, Ok(descriptor) if descriptor >= 0) {
            self.tear_down_instance(app).await;
        }
        let descriptor = started?;
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

    /// Installs a file pushed by a developer as version `dev` (a package
    /// as the version it says), waiting for the result; optionally
    /// launches it (a running one is stopped first). Returns the version
    /// and Dobby's descriptor.
    pub async fn install_pushed(
        self: &Arc<Self>,
        app: &str,
        archive: PathBuf,
        launch: bool,
    ) -> Result<(String, Option<i32>), LaunchError> {
        let version = self.pushed_version(&archive).await?;
        if launch && self.is_running(app).await {
            self.stop(app, false).await?;
        }
        let (_, result) = self
            .start_install(InstallRequest {
                app: app.to_string(),
                version: version.clone(),
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
            // Subscribed first: a container that dies at once is not missed.
            let mut events = self.subscribe();
            let descriptor = self.launch(app, &version).await?;
            if let Some(status) = stopped_within(&mut events, app, LAUNCH_WATCH).await {
                return Err(LaunchError::Exited {
                    app: app.to_string(),
                    status: describe_wait_status(status),
                    log: self.first_log_lines(app, &version),
                });
            }
            return Ok((version, Some(descriptor)));
        }
        Ok((version, None))
    }

    /// `dev` for a bundle; a package's own version (what depends on it
    /// asks for versions).
    async fn pushed_version(&self, archive: &Path) -> Result<String, LaunchError> {
        let path = archive.to_path_buf();
        let identity = self
            .blocking(move |_| {
                super::install::package::is_package(&path).then(|| super::install::package::package_identity(&path))
            })
            .await;
        match identity {
            None => Ok("dev".into()),
            Some(Ok((_, version))) => Ok(version),
            Some(Err(source)) => Err(InstallError::Package {
                archive: archive.to_path_buf(),
                source,
            }
            .into()),
        }
    }

    /// The first lines of the log the bundle's logging plugin writes to a
    /// file (`rdkPlugins.logging.data.fileOptions.path`), if it does.
    fn first_log_lines(&self, app: &str, version: &str) -> Vec<String> {
        let config = if self.is_package(app, version) {
            crate::ralf::instance::Instance::of(&self.config.packages.runtime_dir, app).config_path()
        } else {
            self.store.bundle_dir(app, version).join("config.json")
        };
        let Some(path) = std::fs::read(&config)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|config| {
                config["rdkPlugins"]["logging"]["data"]["fileOptions"]["path"]
                    .as_str()
                    .map(PathBuf::from)
            })
        else {
            return Vec::new();
        };
        first_lines(&path, LOG_LINES)
    }
}

/// How long a pushed app must keep running for its launch to count.
const LAUNCH_WATCH: Duration = Duration::from_secs(2);

/// Lines of the app's log an error carries.
const LOG_LINES: usize = 10;

/// The status of `app` if it stops within `window`.
async fn stopped_within(events: &mut broadcast::Receiver<Event>, app: &str, window: Duration) -> Option<i32> {
    let stopped = async {
        loop {
            match events.recv().await {
                Ok(Event::Stopped { app: stopped, status }) if stopped == app => return Some(status),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(window, stopped).await.ok().flatten()
}

/// A wait status as Dobby reports it: "exited with code 3", "killed by signal 9".
fn describe_wait_status(status: i32) -> String {
    use std::os::unix::process::ExitStatusExt;
    let status = std::process::ExitStatus::from_raw(status);
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("stopped ({status})"),
    }
}

/// The first `count` lines of a text file (at most 8 KiB read).
fn first_lines(path: &Path, count: usize) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::Read::take(file, 8 << 10), &mut text);
    text.lines().take(count).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_and_log_lines_are_told_plainly() {
        assert_eq!(describe_wait_status(3 << 8), "exited with code 3");
        assert_eq!(describe_wait_status(9), "killed by signal 9");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let text: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let lines = first_lines(&log, LOG_LINES);
        assert_eq!(lines.len(), LOG_LINES);
        assert_eq!(lines[0], "line 1");
        assert!(first_lines(&dir.path().join("missing"), LOG_LINES).is_empty());
    }
}
