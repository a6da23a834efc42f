//! The `bundlegen generate` and `validate` command lines: BundleGen's
//! environment variables and exit codes, messages that say what to fix.

mod support;

use std::fs;
use std::process::Command;

use serde_json::json;
use support::*;

fn templates() -> String {
    conformance().join("bundlegen/templates").display().to_string()
}

fn image() -> String {
    format!(
        "oci:{}",
        conformance()
            .join("bundlegen/images/dac-image-wayland-egl-test-oci")
            .display()
    )
}

fn stderr_of(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn environment_variables_stand_in_for_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(bundlegen()
        .env("RDK_PLATFORM", "rpi3_reference_vc4_dunfell")
        .env("RDK_PLATFORM_SEARCHPATH", templates())
        .env("FILE_FORMAT_IPK", "true")
        .current_dir(tmp.path())
        .args(["generate", &image(), "bundle"]));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("bundle.ipk sha256:"), "{printed}");
    let control = run(Command::new("sh")
        .current_dir(tmp.path())
        .args(["-c", "ar p bundle.ipk control.tar.gz | tar -xzO control"]));
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(control.contains("Package: com.rdk.wayland-egl-test\n"), "{control}");
    assert!(
        control.contains("Version: 1.0.0\n") && control.contains("Architecture: armv7\n"),
        "{control}"
    );
}

#[test]
fn missing_parent_directories_of_the_output_are_made() {
    let tmp = tempfile::tempdir().unwrap();
    run(bundlegen().current_dir(tmp.path()).args([
        "generate",
        "-p",
        "rpi3_reference_vc4_dunfell",
        "-s",
        &templates(),
        &image(),
        "out/apps/wayland",
    ]));
    assert!(tmp.path().join("out/apps/wayland/config.json").is_file());
    assert!(tmp.path().join("out/apps/wayland.tar.gz").is_file());
}

#[test]
fn every_decision_is_explained_at_vv() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = stderr_of(
        bundlegen()
            .args([
                "-vv",
                "generate",
                "-p",
                "rpi3_reference_vc4_dunfell",
                "-s",
                &templates(),
                &image(),
            ])
            .arg(tmp.path().join("b")),
    );
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "/usr/lib/libEGL.so.1: from the box (/usr/lib/libEGL.so.1): a graphics library of the platform",
        "/lib/libm.so.6: from the box: glibc's family follows /lib/libc.so.6",
        "libepoxy.so.0: from the box: /usr/lib/libepoxy.so.0 defines every version the image needs",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

#[test]
fn exit_codes_and_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    // 1: a template that does not exist, named with what exists.
    let (code, stderr) = stderr_of(
        bundlegen()
            .args(["generate", "-p", "rpi5", "-s", &templates(), &image()])
            .arg(&out),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("platform template \"rpi5\" not found") && stderr.contains("rpi3_reference_vc4_dunfell"),
        "{stderr}"
    );
    // 1: metadata with a bad field, named by file and JSON path.
    let metadata = tmp.path().join("app.json");
    fs::write(&metadata, json!({"id": "com.x", "type": "t", "graphics": "yes", "network": {"type": "open"}, "storage": {}, "resources": {"ram": "1M"}}).to_string()).unwrap();
    let (code, stderr) = stderr_of(
        bundlegen()
            .args(["generate", "-p", "rpi3_reference", "-s", &templates(), "-a"])
            .arg(&metadata)
            .arg(image())
            .arg(&out),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("{}: graphics: invalid type", metadata.display())),
        "{stderr}"
    );
    // 1: an app id Dobby would refuse.
    let (code, stderr) = stderr_of(
        bundlegen()
            .args([
                "generate",
                "-p",
                "rpi3_reference",
                "-s",
                &templates(),
                "-x",
                "../escape",
                &image(),
            ])
            .arg(&out),
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--appid \"../escape\""), "{stderr}");
    // 2: incompatible.
    let (code, stderr) = stderr_of(
        bundlegen()
            .args(["generate", "-p", "vagrant", "-s", &templates(), &image()])
            .arg(&out),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        !out.exists() && dir_names(tmp.path()) == ["app.json"],
        "nothing left behind: {:?}",
        dir_names(tmp.path())
    );
    // --appid changes the id everywhere it is used.
    run(bundlegen()
        .args([
            "generate",
            "-p",
            "rpi3_reference",
            "-s",
            &templates(),
            "-x",
            "com.example.renamed",
            &image(),
        ])
        .arg(&out));
    let config = fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("/var/log/com.example.renamed.log") && !config.contains("wayland-egl-test.log"));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    support::dobby::assert_valid_for_dobby(&support::dobby::dobby_validator(), &config, "the renamed bundle");
}

#[test]
fn validate_checks_files_without_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    for template in ["rpi3_reference", "rpi3_reference_vc4_dunfell_test", "vagrant"] {
        let output = run(bundlegen().args(["validate", "-p", template, "-s", &templates()]));
        assert!(String::from_utf8_lossy(&output.stdout).contains(": ok"), "{template}");
    }
    let broken = tmp.path().join("broken");
    fs::create_dir(&broken).unwrap();
    fs::write(
        broken.join("box.json"),
        json!({"platformName": "b", "os": "linux", "arch": {"arch": "arm"},
        "rdk": {"version": "1", "supportedFeatures": []}, "hardware": {"graphics": false},
        "network": {"options": ["open"]}, "gpu": {"gfxLibs": [{"src": "libEGL.so", "dst": "/usr/lib/libEGL.so"}]}})
        .to_string(),
    )
    .unwrap();
    let (code, stderr) = stderr_of(bundlegen().args(["validate", "-p", "box", "-s"]).arg(&broken));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("box.json: gpu.gfxLibs[0].src: \"libEGL.so\" must be an absolute path"),
        "{stderr}"
    );

    // Metadata checked against a platform: compatibility, exit 2.
    let metadata = conformance().join("bundlegen/app_metadata/wayland-egl-test.json");
    let (code, stderr) = stderr_of(
        bundlegen()
            .args(["validate", "-p", "vagrant", "-s", &templates(), "-a"])
            .arg(&metadata),
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("needs graphics"), "{stderr}");
    let output = run(bundlegen()
        .args(["validate", "-p", "rpi3_reference", "-s", &templates(), "-a"])
        .arg(&metadata));
    assert!(String::from_utf8_lossy(&output.stdout).contains("com.rdk.wayland-egl-test can run on rpi3_reference"));
    let (code, _) = stderr_of(bundlegen().arg("validate"));
    assert_eq!(code, Some(1), "nothing to check is an error");
}

#[test]
fn validate_says_what_a_template_lacks_and_which_name_it_carries() {
    let tmp = tempfile::tempdir().unwrap();
    // A copy of a template under another name, without its library list.
    let original = fs::read(conformance().join("bundlegen/templates/rpi3_reference.json")).unwrap();
    fs::write(tmp.path().join("mybox.json"), original).unwrap();
    let output = run(bundlegen().args(["validate", "-p", "mybox", "-s"]).arg(tmp.path()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("platform mybox (platformName rpi3_reference): ok"),
        "{stdout}"
    );
    assert!(stderr.contains("says platformName \"rpi3_reference\""), "{stderr}");
    assert!(stderr.contains("the box's libraries are unknown"), "{stderr}");
    // generate says so too: every library stays in the image.
    let (_, stderr) = stderr_of(
        bundlegen()
            .args(["generate", "-y", "-p", "mybox", "-s"])
            .arg(tmp.path())
            .arg(format!("{}:latest", image()))
            .arg(tmp.path().join("out")),
    );
    assert!(stderr.contains("the box's libraries are unknown"), "{stderr}");

    // With its library list beside it, neither is said.
    fs::copy(
        conformance().join("bundlegen/templates/rpi3_reference_libs.json"),
        tmp.path().join("mybox_libs.json"),
    )
    .unwrap();
    let output = run(bundlegen().args(["validate", "-p", "mybox", "-s"]).arg(tmp.path()));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("libraries are unknown"));
}

#[test]
fn push_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("com.example.app.tar.gz");
    std::fs::write(&bundle, b"not sent").unwrap();
    let token = dir.path().join("dev-token");
    let push = |device: &str| {
        stderr_of(
            bundlegen()
                .args(["push", "--device", device, "--token"])
                .arg(&token)
                .arg(&bundle),
        )
    };
    let (code, stderr) = push("127.0.0.1:9");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("dev-token"),
        "the missing token file is named: {stderr}"
    );

    std::fs::write(&token, "t0ken\n").unwrap();
    // Nobody listens on the discard port: the error names the endpoint (the
    // token check before the body) and why.
    let (code, stderr) = push("http://127.0.0.1:9");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("http://127.0.0.1:9/v1/push") && stderr.contains("Connection refused"),
        "{stderr}"
    );
    let (code, stderr) = push("box/with/path");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--device \"box/with/path\""), "{stderr}");
}
