//! Which libraries the container gets from the box, and which from the image.
//!
//! Two passes, both pure functions of the image inventory, the box's library
//! list and a [`RootfsView`] (so tests drive them with small fakes):
//!
//! 1. BundleGen's walk, reproduced exactly for config parity: the platform's
//!    graphics libraries are always taken from the box, plugin dependencies
//!    and every dependency reached from them are taken from the box unless
//!    the image's copy defines versions the box's lacks; glibc's family moves
//!    with libc. A taken library is deleted from the rootfs (the path and the
//!    file it resolves to) and bind-mounted at the same path.
//! 2. What BundleGen never did: every library the image's own programs and
//!    libraries need (their DT_NEEDED closure) is taken from the box when the
//!    box has a library of that name for the same ABI, defining every symbol
//!    version the image's users need, honouring pins, and whose own
//!    dependencies the container can satisfy. The image's file is replaced by
//!    a read-only bind mount of the box's at its real path (its symlinks stay),
//!    and libraries the image lacks but needs are mounted from the box.
//!
//! 3. Programs of the box that run inside the container (Dobby's init) get
//!    every library they need: the image's copy where it defines the symbol
//!    versions the program needs (or, when those are unknown, all the box's
//!    copy defines), else the box's, mounted where the container's loader
//!    finds it, with the box library's own dependencies in turn.
//!
//! Finally every program left in the image is checked against the libraries
//! it will get: a symbol version no provider defines makes the app
//! incompatible, instead of a bundle that fails on the box.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use platform_probe::elf::{Abi, ElfKind};
use platform_probe::loader::default_dirs;

use super::box_libs::{BoxLibraries, BoxLibrary};
use super::inventory::{ImageObject, Inventory, split};

/// BundleGen's `-m/--libmatchingmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// Decide by symbol versions.
    Normal,
    /// Keep the image's copies where it has them.
    Image,
    /// Take the box's copies where it has them.
    Host,
}

impl std::str::FromStr for MatchMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "normal" => Ok(MatchMode::Normal),
            "image" => Ok(MatchMode::Image),
            "host" => Ok(MatchMode::Host),
            other => Err(format!(
                "unknown library matching mode {other:?}: use normal, image or host"
            )),
        }
    }
}

/// Where paths of the rootfs lead.
pub trait RootfsView {
    /// The real path behind a container path, if something exists there.
    fn real_path(&mut self, path: &str) -> Option<String>;
}

#[derive(Debug, Clone)]
pub struct MatchRequest {
    pub mode: MatchMode,
    /// Walk dependencies and compare versions (`--nodepwalking` turns it off).
    pub walk: bool,
    /// Box libraries always mounted: (box path, container path).
    pub forced: Vec<(String, String)>,
    /// Box libraries mounted unless the image has a better copy.
    pub host_or_image: Vec<String>,
    /// Also match the image's own dependency closure.
    pub match_image: bool,
    /// Exact versions (`libfoo.so.2.1.5`) the box must have for its copy to be used.
    pub pins: Vec<String>,
    /// The ABI of the box's libraries (from the platform's architecture).
    pub box_abi: Option<Abi>,
    /// The app's program: libraries it cannot find make the app incompatible.
    pub entrypoint: Option<String>,
    /// Programs of the box run inside the container (Dobby's init).
    pub host_programs: Vec<HostProgramNeeds>,
}

/// What a program of the box that runs in the container needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProgramNeeds {
    /// Its path, on the box and in the container.
    pub path: String,
    /// The loader it starts with (PT_INTERP), when known.
    pub interpreter: Option<String>,
    /// Needed library names and where the box's loader finds each.
    pub deps: Vec<(String, Option<String>)>,
    /// Symbol versions needed, by library name; `None` when unknown (the
    /// platform has only BundleGen's library list).
    pub version_needs: Option<BTreeMap<String, BTreeSet<String>>>,
}

/// One library a host program (or a box library it pulls in) needs: its
/// name, the box's path for it, the versions needed (`None`: unknown), and
/// who needs it.
type HostNeed = (String, Option<String>, Option<BTreeSet<String>>, String);

/// A box library bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LibraryMount {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub mounts: Vec<LibraryMount>,
    /// Container paths to delete, in order.
    pub remove: Vec<String>,
    /// One line per decision, for `-vv`.
    pub notes: Vec<String>,
    /// Why the app cannot run with these libraries (makes it incompatible).
    pub problems: Vec<String>,
    /// Needs nothing provides, outside the app's program (warnings).
    pub unresolved: Vec<String>,
}

impl Plan {
    /// Adds a mount unless something is mounted there already (two names of
    /// one library lead to one file).
    fn mount(&mut self, source: &str, destination: &str) {
        if !self.mounts.iter().any(|m| m.destination == destination) {
            self.mounts.push(LibraryMount {
                source: source.to_string(),
                destination: destination.to_string(),
            });
        }
    }

    /// The mount the loader finds as `name` in its directory, if any.
    fn mount_of(&self, name: &str) -> Option<&LibraryMount> {
        self.mounts.iter().find(|m| file_name(&m.destination) == name)
    }

    fn remove(&mut self, path: &str) {
        if !self.remove.iter().any(|p| p == path) {
            self.remove.push(path.to_string());
        }
    }
}

fn file_name(path: &str) -> &str {
    split(path).1
}

/// The versions of `needed` a box library defining `provided` lacks. An
/// unversioned box library, or unknown needs, cannot be judged: nothing.
fn lacking(needed: Option<&BTreeSet<String>>, provided: &BTreeSet<String>) -> Vec<String> {
    if provided.is_empty() {
        return Vec::new();
    }
    needed
        .into_iter()
        .flatten()
        .filter(|v| !provided.contains(*v))
        .cloned()
        .collect()
}

pub fn plan(inventory: &Inventory, libs: &BoxLibraries, view: &mut dyn RootfsView, request: &MatchRequest) -> Plan {
    let mut walk = Walk {
        inventory,
        libs,
        view,
        request,
        plan: Plan::default(),
        handled: BTreeSet::new(),
        removed_real: BTreeSet::new(),
    };
    for (source, destination) in &request.forced {
        walk.take_host(
            source,
            destination,
            libs.get(source),
            "a graphics library of the platform",
        );
    }
    for dependency in &request.host_or_image {
        walk.mount_or_use_rootfs(dependency, dependency, "a plugin dependency");
    }
    let Walk {
        mut plan,
        handled,
        removed_real,
        view,
        ..
    } = walk;
    let mut closure = Closure {
        inventory,
        libs,
        view,
        request,
        decided: BTreeMap::new(),
        by_walk: handled.iter().map(|d| file_name(d).to_string()).collect(),
        removed_real,
    };
    if request.match_image && request.walk && request.mode != MatchMode::Image {
        closure.match_image(&mut plan);
    }
    for program in &request.host_programs {
        closure.serve_host_program(program, &mut plan);
    }
    closure.align_loaders(&mut plan);
    closure.check_users(&mut plan);
    plan
}

/// Pass 1: BundleGen's walk (`library_matching.py`).
struct Walk<'a> {
    inventory: &'a Inventory,
    libs: &'a BoxLibraries,
    view: &'a mut dyn RootfsView,
    request: &'a MatchRequest,
    plan: Plan,
    /// Container paths decided.
    handled: BTreeSet<String>,
    /// Real image files deleted.
    removed_real: BTreeSet<String>,
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

    fn take_host(&mut self, source: &str, destination: &str, info: Option<&BoxLibrary>, why: &str) {
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

    fn mount_or_use_rootfs(&mut self, source: &str, destination: &str, why: &str) {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Deciding,
    Box,
    Image,
}

/// Pass 2: the image's own dependency closure.
struct Closure<'a> {
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

    fn match_image(&mut self, plan: &mut Plan) {
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
        let present: Vec<String> = family.iter().filter(|n| names.contains(*n)).cloned().collect();
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

    /// Pass 3: makes every library `program` needs loadable in the container.
    fn serve_host_program(&mut self, program: &HostProgramNeeds, plan: &mut Plan) {
        let who = &program.path;
        if let Some(loader) = &program.interpreter
            && self.view.real_path(loader).is_none()
            && !plan.mounts.iter().any(|m| &m.destination == loader)
        {
            match self.libs.get(loader) {
                Some(library) => {
                    plan.mount(&library.path, loader);
                    plan.notes.push(format!(
                        "{loader}: from the box: the loader of {who}; the image lacks it"
                    ));
                }
                None => plan.problems.push(format!(
                    "{who} starts with the loader {loader}, which neither the image nor the box has"
                )),
            }
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
            let box_library = box_path
                .as_deref()
                .and_then(|p| self.libs.get(p))
                .or_else(|| self.box_library(&name))
                .cloned();
            if let Some(mount) = self.mount_serving(plan, &name) {
                // Mounted already; the box's copy must serve `user` too.
                let provided = self
                    .libs
                    .get(&mount.source)
                    .map(|l| l.versions.clone())
                    .unwrap_or_default();
                let missing = lacking(needed.as_ref(), &provided);
                if !missing.is_empty() {
                    let problem = format!(
                        "{user} needs {missing:?} of {name}, which the box's {} lacks",
                        mount.source
                    );
                    plan.problems.push(problem);
                }
                continue;
            }
            if from_box.contains(&name) {
                continue;
            }
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
            // glibc's family moves with libc (they share private interfaces).
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
    fn align_loaders(&mut self, plan: &mut Plan) {
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
                        "{} starts with the loader {interpreter}, which neither the image nor the box provides",
                        users[0]
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
    fn check_users(&mut self, plan: &mut Plan) {
        let entry_closure = self.entry_closure();
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
                    let line = format!(
                        "{path} needs {}, which neither the image nor the box provides",
                        need.name
                    );
                    if entry_closure.contains(path) {
                        plan.problems.push(line);
                    } else {
                        plan.unresolved.push(line);
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

/// glibc's libraries by SONAME, wherever they live (BundleGen only knew
/// `/lib` and `/usr/lib`, not multiarch directories).
pub fn is_glibc_soname(name: &str) -> bool {
    const MEMBERS: [&str; 16] = [
        "libc.so.6",
        "libm.so.6",
        "libmvec.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libresolv.so.2",
        "libutil.so.1",
        "libanl.so.1",
        "libnsl.so.1",
        "libBrokenLocale.so.1",
        "libthread_db.so.1",
        "libc_malloc_debug.so.0",
        "ld.so.1",
        "ld64.so.1",
        "ld64.so.2",
    ];
    MEMBERS.contains(&name) || name.starts_with("ld-linux") || (name.starts_with("libnss_") && name.ends_with(".so.2"))
}

/// Libraries no program of the image needs: outside the DT_NEEDED closure
/// of its executables and of the libraries listed as `dlopen`ed, and not
/// named by a string in anything that is in use (`names_in` gives each
/// file's library-like strings), repeated until nothing changes.
pub fn unused_libraries(
    inventory: &Inventory,
    dlopen: &[String],
    names_in: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let named = |path: &str, object: &ImageObject, names: &BTreeSet<String>| {
        let name = file_name(path);
        names.contains(name) || object.info.soname.as_ref().is_some_and(|s| names.contains(s))
    };
    let listed: BTreeSet<String> = dlopen.iter().map(|d| file_name(d).to_string()).collect();
    let mut pending: Vec<String> = inventory
        .objects
        .iter()
        .filter(|(path, o)| o.info.kind == ElfKind::Executable || named(path, o, &listed))
        .map(|(p, _)| p.clone())
        .collect();
    let mut reachable: BTreeSet<String> = BTreeSet::new();
    while !pending.is_empty() {
        while let Some(path) = pending.pop() {
            if !reachable.insert(path.clone()) {
                continue;
            }
            if let Some(object) = inventory.objects.get(&path) {
                pending.extend(
                    object
                        .needs
                        .iter()
                        .filter_map(|n| n.found.as_ref().map(|(_, real)| real.clone())),
                );
            }
        }
        let mentioned: BTreeSet<String> = reachable
            .iter()
            .filter_map(|p| names_in.get(p))
            .flatten()
            .cloned()
            .collect();
        pending = inventory
            .objects
            .iter()
            .filter(|(path, o)| !reachable.contains(*path) && named(path, o, &mentioned))
            .map(|(p, _)| p.clone())
            .collect();
    }
    inventory
        .objects
        .iter()
        .filter(|(path, object)| object.info.kind == ElfKind::SharedObject && !reachable.contains(*path))
        .map(|(path, _)| path.clone())
        .collect()
}

#[cfg(test)]
mod tests;
