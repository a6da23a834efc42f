//! Bundle requests, jobs, lookups and downloads.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::{JsonBody, QueryParams};
use crate::Service;
use crate::auth::{Caller, Role};
use crate::blobs::BlobStore;
use crate::jobs;
use crate::jobs::{BundleRequest, job_key};
use crate::store::{BundleRecord, JobRecord, JobState};

fn bundle_json(service: &Service, bundle: &BundleRecord) -> Value {
    let mut value = json!({
        "id": bundle.id,
        "appId": bundle.app_id,
        "appVersion": bundle.app_version,
        "platform": bundle.platform,
        "platformVersion": bundle.platform_version,
        "format": bundle.format,
        "size": bundle.size,
        "sha256": bundle.sha256,
        "signature": bundle.signature,
        "downloadUrl": format!("/v1/bundles/{}/content", bundle.id),
        "createdAt": bundle.created_at,
    });
    if let BlobStore::Registry(repository) = &service.blobs {
        value["registry"] = json!({"repository": repository.describe(), "digest": bundle.location, "tag": bundle.id});
    }
    value
}

fn job_json(job: &JobRecord) -> Value {
    json!({
        "id": job.id,
        "state": job.state,
        "progress": job.progress as f64 / 1000.0,
        "stage": job.stage,
        "errorCode": job.error_code,
        "error": job.error,
        "attempts": job.attempts,
        "worker": job.worker,
        "platform": job.platform,
        "platformVersion": job.platform_version,
        "appId": job.app_id,
        "appVersion": job.app_version,
        "bundleId": job.bundle_id,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
    })
}

/// The HTTP status of a failed job's error code.
fn failure_status(code: &str) -> StatusCode {
    match code {
        "registry_unavailable" => StatusCode::BAD_GATEWAY,
        // The service's own disk or database: ask again later.
        "storage_unavailable" | "database_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "generation_failed" | "interrupted" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The response for a job: its bundle when done, its error when failed,
/// 202 with where to poll otherwise.
async fn job_response(service: &Service, job: JobRecord) -> Result<Response, ApiError> {
    match job.state {
        JobState::Succeeded => {
            let bundle = match &job.bundle_id {
                Some(id) => service.store.bundle(id).await?,
                None => None,
            }
            .ok_or_else(|| ApiError::internal(format!("job {} has no bundle record", job.id)))?;
            Ok((
                StatusCode::OK,
                Json(json!({"job": job_json(&job), "bundle": bundle_json(service, &bundle)})),
            )
                .into_response())
        }
        JobState::Failed => {
            let code = job.error_code.clone().unwrap_or_else(|| "generation_failed".into());
            let status = failure_status(&code);
            let body = json!({
                "error": {"code": code, "message": job.error.clone().unwrap_or_default()},
                "job": job_json(&job),
            });
            let mut response = (status, Json(body)).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            Ok(response)
        }
        JobState::Queued | JobState::Running => {
            let location = format!("/v1/jobs/{}", job.id);
            let mut response = (StatusCode::ACCEPTED, Json(json!({"job": job_json(&job)}))).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
    }
}

#[derive(Deserialize, Default)]
pub struct WaitQuery {
    #[serde(default)]
    wait: u64,
}

pub async fn request(
    State(service): State<Service>,
    caller: Caller,
    QueryParams(query): QueryParams<WaitQuery>,
    JsonBody(request): JsonBody<BundleRequest>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    let job = service.submit(request).await?;
    let job = service.wait_for(job, query.wait).await?;
    job_response(&service, job).await
}

#[derive(Deserialize)]
pub struct LookupQuery {
    app: String,
    version: String,
    platform: String,
    #[serde(default)]
    wait: u64,
    /// Packages the box has (`APP@VERSION`, comma-separated): RALF lookups
    /// leave those dependencies out of the answer.
    #[serde(default)]
    have: String,
}

/// The bundle of an app version for a platform's current version; the
/// first lookup starts its generation (202, poll the job or look up again).
/// A RALF package comes with the packages it is layered on that the box
/// does not `have`; those are built first, each lookup starting the next.
pub async fn lookup(
    State(service): State<Service>,
    caller: Caller,
    QueryParams(query): QueryParams<LookupQuery>,
) -> Result<Response, ApiError> {
    caller.require_platform(&query.platform)?;
    let platform_version = service
        .store
        .current_version_number(&query.platform)
        .await?
        .ok_or_else(|| ApiError::not_found("platform_not_found", format!("no platform named {}", query.platform)))?;
    let app = service.store.app(&query.app, &query.version).await?.ok_or_else(|| {
        ApiError::not_found(
            "app_not_found",
            format!("no app {} version {}", query.app, query.version),
        )
    })?;
    // Only a bundle of the app version's current definition will do: its
    // image, metadata and options, this platform version, this operator config.
    let request = jobs::package::app_request(app, &query.platform);
    let dependencies = jobs::package::dependencies(&service, &request, platform_version).await?;
    let have: Vec<&str> = query.have.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
    let key = job_key(&request, platform_version, &service.operator_fingerprint);
    // Each round builds what is missing, lowest first (a runtime's base
    // before the runtime, the app last); a round that finds everything answers.
    for _ in 0..=dependencies.len() + 1 {
        let mut needed = Vec::new();
        let mut missing = None;
        for dependency in dependencies.iter().rev() {
            match service.store.bundle_by_key(&dependency.key).await? {
                Some(bundle) => {
                    let name = format!("{}@{}", dependency.app, dependency.version);
                    if !have.contains(&name.as_str()) {
                        let mut value = bundle_json(&service, &bundle);
                        value["dependency"] = json!(name);
                        needed.push(value);
                    }
                }
                None => {
                    missing = Some(dependency.request.clone());
                    break;
                }
            }
        }
        let to_build = match missing {
            Some(request) => request,
            None => match service.store.bundle_by_key(&key).await? {
                Some(bundle) => {
                    service.metrics.lookup(true);
                    let mut answer = json!({"bundle": bundle_json(&service, &bundle)});
                    if request.options.format == jobs::FORMAT {
                        answer["dependencies"] = json!(needed);
                    }
                    return Ok((StatusCode::OK, Json(answer)).into_response());
                }
                None => request.clone(),
            },
        };
        service.metrics.lookup(false);
        let job = service.submit(to_build).await?;
        let job = service.wait_for(job, query.wait).await?;
        if job.state != JobState::Succeeded {
            return job_response(&service, job).await;
        }
    }
    Err(ApiError::internal("the lookup did not settle"))
}

pub async fn get_job(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = service
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job_not_found", format!("no job {id}")))?;
    caller.require_platform(&job.platform)?;
    Ok(Json(job_json(&job)))
}

pub async fn list_jobs(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    let jobs: Vec<Value> = service.store.recent_jobs(200).await?.iter().map(job_json).collect();
    Ok(Json(json!({"jobs": jobs})))
}

pub async fn list(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    let bundles: Vec<Value> = service
        .store
        .bundles(200)
        .await?
        .iter()
        .map(|b| bundle_json(&service, b))
        .collect();
    Ok(Json(json!({"bundles": bundles})))
}

async fn find(service: &Service, id: &str) -> Result<BundleRecord, ApiError> {
    service
        .store
        .bundle(id)
        .await?
        .ok_or_else(|| ApiError::not_found("bundle_not_found", format!("no bundle {id}")))
}

pub async fn get_bundle(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let bundle = find(&service, &id).await?;
    caller.require_platform(&bundle.platform)?;
    Ok(Json(bundle_json(&service, &bundle)))
}

/// What a `Range` header asks of a representation of `size` bytes (RFC
/// 9110, 14.2): a header that is not one valid `bytes=` range (several
/// ranges, another unit, bad syntax) is ignored and the whole is sent; a
/// valid one that starts past the end cannot be satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        // One range is what boxes resume with; several are not served.
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let (first, last) = match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => return RangeRequest::Unsatisfiable,
            Some(suffix) => (size.saturating_sub(suffix), size - 1),
            None => return RangeRequest::Whole,
        },
        (first, "") => match number(first) {
            Some(first) => (first, size.saturating_sub(1)),
            None => return RangeRequest::Whole,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(first), Some(last)) if first <= last => (first, last.min(size.saturating_sub(1))),
            _ => return RangeRequest::Whole,
        },
    };
    if first >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part(first, last)
}

/// `If-None-Match` matches `etag` by weak comparison (RFC 9110, 13.1.2).
fn none_match(header: Option<&str>, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    header.is_some_and(|v| v.trim() == "*" || v.split(',').any(|tag| opaque(tag) == opaque(etag)))
}

fn content_type(format: &str) -> &'static str {
    match format {
        "tar.zst" => "application/zstd",
        "ipk" => "application/vnd.debian.binary-package",
        _ => "application/gzip",
    }
}

/// The archive: `Range` for resuming, `ETag` (its sha256) with
/// `If-None-Match`, and the sha256 and signature in headers.
pub async fn content(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bundle = find(&service, &id).await?;
    caller.require_platform(&bundle.platform)?;
    let size = bundle.size as u64;
    let etag = format!("\"{}\"", bundle.sha256);
    let mut common = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            common.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(header::ACCEPT_RANGES, "bytes");
    set(header::HeaderName::from_static("x-bundle-sha256"), &bundle.sha256);
    set(header::HeaderName::from_static("x-bundle-signature"), &bundle.signature);
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if none_match(text(header::IF_NONE_MATCH), &etag) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    // If-Range: the range only while the box's copy is this one (strong comparison).
    let if_range_holds = text(header::IF_RANGE).is_none_or(|tag| tag.trim() == etag);
    let asked = if if_range_holds { text(header::RANGE) } else { None };
    let range = match parse_range(asked, size) {
        RangeRequest::Whole => None,
        RangeRequest::Part(first, last) => Some((first, last)),
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the bundle has {size} bytes; ask for one range within them"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let read = service.blobs.read(&bundle.location, size, range).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "storage_unavailable",
            bundlegen_protocol::error_chain(&e),
        )
    })?;
    let metrics = service.metrics.clone();
    let body = Body::from_stream(read.body.map(move |chunk| {
        if let Ok(chunk) = &chunk {
            metrics.served(chunk.len() as u64);
        }
        chunk
    }));
    let mut response = Response::new(body);
    *response.headers_mut() = common;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&bundle.format)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(read.length));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{}.{}\"", bundle.id, bundle.format)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some((first, last)) = range {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
            headers.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_like_rfc_9110_says() {
        use RangeRequest::*;
        let cases: &[(Option<&str>, RangeRequest)] = &[
            (None, Whole),
            (Some("bytes=0-99"), Part(0, 99)),
            (Some("bytes=100-"), Part(100, 999)),
            (Some("bytes=-100"), Part(900, 999)),
            (Some("bytes=-5000"), Part(0, 999)),
            (Some("bytes=990-5000"), Part(990, 999)),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            // Not one valid range: ignored, the whole is sent.
            (Some("bytes=5-4"), Whole),
            (Some("bytes=0-1,5-6"), Whole),
            (Some("items=0-1"), Whole),
            (Some("bytes=a-b"), Whole),
            (Some("bytes=7"), Whole),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_range(*header, 1000), *expected, "{header:?}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let etag = "\"abc\"";
        for (header, matches) in [
            (Some("\"abc\""), true),
            (Some("W/\"abc\""), true),
            (Some("\"x\", W/\"abc\""), true),
            (Some("*"), true),
            (Some("\"abd\""), false),
            (None, false),
        ] {
            assert_eq!(none_match(header, etag), matches, "{header:?}");
        }
    }
}
