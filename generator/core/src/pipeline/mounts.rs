//! `mounts`: the platform's, the operator's and the app's, with BundleGen's
//! `{id}` substitution and its fstab-style options: `X-mount.mkdir` (the mount
//! point is a directory), `X-mount.no` (only create the mount point) and
//! `X-dobby.optional` (mounted by Dobby's storage plugin if the source exists).

use bundlegen_protocol::runtime::Mount;

use super::{Inputs, StageError};
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

pub const MKDIR: &str = "X-mount.mkdir";
pub const MOUNT_POINT_ONLY: &str = "X-mount.no";
pub const OPTIONAL: &str = "X-dobby.optional";

fn has_option(mount: &Mount, option: &str) -> bool {
    mount.options.iter().flatten().any(|o| o == option)
}

/// Adds a template or metadata mount.
pub fn add_mount_spec(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, spec: &Mount) -> Result<(), StageError> {
    let mut mount = spec.clone();
    mount.source = mount.source.map(|s| inputs.substitute(&s));
    if inputs.options.create_mount_points {
        bundle
            .create_mount_point(&mount.destination, has_option(&mount, MKDIR))
            .map_err(StageError::rootfs("mount points"))?;
    }
    if !has_option(&mount, MOUNT_POINT_ONLY) {
        bundle.add_mount(mount);
    }
    Ok(())
}

pub fn apply(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>) -> Result<(), StageError> {
    let specs = inputs
        .platform
        .mounts
        .iter()
        .chain(&inputs.operator.mounts)
        .chain(&inputs.app.mounts);
    for spec in specs {
        add_mount_spec(bundle, inputs, spec)?;
    }
    Ok(())
}

/// With `-r`, umoci's mount points (except `/etc/resolv.conf`) as directories.
pub fn create_default_mount_points(bundle: &mut Bundle<dyn Rootfs>) -> Result<(), StageError> {
    let destinations: Vec<String> = bundle
        .config
        .mounts
        .iter()
        .map(|m| m.destination.clone())
        .filter(|d| d != "/etc/resolv.conf")
        .collect();
    for destination in destinations {
        bundle
            .create_mount_point(&destination, true)
            .map_err(StageError::rootfs("mount points"))?;
    }
    Ok(())
}

/// For crun: drops the fstab-style `X-` options the runtime does not know.
pub fn strip_userspace_options(bundle: &mut Bundle<dyn Rootfs>) {
    for mount in &mut bundle.config.mounts {
        if let Some(options) = mount.options.as_mut() {
            options.retain(|o| !o.starts_with("X-"));
            if options.is_empty() {
                mount.options = None;
            }
        }
    }
}
