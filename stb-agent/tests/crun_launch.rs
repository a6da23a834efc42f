//! A crun-mode bundle (a plain OCI bundle, no rdkPlugins) installed by the
//! agent and launched through the Dobby test double, which runs it with
//! real `crun`: the app's process really runs, and stopping it ends it with
//! Dobby's signals passed on.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bundlegen_fixtures::tar::{RawEntry, archive};
use futures_util::StreamExt;
use serde_json::json;
use support::*;

const APP: &str = "com.example.crun";

/// A crun-mode bundle (a plain OCI bundle) whose app is this machine's
/// shell running `script`, with `out` mounted at `/out`.
fn shell_bundle(script: &str, out: &std::path::Path) -> Vec<u8> {
    // The host's /usr, read-only: the app is this machine's shell.
    let runtime_config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/bin/sh", "-c", script],
            "cwd": "/",
            "env": ["PATH=/usr/bin:/bin"],
            "user": {"uid": 0, "gid": 0}
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "crunapp",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/out", "type": "bind", "source": out.to_str().unwrap(), "options": ["rbind", "rw"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}
    })
    .to_string();
    gzip(&archive(&[
        RawEntry::file("config.json", runtime_config.as_bytes()),
        RawEntry::dir("rootfs/"),
        RawEntry::dir("rootfs/usr/"),
        RawEntry::dir("rootfs/proc/"),
        RawEntry::dir("rootfs/dev/"),
        RawEntry::dir("rootfs/out/"),
        RawEntry::symlink("rootfs/bin", "usr/bin"),
        RawEntry::symlink("rootfs/lib", "usr/lib"),
        RawEntry::symlink("rootfs/lib64", "usr/lib64"),
    ]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crun_mode_bundle_runs_with_real_crun_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let bundle = shell_bundle(
        "echo \"hello from $(cat /proc/sys/kernel/hostname)\" > /out/hello; exec sleep 60",
        &out,
    );

    let setup = TestBox::start_at(&dir.path().join("dac"), true, |_| {}).await;
    let agent = setup.proxy().await;
    let url = setup.files.add("crun.tar.gz", bundle.clone());
    let handle = agent
        .install(APP, "1", &url, &sha256(&bundle), HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Success", "{error}");

    let mut stopped = agent.receive_app_stopped().await.unwrap();
    let descriptor = agent.launch(APP, "").await.unwrap();
    assert!(descriptor > 0);
    let hello = out.join("hello");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&hello).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "the container wrote nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hello from crunapp\n");
    assert_eq!(dbus_error(agent.launch(APP, "").await).0, "AppRunning");

    agent.stop(APP, false).await.unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(30), stopped.next())
        .await
        .expect("AppStopped once crun's container ended")
        .unwrap();
    assert_eq!(signal.args().unwrap().app(), &APP);
    assert_eq!(dbus_error(agent.stop(APP, false).await).0, "NotRunning");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_app_that_dies_at_once_is_a_failed_launch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (setup, port) = developer_box(dir.path(), true, |_| {}).await;
    let push = |archive: std::path::PathBuf| bundlegen_core::push::PushRequest {
        device: format!("http://127.0.0.1:{port}"),
        token: TOKEN.into(),
        archive,
        app: Some("com.example.dies".into()),
        launch: true,
        ca_file: None,
    };
    let dies = dir.path().join("dies.tar.gz");
    std::fs::write(&dies, shell_bundle("exit 3", &out)).unwrap();
    match bundlegen_core::push::push(&push(dies)).await {
        Err(bundlegen_core::push::PushError::Http(bundlegen_protocol::http::HttpError::Refused {
            status,
            code,
            message,
            ..
        })) => {
            assert_eq!((status, code.as_str()), (502, "Dobby"), "{message}");
            assert!(
                message.contains("stopped right after it started: exited with code 3"),
                "{message}"
            );
        }
        other => panic!("a launch that dies is a failure: {other:?}"),
    }
    // One that keeps running is a launch.
    let lives = dir.path().join("lives.tar.gz");
    std::fs::write(&lives, shell_bundle("exec sleep 30", &out)).unwrap();
    let pushed = bundlegen_core::push::push(&push(lives)).await.unwrap();
    assert!(pushed.descriptor.is_some_and(|d| d > 0));
    setup.proxy().await.stop("com.example.dies", true).await.unwrap();
}
