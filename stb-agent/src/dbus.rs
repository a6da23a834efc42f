//! The agent's D-Bus API: bus name `org.rdk.dac.BundleAgent`, object
//! `/org/rdk/dac/BundleAgent`, interface `org.rdk.dac.BundleAgent1`.
//! Errors are D-Bus errors `org.rdk.dac.BundleAgent1.Error.<Name>` with a
//! message; long operations return a handle and report through the
//! `OperationStatus` and `Progress` signals.

use std::collections::HashMap;
use std::sync::Arc;

use zbus::object_server::SignalEmitter;
use zbus::{OwnedVariant, interface};

use crate::agent::{
    Agent, ErrorKind, Event, HandleError, InstallError, InstallRequest, InvalidParams, LaunchError, OperationError,
    PackageInfo, Source, VersionError,
};

pub const BUS_NAME: &str = "org.rdk.dac.BundleAgent";
pub const OBJECT_PATH: &str = "/org/rdk/dac/BundleAgent";

/// A lock count and each lock's (handle, reason, owner).
pub type LockInfo = (u32, Vec<(String, String, String)>);

/// An installed package in `ListPackages`: (app, version, type, content,
/// dependencies {id: version}, dependants ["app version"], signer, verity).
pub type PackageRow = (
    String,
    String,
    String,
    String,
    HashMap<String, String>,
    Vec<String>,
    String,
    String,
);

fn package_row(info: PackageInfo) -> PackageRow {
    (
        info.app,
        info.version,
        info.package_type,
        info.content,
        info.dependencies.into_iter().collect(),
        info.dependants,
        info.signer,
        info.verity,
    )
}

pub struct BundleAgent {
    pub agent: Arc<Agent>,
}

/// The agent's errors on D-Bus: `org.rdk.dac.BundleAgent1.Error.<kind>`
/// with the whole story as the message.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.rdk.dac.BundleAgent1.Error")]
pub enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    WrongParams(String),
    AlreadyInstalled(String),
    NotInstalled(String),
    WrongHandle(String),
    AppLocked(String),
    AppRunning(String),
    NotRunning(String),
    Download(String),
    Integrity(String),
    Signature(String),
    NoSpace(String),
    QuotaExceeded(String),
    BadArchive(String),
    Service(String),
    Dobby(String),
    Cancelled(String),
    Storage(String),
    Unsupported(String),
    Dependency(String),
}

impl AgentError {
    fn new(kind: ErrorKind, error: &(dyn std::error::Error + 'static)) -> AgentError {
        let message = bundlegen_protocol::error_chain(error);
        match kind {
            ErrorKind::WrongParams => AgentError::WrongParams(message),
            ErrorKind::AlreadyInstalled => AgentError::AlreadyInstalled(message),
            ErrorKind::NotInstalled => AgentError::NotInstalled(message),
            ErrorKind::WrongHandle => AgentError::WrongHandle(message),
            ErrorKind::AppLocked => AgentError::AppLocked(message),
            ErrorKind::AppRunning => AgentError::AppRunning(message),
            ErrorKind::NotRunning => AgentError::NotRunning(message),
            ErrorKind::Download => AgentError::Download(message),
            ErrorKind::Integrity => AgentError::Integrity(message),
            ErrorKind::Signature => AgentError::Signature(message),
            ErrorKind::NoSpace => AgentError::NoSpace(message),
            ErrorKind::QuotaExceeded => AgentError::QuotaExceeded(message),
            ErrorKind::BadArchive => AgentError::BadArchive(message),
            ErrorKind::Service => AgentError::Service(message),
            ErrorKind::Dobby => AgentError::Dobby(message),
            ErrorKind::Cancelled => AgentError::Cancelled(message),
            ErrorKind::Storage => AgentError::Storage(message),
            ErrorKind::Unsupported => AgentError::Unsupported(message),
            ErrorKind::Dependency => AgentError::Dependency(message),
        }
    }
}

/// `From` each of the agent's errors, by its kind.
macro_rules! from_agent_errors {
    ($($error:ty => |$e:ident| $kind:expr),* $(,)?) => {
        $(impl From<$error> for AgentError {
            fn from($e: $error) -> AgentError {
                AgentError::new($kind, &$e)
            }
        })*
    };
}

from_agent_errors! {
    InvalidParams => |e| ErrorKind::WrongParams,
    InstallError => |e| e.kind(),
    VersionError => |e| e.kind(),
    LaunchError => |e| e.kind(),
    HandleError => |e| e.kind(),
}

impl From<&OperationError> for AgentError {
    fn from(error: &OperationError) -> AgentError {
        AgentError::new(error.kind(), error)
    }
}

/// An ended operation's error as `GetProgress` and `OperationStatus` show
/// it: the D-Bus error's name and message.
fn describe(error: &OperationError) -> String {
    let error = AgentError::from(error);
    format!(
        "{}: {}",
        zbus::DBusError::name(&error),
        zbus::DBusError::description(&error).unwrap_or("")
    )
}

fn option_string(options: &HashMap<String, OwnedVariant>, key: &str) -> Result<Option<String>, AgentError> {
    match options.get(key) {
        None => Ok(None),
        Some(value) => String::try_from(value.try_clone().map_err(AgentError::ZBus)?)
            .map(Some)
            .map_err(|_| InvalidParams(format!("option {key} must be a string")).into()),
    }
}

fn option_bool(options: &HashMap<String, OwnedVariant>, key: &str) -> Result<bool, AgentError> {
    match options.get(key) {
        None => Ok(false),
        Some(value) => bool::try_from(value.try_clone().map_err(AgentError::ZBus)?)
            .map_err(|_| InvalidParams(format!("option {key} must be a boolean")).into()),
    }
}

const KNOWN_OPTIONS: &[&str] = &["signature", "format", "reinstall"];

/// A state-changing call's outcome, logged with what it was about, so the
/// journal says what was asked and why a refusal was made.
fn logged<T: std::fmt::Debug>(method: &str, subject: &str, result: Result<T, AgentError>) -> Result<T, AgentError> {
    match &result {
        Ok(value) => tracing::info!(method, subject, "accepted: {value:?}"),
        Err(error) => tracing::warn!(
            method,
            subject,
            "refused: {}: {}",
            zbus::DBusError::name(error),
            zbus::DBusError::description(error).unwrap_or("")
        ),
    }
    result
}

#[interface(name = "org.rdk.dac.BundleAgent1")]
impl BundleAgent {
    /// Installs `version` of `app` from `source` (an http(s) URL,
    /// "service" / "" for the generator service, or a RALF package's
    /// `docker://HOST/REPOSITORY:TAG|@sha256:DIGEST`). `sha256` (hex, may be
    /// empty) is checked before unpacking. Options: `signature` (s, base64),
    /// `format` (s), `reinstall` (b). Returns the operation's handle.
    async fn install(
        &self,
        app: &str,
        version: &str,
        source: &str,
        sha256: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<String, AgentError> {
        let result = async {
            if let Some(unknown) = options.keys().find(|k| !KNOWN_OPTIONS.contains(&k.as_str())) {
                return Err(InvalidParams(format!("unknown option {unknown:?}")).into());
            }
            Ok(self
                .agent
                .install(InstallRequest {
                    app: app.to_string(),
                    version: version.to_string(),
                    source: match source {
                        "" | "service" => Source::Service,
                        reference if reference.starts_with("docker://") => Source::Registry(reference.to_string()),
                        url => Source::Url(url.to_string()),
                    },
                    sha256: Some(sha256.to_ascii_lowercase()).filter(|s| !s.is_empty()),
                    signature: option_string(&options, "signature")?,
                    format: option_string(&options, "format")?,
                    reinstall: option_bool(&options, "reinstall")?,
                })
                .await?)
        }
        .await;
        logged("Install", &format!("{app} {version} from {source:?}"), result)
    }

    /// `mode` is `full` (data too, once no version is left) or `upgrade`
    /// (the app's data stays). Returns the operation's handle.
    async fn uninstall(&self, app: &str, version: &str, mode: &str) -> Result<String, AgentError> {
        let result = self.agent.uninstall(app, version, mode).map_err(AgentError::from);
        logged("Uninstall", &format!("{app} {version} ({mode})"), result)
    }

    /// Cancels an install while it downloads or verifies.
    fn cancel(&self, handle: &str) -> Result<(), AgentError> {
        logged("Cancel", handle, self.agent.cancel(handle).map_err(AgentError::from))
    }

    /// (status, percent, stage, error) of an operation.
    fn get_progress(&self, handle: &str) -> Result<(String, u32, String, String), AgentError> {
        let op = self.agent.operation(handle)?;
        Ok((
            op.status.as_str().to_string(),
            op.percent,
            op.stage,
            op.error.map(|e| describe(&e)).unwrap_or_default(),
        ))
    }

    /// Installed versions: (app, version, current, sha256, bytes, locks).
    fn list(&self, app: &str) -> Vec<(String, String, bool, String, u64, u32)> {
        self.agent
            .installed_versions(Some(app).filter(|a| !a.is_empty()))
            .into_iter()
            .map(|v| (v.app, v.version, v.current, v.sha256, v.disk_size, v.locks))
            .collect()
    }

    /// Installed RALF packages (all, or `app`'s): (app, version, type,
    /// content, dependencies, dependants, signer, verity).
    fn list_packages(&self, app: &str) -> Vec<PackageRow> {
        self.agent
            .installed_packages(Some(app).filter(|a| !a.is_empty()))
            .into_iter()
            .map(package_row)
            .collect()
    }

    /// An installed package: `type`, `version`, `content`, `dependencies`
    /// (a{ss}), `dependants` (as), `signer`, `verity` (`kernel`,
    /// `userspace` or `none`), `verified` (b: the userspace check passed
    /// since boot), `manifest`.
    fn get_package_info(&self, app: &str, version: &str) -> Result<HashMap<String, OwnedVariant>, AgentError> {
        let info = self.agent.package_info(app, version)?;
        let mut map = HashMap::new();
        let mut put = |key: &str, value: zbus::Variant<'_>| {
            if let Ok(value) = value.try_to_owned() {
                map.insert(key.to_string(), value);
            }
        };
        put("type", info.package_type.as_str().into());
        put("version", info.version.as_str().into());
        put("content", info.content.as_str().into());
        let dependencies: HashMap<String, String> = info.dependencies.into_iter().collect();
        put("dependencies", dependencies.into());
        put("dependants", info.dependants.into());
        put("signer", info.signer.as_str().into());
        put("verity", info.verity.as_str().into());
        put("verified", info.verified.into());
        put("manifest", info.manifest.as_str().into());
        Ok(map)
    }

    fn get_metadata(&self, app: &str, version: &str) -> Result<HashMap<String, String>, AgentError> {
        Ok(self.agent.metadata(app, version)?.into_iter().collect())
    }

    async fn set_metadata(&self, app: &str, version: &str, key: &str, value: &str) -> Result<(), AgentError> {
        let result = self.agent.set_metadata(app, version, key, Some(value)).await;
        logged(
            "SetMetadata",
            &format!("{app} {version} {key}"),
            result.map_err(AgentError::from),
        )
    }

    /// Clears a key, or every key when `key` is empty.
    async fn clear_metadata(&self, app: &str, version: &str, key: &str) -> Result<(), AgentError> {
        let result = self.agent.set_metadata(app, version, key, None).await;
        logged(
            "ClearMetadata",
            &format!("{app} {version} {key}"),
            result.map_err(AgentError::from),
        )
    }

    /// (used, quota, free) bytes.
    fn get_storage_details(&self) -> (u64, u64, u64) {
        self.agent.storage()
    }

    /// Locks a version against uninstall and upgrade; locks count (each
    /// has its handle) and survive restarts.
    async fn lock(&self, app: &str, version: &str, reason: &str, owner: &str) -> Result<String, AgentError> {
        let result = self.agent.lock(app, version, reason, owner).await;
        logged(
            "Lock",
            &format!("{app} {version} for {owner}"),
            result.map_err(AgentError::from),
        )
    }

    async fn unlock(&self, handle: &str) -> Result<(), AgentError> {
        logged(
            "Unlock",
            handle,
            self.agent.unlock(handle).await.map_err(AgentError::from),
        )
    }

    /// (count, [(handle, reason, owner)]).
    fn get_lock_info(&self, app: &str, version: &str) -> Result<LockInfo, AgentError> {
        let locks = self.agent.lock_info(app, version)?;
        Ok((
            locks.len() as u32,
            locks.into_iter().map(|l| (l.handle, l.reason, l.owner)).collect(),
        ))
    }

    /// Starts `version` (empty: the current one) of `app` with Dobby; returns
    /// Dobby's descriptor.
    async fn launch(&self, app: &str, version: &str) -> Result<i32, AgentError> {
        let result = self.agent.launch(app, version).await;
        logged("Launch", &format!("{app} {version}"), result.map_err(AgentError::from))
    }

    async fn stop(&self, app: &str, force: bool) -> Result<(), AgentError> {
        let result = self.agent.stop(app, force).await;
        logged(
            "Stop",
            &format!("{app} (force {force})"),
            result.map_err(AgentError::from),
        )
    }

    #[zbus(signal)]
    async fn operation_status(
        emitter: &SignalEmitter<'_>,
        handle: &str,
        operation: &str,
        app: &str,
        version: &str,
        status: &str,
        details: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn progress(emitter: &SignalEmitter<'_>, handle: &str, percent: u32, stage: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_started(emitter: &SignalEmitter<'_>, app: &str, descriptor: i32) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_stopped(emitter: &SignalEmitter<'_>, app: &str, status: i32) -> zbus::Result<()>;
}

/// Sends the agent's events as the interface's signals.
pub async fn forward_events(connection: &zbus::Connection, agent: &Arc<Agent>) -> zbus::Result<()> {
    let iface = connection
        .object_server()
        .interface::<_, BundleAgent>(OBJECT_PATH)
        .await?;
    let mut events = agent.subscribe();
    tokio::spawn(async move {
        let emitter = iface.signal_emitter();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events were not signalled (too many at once)");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let sent = match event {
                Event::Status {
                    handle,
                    operation,
                    app,
                    version,
                    status,
                    result,
                } => {
                    let details = match &result {
                        Ok(details) => details.clone(),
                        Err(error) if error.kind() == ErrorKind::Cancelled => error.to_string(),
                        Err(error) => format!(
                            "{}: {}",
                            error.kind().as_str(),
                            bundlegen_protocol::error_chain(error.as_ref())
                        ),
                    };
                    BundleAgent::operation_status(
                        emitter,
                        &handle,
                        &operation,
                        &app,
                        &version,
                        status.as_str(),
                        &details,
                    )
                    .await
                }
                Event::Progress { handle, percent, stage } => {
                    BundleAgent::progress(emitter, &handle, percent, &stage).await
                }
                Event::Started { app, descriptor } => BundleAgent::app_started(emitter, &app, descriptor).await,
                Event::Stopped { app, status } => BundleAgent::app_stopped(emitter, &app, status).await,
            };
            if let Err(e) = sent {
                tracing::warn!("signal: {e}");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_reply_with_their_dbus_names() {
        let call = zbus::message::Message::method_call("/org/rdk/dac/BundleAgent", "Install")
            .destination("org.rdk.dac.BundleAgent")
            .build(&())
            .unwrap();
        let error = AgentError::from(VersionError::Locked {
            app: "com.example.app".into(),
            version: "1.0".into(),
        });
        let reply = zbus::DBusError::create_reply(&error, &call.header()).unwrap();
        let header = reply.header();
        assert_eq!(
            header.error_name().map(|n| n.as_str()),
            Some("org.rdk.dac.BundleAgent1.Error.AppLocked")
        );
        assert_eq!(
            describe(&OperationError::Uninstall(VersionError::Locked {
                app: "com.example.app".into(),
                version: "1.0".into(),
            })),
            "org.rdk.dac.BundleAgent1.Error.AppLocked: com.example.app 1.0 is locked"
        );
    }

    /// Every kind has its own D-Bus error name, the kind's name.
    #[test]
    fn every_kind_keeps_its_name() {
        let kinds = [
            ErrorKind::WrongParams,
            ErrorKind::AlreadyInstalled,
            ErrorKind::NotInstalled,
            ErrorKind::WrongHandle,
            ErrorKind::AppLocked,
            ErrorKind::AppRunning,
            ErrorKind::NotRunning,
            ErrorKind::Download,
            ErrorKind::Integrity,
            ErrorKind::Signature,
            ErrorKind::NoSpace,
            ErrorKind::QuotaExceeded,
            ErrorKind::BadArchive,
            ErrorKind::Service,
            ErrorKind::Dobby,
            ErrorKind::Cancelled,
            ErrorKind::Storage,
            ErrorKind::Unsupported,
            ErrorKind::Dependency,
        ];
        for kind in kinds {
            let error = AgentError::new(kind, &InvalidParams("m".into()));
            assert_eq!(
                zbus::DBusError::name(&error).as_str(),
                format!("org.rdk.dac.BundleAgent1.Error.{}", kind.as_str())
            );
        }
    }
}
