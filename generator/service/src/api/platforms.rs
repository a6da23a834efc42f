//! Platforms: the hand-written template and the generated parts (a probe
//! report or a BundleGen library list), versioned. Every change makes a new
//! version that keeps the other part of the previous one.

use std::path::Path;

use axum::Json;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bundlegen_protocol::config::libs::LibsFile;
use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::config::{Validate, parse};
use bundlegen_protocol::probe::ProbeReport;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::{JsonBody, QueryParams, body_bytes, require_json};
use crate::Service;
use crate::auth::{Caller, Role};
use crate::probes;
use crate::store::{NewVersion, PlatformPolicy, PlatformVersion};

/// Platform names are path segments and file names on workers.
fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_platform_name",
            format!("{name:?}: use letters, digits, '_', '-' and '.'"),
        ))
    }
}

async fn current(service: &Service, name: &str, version: Option<i64>) -> Result<PlatformVersion, ApiError> {
    service
        .store
        .platform_version(name, version)
        .await?
        .ok_or_else(|| match version {
            Some(v) => ApiError::not_found("platform_not_found", format!("platform {name} has no version {v}")),
            None => ApiError::not_found("platform_not_found", format!("no platform named {name}")),
        })
}

fn summary(version: &PlatformVersion) -> Value {
    let probe = version
        .probe
        .as_deref()
        .and_then(|p| serde_json::from_str::<ProbeReport>(p).ok());
    let libraries = match (&probe, &version.libs) {
        (Some(report), _) => report.libs_file().libs.len(),
        (None, Some(libs)) => serde_json::from_str::<LibsFile>(libs).map_or(0, |l| l.libs.len()),
        (None, None) => 0,
    };
    json!({
        "name": version.platform,
        "version": version.version,
        "change": version.change,
        "createdBy": version.created_by,
        "createdAt": version.created_at,
        "template": serde_json::from_str::<Value>(&version.template).unwrap_or(Value::Null),
        "generated": {
            "source": if probe.is_some() { "probe" } else if version.libs.is_some() { "libs" } else { "none" },
            "libraries": libraries,
            "devices": probe.as_ref().map_or(0, |p| p.devices.len()),
            "librariesFingerprint": probe.as_ref().map(|p| p.system.libraries_fingerprint.clone()),
        },
    })
}

#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<i64>,
}

pub async fn list(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    Ok(Json(json!({"platforms": service.store.platforms().await?})))
}

pub async fn get_platform(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_platform(&name)?;
    Ok(Json(summary(&current(&service, &name, query.version).await?)))
}

pub async fn get_probe(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Response, ApiError> {
    caller.require_platform(&name)?;
    let version = current(&service, &name, query.version).await?;
    let probe = version.probe.ok_or_else(|| {
        ApiError::not_found(
            "probe_not_found",
            format!("platform {name} version {} has no probe report", version.version),
        )
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], probe).into_response())
}

/// The library list as BundleGen reads it (from the probe report if any).
pub async fn get_libs(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Response, ApiError> {
    caller.require_platform(&name)?;
    let version = current(&service, &name, query.version).await?;
    let libs = match (&version.probe, &version.libs) {
        (Some(probe), _) => serde_json::from_str::<ProbeReport>(probe)
            .map(|p| serde_json::to_string(&p.libs_file()).unwrap_or_default())
            .map_err(|e| ApiError::internal(e.to_string()))?,
        (None, Some(libs)) => libs.clone(),
        (None, None) => {
            return Err(ApiError::not_found(
                "libs_not_found",
                format!("platform {name} version {} has no library list", version.version),
            ));
        }
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], libs).into_response())
}

/// Parses a document with the CLI's rules: errors name the JSON path,
/// unknown fields come back as warnings.
async fn document<T: serde::de::DeserializeOwned + Validate>(
    request: Request,
    service: &Service,
    what: &str,
    code: &'static str,
) -> Result<(T, Vec<String>, String), ApiError> {
    require_json(&request)?;
    let bytes = body_bytes(request, service).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_json", format!("the {what} is not UTF-8")))?;
    // Syntax first (400), then the document's types and rules (422).
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("{what}: {e}")))?;
    let parsed = parse::<T>(&text, Path::new(what)).map_err(|e| ApiError::unprocessable(code, e.to_string()))?;
    Ok((parsed.value, parsed.warnings, text))
}

fn created(version: i64, name: &str, warnings: Vec<String>) -> Response {
    let status = if version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"name": name, "version": version, "warnings": warnings})),
    )
        .into_response()
}

/// Creates or updates the hand-written template; the generated parts of
/// the current version are kept.
pub async fn put_template(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    check_name(&name)?;
    // The name is the template's (BundleGen's file name); `platformName`
    // inside may be a family name shared by several templates.
    let (template, mut warnings, text) =
        document::<PlatformTemplate>(request, &service, "template", "invalid_template").await?;
    warnings.extend(bundlegen_protocol::config::platform::name_mismatch(&name, &template));
    let previous = service.store.platform_version(&name, None).await?;
    let (libs, probe) = previous.map_or((None, None), |p| (p.libs, p.probe));
    let version = service
        .store
        .add_platform_version(
            &name,
            &NewVersion {
                template: &text,
                libs: libs.as_deref(),
                probe: probe.as_deref(),
                change: "template",
                created_by: &caller.name,
                held: false,
            },
        )
        .await?;
    Ok(created(version, &name, warnings))
}

/// Replaces the generated parts with a probe report. A device's report is
/// checked first; one that changes libc, the loader or the mounted graphics
/// libraries is held for review (202) unless the platform accepts those
/// itself. An identical report makes no new version.
pub async fn post_probe(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam, Role::Device])?;
    caller.require_platform(&name)?;
    let previous = current(&service, &name, None).await?;
    let device = caller.role == Role::Device;
    if device && let Err(wait) = service.probe_uploads.admit(&caller.token_id) {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            format!("this token uploads too often; try again in {} s", wait.as_secs() + 1),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let (report, warnings, text) = document::<ProbeReport>(request, &service, "probe report", "invalid_probe").await?;
    let template: PlatformTemplate =
        serde_json::from_str(&previous.template).map_err(|e| ApiError::internal(e.to_string()))?;
    let expected = template.abi();
    if let (Some(expected), Some(probed)) = (expected, report.system.abi)
        && !expected.can_load(&probed)
    {
        return Err(ApiError::unprocessable(
            "invalid_probe",
            format!(
                "the report describes a {} box; platform {name} is {}",
                probed.arch_name(),
                template.arch.arch
            ),
        ));
    }
    let problems = probes::check_report(&report, &template);
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_probe", problems.join("; ")));
    }
    let previous_report = previous
        .probe
        .as_deref()
        .and_then(|p| serde_json::from_str::<ProbeReport>(p).ok());
    if previous_report.as_ref() == Some(&report) {
        return Ok((
            StatusCode::OK,
            Json(json!({"name": name, "version": previous.version, "unchanged": true, "warnings": warnings})),
        )
            .into_response());
    }
    let auto_accept = service
        .store
        .platform_policy(&name)
        .await?
        .is_some_and(|policy| policy.auto_accept);
    let reasons = if device && !auto_accept {
        probes::review_reasons(previous_report.as_ref(), &report, &template)
    } else {
        Vec::new()
    };
    let held = !reasons.is_empty();
    let version = service
        .store
        .add_platform_version(
            &name,
            &NewVersion {
                template: &previous.template,
                libs: None,
                probe: Some(&text),
                change: "probe",
                created_by: &caller.name,
                held,
            },
        )
        .await?;
    if held {
        tracing::warn!(
            "platform {name}: version {version} from {} held for review: {reasons:?}",
            caller.name
        );
        let body = json!({"name": name, "version": version, "held": true, "reasons": reasons, "warnings": warnings});
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    Ok(created(version, &name, warnings))
}

/// Accepts a held report: it is marked accepted, and a new current version
/// of the current template takes it.
pub async fn accept(
    State(service): State<Service>,
    caller: Caller,
    UrlPath((name, number)): UrlPath<(String, i64)>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    let held = current(&service, &name, Some(number)).await?;
    // One accept per held version, even when two reviewers click at once.
    if !service.store.mark_accepted(&name, number).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_held",
            format!("platform {name} version {number} is not held for review"),
        ));
    }
    let now_current = current(&service, &name, None).await?;
    let version = service
        .store
        .add_platform_version(
            &name,
            &NewVersion {
                template: &now_current.template,
                libs: None,
                probe: held.probe.as_deref(),
                change: "accepted",
                created_by: &caller.name,
                held: false,
            },
        )
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({"name": name, "version": version, "accepted": number})),
    )
        .into_response())
}

pub async fn get_policy(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<PlatformPolicy>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    service
        .store
        .platform_policy(&name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("platform_not_found", format!("no platform named {name}")))
}

pub async fn put_policy(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    JsonBody(policy): JsonBody<PlatformPolicy>,
) -> Result<Json<PlatformPolicy>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    if !(1..=1000).contains(&policy.keep_versions) {
        return Err(ApiError::unprocessable("invalid_request", "keepVersions: 1 to 1000"));
    }
    if !service.store.set_platform_policy(&name, &policy).await? {
        return Err(ApiError::not_found(
            "platform_not_found",
            format!("no platform named {name}"),
        ));
    }
    Ok(Json(policy))
}

/// Replaces the generated parts with a BundleGen library list.
pub async fn put_libs(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    let previous = current(&service, &name, None).await?;
    let (_libs, warnings, text) = document::<LibsFile>(request, &service, "library list", "invalid_libs").await?;
    let version = service
        .store
        .add_platform_version(
            &name,
            &NewVersion {
                template: &previous.template,
                libs: Some(&text),
                probe: None,
                change: "libs",
                created_by: &caller.name,
                held: false,
            },
        )
        .await?;
    Ok(created(version, &name, warnings))
}

pub async fn versions(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_platform(&name)?;
    let history = service.store.platform_history(&name).await?;
    if history.is_empty() {
        return Err(ApiError::not_found(
            "platform_not_found",
            format!("no platform named {name}"),
        ));
    }
    let versions: Vec<Value> = history
        .iter()
        .map(|v| {
            json!({"version": v.version, "change": v.change, "state": v.state, "createdBy": v.created_by,
                   "createdAt": v.created_at})
        })
        .collect();
    Ok(Json(json!({"name": name, "versions": versions})))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    /// Default: the version before `to`.
    from: Option<i64>,
    /// Default: the current version.
    to: Option<i64>,
}

pub async fn diff(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<DiffQuery>,
) -> Result<Json<crate::diff::PlatformDiff>, ApiError> {
    caller.require_platform(&name)?;
    let to = current(&service, &name, query.to).await?;
    let from = match query.from {
        Some(from) => from,
        None => service
            .store
            .platform_history(&name)
            .await?
            .iter()
            .map(|v| v.version)
            .filter(|v| *v < to.version)
            .max()
            .ok_or_else(|| {
                ApiError::not_found(
                    "platform_not_found",
                    format!("platform {name} has no version before {}", to.version),
                )
            })?,
    };
    let from = current(&service, &name, Some(from)).await?;
    Ok(Json(crate::diff::diff(&from, &to)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_are_safe_path_segments() {
        for good in ["rpi3_reference_vc4_dunfell", "lgi-7218c.v2", "A1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../etc", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
