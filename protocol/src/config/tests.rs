use std::fs;
use std::path::PathBuf;

use super::app::AppMetadata;
use super::operator::OperatorConfig;
use super::platform::{PlatformTemplate, find_template, load_platform};
use super::*;

fn conformance() -> PathBuf {
    bundlegen_fixtures::conformance().join("bundlegen")
}

const MINIMAL: &str = r#"{"platformName":"m","os":"linux","arch":{"arch":"amd64"},
    "rdk":{"version":"x","supportedFeatures":[]},"hardware":{"graphics":false},"network":{"options":["open"]}}"#;

fn with(base: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(base).unwrap();
    edit(&mut value);
    value.to_string()
}

fn problems_of<T: serde::de::DeserializeOwned + Validate + std::fmt::Debug>(text: &str) -> Vec<Problem> {
    match parse::<T>(text, Path::new("t.json")) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn every_conformance_template_loads_with_its_libraries() {
    let search = conformance().join("templates");
    let mut names: Vec<String> = fs::read_dir(&search)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".json") && !n.ends_with("_libs.json"))
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    for name in names {
        let files = find_template(&search, &name).unwrap();
        let parsed = load_platform(&files).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expects_libs = files.libs.is_some();
        assert_eq!(!parsed.value.libs.is_empty(), expects_libs, "{name}");
        if name == "rpi3_reference_vc4_dunfell_test" {
            // The test template carries fields nobody reads: reported, not fatal.
            let joined = parsed.warnings.join("\n");
            assert!(
                joined.contains("storage.persistent.size") && joined.contains("storage.persistent.path"),
                "{joined}"
            );
        } else if expects_libs {
            assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
        } else {
            // vagrant: no list, so the box's libraries are unknown, and said so.
            assert_eq!(parsed.warnings.len(), 1, "{name}: {:?}", parsed.warnings);
            assert!(parsed.warnings[0].contains("the box's libraries are unknown"), "{name}");
        }
    }
}

#[test]
fn exact_names_only_and_helpful_misses() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("a/b")).unwrap();
    fs::write(tmp.path().join("a/7218c.json"), MINIMAL).unwrap();
    fs::write(tmp.path().join("a/b/box.json"), MINIMAL).unwrap();
    fs::write(tmp.path().join("a/b/box_libs.json"), r#"{"libs":[]}"#).unwrap();
    let err = find_template(tmp.path(), "c").unwrap_err();
    assert!(matches!(err, ConfigError::TemplateNotFound { .. }), "{err}");
    assert!(err.to_string().contains("it has: 7218c, box"), "{err}");
    let files = find_template(tmp.path(), "box").unwrap();
    assert!(files.template.ends_with("a/b/box.json") && files.libs.unwrap().ends_with("a/b/box_libs.json"));
    fs::write(tmp.path().join("a/box.json"), MINIMAL).unwrap();
    assert!(matches!(
        find_template(tmp.path(), "box"),
        Err(ConfigError::AmbiguousTemplate { .. })
    ));
}

#[test]
fn errors_name_the_json_path() {
    let bad_major = with(MINIMAL, |v| {
        v["gpu"] = serde_json::json!({"gfxLibs": [], "devs": [
            {"type": "c", "path": "/dev/a", "major": 1, "minor": 0},
            {"type": "c", "path": "/dev/b", "major": "x", "minor": 0}]});
    });
    let problems = problems_of::<PlatformTemplate>(&bad_major);
    assert_eq!(problems[0].path, "gpu.devs[1].major", "{problems:?}");
    assert!(problems[0].reason.contains("invalid type"), "{problems:?}");

    let missing = with(MINIMAL, |v| {
        v.as_object_mut().unwrap().remove("rdk");
    });
    let problems = problems_of::<PlatformTemplate>(&missing);
    assert!(problems[0].reason.contains("missing field `rdk`"), "{problems:?}");

    // Broken JSON is the document's fault, wherever serde was.
    let cut = &MINIMAL[..MINIMAL.len() / 2];
    let problems = problems_of::<PlatformTemplate>(cut);
    assert_eq!(problems[0].path, "(document)", "{problems:?}");
    assert!(problems[0].reason.starts_with("not valid JSON: "), "{problems:?}");

    // Semantic problems are all reported at once.
    let many = with(MINIMAL, |v| {
        v["logging"] = serde_json::json!({"mode": "file"});
        v["mounts"] = serde_json::json!([{"destination": "relative", "type": "bind", "options": ["rbind"]}]);
        v["tarball"] = serde_json::json!({"fileMask": "999"});
        v["resourceLimits"] = serde_json::json!([{"type": "RLIMIT_NOFILES", "hard": 10, "soft": 20}]);
        v["envvar"] = serde_json::json!(["A=1", "NOEQUALS", "=2"]);
    });
    let paths: Vec<String> = problems_of::<PlatformTemplate>(&many)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "tarball.fileMask",
            "resourceLimits[0].type",
            "resourceLimits[0].soft",
            "envvar[1]",
            "envvar[2]",
            "logging.logDir",
            "mounts[0].destination",
            "mounts[0].source"
        ]
    );
}

#[test]
fn both_spellings_bundlegen_disagrees_on_are_read() {
    let spelled = with(MINIMAL, |v| {
        v["hardware"]["maxRAM"] = serde_json::json!("120M");
        v["journaldOptions"] = serde_json::json!({"priority": "LOG_INFO"});
        v["logging"] = serde_json::json!({"mode": "journald"});
    });
    let parsed = parse::<PlatformTemplate>(&spelled, Path::new("t.json")).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert_eq!(parsed.value.hardware.max_ram.unwrap().bytes(), 120 << 20);
    assert_eq!(parsed.value.journald_options().unwrap().priority, "LOG_INFO");
    // Under `logging` (where BundleGen's code reads it) wins.
    let both = with(&spelled, |v| {
        v["logging"]["journaldOptions"] = serde_json::json!({"priority": "LOG_DEBUG"})
    });
    let parsed = parse::<PlatformTemplate>(&both, Path::new("t.json")).unwrap();
    assert_eq!(parsed.value.journald_options().unwrap().priority, "LOG_DEBUG");
}

#[test]
fn typos_are_warnings_with_their_path() {
    let typo = with(MINIMAL, |v| {
        v["hardware"]["maxRom"] = serde_json::json!("1G");
        v["envvars"] = serde_json::json!([]);
    });
    let parsed = parse::<PlatformTemplate>(&typo, Path::new("box.json")).unwrap();
    let mut warnings = parsed.warnings.clone();
    warnings.sort();
    assert_eq!(
        warnings,
        [
            "box.json: unknown field envvars is ignored (a typo?)",
            "box.json: unknown field hardware.maxRom is ignored (a typo?)"
        ]
    );
}

#[test]
fn app_metadata_samples() {
    let dir = conformance().join("app_metadata");
    for name in [
        "wayland-egl-test.json",
        "flutter_reference.json",
        "youi_reference.json",
        "helloworld.json",
    ] {
        let parsed: Parsed<AppMetadata> = load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(parsed.warnings.is_empty(), "{name}: {:?}", parsed.warnings);
    }
    let flutter: Parsed<AppMetadata> = load(&dir.join("flutter_reference.json")).unwrap();
    assert_eq!(
        flutter.value.network.dnsmasq,
        Some(true),
        "\"true\" is read as a boolean"
    );
    assert_eq!(flutter.value.storage.temp[1].size.bytes(), 10 << 20);

    // full-features.json adds CAP_SETGIDS, which does not exist; BundleGen let it through.
    let err = load::<AppMetadata>(&dir.join("full-features.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("capabilities.add[0]: \"CAP_SETGIDS\" is not a Linux capability"),
        "{err}"
    );
    // test-appmetadata.json lacks required fields.
    let err = load::<AppMetadata>(&dir.join("test-appmetadata.json")).unwrap_err();
    assert!(err.to_string().contains("missing field `network`"), "{err}");
}

#[test]
fn app_ids_follow_dobby_container_id_rules() {
    let base = r#"{"id":"com.example.app","type":"t","graphics":false,"network":{"type":"open"},"storage":{},"resources":{"ram":"64M"}}"#;
    assert!(parse::<AppMetadata>(base, Path::new("a.json")).is_ok());
    for bad in ["", "a/b", "a..b", "1234", "space here", &"x".repeat(129)] {
        let text = with(base, |v| v["id"] = serde_json::json!(bad));
        let problems = problems_of::<AppMetadata>(&text);
        assert_eq!(problems[0].path, "id", "{bad:?}");
    }
}

#[test]
fn operator_config_is_checked() {
    let text = r#"{"envvar":["OK=1","BROKEN"],"capabilities":{"allow":["CAP_KILL","CAP_FLY"],"deny":["CAP_SYS_ADMIN"]},
        "libraryPins":["libfoo.so.2.1.5","/usr/lib/libbar.so"],"logging":{"mode":"file"},
        "rdkPlugins":{"localtime":{"required":true,"data":{"setTZ":"UTC"}}}}"#;
    let paths: Vec<String> = problems_of::<OperatorConfig>(text)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        ["envvar[1]", "capabilities.allow[1]", "libraryPins[1]", "logging.logDir"]
    );
    let good = r#"{"envvar":["OK=1"],"rdkPlugins":{"localtime":{"required":true,"data":{"setTZ":"UTC"}}}}"#;
    let parsed = parse::<OperatorConfig>(good, Path::new("o.json")).unwrap();
    assert_eq!(
        parsed.value.rdk_plugins.localtime.unwrap().data.set_tz.as_deref(),
        Some("UTC")
    );
}

#[test]
fn host_paths_dobby_opens_must_be_absolute() {
    let text = with(MINIMAL, |v| {
        v["dobby"] =
            serde_json::json!({"pluginDir": "usr/lib/plugins/dobby", "hookLauncherParametersPath": "/opt/{id}"});
        v["storage"] = serde_json::json!({"persistent": {"storageDir": "data"}});
        v["oomcrash"] = serde_json::json!({"path": "/opt/oom"});
    });
    let paths: Vec<String> = problems_of::<PlatformTemplate>(&text)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(paths, ["storage.persistent.storageDir", "dobby.pluginDir"]);
}
