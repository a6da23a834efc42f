//! `ociVersion`, `root`, `hostname`, AppArmor and seccomp.

use bundlegen_protocol::runtime::Root;

use super::Inputs;
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

/// What Dobby runs through its plugin launcher.
pub const DOBBY_OCI_VERSION: &str = "1.0.2-dobby";
/// Plain OCI (crun, or a "compliant" config with the launcher hooks already in).
pub const OCI_VERSION: &str = "1.0.2";

pub fn apply(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>) {
    let compliant = inputs.platform.dobby().generate_compliant_config;
    bundle.config.oci_version = if compliant || inputs.options.crun {
        OCI_VERSION
    } else {
        DOBBY_OCI_VERSION
    }
    .into();
    if let Some(overrides) = &inputs.platform.root {
        let root = bundle.config.root.get_or_insert_with(Root::default);
        if let Some(path) = &overrides.path {
            root.path = inputs.substitute(path);
        }
        if overrides.readonly.is_some() {
            root.readonly = overrides.readonly;
        }
    }
}

pub fn security(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>) {
    if let Some(hostname) = &inputs.platform.hostname {
        bundle.config.hostname = Some(inputs.substitute(hostname));
    }
    if let Some(profile) = &inputs.platform.apparmor_profile
        && let Some(process) = bundle.config.process.as_mut()
    {
        process.apparmor_profile = Some(profile.clone());
    }
    if let Some(seccomp) = &inputs.platform.seccomp {
        bundle.config.linux.get_or_insert_with(Default::default).seccomp = Some(seccomp.clone());
    }
}
