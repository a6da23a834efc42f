//! The probe over a crafted ARM box rootfs with the traps real images have:
//! symlink chains and loops, absolute symlinks (which must stay inside the
//! root), broken ELF files, linker scripts, libraries reached only through
//! a RUNPATH, two ABIs under one name, and unreadable files.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bundlegen_fixtures::elf::{EM_ARM, ElfSpec};
use bundlegen_fixtures::rootfs::RootBuilder;
use bundlegen_protocol::probe::{FloatAbi, Library, ProbeReport};
use platform_probe::{ProbeOptions, probe};

const GLIBC: &[&str] = &["GLIBC_2.4", "GLIBC_2.9", "GLIBC_2.30", "GLIBC_2.31", "GLIBC_PRIVATE"];

fn build_box(root: &Path) {
    let b = RootBuilder::new(root);
    let mut libc = ElfSpec::arm_library("libc.so.6")
        .needs(&["ld-linux-armhf.so.3"])
        .defines(GLIBC);
    libc.interpreter = Some("/lib/ld-linux-armhf.so.3".into());
    b.elf(
        "/lib/ld-linux-armhf.so.3",
        &ElfSpec::arm_library("ld-linux-armhf.so.3").defines(&["GLIBC_2.4", "GLIBC_PRIVATE"]),
    )
    .elf("/lib/libc-2.31.so", &libc)
    .symlink("/lib/libc.so.6", "libc-2.31.so")
    .elf(
        "/lib/libm-2.31.so",
        &ElfSpec::arm_library("libm.so.6")
            .needs(&["libc.so.6"])
            .defines(&["GLIBC_2.4"]),
    )
    .symlink("/lib/libm.so.6", "libm-2.31.so")
    // A chain, with an absolute link in it: inside the root it is /usr/lib.
    .elf(
        "/usr/lib/libz.so.1.2.11",
        &ElfSpec::arm_library("libz.so.1")
            .needs(&["libc.so.6"])
            .defines(&["ZLIB_1.2.9"]),
    )
    .symlink("/usr/lib/libz.so.1", "/usr/lib/libz.so.1.2.11")
    .symlink("/usr/lib/libz.so", "libz.so.1")
    // Traps.
    .symlink("/usr/lib/libloop.so", "libloop2.so")
    .symlink("/usr/lib/libloop2.so", "libloop.so")
    .symlink("/usr/lib/libdangling.so.1", "libnothere.so.1")
    .symlink("/usr/lib/libhost.so.6", "/lib/x86_64-linux-gnu/libc.so.6")
    .symlink("/usr/lib/loopdir", ".")
    .file(
        "/usr/lib/libbroken.so.1",
        b"\x7fELF\x01\x01\x01 this is not an ELF file at all",
    )
    .file("/usr/lib/libc.so", b"/* GNU ld script */\nGROUP ( /lib/libc.so.6 )\n")
    .file(
        "/usr/lib/libsecret.so.1",
        &ElfSpec::arm_library("libsecret.so.1").build(),
    )
    .mode("/usr/lib/libsecret.so.1", 0o000)
    // A plugin whose dependency is found only through its RUNPATH.
    .elf("/usr/lib/plugins/libplugin.so", &{
        let mut spec = ElfSpec::arm_library("libplugin.so").needs(&["libprivate.so.1", "libz.so.1"]);
        spec.runpath = Some("$ORIGIN/../../../opt/app/private".into());
        spec
    })
    .elf(
        "/opt/app/private/libprivate.so.1",
        &ElfSpec::arm_library("libprivate.so.1").needs(&["libc.so.6"]),
    )
    // The same name in two ABIs: ARM programs must get the ARM one.
    .elf("/lib/libtwo.so.1", &ElfSpec::x86_64_library("libtwo.so.1"))
    .elf("/usr/lib/libtwo.so.1", &ElfSpec::arm_library("libtwo.so.1"))
    .elf(
        "/usr/lib/libuser.so.1",
        &ElfSpec::arm_library("libuser.so.1").needs(&["libtwo.so.1", "libmissing.so.3"]),
    )
    // Configured directories, through an include.
    .file("/etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n")
    .file("/etc/ld.so.conf.d/vendor.conf", b"/opt/vendor/lib\n")
    .elf(
        "/opt/vendor/lib/libvendor.so.2",
        &ElfSpec::arm_library("libvendor.so.2").needs(&["libm.so.6"]),
    )
    .elf(
        "/bin/sh",
        &ElfSpec::arm_library("sh")
            .executable("/lib/ld-linux-armhf.so.3")
            .needs(&["libc.so.6"]),
    )
    .file("/etc/os-release", b"ID=rdk\nVERSION_ID=\"2024.1\"\n")
    .file("/version.txt", b"imagename:RPI3_REF_2024\nBRANCH=main\n")
    .dir("/lib/modules/5.15.92-v7")
    .dir("/dev");
}

fn by_path(report: &ProbeReport) -> BTreeMap<&str, &Library> {
    report.libraries.iter().map(|l| (l.path.as_str(), l)).collect()
}

fn dep<'a>(library: &'a Library, name: &str) -> Option<&'a str> {
    library
        .deps
        .iter()
        .find(|d| d.name == name)
        .and_then(|d| d.path.as_deref())
}

fn run_probe(root: &Path) -> ProbeReport {
    probe(&ProbeOptions {
        root: root.to_path_buf(),
        expected_devices: Vec::new(),
        programs: Vec::new(),
        cache: None,
    })
    .unwrap()
}

#[test]
fn a_crafted_box_gives_a_complete_report_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    build_box(dir.path());
    let report = run_probe(dir.path());
    let libraries = by_path(&report);

    let libc = libraries["/lib/libc-2.31.so"];
    assert_eq!(libc.names, ["/lib/libc-2.31.so", "/lib/libc.so.6"]);
    assert_eq!(libc.versions, GLIBC);
    assert_eq!(dep(libc, "ld-linux-armhf.so.3"), Some("/lib/ld-linux-armhf.so.3"));
    assert_eq!(libc.abi.machine, EM_ARM);
    assert_eq!(libc.abi.float, FloatAbi::Hard);
    assert_eq!(libc.sha256.len(), 64);

    let zlib = libraries["/usr/lib/libz.so.1.2.11"];
    assert_eq!(
        zlib.names,
        ["/usr/lib/libz.so", "/usr/lib/libz.so.1", "/usr/lib/libz.so.1.2.11"]
    );
    assert_eq!(dep(zlib, "libc.so.6"), Some("/lib/libc.so.6"));

    let plugin = libraries["/usr/lib/plugins/libplugin.so"];
    assert_eq!(dep(plugin, "libprivate.so.1"), Some("/opt/app/private/libprivate.so.1"));
    assert_eq!(dep(plugin, "libz.so.1"), Some("/usr/lib/libz.so.1"));
    let private = libraries["/opt/app/private/libprivate.so.1"];
    assert_eq!(
        dep(private, "libc.so.6"),
        Some("/lib/libc.so.6"),
        "found late, resolved too"
    );

    let user = libraries["/usr/lib/libuser.so.1"];
    assert_eq!(
        dep(user, "libtwo.so.1"),
        Some("/usr/lib/libtwo.so.1"),
        "the x86 one in /lib is skipped"
    );
    assert_eq!(dep(user, "libmissing.so.3"), None);
    assert_eq!(
        dep(libraries["/opt/vendor/lib/libvendor.so.2"], "libm.so.6"),
        Some("/lib/libm.so.6")
    );

    // Not libraries: the linker script, the broken file, the host's libc.
    for absent in [
        "/usr/lib/libc.so",
        "/usr/lib/libbroken.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        assert!(!libraries.contains_key(absent), "{absent}");
        assert!(
            !report.libraries.iter().any(|l| l.names.iter().any(|n| n == absent)),
            "{absent}"
        );
    }
    let warned = |needle: &str| report.warnings.iter().any(|w| w.contains(needle));
    for needle in [
        "/usr/lib/libloop.so: dangling or looping symlink",
        "/usr/lib/libdangling.so.1: dangling or looping symlink",
        "/usr/lib/libhost.so.6: dangling or looping symlink",
        "/usr/lib/libbroken.so.1: not a readable ELF file",
        "/usr/lib/libuser.so.1: needs libmissing.so.3",
    ] {
        assert!(warned(needle), "no warning {needle:?} in {:#?}", report.warnings);
    }
    assert!(!warned("libc.so:"), "a linker script is not a problem");

    let system = &report.system;
    assert_eq!(system.arch.as_deref(), Some("arm"));
    let libc_info = system.libc.as_ref().unwrap();
    assert_eq!(
        (libc_info.flavour.as_str(), libc_info.version.as_deref()),
        ("glibc", Some("2.31"))
    );
    assert_eq!(libc_info.path, "/lib/libc-2.31.so");
    assert_eq!(system.loader.as_deref(), Some("/lib/ld-linux-armhf.so.3"));
    assert_eq!(system.kernels, ["5.15.92-v7"]);
    assert_eq!(system.firmware.as_deref(), Some("RPI3_REF_2024"));
    assert_eq!(system.os_release["VERSION_ID"], "2024.1");

    // Deterministic: a second run gives the same report.
    assert_eq!(run_probe(dir.path()), report);

    let libs = report.libs_file();
    let names: Vec<&str> = libs.libs.iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let libc_entry = libs.libs.iter().find(|e| e.name == "/lib/libc.so.6").unwrap();
    assert_eq!(libc_entry.apiversions, GLIBC);
    assert_eq!(libc_entry.deps, ["/lib/ld-linux-armhf.so.3"]);
}

/// An unreadable library is a warning; the rest of the report is complete.
/// As root, permissions do not stop reads, so the probe runs as nobody.
#[test]
fn unreadable_files_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    build_box(dir.path());
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let binary = env!("CARGO_BIN_EXE_platform-probe");
    let mut command = if nix_is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
        c
    } else {
        Command::new(binary)
    };
    let output = command.arg("--root").arg(dir.path()).arg("-q").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: ProbeReport = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("/usr/lib/libsecret.so.1: cannot open it")),
        "{:#?}",
        report.warnings
    );
    assert!(by_path(&report).contains_key("/usr/lib/libz.so.1.2.11"));
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn probe_command(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_platform-probe"));
    command.arg("--root").arg(root).arg("-q");
    command
}

fn conformance_template(name: &str) -> std::path::PathBuf {
    bundlegen_fixtures::conformance().join(format!("bundlegen/templates/{name}.json"))
}

#[test]
fn the_cli_writes_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    build_box(&root);
    let out = dir.path().join("libs.json");
    let status = probe_command(&root)
        .args(["--format", "bundlegen-libs", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let libs: bundlegen_protocol::config::libs::LibsFile =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(libs.libs.iter().any(|e| e.name == "/usr/lib/libz.so.1"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");

    let output = probe_command(&root).args(["--format", "cdi"]).output().unwrap();
    assert!(output.status.success());
    let spec: bundlegen_protocol::cdi::CdiSpec = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(spec.kind, platform_probe::formats::CDI_KIND);
    assert!(spec.devices.is_empty(), "the crafted box has no device nodes");

    let output = probe_command(&root).args(["--format", "gpu-devs"]).output().unwrap();
    assert!(output.status.success());
    let devs: Vec<bundlegen_protocol::config::platform::GpuDevice> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(devs.is_empty());
}

#[test]
fn expected_devices_come_from_a_template() {
    let dir = tempfile::tempdir().unwrap();
    build_box(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_platform-probe"))
        .arg("--root")
        .arg(dir.path())
        .arg("--expect")
        .arg(conformance_template("rpi3_reference_vc4_dunfell"))
        .output()
        .unwrap();
    // The box does not meet the template: its own exit code, the report
    // still written.
    assert_eq!(output.status.code(), Some(3));
    let report: ProbeReport = serde_json::from_slice(&output.stdout).unwrap();
    let absent: Vec<&str> = report
        .device_mismatches
        .iter()
        .filter(|m| m.problem == "absent")
        .map(|m| m.path.as_str())
        .collect();
    assert_eq!(absent.len(), 7, "{absent:?}");
    assert!(absent.contains(&"/dev/dri/card0"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/dev/vchiq: the template names it"), "{stderr}");
    assert!(stderr.contains("the box does not meet"), "{stderr}");
    // The crafted box is arm, as the template says.
    assert!(!stderr.contains("the template's arch"), "{stderr}");

    // Without the device nodes, the box meets it; for arm64, it does not.
    let mut template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(conformance_template("rpi3_reference_vc4_dunfell")).unwrap()).unwrap();
    template["gpu"]["devs"] = serde_json::json!([]);
    let met = dir.path().join("met.json");
    std::fs::write(&met, template.to_string()).unwrap();
    let output = probe_command(dir.path()).arg("--expect").arg(&met).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    template["arch"] = serde_json::json!({"arch": "aarch64"});
    std::fs::write(&met, template.to_string()).unwrap();
    let output = probe_command(dir.path()).arg("--expect").arg(&met).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the template's arch is \"aarch64\""), "{stderr}");

    // A broken template is a configuration error: exit code 2, with the file named.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, br#"{"platformName": 3}"#).unwrap();
    let output = probe_command(dir.path()).arg("--expect").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("platformName"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_platform-probe"))
        .args(["--root", "/no/such/root"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/root"));
}

/// What a one-shot HTTP server received.
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Answers one request with `status` and `answer`; returns what came in.
fn one_shot_server(status: &'static str, answer: &'static str) -> (String, std::thread::JoinHandle<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        Received {
            request_line: request_line.trim_end().to_string(),
            headers,
            body,
        }
    });
    (url, handle)
}

#[test]
fn reports_are_uploaded_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    build_box(&root);
    let token = dir.path().join("token");
    std::fs::write(&token, "bgt_secret\n").unwrap();

    let (url, server) = one_shot_server("200 OK", r#"{"name": "rpi3", "version": 7, "warnings": []}"#);
    let output = probe_command(&root)
        .arg("--upload")
        .arg(format!("{url}/v1/platforms/rpi3/probe"))
        .arg("--token")
        .arg(&token)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty(), "without -o the report is only uploaded");
    assert!(String::from_utf8_lossy(&output.stderr).contains("version 7"));
    let received = server.join().unwrap();
    assert_eq!(received.request_line, "POST /v1/platforms/rpi3/probe HTTP/1.1");
    let header = |name: &str| {
        received
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("authorization"), Some("Bearer bgt_secret"));
    assert_eq!(header("content-type"), Some("application/json"));
    let report: ProbeReport = serde_json::from_slice(&received.body).unwrap();
    assert!(by_path(&report).contains_key("/usr/lib/libz.so.1.2.11"));

    // A refusal names the service's error code; the exit code says it failed.
    let (url, server) = one_shot_server(
        "403 Forbidden",
        r#"{"error": {"code": "forbidden", "message": "the device role may not do this"}}"#,
    );
    let output = probe_command(&root)
        .arg("--upload")
        .arg(format!("{url}/v1/platforms/rpi3/probe"))
        .arg("--token")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("403") && stderr.contains("forbidden"), "{stderr}");
    server.join().unwrap();
}

#[test]
fn a_cached_probe_reads_only_what_changed_and_reports_the_same() {
    use bundlegen_protocol::root::{RootDir, Symlinks};
    use platform_probe::cache::ProbeCache;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("box");
    build_box(&root);
    // What changed in the last seconds is not cached (a change in the same
    // clock tick would not show): let the box settle.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cache_file = dir.path().join("probe-cache.json");
    let with_cache = || {
        probe(&ProbeOptions {
            root: root.clone(),
            expected_devices: Vec::new(),
            programs: Vec::new(),
            cache: Some(cache_file.clone()),
        })
        .unwrap()
    };
    let full = run_probe(&root);
    let first = with_cache();
    assert_eq!(first.libraries, full.libraries);
    let second = with_cache();
    assert_eq!(
        second.libraries, full.libraries,
        "answered from the cache, the same report"
    );
    assert_eq!(second.system.libraries_fingerprint, full.system.libraries_fingerprint);
    let hits = |root: &Path| {
        let mut cache = ProbeCache::load(&cache_file);
        platform_probe::libraries::scan(&mut RootDir::open(root, Symlinks::FollowInRoot).unwrap(), &mut cache);
        cache.hits
    };
    let all = hits(&root);
    assert!(all >= full.libraries.len(), "{all} of {}", full.libraries.len());

    // One library changes (same size: only the times and the bytes tell).
    let path = root.join("usr/lib/libz.so.1.2.11");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(hits(&root), all - 1, "only the changed file is read again");
    let changed = with_cache();
    let before = by_path(&full)["/usr/lib/libz.so.1.2.11"].sha256.clone();
    assert_ne!(by_path(&changed)["/usr/lib/libz.so.1.2.11"].sha256, before);
    assert_eq!(changed.libraries, run_probe(&root).libraries);
}
