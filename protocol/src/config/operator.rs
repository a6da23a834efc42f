//! The operator's configuration: policy applied to every bundle, on every
//! platform, after the platform template (BundleGen has none).

use serde::{Deserialize, Serialize};

use super::app::validate_capabilities;
use super::platform::{Logging, validate_env, validate_mounts};
use super::{Problem, Validate, check_one_of, field};
use crate::plugins::RdkPlugins;
use crate::runtime::Mount;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct OperatorConfig {
    /// `NAME=value` appended to every app's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envvar: Vec<String>,
    /// Mounts added to every bundle (same options as template mounts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Capabilities bundles may and may not have.
    #[serde(default)]
    pub capabilities: CapabilityPolicy,
    /// Library versions to use from the box only when it has exactly them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub library_pins: Vec<String>,
    /// Logging for platforms whose template has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Plugins added to every Dobby bundle (any plugin of Dobby's schema).
    #[serde(default, skip_serializing_if = "RdkPlugins::is_empty")]
    pub rdk_plugins: RdkPlugins,
}

/// Which capabilities bundles may have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CapabilityPolicy {
    /// If set, no bundle gets a capability outside this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// No bundle gets these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Validate for OperatorConfig {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        validate_env(&self.envvar, &field(path, "envvar"), problems);
        validate_mounts(&self.mounts, &field(path, "mounts"), problems);
        if let Some(allow) = &self.capabilities.allow {
            validate_capabilities(allow, &field(path, "capabilities.allow"), problems);
        }
        validate_capabilities(&self.capabilities.deny, &field(path, "capabilities.deny"), problems);
        for (i, pin) in self.library_pins.iter().enumerate() {
            if !pin.contains(".so") || pin.contains('/') {
                problems.push(Problem {
                    path: field(path, &format!("libraryPins[{i}]")),
                    reason: format!("{pin:?} is not a library file name like libfoo.so.1.2.3"),
                });
            }
        }
        if let Some(logging) = &self.logging {
            check_one_of(
                &logging.mode,
                &["file", "journald", "devnull"],
                &field(path, "logging.mode"),
                problems,
            );
            if logging.mode == "file" && logging.log_dir.is_none() {
                problems.push(Problem {
                    path: field(path, "logging.logDir"),
                    reason: "is required when logging.mode is file".into(),
                });
            }
        }
    }
}
