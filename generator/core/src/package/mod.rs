//! `bundlegen package`: an OCI image into a RALF package (`.ralf`), RDK's
//! signed single-layer app package: the image's layers applied with the
//! same unpacker as bundles, a package config (given, or derived from the
//! app metadata and image config: [`config`]), the content as tar or EROFS
//! with dm-verity ([`content`]), a cosign signature ([`sign`]), all in a
//! ZIP or tar OCI layout ([`assemble`]), written to a temporary file,
//! synced and renamed. The same inputs give the same bytes.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bundlegen_protocol::config::ConfigError;
use bundlegen_protocol::config::app::{AppMetadata, LibraryHints};
use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::ralf::ContentKind;
use bundlegen_protocol::ralf::config::PackageConfig;
use bundlegen_protocol::ralf::verity::VerityError;
use bundlegen_protocol::ralf::{ErofsCompression, version::Version};

use crate::bundle::{Bundle, BundleError, Place};
use crate::erofs::ErofsError;
use crate::generate::IMAGE_METADATA;
use crate::image::{Image, ImageError, ImageReference, RegistryOptions, TargetPlatform, open_image};
use crate::unpack::{DeviceNodes, UnpackOptions, UnpackStats};

pub mod assemble;
pub mod config;
pub mod content;
pub mod dedup;
pub mod dependency;
mod pkcs12;
pub mod registry;
pub mod sign;

pub use assemble::PackageFormat;
pub use sign::{SignError, SigningFiles, SigningIdentity};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Erofs(#[from] ErofsError),
    #[error(transparent)]
    Verity(#[from] VerityError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Archive(#[from] bundlegen_protocol::archive::ArchiveError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0} already exists; pass -y/--yes to replace it")]
    Exists(PathBuf),
    #[error("no app metadata: pass -a FILE, --config package.json, or build the image with /{IMAGE_METADATA}")]
    NoMetadata,
    #[error("the package config: {0}")]
    PackageConfig(String),
    #[error("the image has {count} device nodes ({first}); packages cannot carry device nodes")]
    DeviceNodes { count: usize, first: String },
    #[error("content: {0}")]
    Content(String),
    #[error("dependency {0}")]
    Dependency(String),
    #[error("registry: {0}")]
    Registry(String),
}

/// Which content layer: a kind, or ralfpack's default (EROFS lz4 for content
/// over 1 MiB, else tar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentChoice {
    Auto,
    Kind(ContentKind),
}

pub struct Request<'a> {
    pub image: &'a ImageReference,
    pub platform: &'a TargetPlatform,
    pub output: &'a Path,
    pub work_dir: Option<&'a Path>,
    /// `-a`: app metadata; otherwise the image's `/appmetadata.json`.
    pub app_metadata: Option<&'a Path>,
    /// `-x`: the package id instead of the metadata's.
    pub app_id: Option<&'a str>,
    /// `--config`: the package config as it is (no metadata needed).
    pub config: Option<&'a Path>,
    pub overrides: config::Overrides,
    pub content: ContentChoice,
    /// Write the deprecated `…erofs+dmverity` type (lz4 only).
    pub legacy_erofs_media_type: bool,
    pub format: PackageFormat,
    pub verity_salt: Option<Vec<u8>>,
    pub signer: Option<&'a SigningIdentity>,
    /// `--depends-on`: base and runtime packages this one is layered on.
    pub depends_on: &'a [PathBuf],
    pub dependency_constraint: dependency::ConstraintForm,
    pub registry: &'a RegistryOptions,
    pub unpack: &'a UnpackOptions,
    pub replace: bool,
    pub threads: usize,
}

/// A written package.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub config: PackageConfig,
    pub content: ContentKind,
    pub content_size: u64,
    pub manifest: Sha256Digest,
    pub signed: bool,
    pub warnings: Vec<String>,
    pub unpacked: UnpackStats,
    /// What the dependencies made unnecessary.
    pub dedup: Option<dedup::DedupReport>,
}

fn check_destination(request: &Request<'_>) -> Result<(), PackageError> {
    if !request.replace && fs::symlink_metadata(request.output).is_ok() {
        return Err(PackageError::Exists(request.output.to_path_buf()));
    }
    Ok(())
}

/// The whole job: [`open`] then [`build`].
pub async fn package(
    request: &Request<'_>,
    progress: impl FnMut(usize, usize, &UnpackStats),
) -> Result<Packaged, PackageError> {
    let image = open(request).await?;
    build(request, &image, progress)
}

/// The asynchronous part: the output may be written, the image opens.
pub async fn open(request: &Request<'_>) -> Result<Image, PackageError> {
    check_destination(request)?;
    Ok(open_image(request.image, request.platform, request.registry).await?)
}

/// The package config (`--config` as given, or derived from the metadata)
/// and the app's library hints.
fn package_config(
    request: &Request<'_>,
    bundle: &mut Bundle,
    image: &Image,
    warnings: &mut Vec<String>,
) -> Result<(PackageConfig, LibraryHints), PackageError> {
    let in_image = bundle.take_image_metadata::<PackageError>()?.map(|parsed| parsed.value);
    let app = match request.app_metadata {
        Some(file) => {
            let parsed = bundlegen_protocol::config::load::<AppMetadata>(file)?;
            warnings.extend(parsed.warnings);
            Some(parsed.value)
        }
        None => in_image,
    };
    let hints = app.as_ref().and_then(|a| a.libraries.clone()).unwrap_or_default();
    let mut config = match (request.config, app) {
        (Some(file), _) => {
            let parsed = bundlegen_protocol::config::load::<PackageConfig>(file)?;
            warnings.extend(parsed.warnings);
            parsed.value
        }
        (None, Some(app)) => {
            let image_config = image.config.config().clone().unwrap_or_default();
            config::derive(&app, &image_config, &image.platform(), &request.overrides)
                .map_err(PackageError::PackageConfig)?
        }
        (None, None) => return Err(PackageError::NoMetadata),
    };
    if let Some(id) = request.app_id {
        config.id = id.to_string();
    }
    if let Some(version) = &request.overrides.version {
        config.version = version.clone();
    }
    let problems = config.installable_problems();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(PackageError::PackageConfig(lines.join("; ")));
    }
    Ok((config, hints))
}

fn content_kind(request: &Request<'_>, content_bytes: u64) -> Result<ContentKind, PackageError> {
    let kind = match request.content {
        ContentChoice::Kind(kind) => kind,
        ContentChoice::Auto if content_bytes > content::EROFS_FROM => ContentKind::Erofs {
            compression: ErofsCompression::Lz4,
            legacy: false,
        },
        ContentChoice::Auto => ContentKind::Tar,
    };
    Ok(match (kind, request.legacy_erofs_media_type) {
        (
            ContentKind::Erofs {
                compression: ErofsCompression::Lz4,
                ..
            },
            true,
        ) => ContentKind::Erofs {
            compression: ErofsCompression::Lz4,
            legacy: true,
        },
        (ContentKind::Erofs { .. }, true) => {
            return Err(PackageError::Content(
                "--legacy-erofs-media-type names lz4 content only (the deprecated type means lz4)".into(),
            ));
        }
        (kind, _) => kind,
    })
}

/// The blocking part: unpack, configure, write content and package.
pub fn build(
    request: &Request<'_>,
    image: &Image,
    progress: impl FnMut(usize, usize, &UnpackStats),
) -> Result<Packaged, PackageError> {
    let place = Place {
        output: request.output,
        work_dir: request.work_dir,
    };
    // Device nodes are only recorded (and then refused): never made on disk.
    let unpack = UnpackOptions {
        device_nodes: DeviceNodes::Record,
        ..*request.unpack
    };
    let (mut bundle, unpacked) = Bundle::from_image(image, &place, &unpack, &[], &[], progress)?;
    let mut warnings = Vec::new();
    let image_platform = image.platform();
    if request.platform.match_score(&image_platform).is_none() {
        warnings.push(format!(
            "{} is built for {image_platform}, not {}",
            request.image, request.platform
        ));
    }
    let (mut config, hints) = package_config(request, &mut bundle, image, &mut warnings)?;
    if config.version.parse::<Version>().is_err() {
        return Err(PackageError::PackageConfig(format!(
            "version {:?} is not a package version",
            config.version
        )));
    }
    let dedup = if request.depends_on.is_empty() {
        None
    } else {
        let dependencies = dependency::load(request.depends_on, bundle.path())?;
        for dependency in &dependencies.packages {
            let version = dependency
                .config
                .version
                .parse::<Version>()
                .map_err(|e| PackageError::Dependency(format!("{}: {e}", dependency.path.display())))?;
            config
                .dependencies
                .entry(dependency.config.id.clone())
                .or_insert_with(|| request.dependency_constraint.of(&version));
        }
        let abi =
            bundlegen_protocol::probe::Abi::for_arch(&image_platform.architecture, image_platform.variant.as_deref());
        Some(dedup::dedup(
            &mut bundle,
            &dependencies,
            &hints,
            abi,
            Some(&config.entry_point),
        )?)
    };
    let kind = content_kind(request, unpacked.file_bytes)?;
    let options = content::ContentOptions {
        kind,
        epoch: bundle.epoch,
        threads: request.threads,
        salt: request.verity_salt.clone(),
    };
    let rootfs = bundle.rootfs.host_path().to_path_buf();
    let mut content = content::write_content(&rootfs, &bundle.manifest, &options, bundle.path())?;
    let layout = assemble::layout(&config, &content, request.signer)?;

    let (sha256, size) = write_package_file(request.output, request.replace, |file| {
        assemble::write_container(&layout, &mut content, request.format, file)
    })?;
    Ok(Packaged {
        path: request.output.to_path_buf(),
        sha256,
        size,
        config,
        content: kind,
        content_size: content.size,
        manifest: layout.manifest,
        signed: request.signer.is_some(),
        warnings,
        unpacked,
        dedup,
    })
}

/// Writes a package file through `write` into a temporary file next to
/// `output`, syncs it and renames it into place (replacing only with
/// `replace`). Returns its sha256 and size.
pub fn write_package_file(
    output: &Path,
    replace: bool,
    write: impl FnOnce(&File) -> Result<(), PackageError>,
) -> Result<(Sha256Digest, u64), PackageError> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let io_error = |what| move |source| PackageError::Io { what, source };
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempfile_in(parent)
        .map_err(io_error("creating the package file"))?;
    write(partial.as_file())?;
    let file = partial.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_error("writing the package"))?;
    file.sync_all().map_err(io_error("writing the package"))?;
    let (sha256, size) = digest_of(partial.path()).map_err(io_error("reading the package back"))?;
    let persisted = if replace {
        partial.persist(output)
    } else {
        partial.persist_noclobber(output)
    };
    persisted.map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            PackageError::Exists(output.to_path_buf())
        } else {
            io_error("placing the package")(e.error)
        }
    })?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing the package's directory"))?;
    Ok((sha256, size))
}

fn digest_of(path: &Path) -> io::Result<(Sha256Digest, u64)> {
    let mut hashing = bundlegen_protocol::digest::HashingWriter::new(io::sink());
    io::copy(
        &mut io::BufReader::with_capacity(1 << 20, File::open(path)?),
        &mut hashing,
    )?;
    let (_, digest, size) = hashing.finish();
    Ok((digest, size))
}
