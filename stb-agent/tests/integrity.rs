//! What the agent refuses, and that a refusal leaves nothing behind: a
//! wrong sha256, a missing or wrong signature, hostile archives, a full
//! disk (a small tmpfs), the quota.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bundlegen_fixtures::tar::{EntryType, RawEntry, archive};
use bundlegen_protocol::signature::{SignedIdentity, base64_encode};
use ring::signature::KeyPair;
use support::*;
use zbus::Variant;

const PLATFORM: &str = "test_platform";

fn key(seed: u8) -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn sign(key: &ring::signature::Ed25519KeyPair, archive: &[u8], app: &str, version: &str) -> String {
    let sha = sha256(archive);
    let identity = SignedIdentity {
        sha256: &sha,
        app_id: app,
        app_version: version,
        platform: PLATFORM,
        format: "tar.gz",
    };
    base64_encode(key.sign(identity.message().as_bytes()).as_ref())
}

fn signed(signature: &str) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([("signature", Variant::from(signature.to_string()))])
}

/// Installs and returns (status, error).
async fn try_install(
    agent: &BundleAgent1Proxy<'_>,
    app: &str,
    url: &str,
    sha: &str,
    options: HashMap<&str, Variant<'_>>,
) -> (String, String) {
    let handle = agent.install(app, "1.0", url, sha, options).await.unwrap();
    finished(agent, &handle).await
}

/// Nothing of `app` on disk and in the store, and no download left.
async fn absent(agent: &BundleAgent1Proxy<'_>, root: &Path, app: &str) {
    assert!(agent.list(app).await.unwrap().is_empty(), "{app} is not listed");
    assert!(!root.join("apps").join(app).exists(), "{app} has no directory");
    let downloads: Vec<_> = std::fs::read_dir(root.join("downloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(downloads.is_empty(), "downloads left: {downloads:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_sha256_and_signatures_are_refused_before_unpacking() {
    let root = tempfile::tempdir().unwrap();
    let trusted = key(7);
    let stranger = key(9);
    let setup = TestBox::start_at(root.path(), false, |c| {
        c.platform = Some(PLATFORM.into());
        c.trusted_keys = vec![base64_encode(trusted.public_key().as_ref())];
        c.allow_unsigned = false;
    })
    .await;
    let agent = setup.proxy().await;
    let app = "com.example.signed";
    let bundle = bundle_archive(app, 10_000);
    let url = setup.files.add("signed.tar.gz", bundle.clone());
    let sha = sha256(&bundle);
    let good = sign(&trusted, &bundle, app, "1.0");

    let wrong_sha = "0".repeat(64);
    let (status, error) = try_install(&agent, app, &url, &wrong_sha, signed(&good)).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("sha256") && error.contains(&sha), "{error}");
    absent(&agent, root.path(), app).await;

    let cases = [
        (HashMap::new(), "no signature"),
        (signed(&sign(&stranger, &bundle, app, "1.0")), "another key"),
        (
            signed(&sign(&trusted, &bundle, "com.example.other", "1.0")),
            "another app",
        ),
        (signed(&sign(&trusted, &bundle, app, "0.9")), "another version"),
        (signed("bm90IGEgc2lnbmF0dXJl"), "garbage"),
    ];
    for (options, case) in cases {
        let (status, error) = try_install(&agent, app, &url, &sha, options).await;
        assert_eq!(status, "Failed", "{case}");
        assert!(error.contains("signature"), "{case}: {error}");
        absent(&agent, root.path(), app).await;
    }

    let (status, error) = try_install(&agent, app, &url, &sha, signed(&good)).await;
    assert_eq!(status, "Success", "{error}");
    // The sha256 may be left out: the signature covers the archive.
    let handle = agent.uninstall(app, "1.0", "full").await.unwrap();
    assert_eq!(finished(&agent, &handle).await.0, "Success");
    let (status, error) = try_install(&agent, app, &url, "", signed(&good)).await;
    assert_eq!(status, "Success", "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_archives_change_nothing_outside_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dac");
    std::fs::create_dir(&root).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let setup = TestBox::start_at(&root, false, |_| {}).await;
    let agent = setup.proxy().await;
    let config = br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["/x"]}}"#;
    let victim_path = victim.display().to_string();
    let escapes: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
        (
            "dot-dot",
            vec![
                RawEntry::file("config.json", config),
                RawEntry::file("rootfs/../../../victim", b"overwritten"),
            ],
        ),
        (
            "absolute symlink, then through it",
            vec![
                RawEntry::file("config.json", config),
                RawEntry::symlink("rootfs/out", dir.path().to_str().unwrap()),
                RawEntry::file("rootfs/out/victim", b"overwritten"),
            ],
        ),
        (
            "relative symlink up, then through it",
            vec![
                RawEntry::file("config.json", config),
                RawEntry::symlink("rootfs/up", "../../../.."),
                RawEntry::file("rootfs/up/victim", b"overwritten"),
            ],
        ),
        (
            "hardlink to a host file",
            vec![
                RawEntry::file("config.json", config),
                RawEntry::hardlink("rootfs/linked", &victim_path),
            ],
        ),
        ("no config.json", vec![RawEntry::file("rootfs/x", b"x")]),
        (
            "config.json a symlink to a host file",
            vec![
                RawEntry::symlink("config.json", &victim_path),
                RawEntry::file("rootfs/x", b"x"),
            ],
        ),
        ("not a tar", vec![]),
    ];
    for (case, entries) in &escapes {
        let bytes = if entries.is_empty() {
            gzip(b"this is not a tar archive, only text")
        } else {
            gzip(&archive(entries))
        };
        let sha = sha256(&bytes);
        let url = setup.files.add("hostile.tar.gz", bytes);
        let (status, error) = try_install(&agent, "com.example.hostile", &url, &sha, HashMap::new()).await;
        assert_eq!(status, "Failed", "{case}");
        assert!(error.contains("Error.BadArchive:"), "{case}: {error}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "{case}");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().len(),
            8,
            "{case}: the host file is untouched"
        );
        let outside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(outside.len(), 2, "{case}: nothing new next to the storage: {outside:?}");
        absent(&agent, &root, "com.example.hostile").await;
    }

    // Device nodes are not made and setuid bits are cleared: the bundle installs.
    let tolerated = archive(&[
        RawEntry::file("config.json", config),
        RawEntry::dir("rootfs/"),
        RawEntry::char_device("rootfs/null"),
        RawEntry::file("rootfs/su", b"#!/bin/sh\n").mode(0o4755),
        RawEntry {
            kind: EntryType::Fifo,
            ..RawEntry::file("rootfs/pipe", b"")
        },
    ]);
    let tolerated = gzip(&tolerated);
    let sha = sha256(&tolerated);
    let url = setup.files.add("tolerated.tar.gz", tolerated);
    let (status, error) = try_install(&agent, "com.example.nodes", &url, &sha, HashMap::new()).await;
    assert_eq!(status, "Success", "{error}");
    let rootfs = root.join("apps/com.example.nodes/1.0/rootfs");
    assert!(!rootfs.join("null").exists(), "no device node was made");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rootfs.join("su")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid cleared");
}

/// A tmpfs of `megabytes`, unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk { path, _dir: dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_and_the_quota_fail_cleanly() {
    let disk = SmallDisk::mount(16);
    let root = disk.path.join("dac");
    // No margin for unpacking: the bundle that fits as a download must fail while unpacking.
    let setup = TestBox::start_at(&root, false, |c| {
        c.unpack_factor = 0;
        c.quota = bundlegen_protocol::config::size::Size(64 << 20);
    })
    .await;
    let agent = setup.proxy().await;
    let free_before = stb_agent::store::free_bytes(&root);

    // Too large to download at all: refused as soon as its size is known.
    let big = bundle_archive("com.example.big", 20 << 20);
    let url = setup.files.add("big.tar.gz", big.clone());
    let (status, error) = try_install(&agent, "com.example.big", &url, &sha256(&big), HashMap::new()).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("Error.NoSpace:"), "{error}");
    absent(&agent, &root, "com.example.big").await;

    // Small to download, too large unpacked (zeros compress well): the disk fills while unpacking.
    let zeros = vec![0u8; 40 << 20];
    let config = br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["/x"]}}"#;
    let bomb = gzip(&archive(&[
        RawEntry::file("config.json", config),
        RawEntry::dir("rootfs/"),
        RawEntry::file("rootfs/zeros", &zeros),
    ]));
    assert!(bomb.len() < 1 << 20);
    let bomb_sha = sha256(&bomb);
    let url = setup.files.add("bomb.tar.gz", bomb);
    let (status, error) = try_install(&agent, "com.example.bomb", &url, &bomb_sha, HashMap::new()).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("space") || error.contains("No space"), "{error}");
    absent(&agent, &root, "com.example.bomb").await;
    let free_after = stb_agent::store::free_bytes(&root);
    assert!(
        free_after + (64 << 10) >= free_before,
        "the space is given back: {free_before} before, {free_after} after"
    );

    // The quota: refused though the disk has room.
    let fits = bundle_archive("com.example.fits", 3 << 20);
    let fits_sha = sha256(&fits);
    let url = setup.files.add("fits.tar.gz", fits.clone());
    let (status, error) = try_install(&agent, "com.example.fits", &url, &fits_sha, HashMap::new()).await;
    assert_eq!(status, "Success", "{error}");
    drop(setup);
    let setup = TestBox::start_at(&root, false, |c| {
        c.quota = bundlegen_protocol::config::size::Size(4 << 20)
    })
    .await;
    let agent = setup.proxy().await;
    let url = setup.files.add("fits2.tar.gz", fits);
    let handle = agent
        .install("com.example.fits2", "1.0", &url, &fits_sha, HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("Error.QuotaExceeded:"), "{error}");
    absent(&agent, &root, "com.example.fits2").await;
    assert_eq!(agent.list("").await.unwrap().len(), 1, "the installed app stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_of_no_stated_size_stops_at_the_quota() {
    // 64 MiB of bundles, each archive unpacking to 3 times its size: an
    // archive may be at most about 21 MiB.
    let setup = TestBox::start(|c| {
        c.quota = bundlegen_protocol::config::size::Size(64 << 20);
        c.unpack_factor = 3;
    })
    .await;
    let agent = setup.proxy().await;
    let url = setup.files.add_endless("endless.tar.gz");
    // Never verified: the body never ends.
    let sha = "0".repeat(64);
    let (status, error) = try_install(&agent, "com.example.endless", &url, &sha, HashMap::new()).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("Error.QuotaExceeded:"), "{error}");
    absent(&agent, &setup.root, "com.example.endless").await;
    // What the server got out before the agent hung up: the archive's
    // limit and what socket buffers hold, far from endless.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = setup.files.endless_sent();
    assert!(sent < 40 << 20, "{sent} bytes were sent");
}

/// A bundle whose config.json has `annotations` and whose program is
/// `program`.
fn bundle_for(annotations: serde_json::Value, program: &[u8]) -> Vec<u8> {
    let config = serde_json::json!({
        "ociVersion": "1.0.2-dobby",
        "process": {"args": ["/app/run"]},
        "root": {"path": "rootfs"},
        "annotations": annotations,
    });
    let config = serde_json::to_vec(&config).unwrap();
    gzip(&archive(&[
        RawEntry::file("config.json", &config),
        RawEntry::dir("rootfs/"),
        RawEntry::dir("rootfs/app/"),
        RawEntry::file("rootfs/app/run", program).mode(0o755),
    ]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_for_another_architecture_is_refused() {
    let setup = TestBox::start(|_| {}).await;
    let agent = setup.proxy().await;
    let this_box = bundlegen_protocol::probe::Abi::of_this_program().unwrap();
    let other_elf = match this_box.machine {
        bundlegen_protocol::probe::machine::EM_ARM => bundlegen_fixtures::elf::ElfSpec::x86_64_library("run"),
        _ => bundlegen_fixtures::elf::ElfSpec::arm_library("run"),
    }
    .executable("/lib/ld.so")
    .build();
    let other_arch = if this_box.machine == bundlegen_protocol::probe::machine::EM_MIPS {
        "arm64"
    } else {
        "mips"
    };
    let cases = [
        (
            "annotated",
            bundle_for(
                serde_json::json!({"org.opencontainers.image.architecture": other_arch}),
                b"#!/bin/sh\n",
            ),
        ),
        ("by its program", bundle_for(serde_json::json!({}), &other_elf)),
    ];
    for (case, bundle) in cases {
        let sha = sha256(&bundle);
        let url = setup.files.add("other.tar.gz", bundle);
        let (status, error) = try_install(&agent, "com.example.other", &url, &sha, HashMap::new()).await;
        assert_eq!(status, "Failed", "{case}");
        assert!(
            error.contains("Error.Unsupported:") && error.contains("this box is"),
            "{case}: {error}"
        );
        absent(&agent, &setup.root, "com.example.other").await;
    }
    // Its own architecture, either way, installs.
    let own = bundle_for(
        serde_json::json!({"org.opencontainers.image.architecture": std::env::consts::ARCH}),
        &std::fs::read("/bin/sh").unwrap(),
    );
    let sha = sha256(&own);
    let url = setup.files.add("own.tar.gz", own);
    let (status, error) = try_install(&agent, "com.example.own", &url, &sha, HashMap::new()).await;
    assert_eq!(status, "Success", "{error}");
}
