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
use crate::store::{AppRecord, NewToken, TokenRecord};

pub async fn signing_key(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::PlatformTeam, Role::Device])?;
    let key = service.signer.public_key();
    Ok(Json(json!({
        "algorithm": "ed25519",
        "publicKey": bundlegen_protocol::signature::base64_encode(key),
        "publicKeyHex": bundlegen_protocol::digest::to_hex(key),
        "message": "bundlegen-bundle-v1\\nsha256:<hex>\\napp:<id>\\nversion:<version>\\nplatform:<name>\\nformat:<format>\\n",
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTokenRequest {
    name: String,
    role: String,
    /// The platform a device token belongs to (required for devices).
    #[serde(default)]
    platform: Option<String>,
    /// The device a device token names (default: its name).
    #[serde(default)]
    device: Option<String>,
    /// Days until the token stops working; none: it does not expire.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

fn token_json(token: &TokenRecord) -> Value {
    json!({
        "id": token.id, "name": token.name, "role": token.role,
        "platform": token.platform, "device": token.device,
        "createdAt": token.created_at, "lastUsedAt": token.last_used_at, "expiresAt": token.expires_at,
    })
}

/// Creates a token; the token itself is in this response only. A device
/// token belongs to one platform.
pub async fn create_token(
    State(service): State<Service>,
    caller: Caller,
    JsonBody(new): JsonBody<NewTokenRequest>,
) -> Result<Response, ApiError> {
    caller.require(&[])?;
    let invalid = |message: &str| ApiError::unprocessable("invalid_request", message);
    let role = auth::Role::parse(&new.role).ok_or_else(|| invalid("role: use admin, platform-team or device"))?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("name: 1 to 200 characters"));
    }
    match (role, &new.platform) {
        (Role::Device, None) => return Err(invalid("platform: a device token belongs to a platform")),
        (Role::Device, Some(platform)) => {
            if service.store.platform_version(platform, None).await?.is_none() {
                return Err(ApiError::not_found(
                    "platform_not_found",
                    format!("no platform named {platform}"),
                ));
            }
        }
        (_, Some(_)) => return Err(invalid("platform: only device tokens belong to a platform")),
        (_, None) => {}
    }
    if service
        .store
        .tokens()
        .await?
        .iter()
        .any(|t| t.name == name && t.revoked_at.is_none())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "token_name_taken",
            format!("a token named {name:?} is in use: revoke it first, or choose another name"),
        ));
    }
    let device = (role == Role::Device).then(|| new.device.as_deref().unwrap_or(name).to_string());
    let expires_at = new
        .expires_in_days
        .map(|days| crate::store::now() + i64::from(days) * 86_400);
    let (id, token) = auth::new_token();
    service
        .store
        .add_token(&NewToken {
            id: &id,
            name,
            role: role.as_str(),
            hash: &auth::hash_token(&token),
            platform: new.platform.as_deref(),
            device: device.as_deref(),
            expires_at,
        })
        .await?;
    let record = TokenRecord {
        id,
        name: name.to_string(),
        role: role.as_str().to_string(),
        platform: new.platform,
        device,
        created_at: crate::store::now(),
        last_used_at: None,
        expires_at,
        revoked_at: None,
    };
    let mut body = token_json(&record);
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list_tokens(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[])?;
    let tokens: Vec<Value> = service.store.tokens().await?.iter().map(token_json).collect();
    Ok(Json(json!({"tokens": tokens})))
}

/// Revokes a token: it stops working at once, and for good.
pub async fn delete_token(
    State(service): State<Service>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[])?;
    if service.store.revoke_token(&id).await? {
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
    if let Some(reason) = bundlegen_protocol::config::app::version_problem(&version) {
        return Err(ApiError::bad_request(
            "invalid_app_version",
            format!("{version:?}: {reason}"),
        ));
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
    caller: Caller,
    UrlPath((app, version)): UrlPath<(String, String)>,
) -> Result<Json<AppRecord>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    service
        .store
        .app(&app, &version)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("app_not_found", format!("no app {app} version {version}")))
}

pub async fn list_apps(State(service): State<Service>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::PlatformTeam])?;
    Ok(Json(json!({"apps": service.store.apps().await?})))
}
