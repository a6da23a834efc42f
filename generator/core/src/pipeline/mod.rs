//! BundleGen's processing, one module per stage. Each stage is a function of
//! the inputs (platform template, app metadata, operator config, options)
//! that edits the bundle: its `config.json`, its rootfs, or both. [`run`]
//! calls them in BundleGen's order.

use bundlegen_protocol::config::app::AppMetadata;
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::root::RootError;

use crate::bundle::Bundle;
use crate::image::TargetPlatform;
use crate::rootfs::Rootfs;

mod capabilities;
pub mod compat;
mod hooks;
pub mod libraries;
mod mounts;
mod plugins;
mod process;
mod resources;
mod root;
mod users;

/// Options of a run (the CLI's flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// A plain OCI bundle for crun, without Dobby (`-u/--crun`).
    pub crun: bool,
    /// Create mount points in the rootfs (`-r/--createmountpoints`).
    pub create_mount_points: bool,
    pub libraries: libraries::LibraryOptions,
}

/// Everything the stages read.
pub struct Inputs<'a> {
    pub platform: &'a PlatformTemplate,
    pub app: &'a AppMetadata,
    pub operator: &'a OperatorConfig,
    pub options: &'a Options,
    /// The platform the image is built for.
    pub image_platform: &'a TargetPlatform,
}

impl Inputs<'_> {
    /// `{id}` replaced by the app id.
    pub fn substitute(&self, text: &str) -> String {
        text.replace("{id}", &self.app.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The app cannot run on this platform (exit code 2).
    #[error("the app is incompatible with the platform: {}", .0.join("; "))]
    Incompatible(Vec<String>),
    #[error("{stage}: {message}")]
    Failed { stage: &'static str, message: String },
    #[error("{stage}: {source}")]
    Rootfs {
        stage: &'static str,
        #[source]
        source: Box<RootError>,
    },
}

impl StageError {
    pub fn rootfs(stage: &'static str) -> impl FnOnce(RootError) -> StageError {
        move |source| StageError::Rootfs {
            stage,
            source: Box::new(source),
        }
    }
}

/// What a run reports besides the bundle.
#[derive(Debug, Default)]
pub struct Report {
    pub warnings: Vec<String>,
    /// Library decisions, one line each (shown at `-vv`).
    pub library_notes: Vec<String>,
}

/// Runs every stage on `bundle`, whose config is the image's base config.
pub fn run(bundle: &mut Bundle<dyn Rootfs>, inputs: &Inputs<'_>) -> Result<Report, StageError> {
    let mut report = Report::default();
    let app = compat::check(inputs, &mut report.warnings)?;
    let inputs = Inputs { app: &app, ..*inputs };
    let inputs = &inputs;
    if inputs.options.create_mount_points {
        mounts::create_default_mount_points(bundle)?;
    }
    let entrypoint = process::entrypoint(bundle);
    process::apply(bundle, inputs, &mut report.warnings)?;
    root::apply(bundle, inputs);
    mounts::apply(bundle, inputs)?;
    resources::apply(bundle, inputs, &mut report.warnings);
    resources::gpu(bundle, inputs)?;
    users::apply(bundle, inputs, &mut report.warnings);
    capabilities::apply(bundle, inputs, &mut report.warnings);
    root::security(bundle, inputs);
    if inputs.options.crun {
        plugins::drop_for_crun(bundle, inputs, &mut report.warnings);
    } else {
        plugins::apply(bundle, inputs, &mut report.warnings)?;
        hooks::apply(bundle, inputs, &mut report.warnings);
    }
    let libraries = libraries::apply(bundle, inputs, entrypoint.as_deref())?;
    report.warnings.extend(libraries.warnings);
    report.library_notes = libraries.notes;
    if inputs.options.crun {
        mounts::strip_userspace_options(bundle);
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
