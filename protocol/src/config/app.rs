//! App metadata: what an app needs (`-a FILE`, or `/appmetadata.json` in the image).

use serde::{Deserialize, Serialize};

use super::size::Size;
use super::{Problem, Validate, check_absolute, field};
use crate::plugins::{NetworkingData, ThunderData};
use crate::runtime::{LINUX_CAPABILITIES, Mount};

/// What an app needs from a box.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AppMetadata {
    /// Reverse-DNS app id; also the container id, so it follows Dobby's rules.
    pub id: String,
    /// MIME type, e.g. `application/vnd.rdk-app.dac.native`.
    #[serde(rename = "type")]
    pub kind: String,
    /// App version (ipk `Version`, default `1.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// One line about the app (ipk `Description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// ipk `Priority` (default `optional`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// The app needs a GPU; refused on platforms without one.
    pub graphics: bool,
    /// Copied into Dobby's networking plugin.
    pub network: NetworkingData,
    /// Volumes the app needs.
    pub storage: AppStorage,
    /// Memory the app needs.
    pub resources: AppResources,
    /// Platform features the app needs (`rdk.supportedFeatures`); a missing one is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Ours: the oldest RDK version the app runs on (`2020Q4`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rdk_version: Option<String>,
    /// Mounts the app needs (after the platform's; same options).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Dobby's Thunder plugin: access to Thunder (WPEFramework).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thunder: Option<ThunderData>,
    /// Turn on Dobby's IPC plugin (with the platform's `ipc` data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<Enable>,
    /// Turn on Dobby's minidump plugin (with the platform's `minidump` data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minidump: Option<Enable>,
    /// Turn on Dobby's OOM-crash plugin (with the platform's `oomcrash` data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oomcrash: Option<Enable>,
    /// Changes to the platform's capability set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilityChanges>,
    /// Ours: library pins and libraries the app `dlopen`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libraries: Option<LibraryHints>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AppStorage {
    /// Loopback-image volumes kept across restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persistent: Vec<Volume>,
    /// tmpfs volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temp: Vec<Volume>,
}

/// One volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Volume {
    /// Size of the volume.
    pub size: Size,
    /// Absolute mount point in the container.
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AppResources {
    /// Memory limit (capped at the platform's `hardware.maxRam`).
    pub ram: Size,
    /// GPU memory limit (Dobby's gpu plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Size>,
}

/// Turns a plugin on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Enable {
    /// Whether the plugin is on.
    #[serde(default)]
    pub enable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CapabilityChanges {
    /// Capabilities added (`CAP_...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LibraryHints {
    /// Exact library versions the app needs (`libfoo.so.2.1.5`): the box copy
    /// is used only if the box has that version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
    /// Libraries the app loads with `dlopen`, kept by `--prune-unused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dlopen: Vec<String>,
}

/// Dobby's container id rules: 1-128 of `[A-Za-z0-9._-]`, a letter, no `..`.
pub fn container_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 128 {
        return Some("must be 1 to 128 characters".into());
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    if !id.chars().any(|c| c.is_ascii_alphabetic()) {
        return Some("must contain a letter".into());
    }
    if id.contains("..") {
        return Some("must not contain \"..\"".into());
    }
    None
}

/// App version rules (boxes keep versions as directory names): 1-64 of
/// `[A-Za-z0-9._+-]`, not starting with '.'.
pub fn version_problem(version: &str) -> Option<String> {
    let valid = (1..=64).contains(&version.len())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && !version.starts_with('.');
    (!valid).then(|| "1-64 of A-Z a-z 0-9 . _ + -, not starting with '.'".to_string())
}

/// Problems with capability names.
pub(crate) fn validate_capabilities(names: &[String], path: &str, problems: &mut Vec<Problem>) {
    for (i, name) in names.iter().enumerate() {
        if !LINUX_CAPABILITIES.contains(&name.as_str()) {
            problems.push(Problem {
                path: format!("{path}[{i}]"),
                reason: format!("{name:?} is not a Linux capability"),
            });
        }
    }
}

impl Validate for AppMetadata {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(reason) = container_id_problem(&self.id) {
            problems.push(Problem {
                path: field(path, "id"),
                reason: format!("{:?} {reason} (it is the container id)", self.id),
            });
        }
        if self.network.kind.is_empty() {
            problems.push(Problem {
                path: field(path, "network.type"),
                reason: "must not be empty".into(),
            });
        }
        for (kind, volumes) in [("persistent", &self.storage.persistent), ("temp", &self.storage.temp)] {
            for (i, volume) in volumes.iter().enumerate() {
                check_absolute(
                    &volume.path,
                    &field(path, &format!("storage.{kind}[{i}].path")),
                    problems,
                );
            }
        }
        super::platform::validate_mounts(&self.mounts, &field(path, "mounts"), problems);
        if let Some(caps) = &self.capabilities {
            validate_capabilities(&caps.add, &field(path, "capabilities.add"), problems);
            validate_capabilities(&caps.drop, &field(path, "capabilities.drop"), problems);
        }
    }
}
