//! Helpers shared by the generator's integration tests: building OCI image
//! layouts from scratch, running real peers (umoci, skopeo), and comparing
//! directory trees.
#![allow(dead_code)] // each test binary uses a different part

pub mod dobby;
pub mod service;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bundlegen_protocol::digest::Sha256Digest;
use serde_json::{Value, json};

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

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    Gzip,
    Zstd,
    None,
}

/// A layer under construction (a tar stream).
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_600_000_000);
    header
}

impl LayerBuilder {
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.tar
            .append_data(&mut header(tar::EntryType::Directory, mode, 0), path, std::io::empty())
            .unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        self.tar
            .append_data(
                &mut header(tar::EntryType::Regular, mode, data.len() as u64),
                path,
                data,
            )
            .unwrap();
        self
    }

    pub fn owned_file(mut self, path: &str, data: &[u8], uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.tar
            .append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), path, target)
            .unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.tar
            .append_link(&mut header(tar::EntryType::Link, 0o644, 0), path, target)
            .unwrap();
        self
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.tar.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// A whiteout (`.wh.NAME`) or opaque marker (`DIR/.wh..wh..opq`).
    pub fn whiteout(self, path: &str) -> Self {
        self.file(path, b"", 0o644)
    }

    pub fn tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }
}

pub fn sha256(data: &[u8]) -> String {
    Sha256Digest::of(data).to_string()
}

/// Writes OCI image layouts blob by blob.
pub struct LayoutBuilder {
    pub dir: PathBuf,
    manifests: Vec<Value>,
}

impl LayoutBuilder {
    pub fn new(dir: &Path) -> LayoutBuilder {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        LayoutBuilder {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        }
    }

    /// Stores a blob and returns its digest.
    pub fn blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        fs::write(self.blob_path(&digest), data).unwrap();
        digest
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    /// Stores an image (layers + config + manifest) and returns the manifest
    /// descriptor, not yet referenced from index.json.
    pub fn image(&self, layers: &[(Vec<u8>, Compress)], arch: &str, variant: Option<&str>, config: Value) -> Value {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, compress) in layers {
            diff_ids.push(sha256(tar));
            let (blob, media_type) = match compress {
                Compress::Gzip => {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(tar).unwrap();
                    (gz.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
                }
                Compress::Zstd => (
                    zstd::encode_all(tar.as_slice(), 3).unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                Compress::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            };
            descriptors.push(json!({"mediaType": media_type, "digest": self.blob(&blob), "size": blob.len()}));
        }
        let mut image_config = json!({
            "created": "2024-05-01T10:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(variant) = variant {
            image_config["variant"] = json!(variant);
        }
        let config_bytes = serde_json::to_vec(&image_config).unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.blob(&config_bytes), "size": config_bytes.len()},
            "layers": descriptors,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.blob(&manifest_bytes),
            "size": manifest_bytes.len(),
            "platform": platform,
        })
    }

    /// Stores an image index over `manifests` and returns its descriptor.
    pub fn index(&self, manifests: Vec<Value>) -> Value {
        let index =
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let bytes = serde_json::to_vec(&index).unwrap();
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": self.blob(&bytes), "size": bytes.len()})
    }

    /// References `descriptor` from index.json under `tag`.
    pub fn tag(mut self, mut descriptor: Value, tag: &str) -> Self {
        descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(descriptor);
        self.write_index();
        self
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        fs::write(self.dir.join("index.json"), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    }
}

/// A one-image layout at `dir` with the given layers, tagged `latest`.
pub fn simple_layout(dir: &Path, layers: &[(Vec<u8>, Compress)]) -> LayoutBuilder {
    let layout = LayoutBuilder::new(dir);
    let image = layout.image(layers, "amd64", None, json!({"Cmd": ["/bin/app"]}));
    layout.tag(image, "latest")
}

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

/// A real registry (Debian's `docker-registry`) on a free port, storing
/// under `dir`; killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Registry {
    /// Starts it on a free port; again on another one if the port was taken
    /// between our probe and its bind (tests run in parallel).
    pub fn start(dir: &Path, extra_config: &str) -> Registry {
        for _ in 0..5 {
            if let Some(registry) = Registry::try_start(dir, extra_config) {
                return registry;
            }
        }
        panic!("the registry did not start");
    }

    fn try_start(dir: &Path, extra_config: &str) -> Option<Registry> {
        let port = free_port();
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).unwrap();
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra_config}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (Debian package docker-registry)");
        let mut registry = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Exited: it could not bind the port.
            if registry.child.try_wait().unwrap().is_some() {
                return None;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Listening, and still ours a moment later.
                std::thread::sleep(Duration::from_millis(100));
                if registry.child.try_wait().unwrap().is_none() {
                    return Some(registry);
                }
                return None;
            }
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies an OCI layout's `latest` (all platforms) to a destination.
pub fn skopeo_push(layout: &Path, destination: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all"])
        .args(extra)
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(destination));
}
