//! Developer push (developer mode only): `POST /v1/push?app=ID[&launch=1]`
//! with `Authorization: Bearer TOKEN` and a bundle archive as the body
//! (`GET /v1/push` first checks the token, without a body to cut off)
//! installs it as version `dev` of the app (replacing an earlier `dev`; a
//! RALF package as its own version, verified as any package) and, with
//! `launch=1`, starts it. `bundlegen push` is the client. HTTPS when a
//! certificate is configured; plain HTTP only on loopback (checked when the
//! configuration is read).

use std::convert::Infallible;
use std::sync::Arc;

use bundlegen_protocol::server::Limits;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::agent::Agent;
use crate::agent::{ErrorKind, InstallError, LaunchError};
use crate::download::ROOM_CHECK_INTERVAL;
use crate::store::NoRoom;

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// An error answer, logged: every refused push says why in the journal.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    let message = message.into();
    tracing::warn!(status = status.as_u16(), code, "push refused: {message}");
    reply(status, json!({"error": {"code": code, "message": message}}))
}

/// A refusal before the body was read: the connection cannot be reused.
fn unread(mut response: Reply) -> Reply {
    response
        .headers_mut()
        .insert("connection", hyper::header::HeaderValue::from_static("close"));
    response
}

/// The HTTP status of a failed push; the JSON `code` is the error's kind.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::WrongParams | ErrorKind::BadArchive | ErrorKind::Integrity | ErrorKind::Signature => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorKind::AppLocked | ErrorKind::AppRunning => StatusCode::CONFLICT,
        ErrorKind::Dependency => StatusCode::FAILED_DEPENDENCY,
        ErrorKind::NoSpace | ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Unsupported => StatusCode::UNPROCESSABLE_ENTITY,
        // Dobby refused the app, or it stopped as soon as it started.
        ErrorKind::Dobby => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refused(e: &LaunchError) -> Reply {
    let kind = e.kind();
    error(status_of(kind), kind.as_str(), bundlegen_protocol::error_chain(e))
}

/// Pushes received and installed at once; more are answered 429.
const PUSHES_AT_ONCE: usize = 2;

/// Connections the endpoint holds at once: a few developers, not a crowd.
const MAX_CONNECTIONS: usize = 16;

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
    let (token, pushes) = (Arc::new(token), Arc::new(Semaphore::new(PUSHES_AT_ONCE)));
    let service = hyper::service::service_fn(move |request| {
        let (agent, token, pushes) = (agent.clone(), token.clone(), pushes.clone());
        async move { Ok::<_, Infallible>(handle(agent, &token, &pushes, request).await) }
    });
    let limits = Limits {
        max_connections: MAX_CONNECTIONS,
        ..Limits::default()
    };
    bundlegen_protocol::server::serve(listener, acceptor, limits, std::future::pending(), service).await;
    Ok(())
}

fn token_matches(header: Option<&str>, token: &str) -> bool {
    // Compare digests, so the time taken says nothing about the token.
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    bundlegen_protocol::digest::Sha256Digest::of(given.trim().as_bytes())
        == bundlegen_protocol::digest::Sha256Digest::of(token.as_bytes())
}

async fn handle(agent: Arc<Agent>, token: &str, pushes: &Arc<Semaphore>, request: Request<Incoming>) -> Reply {
    let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    if !token_matches(authorization, token) {
        return unread(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a developer token is required",
        ));
    }
    if request.method() == Method::GET && request.uri().path() == "/v1/push" {
        // What a client asks before it sends a body: the token is good, and
        // how much room there is.
        let (used, quota, free) = agent.storage();
        return reply(StatusCode::OK, json!({"used": used, "quota": quota, "free": free}));
    }
    if request.method() != Method::POST || request.uri().path() != "/v1/push" {
        return unread(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "POST /v1/push?app=ID[&launch=1]",
        ));
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
        return unread(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the app parameter is required",
        ));
    };
    let launch = matches!(param("launch").as_deref(), Some("1" | "true"));
    let Ok(_slot) = pushes.clone().try_acquire_owned() else {
        let mut busy = unread(error(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!("{PUSHES_AT_ONCE} pushes are in progress"),
        ));
        busy.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("5"));
        return busy;
    };
    let (archive, received) = match receive(&agent, request).await {
        Ok(received) => received,
        Err(refusal) => return refusal,
    };
    tracing::info!(app, bytes = received, launch, "push received");
    match agent.install_pushed(&app, archive.path().to_path_buf(), launch).await {
        Ok((version, descriptor)) => reply(
            StatusCode::OK,
            json!({"app": app, "version": version, "bytes": received, "descriptor": descriptor}),
        ),
        Err(e) => refused(&e),
    }
}

/// Streams the body to a file in the downloads directory while it fits
/// the store's room and quota; the file and its size.
async fn receive(agent: &Agent, request: Request<Incoming>) -> Result<(tempfile::NamedTempFile, u64), Reply> {
    let storage = |e: std::io::Error| unread(error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()));
    let no_room = |e: NoRoom| {
        let e = InstallError::NoRoom(e);
        unread(error(status_of(e.kind()), e.kind().as_str(), e.to_string()))
    };
    let room = agent.room();
    let announced = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = announced {
        room.check(0, length).map_err(no_room)?;
    }
    let dir = agent.store.root().join("downloads");
    std::fs::create_dir_all(&dir).map_err(storage)?;
    let archive = tempfile::Builder::new()
        .prefix(".push-")
        .tempfile_in(&dir)
        .map_err(storage)?;
    let mut file = tokio::fs::File::from_std(archive.reopen().map_err(storage)?);
    let mut body = request.into_body();
    let (mut received, mut next_check) = (0u64, ROOM_CHECK_INTERVAL);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unread(error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        received += data.len() as u64;
        if received >= next_check {
            room.check(received, 0).map_err(no_room)?;
            next_check = received + ROOM_CHECK_INTERVAL;
        }
        file.write_all(data).await.map_err(storage)?;
    }
    room.check(received, 0).map_err(no_room)?;
    // flush reports a failed write (a full disk) that sync_all would not.
    file.flush().await.map_err(storage)?;
    file.sync_all().await.map_err(storage)?;
    Ok((archive, received))
}
