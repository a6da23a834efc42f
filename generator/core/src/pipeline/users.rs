//! `process.user` overrides and the user namespace.

use bundlegen_protocol::idmap::{IdMapping, map_id};

use super::Inputs;
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

pub fn apply(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, warnings: &mut Vec<String>) {
    let users = inputs.platform.users_and_groups.clone().unwrap_or_default();
    if let (Some(overrides), Some(process)) = (&users.user, bundle.config.process.as_mut()) {
        // Explicit 0 counts (BundleGen tested truthiness and ignored it).
        if let Some(uid) = overrides.uid {
            process.user.uid = uid;
        }
        if let Some(gid) = overrides.gid {
            process.user.gid = gid;
        }
        if let Some(gids) = &overrides.additional_gids {
            process.user.additional_gids = gids.clone();
        }
    }
    let linux = bundle.config.linux.get_or_insert_with(Default::default);
    if inputs.platform.disable_user_namespacing {
        linux.namespaces.retain(|n| n.kind != "user");
        linux.uid_mappings.clear();
        linux.gid_mappings.clear();
        return;
    }
    linux.uid_mappings = users.uid_map.clone();
    linux.gid_mappings = users.gid_map.clone();
    if users.uid_map.is_empty() || users.gid_map.is_empty() {
        warnings.push("the platform has no uid/gid maps: Dobby must set them at runtime".into());
        return;
    }
    let Some(user) = bundle.config.process.as_ref().map(|p| p.user.clone()) else {
        return;
    };
    let outside = |maps: &[IdMapping], id: u32| map_id(maps, id).is_none();
    if outside(&users.uid_map, user.uid) {
        warnings.push(format!("the app's uid {} is outside the platform's uid maps", user.uid));
    }
    for gid in std::iter::once(user.gid).chain(user.additional_gids.iter().copied()) {
        if outside(&users.gid_map, gid) {
            warnings.push(format!("the app's gid {gid} is outside the platform's gid maps"));
        }
    }
}
