//! End to end with real crun: an image of this machine's `ls` and its
//! libraries, a platform template describing this machine, a `--crun` bundle
//! whose libraries come from the host by bind mount, run with `crun run`;
//! and a Dobby-mode bundle whose init (a stand-in for DobbyInit, linked
//! against libstdc++) gets the libraries the image lacks from the host.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use platform_probe::elf::ElfInfo;
use platform_probe::loader::{SearchPath, candidates};
use serde_json::{Value, json};
use support::*;

const MULTIARCH: &str = "/usr/lib/x86_64-linux-gnu";
/// The libraries `ls` loads here (Debian 12, x86_64), by their host paths.
const LIBRARIES: [&str; 3] = ["libselinux.so.1", "libc.so.6", "libpcre2-8.so.0"];
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// An entry of the platform's `_libs.json` for a host library.
fn describe(path: &str) -> Value {
    let info = ElfInfo::parse(&fs::read(path).unwrap()).unwrap();
    let dir = Path::new(path).parent().unwrap().to_str().unwrap();
    let deps: Vec<String> = info
        .needed
        .iter()
        .filter_map(|name| {
            candidates(name, &info, dir, &SearchPath::default())
                .into_iter()
                .find(|c| Path::new(c).exists())
        })
        .collect();
    json!({"name": path, "apiversions": info.version_definitions, "deps": deps})
}

/// The image: `ls` and its libraries at this machine's paths (merged /usr).
fn image(dir: &Path) -> LayoutBuilder {
    image_with(dir, &[])
}

/// The image, with extra host libraries nothing links to.
fn image_with(dir: &Path, extra_libraries: &[&str]) -> LayoutBuilder {
    let mut layer = LayerBuilder::default()
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/x86_64-linux-gnu", 0o755)
        .dir("usr/lib64", 0o755)
        .symlink("bin", "usr/bin")
        .symlink("lib", "usr/lib")
        .symlink("lib64", "usr/lib64")
        .file("usr/bin/ls", &fs::read("/bin/ls").unwrap(), 0o755)
        .file("usr/lib64/ld-linux-x86-64.so.2", &fs::read(LOADER).unwrap(), 0o755);
    for name in LIBRARIES.iter().chain(extra_libraries) {
        let host = format!("{MULTIARCH}/{name}");
        let real = fs::canonicalize(&host).unwrap();
        let real_name = real.file_name().unwrap().to_str().unwrap().to_string();
        layer = layer.file(
            &format!("usr/lib/x86_64-linux-gnu/{real_name}"),
            &fs::read(&real).unwrap(),
            0o644,
        );
        if real_name != *name {
            layer = layer.symlink(&format!("usr/lib/x86_64-linux-gnu/{name}"), &real_name);
        }
    }
    let layout = LayoutBuilder::new(dir);
    let image = layout.image(
        &[(layer.tar(), Compress::Gzip)],
        "amd64",
        None,
        json!({"Entrypoint": ["/usr/bin/ls", "-1", "/"]}),
    );
    layout.tag(image, "latest")
}

/// Writes the template `host.json` for this machine, with `extra` fields,
/// into `dir/templates`.
fn write_template(dir: &Path, extra: Value) -> PathBuf {
    let templates = dir.join("templates");
    fs::create_dir_all(&templates).unwrap();
    let mut template = json!({"platformName": "this-machine", "os": "linux", "arch": {"arch": "x86_64"},
        "rdk": {"version": "2024Q1", "supportedFeatures": []}, "hardware": {"graphics": false},
        "network": {"options": ["open"]}, "disableUserNamespacing": true});
    if let Value::Object(extra) = extra {
        template.as_object_mut().unwrap().extend(extra);
    }
    fs::write(templates.join("host.json"), template.to_string()).unwrap();
    templates
}

/// A template for this machine; `libraries` is its library list.
fn platform(dir: &Path, libraries: Vec<Value>) -> PathBuf {
    let templates = write_template(dir, json!({}));
    fs::write(templates.join("host_libs.json"), json!({"libs": libraries}).to_string()).unwrap();
    templates
}

fn host_libraries() -> Vec<Value> {
    let mut libraries: Vec<Value> = LIBRARIES
        .iter()
        .map(|n| describe(&format!("{MULTIARCH}/{n}")))
        .collect();
    libraries.push(describe(LOADER));
    libraries
}

fn generate(dir: &Path, templates: &Path, layout: &Path, out: &str) -> PathBuf {
    generate_with(dir, templates, layout, out, json!({}), &["--crun"])
}

fn generate_with(
    dir: &Path,
    templates: &Path,
    layout: &Path,
    out: &str,
    metadata_extra: Value,
    args: &[&str],
) -> PathBuf {
    let metadata = dir.join("app.json");
    let mut app = json!({"id": "com.example.ls", "type": "application/vnd.rdk-app.dac.native", "graphics": false,
        "network": {"type": "open"}, "storage": {}, "resources": {"ram": "64M"}});
    if let Value::Object(extra) = metadata_extra {
        app.as_object_mut().unwrap().extend(extra);
    }
    fs::write(&metadata, app.to_string()).unwrap();
    let bundle = dir.join(out);
    run(bundlegen()
        .args(["-vv", "generate", "-y", "--format", "dir", "-p", "host"])
        .args(args)
        .arg("-s")
        .arg(templates)
        .arg("-a")
        .arg(&metadata)
        .arg(format!("oci:{}", layout.display()))
        .arg(&bundle));
    bundle
}

/// `crun run` in a private mount namespace without the cgroup2 mount of this
/// machine's hybrid layout, which crun 1.8 refuses.
fn crun_run(bundle: &Path, id: &str) -> Output {
    let script = format!(
        "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run --bundle {} {id}",
        bundle.display()
    );
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare and crun");
    let _ = Command::new("crun").args(["delete", "-f", id]).output();
    output
}

fn mounted_sources(bundle: &Path) -> Vec<String> {
    let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["options"] == json!(["rbind", "nosuid", "nodev", "ro"]))
        .map(|m| m["source"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_program_runs_with_its_libraries_from_the_host() {
    assert!(nix::unistd::geteuid().is_root(), "crun needs root here");
    let tmp = tempfile::tempdir().unwrap();
    let layout = image(&tmp.path().join("image"));
    let templates = platform(tmp.path(), host_libraries());
    let bundle = generate(tmp.path(), &templates, &layout.dir, "bundle");

    // Every library and the loader left the rootfs; their host copies are mounted.
    let rootfs = bundle.join("rootfs");
    let kept = snapshot(&rootfs);
    let files: Vec<&String> = kept
        .iter()
        .filter(|(_, d)| d.starts_with("file"))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(files, ["usr/bin/ls"], "only the program stays in the image");
    let mut sources = mounted_sources(&bundle);
    sources.sort();
    assert_eq!(sources.len(), 4, "{sources:?}");
    assert!(sources.iter().any(|s| s == LOADER));

    let output = crun_run(&bundle, "bundlegen-e2e-ok");
    assert!(
        output.status.success(),
        "crun run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    for entry in ["bin", "lib64", "usr"] {
        assert!(listing.lines().any(|l| l == entry), "ls / printed {listing:?}");
    }
}

#[test]
fn a_program_alone_in_the_image_gets_its_loader_and_libraries_from_the_host() {
    assert!(nix::unistd::geteuid().is_root(), "crun needs root here");
    let tmp = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::default().dir("usr", 0o755).dir("usr/bin", 0o755).file(
        "usr/bin/ls",
        &fs::read("/bin/ls").unwrap(),
        0o755,
    );
    let layout = LayoutBuilder::new(&tmp.path().join("image"));
    let image = layout.image(
        &[(layer.tar(), Compress::Gzip)],
        "amd64",
        None,
        json!({"Entrypoint": ["/usr/bin/ls", "-1", "/"]}),
    );
    let layout = layout.tag(image, "latest");
    let templates = platform(tmp.path(), host_libraries());
    let bundle = generate(tmp.path(), &templates, &layout.dir, "bundle");
    let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let loader_mount = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == LOADER);
    assert_eq!(loader_mount.map(|m| &m["source"]), Some(&json!(LOADER)), "{config:#}");
    let output = crun_run(&bundle, "bundlegen-e2e-alone");
    assert!(
        output.status.success(),
        "crun run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(listing.lines().any(|l| l == "usr"), "ls / printed {listing:?}");
}

#[test]
fn a_library_the_box_lacks_stays_in_the_image() {
    assert!(nix::unistd::geteuid().is_root(), "crun needs root here");
    let tmp = tempfile::tempdir().unwrap();
    let layout = image(&tmp.path().join("image"));
    let libraries: Vec<Value> = host_libraries()
        .into_iter()
        .filter(|l| !l["name"].as_str().unwrap().ends_with("libselinux.so.1"))
        .collect();
    let templates = platform(tmp.path(), libraries);
    let bundle = generate(tmp.path(), &templates, &layout.dir, "bundle");
    assert!(bundle.join("rootfs/usr/lib/x86_64-linux-gnu/libselinux.so.1").exists());
    assert!(!mounted_sources(&bundle).iter().any(|s| s.contains("libselinux")));
    let output = crun_run(&bundle, "bundlegen-e2e-partial");
    assert!(
        output.status.success(),
        "crun run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_wrongly_removed_library_fails_cleanly_at_start() {
    assert!(nix::unistd::geteuid().is_root(), "crun needs root here");
    let tmp = tempfile::tempdir().unwrap();
    let layout = image(&tmp.path().join("image"));
    // The platform claims libpcre2 at a path where this machine has nothing.
    let libraries: Vec<Value> = host_libraries()
        .into_iter()
        .map(|mut l| {
            if l["name"].as_str().unwrap().ends_with("libpcre2-8.so.0") {
                l["name"] = json!("/opt/missing/libpcre2-8.so.0");
            }
            l
        })
        .collect();
    let templates = platform(tmp.path(), libraries);
    let bundle = generate(tmp.path(), &templates, &layout.dir, "bundle");
    assert!(
        mounted_sources(&bundle)
            .iter()
            .any(|s| s == "/opt/missing/libpcre2-8.so.0")
    );
    let output = crun_run(&bundle, "bundlegen-e2e-broken");
    assert!(!output.status.success(), "the container must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/opt/missing/libpcre2-8.so.0"),
        "crun names the missing library: {stderr}"
    );
    assert!(output.stdout.is_empty(), "the program never ran");
}

#[test]
fn prune_unused_deletes_what_no_program_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let unused = ["libz.so.1", "libacl.so.1"];
    let layout = image_with(&tmp.path().join("image"), &unused);
    // An empty library list: nothing is matched, only pruning acts.
    let templates = platform(tmp.path(), vec![]);
    let libraries = |bundle: &Path| -> Vec<String> {
        snapshot(&bundle.join("rootfs/usr/lib/x86_64-linux-gnu"))
            .into_keys()
            .collect()
    };
    let plain = generate(tmp.path(), &templates, &layout.dir, "plain");
    let all = libraries(&plain);
    assert!(
        all.iter().any(|l| l.starts_with("libz.so")) && all.iter().any(|l| l.starts_with("libacl.so")),
        "{all:?}"
    );
    let keep_acl = json!({"libraries": {"dlopen": ["libacl.so.1"]}});
    let pruned = generate_with(
        tmp.path(),
        &templates,
        &layout.dir,
        "pruned",
        keep_acl,
        &["--crun", "--prune-unused"],
    );
    let left = libraries(&pruned);
    assert!(
        !left.iter().any(|l| l.starts_with("libz.so")),
        "libz is unused: {left:?}"
    );
    assert!(
        left.iter().any(|l| l.starts_with("libacl.so")),
        "listed as dlopen'ed: {left:?}"
    );
    for name in LIBRARIES {
        assert!(left.iter().any(|l| l == name), "{name} is needed by ls: {left:?}");
    }
    assert!(nix::unistd::geteuid().is_root(), "crun needs root here");
    let output = crun_run(&pruned, "bundlegen-e2e-pruned");
    assert!(
        output.status.success(),
        "crun run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A stand-in for Dobby's init, built here: it execs its arguments, and is
/// linked against libstdc++ as DobbyInit is (it refers to `std::terminate`,
/// so it also needs a `GLIBCXX_*` symbol version).
fn build_stand_in_init(dir: &Path) -> PathBuf {
    let source = dir.join("init.c");
    fs::write(
        &source,
        r#"#include <stdio.h>
#include <unistd.h>
extern void _ZSt9terminatev(void); /* std::terminate, from libstdc++ */
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: init PROGRAM [ARG...]\n"); _ZSt9terminatev(); }
    execv(argv[1], argv + 1);
    perror("init: execv");
    return 127;
}
"#,
    )
    .unwrap();
    let init = dir.join("DobbyInit");
    run(Command::new("cc")
        .arg("-o")
        .arg(&init)
        .arg(&source)
        .arg(format!("{MULTIARCH}/libstdc++.so.6")));
    let info = ElfInfo::parse(&fs::read(&init).unwrap()).unwrap();
    assert!(info.needed.iter().any(|n| n == "libstdc++.so.6"), "{:?}", info.needed);
    init
}

/// What Dobby hands crun for a `1.0.2-dobby` bundle, without its plugins
/// (their hooks need Dobby): `ociVersion` 1.0.2, the hostname set to the
/// container id. crun runs it without a terminal (Dobby gives it one).
fn as_dobby_would_hand_to_crun(bundle: &Path, id: &str) {
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let object = config.as_object_mut().unwrap();
    object.remove("rdkPlugins");
    object.insert("ociVersion".into(), json!("1.0.2"));
    object.insert("hostname".into(), json!(id));
    config["process"]["terminal"] = json!(false);
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn a_dobby_mode_bundle_runs_its_init_with_libraries_the_image_lacks() {
    assert!(nix::unistd::geteuid().is_root(), "crun needs root here");
    let tmp = tempfile::tempdir().unwrap();
    let init = build_stand_in_init(tmp.path());
    let init_path = init.to_str().unwrap();
    let layout = image(&tmp.path().join("image"));

    // The platform is this machine, probed with the init as its DobbyInit.
    let templates = write_template(tmp.path(), json!({"dobby": {"dobbyInitPath": init_path}}));
    let report = platform_probe::probe(&platform_probe::ProbeOptions {
        root: "/".into(),
        expected_devices: Vec::new(),
        programs: vec![init_path.to_string()],
        cache: None,
    })
    .unwrap();
    let program = &report.programs[0];
    assert!(
        program.version_needs["libstdc++.so.6"]
            .iter()
            .any(|v| v.starts_with("GLIBCXX_"))
    );
    fs::write(templates.join("host_probe.json"), serde_json::to_vec(&report).unwrap()).unwrap();

    let validator = support::dobby::dobby_validator();
    for mode in ["image", "normal"] {
        let id = format!("bundlegen-dobby-{mode}");
        let bundle = generate_with(
            tmp.path(),
            &templates,
            &layout.dir,
            &format!("bundle-{mode}"),
            json!({}),
            &["-m", mode],
        );
        let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["ociVersion"], "1.0.2-dobby");
        assert_eq!(config["process"]["args"][0], init_path, "the init runs first");
        assert!(
            config["rdkPlugins"].as_object().is_some_and(|p| !p.is_empty()),
            "Dobby needs at least one plugin"
        );
        support::dobby::assert_valid_for_dobby(&validator, &config, &format!("the {mode} mode bundle"));

        // The image never had the init's C++ runtime; the box's is mounted.
        let rootfs = snapshot(&bundle.join("rootfs"));
        for name in ["libstdc++", "libgcc_s", "libm.so"] {
            assert!(
                !rootfs
                    .iter()
                    .any(|(path, d)| path.contains(name) && d.starts_with("file")),
                "{mode}: {name} in the rootfs"
            );
        }
        let sources = mounted_sources(&bundle);
        for name in ["libstdc++.so.6", "libgcc_s.so.1", "libm.so.6"] {
            assert!(
                sources.iter().any(|s| s.ends_with(name)),
                "{mode}: {name} is mounted from the box: {sources:?}"
            );
        }
        if mode == "image" {
            assert!(
                !sources.iter().any(|s| s.ends_with("libc.so.6")),
                "the image's libc serves the init: {sources:?}"
            );
        }

        as_dobby_would_hand_to_crun(&bundle, &id);
        let output = crun_run(&bundle, &id);
        assert!(
            output.status.success(),
            "{mode}: crun run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listing = String::from_utf8_lossy(&output.stdout);
        for entry in ["bin", "lib64", "usr"] {
            assert!(listing.lines().any(|l| l == entry), "{mode}: ls / printed {listing:?}");
        }
    }
}
