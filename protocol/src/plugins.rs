//! Dobby's `rdkPlugins`: every plugin of Dobby's schema
//! (`bundle/runtime-schemas/defs-plugins.json`), typed so that what we write
//! validates against it. Plugins we do not know are kept verbatim in `other`.
//!
//! (Over 600 lines: one typed struct per plugin of Dobby's schema, in the
//! schema's order, so the file reads side by side with it.)

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One plugin entry: `{required, dependsOn?, data}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Plugin_{T}"))]
#[serde(rename_all = "camelCase")]
pub struct Plugin<T> {
    /// Dobby refuses to start the container if the plugin is missing or fails.
    pub required: bool,
    /// Plugins that must run before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The plugin's settings.
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

/// Every plugin of Dobby's schema by its `rdkPlugins` key: the typed fields
/// of [`RdkPlugins`].
pub const DOBBY_PLUGINS: [&str; 16] = [
    "networking",
    "storage",
    "logging",
    "devicemapper",
    "ipc",
    "minidump",
    "oomcrash",
    "thunder",
    "gpu",
    "appservicesrdk",
    "ionmemory",
    "localtime",
    "rtscheduling",
    "httpproxy",
    "gamepad",
    "testrdkplugin",
];

/// All plugins of a bundle, in the order BundleGen writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RdkPlugins {
    /// Network namespace, NAT, port forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Plugin<NetworkingData>>,
    /// Loopback images, optional host mounts, mount owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Plugin<StorageData>>,
    /// Where the app's output goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Plugin<LoggingData>>,
    /// Fixes the numbers of dynamic device nodes at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devicemapper: Option<Plugin<DeviceMapperData>>,
    /// D-Bus buses in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<Plugin<IpcData>>,
    /// Crash dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minidump: Option<Plugin<MinidumpData>>,
    /// Out-of-memory reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oomcrash: Option<Plugin<OomCrashData>>,
    /// Access to Thunder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thunder: Option<Plugin<ThunderData>>,
    /// GPU memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Plugin<GpuData>>,
    /// Ports of RDK app services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appservicesrdk: Option<Plugin<AppServicesRdkData>>,
    /// ION heap limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionmemory: Option<Plugin<IonMemoryData>>,
    /// The box's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localtime: Option<Plugin<LocalTimeData>>,
    /// Real-time scheduling limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtscheduling: Option<Plugin<RtSchedulingData>>,
    /// HTTP proxy settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub httpproxy: Option<Plugin<HttpProxyData>>,
    /// Gamepad access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamepad: Option<Plugin<GamepadData>>,
    /// Dobby's test plugin.
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

/// What [`lenient_bool`] accepts, for the JSON Schema.
#[cfg(feature = "schema")]
fn lenient_bool_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"]}]})
}

/// Dobby's networking plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NetworkingData {
    /// Network type: `nat`, `open` or `none`; must be one of the platform's `network.options`.
    #[serde(rename = "type")]
    pub kind: String,
    /// IPv4 (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<bool>,
    /// IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// Written as a boolean; `"true"` (as in BundleGen's samples) is read as `true`.
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "lenient_bool_schema"))]
    pub dnsmasq: Option<bool>,
    /// Port forwarding to and from the box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forwarding: Option<PortForwarding>,
    /// Multicast groups forwarded into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multicast_forwarding: Vec<MulticastForwarding>,
    /// Ports shared with other containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inter_container: Vec<InterContainer>,
}

/// Port forwarding between the box and the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PortForwarding {
    /// Make forwarded ports reachable on the container's localhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_masquerade: Option<bool>,
    /// Box ports forwarded into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_to_container: Vec<PortSpec>,
    /// Container ports forwarded to the box.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_to_host: Vec<PortSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PortSpec {
    /// Port number.
    pub port: u16,
    /// `tcp` or `udp` (default `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A multicast group forwarded into the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MulticastForwarding {
    /// Group address.
    pub ip: String,
    /// Port number.
    pub port: u16,
}

/// Which side opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A port shared with other containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct InterContainer {
    /// `in`: other containers reach this one; `out`: this one reaches them.
    pub direction: Direction,
    /// Port number.
    pub port: u16,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Make the port reachable on localhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_masquerade: Option<bool>,
}

/// Dobby's storage plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StorageData {
    /// Loopback images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loopback: Vec<LoopbackMount>,
    /// Host paths mounted only if they exist at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic: Vec<DynamicMount>,
    /// Owners set on host paths before the container starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_owner: Vec<MountOwner>,
}

/// A loopback image Dobby creates (if missing) and mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoopbackMount {
    /// Absolute path in the container.
    pub destination: String,
    /// `mount(2)` flags.
    pub flags: i32,
    /// Filesystem of the image (`ext4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Mount data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Image file on the box.
    pub source: String,
    /// Image size in bytes (Dobby reads an int32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imgsize: Option<i32>,
    /// Keep the image when the container stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// Dobby creates and checks the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imgmanagement: Option<bool>,
}

/// A host path bind-mounted only if it exists when the container starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DynamicMount {
    /// Absolute path in the container.
    pub destination: String,
    /// `mount(2)` flags (Dobby adds `MS_BIND`).
    pub flags: i32,
    /// Mount data (not flags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Path on the box.
    pub source: String,
}

/// A host path whose owner Dobby sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MountOwner {
    /// Path on the box.
    pub source: String,
    /// User name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Also everything below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
}

/// Dobby's logging plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoggingData {
    /// `file`, `journald` or `devnull`.
    pub sink: String,
    /// For the `file` sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_options: Option<FileOptions>,
    /// For the `journald` sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journald_options: Option<JournaldOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileOptions {
    /// Log file on the box.
    pub path: String,
    /// Largest log in bytes; -1 is unlimited (Dobby reads garbage if absent).
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JournaldOptions {
    /// Syslog priority of the app's lines (`LOG_INFO`, ...).
    pub priority: String,
}

/// Dobby's devicemapper plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeviceMapperData {
    /// Paths of device nodes whose numbers Dobby reads at start.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// Dobby's IPC plugin: D-Bus buses in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IpcData {
    /// Which bus appears as the session bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Which bus appears as the system bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Which bus appears as the debug bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<String>,
}

/// Dobby's minidump plugin: where crash dumps go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MinidumpData {
    /// Directory on the box.
    pub destination_path: String,
}

/// Dobby's OOM-crash plugin: where out-of-memory reports go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OomCrashData {
    /// Directory on the box.
    pub path: String,
}

/// Dobby's Thunder plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ThunderData {
    /// Trusted apps get Thunder without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
    /// URL of the token service for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_url: Option<String>,
    /// Most connections to Thunder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_limit: Option<i64>,
}

/// Dobby's gpu plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GpuData {
    /// GPU memory limit in bytes (Dobby reads an int32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
}

/// Dobby's appservicesrdk plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AppServicesRdkData {
    /// The app's menu name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_menu: Option<String>,
    /// More ports the app may reach on the box.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_ports: Vec<u16>,
    /// Most connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_limit: Option<u32>,
}

/// Dobby's ionmemory plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct IonMemoryData {
    /// Bytes, for heaps not listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_limit: Option<u64>,
    /// Per-heap limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heaps: Vec<IonHeap>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IonHeap {
    /// Heap name.
    pub name: String,
    /// Bytes.
    pub limit: u64,
}

/// Dobby's localtime plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LocalTimeData {
    /// Set `TZ` in the container.
    #[serde(default, rename = "setTZ", skip_serializing_if = "Option::is_none")]
    pub set_tz: Option<String>,
    /// The box's localtime file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Dobby's rtscheduling plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RtSchedulingData {
    /// Highest real-time priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtlimit: Option<i32>,
    /// Default real-time priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtdefault: Option<i32>,
}

/// Dobby's httpproxy plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HttpProxyData {
    /// The proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyAddress>,
    /// Hosts reached without the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_proxy: Vec<String>,
    /// No proxy for the container bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_proxy_on_bridge: Option<bool>,
    /// The proxy's CA certificate.
    #[serde(default, rename = "proxyRootCACert", skip_serializing_if = "Option::is_none")]
    pub proxy_root_ca_cert: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProxyAddress {
    /// Host name or address.
    pub host: String,
    /// Port number.
    pub port: u16,
}

/// Dobby's gamepad plugin data (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GamepadData {}

/// Dobby's test plugin data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TestRdkPluginData {
    /// Anything.
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

    /// Each listed name is a typed field (a plugin we do not type lands in
    /// `other`).
    #[test]
    fn the_list_names_every_typed_plugin() {
        for name in DOBBY_PLUGINS {
            let text = format!(r#"{{"{name}": {{"required": false, "data": {{}}}}}}"#);
            if let Ok(plugins) = serde_json::from_str::<RdkPlugins>(&text) {
                assert!(plugins.other.is_empty(), "{name} is not a typed plugin");
            }
        }
        let unknown: RdkPlugins = serde_json::from_str(r#"{"vendor": {"required": false, "data": {}}}"#).unwrap();
        assert_eq!(unknown.names(), ["vendor"]);
    }

    /// And every typed field is listed (the schema's properties are the fields).
    #[cfg(feature = "schema")]
    #[test]
    fn every_typed_plugin_is_listed() {
        let schema = serde_json::to_value(schemars::schema_for!(RdkPlugins)).unwrap();
        let mut fields: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = DOBBY_PLUGINS.to_vec();
        fields.sort_unstable();
        listed.sort_unstable();
        assert_eq!(fields, listed);
    }

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
