//! Platform templates: one per device model, `NAME.json` plus `NAME_libs.json`
//! (or `NAME_probe.json`, the platform probe's report).
//!
//! Field names follow BundleGen's templates. Where BundleGen's documentation and
//! code disagree, both spellings are read: `hardware.maxRam` and `maxRAM`, and
//! `journaldOptions` under `logging` (code) or at the top level (docs, schema).
//! Fields BundleGen's schema omits but its code reads (`capabilities`,
//! `usersAndGroups.user`, `logging.limit`, `gpu.devs[].dynamic`) are typed too.

use serde::{Deserialize, Serialize};

use super::size::Size;
use crate::idmap::IdMapping;
use crate::plugins::{IpcData, JournaldOptions, MinidumpData, OomCrashData};
use crate::probe::ProbeReport;
use crate::runtime::{Mount, Rlimit};

/// A platform template: everything about one device model that a bundle depends on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlatformTemplate {
    /// The platform's name (informational; the file name is what selects it).
    pub platform_name: String,
    /// Operating system of the image to pick from an index (`linux`).
    pub os: String,
    /// CPU architecture; images for another one are refused (exit 2).
    pub arch: Arch,
    /// RDK version and the features apps may require.
    pub rdk: Rdk,
    /// Graphics and memory.
    pub hardware: Hardware,
    /// Limits for the apps' persistent (loopback) and temporary (tmpfs) storage. Without it, apps may not ask for persistent storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// What graphics apps get: host GL libraries, devices, mounts, environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Mounts added to every bundle. `{id}` in `source` becomes the app id; options `X-mount.mkdir`, `X-mount.no` and `X-dobby.optional` as in BundleGen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Network types apps may ask for.
    pub network: Network,
    /// `NAME=value` added to every app's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envvar: Vec<String>,
    /// Rlimits added to every app (after `RLIMIT_NOFILE 1024`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_limits: Vec<Rlimit>,
    /// No user namespace and no uid/gid maps.
    #[serde(default)]
    pub disable_user_namespacing: bool,
    /// User namespace maps and the container user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_and_groups: Option<UsersAndGroups>,
    /// Overrides of the bundle's `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootOverride>,
    /// The container's hostname (`{id}` becomes the app id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Dobby's logging plugin: where the app's output goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Where BundleGen's docs put it; `logging.journaldOptions` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journald_options: Option<JournaldOptions>,
    /// Where Dobby's programs are on the box, and compliant (plain OCI + hooks) output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dobby: Option<Dobby>,
    /// Owners and modes of the files in the bundle archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<Tarball>,
    /// Dobby IPC plugin data, used for apps with `ipc.enable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<IpcData>,
    /// Dobby minidump plugin data, used for apps with `minidump.enable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minidump: Option<MinidumpData>,
    /// Dobby OOM-crash plugin data, used for apps with `oomcrash.enable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oomcrash: Option<OomCrashData>,
    /// An OCI `linux.seccomp` object, copied as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<serde_json::Value>,
    /// AppArmor profile the app runs under (`process.apparmorProfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
    /// The baseline capability set (replaces the default one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// The platform probe's report, when the platform has one.
    #[serde(skip)]
    pub probe: Option<Box<ProbeReport>>,
    /// Filled from `NAME_libs.json` (or from the probe report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<super::libs::LibEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Arch {
    /// OCI/Go architecture name (`arm`, `arm64`, `amd64`); `aarch64`, `armv7` and `x86_64` are read as those.
    pub arch: String,
    /// Architecture variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Rdk {
    /// The box's RDK version (`2020Q4`); apps with a newer `minRdkVersion` are refused.
    pub version: String,
    /// Features (Thunder callsigns and others) apps may require; empty: no check.
    pub supported_features: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    /// The box has a GPU; graphics apps are refused without it.
    pub graphics: bool,
    /// BundleGen's docs spell it `maxRAM`, its code `maxRam`.
    #[serde(default, alias = "maxRAM", skip_serializing_if = "Option::is_none")]
    pub max_ram: Option<Size>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Storage {
    /// Persistent storage: loopback images under `storageDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentStorage>,
    /// Limits for tmpfs volumes; without them any size is allowed (with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<StorageLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PersistentStorage {
    /// Host directory of the images: `STORAGEDIR/APPID/SHA256(PATH).img`.
    pub storage_dir: String,
    /// Filesystem of the images (default `ext4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Largest volume; a larger request is refused (exit 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
    /// Smallest volume; smaller requests are raised to it (with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
    /// Largest sum of an app's volumes; more is refused (exit 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_size: Option<Size>,
}

impl PersistentStorage {
    pub fn limits(&self) -> StorageLimits {
        StorageLimits {
            max_size: self.max_size,
            min_size: self.min_size,
            max_total_size: self.max_total_size,
        }
    }
}

/// Size limits of one kind of volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StorageLimits {
    /// Largest volume; a larger request is refused (exit 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
    /// Smallest volume; smaller requests are raised to it (with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
    /// Largest sum of an app's volumes; more is refused (exit 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_size: Option<Size>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// Host GL libraries bind-mounted into graphics apps; the image's copies are removed and their dependencies matched against the box.
    #[serde(default)]
    pub gfx_libs: Vec<GfxLib>,
    /// Mounts added for graphics apps (same options as `mounts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_mounts: Vec<Mount>,
    /// `NAME=value` added for graphics apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envvar: Vec<String>,
    /// Device nodes graphics apps may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devs: Vec<GpuDevice>,
    /// The Westeros compositor socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub westeros: Option<Westeros>,
    /// `WAYLAND_DISPLAY` for graphics apps (default `westeros`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wayland_display: Option<String>,
}

/// A host graphics library mounted at `dst`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GfxLib {
    /// Path on the box.
    pub src: String,
    /// Path in the container (the same `src` may appear at several).
    pub dst: String,
}

/// A device node graphics apps may open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// `c` or `b`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Path of the node, on the box and in the container.
    pub path: String,
    /// Major number (fixed at start by Dobby when `dynamic`).
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// cgroup access: any of `r`, `w`, `m` (default `rwm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// The major/minor numbers change between boots: Dobby's devicemapper
    /// plugin fixes them at start.
    #[serde(default)]
    pub dynamic: bool,
    /// Mode of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Owner of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Westeros {
    /// The socket on the box, bind-mounted at `/tmp/westeros`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_socket: Option<String>,
}

/// Networking the box offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Network {
    /// Network types apps may ask for (`nat`, `open`, `private`, ...).
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsersAndGroups {
    /// User id maps of the user namespace (`linux.uidMappings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uid_map: Vec<IdMapping>,
    /// Group id maps of the user namespace (`linux.gidMappings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gid_map: Vec<IdMapping>,
    /// The user apps run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserOverride>,
}

/// `process.user` overrides (uid/gid 0 included, which BundleGen ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserOverride {
    /// User id in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group id in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_gids: Option<Vec<u32>>,
}

/// The bundle's `root`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RootOverride {
    /// Root directory in the bundle (default `rootfs`; `{id}` becomes the app id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Mount the root read-only (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

/// Where the app's standard output and error go (Dobby's logging plugin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    /// `file`, `journald` or `devnull`.
    pub mode: String,
    /// Directory of `APPID.log` (file mode; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    /// Largest log file in bytes (file mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Journald settings (journald mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journald_options: Option<JournaldOptions>,
}

/// Dobby's files on the box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Dobby {
    /// Dobby's plugin directory, bind-mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_dir: Option<String>,
    /// Host libraries the plugins need inside the container; mounted with their dependencies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_dependencies: Vec<String>,
    /// Dobby's init, mounted and run as the container's first process (default `/usr/libexec/DobbyInit`). Its libraries come from the image when compatible, else from the box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dobby_init_path: Option<String>,
    /// Write a plain OCI bundle (`ociVersion` 1.0.2) whose hooks run DobbyPluginLauncher, instead of `1.0.2-dobby`.
    #[serde(default)]
    pub generate_compliant_config: bool,
    /// DobbyPluginLauncher on the box (default `/usr/bin/DobbyPluginLauncher`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_launcher_executable_path: Option<String>,
    /// The bundle's directory on the box, handed to the hooks (`{id}` becomes the app id); required for compliant output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_launcher_parameters_path: Option<String>,
}

/// How files are written into the bundle archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Tarball {
    /// Files are owned by the container user (mapped to the host ids).
    #[serde(default)]
    pub file_ownership_same_as_user: bool,
    /// Octal mode mask, e.g. `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mask: Option<String>,
}

impl Tarball {
    /// The mask as a number.
    pub fn mask(&self) -> Option<u32> {
        self.file_mask
            .as_deref()
            .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
    }
}

pub const DEFAULT_DOBBY_INIT: &str = "/usr/libexec/DobbyInit";
pub const DEFAULT_HOOK_LAUNCHER: &str = "/usr/bin/DobbyPluginLauncher";

impl Dobby {
    pub fn dobby_init(&self) -> &str {
        self.dobby_init_path.as_deref().unwrap_or(DEFAULT_DOBBY_INIT)
    }

    pub fn hook_launcher(&self) -> &str {
        self.hook_launcher_executable_path
            .as_deref()
            .unwrap_or(DEFAULT_HOOK_LAUNCHER)
    }
}

impl PlatformTemplate {
    /// The ABI of the box's libraries, from `arch`.
    pub fn abi(&self) -> Option<crate::probe::Abi> {
        crate::probe::Abi::for_arch(&self.arch.arch, self.arch.variant.as_deref())
    }

    /// The journald options, wherever the template put them.
    pub fn journald_options(&self) -> Option<&JournaldOptions> {
        self.logging
            .as_ref()
            .and_then(|l| l.journald_options.as_ref())
            .or(self.journald_options.as_ref())
    }

    /// The `dobby` section, or its defaults.
    pub fn dobby(&self) -> Dobby {
        self.dobby.clone().unwrap_or_default()
    }
}

mod files;
mod validate;

pub use files::{TemplateFiles, find_template, load_platform, merge_platform, name_mismatch};
pub(crate) use validate::{validate_env, validate_mounts};
