//! Installed RALF packages at run time: an app's instance assembled from
//! its layers for a launch (content checked as `packages.verity` says),
//! taken down when its container stops, and reconciled at start; the GPU
//! layer; what `GetPackageInfo` tells.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundlegen_protocol::digest::{Sha256Digest, to_hex};
use bundlegen_protocol::fsutil::write_file_atomic;
use bundlegen_protocol::ralf::ContentKind;
use bundlegen_protocol::ralf::package::{self, Layout, PackageError, PackageFile};

use super::{Agent, Event, InstanceSetupError, VersionError};
use crate::config::{AgentConfig, GpuLayerSource, PackagesConfig, VerityMode};
use crate::ralf::dependencies::layer_order;
use crate::ralf::gpu::{self, GpuError, GpuLayer};
use crate::ralf::host::{DM_PREFIX, ErofsImage, KernelVerity, Mounter};
use crate::ralf::instance::{self, Instance, Layer, LayerSource, Plan};
use crate::ralf::spec::{self, DEFAULT_BASE_SPEC};
use crate::ralf::{CONTENT_DIR, PACKAGE_FILE};
use crate::store::{Store, VersionState};

/// Where the userspace verity checks of this boot are remembered.
const VERIFIED_DIR: &str = "verified";
/// The agent's GPU layer generations, under the storage root.
const GPU_LAYERS: &str = "gpu-layers";

/// What `GetPackageInfo` tells of an installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub app: String,
    pub version: String,
    pub package_type: String,
    pub content: String,
    /// What it is layered on: id → installed version.
    pub dependencies: BTreeMap<String, String>,
    /// `app version` of what is layered on it.
    pub dependants: Vec<String>,
    pub signer: String,
    /// How its content is checked when mounted: `kernel`, `userspace`, or
    /// `none` (tar content, extracted at install after its digest was checked).
    pub verity: String,
    /// Whether the userspace check passed since boot.
    pub verified: bool,
    pub manifest: String,
}

/// The dm-verity device name of an instance's `index`th layer.
fn dm_name(app: &str, index: usize) -> String {
    format!("{DM_PREFIX}{}-{index}", &Sha256Digest::of(app.as_bytes()).hex()[..16])
}

fn verified_marker(runtime_dir: &Path, id: &str, version: &str) -> PathBuf {
    runtime_dir.join(VERIFIED_DIR).join(format!("{id}@{version}"))
}

/// Checks an EROFS layer's hash tree and every block against its signed
/// root hash, once per boot for the stored file `sha256` names.
fn ensure_verified(
    runtime_dir: &Path,
    id: &str,
    version: &str,
    sha256: &str,
    file: &PackageFile,
    layout: &Layout,
) -> Result<(), PackageError> {
    let marker = verified_marker(runtime_dir, id, version);
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == sha256) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    package::check_content_verity(file, layout)?;
    tracing::info!(
        "{id} {version}: content matches its root hash ({:?})",
        started.elapsed()
    );
    if let Some(parent) = marker.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = write_file_atomic(&marker, sha256.as_bytes(), 0o600) {
        tracing::warn!("{}: {e}; the check is made again next launch", marker.display());
    }
    Ok(())
}

/// The GPU layer instances get now, if any.
fn current_gpu_layer(config: &AgentConfig) -> Result<Option<GpuLayer>, GpuError> {
    match config.packages.gpu_layer_source() {
        GpuLayerSource::None => Ok(None),
        GpuLayerSource::Dir(dir) => gpu::load(&dir).map(Some),
        GpuLayerSource::Probe => {
            let generations = config.storage_root.join(GPU_LAYERS);
            let current = match gpu::current(&generations) {
                Some(current) => current,
                None => make_gpu_layer(config, &[])?,
            };
            gpu::load(&current).map(Some)
        }
    }
}

/// Probes the box and makes its GPU layer generation (if it changed).
fn make_gpu_layer(config: &AgentConfig, in_use: &[PathBuf]) -> Result<PathBuf, GpuError> {
    let options = platform_probe::ProbeOptions {
        root: config.probe_root.clone(),
        expected_devices: Vec::new(),
        programs: Vec::new(),
        cache: Some(crate::probe::cache_file(&config.storage_root)),
    };
    let report = platform_probe::probe(&options).map_err(|e| GpuError::Layer {
        dir: config.probe_root.clone(),
        reason: format!("probing the box: {e}"),
    })?;
    gpu_layer_from(config, &report, in_use)
}

/// Makes the GPU layer generation of a probe report.
pub(crate) fn gpu_layer_from(
    config: &AgentConfig,
    report: &bundlegen_protocol::probe::ProbeReport,
    in_use: &[PathBuf],
) -> Result<PathBuf, GpuError> {
    gpu::refresh(
        &config.storage_root.join(GPU_LAYERS),
        report,
        &config.probe_root,
        &crate::probe::fingerprint(report),
        in_use,
    )
}

/// The config.json every instance starts from.
fn base_spec(settings: &PackagesConfig) -> Result<serde_json::Value, InstanceSetupError> {
    let (text, path) = match &settings.base_spec {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| InstanceSetupError::BaseSpec {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            path.clone(),
        ),
        None => (DEFAULT_BASE_SPEC.to_string(), PathBuf::from("the built-in base spec")),
    };
    serde_json::from_str(&text).map_err(|e| InstanceSetupError::BaseSpec {
        path,
        reason: e.to_string(),
    })
}

/// The app's storage, owned by the host user its root is mapped to.
fn data_dir(store: &Store, app: &str, users: Option<(u32, u32)>) -> Result<PathBuf, InstanceSetupError> {
    let dir = store.data_dir(app);
    let failed = |e: std::io::Error| {
        InstanceSetupError::Mounts(instance::InstanceError::Io {
            what: "creating",
            path: dir.clone(),
            source: e,
        })
    };
    std::fs::create_dir_all(&dir).map_err(failed)?;
    if let Some((uid, gid)) = users
        && nix::unistd::geteuid().is_root()
    {
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| failed(e.into()))?;
    }
    Ok(dir)
}

/// Assembles the instance of `app` `version`: its layers in order, each
/// package's content checked as configured, the GPU layer, the config.
fn assemble_instance(
    store: &Store,
    config: &AgentConfig,
    mounter: &dyn Mounter,
    app: &str,
    version: &str,
) -> Result<PathBuf, InstanceSetupError> {
    let settings = &config.packages;
    let order = layer_order((app, version), |id, v| {
        let record = store.app(id)?;
        let entry = record.versions.get(v).filter(|e| e.state == VersionState::Installed)?;
        entry.package.as_ref().map(|p| p.dependencies.clone())
    })?;
    let mut configs = Vec::with_capacity(order.len());
    let mut layers = Vec::with_capacity(order.len());
    for (index, (id, v)) in order.iter().enumerate() {
        let name = format!("{id} {v}");
        let failed = |source: PackageError| InstanceSetupError::Package {
            package: name.clone(),
            source,
        };
        let dir = store.bundle_dir(id, v);
        let path = dir.join(PACKAGE_FILE);
        let file = PackageFile::open(&path).map_err(failed)?;
        let layout = package::read_layout(&file).map_err(failed)?;
        let source = match layout.content_kind {
            ContentKind::Erofs { .. } => {
                let annotations = package::verity_annotations(&layout.content).map_err(failed)?;
                let location = file
                    .location(&layout.content.blob_path())
                    .ok_or_else(|| failed(PackageError::Content("missing from the package".into())))?;
                let image = match settings.verity {
                    VerityMode::Kernel => ErofsImage {
                        file: path.clone(),
                        offset: location.offset,
                        size: layout.content.size,
                        verity: Some(KernelVerity {
                            name: dm_name(app, index),
                            root_hash: to_hex(&annotations.root_hash),
                            hash_offset: annotations.offset,
                        }),
                    },
                    VerityMode::Userspace => {
                        let sha256 = store
                            .app(id)
                            .and_then(|r| r.versions.get(v).map(|e| e.sha256.clone()))
                            .unwrap_or_default();
                        ensure_verified(&settings.runtime_dir, id, v, &sha256, &file, &layout).map_err(failed)?;
                        ErofsImage {
                            file: path.clone(),
                            offset: location.offset,
                            size: annotations.offset,
                            verity: None,
                        }
                    }
                };
                Some(LayerSource::Erofs(image))
            }
            ContentKind::Tar | ContentKind::TarGzip | ContentKind::TarZstd => {
                Some(LayerSource::Tree(dir.join(CONTENT_DIR)))
            }
            ContentKind::Empty => None,
        };
        if let Some(source) = source {
            layers.push(Layer { name, source });
        }
        configs.push(layout.config);
    }
    let gpu = current_gpu_layer(config)?;
    let devices = gpu
        .as_ref()
        .map(|g| gpu::device_nodes(&g.support.dev_nodes))
        .unwrap_or_default();
    let users = settings.app_uid.zip(settings.app_gid);
    let data_dir = data_dir(store, app, users)?;
    let base = base_spec(settings)?;
    let instance = Instance::of(&settings.runtime_dir, app);
    let packages: Vec<_> = configs.iter().collect();
    let runtime_config = spec::runtime_config(&spec::Instance {
        base: &base,
        packages: &packages,
        gpu: gpu.as_ref().map(|g| &g.support),
        devices: &devices,
        users,
        data_dir: &data_dir,
        wayland_socket: settings.wayland_socket.as_deref(),
        rialto_socket: settings.rialto_socket.as_deref(),
        config_path: &instance.config_path(),
    })?;
    let plan = Plan {
        layers,
        gpu_rootfs: gpu.map(|g| g.rootfs),
        scratch_size: settings.scratch_size.bytes(),
        config: runtime_config,
    };
    Ok(instance.set_up(mounter, &plan)?)
}

impl Agent {
    /// Forgets that a package version's content was checked: an install
    /// (or reinstall) is checked again at its first launch.
    pub(super) fn forget_verified(&self, app: &str, version: &str) {
        let _ = std::fs::remove_file(verified_marker(&self.config.packages.runtime_dir, app, version));
    }

    /// Whether an installed version is a RALF package.
    pub(super) fn is_package(&self, app: &str, version: &str) -> bool {
        self.store
            .app(app)
            .and_then(|r| r.versions.get(version).map(|v| v.package.is_some()))
            .unwrap_or(false)
    }

    /// Assembles an instance of a package for its launch; returns its
    /// bundle directory.
    pub(super) async fn prepare_instance(&self, app: &str, version: &str) -> Result<PathBuf, InstanceSetupError> {
        let (config, mounter) = (self.config.clone(), self.mounter.clone());
        let (app, version) = (app.to_string(), version.to_string());
        self.blocking(move |store| assemble_instance(store, &config, mounter.as_ref(), &app, &version))
            .await
    }

    /// Takes down the instance of `app`, if it has one.
    pub(super) async fn tear_down_instance(&self, app: &str) {
        let instance = Instance::of(&self.config.packages.runtime_dir, app);
        let mounter = self.mounter.clone();
        let result = self.blocking(move |_| instance.tear_down(mounter.as_ref())).await;
        if let Err(e) = result {
            tracing::error!("{app}: taking down its instance: {e}");
        }
    }

    /// Takes instances down when their containers stop.
    pub fn watch_instances(self: &Arc<Self>) {
        let agent = self.clone();
        let mut events = self.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Stopped { app, .. }) => agent.tear_down_instance(&app).await,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// At start: takes down the instances whose container is not running
    /// (the agent or the box stopped while they ran), and what they left.
    pub async fn reconcile_instances(&self) -> Vec<String> {
        let running: Vec<String> = match self.containers.running().await {
            Ok(running) => running.into_iter().map(|(_, id)| id).collect(),
            Err(e) => {
                tracing::warn!("instances not reconciled: {e}");
                return Vec::new();
            }
        };
        let mut removed = Vec::new();
        for (app, _) in instance::all(&self.config.packages.runtime_dir) {
            if !running.contains(&app) {
                self.tear_down_instance(&app).await;
                removed.push(app);
            }
        }
        let mounter = self.mounter.clone();
        match self.blocking(move |_| mounter.release_stale()).await {
            Ok(0) => {}
            Ok(closed) => tracing::warn!("recovery: {closed} dm-verity devices nothing mounted were closed"),
            Err(e) => tracing::warn!("recovery: dm-verity devices: {e}"),
        }
        removed
    }

    /// The GPU layer generations running instances hold on to.
    pub(crate) fn gpu_layers_in_use(&self) -> Vec<PathBuf> {
        instance::all(&self.config.packages.runtime_dir)
            .into_iter()
            .filter_map(|(_, instance)| instance.record()?.gpu)
            .collect()
    }

    fn package_info_of(&self, app: &str, version: &str) -> Option<PackageInfo> {
        let entry = self.store.app(app)?.versions.get(version)?.clone();
        let package = entry.package?;
        let erofs = package.content.starts_with("erofs");
        let verity = match (erofs, self.config.packages.verity) {
            (false, _) => "none",
            (true, VerityMode::Kernel) => "kernel",
            (true, VerityMode::Userspace) => "userspace",
        };
        let marker = verified_marker(&self.config.packages.runtime_dir, app, version);
        Some(PackageInfo {
            app: app.to_string(),
            version: version.to_string(),
            package_type: package.package_type,
            content: package.content,
            dependants: self.store.dependants(app, version),
            dependencies: package.dependencies,
            signer: package.signer,
            verity: verity.to_string(),
            verified: std::fs::read_to_string(marker).is_ok_and(|m| m == entry.sha256),
            manifest: package.manifest,
        })
    }

    pub fn package_info(&self, app: &str, version: &str) -> Result<PackageInfo, VersionError> {
        self.installed(app, version)?;
        self.package_info_of(app, version)
            .ok_or_else(|| VersionError::NotAPackage {
                app: app.to_string(),
                version: version.to_string(),
            })
    }

    /// The installed packages, of every app or of `app`.
    pub fn installed_packages(&self, app: Option<&str>) -> Vec<PackageInfo> {
        self.installed_versions(app)
            .into_iter()
            .filter_map(|v| self.package_info_of(&v.app, &v.version))
            .collect()
    }
}
