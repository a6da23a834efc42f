//! The image's side of library matching: every ELF file in the rootfs, and
//! what each of its DT_NEEDED entries resolves to inside the image.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bundlegen_protocol::root::EntryKind;
use platform_probe::elf::{ElfInfo, is_elf};
use platform_probe::loader::{ConfFiles, SearchPath, candidates, ld_so_conf_dirs};

use crate::rootfs::Rootfs;

/// ELF files larger than this are not parsed (none of a bundle's libraries is).
const MAX_ELF_BYTES: u64 = 1 << 30;

/// One DT_NEEDED entry and where the loader finds it in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub name: String,
    /// The path the loader tries with success, and the real file behind it.
    pub found: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ImageObject {
    pub info: ElfInfo,
    pub needs: Vec<Need>,
}

/// All ELF objects of an image, by real path (`/usr/lib/libz.so.1.2.11`).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub objects: BTreeMap<String, ImageObject>,
    /// Files that start like ELF but could not be parsed.
    pub unreadable: Vec<(String, String)>,
    pub search: SearchPath,
}

fn container_path(rel: &Path) -> String {
    format!("/{}", rel.display())
}

impl Inventory {
    /// Scans the rootfs. `ld_library_path` is the app's `LD_LIBRARY_PATH`.
    pub fn scan(rootfs: &mut dyn Rootfs, ld_library_path: &[String]) -> Inventory {
        let mut inventory = Inventory::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = rootfs.read_dir(&dir) else { continue };
            for (name, kind) in entries {
                let rel = dir.join(&name);
                match kind {
                    EntryKind::Dir => pending.push(rel),
                    EntryKind::File => {
                        if let Some(result) = read_elf(rootfs, &rel) {
                            match result {
                                Ok(info) => {
                                    inventory.objects.insert(
                                        container_path(&rel),
                                        ImageObject {
                                            info,
                                            needs: Vec::new(),
                                        },
                                    );
                                }
                                Err(reason) => inventory.unreadable.push((container_path(&rel), reason)),
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        inventory.search = SearchPath {
            ld_library_path: ld_library_path.to_vec(),
            configured: ld_so_conf_dirs(&mut ConfIn(rootfs)),
        };
        inventory.resolve_all(rootfs);
        inventory
    }

    /// The real path behind a container path, if it is one of our objects.
    pub fn real_object(&self, rootfs: &mut dyn Rootfs, path: &str) -> Option<String> {
        let real = container_path(&rootfs.resolve_follow(Path::new(path)).ok()?);
        self.objects.contains_key(&real).then_some(real)
    }

    fn resolve_all(&mut self, rootfs: &mut dyn Rootfs) {
        let mut resolved: BTreeMap<String, Vec<Need>> = BTreeMap::new();
        for (path, object) in &self.objects {
            let origin = Path::new(path)
                .parent()
                .map_or("/".to_string(), |p| p.display().to_string());
            let needs = object
                .info
                .needed
                .iter()
                .map(|name| {
                    let found = candidates(name, &object.info, &origin, &self.search)
                        .into_iter()
                        .find_map(|candidate| {
                            let real = self.real_object(rootfs, &candidate)?;
                            let library = &self.objects[&real].info;
                            object.info.abi.can_load(&library.abi).then_some((candidate, real))
                        });
                    Need {
                        name: name.clone(),
                        found,
                    }
                })
                .collect();
            resolved.insert(path.clone(), needs);
        }
        for (path, needs) in resolved {
            if let Some(object) = self.objects.get_mut(&path) {
                object.needs = needs;
            }
        }
    }
}

/// The loader's configuration files, read inside the rootfs.
struct ConfIn<'a>(&'a mut dyn Rootfs);

impl ConfFiles for ConfIn<'_> {
    fn read(&mut self, path: &str) -> Option<String> {
        let (mut file, _) = self.0.open_file_follow(Path::new(path)).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn list(&mut self, dir: &str) -> Vec<String> {
        let Ok(real) = self.0.resolve_follow(Path::new(dir)) else {
            return Vec::new();
        };
        let entries = self.0.read_dir(&real).unwrap_or_default();
        entries
            .into_iter()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect()
    }
}

/// Parses `rel` if it is an ELF file: `None` if it is not one.
fn read_elf(rootfs: &mut dyn Rootfs, rel: &Path) -> Option<Result<ElfInfo, String>> {
    let mut file = rootfs.open_file(rel).ok()?;
    let mut head = [0u8; 4];
    file.read_exact(&mut head).ok()?;
    if !is_elf(&head) {
        return None;
    }
    let size = file.size;
    if size > MAX_ELF_BYTES {
        return Some(Err(format!("{size} bytes is too large to inspect")));
    }
    let mut bytes = head.to_vec();
    if let Err(e) = file.take(MAX_ELF_BYTES).read_to_end(&mut bytes) {
        return Some(Err(e.to_string()));
    }
    Some(ElfInfo::parse(&bytes).map_err(|e| e.to_string()))
}

/// The directory and file name of a container path.
pub fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}
