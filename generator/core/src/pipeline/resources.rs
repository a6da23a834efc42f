//! Device cgroup rules and the memory limit; the graphics stage (GPU mounts,
//! environment, Westeros socket, device nodes).

use bundlegen_protocol::runtime::{Device, DeviceRule, Memory, Mount, Resources};

use super::mounts::add_mount_spec;
use super::{Inputs, StageError};
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

pub fn apply(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, warnings: &mut Vec<String>) {
    let resources = bundle
        .config
        .linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Resources::default);
    // Deny every device first; the graphics stage allows its devices after.
    resources.devices.insert(
        0,
        DeviceRule {
            allow: false,
            access: Some("rwm".into()),
            ..DeviceRule::default()
        },
    );
    if let Some(max) = inputs.platform.hardware.max_ram {
        let wanted = inputs.app.resources.ram;
        if wanted > max {
            warnings.push(format!(
                "the app asks for {wanted} of RAM; the platform allows {max}, so it gets {max}"
            ));
        }
        let limit = wanted.min(max).bytes();
        resources.memory = Some(Memory {
            limit: Some(i64::try_from(limit).unwrap_or(i64::MAX)),
        });
    }
}

pub fn gpu(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>) -> Result<(), StageError> {
    if !inputs.app.graphics {
        return Ok(());
    }
    let Some(gpu) = &inputs.platform.gpu else {
        return Ok(());
    };
    for spec in &gpu.extra_mounts {
        add_mount_spec(bundle, inputs, spec)?;
    }
    let process = bundle.config.process.get_or_insert_with(Default::default);
    process.env.extend(gpu.envvar.iter().cloned());
    if let Some(socket) = gpu.westeros.as_ref().and_then(|w| w.host_socket.as_ref()) {
        bundle.add_mount(Mount::new(
            "/tmp/westeros",
            "bind",
            socket,
            &["rbind", "nosuid", "nodev"],
        ));
    }
    let display = gpu.wayland_display.as_deref().unwrap_or("westeros");
    bundle
        .config
        .process
        .get_or_insert_with(Default::default)
        .env
        .push(format!("WAYLAND_DISPLAY={display}"));
    let linux = bundle.config.linux.get_or_insert_with(Default::default);
    for dev in &gpu.devs {
        linux.devices.push(Device {
            path: dev.path.clone(),
            kind: dev.kind.clone(),
            major: dev.major,
            minor: dev.minor,
            ..Device::default()
        });
        linux
            .resources
            .get_or_insert_with(Resources::default)
            .devices
            .push(DeviceRule {
                allow: true,
                kind: Some(dev.kind.clone()),
                major: Some(dev.major),
                minor: Some(dev.minor),
                access: Some(dev.access.clone().unwrap_or_else(|| "rw".into())),
            });
    }
    Ok(())
}
