//! Every guide works as written: its `sh` blocks run in order, as one
//! shell script, in a fresh directory holding what the guide says the
//! reader brings (an image, templates), with the workspace's binaries on
//! the PATH. A block right after `<!-- not run: WHY -->` is skipped (a
//! command for a real box). A guide that rots fails here.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

/// The `sh` blocks of a guide, in order, without the ones marked not run.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().peekable();
    let mut skip_next = false;
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("<!-- not run:") {
            skip_next = true;
            continue;
        }
        if line.trim() == "```sh" {
            let mut block = String::new();
            for inner in lines.by_ref() {
                if inner.trim() == "```" {
                    break;
                }
                block.push_str(inner);
                block.push('\n');
            }
            if !std::mem::take(&mut skip_next) {
                blocks.push(block);
            }
        } else if !line.trim().is_empty() && !line.trim_start().starts_with("```") {
            // Only a marker right before a block counts.
            skip_next &= line.trim().is_empty();
        }
    }
    blocks
}

/// The directory of the workspace's binaries, with the on-box ones built
/// (the generator's are built for its tests).
fn binaries() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_bundlegen"))
        .parent()
        .unwrap()
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "stb-agent",
            "-p",
            "dobby-double",
            "-p",
            "platform-probe",
            "--features",
            "platform-probe/cli",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the on-box binaries build");
    dir
}

/// Runs `guide`'s blocks in `dir`; returns its output, failing with it.
fn run_guide(guide: &str, dir: &Path) -> String {
    run_guide_with(guide, dir, &[])
}

/// [`run_guide`] with `tools` (a directory of stand-ins) first on the PATH.
fn run_guide_with(guide: &str, dir: &Path, tools: &[&Path]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/guides")
        .join(guide);
    let script = shell_blocks(&std::fs::read_to_string(&path).unwrap()).join("\n");
    let mut path_var: Vec<String> = tools.iter().map(|t| t.display().to_string()).collect();
    path_var.push(binaries().display().to_string());
    path_var.push(std::env::var("PATH").unwrap_or_default());
    let path_var = path_var.join(":");
    // Its own session, so whatever it leaves running is ended with it.
    let child = Command::new("setsid")
        .args(["bash", "-euo", "pipefail", "-c", &script])
        .current_dir(dir)
        .env("PATH", path_var)
        .env("HOME", dir)
        .env_remove("BUNDLEGEN_LOG")
        .env_remove("RDK_PLATFORM")
        .env_remove("RDK_PLATFORM_SEARCHPATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let session = nix::unistd::Pid::from_raw(child.id() as i32);
    // Read the output on threads and wait for the shell alone: a server the
    // guide left running (or a failed step left behind) holds the pipes open.
    let mut child = child;
    let readers = [
        read_all(child.stdout.take().unwrap()),
        read_all(child.stderr.take().unwrap()),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::killpg(session, nix::sys::signal::Signal::SIGKILL);
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap());
    let status = status.expect("the guide finished within 15 minutes");
    let output = std::process::Output { status, stdout, stderr };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{guide} failed:\n{text}");
    text
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// What a reader of a guide brings: BundleGen's reference templates in
/// `./templates`, an app image in `./my-image` and a box's firmware image
/// in `./mybox-image` (the conformance image serves as both).
fn reader_files(dir: &Path) {
    let templates = dir.join("templates");
    std::fs::create_dir(&templates).unwrap();
    for name in [
        "rpi3_reference_vc4_dunfell.json",
        "rpi3_reference_vc4_dunfell_libs.json",
    ] {
        std::fs::copy(
            conformance().join("bundlegen/templates").join(name),
            templates.join(name),
        )
        .unwrap();
    }
    for image in ["my-image", "mybox-image"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(conformance().join("bundlegen/images/dac-image-wayland-egl-test-oci"))
            .arg(dir.join(image))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[test]
fn blocks_marked_not_run_are_skipped() {
    let markdown =
        "text\n```sh\none\n```\n<!-- not run: on a box -->\n```sh\ntwo\n```\n```toml\nx\n```\n```sh\nthree\n```\n";
    assert_eq!(shell_blocks(markdown), ["one\n", "three\n"]);
}

#[test]
fn the_app_developer_guide_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    reader_files(dir.path());
    let output = run_guide("app-developer.md", dir.path());
    assert!(output.contains("com.example.hello can run on"), "{output}");
    assert!(output.contains("installed") && output.contains("launched"), "{output}");
    assert!(dir.path().join("out/com.example.hello.tar.gz").exists());
}

#[test]
fn the_platform_team_guide_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    reader_files(dir.path());
    let output = run_guide("platform-team.md", dir.path());
    assert!(output.contains("mybox is now version 2"), "{output}");
    assert!(output.contains("mybox: version 1 to 2"), "{output}");
    assert!(output.contains("bundle b-"), "{output}");
}

/// `sudo` where the tests run as root without it: `sudo -u USER CMD` as
/// that user, `sudo CMD` as it is.
fn sudo_as_root(dir: &Path) -> PathBuf {
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let shim = tools.join("sudo");
    std::fs::write(
        &shim,
        "#!/bin/sh\nif [ \"$1\" = -u ]; then user=$2; shift 2; exec runuser -u \"$user\" -- \"$@\"; fi\nexec \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    tools
}

/// Removes what an earlier run of the operator guide made in PostgreSQL and
/// RabbitMQ (a fresh machine has none of it).
fn forget_operator_backends() {
    for sql in [
        "DROP DATABASE IF EXISTS bundlegen_prod",
        "DROP ROLE IF EXISTS bundlegen_prod",
    ] {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", "psql", "-qc", sql])
            .status();
    }
    for args in [["delete_vhost", "bundlegen_prod"], ["delete_user", "bundlegen_prod"]] {
        let _ = Command::new("rabbitmqctl")
            .arg("-q")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn the_operator_guide_works_as_written() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the operator guide makes a PostgreSQL role and a RabbitMQ user (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    forget_operator_backends();
    let tools = sudo_as_root(dir.path());
    let output = run_guide_with("operator.md", dir.path(), &[&tools]);
    forget_operator_backends();
    assert!(output.contains("the first admin token is in"), "{output}");
    assert!(
        output.contains("imported 0 platforms (0 versions), 0 apps, 3 tokens"),
        "{output}"
    );
    assert!(output.contains("rdk-team"), "{output}");
}
