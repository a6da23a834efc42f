//! Dobby's `rdkPlugins`: every plugin of Dobby's schema
//! (`bundle/runtime-schemas/defs-plugins.json`), typed so that what we write
//! validates against it. Plugins we do not know are kept verbatim in `other`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One plugin entry: `{required, dependsOn?, data}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugin<T> {
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub data: T,
}

impl<T> Plugin<T> {
    /// A required plugin with no dependencies.
    pub fn required(data: T) -> Plugin<T> {
        Plugin {
            required: true,
            depends_on: Vec::new(),
            data,
        }
    }
}

/// All plugins of a bundle, in the order BundleGen writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RdkPlugins {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Plugin<NetworkingData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Plugin<StorageData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Plugin<LoggingData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devicemapper: Option<Plugin<DeviceMapperData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<Plugin<IpcData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minidump: Option<Plugin<MinidumpData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oomcrash: Option<Plugin<OomCrashData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thunder: Option<Plugin<ThunderData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Plugin<GpuData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appservicesrdk: Option<Plugin<AppServicesRdkData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionmemory: Option<Plugin<IonMemoryData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localtime: Option<Plugin<LocalTimeData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtscheduling: Option<Plugin<RtSchedulingData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub httpproxy: Option<Plugin<HttpProxyData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamepad: Option<Plugin<GamepadData>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testrdkplugin: Option<Plugin<TestRdkPluginData>>,
    /// Plugins outside Dobby's schema (built in with `EXTERNAL_PLUGIN_SCHEMA`).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl RdkPlugins {
    pub fn is_empty(&self) -> bool {
        self == &RdkPlugins::default()
    }

    /// Names of the plugins present, sorted.
    pub fn names(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Adds `other`'s plugins; a plugin present in both is taken from `other`.
    pub fn merge(&mut self, other: &RdkPlugins) {
        let (Ok(Value::Object(mut mine)), Ok(Value::Object(theirs))) =
            (serde_json::to_value(&*self), serde_json::to_value(other))
        else {
            return;
        };
        mine.extend(theirs);
        if let Ok(merged) = serde_json::from_value(Value::Object(mine)) {
            *self = merged;
        }
    }
}

/// A boolean that BundleGen's samples sometimes write as `"true"`/`"false"`.
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Bool(bool),
        Text(String),
    }
    match Option::<Lenient>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Lenient::Bool(b)) => Ok(Some(b)),
        Some(Lenient::Text(t)) => match t.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!(
                "expected true or false, got {other:?}"
            ))),
        },
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingData {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// Written as a boolean; `"true"` (as in BundleGen's samples) is read as `true`.
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub dnsmasq: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forwarding: Option<PortForwarding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multicast_forwarding: Vec<MulticastForwarding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inter_container: Vec<InterContainer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForwarding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_masquerade: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_to_container: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_to_host: Vec<PortSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MulticastForwarding {
    pub ip: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterContainer {
    pub direction: Direction,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_masquerade: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageData {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loopback: Vec<LoopbackMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic: Vec<DynamicMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_owner: Vec<MountOwner>,
}

/// A loopback image Dobby creates (if missing) and mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopbackMount {
    pub destination: String,
    /// `mount(2)` flags.
    pub flags: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    pub source: String,
    /// Image size in bytes (Dobby reads an int32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imgsize: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imgmanagement: Option<bool>,
}

/// A host path bind-mounted only if it exists when the container starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicMount {
    pub destination: String,
    /// `mount(2)` flags (Dobby adds `MS_BIND`).
    pub flags: i32,
    /// Mount data (not flags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOwner {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingData {
    /// `file`, `journald` or `devnull`.
    pub sink: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_options: Option<FileOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journald_options: Option<JournaldOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOptions {
    pub path: String,
    /// Largest log in bytes; -1 is unlimited (Dobby reads garbage if absent).
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournaldOptions {
    pub priority: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapperData {
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinidumpData {
    pub destination_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomCrashData {
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThunderData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuData {
    /// GPU memory limit in bytes (Dobby reads an int32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppServicesRdkData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_menu: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_limit: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IonMemoryData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heaps: Vec<IonHeap>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IonHeap {
    pub name: String,
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTimeData {
    #[serde(default, rename = "setTZ", skip_serializing_if = "Option::is_none")]
    pub set_tz: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtSchedulingData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtlimit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtdefault: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpProxyData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_proxy: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_proxy_on_bridge: Option<bool>,
    #[serde(default, rename = "proxyRootCACert", skip_serializing_if = "Option::is_none")]
    pub proxy_root_ca_cert: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyAddress {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GamepadData {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestRdkPluginData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<String>,
}

/// `mount(2)` flags named by mount option words; what is not a flag is data.
pub fn split_mount_options(options: &[String]) -> (i32, Vec<String>) {
    const MS_RDONLY: i32 = 1;
    const MS_NOSUID: i32 = 2;
    const MS_NODEV: i32 = 4;
    const MS_NOEXEC: i32 = 8;
    const MS_SYNCHRONOUS: i32 = 16;
    const MS_NOATIME: i32 = 1024;
    const MS_NODIRATIME: i32 = 2048;
    const MS_BIND: i32 = 4096;
    const MS_REC: i32 = 16384;
    const MS_RELATIME: i32 = 1 << 21;
    const MS_STRICTATIME: i32 = 1 << 24;
    let mut flags = 0;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= MS_NOSUID,
            "nodev" => flags |= MS_NODEV,
            "noexec" => flags |= MS_NOEXEC,
            "sync" => flags |= MS_SYNCHRONOUS,
            "noatime" => flags |= MS_NOATIME,
            "nodiratime" => flags |= MS_NODIRATIME,
            "bind" => flags |= MS_BIND,
            "rbind" => flags |= MS_BIND | MS_REC,
            "relatime" => flags |= MS_RELATIME,
            "strictatime" => flags |= MS_STRICTATIME,
            "suid" | "dev" | "exec" | "async" | "atime" | "diratime" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_strings_are_read_as_booleans_and_written_as_booleans() {
        let data: NetworkingData = serde_json::from_str(r#"{"type": "open", "dnsmasq": "true"}"#).unwrap();
        assert_eq!(data.dnsmasq, Some(true));
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"type":"open","dnsmasq":true}"#
        );
        assert!(serde_json::from_str::<NetworkingData>(r#"{"type": "open", "dnsmasq": "yes"}"#).is_err());
    }

    #[test]
    fn unknown_plugins_are_kept() {
        let text = r#"{"logging":{"required":true,"data":{"sink":"devnull"}},"vendorplugin":{"required":false,"data":{"x":1}}}"#;
        let plugins: RdkPlugins = serde_json::from_str(text).unwrap();
        assert_eq!(plugins.names(), vec!["logging", "vendorplugin"]);
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&plugins).unwrap(), original);
    }

    #[test]
    fn merge_prefers_the_other_side() {
        let mut base = RdkPlugins {
            logging: Some(Plugin::required(LoggingData {
                sink: "devnull".into(),
                ..LoggingData::default()
            })),
            ..RdkPlugins::default()
        };
        let extra = RdkPlugins {
            localtime: Some(Plugin::required(LocalTimeData {
                set_tz: Some("UTC".into()),
                path: None,
            })),
            logging: Some(Plugin::required(LoggingData {
                sink: "journald".into(),
                ..LoggingData::default()
            })),
            ..RdkPlugins::default()
        };
        base.merge(&extra);
        assert_eq!(base.names(), vec!["localtime", "logging"]);
        assert_eq!(base.logging.unwrap().data.sink, "journald");
    }

    #[test]
    fn mount_option_words_become_flags() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(split_mount_options(&words(&["rbind", "rw"])), (4096 | 16384, vec![]));
        assert_eq!(
            split_mount_options(&words(&["bind", "ro", "nosuid", "nodev"])),
            (4096 | 1 | 2 | 4, vec![])
        );
        assert_eq!(
            split_mount_options(&words(&["mode=755", "noexec"])),
            (8, words(&["mode=755"]))
        );
    }
}
