//! Every image source BundleGen users name, read by the real `bundlegen`
//! binary: OCI layouts (tags, digests, indexes), OCI archives, docker-archive
//! files written by skopeo; and refusal of corrupt images.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::*;

fn unpack_dir(image: &str, out: &Path, extra: &[&str]) -> Command {
    let mut command = bundlegen();
    command
        .arg("unpack")
        .args(["--format", "dir"])
        .args(extra)
        .arg(image)
        .arg(out);
    command
}

fn two_layer_layout(dir: &Path) -> LayoutBuilder {
    let base = LayerBuilder::default()
        .dir("etc", 0o755)
        .file("etc/os-release", b"ID=test\n", 0o644)
        .tar();
    let app = LayerBuilder::default()
        .dir("bin", 0o755)
        .file("bin/app", b"#!/bin/sh\necho app\n", 0o755)
        .tar();
    simple_layout(dir, &[(base, Compress::Gzip), (app, Compress::Gzip)])
}

#[test]
fn oci_layouts_by_tag_default_tag_and_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = two_layer_layout(&tmp.path().join("layout"));
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let layout_dir = layout.dir.display().to_string();

    for (n, image) in [
        format!("oci:{layout_dir}"),
        format!("oci:{layout_dir}:latest"),
        format!("oci:{layout_dir}@{digest}"),
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("out{n}"));
        run(&mut unpack_dir(image, &out, &["--arch", "amd64"]));
        assert_eq!(
            fs::read(out.join("rootfs/bin/app")).unwrap(),
            b"#!/bin/sh\necho app\n",
            "{image}"
        );
        let config: serde_json::Value = serde_json::from_slice(&fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["process"]["args"], json!(["/bin/app"]), "{image}");
    }

    let err = run_failing(&mut unpack_dir(
        &format!("oci:{layout_dir}:v9"),
        &tmp.path().join("x"),
        &[],
    ));
    assert!(err.contains("tag \"v9\"") && err.contains("it has: latest"), "{err}");
    let err = run_failing(&mut unpack_dir(
        &format!("oci:{}", tmp.path().display()),
        &tmp.path().join("x"),
        &[],
    ));
    assert!(err.contains("not an OCI image layout"), "{err}");
    let err = run_failing(&mut unpack_dir("nonsense", &tmp.path().join("x"), &[]));
    assert!(err.contains("expected TRANSPORT:REFERENCE"), "{err}");
}

#[test]
fn oci_archives_are_read_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = two_layer_layout(&tmp.path().join("layout"));
    let archive = tmp.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout.dir)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    for (n, suffix) in ["", ":latest"].iter().enumerate() {
        let out = tmp.path().join(format!("out{n}"));
        run(&mut unpack_dir(
            &format!("oci-archive:{}{suffix}", archive.display()),
            &out,
            &[],
        ));
        assert!(out.join("rootfs/etc/os-release").is_file());
    }
}

#[test]
fn docker_archives_written_by_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = two_layer_layout(&tmp.path().join("layout"));
    let archive = tmp.path().join("docker.tar");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy"])
        .arg(format!("oci:{}:latest", layout.dir.display()))
        .arg(format!("docker-archive:{}:rdk/app:1.0", archive.display())));
    for (n, suffix) in ["", ":rdk/app:1.0", ":@0"].iter().enumerate() {
        let out = tmp.path().join(format!("out{n}"));
        run(&mut unpack_dir(
            &format!("docker-archive:{}{suffix}", archive.display()),
            &out,
            &[],
        ));
        assert_eq!(
            fs::read(out.join("rootfs/bin/app")).unwrap(),
            b"#!/bin/sh\necho app\n",
            "{suffix}"
        );
    }
    let err = run_failing(&mut unpack_dir(
        &format!("docker-archive:{}:other:2", archive.display()),
        &tmp.path().join("x"),
        &[],
    ));
    assert!(err.contains("other:2") && err.contains("rdk/app:1.0"), "{err}");
}

#[test]
fn indexes_pick_the_platform_users_name() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = LayoutBuilder::new(&tmp.path().join("layout"));
    let platforms = [
        ("amd64", None),
        ("arm64", Some("v8")),
        ("arm", Some("v7")),
        ("arm", Some("v6")),
    ];
    let manifests = platforms
        .iter()
        .map(|(arch, variant)| {
            let name = format!("{arch}{}", variant.unwrap_or(""));
            let layer = LayerBuilder::default().file("platform", name.as_bytes(), 0o644).tar();
            layout.image(&[(layer, Compress::Gzip)], arch, *variant, json!({}))
        })
        .collect();
    let index = layout.index(manifests);
    let layout = layout.tag(index, "latest");
    let image = format!("oci:{}", layout.dir.display());
    let cases = [
        (vec!["--arch", "x86_64"], "amd64"),
        (vec!["--arch", "aarch64"], "arm64v8"),
        (vec!["--arch", "arm64", "--variant", "v8"], "arm64v8"),
        (vec!["--arch", "armv7"], "armv7"),
        (vec!["--arch", "arm", "--variant", "v7"], "armv7"),
        (vec!["--arch", "armv6"], "armv6"),
    ];
    for (n, (args, expected)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out{n}"));
        run(&mut unpack_dir(&image, &out, args));
        assert_eq!(
            fs::read_to_string(out.join("rootfs/platform")).unwrap(),
            *expected,
            "{args:?}"
        );
    }
    let err = run_failing(&mut unpack_dir(&image, &tmp.path().join("x"), &["--arch", "riscv64"]));
    assert!(
        err.contains("no manifest for linux/riscv64")
            && err.contains("linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6"),
        "{err}"
    );
}

#[test]
fn every_layer_compression_gives_the_same_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut snapshots = Vec::new();
    for (n, compress) in [Compress::Gzip, Compress::Zstd, Compress::None].into_iter().enumerate() {
        let layer = LayerBuilder::default()
            .dir("usr", 0o755)
            .file("usr/data", &vec![7u8; 300_000], 0o600)
            .tar();
        let layout = simple_layout(&tmp.path().join(format!("layout{n}")), &[(layer, compress)]);
        let out = tmp.path().join(format!("out{n}"));
        run(&mut unpack_dir(&format!("oci:{}", layout.dir.display()), &out, &[]));
        snapshots.push(snapshot(&out.join("rootfs")));
    }
    assert_eq!(snapshots[0], snapshots[1]);
    assert_eq!(snapshots[0], snapshots[2]);
}

#[test]
fn corrupt_images_are_refused_and_leave_nothing_behind() {
    type Corruption = fn(&LayoutBuilder, &serde_json::Value);
    let cases: Vec<(&str, Corruption, &str)> = vec![
        (
            "flipped byte in a layer",
            |layout, manifest| {
                let path = layout.blob_path(manifest["layers"][0]["digest"].as_str().unwrap());
                let mut data = fs::read(&path).unwrap();
                let last = data.len() - 12;
                data[last] ^= 0xff;
                fs::write(&path, data).unwrap();
            },
            // Inflate notices first (gzip CRC), else the digest check would.
            "layer 1 of 2",
        ),
        (
            "truncated layer",
            |layout, manifest| {
                let path = layout.blob_path(manifest["layers"][0]["digest"].as_str().unwrap());
                let data = fs::read(&path).unwrap();
                fs::write(&path, &data[..data.len() / 2]).unwrap();
            },
            "descriptor says",
        ),
        (
            "config edited",
            |layout, manifest| {
                let path = layout.blob_path(manifest["config"]["digest"].as_str().unwrap());
                let text = fs::read_to_string(&path).unwrap().replace("amd64", "arm64");
                fs::write(&path, text).unwrap();
            },
            "digest mismatch",
        ),
    ];
    for (name, corrupt, message) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let layout = two_layer_layout(&tmp.path().join("layout"));
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
        let manifest_path = layout.blob_path(index["manifests"][0]["digest"].as_str().unwrap());
        let manifest: serde_json::Value = serde_json::from_slice(&fs::read(manifest_path).unwrap()).unwrap();
        corrupt(&layout, &manifest);
        let out = tmp.path().join("out");
        let mut command = bundlegen();
        command
            .arg("unpack")
            .arg(format!("oci:{}", layout.dir.display()))
            .arg(&out);
        let err = run_failing(&mut command);
        assert!(err.contains(message), "{name}: {err}");
        assert_eq!(
            dir_names(tmp.path()),
            vec!["layout"],
            "{name}: outputs or staging left behind"
        );
    }
}

#[test]
fn wrong_diff_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = LayoutBuilder::new(&tmp.path().join("layout"));
    let layer = LayerBuilder::default().file("a", b"a", 0o644).tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer).unwrap();
    let blob = gz.finish().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(b"something else")]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layout.blob(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layout.blob(&blob), "size": blob.len()}],
    }))
    .unwrap();
    let descriptor = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": layout.blob(&manifest), "size": manifest.len()});
    let layout = layout.tag(descriptor, "latest");
    let mut command = bundlegen();
    command
        .arg("unpack")
        .arg(format!("oci:{}", layout.dir.display()))
        .arg(tmp.path().join("out"));
    let err = run_failing(&mut command);
    assert!(err.contains("diff_id") && err.contains("digest mismatch"), "{err}");
    assert_eq!(dir_names(tmp.path()), vec!["layout"]);
}
