//! `bundlegen package`, `verify-package` and `package-info` against real
//! peers: the kernel mounts the EROFS content where it lies in the package,
//! `veritysetup verify` accepts its hash tree, `openssl` verifies the
//! signature and chain, GNU tar reads tar content; and every tampering the
//! verifier must catch, each refused with its reason.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundlegen_fixtures::pki::{self, Key, Pki, years_from_now};
use bundlegen_protocol::ralf::package::PackageFile;
use bundlegen_protocol::ralf::zip::ZipWriter;
use serde_json::{Value, json};
use support::*;

fn image() -> String {
    format!(
        "oci:{}",
        conformance()
            .join("bundlegen/images/dac-image-wayland-egl-test-oci")
            .display()
    )
}

fn package(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let output = dir.join(name);
    run(bundlegen()
        .args(["package", "-y", "--arch", "arm", "--variant", "v7"])
        .args(extra)
        .arg(image())
        .arg(&output));
    output
}

fn sign_args(signer: &pki::Signer, pki: &Pki) -> Vec<String> {
    vec![
        "--sign-key".into(),
        signer.key.display().to_string(),
        "--sign-cert".into(),
        signer.certificate.display().to_string(),
        "--sign-chain".into(),
        pki.intermediate.display().to_string(),
    ]
}

fn verify(package: &Path, roots: &Path, extra: &[&str]) -> (bool, String) {
    let output = bundlegen()
        .args(["verify-package", "--ca-roots"])
        .arg(roots)
        .args(extra)
        .arg(package)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The files of a package, to take apart and put back together.
struct Files(BTreeMap<String, Vec<u8>>);

impl Files {
    fn read(path: &Path) -> Files {
        let package = PackageFile::open(path).unwrap();
        let names: Vec<String> = package.names().map(String::from).collect();
        Files(
            names
                .into_iter()
                .map(|n| (n.clone(), package.read(&n, 1 << 30).unwrap()))
                .collect(),
        )
    }

    fn write(&self, path: &Path) {
        let mut zip = ZipWriter::new(fs::File::create(path).unwrap()).unwrap();
        for (name, bytes) in &self.0 {
            zip.add_stored(name, &mut &bytes[..], bytes.len() as u64, 4096).unwrap();
        }
        zip.finish().unwrap();
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&self.0[name]).unwrap()
    }

    fn blob(&self, digest: &Value) -> Vec<u8> {
        self.0[&format!(
            "blobs/sha256/{}",
            digest.as_str().unwrap().trim_start_matches("sha256:")
        )]
            .clone()
    }

    /// Stores `bytes`; returns (digest, size) for a descriptor.
    fn put(&mut self, bytes: Vec<u8>) -> (Value, Value) {
        let digest = sha256(&bytes);
        let size = bytes.len();
        self.0
            .insert(format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")), bytes);
        (json!(digest), json!(size))
    }

    fn manifest(&self, index: usize) -> Value {
        serde_json::from_slice(&self.blob(&self.json("index.json")["manifests"][index]["digest"])).unwrap()
    }

    /// Replaces manifest `index` of the index with `manifest`.
    fn set_manifest(&mut self, index: usize, manifest: &Value) {
        let (digest, size) = self.put(serde_json::to_vec(manifest).unwrap());
        let mut top = self.json("index.json");
        top["manifests"][index]["digest"] = digest;
        top["manifests"][index]["size"] = size;
        self.0.insert("index.json".into(), serde_json::to_vec(&top).unwrap());
    }

    /// Signs a payload (as `edit` leaves it) for the package manifest again
    /// with `key`, as a forger holding a trusted key would.
    fn resign(&mut self, key: &Path, dir: &Path, edit: impl Fn(&mut Value)) {
        let top = self.json("index.json");
        let mut payload = json!({
            "critical": {
                "identity": {"docker-reference": "com.rdk.wayland-egl-test"},
                "image": {"docker-manifest-digest": top["manifests"][0]["digest"]},
                "type": "cosign container image signature",
            },
            "optional": {},
        });
        edit(&mut payload);
        let payload_bytes = serde_json::to_vec(&payload).unwrap();
        fs::write(dir.join("payload"), &payload_bytes).unwrap();
        run(Command::new("openssl")
            .current_dir(dir)
            .args(["dgst", "-sha256", "-sign"])
            .arg(key)
            .args(["-out", "signature", "payload"]));
        let signature = bundlegen_protocol::signature::base64_encode(&fs::read(dir.join("signature")).unwrap());
        let mut manifest = self.manifest(1);
        let (digest, size) = self.put(payload_bytes);
        manifest["layers"][0]["digest"] = digest;
        manifest["layers"][0]["size"] = size;
        manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = json!(signature);
        self.set_manifest(1, &manifest);
    }
}

fn content_location(package: &Path) -> (u64, u64, Value) {
    let files = PackageFile::open(package).unwrap();
    let layout = bundlegen_protocol::ralf::package::read_layout(&files).unwrap();
    let location = files.location(&layout.content.blob_path()).unwrap();
    let annotations = serde_json::to_value(&layout.content.annotations).unwrap();
    (location.offset, location.size, annotations)
}

/// The rootfs BundleGen's first step would unpack, without the metadata file.
fn reference_rootfs(dir: &Path) -> BTreeMap<String, String> {
    let bundle = dir.join("reference");
    run(bundlegen()
        .args(["unpack", "-y", "--arch", "arm", "--variant", "v7", "--format", "dir"])
        .arg(image())
        .arg(&bundle));
    let mut tree = snapshot(&bundle.join("rootfs"));
    tree.remove("appmetadata.json");
    tree
}

#[test]
fn the_kernel_mounts_every_erofs_variant_in_place_and_veritysetup_accepts_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference_rootfs(dir.path());
    for content in ["erofs.lz4", "erofs.zstd", "erofs.nocmpr"] {
        for format in ["zip", "tar"] {
            let package = package(
                dir.path(),
                &format!("app-{content}.{format}.ralf"),
                &["--content", content, "--package-format", format],
            );
            let (offset, size, annotations) = content_location(&package);
            assert_eq!(
                offset % 4096,
                0,
                "{content} {format}: content is 4096-aligned in the package"
            );
            let image_size: u64 = annotations["org.rdk.package.content.dmverity.offset"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            // veritysetup reads the tree from a copy of the blob.
            let blob = dir.path().join("blob");
            let bytes = fs::read(&package).unwrap();
            fs::write(&blob, &bytes[offset as usize..(offset + size) as usize]).unwrap();
            let root_hash = annotations["org.rdk.package.content.dmverity.roothash"]
                .as_str()
                .unwrap();
            let output = Command::new("veritysetup")
                .args(["verify", blob.to_str().unwrap(), blob.to_str().unwrap(), root_hash])
                .arg(format!("--hash-offset={image_size}"))
                .output()
                .expect("veritysetup (cryptsetup-bin) is installed by tests/install-peers");
            assert!(
                output.status.success(),
                "{content} {format}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            // A flipped byte in the data fails it.
            let mut flipped = bytes[offset as usize..(offset + size) as usize].to_vec();
            flipped[5000] ^= 1;
            fs::write(&blob, &flipped).unwrap();
            let output = Command::new("veritysetup")
                .args(["verify", blob.to_str().unwrap(), blob.to_str().unwrap(), root_hash])
                .arg(format!("--hash-offset={image_size}"))
                .output()
                .unwrap();
            assert!(!output.status.success(), "{content}: a flipped byte passed veritysetup");
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped mounting: needs root (CI runs as root)");
                continue;
            }
            let point = tempfile::tempdir().unwrap();
            run(Command::new("mount")
                .args(["-t", "erofs", "-o"])
                .arg(format!("loop,ro,offset={offset},sizelimit={image_size}"))
                .arg(&package)
                .arg(point.path()));
            let mounted = snapshot(point.path());
            let _ = Command::new("umount").arg(point.path()).status();
            let differences = tree_differences(&mounted, &expected);
            assert!(differences.is_empty(), "{content} {format}: {differences:#?}");
        }
    }
}

#[test]
fn tar_content_is_all_root_and_gnu_tar_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    for content in ["tar", "tar+gzip", "tar+zstd"] {
        let package = package(dir.path(), "app.ralf", &["--content", content]);
        // Plain tar is deflated inside the ZIP, as ralfpack does: read it through the package.
        let blob = dir.path().join("content");
        let files = PackageFile::open(&package).unwrap();
        fs::write(
            &blob,
            files
                .read(&format!("blobs/sha256/{}", sha256_of_content(&package)), 1 << 30)
                .unwrap(),
        )
        .unwrap();
        let listing = run(Command::new("tar").args(["-tvf"]).arg(&blob).arg("--numeric-owner"));
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("usr/bin/wayland-egl-test"), "{content}: {listing}");
        assert!(
            listing.lines().all(|l| l.contains(" 0/0 ")),
            "{content}: all-root\n{listing}"
        );
        assert!(
            !listing.contains("appmetadata.json"),
            "{content}: the metadata stays out"
        );
    }
}

fn sha256_of_content(package: &Path) -> String {
    let files = PackageFile::open(package).unwrap();
    bundlegen_protocol::ralf::package::read_layout(&files)
        .unwrap()
        .content
        .digest
        .hex()
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for extra in [
        &["--content", "erofs.lz4"][..],
        &["--content", "tar+gzip", "--package-format", "tar"],
    ] {
        let a = fs::read(package(dir.path(), "a.ralf", extra)).unwrap();
        let b = fs::read(package(dir.path(), "b.ralf", extra)).unwrap();
        assert!(a == b, "{extra:?}: two runs differ");
    }
    // A given salt is used as it is, and changes the root hash.
    let salted = package(
        dir.path(),
        "salted.ralf",
        &["--content", "erofs.lz4", "--verity-salt", "00112233"],
    );
    let (_, _, annotations) = content_location(&salted);
    assert_eq!(annotations["org.rdk.package.content.dmverity.salt"], "00112233");
}

#[test]
fn openssl_verifies_the_signature_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    for (name, key) in [("ec", Key::EcP256), ("rsa", Key::Rsa)] {
        let signer = pki.signer(name, key);
        let args = sign_args(&signer, &pki);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let package = package(
            dir.path(),
            &format!("{name}.ralf"),
            &[&args[..], &["--content", "tar"]].concat(),
        );
        let (ok, text) = verify(&package, &pki.root, &[]);
        assert!(ok, "{name}: {text}");
        assert!(text.contains("verified, signed by \"CN="), "{text}");
        let files = Files::read(&package);
        let layer = &files.manifest(1)["layers"][0];
        let payload = files.blob(&layer["digest"]);
        fs::write(dir.path().join("payload"), &payload).unwrap();
        let signature = bundlegen_protocol::signature::base64_decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        fs::write(dir.path().join("signature"), signature).unwrap();
        fs::write(
            dir.path().join("leaf.pem"),
            layer["annotations"]["dev.sigstore.cosign/certificate"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        fs::write(
            dir.path().join("chain.pem"),
            layer["annotations"]["dev.sigstore.cosign/chain"].as_str().unwrap(),
        )
        .unwrap();
        run(Command::new("openssl")
            .current_dir(dir.path())
            .args(["x509", "-in", "leaf.pem", "-pubkey", "-noout", "-out", "leaf.pub"]));
        let checked = run(Command::new("openssl").current_dir(dir.path()).args([
            "dgst",
            "-sha256",
            "-verify",
            "leaf.pub",
            "-signature",
            "signature",
            "payload",
        ]));
        assert!(String::from_utf8_lossy(&checked.stdout).contains("Verified OK"));
        run(Command::new("openssl")
            .current_dir(dir.path())
            .arg("verify")
            .arg("-CAfile")
            .arg(&pki.root)
            .args(["-untrusted", "chain.pem", "leaf.pem"]));
        // The payload names the package manifest.
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            files.json("index.json")["manifests"][0]["digest"]
        );
        assert!(payload["optional"].is_object());
        // A bare public key verifies it too.
        let (ok, text) = {
            let output = bundlegen()
                .args(["verify-package", "--key"])
                .arg(dir.path().join("leaf.pub"))
                .arg(&package)
                .output()
                .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        assert!(ok, "{text}");
    }
}

#[test]
fn the_verifier_refuses_every_tampering_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let signer = pki.signer("signer", Key::EcP256);
    let args = sign_args(&signer, &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let good = package(
        dir.path(),
        "good.ralf",
        &[&args[..], &["--content", "erofs.lz4"]].concat(),
    );
    assert!(verify(&good, &pki.root, &[]).0);
    let original = Files::read(&good);
    let bad = dir.path().join("bad.ralf");
    let check = |files: &Files, expected: &str| {
        files.write(&bad);
        let (ok, text) = verify(&bad, &pki.root, &[]);
        assert!(!ok, "accepted, expected {expected:?}");
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
    };
    let content_digest = original.manifest(0)["layers"][0]["digest"].clone();
    let content_name = format!(
        "blobs/sha256/{}",
        content_digest.as_str().unwrap().trim_start_matches("sha256:")
    );
    let config_digest = original.manifest(0)["config"]["digest"].clone();
    let config_name = format!(
        "blobs/sha256/{}",
        config_digest.as_str().unwrap().trim_start_matches("sha256:")
    );

    // A changed byte in any blob.
    for name in [content_name.clone(), config_name.clone()] {
        let mut files = Files(original.0.clone());
        files.0.get_mut(&name).unwrap()[100] ^= 1;
        check(&files, "does not match its digest");
    }
    let mut files = Files(original.0.clone());
    let manifest_digest = files.json("index.json")["manifests"][0]["digest"].clone();
    let manifest_name = format!(
        "blobs/sha256/{}",
        manifest_digest.as_str().unwrap().trim_start_matches("sha256:")
    );
    files.0.get_mut(&manifest_name).unwrap()[10] ^= 1;
    check(&files, "does not match its digest");

    // The signature itself changed.
    let mut files = Files(original.0.clone());
    let mut manifest = files.manifest(1);
    let signature = manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap()
        .to_string();
    let mut raw = bundlegen_protocol::signature::base64_decode(&signature).unwrap();
    let last = raw.len() - 3;
    raw[last] ^= 1;
    manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] =
        json!(bundlegen_protocol::signature::base64_encode(&raw));
    files.set_manifest(1, &manifest);
    check(&files, "does not verify");

    // A hash tree changed consistently with the content digest (a forger
    // with the key signs it): the recomputed tree differs.
    let mut files = Files(original.0.clone());
    let mut content = files.0.remove(&content_name).unwrap();
    let tree_at: usize = files.manifest(0)["layers"][0]["annotations"]["org.rdk.package.content.dmverity.offset"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    content[tree_at + 4096 + 7] ^= 1;
    let mut manifest = files.manifest(0);
    let (digest, size) = files.put(content);
    manifest["layers"][0]["digest"] = digest;
    manifest["layers"][0]["size"] = size;
    files.set_manifest(0, &manifest);
    files.resign(&signer.key, dir.path(), |_| {});
    check(&files, "dm-verity");

    // A payload naming another manifest, properly signed.
    let mut files = Files(original.0.clone());
    files.resign(&signer.key, dir.path(), |p| {
        p["critical"]["image"]["docker-manifest-digest"] = json!(sha256(b"another"))
    });
    check(&files, "the signature is for manifest");

    // `optional: null`, properly signed.
    let mut files = Files(original.0.clone());
    files.resign(&signer.key, dir.path(), |p| p["optional"] = Value::Null);
    check(&files, "`optional` must be an object");

    // A second package manifest.
    let mut files = Files(original.0.clone());
    let mut top = files.json("index.json");
    let first = top["manifests"][0].clone();
    top["manifests"].as_array_mut().unwrap().push(first);
    files.0.insert("index.json".into(), serde_json::to_vec(&top).unwrap());
    check(&files, "a second package manifest");

    // A content layer of a media type nobody knows.
    let mut files = Files(original.0.clone());
    let mut manifest = files.manifest(0);
    manifest["layers"][0]["mediaType"] = json!("application/vnd.rdk.package.content.layer.v1.squashfs");
    files.set_manifest(0, &manifest);
    check(&files, "unknown media type");

    // No certificate in the package.
    let mut files = Files(original.0.clone());
    let mut manifest = files.manifest(1);
    manifest["layers"][0]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("dev.sigstore.cosign/certificate");
    files.set_manifest(1, &manifest);
    check(&files, "carries no certificate");

    // Roots the signer does not chain to.
    let other = Pki::other_root(&dir.path().join("other"));
    let (ok, text) = verify(&good, &other, &[]);
    assert!(!ok && text.contains("not trusted"), "{text}");
}

#[test]
fn certificates_are_checked_for_time_and_use() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // Expired: refused, unless time is not checked.
    let expired = pki.signer_between("expired", Key::EcP256, &years_from_now(-3), &years_from_now(-1));
    let mut args = sign_args(&expired, &pki);
    args.push("--skip-certificate-expiry-check".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let expired_package = package(dir.path(), "expired.ralf", &[&args[..], &["--content", "tar"]].concat());
    let (ok, text) = verify(&expired_package, &pki.root, &[]);
    assert!(!ok && text.contains("expired"), "{text}");
    assert!(verify(&expired_package, &pki.root, &["--no-check-time"]).0);
    // Signing with less than 3 years left needs saying so.
    let short = pki.signer_between("short", Key::EcP256, &years_from_now(-1), &years_from_now(1));
    let args = sign_args(&short, &pki);
    let error = run_failing(
        bundlegen()
            .args(["package", "-y", "--content", "tar"])
            .args(&args)
            .arg(image())
            .arg(dir.path().join("short.ralf")),
    );
    assert!(
        error.contains("expires in") && error.contains("--skip-certificate-expiry-check"),
        "{error}"
    );
    assert!(!dir.path().join("short.ralf").exists());
    // A certificate for TLS servers is not one for code.
    let server = pki.server("server");
    let args = sign_args(&server, &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server_package = package(dir.path(), "server.ralf", &[&args[..], &["--content", "tar"]].concat());
    let (ok, text) = verify(&server_package, &pki.root, &[]);
    assert!(!ok && text.contains("code signing"), "{text}");
    // A key that is not the certificate's.
    let other = pki.signer("other", Key::EcP256);
    let error = run_failing(
        bundlegen()
            .args(["package", "-y", "--sign-key"])
            .arg(&other.key)
            .arg("--sign-cert")
            .arg(&server.certificate)
            .arg(image())
            .arg(dir.path().join("x.ralf")),
    );
    assert!(error.contains("is not the key of"), "{error}");
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // A config with a field the schema does not have.
    let config = dir.path().join("package.json");
    fs::write(&config, r#"{"id":"a.b","specVersion":"1.0.0","version":"1.0","packageType":"application","entryPoint":"bin/app","colour":"red"}"#).unwrap();
    let error = run_failing(
        bundlegen()
            .arg("package")
            .arg("--config")
            .arg(&config)
            .arg(image())
            .arg(dir.path().join("x.ralf")),
    );
    assert!(error.contains("package.json") && error.contains("colour"), "{error}");
    // Device nodes cannot be packaged.
    let layout = dir.path().join("image");
    let layer = LayerBuilder::default()
        .file("bin/app", b"#!/bin/sh\n", 0o755)
        .char_device("dev/null", 1, 3)
        .tar();
    simple_layout(&layout, &[(layer, Compress::Gzip)]);
    let error = run_failing(
        bundlegen()
            .args(["package", "--arch", "amd64", "-x", "com.example.app", "--config"])
            .arg(config.with_file_name("none"))
            .arg(format!("oci:{}", layout.display()))
            .arg(dir.path().join("y.ralf")),
    );
    assert!(error.contains("none"), "{error}");
    let metadata = dir.path().join("app.json");
    fs::write(&metadata, r#"{"id":"com.example.app","type":"application/vnd.rdk-app.dac.native","graphics":false,"network":{"type":"none"},"storage":{},"resources":{"ram":"64M"}}"#).unwrap();
    let error = run_failing(
        bundlegen()
            .args(["package", "--arch", "amd64", "-a"])
            .arg(&metadata)
            .arg(format!("oci:{}", layout.display()))
            .arg(dir.path().join("y.ralf")),
    );
    assert!(error.contains("/dev/null") && error.contains("device node"), "{error}");
    assert!(
        dir_names(dir.path()).iter().all(|n| !n.contains("y.ralf")),
        "nothing half-written"
    );
    // The deprecated media type is lz4 only.
    let error = run_failing(
        bundlegen()
            .args(["package", "--content", "erofs.zstd", "--legacy-erofs-media-type"])
            .arg(image())
            .arg(dir.path().join("z.ralf")),
    );
    assert!(error.contains("lz4"), "{error}");
    let legacy = package(
        dir.path(),
        "legacy.ralf",
        &["--content", "erofs.lz4", "--legacy-erofs-media-type"],
    );
    let info = run(bundlegen().args(["package-info", "--json"]).arg(&legacy));
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        info["content"]["mediaType"],
        "application/vnd.rdk.package.content.layer.v1.erofs+dmverity"
    );
}

/// `bundlegen package` of the test image, signed with a PKCS#12 file.
fn package_signed_by(p12: &Path, passphrase: &str, output: &Path) -> Command {
    let mut command = bundlegen();
    command
        .args([
            "package",
            "-y",
            "--arch",
            "arm",
            "--variant",
            "v7",
            "--content",
            "tar",
            "--sign-pkcs12",
        ])
        .arg(p12)
        .args(["--passphrase", passphrase])
        .arg(image())
        .arg(output);
    command
}

#[test]
fn a_pkcs12_file_signs_with_its_key_certificate_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let signer = pki.signer("p12", Key::EcP256);
    // Current (AES, PBKDF2) and legacy (RC2/3DES, OpenSSL 1.x's) encryptions;
    // the chain inside the file is what lets the box's roots trust the leaf.
    for (name, legacy) in [("current", false), ("legacy", true)] {
        let p12 = dir.path().join(format!("{name}.p12"));
        let mut export = Command::new("openssl");
        export
            .args(["pkcs12", "-export", "-passout", "pass:s3cret", "-inkey"])
            .arg(&signer.key)
            .arg("-in")
            .arg(&signer.certificate)
            .arg("-certfile")
            .arg(&pki.intermediate)
            .arg("-out")
            .arg(&p12);
        if legacy {
            export.arg("-legacy");
        }
        run(&mut export);
        let package = dir.path().join(format!("{name}.ralf"));
        run(package_signed_by(&p12, "env://BUNDLEGEN_TEST_P12_PASSPHRASE", &package)
            .env("BUNDLEGEN_TEST_P12_PASSPHRASE", "s3cret"));
        let (ok, text) = verify(&package, &pki.root, &[]);
        assert!(ok, "{name}: {text}");
        assert!(text.contains("signed by \"CN="), "{text}");
        let layer = &Files::read(&package).manifest(1)["layers"][0];
        assert!(
            layer["annotations"]["dev.sigstore.cosign/chain"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE"),
            "{name}: the intermediate travels in the chain"
        );
    }
    let p12 = dir.path().join("current.p12");
    // The passphrase from stdin (one given as itself is tried below).
    let mut from_stdin = package_signed_by(&p12, "-", &dir.path().join("stdin.ralf"));
    from_stdin
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = from_stdin.spawn().unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "s3cret").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(verify(&dir.path().join("stdin.ralf"), &pki.root, &[]).0);
    // A wrong passphrase, an unset variable, a file that is not PKCS#12:
    // each named, nothing written.
    let attempt = |p12: &Path, passphrase: &str| {
        run_failing(&mut package_signed_by(
            p12,
            passphrase,
            &dir.path().join("refused.ralf"),
        ))
    };
    let error = attempt(&p12, "wrong");
    assert!(
        error.contains("current.p12") && error.contains("wrong passphrase"),
        "{error}"
    );
    let error = attempt(&p12, "env://BUNDLEGEN_TEST_UNSET");
    assert!(
        error.contains("BUNDLEGEN_TEST_UNSET") && error.contains("not set"),
        "{error}"
    );
    let error = attempt(&signer.certificate, "s3cret");
    assert!(error.contains("not a PKCS#12 file"), "{error}");
    // A file holding certificates only.
    let certificates_only = dir.path().join("certificates-only.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-nokeys", "-passout", "pass:s3cret", "-in"])
        .arg(&signer.certificate)
        .arg("-out")
        .arg(&certificates_only));
    let error = attempt(&certificates_only, "s3cret");
    assert!(
        error.contains("certificates-only.p12") && error.contains("no private key"),
        "{error}"
    );
    assert!(!dir.path().join("refused.ralf").exists());
}
