//! RALF packages in OCI registries: pushed to a real `docker-registry`
//! (signature under the cosign tag), copied to a second registry with
//! `skopeo copy`, pulled back: the same bytes, still verifiable.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use bundlegen_fixtures::pki::{Key, Pki};
use support::*;

fn image() -> String {
    format!(
        "oci:{}",
        conformance()
            .join("bundlegen/images/dac-image-wayland-egl-test-oci")
            .display()
    )
}

fn signed_package(dir: &Path, pki: &Pki) -> std::path::PathBuf {
    let signer = pki.signer("signer", Key::EcP256);
    let output = dir.join("app.ralf");
    run(bundlegen()
        .args(["package", "--arch", "arm", "--content", "erofs.lz4", "--sign-key"])
        .arg(&signer.key)
        .arg("--sign-cert")
        .arg(&signer.certificate)
        .arg("--sign-chain")
        .arg(&pki.intermediate)
        .arg(image())
        .arg(&output));
    output
}

#[test]
fn pushed_copied_and_pulled_packages_stay_the_same_and_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let package = signed_package(dir.path(), &pki);
    let first = Registry::start(&dir.path().join("first"), "");
    let second = Registry::start(&dir.path().join("second"), "");
    let pushed = run(bundlegen()
        .args(["package-push", "--plain-http"])
        .arg(&package)
        .arg(format!("docker://{}/apps/wayland-egl-test:1.0", first.host())));
    let printed = String::from_utf8_lossy(&pushed.stdout);
    assert!(
        printed.contains("signature: docker://") && printed.contains(".sig"),
        "{printed}"
    );

    // skopeo carries the package and, as its own tag, the signature.
    let signature_tag = printed
        .lines()
        .find_map(|l| l.rsplit(':').next().filter(|t| t.ends_with(".sig")))
        .unwrap()
        .to_string();
    for tag in ["1.0", &signature_tag] {
        run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{}/apps/wayland-egl-test:{tag}", first.host()))
            .arg(format!("docker://{}/mirror/app:{tag}", second.host())));
    }
    let pulled = dir.path().join("pulled.ralf");
    let output = run(bundlegen()
        .args(["package-pull", "--plain-http"])
        .arg(format!("docker://{}/mirror/app:1.0", second.host()))
        .arg(&pulled));
    assert!(String::from_utf8_lossy(&output.stdout).contains("(signed;"));
    assert!(
        fs::read(&pulled).unwrap() == fs::read(&package).unwrap(),
        "the pulled package is the pushed one, byte for byte"
    );
    run(bundlegen()
        .args(["verify-package", "--ca-roots"])
        .arg(&pki.root)
        .arg(&pulled));

    // As a tar container, and by digest.
    let manifest = printed.split_whitespace().nth(1).unwrap().to_string();
    let as_tar = dir.path().join("pulled-tar.ralf");
    run(bundlegen()
        .args(["package-pull", "--plain-http", "--package-format", "tar"])
        .arg(format!("docker://{}/apps/wayland-egl-test@{manifest}", first.host()))
        .arg(&as_tar));
    run(bundlegen()
        .args(["verify-package", "--ca-roots"])
        .arg(&pki.root)
        .arg(&as_tar));

    // An image is not a package; a missing tag says so.
    let layout = dir.path().join("image");
    simple_layout(
        &layout,
        &[(LayerBuilder::default().file("a", b"a", 0o644).tar(), Compress::Gzip)],
    );
    skopeo_push(
        &layout,
        &format!("docker://{}/plain/image:latest", first.host()),
        &["--dest-tls-verify=false"],
    );
    let error = run_failing(
        bundlegen()
            .args(["package-pull", "--plain-http"])
            .arg(format!("docker://{}/plain/image:latest", first.host()))
            .arg(dir.path().join("x.ralf")),
    );
    assert!(error.contains("not a RALF package"), "{error}");
    let error = run_failing(
        bundlegen()
            .args(["package-pull", "--plain-http"])
            .arg(format!("docker://{}/apps/none:1.0", first.host()))
            .arg(dir.path().join("y.ralf")),
    );
    assert!(error.contains("not found") || error.contains("404"), "{error}");
    assert!(!dir.path().join("x.ralf").exists() && !dir.path().join("y.ralf").exists());
}
