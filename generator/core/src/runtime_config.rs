//! The base `config.json` of a bundle, derived from the image configuration
//! exactly as `umoci unpack --rootless` (what BundleGen runs) derives it, so
//! the later pipeline stages start from the same document.
//!
//! Two deliberate differences keep the output reproducible: the user
//! namespace maps are the ones given (umoci maps the invoking user), and the
//! `/etc/resolv.conf` bind does not copy the build host's mount flags.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::rootfs::Rootfs;
use bundlegen_protocol::idmap::IdMapping;
use bundlegen_protocol::runtime::{Capabilities, Linux, Mount, Namespace, Process, Rlimit, Root, RuntimeConfig, User};
use oci_spec::image::ImageConfiguration;

/// `ociVersion` umoci 0.4.7 writes.
pub const UMOCI_OCI_VERSION: &str = "1.0.0";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    #[error("image configuration: user {spec:?}: {reason}")]
    User { spec: String, reason: String },
    #[error("image configuration: environment entry {entry:?} has no '=' or an empty name")]
    Env { entry: String },
    #[error("image configuration: os {0:?} is not supported (only linux)")]
    Os(String),
}

/// The runtime config for `image`, whose rootfs is `rootfs` (read for
/// `/etc/passwd` and `/etc/group` to resolve the image's `User`).
pub fn from_image(
    image: &ImageConfiguration,
    rootfs: &mut dyn Rootfs,
    uid_map: &[IdMapping],
    gid_map: &[IdMapping],
) -> Result<RuntimeConfig, RuntimeConfigError> {
    let os = image.os().to_string();
    if os != "linux" {
        return Err(RuntimeConfigError::Os(os));
    }
    let empty = oci_spec::image::Config::default();
    let config = image.config().as_ref().unwrap_or(&empty);
    Ok(RuntimeConfig {
        oci_version: UMOCI_OCI_VERSION.to_string(),
        process: Some(process(config, rootfs)?),
        root: Some(Root {
            path: bundlegen_protocol::archive::ROOTFS_DIR.into(),
            readonly: None,
        }),
        hostname: Some("umoci-default".into()),
        mounts: mounts(config),
        annotations: annotations(image, config),
        linux: Some(linux(uid_map, gid_map)),
        ..RuntimeConfig::default()
    })
}

/// The image's command, environment (with `HOME` of its user), user and
/// working directory, with umoci's capabilities and limits.
fn process(config: &oci_spec::image::Config, rootfs: &mut dyn Rootfs) -> Result<Process, RuntimeConfigError> {
    let mut env = vec![DEFAULT_PATH.to_string(), "TERM=xterm".to_string()];
    for entry in config.env().iter().flatten() {
        let (name, value) = entry
            .split_once('=')
            .filter(|(name, _)| !name.is_empty())
            .ok_or_else(|| RuntimeConfigError::Env { entry: entry.clone() })?;
        set_env(&mut env, name, value, true);
    }
    let user_spec = config.user().clone().unwrap_or_default();
    let user = resolve_user(&user_spec, rootfs)?;
    if let Some(home) = &user.home {
        set_env(&mut env, "HOME", home, false);
    }
    let args: Vec<String> = config
        .entrypoint()
        .iter()
        .flatten()
        .chain(config.cmd().iter().flatten())
        .cloned()
        .collect();
    let caps: Vec<String> = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        .map(String::from)
        .to_vec();
    Ok(Process {
        terminal: true,
        user: User {
            uid: user.uid,
            gid: user.gid,
            ..User::default()
        },
        args,
        env,
        cwd: config
            .working_dir()
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into()),
        capabilities: Some(Capabilities::all(&caps)),
        rlimits: vec![Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            hard: 1024,
            soft: 1024,
        }],
        no_new_privileges: Some(true),
        ..Process::default()
    })
}

/// umoci's default mounts, a tmpfs per image volume, `/sys` and `resolv.conf`.
fn mounts(config: &oci_spec::image::Config) -> Vec<Mount> {
    let mut mounts = vec![
        Mount::new("/proc", "proc", "proc", &[]),
        Mount::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        Mount::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        ),
        Mount::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        Mount::new("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
    ];
    let mut volumes: Vec<&String> = config.volumes().iter().flatten().collect();
    volumes.sort();
    for volume in volumes {
        mounts.push(Mount::new(
            volume,
            "tmpfs",
            "none",
            &["rw", "nosuid", "nodev", "noexec", "relatime"],
        ));
    }
    mounts.push(Mount::new(
        "/sys",
        "bind",
        "/sys",
        &["rbind", "nosuid", "noexec", "nodev", "ro"],
    ));
    mounts.push(Mount::new(
        "/etc/resolv.conf",
        "bind",
        "/etc/resolv.conf",
        &["rbind", "ro"],
    ));
    mounts
}

/// The image's labels and umoci's `org.opencontainers.image.*` annotations.
fn annotations(image: &ImageConfiguration, config: &oci_spec::image::Config) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = config
        .labels()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut ports: Vec<&String> = config.exposed_ports().iter().flatten().collect();
    ports.sort();
    let image_annotations = [
        ("org.opencontainers.image.os", image.os().to_string()),
        (
            "org.opencontainers.image.architecture",
            image.architecture().to_string(),
        ),
        (
            "org.opencontainers.image.author",
            image.author().clone().unwrap_or_default(),
        ),
        (
            "org.opencontainers.image.created",
            created_annotation(image.created().as_deref()),
        ),
        (
            "org.opencontainers.image.stopSignal",
            config.stop_signal().clone().unwrap_or_default(),
        ),
        (
            "org.opencontainers.image.exposedPorts",
            ports.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(","),
        ),
    ];
    for (key, value) in image_annotations {
        annotations.insert(key.to_string(), value);
    }
    annotations
}

/// umoci's namespaces and masked paths, with the given id maps (identity
/// for root when none are given).
fn linux(uid_map: &[IdMapping], gid_map: &[IdMapping]) -> Linux {
    let identity = [IdMapping {
        container_id: 0,
        host_id: 0,
        size: 1,
    }];
    let or_identity = |map: &[IdMapping]| {
        if map.is_empty() {
            identity.to_vec()
        } else {
            map.to_vec()
        }
    };
    Linux {
        uid_mappings: or_identity(uid_map),
        gid_mappings: or_identity(gid_map),
        namespaces: ["pid", "ipc", "uts", "mount", "user"].map(Namespace::new).to_vec(),
        masked_paths: [
            "/proc/kcore",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]
        .map(String::from)
        .to_vec(),
        readonly_paths: [
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]
        .map(String::from)
        .to_vec(),
        ..Linux::default()
    }
}

/// Sets `NAME=value`: replaces an existing entry if `replace`, keeps it otherwise.
fn set_env(env: &mut Vec<String>, name: &str, value: &str, replace: bool) {
    let prefix = format!("{name}=");
    match env.iter_mut().find(|e| e.starts_with(&prefix)) {
        Some(existing) if replace => *existing = format!("{prefix}{value}"),
        Some(_) => {}
        None => env.push(format!("{prefix}{value}")),
    }
}

/// Go's RFC 3339 rendering of the creation time (its zero time if absent or
/// unreadable, as umoci).
fn created_annotation(created: Option<&str>) -> String {
    created
        .and_then(crate::time::go_rfc3339)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

struct ExecUser {
    uid: u32,
    gid: u32,
    home: Option<String>,
}

/// Reads an account file of the rootfs, if it has one (symlinks followed inside).
fn read_account_file(rootfs: &mut dyn Rootfs, path: &str) -> Option<String> {
    let (file, _) = rootfs.open_file_follow(Path::new(path)).ok()?;
    let mut text = String::new();
    file.take(MAX_ACCOUNT_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Resolves `user[:group]` as runc's `GetExecUser` does.
fn resolve_user(spec: &str, rootfs: &mut dyn Rootfs) -> Result<ExecUser, RuntimeConfigError> {
    let error = |reason: String| RuntimeConfigError::User {
        spec: spec.to_string(),
        reason,
    };
    let (user_arg, group_arg) = spec.split_once(':').unwrap_or((spec, ""));
    let passwd = read_account_file(rootfs, "etc/passwd");
    let entries: Vec<Vec<&str>> = passwd
        .iter()
        .flat_map(|text| text.lines())
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 4)
        .collect();
    let numeric_user = user_arg.parse::<u32>().ok();
    let matched = entries.iter().find(|fields| match (user_arg, numeric_user) {
        ("", _) => fields[2] == "0",
        (_, Some(uid)) => fields[2].parse::<u32>() == Ok(uid),
        (name, None) => fields[0] == name,
    });
    let mut user = ExecUser {
        uid: 0,
        gid: 0,
        home: None,
    };
    match (matched, numeric_user) {
        (Some(fields), _) => {
            user.uid = fields[2]
                .parse()
                .map_err(|_| error(format!("/etc/passwd has a bad uid {:?}", fields[2])))?;
            user.gid = fields[3]
                .parse()
                .map_err(|_| error(format!("/etc/passwd has a bad gid {:?}", fields[3])))?;
            user.home = fields.get(5).filter(|h| !h.is_empty()).map(|h| h.to_string());
        }
        (None, Some(uid)) => user.uid = uid,
        (None, None) if user_arg.is_empty() => {}
        (None, None) => return Err(error(format!("no user {user_arg:?} in the image's /etc/passwd"))),
    }
    if !group_arg.is_empty() {
        user.gid = match group_arg.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_account_file(rootfs, "etc/group").unwrap_or_default();
                group
                    .lines()
                    .map(|line| line.split(':').collect::<Vec<_>>())
                    .find(|fields| fields.len() >= 3 && fields[0] == group_arg)
                    .and_then(|fields| fields[2].parse().ok())
                    .ok_or_else(|| error(format!("no group {group_arg:?} in the image's /etc/group")))?
            }
        };
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use bundlegen_protocol::root::{RootDir, Symlinks};

    use super::*;

    fn image(config: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "arm",
            "os": "linux",
            "created": "2023-01-06T07:10:42Z",
            "author": "info@lgi.com",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    fn rootfs(files: &[(&str, &str)]) -> (tempfile::TempDir, RootDir) {
        let tmp = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = tmp.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let root = RootDir::open(tmp.path(), Symlinks::FollowInRoot).unwrap();
        (tmp, root)
    }

    /// The conformance image's config must give exactly what umoci gave.
    #[test]
    fn matches_umoci_for_the_conformance_image() {
        let (_tmp, mut root) = rootfs(&[]);
        let config = image(serde_json::json!({
            "ExposedPorts": {}, "Env": [], "Entrypoint": ["/usr/bin/wayland-egl-test"], "Cmd": [],
            "Volumes": {}, "WorkingDir": "/", "Labels": {}
        }));
        let ours = from_image(&config, &mut root, &[], &[]).unwrap();
        let expected: serde_json::Value = serde_json::from_str(UMOCI_CONFORMANCE_CONFIG).unwrap();
        assert_eq!(serde_json::to_value(&ours).unwrap(), expected);
    }

    #[test]
    fn users_env_volumes_and_labels() {
        let (_tmp, mut root) = rootfs(&[
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n",
            ),
            ("etc/group", "root:x:0:\nvideo:x:44:app\n"),
        ]);
        let config = image(serde_json::json!({
            "User": "app:video", "Env": ["PATH=/app/bin", "LANG=C"], "Cmd": ["run", "--fast"],
            "Volumes": {"/data": {}, "/cache": {}}, "Labels": {"org.opencontainers.image.os": "overridden", "team": "rdk"},
            "ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "StopSignal": "SIGTERM"
        }));
        let ours = from_image(&config, &mut root, &[], &[]).unwrap();
        let process = ours.process.unwrap();
        assert_eq!((process.user.uid, process.user.gid), (1000, 44));
        assert_eq!(
            process.env,
            vec!["PATH=/app/bin", "TERM=xterm", "LANG=C", "HOME=/home/app"]
        );
        assert_eq!(process.args, vec!["run", "--fast"]);
        let volumes: Vec<_> = ours
            .mounts
            .iter()
            .filter(|m| m.source.as_deref() == Some("none"))
            .map(|m| m.destination.as_str())
            .collect();
        assert_eq!(volumes, vec!["/cache", "/data"]);
        assert_eq!(ours.annotations["org.opencontainers.image.os"], "linux");
        assert_eq!(ours.annotations["team"], "rdk");
        assert_eq!(
            ours.annotations["org.opencontainers.image.exposedPorts"],
            "443/tcp,80/tcp"
        );
        assert_eq!(ours.annotations["org.opencontainers.image.stopSignal"], "SIGTERM");
    }

    #[test]
    fn numeric_users_need_no_passwd_and_names_do() {
        let (_tmp, mut root) = rootfs(&[]);
        let ours = from_image(&image(serde_json::json!({"User": "1234:5678"})), &mut root, &[], &[]).unwrap();
        let user = ours.process.unwrap().user;
        assert_eq!((user.uid, user.gid), (1234, 5678));
        let err = from_image(&image(serde_json::json!({"User": "nobody"})), &mut root, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("no user \"nobody\""), "{err}");
        let err = from_image(&image(serde_json::json!({"Env": ["NOEQUALS"]})), &mut root, &[], &[]).unwrap_err();
        assert!(matches!(err, RuntimeConfigError::Env { .. }));
    }

    #[test]
    fn passwd_symlinked_out_of_the_rootfs_is_not_read() {
        let (tmp, mut root) = rootfs(&[]);
        fs::create_dir(tmp.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("etc/passwd")).unwrap();
        // The host's /etc/passwd has a root entry with home /root; inside the
        // rootfs the link resolves to itself and is not followed out.
        let ours = from_image(&image(serde_json::json!({})), &mut root, &[], &[]).unwrap();
        assert!(!ours.process.unwrap().env.iter().any(|e| e.starts_with("HOME=")));
    }

    const UMOCI_CONFORMANCE_CONFIG: &str = r#"{
        "ociVersion": "1.0.0",
        "process": {
            "terminal": true, "user": {"uid": 0, "gid": 0},
            "args": ["/usr/bin/wayland-egl-test"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "inheritable": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "umoci-default",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]}
        ],
        "annotations": {
            "org.opencontainers.image.architecture": "arm",
            "org.opencontainers.image.author": "info@lgi.com",
            "org.opencontainers.image.created": "2023-01-06T07:10:42Z",
            "org.opencontainers.image.exposedPorts": "",
            "org.opencontainers.image.os": "linux",
            "org.opencontainers.image.stopSignal": ""
        },
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}],
            "maskedPaths": ["/proc/kcore", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    }"#;
}
