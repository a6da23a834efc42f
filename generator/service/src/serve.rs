//! The two kinds of service process: `bundlegen serve` and `bundlegen worker`.

use crate::signals::shutdown_signal;
use crate::{Service, ServiceConfig, ServiceError, api, bundlegen_queue};

/// `bundlegen serve`: the API, plus the job workers in embedded mode.
pub async fn serve(config: ServiceConfig) -> Result<(), ServiceError> {
    check_listen_policy(&config)?;
    let service = Service::start(config).await?;
    if service.queue.is_local() {
        service.recover_interrupted_jobs().await?;
        service.spawn_local_workers();
    } else {
        service.announce_queued_jobs().await?;
    }
    spawn_metrics(&service);
    let router = api::router(service.clone());
    api::listen(&service.config, router).await
}

/// `--metrics-listen`: `/metrics` for a scraper, beside the API (or, in a
/// worker, instead of one).
fn spawn_metrics(service: &Service) {
    if let Some(address) = service.config.metrics_listen {
        let router = api::metrics_router(service.clone());
        tokio::spawn(async move {
            if let Err(e) = api::listen_metrics(address, router).await {
                tracing::error!("metrics: {e}");
            }
        });
    }
}

/// `bundlegen worker`: runs jobs from RabbitMQ (and BundleGen's queue)
/// until SIGTERM or SIGINT. Jobs cut short are redelivered by the broker.
pub async fn worker(config: ServiceConfig) -> Result<(), ServiceError> {
    let service = Service::start(config).await?;
    spawn_metrics(&service);
    if service.config.bundlegen_queue {
        let compat = service.clone();
        tokio::spawn(async move {
            if let Err(e) = bundlegen_queue::consume(&compat).await {
                tracing::error!("BundleGen queue: {e}");
            }
        });
    }
    tokio::select! {
        result = service.consume_amqp_jobs() => result,
        () = shutdown_signal() => Ok(()),
    }
}

/// Refuses plain HTTP on a non-loopback address unless told otherwise.
fn check_listen_policy(config: &ServiceConfig) -> Result<(), ServiceError> {
    if config.tls.is_none() && !config.listen.ip().is_loopback() && !config.insecure_listen {
        return Err(ServiceError::Config(format!(
            "refusing to serve plain HTTP on {}: give --tls-cert and --tls-key, listen on a loopback \
             address, or pass --insecure-listen (behind a TLS-terminating proxy)",
            config.listen
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn plain_http_stays_on_loopback_unless_allowed() {
        let dir = Path::new("/tmp");
        let public = ServiceConfig::embedded(dir, "0.0.0.0:8080".parse().unwrap());
        assert!(matches!(check_listen_policy(&public), Err(ServiceError::Config(_))));
        let allowed = ServiceConfig {
            insecure_listen: true,
            ..public.clone()
        };
        assert!(check_listen_policy(&allowed).is_ok());
        let tls = ServiceConfig {
            tls: Some(("cert.pem".into(), "key.pem".into())),
            ..public
        };
        assert!(check_listen_policy(&tls).is_ok());
        let local = ServiceConfig::embedded(dir, "127.0.0.1:8080".parse().unwrap());
        assert!(check_listen_policy(&local).is_ok());
        let v6 = ServiceConfig::embedded(dir, "[::1]:8080".parse().unwrap());
        assert!(check_listen_policy(&v6).is_ok());
    }
}
