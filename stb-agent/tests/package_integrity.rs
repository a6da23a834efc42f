//! What the agent refuses of RALF packages, each with its reason, leaving
//! nothing behind: a flipped byte in the content, in its hash tree, in the
//! config or in the signature; a signer that is untrusted, expired or
//! absent; a missing dependency. Content changed after the install is
//! found by the userspace dm-verity check before anything is mounted.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bundlegen_fixtures::pki::{Key, Pki, years_from_now};
use bundlegen_protocol::ralf::ContentKind;
use bundlegen_protocol::ralf::package::{PackageFile, read_layout, verity_annotations};
use support::packages::*;
use support::*;

const EROFS: ContentKind = ContentKind::Erofs {
    compression: bundlegen_protocol::ralf::ErofsCompression::Lz4,
    legacy: false,
};

fn base_image(dir: &Path) -> String {
    // Enough content for several blocks and a hash tree of its own.
    let tool: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let files: Files = vec![
        ("/etc/os-release".into(), b"ID=test\n".to_vec(), 0o644),
        ("/bin/tool".into(), tool, 0o755),
    ];
    image(&dir.join("base-image"), &[&files], "/bin/tool")
}

async fn base_package(dir: &Path, name: &str, signer: Option<&bundlegen_core::package::SigningIdentity>) -> PathBuf {
    make_package(
        &base_image(dir),
        &package_config("os.base", "1.0.0", "base", "bin/tool"),
        &dir.join(name),
        EROFS,
        &[],
        signer,
    )
    .await
}

fn flipped(package: &Path, at: u64) -> Vec<u8> {
    let mut bytes = std::fs::read(package).unwrap();
    bytes[at as usize] ^= 0x55;
    bytes
}

/// Installs `bytes` as os.base 1.0.0 from a URL on a box trusting
/// `ca_roots`; returns the failure, after checking nothing is left.
async fn refused(bytes: Vec<u8>, ca_roots: &Path) -> String {
    let setup = TestBox::start(|c| {
        c.allow_unsigned = false;
        c.packages.ca_roots = ca_roots.to_path_buf();
    })
    .await;
    let agent = setup.proxy().await;
    let url = setup.files.add("base.ralf", bytes.clone());
    let handle = agent
        .install("os.base", "1.0.0", &url, &sha256(&bytes), HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Failed", "{error}");
    assert!(agent.list("").await.unwrap().is_empty());
    assert!(!setup.root.join("apps/os.base").exists(), "{error}");
    assert_eq!(
        std::fs::read_dir(setup.root.join("downloads")).unwrap().count(),
        0,
        "{error}"
    );
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_and_untrusted_packages_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let ca_roots = signing.ca_roots(&dir.path().join("certs"));
    let good = base_package(dir.path(), "good.ralf", Some(&signing.identity())).await;
    let file = PackageFile::open(&good).unwrap();
    let layout = read_layout(&file).unwrap();
    let content = file.location(&layout.content.blob_path()).unwrap();
    let image_size = verity_annotations(&layout.content).unwrap().offset;
    let config = file.location(&layout.manifest.config.blob_path()).unwrap();
    let other_roots = {
        let other = Pki::other_root(&dir.path().join("other-pki"));
        let roots = dir.path().join("other-certs");
        std::fs::create_dir_all(&roots).unwrap();
        std::fs::copy(other, roots.join("root.pem")).unwrap();
        roots
    };
    let signature_flipped = dir.path().join("signature.ralf");
    rewrite_signature(&good, &signature_flipped, |manifest| {
        let annotation = manifest.layers[0]
            .annotations
            .get_mut("dev.cosignproject.cosign/signature")
            .unwrap();
        let first = if annotation.starts_with('A') { "B" } else { "A" };
        annotation.replace_range(..1, first);
    });
    let expired = {
        let signer = signing
            .pki
            .signer_between("expired", Key::EcP256, &years_from_now(-3), &years_from_now(-1));
        let files = bundlegen_core::package::SigningFiles {
            key: signer.key,
            certificate: Some(signer.certificate),
            chain: vec![signing.pki.intermediate.clone()],
            skip_expiry_check: true,
        };
        base_package(dir.path(), "expired.ralf", Some(&identity(&files))).await
    };
    let bare = {
        let files = bundlegen_core::package::SigningFiles {
            key: signing.files.key.clone(),
            certificate: None,
            chain: Vec::new(),
            skip_expiry_check: true,
        };
        base_package(dir.path(), "bare.ralf", Some(&identity(&files))).await
    };
    let unsigned = base_package(dir.path(), "unsigned.ralf", None).await;

    let cases: Vec<(&str, Vec<u8>, &Path, &str, &str)> = vec![
        (
            "a content byte",
            flipped(&good, content.offset + 100),
            &ca_roots,
            "Integrity",
            "does not match its digest",
        ),
        (
            "a hash tree byte",
            flipped(&good, content.offset + image_size + 4096 + 7),
            &ca_roots,
            "Integrity",
            "does not match its digest",
        ),
        (
            "a config byte",
            flipped(&good, config.offset + 3),
            &ca_roots,
            "Integrity",
            "blob sha256:",
        ),
        (
            "a signature byte",
            std::fs::read(&signature_flipped).unwrap(),
            &ca_roots,
            "Signature",
            "does not verify",
        ),
        (
            "an untrusted signer",
            std::fs::read(&good).unwrap(),
            &other_roots,
            "Signature",
            "not issued by a trusted CA",
        ),
        (
            "an expired signer",
            std::fs::read(&expired).unwrap(),
            &ca_roots,
            "Signature",
            "expired",
        ),
        (
            "no certificate",
            std::fs::read(&bare).unwrap(),
            &ca_roots,
            "Signature",
            "carries no certificate",
        ),
        (
            "no signature",
            std::fs::read(&unsigned).unwrap(),
            &ca_roots,
            "Signature",
            "not signed",
        ),
    ];
    for (what, bytes, roots, kind, reason) in cases {
        let error = refused(bytes, roots).await;
        assert!(
            error.starts_with(&format!("org.rdk.dac.BundleAgent1.Error.{kind}")),
            "{what}: {error}"
        );
        assert!(error.contains(reason), "{what}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_whose_base_is_missing_is_refused_until_the_base_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let identity = signing.identity();
    let base = base_package(dir.path(), "base.ralf", Some(&identity)).await;
    let app_files: Files = vec![("/app/run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec(), 0o755)];
    let base_files: Files = vec![("/etc/os-release".into(), b"ID=test\n".to_vec(), 0o644)];
    let app = make_package(
        &image(&dir.path().join("app-image"), &[&base_files, &app_files], "/app/run.sh"),
        &package_config("com.example.app", "2.0.0", "application", "app/run.sh"),
        &dir.path().join("app.ralf"),
        ContentKind::Tar,
        std::slice::from_ref(&base),
        Some(&identity),
    )
    .await;
    let setup = TestBox::start(|c| {
        c.allow_unsigned = false;
        c.packages.ca_roots = signing.ca_roots(&dir.path().join("certs"));
    })
    .await;
    let agent = setup.proxy().await;
    let install = |id: &'static str, version: &'static str, path: PathBuf| {
        let (setup, agent) = (&setup, &agent);
        async move {
            let bytes = std::fs::read(path).unwrap();
            let url = setup.files.add(&format!("{id}.ralf"), bytes.clone());
            let handle = agent
                .install(id, version, &url, &sha256(&bytes), HashMap::new())
                .await
                .unwrap();
            finished(agent, &handle).await
        }
    };
    let (status, error) = install("com.example.app", "2.0.0", app.clone()).await;
    assert_eq!(status, "Failed");
    assert!(
        error.starts_with("org.rdk.dac.BundleAgent1.Error.Dependency") && error.contains("os.base ^1.0"),
        "{error}"
    );
    assert!(!setup.root.join("apps/com.example.app").exists());
    assert_eq!(install("os.base", "1.0.0", base).await.0, "Success");
    let (status, error) = install("com.example.app", "2.0.0", app).await;
    assert_eq!(status, "Success", "{error}");
    let packages = agent.list_packages("com.example.app").await.unwrap();
    assert_eq!(packages[0].4.get("os.base").map(String::as_str), Some("1.0.0"));
    assert_eq!(packages[0].3, "tar");
}

#[tokio::test(flavor = "multi_thread")]
async fn content_changed_after_the_install_is_found_before_anything_is_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let good = base_package(dir.path(), "base.ralf", Some(&signing.identity())).await;
    let ca_roots = signing.ca_roots(&dir.path().join("certs"));
    let base_spec = crun_base_spec(dir.path());
    let setup = TestBox::start(|c| {
        c.allow_unsigned = false;
        c.packages.ca_roots = ca_roots;
        c.packages.verity = stb_agent::config::VerityMode::Userspace;
        c.packages.base_spec = Some(base_spec);
    })
    .await;
    let agent = setup.proxy().await;
    let bytes = std::fs::read(&good).unwrap();
    let url = setup.files.add("base.ralf", bytes.clone());
    let handle = agent
        .install("os.base", "1.0.0", &url, &sha256(&bytes), HashMap::new())
        .await
        .unwrap();
    assert_eq!(finished(&agent, &handle).await.0, "Success");
    // Someone with write access to the store changes a block of content.
    let stored = setup.root.join("apps/os.base/1.0.0/package.ralf");
    let file = PackageFile::open(&stored).unwrap();
    let content = file.location(&read_layout(&file).unwrap().content.blob_path()).unwrap();
    drop(file);
    std::fs::write(&stored, flipped(&stored, content.offset + 4096 + 11)).unwrap();
    let (kind, message) = dbus_error(agent.launch("os.base", "").await);
    assert_eq!(kind, "Integrity", "{message}");
    assert!(message.contains("dm-verity"), "{message}");
    assert!(mounts_under(&setup.root.join("run")).is_empty());
    assert!(loops_under(&setup.root).is_empty());
    let info = agent.get_package_info("os.base", "1.0.0").await.unwrap();
    assert!(!bool::try_from(info["verified"].try_clone().unwrap()).unwrap());
}
