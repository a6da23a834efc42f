//! RALF packages from the service: app versions registered as packages,
//! built by the real `bundlegen serve` and signed with its package key and
//! certificate; a lookup builds the base first and hands a box the packages
//! it lacks; downloads verify with the CA.

mod support;

use std::path::Path;

use bundlegen_fixtures::pki::{Key, Pki};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::service::Server;
use support::*;

const PLATFORM: &str = "rpi3_reference_vc4_dunfell";

fn images(dir: &Path) -> std::path::PathBuf {
    let images = dir.join("images");
    let base_files = |layer: LayerBuilder| {
        layer
            .file("bin/sh", b"\x7fELF a shell for the test", 0o755)
            .file("etc/os-release", b"ID=rdk\n", 0o644)
            .file("lib/libc.so.6", b"\x7fELF libc for the test", 0o755)
    };
    let base = LayoutBuilder::new(&images.join("base"));
    let manifest = base.image(
        &[(base_files(LayerBuilder::default()).tar(), Compress::Gzip)],
        "arm",
        Some("v7"),
        json!({"Cmd": ["/bin/sh"]}),
    );
    base.tag(manifest, "latest");
    let app = LayoutBuilder::new(&images.join("app"));
    let manifest = app.image(
        &[
            (base_files(LayerBuilder::default()).tar(), Compress::Gzip),
            (
                LayerBuilder::default()
                    .file("app/run.sh", b"#!/bin/sh\necho hi\n", 0o755)
                    .tar(),
                Compress::Gzip,
            ),
        ],
        "arm",
        Some("v7"),
        json!({"Cmd": ["/app/run.sh"]}),
    );
    app.tag(manifest, "latest");
    images
}

fn metadata(id: &str) -> Value {
    json!({"id": id, "type": "application/vnd.rdk-app.dac.native", "graphics": false, "network": {"type": "open"}, "storage": {}, "resources": {"ram": "64M"}})
}

async fn put_template(server: &Server) {
    let template = std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{PLATFORM}.json"))).unwrap();
    let response = server
        .send_body(
            reqwest::Method::PUT,
            &format!("/v1/platforms/{PLATFORM}"),
            &server.admin,
            template,
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_build_the_base_first_and_hand_out_what_the_box_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let signer = pki.signer("service", Key::EcP256);
    let images = images(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--local-images",
            images.to_str().unwrap(),
            "--package-signing-key",
            signer.key.to_str().unwrap(),
            "--package-signing-cert",
            signer.certificate.to_str().unwrap(),
            "--package-signing-chain",
            pki.intermediate.to_str().unwrap(),
        ],
    );
    put_template(&server).await;
    let register = |app: &str, version: &str, image: &str, options: Value| {
        let body = json!({"image": format!("oci:{}:latest", images.join(image).display()), "metadata": metadata(app), "options": options});
        let path = format!("/v1/apps/{app}/versions/{version}");
        let server = &server;
        async move { server.put_json(&path, &server.admin, &body).await }
    };
    assert_eq!(
        register(
            "os.base",
            "1.0",
            "base",
            json!({"format": "ralf", "packageType": "base", "content": "erofs.lz4"})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        register(
            "com.example.app",
            "2.0",
            "app",
            json!({"format": "ralf", "content": "erofs.lz4", "dependsOn": ["os.base@1.0"]})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    let bad = register(
        "com.example.bad",
        "1.0",
        "app",
        json!({"format": "ralf", "dependsOn": ["nothing"]}),
    )
    .await;
    assert_eq!(
        bad.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "dependsOn must be APP@VERSION"
    );

    let device = server.device_token(PLATFORM).await;
    let lookup = format!("/v1/lookup?app=com.example.app&version=2.0&platform={PLATFORM}&wait=120");
    let answer = server.get(&lookup, &device).await;
    let status = answer.status();
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    let dependencies = answer["dependencies"].as_array().unwrap();
    assert_eq!(dependencies.len(), 1, "{answer}");
    assert_eq!(dependencies[0]["dependency"], "os.base@1.0");
    assert_eq!(answer["bundle"]["format"], "ralf");

    let mut files = Vec::new();
    for (name, bundle) in [("app.ralf", &answer["bundle"]), ("base.ralf", &dependencies[0])] {
        let response = server.get(bundle["downloadUrl"].as_str().unwrap(), &device).await;
        assert_eq!(response.status(), StatusCode::OK);
        let path = dir.path().join(name);
        std::fs::write(&path, response.bytes().await.unwrap()).unwrap();
        run(bundlegen()
            .args(["verify-package", "--ca-roots"])
            .arg(&pki.root)
            .arg(&path));
        files.push(path);
    }
    let info = run(bundlegen().args(["package-info", "--json"]).arg(&files[0]));
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["config"]["dependencies"], json!({"os.base": "^1.0"}));
    assert_eq!(info["config"]["version"], "2.0", "the registered version");
    // A box that has the base gets the app alone; ranges work as for bundles.
    let answer: Value = server
        .get(&format!("{lookup}&have=os.base@1.0"), &device)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["dependencies"], json!([]));
    let ranged = server
        .send(
            reqwest::Method::GET,
            answer["bundle"]["downloadUrl"].as_str().unwrap(),
            &device,
            |r: reqwest::RequestBuilder| r.header("Range", "bytes=0-3"),
        )
        .await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&ranged.bytes().await.unwrap()[..], b"PK\x03\x04");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_without_a_package_key_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let images = images(dir.path());
    let server = Server::start(&dir.path().join("data"), &["--local-images", images.to_str().unwrap()]);
    put_template(&server).await;
    let response = server
        .post_json(
            "/v1/bundles",
            &server.admin,
            &json!({"image": format!("oci:{}:latest", images.join("base").display()), "platform": PLATFORM, "appMetadata": metadata("os.base"), "options": {"format": "ralf"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--package-signing-key"),
        "{body}"
    );
}
