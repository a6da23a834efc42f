//! A running package instance, assembled under
//! `<runtime_dir>/instances/<app>/`:
//!
//! ```text
//! layers/<n>/        each package's content, read-only (EROFS on a loop
//!                    device, or its extracted tar bound read-only), app first
//! scratch/           a tmpfs: upper/ and work/ of the overlay
//! bundle/rootfs/     the overlay: GPU layer : app : runtime : base
//! bundle/config.json what Dobby starts
//! instance.json      what it is made of
//! ```
//!
//! Set up whole or not at all (a failure takes down what was mounted), and
//! taken down deepest mount first; at the agent's start, instances whose
//! container is not running are taken down (see `agent::packages`).

use std::io;
use std::path::{Path, PathBuf};

use bundlegen_protocol::fsutil::write_file_atomic;
use serde::{Deserialize, Serialize};

use super::host::{ErofsImage, Mounter};

/// The directory of the instances.
pub const INSTANCES: &str = "instances";
const RECORD: &str = "instance.json";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstanceError + 'a {
    move |source| InstanceError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a layer's content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    Erofs(ErofsImage),
    /// An extracted tar content tree.
    Tree(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `id version`.
    pub name: String,
    pub source: LayerSource,
}

/// What an instance is made of.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Uppermost first: the app, then what it is layered on.
    pub layers: Vec<Layer>,
    /// The GPU layer's `rootfs/`, above everything.
    pub gpu_rootfs: Option<PathBuf>,
    pub scratch_size: u64,
    /// The config.json, made with [`Instance::config_path`] for its hooks.
    pub config: serde_json::Value,
}

/// What `instance.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub layers: Vec<String>,
    /// The GPU layer's directory it holds on to.
    pub gpu: Option<PathBuf>,
}

/// An instance's directory.
#[derive(Debug, Clone)]
pub struct Instance {
    pub dir: PathBuf,
}

impl Instance {
    pub fn of(runtime_dir: &Path, app: &str) -> Instance {
        Instance {
            dir: runtime_dir.join(INSTANCES).join(app),
        }
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    pub fn config_path(&self) -> PathBuf {
        self.bundle().join("config.json")
    }

    fn layer(&self, index: usize) -> PathBuf {
        self.dir.join("layers").join(index.to_string())
    }

    /// Mounts and writes everything; on failure, takes down what it made.
    /// Returns the bundle directory.
    pub fn set_up(&self, mounter: &dyn Mounter, plan: &Plan) -> Result<PathBuf, InstanceError> {
        self.tear_down(mounter)?;
        match self.assemble(mounter, plan) {
            Ok(bundle) => Ok(bundle),
            Err(error) => {
                if let Err(cleanup) = self.tear_down(mounter) {
                    tracing::error!("taking down the failed instance {}: {cleanup}", self.dir.display());
                }
                Err(error)
            }
        }
    }

    fn assemble(&self, mounter: &dyn Mounter, plan: &Plan) -> Result<PathBuf, InstanceError> {
        let mkdir = |path: &Path| std::fs::create_dir_all(path).map_err(io_error("creating", path));
        let mut lower: Vec<PathBuf> = plan.gpu_rootfs.iter().cloned().collect();
        for (index, layer) in plan.layers.iter().enumerate() {
            let target = self.layer(index);
            mkdir(&target)?;
            match &layer.source {
                LayerSource::Erofs(image) => mounter.mount_erofs(image, &target),
                LayerSource::Tree(tree) => mounter.bind_read_only(tree, &target),
            }
            .map_err(io_error("mounting the content of", &target))?;
            lower.push(target);
        }
        let scratch = self.dir.join("scratch");
        mkdir(&scratch)?;
        mounter
            .mount_tmpfs(&scratch, plan.scratch_size)
            .map_err(io_error("mounting", &scratch))?;
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        mkdir(&upper)?;
        mkdir(&work)?;
        let bundle = self.bundle();
        let rootfs = bundle.join("rootfs");
        mkdir(&rootfs)?;
        mounter
            .mount_overlay(&lower, &upper, &work, &rootfs)
            .map_err(io_error("mounting the overlay at", &rootfs))?;
        let config = serde_json::to_vec_pretty(&plan.config).expect("a JSON value serialises");
        let config_path = self.config_path();
        write_file_atomic(&config_path, &config, 0o644).map_err(io_error("writing", &config_path))?;
        let record = Record {
            layers: plan.layers.iter().map(|l| l.name.clone()).collect(),
            gpu: plan.gpu_rootfs.as_ref().and_then(|r| r.parent()).map(Path::to_path_buf),
        };
        let record_path = self.dir.join(RECORD);
        write_file_atomic(&record_path, &serde_json::to_vec(&record).expect("serialises"), 0o644)
            .map_err(io_error("writing", &record_path))?;
        Ok(bundle)
    }

    /// Unmounts everything of the instance and removes its directory.
    pub fn tear_down(&self, mounter: &dyn Mounter) -> Result<(), InstanceError> {
        if std::fs::symlink_metadata(&self.dir).is_err() {
            return Ok(());
        }
        mounter
            .unmount_under(&self.dir)
            .map_err(io_error("unmounting under", &self.dir))?;
        if !mounter.mounted_under(&self.dir).is_empty() {
            return Err(InstanceError::Io {
                what: "unmounting under",
                path: self.dir.clone(),
                source: io::Error::other("mounts are left"),
            });
        }
        bundlegen_protocol::root::remove_tree(&self.dir).map_err(|e| InstanceError::Io {
            what: "removing",
            path: self.dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(())
    }

    pub fn record(&self) -> Option<Record> {
        let bytes = std::fs::read(self.dir.join(RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The instances under `runtime_dir`: (app, instance).
pub fn all(runtime_dir: &Path) -> Vec<(String, Instance)> {
    let Ok(entries) = std::fs::read_dir(runtime_dir.join(INSTANCES)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), Instance { dir: e.path() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::host::fake::{MountCall, RecordingMounter};
    use super::*;

    fn plan(store: &Path) -> Plan {
        Plan {
            layers: vec![
                Layer {
                    name: "app 1".into(),
                    source: LayerSource::Erofs(ErofsImage {
                        file: store.join("app/1/package.ralf"),
                        offset: 8192,
                        size: 40960,
                        verity: None,
                    }),
                },
                Layer {
                    name: "base 2".into(),
                    source: LayerSource::Tree(store.join("base/2/content")),
                },
            ],
            gpu_rootfs: Some(PathBuf::from("/opt/dac/gpu-layers/abc/rootfs")),
            scratch_size: 1 << 20,
            config: json!({"ociVersion": "1.0.2"}),
        }
    }

    #[test]
    fn layers_scratch_overlay_then_config_and_down_again() {
        let dir = tempfile::tempdir().unwrap();
        let instance = Instance::of(dir.path(), "app");
        let mounter = RecordingMounter::default();
        let bundle = instance.set_up(&mounter, &plan(Path::new("/store"))).unwrap();
        assert_eq!(bundle, instance.dir.join("bundle"));
        let calls = mounter.calls();
        let layer = |n: usize| instance.dir.join("layers").join(n.to_string());
        assert!(matches!(&calls[0], MountCall::Erofs { target, image } if *target == layer(0) && image.offset == 8192));
        assert_eq!(
            calls[1],
            MountCall::Bind {
                source: PathBuf::from("/store/base/2/content"),
                target: layer(1)
            }
        );
        assert!(matches!(&calls[2], MountCall::Tmpfs { size, .. } if *size == 1 << 20));
        assert_eq!(
            calls[3],
            MountCall::Overlay {
                lower: vec![PathBuf::from("/opt/dac/gpu-layers/abc/rootfs"), layer(0), layer(1)],
                target: bundle.join("rootfs"),
            }
        );
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(instance.config_path()).unwrap()).unwrap();
        assert_eq!(written["ociVersion"], "1.0.2");
        let record = instance.record().unwrap();
        assert_eq!(record.layers, ["app 1", "base 2"]);
        assert_eq!(record.gpu, Some(PathBuf::from("/opt/dac/gpu-layers/abc")));
        assert_eq!(all(dir.path()).len(), 1);

        instance.tear_down(&mounter).unwrap();
        assert!(mounter.mounted.lock().unwrap().is_empty());
        assert!(!instance.dir.exists());
        assert!(all(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_mount_leaves_nothing() {
        for failing in ["erofs", "bind", "tmpfs", "overlay"] {
            let dir = tempfile::tempdir().unwrap();
            let instance = Instance::of(dir.path(), "app");
            let mounter = RecordingMounter::default();
            *mounter.fail.lock().unwrap() = Some(failing);
            let error = instance.set_up(&mounter, &plan(Path::new("/store"))).unwrap_err();
            assert!(error.to_string().contains("failed (as asked)"), "{failing}: {error}");
            assert!(mounter.mounted.lock().unwrap().is_empty(), "{failing}");
            assert!(!instance.dir.exists(), "{failing}");
        }
    }
}
