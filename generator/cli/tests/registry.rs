//! Pulling from a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry) filled with `skopeo copy`: plain HTTP, and HTTPS
//! with the distribution token flow and credentials.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::*;

/// A two-platform image (amd64 and arm/v7), each with a marker file.
fn multi_platform_layout(dir: &Path) -> LayoutBuilder {
    let layout = LayoutBuilder::new(dir);
    let manifests = [("amd64", None), ("arm", Some("v7"))]
        .iter()
        .map(|(arch, variant)| {
            let layer = LayerBuilder::default()
                .dir("etc", 0o755)
                .file(
                    "etc/platform",
                    format!("{arch}{}", variant.unwrap_or("")).as_bytes(),
                    0o644,
                )
                .tar();
            layout.image(
                &[(layer, Compress::Gzip)],
                arch,
                *variant,
                json!({"Cmd": ["/bin/true"]}),
            )
        })
        .collect();
    let index = layout.index(manifests);
    layout.tag(index, "latest")
}

fn platform_of(out: &Path) -> String {
    fs::read_to_string(out.join("rootfs/etc/platform")).unwrap()
}

#[test]
fn plain_http_registry_by_tag_digest_and_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path(), "");
    let layout = multi_platform_layout(&tmp.path().join("layout"));
    let repo = format!("docker://{}/rdk/app", registry.host());
    skopeo_push(&layout.dir, &format!("{repo}:1.0"), &["--dest-tls-verify=false"]);

    let cache = tmp.path().join("cache");
    let pull = |image: &str, out: &Path, arch: &str| {
        let mut command = bundlegen();
        command
            .args(["unpack", "--format", "dir", "--plain-http", "--arch", arch])
            .arg("--cache-dir")
            .arg(&cache)
            .arg(image)
            .arg(out);
        command
    };
    run(&mut pull(&format!("{repo}:1.0"), &tmp.path().join("amd"), "x86_64"));
    assert_eq!(platform_of(&tmp.path().join("amd")), "amd64");
    run(&mut pull(&format!("{repo}:1.0"), &tmp.path().join("arm"), "armv7"));
    assert_eq!(platform_of(&tmp.path().join("arm")), "armv7");

    // By digest of the index, and the blobs came from (and went into) the cache.
    let index_digest = layout_index_digest(&layout.dir);
    run(&mut pull(
        &format!("{repo}@{index_digest}"),
        &tmp.path().join("by-digest"),
        "amd64",
    ));
    assert_eq!(platform_of(&tmp.path().join("by-digest")), "amd64");
    assert!(cache.join("blobs/sha256").read_dir().unwrap().count() >= 5);

    // A digest the registry does not have, a missing tag, and HTTPS to an HTTP registry.
    let missing = sha256(b"nothing");
    let err = run_failing(&mut pull(&format!("{repo}@{missing}"), &tmp.path().join("x"), "amd64"));
    assert!(err.contains("not found"), "{err}");
    let err = run_failing(&mut pull(&format!("{repo}:2.0"), &tmp.path().join("x"), "amd64"));
    assert!(err.contains("not found: manifest"), "{err}");
    let mut https = bundlegen();
    https
        .args(["unpack", "--arch", "amd64"])
        .arg(format!("{repo}:1.0"))
        .arg(tmp.path().join("x"));
    let err = run_failing(&mut https);
    assert!(err.contains("request failed"), "{err}");
    assert!(!tmp.path().join("x").exists());
}

fn layout_index_digest(layout: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

// --- HTTPS + token flow ---

fn openssl(args: &[&str]) {
    run(Command::new("openssl").args(args));
}

fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn base64(data: &[u8]) -> String {
    let url = base64url(data).replace('-', "+").replace('_', "/");
    let pad = (4 - url.len() % 4) % 4;
    url + &"=".repeat(pad)
}

/// An RS256 JWT the registry accepts for `repository` (pull and push).
fn mint_token(dir: &Path, repository: &str) -> String {
    let der = {
        openssl(&[
            "x509",
            "-in",
            dir.join("token.crt").to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            dir.join("token.der").to_str().unwrap(),
        ]);
        fs::read(dir.join("token.der")).unwrap()
    };
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [base64(&der)]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "test-issuer", "sub": "tester", "aud": "test-registry",
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "test",
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    fs::write(dir.join("signing-input"), &signing_input).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        dir.join("token.key").to_str().unwrap(),
        "-out",
        dir.join("signature").to_str().unwrap(),
        dir.join("signing-input").to_str().unwrap(),
    ]);
    format!(
        "{signing_input}.{}",
        base64url(&fs::read(dir.join("signature")).unwrap())
    )
}

/// Serves the token endpoint: Basic `user:secret` gets the token, others 401.
fn serve_tokens(token: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let good = format!("Basic {}", base64(b"user:secret"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line.to_ascii_lowercase().starts_with("authorization:") && line.trim_end().ends_with(&good) {
                    authorized = true;
                }
            }
            let (status, body) = if authorized {
                ("200 OK", json!({"token": token}).to_string())
            } else {
                ("401 Unauthorized", "{}".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.get_mut().set_read_timeout(Some(Duration::from_millis(10)));
            let _ = reader.read_to_end(&mut rest);
        }
    });
    port
}

#[test]
fn https_registry_with_token_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = |name: &str| -> PathBuf { dir.join(name) };
    // A CA, the registry's certificate signed by it, and the token issuer's key.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        path("ca.key").to_str().unwrap(),
        "-out",
        path("ca.crt").to_str().unwrap(),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        path("tls.key").to_str().unwrap(),
        "-out",
        path("tls.csr").to_str().unwrap(),
    ]);
    fs::write(
        path("tls.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        path("tls.csr").to_str().unwrap(),
        "-CA",
        path("ca.crt").to_str().unwrap(),
        "-CAkey",
        path("ca.key").to_str().unwrap(),
        "-CAcreateserial",
        "-extfile",
        path("tls.ext").to_str().unwrap(),
        "-out",
        path("tls.crt").to_str().unwrap(),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=token-issuer",
        "-keyout",
        path("token.key").to_str().unwrap(),
        "-out",
        path("token.crt").to_str().unwrap(),
    ]);
    let token_port = serve_tokens(mint_token(dir, "rdk/secure"));
    let registry = Registry::start(
        dir,
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            path("tls.crt").display(),
            path("tls.key").display(),
            path("token.crt").display()
        ),
    );
    let layout = multi_platform_layout(&path("layout"));
    let image = format!("docker://{}/rdk/secure:1", registry.host());
    skopeo_push(
        &layout.dir,
        &image,
        &["--dest-tls-verify=false", "--dest-creds", "user:secret"],
    );

    let pull = |creds: Option<&str>, ca: bool, out: &str| {
        let mut command = bundlegen();
        command
            .args(["unpack", "--format", "dir", "--arch", "amd64"])
            .env_remove("RDK_OCI_REGISTRY_CREDS");
        if let Some(creds) = creds {
            command.env("RDK_OCI_REGISTRY_CREDS", creds);
        }
        if ca {
            command.arg("--registry-ca").arg(path("ca.crt"));
        }
        command.arg(&image).arg(path(out));
        command
    };
    run(&mut pull(Some("user:secret"), true, "ok"));
    assert_eq!(platform_of(&path("ok")), "amd64");

    let err = run_failing(&mut pull(Some("user:wrong"), true, "bad-creds"));
    assert!(
        err.contains("token request refused") && err.contains("--creds"),
        "{err}"
    );
    let err = run_failing(&mut pull(None, true, "no-creds"));
    assert!(err.contains("401") || err.contains("refused"), "{err}");
    let err = run_failing(&mut pull(Some("user:secret"), false, "untrusted"));
    assert!(err.contains("certificate"), "{err}");
    for out in ["bad-creds", "no-creds", "untrusted"] {
        assert!(!path(out).exists());
    }
}
