//! The package configuration (`application/vnd.rdk.package.config.v1+json`),
//! checked against schema v1 of RDK's package spec: its required fields,
//! patterns and `additionalProperties: false` (an unknown top-level key is an
//! error, named with its path).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::version::{Constraint, Version};
use crate::config::{Problem, Validate, field};

/// The spec version we write (schema v1).
pub const SPEC_VERSION: &str = "1.1.0";
/// The package types the spec documents and boxes install.
pub const PACKAGE_TYPES: &[&str] = &["base", "runtime", "application", "service", "resource"];
/// `configuration` key of the environment variables.
pub const ENV_KEY: &str = "urn:rdk:config:env";
/// `configuration` key of memory limits (`{"system": "256M"}`).
pub const MEMORY_KEY: &str = "urn:rdk:config:memory";
/// `configuration` key of the platform the content is built for.
pub const PLATFORM_KEY: &str = "urn:rdk:config:platform";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageConfig {
    pub id: String,
    pub spec_version: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub package_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_specifier: Option<String>,
    pub entry_point: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub configuration: serde_json::Map<String, serde_json::Value>,
}

/// The spec's id pattern: letters, digits, `.`, `_`, `-`, starting and
/// ending with a letter or digit, no `..`.
pub fn id_problem(id: &str) -> Option<&'static str> {
    let bytes = id.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if bytes.is_empty() {
        Some("is empty")
    } else if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        Some("must start and end with a letter or digit")
    } else if !bytes.iter().all(inner_ok) {
        Some("may hold only letters, digits, '.', '_' and '-'")
    } else if id.contains("..") {
        Some("must not contain \"..\"")
    } else {
        None
    }
}

/// `MAJOR.MINOR.PATCH[-pre]`; returns the major version.
fn spec_major(text: &str) -> Option<u64> {
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    if pre.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')) {
        return None;
    }
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let numbers: Option<Vec<u64>> = parts
        .iter()
        .map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p.len() == 1 || !p.starts_with('0')))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect();
    numbers.map(|n| n[0])
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Validate for PackageConfig {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        let mut problem = |name: &str, reason: String| {
            problems.push(Problem {
                path: field(path, name),
                reason,
            })
        };
        if let Some(reason) = id_problem(&self.id) {
            problem("id", format!("{:?} {reason}", self.id));
        }
        match spec_major(&self.spec_version) {
            None => problem(
                "specVersion",
                format!("{:?} is not MAJOR.MINOR.PATCH", self.spec_version),
            ),
            Some(1) => {}
            Some(major) => problem(
                "specVersion",
                format!("schema v{major} is not supported; this reader knows v1"),
            ),
        }
        if let Err(e) = self.version.parse::<Version>() {
            problem("version", e.to_string());
        }
        for (name, value) in [
            ("versionName", &self.version_name),
            ("name", &self.name),
            ("packageSpecifier", &self.package_specifier),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                problem(name, "must not be empty".into());
            }
        }
        if self.package_type.is_empty() {
            problem("packageType", "must not be empty".into());
        }
        if self.entry_point.is_empty() {
            problem("entryPoint", "must not be empty".into());
        } else if self.entry_point.starts_with('/') || self.entry_point.split('/').any(|c| c == "..") {
            problem(
                "entryPoint",
                format!(
                    "{:?} must be a path relative to the package root, or a URL",
                    self.entry_point
                ),
            );
        }
        for (id, range) in &self.dependencies {
            if let Some(reason) = id_problem(id) {
                problem(&format!("dependencies.{id}"), format!("the id {reason}"));
            }
            if let Err(e) = range.parse::<Constraint>() {
                problem(&format!("dependencies.{id}"), e.to_string());
            }
        }
        let mut seen = BTreeSet::new();
        for (i, permission) in self.permissions.iter().enumerate() {
            if !permission.starts_with("urn:") {
                problem(&format!("permissions[{i}]"), format!("{permission:?} is not a URN"));
            }
            if !seen.insert(permission) {
                problem(&format!("permissions[{i}]"), format!("{permission:?} is listed twice"));
            }
        }
        if let Some(env) = self.configuration.get(ENV_KEY) {
            let at = format!("configuration.{ENV_KEY}");
            match env.as_object() {
                None => problem(&at, "must be an object of NAME: value".into()),
                Some(vars) => {
                    for (name, value) in vars {
                        if !is_env_name(name) {
                            problem(&format!("{at}.{name}"), "is not a valid variable name".into());
                        }
                        if !value.is_string() {
                            problem(&format!("{at}.{name}"), "must be a string".into());
                        }
                    }
                }
            }
        }
    }
}

impl PackageConfig {
    /// What boxes additionally need to install a package: one of the five
    /// documented types, and dependencies on ids only they can resolve.
    pub fn installable_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.validate("", &mut problems);
        crate::config::check_one_of(&self.package_type, PACKAGE_TYPES, "packageType", &mut problems);
        problems
    }

    /// The environment variables of `configuration`, `NAME=value`.
    pub fn env(&self) -> Vec<String> {
        self.configuration
            .get(ENV_KEY)
            .and_then(|v| v.as_object())
            .map(|vars| {
                vars.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The canonical bytes we store: keys in a fixed order, no spaces.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a package config serializes")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    fn check(json: &str) -> Result<PackageConfig, String> {
        parse::<PackageConfig>(json, Path::new("package.json"))
            .map(|p| p.value)
            .map_err(|e| e.to_string())
    }

    const MINIMAL: &str = r#"{"id":"com.example.app","specVersion":"1.0.0","version":"0.1.0","packageType":"application","entryPoint":"https://example.com/"}"#;

    #[test]
    fn the_spec_fixture_minimal_is_valid() {
        let config = check(MINIMAL).unwrap();
        assert_eq!(config.id, "com.example.app");
        assert!(config.installable_problems().is_empty());
        assert_eq!(check(&String::from_utf8(config.to_json()).unwrap()).unwrap(), config);
    }

    #[test]
    fn every_rule_names_its_field() {
        let table: &[(&str, &str, &str)] = &[
            (r#""id":"com.example.app""#, r#""id":"-bad""#, "id"),
            (r#""id":"com.example.app""#, r#""id":"a..b""#, "id"),
            (r#""specVersion":"1.0.0""#, r#""specVersion":"2.0.0""#, "specVersion"),
            (r#""specVersion":"1.0.0""#, r#""specVersion":"1.0""#, "specVersion"),
            (r#""version":"0.1.0""#, r#""version":"0.01""#, "version"),
            (r#""version":"0.1.0""#, r#""version":"1.2.3.4.5""#, "version"),
            (
                r#""entryPoint":"https://example.com/""#,
                r#""entryPoint":"""#,
                "entryPoint",
            ),
            (
                r#""entryPoint":"https://example.com/""#,
                r#""entryPoint":"/bin/app""#,
                "entryPoint",
            ),
            (
                r#""packageType":"application""#,
                r#""packageType":"application","extra":1"#,
                "extra",
            ),
            (
                r#""packageType":"application""#,
                r#""packageType":"application","dependencies":{"base":"1.x"}"#,
                "dependencies.base",
            ),
            (
                r#""packageType":"application""#,
                r#""packageType":"application","permissions":["urn:a","urn:a"]"#,
                "permissions[1]",
            ),
            (
                r#""packageType":"application""#,
                r#""packageType":"application","configuration":{"urn:rdk:config:env":{"1X":"y"}}"#,
                "configuration.urn:rdk:config:env.1X",
            ),
        ];
        for (from, to, field) in table {
            assert!(MINIMAL.contains(from), "{from}");
            let error = check(&MINIMAL.replace(from, to)).unwrap_err();
            assert!(error.contains(field), "{to}: {error}");
        }
        let missing = check(r#"{"id":"a","specVersion":"1.0.0","version":"1","packageType":"base"}"#).unwrap_err();
        assert!(missing.contains("entryPoint"), "{missing}");
    }

    #[test]
    fn boxes_install_only_documented_types() {
        let custom = check(&MINIMAL.replace("application", "widget")).unwrap();
        let problems = custom.installable_problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "packageType");
    }
}
