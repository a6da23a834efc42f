//! The operations: image + platform + app + operator → bundle and archive
//! ([`generate`]), image → plain OCI bundle ([`unpack`]), and the
//! compatibility check alone ([`check_compatibility`]).

use std::path::Path;

use bundlegen_protocol::archive::ipk::IpkControl;
use bundlegen_protocol::config::app::{AppMetadata, container_id_problem};
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::config::{ConfigError, Parsed};
use bundlegen_protocol::idmap::IdMapping;
use bundlegen_protocol::manifest::Owner;

use crate::bundle::{Bundle, BundleError, Place};
use crate::image::{Image, ImageError, ImageReference, RegistryOptions, TargetPlatform, open_image};
use crate::output::{self, OutputError, OutputOptions, Written};
use crate::pipeline::{self, Inputs, StageError};
use crate::rootfs::Rootfs;
use crate::unpack::{UnpackOptions, UnpackStats};

pub use crate::bundle::IMAGE_METADATA;

pub struct Request<'a> {
    pub image: &'a ImageReference,
    pub output: &'a Path,
    pub work_dir: Option<&'a Path>,
    pub platform: &'a PlatformTemplate,
    /// `-a`: metadata file; otherwise the image's `/appmetadata.json`.
    pub app_metadata: Option<&'a Path>,
    /// `-x`: overrides the app id.
    pub app_id: Option<&'a str>,
    pub operator: &'a OperatorConfig,
    pub options: &'a pipeline::Options,
    pub registry: &'a RegistryOptions,
    pub unpack: &'a UnpackOptions,
    pub output_options: &'a OutputOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("no app metadata: pass -a FILE, or build the image with /{IMAGE_METADATA}")]
    NoMetadata,
    #[error("--appid {id:?}: {reason}")]
    AppId { id: String, reason: String },
}

impl GenerateError {
    /// BundleGen's exit codes: 2 for an incompatible app, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            GenerateError::Stage(StageError::Incompatible(_)) => 2,
            _ => 1,
        }
    }
}

pub struct Generated {
    pub written: Written,
    pub app_id: String,
    pub warnings: Vec<String>,
    pub library_notes: Vec<String>,
    pub unpacked: UnpackStats,
}

/// What `bundlegen unpack` needs.
pub struct UnpackRequest<'a> {
    pub image: &'a ImageReference,
    pub platform: &'a TargetPlatform,
    pub output: &'a Path,
    pub work_dir: Option<&'a Path>,
    /// User namespace maps for the config and the archive's owners.
    pub uid_map: &'a [IdMapping],
    pub gid_map: &'a [IdMapping],
    pub registry: &'a RegistryOptions,
    pub unpack: &'a UnpackOptions,
    pub output_options: &'a OutputOptions,
}

pub struct Unpacked {
    pub written: Written,
    pub unpacked: UnpackStats,
    pub warnings: Vec<String>,
}

/// A plain OCI bundle of the image, as `umoci unpack --rootless` makes it.
pub async fn unpack(
    request: &UnpackRequest<'_>,
    progress: impl FnMut(usize, usize, &UnpackStats),
) -> Result<Unpacked, GenerateError> {
    output::check_destination(request.output, request.output_options)?;
    let image = open_image(request.image, request.platform, request.registry).await?;
    let image_platform = image.platform();
    let mut warnings = Vec::new();
    if request.platform.match_score(&image_platform).is_none() {
        warnings.push(format!(
            "{} is built for {image_platform}, not {}",
            request.image, request.platform
        ));
    }
    let place = Place {
        output: request.output,
        work_dir: request.work_dir,
    };
    let maps = (request.uid_map, request.gid_map);
    let (written, unpacked) = if output::assemble_in_memory(request.output_options) {
        let staged = Bundle::create_in_memory(&place)?.unpack(&image, request.unpack, maps.0, maps.1, progress)?;
        write_unpacked(request, &image, staged)?
    } else {
        let staged = Bundle::from_image(&image, &place, request.unpack, maps.0, maps.1, progress)?;
        write_unpacked(request, &image, staged)?
    };
    Ok(Unpacked {
        written,
        unpacked,
        warnings,
    })
}

/// Writes an unpacked bundle: the archive's owners mapped as its config
/// maps them, and an `.ipk`'s control fields.
fn write_unpacked<R: Rootfs>(
    request: &UnpackRequest<'_>,
    image: &Image,
    (bundle, unpacked): (Bundle<R>, UnpackStats),
) -> Result<(Written, UnpackStats), GenerateError> {
    let image_platform = image.platform();
    let mut options = request.output_options.clone();
    options.archive.uid_map = request.uid_map.to_vec();
    options.archive.gid_map = request.gid_map.to_vec();
    options.ipk = Some(IpkControl {
        package: request
            .output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: "1.0.0".into(),
        architecture: image_platform.package_architecture(),
        description: format!("OCI bundle of {}", request.image),
        priority: "optional".into(),
        depends: Vec::new(),
    });
    let written = output::write(bundle, request.output, &options)?;
    Ok((written, unpacked))
}

/// Whether `app` can run on `platform`, without an image (assumed built for
/// the platform): the compatibility stage alone. Returns its warnings.
pub fn check_compatibility(
    platform: &PlatformTemplate,
    app: &AppMetadata,
    operator: &OperatorConfig,
) -> Result<Vec<String>, GenerateError> {
    let image_platform = target_platform(platform);
    let options = pipeline::Options {
        crun: false,
        create_mount_points: false,
        libraries: Default::default(),
    };
    let inputs = Inputs {
        platform,
        app,
        operator,
        options: &options,
        image_platform: &image_platform,
    };
    let mut warnings = Vec::new();
    pipeline::compat::check(&inputs, &mut warnings)?;
    Ok(warnings)
}

/// The platform a template describes.
pub fn target_platform(platform: &PlatformTemplate) -> TargetPlatform {
    TargetPlatform::new(&platform.os, &platform.arch.arch, platform.arch.variant.as_deref())
}

/// Reads the app metadata: the given file, or the image's (then deleted from the rootfs).
fn app_metadata(bundle: &mut Bundle<dyn Rootfs>, file: Option<&Path>) -> Result<Parsed<AppMetadata>, GenerateError> {
    match file {
        Some(file) => Ok(bundlegen_protocol::config::load(file)?),
        None => bundle
            .take_image_metadata::<GenerateError>()?
            .ok_or(GenerateError::NoMetadata),
    }
}

/// The whole job: [`open`] then [`build`].
pub async fn generate(
    request: &Request<'_>,
    progress: impl FnMut(usize, usize, &UnpackStats),
) -> Result<Generated, GenerateError> {
    let image = open(request).await?;
    build(request, &image, progress)
}

/// The asynchronous part: the output may be written, and the image opens
/// (pulled from a registry, or read from a layout or archive).
pub async fn open(request: &Request<'_>) -> Result<Image, GenerateError> {
    output::check_destination(request.output, request.output_options)?;
    Ok(open_image(request.image, &target_platform(request.platform), request.registry).await?)
}

/// The blocking part: unpack `image`, run the stages, write the outputs.
/// With an archive among them, the rootfs is assembled in memory (see
/// [`output::assemble_in_memory`]).
pub fn build(
    request: &Request<'_>,
    image: &Image,
    progress: impl FnMut(usize, usize, &UnpackStats),
) -> Result<Generated, GenerateError> {
    let place = Place {
        output: request.output,
        work_dir: request.work_dir,
    };
    if output::assemble_in_memory(request.output_options) {
        let staged = Bundle::create_in_memory(&place)?.unpack(image, request.unpack, &[], &[], progress)?;
        finish(request, image, staged)
    } else {
        let staged = Bundle::from_image(image, &place, request.unpack, &[], &[], progress)?;
        finish(request, image, staged)
    }
}

/// The stages and the outputs, on an unpacked bundle.
fn finish<R: Rootfs + 'static>(
    request: &Request<'_>,
    image: &Image,
    (mut bundle, unpacked): (Bundle<R>, UnpackStats),
) -> Result<Generated, GenerateError> {
    let platform = request.platform;
    let image_platform = image.platform();
    let parsed = app_metadata(&mut bundle, request.app_metadata)?;
    let mut warnings = parsed.warnings;
    let mut app = parsed.value;
    if let Some(id) = request.app_id {
        if let Some(reason) = container_id_problem(id) {
            return Err(GenerateError::AppId {
                id: id.to_string(),
                reason,
            });
        }
        app.id = id.to_string();
    }
    let inputs = Inputs {
        platform,
        app: &app,
        operator: request.operator,
        options: request.options,
        image_platform: &image_platform,
    };
    let report = pipeline::run(&mut bundle, &inputs)?;
    warnings.extend(report.warnings);
    let output_options = bundle_output_options(&bundle, platform, &app, request.output_options);
    let written = output::write(bundle, request.output, &output_options)?;
    Ok(Generated {
        written,
        app_id: app.id,
        warnings,
        library_notes: report.library_notes,
        unpacked,
    })
}

/// The archive's owners and modes (the bundle's user namespace, the
/// platform's `tarball` settings) and the `.ipk`'s control fields.
fn bundle_output_options(
    bundle: &Bundle<dyn Rootfs>,
    platform: &PlatformTemplate,
    app: &AppMetadata,
    requested: &OutputOptions,
) -> OutputOptions {
    let mut options = requested.clone();
    let linux = bundle.config.linux.clone().unwrap_or_default();
    options.archive.uid_map = linux.uid_mappings;
    options.archive.gid_map = linux.gid_mappings;
    if let Some(tarball) = &platform.tarball {
        if tarball.file_ownership_same_as_user {
            let user = bundle.process_user();
            options.archive.owner_override = Some(Owner {
                uid: user.uid,
                gid: user.gid,
            });
        }
        if options.archive.mode_mask.is_none() {
            options.archive.mode_mask = tarball.mask();
        }
    }
    options.ipk = Some(IpkControl {
        package: app.id.clone(),
        version: app.version.clone().unwrap_or_else(|| "1.0.0".into()),
        architecture: target_platform(platform).package_architecture(),
        description: app
            .description
            .clone()
            .unwrap_or_else(|| format!("{} for {}", app.id, platform.platform_name)),
        priority: app.priority.clone().unwrap_or_else(|| "optional".into()),
        depends: Vec::new(),
    });
    options
}
