//! The agent's D-Bus API on a private system bus, against the Dobby test
//! double: every method, its errors, the signals, concurrency, cancelling,
//! retries, upgrades and locks.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use support::*;
use zbus::Variant;

const MIB: usize = 1 << 20;

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

async fn install_ok(agent: &BundleAgent1Proxy<'_>, app: &str, version: &str, url: &str, sha: &str) {
    let handle = agent.install(app, version, url, sha, no_options()).await.unwrap();
    let (status, error) = finished(agent, &handle).await;
    assert_eq!(status, "Success", "{app} {version}: {error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_with_its_results_errors_and_signals() {
    let setup = TestBox::start(|c| c.quota = bundlegen_protocol::config::size::Size(100 << 20)).await;
    let agent = setup.proxy().await;
    let app = "com.example.one";
    let (url, sha) = setup.serve("one-1.tar.gz", app, MIB);

    // Introspectable, with the interface, its methods and signals.
    let introspection = zbus::fdo::IntrospectableProxy::builder(&setup.client)
        .destination("org.rdk.dac.BundleAgent")
        .path("/org/rdk/dac/BundleAgent")
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    for name in [
        "org.rdk.dac.BundleAgent1",
        "\"Install\"",
        "\"GetLockInfo\"",
        "\"OperationStatus\"",
        "\"Progress\"",
    ] {
        assert!(introspection.contains(name), "{name} in {introspection}");
    }

    // Install, with its signals.
    let mut statuses = agent.receive_operation_status().await.unwrap();
    let mut progress = agent.receive_progress().await.unwrap();
    let handle = agent.install(app, "1.0.0", &url, &sha, no_options()).await.unwrap();
    assert!(handle.starts_with("op-"), "{handle}");
    assert_eq!(finished(&agent, &handle).await.0, "Success");
    let mut seen = Vec::new();
    while !seen.contains(&"Success".to_string()) {
        let signal = tokio::time::timeout(Duration::from_secs(10), statuses.next())
            .await
            .expect("an OperationStatus signal")
            .unwrap();
        let args = signal.args().unwrap();
        assert_eq!(
            (args.handle(), args.operation(), args.app()),
            (&handle.as_str(), &"Installing", &app)
        );
        seen.push(args.status().to_string());
    }
    assert_eq!(seen.first().map(String::as_str), Some("Queued"), "{seen:?}");
    let mut stages = Vec::new();
    while let Ok(Some(signal)) = tokio::time::timeout(Duration::from_millis(200), progress.next()).await {
        let args = signal.args().unwrap();
        stages.push((args.percent, args.stage().to_string()));
    }
    assert!(
        stages.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress only goes up: {stages:?}"
    );
    for stage in ["downloading", "verifying", "unpacking", "committing"] {
        assert!(stages.iter().any(|(_, s)| s == stage), "{stage} in {stages:?}");
    }
    let bundle = setup.root.as_path().join("apps").join(app).join("1.0.0");
    assert_eq!(
        std::fs::metadata(bundle.join("rootfs/app/payload")).unwrap().len(),
        MIB as u64
    );
    assert!(bundle.join("config.json").is_file());
    assert_eq!(
        std::fs::read_dir(setup.root.as_path().join("downloads"))
            .unwrap()
            .count(),
        0,
        "the download is gone once installed"
    );

    // List.
    let listed = agent.list("").await.unwrap();
    assert_eq!(listed.len(), 1);
    let (listed_app, version, current, listed_sha, size, locks) = &listed[0];
    assert_eq!(
        (listed_app.as_str(), version.as_str(), *current, listed_sha, *locks),
        (app, "1.0.0", true, &sha, 0)
    );
    assert!(*size >= MIB as u64, "{size}");
    assert!(agent.list("com.example.other").await.unwrap().is_empty());
    let (name, _) = dbus_error(agent.install(app, "1.0.0", &url, &sha, no_options()).await);
    assert_eq!(name, "AlreadyInstalled");

    // Metadata.
    agent.set_metadata(app, "1.0.0", "channel", "beta").await.unwrap();
    agent.set_metadata(app, "1.0.0", "owner", "qa").await.unwrap();
    let metadata = agent.get_metadata(app, "1.0.0").await.unwrap();
    assert_eq!(metadata.get("channel").map(String::as_str), Some("beta"));
    agent.clear_metadata(app, "1.0.0", "channel").await.unwrap();
    assert_eq!(agent.get_metadata(app, "1.0.0").await.unwrap().len(), 1);
    agent.clear_metadata(app, "1.0.0", "").await.unwrap();
    assert!(agent.get_metadata(app, "1.0.0").await.unwrap().is_empty());
    assert_eq!(dbus_error(agent.get_metadata(app, "9").await).0, "NotInstalled");
    assert_eq!(
        dbus_error(agent.set_metadata(app, "1.0.0", "", "v").await).0,
        "WrongParams"
    );

    // Storage.
    let (used, quota, free) = agent.get_storage_details().await.unwrap();
    assert!(used >= MIB as u64, "{used}");
    assert_eq!(quota, 100 << 20);
    assert!(free > 0);

    // Locks: counted, with their reasons; no uninstall or upgrade while locked.
    let first = agent.lock(app, "1.0.0", "playing", "player").await.unwrap();
    let second = agent.lock(app, "1.0.0", "backup", "backup-agent").await.unwrap();
    assert_ne!(first, second);
    let (count, locks) = agent.get_lock_info(app, "1.0.0").await.unwrap();
    assert_eq!(count, 2);
    assert!(
        locks
            .iter()
            .any(|(h, reason, owner)| *h == first && reason == "playing" && owner == "player")
    );
    assert_eq!(agent.list(app).await.unwrap()[0].5, 2);
    let (name, message) = dbus_error(agent.uninstall(app, "1.0.0", "full").await);
    assert_eq!(name, "AppLocked", "{message}");
    let (url2, sha2) = setup.serve("one-2.tar.gz", app, MIB / 2);
    let upgrade = agent.install(app, "2.0.0", &url2, &sha2, no_options()).await.unwrap();
    let (status, error) = finished(&agent, &upgrade).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("locked"), "{error}");
    assert!(!setup.root.as_path().join("apps").join(app).join("2.0.0").exists());
    agent.unlock(&first).await.unwrap();
    assert_eq!(agent.get_lock_info(app, "1.0.0").await.unwrap().0, 1);
    assert_eq!(dbus_error(agent.unlock(&first).await).0, "WrongHandle");
    agent.unlock(&second).await.unwrap();
    assert_eq!(dbus_error(agent.lock(app, "9", "r", "o").await).0, "NotInstalled");

    // Launch and stop through Dobby, with Dobby's signals passed on.
    let mut started = agent.receive_app_started().await.unwrap();
    let mut stopped = agent.receive_app_stopped().await.unwrap();
    let descriptor = agent.launch(app, "").await.unwrap();
    assert!(descriptor > 0);
    let signal = tokio::time::timeout(Duration::from_secs(10), started.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            signal.args().unwrap().app().to_string(),
            signal.args().unwrap().descriptor
        ),
        (app.to_string(), descriptor)
    );
    assert_eq!(dbus_error(agent.launch(app, "").await).0, "AppRunning");
    let running = agent.uninstall(app, "1.0.0", "full").await.unwrap();
    let (status, error) = finished(&agent, &running).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("AppRunning") || error.contains("running"), "{error}");
    agent.stop(app, false).await.unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(10), stopped.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signal.args().unwrap().app(), &app);
    assert_eq!(dbus_error(agent.stop(app, false).await).0, "NotRunning");
    assert_eq!(dbus_error(agent.launch("com.example.none", "").await).0, "NotInstalled");

    // Upgrade: the new version becomes current, the old one goes.
    install_ok(&agent, app, "2.0.0", &url2, &sha2).await;
    let listed = agent.list(app).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].1.as_str(), listed[0].2), ("2.0.0", true));
    assert!(!setup.root.as_path().join("apps").join(app).join("1.0.0").exists());

    // Uninstall, full: the app's data goes too.
    let data = setup.root.as_path().join("data").join(app);
    assert!(data.is_dir(), "an installed app has a data directory");
    let handle = agent.uninstall(app, "2.0.0", "full").await.unwrap();
    assert_eq!(finished(&agent, &handle).await.0, "Success");
    assert!(agent.list("").await.unwrap().is_empty());
    assert!(!setup.root.as_path().join("apps").join(app).exists());
    assert!(!data.exists());

    // Parameter errors, refused at once.
    let bad_installs = [
        ("../etc", "1", url.as_str(), "", "app id"),
        ("123", "1", url.as_str(), "", "app id"),
        (app, "a/b", url.as_str(), "", "version"),
        (app, ".hidden", url.as_str(), "", "version"),
        (app, "1", url.as_str(), "xyz", "sha256"),
        (app, "1", "ftp://host/b.tar.gz", "", "source"),
        (app, "1", "service", "", "service"),
        (app, "1", url.as_str(), "", "needs a sha256 or a signature"),
    ];
    for (bad_app, version, source, sha, mention) in bad_installs {
        let (name, message) = dbus_error(agent.install(bad_app, version, source, sha, no_options()).await);
        assert_eq!(name, "WrongParams", "{bad_app} {version} {source}: {message}");
        assert!(message.contains(mention), "{message} mentions {mention}");
    }
    let mut unknown = no_options();
    unknown.insert("colour", Variant::from("blue"));
    assert_eq!(
        dbus_error(agent.install(app, "1", &url, "", unknown).await).0,
        "WrongParams"
    );
    let mut mistyped = no_options();
    mistyped.insert("reinstall", Variant::from("yes"));
    assert_eq!(
        dbus_error(agent.install(app, "1", &url, "", mistyped).await).0,
        "WrongParams"
    );
    assert_eq!(dbus_error(agent.get_progress("op-nope").await).0, "WrongHandle");
    assert_eq!(dbus_error(agent.cancel("op-nope").await).0, "WrongHandle");
    assert_eq!(
        dbus_error(agent.uninstall("com.example.none", "1", "full").await).0,
        "NotInstalled"
    );
    assert_eq!(dbus_error(agent.uninstall(app, "1", "sideways").await).0, "WrongParams");
    assert_eq!(dbus_error(agent.get_lock_info(app, "1").await).0, "NotInstalled");
    let missing = agent
        .install(
            app,
            "3",
            &format!("{}/missing", setup.files.url),
            &"0".repeat(64),
            no_options(),
        )
        .await
        .unwrap();
    let (status, error) = finished(&agent, &missing).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("404"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn different_apps_install_at_once_and_one_app_waits_for_itself() {
    let setup = TestBox::start(|_| {}).await;
    let agent = setup.proxy().await;
    let (url_a, sha_a) = setup.serve("a.tar.gz", "com.example.a", 2 * MIB);
    let (url_b, sha_b) = setup.serve("b.tar.gz", "com.example.b", 2 * MIB);
    let (url_a2, sha_a2) = setup.serve("a2.tar.gz", "com.example.a", MIB);
    setup.files.throttle(Some(4 * MIB as u64));
    // The agent's signals, in the order it sent them.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.rdk.dac.BundleAgent1")
        .build()
        .unwrap();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &setup.client, None)
        .await
        .unwrap();
    let a = agent
        .install("com.example.a", "1", &url_a, &sha_a, no_options())
        .await
        .unwrap();
    let b = agent
        .install("com.example.b", "1", &url_b, &sha_b, no_options())
        .await
        .unwrap();
    let a2 = agent
        .install("com.example.a", "2", &url_a2, &sha_a2, no_options())
        .await
        .unwrap();
    // (handle, what): "progress" or the status.
    let mut events: Vec<(String, String)> = Vec::new();
    while [&a, &b, &a2]
        .iter()
        .any(|h| !events.contains(&(h.to_string(), "Success".to_string())))
    {
        let message = tokio::time::timeout(Duration::from_secs(60), signals.next())
            .await
            .expect("signals until all three succeed")
            .unwrap()
            .unwrap();
        let header = message.header();
        let event = match header.member().map(|m| m.as_str()) {
            Some("Progress") => {
                let (handle, _, _): (String, u32, String) = message.body().deserialize().unwrap();
                (handle, "progress".to_string())
            }
            Some("OperationStatus") => {
                let (handle, _, _, _, status, details): (String, String, String, String, String, String) =
                    message.body().deserialize().unwrap();
                assert_ne!(status, "Failed", "{details}");
                (handle, status)
            }
            _ => continue,
        };
        events.push(event);
    }
    let first = |handle: &str, what: &str| {
        events
            .iter()
            .position(|(h, w)| h == handle && w == what)
            .unwrap_or_else(|| panic!("{what} of {handle} in {events:?}"))
    };
    assert!(
        first(&b, "progress") < first(&a, "Success") && first(&a, "progress") < first(&b, "Success"),
        "two apps were installed at the same time: {events:?}"
    );
    assert!(
        first(&a, "Success") < first(&a2, "progress"),
        "the second operation on an app starts after the first ended: {events:?}"
    );
    for handle in [&a, &b, &a2] {
        assert_eq!(finished(&agent, handle).await.0, "Success");
    }
    let versions: Vec<_> = agent.list("com.example.a").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].1, "2", "the later request won");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_retry_after() {
    let setup = TestBox::start(|c| c.download_attempts = 4).await;
    let agent = setup.proxy().await;
    let app = "com.example.slow";
    let (url, sha) = setup.serve("slow.tar.gz", app, 8 * MIB);
    setup.files.throttle(Some(MIB as u64));
    let handle = agent.install(app, "1", &url, &sha, no_options()).await.unwrap();
    loop {
        let (_, percent, stage, _) = agent.get_progress(&handle).await.unwrap();
        if stage == "downloading" && percent > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.cancel(&handle).await.unwrap();
    assert_eq!(finished(&agent, &handle).await.0, "Cancelled");
    assert_eq!(dbus_error(agent.cancel(&handle).await).0, "WrongParams", "it has ended");
    assert!(!setup.root.as_path().join("apps").join(app).exists());
    assert!(agent.list("").await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(setup.root.as_path().join("downloads"))
            .unwrap()
            .count(),
        0
    );

    // A busy server: the agent waits as asked and then succeeds.
    setup.files.throttle(None);
    setup.files.fail_next(2);
    let before = setup.files.requests();
    let started = std::time::Instant::now();
    install_ok(&agent, app, "1", &url, &sha).await;
    assert_eq!(setup.files.requests() - before, 3, "two refusals, then the download");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );
}

/// `dbus-send` as `uid` with only the supplementary `groups` (through
/// `setpriv`); returns (success, stderr).
fn dbus_send_as(uid: u32, groups: &[u32], address: &str, member: &str, args: &[&str]) -> (bool, String) {
    let groups = match groups {
        [] => "--clear-groups".to_string(),
        _ => format!(
            "--groups={}",
            groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    let output = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            &groups,
            "dbus-send",
            &format!("--bus={address}"),
            "--print-reply",
            "--dest=org.rdk.dac.BundleAgent",
            "/org/rdk/dac/BundleAgent",
            &format!("org.rdk.dac.BundleAgent1.{member}"),
        ])
        .args(args)
        .output()
        .expect("setpriv and dbus-send run (util-linux, dbus-bin)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_policy_lets_group_dac_change_and_others_only_look() {
    let setup = TestBox::start(|_| {}).await;
    let address = setup.bus.address.clone();
    let nobody = 65534;
    let (listed, error) = dbus_send_as(nobody, &[], &address, "List", &["string:"]);
    assert!(listed, "anyone may list: {error}");
    let (_, error) = dbus_send_as(nobody, &[], &address, "GetStorageDetails", &[]);
    assert!(!error.contains("AccessDenied"), "{error}");
    for (member, args) in [
        ("Uninstall", vec!["string:com.example.a", "string:1", "string:full"]),
        ("Launch", vec!["string:com.example.a", "string:"]),
        ("Lock", vec!["string:a", "string:1", "string:r", "string:o"]),
    ] {
        let (succeeded, error) = dbus_send_as(nobody, &[], &address, member, &args);
        assert!(!succeeded, "{member} as nobody");
        assert!(
            error.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "the bus refuses {member} for nobody: {error}"
        );
    }
    // Root, and any user in group dac, pass the policy: the agent itself
    // answers (not installed).
    let dac = nix::unistd::Group::from_name("dac")
        .unwrap()
        .expect("group dac exists (tests/install-peers creates it, as the recipe does on a box)")
        .gid
        .as_raw();
    for (uid, groups) in [(0, vec![]), (nobody, vec![dac])] {
        let (_, error) = dbus_send_as(
            uid,
            &groups,
            &address,
            "Uninstall",
            &["string:com.example.a", "string:1", "string:full"],
        );
        assert!(error.contains("NotInstalled"), "uid {uid} groups {groups:?}: {error}");
    }
    // The policy loaded without a complaint (dbus-daemon only logs them).
    let log = setup.bus.log();
    assert!(
        !log.contains("Encountered error") && !log.contains("Unknown"),
        "dbus-daemon: {log}"
    );
}
