//! Why an operation of the agent failed. Each error has an [`ErrorKind`]:
//! the names callers branch on, which the D-Bus API (`dbus.rs`) and the
//! developer push endpoint (`devpush.rs`) turn into their own replies.

use std::path::PathBuf;
use std::sync::Arc;

use bundlegen_protocol::archive::ArchiveError;
use bundlegen_protocol::ralf::package::PackageError;

use crate::download::DownloadError;
use crate::ralf::dependencies::LayerError;
use crate::ralf::gpu::GpuError;
use crate::ralf::instance::InstanceError;
use crate::ralf::spec::SpecError;
use crate::store::{NoRoom, StoreError};

/// What kind of failure: the error names of the agent's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A parameter is invalid.
    WrongParams,
    /// That version is installed already.
    AlreadyInstalled,
    NotInstalled,
    /// No operation or lock with that handle.
    WrongHandle,
    /// The version is locked.
    AppLocked,
    AppRunning,
    NotRunning,
    Download,
    /// The archive's sha256 is not the expected one.
    Integrity,
    /// The signature is missing or does not verify with a trusted key.
    Signature,
    NoSpace,
    QuotaExceeded,
    /// The archive is not a bundle, tries to escape, or is too large.
    BadArchive,
    /// The generator service refused or failed.
    Service,
    /// Dobby refused the bundle or is not there.
    Dobby,
    Cancelled,
    /// The agent's own storage failed.
    Storage,
    /// The bundle needs what this agent cannot give it (such as owners
    /// only root can set).
    Unsupported,
    /// A package's dependencies are missing, or others still depend on it.
    Dependency,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::WrongParams => "WrongParams",
            ErrorKind::AlreadyInstalled => "AlreadyInstalled",
            ErrorKind::NotInstalled => "NotInstalled",
            ErrorKind::WrongHandle => "WrongHandle",
            ErrorKind::AppLocked => "AppLocked",
            ErrorKind::AppRunning => "AppRunning",
            ErrorKind::NotRunning => "NotRunning",
            ErrorKind::Download => "Download",
            ErrorKind::Integrity => "Integrity",
            ErrorKind::Signature => "Signature",
            ErrorKind::NoSpace => "NoSpace",
            ErrorKind::QuotaExceeded => "QuotaExceeded",
            ErrorKind::BadArchive => "BadArchive",
            ErrorKind::Service => "Service",
            ErrorKind::Dobby => "Dobby",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Storage => "Storage",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::Dependency => "Dependency",
        }
    }
}

/// A caller's parameter that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParams(pub String);

/// `app version`, or `app` alone, for messages.
fn app_version(app: &str, version: &str) -> String {
    if version.is_empty() {
        app.to_string()
    } else {
        format!("{app} {version}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Invalid(#[from] InvalidParams),
    #[error("{app} {version} is installed")]
    AlreadyInstalled { app: String, version: String },
    /// The version, or the current one an upgrade would replace, is locked.
    #[error("{app} {version} is locked{}", if *.upgrade { ": no upgrade until it is unlocked" } else { "" })]
    Locked {
        app: String,
        version: String,
        upgrade: bool,
    },
    #[error("downloading {url}")]
    Download {
        url: String,
        #[source]
        source: DownloadError,
    },
    #[error(transparent)]
    NoRoom(NoRoom),
    /// A registry did not give the package.
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    /// The generator service's lookup failed.
    #[error("the generator service: {0}")]
    Service(String),
    #[error("{what} has sha256 {actual}, expected {expected}")]
    Integrity {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Signature(String),
    #[error("{archive}: not a bundle archive")]
    BadArchive {
        archive: PathBuf,
        #[source]
        source: ArchiveError,
    },
    #[error("{archive}: the archive has no config.json at its root")]
    NoConfig { archive: PathBuf },
    #[error("{archive}: config.json is not a runtime configuration")]
    BadConfig {
        archive: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A user-namespaced bundle whose files this agent cannot give the
    /// mapped owners.
    #[error(
        "the bundle maps its users to host uids {uids} and gids {gids}; its files must belong to them, \
         which needs the agent to run as root (it runs as {uid}:{gid})"
    )]
    NeedsRoot {
        uids: String,
        gids: String,
        uid: u32,
        gid: u32,
    },
    /// The bundle is for another architecture (its `config.json`
    /// annotation, or its program's ELF header, says which).
    #[error("{archive}: the bundle is for {bundle} ({from}), this box is {this_box}")]
    OtherArchitecture {
        archive: PathBuf,
        bundle: String,
        from: String,
        this_box: String,
    },
    /// A RALF package that does not verify or cannot be read.
    #[error("{archive}")]
    Package {
        archive: PathBuf,
        #[source]
        source: PackageError,
    },
    /// A package that is not what the install asked for.
    #[error("{archive}: the package's {field} is {actual:?}, the install is for {expected:?}")]
    PackageMismatch {
        archive: PathBuf,
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// A package boxes cannot install (its config's problems).
    #[error("{archive}: {problems}")]
    PackageConfig { archive: PathBuf, problems: String },
    #[error("{package} needs {}, which {}", .missing.join(", "), .reason)]
    MissingDependencies {
        package: String,
        missing: Vec<String>,
        reason: String,
    },
    #[error("{0}")]
    Cancelled(&'static str),
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// Putting back the previous state after a failed install failed too.
    #[error("{cause}; restoring the previous version failed too")]
    RollbackFailed {
        cause: Box<InstallError>,
        #[source]
        source: StoreError,
    },
}

impl InstallError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InstallError::Invalid(_) => ErrorKind::WrongParams,
            InstallError::AlreadyInstalled { .. } => ErrorKind::AlreadyInstalled,
            InstallError::Locked { .. } => ErrorKind::AppLocked,
            InstallError::Download { .. } | InstallError::Registry { .. } => ErrorKind::Download,
            InstallError::NoRoom(NoRoom::Space { .. }) => ErrorKind::NoSpace,
            InstallError::NoRoom(NoRoom::Quota { .. }) => ErrorKind::QuotaExceeded,
            InstallError::Service(_) => ErrorKind::Service,
            InstallError::Integrity { .. } => ErrorKind::Integrity,
            InstallError::Signature(_) => ErrorKind::Signature,
            InstallError::BadArchive { .. } | InstallError::NoConfig { .. } | InstallError::BadConfig { .. } => {
                ErrorKind::BadArchive
            }
            InstallError::NeedsRoot { .. } | InstallError::OtherArchitecture { .. } => ErrorKind::Unsupported,
            InstallError::Package { source, .. } => package_kind(source),
            InstallError::PackageMismatch { .. } | InstallError::PackageConfig { .. } => ErrorKind::BadArchive,
            InstallError::MissingDependencies { .. } => ErrorKind::Dependency,
            InstallError::Cancelled(_) => ErrorKind::Cancelled,
            InstallError::Storage(_) | InstallError::RollbackFailed { .. } => ErrorKind::Storage,
        }
    }
}

/// What kind of failure a package's verification or reading is.
fn package_kind(error: &PackageError) -> ErrorKind {
    match error {
        PackageError::Signature(_) | PackageError::SignedOtherManifest { .. } | PackageError::Unsigned => {
            ErrorKind::Signature
        }
        PackageError::Blob { .. } | PackageError::Verity(_) => ErrorKind::Integrity,
        PackageError::Open { .. } => ErrorKind::Storage,
        _ => ErrorKind::BadArchive,
    }
}

/// Uninstalls, locks and metadata of installed versions.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Invalid(#[from] InvalidParams),
    #[error("{} is not installed", app_version(.app, .version))]
    NotInstalled { app: String, version: String },
    #[error("{app} {version} is locked")]
    Locked { app: String, version: String },
    #[error("{app} is running: stop it first")]
    Running { app: String },
    #[error("no lock {0}")]
    NoSuchLock(String),
    #[error("{app} {version} is a bundle, not a RALF package")]
    NotAPackage { app: String, version: String },
    /// Packages layered on this one are installed.
    #[error("{app} {version} is what {} {} layered on: uninstall {} first", .dependants.join(", "), if .dependants.len() == 1 { "is" } else { "are" }, if .dependants.len() == 1 { "it" } else { "them" })]
    Dependants {
        app: String,
        version: String,
        dependants: Vec<String>,
    },
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl VersionError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            VersionError::Invalid(_) => ErrorKind::WrongParams,
            VersionError::NotInstalled { .. } => ErrorKind::NotInstalled,
            VersionError::Locked { .. } => ErrorKind::AppLocked,
            VersionError::Running { .. } => ErrorKind::AppRunning,
            VersionError::NoSuchLock(_) => ErrorKind::WrongHandle,
            VersionError::NotAPackage { .. } => ErrorKind::WrongParams,
            VersionError::Dependants { .. } => ErrorKind::Dependency,
            VersionError::Storage(_) => ErrorKind::Storage,
        }
    }
}

/// Dobby, or whatever runs containers, failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("Dobby: {0}")]
    Dobby(#[source] zbus::Error),
    #[error("{0}: a bundle path that is not UTF-8")]
    BundlePath(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("{app} is running")]
    Running { app: String },
    #[error("{app} is not running")]
    NotRunning { app: String },
    #[error("Dobby refused {app} {version} (it answers -1 without a reason: see its log)")]
    Refused { app: String, version: String },
    /// Started, then stopped before the launch was reported as done.
    #[error("{app} stopped right after it started: {status}{}", log_lines(.log))]
    Exited {
        app: String,
        status: String,
        log: Vec<String>,
    },
    #[error(transparent)]
    Containers(#[from] ContainerError),
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A package instance could not be made.
    #[error("{app} {version}: {source}")]
    Instance {
        app: String,
        version: String,
        #[source]
        source: InstanceSetupError,
    },
    /// A developer push that did not install.
    #[error(transparent)]
    Install(Arc<OperationError>),
}

/// The first lines of an app's log, for an error message.
fn log_lines(lines: &[String]) -> String {
    match lines {
        [] => String::new(),
        lines => format!("; its log begins: {}", lines.join(" | ")),
    }
}

impl LaunchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LaunchError::Version(e) => e.kind(),
            LaunchError::Running { .. } => ErrorKind::AppRunning,
            LaunchError::NotRunning { .. } => ErrorKind::NotRunning,
            LaunchError::Refused { .. } | LaunchError::Exited { .. } | LaunchError::Containers(_) => ErrorKind::Dobby,
            LaunchError::Storage(_) => ErrorKind::Storage,
            LaunchError::Instance { source, .. } => source.kind(),
            LaunchError::Install(e) => e.kind(),
        }
    }
}

impl From<InstallError> for LaunchError {
    fn from(error: InstallError) -> LaunchError {
        LaunchError::Install(Arc::new(error.into()))
    }
}

/// Why a package instance could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InstanceSetupError {
    /// A layer's package cannot be read, or its content is not what was signed.
    #[error("{package}")]
    Package {
        package: String,
        #[source]
        source: PackageError,
    },
    #[error(transparent)]
    Layers(#[from] LayerError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{path}: {reason}")]
    BaseSpec { path: PathBuf, reason: String },
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Mounts(#[from] InstanceError),
}

impl InstanceSetupError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InstanceSetupError::Package { source, .. } => package_kind(source),
            InstanceSetupError::Layers(_) => ErrorKind::Dependency,
            InstanceSetupError::Spec(_) | InstanceSetupError::BaseSpec { .. } => ErrorKind::BadArchive,
            InstanceSetupError::Gpu(_) | InstanceSetupError::Mounts(_) => ErrorKind::Unsupported,
        }
    }
}

/// How an operation (install, uninstall) failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Uninstall(#[from] VersionError),
}

impl OperationError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            OperationError::Install(e) => e.kind(),
            OperationError::Uninstall(e) => e.kind(),
        }
    }
}

/// A handle that names no operation, or one that cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("no operation {0}")]
    Unknown(String),
    #[error("operation {0} has ended")]
    Ended(String),
}

impl HandleError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HandleError::Unknown(_) => ErrorKind::WrongHandle,
            HandleError::Ended(_) => ErrorKind::WrongParams,
        }
    }
}
