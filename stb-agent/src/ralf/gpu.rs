//! The GPU layer on top of every package instance: a directory with
//! `rootfs/` (the box's graphics libraries) and `config.json`
//! (`vendorGpuSupport`: device nodes, groups, files to bind). Given by the
//! configuration, or made by the agent from its probe: then each change of
//! the box makes a new generation (`<root>/gpu-layers/<fingerprint>`), and
//! `current` points at the newest, so instances running on an older one
//! keep it until they stop.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bundlegen_protocol::probe::ProbeReport;
use platform_probe::gpu_layer::{GpuLayerConfig, VendorGpuSupport};

use super::spec::DeviceNode;

/// The link to the newest generation.
const CURRENT: &str = "current";

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("the GPU layer {dir}: {reason}")]
    Layer { dir: PathBuf, reason: String },
    #[error(transparent)]
    Make(#[from] platform_probe::gpu_layer::GpuLayerError),
}

/// A GPU layer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuLayer {
    /// Its directory, resolved (what an instance holds on to).
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub support: VendorGpuSupport,
}

/// Reads the layer at `dir` (a generation, or a link to one).
pub fn load(dir: &Path) -> Result<GpuLayer, GpuError> {
    let error = |reason: String| GpuError::Layer {
        dir: dir.to_path_buf(),
        reason,
    };
    let resolved = std::fs::canonicalize(dir).map_err(|e| error(e.to_string()))?;
    let rootfs = resolved.join("rootfs");
    if !rootfs.is_dir() {
        return Err(error("has no rootfs/".into()));
    }
    let text = std::fs::read(resolved.join("config.json")).map_err(|e| error(format!("config.json: {e}")))?;
    let config: GpuLayerConfig = serde_json::from_slice(&text).map_err(|e| error(format!("config.json: {e}")))?;
    Ok(GpuLayer {
        dir: resolved,
        rootfs,
        support: config.vendor_gpu_support,
    })
}

/// The device nodes among `paths` that the box has (others are skipped:
/// a layer made on another box of the model may name more).
pub fn device_nodes(paths: &[String]) -> Vec<DeviceNode> {
    let mut nodes = Vec::new();
    for path in paths {
        let Ok(meta) = std::fs::metadata(path) else {
            tracing::warn!("GPU layer: {path} is not on this box; not given to apps");
            continue;
        };
        let kind = match meta.file_type() {
            t if t.is_char_device() => 'c',
            t if t.is_block_device() => 'b',
            _ => {
                tracing::warn!("GPU layer: {path} is not a device node; not given to apps");
                continue;
            }
        };
        let rdev = meta.rdev();
        nodes.push(DeviceNode {
            path: path.clone(),
            kind,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            file_mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    nodes
}

/// The generations directory's current layer, if one was made.
pub fn current(generations: &Path) -> Option<PathBuf> {
    let link = generations.join(CURRENT);
    std::fs::symlink_metadata(&link).is_ok().then_some(link)
}

/// Makes the generation for a probe of the box (unless it exists) and
/// points `current` at it; older generations that no instance uses
/// (`in_use`, resolved directories) are removed. Returns the generation.
pub fn refresh(
    generations: &Path,
    report: &ProbeReport,
    root: &Path,
    fingerprint: &str,
    in_use: &[PathBuf],
) -> Result<PathBuf, GpuError> {
    let io = |path: &Path| {
        let dir = path.to_path_buf();
        move |e: std::io::Error| GpuError::Layer {
            dir,
            reason: e.to_string(),
        }
    };
    std::fs::create_dir_all(generations).map_err(io(generations))?;
    let name: String = fingerprint.chars().take(16).collect();
    let generation = generations.join(&name);
    if !generation.join("config.json").exists() {
        platform_probe::gpu_layer::write(report, root, &generation, false)?;
    }
    let link = generations.join(CURRENT);
    let staged = generations.join(format!(".{CURRENT}.new"));
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(&name, &staged).map_err(io(&staged))?;
    std::fs::rename(&staged, &link).map_err(io(&link))?;
    for entry in std::fs::read_dir(generations).map_err(io(generations))?.flatten() {
        let path = entry.path();
        let keep = entry.file_name() == CURRENT || path == generation || in_use.contains(&path);
        if !keep && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = bundlegen_protocol::root::remove_tree(&path);
        }
    }
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use bundlegen_fixtures::elf::ElfSpec;
    use bundlegen_fixtures::rootfs::RootBuilder;

    use super::*;

    /// A box with a GPU stack (and `extra` libraries), probed.
    fn probed_box(root: &Path, extra: &[&str]) -> ProbeReport {
        let library = ElfSpec::x86_64_library;
        let builder = RootBuilder::new(root);
        builder
            .elf(
                "/lib64/ld-linux-x86-64.so.2",
                &library("ld-linux-x86-64.so.2").defines(&["GLIBC_2.4"]),
            )
            .elf("/lib/libc.so.6", &library("libc.so.6").defines(&["GLIBC_2.4"]))
            .elf(
                "/usr/lib/libEGL.so.1",
                &library("libEGL.so.1").needs(&["libmali.so.0", "libc.so.6"]),
            )
            .elf(
                "/usr/lib/libGLESv2.so.2",
                &library("libGLESv2.so.2").needs(&["libmali.so.0"]),
            )
            .elf("/usr/lib/libmali.so.0", &library("libmali.so.0").needs(&["libc.so.6"]));
        for name in extra {
            builder.elf(&format!("/usr/lib/{name}"), &library(name).needs(&["libc.so.6"]));
        }
        let options = platform_probe::ProbeOptions {
            root: root.to_path_buf(),
            expected_devices: Vec::new(),
            programs: Vec::new(),
            cache: None,
        };
        platform_probe::probe(&options).unwrap()
    }

    #[test]
    fn a_changed_box_gets_a_new_generation_and_old_ones_go_once_unused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, generations) = (dir.path().join("box"), dir.path().join("gpu-layers"));
        let first = refresh(&generations, &probed_box(&root, &[]), &root, "aaaa", &[]).unwrap();
        let layer = load(&current(&generations).unwrap()).unwrap();
        assert_eq!(layer.dir, first);
        assert!(layer.rootfs.join("usr/lib/libmali.so.0").is_file());
        assert!(
            !layer.rootfs.join("lib/libc.so.6").exists(),
            "glibc's family stays the app's"
        );

        // The box changed while an instance runs on the first generation.
        let second = refresh(
            &generations,
            &probed_box(&root, &["libz.so.1"]),
            &root,
            "bbbb",
            std::slice::from_ref(&first),
        )
        .unwrap();
        assert_eq!(load(&current(&generations).unwrap()).unwrap().dir, second);
        assert!(first.is_dir(), "in use: kept");
        // It stopped; the next change clears what nothing uses.
        let third = refresh(
            &generations,
            &probed_box(&root, &["libz.so.1", "libffi.so.8"]),
            &root,
            "cccc",
            &[],
        )
        .unwrap();
        assert!(!first.exists() && !second.exists());
        assert!(third.join("config.json").is_file());
        // The same box again: the same generation, not made twice.
        assert_eq!(
            refresh(
                &generations,
                &probed_box(&root, &["libz.so.1", "libffi.so.8"]),
                &root,
                "cccc",
                &[]
            )
            .unwrap(),
            third
        );
    }

    #[test]
    fn a_layer_needs_its_rootfs_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("gpu");
        std::fs::create_dir_all(&layer).unwrap();
        assert!(load(&layer).unwrap_err().to_string().contains("rootfs"));
        std::fs::create_dir(layer.join("rootfs")).unwrap();
        std::fs::write(layer.join("config.json"), "{}").unwrap();
        assert!(load(&layer).unwrap_err().to_string().contains("vendorGpuSupport"));
        std::fs::write(
            layer.join("config.json"),
            r#"{"vendorGpuSupport":{"devNodes":["/dev/null","/dev/nonexistent-gpu","/etc/hostname"],"groupIds":[44],"files":[]}}"#,
        )
        .unwrap();
        let loaded = load(&layer).unwrap();
        assert_eq!(loaded.support.group_ids, [44]);
        let nodes = device_nodes(&loaded.support.dev_nodes);
        assert_eq!(nodes.len(), 1, "only real device nodes: {nodes:?}");
        assert_eq!((nodes[0].kind, nodes[0].major, nodes[0].minor), ('c', 1, 3));
    }
}
