//! What a rootless unpack cannot put on disk: file owners and special nodes.
//!
//! The generator never runs as the owners of an image's files, so it records
//! each entry's uid/gid here (keyed by path inside the rootfs) and the bundle
//! archive writer puts them into the tar headers. Device nodes and fifos that
//! were not created on disk are recorded here too and written from here.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Container-side owner of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Kind of a node recorded instead of created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    CharDevice,
    BlockDevice,
    Fifo,
}

/// A device node or fifo known only from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialNode {
    pub kind: NodeKind,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub mtime: i64,
}

/// Owners (only those other than root:root are stored) and recorded nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    owners: BTreeMap<PathBuf, Owner>,
    nodes: BTreeMap<PathBuf, SpecialNode>,
}

fn below<'a, V>(map: &'a BTreeMap<PathBuf, V>, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a V)> + 'a {
    map.range::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
        .take_while(move |(path, _)| path.starts_with(dir))
}

impl Manifest {
    pub fn set_owner(&mut self, path: &Path, owner: Owner) {
        if owner == Owner::default() {
            self.owners.remove(path);
        } else {
            self.owners.insert(path.to_path_buf(), owner);
        }
    }

    /// The recorded owner, root:root if none was recorded.
    pub fn owner(&self, path: &Path) -> Owner {
        self.owners.get(path).copied().unwrap_or_default()
    }

    pub fn add_node(&mut self, path: &Path, node: SpecialNode) {
        self.nodes.insert(path.to_path_buf(), node);
    }

    pub fn node(&self, path: &Path) -> Option<&SpecialNode> {
        self.nodes.get(path)
    }

    /// Every recorded node, by path.
    pub fn nodes(&self) -> impl Iterator<Item = (&Path, &SpecialNode)> {
        self.nodes.iter().map(|(path, node)| (path.as_path(), node))
    }

    /// Recorded nodes directly inside `dir`, as (name, node).
    pub fn nodes_in<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a OsStr, &'a SpecialNode)> + 'a {
        below(&self.nodes, dir).filter_map(move |(path, node)| {
            let rest = path.strip_prefix(dir).ok()?;
            let mut components = rest.iter();
            let name = components.next()?;
            components.next().is_none().then_some((name, node))
        })
    }

    /// Forgets `path` and everything below it (it was removed or replaced).
    pub fn remove_tree(&mut self, path: &Path) {
        self.owners.remove(path);
        self.nodes.remove(path);
        if path.as_os_str().is_empty() {
            self.owners.clear();
            self.nodes.clear();
            return;
        }
        let owners: Vec<PathBuf> = below(&self.owners, path).map(|(p, _)| p.clone()).collect();
        for p in owners {
            self.owners.remove(&p);
        }
        let nodes: Vec<PathBuf> = below(&self.nodes, path).map(|(p, _)| p.clone()).collect();
        for p in nodes {
            self.nodes.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> SpecialNode {
        SpecialNode {
            kind: NodeKind::CharDevice,
            major: 1,
            minor: 3,
            mode: 0o666,
            mtime: 0,
        }
    }

    #[test]
    fn remove_tree_forgets_only_that_subtree() {
        let mut m = Manifest::default();
        m.set_owner(Path::new("a"), Owner { uid: 1, gid: 1 });
        m.set_owner(Path::new("a/b"), Owner { uid: 2, gid: 2 });
        m.set_owner(Path::new("ab"), Owner { uid: 3, gid: 3 });
        m.add_node(Path::new("a/dev"), node());
        m.add_node(Path::new("a.dev"), node());
        m.remove_tree(Path::new("a"));
        assert_eq!(m.owner(Path::new("a")), Owner::default());
        assert_eq!(m.owner(Path::new("a/b")), Owner::default());
        assert_eq!(m.owner(Path::new("ab")), Owner { uid: 3, gid: 3 });
        assert!(m.node(Path::new("a/dev")).is_none());
        assert!(m.node(Path::new("a.dev")).is_some());
    }

    #[test]
    fn root_owner_is_not_stored_and_overrides_earlier_records() {
        let mut m = Manifest::default();
        m.set_owner(Path::new("f"), Owner { uid: 5, gid: 6 });
        m.set_owner(Path::new("f"), Owner::default());
        assert_eq!(m, Manifest::default());
    }

    #[test]
    fn nodes_in_lists_direct_children_only() {
        let mut m = Manifest::default();
        m.add_node(Path::new("dev/null"), node());
        m.add_node(Path::new("dev/snd/timer"), node());
        m.add_node(Path::new("devices"), node());
        let names: Vec<_> = m.nodes_in(Path::new("dev")).map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, vec![OsStr::new("null").to_owned()]);
        let top: Vec<_> = m.nodes_in(Path::new("")).map(|(n, _)| n.to_owned()).collect();
        assert_eq!(top, vec![OsStr::new("devices").to_owned()]);
    }
}
