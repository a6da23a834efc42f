//! User and group id mappings (the OCI `linux.uidMappings` form).

use serde::{Deserialize, Serialize};

/// `size` ids starting at `container_id` inside map to ids starting at `host_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IdMapping {
    /// First id in the container.
    #[serde(rename = "containerID")]
    pub container_id: u32,
    /// First id on the box.
    #[serde(rename = "hostID")]
    pub host_id: u32,
    /// How many ids.
    pub size: u32,
}

impl IdMapping {
    /// Whether host id `id` is one this range maps to.
    pub fn covers_host(&self, id: u32) -> bool {
        id >= self.host_id && u64::from(id) < u64::from(self.host_id) + u64::from(self.size)
    }

    /// The host id for a container id, if this range covers it.
    pub fn map(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        (offset < self.size).then(|| self.host_id.checked_add(offset)).flatten()
    }
}

/// Maps a container id through a list of ranges. An empty list is the identity;
/// otherwise an id no range covers is `None`.
pub fn map_id(mappings: &[IdMapping], id: u32) -> Option<u32> {
    if mappings.is_empty() {
        return Some(id);
    }
    mappings.iter().find_map(|m| m.map(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ranges_not_just_exact_ids() {
        let maps = [
            IdMapping {
                container_id: 0,
                host_id: 100_000,
                size: 65_536,
            },
            IdMapping {
                container_id: 70_000,
                host_id: 5,
                size: 1,
            },
        ];
        let cases = [
            (0, Some(100_000)),
            (1000, Some(101_000)),
            (65_535, Some(165_535)),
            (65_536, None),
            (70_000, Some(5)),
            (70_001, None),
        ];
        for (id, expected) in cases {
            assert_eq!(map_id(&maps, id), expected, "id {id}");
        }
        assert_eq!(map_id(&[], 4242), Some(4242));
        let overflow = IdMapping {
            container_id: 0,
            host_id: u32::MAX,
            size: 10,
        };
        assert_eq!(overflow.map(1), None);
    }

    #[test]
    fn serde_uses_oci_names() {
        let json = r#"{"containerID":0,"hostID":1000,"size":1}"#;
        let mapping: IdMapping = serde_json::from_str(json).unwrap();
        assert_eq!(
            mapping,
            IdMapping {
                container_id: 0,
                host_id: 1000,
                size: 1
            }
        );
        assert_eq!(serde_json::to_string(&mapping).unwrap(), json);
    }
}
