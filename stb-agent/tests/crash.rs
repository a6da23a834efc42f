//! The agent killed with SIGKILL at random points during 50 installs, and
//! started again each time: every bundle is complete or absent, what the
//! agent lists is what is on disk, interrupted downloads resume with ranges,
//! locks survive, and every requested install ends up done.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const APPS: usize = 50;
const PER_ROUND: usize = 5;
const PAYLOAD: usize = 2 << 20;

fn app_name(index: usize) -> String {
    format!("com.example.app{index:02}")
}

/// Bundles in `apps/`: each must be whole (nothing half-unpacked is ever
/// at its final path). Returns the (app, version) pairs found.
fn bundles_on_disk(root: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let Ok(apps) = std::fs::read_dir(root.join("apps")) else {
        return found;
    };
    for app in apps.flatten() {
        let name = app.file_name().into_string().unwrap();
        for version in std::fs::read_dir(app.path()).unwrap().flatten() {
            let version_name = version.file_name().into_string().unwrap();
            if version_name.starts_with('.') {
                continue; // staging, removed at the next start
            }
            let bundle = version.path();
            assert!(
                bundle.join("config.json").is_file(),
                "{}: no config.json",
                bundle.display()
            );
            assert_eq!(
                std::fs::metadata(bundle.join("rootfs/app/payload"))
                    .map(|m| m.len())
                    .ok(),
                Some(PAYLOAD as u64),
                "{}: the payload is whole",
                bundle.display()
            );
            found.insert((name.clone(), version_name));
        }
    }
    found
}

/// Staging and removal directories (hidden names) under `apps/`.
fn hidden_dirs(root: &Path) -> BTreeSet<std::path::PathBuf> {
    let mut found = BTreeSet::new();
    for app in std::fs::read_dir(root.join("apps")).into_iter().flatten().flatten() {
        for version in std::fs::read_dir(app.path()).into_iter().flatten().flatten() {
            if version.file_name().to_string_lossy().starts_with('.') {
                found.insert(version.path());
            }
        }
    }
    found
}

async fn listed(agent: &BundleAgent1Proxy<'_>) -> BTreeSet<(String, String)> {
    agent
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|(app, version, ..)| (app, version))
        .collect()
}

async fn agent_on(connection: &zbus::Connection) -> BundleAgent1Proxy<'static> {
    wait_for_name(connection, "org.rdk.dac.BundleAgent", Duration::from_secs(30)).await;
    BundleAgent1Proxy::new(connection).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_points_during_50_installs() {
    let mut random = Random::for_crash_test("crash test");
    let seed = random.0;

    let bus = Bus::start();
    let _dobby = dobby_double::serve(&bus.address, dobby_double::Dobby::new(false))
        .await
        .unwrap();
    let client = bus.connect().await;
    let files = FileServer::start();
    files.throttle(Some(8 << 20));
    let mut archives = HashMap::new();
    for index in 0..APPS {
        let app = app_name(index);
        let archive = bundle_archive(&app, PAYLOAD);
        let sha = sha256(&archive);
        archives.insert(app.clone(), (files.add(&format!("{app}.tar.gz"), archive), sha));
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dac");
    let config_file = dir.path().join("agent.toml");
    std::fs::write(
        &config_file,
        format!(
            "storage_root = \"{}\"\ndbus_address = \"{}\"\nprobe = false\nallow_unsigned = true\nmax_concurrent_operations = 2\n",
            root.display(),
            bus.address
        ),
    )
    .unwrap();

    let mut process = AgentProcess::start(&config_file);
    let mut requested = 0;
    let mut rounds = 0;
    while requested < APPS {
        let agent = agent_on(&client).await;
        for index in requested..(requested + PER_ROUND).min(APPS) {
            let app = app_name(index);
            let (url, sha) = &archives[&app];
            agent.install(&app, "1.0", url, sha, HashMap::new()).await.unwrap();
        }
        requested = (requested + PER_ROUND).min(APPS);
        tokio::time::sleep(Duration::from_millis(50 + random.below(700))).await;
        process.kill();
        rounds += 1;
        // Between a crash and the next start: whatever is in place is whole.
        let complete_at_crash = bundles_on_disk(&root);
        let left_at_crash = hidden_dirs(&root);
        process = AgentProcess::start(&config_file);
        // Once started (the store is recovered before the name is owned):
        // the crash's leftovers are gone, every bundle complete at the crash
        // is installed, and every installed version has its bundle.
        let agent = agent_on(&client).await;
        let listed = listed(&agent).await;
        let hidden_now = hidden_dirs(&root);
        let still_left: Vec<_> = left_at_crash.intersection(&hidden_now).collect();
        assert!(still_left.is_empty(), "round {rounds}: leftovers: {still_left:?}");
        assert!(
            complete_at_crash.is_subset(&listed),
            "round {rounds}: complete at the crash, not installed after: {:?}",
            complete_at_crash.difference(&listed).collect::<Vec<_>>()
        );
        let on_disk = bundles_on_disk(&root);
        assert!(
            listed.is_subset(&on_disk),
            "round {rounds}: installed without a bundle: {:?}",
            listed.difference(&on_disk).collect::<Vec<_>>()
        );
    }

    // The last start resumes what is left; everything requested gets installed.
    let agent = agent_on(&client).await;
    let deadline = Instant::now() + Duration::from_secs(240);
    while listed(&agent).await.len() < APPS {
        assert!(
            Instant::now() < deadline,
            "installed {} of {APPS} (seed {seed})",
            listed(&agent).await.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected: BTreeSet<_> = (0..APPS).map(|i| (app_name(i), "1.0".to_string())).collect();
    assert_eq!(listed(&agent).await, expected);
    assert_eq!(bundles_on_disk(&root), expected);
    assert!(hidden_dirs(&root).is_empty(), "no staging left once all is done");
    for (app, _, _, sha, _, _) in agent.list("").await.unwrap() {
        assert_eq!(sha, archives[&app].1, "{app}");
    }
    let resumed: Vec<u64> = files.range_starts().into_iter().filter(|start| *start > 0).collect();
    assert!(
        !resumed.is_empty(),
        "some download was resumed with a Range request (seed {seed})"
    );
    assert!(
        std::fs::read_dir(root.join("downloads")).unwrap().next().is_none(),
        "no download left behind"
    );

    // Locks are kept across a crash.
    let first = app_name(0);
    agent.lock(&first, "1.0", "playing", "player").await.unwrap();
    process.kill();
    process = AgentProcess::start(&config_file);
    let agent = agent_on(&client).await;
    assert_eq!(agent.get_lock_info(&first, "1.0").await.unwrap().0, 1);
    assert_eq!(dbus_error(agent.uninstall(&first, "1.0", "full").await).0, "AppLocked");

    // SIGTERM: a clean exit.
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    assert!(process.wait().success(), "exit status 0 on SIGTERM");
    eprintln!("{rounds} crashes, {} resumed downloads", resumed.len());
}

#[test]
fn a_bad_configuration_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("agent.toml");
    std::fs::write(&config_file, "storage_root = \"relative/path\"\n").unwrap();
    let status = AgentProcess::start(&config_file).wait();
    assert_eq!(status.code(), Some(78), "EX_CONFIG, so systemd does not restart it");
    std::fs::write(&config_file, "quota = \"a lot\"\n").unwrap();
    let status = AgentProcess::start(&config_file).wait();
    assert_eq!(status.code(), Some(78));
}
