//! Serving the API over plain HTTP or HTTPS (rustls), under the connection
//! limits, until SIGTERM or SIGINT.

use std::sync::Arc;

use axum::Router;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::signals::shutdown_signal;
use crate::{ServiceConfig, ServiceError};

/// Binds the configured address and serves until a shutdown signal.
pub async fn listen(config: &ServiceConfig, router: Router) -> Result<(), ServiceError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServiceError::Io {
            what: format!("listening on {}", config.listen),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServiceError::Io {
        what: "listening socket".into(),
        source,
    })?;
    let tls = match &config.tls {
        Some((cert, key)) => {
            let tls = bundlegen_protocol::tls::server_config(cert, key, true).map_err(ServiceError::Config)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("bundlegen serve: listening on {scheme}://{address}");
    let service = TowerToHyperService::new(router);
    bundlegen_protocol::server::serve(listener, tls, config.connections, shutdown_signal(), service).await;
    Ok(())
}

/// Serves `/metrics` without a token on `address` (plain HTTP) until a
/// shutdown signal; the address it listens on is printed.
pub async fn listen_metrics(address: std::net::SocketAddr, router: Router) -> Result<(), ServiceError> {
    let listener = TcpListener::bind(address).await.map_err(|source| ServiceError::Io {
        what: format!("listening on {address} for metrics"),
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| ServiceError::Io {
        what: "metrics socket".into(),
        source,
    })?;
    println!("bundlegen: metrics on http://{bound}/metrics");
    let limits = bundlegen_protocol::server::Limits {
        max_connections: 16,
        ..bundlegen_protocol::server::Limits::default()
    };
    let service = TowerToHyperService::new(router);
    bundlegen_protocol::server::serve(listener, None, limits, shutdown_signal(), service).await;
    Ok(())
}
