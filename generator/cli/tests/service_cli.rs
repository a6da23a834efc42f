//! The commands that talk to a running service (`bundlegen platform`,
//! `app`, `token`) against a real `bundlegen serve`: what a platform team
//! and an operator type, and what they read back.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use support::service::Server;
use support::*;

/// `bundlegen ARGS` against `server` with the token in `token_file`.
fn remote(server: &Server, token_file: &Path, args: &[&str]) -> Output {
    bundlegen()
        .args(args)
        .env("BUNDLEGEN_SERVER", &server.url)
        .env("BUNDLEGEN_TOKEN_FILE", token_file)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_platform_team_and_an_operator_use_the_service_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("service"), &["--local-images", "/"]);
    let admin = dir.path().join("service/admin.token");
    let templates = conformance().join("bundlegen/templates");
    let template = templates.join("rpi3_reference_vc4_dunfell.json");
    let libs = templates.join("rpi3_reference_vc4_dunfell_libs.json");

    // The operator makes a platform-team token into a file.
    let team = dir.path().join("team.token");
    let created = stdout(&remote(
        &server,
        &admin,
        &[
            "token",
            "create",
            "ci",
            "--role",
            "platform-team",
            "--out",
            team.to_str().unwrap(),
        ],
    ));
    assert!(created.contains("written to"), "{created}");
    assert!(
        std::fs::metadata(&team).unwrap().permissions().mode() & 0o077 == 0,
        "the token file is the owner's only"
    );
    let taken = remote(&server, &admin, &["token", "create", "ci", "--role", "platform-team"]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("token_name_taken"));

    // The team uploads the template, then the library list: two versions.
    let first = stdout(&remote(
        &server,
        &team,
        &["platform", "upload", "mybox", template.to_str().unwrap()],
    ));
    assert!(first.contains("mybox is now version 1"), "{first}");
    assert!(first.contains("warning:") && first.contains("platformName"), "{first}");
    let second = stdout(&remote(
        &server,
        &team,
        &["platform", "upload", "mybox", "--libs", libs.to_str().unwrap()],
    ));
    assert!(second.contains("mybox is now version 2"), "{second}");
    let listed = stdout(&remote(&server, &team, &["platform", "list"]));
    assert!(
        listed.starts_with("PLATFORM") && listed.contains("mybox     2"),
        "{listed}"
    );
    let versions = stdout(&remote(&server, &team, &["platform", "versions", "mybox"]));
    assert!(versions.contains("1        template  accepted"), "{versions}");
    let diff = stdout(&remote(&server, &team, &["platform", "diff", "mybox"]));
    assert!(diff.starts_with("mybox: version 1 to 2"), "{diff}");
    assert!(diff.contains("library added: /lib/libc.so.6"), "{diff}");
    let shown = stdout(&remote(&server, &team, &["platform", "show", "mybox"]));
    assert!(shown.contains("libraries: 1022 from libs"), "{shown}");
    let policy = stdout(&remote(
        &server,
        &team,
        &["platform", "policy", "mybox", "--keep-versions", "5"],
    ));
    assert_eq!(policy.trim(), "mybox: autoAccept false, keepVersions 5");

    // An app version, and its bundle as a box would look it up.
    let image = format!(
        "oci:{}:latest",
        conformance()
            .join("bundlegen/images/dac-image-wayland-egl-test-oci")
            .display()
    );
    let registered = stdout(&remote(
        &server,
        &team,
        &[
            "app",
            "register",
            "com.rdk.wayland-egl-test",
            "1.0.0",
            "--image",
            &image,
        ],
    ));
    assert!(
        registered.starts_with("com.rdk.wayland-egl-test 1.0.0: oci:"),
        "{registered}"
    );
    let found = stdout(&remote(
        &server,
        &team,
        &[
            "app",
            "lookup",
            "com.rdk.wayland-egl-test",
            "1.0.0",
            "--platform",
            "mybox",
        ],
    ));
    assert!(
        found.starts_with("bundle b-") && found.contains("/content ("),
        "{found}"
    );
    let json = stdout(&remote(&server, &team, &["app", "list", "--json"]));
    let apps: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(apps["apps"][0]["appId"], "com.rdk.wayland-egl-test");

    // Refusals name the service's code; a team token cannot make tokens.
    let refused = remote(&server, &team, &["token", "list"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403 forbidden"));
    let tokens = stdout(&remote(&server, &admin, &["token", "list"]));
    let ci = tokens
        .lines()
        .find(|l| l.contains(" ci "))
        .expect("the ci token is listed");
    let id = ci.split_whitespace().next().unwrap();
    stdout(&remote(&server, &admin, &["token", "revoke", id]));
    let revoked = remote(&server, &team, &["platform", "list"]);
    assert!(
        String::from_utf8_lossy(&revoked.stderr).contains("401"),
        "revoked at once"
    );
    assert!(
        !stdout(&remote(&server, &admin, &["token", "list"])).contains(id),
        "no longer listed"
    );
    let missing = bundlegen()
        .args(["platform", "list"])
        .env_remove("BUNDLEGEN_SERVER")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--server URL"));
}

#[test]
fn operators_make_keys_and_a_bad_one_stops_the_start_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing-key.p8");
    let made = stdout(&bundlegen().args(["key", "generate"]).arg(&key).output().unwrap());
    assert_eq!(made.trim().len(), 44, "a base64 ed25519 public key: {made}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let shown = stdout(&bundlegen().args(["key", "show"]).arg(&key).output().unwrap());
    assert_eq!(shown, made);
    let again = bundlegen().args(["key", "generate"]).arg(&key).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "a key is never replaced");
    assert_eq!(
        stdout(&bundlegen().args(["key", "show"]).arg(&key).output().unwrap()),
        made
    );

    // openssl's keys serve as they are; the service signs with the one given.
    let pem = dir.path().join("openssl.pem");
    assert!(
        std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()
            .unwrap()
            .success()
    );
    let from_openssl = stdout(&bundlegen().args(["key", "show"]).arg(&pem).output().unwrap());
    let data = dir.path().join("service");
    let server = Server::start(&data, &["--signing-key", pem.to_str().unwrap()]);
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let served: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let answer = support::service::client()
            .get(server.url("/v1/signing-key"))
            .bearer_auth(admin.trim())
            .send()
            .await
            .unwrap();
        answer.json().await.unwrap()
    });
    assert_eq!(served["publicKey"], from_openssl.trim());
    drop(server);

    // A key that is no key: exit 78 (systemd does not restart), nothing written.
    let garbage = dir.path().join("garbage.p8");
    std::fs::write(&garbage, "not a key").unwrap();
    let fresh = dir.path().join("fresh");
    let refused = bundlegen()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&fresh)
        .arg("--signing-key")
        .arg(&garbage)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("garbage.p8"));
    assert!(!fresh.exists(), "no data directory, database or key was made");
}

/// The settings file the systemd units read: every flag it shows (set or
/// commented out) is one the commands take.
#[test]
fn the_shipped_unit_settings_are_accepted() {
    let env = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/bundlegen.env")).unwrap();
    let mut checked = 0;
    for line in env.lines().map(|l| l.trim_start_matches('#')) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let command = match key {
            "BUNDLEGEN_SERVE_ARGS" => "serve",
            "BUNDLEGEN_WORKER_ARGS" => "worker",
            _ => continue,
        };
        let output = bundlegen()
            .arg(command)
            .args(value.split_whitespace())
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{key}={value}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
    for unit in ["bundlegen-serve", "bundlegen-worker"] {
        let text =
            std::fs::read_to_string(format!("{}/../systemd/{unit}.service", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        let flags: Vec<&str> = exec
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with('$'))
            .collect();
        let output = bundlegen().args(&flags).arg("--help").output().unwrap();
        assert!(output.status.success(), "{unit}: {exec}");
    }
}
