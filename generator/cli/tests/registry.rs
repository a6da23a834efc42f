//! Pulling from a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry) filled with `skopeo copy`: plain HTTP, and HTTPS
//! with the distribution token flow and credentials.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
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
    // Without --plain-http, TLS meets plain HTTP: said so, with the flag.
    let err = run_failing(
        bundlegen()
            .args(["unpack", "--format", "dir", "--arch", "amd64"])
            .arg(format!("{repo}:1.0"))
            .arg(tmp.path().join("tls")),
    );
    assert!(err.contains("plain HTTP") && err.contains("--plain-http"), "{err}");
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

/// A CA, a certificate it signed for 127.0.0.1 and localhost (the registry's
/// and the token servers'), and the token issuer's key.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let self_signed = |cn: &str, key: &str, cert: &str| {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                cn,
                "-keyout",
                &path(key),
                "-out",
                &path(cert),
            ])
        };
        self_signed("/CN=test-ca", "ca.key", "ca.crt");
        self_signed("/CN=token-issuer", "token.key", "token.crt");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &path("tls.key"),
            "-out",
            &path("tls.csr"),
        ]);
        fs::write(
            dir.join("tls.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &path("tls.csr"),
            "-CA",
            &path("ca.crt"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &path("tls.ext"),
            "-out",
            &path("tls.crt"),
        ]);
        Pki { dir: dir.to_path_buf() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A registry over HTTPS whose token server is at `realm`.
    fn registry(&self, name: &str, realm: &str) -> Registry {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        Registry::start(
            &dir,
            &format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: {realm}\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                self.path("tls.crt").display(),
                self.path("tls.key").display(),
                self.path("token.crt").display()
            ),
        )
    }
}

/// An RS256 JWT the registry accepts for `repository` (pull and push).
fn mint_token(pki: &Pki, repository: &str) -> String {
    let dir = pki.dir.as_path();
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

/// A token server: Basic `user:secret` gets the token, others 401; every
/// `Authorization` it was sent is kept (`None` for none).
struct TokenServer {
    port: u16,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl TokenServer {
    /// Over HTTPS with the PKI's certificate, or plain HTTP.
    fn start(token: String, tls: Option<&Pki>) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tls = tls.map(|pki| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            Arc::new(bundlegen_protocol::tls::server_config(&pki.path("tls.crt"), &pki.path("tls.key"), false).unwrap())
        });
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                match &tls {
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                        answer(rustls::StreamOwned::new(connection, stream), &token, &log);
                    }
                    None => answer(stream, &token, &log),
                }
            }
        });
        TokenServer { port, seen }
    }

    /// Whether any request carried `user:secret`.
    fn saw_the_credentials(&self) -> bool {
        let good = format!("Basic {}", base64(b"user:secret"));
        self.seen.lock().unwrap().iter().flatten().any(|a| *a == good)
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn forget(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn answer(mut stream: impl Read + Write, token: &str, seen: &Mutex<Vec<Option<String>>>) {
    let mut authorization = None;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    for line in String::from_utf8_lossy(&head).lines() {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
    }
    let good = format!("Basic {}", base64(b"user:secret"));
    let (status, body) = if authorization.as_deref() == Some(good.as_str()) {
        ("200 OK", json!({"token": token}).to_string())
    } else {
        ("401 Unauthorized", "{}".to_string())
    };
    seen.lock().unwrap().push(authorization);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// `bundlegen unpack` of `image`, trusting the test CA, with `args`.
fn pull(pki: &Pki, image: &str, out: &str, creds_env: Option<&str>, args: &[&str]) -> Command {
    let mut command = bundlegen();
    command
        .args(["unpack", "--format", "dir", "--arch", "amd64"])
        .env_remove("RDK_OCI_REGISTRY_CREDS")
        .arg("--registry-ca")
        .arg(pki.path("ca.crt"))
        .args(args);
    if let Some(creds) = creds_env {
        command.env("RDK_OCI_REGISTRY_CREDS", creds);
    }
    command.arg(image).arg(pki.path(out));
    command
}

#[test]
fn https_registry_with_token_authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let tokens = TokenServer::start(mint_token(&pki, "rdk/secure"), Some(&pki));
    let registry = pki.registry("registry", &format!("https://127.0.0.1:{}/token", tokens.port));
    let layout = multi_platform_layout(&pki.path("layout"));
    let image = format!("docker://{}/rdk/secure:1", registry.host());
    skopeo_push(
        &layout.dir,
        &image,
        &["--dest-tls-verify=false", "--dest-creds", "user:secret"],
    );

    // BundleGen's form: the credentials are for the image's registry.
    tokens.forget();
    run(&mut pull(&pki, &image, "ok", Some("user:secret"), &[]));
    assert_eq!(platform_of(&pki.path("ok")), "amd64");
    assert!(tokens.saw_the_credentials());
    // Bound to the host by name.
    let bound = format!("{}=user:secret", registry.host());
    run(&mut pull(&pki, &image, "bound", None, &["--creds", &bound]));
    assert_eq!(platform_of(&pki.path("bound")), "amd64");
    // From an auth file, as skopeo and podman keep them.
    let auth = json!({"auths": {registry.host(): {"auth": base64(b"user:secret")}}});
    fs::write(pki.path("auth.json"), auth.to_string()).unwrap();
    let auth_file = pki.path("auth.json").display().to_string();
    run(&mut pull(&pki, &image, "auth-file", None, &["--authfile", &auth_file]));

    let err = run_failing(&mut pull(&pki, &image, "bad-creds", Some("user:wrong"), &[]));
    assert!(
        err.contains("token request refused") && err.contains("--creds"),
        "{err}"
    );
    let err = run_failing(&mut pull(&pki, &image, "no-creds", None, &[]));
    assert!(err.contains("401") || err.contains("refused"), "{err}");
    // Without the CA: the registry's certificate is not trusted.
    let err = run_failing(
        bundlegen()
            .args(["unpack", "--format", "dir", "--arch", "amd64", "--creds", &bound])
            .arg(&image)
            .arg(pki.path("untrusted")),
    );
    assert!(
        err.contains("certificate") && err.contains("--registry-ca FILE"),
        "{err}"
    );
    for out in ["bad-creds", "no-creds", "untrusted"] {
        assert!(!pki.path(out).exists());
    }
}

/// Credentials go to their registry's host only: not to a token server on
/// another host (unless allowed), never over plain HTTP, and credentials
/// for another registry are not sent at all.
#[test]
fn credentials_never_go_to_another_host_or_over_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let token = mint_token(&pki, "rdk/secure");
    let https_tokens = TokenServer::start(token.clone(), Some(&pki));
    let plain_tokens = TokenServer::start(token, None);
    let same_host = pki.registry("same", &format!("https://127.0.0.1:{}/token", https_tokens.port));
    let other_host = pki.registry("other", &format!("https://localhost:{}/token", https_tokens.port));
    let plain_realm = pki.registry("plain", &format!("http://127.0.0.1:{}/token", plain_tokens.port));
    let layout = multi_platform_layout(&pki.path("layout"));
    for registry in [&same_host, &other_host, &plain_realm] {
        let image = format!("docker://{}/rdk/secure:1", registry.host());
        skopeo_push(
            &layout.dir,
            &image,
            &["--dest-tls-verify=false", "--dest-creds", "user:secret"],
        );
    }
    https_tokens.forget();
    plain_tokens.forget();

    // Credentials for another registry: this one gets nothing.
    let image = format!("docker://{}/rdk/secure:1", same_host.host());
    let err = run_failing(&mut pull(
        &pki,
        &image,
        "x1",
        None,
        &["--creds", "registry.example=user:secret"],
    ));
    assert!(err.contains("refused"), "{err}");
    assert!(https_tokens.requests() > 0, "an anonymous token request");
    assert!(!https_tokens.saw_the_credentials());

    // A token server on another host: not unless allowed, then yes.
    let image = format!("docker://{}/rdk/secure:1", other_host.host());
    let creds = format!("{}=user:secret", other_host.host());
    let err = run_failing(&mut pull(&pki, &image, "x2", None, &["--creds", &creds]));
    assert!(err.contains("refused"), "{err}");
    assert!(!https_tokens.saw_the_credentials());
    run(&mut pull(
        &pki,
        &image,
        "allowed",
        None,
        &["--creds", &creds, "--token-realm", "localhost"],
    ));
    assert!(https_tokens.saw_the_credentials());

    // A token server over plain HTTP: never.
    let image = format!("docker://{}/rdk/secure:1", plain_realm.host());
    let creds = format!("{}=user:secret", plain_realm.host());
    let args = ["--creds", creds.as_str(), "--token-realm", "127.0.0.1"];
    let err = run_failing(&mut pull(&pki, &image, "x3", None, &args));
    assert!(err.contains("refused"), "{err}");
    assert!(plain_tokens.requests() > 0);
    assert!(!plain_tokens.saw_the_credentials());
    for out in ["x1", "x2", "x3"] {
        assert!(!pki.path(out).exists());
    }
}
