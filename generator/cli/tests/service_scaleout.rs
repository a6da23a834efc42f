//! The service scaled out: one `bundlegen serve` and two `bundlegen worker`
//! processes sharing a real PostgreSQL, RabbitMQ and `docker-registry`
//! (bundles pushed there as OCI artifacts); a worker killed mid-job; and
//! BundleGen's own RabbitMQ protocol served by a worker.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::service::{Backends, Server, Worker, client, slow_image, wait_for_job};
use support::*;

const PLATFORM: &str = "rpi3_reference_vc4_dunfell";

fn template_text() -> String {
    std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{PLATFORM}.json"))).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    bundlegen_protocol::digest::Sha256Digest::of(data).hex()
}

/// The options every process of one deployment shares (`root` holds the
/// deployment's signing key).
fn shared_args(backends: &Backends, registry: &Registry, root: &Path) -> Vec<String> {
    vec![
        "--database".into(),
        backends.database.clone(),
        "--queue".into(),
        backends.queue.clone(),
        "--bundle-registry".into(),
        format!("{}/bundles", registry.host()),
        "--plain-http".into(),
        "--signing-key".into(),
        root.join("signing-key.p8").display().to_string(),
    ]
}

/// A worker of the deployment, with its own data directory.
fn worker(backends: &Backends, registry: &Registry, root: &Path, name: &str, extra: &[String]) -> Worker {
    let mut args = shared_args(backends, registry, root);
    args.extend(["--data-dir".into(), root.join(name).display().to_string()]);
    args.extend_from_slice(extra);
    Worker::start(&args)
}

/// An API process of the deployment.
fn api(backends: &Backends, registry: &Registry, root: &Path, name: &str) -> Server {
    let args = shared_args(backends, registry, root);
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    if let Ok(token) = std::fs::read(root.join("admin.token")) {
        // The service refuses a bootstrap file others may read.
        bundlegen_protocol::fsutil::write_file_atomic(&dir.join("admin.token"), &token, 0o600).unwrap();
    }
    let server = Server::start(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::copy(dir.join("admin.token"), root.join("admin.token")).unwrap();
    server
}

fn push_conformance_image(registry: &Registry) -> String {
    let image = format!("{}/dac/wayland-egl-test:1.0.0", registry.host());
    skopeo_push(
        &conformance().join("bundlegen/images/dac-image-wayland-egl-test-oci"),
        &format!("docker://{image}"),
        &["--dest-tls-verify=false"],
    );
    format!("docker://{image}")
}

async fn put_platform(server: &Server) {
    let response = server
        .send_body(
            reqwest::Method::PUT,
            &format!("/v1/platforms/{PLATFORM}"),
            &server.admin,
            template_text(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn get_json(server: &Server, path: &str) -> Value {
    server.get(path, &server.admin).await.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_and_two_workers_share_postgres_rabbitmq_and_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::create().await;
    let registry = Registry::start(&dir.path().join("registry"), "");
    let image = push_conformance_image(&registry);
    let server = api(&backends, &registry, dir.path(), "api");
    // Each worker serves its own metrics (it has no API).
    let metrics_ports = [free_port(), free_port()];
    let _workers: Vec<Worker> = ["w1", "w2"]
        .iter()
        .zip(metrics_ports)
        .map(|(name, port)| {
            let metrics = ["--metrics-listen".to_string(), format!("127.0.0.1:{port}")];
            worker(&backends, &registry, dir.path(), name, &metrics)
        })
        .collect();
    put_platform(&server).await;

    // Four different requests, submitted at once.
    let variants = [
        json!({}),
        json!({"format": "tar.zst"}),
        json!({"format": "ipk"}),
        json!({"libMatchMode": "image"}),
    ];
    let mut jobs = Vec::new();
    for options in &variants {
        let response = server
            .post_json(
                "/v1/bundles",
                &server.admin,
                &json!({"image": image, "platform": PLATFORM, "appVersion": "1.0.0", "options": options}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        jobs.push(
            response.json::<Value>().await.unwrap()["job"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut workers = std::collections::BTreeSet::new();
    let mut bundles = Vec::new();
    for job in &jobs {
        let done = wait_for_job(&server.url, &server.admin, job, Duration::from_secs(600)).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        workers.insert(done["worker"].as_str().unwrap().to_string());
        bundles.push(done["bundleId"].as_str().unwrap().to_string());
    }
    assert_eq!(workers.len(), 2, "both workers took jobs: {workers:?}");
    // Jobs are counted where they ran; the jobs by state come from the
    // shared database, the same in every process.
    let mut finished_here = 0;
    for port in metrics_ports {
        let text = client()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("bundlegen_jobs{state=\"succeeded\"} 4"), "{text}");
        finished_here += text
            .lines()
            .find_map(|l| l.strip_prefix("bundlegen_jobs_finished_total{outcome=\"succeeded\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert_eq!(finished_here, 4, "the workers counted the four jobs between them");

    // Downloads stream from the registry, whole and in ranges.
    for id in &bundles {
        let record = get_json(&server, &format!("/v1/bundles/{id}")).await;
        assert_eq!(
            record["registry"]["digest"],
            format!("sha256:{}", record["sha256"].as_str().unwrap()).as_str()
        );
        let bytes = server
            .get(&format!("/v1/bundles/{id}/content"), &server.admin)
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(record["sha256"], sha256_hex(&bytes).as_str());
        let part = server
            .send(
                reqwest::Method::GET,
                &format!("/v1/bundles/{id}/content"),
                &server.admin,
                |r| r.header("range", "bytes=10-19"),
            )
            .await;
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.bytes().await.unwrap(), bytes[10..20]);

        // Boxes (or a CDN) can also fetch the artifact from the registry itself.
        let manifest: Value = client()
            .get(format!("http://{}/v2/bundles/manifests/{id}", registry.host()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(manifest["artifactType"], "application/vnd.rdk.bundle.v1");
        assert_eq!(manifest["layers"][0]["digest"], record["registry"]["digest"]);
        assert_eq!(manifest["annotations"]["org.rdk.bundle.signature"], record["signature"]);
        let blob = client()
            .get(format!(
                "http://{}/v2/bundles/blobs/{}",
                registry.host(),
                record["registry"]["digest"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(blob, bytes);
    }

    // The records are in PostgreSQL: a second API process sees them all.
    let second = api(&backends, &registry, dir.path(), "api2");
    assert_eq!(second.admin, server.admin);
    let listed = get_json(&second, "/v1/bundles").await;
    assert_eq!(listed["bundles"].as_array().unwrap().len(), 4);
    // An identical request on the other API process is the same job.
    let again: Value = second
        .post_json(
            "/v1/bundles",
            &second.admin,
            &json!({"image": image, "platform": PLATFORM, "appVersion": "1.0.0", "options": variants[1]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["job"]["id"], jobs[1].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_is_replaced_and_no_partial_bundle_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::create().await;
    let registry = Registry::start(&dir.path().join("registry"), "");
    let layout = slow_image(&dir.path().join("images"), 200);
    let image = format!("{}/slow/app:1", registry.host());
    skopeo_push(&layout, &format!("docker://{image}"), &["--dest-tls-verify=false"]);
    let server = api(&backends, &registry, dir.path(), "api");
    let mut workers: Vec<Worker> = ["w1", "w2"]
        .iter()
        .map(|name| worker(&backends, &registry, dir.path(), name, &[]))
        .collect();
    put_platform(&server).await;

    let response: Value = server
        .post_json(
            "/v1/bundles",
            &server.admin,
            &json!({"image": format!("docker://{image}"), "platform": PLATFORM}),
        )
        .await
        .json()
        .await
        .unwrap();
    let job = response["job"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let first_worker = loop {
        let state = get_json(&server, &format!("/v1/jobs/{job}")).await;
        if state["state"] == "running" && state["stage"] != "starting" {
            break state["worker"].as_str().unwrap().to_string();
        }
        assert!(matches!(state["state"].as_str(), Some("queued" | "running")), "{state}");
        assert!(Instant::now() < deadline, "the job never ran: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim = workers
        .iter()
        .position(|w| first_worker.contains(&format!("-{}-", w.pid())))
        .expect("the job's worker is one of ours");
    workers[victim].kill();
    // Nothing is served while the job is being redone.
    let bundles = get_json(&server, "/v1/bundles").await;
    assert_eq!(bundles["bundles"], json!([]));

    let done = wait_for_job(&server.url, &server.admin, &job, Duration::from_secs(600)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_ne!(
        done["worker"].as_str().unwrap(),
        first_worker,
        "the other worker finished it"
    );
    let id = done["bundleId"].as_str().unwrap();
    let record = get_json(&server, &format!("/v1/bundles/{id}")).await;
    let bytes = server
        .get(&format!("/v1/bundles/{id}/content"), &server.admin)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(record["sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(record["size"].as_u64().unwrap(), bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn bundlegens_rabbitmq_protocol_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::create().await;
    let registry = Registry::start(&dir.path().join("registry"), "");
    let image = push_conformance_image(&registry);
    let store = dir.path().join("bundlestore");
    let _worker = worker(
        &backends,
        &registry,
        dir.path(),
        "w1",
        &[
            "--bundlegen-queue".into(),
            "--template-dir".into(),
            conformance().join("bundlegen/templates").display().to_string(),
            "--bundle-store-dir".into(),
            store.display().to_string(),
        ],
    );

    // BundleGen's test client: a request on bundlegen-requests with a reply queue.
    let connection = Connection::connect(&backends.queue, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let declare = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("bundlegen-requests".into(), declare, FieldTable::default())
        .await
        .unwrap();
    let replies = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            replies.name().clone(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let send = |request: Value| {
        let channel = channel.clone();
        let reply_to = replies.name().clone();
        async move {
            let payload = rmp_serde::to_vec_named(&request).unwrap();
            channel
                .basic_publish(
                    "".into(),
                    "bundlegen-requests".into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_reply_to(reply_to).with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    async fn receive(consumer: &mut lapin::Consumer) -> Value {
        let delivery = tokio::time::timeout(Duration::from_secs(300), consumer.next())
            .await
            .expect("a reply in time")
            .unwrap()
            .unwrap();
        rmp_serde::from_slice::<Value>(&delivery.data).unwrap()
    }

    send(json!({
        "uuid": "req-1",
        "platform": PLATFORM,
        "image_url": image,
        "app_metadata": null,
        "lib_match_mode": "normal",
        "output_filename": "wayland-rpi3",
        "searchpath": "/ignored",
        "outputdir": null,
        "createmountpoints": false,
        "app_id": null,
    }))
    .await;
    let reply = receive(&mut consumer).await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["uuid"], "req-1");
    let path = store.join("wayland-rpi3.tar.gz");
    assert_eq!(reply["bundle_path"], path.display().to_string().as_str());
    let listing = run(std::process::Command::new("tar").arg("-tzf").arg(&path));
    assert!(String::from_utf8_lossy(&listing.stdout).contains("config.json"));

    send(json!({"uuid": "req-2", "platform": "no_such_platform", "image_url": image})).await;
    let refused = receive(&mut consumer).await;
    assert_eq!(
        (refused["success"].as_bool(), refused["uuid"].as_str()),
        (Some(false), Some("req-2"))
    );
    assert!(refused.get("bundle_path").is_none_or(Value::is_null));
}

/// Moving an embedded deployment to PostgreSQL: export, import, and the
/// same service answers with the same tokens, versions and key.
#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_deployment_moves_to_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = dir.path().join("embedded");
    let mut server = Server::start(&embedded, &[]);
    put_platform(&server).await;
    let libs =
        std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{PLATFORM}_libs.json"))).unwrap();
    let put = server
        .send_body(
            reqwest::Method::PUT,
            &format!("/v1/platforms/{PLATFORM}/libs"),
            &server.admin,
            libs,
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    let app = json!({"image": "docker://registry.example/app:1"});
    let registered = server
        .put_json("/v1/apps/com.example.moved/versions/1.0", &server.admin, &app)
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let team = server.token("platform-team").await;
    let device = server.device_token(PLATFORM).await;
    let tokens = get_json(&server, "/v1/tokens").await;
    let device_id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "device")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server
            .delete(&format!("/v1/tokens/{device_id}"), &server.admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let key_before = get_json(&server, "/v1/signing-key").await["publicKey"].clone();
    server.kill();

    let export = dir.path().join("deployment.json");
    let exported = run(bundlegen()
        .args(["service", "export", "--data-dir"])
        .arg(&embedded)
        .arg("--out")
        .arg(&export));
    assert!(String::from_utf8_lossy(&exported.stdout).contains("1 platforms, 1 apps, 3 tokens, the signing key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&export).unwrap().permissions().mode() & 0o777, 0o600);

    let backends = Backends::create().await;
    let moved = dir.path().join("moved");
    let import = |data: &Path| {
        bundlegen()
            .args(["service", "import", "--database", &backends.database, "--data-dir"])
            .arg(data)
            .arg(&export)
            .output()
            .unwrap()
    };
    let imported = import(&moved);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        String::from_utf8_lossy(&imported.stdout)
            .contains("imported 1 platforms (2 versions), 1 apps, 3 tokens; the signing key written")
    );
    // Into a database that holds records already: refused, as a configuration.
    let again = import(&dir.path().join("elsewhere"));
    assert_eq!(again.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&again.stderr).contains("import into a new one"));

    let server = Server::start(&moved, &["--database", &backends.database]);
    assert_eq!(server.admin, "", "no new admin token: the moved one serves");
    let admin = std::fs::read_to_string(embedded.join("admin.token")).unwrap();
    let admin = admin.trim();
    assert_eq!(
        server
            .get("/v1/signing-key", admin)
            .await
            .json::<Value>()
            .await
            .unwrap()["publicKey"],
        key_before
    );
    let versions: Value = server
        .get(&format!("/v1/platforms/{PLATFORM}/versions"), &team)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let app: Value = server
        .get("/v1/apps/com.example.moved/versions/1.0", &team)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(app["image"], "docker://registry.example/app:1");
    assert_eq!(
        server.get(&format!("/v1/platforms/{PLATFORM}"), &device).await.status(),
        StatusCode::UNAUTHORIZED,
        "revoked stays revoked"
    );
}
