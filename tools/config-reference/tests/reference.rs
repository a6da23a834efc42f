//! The committed references are what the types say, and the schemas accept
//! the files the programs accept (and refuse what they refuse).

use std::fs;
use std::path::{Path, PathBuf};

use bundlegen_fixtures::conformance;
use config_reference::{Reference, references};
use serde_json::{Value, json};

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference")
}

fn reference(name: &str) -> Reference {
    references().into_iter().find(|r| r.name == name).unwrap()
}

fn problems(name: &str, document: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(reference(name).schema.as_value()).unwrap();
    validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn committed_references_are_current() {
    let dir = docs_dir();
    for reference in references() {
        for (file, expected) in [
            (format!("{}.md", reference.name), reference.markdown()),
            (format!("{}.schema.json", reference.name), reference.schema_json()),
        ] {
            let committed = fs::read_to_string(dir.join(&file)).unwrap_or_default();
            assert!(
                committed == expected,
                "docs/reference/{file} is stale: run `cargo run -p config-reference` and commit the result"
            );
        }
    }
}

#[test]
fn every_conformance_template_and_library_list_fits_the_schemas() {
    let templates = conformance().join("bundlegen/templates");
    let mut checked = 0;
    for entry in fs::read_dir(&templates).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let schema = if name.ends_with("_libs.json") {
            "platform-libs"
        } else {
            "platform"
        };
        let found = problems(schema, &read_json(&path));
        assert!(
            found.is_empty(),
            "{name} against {schema}.schema.json:\n{}",
            found.join("\n")
        );
        checked += 1;
    }
    assert!(
        checked >= 17,
        "only {checked} templates found in {}",
        templates.display()
    );
}

#[test]
fn the_app_metadata_samples_and_the_shipped_agent_config_fit_the_schemas() {
    let samples = conformance().join("bundlegen/app_metadata");
    // full-features.json names a capability that does not exist: a file the
    // schema accepts, refused later by the checks the schema cannot express.
    for name in [
        "wayland-egl-test.json",
        "flutter_reference.json",
        "helloworld.json",
        "full-features.json",
    ] {
        let found = problems("app-metadata", &read_json(&samples.join(name)));
        assert!(found.is_empty(), "{name}:\n{}", found.join("\n"));
    }
    // The partial sample misses what the parser misses.
    let partial = problems("app-metadata", &read_json(&samples.join("test-appmetadata.json")));
    assert!(
        partial.iter().any(|p| p.contains("\"network\" is a required property")),
        "{partial:?}"
    );

    let agent_toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stb-agent/agent.toml");
    let agent: toml::Table = toml::from_str(&fs::read_to_string(agent_toml).unwrap()).unwrap();
    let agent = serde_json::to_value(agent).unwrap();
    assert_eq!(problems("agent", &agent), Vec::<String>::new());
}

#[test]
fn the_schemas_refuse_what_the_programs_refuse() {
    let template = read_json(&conformance().join("bundlegen/templates/vagrant.json"));
    let cases = [
        ("/hardware/graphics", json!("yes")),
        ("/hardware/maxRam", json!(-5)),
        ("/network", json!(["open"])),
        ("/arch", Value::Null),
    ];
    for (pointer, bad) in cases {
        let mut document = template.clone();
        match document.pointer_mut(pointer) {
            Some(slot) if !bad.is_null() => *slot = bad.clone(),
            _ => {
                document
                    .as_object_mut()
                    .unwrap()
                    .remove(pointer.trim_start_matches('/'));
            }
        }
        assert!(
            !problems("platform", &document).is_empty(),
            "the schema accepts {pointer} = {bad}"
        );
        let parsed: Result<bundlegen_protocol::config::platform::PlatformTemplate, _> =
            serde_json::from_value(document);
        assert!(parsed.is_err(), "the parser accepts {pointer} = {bad}");
    }

    let agent = json!({"quota": "2G", "storage_rot": "/opt/dac"});
    assert!(!problems("agent", &agent).is_empty(), "a misspelt agent field passes");
}
