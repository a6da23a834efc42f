//! The generator's inputs: platform templates (with their library lists), app
//! metadata and the operator's configuration.
//!
//! Every document is read with [`parse`]: a type error names the file and the
//! JSON path (`gpu.devs[2].major: invalid type ...`), fields we do not know are
//! reported as warnings instead of being silently ignored (a typo in a
//! template otherwise goes unnoticed), and each type's [`Validate`] then checks
//! what the types cannot express, collecting every problem at once.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub mod app;
pub mod libs;
pub mod operator;
pub mod platform;
pub mod size;

/// One thing wrong in a document: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path, e.g. `gpu.devs[2].major`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", invalid_message(file, problems))]
    Invalid { file: PathBuf, problems: Vec<Problem> },
    #[error("platform template {name:?} not found under {search_path}{}", hint(available))]
    TemplateNotFound {
        name: String,
        search_path: PathBuf,
        available: Vec<String>,
    },
    #[error("platform template {name:?} is ambiguous: {}", candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "))]
    AmbiguousTemplate { name: String, candidates: Vec<PathBuf> },
}

fn invalid_message(file: &Path, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{}: {one}", file.display()),
        many => {
            let lines: Vec<String> = many.iter().map(|p| format!("\n  {p}")).collect();
            format!("{}: {} problems:{}", file.display(), many.len(), lines.concat())
        }
    }
}

fn hint(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!("; it has: {}", available.join(", "))
    }
}

/// Semantic checks a type cannot express.
pub trait Validate {
    /// Adds a [`Problem`] for everything wrong; `path` is this value's JSON path.
    fn validate(&self, path: &str, problems: &mut Vec<Problem>);
}

/// Joins a JSON path and a field name.
pub fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A document and the warnings about it (unknown fields).
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    pub value: T,
    pub warnings: Vec<String>,
}

/// Parses and validates a JSON document. `file` is only used in messages.
pub fn parse<T: DeserializeOwned + Validate>(text: &str, file: &Path) -> Result<Parsed<T>, ConfigError> {
    let invalid = |path: String, reason: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        problems: vec![Problem { path, reason }],
    };
    let mut ignored = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| ignored.push(json_path(&path));
    let mut json = serde_json::Deserializer::from_str(text);
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&mut json, &mut record));
    let value = result.map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner();
        if error.is_syntax() || error.is_eof() {
            // Where the text breaks, not a field: serde's path there is `?`.
            return invalid("(document)".into(), format!("not valid JSON: {error}"));
        }
        invalid(if path == "." { "(document)".into() } else { path }, error.to_string())
    })?;
    json.end()
        .map_err(|e| invalid("(document)".into(), format!("not valid JSON: {e}")))?;
    let mut problems = Vec::new();
    value.validate("", &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_path_buf(),
            problems,
        });
    }
    let warnings = ignored
        .into_iter()
        .map(|path| format!("{}: unknown field {path} is ignored (a typo?)", file.display()))
        .collect();
    Ok(Parsed { value, warnings })
}

/// `a.b[2].c`, the way the rest of our messages write JSON paths.
fn json_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", json_path(parent)),
        Path::Map { parent, key } => field(&json_path(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

/// Reads and parses a JSON file.
pub fn load<T: DeserializeOwned + Validate>(file: &Path) -> Result<Parsed<T>, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text, file)
}

/// Checks that `value` is one of `allowed` (case-sensitive).
pub fn check_one_of(value: &str, allowed: &[&str], path: &str, problems: &mut Vec<Problem>) {
    if !allowed.contains(&value) {
        problems.push(Problem {
            path: path.to_string(),
            reason: format!("{value:?} is not one of {}", allowed.join(", ")),
        });
    }
}

/// Checks that a path is absolute (Dobby and crun need that for host paths
/// and mount destinations).
pub fn check_absolute(value: &str, path: &str, problems: &mut Vec<Problem>) {
    if !value.starts_with('/') {
        problems.push(Problem {
            path: path.to_string(),
            reason: format!("{value:?} must be an absolute path"),
        });
    }
}

#[cfg(test)]
mod tests;
