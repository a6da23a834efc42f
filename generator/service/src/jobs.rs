//! Bundle jobs: what a request asks for, its de-duplication key, and running
//! it with the same pipeline as `bundlegen generate`.
//!
//! A job's state machine: `queued` → `running` → `succeeded` | `failed`.
//! A running job whose worker dies is taken over (`running` again, one more
//! attempt); a transient failure (registry down) goes back to `queued` until
//! the attempts run out. A bundle is recorded only after its archive is
//! complete in the bundle store, so no partial bundle is ever served.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bundlegen_protocol::config::libs::LibsFile;
use bundlegen_protocol::config::platform::{PlatformTemplate, merge_platform};
use bundlegen_protocol::config::{ConfigError, Parsed, parse};
use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::probe::ProbeReport;
use bundlegen_protocol::signature::SignedIdentity;
use serde::{Deserialize, Serialize};

use crate::Service;
use crate::store::{BundleRecord, JobRecord, PlatformVersion, now};
use bundlegen_core::generate::{self, GenerateError, Generated};
use bundlegen_core::image::{ImageError, ImageReference, RegistryOptions};
use bundlegen_core::output::{Format, OutputOptions};
use bundlegen_core::pipeline::libraries::{LibraryOptions, MatchMode};
use bundlegen_core::pipeline::{self, StageError};
use bundlegen_core::unpack::UnpackOptions;
use bundlegen_protocol::config::operator::OperatorConfig;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRequest {
    /// An image reference (`docker://host/repo:tag`, or `oci:DIR` under the
    /// service's local image directory).
    pub image: String,
    pub platform: String,
    /// App metadata; without it, the image's `/appmetadata.json` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<serde_json::Value>,
    /// Overrides the app id (`--appid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The app version the bundle is recorded under (for lookups); default:
    /// the metadata's `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default)]
    pub options: BundleOptions,
}

/// The CLI's generation options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleOptions {
    /// `normal`, `image` or `host`.
    #[serde(default = "normal")]
    pub lib_match_mode: String,
    #[serde(default)]
    pub no_dep_walking: bool,
    #[serde(default)]
    pub create_mount_points: bool,
    #[serde(default)]
    pub crun: bool,
    #[serde(default)]
    pub prune_unused: bool,
    /// `tar.gz`, `tar.zst`, `ipk`, or `ralf` (a RALF package).
    #[serde(default = "tar_gz")]
    pub format: String,
    /// RALF packages: the package type (default `application`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_type: Option<String>,
    /// RALF packages: the content layer (`tar`, `erofs.lz4`, ...; default as ralfpack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// RALF packages: the registered app versions (`APP@VERSION`, base or
    /// runtime packages) this one is layered on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

fn normal() -> String {
    "normal".into()
}

fn tar_gz() -> String {
    "tar.gz".into()
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            lib_match_mode: normal(),
            no_dep_walking: false,
            create_mount_points: false,
            crun: false,
            prune_unused: false,
            format: tar_gz(),
            package_type: None,
            content: None,
            depends_on: Vec::new(),
        }
    }
}

impl BundleOptions {
    /// Checks the values; names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        self.lib_match_mode
            .parse::<MatchMode>()
            .map_err(|e| format!("options.libMatchMode: {e}"))?;
        match self.format.as_str() {
            "tar.gz" | "tar.zst" | "ipk" => {}
            crate::package_jobs::FORMAT => return crate::package_jobs::validate(self),
            other => return Err(format!("options.format: {other:?} is not tar.gz, tar.zst, ipk or ralf")),
        }
        if self.package_type.is_some() || self.content.is_some() || !self.depends_on.is_empty() {
            return Err("options.packageType, content and dependsOn are for format ralf".into());
        }
        Ok(())
    }
}

/// The fingerprint of all of a bundle's inputs: the request (image, app
/// metadata, options), the platform version and the operator config (its
/// fingerprint). Equal inputs give the same bundle; any change, another.
pub fn job_key(request: &BundleRequest, platform_version: i64, operator: &str) -> String {
    // serde_json's maps are sorted, so this text is canonical.
    let canonical = serde_json::json!({"request": request, "platformVersion": platform_version, "operator": operator});
    Sha256Digest::of(canonical.to_string().as_bytes()).hex()
}

/// The fingerprint of an operator config, for [`job_key`].
pub fn operator_fingerprint(operator: &OperatorConfig) -> String {
    let canonical = serde_json::to_value(operator)
        .map(|v| v.to_string())
        .unwrap_or_default();
    Sha256Digest::of(canonical.as_bytes()).hex()
}

/// A stored platform version as the pipeline's input.
pub fn platform_template(version: &PlatformVersion) -> Result<Parsed<PlatformTemplate>, ConfigError> {
    let name = format!("platform {} version {}", version.platform, version.version);
    let template = parse::<PlatformTemplate>(&version.template, Path::new(&name))?;
    let libs = match &version.libs {
        Some(text) => Some((
            parse::<LibsFile>(text, Path::new(&format!("{name} libs")))?,
            format!("{name} libs"),
        )),
        None => None,
    };
    let probe = match &version.probe {
        Some(text) => Some((
            parse::<ProbeReport>(text, Path::new(&format!("{name} probe")))?,
            format!("{name} probe report"),
        )),
        None => None,
    };
    Ok(merge_platform(template, &name, libs, probe))
}

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

/// Runs a claimed job to its end. Returns how it ended.
pub async fn run(service: &Service, job: &JobRecord) -> JobOutcome {
    let started = Instant::now();
    let work = service.config.data_dir.join("work").join(&job.id);
    let outcome = match build(service, job, &work).await {
        Ok(bundle) => JobOutcome::Succeeded(bundle),
        Err(outcome) => outcome,
    };
    let _ = tokio::fs::remove_dir_all(&work).await;
    service
        .metrics
        .job_finished(outcome.code(), started.elapsed().as_secs_f64());
    outcome
}

/// Updates the job's progress in the database as layers are applied.
async fn report_progress(service: Service, job: String, mut updates: tokio::sync::mpsc::Receiver<(i64, String)>) {
    let mut last = Instant::now();
    while let Some((progress, stage)) = updates.recv().await {
        // A write per layer is plenty; skip bursts.
        if last.elapsed().as_millis() < 250 && !updates.is_empty() {
            continue;
        }
        last = Instant::now();
        let _ = service
            .store
            .job_progress(&job, &service.worker_id, progress, &stage)
            .await;
    }
}

pub fn failed(code: &'static str, message: String) -> JobOutcome {
    JobOutcome::Failed { code, message }
}

pub fn transient(code: &'static str, message: String) -> JobOutcome {
    JobOutcome::Transient { code, message }
}

/// A job: its request and platform version read back, the bundle
/// generated, signed, stored and recorded. Returns the bundle's id.
async fn build(service: &Service, job: &JobRecord, work: &Path) -> Result<String, JobOutcome> {
    let stored: StoredRequest =
        serde_json::from_str(&job.request).map_err(|e| failed("invalid_input", format!("stored request: {e}")))?;
    let request = stored.request;
    let version = service
        .store
        .platform_version(&job.platform, Some(job.platform_version))
        .await
        .map_err(|e| transient("database_unavailable", e.to_string()))?
        .ok_or_else(|| {
            failed(
                "platform_not_found",
                format!("platform {} version {}", job.platform, job.platform_version),
            )
        })?;
    if request.options.format == crate::package_jobs::FORMAT {
        let artifact = crate::package_jobs::build(service, job, &request, &version, work).await?;
        return store_artifact(service, job, &request, artifact).await;
    }
    let inputs = JobInputs::prepare(service, &request, &version, work).await?;
    let generated = generate(service, job, inputs).await?;
    let archive = generated
        .written
        .archive
        .ok_or_else(|| failed("generation_failed", "no archive was written".into()))?;
    let artifact = Artifact {
        path: archive.path,
        sha256: archive.sha256,
        size: archive.size,
        app_id: generated.app_id,
    };
    store_artifact(service, job, &request, artifact).await
}

/// A job's product: a bundle archive or a package file.
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub app_id: String,
}

/// A job's generation inputs, owned, so the blocking part can run on a
/// thread of its own.
struct JobInputs {
    image: ImageReference,
    output: PathBuf,
    platform: PlatformTemplate,
    app_metadata: Option<PathBuf>,
    app_id: Option<String>,
    operator: OperatorConfig,
    options: pipeline::Options,
    registry: RegistryOptions,
    unpack: UnpackOptions,
    output_options: OutputOptions,
}

impl JobInputs {
    /// Checks the request against the platform version, and writes its app
    /// metadata into the (fresh) work directory.
    async fn prepare(
        service: &Service,
        request: &BundleRequest,
        version: &PlatformVersion,
        work: &Path,
    ) -> Result<JobInputs, JobOutcome> {
        let platform = platform_template(version).map_err(|e| failed("invalid_input", e.to_string()))?;
        let image = service
            .image_reference(&request.image)
            .map_err(|e| failed("invalid_image_reference", e.to_string()))?;
        let format: Format = request
            .options
            .format
            .parse()
            .map_err(|e: String| failed("invalid_input", e))?;
        let mode: MatchMode = request
            .options
            .lib_match_mode
            .parse()
            .map_err(|e: String| failed("invalid_input", e))?;
        let _ = tokio::fs::remove_dir_all(work).await;
        tokio::fs::create_dir_all(work)
            .await
            .map_err(|e| transient("storage_unavailable", format!("{}: {e}", work.display())))?;
        let app_metadata = match &request.app_metadata {
            Some(metadata) => {
                let path = work.join("appmetadata.json");
                tokio::fs::write(&path, metadata.to_string())
                    .await
                    .map_err(|e| failed("storage_unavailable", e.to_string()))?;
                Some(path)
            }
            None => None,
        };
        Ok(JobInputs {
            image,
            output: work.join("bundle"),
            platform: platform.value,
            app_metadata,
            app_id: request.app_id.clone(),
            operator: service.operator.clone(),
            options: pipeline::Options {
                crun: request.options.crun,
                create_mount_points: request.options.create_mount_points,
                libraries: LibraryOptions {
                    mode,
                    walk: !request.options.no_dep_walking,
                    prune_unused: request.options.prune_unused,
                },
            },
            registry: service.config.registry.clone(),
            unpack: UnpackOptions::default(),
            output_options: OutputOptions {
                format,
                keep_dir: false,
                replace: true,
                archive: Default::default(),
                level: None,
                threads: 0,
                ipk: None,
            },
        })
    }

    fn request(&self) -> generate::Request<'_> {
        generate::Request {
            image: &self.image,
            output: &self.output,
            work_dir: None,
            platform: &self.platform,
            app_metadata: self.app_metadata.as_deref(),
            app_id: self.app_id.as_deref(),
            operator: &self.operator,
            options: &self.options,
            registry: &self.registry,
            unpack: &self.unpack,
            output_options: &self.output_options,
        }
    }
}

/// Opens the image on this runtime, then builds the bundle on a blocking
/// thread, reporting progress as layers are applied.
async fn generate(service: &Service, job: &JobRecord, inputs: JobInputs) -> Result<Generated, JobOutcome> {
    let data_dir = service.config.data_dir.clone();
    let image = generate::open(&inputs.request())
        .await
        .map_err(|e| classify(&e, &data_dir))?;
    let (progress_tx, progress_rx) = tokio::sync::mpsc::channel(64);
    let reporter = tokio::spawn(report_progress(service.clone(), job.id.clone(), progress_rx));
    let generated = tokio::task::spawn_blocking(move || {
        generate::build(&inputs.request(), &image, |done, total, _| {
            let progress = (done * 900).checked_div(total).unwrap_or(0) as i64;
            let _ = progress_tx.try_send((progress, format!("unpacking layer {}/{total}", done.min(total))));
        })
    })
    .await
    .map_err(|e| failed("generation_failed", format!("the job's thread failed: {e}")))?;
    let _ = reporter.await;
    generated.map_err(|e| classify(&e, &data_dir))
}

/// Signs the artifact, puts it in the bundle store and records it.
async fn store_artifact(
    service: &Service,
    job: &JobRecord,
    request: &BundleRequest,
    archive: Artifact,
) -> Result<String, JobOutcome> {
    let app_version = request
        .app_version
        .clone()
        .or_else(|| {
            request
                .app_metadata
                .as_ref()
                .and_then(|m| m.get("version")?.as_str().map(str::to_string))
        })
        .or(job.app_version.clone());
    let sha256 = archive.sha256.hex();
    let format = request.options.format.clone();
    let identity = SignedIdentity {
        sha256: &sha256,
        app_id: &archive.app_id,
        app_version: app_version.as_deref().unwrap_or(""),
        platform: &job.platform,
        format: &format,
    };
    let signature = service.signer.sign(&identity);
    let bundle_id = format!("b-{}", &job.key[..32]);
    let _ = service
        .store
        .job_progress(&job.id, &service.worker_id, 950, "storing")
        .await;
    let location = service
        .blobs
        .put(
            &archive.path,
            &sha256,
            archive.size,
            &format,
            &bundle_id,
            &[
                ("org.rdk.bundle.app", &archive.app_id),
                ("org.rdk.bundle.version", identity.app_version),
                ("org.rdk.bundle.platform", &job.platform),
                ("org.rdk.bundle.signature", &signature),
            ],
        )
        .await
        .map_err(|e| transient("storage_unavailable", bundlegen_protocol::error_chain(&e)))?;
    let record = BundleRecord {
        id: bundle_id.clone(),
        job_id: job.id.clone(),
        key: job.key.clone(),
        app_id: archive.app_id.clone(),
        app_version,
        platform: job.platform.clone(),
        platform_version: job.platform_version,
        format,
        size: archive.size as i64,
        sha256,
        signature,
        location,
        created_at: now(),
    };
    service
        .store
        .add_bundle(&record)
        .await
        .map_err(|e| transient("database_unavailable", e.to_string()))?;
    Ok(bundle_id)
}

/// What a job row keeps of its request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRequest {
    pub request: BundleRequest,
    pub platform_version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BundleRequest {
        serde_json::from_value(serde_json::json!({
            "image": "docker://localhost:5000/app:1",
            "platform": "rpi3",
        }))
        .unwrap()
    }

    #[test]
    fn equal_requests_share_a_key_and_any_difference_changes_it() {
        let base = job_key(&request(), 1, "op");
        assert_eq!(job_key(&request(), 1, "op"), base);
        let mut with_defaults = request();
        with_defaults.options = BundleOptions::default();
        assert_eq!(job_key(&with_defaults, 1, "op"), base, "defaults are the same request");
        assert_ne!(job_key(&request(), 2, "op"), base, "another platform version");
        let mut other = request();
        other.options.format = "ipk".into();
        assert_ne!(job_key(&other, 1, "op"), base);
        let mut metadata = request();
        metadata.app_metadata = Some(serde_json::json!({"id": "a", "b": 1}));
        let mut reordered = request();
        reordered.app_metadata = serde_json::from_str(r#"{"b": 1, "id": "a"}"#).ok();
        assert_eq!(
            job_key(&metadata, 1, "op"),
            job_key(&reordered, 1, "op"),
            "key order does not matter"
        );
    }

    #[test]
    fn options_name_the_bad_field() {
        let mut options = BundleOptions::default();
        assert!(options.validate().is_ok());
        options.lib_match_mode = "best".into();
        assert!(options.validate().unwrap_err().starts_with("options.libMatchMode"));
        options = BundleOptions {
            format: "zip".into(),
            ..BundleOptions::default()
        };
        assert!(options.validate().unwrap_err().starts_with("options.format"));
        assert!(
            serde_json::from_value::<BundleRequest>(serde_json::json!({"image": "x", "platform": "p", "extra": 1}))
                .is_err(),
            "unknown fields are refused"
        );
    }

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
