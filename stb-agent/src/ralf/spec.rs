//! A package instance's `config.json`: the base spec (built in, or the
//! configured file) plus what the packages' configs and the box give, as
//! RDK's RuntimeManager makes it (docs/stb-agent.md has the table):
//!
//! | config.json | from |
//! |---|---|
//! | `process.args` | the app's `entryPoint` (at the root) and `entryArgs`; a URL entry point is opened by the program of the runtime it is layered on |
//! | `process.env` | the base spec's, then each package's `urn:rdk:config:env` from the base up (the app's win); `APP_PACKAGE_VERSION`, `CPU_MEMORY_LIMIT`, `STORAGE_LIMIT`; socket variables |
//! | `linux.resources.memory.limit` | the app's `urn:rdk:config:memory` `system` |
//! | `hostname` | the app's id |
//! | mounts | app storage at `/data` (with Dobby's plugins and a `maxLocalStorage`: a loopback image of that size through the `storage` plugin, so the quota holds); the GPU layer's files; the Wayland and Rialto sockets |
//! | `linux.devices`, device cgroup | the GPU layer's device nodes (`rwm`) |
//! | user namespace | container root mapped to the configured host ids, the GPU groups to themselves |
//! | `hooks` | `DobbyPluginLauncher` for each OCI hook, when the spec has `rdkPlugins` |

use std::path::Path;

use bundlegen_protocol::config::size::Size;
use bundlegen_protocol::ralf::config::{MEMORY_KEY, PackageConfig};
use platform_probe::gpu_layer::VendorGpuSupport;
use serde_json::{Map, Value, json};

/// The base spec used when none is configured.
pub const DEFAULT_BASE_SPEC: &str = include_str!("oci-base-spec.json");
/// `configuration` key of storage needs (`maxLocalStorage`).
const STORAGE_KEY: &str = "urn:rdk:config:storage";
/// Dobby's hook launcher: it runs the rdkPlugins at each OCI hook.
const PLUGIN_LAUNCHER: &str = "/usr/bin/DobbyPluginLauncher";
const HOOKS: [&str; 4] = ["createRuntime", "createContainer", "poststart", "poststop"];
/// `MS_NOSUID | MS_NODEV | MS_NOEXEC`, the flags BundleGen gives loopback storage.
const LOOPBACK_FLAGS: i32 = 14;
/// Where apps find the sockets.
const WAYLAND_IN_CONTAINER: &str = "/tmp/wayland-0";
const RIALTO_IN_CONTAINER: &str = "/tmp/rialto-0";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the base spec: {0}")]
    BaseSpec(String),
    #[error("package {id} {version}: {field}: {reason}")]
    Package {
        id: String,
        version: String,
        field: String,
        reason: String,
    },
}

/// A device node the container gets, as the host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Everything a config.json is made from.
pub struct Instance<'a> {
    pub base: &'a Value,
    /// The app first, then what it is layered on, down to the base.
    pub packages: &'a [&'a PackageConfig],
    pub gpu: Option<&'a VendorGpuSupport>,
    /// The GPU layer's device nodes the box has.
    pub devices: &'a [DeviceNode],
    /// Host (uid, gid) the container's root is mapped to.
    pub users: Option<(u32, u32)>,
    /// The app's storage, bound at `/data`.
    pub data_dir: &'a Path,
    pub wayland_socket: Option<&'a Path>,
    pub rialto_socket: Option<&'a Path>,
    /// Where the config.json is written (the hooks name it).
    pub config_path: &'a Path,
}

fn package_error(package: &PackageConfig, field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Package {
        id: package.id.clone(),
        version: package.version.clone(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn is_url(entry_point: &str) -> bool {
    entry_point.contains("://")
}

/// The container's command: the app's program, or the program of what it
/// is layered on opening the app's URL.
fn process_args(packages: &[&PackageConfig]) -> Result<Vec<String>, SpecError> {
    let app = packages[0];
    if !is_url(&app.entry_point) {
        let mut args = vec![format!("/{}", app.entry_point)];
        args.extend(app.entry_args.iter().cloned());
        return Ok(args);
    }
    let below = &packages[1..];
    let opener = below
        .iter()
        .find(|p| p.package_type == "runtime" && !is_url(&p.entry_point))
        .or_else(|| below.iter().find(|p| !is_url(&p.entry_point)))
        .ok_or_else(|| {
            package_error(
                app,
                "entryPoint",
                "is a URL, and no package it is layered on has a program to open it",
            )
        })?;
    let mut args = vec![format!("/{}", opener.entry_point)];
    args.extend(opener.entry_args.iter().cloned());
    args.push(app.entry_point.clone());
    args.extend(app.entry_args.iter().cloned());
    Ok(args)
}

/// A size from a package's configuration (`"256M"`), in bytes.
fn size_of(package: &PackageConfig, key: &str, field: &str) -> Result<Option<u64>, SpecError> {
    let Some(value) = package.configuration.get(key).and_then(|v| v.get(field)) else {
        return Ok(None);
    };
    let at = format!("configuration.{key}.{field}");
    let text = value
        .as_str()
        .ok_or_else(|| package_error(package, &at, "must be a size such as \"256M\""))?;
    match text.parse::<Size>() {
        Ok(size) if size.bytes() > 0 => Ok(Some(size.bytes())),
        Ok(_) => Err(package_error(package, &at, format!("{text:?} is no size"))),
        Err(reason) => Err(package_error(package, &at, reason)),
    }
}

/// Sets `NAME=value` in an environment list, replacing an earlier `NAME`.
fn set_env(env: &mut Vec<String>, entry: String) {
    let name = entry.split('=').next().unwrap_or("").to_string();
    env.retain(|e| e.split('=').next() != Some(name.as_str()));
    env.push(entry);
}

fn object<'v>(value: &'v mut Value, key: &str) -> &'v mut Map<String, Value> {
    if !value[key].is_object() {
        value[key] = json!({});
    }
    value[key].as_object_mut().expect("made an object")
}

fn array<'v>(value: &'v mut Value, key: &str) -> &'v mut Vec<Value> {
    if !value[key].is_array() {
        value[key] = json!([]);
    }
    value[key].as_array_mut().expect("made an array")
}

fn bind(source: &Path, destination: &str, writable: bool) -> Value {
    let access = if writable { "rw" } else { "ro" };
    json!({
        "destination": destination,
        "type": "bind",
        "source": source.to_string_lossy(),
        "options": ["rbind", access, "nosuid", "nodev"],
    })
}

/// The config.json of an instance.
pub fn runtime_config(instance: &Instance) -> Result<Value, SpecError> {
    let app = *instance
        .packages
        .first()
        .ok_or_else(|| SpecError::BaseSpec("no package to run".into()))?;
    let mut config = instance.base.clone();
    if !config.is_object() {
        return Err(SpecError::BaseSpec("not a JSON object".into()));
    }
    if !config["process"].is_object() {
        return Err(SpecError::BaseSpec("has no process object".into()));
    }
    let process = &mut config["process"];
    process["args"] = json!(process_args(instance.packages)?);
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|e| e.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for package in instance.packages.iter().rev() {
        for entry in package.env() {
            set_env(&mut env, entry);
        }
    }
    let version = match &app.version_name {
        Some(name) => format!("{name}_{}", app.version),
        None => app.version.clone(),
    };
    set_env(&mut env, format!("APP_PACKAGE_VERSION={version}"));
    let memory = size_of(app, MEMORY_KEY, "system")?;
    if let Some(bytes) = memory {
        set_env(&mut env, format!("CPU_MEMORY_LIMIT={bytes}"));
    }
    let storage = size_of(app, STORAGE_KEY, "maxLocalStorage")?;
    if let Some(bytes) = storage {
        set_env(&mut env, format!("STORAGE_LIMIT={bytes}"));
    }
    if instance.wayland_socket.is_some() {
        set_env(&mut env, "XDG_RUNTIME_DIR=/tmp".into());
        set_env(&mut env, "WAYLAND_DISPLAY=wayland-0".into());
    }
    if instance.rialto_socket.is_some() {
        set_env(&mut env, format!("RIALTO_SOCKET_PATH={RIALTO_IN_CONTAINER}"));
    }
    process["env"] = json!(env);
    let groups: Vec<u32> = instance.gpu.map(|g| g.group_ids.clone()).unwrap_or_default();
    if !groups.is_empty() {
        let gids = array(&mut process["user"], "additionalGids");
        for gid in &groups {
            if !gids.iter().any(|g| g.as_u64() == Some(u64::from(*gid))) {
                gids.push(json!(gid));
            }
        }
    }
    config["hostname"] = json!(app.id);

    let has_plugins = config["rdkPlugins"].as_object().is_some_and(|p| !p.is_empty());
    match storage {
        // Dobby's storage plugin keeps the app to its quota: an ext4 image
        // of that size, in the app's storage directory.
        Some(bytes) if has_plugins => {
            let imgsize = i32::try_from(bytes).map_err(|_| {
                package_error(
                    app,
                    &format!("configuration.{STORAGE_KEY}.maxLocalStorage"),
                    "is over the 2 GiB Dobby's storage plugin takes",
                )
            })?;
            let plugins = object(&mut config, "rdkPlugins");
            let storage = plugins
                .entry("storage")
                .or_insert_with(|| json!({"required": true, "data": {}}));
            if !storage["data"]["loopback"].is_array() {
                storage["data"]["loopback"] = json!([]);
            }
            storage["data"]["loopback"]
                .as_array_mut()
                .expect("made an array")
                .push(json!({
                    "destination": "/data",
                    "flags": LOOPBACK_FLAGS,
                    "fstype": "ext4",
                    "source": instance.data_dir.join("data.img").to_string_lossy(),
                    "imgsize": imgsize,
                }));
        }
        _ => array(&mut config, "mounts").push(bind(instance.data_dir, "/data", true)),
    }
    let mounts = array(&mut config, "mounts");
    if let Some(gpu) = instance.gpu {
        for file in &gpu.files {
            mounts.push(bind(Path::new(&file.source), &file.destination, false));
        }
    }
    if let Some(socket) = instance.wayland_socket {
        mounts.push(bind(socket, WAYLAND_IN_CONTAINER, true));
    }
    if let Some(socket) = instance.rialto_socket {
        mounts.push(bind(socket, RIALTO_IN_CONTAINER, true));
    }

    let linux = &mut config["linux"];
    if !linux.is_object() {
        *linux = json!({});
    }
    if let Some(bytes) = memory {
        object(object_value(linux, "resources"), "memory").insert("limit".into(), json!(bytes));
    }
    for device in instance.devices {
        array(linux, "devices").push(json!({
            "path": device.path,
            "type": device.kind.to_string(),
            "major": device.major,
            "minor": device.minor,
            "fileMode": device.file_mode,
            "uid": device.uid,
            "gid": device.gid,
        }));
        array(object_value(linux, "resources"), "devices").push(json!({
            "allow": true,
            "type": device.kind.to_string(),
            "major": device.major,
            "minor": device.minor,
            "access": "rwm",
        }));
    }
    if let Some((uid, gid)) = instance.users {
        let namespaces = array(linux, "namespaces");
        if !namespaces.iter().any(|n| n["type"] == "user") {
            namespaces.push(json!({"type": "user"}));
        }
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        let mut gid_mappings = vec![json!({"containerID": 0, "hostID": gid, "size": 1})];
        gid_mappings.extend(
            groups
                .iter()
                .filter(|g| **g != 0)
                .map(|g| json!({"containerID": g, "hostID": g, "size": 1})),
        );
        linux["gidMappings"] = json!(gid_mappings);
    }

    if has_plugins {
        let config_path = instance.config_path.to_string_lossy().into_owned();
        let hooks = object(&mut config, "hooks");
        for hook in HOOKS {
            let list = hooks.entry(hook).or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            let list = list.as_array_mut().expect("made an array");
            if !list.iter().any(|h| h["path"] == PLUGIN_LAUNCHER) {
                list.push(json!({
                    "path": PLUGIN_LAUNCHER,
                    "args": ["DobbyPluginLauncher", "-h", hook, "-c", config_path, "-v"],
                }));
            }
        }
    }
    Ok(config)
}

/// `value[key]` as an object value (made one if it is not).
fn object_value<'v>(value: &'v mut Value, key: &str) -> &'v mut Value {
    object(value, key);
    &mut value[key]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bundlegen_protocol::ralf::config::ENV_KEY;
    use platform_probe::gpu_layer::BindFile;

    use super::*;

    fn package(id: &str, kind: &str, entry: &str, env: &[(&str, &str)]) -> PackageConfig {
        let mut configuration = Map::new();
        if !env.is_empty() {
            let vars: Map<String, Value> = env.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            configuration.insert(ENV_KEY.into(), Value::Object(vars));
        }
        PackageConfig {
            id: id.into(),
            spec_version: "1.1.0".into(),
            version: "1.2.0".into(),
            version_name: None,
            name: None,
            package_type: kind.into(),
            package_specifier: None,
            entry_point: entry.into(),
            entry_args: Vec::new(),
            dependencies: BTreeMap::new(),
            permissions: Vec::new(),
            configuration,
        }
    }

    fn base() -> Value {
        serde_json::from_str(DEFAULT_BASE_SPEC).unwrap()
    }

    fn instance<'a>(base: &'a Value, packages: &'a [&'a PackageConfig]) -> Instance<'a> {
        Instance {
            base,
            packages,
            gpu: None,
            devices: &[],
            users: None,
            data_dir: Path::new("/opt/dac/data/app"),
            wayland_socket: None,
            rialto_socket: None,
            config_path: Path::new("/run/stb-agent/instances/app/bundle/config.json"),
        }
    }

    #[test]
    fn the_built_in_base_spec_is_a_dobby_spec() {
        let spec = base();
        assert_eq!(spec["root"]["path"], "rootfs");
        assert!(spec["rdkPlugins"]["logging"]["required"].as_bool().unwrap());
    }

    #[test]
    fn the_command_is_the_apps_program_or_its_runtime_opening_its_url() {
        let mut app = package("com.example.app", "application", "usr/bin/app", &[]);
        app.entry_args = vec!["--fullscreen".into()];
        let base_package = package("com.example.base", "base", "bin/sh", &[]);
        let spec = base();
        let config = runtime_config(&instance(&spec, &[&app, &base_package])).unwrap();
        assert_eq!(config["process"]["args"], json!(["/usr/bin/app", "--fullscreen"]));

        let web = package("com.example.web", "application", "https://example.com/app", &[]);
        let mut browser = package("com.example.browser", "runtime", "usr/bin/browser", &[]);
        browser.entry_args = vec!["--kiosk".into()];
        let config = runtime_config(&instance(&spec, &[&web, &browser, &base_package])).unwrap();
        assert_eq!(
            config["process"]["args"],
            json!(["/usr/bin/browser", "--kiosk", "https://example.com/app"])
        );
        let alone = runtime_config(&instance(&spec, &[&web])).unwrap_err().to_string();
        assert!(
            alone.contains("com.example.web") && alone.contains("entryPoint"),
            "{alone}"
        );
    }

    #[test]
    fn environments_stack_from_the_base_up() {
        let app = package("a", "application", "bin/app", &[("MODE", "app"), ("APP_ONLY", "1")]);
        let runtime = package("r", "runtime", "bin/r", &[("MODE", "runtime"), ("RUNTIME_ONLY", "1")]);
        let spec = base();
        let config = runtime_config(&instance(&spec, &[&app, &runtime])).unwrap();
        let env: Vec<&str> = config["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"MODE=app"), "{env:?}");
        assert!(!env.contains(&"MODE=runtime"));
        assert!(env.contains(&"RUNTIME_ONLY=1") && env.contains(&"APP_ONLY=1"));
        assert!(env.contains(&"APP_PACKAGE_VERSION=1.2.0"));
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "the base spec's env stays");
    }

    #[test]
    fn memory_storage_and_hostname_come_from_the_app() {
        let mut app = package("com.example.app", "application", "bin/app", &[]);
        app.configuration.insert(MEMORY_KEY.into(), json!({"system": "256M"}));
        app.configuration
            .insert(STORAGE_KEY.into(), json!({"maxLocalStorage": "1G"}));
        let spec = base();
        let config = runtime_config(&instance(&spec, &[&app])).unwrap();
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], json!(256u64 << 20));
        assert_eq!(config["hostname"], "com.example.app");
        let env = config["process"]["env"].to_string();
        assert!(env.contains(&format!("CPU_MEMORY_LIMIT={}", 256u64 << 20)), "{env}");
        assert!(env.contains(&format!("STORAGE_LIMIT={}", 1u64 << 30)), "{env}");
        // With Dobby's plugins, the quota holds: a loopback image of that size.
        let loopback = &config["rdkPlugins"]["storage"]["data"]["loopback"][0];
        assert_eq!(loopback["destination"], "/data");
        assert_eq!(loopback["imgsize"], json!(1u64 << 30));
        assert_eq!(loopback["source"], "/opt/dac/data/app/data.img");
        let data_mount = |config: &Value| {
            config["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == "/data")
                .cloned()
        };
        assert!(data_mount(&config).is_none());
        // Without them, a bind mount.
        let mut plain = base();
        plain.as_object_mut().unwrap().remove("rdkPlugins");
        let config = runtime_config(&instance(&plain, &[&app])).unwrap();
        assert_eq!(data_mount(&config).unwrap()["source"], "/opt/dac/data/app");
        app.configuration
            .insert(STORAGE_KEY.into(), json!({"maxLocalStorage": "3G"}));
        let error = runtime_config(&instance(&spec, &[&app])).unwrap_err().to_string();
        assert!(error.contains("2 GiB"), "{error}");

        app.configuration.insert(MEMORY_KEY.into(), json!({"system": "lots"}));
        let error = runtime_config(&instance(&spec, &[&app])).unwrap_err().to_string();
        assert!(error.contains("configuration.urn:rdk:config:memory.system"), "{error}");
    }

    #[test]
    fn the_gpu_layer_gives_devices_groups_and_files() {
        let app = package("a", "application", "bin/app", &[]);
        let gpu = VendorGpuSupport {
            dev_nodes: vec!["/dev/dri/card0".into()],
            group_ids: vec![44],
            files: vec![BindFile {
                kind: "bind".into(),
                source: "/usr/share/glvnd/egl_vendor.d/50_mesa.json".into(),
                destination: "/usr/share/glvnd/egl_vendor.d/50_mesa.json".into(),
            }],
        };
        let devices = [DeviceNode {
            path: "/dev/dri/card0".into(),
            kind: 'c',
            major: 226,
            minor: 0,
            file_mode: 0o660,
            uid: 0,
            gid: 44,
        }];
        let spec = base();
        let config = runtime_config(&Instance {
            gpu: Some(&gpu),
            devices: &devices,
            users: Some((30000, 30000)),
            ..instance(&spec, &[&app])
        })
        .unwrap();
        assert_eq!(config["linux"]["devices"][0]["major"], 226);
        let rules = config["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false, "the base spec's deny-all stays first");
        assert_eq!(
            rules[1],
            json!({"allow": true, "type": "c", "major": 226, "minor": 0, "access": "rwm"})
        );
        assert_eq!(config["process"]["user"]["additionalGids"], json!([44]));
        assert_eq!(
            config["linux"]["gidMappings"],
            json!([{"containerID": 0, "hostID": 30000, "size": 1}, {"containerID": 44, "hostID": 44, "size": 1}])
        );
        assert_eq!(
            config["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": 30000, "size": 1}])
        );
        assert!(
            config["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "user")
        );
        let mounts = config["mounts"].to_string();
        assert!(mounts.contains("50_mesa.json"), "{mounts}");
    }

    #[test]
    fn dobby_specs_get_the_plugin_launcher_and_plain_ones_do_not() {
        let app = package("a", "application", "bin/app", &[]);
        let spec = base();
        let config = runtime_config(&instance(&spec, &[&app])).unwrap();
        for hook in HOOKS {
            let hooks = config["hooks"][hook].as_array().unwrap();
            assert_eq!(hooks.len(), 1, "{hook}");
            assert_eq!(hooks[0]["path"], PLUGIN_LAUNCHER);
            assert_eq!(hooks[0]["args"][2], hook);
            assert_eq!(hooks[0]["args"][4], "/run/stb-agent/instances/app/bundle/config.json");
        }
        let mut plain = base();
        plain.as_object_mut().unwrap().remove("rdkPlugins");
        let config = runtime_config(&instance(&plain, &[&app])).unwrap();
        assert!(config.get("hooks").is_none());
    }

    #[test]
    fn sockets_are_bound_and_announced() {
        let app = package("a", "application", "bin/app", &[]);
        let spec = base();
        let config = runtime_config(&Instance {
            wayland_socket: Some(Path::new("/run/wayland-0")),
            rialto_socket: Some(Path::new("/tmp/rialto-0")),
            ..instance(&spec, &[&app])
        })
        .unwrap();
        let env = config["process"]["env"].to_string();
        assert!(env.contains("WAYLAND_DISPLAY=wayland-0") && env.contains("RIALTO_SOCKET_PATH=/tmp/rialto-0"));
        let mounts = config["mounts"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["destination"] == WAYLAND_IN_CONTAINER && m["source"] == "/run/wayland-0")
        );
    }

    #[test]
    fn a_base_spec_that_is_not_one_is_named() {
        let app = package("a", "application", "bin/app", &[]);
        let broken = json!([1, 2]);
        let error = runtime_config(&instance(&broken, &[&app])).unwrap_err().to_string();
        assert!(error.contains("base spec"), "{error}");
    }
}
