//! Bundle jobs: the request run through the same pipeline as
//! `bundlegen generate`, on a blocking thread, with progress reported.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bundlegen_core::generate::{self, Generated};
use bundlegen_core::image::{ImageReference, RegistryOptions};
use bundlegen_core::output::{Format, OutputOptions};
use bundlegen_core::pipeline;
use bundlegen_core::pipeline::libraries::{LibraryOptions, MatchMode};
use bundlegen_core::unpack::UnpackOptions;
use bundlegen_protocol::config::operator::OperatorConfig;
use bundlegen_protocol::config::platform::PlatformTemplate;

use super::outcome::{Artifact, JobOutcome, classify, failed};
use super::request::{BundleRequest, platform_template};
use crate::Service;
use crate::store::{JobRecord, PlatformVersion};

/// Builds the bundle archive of `request`.
pub async fn build(
    service: &Service,
    job: &JobRecord,
    request: &BundleRequest,
    version: &PlatformVersion,
    work: &Path,
) -> Result<Artifact, JobOutcome> {
    let inputs = JobInputs::prepare(service, request, version, work).await?;
    let generated = generate(service, job, inputs).await?;
    let archive = generated
        .written
        .archive
        .ok_or_else(|| failed("generation_failed", "no archive was written".into()))?;
    Ok(Artifact {
        path: archive.path,
        sha256: archive.sha256,
        size: archive.size,
        app_id: generated.app_id,
    })
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
        let app_metadata = super::fresh_work_dir(request, work, &[]).await?;
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
