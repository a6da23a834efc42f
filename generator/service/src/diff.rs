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

/// How one library changed: what apps that use it from the box may notice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryChange {
    pub name: String,
    /// Symbol versions it defines now and did not before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions_gained: Vec<String>,
    /// Symbol versions it no longer defines: apps needing them break.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions_lost: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies_removed: Vec<String>,
    /// Another SONAME (`from`, `to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soname: Option<(Option<String>, Option<String>)>,
    /// Other content (sha256 `from`, `to`), from probe reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<LibraryChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDiff {
    pub platform: String,
    pub from: i64,
    pub to: i64,
    pub template: Vec<FieldChange>,
    /// Library names added and removed, and how the others changed.
    pub libraries: LibraryChanges,
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
/// probe report, its SONAME and content hash.
#[derive(Debug, Clone, PartialEq)]
struct LibraryFacts {
    versions: Vec<String>,
    deps: Vec<String>,
    soname: Option<String>,
    sha256: Option<String>,
}

/// A version's libraries by name.
fn libraries(version: &PlatformVersion) -> BTreeMap<String, LibraryFacts> {
    if let Some(report) = version
        .probe
        .as_deref()
        .and_then(|p| serde_json::from_str::<ProbeReport>(p).ok())
    {
        let by_path: BTreeMap<&str, &bundlegen_protocol::probe::Library> = report
            .libraries
            .iter()
            .flat_map(|l| l.names.iter().map(move |n| (n.as_str(), l)))
            .collect();
        return report
            .libs_file()
            .libs
            .into_iter()
            .map(|entry| {
                let library = by_path.get(entry.name.as_str());
                let facts = LibraryFacts {
                    versions: entry.apiversions,
                    deps: entry.deps,
                    soname: library.and_then(|l| l.soname.clone()),
                    sha256: library.map(|l| l.sha256.clone()),
                };
                (entry.name, facts)
            })
            .collect();
    }
    version
        .libs
        .as_deref()
        .and_then(|l| serde_json::from_str::<LibsFile>(l).ok())
        .map(|libs| {
            libs.libs
                .into_iter()
                .map(|e| {
                    let facts = LibraryFacts {
                        versions: e.apiversions,
                        deps: e.deps,
                        soname: None,
                        sha256: None,
                    };
                    (e.name, facts)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Items of `to` not in `from`.
fn missing_from(from: &[String], to: &[String]) -> Vec<String> {
    to.iter().filter(|item| !from.contains(item)).cloned().collect()
}

fn library_changes(from: &BTreeMap<String, LibraryFacts>, to: &BTreeMap<String, LibraryFacts>) -> LibraryChanges {
    let names = set_changes(from, to);
    let changed = names
        .changed
        .into_iter()
        .map(|name| {
            let (old, new) = (&from[&name], &to[&name]);
            LibraryChange {
                versions_gained: missing_from(&old.versions, &new.versions),
                versions_lost: missing_from(&new.versions, &old.versions),
                dependencies_added: missing_from(&old.deps, &new.deps),
                dependencies_removed: missing_from(&new.deps, &old.deps),
                soname: (old.soname != new.soname).then(|| (old.soname.clone(), new.soname.clone())),
                sha256: match (&old.sha256, &new.sha256) {
                    (Some(a), Some(b)) if a != b => Some((a.clone(), b.clone())),
                    _ => None,
                },
                name,
            }
        })
        .collect();
    LibraryChanges {
        added: names.added,
        removed: names.removed,
        changed,
    }
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
        libraries: library_changes(&libraries(from), &libraries(to)),
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
        assert_eq!(
            d.libraries.changed,
            [LibraryChange {
                name: "/lib/libc.so.6".into(),
                versions_gained: vec!["GLIBC_2.5".into()],
                ..LibraryChange::default()
            }]
        );
        assert_eq!(diff(&a, &a).template, vec![]);
        assert_eq!(diff(&a, &a).libraries, LibraryChanges::default());
        // Going back: the version is lost, the one thing that breaks apps.
        assert_eq!(diff(&b, &a).libraries.changed[0].versions_lost, ["GLIBC_2.5"]);
    }

    /// A version whose probe report has one library.
    fn probed(number: i64, soname: &str, sha256: &str, needed: &[&str]) -> PlatformVersion {
        let deps: Vec<Value> = needed
            .iter()
            .map(|n| json!({"name": n, "path": format!("/lib/{n}")}))
            .collect();
        let report = json!({
            "formatVersion": 1, "tool": "test", "system": {"librariesFingerprint": "x"}, "devices": [],
            "libraries": [{
                "path": "/lib/libfoo.so.1.2", "names": ["/lib/libfoo.so.1"], "soname": soname,
                "abi": {"bits": 32, "endian": "little", "machine": 40, "floatAbi": "hard"},
                "needed": needed, "deps": deps, "versions": ["FOO_1"], "size": 1, "sha256": sha256
            }]
        });
        PlatformVersion {
            probe: Some(report.to_string()),
            ..version(number, json!({}), None)
        }
    }

    #[test]
    fn a_library_from_probe_reports_says_how_it_changed() {
        let a = probed(1, "libfoo.so.1", "aa", &["libc.so.6"]);
        let b = probed(2, "libfoo.so.2", "bb", &["libc.so.6", "libm.so.6"]);
        let changed = diff(&a, &b).libraries.changed;
        assert_eq!(
            changed,
            [LibraryChange {
                name: "/lib/libfoo.so.1".into(),
                dependencies_added: vec!["/lib/libm.so.6".into()],
                soname: Some((Some("libfoo.so.1".into()), Some("libfoo.so.2".into()))),
                sha256: Some(("aa".into(), "bb".into())),
                ..LibraryChange::default()
            }]
        );
    }
}
