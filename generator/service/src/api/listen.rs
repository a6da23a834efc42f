//! Serving the API over plain HTTP or HTTPS (rustls), until SIGTERM or
//! SIGINT.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::signals::shutdown_signal;
use crate::{ServiceConfig, ServiceError};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    let Some((cert, key)) = &config.tls else {
        println!("bundlegen serve: listening on http://{address}");
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|source| ServiceError::Io {
                what: "serving".into(),
                source,
            });
    };
    let tls = bundlegen_protocol::tls::server_config(cert, key, true).map_err(ServiceError::Config)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    println!("bundlegen serve: listening on https://{address}");
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!("{peer}: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("{peer}: TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("{peer}: {e}");
            }
        });
    }
}
