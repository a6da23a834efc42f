//! BundleGen's `NAME_libs.json`: every shared library on a box, with the
//! symbol versions it defines and its dependencies.

use serde::{Deserialize, Serialize};

use super::{Problem, Validate, check_absolute, field};

/// The list of every shared library on a box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LibsFile {
    /// One entry per path, symlinks included.
    pub libs: Vec<LibEntry>,
}

/// One library file (or symlink to one) on the box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LibEntry {
    /// Absolute path on the box.
    pub name: String,
    /// Symbol version definitions (`GLIBC_2.4`, ...), without the base entry.
    pub apiversions: Vec<String>,
    /// DT_NEEDED libraries, resolved to absolute paths on the box.
    pub deps: Vec<String>,
}

impl Validate for LibsFile {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        for (i, entry) in self.libs.iter().enumerate() {
            entry.validate(&field(path, &format!("libs[{i}]")), problems);
        }
    }
}

impl Validate for LibEntry {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        check_absolute(&self.name, &field(path, "name"), problems);
        for (i, dep) in self.deps.iter().enumerate() {
            check_absolute(dep, &field(path, &format!("deps[{i}]")), problems);
        }
    }
}
