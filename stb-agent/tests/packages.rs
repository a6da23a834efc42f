//! RALF packages on a box, end to end: the generator service builds a base
//! (this machine's shell), a runtime (zstd) and an app (a script and a
//! private library) layered on them, signed by a test CA; the agent installs
//! the app from the service, which hands it the other two; the launch
//! loop-mounts the EROFS contents (checked against their root hashes),
//! overlays them and runs the app with real crun through the Dobby double;
//! stop and uninstall leave no mount, loop device or file. Mounting needs
//! root (CI runs as root): without it the launch part is skipped.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bundlegen_fixtures::conformance;
use futures_util::StreamExt;
use serde_json::json;
use support::packages::*;
use support::*;

const PLATFORM: &str = "vagrant";
const APP: &str = "com.example.app";

/// The three images, each built on the one below.
fn images(dir: &Path) -> (String, String, String) {
    let mut base_paths = host_closure("/bin/sh");
    base_paths.extend(["/usr/bin/sleep".to_string(), "/usr/bin/cat".to_string()]);
    let base = host_files(&base_paths);
    let tool = host_closure("/usr/bin/zstd");
    let runtime = host_files(&tool.into_iter().filter(|p| !base_paths.contains(p)).collect::<Vec<_>>());
    let private = std::fs::canonicalize("/lib/x86_64-linux-gnu/libzstd.so.1").unwrap();
    let app: Files = vec![
        (
            "/app/run.sh".into(),
            b"#!/bin/sh\necho app says hello > /data/out\nLD_LIBRARY_PATH=/app/lib zstd --version >> /data/out\nexec sleep 60\n"
                .to_vec(),
            0o755,
        ),
        (
            "/app/lib/libzstd.so.1".into(),
            std::fs::read(private).unwrap(),
            0o644,
        ),
    ];
    (
        image(&dir.join("base"), &[&base], "/bin/sh"),
        image(&dir.join("runtime"), &[&base, &runtime], "/usr/bin/zstd"),
        image(&dir.join("app"), &[&base, &runtime, &app], "/app/run.sh"),
    )
}

fn metadata(id: &str) -> serde_json::Value {
    json!({"id": id, "type": "application/vnd.rdk-app.dac.native", "graphics": false, "network": {"type": "open"}, "storage": {}, "resources": {"ram": "64M"}})
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_and_what_it_is_layered_on_install_from_the_service_run_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let (base, runtime, app) = images(&dir.path().join("images"));
    let files = signing.files.clone();
    let images_dir = dir.path().join("images");
    let (url, admin) = service(&dir.path().join("service"), move |config| {
        config.local_images = Some(images_dir);
        config.package_signing = Some(files);
    })
    .await;
    let template = std::fs::read_to_string(conformance().join(format!("bundlegen/templates/{PLATFORM}.json"))).unwrap();
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{url}/v1/platforms/{PLATFORM}"),
        &admin,
        Some(template),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for (id, version, image, options) in [
        (
            "os.base",
            "1.0.0",
            &base,
            json!({"format": "ralf", "packageType": "base", "content": "erofs.lz4"}),
        ),
        (
            "zstd.runtime",
            "3.0.1",
            &runtime,
            json!({"format": "ralf", "packageType": "runtime", "content": "erofs.lz4", "dependsOn": ["os.base@1.0.0"]}),
        ),
        (
            APP,
            "1.0.0",
            &app,
            json!({"format": "ralf", "content": "erofs.lz4", "dependsOn": ["zstd.runtime@3.0.1"]}),
        ),
    ] {
        let body = json!({"image": image, "metadata": metadata(id), "options": options});
        let (status, answer) = call(
            reqwest::Method::PUT,
            format!("{url}/v1/apps/{id}/versions/{version}"),
            &admin,
            Some(body.to_string()),
        )
        .await;
        assert_eq!(status, 201, "{id}: {answer}");
    }
    let token_file = dir.path().join("device.token");
    std::fs::write(&token_file, device_token(&url, &admin, "box", PLATFORM).await).unwrap();

    let root = dir.path().join("dac");
    let ca_roots = signing.ca_roots(&dir.path().join("certs"));
    let base_spec = crun_base_spec(dir.path());
    let setup = TestBox::start_at(&root, true, |c| {
        c.allow_unsigned = false;
        c.server = Some(url.clone());
        c.platform = Some(PLATFORM.into());
        c.token_file = Some(token_file);
        c.packages.ca_roots = ca_roots;
        c.packages.verity = stb_agent::config::VerityMode::Userspace;
        c.packages.base_spec = Some(base_spec);
    })
    .await;
    let agent = setup.proxy().await;
    let handle = agent
        .install(APP, "1.0.0", "service", "", HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Success", "{error}");
    let packages = agent.list_packages("").await.unwrap();
    let mut names: Vec<(String, String, String)> = packages
        .iter()
        .map(|p| (p.0.clone(), p.1.clone(), p.2.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (APP.into(), "1.0.0".into(), "application".into()),
            ("os.base".into(), "1.0.0".into(), "base".into()),
            ("zstd.runtime".into(), "3.0.1".into(), "runtime".into()),
        ]
    );
    let app_row = packages.iter().find(|p| p.0 == APP).unwrap();
    assert_eq!(app_row.4.get("zstd.runtime").map(String::as_str), Some("3.0.1"));
    assert!(app_row.6.contains("packager"), "the signer: {}", app_row.6);
    let base_row = packages.iter().find(|p| p.0 == "os.base").unwrap();
    let mut dependants = base_row.5.clone();
    dependants.sort();
    assert_eq!(dependants, [format!("{APP} 1.0.0"), "zstd.runtime 3.0.1".to_string()]);
    assert_eq!(
        dbus_error(agent.uninstall("os.base", "1.0.0", "full").await).0,
        "Dependency",
        "what others are layered on stays"
    );

    let run = root.join("run");
    if is_root() {
        let mut stopped = agent.receive_app_stopped().await.unwrap();
        let descriptor = agent.launch(APP, "").await.unwrap();
        assert!(descriptor > 0);
        let out = root.join("data").join(APP).join("out");
        wait_until("the app wrote its output", Duration::from_secs(30), || {
            std::fs::read_to_string(&out).is_ok_and(|t| t.contains("Zstandard"))
        })
        .await;
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("app says hello\n"), "{text}");
        assert_eq!(loops_under(&root).len(), 3, "one loop device per layer");
        assert!(mounts_under(&run).len() >= 5, "{:?}", mounts_under(&run));
        let info = agent.get_package_info(APP, "1.0.0").await.unwrap();
        assert_eq!(
            String::try_from(info["verity"].try_clone().unwrap()).unwrap(),
            "userspace"
        );
        assert!(bool::try_from(info["verified"].try_clone().unwrap()).unwrap());

        agent.stop(APP, false).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), stopped.next())
            .await
            .expect("AppStopped")
            .unwrap();
        wait_until("the instance was taken down", Duration::from_secs(10), || {
            mounts_under(&run).is_empty() && loops_under(&root).is_empty()
        })
        .await;
    } else {
        eprintln!("skipped the launch: mounting needs root (CI runs as root)");
    }

    for (id, version) in [(APP, "1.0.0"), ("zstd.runtime", "3.0.1"), ("os.base", "1.0.0")] {
        let handle = agent.uninstall(id, version, "full").await.unwrap();
        let (status, error) = finished(&agent, &handle).await;
        assert_eq!(status, "Success", "{id}: {error}");
    }
    assert!(agent.list("").await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(root.join("apps")).unwrap().count(), 0);
    assert!(mounts_under(&run).is_empty());
    assert!(loops_under(&root).is_empty());
}
