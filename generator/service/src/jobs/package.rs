//! RALF package jobs: an app version registered with `format: "ralf"`
//! becomes a package signed with the service's package key and certificate,
//! layered on the packages of the app versions it `dependsOn` (base,
//! runtime) for the same platform version, which must be built first: a
//! lookup builds them before the app (see `api::bundles::lookup`).

use std::path::{Path, PathBuf};

use bundlegen_core::generate::target_platform;
use bundlegen_core::package::{self, ContentChoice, PackageError, PackageFormat};
use bundlegen_core::unpack::UnpackOptions;
use bundlegen_protocol::ralf::ContentKind;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::outcome::{Artifact, JobOutcome, classify_image, failed, transient};
use super::request::{BundleRequest, FORMAT, dependency_name, job_key, platform_template};
use crate::store::{AppRecord, BundleRecord, JobRecord, PlatformVersion};
use crate::{RequestError, Service};

/// How deep `dependsOn` may nest (app → runtime → base is 2).
const MAX_DEPTH: usize = 4;

/// The request a registered app version stands for on `platform`.
pub fn app_request(app: AppRecord, platform: &str) -> BundleRequest {
    BundleRequest {
        image: app.image,
        platform: platform.to_string(),
        app_metadata: app.metadata,
        app_id: Some(app.app_id),
        app_version: Some(app.version),
        options: serde_json::from_value(app.options).unwrap_or_default(),
    }
}

/// A dependency of a package request, as the box and the job see it.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub app: String,
    pub version: String,
    pub request: BundleRequest,
    pub key: String,
}

/// Every package `request` is layered on, lowest last, transitively (a
/// runtime's base too), each once; an unknown app version, one that is no
/// package, or a cycle is refused.
pub async fn dependencies(
    service: &Service,
    request: &BundleRequest,
    platform_version: i64,
) -> Result<Vec<Dependency>, RequestError> {
    let mut found: Vec<Dependency> = Vec::new();
    let mut pending: Vec<(String, usize)> = request.options.depends_on.iter().map(|d| (d.clone(), 1)).collect();
    while let Some((name, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(RequestError::Invalid(format!(
                "dependsOn nests deeper than {MAX_DEPTH} (a cycle?) at {name}"
            )));
        }
        let Some((app, version)) = dependency_name(&name) else {
            return Err(RequestError::Invalid(format!("dependsOn {name:?} is not APP@VERSION")));
        };
        if found.iter().any(|d| d.app == app && d.version == version) {
            continue;
        }
        let record = service
            .store
            .app(app, version)
            .await?
            .ok_or_else(|| RequestError::Invalid(format!("dependsOn {name}: no such app version is registered")))?;
        let dependency_request = app_request(record, &request.platform);
        if dependency_request.options.format != FORMAT {
            return Err(RequestError::Invalid(format!(
                "dependsOn {name}: that app version is not a RALF package (format ralf)"
            )));
        }
        pending.extend(
            dependency_request
                .options
                .depends_on
                .iter()
                .map(|d| (d.clone(), depth + 1)),
        );
        let key = job_key(&dependency_request, platform_version, &service.operator_fingerprint);
        found.push(Dependency {
            app: app.to_string(),
            version: version.to_string(),
            request: dependency_request,
            key,
        });
    }
    Ok(found)
}

/// Copies a stored package to `path`.
async fn fetch(service: &Service, bundle: &BundleRecord, path: &Path) -> Result<(), JobOutcome> {
    let unavailable = |e: String| transient("storage_unavailable", e);
    let read = service
        .blobs
        .read(&bundle.location, bundle.size as u64, None)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut body = read.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| unavailable(e.to_string()))?;
        file.write_all(&chunk).await.map_err(|e| unavailable(e.to_string()))?;
    }
    file.sync_all().await.map_err(|e| unavailable(e.to_string()))
}

/// Sorts a packaging error into a job outcome.
fn classify(error: &PackageError, data_dir: &Path) -> JobOutcome {
    let message = bundlegen_protocol::error_chain(error).replace(&data_dir.display().to_string(), "<data-dir>");
    match error {
        PackageError::Image(image) => classify_image(image, message),
        PackageError::NoMetadata => failed("no_app_metadata", message),
        PackageError::Config(_) | PackageError::PackageConfig(_) | PackageError::DeviceNodes { .. } => {
            failed("invalid_input", message)
        }
        _ => failed("generation_failed", message),
    }
}

/// Builds a job's package in `work`.
pub async fn build(
    service: &Service,
    job: &JobRecord,
    request: &BundleRequest,
    version: &PlatformVersion,
    work: &Path,
) -> Result<Artifact, JobOutcome> {
    let signer = service.package_signer.clone().ok_or_else(|| {
        failed(
            "invalid_input",
            "this service signs no packages: start it with --package-signing-key and --package-signing-cert".into(),
        )
    })?;
    let platform = platform_template(version).map_err(|e| failed("invalid_input", e.to_string()))?;
    let image = service
        .image_reference(&request.image)
        .map_err(|e| failed("invalid_image_reference", e.to_string()))?;
    let app_metadata = super::fresh_work_dir(request, work, &["dependencies"]).await?;
    let mut depends_on: Vec<PathBuf> = Vec::new();
    for dependency in dependencies(service, request, job.platform_version)
        .await
        .map_err(|e| match e {
            RequestError::Database(e) => transient("database_unavailable", e.to_string()),
            other => failed("invalid_input", other.to_string()),
        })?
    {
        let bundle = service
            .store
            .bundle_by_key(&dependency.key)
            .await
            .map_err(|e| transient("database_unavailable", e.to_string()))?
            .ok_or_else(|| {
                failed(
                    "dependency_not_ready",
                    format!(
                        "{}@{} has no package for platform {} version {} yet (a lookup of the app builds it first)",
                        dependency.app, dependency.version, job.platform, job.platform_version
                    ),
                )
            })?;
        let path = work.join("dependencies").join(format!("{}.ralf", bundle.id));
        fetch(service, &bundle, &path).await?;
        depends_on.push(path);
    }
    let target = target_platform(&platform.value);
    let output = work.join("package.ralf");
    let options = &request.options;
    let data_dir = service.config.data_dir.clone();
    let registry = service.config.registry.clone();
    // The registered app version is the package's, where it is one (1 to 4 numbers).
    let version = request
        .app_version
        .clone()
        .filter(|v| v.parse::<bundlegen_protocol::ralf::version::Version>().is_ok());
    let overrides = package::config::Overrides {
        version,
        package_type: options.package_type.clone().unwrap_or_else(|| "application".into()),
        name: None,
    };
    let content = match options.content.as_deref().and_then(ContentKind::from_name) {
        Some(kind) => ContentChoice::Kind(kind),
        None => ContentChoice::Auto,
    };
    let app_id = request.app_id.clone();
    let unpack = UnpackOptions::default();
    let runtime = tokio::runtime::Handle::current();
    let packaged = tokio::task::spawn_blocking(move || {
        let request = package::Request {
            image: &image,
            platform: &target,
            output: &output,
            work_dir: None,
            app_metadata: app_metadata.as_deref(),
            app_id: app_id.as_deref(),
            config: None,
            overrides,
            content,
            legacy_erofs_media_type: false,
            format: PackageFormat::Zip,
            verity_salt: None,
            signer: Some(&signer),
            depends_on: &depends_on,
            dependency_constraint: package::dependency::ConstraintForm::Caret,
            registry: &registry,
            unpack: &unpack,
            replace: true,
            threads: 0,
        };
        let image = runtime.block_on(package::open(&request))?;
        package::build(&request, &image, |_, _, _| {})
    })
    .await
    .map_err(|e| failed("generation_failed", format!("the job's thread failed: {e}")))?
    .map_err(|e| classify(&e, &data_dir))?;
    Ok(Artifact {
        path: packaged.path,
        sha256: packaged.sha256,
        size: packaged.size,
        app_id: packaged.config.id,
    })
}
