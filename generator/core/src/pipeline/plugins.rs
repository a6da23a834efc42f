//! Dobby's `rdkPlugins`: networking, storage, logging, devicemapper, ipc,
//! minidump, oomcrash, thunder, gpu, plus the operator's; and what crun mode
//! does instead. Everything written validates against Dobby's schema.

use std::path::Path;

use bundlegen_protocol::config::platform::Logging;
use bundlegen_protocol::plugins::{
    DeviceMapperData, DynamicMount, FileOptions, GpuData, LoggingData, LoopbackMount, Plugin, RdkPlugins, StorageData,
    split_mount_options,
};
use bundlegen_protocol::runtime::Mount;
use sha2::{Digest, Sha256};

use super::mounts::OPTIONAL;
use super::{Inputs, StageError};
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

/// `MS_NOSUID | MS_NODEV | MS_NOEXEC`, BundleGen's loopback flags.
const LOOPBACK_FLAGS: i32 = 14;
const NSSWITCH: &str = "hosts: files mdns4_minimal [NOTFOUND=return] dns mdns4\nprotocols: files\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n";

fn int32(value: u64, what: &str) -> Result<i32, StageError> {
    i32::try_from(value).map_err(|_| {
        StageError::Incompatible(vec![format!(
            "{what} of {value} bytes does not fit Dobby's 32-bit field (at most 2 GiB - 1)"
        )])
    })
}

pub fn apply(
    bundle: &mut Bundle<dyn Rootfs>,
    inputs: &Inputs<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), StageError> {
    let mut plugins = RdkPlugins::default();
    if let Some(dir) = inputs.platform.dobby.as_ref().and_then(|d| d.plugin_dir.as_ref()) {
        bundle.add_mount(Mount::new(dir, "bind", dir, &["rbind", "nosuid", "nodev", "ro"]));
    }
    networking(bundle, inputs, &mut plugins)?;
    storage(bundle, inputs, &mut plugins)?;
    plugins.logging = logging(bundle, inputs, warnings);
    let platform = inputs.platform;
    let app = inputs.app;
    if platform.hardware.graphics {
        let dynamic: Vec<String> = platform
            .gpu
            .iter()
            .flat_map(|g| &g.devs)
            .filter(|d| d.dynamic)
            .map(|d| d.path.clone())
            .collect();
        if !dynamic.is_empty() {
            plugins.devicemapper = Some(Plugin::required(DeviceMapperData { devices: dynamic }));
        }
    }
    if app.ipc.is_some_and(|e| e.enable) {
        plugins.ipc = platform.ipc.clone().map(Plugin::required);
    }
    if app.minidump.is_some_and(|e| e.enable) {
        plugins.minidump = platform.minidump.clone().map(Plugin::required);
    }
    if app.oomcrash.is_some_and(|e| e.enable) {
        plugins.oomcrash = platform.oomcrash.clone().map(Plugin::required);
    }
    if let Some(thunder) = &app.thunder {
        plugins.thunder = Some(Plugin {
            required: true,
            depends_on: vec!["networking".into()],
            data: thunder.clone(),
        });
    }
    if let Some(memory) = app.resources.gpu {
        plugins.gpu = Some(Plugin::required(GpuData {
            memory: Some(int32(memory.bytes(), "the GPU memory limit")?),
        }));
    }
    plugins.merge(&inputs.operator.rdk_plugins);
    bundle.config.rdk_plugins = Some(plugins);
    Ok(())
}

fn networking(
    bundle: &mut Bundle<dyn Rootfs>,
    inputs: &Inputs<'_>,
    plugins: &mut RdkPlugins,
) -> Result<(), StageError> {
    plugins.networking = Some(Plugin::required(inputs.app.network.clone()));
    // Name resolution files the networking plugin relies on; an image's own
    // files are kept (BundleGen overwrote them, and wrote a broken hosts file).
    for (path, text) in [("etc/nsswitch.conf", NSSWITCH), ("etc/hosts", HOSTS)] {
        write_if_missing(bundle, path, text)?;
    }
    if inputs.options.create_mount_points {
        write_if_missing(bundle, "etc/resolv.conf", "")?;
    }
    Ok(())
}

fn write_if_missing(bundle: &mut Bundle<dyn Rootfs>, path: &str, text: &str) -> Result<(), StageError> {
    let path = Path::new(path);
    if bundle
        .rootfs
        .kind(path)
        .map_err(StageError::rootfs("networking"))?
        .is_some()
    {
        return Ok(());
    }
    bundle
        .rootfs
        .write_file(path, &mut text.as_bytes(), None)
        .map(drop)
        .map_err(StageError::rootfs("networking"))
}

fn storage(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, plugins: &mut RdkPlugins) -> Result<(), StageError> {
    let mut data = StorageData::default();
    let app = inputs.app;
    if let Some(persistent) = inputs.platform.storage.as_ref().and_then(|s| s.persistent.as_ref()) {
        for volume in &app.storage.persistent {
            // The image name is the hash of the path, so it survives upgrades.
            let name = bundlegen_protocol::digest::to_hex(&Sha256::digest(volume.path.as_bytes()));
            data.loopback.push(LoopbackMount {
                destination: volume.path.clone(),
                flags: LOOPBACK_FLAGS,
                fstype: Some(persistent.fstype.clone().unwrap_or_else(|| "ext4".into())),
                source: format!("{}/{}/{name}.img", persistent.storage_dir.trim_end_matches('/'), app.id),
                imgsize: Some(int32(
                    volume.size.bytes(),
                    &format!("the persistent volume {}", volume.path),
                )?),
                ..LoopbackMount::default()
            });
            bundle
                .create_mount_point(&volume.path, true)
                .map_err(StageError::rootfs("mount points"))?;
            if inputs.options.create_mount_points {
                bundle
                    .create_mount_point(&format!("{}.temp", volume.path.trim_end_matches('/')), true)
                    .map_err(StageError::rootfs("mount points"))?;
            }
        }
    }
    let user = bundle.process_user();
    for volume in &app.storage.temp {
        let mut options: Vec<String> = ["nosuid", "strictatime", "mode=755"].map(String::from).to_vec();
        options.push(format!("size={}", volume.size.bytes()));
        if user.uid != 0 {
            options.push(format!("uid={}", user.uid));
        }
        if user.gid != 0 {
            options.push(format!("gid={}", user.gid));
        }
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        bundle.add_mount(Mount::new(&volume.path, "tmpfs", "tmpfs", &options));
        bundle
            .create_mount_point(&volume.path, true)
            .map_err(StageError::rootfs("mount points"))?;
    }
    // Optional mounts go to the storage plugin, which mounts them only if the
    // source exists when the container starts.
    let mut kept = Vec::new();
    for mut mount in std::mem::take(&mut bundle.config.mounts) {
        let optional = mount.options.iter().flatten().any(|o| o == OPTIONAL);
        if !optional {
            kept.push(mount);
            continue;
        }
        let options: Vec<String> = mount
            .options
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o != OPTIONAL)
            .collect();
        let (flags, data_options) = split_mount_options(&options);
        data.dynamic.push(DynamicMount {
            destination: mount.destination,
            flags,
            options: data_options,
            source: mount.source.unwrap_or_default(),
        });
    }
    bundle.config.mounts = kept;
    if data != StorageData::default() {
        plugins.storage = Some(Plugin::required(data));
    }
    Ok(())
}

fn logging(
    bundle: &mut Bundle<dyn Rootfs>,
    inputs: &Inputs<'_>,
    warnings: &mut Vec<String>,
) -> Option<Plugin<LoggingData>> {
    let config: &Logging = inputs.platform.logging.as_ref().or(inputs.operator.logging.as_ref())?;
    if let Some(process) = bundle.config.process.as_mut() {
        process.terminal = true;
    }
    let mut data = LoggingData {
        sink: config.mode.clone(),
        ..LoggingData::default()
    };
    match config.mode.as_str() {
        "file" => {
            let dir = config.log_dir.as_deref().unwrap_or("/var/log").trim_end_matches('/');
            data.file_options = Some(FileOptions {
                path: format!("{dir}/{}.log", inputs.app.id),
                limit: config.limit.unwrap_or(-1),
            });
            for stream in ["stdout", "stderr"] {
                bundle
                    .config
                    .annotations
                    .insert(format!("run.oci.hooks.{stream}"), format!("/dev/{stream}"));
            }
        }
        "journald" => data.journald_options = inputs.platform.journald_options().cloned(),
        _ => {}
    }
    if config.limit.is_some() && config.mode != "file" {
        warnings.push(format!(
            "logging.limit only applies to file logging, not {}",
            config.mode
        ));
    }
    Some(Plugin::required(data))
}

/// crun mode: no plugins. What they would have done is dropped, with a warning.
pub fn drop_for_crun(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, warnings: &mut Vec<String>) {
    let app = inputs.app;
    let ignored: Vec<&str> = [
        ("ipc", app.ipc.is_some_and(|e| e.enable)),
        ("minidump", app.minidump.is_some_and(|e| e.enable)),
        ("oomcrash", app.oomcrash.is_some_and(|e| e.enable)),
        ("thunder", app.thunder.is_some()),
        ("gpu memory limit", app.resources.gpu.is_some()),
        ("persistent storage", !app.storage.persistent.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, wanted)| wanted.then_some(name))
    .collect();
    if !ignored.is_empty() {
        warnings.push(format!(
            "crun mode has no Dobby plugins; ignored: {}",
            ignored.join(", ")
        ));
    }
    let before = bundle.config.mounts.len();
    bundle
        .config
        .mounts
        .retain(|m| !m.options.iter().flatten().any(|o| o == OPTIONAL));
    if bundle.config.mounts.len() != before {
        warnings.push("crun mode cannot make mounts optional; X-dobby.optional mounts were left out".into());
    }
}
