//! Capabilities: the platform's baseline (or BundleGen's default), plus what
//! the app adds, minus what it drops, within the operator's policy; the same
//! set in all five lists, sorted (BundleGen's order changed on every run).

use std::collections::BTreeSet;

use bundlegen_protocol::runtime::Capabilities;

use super::Inputs;
use crate::bundle::Bundle;
use crate::rootfs::Rootfs;

/// BundleGen's default set (`capabilities.py`).
pub const DEFAULT_CAPABILITIES: [&str; 9] = [
    "CAP_CHOWN",
    "CAP_FSETID",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub fn apply(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>, warnings: &mut Vec<String>) {
    let mut set: BTreeSet<String> = match &inputs.platform.capabilities {
        Some(baseline) => baseline.iter().cloned().collect(),
        None => DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
    };
    if let Some(changes) = &inputs.app.capabilities {
        set.extend(changes.add.iter().cloned());
        for cap in &changes.drop {
            set.remove(cap);
        }
    }
    let policy = &inputs.operator.capabilities;
    if let Some(allow) = &policy.allow {
        let refused: Vec<String> = set.iter().filter(|c| !allow.contains(c)).cloned().collect();
        if !refused.is_empty() {
            warnings.push(format!(
                "capabilities {refused:?} are not allowed by the operator and were removed"
            ));
        }
        set.retain(|c| allow.contains(c));
    }
    let denied: Vec<String> = set.iter().filter(|c| policy.deny.contains(c)).cloned().collect();
    if !denied.is_empty() {
        warnings.push(format!(
            "capabilities {denied:?} are denied by the operator and were removed"
        ));
        set.retain(|c| !policy.deny.contains(c));
    }
    let list: Vec<String> = set.into_iter().collect();
    if let Some(process) = bundle.config.process.as_mut() {
        process.capabilities = Some(Capabilities::all(&list));
    }
}
