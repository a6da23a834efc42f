//! Container Device Interface specs (CNCF CDI), as far as a set-top box's
//! devices and libraries need them. CDI loaders parse strictly and refuse a
//! spec whose `cdiVersion` is older than the fields it uses, so
//! [`CdiSpec::minimum_version`] computes the lowest version that covers them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdiSpec {
    pub cdi_version: String,
    /// `vendor.tld/class`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub devices: Vec<CdiDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_edits: Option<ContainerEdits>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdiDevice {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<CdiDeviceNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CdiMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdiDeviceNode {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c` or `b`; with a non-zero major the runtime uses the numbers as
    /// written instead of the host node's, so dynamic nodes leave all three out.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Cgroup access: `r`, `w`, `m` combinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CdiSpec {
    /// The oldest `cdiVersion` whose parsers accept every field this spec
    /// uses (the rules of the CDI spec's `requiresV0x0` checks).
    pub fn minimum_version(&self) -> &'static str {
        let edits = || {
            self.container_edits
                .iter()
                .chain(self.devices.iter().map(|d| &d.container_edits))
        };
        let class = self.kind.split_once('/').map_or("", |(_, class)| class);
        if edits().any(|e| !e.additional_gids.is_empty()) {
            "0.7.0"
        } else if !self.annotations.is_empty()
            || self.devices.iter().any(|d| !d.annotations.is_empty())
            || class.contains('.')
        {
            "0.6.0"
        } else if edits().any(|e| e.device_nodes.iter().any(|n| n.host_path.is_some()))
            || self
                .devices
                .iter()
                .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()))
        {
            "0.5.0"
        } else if edits().any(|e| e.mounts.iter().any(|m| m.kind.is_some())) {
            "0.4.0"
        } else {
            "0.3.0"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(edit: impl FnOnce(&mut CdiSpec)) -> CdiSpec {
        let mut spec = CdiSpec {
            cdi_version: String::new(),
            kind: "rdkcentral.com/device".into(),
            devices: vec![CdiDevice {
                name: "gpu".into(),
                container_edits: ContainerEdits {
                    device_nodes: vec![CdiDeviceNode {
                        path: "/dev/dri/card0".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        edit(&mut spec);
        spec
    }

    #[test]
    fn minimum_version_follows_the_fields_used() {
        let mount = CdiMount {
            host_path: "/usr/lib/libEGL.so.1".into(),
            container_path: "/usr/lib/libEGL.so.1".into(),
            kind: Some("bind".into()),
            options: vec![],
        };
        let cases: Vec<(&str, CdiSpec)> = vec![
            ("0.3.0", spec(|_| {})),
            (
                "0.3.0",
                spec(|s| {
                    s.devices[0].container_edits.mounts.push(CdiMount {
                        kind: None,
                        ..mount.clone()
                    })
                }),
            ),
            (
                "0.4.0",
                spec(|s| s.devices[0].container_edits.mounts.push(mount.clone())),
            ),
            (
                "0.5.0",
                spec(|s| s.devices[0].container_edits.device_nodes[0].host_path = Some("/dev/dri/card1".into())),
            ),
            ("0.5.0", spec(|s| s.devices[0].name = "0".into())),
            ("0.6.0", spec(|s| s.kind = "rdkcentral.com/stb.gpu".into())),
            (
                "0.6.0",
                spec(|s| {
                    s.devices[0].annotations.insert("a".into(), "b".into());
                }),
            ),
            (
                "0.7.0",
                spec(|s| {
                    s.container_edits = Some(ContainerEdits {
                        additional_gids: vec![44],
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (expected, spec) in cases {
            assert_eq!(spec.minimum_version(), expected, "{spec:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_like_cdi_loaders_do() {
        let text = r#"{"cdiVersion":"0.3.0","kind":"a.b/c","devices":[],"extra":1}"#;
        assert!(serde_json::from_str::<CdiSpec>(text).is_err());
    }
}
