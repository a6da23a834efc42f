//! What a job asks for: the request and its options (checked, naming the
//! bad field), the key that makes equal requests one job, and the stored
//! platform version as the pipeline's input.

use std::path::Path;

use bundlegen_core::pipeline::libraries::MatchMode;
use bundlegen_protocol::config::libs::LibsFile;
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::{PlatformTemplate, merge_platform};
use bundlegen_protocol::config::{ConfigError, Parsed, parse};
use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::probe::ProbeReport;
use bundlegen_protocol::ralf::ContentKind;
use bundlegen_protocol::ralf::config::PACKAGE_TYPES;
use serde::{Deserialize, Serialize};

use crate::store::PlatformVersion;

/// `options.format` of a RALF package job.
pub const FORMAT: &str = "ralf";

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRequest {
    /// An image reference (`docker://host/repo:tag`, or `oci:DIR` under the
    /// service's local image directory).
    pub image: String,
    pub platform: String,
    /// App metadata; without it, the image's `/appmetadata.json` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<serde_json::Value>,
    /// Overrides the app id (`--appid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The app version the bundle is recorded under (for lookups); default:
    /// the metadata's `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default)]
    pub options: BundleOptions,
}

/// The CLI's generation options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleOptions {
    /// `normal`, `image` or `host`.
    #[serde(default = "normal")]
    pub lib_match_mode: String,
    #[serde(default)]
    pub no_dep_walking: bool,
    #[serde(default)]
    pub create_mount_points: bool,
    #[serde(default)]
    pub crun: bool,
    #[serde(default)]
    pub prune_unused: bool,
    /// `tar.gz`, `tar.zst`, `ipk`, or `ralf` (a RALF package).
    #[serde(default = "tar_gz")]
    pub format: String,
    /// RALF packages: the package type (default `application`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_type: Option<String>,
    /// RALF packages: the content layer (`tar`, `erofs.lz4`, ...; default as ralfpack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// RALF packages: the registered app versions (`APP@VERSION`, base or
    /// runtime packages) this one is layered on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

fn normal() -> String {
    "normal".into()
}

fn tar_gz() -> String {
    "tar.gz".into()
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            lib_match_mode: normal(),
            no_dep_walking: false,
            create_mount_points: false,
            crun: false,
            prune_unused: false,
            format: tar_gz(),
            package_type: None,
            content: None,
            depends_on: Vec::new(),
        }
    }
}

impl BundleOptions {
    /// Checks the values; names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        self.lib_match_mode
            .parse::<MatchMode>()
            .map_err(|e| format!("options.libMatchMode: {e}"))?;
        match self.format.as_str() {
            "tar.gz" | "tar.zst" | "ipk" => {}
            FORMAT => return validate_package(self),
            other => return Err(format!("options.format: {other:?} is not tar.gz, tar.zst, ipk or ralf")),
        }
        if self.package_type.is_some() || self.content.is_some() || !self.depends_on.is_empty() {
            return Err("options.packageType, content and dependsOn are for format ralf".into());
        }
        Ok(())
    }
}

/// Checks the package options; names the bad field.
fn validate_package(options: &BundleOptions) -> Result<(), String> {
    if let Some(kind) = &options.package_type
        && !PACKAGE_TYPES.contains(&kind.as_str())
    {
        return Err(format!(
            "options.packageType: {kind:?} is not one of {}",
            PACKAGE_TYPES.join(", ")
        ));
    }
    if let Some(content) = &options.content
        && ContentKind::from_name(content).is_none()
    {
        return Err(format!(
            "options.content: {content:?} is not one of {}",
            ContentKind::NAMES.join(", ")
        ));
    }
    for (i, dependency) in options.depends_on.iter().enumerate() {
        if dependency_name(dependency).is_none() {
            return Err(format!("options.dependsOn[{i}]: {dependency:?} is not APP@VERSION"));
        }
    }
    Ok(())
}

/// `APP@VERSION` as (app, version).
pub fn dependency_name(text: &str) -> Option<(&str, &str)> {
    text.split_once('@')
        .filter(|(app, version)| !app.is_empty() && !version.is_empty())
}

/// The fingerprint of all of a bundle's inputs: the request (image, app
/// metadata, options), the platform version and the operator config (its
/// fingerprint). Equal inputs give the same bundle; any change, another.
pub fn job_key(request: &BundleRequest, platform_version: i64, operator: &str) -> String {
    // serde_json's maps are sorted, so this text is canonical.
    let canonical = serde_json::json!({"request": request, "platformVersion": platform_version, "operator": operator});
    Sha256Digest::of(canonical.to_string().as_bytes()).hex()
}

/// The fingerprint of an operator config, for [`job_key`].
pub fn operator_fingerprint(operator: &OperatorConfig) -> String {
    let canonical = serde_json::to_value(operator)
        .map(|v| v.to_string())
        .unwrap_or_default();
    Sha256Digest::of(canonical.as_bytes()).hex()
}

/// A stored platform version as the pipeline's input.
pub fn platform_template(version: &PlatformVersion) -> Result<Parsed<PlatformTemplate>, ConfigError> {
    let name = format!("platform {} version {}", version.platform, version.version);
    let template = parse::<PlatformTemplate>(&version.template, Path::new(&name))?;
    let libs = match &version.libs {
        Some(text) => Some((
            parse::<LibsFile>(text, Path::new(&format!("{name} libs")))?,
            format!("{name} libs"),
        )),
        None => None,
    };
    let probe = match &version.probe {
        Some(text) => Some((
            parse::<ProbeReport>(text, Path::new(&format!("{name} probe")))?,
            format!("{name} probe report"),
        )),
        None => None,
    };
    Ok(merge_platform(template, &name, libs, probe))
}

/// What a job row keeps of its request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRequest {
    pub request: BundleRequest,
    pub platform_version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BundleRequest {
        serde_json::from_value(serde_json::json!({
            "image": "docker://localhost:5000/app:1",
            "platform": "rpi3",
        }))
        .unwrap()
    }

    #[test]
    fn equal_requests_share_a_key_and_any_difference_changes_it() {
        let base = job_key(&request(), 1, "op");
        assert_eq!(job_key(&request(), 1, "op"), base);
        let mut with_defaults = request();
        with_defaults.options = BundleOptions::default();
        assert_eq!(job_key(&with_defaults, 1, "op"), base, "defaults are the same request");
        assert_ne!(job_key(&request(), 2, "op"), base, "another platform version");
        let mut other = request();
        other.options.format = "ipk".into();
        assert_ne!(job_key(&other, 1, "op"), base);
        let mut metadata = request();
        metadata.app_metadata = Some(serde_json::json!({"id": "a", "b": 1}));
        let mut reordered = request();
        reordered.app_metadata = serde_json::from_str(r#"{"b": 1, "id": "a"}"#).ok();
        assert_eq!(
            job_key(&metadata, 1, "op"),
            job_key(&reordered, 1, "op"),
            "key order does not matter"
        );
    }

    #[test]
    fn options_name_the_bad_field() {
        let mut options = BundleOptions::default();
        assert!(options.validate().is_ok());
        options.lib_match_mode = "best".into();
        assert!(options.validate().unwrap_err().starts_with("options.libMatchMode"));
        options = BundleOptions {
            format: "zip".into(),
            ..BundleOptions::default()
        };
        assert!(options.validate().unwrap_err().starts_with("options.format"));
        assert!(
            serde_json::from_value::<BundleRequest>(serde_json::json!({"image": "x", "platform": "p", "extra": 1}))
                .is_err(),
            "unknown fields are refused"
        );
    }
}
