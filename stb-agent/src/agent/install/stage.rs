//! Step 4: the unpack (or, for a package, the move) into place, and what
//! puts back the previous state if it fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bundlegen_protocol::archive::{CONFIG_FILE, Owners, ReadOptions, read_root_file, unpack_bundle};
use bundlegen_protocol::idmap::IdMapping;
use bundlegen_protocol::probe::Abi;
use bundlegen_protocol::ralf::ContentKind;
use bundlegen_protocol::ralf::package::{self, PackageError, PackageFile};
use bundlegen_protocol::root::{RootDir, Symlinks};
use serde::Deserialize;

use crate::agent::{InstallError, random_handle};
use crate::ralf::{CONTENT_DIR, PACKAGE_FILE};
use crate::store::{AppRecord, Store, StoreError, VersionRecord, io, remove_tree};

/// What goes into place.
pub(super) enum Staged {
    /// A bundle archive, unpacked.
    Bundle,
    /// A RALF package, stored as it is (tar content also extracted).
    Package(ContentKind),
}

/// An unpack into place, with what puts back the previous state if it fails.
pub(super) struct Staging {
    pub app: String,
    pub version: String,
    pub archive: PathBuf,
    pub staged: Staged,
    pub options: ReadOptions,
    /// What the box runs; `None`: not known, not checked.
    pub box_abi: Option<Abi>,
}

impl Staging {
    pub fn run(self, store: &Store, record: AppRecord, entry: VersionRecord) -> Result<PathBuf, InstallError> {
        let bundle_dir = store.bundle_dir(&self.app, &self.version);
        // A reinstall: the old copy goes aside until the new one is in place.
        let aside = if bundle_dir.exists() {
            let aside = bundle_dir.with_file_name(format!(".{}.old-{}", self.version, random_handle("r")));
            std::fs::rename(&bundle_dir, &aside).map_err(io(&bundle_dir))?;
            Some(aside)
        } else {
            None
        };
        let before = store.app(&self.app);
        let mut installing = before.clone().unwrap_or(record);
        let pinned = entry
            .package
            .as_ref()
            .map(|p| p.dependencies.clone())
            .unwrap_or_default();
        installing.versions.insert(self.version.clone(), entry);
        store.save_app(&installing)?;
        // Recorded now, what it is layered on can no longer be uninstalled;
        // it must still be there.
        let installed = store.package_versions();
        let gone: Vec<String> = pinned
            .iter()
            .filter(|(id, version)| !installed.get(*id).is_some_and(|v| v.contains(version)))
            .map(|(id, version)| format!("{id} {version}"))
            .collect();
        let placed = if gone.is_empty() {
            match self.staged {
                Staged::Bundle => self.unpack(store.root(), &bundle_dir),
                Staged::Package(content) => self.place_package(content, &bundle_dir),
            }
        } else {
            Err(InstallError::MissingDependencies {
                package: format!("{} {}", self.app, self.version),
                missing: gone,
                reason: "was uninstalled while it installed".into(),
            })
        };
        match placed {
            Ok(()) => {
                if let Some(aside) = aside {
                    remove_tree(&aside)?;
                }
                Ok(bundle_dir)
            }
            Err(cause) => match self.roll_back(store, &bundle_dir, aside, before.unwrap_or(installing)) {
                Ok(()) => Err(cause),
                Err(source) => Err(InstallError::RollbackFailed {
                    cause: Box::new(cause),
                    source,
                }),
            },
        }
    }

    fn unpack(&self, storage_root: &Path, bundle_dir: &Path) -> Result<(), InstallError> {
        let apps_dir = bundle_dir.parent().expect("apps/<app>");
        std::fs::create_dir_all(apps_dir).map_err(io(apps_dir))?;
        let config = self.read_config()?;
        let annotated = config.annotated_abi();
        if let Some((abi, arch)) = &annotated {
            self.check_architecture(abi, &format!("{arch}, from its config.json"))?;
        }
        let user_namespace = config.user_namespace();
        let options = ReadOptions {
            owners: owners(user_namespace.as_ref())?,
            ..self.options.clone()
        };
        let file = std::fs::File::open(&self.archive).map_err(io(&self.archive))?;
        let report = unpack_bundle(std::io::BufReader::new(file), bundle_dir, &options).map_err(|source| {
            InstallError::BadArchive {
                archive: self.archive.clone(),
                source,
            }
        })?;
        // A config.json that is a symlink would make Dobby read a host file.
        let config_file = bundle_dir.join(CONFIG_FILE);
        if !std::fs::symlink_metadata(&config_file).is_ok_and(|m| m.is_file()) {
            remove_tree(bundle_dir)?;
            return Err(InstallError::NoConfig {
                archive: self.archive.clone(),
            });
        }
        if annotated.is_none()
            && let Some((abi, program)) = config.program_abi(bundle_dir)
            && let Err(e) = self.check_architecture(&abi, &format!("{}, from {program}", abi.arch_name()))
        {
            remove_tree(bundle_dir)?;
            return Err(e);
        }
        // Dobby writes into the bundle and needs to enter it.
        std::fs::set_permissions(bundle_dir, std::fs::Permissions::from_mode(0o755)).map_err(io(bundle_dir))?;
        if user_namespace.is_some() {
            // The container's root is an ordinary host user: it (and Dobby's
            // hooks, which run as it) must reach the rootfs.
            keep_searchable(storage_root, apps_dir)?;
        }
        if !report.skipped_nodes.is_empty() || !report.cleared_setuid.is_empty() {
            tracing::warn!(
                "{}: {} device nodes skipped, {} setuid bits cleared",
                bundle_dir.display(),
                report.skipped_nodes.len(),
                report.cleared_setuid.len()
            );
        }
        Ok(())
    }

    /// Moves a verified package into place (with its tar content
    /// extracted beside it), whole: built in a staging directory, synced,
    /// then renamed.
    fn place_package(&self, content: ContentKind, bundle_dir: &Path) -> Result<(), InstallError> {
        let apps_dir = bundle_dir.parent().expect("apps/<app>");
        std::fs::create_dir_all(apps_dir).map_err(io(apps_dir))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.package-", self.version))
            .tempdir_in(apps_dir)
            .map_err(io(apps_dir))?;
        let stored = staging.path().join(PACKAGE_FILE);
        // Downloads and pushes land in the store's filesystem: a rename.
        if std::fs::rename(&self.archive, &stored).is_err() {
            std::fs::copy(&self.archive, &stored).map_err(io(&stored))?;
        }
        std::fs::File::open(&stored)
            .and_then(|f| f.sync_all())
            .map_err(io(&stored))?;
        if matches!(content, ContentKind::Tar | ContentKind::TarGzip | ContentKind::TarZstd) {
            let package = PackageFile::open(&stored).map_err(|source| InstallError::Package {
                archive: self.archive.clone(),
                source,
            })?;
            let layout = package::read_layout(&package).map_err(|source| InstallError::Package {
                archive: self.archive.clone(),
                source,
            })?;
            let reader = package
                .reader(&layout.content.blob_path())
                .ok_or_else(|| InstallError::Package {
                    archive: self.archive.clone(),
                    source: PackageError::Content("missing from the package".into()),
                })?;
            let options = ReadOptions {
                owners: owners(None)?,
                ..self.options.clone()
            };
            unpack_bundle(
                std::io::BufReader::new(reader),
                &staging.path().join(CONTENT_DIR),
                &options,
            )
            .map_err(|source| InstallError::BadArchive {
                archive: self.archive.clone(),
                source,
            })?;
        }
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755)).map_err(io(staging.path()))?;
        std::fs::File::open(staging.path())
            .and_then(|d| d.sync_all())
            .map_err(io(staging.path()))?;
        std::fs::rename(staging.path(), bundle_dir).map_err(io(bundle_dir))?;
        let _ = staging.keep();
        std::fs::File::open(apps_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(apps_dir))?;
        Ok(())
    }

    /// What the agent needs of the bundle's config.json, read before
    /// anything is unpacked.
    fn read_config(&self) -> Result<ConfigHead, InstallError> {
        let file = std::fs::File::open(&self.archive).map_err(io(&self.archive))?;
        let config = read_root_file(std::io::BufReader::new(file), CONFIG_FILE, MAX_CONFIG_BYTES)
            .map_err(|source| InstallError::BadArchive {
                archive: self.archive.clone(),
                source,
            })?
            .ok_or_else(|| InstallError::NoConfig {
                archive: self.archive.clone(),
            })?;
        serde_json::from_slice(&config).map_err(|source| InstallError::BadConfig {
            archive: self.archive.clone(),
            source,
        })
    }

    /// Refuses a bundle whose ABI this box cannot run.
    fn check_architecture(&self, bundle: &Abi, described: &str) -> Result<(), InstallError> {
        let Some(this_box) = self.box_abi else {
            return Ok(());
        };
        if this_box.can_load(bundle) {
            return Ok(());
        }
        Err(InstallError::OtherArchitecture {
            archive: self.archive.clone(),
            bundle: bundle.arch_name(),
            from: described.to_string(),
            this_box: this_box.arch_name(),
        })
    }

    /// Back to how it was: the old copy (on a reinstall) and its record.
    fn roll_back(
        &self,
        store: &Store,
        bundle_dir: &Path,
        aside: Option<PathBuf>,
        mut restored: AppRecord,
    ) -> Result<(), StoreError> {
        let reinstall = aside.is_some();
        if let Some(aside) = aside {
            std::fs::rename(&aside, bundle_dir).map_err(io(&aside))?;
        }
        if !reinstall {
            restored.versions.remove(&self.version);
        }
        store.save_app(&restored)?;
        if restored.versions.is_empty() {
            let _ = std::fs::remove_dir(store.app_dir(&self.app));
        }
        Ok(())
    }
}

/// The most bytes of a config.json read before unpacking.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// What the agent reads of a config.json before unpacking.
#[derive(Deserialize)]
struct ConfigHead {
    #[serde(default)]
    linux: Option<Linux>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    process: Option<Process>,
    #[serde(default)]
    root: Option<Root>,
}

#[derive(Deserialize)]
struct Process {
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize)]
struct Root {
    path: String,
}

/// The image's architecture, as the generator copies it into annotations.
const ARCHITECTURE_ANNOTATION: &str = "org.opencontainers.image.architecture";
const VARIANT_ANNOTATION: &str = "org.opencontainers.image.variant";

impl ConfigHead {
    /// The user namespace the config asks for: its uid and gid maps.
    fn user_namespace(&self) -> Option<UserNamespace> {
        let linux = self.linux.as_ref()?;
        linux
            .namespaces
            .iter()
            .any(|n| n.kind == "user")
            .then(|| UserNamespace {
                uid_map: linux.uid_mappings.clone(),
                gid_map: linux.gid_mappings.clone(),
            })
    }

    /// The ABI the config's annotations name, and the name as written.
    fn annotated_abi(&self) -> Option<(Abi, String)> {
        let arch = self.annotations.get(ARCHITECTURE_ANNOTATION)?;
        let variant = self.annotations.get(VARIANT_ANNOTATION).map(String::as_str);
        Some((Abi::for_arch(arch, variant)?, arch.clone()))
    }

    /// The ABI of the program the container starts (an absolute
    /// `process.args[0]`, resolved inside the unpacked rootfs), and its path.
    fn program_abi(&self, bundle_dir: &Path) -> Option<(Abi, String)> {
        let program = self.process.as_ref()?.args.first().filter(|p| p.starts_with('/'))?;
        let rootfs = bundle_dir.join(self.root.as_ref().map_or("rootfs", |r| r.path.as_str()));
        let mut root = RootDir::open(&rootfs, Symlinks::FollowInRoot).ok()?;
        let (mut file, _) = root.open_file_follow(Path::new(program)).ok()?;
        let mut header = Vec::with_capacity(64);
        std::io::Read::by_ref(&mut file)
            .take(64)
            .read_to_end(&mut header)
            .ok()?;
        Some((Abi::from_elf_header(&header)?, program.clone()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
    #[serde(default)]
    uid_mappings: Vec<IdMapping>,
    #[serde(default)]
    gid_mappings: Vec<IdMapping>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
}

struct UserNamespace {
    uid_map: Vec<IdMapping>,
    gid_map: Vec<IdMapping>,
}

/// The archive's owners, applied when the agent is root (within the user
/// namespace's maps, if any). Otherwise the files belong to the agent,
/// which only works for a user namespace that maps to the agent's ids.
fn owners(user_namespace: Option<&UserNamespace>) -> Result<Owners, InstallError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(match user_namespace {
            Some(ns) => Owners::Archive {
                uid_map: ns.uid_map.clone(),
                gid_map: ns.gid_map.clone(),
            },
            None => Owners::Archive {
                uid_map: Vec::new(),
                gid_map: Vec::new(),
            },
        });
    }
    if let Some(ns) = user_namespace {
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let covers = |map: &[IdMapping], id: u32| map.iter().any(|m| m.covers_host(id));
        if !covers(&ns.uid_map, uid) || !covers(&ns.gid_map, gid) {
            let ranges = |map: &[IdMapping]| {
                map.iter()
                    .map(|m| format!("{}-{}", m.host_id, u64::from(m.host_id) + u64::from(m.size).max(1) - 1))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(InstallError::NeedsRoot {
                uids: ranges(&ns.uid_map),
                gids: ranges(&ns.gid_map),
                uid,
                gid,
            });
        }
    }
    Ok(Owners::Unpacker)
}

/// Gives others search permission on every directory from the storage root
/// down to `dir`.
fn keep_searchable(storage_root: &Path, dir: &Path) -> Result<(), StoreError> {
    let mut current = Some(dir);
    while let Some(path) = current {
        let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o001)).map_err(io(path))?;
        }
        if path == storage_root {
            break;
        }
        current = path.parent().filter(|p| p.starts_with(storage_root));
    }
    Ok(())
}
