//! The operations against a temp-dir store and the recording containers
//! and mounts fakes: no D-Bus, no Dobby, no root. RALF packages: [`packages`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bundlegen_fixtures::tar::{RawEntry, archive};

use super::containers::fake::{Call, RecordingContainers};
use super::*;
use crate::download::Http;
use crate::ralf::host::fake::RecordingMounter;
use crate::store::Store;

mod packages;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    agent: Arc<Agent>,
    containers: Arc<RecordingContainers>,
    mounter: Arc<RecordingMounter>,
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn fixture_with(change: impl FnOnce(&mut AgentConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dac");
    let mut config = AgentConfig {
        storage_root: root.clone(),
        probe: false,
        ..AgentConfig::default()
    };
    config.packages.runtime_dir = dir.path().join("run");
    change(&mut config);
    let (store, _) = Store::open(&root).unwrap();
    let containers = Arc::new(RecordingContainers::default());
    let mounter = Arc::new(RecordingMounter::default());
    let agent = Agent::new(
        config,
        Arc::new(store),
        Http::new(None, None, None).unwrap(),
        containers.clone(),
        mounter.clone(),
    );
    Fixture {
        _dir: dir,
        root,
        agent,
        containers,
        mounter,
    }
}

impl Fixture {
    /// A bundle archive (plain tar) on disk whose rootfs holds `marker`.
    fn bundle(&self, name: &str, marker: &str) -> PathBuf {
        self.archive(
            name,
            &archive(&[
                RawEntry::file("config.json", b"{\"ociVersion\": \"1.0.2\"}"),
                RawEntry::dir("rootfs"),
                RawEntry::file("rootfs/marker", marker.as_bytes()),
            ]),
        )
    }

    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root.join("downloads").join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn install(&self, version: &str, archive: PathBuf) -> Result<String, Arc<OperationError>> {
        let (_, result) = self
            .agent
            .start_install(InstallRequest {
                app: "com.example.app".into(),
                version: version.into(),
                source: Source::File(archive),
                sha256: None,
                signature: None,
                format: None,
                reinstall: true,
            })
            .await
            .unwrap();
        result.await.unwrap()
    }

    fn marker(&self, version: &str) -> Option<String> {
        std::fs::read_to_string(
            self.root
                .join("apps/com.example.app")
                .join(version)
                .join("rootfs/marker"),
        )
        .ok()
    }

    fn current(&self) -> Option<String> {
        self.agent.store.app("com.example.app").and_then(|r| r.current)
    }
}

/// Polls an operation until it ends.
async fn ended(agent: &Agent, handle: &str) -> Operation {
    for _ in 0..500 {
        let operation = agent.operation(handle).unwrap();
        if matches!(operation.status, Status::Success | Status::Failed | Status::Cancelled) {
            return operation;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{handle} did not end");
}

#[tokio::test]
async fn an_upgrade_replaces_the_old_version_and_becomes_current() {
    let f = fixture();
    f.install("1.0", f.bundle("one.tar", "one")).await.unwrap();
    assert_eq!(
        (f.current().as_deref(), f.marker("1.0").as_deref()),
        (Some("1.0"), Some("one"))
    );
    f.install("2.0", f.bundle("two.tar", "two")).await.unwrap();
    assert_eq!(f.current().as_deref(), Some("2.0"));
    assert_eq!(f.marker("2.0").as_deref(), Some("two"));
    assert_eq!(f.marker("1.0"), None, "the old version is gone");
    let versions = f.agent.installed_versions(None);
    assert_eq!(versions.len(), 1);
    assert!(versions[0].current && versions[0].disk_size > 0);
    assert!(
        f.root.join("data/com.example.app").is_dir(),
        "the app has a data directory"
    );
}

#[tokio::test]
async fn locks_block_upgrades_and_uninstalls_until_they_are_released() {
    let f = fixture();
    f.install("1.0", f.bundle("one.tar", "one")).await.unwrap();
    let lock = f.agent.lock("com.example.app", "1.0", "playing", "test").await.unwrap();
    let error = f.install("2.0", f.bundle("two.tar", "two")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AppLocked, "{error}");
    assert!(error.to_string().contains("no upgrade until it is unlocked"), "{error}");
    assert_eq!(f.marker("2.0"), None, "nothing of the upgrade is left");
    let refused = f.agent.uninstall("com.example.app", "1.0", "full").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AppLocked);

    f.agent.unlock(&lock).await.unwrap();
    assert_eq!(
        f.agent.unlock(&lock).await.unwrap_err().kind(),
        ErrorKind::WrongHandle,
        "a lock goes once"
    );
    let handle = f.agent.uninstall("com.example.app", "1.0", "full").unwrap();
    assert_eq!(ended(&f.agent, &handle).await.status, Status::Success);
    assert!(f.agent.store.app("com.example.app").is_none());
    assert!(!f.root.join("apps/com.example.app").exists());
    assert!(!f.root.join("data/com.example.app").exists(), "full: the data goes too");
}

#[tokio::test]
async fn a_failed_reinstall_puts_back_the_previous_copy() {
    let f = fixture();
    f.install("1.0", f.bundle("one.tar", "one")).await.unwrap();
    let before = f.agent.store.app("com.example.app").unwrap();
    let no_config = f.archive("bad.tar", &archive(&[RawEntry::file("rootfs/marker", b"bad")]));
    let error = f.install("1.0", no_config).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadArchive, "{error}");
    assert_eq!(f.marker("1.0").as_deref(), Some("one"), "the old copy is back");
    assert_eq!(f.agent.store.app("com.example.app").unwrap(), before, "and its record");
    let leftovers: Vec<_> = std::fs::read_dir(f.root.join("apps/com.example.app"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["1.0"], "no staging or aside copy is left");
}

#[tokio::test]
async fn a_failed_first_install_leaves_nothing() {
    let f = fixture();
    let garbage = f.archive("garbage.tar", b"not an archive at all");
    let error = f.install("1.0", garbage).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadArchive, "{error}");
    assert!(bundlegen_protocol::error_chain(error.as_ref()).contains("garbage.tar"));
    assert!(f.agent.store.app("com.example.app").is_none());
    assert!(!f.root.join("apps/com.example.app").exists());
}

#[tokio::test]
async fn a_download_can_be_cancelled() {
    let f = fixture();
    // A server that accepts and never answers: the download waits.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bundle.tar.gz", listener.local_addr().unwrap());
    let handle = f
        .agent
        .install(InstallRequest {
            app: "com.example.app".into(),
            version: "1.0".into(),
            source: Source::Url(url),
            sha256: Some("0".repeat(64)),
            signature: None,
            format: None,
            reinstall: false,
        })
        .await
        .unwrap();
    while f.agent.operation(&handle).unwrap().stage != "resolving" {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.agent.cancel(&handle).unwrap();
    let operation = ended(&f.agent, &handle).await;
    assert_eq!(operation.status, Status::Cancelled);
    assert!(matches!(f.agent.cancel(&handle), Err(HandleError::Ended(_))));
    assert!(matches!(f.agent.cancel("op-nope"), Err(HandleError::Unknown(_))));
    assert!(
        !f.root.join("downloads/com.example.app@1.0").exists(),
        "a cancelled install is not resumed"
    );
    drop(listener);
}

#[tokio::test]
async fn launches_go_through_the_containers() {
    let f = fixture();
    f.install("1.0", f.bundle("one.tar", "one")).await.unwrap();
    let descriptor = f.agent.launch("com.example.app", "").await.unwrap();
    assert!(descriptor > 0);
    let bundle = std::fs::canonicalize(f.root.join("apps/com.example.app/1.0")).unwrap();
    assert_eq!(
        f.containers.calls(),
        [Call::Start {
            id: "com.example.app".into(),
            bundle
        }]
    );
    let again = f.agent.launch("com.example.app", "1.0").await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AppRunning);
    let handle = f.agent.uninstall("com.example.app", "1.0", "upgrade").unwrap();
    let operation = ended(&f.agent, &handle).await;
    assert_eq!(operation.error.map(|e| e.kind()), Some(ErrorKind::AppRunning));

    f.agent.stop("com.example.app", false).await.unwrap();
    assert_eq!(
        f.agent.stop("com.example.app", false).await.unwrap_err().kind(),
        ErrorKind::NotRunning
    );
    *f.containers.refuse.lock().unwrap() = true;
    let refused = f.agent.launch("com.example.app", "").await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Dobby);
    let missing = f.agent.launch("com.example.other", "").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotInstalled);
}

#[tokio::test]
async fn a_pushed_bundle_replaces_the_running_dev_version() {
    let f = fixture();
    let first = f
        .agent
        .install_pushed("com.example.app", f.bundle("one.tar", "one"), true)
        .await
        .unwrap();
    assert_eq!(first.0, "dev");
    assert!(first.1.is_some());
    let second = f
        .agent
        .install_pushed("com.example.app", f.bundle("two.tar", "two"), true)
        .await
        .unwrap();
    assert!(second.1.is_some());
    assert_eq!(f.marker("dev").as_deref(), Some("two"));
    let calls = f.containers.calls();
    assert!(
        matches!(
            calls.as_slice(),
            [Call::Start { .. }, Call::Stop { force: false, .. }, Call::Start { .. }]
        ),
        "{calls:?}"
    );
    let garbage = f.archive("garbage.tar", b"junk");
    let error = f
        .agent
        .install_pushed("com.example.app", garbage, false)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadArchive);
}

#[tokio::test]
async fn metadata_is_kept_per_version() {
    let f = fixture();
    f.install("1.0", f.bundle("one.tar", "one")).await.unwrap();
    f.agent
        .set_metadata("com.example.app", "1.0", "channel", Some("beta"))
        .await
        .unwrap();
    f.agent
        .set_metadata("com.example.app", "1.0", "rating", Some("5"))
        .await
        .unwrap();
    let metadata = f.agent.metadata("com.example.app", "1.0").unwrap();
    assert_eq!(metadata.get("channel").map(String::as_str), Some("beta"));
    f.agent
        .set_metadata("com.example.app", "1.0", "channel", None)
        .await
        .unwrap();
    assert_eq!(f.agent.metadata("com.example.app", "1.0").unwrap().len(), 1);
    f.agent.set_metadata("com.example.app", "1.0", "", None).await.unwrap();
    assert!(f.agent.metadata("com.example.app", "1.0").unwrap().is_empty());
    let empty_key = f
        .agent
        .set_metadata("com.example.app", "1.0", "", Some("x"))
        .await
        .unwrap_err();
    assert_eq!(empty_key.kind(), ErrorKind::WrongParams);
    let missing = f.agent.metadata("com.example.app", "9.9").unwrap_err();
    assert_eq!(missing.to_string(), "com.example.app 9.9 is not installed");
}

#[tokio::test]
async fn an_install_by_url_must_name_what_it_installs() {
    let f = fixture();
    let error = f
        .agent
        .install(InstallRequest {
            app: "com.example.app".into(),
            version: "1.0".into(),
            source: Source::Url("https://cdn.example/bundle.tar.gz".into()),
            sha256: None,
            signature: None,
            format: None,
            reinstall: false,
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WrongParams, "{error}");
    assert!(error.to_string().contains("needs a sha256 or a signature"), "{error}");
}

#[test]
fn the_signature_policy() {
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let public = bundlegen_protocol::signature::base64_encode(ring::signature::KeyPair::public_key(&key).as_ref());
    let sha256 = "ab".repeat(32);
    let identity = bundlegen_protocol::signature::SignedIdentity {
        sha256: &sha256,
        app_id: "com.example.app",
        app_version: "1.0",
        platform: "",
        format: "tar.gz",
    };
    let good = bundlegen_protocol::signature::base64_encode(key.sign(identity.message().as_bytes()).as_ref());
    let forged = bundlegen_protocol::signature::base64_encode(&[0u8; 64]);
    // (trusted keys, allow_unsigned, signature, accepted)
    let cases: [(bool, bool, Option<&str>, bool); 8] = [
        (true, false, Some(&good), true),
        (true, false, Some(&forged), false),
        (true, false, None, false),
        (true, true, None, true),
        (true, true, Some(&forged), false),
        (false, false, None, false),
        (false, false, Some(&good), false),
        (false, true, None, true),
    ];
    for (keys, allow_unsigned, signature, accepted) in cases {
        let f = fixture_with(|c| {
            c.allow_unsigned = allow_unsigned;
            if keys {
                c.trusted_keys = vec![public.clone()];
            }
        });
        let result = f
            .agent
            .check_signature("com.example.app", "1.0", &sha256, Some("tar.gz"), signature);
        assert_eq!(
            result.is_ok(),
            accepted,
            "keys {keys}, allow_unsigned {allow_unsigned}, signature {signature:?}: {result:?}"
        );
        if let Err(e) = result {
            assert_eq!(e.kind(), ErrorKind::Signature);
        }
    }
}
