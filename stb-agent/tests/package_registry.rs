//! RALF packages installed from a real registry (`docker-registry`), as
//! `bundlegen package-push` put them there: by tag or digest, what they are
//! layered on found beside them (the highest version tag that satisfies),
//! and what a registry gets wrong refused.

mod support;

use std::collections::HashMap;
use std::path::Path;

use bundlegen_core::image::RegistryOptions;
use bundlegen_fixtures::registry::Registry;
use bundlegen_protocol::ralf::{ContentKind, ErofsCompression};
use support::packages::*;
use support::*;

async fn push(package: &Path, registry: &Registry, repository: &str, tag: &str) -> String {
    let options = RegistryOptions {
        plain_http: true,
        ..RegistryOptions::default()
    };
    let pushed = bundlegen_core::package::registry::push(package, &registry.host(), repository, tag, &options)
        .await
        .unwrap();
    pushed.manifest.to_string()
}

/// A box that takes signed packages only, from `registry` over plain HTTP.
async fn box_trusting(signing: &Signing, certs: &Path, registry: &Registry) -> TestBox {
    let ca_roots = signing.ca_roots(certs);
    let host = registry.host();
    TestBox::start(|c| {
        c.allow_unsigned = false;
        c.packages.ca_roots = ca_roots;
        c.packages.insecure_registries = vec![host];
    })
    .await
}

async fn install(agent: &BundleAgent1Proxy<'_>, app: &str, version: &str, source: &str) -> (String, String) {
    let handle = agent.install(app, version, source, "", HashMap::new()).await.unwrap();
    finished(agent, &handle).await
}

#[tokio::test(flavor = "multi_thread")]
async fn packages_come_from_a_registry_with_what_they_are_layered_on() {
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let identity = signing.identity();
    let base_files: Files = vec![("/etc/os-release".into(), b"ID=test\n".to_vec(), 0o644)];
    let app_files: Files = vec![("/app/run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec(), 0o755)];
    let erofs = ContentKind::Erofs {
        compression: ErofsCompression::Lz4,
        legacy: false,
    };
    let base = make_package(
        &image(&dir.path().join("base-image"), &[&base_files], "/etc/os-release"),
        &package_config("os.base", "1.4.0", "base", "etc/os-release"),
        &dir.path().join("base.ralf"),
        erofs,
        &[],
        Some(&identity),
    )
    .await;
    let app = make_package(
        &image(&dir.path().join("app-image"), &[&base_files, &app_files], "/app/run.sh"),
        &package_config("com.example.app", "2.0.0", "application", "app/run.sh"),
        &dir.path().join("app.ralf"),
        ContentKind::Tar,
        std::slice::from_ref(&base),
        Some(&identity),
    )
    .await;
    let unsigned = make_package(
        &image(&dir.path().join("app-image"), &[&base_files, &app_files], "/app/run.sh"),
        &package_config("com.example.unsigned", "1.0.0", "application", "app/run.sh"),
        &dir.path().join("unsigned.ralf"),
        ContentKind::Tar,
        &[],
        None,
    )
    .await;
    let registry = Registry::start(&dir.path().join("registry"), "");
    push(&base, &registry, "rdk/os.base", "1.4.0").await;
    push(&base, &registry, "rdk/os.base", "latest").await;
    let app_digest = push(&app, &registry, "rdk/com.example.app", "2.0.0").await;
    push(&unsigned, &registry, "rdk/com.example.unsigned", "1.0.0").await;

    let host = registry.host();
    let setup = box_trusting(&signing, &dir.path().join("certs"), &registry).await;
    let agent = setup.proxy().await;
    let (status, error) = install(
        &agent,
        "com.example.app",
        "2.0.0",
        &format!("docker://{host}/rdk/com.example.app:2.0.0"),
    )
    .await;
    assert_eq!(status, "Success", "{error}");
    let mut listed: Vec<(String, String)> = agent
        .list_packages("")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.0, p.1))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("com.example.app".to_string(), "2.0.0".to_string()),
            ("os.base".to_string(), "1.4.0".to_string())
        ]
    );
    let stored = std::fs::read(setup.root.join("apps/os.base/1.4.0/package.ralf")).unwrap();
    let file =
        bundlegen_protocol::ralf::package::PackageFile::open(&setup.root.join("apps/os.base/1.4.0/package.ralf"))
            .unwrap();
    let layout = bundlegen_protocol::ralf::package::read_layout(&file).unwrap();
    let content = file.location(&layout.content.blob_path()).unwrap();
    assert_eq!(content.offset % 4096, 0, "EROFS content lands block-aligned");
    assert!(!stored.is_empty());

    // By digest, again.
    let handle = agent.uninstall("com.example.app", "2.0.0", "full").await.unwrap();
    assert_eq!(finished(&agent, &handle).await.0, "Success");
    let (status, error) = install(
        &agent,
        "com.example.app",
        "2.0.0",
        &format!("docker://{host}/rdk/com.example.app@{app_digest}"),
    )
    .await;
    assert_eq!(status, "Success", "{error}");

    // What the registry gets wrong, or does not have.
    let wrong_digest = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            "com.example.app",
            "9.0.0",
            format!("docker://{host}/rdk/com.example.app@{wrong_digest}"),
            "Download",
            "not found",
        ),
        (
            "com.example.app",
            "3.0.0",
            format!("docker://{host}/rdk/com.example.app:3.0.0"),
            "Download",
            "not found",
        ),
        (
            "com.example.unsigned",
            "1.0.0",
            format!("docker://{host}/rdk/com.example.unsigned:1.0.0"),
            "Signature",
            "not signed",
        ),
        (
            "com.example.other",
            "2.0.0",
            format!("docker://{host}/rdk/com.example.app:2.0.0"),
            "BadArchive",
            "id is \"com.example.app\"",
        ),
    ];
    for (app, version, source, kind, reason) in cases {
        let (status, error) = install(&agent, app, version, &source).await;
        assert_eq!(status, "Failed", "{source}");
        assert!(
            error.starts_with(&format!("org.rdk.dac.BundleAgent1.Error.{kind}")) && error.contains(reason),
            "{source}: {error}"
        );
    }
    assert_eq!(
        dbus_error(
            agent
                .install("x.y", "1", "docker://registry/no-host-given:1", "", HashMap::new())
                .await
        )
        .0,
        "WrongParams"
    );
    assert!(
        std::fs::read_dir(setup.root.join("downloads"))
            .unwrap()
            .next()
            .is_none(),
        "nothing left in downloads"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_partial_download_is_found_and_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let files: Files = vec![("/etc/os-release".into(), vec![b'x'; 200_000], 0o644)];
    let base = make_package(
        &image(&dir.path().join("image"), &[&files], "/etc/os-release"),
        &package_config("os.base", "1.0.0", "base", "etc/os-release"),
        &dir.path().join("base.ralf"),
        ContentKind::Tar,
        &[],
        Some(&signing.identity()),
    )
    .await;
    let registry = Registry::start(&dir.path().join("registry"), "");
    push(&base, &registry, "rdk/os.base", "1.0.0").await;
    let host = registry.host();
    let setup = box_trusting(&signing, &dir.path().join("certs"), &registry).await;
    // What an interrupted pull left, damaged since.
    let partial = setup.root.join("downloads/os.base@1.0.0/content.part");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, vec![0u8; 1000]).unwrap();
    let agent = setup.proxy().await;
    let source = format!("docker://{host}/rdk/os.base:1.0.0");
    let (status, error) = install(&agent, "os.base", "1.0.0", &source).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("Integrity"), "{error}");
    assert!(!partial.exists(), "a partial that does not hash right is dropped");
    let (status, error) = install(&agent, "os.base", "1.0.0", &source).await;
    assert_eq!(status, "Success", "{error}");
}
