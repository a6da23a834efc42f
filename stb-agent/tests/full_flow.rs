//! The whole path a box takes: the agent probes the box and uploads the
//! report to the generator service; a platform team registers an app
//! version; the box installs it "from the service" (which generates the
//! bundle for this box on the first lookup, signs it, and serves it); the
//! agent verifies the signature, unpacks, and launches it on the Dobby test
//! double, which checks the bundle as Dobby does.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bundlegen_fixtures::conformance;
use bundlegen_fixtures::rootfs::{ListedLibrary, build_box};
use bundlegen_protocol::config::libs::LibsFile;
use serde_json::{Value, json};
use support::*;

const PLATFORM: &str = "rpi3_reference_vc4_dunfell";
const APP: &str = "com.rdk.wayland-egl-test";

/// The box the conformance platform's library list describes.
fn reference_box(root: &Path) {
    let path = conformance().join(format!("bundlegen/templates/{PLATFORM}_libs.json"));
    let libs: LibsFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let listed: Vec<ListedLibrary<'_>> = libs
        .libs
        .iter()
        .map(|entry| ListedLibrary {
            name: &entry.name,
            versions: &entry.apiversions,
            deps: &entry.deps,
        })
        .collect();
    build_box(root, &listed);
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_upload_generate_install_and_launch() {
    let dir = tempfile::tempdir().unwrap();
    let (url, admin) = service(&dir.path().join("service"), |config| {
        config.local_images = Some(conformance().join("bundlegen/images"));
    })
    .await;

    // The platform team: the template (no library list: the box brings it),
    // an app version, and a device token for the box.
    let template = std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{PLATFORM}.json"))).unwrap();
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{url}/v1/platforms/{PLATFORM}"),
        &admin,
        Some(template),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let image = format!(
        "oci:{}:latest",
        conformance()
            .join("bundlegen/images/dac-image-wayland-egl-test-oci")
            .display()
    );
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{url}/v1/apps/{APP}/versions/1.0.0"),
        &admin,
        Some(json!({"image": image}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let device_token = device_token(&url, &admin, "box 1", PLATFORM).await;
    let (_, key) = call(
        reqwest::Method::GET,
        format!("{url}/v1/signing-key"),
        &device_token,
        None,
    )
    .await;
    let public_key = key["publicKey"].as_str().unwrap().to_string();

    // The box.
    let box_root = dir.path().join("box");
    reference_box(&box_root);
    std::fs::write(dir.path().join("device.token"), &device_token).unwrap();
    let storage = dir.path().join("dac");
    let device_token_file = dir.path().join("device.token");
    let setup = TestBox::start_at(&storage, false, |config| {
        config.server = Some(url.clone());
        config.platform = Some(PLATFORM.into());
        config.token_file = Some(device_token_file);
        config.trusted_keys = vec![public_key];
        config.probe = true;
        config.probe_root = box_root.clone();
    })
    .await;

    // The box's first report reaches the service and waits for review; the
    // platform team accepts it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let (_, history) = call(
            reqwest::Method::GET,
            format!("{url}/v1/platforms/{PLATFORM}/versions"),
            &admin,
            None,
        )
        .await;
        let held = history["versions"]
            .as_array()
            .and_then(|versions| versions.iter().find(|v| v["state"] == "held"))
            .and_then(|v| v["version"].as_i64());
        if let Some(held) = held {
            break held;
        }
        assert!(Instant::now() < deadline, "no probe report uploaded: {history}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{url}/v1/platforms/{PLATFORM}/versions/{held}/accept"),
        &admin,
        Some("{}".into()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report = loop {
        let (status, report) = call(
            reqwest::Method::GET,
            format!("{url}/v1/platforms/{PLATFORM}/probe"),
            &admin,
            None,
        )
        .await;
        if status == 200 {
            break report;
        }
        assert!(Instant::now() < deadline, "no probe report uploaded: {status} {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        report["libraries"].as_array().is_some_and(|libs| libs.len() > 100),
        "the report lists the box's libraries"
    );
    let uploaded: Value = serde_json::from_slice(&std::fs::read(storage.join("state/probe.json")).unwrap()).unwrap();
    assert!(uploaded["version"].as_i64().is_some_and(|v| v >= 2), "{uploaded}");

    // Install from the service: generated for this box, signed, verified.
    let agent = setup.proxy().await;
    let handle = agent
        .install(APP, "1.0.0", "service", "", HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Success", "{error}");
    let listed = agent.list(APP).await.unwrap();
    assert_eq!(listed.len(), 1);
    let bundle = storage.join("apps").join(APP).join("1.0.0");
    let config: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["ociVersion"], "1.0.2-dobby");
    assert!(config["rdkPlugins"].is_object());
    // Libraries the box has are mounted from it, not shipped in the bundle.
    let mounted_libs = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["source"].as_str().is_some_and(|s| s.contains(".so")))
        .count();
    assert!(mounted_libs > 0, "the box's GPU libraries are bind-mounted");

    // Launch on the Dobby test double, which checks the bundle as Dobby does.
    let descriptor = agent.launch(APP, "").await.unwrap();
    assert!(descriptor > 0);
    let dobby = zbus::Proxy::new(&setup.client, "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.ctrl1")
        .await
        .unwrap();
    let (descriptors, ids): (Vec<i32>, Vec<String>) = dobby.call("List", &()).await.unwrap();
    assert_eq!((descriptors, ids), (vec![descriptor], vec![APP.to_string()]));
    agent.stop(APP, false).await.unwrap();
}
