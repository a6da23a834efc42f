//! The probe over this machine's own libraries, checked against the tools
//! BundleGen's generator uses: `ldconfig -p`, `readelf -V` and `readelf -d`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;

use bundlegen_protocol::probe::{Library, ProbeReport};
use platform_probe::{ProbeOptions, probe};

fn report() -> &'static ProbeReport {
    static REPORT: OnceLock<ProbeReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        probe(&ProbeOptions {
            root: "/".into(),
            expected_devices: Vec::new(),
            programs: Vec::new(),
            cache: None,
        })
        .unwrap()
    })
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn by_name() -> BTreeMap<&'static str, &'static Library> {
    report()
        .libraries
        .iter()
        .flat_map(|l| l.names.iter().map(move |n| (n.as_str(), l)))
        .collect()
}

#[test]
fn every_library_ldconfig_knows_is_found_with_its_soname() {
    let names = by_name();
    let listing = run("ldconfig", &["-p"]);
    let mut checked = 0;
    for line in listing.lines().filter_map(|l| l.strip_prefix('\t')) {
        let (left, path) = line.split_once(") => ").unwrap();
        let key = left.split(" (").next().unwrap();
        let library = names
            .get(path)
            .unwrap_or_else(|| panic!("ldconfig has {path}; the probe has no library by that name"));
        if !key.ends_with(".so") {
            assert_eq!(library.soname.as_deref().unwrap_or(key), key, "{path}");
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cache entries");
}

/// readelf's version definitions (in order) and NEEDED/FILTER entries.
fn readelf(path: &str) -> (Vec<String>, Vec<String>) {
    let mut versions = Vec::new();
    let mut in_definitions = false;
    for line in run("readelf", &["-V", "-W", path]).lines() {
        if line.starts_with("Version definition section") {
            in_definitions = true;
        } else if line.starts_with("Version needs section") || line.starts_with("Version symbols section") {
            in_definitions = false;
        } else if in_definitions && line.contains("Name: ") && !line.contains("BASE") {
            let name = line.split("Name: ").nth(1).unwrap().split_whitespace().next().unwrap();
            versions.push(name.to_string());
        }
    }
    let mut needed = Vec::new();
    let mut filters = Vec::new();
    for line in run("readelf", &["-d", "-W", path]).lines() {
        let value = || line.split('[').nth(1).unwrap().split(']').next().unwrap().to_string();
        if line.contains("(NEEDED)") {
            needed.push(value());
        } else if line.contains("(FILTER)") || line.contains("(AUXILIARY)") {
            filters.push(value());
        }
    }
    needed.extend(filters);
    (versions, needed)
}

#[test]
fn a_sample_agrees_with_readelf() {
    let libraries = &report().libraries;
    assert!(libraries.len() > 200);
    let step = libraries.len() / 60;
    for library in libraries.iter().step_by(step) {
        let (versions, needed) = readelf(&library.path);
        assert_eq!(library.versions, versions, "{}", library.path);
        assert_eq!(library.needed, needed, "{}", library.path);
    }
}

#[test]
fn dependencies_resolve_like_the_loader() {
    let names = by_name();
    // What ldd says the loader picks for a well-known library.
    let libz = report()
        .libraries
        .iter()
        .find(|l| l.soname.as_deref() == Some("libz.so.1"))
        .unwrap();
    let ldd = run("ldd", &[&libz.path]);
    let libc_line = ldd.lines().find(|l| l.contains("libc.so.6 => ")).unwrap();
    let ldd_libc = libc_line.split("=> ").nth(1).unwrap().split(' ').next().unwrap();
    let ours = libz
        .deps
        .iter()
        .find(|d| d.name == "libc.so.6")
        .unwrap()
        .path
        .as_deref()
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(ours).unwrap(),
        std::fs::canonicalize(ldd_libc).unwrap()
    );
    // Every resolved dependency is itself in the report.
    let unresolved: BTreeSet<&str> = report()
        .libraries
        .iter()
        .flat_map(|l| l.deps.iter())
        .filter_map(|d| d.path.as_deref())
        .filter(|p| !names.contains_key(p))
        .collect();
    assert!(unresolved.is_empty(), "{unresolved:?}");
}

#[test]
fn the_system_is_described_like_its_tools_describe_it() {
    let system = &report().system;
    let libc = system.libc.as_ref().unwrap();
    let getconf = run("getconf", &["GNU_LIBC_VERSION"]);
    assert_eq!(
        format!("{} {}", libc.flavour, libc.version.as_deref().unwrap()),
        getconf.trim()
    );
    let uname = run("uname", &["-r"]);
    assert_eq!(system.kernels, [uname.trim()]);
    let program_headers = run("readelf", &["-l", "-W", "/bin/sh"]);
    let interpreter = program_headers
        .lines()
        .find_map(|l| l.split("[Requesting program interpreter: ").nth(1))
        .unwrap()
        .trim_end_matches(']');
    assert_eq!(system.loader.as_deref(), Some(interpreter));
    let arch = run("dpkg", &["--print-architecture"]);
    assert_eq!(system.arch.as_deref(), Some(arch.trim()));
    assert_eq!(system.libraries_fingerprint.len(), 64);
}

#[test]
fn a_box_of_another_architecture_does_not_meet_its_template() {
    let template = bundlegen_fixtures::conformance().join("bundlegen/templates/rpi3_reference_vc4_dunfell.json");
    let output = Command::new(env!("CARGO_BIN_EXE_platform-probe"))
        .args(["--root", "/", "-q", "--program", "/bin/sh", "--expect"])
        .arg(&template)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let this_box = report().system.abi.expect("this machine's ABI").arch_name();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("the box is {this_box}, the template's arch is \"arm\"")),
        "{stderr}"
    );
}
