//! The agent killed with SIGKILL at 50 random points while it installs,
//! launches, stops and uninstalls RALF packages, and started again each
//! time: every package is complete (its file is what was listed) or
//! absent, and nothing is mounted for a container that is not running.
//! Launching needs root (CI runs as root): without it, installs only.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bundlegen_protocol::ralf::{ContentKind, ErofsCompression};
use support::packages::*;
use support::*;

const ROUNDS: usize = 50;
const APP: &str = "com.example.app";

async fn agent_on(connection: &zbus::Connection) -> BundleAgent1Proxy<'static> {
    wait_for_name(connection, "org.rdk.dac.BundleAgent", Duration::from_secs(30)).await;
    BundleAgent1Proxy::new(connection).await.unwrap()
}

/// What Dobby runs: container ids.
async fn running(connection: &zbus::Connection) -> Vec<String> {
    let dobby = zbus::Proxy::new(connection, "org.rdk.dobby", "/org/rdk/dobby", "org.rdk.dobby.ctrl1")
        .await
        .unwrap();
    let (_, ids): (Vec<i32>, Vec<String>) = dobby.call("List", &()).await.unwrap();
    ids
}

/// Package versions in `apps/` (hidden staging names aside): their
/// files' sha256.
fn packages_on_disk(root: &Path) -> BTreeMap<(String, String), String> {
    let mut found = BTreeMap::new();
    for app in std::fs::read_dir(root.join("apps")).into_iter().flatten().flatten() {
        for version in std::fs::read_dir(app.path()).unwrap().flatten() {
            let name = version.file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(version.path().join("package.ralf"))
                .unwrap_or_else(|e| panic!("{}: no whole package: {e}", version.path().display()));
            found.insert((app.file_name().into_string().unwrap(), name), sha256(&bytes));
        }
    }
    found
}

/// Installs the agent still has to finish (their requests are kept).
fn pending_installs(root: &Path) -> usize {
    std::fs::read_dir(root.join("downloads"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.path().join("request.json").exists())
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_points_while_packages_install_launch_and_go() {
    let mut random = Random::for_crash_test("package crash test");
    let seed = random.0;
    let dir = tempfile::tempdir().unwrap();
    let signing = Signing::new(&dir.path().join("pki"));
    let identity = signing.identity();
    let mut shell = host_closure("/bin/sh");
    shell.push("/usr/bin/sleep".into());
    let base_files = host_files(&shell);
    let app_files: Files = vec![(
        "/app/run.sh".into(),
        b"#!/bin/sh\necho started >> /data/log\nexec sleep 300\n".to_vec(),
        0o755,
    )];
    let erofs = ContentKind::Erofs {
        compression: ErofsCompression::Lz4,
        legacy: false,
    };
    let base = make_package(
        &image(&dir.path().join("base-image"), &[&base_files], "/bin/sh"),
        &package_config("os.base", "1.0.0", "base", "bin/sh"),
        &dir.path().join("base.ralf"),
        erofs,
        &[],
        Some(&identity),
    )
    .await;
    let app = make_package(
        &image(&dir.path().join("app-image"), &[&base_files, &app_files], "/app/run.sh"),
        &package_config(APP, "1.0.0", "application", "app/run.sh"),
        &dir.path().join("app.ralf"),
        erofs,
        std::slice::from_ref(&base),
        Some(&identity),
    )
    .await;

    let bus = Bus::start();
    let _dobby = dobby_double::serve(&bus.address, dobby_double::Dobby::new(true))
        .await
        .unwrap();
    let client = bus.connect().await;
    let files = FileServer::start();
    files.throttle(Some(4 << 20));
    let served: HashMap<&str, (String, String)> = [("os.base", &base), (APP, &app)]
        .into_iter()
        .map(|(id, path)| {
            let bytes = std::fs::read(path).unwrap();
            let sha = sha256(&bytes);
            (id, (files.add(&format!("{id}.ralf"), bytes), sha))
        })
        .collect();
    let root = dir.path().join("dac");
    let run = dir.path().join("run");
    let config_file = dir.path().join("agent.toml");
    std::fs::write(
        &config_file,
        format!(
            "storage_root = \"{}\"\ndbus_address = \"{}\"\nprobe = false\n\n[packages]\nca_roots = \"{}\"\nverity = \"userspace\"\nruntime_dir = \"{}\"\nbase_spec = \"{}\"\n",
            root.display(),
            bus.address,
            signing.ca_roots(&dir.path().join("certs")).display(),
            run.display(),
            crun_base_spec(dir.path()).display(),
        ),
    )
    .unwrap();
    let launching = is_root();
    if !launching {
        eprintln!("launches skipped: mounting needs root (CI runs as root)");
    }

    let mut process = AgentProcess::start(&config_file);
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 1..=ROUNDS {
        let agent = agent_on(&client).await;
        let installed: Vec<String> = agent.list("").await.unwrap().into_iter().map(|v| v.0).collect();
        let is_running = running(&client).await.iter().any(|id| id == APP);
        let action = match random.below(5) {
            _ if !installed.iter().any(|a| a == "os.base") => "install base",
            0 | 1 if !installed.iter().any(|a| a == APP) => "install app",
            2 | 3 if launching && installed.iter().any(|a| a == APP) && !is_running => "launch",
            _ if is_running => "stop",
            4 if installed.iter().any(|a| a == APP) => "uninstall app",
            _ => "reinstall base",
        };
        *actions.entry(action).or_default() += 1;
        let (id, reinstall) = match action {
            "install base" => ("os.base", false),
            "reinstall base" => ("os.base", true),
            _ => (APP, false),
        };
        let (url, sha) = served[id].clone();
        let call = {
            let agent = agent.clone();
            tokio::spawn(async move {
                match action {
                    "launch" => drop(agent.launch(APP, "").await),
                    "stop" => drop(agent.stop(APP, true).await),
                    "uninstall app" => drop(agent.uninstall(APP, "1.0.0", "full").await),
                    _ => {
                        let options = HashMap::from([("reinstall", zbus::Variant::from(reinstall))]);
                        drop(agent.install(id, "1.0.0", &url, &sha, options).await);
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(random.below(400))).await;
        process.kill();
        call.abort();
        process = AgentProcess::start(&config_file);
        let agent = agent_on(&client).await;
        // An interrupted install is resumed at the start: let it end.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pending_installs(&root) > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: a resumed install did not end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // What is in place is whole and what was served; what is listed is in place.
        let on_disk = packages_on_disk(&root);
        for ((id, _), sha) in &on_disk {
            assert_eq!(
                *sha,
                served[id.as_str()].1,
                "round {round} ({action}, seed {seed}): {id} is whole"
            );
        }
        let listed: BTreeMap<(String, String), String> = agent
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|(app, version, _, sha, _, _)| ((app, version), sha))
            .collect();
        assert_eq!(listed, on_disk, "round {round} ({action}, seed {seed})");
        // Mounts only for a container that runs.
        let running_now = running(&client).await;
        for (app, _) in stb_agent::ralf::instance::all(&run) {
            let mounted = mounts_under(&run.join("instances").join(&app));
            assert!(
                mounted.is_empty() || running_now.contains(&app),
                "round {round} ({action}, seed {seed}): {app} is mounted but not running: {mounted:?}"
            );
        }
        if running_now.is_empty() {
            assert!(mounts_under(&run).is_empty(), "round {round} ({action})");
            let deadline = Instant::now() + Duration::from_secs(5);
            // A detached loop device goes once the kernel has released it.
            while !loops_under(&root).is_empty() {
                assert!(Instant::now() < deadline, "round {round}: loop devices left");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!("actions: {actions:?}");

    // Whatever runs stops and goes cleanly.
    let agent = agent_on(&client).await;
    if running(&client).await.iter().any(|id| id == APP) {
        agent.stop(APP, true).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mounts_under(&run).is_empty() {
            assert!(Instant::now() < deadline, "the stopped instance was not taken down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(mounts_under(&run).is_empty());
}
