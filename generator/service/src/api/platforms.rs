//! Platforms: the hand-written template and the generated parts (a probe
//! report or a BundleGen library list), versioned. Every change makes a new
//! version that keeps the other part of the previous one.

use std::path::Path;

use axum::Json;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bundlegen_protocol::config::libs::LibsFile;
use bundlegen_protocol::config::platform::PlatformTemplate;
use bundlegen_protocol::config::{Validate, parse};
use bundlegen_protocol::probe::ProbeReport;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::{QueryParams, body_bytes};
use crate::Service;
use crate::auth::{Caller, Role};
use crate::store::PlatformVersion;

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

pub async fn list(State(service): State<Service>, _caller: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"platforms": service.store.platforms().await?})))
}

pub async fn get_platform(
    State(service): State<Service>,
    _caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(summary(&current(&service, &name, query.version).await?)))
}

pub async fn get_probe(
    State(service): State<Service>,
    _caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Response, ApiError> {
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
    _caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Response, ApiError> {
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
    let (_template, warnings, text) =
        document::<PlatformTemplate>(request, &service, "template", "invalid_template").await?;
    let previous = service.store.platform_version(&name, None).await?;
    let (libs, probe) = previous.map_or((None, None), |p| (p.libs, p.probe));
    let version = service
        .store
        .add_platform_version(
            &name,
            &text,
            libs.as_deref(),
            probe.as_deref(),
            "template",
            &caller.name,
        )
        .await?;
    Ok(created(version, &name, warnings))
}

/// Replaces the generated parts with a probe report.
pub async fn post_probe(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam, Role::Device])?;
    let previous = current(&service, &name, None).await?;
    let (report, warnings, text) = document::<ProbeReport>(request, &service, "probe report", "invalid_probe").await?;
    let template: PlatformTemplate =
        serde_json::from_str(&previous.template).map_err(|e| ApiError::internal(e.to_string()))?;
    let expected =
        bundlegen_core::pipeline::libraries::platform_abi(&template.arch.arch, template.arch.variant.as_deref());
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
    let version = service
        .store
        .add_platform_version(&name, &previous.template, None, Some(&text), "probe", &caller.name)
        .await?;
    Ok(created(version, &name, warnings))
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
        .add_platform_version(&name, &previous.template, Some(&text), None, "libs", &caller.name)
        .await?;
    Ok(created(version, &name, warnings))
}

pub async fn versions(
    State(service): State<Service>,
    _caller: Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let history = service.store.platform_history(&name).await?;
    if history.is_empty() {
        return Err(ApiError::not_found(
            "platform_not_found",
            format!("no platform named {name}"),
        ));
    }
    let versions: Vec<Value> = history
        .iter()
        .map(
            |v| json!({"version": v.version, "change": v.change, "createdBy": v.created_by, "createdAt": v.created_at}),
        )
        .collect();
    Ok(Json(json!({"name": name, "versions": versions})))
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: Option<i64>,
}

pub async fn diff(
    State(service): State<Service>,
    _caller: Caller,
    UrlPath(name): UrlPath<String>,
    QueryParams(query): QueryParams<DiffQuery>,
) -> Result<Json<crate::diff::PlatformDiff>, ApiError> {
    let from = current(&service, &name, Some(query.from)).await?;
    let to = current(&service, &name, query.to).await?;
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
