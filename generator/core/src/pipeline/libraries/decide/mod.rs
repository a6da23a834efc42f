//! Which libraries the container gets from the box, and which from the image.
//!
//! Three passes and a check, all pure functions of the image inventory, the
//! box's library list and a [`RootfsView`] (so tests drive them with small
//! fakes):
//!
//! 1. BundleGen's walk ([`walk`]), reproduced exactly for config parity: the platform's
//!    graphics libraries are always taken from the box, plugin dependencies
//!    and every dependency reached from them are taken from the box unless
//!    the image's copy defines versions the box's lacks; glibc's family moves
//!    with libc. A taken library is deleted from the rootfs (the path and the
//!    file it resolves to) and bind-mounted at the same path.
//! 2. What BundleGen never did ([`closure`]): every library the image's own programs and
//!    libraries need (their DT_NEEDED closure) is taken from the box when the
//!    box has a library of that name for the same ABI, defining every symbol
//!    version the image's users need, honouring pins, and whose own
//!    dependencies the container can satisfy. The image's file is replaced by
//!    a read-only bind mount of the box's at its real path (its symlinks stay),
//!    and libraries the image lacks but needs are mounted from the box.
//! 3. Programs of the box that run inside the container (Dobby's init) get
//!    every library they need: the image's copy where it defines the symbol
//!    versions the program needs (or, when those are unknown, all the box's
//!    copy defines), else the box's, mounted where the container's loader
//!    finds it, with the box library's own dependencies in turn.
//!
//! Finally every program left in the image is checked against the libraries
//! it will get: a symbol version no provider defines makes the app
//! incompatible, instead of a bundle that fails on the box.

use std::collections::{BTreeMap, BTreeSet};

use platform_probe::elf::{Abi, ElfKind};

use super::box_libs::BoxLibraries;

mod closure;
mod walk;

use super::inventory::{ImageObject, Inventory, split};
use closure::Closure;
use walk::Walk;

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
    let by_walk = handled.iter().map(|d| file_name(d).to_string()).collect();
    let mut closure = Closure::new(inventory, libs, view, request, by_walk, removed_real);
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

pub use bundlegen_protocol::probe::is_glibc_soname;

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
