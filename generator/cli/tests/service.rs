//! `bundlegen serve` in its embedded mode (SQLite, in-process workers, bundles
//! in a directory), as a real process answering real HTTP: every endpoint,
//! auth failures, bad inputs, de-duplication, downloads with ranges and
//! ETags, signatures, lookups, a crash mid-job, TLS.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bundlegen_protocol::signature::{SignedIdentity, base64_decode, verify};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::service::{Server, client, slow_image, wait_for_job};
use support::*;

const PLATFORM: &str = "rpi3_reference_vc4_dunfell";

fn images_dir() -> PathBuf {
    conformance().join("bundlegen/images")
}

fn conformance_image() -> String {
    format!(
        "oci:{}:latest",
        images_dir().join("dac-image-wayland-egl-test-oci").display()
    )
}

fn template_text(name: &str) -> String {
    std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{name}.json"))).unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_string(),
        body["error"]["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// Creates the conformance platform's template.
async fn put_template(server: &Server) {
    let path = format!("/v1/platforms/{PLATFORM}");
    let response = server
        .send_body(reqwest::Method::PUT, &path, &server.admin, template_text(PLATFORM))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// A server with the conformance platform (template and BundleGen's list).
async fn server_with_platform(dir: &Path, extra: &[&str]) -> Server {
    let images = images_dir();
    let mut args = vec!["--local-images", images.to_str().unwrap()];
    args.extend_from_slice(extra);
    let server = Server::start(dir, &args);
    put_template(&server).await;
    let libs =
        std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{PLATFORM}_libs.json"))).unwrap();
    let response = server
        .send_body(
            reqwest::Method::PUT,
            &format!("/v1/platforms/{PLATFORM}/libs"),
            &server.admin,
            libs,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_roles_and_auth_failures() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_platform(dir.path(), &[]).await;
    let http = client();

    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "no token needed");
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let anonymous = http.get(server.url("/v1/platforms")).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(anonymous).await.1, "unauthorized");
    let wrong = server.get("/v1/platforms", "bgt_nope").await;
    assert_eq!(error_code(wrong).await.0, StatusCode::UNAUTHORIZED);
    let not_bearer = http
        .get(server.url("/v1/platforms"))
        .basic_auth("admin", Some(&server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(not_bearer.status(), StatusCode::UNAUTHORIZED);

    let device = server.device_token(PLATFORM).await;
    let team = server.token("platform-team").await;
    let forbidden = server
        .post_json("/v1/tokens", &device, &json!({"name": "x", "role": "admin"}))
        .await;
    assert_eq!(error_code(forbidden).await.1, "forbidden");
    let put = server
        .send_body(
            reqwest::Method::PUT,
            "/v1/platforms/p1",
            &device,
            template_text(PLATFORM),
        )
        .await;
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "devices do not edit templates");
    let own = format!("/v1/platforms/{PLATFORM}");
    for (token, path) in [
        (&device, own.as_str()),
        (&team, "/v1/platforms"),
        (&team, "/metrics"),
        (&device, "/openapi.json"),
    ] {
        let ok = server.get(path, token).await;
        assert_eq!(ok.status(), StatusCode::OK, "{path}");
    }
    // A monitoring system's token reads /metrics and nothing else.
    let metrics = server.token("metrics").await;
    assert_eq!(server.get("/metrics", &metrics).await.status(), StatusCode::OK);
    for path in [
        "/v1/platforms",
        own.as_str(),
        "/v1/signing-key",
        "/v1/jobs",
        "/v1/tokens",
    ] {
        let refused = server.get(path, &metrics).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // A device token belongs to its platform: nothing of the others, no lists.
    let other = server
        .send_body(
            reqwest::Method::PUT,
            "/v1/platforms/other",
            &team,
            template_text(PLATFORM),
        )
        .await;
    assert_eq!(other.status(), StatusCode::CREATED);
    for path in [
        "/metrics",
        "/v1/platforms",
        "/v1/apps",
        "/v1/platforms/other",
        "/v1/platforms/other/versions",
    ] {
        let refused = server.get(path, &device).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let lookup = server.get("/v1/lookup?app=a&version=1&platform=other", &device).await;
    assert_eq!(error_code(lookup).await.0, StatusCode::FORBIDDEN);
    let upload = server
        .send_body(reqwest::Method::POST, "/v1/platforms/other/probe", &device, "{}")
        .await;
    let (status, _, message) = error_code(upload).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        message.contains(&format!("belongs to platform {PLATFORM}")),
        "{message}"
    );
    for body in [
        json!({"name": "unbound", "role": "device"}),
        json!({"name": "team", "role": "platform-team", "platform": PLATFORM}),
    ] {
        let refused = server.post_json("/v1/tokens", &server.admin, &body).await;
        assert_eq!(error_code(refused).await.1, "invalid_request", "{body}");
    }
    let nowhere = server
        .post_json(
            "/v1/tokens",
            &server.admin,
            &json!({"name": "x", "role": "device", "platform": "rpi9"}),
        )
        .await;
    assert_eq!(error_code(nowhere).await.1, "platform_not_found");

    let bad_role = server
        .post_json("/v1/tokens", &server.admin, &json!({"name": "x", "role": "root"}))
        .await;
    assert_eq!(error_code(bad_role).await.1, "invalid_request");

    let listed: Value = server.get("/v1/tokens", &server.admin).await.json().await.unwrap();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 4, "admin, device, platform team, metrics");
    let listed_device = tokens.iter().find(|t| t["role"] == "device").unwrap();
    assert_eq!(listed_device["platform"], PLATFORM);
    assert!(listed_device["lastUsedAt"].is_i64(), "its use is recorded");
    assert!(
        tokens
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none())
    );

    // Only hashes are stored: the secrets are nowhere in the database files.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("bundlegen.db") {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    for secret in [&device, &team, &server.admin] {
        let needle = secret.as_bytes();
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "a token is stored in clear"
        );
    }

    let device_id = tokens.iter().find(|t| t["role"] == "device").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = server.delete(&format!("/v1/tokens/{device_id}"), &server.admin).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let after = server.get(&own, &device).await;
    assert_eq!(
        error_code(after).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into(), "revoked token".into())
    );
    let again = server.delete(&format!("/v1/tokens/{device_id}"), &server.admin).await;
    assert_eq!(error_code(again).await.1, "token_not_found");
    let nowhere = server.get("/v2/nothing", &team).await;
    assert_eq!(
        error_code(nowhere).await,
        (StatusCode::NOT_FOUND, "not_found".into(), "no such endpoint".into())
    );
}

/// Every operation in the OpenAPI document is served (none falls through
/// to the 404 fallback or gets 405).
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    let document: Value = serde_json::from_str(bundlegen_service::api::OPENAPI).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{name}", "p")
                .replace("{id}", "x")
                .replace("{app}", "a")
                .replace("{version}", "1");
            let request = http
                .request(method.to_uppercase().parse().unwrap(), server.url(&concrete))
                .bearer_auth(&server.admin)
                .header("content-type", "application/json")
                .body("{}");
            let response = request.send().await.unwrap();
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if status == StatusCode::NOT_FOUND {
                let (_, code, _) = error_code(response).await;
                assert_ne!(code, "not_found", "{method} {path} is not routed");
            }
        }
    }
}

/// Probes the conformance image's arm rootfs (a small, real box-like tree).
fn probe_report_json() -> String {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(bundlegen()
        .args(["unpack", "-y", "--format", "dir"])
        .arg(conformance_image())
        .arg(&bundle));
    let report = platform_probe::probe(&platform_probe::ProbeOptions {
        root: bundle.join("rootfs"),
        expected_devices: Vec::new(),
        programs: Vec::new(),
        cache: None,
    })
    .unwrap();
    serde_json::to_string(&report).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn platforms_keep_versions_and_diff_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_platform(dir.path(), &[]).await;
    let http = client();
    let device = server.device_token(PLATFORM).await;
    let at = |path: &str| format!("/v1/platforms/{PLATFORM}{path}");

    let report = probe_report_json();
    let uploaded = server
        .send_body(reqwest::Method::POST, &at("/probe"), &device, report.clone())
        .await;
    assert_eq!(
        uploaded.status(),
        StatusCode::ACCEPTED,
        "a device's first report waits for review"
    );
    let held: Value = uploaded.json().await.unwrap();
    assert_eq!(
        (held["version"].as_i64(), held["held"].as_bool()),
        (Some(3), Some(true))
    );
    let current: Value = server.get(&at(""), &device).await.json().await.unwrap();
    assert_eq!(current["version"], 2, "a held report is not used");
    let not_by_devices = server.post_json(&at("/versions/3/accept"), &device, &json!({})).await;
    assert_eq!(not_by_devices.status(), StatusCode::FORBIDDEN);
    let accepted = server
        .post_json(&at("/versions/3/accept"), &server.admin, &json!({}))
        .await;
    assert_eq!(accepted.json::<Value>().await.unwrap()["version"], 4);
    let twice = server
        .post_json(&at("/versions/3/accept"), &server.admin, &json!({}))
        .await;
    assert_eq!(error_code(twice).await.1, "not_held");
    let identical = server
        .send_body(reqwest::Method::POST, &at("/probe"), &device, report.clone())
        .await;
    let identical: Value = identical.json().await.unwrap();
    assert_eq!(
        (identical["version"].as_i64(), identical["unchanged"].as_bool()),
        (Some(4), Some(true)),
        "an identical report is no new version"
    );

    let mut changed: Value = serde_json::from_str(&template_text(PLATFORM)).unwrap();
    changed["hardware"]["maxRam"] = json!("512M");
    let updated = server
        .send_body(reqwest::Method::PUT, &at(""), &server.admin, changed.to_string())
        .await;
    assert_eq!(updated.json::<Value>().await.unwrap()["version"], 5);

    let current: Value = server.get(&at(""), &device).await.json().await.unwrap();
    assert_eq!(current["version"], 5);
    assert_eq!(
        current["generated"]["source"], "probe",
        "a template update keeps the probe report"
    );
    assert!(current["generated"]["libraries"].as_u64().unwrap() > 10);
    assert_eq!(current["template"]["hardware"]["maxRam"], "512M");

    let history: Value = server.get(&at("/versions"), &device).await.json().await.unwrap();
    let changes: Vec<(&str, &str)> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["change"].as_str().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [
            ("template", "accepted"),
            ("libs", "accepted"),
            ("probe", "accepted"),
            ("accepted", "accepted"),
            ("template", "accepted")
        ]
    );

    let diff: Value = server
        .get(&at("/diff?from=1&to=5"), &device)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(diff["template"][0]["path"], "/hardware/maxRam");
    assert_eq!(diff["template"][0]["to"], "512M");
    let libs_diff: Value = server
        .get(&at("/diff?from=2&to=4"), &device)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        libs_diff["libraries"]["removed"].as_array().unwrap().len() > 900,
        "the arm rootfs has few libraries"
    );
    assert_eq!(libs_diff["template"], json!([]));
    // Without `from`: the version before, to the current one.
    let latest: Value = server.get(&at("/diff"), &device).await.json().await.unwrap();
    assert_eq!((latest["from"].as_i64(), latest["to"].as_i64()), (Some(4), Some(5)));
    assert_eq!(latest["template"][0]["path"], "/hardware/maxRam");

    let old_libs: Value = server.get(&at("/libs?version=2"), &device).await.json().await.unwrap();
    assert_eq!(old_libs["libs"].as_array().unwrap().len(), 1022);
    let probe: Value = server.get(&at("/probe"), &device).await.json().await.unwrap();
    assert_eq!(probe, serde_json::from_str::<Value>(&report).unwrap());
    let no_probe = server.get(&at("/probe?version=2"), &device).await;
    assert_eq!(error_code(no_probe).await.1, "probe_not_found");

    let listed: Value = server.get("/v1/platforms", &server.admin).await.json().await.unwrap();
    assert_eq!(listed["platforms"][0]["name"], PLATFORM);
    assert_eq!(listed["platforms"][0]["currentVersion"], 5);

    // With the policy's autoAccept, a device's changed libc is used at once.
    let policy = server
        .put_json(
            &at("/policy"),
            &server.admin,
            &json!({"autoAccept": true, "keepVersions": 20}),
        )
        .await;
    assert_eq!(policy.status(), StatusCode::OK);
    let mut new_libc: Value = serde_json::from_str(&report).unwrap();
    let libc = new_libc["system"]["libc"]["path"].as_str().unwrap().to_string();
    for library in new_libc["libraries"].as_array_mut().unwrap() {
        if library["names"].as_array().unwrap().iter().any(|n| n == libc.as_str()) {
            library["sha256"] = json!("0".repeat(64));
        }
    }
    let uploaded = server
        .send_body(reqwest::Method::POST, &at("/probe"), &device, new_libc.to_string())
        .await;
    assert_eq!(uploaded.status(), StatusCode::OK);
    assert_eq!(uploaded.json::<Value>().await.unwrap()["version"], 6);

    // A report naming a file outside the library directories is refused.
    let mut hostile: Value = serde_json::from_str(&report).unwrap();
    hostile["libraries"][0]["path"] = json!("/etc/shadow");
    let refused = server
        .send_body(reqwest::Method::POST, &at("/probe"), &device, hostile.to_string())
        .await;
    let (status, code, message) = error_code(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_probe")
    );
    assert!(message.contains("/etc/shadow"), "{message}");

    // Bad inputs name what is wrong.
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            http.put(server.url(&at("")))
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "",
        ),
        (
            http.put(server.url(&at("")))
                .header("content-type", "application/json")
                .body(json!({"platformName": PLATFORM, "os": 7}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_template",
            "os",
        ),
        (
            http.put(server.url("/v1/platforms/bad%20name"))
                .header("content-type", "application/json")
                .body(template_text(PLATFORM)),
            StatusCode::BAD_REQUEST,
            "invalid_platform_name",
            "",
        ),
        (
            http.put(server.url(&at("")))
                .header("content-type", "text/plain")
                .body(template_text(PLATFORM)),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            http.put(server.url(&at(""))).body(template_text(PLATFORM)),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "without a Content-Type",
        ),
        (
            http.get(server.url("/v1/platforms/nope")),
            StatusCode::NOT_FOUND,
            "platform_not_found",
            "nope",
        ),
        (
            http.get(server.url(&at("?version=99"))),
            StatusCode::NOT_FOUND,
            "platform_not_found",
            "99",
        ),
        (
            http.get(server.url(&at("?version=abc"))),
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "",
        ),
        (
            http.get(server.url(&at("/diff?from=x"))),
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "from",
        ),
        (
            http.delete(server.url("/v1/platforms")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE",
        ),
        (
            http.post(server.url(&at("/probe")))
                .header("content-type", "application/json")
                .body("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_probe",
            "",
        ),
        (
            http.put(server.url(&at("/libs")))
                .header("content-type", "application/json")
                .body(json!({"libs": [{"name": "relative", "apiversions": [], "deps": []}]}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_libs",
            "libs[0].name",
        ),
    ];
    for (request, status, code, mention) in cases {
        let (got_status, got_code, message) =
            error_code(request.bearer_auth(&server.admin).send().await.unwrap()).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{message}");
        assert!(message.contains(mention), "{message:?} should mention {mention:?}");
    }
    // A report of another architecture is refused.
    let mut x86: Value = serde_json::from_str(&report).unwrap();
    x86["system"]["abi"] = json!({"bits": 64, "endian": "little", "machine": 62, "floatAbi": "unspecified"});
    let wrong_arch = server
        .send_body(reqwest::Method::POST, &at("/probe"), &device, x86.to_string())
        .await;
    let (status, code, message) = error_code(wrong_arch).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_probe")
    );
    assert!(message.contains("amd64"), "{message}");
}

fn sha256_hex(data: &[u8]) -> String {
    bundlegen_protocol::digest::Sha256Digest::of(data).hex()
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_are_built_signed_and_served_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_platform(dir.path(), &[]).await;
    let device = server.device_token(PLATFORM).await;
    let request = json!({"image": conformance_image(), "platform": PLATFORM, "appVersion": "1.0.0"});
    let started = server.post_json("/v1/bundles?wait=300", &server.admin, &request).await;
    assert_eq!(started.status(), StatusCode::OK);
    let body: Value = started.json().await.unwrap();
    let bundle = body["bundle"].clone();
    assert_eq!(body["job"]["state"], "succeeded");
    assert_eq!(bundle["appId"], "com.rdk.wayland-egl-test");
    assert_eq!(bundle["platform"], PLATFORM);

    let id = bundle["id"].as_str().unwrap();
    let download = server.get(&format!("/v1/bundles/{id}/content"), &device).await;
    assert_eq!(download.status(), StatusCode::OK);
    let headers = download.headers().clone();
    let bytes = download.bytes().await.unwrap();
    let sha = sha256_hex(&bytes);
    assert_eq!(bundle["sha256"], sha.as_str());
    assert_eq!(headers["x-bundle-sha256"], sha.as_str());
    assert_eq!(headers["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(bundle["size"].as_u64().unwrap(), bytes.len() as u64);

    // The archive is the bundle: config.json and rootfs/ at its root.
    let archive = dir.path().join("download.tar.gz");
    std::fs::write(&archive, &bytes).unwrap();
    let listing = run(Command::new("tar").arg("-tzf").arg(&archive));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l.trim_start_matches("./") == "config.json"),
        "{listing}"
    );

    // The signature verifies with the published key, over this identity only.
    let key: Value = server.get("/v1/signing-key", &device).await.json().await.unwrap();
    let public = base64_decode(key["publicKey"].as_str().unwrap()).unwrap();
    let identity = SignedIdentity {
        sha256: &sha,
        app_id: "com.rdk.wayland-egl-test",
        app_version: "1.0.0",
        platform: PLATFORM,
        format: "tar.gz",
    };
    let signature = bundle["signature"].as_str().unwrap();
    assert!(verify(&public, &identity, signature));
    assert_eq!(headers["x-bundle-signature"], signature);
    assert!(!verify(
        &public,
        &SignedIdentity {
            platform: "rpi4_reference_dunfell",
            ..identity.clone()
        },
        signature
    ));

    let content = format!("/v1/bundles/{id}/content");
    let ranged = |range: &'static str| {
        server.send(reqwest::Method::GET, &content, &device, move |r| {
            r.header("range", range)
        })
    };
    let first = ranged("bytes=0-99").await;
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        first.headers()["content-range"],
        format!("bytes 0-99/{}", bytes.len()).as_str()
    );
    assert_eq!(first.bytes().await.unwrap(), bytes[..100]);
    let tail = ranged("bytes=-10").await;
    assert_eq!(tail.bytes().await.unwrap(), bytes[bytes.len() - 10..]);
    let middle = server
        .send(reqwest::Method::GET, &content, &device, |r| {
            r.header("range", "bytes=1000-")
        })
        .await;
    assert_eq!(middle.bytes().await.unwrap(), bytes[1000..]);
    let past_end = server
        .send(reqwest::Method::GET, &content, &device, |r| {
            r.header("range", format!("bytes={}-", bytes.len()))
        })
        .await;
    assert_eq!(
        past_end.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );
    assert_eq!(error_code(past_end).await.1, "range_not_satisfiable");
    let cached = server
        .send(reqwest::Method::GET, &content, &device, |r| {
            r.header("if-none-match", format!("\"{sha}\""))
        })
        .await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert!(cached.bytes().await.unwrap().is_empty());
    let weak = server
        .send(reqwest::Method::GET, &content, &device, |r| {
            r.header("if-none-match", format!("W/\"{sha}\""))
        })
        .await;
    assert_eq!(weak.status(), StatusCode::NOT_MODIFIED, "weak comparison");
    // Several ranges, or a box copy that is not this one: the whole (RFC 9110).
    let several = ranged("bytes=0-1,5-6").await;
    assert_eq!(several.status(), StatusCode::OK);
    assert_eq!(several.bytes().await.unwrap(), bytes);
    let stale = server
        .send(reqwest::Method::GET, &content, &device, |r| {
            r.header("range", "bytes=0-99").header("if-range", "\"another\"")
        })
        .await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap(), bytes);
    let same = server
        .send(reqwest::Method::GET, &content, &device, |r| {
            r.header("range", "bytes=0-99").header("if-range", format!("\"{sha}\""))
        })
        .await;
    assert_eq!(same.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(same.bytes().await.unwrap(), bytes[..100]);

    // The same request again is served from the cache: same job, same bundle.
    let again: Value = server
        .post_json("/v1/bundles", &server.admin, &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["bundle"]["id"], id);
    assert_eq!(again["job"]["id"], body["job"]["id"]);

    let record: Value = server
        .get(&format!("/v1/bundles/{id}"), &device)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["sha256"], sha.as_str());
    let listed: Value = server.get("/v1/bundles", &server.admin).await.json().await.unwrap();
    assert_eq!(listed["bundles"].as_array().unwrap().len(), 1);
    let jobs: Value = server.get("/v1/jobs", &server.admin).await.json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    let missing = server.get("/v1/bundles/b-nope/content", &device).await;
    assert_eq!(error_code(missing).await.1, "bundle_not_found");
    let missing_job = server.get("/v1/jobs/job-nope", &device).await;
    assert_eq!(error_code(missing_job).await.1, "job_not_found");

    let metrics = server.get("/metrics", &server.admin).await.text().await.unwrap();
    let served: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bundlegen_bytes_served_total "))
        .unwrap()
        .parse()
        .unwrap();
    // The whole archive, then 100 + 10 + (size - 1000) bytes of ranges, the
    // whole twice more and 100 bytes; the 304s and the 416 send nothing.
    assert_eq!(served, 4 * bytes.len() as u64 - 790);
    assert!(
        metrics.contains("bundlegen_jobs_finished_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("bundlegen_jobs{state=\"succeeded\"} 1"), "{metrics}");
    assert!(
        metrics.contains("route=\"/v1/bundles/{id}/content\",status=\"206\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_concurrent_requests_share_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_platform(dir.path(), &[]).await;
    let request = json!({"image": conformance_image(), "platform": PLATFORM, "options": {"format": "tar.zst"}});
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, token, request) = (server.url("/v1/bundles"), server.admin.clone(), request.clone());
        requests.spawn(async move {
            let response = client()
                .post(url)
                .bearer_auth(token)
                .json(&request)
                .send()
                .await
                .unwrap();
            assert!(response.status() == StatusCode::ACCEPTED || response.status() == StatusCode::OK);
            response.json::<Value>().await.unwrap()["job"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = requests.join_next().await {
        ids.push(id.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let job = wait_for_job(&server.url, &server.admin, &ids[0], Duration::from_secs(300)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    let jobs: Value = server.get("/v1/jobs", &server.admin).await.json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), "");
    let server = server_with_platform(&dir.path().join("server"), &["--plain-http", "--max-attempts", "1"]).await;
    let http = client();
    let post = |body: String| {
        http.post(server.url("/v1/bundles?wait=120"))
            .bearer_auth(&server.admin)
            .header("content-type", "application/json")
            .body(body)
    };
    let incompatible = json!({
        "image": conformance_image(),
        "platform": PLATFORM,
        "appMetadata": {"id": "com.example.app", "type": "application/vnd.rdk-app.dac.native", "version": "1",
                        "graphics": true, "network": {"type": "open"}, "storage": {}, "resources": {"ram": "64M"},
                        "features": ["org.example.NoSuchFeature"]},
    });
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        ("{\"image\": ".into(), StatusCode::BAD_REQUEST, "invalid_json", ""),
        (
            json!({"image": "x", "platform": PLATFORM, "colour": 1}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "colour",
        ),
        (
            json!({"platform": PLATFORM}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "image",
        ),
        (
            json!({"image": conformance_image(), "platform": "rpi9"}).to_string(),
            StatusCode::NOT_FOUND,
            "platform_not_found",
            "rpi9",
        ),
        (
            json!({"image": "oci:/etc:latest", "platform": PLATFORM}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_image_reference",
            "docker://",
        ),
        (
            json!({"image": "docker://", "platform": PLATFORM}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_image_reference",
            "",
        ),
        (
            json!({"image": conformance_image(), "platform": PLATFORM, "options": {"format": "zip"}}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "options.format",
        ),
        (
            json!({"image": conformance_image(), "platform": PLATFORM, "appMetadata": {"id": 5}}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_metadata",
            "id",
        ),
        (
            incompatible.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "incompatible_app",
            "NoSuchFeature",
        ),
        (
            json!({"image": format!("docker://{}/no/such:1", registry.host()), "platform": PLATFORM}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_found",
            "manifest",
        ),
        (
            json!({"image": conformance_image(), "platform": PLATFORM, "pad": "x".repeat(2 << 20)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "",
        ),
    ];
    for (body, status, code, mention) in cases {
        let response = post(body.clone()).send().await.unwrap();
        let (got_status, got_code, message) = error_code(response).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{message} for {}",
            &body[..body.len().min(200)]
        );
        assert!(message.contains(mention), "{message:?} should mention {mention:?}");
    }
    // The image-not-found job is kept, failed, with its code.
    let jobs: Value = server.get("/v1/jobs", &server.admin).await.json().await.unwrap();
    let failed = &jobs["jobs"][0];
    assert_eq!(
        (failed["state"].as_str(), failed["errorCode"].as_str()),
        (Some("failed"), Some("image_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_generate_on_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_platform(dir.path(), &[]).await;
    let device = server.device_token(PLATFORM).await;
    let app = "com.rdk.wayland-egl-test";
    let registered = server
        .put_json(
            &format!("/v1/apps/{app}/versions/1.0.0"),
            &server.admin,
            &json!({"image": conformance_image()}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let devices_may_not = server
        .put_json(
            &format!("/v1/apps/{app}/versions/2.0.0"),
            &device,
            &json!({"image": conformance_image()}),
        )
        .await;
    assert_eq!(devices_may_not.status(), StatusCode::FORBIDDEN);
    let not_readable = server.get(&format!("/v1/apps/{app}/versions/1.0.0"), &device).await;
    assert_eq!(
        not_readable.status(),
        StatusCode::FORBIDDEN,
        "devices do not read app records"
    );
    let stored: Value = server
        .get(&format!("/v1/apps/{app}/versions/1.0.0"), &server.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["image"], conformance_image().as_str());

    let lookup = format!("/v1/lookup?app={app}&version=1.0.0&platform={PLATFORM}");
    let first = server.get(&lookup, &device).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED, "the first lookup starts the job");
    assert!(
        first.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/jobs/job-")
    );
    let job = first.json::<Value>().await.unwrap()["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_for_job(&server.url, &device, &job, Duration::from_secs(300)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let second = server.get(&lookup, &device).await;
    assert_eq!(second.status(), StatusCode::OK);
    let bundle = second.json::<Value>().await.unwrap()["bundle"].clone();
    assert_eq!(
        (bundle["appId"].as_str(), bundle["appVersion"].as_str()),
        (Some(app), Some("1.0.0"))
    );

    // A one-off request with other options does not become the boxes' bundle.
    let one_off = server
        .post_json(
            "/v1/bundles?wait=300",
            &server.admin,
            &json!({"image": conformance_image(), "platform": PLATFORM, "appId": app, "appVersion": "1.0.0",
                    "options": {"format": "tar.zst"}}),
        )
        .await;
    assert_eq!(one_off.status(), StatusCode::OK);
    let looked_up: Value = server.get(&lookup, &device).await.json().await.unwrap();
    assert_eq!(
        looked_up["bundle"]["id"], bundle["id"],
        "still the app version's bundle"
    );
    // Changing the app version's definition makes boxes get a new bundle.
    let redefined = server
        .put_json(
            &format!("/v1/apps/{app}/versions/1.0.0"),
            &server.admin,
            &json!({"image": conformance_image(), "options": {"format": "tar.zst"}}),
        )
        .await;
    assert_eq!(redefined.status(), StatusCode::OK);
    let after = server.get(&format!("{lookup}&wait=300"), &device).await;
    assert_eq!(after.status(), StatusCode::OK);
    let new_bundle = after.json::<Value>().await.unwrap()["bundle"].clone();
    assert_eq!(new_bundle["format"], "tar.zst");
    assert_ne!(new_bundle["id"], bundle["id"]);

    for (query, code) in [
        (
            format!("/v1/lookup?app=nope&version=1&platform={PLATFORM}"),
            "app_not_found",
        ),
        (
            format!("/v1/lookup?app={app}&version=1.0.0&platform=nope"),
            "platform_not_found",
        ),
        (format!("/v1/lookup?app={app}"), "invalid_query"),
    ] {
        let response = server.get(&query, &server.admin).await;
        assert_eq!(error_code(response).await.1, code, "{query}");
    }
    let apps: Value = server.get("/v1/apps", &server.admin).await.json().await.unwrap();
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1);
    let metrics = server.get("/metrics", &server.admin).await.text().await.unwrap();
    // Only the first lookup found no bundle: the redefined app version's
    // inputs are the one-off request's, whose bundle it shares.
    assert!(
        metrics.contains("bundlegen_lookups_total{result=\"hit\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bundlegen_lookups_total{result=\"miss\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_job_resumes_it_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let image = slow_image(&images, 200);
    let mut server = Server::start(&dir.path().join("data"), &["--local-images", images.to_str().unwrap()]);
    put_template(&server).await;
    let started: Value = server
        .post_json(
            "/v1/bundles",
            &server.admin,
            &json!({"image": format!("oci:{}:latest", image.display()), "platform": PLATFORM}),
        )
        .await
        .json()
        .await
        .unwrap();
    let job = started["job"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: Value = server
            .get(&format!("/v1/jobs/{job}"), &server.admin)
            .await
            .json()
            .await
            .unwrap();
        if state["state"] == "running" {
            break;
        }
        assert_eq!(state["state"], "queued", "{state}");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let work = dir.path().join("data/work").join(&job);
    server.restart();
    let done = wait_for_job(&server.url, &server.admin, &job, Duration::from_secs(600)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "the interrupted attempt counts");
    assert!(!work.exists(), "the dead attempt's files are gone");
    let bundle_id = done["bundleId"].as_str().unwrap();
    let bytes = server
        .get(&format!("/v1/bundles/{bundle_id}/content"), &server.admin)
        .await
        .bytes()
        .await
        .unwrap();
    let record: Value = server
        .get(&format!("/v1/bundles/{bundle_id}"), &server.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["sha256"], sha256_hex(&bytes).as_str());
    // Only complete bundles are in the store.
    let stored: Vec<String> = dir_names(&dir.path().join("data/bundles"));
    assert_eq!(stored, [format!("{}.tar.gz", sha256_hex(&bytes))]);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_rustls_and_the_plain_http_policy() {
    let dir = tempfile::tempdir().unwrap();
    let refused = bundlegen()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("a"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(78), "a configuration error");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing to serve plain HTTP"));

    // A CA and a server certificate it signs (webpki refuses a CA
    // certificate used as the server's own).
    let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let (cert, key, csr) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("cert.csr"),
    );
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=test CA"])
        .args(ec)
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=localhost"])
        .args(ec)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let extensions = dir.path().join("ext.cnf");
    std::fs::write(
        &extensions,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&extensions)
        .arg("-out")
        .arg(&cert));
    let server = Server::start(
        &dir.path().join("b"),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trusted = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = trusted
        .get(server.url("/v1/platforms"))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let untrusted = client().get(server.url("/healthz")).send().await;
    assert!(
        untrusted.is_err(),
        "the self-signed certificate is not trusted by default"
    );
    let plain = client()
        .get(server.url("/healthz").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// A registry that answers every request with an error page full of what
/// its network holds; returns its host.
fn leaky_registry() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "INTERNAL-SECRET root:x:0:0:/root";
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    host
}

/// The registries jobs may pull from can be restricted, and what a remote
/// server answers (or where the service keeps its files) never reaches the
/// caller.
#[tokio::test(flavor = "multi_thread")]
async fn registries_are_restricted_and_remote_bodies_stay_out_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let leaky = leaky_registry();
    let server = server_with_platform(&dir.path().join("open"), &["--plain-http", "--max-attempts", "1"]).await;
    let request = json!({"image": format!("docker://{leaky}/internal/thing:1"), "platform": PLATFORM});
    let response = server.post_json("/v1/bundles?wait=120", &server.admin, &request).await;
    let (status, code, message) = error_code(response).await;
    assert!(status.is_client_error() || status.is_server_error(), "{status}");
    assert!(!code.is_empty(), "{message}");
    assert!(
        !message.contains("INTERNAL-SECRET"),
        "the remote body is echoed: {message}"
    );
    let data_dir = dir.path().join("open").display().to_string();
    assert!(!message.contains(&data_dir), "a server path is shown: {message}");

    let restricted = server_with_platform(
        &dir.path().join("restricted"),
        &["--plain-http", "--allow-registry", "registry.example"],
    )
    .await;
    let response = restricted
        .post_json("/v1/bundles?wait=5", &restricted.admin, &request)
        .await;
    let (status, code, message) = error_code(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_image_reference")
    );
    assert!(message.contains("not one this service pulls from"), "{message}");
}

/// A device uploads at a bounded rate, and a platform keeps only the
/// versions its policy says (never losing the current one).
#[tokio::test(flavor = "multi_thread")]
async fn device_uploads_are_rate_limited_and_old_versions_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_platform(dir.path(), &["--probe-uploads-per-hour", "2"]).await;
    let device = server.device_token(PLATFORM).await;
    let at = |path: &str| format!("/v1/platforms/{PLATFORM}{path}");
    let policy = server
        .put_json(
            &at("/policy"),
            &server.admin,
            &json!({"autoAccept": true, "keepVersions": 3}),
        )
        .await;
    assert_eq!(policy.status(), StatusCode::OK);
    let too_many = server
        .put_json(
            &at("/policy"),
            &server.admin,
            &json!({"autoAccept": true, "keepVersions": 0}),
        )
        .await;
    assert_eq!(error_code(too_many).await.1, "invalid_request");
    let report: Value = serde_json::from_str(&probe_report_json()).unwrap();
    let variant = |n: usize| {
        let mut report = report.clone();
        report["libraries"][0]["size"] = json!(n);
        report.to_string()
    };
    for n in 1..=2 {
        let uploaded = server
            .send_body(reqwest::Method::POST, &at("/probe"), &device, variant(n))
            .await;
        assert!(uploaded.status().is_success(), "{}", uploaded.status());
    }
    let refused = server
        .send_body(reqwest::Method::POST, &at("/probe"), &device, variant(3))
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 3000
    );
    // The platform team is not limited; versions beyond three are pruned.
    for n in 4..=6 {
        let uploaded = server
            .send_body(reqwest::Method::POST, &at("/probe"), &server.admin, variant(n))
            .await;
        assert!(uploaded.status().is_success());
    }
    let history: Value = server.get(&at("/versions"), &server.admin).await.json().await.unwrap();
    let versions: Vec<i64> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [5, 6, 7]);
    let current: Value = server.get(&at(""), &server.admin).await.json().await.unwrap();
    assert_eq!(current["version"], 7);
}

/// `bundlegen serve` with `args`, run to its end (it must refuse to start).
fn refused_start(data_dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = bundlegen()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The bootstrap token makes the first admin, and only that: a file others
/// may read, or a weak token, is refused before anything is written, and a
/// revoked bootstrap token does not come back with a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_bootstrap_token_makes_the_first_admin_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bootstrap.token");
    let strong = format!("bgt_{}", "0123456789abcdef".repeat(4));
    let cases = [
        ("readable by others", strong.as_str(), 0o644, "readable by others"),
        ("weak", "password1234", 0o600, "too weak"),
        ("one character", &*"a".repeat(80), 0o600, "too weak"),
    ];
    for (case, token, mode, message) in cases {
        std::fs::write(&token_file, token).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let data = dir.path().join(format!("data-{mode:o}-{}", token.len()));
        let (code, stderr) = refused_start(&data, &["--bootstrap-token", token_file.to_str().unwrap()]);
        assert_eq!(code, Some(78), "{case}: {stderr}");
        assert!(stderr.contains(message), "{case}: {stderr}");
        assert!(!data.exists(), "{case}: a refused start writes nothing");
    }

    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let first_admin = server.admin.clone();
    let second_admin = server.token("admin").await;
    let tokens: Value = server.get("/v1/tokens", &second_admin).await.json().await.unwrap();
    let bootstrap_id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bootstrap")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = server
        .delete(&format!("/v1/tokens/{bootstrap_id}"), &second_admin)
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    server.restart();
    let after = server.get("/v1/tokens", &first_admin).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED, "revoked stays revoked");
    let still = server.get("/v1/tokens", &second_admin).await;
    assert_eq!(still.status(), StatusCode::OK);

    // With an admin in the database, a new bootstrap file makes no admin.
    let replaced = format!("bgt_{}", "fedcba9876543210".repeat(4));
    std::fs::write(data.join("admin.token"), &replaced).unwrap();
    server.restart();
    let unused = server.get("/v1/tokens", &replaced).await;
    assert_eq!(unused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn partial_bundles_a_kill_left_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bundles = dir.path().join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::write(bundles.join(".bundle.partial-abandoned"), b"half a bundle").unwrap();
    std::fs::write(bundles.join("0123.tar.gz"), b"a stored bundle").unwrap();
    // Another process still copying holds its lock.
    let live = bundles.join(".bundle.partial-live");
    std::fs::write(&live, b"being copied").unwrap();
    let _copying =
        nix::fcntl::Flock::lock(std::fs::File::open(&live).unwrap(), nix::fcntl::FlockArg::LockExclusive).unwrap();

    let _server = Server::start(dir.path(), &[]);
    let mut left = dir_names(&bundles);
    left.sort();
    assert_eq!(left, [".bundle.partial-live", "0123.tar.gz"]);
}
