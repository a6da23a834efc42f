//! A test double of Dobby, RDK's container manager: it owns `org.rdk.dobby`
//! on a bus, serves `/org/rdk/dobby` with the interfaces `org.rdk.dobby.ctrl1`
//! and `org.rdk.dobby.admin1` with Dobby's exact method names and
//! signatures, and checks each bundle the way `DobbyManager::startContainerFromBundle`
//! does (id rules, absolute path, `config.json`, rootfs, `ociVersion`
//! handling, plugins, DobbyInit). Failures answer `-1` with the reason on
//! stderr only, as Dobby does.
//!
//! It is a double, not Dobby: containers of Dobby-mode bundles (with
//! rdkPlugins) are only simulated (Started, then Stopped when asked);
//! crun-mode bundles (no rdkPlugins) run with real `crun` when `crun` is set.
//! Where real Dobby would crash (GetInfo on a container without plugins), the
//! double answers a D-Bus error, so tests catch a client that would crash the
//! box's Dobby.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use zbus::interface;
use zbus::object_server::SignalEmitter;

pub const BUS_NAME: &str = "org.rdk.dobby";
pub const OBJECT_PATH: &str = "/org/rdk/dobby";
/// Dobby's hook launcher, which the `1.0.2-dobby` conversion adds.
const PLUGIN_LAUNCHER: &str = "/usr/bin/DobbyPluginLauncher";
const DOBBY_INIT: &str = "/usr/libexec/DobbyInit";
/// A box's Dobby has every plugin of its schema but the test plugin.
fn is_installed_plugin(name: &str) -> bool {
    let name = name.to_lowercase();
    name != "testrdkplugin" && bundlegen_protocol::plugins::DOBBY_PLUGINS.contains(&name.as_str())
}

/// Container states as Dobby numbers them on the wire (`DobbyProtocol.h`).
pub mod state {
    pub const INVALID: i32 = 0;
    pub const STARTING: i32 = 1;
    pub const RUNNING: i32 = 2;
    pub const STOPPING: i32 = 3;
}

#[derive(Debug)]
struct Container {
    id: String,
    state: i32,
    has_plugins: bool,
    /// `crun run` of a crun-mode bundle.
    process: Option<u32>,
}

/// What the double knows and how it behaves.
#[derive(Clone)]
pub struct Dobby {
    containers: Arc<Mutex<BTreeMap<i32, Container>>>,
    next_descriptor: Arc<Mutex<u32>>,
    /// Run crun-mode bundles with real crun.
    pub crun: bool,
}

impl Dobby {
    pub fn new(crun: bool) -> Dobby {
        Dobby {
            containers: Arc::default(),
            next_descriptor: Arc::new(Mutex::new(0x2de)),
            crun,
        }
    }

    /// Descriptors 1..1024 from a fixed LFSR sequence, as Dobby's
    /// `allocDescriptor` (so the same values come back after a restart).
    async fn allocate(&self) -> i32 {
        let containers = self.containers.lock().await;
        let mut state = self.next_descriptor.lock().await;
        loop {
            let bit = ((*state >> 9) ^ (*state >> 6)) & 1;
            *state = ((*state << 1) | bit) & 0x3ff;
            let candidate = *state as i32;
            if candidate != 0 && !containers.contains_key(&candidate) {
                return candidate;
            }
        }
    }
}

/// Dobby's container id rules (`utils/source/ContainerId.cpp`).
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && id.chars().any(|c| c.is_ascii_alphabetic())
        && !id.contains("..")
}

fn refuse(id: &str, reason: String) -> i32 {
    eprintln!("dobby-test-double: failed to start container '{id}': {reason}");
    -1
}

/// Checks and converts a bundle as Dobby does; returns whether it has rdkPlugins.
fn prepare_bundle(id: &str, bundle: &Path) -> Result<bool, String> {
    if !bundle.is_absolute() {
        return Err(format!("bundle path {} is not absolute", bundle.display()));
    }
    let meta = std::fs::metadata(bundle).map_err(|e| format!("bundle {}: {e}", bundle.display()))?;
    if !meta.is_dir() {
        return Err(format!("bundle {} is not a directory", bundle.display()));
    }
    // Dobby fchmods the bundle directory to 0755.
    std::fs::set_permissions(bundle, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let config_path = bundle.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let mut config: Value = serde_json::from_str(&text).map_err(|e| format!("failed to parse config.json: {e}"))?;
    if !config.is_object() {
        return Err("config.json is not an object".into());
    }
    let root = config
        .pointer("/root/path")
        .and_then(Value::as_str)
        .ok_or("config.json has no root.path")?;
    let rootfs = if Path::new(root).is_absolute() {
        PathBuf::from(root)
    } else {
        bundle.join(root)
    };
    if !rootfs.is_dir() {
        return Err(format!("could not find rootfs at {}", rootfs.display()));
    }
    if config.get("legacyPlugins").is_some() {
        return Err("legacyPlugins need a LEGACY_COMPONENTS build".into());
    }
    let plugins = config
        .get("rdkPlugins")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, plugin) in &plugins {
        let required = plugin.get("required").and_then(Value::as_bool).unwrap_or(false);
        if required && !is_installed_plugin(name) {
            return Err(format!("required plugin {name} is not installed"));
        }
        if !plugin.get("data").is_some_and(Value::is_object) && name != "localtime" {
            return Err(format!("plugin {name} has no data object"));
        }
    }
    check_dobby_init(&config, &rootfs)?;
    match config.get("ociVersion").and_then(Value::as_str) {
        Some("1.0.2-dobby") => {
            if plugins.is_empty() {
                // Real Dobby starts it, then crashes at its next restart
                // (NetworkingPlugin on a null rdk_plugins): refuse loudly.
                return Err("a 1.0.2-dobby bundle without rdkPlugins crashes Dobby's restart".into());
            }
            std::fs::write(bundle.join("config-dobby.json"), &text).map_err(|e| e.to_string())?;
            config["ociVersion"] = json!("1.0.2");
            config["hostname"] = json!(id);
            let hook = |name: &str| json!({"path": PLUGIN_LAUNCHER, "args": ["DobbyPluginLauncher", "-h", name, "-c", bundle.join("config.json")]});
            let hooks = config["hooks"].as_object_mut().map(std::mem::take).unwrap_or_default();
            let mut hooks = Value::Object(hooks);
            for name in ["createRuntime", "createContainer", "poststart", "poststop"] {
                let list = hooks[name].as_array().cloned().unwrap_or_default();
                let mut list: Vec<Value> = list;
                list.push(hook(name));
                hooks[name] = Value::Array(list);
            }
            config["hooks"] = hooks;
        }
        Some("1.0.2") if !plugins.is_empty() => {
            let launcher_hooks = config
                .pointer("/hooks/createRuntime")
                .and_then(Value::as_array)
                .is_some_and(|h| h.iter().any(|h| h["path"] == PLUGIN_LAUNCHER));
            if !launcher_hooks && !bundle.join("config-dobby.json").exists() {
                return Err("rdkPlugins without launcher hooks and no config-dobby.json".into());
            }
            config["hostname"] = json!(id);
        }
        _ => {}
    }
    // Dobby always rewrites config.json (through libocispec).
    let rewritten = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    std::fs::write(&config_path, rewritten).map_err(|e| e.to_string())?;
    Ok(!plugins.is_empty())
}

/// A process that starts with DobbyInit needs it in the container: mounted
/// from the host, or a real file in the rootfs (Dobby#314: a placeholder
/// fails at exec).
fn check_dobby_init(config: &Value, rootfs: &Path) -> Result<(), String> {
    let first = config.pointer("/process/args/0").and_then(Value::as_str);
    if first != Some(DOBBY_INIT) {
        return Ok(());
    }
    let mounted = config["mounts"]
        .as_array()
        .is_some_and(|mounts| mounts.iter().any(|m| m["destination"] == DOBBY_INIT));
    let in_rootfs = std::fs::metadata(rootfs.join(DOBBY_INIT.trim_start_matches('/'))).is_ok_and(|m| m.len() > 0);
    if mounted || in_rootfs {
        Ok(())
    } else {
        Err(format!("{DOBBY_INIT} is neither mounted nor in the rootfs"))
    }
}

/// Whether the cgroup layout is hybrid (v1 plus `/sys/fs/cgroup/unified`),
/// which crun refuses unless the cgroup2 mount is hidden from it.
fn hybrid_cgroups() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified")))
}

/// The ctrl1 interface.
pub struct Ctrl {
    pub dobby: Dobby,
}

#[interface(name = "org.rdk.dobby.ctrl1")]
impl Ctrl {
    /// `ssah`: the 3-argument form of StartFromBundle.
    async fn start_from_bundle(
        &self,
        id: &str,
        bundle_path: &str,
        _files: Vec<zbus::OwnedFd>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> i32 {
        if !valid_id(id) {
            return refuse(id, "invalid container id".into());
        }
        if self.dobby.containers.lock().await.values().any(|c| c.id == id) {
            return refuse(id, "a container with this id already exists".into());
        }
        let bundle = PathBuf::from(bundle_path);
        let has_plugins = match prepare_bundle(id, &bundle) {
            Ok(has_plugins) => has_plugins,
            Err(reason) => return refuse(id, reason),
        };
        let cd = self.dobby.allocate().await;
        let run_crun = self.dobby.crun && !has_plugins;
        let mut process = None;
        if run_crun {
            let mut command = if hybrid_cgroups() {
                let mut c = tokio::process::Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run -b \"$0\" \"$1\"")
                    .arg(&bundle)
                    .arg(id);
                c
            } else {
                let mut c = tokio::process::Command::new("crun");
                c.arg("run").arg("-b").arg(&bundle).arg(id);
                c
            };
            command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit());
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => return refuse(id, format!("crun: {e}")),
            };
            process = child.id();
            let (dobby, id_owned, emitter) = (self.dobby.clone(), id.to_string(), emitter.to_owned());
            tokio::spawn(async move {
                let status = child.wait().await.ok();
                let raw = status.map_or(0, |s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.into_raw()
                });
                dobby.containers.lock().await.remove(&cd);
                let _ = Ctrl::stopped_with_status(&emitter, cd, &id_owned, raw).await;
                let _ = Ctrl::stopped(&emitter, cd, &id_owned).await;
            });
        }
        self.dobby.containers.lock().await.insert(
            cd,
            Container {
                id: id.to_string(),
                state: state::RUNNING,
                has_plugins,
                process,
            },
        );
        let _ = Ctrl::started(&emitter, cd, id).await;
        cd
    }

    /// `ib` → `b`: true means "accepted"; the Stopped signals follow.
    async fn stop(&self, cd: i32, force: bool, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) -> bool {
        let mut containers = self.dobby.containers.lock().await;
        let Some(container) = containers.get_mut(&cd) else {
            return false;
        };
        container.state = state::STOPPING;
        if container.process.is_some() {
            let signal = if force { "KILL" } else { "TERM" };
            let id = container.id.clone();
            drop(containers);
            let crun = move |signal: &str| {
                std::process::Command::new("crun")
                    .args(["kill", &id, signal])
                    .stderr(std::process::Stdio::null())
                    .status()
            };
            let _ = crun(signal);
            // Dobby's grace: ~0.5 s, then SIGKILL.
            let dobby = self.dobby.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if dobby.containers.lock().await.contains_key(&cd) {
                    let _ = crun("KILL");
                }
            });
            return true;
        }
        let id = container.id.clone();
        containers.remove(&cd);
        drop(containers);
        let status = if force { 9 } else { 15 };
        let _ = Ctrl::stopped_with_status(&emitter, cd, &id, status).await;
        let _ = Ctrl::stopped(&emitter, cd, &id).await;
        true
    }

    /// `i` → `i`: 0 for an unknown descriptor.
    async fn get_state(&self, cd: i32) -> i32 {
        self.dobby
            .containers
            .lock()
            .await
            .get(&cd)
            .map_or(state::INVALID, |c| c.state)
    }

    /// `` → `aias`.
    async fn list(&self) -> (Vec<i32>, Vec<String>) {
        let containers = self.dobby.containers.lock().await;
        (
            containers.keys().copied().collect(),
            containers.values().map(|c| c.id.clone()).collect(),
        )
    }

    /// `i` → `s`. Real Dobby segfaults on a container without rdkPlugins.
    async fn get_info(&self, cd: i32) -> zbus::fdo::Result<String> {
        let containers = self.dobby.containers.lock().await;
        match containers.get(&cd) {
            None => Ok(String::new()),
            Some(c) if !c.has_plugins => Err(zbus::fdo::Error::Failed(
                "GetInfo on a container without rdkPlugins: real Dobby crashes here".into(),
            )),
            Some(c) => Ok(
                json!({"id": c.id, "state": c.state, "pids": c.process.into_iter().collect::<Vec<_>>()}).to_string(),
            ),
        }
    }

    #[zbus(signal)]
    async fn started(emitter: &SignalEmitter<'_>, cd: i32, id: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn stopped_with_status(emitter: &SignalEmitter<'_>, cd: i32, id: &str, status: i32) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn stopped(emitter: &SignalEmitter<'_>, cd: i32, id: &str) -> zbus::Result<()>;
}

/// The admin1 interface (the part clients use).
pub struct Admin;

#[interface(name = "org.rdk.dobby.admin1")]
impl Admin {
    fn ping(&self) {}

    #[zbus(signal)]
    async fn ready(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}

/// Serves the double on the bus at `address` until the connection drops.
pub async fn serve(address: &str, dobby: Dobby) -> zbus::Result<zbus::Connection> {
    let connection = zbus::connection::Builder::address(address)
        .serve_at(OBJECT_PATH, Ctrl { dobby })
        .serve_at(OBJECT_PATH, Admin)
        .name(BUS_NAME)
        .build()
        .await?;
    let admin = connection.object_server().interface::<_, Admin>(OBJECT_PATH).await?;
    Admin::ready(admin.signal_emitter()).await?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_follow_dobbys_rules() {
        for good in ["com.rdk.app", "a", "app_1-2", &"x".repeat(128)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in ["", "123", "a..b", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    fn bundle(config: Value, with_rootfs: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        if with_rootfs {
            std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        }
        dir
    }

    #[test]
    fn dobby_mode_bundles_are_converted_as_dobby_does() {
        let dir = bundle(
            json!({"ociVersion": "1.0.2-dobby", "root": {"path": "rootfs"}, "x-extra": 1,
                   "rdkPlugins": {"logging": {"required": true, "data": {"sink": "devnull"}}}}),
            true,
        );
        assert_eq!(prepare_bundle("app", dir.path()), Ok(true));
        let rewritten: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(rewritten["ociVersion"], "1.0.2");
        assert_eq!(rewritten["hostname"], "app");
        assert_eq!(rewritten["hooks"]["poststop"][0]["path"], PLUGIN_LAUNCHER);
        assert!(dir.path().join("config-dobby.json").exists());
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn bad_bundles_are_refused_with_a_reason() {
        let no_rootfs = bundle(json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}}), false);
        assert!(prepare_bundle("app", no_rootfs.path()).unwrap_err().contains("rootfs"));
        let no_plugins = bundle(json!({"ociVersion": "1.0.2-dobby", "root": {"path": "rootfs"}}), true);
        assert!(
            prepare_bundle("app", no_plugins.path())
                .unwrap_err()
                .contains("rdkPlugins")
        );
        let unknown = bundle(
            json!({"ociVersion": "1.0.2-dobby", "root": {"path": "rootfs"},
                   "rdkPlugins": {"teleport": {"required": true, "data": {}}}}),
            true,
        );
        assert!(prepare_bundle("app", unknown.path()).unwrap_err().contains("teleport"));
        let no_init = bundle(
            json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": [DOBBY_INIT, "/app"]}}),
            true,
        );
        assert!(prepare_bundle("app", no_init.path()).unwrap_err().contains("DobbyInit"));
        assert!(
            prepare_bundle("app", Path::new("relative/bundle"))
                .unwrap_err()
                .contains("absolute")
        );
        let broken = tempfile::tempdir().unwrap();
        std::fs::write(broken.path().join("config.json"), "{").unwrap();
        assert!(prepare_bundle("app", broken.path()).unwrap_err().contains("parse"));
    }
}
