//! The GPU layer RDK's RuntimeManager overlays on top of every app (RALF
//! packages): the box's graphics libraries with everything they need but
//! glibc's family, under `DIR/rootfs/` at their paths (hard links to the
//! box's files, or copies), and `DIR/config.json` with `vendorGpuSupport`:
//! the GPU, display and buffer device nodes, the groups that own them, and
//! the GLVND vendor files to bind-mount. This replaces RDK's ssh + readelf
//! script; the agent makes it on the box from a probe.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bundlegen_protocol::fsutil::write_file_atomic;
use bundlegen_protocol::probe::{DeviceClass, Library, ProbeReport, is_glibc_soname};
use serde::{Deserialize, Serialize};

use crate::formats::is_graphics_library;

/// Device classes the layer gives apps: GPU, display, and the buffers they share.
const LAYER_CLASSES: &[DeviceClass] = &[DeviceClass::Gpu, DeviceClass::Display, DeviceClass::Memory];
/// Where GLVND's EGL vendor files live.
const EGL_VENDOR_DIRS: &[&str] = &["/usr/share/glvnd/egl_vendor.d", "/etc/glvnd/egl_vendor.d"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuLayerConfig {
    pub vendor_gpu_support: VendorGpuSupport,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorGpuSupport {
    pub dev_nodes: Vec<String>,
    pub group_ids: Vec<u32>,
    pub files: Vec<BindFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub destination: String,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct GpuLayer {
    /// Real paths of the libraries in the layer.
    pub libraries: Vec<String>,
    pub config: GpuLayerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuLayerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the box has no graphics libraries (EGL, GLES, wayland-egl, vendor GPU libraries)")]
    NoGraphics,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> GpuLayerError + '_ {
    move |source| GpuLayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The graphics libraries and their dependency closure, glibc's family left out.
pub fn closure(report: &ProbeReport) -> Vec<&Library> {
    let by_name: BTreeMap<&str, &Library> = report
        .libraries
        .iter()
        .flat_map(|l| l.names.iter().map(move |n| (n.as_str(), l)))
        .collect();
    let glibc = |library: &Library| {
        let name = |n: &str| is_glibc_soname(n.rsplit('/').next().unwrap_or(n));
        library.soname.as_deref().is_some_and(name) || library.names.iter().any(|n| name(n))
    };
    let mut taken: BTreeMap<&str, &Library> = BTreeMap::new();
    let mut pending: VecDeque<&Library> = report.libraries.iter().filter(|l| is_graphics_library(l)).collect();
    while let Some(library) = pending.pop_front() {
        if glibc(library) || taken.insert(library.path.as_str(), library).is_some() {
            continue;
        }
        for dependency in &library.deps {
            if let Some(found) = dependency.path.as_deref().and_then(|p| by_name.get(p)) {
                pending.push_back(found);
            }
        }
    }
    taken.into_values().collect()
}

/// The layer's `config.json` for `report`.
pub fn config(report: &ProbeReport, root: &Path) -> GpuLayerConfig {
    let nodes: Vec<_> = report
        .devices
        .iter()
        .filter(|d| LAYER_CLASSES.contains(&d.class))
        .collect();
    let group_ids: BTreeSet<u32> = nodes.iter().map(|d| d.gid).filter(|gid| *gid != 0).collect();
    let mut files = Vec::new();
    for dir in EGL_VENDOR_DIRS {
        let Ok(entries) = fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names.into_iter().filter(|n| n.ends_with(".json")) {
            let path = format!("{dir}/{name}");
            files.push(BindFile {
                kind: "bind".into(),
                source: path.clone(),
                destination: path,
            });
        }
    }
    GpuLayerConfig {
        vendor_gpu_support: VendorGpuSupport {
            dev_nodes: nodes.iter().map(|d| d.path.clone()).collect(),
            group_ids: group_ids.into_iter().collect(),
            files,
        },
    }
}

/// Writes the GPU layer of the box at `root` (described by `report`) to
/// `out`: assembled beside it, then swapped in, so `out` is always whole.
/// `copy` copies the libraries instead of hard-linking them (hard links
/// fall back to copies across filesystems).
pub fn write(report: &ProbeReport, root: &Path, out: &Path, copy: bool) -> Result<GpuLayer, GpuLayerError> {
    let libraries = closure(report);
    if libraries.is_empty() {
        return Err(GpuLayerError::NoGraphics);
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(parent)
        .map_err(io_error(parent))?;
    let layer_root = staging.path().join("rootfs");
    for library in &libraries {
        for name in &library.names {
            let target = layer_root.join(name.trim_start_matches('/'));
            let source = root.join(name.trim_start_matches('/'));
            fs::create_dir_all(target.parent().expect("a library path has a directory")).map_err(io_error(&target))?;
            if *name == library.path {
                if copy || fs::hard_link(&source, &target).is_err() {
                    fs::copy(&source, &target).map_err(io_error(&source))?;
                }
            } else {
                let link = fs::read_link(&source).map_err(io_error(&source))?;
                std::os::unix::fs::symlink(&link, &target).map_err(io_error(&target))?;
            }
        }
    }
    let config = config(report, root);
    let text = serde_json::to_string_pretty(&config).expect("the config serializes");
    let config_path = staging.path().join("config.json");
    write_file_atomic(&config_path, text.as_bytes(), 0o644).map_err(io_error(&config_path))?;
    // Swap the new layer in: replace an old one only once the new one is whole.
    let staging = staging.keep();
    if fs::symlink_metadata(out).is_ok() {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staging,
            nix::fcntl::AT_FDCWD,
            out,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| GpuLayerError::Io {
            path: out.to_path_buf(),
            source: e.into(),
        })?;
        bundlegen_protocol::root::remove_tree(&staging).map_err(|e| GpuLayerError::Io {
            path: staging.clone(),
            source: io::Error::other(e.to_string()),
        })?;
    } else {
        fs::rename(&staging, out).map_err(io_error(out))?;
    }
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error(parent))?;
    Ok(GpuLayer {
        libraries: libraries.iter().map(|l| l.path.clone()).collect(),
        config,
    })
}
