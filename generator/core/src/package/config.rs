//! A package config from what an image and its BundleGen app metadata say,
//! for images built for BundleGen (`docs/ralf.md` has the table):
//!
//! | package config | from |
//! |---|---|
//! | `id` | metadata `id` (or `-x`) |
//! | `version` | `--version`, else metadata `version` when it is a package version, else `1.0.0` |
//! | `versionName` | metadata `version` when it is not a package version (`2.7.2-kirkstone`) |
//! | `packageType` | `--type` (default `application`) |
//! | `entryPoint`, `entryArgs` | the image's `Entrypoint` + `Cmd`: the program, relative to the root, and the rest |
//! | `permissions` | `graphics` → `compositor`; network `open` → `internet`; `thunder` → `thunder`; `ipc` on → `rialto`... see [`permissions`] |
//! | `configuration.urn:rdk:config:env` | the image's `Env` |
//! | `configuration.urn:rdk:config:memory` | `resources.ram` → `system`, `resources.gpu` → `gpu` |
//! | `configuration.urn:rdk:config:storage` | persistent storage sizes → `maxLocalStorage` |
//! | `configuration.urn:rdk:config:platform` | the image's os, architecture and variant |

use bundlegen_protocol::config::app::AppMetadata;
use bundlegen_protocol::ralf::config::{ENV_KEY, MEMORY_KEY, PLATFORM_KEY, PackageConfig, SPEC_VERSION};
use bundlegen_protocol::ralf::version::Version;
use serde_json::{Map, Value, json};

use crate::image::TargetPlatform;

/// `configuration` key of storage needs.
const STORAGE_KEY: &str = "urn:rdk:config:storage";

/// What `bundlegen package` was told besides the image.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub version: Option<String>,
    pub package_type: String,
    pub name: Option<String>,
}

/// The permissions an app's metadata implies.
pub fn permissions(app: &AppMetadata) -> Vec<String> {
    let mut permissions = Vec::new();
    let mut add = |name: &str| permissions.push(format!("urn:rdk:permission:{name}"));
    if app.graphics {
        add("compositor");
    }
    if app.network.kind == "open" {
        add("internet");
    }
    if app.thunder.is_some() {
        add("thunder");
    }
    if app
        .storage
        .persistent
        .iter()
        .any(|v| v.path.starts_with("/media") || v.path.starts_with("/mnt"))
    {
        add("external-storage::write");
    }
    permissions
}

/// Errors name the field and what to do.
pub fn derive(
    app: &AppMetadata,
    image: &oci_spec::image::Config,
    platform: &TargetPlatform,
    overrides: &Overrides,
) -> Result<PackageConfig, String> {
    let (version, version_name) = match (&overrides.version, &app.version) {
        (Some(version), _) => (version.clone(), app.version.clone().filter(|v| v != version)),
        (None, Some(v)) if v.parse::<Version>().is_ok() => (v.clone(), None),
        (None, Some(v)) => ("1.0.0".to_string(), Some(v.clone())),
        (None, None) => ("1.0.0".to_string(), None),
    };
    let command: Vec<String> = image
        .entrypoint()
        .iter()
        .flatten()
        .chain(image.cmd().iter().flatten())
        .cloned()
        .collect();
    let (program, args) = command
        .split_first()
        .ok_or("the image has neither Entrypoint nor Cmd: pass --config with an entryPoint")?;
    let entry_point = program.trim_start_matches('/').to_string();
    let mut configuration = Map::new();
    let env: Map<String, Value> = image
        .env()
        .iter()
        .flatten()
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, value)| (name.to_string(), Value::String(value.to_string())))
        .collect();
    if !env.is_empty() {
        configuration.insert(ENV_KEY.into(), Value::Object(env));
    }
    let mut memory = Map::new();
    if app.resources.ram.bytes() > 0 {
        memory.insert("system".into(), Value::String(memory_size(app.resources.ram.bytes())));
    }
    if let Some(gpu) = app.resources.gpu {
        memory.insert("gpu".into(), Value::String(memory_size(gpu.bytes())));
    }
    if !memory.is_empty() {
        configuration.insert(MEMORY_KEY.into(), Value::Object(memory));
    }
    let storage: u64 = app.storage.persistent.iter().map(|v| v.size.bytes()).sum();
    if storage > 0 {
        configuration.insert(STORAGE_KEY.into(), json!({"maxLocalStorage": memory_size(storage)}));
    }
    let mut target = json!({"architecture": platform.architecture, "os": platform.os});
    if let Some(variant) = &platform.variant {
        target["variant"] = Value::String(variant.clone());
    }
    configuration.insert(PLATFORM_KEY.into(), target);
    Ok(PackageConfig {
        id: app.id.clone(),
        spec_version: SPEC_VERSION.into(),
        version,
        version_name,
        name: overrides.name.clone(),
        package_type: overrides.package_type.clone(),
        package_specifier: None,
        entry_point,
        entry_args: args.to_vec(),
        dependencies: Default::default(),
        permissions: permissions(app),
        configuration,
    })
}

/// Sizes as the spec writes them (`^\d+[GMB]?$`, powers of 1024 as boxes
/// read them): the largest unit that divides evenly, else bytes.
fn memory_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else if bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> oci_spec::image::Config {
        serde_json::from_value(json!({"Entrypoint": entrypoint, "Cmd": cmd, "Env": env})).unwrap()
    }

    fn app(json: Value) -> AppMetadata {
        serde_json::from_value(json).unwrap()
    }

    fn overrides() -> Overrides {
        Overrides {
            package_type: "application".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_conformance_metadata_maps_as_documented() {
        let metadata = app(json!({
            "id": "com.rdk.wayland-egl-test", "type": "application/vnd.rdk-app.dac.native",
            "graphics": true, "network": {"type": "open"}, "storage": {"persistent": [{"size": "64M", "path": "/data"}]},
            "resources": {"ram": "128M"}
        }));
        let platform = TargetPlatform::new("linux", "arm", Some("v7"));
        let config = derive(
            &metadata,
            &image(&["/usr/bin/wayland-egl-test"], &["--fullscreen"], &["A=1", "PATH=/bin"]),
            &platform,
            &overrides(),
        )
        .unwrap();
        assert_eq!(config.id, "com.rdk.wayland-egl-test");
        assert_eq!(config.version, "1.0.0");
        assert_eq!(config.entry_point, "usr/bin/wayland-egl-test");
        assert_eq!(config.entry_args, ["--fullscreen"]);
        assert_eq!(
            config.permissions,
            ["urn:rdk:permission:compositor", "urn:rdk:permission:internet"]
        );
        assert_eq!(config.configuration[MEMORY_KEY], json!({"system": "128M"}));
        assert_eq!(config.configuration[STORAGE_KEY], json!({"maxLocalStorage": "64M"}));
        assert_eq!(config.configuration[ENV_KEY], json!({"A": "1", "PATH": "/bin"}));
        assert_eq!(
            config.configuration[PLATFORM_KEY],
            json!({"architecture": "arm", "os": "linux", "variant": "v7"})
        );
        assert!(
            config.installable_problems().is_empty(),
            "{:?}",
            config.installable_problems()
        );
    }

    #[test]
    fn versions_that_are_not_package_versions_become_names() {
        let platform = TargetPlatform::host();
        let base = json!({"id": "a.b", "type": "t", "graphics": false, "network": {"type": "none"}, "storage": {}, "resources": {"ram": "1M"}});
        let mut with_version = base.clone();
        with_version["version"] = json!("2.7.2-kirkstone");
        let config = derive(
            &app(with_version.clone()),
            &image(&["/x"], &[], &[]),
            &platform,
            &overrides(),
        )
        .unwrap();
        assert_eq!(
            (config.version.as_str(), config.version_name.as_deref()),
            ("1.0.0", Some("2.7.2-kirkstone"))
        );
        let pinned = Overrides {
            version: Some("2.7.2".into()),
            ..overrides()
        };
        let config = derive(&app(with_version), &image(&["/x"], &[], &[]), &platform, &pinned).unwrap();
        assert_eq!(
            (config.version.as_str(), config.version_name.as_deref()),
            ("2.7.2", Some("2.7.2-kirkstone"))
        );
        let no_command = derive(&app(base), &image(&[], &[], &[]), &platform, &overrides());
        assert!(no_command.unwrap_err().contains("--config"));
    }
}
