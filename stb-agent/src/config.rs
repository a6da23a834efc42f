//! The agent's configuration file (TOML). Every field has a default, so an
//! empty file is valid; unknown fields are errors (a typo must not silently
//! keep a default).
//!
//! ```toml
//! server = "https://bundlegen.example"     # the generator service
//! platform = "rpi3_reference_vc4_dunfell"  # this box's platform there
//! token_file = "/etc/stb-agent/token"      # device token for the service
//! storage_root = "/opt/dac"                # bundles, app data, state
//! quota = "2G"                             # most bytes of bundles
//! trusted_keys = ["BASE64..."]             # bundle signing keys
//! allow_unsigned = false                   # true: bundles without a signature install too
//!
//! [packages]
//! ca_roots = "/etc/rdk/certs"              # CA roots RALF packages' signers chain to
//! verity = "kernel"                        # or "userspace" (boxes without device-mapper)
//!
//! [developer]
//! enabled = false                          # accept bundles pushed by developers
//! listen = "0.0.0.0:9443"
//! token_file = "/etc/stb-agent/dev-token"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bundlegen_protocol::config::size::Size;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/stb-agent/agent.toml";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Base URL of the generator service; none: only URL installs.
    pub server: Option<String>,
    /// Allow `server` to be plain `http://` on a host other than loopback
    /// (the device token then crosses the network in the clear).
    pub insecure_server: bool,
    /// This box's platform name in the service.
    pub platform: Option<String>,
    /// The device token for the service.
    pub token_file: Option<PathBuf>,
    /// A private CA (PEM) for the service and bundle URLs.
    pub ca_file: Option<PathBuf>,
    /// Bundles (`apps/`), app data (`data/`), state, downloads.
    pub storage_root: PathBuf,
    /// Most bytes the installed bundles may take.
    pub quota: Size,
    /// Ed25519 public keys (base64, 32 bytes) bundles must be signed with.
    pub trusted_keys: Vec<String>,
    /// Install bundles that carry no signature (their sha256 is still
    /// checked); a signature given is always checked. For test boxes.
    pub allow_unsigned: bool,
    /// D-Bus address; default: the system bus.
    pub dbus_address: Option<String>,
    /// Installs running at once (on different apps).
    pub max_concurrent_operations: usize,
    /// Probe the box and upload the result to the service.
    pub probe: bool,
    /// The root the probe reads (`/` on a box).
    pub probe_root: PathBuf,
    /// This box's architecture (`arm`, `arm64`, `amd64`, ...), which
    /// bundles must be built for; default: that of its programs (`/bin/sh`
    /// under `probe_root`). For a stand-in box on a developer's machine.
    pub arch: Option<String>,
    /// How often to look for software changes (a new probe is uploaded
    /// only when something changed).
    pub probe_interval_seconds: u64,
    /// Download attempts before an install fails.
    pub download_attempts: u32,
    /// Free space needed besides the download, as a multiple of its size
    /// (unpacked bundles are larger than their archives).
    pub unpack_factor: u32,
    /// RALF packages: trust, integrity, and how their containers are made.
    pub packages: PackagesConfig,
    /// Developer push (`bundlegen push`): for test boxes only.
    pub developer: DeveloperConfig,
}

/// How the content of RALF packages is checked while it is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum VerityMode {
    /// dm-verity (`veritysetup open`): the kernel checks every block as it
    /// is read, for as long as the package is mounted.
    Kernel,
    /// The hash tree and every block are checked against the signed root
    /// hash once, before the first mount after install or boot; later
    /// changes to the stored file are not seen. For boxes without
    /// device-mapper.
    Userspace,
}

/// RALF packages: trust, integrity, and how their containers are made.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct PackagesConfig {
    /// A directory of PEM files: the CA certificates a package's signing
    /// certificate must chain to (expiry is checked).
    pub ca_roots: PathBuf,
    /// How EROFS content is checked against its signed root hash.
    pub verity: VerityMode,
    /// `veritysetup`, for `verity = "kernel"`.
    pub veritysetup: PathBuf,
    /// Where running instances are assembled (mounts, config.json); on a
    /// tmpfs such as /run, so a reboot starts clean.
    pub runtime_dir: PathBuf,
    /// The GPU layer overlaid on top of every app: `"probe"` (the agent
    /// makes it from its probe of the box, and again when the box
    /// changes), a directory made by `platform-probe --format gpu-layer`,
    /// or `"none"`.
    pub gpu_layer: String,
    /// The OCI runtime config every app's config.json starts from;
    /// default: the one built in (docs/stb-agent.md shows it).
    pub base_spec: Option<PathBuf>,
    /// Host user and group an app's root is mapped to (a user namespace);
    /// none: no user namespace.
    pub app_uid: Option<u32>,
    pub app_gid: Option<u32>,
    /// Size of the tmpfs holding an instance's writable layer.
    pub scratch_size: Size,
    /// The compositor's socket, given to apps at /tmp/wayland-0.
    pub wayland_socket: Option<PathBuf>,
    /// Rialto's socket, given to apps at /tmp/rialto-0.
    pub rialto_socket: Option<PathBuf>,
    /// Registries (`host[:port]`) reached over plain HTTP for `docker://`
    /// installs; for test setups only.
    pub insecure_registries: Vec<String>,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        PackagesConfig {
            ca_roots: PathBuf::from("/etc/rdk/certs"),
            verity: VerityMode::Kernel,
            veritysetup: PathBuf::from("veritysetup"),
            runtime_dir: PathBuf::from("/run/stb-agent"),
            gpu_layer: "none".into(),
            base_spec: None,
            app_uid: None,
            app_gid: None,
            scratch_size: Size(64 << 20),
            wayland_socket: None,
            rialto_socket: None,
            insecure_registries: Vec::new(),
        }
    }
}

/// Where the GPU layer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuLayerSource {
    None,
    /// Made by the agent from its probe.
    Probe,
    /// A directory with `rootfs/` and `config.json`.
    Dir(PathBuf),
}

impl PackagesConfig {
    pub fn gpu_layer_source(&self) -> GpuLayerSource {
        match self.gpu_layer.as_str() {
            "none" | "" => GpuLayerSource::None,
            "probe" => GpuLayerSource::Probe,
            dir => GpuLayerSource::Dir(PathBuf::from(dir)),
        }
    }

    fn check(&self) -> Result<(), String> {
        for (name, path) in [
            ("packages.ca_roots", &self.ca_roots),
            ("packages.runtime_dir", &self.runtime_dir),
        ] {
            if !path.is_absolute() {
                return Err(format!("{name} must be an absolute path"));
            }
        }
        if let GpuLayerSource::Dir(dir) = self.gpu_layer_source()
            && !dir.is_absolute()
        {
            return Err(format!(
                "packages.gpu_layer {:?}: \"probe\", \"none\" or an absolute directory",
                self.gpu_layer
            ));
        }
        if self.app_uid.is_some() != self.app_gid.is_some() {
            return Err("packages.app_uid and packages.app_gid go together".into());
        }
        if self.scratch_size.bytes() < 1 << 20 {
            return Err("packages.scratch_size must be at least 1M".into());
        }
        Ok(())
    }
}

/// Developer push (`bundlegen push`): for test boxes only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct DeveloperConfig {
    /// Accept bundles pushed by developers (`POST /v1/push`).
    pub enabled: bool,
    /// Address the push endpoint listens on.
    pub listen: SocketAddr,
    /// Holds the token developers must present; required when enabled.
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain for HTTPS; without it the endpoint is plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server: None,
            insecure_server: false,
            platform: None,
            token_file: None,
            ca_file: None,
            storage_root: PathBuf::from("/opt/dac"),
            quota: Size(2 << 30),
            trusted_keys: Vec::new(),
            allow_unsigned: false,
            dbus_address: None,
            max_concurrent_operations: 2,
            probe: true,
            probe_root: PathBuf::from("/"),
            arch: None,
            probe_interval_seconds: 3600,
            download_attempts: 6,
            unpack_factor: 3,
            packages: PackagesConfig::default(),
            developer: DeveloperConfig::default(),
        }
    }
}

impl Default for DeveloperConfig {
    fn default() -> Self {
        DeveloperConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let invalid = |message: String| AgentConfigError::Invalid {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let config: AgentConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if !self.storage_root.is_absolute() {
            return Err("storage_root must be an absolute path".into());
        }
        for key in &self.trusted_keys {
            let bytes = bundlegen_protocol::signature::base64_decode(key);
            if bytes.is_none_or(|b| b.len() != 32) {
                return Err(format!("trusted_keys: {key:?} is not 32 bytes of base64"));
            }
        }
        if let Some(server) = &self.server {
            if self.token_file.is_none() {
                return Err("server needs token_file".into());
            }
            if let Some(problem) = server_problem(server, self.insecure_server) {
                return Err(format!("server {server:?}: {problem}"));
            }
        }
        if self.developer.enabled && self.developer.token_file.is_none() {
            return Err("developer.enabled needs developer.token_file".into());
        }
        if self.developer.tls_cert.is_some() != self.developer.tls_key.is_some() {
            return Err("developer.tls_cert and developer.tls_key go together".into());
        }
        if self.developer.enabled && self.developer.tls_cert.is_none() && !self.developer.listen.ip().is_loopback() {
            return Err("developer.listen is not a loopback address: give developer.tls_cert and tls_key".into());
        }
        if let Some(arch) = &self.arch
            && bundlegen_protocol::probe::Abi::for_arch(arch, None).is_none()
        {
            return Err(format!(
                "arch {arch:?}: not an architecture (arm, arm64, amd64, 386, mips, ...)"
            ));
        }
        if self.max_concurrent_operations == 0 || self.download_attempts == 0 {
            return Err("max_concurrent_operations and download_attempts must be at least 1".into());
        }
        self.packages.check()
    }

    /// Each setting in force that weakens the box's defences, said once at
    /// start so it is not left on by mistake.
    pub fn weak_settings(&self) -> Vec<&'static str> {
        let mut weak = Vec::new();
        if let Some(problem) = self.signature_policy_problem() {
            weak.push(problem);
        }
        if self.allow_unsigned {
            weak.push("allow_unsigned: bundles without a signature are installed");
        }
        if self.insecure_server {
            weak.push("insecure_server: the device token may cross the network in the clear");
        }
        if self.packages.verity == VerityMode::Userspace {
            weak.push("packages.verity = \"userspace\": package content is checked once per boot, not as it is read");
        }
        if self.developer.enabled {
            weak.push("developer.enabled: bundles pushed with the developer token are installed and launched");
        }
        weak
    }

    /// Why no install could pass the signature policy, if none could.
    pub fn signature_policy_problem(&self) -> Option<&'static str> {
        (self.trusted_keys.is_empty() && !self.allow_unsigned)
            .then_some("no trusted_keys are configured and allow_unsigned is false: no bundle can be verified (RALF packages are verified against packages.ca_roots)")
    }

    pub fn trusted_keys(&self) -> Vec<Vec<u8>> {
        self.trusted_keys
            .iter()
            .filter_map(|k| bundlegen_protocol::signature::base64_decode(k))
            .collect()
    }
}

/// What is wrong with the service's URL: not http(s), or plain HTTP to a
/// host other than loopback unless `insecure` allows it.
fn server_problem(server: &str, insecure: bool) -> Option<String> {
    let Ok(url) = reqwest::Url::parse(server) else {
        return Some("not a URL".into());
    };
    match url.scheme() {
        "https" => None,
        "http" => {
            let host = url.host_str().unwrap_or("");
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            (!loopback && !insecure).then(|| {
                "plain HTTP to a host other than loopback would send the device token in the clear: use https, \
                 or set insecure_server = true"
                    .into()
            })
        }
        other => Some(format!("the scheme {other:?} is not http or https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AgentConfig, AgentConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentConfig::load(&path)
    }

    #[test]
    fn an_empty_file_is_the_documented_defaults() {
        let config = load("").unwrap();
        assert_eq!(config, AgentConfig::default());
        assert_eq!(config.storage_root, Path::new("/opt/dac"));
        assert_eq!(config.quota.bytes(), 2 << 30);
        assert!(!config.developer.enabled);
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.toml");
        assert_eq!(AgentConfig::load(&shipped).unwrap(), AgentConfig::default());
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            ("storage_rot = \"/x\"", "storage_rot"),
            ("storage_root = \"relative\"", "absolute"),
            ("quota = \"lots\"", "quota"),
            ("trusted_keys = [\"abc\"]", "trusted_keys"),
            ("server = \"https://s\"", "token_file"),
            (
                "server = \"http://bundlegen.example\"\ntoken_file = \"/t\"",
                "insecure_server",
            ),
            ("server = \"ftp://s\"\ntoken_file = \"/t\"", "scheme"),
            ("arch = \"z80\"", "arch"),
            ("[developer]\nenabled = true", "developer.token_file"),
            (
                "[developer]\nenabled = true\ntoken_file = \"/t\"\nlisten = \"0.0.0.0:1\"",
                "loopback",
            ),
        ];
        for (text, mention) in cases {
            let error = load(text).unwrap_err().to_string();
            assert!(error.contains(mention), "{text}: {error}");
            assert!(error.contains("agent.toml"), "{error}");
        }
        let good =
            load("quota = \"512M\"\ntrusted_keys = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n").unwrap();
        assert_eq!(good.quota.bytes(), 512 << 20);
        assert_eq!(good.trusted_keys().len(), 1);
    }

    #[test]
    fn plain_http_to_the_service_stays_on_loopback_unless_allowed() {
        let accepted = [
            ("https://bundlegen.example", false),
            ("http://127.0.0.1:8080", false),
            ("http://[::1]:8080", false),
            ("http://localhost:8080", false),
            ("http://bundlegen.example", true),
        ];
        for (server, insecure) in accepted {
            assert_eq!(server_problem(server, insecure), None, "{server}");
        }
        for server in [
            "http://bundlegen.example",
            "http://10.0.0.1:8080",
            "http://localhost.evil.example",
        ] {
            assert!(server_problem(server, false).is_some(), "{server}");
        }
    }

    #[test]
    fn without_keys_unsigned_bundles_must_be_allowed_explicitly() {
        assert!(AgentConfig::default().signature_policy_problem().is_some());
        let test_box = AgentConfig {
            allow_unsigned: true,
            ..AgentConfig::default()
        };
        assert_eq!(test_box.signature_policy_problem(), None);
        let keyed = load("trusted_keys = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n").unwrap();
        assert_eq!(keyed.signature_policy_problem(), None);
    }
}
