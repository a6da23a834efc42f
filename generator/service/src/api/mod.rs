//! The HTTP API. Every route but `/healthz` needs a bearer token; each
//! handler states the roles it allows. Errors are JSON with a stable code
//! (see [`error`]). The OpenAPI document is `docs/openapi.json`,
//! served at `/openapi.json`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::Service;
use crate::auth::{self, Caller, Role};

mod admin;
mod bundles;
pub mod error;
mod listen;
mod platforms;

pub use error::ApiError;
pub use listen::{listen, listen_metrics};

/// Largest request body in general.
const BODY_LIMIT: usize = 1 << 20;
/// Largest probe report, library list or template.
const DOCUMENT_LIMIT: usize = 32 << 20;
/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

impl FromRequestParts<Service> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Caller, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        Ok(auth::authenticate(&service.store, header).await?)
    }
}

/// A JSON body, with errors in our format.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Service> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, service: &Service) -> Result<Self, ApiError> {
        require_json(&request)?;
        let bytes = body_bytes(request, service).await?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() {
                ApiError::unprocessable("invalid_request", format!("{at}: {inner}"))
            } else {
                ApiError::bad_request("invalid_json", inner.to_string())
            }
        })?;
        Ok(JsonBody(value))
    }
}

/// Query parameters, with errors in our format.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Service> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, service)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// JSON endpoints take JSON only: `application/json` or a `+json` type.
fn require_json(request: &Request) -> Result<(), ApiError> {
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        Some(other) if other.starts_with("application/") && other.ends_with("+json") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send JSON (Content-Type: application/json), not {}",
                other.unwrap_or("a body without a Content-Type")
            ),
        )),
    }
}

/// A raw body with the size limit applied as a JSON error.
async fn body_bytes(request: Request, service: &Service) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, service).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                rejection.body_text(),
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })
}

/// Counts requests by route and status.
async fn count_requests(State(service): State<Service>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    service.metrics.request(&route, response.status().as_u16());
    response
}

async fn healthz(State(service): State<Service>) -> Result<Json<serde_json::Value>, ApiError> {
    // The database answering is what "healthy" means here.
    service.store.count_tokens("admin").await?;
    Ok(Json(serde_json::json!({"status": "ok"})))
}

async fn metrics(State(service): State<Service>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam, Role::Metrics])?;
    metrics_text(&service).await
}

/// The exposition: this process's counters and the shared database's jobs.
async fn metrics_text(service: &Service) -> Result<Response, ApiError> {
    let jobs = service.store.count_jobs().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics.render(&jobs),
    )
        .into_response())
}

/// The router of `--metrics-listen`: `/metrics` without a token, for a
/// scraper on a private address.
pub fn metrics_router(service: Service) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(service): State<Service>| async move { metrics_text(&service).await }),
        )
        .fallback(not_found)
        .with_state(service)
}

async fn openapi(_caller: Caller) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not served at {}", request.method(), request.uri().path()),
    )
}

/// Every route: method, path, handler. The router is built from this list,
/// and the OpenAPI document is checked against it.
fn routes() -> Vec<(&'static str, &'static str, MethodRouter<Service>)> {
    let document_limit = || DefaultBodyLimit::max(DOCUMENT_LIMIT);
    vec![
        ("GET", "/healthz", get(healthz)),
        ("GET", "/metrics", get(metrics)),
        ("GET", "/openapi.json", get(openapi)),
        ("GET", "/v1/signing-key", get(admin::signing_key)),
        ("GET", "/v1/tokens", get(admin::list_tokens)),
        ("POST", "/v1/tokens", post(admin::create_token)),
        ("DELETE", "/v1/tokens/{id}", delete(admin::delete_token)),
        ("GET", "/v1/platforms", get(platforms::list)),
        ("GET", "/v1/platforms/{name}", get(platforms::get_platform)),
        (
            "PUT",
            "/v1/platforms/{name}",
            put(platforms::put_template).layer(document_limit()),
        ),
        ("GET", "/v1/platforms/{name}/probe", get(platforms::get_probe)),
        (
            "POST",
            "/v1/platforms/{name}/probe",
            post(platforms::post_probe).layer(document_limit()),
        ),
        ("GET", "/v1/platforms/{name}/libs", get(platforms::get_libs)),
        (
            "PUT",
            "/v1/platforms/{name}/libs",
            put(platforms::put_libs).layer(document_limit()),
        ),
        ("GET", "/v1/platforms/{name}/versions", get(platforms::versions)),
        (
            "POST",
            "/v1/platforms/{name}/versions/{version}/accept",
            post(platforms::accept),
        ),
        ("GET", "/v1/platforms/{name}/policy", get(platforms::get_policy)),
        ("PUT", "/v1/platforms/{name}/policy", put(platforms::put_policy)),
        ("GET", "/v1/platforms/{name}/diff", get(platforms::diff)),
        ("GET", "/v1/apps", get(admin::list_apps)),
        ("GET", "/v1/apps/{app}/versions/{version}", get(admin::get_app)),
        ("PUT", "/v1/apps/{app}/versions/{version}", put(admin::put_app)),
        ("GET", "/v1/bundles", get(bundles::list)),
        ("POST", "/v1/bundles", post(bundles::request)),
        ("GET", "/v1/bundles/{id}", get(bundles::get_bundle)),
        ("GET", "/v1/bundles/{id}/content", get(bundles::content)),
        ("GET", "/v1/lookup", get(bundles::lookup)),
        ("GET", "/v1/jobs", get(bundles::list_jobs)),
        ("GET", "/v1/jobs/{id}", get(bundles::get_job)),
    ]
}

pub fn router(service: Service) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(service.clone(), count_requests))
        .with_state(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document lists exactly the routes the router serves.
    #[test]
    fn openapi_document_matches_the_routes() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut routed: Vec<(String, String)> = routes()
            .into_iter()
            .map(|(method, path, _)| (method.to_string(), path.to_string()))
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
