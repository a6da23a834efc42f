//! Passes 2 and 3, and the final check: the image's own dependency
//! closure, the box's programs that run in the container, the loaders, and
//! every program against the libraries it will get.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use platform_probe::loader::default_dirs;

use super::{
    HostNeed, HostProgramNeeds, LibraryMount, MatchMode, MatchRequest, Plan, RootfsView, file_name, is_glibc_soname,
    lacking,
};
use crate::pipeline::libraries::box_libs::{BoxLibraries, BoxLibrary};
use crate::pipeline::libraries::inventory::{ImageObject, Inventory, split};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Deciding,
    Box,
    Image,
}

/// Pass 2: the image's own dependency closure.
pub struct Closure<'a> {
    inventory: &'a Inventory,
    libs: &'a BoxLibraries,
    view: &'a mut dyn RootfsView,
    request: &'a MatchRequest,
    /// Decisions by library name.
    decided: BTreeMap<String, Decision>,
    /// Names the walk already decided.
    by_walk: BTreeSet<String>,
    removed_real: BTreeSet<String>,
}

impl<'a> Closure<'a> {
    pub(super) fn new(
        inventory: &'a Inventory,
        libs: &'a BoxLibraries,
        view: &'a mut dyn RootfsView,
        request: &'a MatchRequest,
        by_walk: BTreeSet<String>,
        removed_real: BTreeSet<String>,
    ) -> Closure<'a> {
        Closure {
            inventory,
            libs,
            view,
            request,
            decided: BTreeMap::new(),
            by_walk,
            removed_real,
        }
    }
}

impl Closure<'_> {
    /// The mount that serves `name`: at that name, or over the image's file
    /// for it (named otherwise, like `libc-2.31.so`).
    fn mount_serving<'p>(&mut self, plan: &'p Plan, name: &str) -> Option<&'p LibraryMount> {
        if let Some(mount) = plan.mount_of(name) {
            return Some(mount);
        }
        let real = self.image_library(name)?;
        plan.mounts.iter().find(|m| m.destination == real)
    }

    /// The image's library for `name`: where its users find it, or where
    /// the loader would look for it by default.
    fn image_library(&mut self, name: &str) -> Option<String> {
        let used = self
            .inventory
            .objects
            .values()
            .flat_map(|o| &o.needs)
            .find_map(|need| match &need.found {
                Some((_, real)) if need.name == name => Some(real.clone()),
                _ => None,
            });
        if used.is_some() {
            return used;
        }
        let abi = self.request.box_abi?;
        let dirs = self
            .inventory
            .search
            .configured
            .iter()
            .cloned()
            .chain(default_dirs(&abi));
        for dir in dirs.collect::<Vec<_>>() {
            if let Some(real) = self.view.real_path(&format!("{dir}/{name}"))
                && self
                    .inventory
                    .objects
                    .get(&real)
                    .is_some_and(|o| o.info.abi.can_load(&abi))
            {
                return Some(real);
            }
        }
        None
    }

    /// Symbol versions the image's objects need from `name`, and whether any
    /// of them hides its needs (no section headers).
    fn needed_versions(&self, name: &str) -> (BTreeSet<String>, bool) {
        let mut versions = BTreeSet::new();
        let mut unknown = false;
        for object in self.remaining_objects() {
            if object.needs.iter().any(|n| n.name == name) {
                unknown |= !object.info.versions_known;
                if let Some(needed) = object.info.version_needs.get(name) {
                    versions.extend(needed.iter().cloned());
                }
            }
        }
        (versions, unknown)
    }

    fn box_library(&self, name: &str) -> Option<&BoxLibrary> {
        self.libs.named(name, self.request.box_abi).into_iter().next()
    }

    /// The image's objects still in the rootfs (the walk replaced the others).
    fn remaining_objects(&self) -> impl Iterator<Item = &ImageObject> {
        self.inventory
            .objects
            .iter()
            .filter(|(path, _)| !self.removed_real.contains(*path))
            .map(|(_, object)| object)
    }

    /// Whether the box's `name` can serve the container; decides it (and the
    /// dependencies it needs) on the way.
    fn try_box(&mut self, name: &str, notes: &mut Vec<String>) -> bool {
        match self.decided.get(name) {
            Some(Decision::Box) | Some(Decision::Deciding) => return true,
            Some(Decision::Image) => return false,
            None => {}
        }
        if self.by_walk.contains(name) {
            return true;
        }
        let verdict = self.check_box(name, notes);
        let from_box = verdict.is_ok();
        self.decided
            .insert(name.to_string(), if from_box { Decision::Box } else { Decision::Image });
        match verdict {
            Ok(why) => notes.push(format!("{name}: from the box: {why}")),
            Err(why) => notes.push(format!("{name}: the image's copy: {why}")),
        }
        from_box
    }

    fn check_box(&mut self, name: &str, notes: &mut Vec<String>) -> Result<String, String> {
        let Some(library) = self.box_library(name).cloned() else {
            return Err("the box has no library of that name".into());
        };
        let image = self.image_library(name);
        if let (Some(real), Some(abi)) = (&image, self.request.box_abi)
            && !self.inventory.objects[real].info.abi.can_load(&abi)
        {
            return Err(format!("the image's {real} is for another ABI than the box"));
        }
        for pin in &self.request.pins {
            let pins_this = pin == name || pin.starts_with(&format!("{name}."));
            if pins_this && self.libs.named(pin, self.request.box_abi).is_empty() {
                return Err(format!("pinned to {pin}, which the box does not have"));
            }
        }
        if self.request.mode == MatchMode::Normal {
            let (needed, unknown) = self.needed_versions(name);
            if unknown {
                return Err("a user has no section headers, so its version needs are unknown".into());
            }
            let missing: Vec<&String> = needed.difference(&library.versions).collect();
            if !missing.is_empty() {
                return Err(format!("the box's {} lacks {missing:?}", library.path));
            }
        }
        self.decided.insert(name.to_string(), Decision::Deciding);
        for dependency in &library.deps {
            let dep_name = file_name(dependency).to_string();
            if self.try_box(&dep_name, notes) {
                continue;
            }
            // The image's copy serves the box library if it defines at least
            // what the box's copy defines.
            let covered = self.image_library(&dep_name).is_some_and(|real| {
                let box_versions = self
                    .libs
                    .get(dependency)
                    .map(|l| l.versions.clone())
                    .unwrap_or_default();
                self.inventory.objects[&real]
                    .info
                    .version_set()
                    .is_superset(&box_versions)
            });
            if !covered {
                self.decided.remove(name);
                return Err(format!(
                    "its dependency {dep_name} cannot come from the box, and the image's copy is older"
                ));
            }
        }
        Ok(match image {
            Some(_) if self.request.mode == MatchMode::Host => "host mode".into(),
            Some(_) => format!("{} defines every version the image needs", library.path),
            None => "the image lacks it".into(),
        })
    }

    pub(super) fn match_image(&mut self, plan: &mut Plan) {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for object in self.remaining_objects() {
            for need in &object.needs {
                let removed = need
                    .found
                    .as_ref()
                    .is_some_and(|(_, real)| self.removed_real.contains(real));
                if !removed && !self.by_walk.contains(&need.name) {
                    names.insert(need.name.clone());
                }
            }
        }
        // glibc's family moves together: all from the box, or none (its
        // members share private interfaces of one build).
        let mut family: Vec<String> = self.libs.family_names();
        let by_soname: Vec<String> = names
            .iter()
            .filter(|n| is_glibc_soname(n) && !family.contains(n))
            .cloned()
            .collect();
        family.extend(by_soname);
        let mut present: Vec<String> = family.iter().filter(|n| names.contains(*n)).cloned().collect();
        if !present.is_empty() {
            // Members nobody links to move too: libc loads its libnss_*
            // modules through nsswitch.conf, and they use its private symbols.
            for member in self.unlinked_family_members(&family, &names) {
                names.insert(member.clone());
                present.push(member);
            }
        }
        if !present.is_empty() && !family.iter().any(|n| self.by_walk.contains(n)) {
            let mut notes = Vec::new();
            let all = present.iter().all(|n| self.check_box(n, &mut notes).is_ok());
            for name in &present {
                self.decided
                    .insert(name.clone(), if all { Decision::Box } else { Decision::Image });
            }
            let verdict = if all { "from the box" } else { "the image's copies" };
            plan.notes.push(format!("glibc family {present:?}: {verdict}"));
            plan.notes.extend(notes);
        }
        for name in &names {
            self.try_box(name, &mut plan.notes);
        }
        let boxed: Vec<String> = self
            .decided
            .iter()
            .filter(|(_, d)| **d == Decision::Box)
            .map(|(n, _)| n.clone())
            .collect();
        for name in boxed {
            let Some(library) = self.box_library(&name).cloned() else {
                continue;
            };
            match self.image_library(&name) {
                Some(real) => {
                    plan.remove(&real);
                    plan.mount(&library.path, &real);
                    self.removed_real.insert(real);
                }
                None => plan.mount(&library.path, &library.path),
            }
        }
    }

    /// glibc's libraries the image carries where the loader finds them, that
    /// no ELF file names (`family` holds the box's members' names).
    fn unlinked_family_members(&mut self, family: &[String], needed: &BTreeSet<String>) -> Vec<String> {
        let sonames: BTreeSet<String> = self
            .inventory
            .objects
            .values()
            .filter_map(|o| o.info.soname.clone())
            .filter(|s| (is_glibc_soname(s) || family.contains(s)) && !needed.contains(s) && !self.by_walk.contains(s))
            .collect();
        sonames
            .into_iter()
            .filter(|s| {
                self.image_library(s)
                    .is_some_and(|real| !self.removed_real.contains(&real))
            })
            .collect()
    }

    /// Pass 3: makes every library `program` needs loadable in the container.
    pub(super) fn serve_host_program(&mut self, program: &HostProgramNeeds, plan: &mut Plan) {
        let who = &program.path;
        if let Some(loader) = &program.interpreter {
            self.serve_loader(who, loader, plan);
        }
        let needs_of = |name: &str| {
            program
                .version_needs
                .as_ref()
                .map(|needs| needs.get(name).cloned().unwrap_or_default())
        };
        // Breadth first, so the program's own (versioned) needs are
        // decided before those of the box libraries it pulls in.
        let mut pending: VecDeque<HostNeed> = program
            .deps
            .iter()
            .map(|(name, path)| (name.clone(), path.clone(), needs_of(name), who.clone()))
            .collect();
        let mut from_box = BTreeSet::new();
        while let Some((name, box_path, needed, user)) = pending.pop_front() {
            if self.served_by_a_mount(&name, needed.as_ref(), &user, plan) || from_box.contains(&name) {
                continue;
            }
            let box_library = box_path
                .as_deref()
                .and_then(|p| self.libs.get(p))
                .or_else(|| self.box_library(&name))
                .cloned();
            let image_copy = self
                .image_library(&name)
                .filter(|real| !self.removed_real.contains(real));
            if let Some(real) = &image_copy {
                let wanted = needed
                    .clone()
                    .or_else(|| box_library.as_ref().map(|l| l.versions.clone()))
                    .unwrap_or_default();
                let info = &self.inventory.objects[real].info;
                if info.versions_known && info.version_set().is_superset(&wanted) {
                    plan.notes
                        .push(format!("{name}: the image's copy ({real}) serves {user}"));
                    continue;
                }
            }
            let Some(library) = box_library else {
                plan.problems.push(format!(
                    "{user} needs {name}: the image has no compatible copy, and the box's library list has none"
                ));
                continue;
            };
            let missing = lacking(needed.as_ref(), &library.versions);
            if !missing.is_empty() {
                plan.problems.push(format!(
                    "{user} needs {missing:?} of {name}, which the box's {} lacks",
                    library.path
                ));
                continue;
            }
            from_box.insert(name.clone());
            self.mount_from_box(plan, &library, image_copy, &user);
            self.mount_family(&library, &mut from_box, plan);
            for dependency in &library.deps {
                pending.push_back((
                    file_name(dependency).to_string(),
                    Some(dependency.clone()),
                    None,
                    library.path.clone(),
                ));
            }
        }
    }

    /// The loader a box program starts with, mounted from the box where the
    /// image has none at that path.
    fn serve_loader(&mut self, who: &str, loader: &str, plan: &mut Plan) {
        if self.view.real_path(loader).is_some() || plan.mounts.iter().any(|m| m.destination == loader) {
            return;
        }
        match self.libs.get(loader) {
            Some(library) => {
                plan.mount(&library.path, loader);
                plan.notes.push(format!(
                    "{loader}: from the box: the loader of {who}; the image lacks it"
                ));
            }
            None => plan.problems.push(format!(
                "{who} starts with the loader {loader}, {}",
                self.lacked_by_both()
            )),
        }
    }

    /// Whether a mount already serves `name`; if so, its box copy must also
    /// define the versions `user` needs (a problem otherwise).
    fn served_by_a_mount(
        &mut self,
        name: &str,
        needed: Option<&BTreeSet<String>>,
        user: &str,
        plan: &mut Plan,
    ) -> bool {
        let Some(mount) = self.mount_serving(plan, name) else {
            return false;
        };
        let provided = self
            .libs
            .get(&mount.source)
            .map(|l| l.versions.clone())
            .unwrap_or_default();
        let missing = lacking(needed, &provided);
        if !missing.is_empty() {
            let problem = format!(
                "{user} needs {missing:?} of {name}, which the box's {} lacks",
                mount.source
            );
            plan.problems.push(problem);
        }
        true
    }

    /// glibc's family moves with libc (they share private interfaces).
    fn mount_family(&mut self, library: &BoxLibrary, from_box: &mut BTreeSet<String>, plan: &mut Plan) {
        for member in self.libs.family_of(&library.path).to_vec() {
            let member_name = file_name(&member).to_string();
            if from_box.insert(member_name.clone())
                && self.mount_serving(plan, &member_name).is_none()
                && let Some(member_library) = self.libs.get(&member).cloned()
            {
                let image_copy = self.image_library(&member_name);
                self.mount_from_box(plan, &member_library, image_copy, &library.path);
            }
        }
    }

    /// Mounts the box's `library` over the image's copy, or where the
    /// container's loader finds it.
    fn mount_from_box(&mut self, plan: &mut Plan, library: &BoxLibrary, image_copy: Option<String>, user: &str) {
        let destination = match image_copy {
            Some(real) => {
                plan.remove(&real);
                self.removed_real.insert(real.clone());
                real
            }
            None => self.loadable_path(&library.path),
        };
        plan.mount(&library.path, &destination);
        let why = if destination == library.path {
            "the image lacks it"
        } else {
            "in place of the image's copy"
        };
        plan.notes.push(format!(
            "{destination}: from the box ({}): needed by {user}; {why}",
            library.path
        ));
    }

    /// Where the container's loader finds a box library the image lacks:
    /// its box path when that directory is searched, else the first default
    /// directory.
    fn loadable_path(&self, box_path: &str) -> String {
        let Some(abi) = self.request.box_abi else {
            return box_path.to_string();
        };
        let dirs: Vec<String> = self
            .inventory
            .search
            .configured
            .iter()
            .cloned()
            .chain(default_dirs(&abi))
            .collect();
        let (dir, name) = split(box_path);
        if dirs
            .iter()
            .any(|d| d.trim_end_matches('/') == dir.trim_end_matches('/'))
        {
            return box_path.to_string();
        }
        format!("{}/{name}", dirs[0].trim_end_matches('/'))
    }

    /// Programs start with the loader at their PT_INTERP path, not the one
    /// DT_NEEDED finds: where the box's loader serves the container, an image
    /// copy at another path (`/lib64/ld-linux-x86-64.so.2` as a file of its
    /// own) is replaced too, or an older loader would run the box's libc. A
    /// loader the image lacks is mounted from the box when libraries are
    /// matched at all.
    pub(super) fn align_loaders(&mut self, plan: &mut Plan) {
        let entry_closure = self.entry_closure();
        let mut interpreters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, object) in &self.inventory.objects {
            if let Some(interpreter) = &object.info.interpreter
                && !self.removed_real.contains(path)
            {
                interpreters.entry(interpreter.clone()).or_default().push(path.clone());
            }
        }
        let match_missing = self.request.match_image && self.request.mode != MatchMode::Image;
        for (interpreter, users) in interpreters {
            let real = self.view.real_path(&interpreter);
            let source = match self.mount_serving(plan, file_name(&interpreter)) {
                Some(mount) => Some(mount.source.clone()),
                None if real.is_none() && match_missing => self.libs.get(&interpreter).map(|l| l.path.clone()),
                None => None,
            };
            match (real, source) {
                (Some(real), Some(source)) => {
                    if plan.mounts.iter().any(|m| m.destination == real) || self.removed_real.contains(&real) {
                        continue;
                    }
                    plan.remove(&real);
                    plan.mount(&source, &real);
                    plan.notes.push(format!(
                        "{interpreter}: from the box ({source}): programs start with it, and it must match the box's libc"
                    ));
                    self.removed_real.insert(real);
                }
                (None, Some(source)) => {
                    plan.mount(&source, &interpreter);
                    plan.notes.push(format!(
                        "{interpreter}: from the box ({source}): the loader programs start with; the image lacks it"
                    ));
                }
                (None, None) => {
                    let line = format!(
                        "{} starts with the loader {interpreter}, {}",
                        users[0],
                        self.lacked_by_both()
                    );
                    if users.iter().any(|user| entry_closure.contains(user)) {
                        plan.problems.push(line);
                    } else {
                        plan.unresolved.push(line);
                    }
                }
                (Some(_), None) => {}
            }
        }
    }

    /// Checks every object left in the image against what it will load.
    pub(super) fn check_users(&mut self, plan: &mut Plan) {
        let entry_closure = self.entry_closure();
        // Library name -> (its users the app loads, its other users): one
        // line per library, however many objects need it.
        let mut missing: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        let mounted: BTreeMap<String, String> = plan
            .mounts
            .iter()
            .map(|m| (m.destination.clone(), m.source.clone()))
            .collect();
        for (path, object) in &self.inventory.objects {
            if self.removed_real.contains(path) {
                continue;
            }
            for need in &object.needs {
                let provider = match &need.found {
                    Some((candidate, real)) if self.removed_real.contains(real) => mounted
                        .get(candidate)
                        .or_else(|| mounted.get(real))
                        .or_else(|| plan.mount_of(&need.name).map(|m| &m.source))
                        .cloned(),
                    Some(_) => continue,
                    None => plan.mount_of(&need.name).map(|m| m.source.clone()),
                };
                let Some(source) = provider else {
                    let users = missing.entry(need.name.clone()).or_default();
                    match entry_closure.contains(path) {
                        true => users.0.push(path.clone()),
                        false => users.1.push(path.clone()),
                    }
                    continue;
                };
                let Some(needed) = object.info.version_needs.get(&need.name) else {
                    continue;
                };
                let Some(library) = self.libs.get(&source).or_else(|| self.box_library(&need.name)) else {
                    continue;
                };
                let missing = lacking(Some(needed), &library.versions);
                if !missing.is_empty() {
                    plan.problems.push(format!(
                        "{path} needs {missing:?} of {}, but the box's {} (mounted in its place) lacks them",
                        need.name, library.path
                    ));
                }
            }
        }
        for (name, (in_app, others)) in missing {
            if !in_app.is_empty() {
                plan.problems.push(self.nobody_provides(&in_app, &name));
            }
            if !others.is_empty() {
                plan.unresolved.push(self.nobody_provides(&others, &name));
            }
        }
    }

    /// `users` need `name` and nothing provides it: one line saying so.
    fn nobody_provides(&self, users: &[String], name: &str) -> String {
        let who = match users {
            [one] => format!("{one} needs"),
            [first, second] => format!("{first} and {second} need"),
            [first, rest @ ..] => format!("{first} and {} more need", rest.len()),
            [] => unreachable!("a missing library has a user"),
        };
        format!("{who} {name}, {}", self.lacked_by_both())
    }

    /// How to say that neither side has something: without a library list
    /// the box's side is unknown, not empty.
    fn lacked_by_both(&self) -> &'static str {
        if self.libs.is_empty() {
            "which the image lacks (the box's libraries are unknown: the platform has no probe report or library list)"
        } else {
            "which neither the image nor the box provides"
        }
    }

    /// The app's program and every image object it loads.
    fn entry_closure(&mut self) -> BTreeSet<String> {
        let mut closure = BTreeSet::new();
        let Some(entry) = &self.request.entrypoint else {
            return closure;
        };
        let Some(start) = self.view.real_path(entry) else {
            return closure;
        };
        let mut pending = vec![start];
        while let Some(path) = pending.pop() {
            if !closure.insert(path.clone()) {
                continue;
            }
            if let Some(object) = self.inventory.objects.get(&path) {
                pending.extend(
                    object
                        .needs
                        .iter()
                        .filter_map(|n| n.found.as_ref().map(|(_, real)| real.clone())),
                );
            }
        }
        closure
    }
}
