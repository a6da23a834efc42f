//! The packages an app package is layered on (`--depends-on`): each is read
//! and its blobs checked, and their contents are written, lowest first,
//! into one directory: the view a box's overlay gives the app below its own
//! layer. What is there decides what the app package can leave out.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bundlegen_protocol::archive::{Owners, ReadOptions, unpack_bundle};
use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::ralf::config::PackageConfig;
use bundlegen_protocol::ralf::package::{PackageFile, read_layout, verity_annotations};
use bundlegen_protocol::ralf::{ContentKind, version::Version};
use bundlegen_protocol::root::{RootDir, Symlinks};

use super::PackageError;
use crate::erofs::read::ErofsImage;

/// Most content a dependency may hold.
const MAX_CONTENT: u64 = 32 << 30;

/// A dependency package: its config and file name.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub path: PathBuf,
    pub config: PackageConfig,
}

/// What one path holds in the dependencies' merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    File { mode: u32, size: u64, sha256: Sha256Digest },
    Symlink(PathBuf),
    Dir,
}

/// The dependencies, their merged content on disk, and what each path holds.
pub struct Dependencies {
    pub packages: Vec<Dependency>,
    /// Their contents, lowest (base) first, as one tree.
    pub merged: tempfile::TempDir,
    /// Absolute path inside → what is there.
    pub facts: BTreeMap<String, Fact>,
}

fn package_error(path: &Path, error: impl std::fmt::Display) -> PackageError {
    PackageError::Dependency(format!("{}: {error}", path.display()))
}

/// Lower layers first: base, then runtime, then anything else, each in the
/// order given.
fn layer_rank(config: &PackageConfig) -> u8 {
    match config.package_type.as_str() {
        "base" => 0,
        "runtime" => 1,
        _ => 2,
    }
}

/// Reads `paths` and writes their contents, merged, into a temporary
/// directory in `work`.
pub fn load(paths: &[PathBuf], work: &Path) -> Result<Dependencies, PackageError> {
    let merged = tempfile::Builder::new()
        .prefix(".dependencies-")
        .tempdir_in(work)
        .map_err(|source| PackageError::Io {
            what: "creating the dependencies' directory",
            source,
        })?;
    let mut packages = Vec::new();
    for path in paths {
        let file = PackageFile::open(path).map_err(|e| package_error(path, e))?;
        let layout = read_layout(&file).map_err(|e| package_error(path, e))?;
        file.check_blob(&layout.content).map_err(|e| package_error(path, e))?;
        packages.push((path.clone(), file, layout));
    }
    packages.sort_by_key(|(_, _, layout)| layer_rank(&layout.config));
    let mut root = RootDir::open(merged.path(), Symlinks::FollowInRoot).map_err(|e| package_error(merged.path(), e))?;
    for (path, file, layout) in &packages {
        match layout.content_kind {
            ContentKind::Erofs { .. } => {
                let verity = verity_annotations(&layout.content).map_err(|e| package_error(path, e))?;
                let location = file
                    .location(&layout.content.blob_path())
                    .filter(|l| l.stored)
                    .ok_or_else(|| package_error(path, "its EROFS content is not stored in place"))?;
                let image = ErofsImage::open(file.file(), location.offset, verity.offset)
                    .map_err(|e| package_error(path, e))?;
                image
                    .extract(&mut root, MAX_CONTENT)
                    .map_err(|e| package_error(path, e))?;
            }
            ContentKind::Tar | ContentKind::TarGzip | ContentKind::TarZstd => {
                let reader = file.reader(&layout.content.blob_path()).expect("checked above");
                extract_tar(reader, merged.path(), path)?;
            }
            ContentKind::Empty => {}
        }
    }
    drop(root);
    let facts = describe(merged.path())?;
    let packages = packages
        .into_iter()
        .map(|(path, _, layout)| Dependency {
            path,
            config: layout.config,
        })
        .collect();
    Ok(Dependencies {
        packages,
        merged,
        facts,
    })
}

/// Unpacks a tar content layer (any compression) over `into`.
fn extract_tar(reader: Box<dyn Read + '_>, into: &Path, package: &Path) -> Result<(), PackageError> {
    let options = ReadOptions {
        max_bytes: MAX_CONTENT,
        max_entries: 2_000_000,
        allow_setuid: true,
        owners: Owners::default(),
    };
    // Unpacked beside, then merged over what lower layers wrote.
    let layer = into.with_extension("layer");
    unpack_bundle(reader, &layer, &options).map_err(|e| package_error(package, e))?;
    merge(&layer, into).map_err(|e| package_error(package, e))?;
    let _ = bundlegen_protocol::root::remove_tree(&layer);
    Ok(())
}

/// Moves `from`'s entries over `into`'s (upper layer wins; directories merge).
fn merge(from: &Path, into: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = into.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        match fs::symlink_metadata(&target) {
            Ok(meta) if is_dir && meta.is_dir() => merge(&entry.path(), &target)?,
            Ok(meta) => {
                if meta.is_dir() {
                    fs::remove_dir_all(&target)?;
                } else {
                    fs::remove_file(&target)?;
                }
                fs::rename(entry.path(), &target)?;
            }
            Err(_) => fs::rename(entry.path(), &target)?,
        }
    }
    Ok(())
}

/// What each path of a tree holds.
pub fn describe(root: &Path) -> Result<BTreeMap<String, Fact>, PackageError> {
    let mut facts = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    let failed = |path: &Path, e: io::Error| PackageError::Dependency(format!("{}: {e}", path.display()));
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(root.join(&dir)).map_err(|e| failed(&dir, e))? {
            let entry = entry.map_err(|e| failed(&dir, e))?;
            let relative = dir.join(entry.file_name());
            let host = root.join(&relative);
            let meta = fs::symlink_metadata(&host).map_err(|e| failed(&relative, e))?;
            let fact = if meta.is_dir() {
                stack.push(relative.clone());
                Fact::Dir
            } else if meta.file_type().is_symlink() {
                Fact::Symlink(fs::read_link(&host).map_err(|e| failed(&relative, e))?)
            } else if meta.is_file() {
                Fact::File {
                    mode: meta.mode() & 0o7777,
                    size: meta.len(),
                    sha256: sha256_file(&host).map_err(|e| failed(&relative, e))?,
                }
            } else {
                continue;
            };
            facts.insert(format!("/{}", relative.display()), fact);
        }
    }
    Ok(facts)
}

pub fn sha256_file(path: &Path) -> io::Result<Sha256Digest> {
    let mut hashing = bundlegen_protocol::digest::HashingWriter::new(io::sink());
    io::copy(
        &mut io::BufReader::with_capacity(1 << 20, fs::File::open(path)?),
        &mut hashing,
    )?;
    Ok(hashing.finish().1)
}

/// How a dependency's version becomes a constraint in the app's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintForm {
    /// `^MAJOR.MINOR`: compatible releases (the default).
    Caret,
    /// `~MAJOR.MINOR.PATCH`: patch releases.
    Tilde,
    /// `=VERSION`: that version only.
    Exact,
    /// `>=VERSION`.
    AtLeast,
    /// `*`: any.
    Any,
}

impl std::str::FromStr for ConstraintForm {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "^" | "caret" => ConstraintForm::Caret,
            "~" | "tilde" => ConstraintForm::Tilde,
            "=" | "exact" => ConstraintForm::Exact,
            ">=" | "at-least" => ConstraintForm::AtLeast,
            "*" | "any" => ConstraintForm::Any,
            other => return Err(format!("{other:?}: use ^, ~, =, >= or *")),
        })
    }
}

impl ConstraintForm {
    pub fn of(self, version: &Version) -> String {
        let part = |i: usize| version.parts().get(i).copied().unwrap_or(0);
        match self {
            ConstraintForm::Caret => format!("^{}.{}", part(0), part(1)),
            ConstraintForm::Tilde => format!("~{}.{}.{}", part(0), part(1), part(2)),
            ConstraintForm::Exact => format!("={version}"),
            ConstraintForm::AtLeast => format!(">={version}"),
            ConstraintForm::Any => "*".into(),
        }
    }
}
