//! Helpers shared by the generator's integration tests: building OCI image
//! layouts from scratch, running real peers (umoci, skopeo), and comparing
//! directory trees.
#![allow(dead_code)] // each test binary uses a different part

pub mod dobby;
pub mod service;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

/// The `bundlegen` binary under test.
pub fn bundlegen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bundlegen"))
}

/// Runs a command, panicking with its output if it fails.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command that must fail; returns its stderr.
pub fn run_failing(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(!output.status.success(), "{command:?} should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[allow(unused_imports)] // Not every test file reads the conformance data.
pub use bundlegen_fixtures::conformance;

#[allow(unused_imports)] // Not every test file builds images.
pub use bundlegen_fixtures::oci::{Compress, LayerBuilder, LayoutBuilder, sha256, simple_layout};

#[allow(unused_imports)] // Not every test file runs a registry.
pub use bundlegen_fixtures::registry::Registry;

/// What a tree holds: path -> kind, permission bits, content or link target.
/// Hardlinked files are described by the first path of their group.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    for path in paths {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        let kind = meta.file_type();
        let description = if kind.is_dir() {
            format!("dir {mode:o}")
        } else if kind.is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if kind.is_fifo() {
            format!("fifo {mode:o}")
        } else if kind.is_char_device() || kind.is_block_device() {
            format!("device {mode:o}")
        } else {
            let link = if meta.nlink() > 1 {
                match inodes.get(&meta.ino()) {
                    Some(first) => format!(" linked to {first}"),
                    None => {
                        inodes.insert(meta.ino(), rel.clone());
                        String::new()
                    }
                }
            } else {
                String::new()
            };
            format!("file {mode:o} {}{link}", sha256(&fs::read(&path).unwrap()))
        };
        out.insert(rel, description);
    }
    out
}

/// Entries only in one tree, or different, as readable lines.
pub fn tree_differences(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, description) in ours {
        match theirs.get(path) {
            None => lines.push(format!("only ours: {path} ({description})")),
            Some(other) if other != description => {
                lines.push(format!("differs: {path}: ours {description}, theirs {other}"))
            }
            Some(_) => {}
        }
    }
    for (path, description) in theirs {
        if !ours.contains_key(path) {
            lines.push(format!("only theirs: {path} ({description})"));
        }
    }
    lines
}

/// Names in `dir`, for checking that nothing was left behind.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Copies an OCI layout's `latest` (all platforms) to a destination.
pub fn skopeo_push(layout: &Path, destination: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all"])
        .args(extra)
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(destination));
}
