//! Which installed packages a package is layered on: its dependencies
//! resolved against what is installed (libralf's constraint forms, the
//! highest satisfying version), and the order of an instance's layers.

use std::collections::{BTreeMap, BTreeSet};

use bundlegen_protocol::ralf::version::{Constraint, Version};

/// Most packages one instance is made of.
pub const MAX_LAYERS: usize = 16;

/// A package's dependencies against what is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// id → the installed version chosen.
    pub pinned: BTreeMap<String, String>,
    /// `id constraint` of each dependency nothing installed satisfies.
    pub missing: Vec<String>,
}

/// Resolves `wanted` (id → constraint) against `installed` (id → its
/// installed package versions).
pub fn resolve(wanted: &BTreeMap<String, String>, installed: &BTreeMap<String, Vec<String>>) -> Resolution {
    let mut resolution = Resolution::default();
    for (id, range) in wanted {
        let chosen = range.parse::<Constraint>().ok().and_then(|constraint| {
            let versions: Vec<(Version, &String)> = installed
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|text| Some((text.parse().ok()?, text)))
                .collect();
            let best = constraint.best(versions.iter().map(|(v, _)| v))?;
            // The installed version as it is named (its directory).
            versions
                .iter()
                .find(|(v, _)| v == best)
                .map(|(_, text)| (*text).clone())
        });
        match chosen {
            Some(version) => {
                resolution.pinned.insert(id.clone(), version);
            }
            None => resolution.missing.push(format!("{id} {range}")),
        }
    }
    resolution
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("{0} is not installed (something layered on it needs it)")]
    Missing(String),
    #[error("{0} depends on itself through its dependencies")]
    Cycle(String),
    #[error("more than {MAX_LAYERS} packages in one instance")]
    TooMany,
}

/// The layers of an instance of `top`, uppermost first: every package
/// above the packages it is layered on (app, runtime, base), each once.
/// `dependencies_of` gives an installed `(id, version)`'s pinned
/// dependencies, `None` if it is not installed.
pub fn layer_order(
    top: (&str, &str),
    dependencies_of: impl Fn(&str, &str) -> Option<BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, LayerError> {
    struct Walk<F> {
        dependencies_of: F,
        done: BTreeSet<(String, String)>,
        visiting: BTreeSet<(String, String)>,
        below_first: Vec<(String, String)>,
    }
    impl<F: Fn(&str, &str) -> Option<BTreeMap<String, String>>> Walk<F> {
        fn visit(&mut self, node: (String, String)) -> Result<(), LayerError> {
            let name = format!("{} {}", node.0, node.1);
            if self.done.contains(&node) {
                return Ok(());
            }
            if !self.visiting.insert(node.clone()) {
                return Err(LayerError::Cycle(name));
            }
            let dependencies = (self.dependencies_of)(&node.0, &node.1).ok_or(LayerError::Missing(name))?;
            for dependency in dependencies {
                self.visit(dependency)?;
            }
            self.visiting.remove(&node);
            self.done.insert(node.clone());
            self.below_first.push(node);
            if self.below_first.len() > MAX_LAYERS {
                return Err(LayerError::TooMany);
            }
            Ok(())
        }
    }
    let mut walk = Walk {
        dependencies_of,
        done: BTreeSet::new(),
        visiting: BTreeSet::new(),
        below_first: Vec::new(),
    };
    walk.visit((top.0.to_string(), top.1.to_string()))?;
    let mut order = walk.below_first;
    order.reverse();
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_highest_installed_version_that_satisfies_wins() {
        let installed: BTreeMap<String, Vec<String>> = [
            ("base".to_string(), vec!["1.0.0".into(), "1.4.2".into(), "2.0.0".into()]),
            ("runtime".to_string(), vec!["3.1".into()]),
        ]
        .into();
        let table = [
            ("^1.0", Some("1.4.2")),
            ("*", Some("2.0.0")),
            ("1.0.0", Some("1.0.0")),
            ("=1.0.0", Some("1.0.0")),
            (">1.4.2", Some("2.0.0")),
            ("<2", Some("1.4.2")),
            ("~1.0", Some("1.0.0")),
            ("^3", None),
        ];
        for (range, expected) in table {
            let resolution = resolve(&map(&[("base", range)]), &installed);
            assert_eq!(resolution.pinned.get("base").map(String::as_str), expected, "{range}");
            assert_eq!(resolution.missing.is_empty(), expected.is_some(), "{range}");
        }
        let resolution = resolve(&map(&[("base", "^1"), ("runtime", "^3"), ("absent", "*")]), &installed);
        assert_eq!(resolution.pinned, map(&[("base", "1.4.2"), ("runtime", "3.1")]));
        assert_eq!(resolution.missing, ["absent *"]);
    }

    #[test]
    fn layers_go_app_runtime_base_each_once() {
        let graph: BTreeMap<(String, String), BTreeMap<String, String>> = [
            (("app".into(), "1".into()), map(&[("runtime", "2"), ("base", "3")])),
            (("runtime".into(), "2".into()), map(&[("base", "3")])),
            (("base".into(), "3".into()), map(&[])),
        ]
        .into();
        let of = |id: &str, v: &str| graph.get(&(id.to_string(), v.to_string())).cloned();
        let order = layer_order(("app", "1"), of).unwrap();
        let names: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(names, ["app", "runtime", "base"]);
        assert_eq!(
            layer_order(("runtime", "9"), of).unwrap_err(),
            LayerError::Missing("runtime 9".into())
        );
    }

    #[test]
    fn cycles_and_missing_layers_are_named() {
        let cyclic = |id: &str, _: &str| {
            Some(match id {
                "a" => map(&[("b", "1")]),
                _ => map(&[("a", "1")]),
            })
        };
        assert!(matches!(layer_order(("a", "1"), cyclic), Err(LayerError::Cycle(_))));
        let gap = |id: &str, _: &str| (id == "a").then(|| map(&[("b", "1")]));
        assert_eq!(
            layer_order(("a", "1"), gap).unwrap_err(),
            LayerError::Missing("b 1".into())
        );
    }
}
