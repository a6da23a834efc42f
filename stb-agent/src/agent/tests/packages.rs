//! RALF packages through the agent's operations, with the mounts fake:
//! stored as they are, dependencies resolved and guarded, instances
//! assembled in layer order and taken down when their container stops.
//! (Signed packages, real mounts and crun: `tests/packages.rs`.)

use std::path::{Path, PathBuf};

use bundlegen_fixtures::tar::{RawEntry, archive};
use bundlegen_protocol::ralf::layout::{Descriptor, Index, Manifest, to_json};
use bundlegen_protocol::ralf::{ContentKind, OCI_LAYOUT, media};
use serde_json::json;

use super::*;
use crate::ralf::host::fake::MountCall;

/// An unsigned package (a tar OCI layout) with tar content of `files`.
struct Spec<'a> {
    id: &'a str,
    version: &'a str,
    kind: &'a str,
    entry: &'a str,
    dependencies: &'a [(&'a str, &'a str)],
    files: &'a [(&'a str, &'a [u8])],
}

fn write_package(path: &Path, spec: &Spec) -> PathBuf {
    let entries: Vec<RawEntry> = spec.files.iter().map(|(p, b)| RawEntry::file(p, b)).collect();
    let content = archive(&entries);
    let dependencies: serde_json::Map<String, serde_json::Value> = spec
        .dependencies
        .iter()
        .map(|(id, range)| (id.to_string(), json!(range)))
        .collect();
    let config = json!({
        "id": spec.id, "specVersion": "1.1.0", "version": spec.version, "packageType": spec.kind,
        "entryPoint": spec.entry, "dependencies": dependencies,
        "configuration": {"urn:rdk:config:env": {"FROM": spec.id}},
    })
    .to_string()
    .into_bytes();
    let config_descriptor = Descriptor::of(media::CONFIG, &config);
    let content_descriptor = Descriptor::of(&ContentKind::Tar.media_type(), &content);
    let manifest = to_json(&Manifest {
        schema_version: 2,
        media_type: Some(media::MANIFEST.into()),
        artifact_type: Some(media::ARTIFACT_TYPE.into()),
        config: config_descriptor.clone(),
        layers: vec![content_descriptor.clone()],
        annotations: Default::default(),
    });
    let manifest_descriptor = Descriptor::of(media::MANIFEST, &manifest);
    let index = to_json(&Index {
        schema_version: 2,
        media_type: Some(media::INDEX.into()),
        manifests: vec![manifest_descriptor.clone()],
        annotations: Default::default(),
    });
    let layout = archive(&[
        RawEntry::file("oci-layout", OCI_LAYOUT),
        RawEntry::file("index.json", &index),
        RawEntry::file(&manifest_descriptor.blob_path(), &manifest),
        RawEntry::file(&config_descriptor.blob_path(), &config),
        RawEntry::file(&content_descriptor.blob_path(), &content),
    ]);
    std::fs::write(path, layout).unwrap();
    path.to_path_buf()
}

const BASE: Spec = Spec {
    id: "os.base",
    version: "1.2.0",
    kind: "base",
    entry: "bin/sh",
    dependencies: &[],
    files: &[("bin/sh", b"#!shell"), ("etc/os-release", b"ID=base\n")],
};

const APP: Spec = Spec {
    id: "com.example.app",
    version: "2.0.0",
    kind: "application",
    entry: "app/run",
    dependencies: &[("os.base", "^1.0")],
    files: &[("app/run", b"#!/bin/sh\necho hi\n")],
};

impl Fixture {
    async fn install_package(&self, spec: &Spec<'_>) -> Result<String, Arc<OperationError>> {
        let file = write_package(
            &self
                .root
                .join("downloads")
                .join(format!("{}-{}.ralf", spec.id, spec.version)),
            spec,
        );
        let (_, result) = self
            .agent
            .start_install(InstallRequest {
                app: spec.id.into(),
                version: spec.version.into(),
                source: Source::File(file),
                sha256: None,
                signature: None,
                format: None,
                reinstall: false,
            })
            .await
            .unwrap();
        result.await.unwrap()
    }

    async fn uninstalled(&self, app: &str, version: &str) -> Result<(), ErrorKind> {
        let handle = self.agent.uninstall(app, version, "full").map_err(|e| e.kind())?;
        let operation = ended(&self.agent, &handle).await;
        match operation.error {
            None => Ok(()),
            Some(error) => Err(error.kind()),
        }
    }
}

fn unsigned_allowed() -> Fixture {
    fixture_with(|c| c.allow_unsigned = true)
}

#[tokio::test]
async fn a_package_is_stored_as_it_is_and_recorded_as_one() {
    let f = unsigned_allowed();
    f.install_package(&BASE).await.unwrap();
    let dir = f.root.join("apps/os.base/1.2.0");
    assert!(dir.join("package.ralf").is_file());
    assert_eq!(std::fs::read(dir.join("content/etc/os-release")).unwrap(), b"ID=base\n");
    let record = f.agent.store.app("os.base").unwrap();
    let package = record.versions["1.2.0"].package.clone().unwrap();
    assert_eq!(
        (
            package.package_type.as_str(),
            package.content.as_str(),
            package.signer.as_str()
        ),
        ("base", "tar", "")
    );
    assert!(package.manifest.starts_with("sha256:"), "{}", package.manifest);
    assert_eq!(
        record.versions["1.2.0"].sha256,
        bundlegen_protocol::digest::Sha256Digest::of(&std::fs::read(dir.join("package.ralf")).unwrap()).hex()
    );
    let info = f.agent.package_info("os.base", "1.2.0").unwrap();
    assert_eq!(info.verity, "none");
    assert!(f.agent.installed_packages(None).iter().any(|p| p.app == "os.base"));
}

#[tokio::test]
async fn unsigned_packages_and_other_apps_packages_are_refused_and_leave_nothing() {
    let f = fixture();
    let error = f.install_package(&BASE).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Signature, "{error}");
    let message = bundlegen_protocol::error_chain(error.as_ref());
    assert!(message.contains("not signed"), "{message}");
    assert!(f.agent.store.app("os.base").is_none());
    assert!(!f.root.join("apps/os.base").exists());

    let f = unsigned_allowed();
    let file = write_package(&f.root.join("downloads/mislabelled.ralf"), &BASE);
    let (_, result) = f
        .agent
        .start_install(InstallRequest {
            app: "os.base".into(),
            version: "9.9.9".into(),
            source: Source::File(file),
            sha256: None,
            signature: None,
            format: None,
            reinstall: false,
        })
        .await
        .unwrap();
    let error = result.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadArchive);
    let message = bundlegen_protocol::error_chain(error.as_ref());
    assert!(message.contains("version is \"1.2.0\""), "{message}");
    assert!(!f.root.join("apps/os.base").exists());
}

#[tokio::test]
async fn dependencies_resolve_to_the_highest_installed_version_and_guard_uninstalls() {
    let f = unsigned_allowed();
    let missing = f.install_package(&APP).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Dependency);
    let message = bundlegen_protocol::error_chain(missing.as_ref());
    assert!(message.contains("os.base ^1.0"), "{message}");
    assert!(!f.root.join("apps/com.example.app").exists());

    f.install_package(&Spec {
        version: "1.0.0",
        ..BASE
    })
    .await
    .unwrap();
    f.install_package(&BASE).await.unwrap();
    // An older base with nothing on it went with the upgrade.
    assert!(f.agent.store.app("os.base").unwrap().versions.keys().eq(["1.2.0"]));
    f.install_package(&APP).await.unwrap();
    let app = f.agent.package_info("com.example.app", "2.0.0").unwrap();
    assert_eq!(app.dependencies.get("os.base").map(String::as_str), Some("1.2.0"));
    let base = f.agent.package_info("os.base", "1.2.0").unwrap();
    assert_eq!(base.dependants, ["com.example.app 2.0.0"]);

    // An upgrade of the base keeps the version the app is pinned to.
    f.install_package(&Spec {
        version: "1.3.0",
        ..BASE
    })
    .await
    .unwrap();
    let versions: Vec<String> = f.agent.store.app("os.base").unwrap().versions.into_keys().collect();
    assert_eq!(versions, ["1.2.0", "1.3.0"]);

    assert_eq!(f.uninstalled("os.base", "1.2.0").await, Err(ErrorKind::Dependency));
    let refused = f.agent.uninstall("os.base", "1.2.0", "full").unwrap_err();
    assert!(refused.to_string().contains("com.example.app 2.0.0"), "{refused}");
    f.uninstalled("com.example.app", "2.0.0").await.unwrap();
    f.uninstalled("os.base", "1.2.0").await.unwrap();
    assert!(f.agent.package_info("os.base", "1.2.0").is_err());
}

#[tokio::test]
async fn a_launch_mounts_the_layers_in_order_and_a_stop_takes_them_down() {
    let f = unsigned_allowed();
    f.agent.watch_instances();
    f.install_package(&BASE).await.unwrap();
    f.install_package(&APP).await.unwrap();
    let descriptor = f.agent.launch("com.example.app", "").await.unwrap();
    assert!(descriptor > 0);
    let instance = f.root.parent().unwrap().join("run/instances/com.example.app");
    let calls = f.mounter.calls();
    let layer = |n: usize| instance.join("layers").join(n.to_string());
    let content = |id: &str, v: &str| f.root.join("apps").join(id).join(v).join("content");
    assert_eq!(
        calls[..2],
        [
            MountCall::Bind {
                source: content("com.example.app", "2.0.0"),
                target: layer(0)
            },
            MountCall::Bind {
                source: content("os.base", "1.2.0"),
                target: layer(1)
            },
        ]
    );
    assert!(
        matches!(&calls[3], MountCall::Overlay { lower, .. } if *lower == [layer(0), layer(1)]),
        "{calls:?}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(instance.join("bundle/config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["args"], json!(["/app/run"]));
    assert!(config["process"]["env"].to_string().contains("FROM=com.example.app"));
    assert_eq!(config["hostname"], "com.example.app");
    match &f.containers.calls()[0] {
        Call::Start { id, bundle } => {
            assert_eq!(id, "com.example.app");
            assert_eq!(*bundle, std::fs::canonicalize(instance.join("bundle")).unwrap());
        }
        other => panic!("{other:?}"),
    }

    f.agent.emit(Event::Stopped {
        app: "com.example.app".into(),
        status: 0,
    });
    for _ in 0..200 {
        if !instance.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !instance.exists(),
        "the instance is taken down when its container stops"
    );
    assert!(f.mounter.mounted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_launch_and_a_stale_instance_leave_no_mounts() {
    let f = unsigned_allowed();
    f.install_package(&BASE).await.unwrap();
    *f.containers.refuse.lock().unwrap() = true;
    let refused = f.agent.launch("os.base", "").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Dobby);
    assert!(f.mounter.mounted.lock().unwrap().is_empty());

    // An instance whose container is not running (the agent stopped while
    // it ran) is taken down at start.
    *f.containers.refuse.lock().unwrap() = false;
    f.agent.launch("os.base", "").await.unwrap();
    f.containers.running.lock().unwrap().clear();
    assert_eq!(f.agent.reconcile_instances().await, ["os.base"]);
    assert!(f.mounter.mounted.lock().unwrap().is_empty());
    assert!(f.agent.reconcile_instances().await.is_empty());
}

#[tokio::test]
async fn a_launch_with_a_broken_base_spec_says_which_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("base-spec.json");
    std::fs::write(&spec, "{not json").unwrap();
    let f = fixture_with(|c| {
        c.allow_unsigned = true;
        c.packages.base_spec = Some(spec.clone());
    });
    f.install_package(&BASE).await.unwrap();
    let error = f.agent.launch("os.base", "").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadArchive);
    assert!(error.to_string().contains("base-spec.json"), "{error}");
    assert!(
        f.mounter.calls().is_empty(),
        "nothing is mounted for a config that cannot be made"
    );
}

#[tokio::test]
async fn the_gpu_layer_goes_on_top_with_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("gpu-layer");
    std::fs::create_dir_all(layer.join("rootfs/usr/lib")).unwrap();
    std::fs::write(
        layer.join("config.json"),
        r#"{"vendorGpuSupport":{"devNodes":["/dev/null"],"groupIds":[44],"files":[]}}"#,
    )
    .unwrap();
    let gpu = layer.clone();
    let f = fixture_with(move |c| {
        c.allow_unsigned = true;
        c.packages.gpu_layer = gpu.display().to_string();
    });
    f.install_package(&BASE).await.unwrap();
    f.agent.launch("os.base", "").await.unwrap();
    let overlay = f
        .mounter
        .calls()
        .into_iter()
        .find_map(|call| match call {
            MountCall::Overlay { lower, .. } => Some(lower),
            _ => None,
        })
        .unwrap();
    assert_eq!(overlay[0], std::fs::canonicalize(&layer).unwrap().join("rootfs"));
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.root
                .parent()
                .unwrap()
                .join("run/instances/os.base/bundle/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["linux"]["devices"][0]["path"], "/dev/null");
    assert_eq!(config["process"]["user"]["additionalGids"], json!([44]));

    // A layer that is not one stops the launch, saying which.
    std::fs::remove_file(layer.join("config.json")).unwrap();
    f.containers.running.lock().unwrap().clear();
    let error = f.agent.launch("os.base", "").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unsupported);
    assert!(bundlegen_protocol::error_chain(&error).contains("gpu-layer"), "{error}");
}
