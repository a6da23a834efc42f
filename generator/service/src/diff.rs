//! What changed between two versions of a platform: template fields (by
//! JSON pointer), libraries (by name) and device nodes (by path).

use std::collections::BTreeMap;

use bundlegen_protocol::config::libs::LibsFile;
use bundlegen_protocol::probe::ProbeReport;
use serde::Serialize;
use serde_json::Value;

use crate::store::PlatformVersion;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// JSON pointer (`/gpu/devs/0/major`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDiff {
    pub platform: String,
    pub from: i64,
    pub to: i64,
    pub template: Vec<FieldChange>,
    /// Library names: added, removed, or with other versions, dependencies
    /// or (between probe reports) content.
    pub libraries: SetChanges,
    /// Device paths: added, removed, or with other numbers, type or class.
    pub devices: SetChanges,
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn diff_values(path: &str, from: Option<&Value>, to: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (from, to) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff_values(&format!("{path}/{}", pointer_escape(key)), a.get(key), b.get(key), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                diff_values(&format!("{path}/{i}"), a.get(i), b.get(i), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: path.to_string(),
            from: a.cloned(),
            to: b.cloned(),
        }),
    }
}

fn set_changes<T: PartialEq>(from: &BTreeMap<String, T>, to: &BTreeMap<String, T>) -> SetChanges {
    SetChanges {
        added: to.keys().filter(|k| !from.contains_key(*k)).cloned().collect(),
        removed: from.keys().filter(|k| !to.contains_key(*k)).cloned().collect(),
        changed: from
            .iter()
            .filter(|(k, v)| to.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// What is compared of a library: its versions, dependencies and, from a
/// probe report, its content hash.
type LibraryFacts = (Vec<String>, Vec<String>, Option<String>);

/// A version's libraries by name.
fn libraries(version: &PlatformVersion) -> BTreeMap<String, LibraryFacts> {
    if let Some(report) = version
        .probe
        .as_deref()
        .and_then(|p| serde_json::from_str::<ProbeReport>(p).ok())
    {
        let mut by_name = BTreeMap::new();
        let libs = report.libs_file();
        let hashes: BTreeMap<&str, &str> = report
            .libraries
            .iter()
            .flat_map(|l| l.names.iter().map(move |n| (n.as_str(), l.sha256.as_str())))
            .collect();
        for entry in libs.libs {
            let hash = hashes.get(entry.name.as_str()).map(|h| h.to_string());
            by_name.insert(entry.name, (entry.apiversions, entry.deps, hash));
        }
        return by_name;
    }
    version
        .libs
        .as_deref()
        .and_then(|l| serde_json::from_str::<LibsFile>(l).ok())
        .map(|libs| {
            libs.libs
                .into_iter()
                .map(|e| (e.name, (e.apiversions, e.deps, None)))
                .collect()
        })
        .unwrap_or_default()
}

fn devices(version: &PlatformVersion) -> BTreeMap<String, String> {
    version
        .probe
        .as_deref()
        .and_then(|p| serde_json::from_str::<ProbeReport>(p).ok())
        .map(|report| {
            report
                .devices
                .into_iter()
                .map(|d| {
                    let description = format!(
                        "{} {}:{} {} dynamic={}",
                        d.kind,
                        d.major,
                        d.minor,
                        d.class.name(),
                        d.dynamic
                    );
                    (d.path, description)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn diff(from: &PlatformVersion, to: &PlatformVersion) -> PlatformDiff {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let mut template = Vec::new();
    diff_values(
        "",
        Some(&parse(&from.template)),
        Some(&parse(&to.template)),
        &mut template,
    );
    PlatformDiff {
        platform: to.platform.clone(),
        from: from.version,
        to: to.version,
        template,
        libraries: set_changes(&libraries(from), &libraries(to)),
        devices: set_changes(&devices(from), &devices(to)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn version(number: i64, template: Value, libs: Option<Value>) -> PlatformVersion {
        PlatformVersion {
            platform: "rpi3".into(),
            version: number,
            template: template.to_string(),
            libs: libs.map(|l| l.to_string()),
            probe: None,
            change: "template".into(),
            created_by: "t".into(),
            created_at: 0,
            state: "accepted".into(),
        }
    }

    #[test]
    fn template_fields_and_libraries_are_compared() {
        let a = version(
            1,
            json!({"hardware": {"graphics": true}, "gpu": {"devs": [{"major": 226}]}, "old/key": 1}),
            Some(json!({"libs": [
                {"name": "/lib/libc.so.6", "apiversions": ["GLIBC_2.4"], "deps": []},
                {"name": "/lib/libgone.so.1", "apiversions": [], "deps": []},
            ]})),
        );
        let b = version(
            2,
            json!({"hardware": {"graphics": true}, "gpu": {"devs": [{"major": 240}]}, "new": [1]}),
            Some(json!({"libs": [
                {"name": "/lib/libc.so.6", "apiversions": ["GLIBC_2.4", "GLIBC_2.5"], "deps": []},
                {"name": "/lib/libnew.so.1", "apiversions": [], "deps": []},
            ]})),
        );
        let d = diff(&a, &b);
        let paths: Vec<&str> = d.template.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/gpu/devs/0/major", "/new", "/old~1key"]);
        assert_eq!(d.template[0].from, Some(json!(226)));
        assert_eq!(d.template[0].to, Some(json!(240)));
        assert_eq!(d.template[2].to, None);
        assert_eq!(d.libraries.added, ["/lib/libnew.so.1"]);
        assert_eq!(d.libraries.removed, ["/lib/libgone.so.1"]);
        assert_eq!(d.libraries.changed, ["/lib/libc.so.6"]);
        assert_eq!(diff(&a, &a).template, vec![]);
        assert_eq!(diff(&a, &a).libraries, SetChanges::default());
    }
}
