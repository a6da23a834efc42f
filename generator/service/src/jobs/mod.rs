//! Jobs: what a request asks for and its de-duplication key ([`request`]),
//! a bundle built with the same pipeline as `bundlegen generate`
//! ([`bundle`]) or a RALF package ([`package`]), then signed, stored and
//! recorded here; how each ends ([`outcome`]).
//!
//! A job's state machine: `queued` → `running` → `succeeded` | `failed`.
//! A running job whose worker dies is taken over (`running` again, one more
//! attempt); a transient failure (registry down) goes back to `queued` until
//! the attempts run out. A bundle is recorded only after its archive is
//! complete in the bundle store, so no partial bundle is ever served.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bundlegen_protocol::signature::SignedIdentity;

use crate::Service;
use crate::store::{BundleRecord, JobRecord, now};

mod bundle;
mod outcome;
pub mod package;
mod request;

pub use outcome::JobOutcome;
use outcome::{Artifact, failed, transient};
pub use request::{
    BundleOptions, BundleRequest, FORMAT, StoredRequest, job_key, operator_fingerprint, platform_template,
};

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

/// A job: its request and platform version read back, the bundle or
/// package built, signed, stored and recorded. Returns the bundle's id.
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
    let artifact = if request.options.format == FORMAT {
        package::build(service, job, &request, &version, work).await?
    } else {
        bundle::build(service, job, &request, &version, work).await?
    };
    store_artifact(service, job, &request, artifact).await
}

/// Makes the job's work directory afresh, with the directories `inside`
/// in it, and writes the request's app metadata there for the core's
/// `-a FILE` (`None` when the request has none). A failure is the
/// storage's: worth another attempt.
async fn fresh_work_dir(request: &BundleRequest, work: &Path, inside: &[&str]) -> Result<Option<PathBuf>, JobOutcome> {
    let unavailable = |e: std::io::Error| transient("storage_unavailable", e.to_string());
    let _ = tokio::fs::remove_dir_all(work).await;
    tokio::fs::create_dir_all(work).await.map_err(unavailable)?;
    for dir in inside {
        tokio::fs::create_dir(work.join(dir)).await.map_err(unavailable)?;
    }
    let Some(metadata) = &request.app_metadata else {
        return Ok(None);
    };
    let path = work.join("appmetadata.json");
    tokio::fs::write(&path, metadata.to_string())
        .await
        .map_err(unavailable)?;
    Ok(Some(path))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(app_metadata: Option<serde_json::Value>) -> BundleRequest {
        BundleRequest {
            image: "oci:app".into(),
            platform: "box".into(),
            app_metadata,
            app_id: None,
            app_version: None,
            options: BundleOptions::default(),
        }
    }

    #[tokio::test]
    async fn a_work_directory_is_made_afresh_with_the_app_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work/job-1");
        std::fs::create_dir_all(work.join("earlier")).unwrap();
        std::fs::write(work.join("earlier/left-over"), b"x").unwrap();
        let metadata = json!({"id": "com.example.app", "version": "1.0"});
        let written = fresh_work_dir(&request(Some(metadata.clone())), &work, &["dependencies"])
            .await
            .unwrap();
        assert_eq!(written, Some(work.join("appmetadata.json")));
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(work.join("appmetadata.json")).unwrap()).unwrap();
        assert_eq!(read, metadata);
        assert!(work.join("dependencies").is_dir());
        assert!(!work.join("earlier").exists());
        assert_eq!(fresh_work_dir(&request(None), &work, &[]).await.unwrap(), None);
        assert!(!work.join("appmetadata.json").exists());
    }

    #[tokio::test]
    async fn storage_that_fails_is_worth_another_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        let blocked = tmp.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let cases: [(PathBuf, &[&str]); 3] = [
            // Nothing can be made under a file: the work directory,
            (blocked.join("job-1"), &[]),
            // a directory in it,
            (tmp.path().join("job-2"), &["dependencies/deeper"]),
            // or the metadata, where a directory is in the way.
            (tmp.path().join("job-3"), &["appmetadata.json"]),
        ];
        for (work, inside) in cases {
            let outcome = fresh_work_dir(&request(Some(json!({}))), &work, inside)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    outcome,
                    JobOutcome::Transient {
                        code: "storage_unavailable",
                        ..
                    }
                ),
                "{work:?}: {outcome:?}"
            );
        }
    }
}
