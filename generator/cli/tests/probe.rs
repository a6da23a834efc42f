//! The platform probe as the generator's input: a box whose libraries are
//! BundleGen's shipped list probes back to exactly that list, and the
//! generator decides the same with the probe's list (or its full report)
//! as with BundleGen's. The arm rootfs of the conformance image (unpacked by
//! the generator) probes cleanly too.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bundlegen_fixtures::elf::ElfSpec;
use bundlegen_fixtures::rootfs::{ListedLibrary, RootBuilder};
use bundlegen_protocol::config::libs::{LibEntry, LibsFile};
use bundlegen_protocol::probe::ProbeReport;
use platform_probe::{ProbeOptions, probe};
use serde_json::Value;
use support::*;

const IMAGE: &str = "bundlegen/images/dac-image-wayland-egl-test-oci";

fn shipped_libs(template: &str) -> LibsFile {
    let path = conformance().join(format!("bundlegen/templates/{template}_libs.json"));
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn build_box(root: &Path, libs: &LibsFile) {
    let listed: Vec<ListedLibrary<'_>> = libs
        .libs
        .iter()
        .map(|entry| ListedLibrary {
            name: &entry.name,
            versions: &entry.apiversions,
            deps: &entry.deps,
        })
        .collect();
    bundlegen_fixtures::rootfs::build_box(root, &listed);
}

fn probe_root(root: &Path) -> ProbeReport {
    probe(&ProbeOptions {
        root: root.to_path_buf(),
        expected_devices: Vec::new(),
        programs: Vec::new(),
        cache: None,
    })
    .unwrap()
}

fn schema_validator(name: &str) -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_slice(&fs::read(conformance().join(format!("bundlegen/schema/{name}"))).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn a_box_built_from_bundlegens_list_probes_back_to_that_list() {
    let validator = schema_validator("platform_libsSchema.json");
    for template in [
        "rpi3_reference_vc4_dunfell",
        "rpi4_64_reference_bb_kirkstone",
        "bpir4_reference",
    ] {
        let shipped = shipped_libs(template);
        let dir = tempfile::tempdir().unwrap();
        build_box(dir.path(), &shipped);
        let symlinks = snapshot(dir.path())
            .values()
            .filter(|d| d.starts_with("symlink"))
            .count();
        assert!(symlinks > 100, "{template}: only {symlinks} symlinks in the box");
        let report = probe_root(dir.path());
        let probed = report.libs_file();
        let json = serde_json::to_value(&probed).unwrap();
        assert!(
            validator.is_valid(&json),
            "{template}: not valid against BundleGen's schema"
        );
        let differing: Vec<(&LibEntry, Option<&LibEntry>)> = shipped
            .libs
            .iter()
            .map(|e| (e, probed.libs.iter().find(|p| p.name == e.name)))
            .filter(|(e, p)| Some(*e) != *p)
            .take(5)
            .collect();
        assert!(differing.is_empty(), "{template}: {differing:#?}");
        assert_eq!(probed.libs.len(), shipped.libs.len(), "{template}");
        assert!(
            report.system.libc.as_ref().is_some_and(|l| l.flavour == "glibc"),
            "{template}"
        );
    }
}

/// Generates the conformance image for `template` with the given library
/// files next to the template; returns the config and the rootfs listing.
fn generate_with(template: &str, extra_files: &[(&str, &[u8])]) -> (Value, BTreeMap<String, String>) {
    let templates = tempfile::tempdir().unwrap();
    let source = conformance().join(format!("bundlegen/templates/{template}.json"));
    fs::copy(source, templates.path().join(format!("{template}.json"))).unwrap();
    for (name, contents) in extra_files {
        fs::write(templates.path().join(name), contents).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    run(bundlegen()
        .args(["generate", "-y", "-p", template, "-s"])
        .arg(templates.path())
        .arg(format!("oci:{}", conformance().join(IMAGE).display()))
        .arg(&bundle));
    let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    support::dobby::assert_valid_for_dobby(&support::dobby::dobby_validator(), &config, template);
    (config, snapshot(&bundle.join("rootfs")))
}

#[test]
fn the_generator_decides_alike_with_the_probes_list_or_report() {
    for template in ["rpi3_reference_vc4_dunfell", "rpi4_reference_dunfell"] {
        let shipped = shipped_libs(template);
        let dir = tempfile::tempdir().unwrap();
        build_box(dir.path(), &shipped);
        let report = probe_root(dir.path());
        let libs_name = format!("{template}_libs.json");
        let probe_name = format!("{template}_probe.json");
        let shipped_json = serde_json::to_vec(&shipped).unwrap();
        let probed_json = serde_json::to_vec(&report.libs_file()).unwrap();
        let report_json = serde_json::to_vec(&report).unwrap();

        let expected = generate_with(template, &[(&libs_name, &shipped_json)]);
        assert!(
            expected.0["mounts"].as_array().unwrap().len() > 5,
            "{template}: library matching took libraries from the box"
        );
        let from_list = generate_with(template, &[(&libs_name, &probed_json)]);
        assert!(
            from_list == expected,
            "{template}: the probe's _libs.json changed the bundle"
        );
        let from_report = generate_with(template, &[(&probe_name, &report_json)]);
        assert!(
            from_report == expected,
            "{template}: the probe report changed the bundle"
        );
    }
}

#[test]
fn a_report_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = RootBuilder::new(dir.path());
    b.elf(
        "/lib/libc.so.6",
        &ElfSpec::x86_64_library("libc.so.6").defines(&["GLIBC_2.4"]),
    );
    let report = serde_json::to_vec(&probe_root(dir.path())).unwrap();
    let templates = tempfile::tempdir().unwrap();
    let template = "rpi3_reference_vc4_dunfell";
    fs::copy(
        conformance().join(format!("bundlegen/templates/{template}.json")),
        templates.path().join(format!("{template}.json")),
    )
    .unwrap();
    fs::write(templates.path().join(format!("{template}_probe.json")), report).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stderr = run_failing(
        bundlegen()
            .args(["generate", "-y", "-p", template, "-s"])
            .arg(templates.path())
            .arg(format!("oci:{}", conformance().join(IMAGE).display()))
            .arg(out.path().join("bundle")),
    );
    assert!(stderr.contains("probe report describes a amd64 box"), "{stderr}");
    assert!(!out.path().join("bundle").exists());
}

#[test]
fn the_conformance_images_arm_rootfs_probes_and_resolves() {
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    run(bundlegen()
        .args(["unpack", "-y", "--format", "dir"])
        .arg(format!("oci:{}", conformance().join(IMAGE).display()))
        .arg(&bundle));
    let report = probe_root(&bundle.join("rootfs"));
    let system = &report.system;
    assert_eq!(system.arch.as_deref(), Some("arm"));
    assert_eq!(system.loader.as_deref(), Some("/lib/ld-linux-armhf.so.3"));
    let libc = system.libc.as_ref().unwrap();
    assert_eq!(
        (libc.flavour.as_str(), libc.version.as_deref()),
        ("glibc", Some("2.31"))
    );
    assert!(report.libraries.len() >= 15, "{}", report.libraries.len());
    for library in &report.libraries {
        assert_eq!(library.abi.arch_name(), "arm", "{}", library.path);
        for dep in &library.deps {
            assert!(dep.path.is_some(), "{}: {} unresolved", library.path, dep.name);
        }
    }
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    let libs = serde_json::to_value(report.libs_file()).unwrap();
    assert!(schema_validator("platform_libsSchema.json").is_valid(&libs));
}
