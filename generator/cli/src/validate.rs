//! `bundlegen validate`: templates, app metadata and operator config
//! checked without an image.

use std::path::{Path, PathBuf};

use bundlegen_core::generate;
use bundlegen_protocol::config::app::AppMetadata;
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::name_mismatch;
use bundlegen_protocol::config::{Parsed, Validate, load};
use clap::Args;

use crate::Failure;
use crate::args::{TemplateArgs, load_template, warn_all};

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub templates: TemplateArgs,
    /// App metadata file to check (and, with -p, to check against the platform).
    #[arg(short = 'a', long = "appmetadata", value_name = "PATH")]
    pub app_metadata: Option<PathBuf>,
    /// Operator configuration file to check.
    #[arg(long, value_name = "FILE", env = "BUNDLEGEN_OPERATOR_CONFIG")]
    pub operator_config: Option<PathBuf>,
}

/// Loads `file` if given, printing its warnings and that it is fine.
fn validate_file<T: serde::de::DeserializeOwned + Validate>(
    file: Option<&Path>,
    what: &str,
) -> Result<Option<T>, Failure> {
    let Some(file) = file else { return Ok(None) };
    let parsed: Parsed<T> = load(file)?;
    warn_all(&parsed.warnings);
    println!("{what} {}: ok", file.display());
    Ok(Some(parsed.value))
}

pub fn run(args: &ValidateArgs) -> Result<(), Failure> {
    let platform = match &args.templates.platform {
        Some(name) => {
            let parsed = load_template(&args.templates)?;
            warn_all(&parsed.warnings);
            if let Some(mismatch) = name_mismatch(name, &parsed.value) {
                tracing::warn!("{mismatch}");
            }
            match parsed.value.platform_name.as_str() {
                inside if inside == name => println!("platform {name}: ok"),
                inside => println!("platform {name} (platformName {inside}): ok"),
            }
            Some(parsed.value)
        }
        None => None,
    };
    let app: Option<AppMetadata> = validate_file(args.app_metadata.as_deref(), "app metadata")?;
    let operator: Option<OperatorConfig> = validate_file(args.operator_config.as_deref(), "operator config")?;
    if platform.is_none() && app.is_none() && operator.is_none() {
        return Err(anyhow::anyhow!("nothing to check: pass -p NAME, -a FILE or --operator-config FILE").into());
    }
    if let (Some(platform), Some(app)) = (&platform, &app) {
        let warnings =
            generate::check_compatibility(platform, app, &operator.unwrap_or_default()).map_err(|e| Failure {
                code: e.exit_code(),
                error: e.into(),
            })?;
        warn_all(&warnings);
        println!("{} can run on {}", app.id, platform.platform_name);
    }
    Ok(())
}
