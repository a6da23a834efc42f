//! Tokens, apps and the signing key.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::JsonBody;
use crate::Service;
use crate::auth::{self, Caller, Role};
use crate::jobs::BundleOptions;
use crate::store::AppRecord;

pub async fn signing_key(State(service): State<Service>, _caller: Caller) -> Json<Value> {
    let key = service.signer.public_key();
    Json(json!({
        "algorithm": "ed25519",
        "publicKey": bundlegen_protocol::signature::base64_encode(key),
        "publicKeyHex": bundlegen_protocol::digest::to_hex(key),
        "message": "bundlegen-bundle-v1\\nsha256:<hex>\\napp:<id>\\nversion:<version>\\nplatform:<name>\\nformat:<format>\\n",
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: String,
}

/// Creates a token; the token itself is in this response only.
pub async fn create_token(
    State(service): State<Service>,
    caller: Caller,
    JsonBody(new): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    caller.require(&[])?;
    let role = auth::Role::parse(&new.role)
        .ok_or_else(|| ApiError::unprocessable("invalid_request", "role: use admin, platform-team or device"))?;
    if new.name.trim().is_empty() || new.name.len() > 200 {
        return Err(ApiError::unprocessable("invalid_request", "name: 1 to 200 characters"));
    }
    let (id, token) = auth::new_token();
    service
        .store
        .add_token(&id, new.name.trim(), role.as_str(), &auth::hash_token(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "name": new.name.trim(), "role": role.as_str(), "token": token})),
    )
        .into_response())
}

pub async fn list_tokens(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[])?;
    let tokens: Vec<Value> = service
        .store
        .tokens()
        .await?
        .into_iter()
        .map(|t| json!({"id": t.id, "name": t.name, "role": t.role}))
        .collect();
    Ok(Json(json!({"tokens": tokens})))
}

pub async fn delete_token(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[])?;
    if service.store.delete_token(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token_not_found", format!("no token {id}")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppVersion {
    image: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    options: BundleOptions,
}

/// Registers an app version: the image boxes get a bundle of when they
/// look it up.
pub async fn put_app(
    State(service): State<Service>,
    caller: Caller,
    UrlPath((app, version)): UrlPath<(String, String)>,
    JsonBody(body): JsonBody<AppVersion>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    if let Some(reason) = bundlegen_protocol::config::app::container_id_problem(&app) {
        return Err(ApiError::bad_request("invalid_app_id", format!("{app:?}: {reason}")));
    }
    service.image_reference(&body.image)?;
    body.options
        .validate()
        .map_err(|e| ApiError::unprocessable("invalid_request", e))?;
    if let Some(metadata) = &body.metadata {
        crate::requests::parse_metadata(metadata)?;
    }
    let existed = service.store.app(&app, &version).await?.is_some();
    let record = AppRecord {
        app_id: app,
        version,
        image: body.image,
        metadata: body.metadata,
        options: serde_json::to_value(&body.options).unwrap_or_default(),
    };
    service.store.put_app(&record).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(record)).into_response())
}

pub async fn get_app(
    State(service): State<Service>,
    _caller: Caller,
    UrlPath((app, version)): UrlPath<(String, String)>,
) -> Result<Json<AppRecord>, ApiError> {
    service
        .store
        .app(&app, &version)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("app_not_found", format!("no app {app} version {version}")))
}

pub async fn list_apps(State(service): State<Service>, _caller: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"apps": service.store.apps().await?})))
}
