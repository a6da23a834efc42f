//! Dobby's own schema for `config.json` (`../shared/conformance/dobby/`):
//! every Dobby-mode config the tests write is checked against it.

use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::conformance;

/// Dobby's schema validator. It refers to OCI runtime-spec files that are not
/// in Dobby's folder: `defs.json` is written out here from the runtime-spec's
/// schema, `config-linux.json` is left open.
pub fn dobby_validator() -> jsonschema::Validator {
    struct Files(PathBuf);
    impl jsonschema::Retrieve for Files {
        fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
            let name = uri.path().as_str().rsplit('/').next().unwrap_or_default().to_string();
            match name.as_str() {
                "defs.json" => return Ok(oci_defs()),
                // OCI's `linux` section is not in Dobby's folder; crun checks it in the end-to-end tests.
                "config-linux.json" => return Ok(json!({"linux": {"type": "object"}})),
                _ => {}
            }
            Ok(serde_json::from_slice(&fs::read(self.0.join(name))?)?)
        }
    }
    let dir = conformance().join("dobby");
    let schema: Value = serde_json::from_slice(&fs::read(dir.join("dobby_schema.json")).unwrap()).unwrap();
    jsonschema::options()
        .with_base_uri("file:///dobby/dobby_schema.json")
        .with_retriever(Files(dir))
        .build(&schema)
        .unwrap()
}

fn oci_defs() -> Value {
    let int = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
    json!({"definitions": {
        "int32": int(-2_147_483_648, 2_147_483_647),
        "uint16": int(0, 65_535),
        "uint32": int(0, 4_294_967_295),
        "uint64": int(0, 18_446_744_073_709_551_615),
        "ArrayOfStrings": {"type": "array", "items": {"type": "string"}},
        "FilePath": {"type": "string"},
        "Env": {"$ref": "#/definitions/ArrayOfStrings"},
        "UID": {"$ref": "#/definitions/uint32"},
        "GID": {"$ref": "#/definitions/uint32"},
        "Umask": {"$ref": "#/definitions/uint32"},
        "ArrayOfGIDs": {"type": "array", "items": {"$ref": "#/definitions/GID"}},
        "annotations": {"type": "object", "patternProperties": {".{1,}": {"type": "string"}}},
        "ociVersion": {"type": "string"},
        "Hook": {"type": "object", "required": ["path"], "properties": {
            "path": {"$ref": "#/definitions/FilePath"}, "args": {"$ref": "#/definitions/ArrayOfStrings"},
            "env": {"$ref": "#/definitions/Env"}, "timeout": {"type": "integer", "minimum": 1}}},
        "ArrayOfHooks": {"type": "array", "items": {"$ref": "#/definitions/Hook"}},
        "Mount": {"type": "object", "required": ["destination"], "properties": {
            "source": {"$ref": "#/definitions/FilePath"}, "destination": {"$ref": "#/definitions/FilePath"},
            "options": {"$ref": "#/definitions/ArrayOfStrings"}, "type": {"type": "string"}}}
    }})
}

pub fn assert_valid_for_dobby(validator: &jsonschema::Validator, config: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(config)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate against Dobby's schema:\n{}",
        errors.join("\n")
    );
}
