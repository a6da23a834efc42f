//! How a job ends: a stable code for each failure, and whether another
//! attempt may succeed; what a job makes.

use std::path::{Path, PathBuf};

use bundlegen_core::generate::GenerateError;
use bundlegen_core::image::ImageError;
use bundlegen_core::pipeline::StageError;
use bundlegen_protocol::digest::Sha256Digest;

/// How a job ended, with a stable code for failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded(String),
    /// Worth another attempt (a registry or store that was down).
    Transient {
        code: &'static str,
        message: String,
    },
    Failed {
        code: &'static str,
        message: String,
    },
}

impl JobOutcome {
    pub fn code(&self) -> &str {
        match self {
            JobOutcome::Succeeded(_) => "succeeded",
            JobOutcome::Transient { code, .. } | JobOutcome::Failed { code, .. } => code,
        }
    }
}

/// Whether a full disk (or quota) is somewhere in the error's causes.
fn out_of_space(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(nix::libc::ENOSPC | nix::libc::EDQUOT))
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Sorts a generation error into a job outcome. Its message names no path
/// of the service's own (`data_dir` shows as `<data-dir>`).
pub fn classify(error: &GenerateError, data_dir: &Path) -> JobOutcome {
    let message = bundlegen_protocol::error_chain(error).replace(&data_dir.display().to_string(), "<data-dir>");
    let failed = |code| JobOutcome::Failed {
        code,
        message: message.clone(),
    };
    if out_of_space(error) {
        return JobOutcome::Transient {
            code: "storage_unavailable",
            message,
        };
    }
    match error {
        GenerateError::Stage(StageError::Incompatible(_)) => failed("incompatible_app"),
        GenerateError::Image(error) => classify_image(error, message),
        GenerateError::Config(_) => failed("invalid_input"),
        GenerateError::NoMetadata => failed("no_app_metadata"),
        GenerateError::AppId { .. } => failed("invalid_app_id"),
        GenerateError::Bundle(_) | GenerateError::Stage(_) | GenerateError::Output(_) => failed("generation_failed"),
    }
}

/// Sorts an image error (`message` is its chain, cleaned).
pub fn classify_image(error: &ImageError, message: String) -> JobOutcome {
    let failed = |code| JobOutcome::Failed {
        code,
        message: message.clone(),
    };
    match error {
        ImageError::NotFound(_) => failed("image_not_found"),
        ImageError::NoMatchingPlatform { .. } => failed("image_platform_mismatch"),
        ImageError::Reference { .. } => failed("invalid_image_reference"),
        ImageError::Registry { .. } => JobOutcome::Transient {
            code: "registry_unavailable",
            message,
        },
        _ => failed("invalid_image"),
    }
}

pub fn failed(code: &'static str, message: String) -> JobOutcome {
    JobOutcome::Failed { code, message }
}

pub fn transient(code: &'static str, message: String) -> JobOutcome {
    JobOutcome::Transient { code, message }
}

/// A job's product: a bundle archive or a package file.
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub app_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_sort_into_outcomes() {
        let incompatible = GenerateError::Stage(StageError::Incompatible(vec!["needs graphics".into()]));
        assert!(matches!(
            classify(&incompatible, Path::new("/data")),
            JobOutcome::Failed {
                code: "incompatible_app",
                ..
            }
        ));
        let missing = GenerateError::Image(ImageError::NotFound("manifest".into()));
        assert_eq!(classify(&missing, Path::new("/data")).code(), "image_not_found");
        let down = GenerateError::Image(ImageError::Registry {
            url: "http://r".into(),
            message: "connection refused".into(),
        });
        assert!(matches!(
            classify(&down, Path::new("/data")),
            JobOutcome::Transient { .. }
        ));
        let full = GenerateError::Output(bundlegen_core::output::OutputError::Io {
            path: "/data/work/job-1/bundle.tar.gz".into(),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        });
        match classify(&full, Path::new("/data")) {
            JobOutcome::Transient { code, message } => {
                assert_eq!(code, "storage_unavailable");
                assert!(message.starts_with("<data-dir>/work/"), "{message}");
            }
            other => panic!("a full disk is worth another attempt: {other:?}"),
        }
    }
}
