//! Pass 1: BundleGen's walk (`library_matching.py`), reproduced exactly for
//! config parity.

use std::collections::BTreeSet;

use super::{MatchMode, MatchRequest, Plan, RootfsView};
use crate::pipeline::libraries::box_libs::{BoxLibraries, BoxLibrary};
use crate::pipeline::libraries::inventory::Inventory;

/// Pass 1: BundleGen's walk (`library_matching.py`).
pub struct Walk<'a> {
    pub(super) inventory: &'a Inventory,
    pub(super) libs: &'a BoxLibraries,
    pub(super) view: &'a mut dyn RootfsView,
    pub(super) request: &'a MatchRequest,
    pub(super) plan: Plan,
    /// Container paths decided.
    pub(super) handled: BTreeSet<String>,
    /// Real image files deleted.
    pub(super) removed_real: BTreeSet<String>,
}

impl Walk<'_> {
    /// Deletes `path` and the file it resolves to, as BundleGen does.
    fn remove_from_rootfs(&mut self, path: &str) {
        if let Some(real) = self.view.real_path(path) {
            self.plan.remove(path);
            if real != path {
                self.plan.remove(&real);
            }
            self.removed_real.insert(real);
        }
    }

    pub(super) fn take_host(&mut self, source: &str, destination: &str, info: Option<&BoxLibrary>, why: &str) {
        self.handled.insert(destination.to_string());
        self.remove_from_rootfs(destination);
        self.plan.mount(source, destination);
        self.plan
            .notes
            .push(format!("{destination}: from the box ({source}): {why}"));
        let Some(info) = info else { return };
        let family = self.libs.family_of(&info.path).to_vec();
        for member in family {
            self.handled.insert(member.clone());
            self.remove_from_rootfs(&member);
            self.plan.mount(&member, &member);
            self.plan
                .notes
                .push(format!("{member}: from the box: glibc's family follows {}", info.path));
        }
        if self.request.walk {
            for dependency in info.deps.clone() {
                self.mount_or_use_rootfs(&dependency, &dependency, &format!("needed by {}", info.path));
            }
        }
    }

    fn take_rootfs(&mut self, destination: &str, why: &str) {
        self.handled.insert(destination.to_string());
        if let Some(info) = self.libs.get(destination) {
            for member in self.libs.family_of(&info.path) {
                self.handled.insert(member.clone());
            }
        }
        self.plan.notes.push(format!("{destination}: the image's copy: {why}"));
    }

    pub(super) fn mount_or_use_rootfs(&mut self, source: &str, destination: &str, why: &str) {
        if self.handled.contains(destination) {
            return;
        }
        let libs = self.libs;
        let Some(info) = libs.get(source) else {
            let exists = self.view.real_path(destination).is_some();
            if self.request.mode == MatchMode::Image && exists {
                self.take_rootfs(destination, "not in the box's library list (image mode)");
            } else {
                self.take_host(
                    source,
                    destination,
                    None,
                    &format!("{why}; not in the box's library list"),
                );
            }
            return;
        };
        if self.request.mode == MatchMode::Normal
            && let Some(parent) = &info.parent
        {
            return self.mount_or_use_rootfs(parent, parent, &format!("glibc's family, for {destination}"));
        }
        let Some(real) = self.view.real_path(destination) else {
            return self.take_host(source, destination, Some(info), &format!("{why}; the image lacks it"));
        };
        match self.request.mode {
            MatchMode::Image => self.take_rootfs(destination, "image mode"),
            MatchMode::Host => self.take_host(source, destination, Some(info), &format!("{why}; host mode")),
            MatchMode::Normal if info.versions.is_empty() => {
                self.take_host(source, destination, Some(info), &format!("{why}; unversioned"))
            }
            MatchMode::Normal => {
                let image_versions = self
                    .inventory
                    .objects
                    .get(&real)
                    .map(|o| o.info.version_set())
                    .unwrap_or_default();
                if info.versions.is_superset(&image_versions) {
                    let reason = format!("{why}; the box's versions include the image's");
                    self.take_host(source, destination, Some(info), &reason);
                } else {
                    let missing: Vec<&String> = image_versions.difference(&info.versions).collect();
                    self.take_rootfs(destination, &format!("the box lacks {missing:?}"));
                }
            }
        }
    }
}
