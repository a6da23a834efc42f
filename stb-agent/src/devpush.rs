//! Developer push (developer mode only): `POST /v1/push?app=ID[&launch=1]`
//! with `Authorization: Bearer TOKEN` and a bundle archive as the body
//! installs it as version `dev` of the app (replacing an earlier `dev`) and,
//! with `launch=1`, starts it. `bundlegen push` is the client. HTTPS when a
//! certificate is configured; plain HTTP only on loopback (checked when the
//! configuration is read).

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::agent::Agent;
use crate::agent::{ErrorKind, LaunchError};

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    let mut response = reply(status, json!({"error": {"code": code, "message": message.into()}}));
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is not read: the connection cannot be reused.
        response
            .headers_mut()
            .insert("connection", hyper::header::HeaderValue::from_static("close"));
    }
    response
}

/// The HTTP status of a failed push; the JSON `code` is the error's kind.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::WrongParams | ErrorKind::BadArchive | ErrorKind::Integrity | ErrorKind::Signature => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorKind::AppLocked | ErrorKind::AppRunning => StatusCode::CONFLICT,
        ErrorKind::NoSpace | ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refused(e: &LaunchError) -> Reply {
    let kind = e.kind();
    error(status_of(kind), kind.as_str(), bundlegen_protocol::error_chain(e))
}

/// Serves the endpoint until the process ends.
pub async fn serve(agent: Arc<Agent>) -> Result<(), String> {
    let config = agent.config.developer.clone();
    let token_file = config.token_file.clone().ok_or("developer.token_file is not set")?;
    let token = bundlegen_protocol::http::read_token(&token_file).map_err(|e| e.to_string())?;
    let acceptor = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            bundlegen_protocol::tls::server_config(cert, key, false)?,
        ))),
        _ => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("developer endpoint on {}: {e}", config.listen))?;
    tracing::info!(
        "developer push: listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let token = Arc::new(token);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (agent, token, acceptor) = (agent.clone(), token.clone(), acceptor.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (agent, token) = (agent.clone(), token.clone());
                async move { Ok::<_, Infallible>(handle(agent, &token, request).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                    Err(e) => {
                        tracing::debug!("{peer}: TLS: {e}");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!("{peer}: {e}");
            }
        });
    }
}

fn token_matches(header: Option<&str>, token: &str) -> bool {
    // Compare digests, so the time taken says nothing about the token.
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    bundlegen_protocol::digest::Sha256Digest::of(given.trim().as_bytes())
        == bundlegen_protocol::digest::Sha256Digest::of(token.as_bytes())
}

async fn handle(agent: Arc<Agent>, token: &str, request: Request<Incoming>) -> Reply {
    let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    if !token_matches(authorization, token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a developer token is required",
        );
    }
    if request.method() != Method::POST || request.uri().path() != "/v1/push" {
        return error(StatusCode::NOT_FOUND, "not_found", "POST /v1/push?app=ID[&launch=1]");
    }
    let query = request.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let Some(app) = param("app") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the app parameter is required",
        );
    };
    let launch = matches!(param("launch").as_deref(), Some("1" | "true"));
    let limit = agent.config.quota.bytes();
    let dir = agent.store.root().join("downloads");
    let mut file = match tempfile::Builder::new().prefix(".push-").tempfile_in(&dir) {
        Ok(file) => file,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
    };
    let mut body = request.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
        };
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
            if received > limit {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "larger than the quota",
                );
            }
            if let Err(e) = file.write_all(data) {
                return error(StatusCode::INSUFFICIENT_STORAGE, "storage", e.to_string());
            }
        }
    }
    match agent.install_pushed(&app, file.path().to_path_buf(), launch).await {
        Ok(descriptor) => reply(
            StatusCode::OK,
            json!({"app": app, "version": "dev", "bytes": received, "descriptor": descriptor}),
        ),
        Err(e) => refused(&e),
    }
}
