//! Each stage on its own, with small inputs, as BundleGen's L1 tests do.

use std::path::Path;

use bundlegen_protocol::config::app::AppMetadata;
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::runtime::{Process, RuntimeConfig};
use serde_json::{Value, json};

use super::*;
use crate::bundle::Place;

fn platform(extra: Value) -> PlatformTemplate {
    let mut base = json!({"platformName": "p", "os": "linux", "arch": {"arch": "arm", "variant": "v7"},
        "rdk": {"version": "2020Q4", "supportedFeatures": []}, "hardware": {"graphics": true},
        "network": {"options": ["open", "nat"]}});
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap()
}

fn app(extra: Value) -> AppMetadata {
    let mut base = json!({"id": "com.example.app", "type": "application/vnd.rdk-app.dac.native", "graphics": true,
        "network": {"type": "open"}, "storage": {}, "resources": {"ram": "128M"}});
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    if let Value::Object(map) = extra {
        for (key, value) in map {
            base[key] = value;
        }
    }
}

fn options() -> Options {
    Options {
        crun: false,
        create_mount_points: false,
        libraries: Default::default(),
    }
}

/// A bundle with umoci's base config for an image running `/usr/bin/app`.
struct Fixture {
    _tmp: tempfile::TempDir,
    bundle: Bundle,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = Bundle::create(&Place {
            output: &tmp.path().join("out"),
            work_dir: None,
        })
        .unwrap();
        let mut fixture = Fixture { _tmp: tmp, bundle };
        fixture.bundle.config = RuntimeConfig {
            oci_version: "1.0.0".into(),
            process: Some(Process {
                terminal: true,
                args: vec!["/usr/bin/app".into()],
                env: vec!["PATH=/usr/bin:/bin".into()],
                cwd: "/".into(),
                ..Process::default()
            }),
            ..RuntimeConfig::default()
        };
        fixture
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.bundle.config).unwrap()
    }

    fn exists(&mut self, path: &str) -> bool {
        self.bundle.rootfs.lstat(Path::new(path)).unwrap().is_some()
    }
}

fn inputs<'a>(
    platform: &'a PlatformTemplate,
    app: &'a AppMetadata,
    operator: &'a OperatorConfig,
    options: &'a Options,
    image: &'a TargetPlatform,
) -> Inputs<'a> {
    Inputs {
        platform,
        app,
        operator,
        options,
        image_platform: image,
    }
}

fn arm() -> TargetPlatform {
    TargetPlatform::new("linux", "arm", None)
}

#[test]
fn process_puts_dobby_init_first_and_merges_environments() {
    let platform = platform(json!({"envvar": ["XDG_RUNTIME_DIR=/tmp", "PATH=/platform"],
        "resourceLimits": [{"type": "RLIMIT_NPROC", "hard": 300, "soft": 300}],
        "dobby": {"dobbyInitPath": "/opt/init"}}));
    let operator: OperatorConfig =
        serde_json::from_value(json!({"envvar": ["LANG=C", "XDG_RUNTIME_DIR=/run"]})).unwrap();
    let (app, opts, image) = (app(json!({})), options(), arm());
    let mut fx = Fixture::new();
    process::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap();
    let config = fx.config();
    assert_eq!(config["process"]["args"], json!(["/opt/init", "/usr/bin/app"]));
    assert_eq!(
        config["process"]["env"],
        json!(["PATH=/usr/bin:/bin", "XDG_RUNTIME_DIR=/run", "PATH=/platform", "LANG=C"]),
        "platform entries are appended (as BundleGen); the operator's replace"
    );
    assert_eq!(
        config["process"]["rlimits"],
        json!([{"type": "RLIMIT_NPROC", "hard": 300, "soft": 300}])
    );
    assert_eq!(
        config["mounts"],
        json!([{"destination": "/opt/init", "type": "bind", "source": "/opt/init", "options": ["rbind", "nosuid", "nodev", "ro"]}])
    );

    let crun = Options {
        crun: true,
        ..options()
    };
    let mut fx = Fixture::new();
    process::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &crun, &image),
        &mut vec![],
    )
    .unwrap();
    let config = fx.config();
    assert_eq!(config["process"]["args"], json!(["/usr/bin/app"]));
    assert!(config["process"].get("terminal").is_none(), "no terminal for crun run");
    assert!(config.get("mounts").is_none());
}

#[test]
fn arguments_with_spaces_stay_whole() {
    let (platform, app, operator, opts, image) = (
        platform(json!({})),
        app(json!({})),
        OperatorConfig::default(),
        options(),
        arm(),
    );
    let mut fx = Fixture::new();
    fx.bundle.config.process.as_mut().unwrap().args = vec!["/usr/bin/iperf3".into(), "-s -p 5201".into()];
    let mut warnings = vec![];
    process::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut warnings,
    )
    .unwrap();
    assert_eq!(
        fx.config()["process"]["args"],
        json!(["/usr/libexec/DobbyInit", "/usr/bin/iperf3", "-s -p 5201"])
    );
    assert_eq!(warnings.len(), 1);
    fx.bundle.config.process.as_mut().unwrap().args.clear();
    let err = process::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing to run"), "{err}");
}

#[test]
fn root_hostname_and_security() {
    let platform = platform(
        json!({"root": {"path": "/data/{id}/rootfs", "readonly": true}, "hostname": "{id}-box",
        "apparmorProfile": "dac", "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}, "dobby": {"generateCompliantConfig": true}}),
    );
    let (app, operator, opts, image) = (app(json!({})), OperatorConfig::default(), options(), arm());
    let mut fx = Fixture::new();
    let inputs = inputs(&platform, &app, &operator, &opts, &image);
    root::apply(&mut fx.bundle, &inputs);
    root::security(&mut fx.bundle, &inputs);
    let config = fx.config();
    assert_eq!(config["ociVersion"], "1.0.2", "compliant configs are plain OCI");
    assert_eq!(
        config["root"],
        json!({"path": "/data/com.example.app/rootfs", "readonly": true})
    );
    assert_eq!(config["hostname"], "com.example.app-box");
    assert_eq!(config["process"]["apparmorProfile"], "dac");
    assert_eq!(config["linux"]["seccomp"], json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    let plain = self::platform(json!({}));
    root::apply(
        &mut fx.bundle,
        &super::Inputs {
            platform: &plain,
            ..inputs
        },
    );
    assert_eq!(fx.bundle.config.oci_version, "1.0.2-dobby");
}

#[test]
fn mounts_substitute_ids_and_honour_x_options() {
    let platform = platform(json!({"mounts": [
        {"source": "/tmp/{id}", "destination": "/tmp/app", "type": "bind", "options": ["rbind", "X-mount.mkdir"]},
        {"destination": "/tmp/westeros", "options": ["X-mount.no"]},
        {"source": "/etc/app.conf", "destination": "/etc/app.conf", "type": "bind", "options": ["bind", "ro"]}]}));
    let operator: OperatorConfig = serde_json::from_value(
        json!({"mounts": [{"source": "/opt/op", "destination": "/op", "type": "bind", "options": ["rbind"]}]}),
    )
    .unwrap();
    let app =
        app(json!({"mounts": [{"source": "/opt/app", "destination": "/app", "type": "bind", "options": ["rbind"]}]}));
    let (image, opts) = (
        arm(),
        Options {
            create_mount_points: true,
            ..options()
        },
    );
    let mut fx = Fixture::new();
    mounts::apply(&mut fx.bundle, &inputs(&platform, &app, &operator, &opts, &image)).unwrap();
    let destinations: Vec<String> = fx.bundle.config.mounts.iter().map(|m| m.destination.clone()).collect();
    assert_eq!(
        destinations,
        ["/tmp/app", "/etc/app.conf", "/op", "/app"],
        "X-mount.no is not mounted; order: platform, operator, app"
    );
    assert_eq!(
        fx.bundle.config.mounts[0].source.as_deref(),
        Some("/tmp/com.example.app")
    );
    assert_eq!(
        fx.bundle
            .rootfs
            .lstat(Path::new("tmp/app"))
            .unwrap()
            .map(|s| s.st_mode & 0o170000),
        Some(0o040000),
        "X-mount.mkdir: a directory"
    );
    assert_eq!(
        fx.bundle
            .rootfs
            .lstat(Path::new("etc/app.conf"))
            .unwrap()
            .map(|s| s.st_mode & 0o170000),
        Some(0o100000),
        "otherwise an empty file"
    );
    assert!(fx.exists("tmp/westeros"), "X-mount.no still makes the mount point");
}

#[test]
fn resources_deny_devices_and_cap_memory() {
    let (app, operator, opts, image) = (
        app(json!({"resources": {"ram": "256M"}})),
        OperatorConfig::default(),
        options(),
        arm(),
    );
    let capped = platform(json!({"hardware": {"graphics": true, "maxRAM": "120M"}}));
    let mut fx = Fixture::new();
    let mut warnings = vec![];
    resources::apply(
        &mut fx.bundle,
        &inputs(&capped, &app, &operator, &opts, &image),
        &mut warnings,
    );
    let config = fx.config();
    assert_eq!(
        config["linux"]["resources"]["devices"],
        json!([{"allow": false, "access": "rwm"}])
    );
    assert_eq!(config["linux"]["resources"]["memory"]["limit"], 120 << 20);
    assert_eq!(warnings.len(), 1);
    let uncapped = platform(json!({}));
    let mut fx = Fixture::new();
    resources::apply(
        &mut fx.bundle,
        &inputs(&uncapped, &app, &operator, &opts, &image),
        &mut vec![],
    );
    assert!(
        fx.config()["linux"]["resources"].get("memory").is_none(),
        "no maxRam, no limit"
    );
}

#[test]
fn graphics_mounts_environment_and_devices() {
    let platform = platform(json!({"gpu": {"gfxLibs": [], "envvar": ["EGL_PLATFORM=wayland"],
        "extraMounts": [{"source": "/usr/share/fonts", "destination": "/usr/share/fonts", "type": "bind", "options": ["rbind", "ro"]}],
        "westeros": {"hostSocket": "/tmp/westeros-0"}, "waylandDisplay": "wayland-0",
        "devs": [{"type": "c", "path": "/dev/dri/card0", "major": 226, "minor": 0, "access": "rw"},
                 {"type": "c", "path": "/dev/mali0", "major": 10, "minor": 60}]}}));
    let (app, operator, opts, image) = (app(json!({})), OperatorConfig::default(), options(), arm());
    let mut fx = Fixture::new();
    let inputs = inputs(&platform, &app, &operator, &opts, &image);
    resources::apply(&mut fx.bundle, &inputs, &mut vec![]);
    resources::gpu(&mut fx.bundle, &inputs).unwrap();
    let config = fx.config();
    assert_eq!(
        config["process"]["env"],
        json!([
            "PATH=/usr/bin:/bin",
            "EGL_PLATFORM=wayland",
            "WAYLAND_DISPLAY=wayland-0"
        ])
    );
    let destinations: Vec<&str> = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(destinations, ["/usr/share/fonts", "/tmp/westeros"]);
    assert_eq!(
        config["linux"]["devices"][1],
        json!({"path": "/dev/mali0", "type": "c", "major": 10, "minor": 60})
    );
    assert_eq!(
        config["linux"]["resources"]["devices"][1],
        json!({"allow": true, "type": "c", "major": 226, "minor": 0, "access": "rw"})
    );
    assert_eq!(
        config["linux"]["resources"]["devices"][2]["access"], "rw",
        "access defaults to rw"
    );
    // An app without graphics gets none of it.
    let headless = self::app(json!({"graphics": false}));
    let mut fx = Fixture::new();
    resources::gpu(
        &mut fx.bundle,
        &super::Inputs {
            app: &headless,
            ..inputs
        },
    )
    .unwrap();
    assert!(fx.config().get("mounts").is_none());
}

#[test]
fn users_override_with_zero_and_user_namespaces() {
    let platform = platform(json!({"usersAndGroups": {"user": {"uid": 0, "gid": 0},
        "uidMap": [{"containerID": 0, "hostID": 100000, "size": 1000}], "gidMap": [{"containerID": 0, "hostID": 100000, "size": 1000}]}}));
    let (app, operator, opts, image) = (app(json!({})), OperatorConfig::default(), options(), arm());
    let mut fx = Fixture::new();
    fx.bundle.config.process.as_mut().unwrap().user.uid = 1000;
    fx.bundle.config.process.as_mut().unwrap().user.gid = 1000;
    fx.bundle.config.linux = Some(bundlegen_protocol::runtime::Linux {
        namespaces: vec![
            bundlegen_protocol::runtime::Namespace::new("pid"),
            bundlegen_protocol::runtime::Namespace::new("user"),
        ],
        ..Default::default()
    });
    let mut warnings = vec![];
    users::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut warnings,
    );
    let config = fx.config();
    assert_eq!(
        config["process"]["user"],
        json!({"uid": 0, "gid": 0}),
        "0 overrides (BundleGen ignored it)"
    );
    assert_eq!(
        config["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": 100000, "size": 1000}])
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    let no_userns = self::platform(json!({"disableUserNamespacing": true}));
    users::apply(
        &mut fx.bundle,
        &super::Inputs {
            platform: &no_userns,
            ..inputs(&platform, &app, &operator, &opts, &image)
        },
        &mut vec![],
    );
    let config = fx.config();
    assert!(config["linux"].get("uidMappings").is_none());
    assert_eq!(config["linux"]["namespaces"], json!([{"type": "pid"}]));
}

#[test]
fn capabilities_are_sorted_and_follow_policy() {
    let operator: OperatorConfig = serde_json::from_value(json!({"capabilities": {"deny": ["CAP_NET_RAW"], "allow": ["CAP_KILL", "CAP_NET_RAW", "CAP_SYS_NICE", "CAP_CHOWN"]}})).unwrap();
    let app = app(json!({"capabilities": {"add": ["CAP_SYS_NICE", "CAP_SYS_ADMIN"], "drop": ["CAP_CHOWN"]}}));
    let (platform, opts, image) = (platform(json!({})), options(), arm());
    let mut fx = Fixture::new();
    let mut warnings = vec![];
    capabilities::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut warnings,
    );
    let config = fx.config();
    assert_eq!(
        config["process"]["capabilities"]["bounding"],
        json!(["CAP_KILL", "CAP_SYS_NICE"])
    );
    assert_eq!(
        config["process"]["capabilities"]["ambient"],
        config["process"]["capabilities"]["effective"]
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    // Without changes: BundleGen's default set, in a stable order.
    let mut fx = Fixture::new();
    let plain = self::app(json!({}));
    capabilities::apply(
        &mut fx.bundle,
        &inputs(&platform, &plain, &OperatorConfig::default(), &opts, &image),
        &mut vec![],
    );
    let mut expected: Vec<&str> = capabilities::DEFAULT_CAPABILITIES.to_vec();
    expected.sort();
    assert_eq!(fx.config()["process"]["capabilities"]["permitted"], json!(expected));
}

#[test]
fn logging_sinks() {
    let (app, operator, opts, image) = (app(json!({})), OperatorConfig::default(), options(), arm());
    let cases = [
        (
            json!({"mode": "file", "logDir": "/var/log/", "limit": 65536}),
            json!({"sink": "file", "fileOptions": {"path": "/var/log/com.example.app.log", "limit": 65536}}),
            0,
        ),
        (
            json!({"mode": "journald", "limit": 5, "journaldOptions": {"priority": "LOG_INFO"}}),
            json!({"sink": "journald", "journaldOptions": {"priority": "LOG_INFO"}}),
            1,
        ),
        (
            json!({"mode": "devnull", "journaldOptions": {"priority": "LOG_INFO"}}),
            json!({"sink": "devnull"}),
            0,
        ),
    ];
    for (logging, expected, warning_count) in cases {
        let platform = platform(json!({"logging": logging}));
        let mut fx = Fixture::new();
        let mut warnings = vec![];
        plugins::apply(
            &mut fx.bundle,
            &inputs(&platform, &app, &operator, &opts, &image),
            &mut warnings,
        )
        .unwrap();
        let config = fx.config();
        assert_eq!(config["rdkPlugins"]["logging"]["data"], expected, "{logging}");
        assert_eq!(warnings.len(), warning_count, "{logging}: {warnings:?}");
        assert_eq!(config["process"]["terminal"], true);
    }
    // The operator's logging is the default for templates without one.
    let operator: OperatorConfig = serde_json::from_value(json!({"logging": {"mode": "devnull"}})).unwrap();
    let platform = platform(json!({}));
    let mut fx = Fixture::new();
    plugins::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap();
    assert_eq!(fx.config()["rdkPlugins"]["logging"]["data"], json!({"sink": "devnull"}));
}

#[test]
fn storage_volumes_and_optional_mounts() {
    let platform = platform(json!({"storage": {"persistent": {"storageDir": "/opt/data/", "maxSize": "100M"}}}));
    let app = app(
        json!({"storage": {"persistent": [{"size": "10M", "path": "/home/private"}],
        "temp": [{"size": "1M", "path": "/home/temp"}]}}),
    );
    let (operator, opts, image) = (OperatorConfig::default(), options(), arm());
    let mut fx = Fixture::new();
    fx.bundle.config.process.as_mut().unwrap().user.uid = 1000;
    fx.bundle.config.mounts.push(bundlegen_protocol::runtime::Mount::new(
        "/tmp/rialto",
        "bind",
        "/tmp/rialto-0",
        &["rbind", "rw", "X-dobby.optional"],
    ));
    plugins::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap();
    let config = fx.config();
    let storage = &config["rdkPlugins"]["storage"]["data"];
    // sha256("/home/private") (as `sha256sum` gives it): the name survives upgrades.
    assert_eq!(
        storage["loopback"],
        json!([{"destination": "/home/private", "flags": 14, "fstype": "ext4",
        "source": "/opt/data/com.example.app/23e959658f5082a89c6db72c842271a117887b8658ab703f60eaba650b3d5f20.img", "imgsize": 10 << 20}])
    );
    assert_eq!(
        storage["dynamic"],
        json!([{"destination": "/tmp/rialto", "flags": 4096 | 16384, "source": "/tmp/rialto-0"}])
    );
    assert_eq!(
        config["mounts"],
        json!([{"destination": "/home/temp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=1048576", "uid=1000"]}])
    );
    assert!(fx.exists("home/private") && fx.exists("home/temp"));
    // Name resolution files, written because the image has none.
    assert!(fx.exists("etc/hosts") && fx.exists("etc/nsswitch.conf"));

    let huge = self::app(json!({"resources": {"ram": "1M", "gpu": "3G"}}));
    let err = plugins::apply(
        &mut Fixture::new().bundle,
        &inputs(&platform, &huge, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap_err();
    assert!(
        matches!(err, StageError::Incompatible(_)),
        "3G does not fit Dobby's int32: {err}"
    );
}

#[test]
fn an_images_own_hosts_file_is_kept() {
    let (platform, app, operator, opts, image) = (
        platform(json!({})),
        app(json!({})),
        OperatorConfig::default(),
        options(),
        arm(),
    );
    let mut fx = Fixture::new();
    let (mut file, _) = fx
        .bundle
        .rootfs
        .create_file(
            Path::new("etc/hosts"),
            0o644,
            bundlegen_protocol::root::MissingDirs::Create,
        )
        .unwrap();
    std::io::Write::write_all(&mut file, b"10.0.0.1 mine\n").unwrap();
    plugins::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap();
    let (mut file, _) = fx.bundle.rootfs.open_file_follow(Path::new("etc/hosts")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).unwrap();
    assert_eq!(text, "10.0.0.1 mine\n");
}

#[test]
fn optional_plugins_and_the_operators() {
    let platform = platform(
        json!({"ipc": {"system": "/var/run/dbus/system_bus_socket"}, "minidump": {"destinationPath": "/opt/minidumps"},
        "gpu": {"gfxLibs": [], "devs": [{"type": "c", "path": "/dev/dri/card0", "major": 226, "minor": 0, "dynamic": true}]}}),
    );
    let app = app(
        json!({"ipc": {"enable": true}, "minidump": {"enable": false}, "oomcrash": {"enable": true},
        "thunder": {"bearerUrl": "http://localhost", "trusted": true}, "resources": {"ram": "1M", "gpu": "64M"}}),
    );
    let operator: OperatorConfig =
        serde_json::from_value(json!({"rdkPlugins": {"localtime": {"required": false, "data": {"setTZ": "UTC"}}}}))
            .unwrap();
    let (opts, image) = (options(), arm());
    let mut fx = Fixture::new();
    plugins::apply(
        &mut fx.bundle,
        &inputs(&platform, &app, &operator, &opts, &image),
        &mut vec![],
    )
    .unwrap();
    let plugins = fx.config()["rdkPlugins"].clone();
    let names: Vec<&String> = plugins.as_object().unwrap().keys().collect();
    // minidump is not enabled; oomcrash is, but the platform has no oomcrash section.
    assert_eq!(
        names,
        ["devicemapper", "gpu", "ipc", "localtime", "networking", "thunder"]
    );
    assert_eq!(plugins["devicemapper"]["data"]["devices"], json!(["/dev/dri/card0"]));
    assert_eq!(plugins["gpu"]["data"]["memory"], 64 << 20);
}

#[test]
fn compliant_configs_get_the_launcher_hooks() {
    let platform =
        platform(json!({"dobby": {"generateCompliantConfig": true, "hookLauncherParametersPath": "/opt/{id}/"}}));
    let (app, operator, opts, image) = (app(json!({})), OperatorConfig::default(), options(), arm());
    let mut fx = Fixture::new();
    let inputs = inputs(&platform, &app, &operator, &opts, &image);
    plugins::apply(&mut fx.bundle, &inputs, &mut vec![]).unwrap();
    hooks::apply(&mut fx.bundle, &inputs, &mut vec![]);
    let hooks = fx.config()["hooks"].clone();
    let expected = |hook: &str| json!([{"path": "/usr/bin/DobbyPluginLauncher", "args": ["DobbyPluginLauncher", "-h", hook, "-c", "/opt/com.example.app/config.json"]}]);
    for hook in ["createRuntime", "createContainer", "poststart", "poststop"] {
        assert_eq!(hooks[hook], expected(hook), "{hook}");
    }
    let no_path = self::platform(json!({"dobby": {"generateCompliantConfig": true}}));
    let mut fx = Fixture::new();
    let mut warnings = vec![];
    plugins::apply(
        &mut fx.bundle,
        &super::Inputs {
            platform: &no_path,
            ..inputs
        },
        &mut vec![],
    )
    .unwrap();
    hooks::apply(
        &mut fx.bundle,
        &super::Inputs {
            platform: &no_path,
            ..inputs
        },
        &mut warnings,
    );
    assert!(fx.config().get("hooks").is_none() && warnings.len() == 1);
}

#[test]
fn compatibility_problems_are_all_reported() {
    let platform = platform(
        json!({"hardware": {"graphics": false}, "rdk": {"version": "2020Q4", "supportedFeatures": ["org.rdk.A"]},
        "storage": {"persistent": {"storageDir": "/d", "maxSize": "10M", "maxTotalSize": "15M", "minSize": "5M"}}}),
    );
    let app = app(
        json!({"features": ["org.rdk.A", "org.rdk.B"], "network": {"type": "private"}, "minRdkVersion": "2021Q1",
        "storage": {"persistent": [{"size": "1M", "path": "/a"}, {"size": "12M", "path": "/b"}, {"size": "8M", "path": "/c"}]}}),
    );
    let (operator, opts) = (OperatorConfig::default(), options());
    let image = TargetPlatform::new("linux", "arm64", None);
    let mut warnings = vec![];
    let err = compat::check(&inputs(&platform, &app, &operator, &opts, &image), &mut warnings).unwrap_err();
    let StageError::Incompatible(problems) = err else {
        panic!("incompatible expected")
    };
    let expected = [
        "built for linux/arm64",
        "needs graphics",
        "org.rdk.B",
        "\"private\" networking",
        "RDK 2021Q1",
        "/b asks for 12M",
        "total",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:?}");
    for (problem, needle) in problems.iter().zip(expected) {
        assert!(problem.contains(needle), "{problem} should mention {needle}");
    }
    assert_eq!(warnings.len(), 1, "the 1M volume is raised to 5M: {warnings:?}");

    // A compatible app comes back with raised volumes.
    let fine = self::app(
        json!({"graphics": false, "features": ["org.rdk.A"], "storage": {"persistent": [{"size": "1M", "path": "/a"}]}}),
    );
    let raised = compat::check(&inputs(&platform, &fine, &operator, &opts, &arm()), &mut vec![]).unwrap();
    assert_eq!(raised.storage.persistent[0].size.bytes(), 5 << 20);
}
