//! RALF packages for the agent's tests, made by the generator's own code
//! from OCI images of this machine's programs: a test PKI's signer, images
//! built on each other, the kernel's view (mounts, loop devices) to check
//! that nothing is left behind, and a plain OCI base spec so the Dobby
//! double runs instances with real crun.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundlegen_core::image::{ImageReference, RegistryOptions, TargetPlatform};
use bundlegen_core::package::{self, ContentChoice, PackageFormat, SigningFiles, SigningIdentity};
use bundlegen_core::unpack::UnpackOptions;
use bundlegen_fixtures::oci::{Compress, LayerBuilder, LayoutBuilder};
use bundlegen_fixtures::pki::{Key, Pki};
use bundlegen_protocol::ralf::ContentKind;
use serde_json::{Value, json};

/// Files of a layer: (path, bytes, mode).
pub type Files = Vec<(String, Vec<u8>, u32)>;

/// A program of this machine and the libraries `ldd` says it loads.
pub fn host_closure(program: &str) -> Vec<String> {
    let output = Command::new("ldd").arg(program).output().unwrap();
    let mut paths = vec![program.to_string()];
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(path.to_string());
        }
    }
    paths
}

pub fn host_files(paths: &[String]) -> Files {
    paths
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap(), 0o755))
        .collect()
}

/// An amd64 image layout of `layers` (each one on those before, as images
/// are built) running `command`; its reference.
pub fn image(dir: &Path, layers: &[&Files], command: &str) -> String {
    let mut tars = Vec::new();
    for (index, files) in layers.iter().enumerate() {
        let mut layer = LayerBuilder::default();
        if index == 0 {
            layer = layer
                .dir("dev", 0o755)
                .dir("proc", 0o555)
                .dir("data", 0o755)
                .dir("tmp", 0o1777);
        }
        for (path, bytes, mode) in files.iter() {
            layer = layer.file(path.trim_start_matches('/'), bytes, *mode);
        }
        tars.push((layer.tar(), Compress::Gzip));
    }
    let layout = LayoutBuilder::new(dir);
    let manifest = layout.image(&tars, "amd64", None, json!({"Cmd": [command]}));
    layout.tag(manifest, "latest");
    format!("oci:{}:latest", dir.display())
}

/// A package config.
pub fn package_config(id: &str, version: &str, kind: &str, entry: &str) -> Value {
    json!({"id": id, "specVersion": "1.1.0", "version": version, "packageType": kind, "entryPoint": entry})
}

/// A test PKI and a code-signing identity it issued.
pub struct Signing {
    pub pki: Pki,
    pub files: SigningFiles,
}

impl Signing {
    pub fn new(dir: &Path) -> Signing {
        let pki = Pki::new(dir);
        let signer = pki.signer("packager", Key::EcP256);
        Signing {
            files: SigningFiles {
                key: signer.key,
                certificate: Some(signer.certificate),
                chain: vec![pki.intermediate.clone()],
                skip_expiry_check: true,
            },
            pki,
        }
    }

    /// A directory holding the root CA, as `packages.ca_roots` wants.
    pub fn ca_roots(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(&self.pki.root, dir.join("root.pem")).unwrap();
        dir.to_path_buf()
    }

    pub fn identity(&self) -> SigningIdentity {
        identity(&self.files)
    }
}

pub fn identity(files: &SigningFiles) -> SigningIdentity {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    SigningIdentity::load(files, now).unwrap()
}

/// Makes a package of `image` with `config` (layered on `depends_on`).
pub async fn make_package(
    image: &str,
    config: &Value,
    output: &Path,
    content: ContentKind,
    depends_on: &[PathBuf],
    signer: Option<&SigningIdentity>,
) -> PathBuf {
    let config_file = output.with_extension("json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let reference: ImageReference = image.parse().unwrap();
    let platform = TargetPlatform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    let registry = RegistryOptions::default();
    let unpack = UnpackOptions::default();
    let request = package::Request {
        image: &reference,
        platform: &platform,
        output,
        work_dir: None,
        app_metadata: None,
        app_id: None,
        config: Some(&config_file),
        overrides: Default::default(),
        content: ContentChoice::Kind(content),
        legacy_erofs_media_type: false,
        format: PackageFormat::Zip,
        verity_salt: None,
        signer,
        depends_on,
        dependency_constraint: package::dependency::ConstraintForm::Caret,
        registry: &registry,
        unpack: &unpack,
        replace: true,
        threads: 0,
    };
    package::package(&request, |_, _, _| {}).await.unwrap();
    output.to_path_buf()
}

/// A plain OCI base spec (no rdkPlugins): the Dobby double runs such
/// bundles with real crun.
pub fn crun_base_spec(dir: &Path) -> PathBuf {
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {"args": [], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}
    });
    let path = dir.join("base-spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// Mount points at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|point| Path::new(point).starts_with(&dir))
        .collect()
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Path::new(backing.trim())
                .starts_with(&dir)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes `package` again with its signature manifest changed by `edit`
/// (the index follows; every other blob stays as it is, content aligned).
pub fn rewrite_signature(package: &Path, output: &Path, edit: impl FnOnce(&mut Manifest)) {
    use bundlegen_protocol::ralf::layout::{Descriptor, Index, to_json};
    use bundlegen_protocol::ralf::package::{PackageFile, read_layout};
    use bundlegen_protocol::ralf::zip::ZipWriter;
    use bundlegen_protocol::ralf::{OCI_LAYOUT, media};

    let file = PackageFile::open(package).unwrap();
    let layout = read_layout(&file).unwrap();
    let (old_descriptor, mut signature) = layout.signature.clone().unwrap();
    edit(&mut signature);
    let bytes = to_json(&signature);
    let mut descriptor = Descriptor::of(media::MANIFEST, &bytes);
    descriptor.annotations = old_descriptor.annotations.clone();
    let mut index: Index = layout.index.clone();
    for manifest in &mut index.manifests {
        if manifest.digest == old_descriptor.digest {
            *manifest = descriptor.clone();
        }
    }
    let mut blobs: Vec<(String, Vec<u8>)> = file
        .names()
        .filter(|n| n.starts_with("blobs/") && *n != old_descriptor.blob_path())
        .map(|n| (n.to_string(), file.read(n, u64::MAX).unwrap()))
        .collect();
    blobs.push((descriptor.blob_path(), bytes));
    let out = std::fs::File::create(output).unwrap();
    let mut zip = ZipWriter::new(std::io::BufWriter::new(out)).unwrap();
    zip.add_stored("oci-layout", &mut &OCI_LAYOUT[..], OCI_LAYOUT.len() as u64, 1)
        .unwrap();
    let index = to_json(&index);
    zip.add_stored("index.json", &mut &index[..], index.len() as u64, 1)
        .unwrap();
    for (name, bytes) in blobs {
        zip.add_stored(&name, &mut &bytes[..], bytes.len() as u64, 4096)
            .unwrap();
    }
    zip.finish().unwrap();
}

pub use bundlegen_protocol::ralf::layout::Manifest;
