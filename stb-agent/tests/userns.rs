//! A bundle generated for a platform that maps container root to host uid
//! 1000, installed by the agent and launched through the Dobby double with
//! real crun in a user namespace: its files must belong to the mapped ids
//! (crun cannot set up a rootfs owned by host root from inside the
//! namespace), and every directory above it must be searchable by them.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use bundlegen_core::generate::{self, Request};
use bundlegen_core::image::{ImageReference, RegistryOptions};
use bundlegen_core::output::{Format, OutputOptions};
use bundlegen_core::pipeline;
use bundlegen_core::unpack::UnpackOptions;
use bundlegen_fixtures::oci::{Compress, LayerBuilder, LayoutBuilder};
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::PlatformTemplate;
use serde_json::json;
use support::*;

const APP: &str = "com.example.userns";
const HOST_ROOT: u32 = 1000;

/// An image whose program is the host's shell (its /usr is mounted): it
/// says who it is and what it owns.
fn image(dir: &Path) -> LayoutBuilder {
    let layer = LayerBuilder::default()
        .dir("usr", 0o755)
        .dir("out", 0o755)
        .dir("etc", 0o755)
        .symlink("bin", "usr/bin")
        .symlink("lib", "usr/lib")
        .symlink("lib64", "usr/lib64")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\n", 0o644)
        .file("etc/marker", b"from the image\n", 0o644)
        .tar();
    let layout = LayoutBuilder::new(dir);
    let script = "echo \"uid $(id -u) owner $(stat -c %u /etc/marker) $(cat /etc/marker)\" > /out/report";
    let image = layout.image(
        &[(layer, Compress::Gzip)],
        "amd64",
        None,
        json!({"Entrypoint": ["/bin/sh", "-c", script]}),
    );
    layout.tag(image, "latest")
}

fn platform(out: &Path) -> PlatformTemplate {
    let map = json!([{"containerID": 0, "hostID": HOST_ROOT, "size": 65536}]);
    serde_json::from_value(json!({
        "platformName": "this-machine", "os": "linux", "arch": {"arch": "x86_64"},
        "rdk": {"version": "2024Q1", "supportedFeatures": []}, "hardware": {"graphics": false},
        "network": {"options": ["open"]},
        "usersAndGroups": {"uidMap": map, "gidMap": map},
        "mounts": [
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/out", "type": "bind", "source": out.to_str().unwrap(), "options": ["rbind", "rw"]}
        ]
    }))
    .unwrap()
}

/// `bundlegen generate --crun` of the image for the platform; the archive's bytes.
async fn generate_bundle(dir: &Path, out: &Path) -> Vec<u8> {
    let layout = image(&dir.join("layout"));
    let metadata = dir.join("app.json");
    let app = json!({"id": APP, "type": "application/vnd.rdk-app.dac.native", "graphics": false,
        "network": {"type": "open"}, "storage": {}, "resources": {"ram": "64M"}});
    std::fs::write(&metadata, app.to_string()).unwrap();
    let image: ImageReference = format!("oci:{}", layout.dir.display()).parse().unwrap();
    let output = dir.join("bundle");
    let options = pipeline::Options {
        crun: true,
        create_mount_points: false,
        libraries: Default::default(),
    };
    let output_options = OutputOptions {
        format: Format::TarGz,
        keep_dir: false,
        replace: true,
        archive: Default::default(),
        level: None,
        threads: 0,
        ipk: None,
    };
    let generated = generate::generate(
        &Request {
            image: &image,
            output: &output,
            work_dir: None,
            platform: &platform(out),
            app_metadata: Some(&metadata),
            app_id: None,
            operator: &OperatorConfig::default(),
            options: &options,
            registry: &RegistryOptions::default(),
            unpack: &UnpackOptions::default(),
            output_options: &output_options,
        },
        |_, _, _| {},
    )
    .await
    .unwrap();
    std::fs::read(generated.written.archive.unwrap().path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_mapping_root_to_1000_runs_with_its_files_owned_by_1000() {
    assert!(nix::unistd::geteuid().is_root(), "crun and owners need root here");
    let dir = tempfile::tempdir().unwrap();
    // As /opt is on a box: the mapped user may pass through.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(HOST_ROOT), Some(HOST_ROOT)).unwrap();
    let bundle = generate_bundle(dir.path(), &out).await;

    let root = dir.path().join("dac");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    let setup = TestBox::start_at(&root, true, |_| {}).await;
    let agent = setup.proxy().await;
    let url = setup.files.add("userns.tar.gz", bundle.clone());
    let handle = agent
        .install(APP, "1", &url, &sha256(&bundle), HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Success", "{error}");

    let installed = root.join("apps").join(APP).join("1");
    let marker = std::fs::metadata(installed.join("rootfs/etc/marker")).unwrap();
    assert_eq!(
        (marker.uid(), marker.gid()),
        (HOST_ROOT, HOST_ROOT),
        "the archive's owners"
    );
    for ancestor in [&root, &root.join("apps"), &root.join("apps").join(APP)] {
        let mode = std::fs::metadata(ancestor).unwrap().mode();
        assert_ne!(mode & 0o001, 0, "{} is searchable by others", ancestor.display());
    }

    agent.launch(APP, "").await.unwrap();
    let report = out.join("report");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&report).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "the container wrote nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "uid 0 owner 0 from the image\n",
        "root inside, owning its files"
    );
    assert_eq!(
        std::fs::metadata(&report).unwrap().uid(),
        HOST_ROOT,
        "host uid 1000 outside"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_outside_the_maps_are_refused() {
    use bundlegen_fixtures::tar::{RawEntry, archive};
    let config = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "user"}],
                  "uidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": 65536}],
                  "gidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": 65536}]}})
    .to_string();
    // Host root's files inside a namespace whose root is 1000.
    let bundle = gzip(&archive(&[
        RawEntry::file("config.json", config.as_bytes()).owner(1000, 1000),
        RawEntry::dir("rootfs/").owner(1000, 1000),
        RawEntry::file("rootfs/escape", b"x").owner(0, 0),
    ]));
    let setup = TestBox::start(|_| {}).await;
    let agent = setup.proxy().await;
    let url = setup.files.add("outside.tar.gz", bundle.clone());
    let handle = agent
        .install(APP, "1", &url, &sha256(&bundle), HashMap::new())
        .await
        .unwrap();
    let (status, error) = finished(&agent, &handle).await;
    assert_eq!(status, "Failed");
    assert!(error.contains("Error.BadArchive:"), "{error}");
    assert!(error.contains("outside the bundle's user namespace"), "{error}");
    assert!(!setup.root.join("apps").join(APP).exists(), "nothing is left");
}
