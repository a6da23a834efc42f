//! Conformance with BundleGen: for every template in the conformance folder
//! and the DAC SDK's test image, our `config.json` equals BundleGen's
//! (capabilities and mounts as sets) and our rootfs file list equals its
//! list, except for the differences docs/bundlegen-compat.md lists, each
//! asserted here. Every config we write validates against Dobby's schema.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use support::dobby::{assert_valid_for_dobby, dobby_validator};
use support::*;

const IMAGE: &str = "bundlegen/images/dac-image-wayland-egl-test-oci";
const LIBRARY_MOUNT_OPTIONS: [&str; 4] = ["rbind", "nosuid", "nodev", "ro"];

fn generate(template: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    bundlegen()
        .args(["generate", "-y", "-p", template, "-s"])
        .arg(conformance().join("bundlegen/templates"))
        .args(extra)
        .arg(format!("oci:{}", conformance().join(IMAGE).display()))
        .arg(out)
        .output()
        .unwrap()
}

fn rootfs_files(rootfs: &Path) -> BTreeSet<String> {
    snapshot(rootfs)
        .into_iter()
        .filter(|(_, description)| !description.starts_with("dir"))
        .map(|(path, _)| path)
        .collect()
}

/// Sorts the capability lists (BundleGen's order was random).
fn normalized(mut config: Value) -> Value {
    if let Some(caps) = config
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for list in caps.values_mut() {
            if let Some(items) = list.as_array_mut() {
                items.sort_by_key(|v| v.to_string());
            }
        }
    }
    config
}

fn mount_set(config: &Value) -> BTreeSet<String> {
    config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect()
}

#[test]
fn every_template_matches_bundlegen_except_the_listed_fixes() {
    let validator = dobby_validator();
    let expected_dir = conformance().join("bundlegen/expected");
    let templates = [
        "rpi3_reference",
        "rpi3_reference_dunfell",
        "rpi3_reference_vc4_dunfell",
        "rpi3_reference_vc4_dunfell_test",
        "rpi4_reference_dunfell",
    ];
    for template in templates {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("bundle");
        let output = generate(template, &out, &[]);
        assert!(
            output.status.success(),
            "{template}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ours: Value = serde_json::from_slice(&fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_valid_for_dobby(&validator, &ours, template);
        let stem = format!("dac-image-wayland-egl-test.{template}");
        let theirs: Value =
            serde_json::from_slice(&fs::read(expected_dir.join(format!("{stem}.config.json"))).unwrap()).unwrap();
        let (mut ours, theirs) = (normalized(ours), normalized(theirs));

        // Files: ours may lack files BundleGen kept (libraries we also take
        // from the box), never the other way round.
        let expected_files: BTreeSet<String> = fs::read_to_string(expected_dir.join(format!("{stem}.rootfs.txt")))
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("./").to_string())
            .collect();
        let our_files = rootfs_files(&out.join("rootfs"));
        let extra_files: Vec<&String> = our_files.difference(&expected_files).collect();
        assert!(
            extra_files.is_empty(),
            "{template}: files BundleGen does not have: {extra_files:?}"
        );
        let removed: BTreeSet<String> = expected_files.difference(&our_files).map(|f| format!("/{f}")).collect();

        // Mounts: ours = BundleGen's + a read-only bind mount of a box
        // library at the path of each file we removed beyond BundleGen.
        let our_mounts = mount_set(&ours);
        let their_mounts = mount_set(&theirs);
        let missing: Vec<&String> = their_mounts.difference(&our_mounts).collect();
        assert!(
            missing.is_empty(),
            "{template}: BundleGen's mounts we lack: {missing:?}"
        );
        let extra: Vec<Value> = our_mounts
            .difference(&their_mounts)
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        let backed: BTreeSet<String> = extra
            .iter()
            .map(|m| {
                assert_eq!(m["type"], "bind", "{template}: {m}");
                assert_eq!(m["options"], json!(LIBRARY_MOUNT_OPTIONS), "{template}: {m}");
                m["destination"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            backed, removed,
            "{template}: each removed file is backed by a mount at its path"
        );
        assert!(
            !removed.is_empty(),
            "{template}: we match libraries beyond BundleGen (libepoxy)"
        );

        // Deliberate fixes, each checked for what it is.
        let plugins = ours["rdkPlugins"].as_object_mut().unwrap();
        let logging = plugins.get_mut("logging").unwrap();
        assert_eq!(
            logging["data"]["fileOptions"]["limit"], -1,
            "{template}: unlimited log, stated (docs/bundlegen-compat.md#logging)"
        );
        logging["data"]["fileOptions"].as_object_mut().unwrap().remove("limit");
        if let Some(storage) = plugins.get_mut("storage") {
            for (dynamic, bundlegen) in storage["data"]["dynamic"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .zip(theirs["rdkPlugins"]["storage"]["data"]["dynamic"].as_array().unwrap())
            {
                // {type: bind, options: [rbind, rw]} becomes MS_BIND|MS_REC flags (docs/bundlegen-compat.md#storage).
                assert_eq!(bundlegen["options"], json!(["rbind", "rw"]));
                assert_eq!(dynamic["flags"], 4096 | 16384, "{template}");
                *dynamic = bundlegen.clone();
            }
        }
        let ours_without_mounts: BTreeMap<&String, &Value> = ours
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "mounts")
            .collect();
        let theirs_without_mounts: BTreeMap<&String, &Value> = theirs
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "mounts")
            .collect();
        assert_eq!(
            ours_without_mounts, theirs_without_mounts,
            "{template}: config differs beyond the listed fixes"
        );
    }
}

#[test]
fn templates_bundlegen_produced_broken_bundles_for_are_refused() {
    // Graphics on, but neither the box's library list nor gfxLibs has EGL,
    // GLES or wayland-egl: BundleGen's bundle could not start.
    let tmp = tempfile::tempdir().unwrap();
    let output = generate("rpi4_reference_bb_kirkstone", &tmp.path().join("b"), &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for lib in ["libEGL.so.1", "libGLESv2.so.2", "libwayland-egl.so.1"] {
        assert!(
            stderr.contains(&format!("needs {lib}, which neither the image nor the box provides")),
            "{stderr}"
        );
    }
    // Another architecture: BundleGen never checked (the image is arm).
    for template in ["bpir4_reference", "rpi4_64_reference_bb_kirkstone", "vagrant"] {
        let output = generate(template, &tmp.path().join(template), &[]);
        assert_eq!(output.status.code(), Some(2), "{template}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("the image is built for linux/arm"),
            "{template}"
        );
        assert!(!tmp.path().join(template).exists());
    }
}

#[test]
fn crun_mode_and_full_metadata_validate_too() {
    let validator = dobby_validator();
    let tmp = tempfile::tempdir().unwrap();
    // Every metadata feature (fixed to name real capabilities), on the test template.
    let mut metadata: Value =
        serde_json::from_slice(&fs::read(conformance().join("bundlegen/app_metadata/full-features.json")).unwrap())
            .unwrap();
    metadata["capabilities"]["add"] = json!(["CAP_SYS_NICE"]);
    metadata["storage"]["temp"][0]["path"] = json!("/home/scratch");
    metadata["network"]["dnsmasq"] = json!("true");
    metadata.as_object_mut().unwrap().remove("hardware");
    let metadata_file = tmp.path().join("full.json");
    fs::write(&metadata_file, metadata.to_string()).unwrap();
    let out = tmp.path().join("full");
    let output = generate(
        "rpi3_reference_vc4_dunfell_test",
        &out,
        &["-a", metadata_file.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config: Value = serde_json::from_slice(&fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_valid_for_dobby(&validator, &config, "full-features");
    let plugins = config["rdkPlugins"].as_object().unwrap();
    let names: Vec<&String> = plugins.keys().collect();
    assert_eq!(
        names,
        [
            "devicemapper",
            "gpu",
            "ipc",
            "logging",
            "minidump",
            "networking",
            "oomcrash",
            "storage",
            "thunder"
        ]
    );
    assert_eq!(
        plugins["networking"]["data"]["dnsmasq"], true,
        "\"true\" written as a boolean"
    );
    assert_eq!(plugins["gpu"]["data"]["memory"], 23);
    assert_eq!(plugins["thunder"]["dependsOn"], json!(["networking"]));
    let loopback = plugins["storage"]["data"]["loopback"].as_array().unwrap();
    assert_eq!(loopback.len(), 2);
    assert_eq!(loopback[0]["flags"], 14);
    assert_eq!(
        loopback[0]["imgsize"],
        60 << 20,
        "60M, within the template's 100M maximum"
    );
    let caps = config["process"]["capabilities"]["bounding"].as_array().unwrap();
    assert!(caps.contains(&json!("CAP_SYS_NICE")) && !caps.contains(&json!("CAP_NET_RAW")));
    // The image's /appmetadata.json stays when -a is given, as in BundleGen's CLI.
    assert!(out.join("rootfs/appmetadata.json").exists());

    let crun = tmp.path().join("crun");
    let output = generate("rpi3_reference_vc4_dunfell", &crun, &["-u"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config: Value = serde_json::from_slice(&fs::read(crun.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["ociVersion"], "1.0.2");
    assert!(config.get("rdkPlugins").is_none());
    assert_ne!(config["process"]["args"][0], "/usr/libexec/DobbyInit");
    assert!(
        config["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| !m.to_string().contains("X-"))
    );
}

/// Where the box's libc serves the app, nothing of the image's glibc build
/// stays beside it: not the modules libc loads itself (libnss_*), nor the
/// members no program links (BundleGen moved only linked ones).
#[test]
fn the_glibc_family_moves_as_one_with_every_sample_metadata() {
    let metadata_dir = conformance().join("bundlegen/app_metadata");
    let templates = [
        "rpi3_reference",
        "rpi3_reference_dunfell",
        "rpi3_reference_vc4_dunfell",
        "rpi4_reference_dunfell",
    ];
    let mut moved = 0;
    for template in templates {
        for metadata in ["helloworld.json", "wayland-egl-test.json", "youi_reference.json"] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("bundle");
            let metadata_file = metadata_dir.join(metadata).display().to_string();
            let output = generate(template, &out, &["--format", "dir", "-a", &metadata_file]);
            if !output.status.success() {
                continue; // incompatible with this platform
            }
            let lib = out.join("rootfs/lib");
            if lib.join("libc-2.31.so").exists() {
                continue; // the image's glibc serves the app here
            }
            moved += 1;
            let left: Vec<String> = dir_names(&lib)
                .into_iter()
                .filter(|name| name.ends_with("-2.31.so"))
                .collect();
            assert!(
                left.is_empty(),
                "{template} with {metadata}: {left:?} stayed in the image"
            );
        }
    }
    assert!(moved > 0, "some pair takes libc from the box");
}

/// A generated bundle (libraries taken out, mount points made, networking
/// files written) is the same wherever its rootfs was assembled: on disk
/// (`--format dir`), in memory and written out while the archive is
/// compressed (the default), or in memory for the archive alone.
#[test]
fn the_bundle_does_not_depend_on_where_the_rootfs_was_assembled() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name).join("bundle");
        let mut args = vec!["-r"];
        args.extend(extra);
        let output = generate("rpi3_reference_vc4_dunfell", &out, &args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        out
    };
    let on_disk = run("disk", &["--format", "dir"]);
    let written_out = run("memory", &[]);
    let archive_only = run("archive", &["--archive-only"]);
    assert_eq!(snapshot(&on_disk.join("rootfs")), snapshot(&written_out.join("rootfs")));
    assert_eq!(
        fs::read_to_string(on_disk.join("config.json")).unwrap(),
        fs::read_to_string(written_out.join("config.json")).unwrap()
    );
    assert!(!archive_only.exists());
    let archive = |out: &Path| fs::read(out.with_file_name("bundle.tar.gz")).unwrap();
    assert!(archive(&written_out) == archive(&archive_only), "the archives differ");
}
