//! `bundlegen serve` and `bundlegen worker`: the generator as the cloud
//! service boxes and platform teams talk to.
//!
//! - [`serve`]: the two kinds of process; [`config`]: how one is set up;
//!   [`service`]: what every request and job shares.
//! - [`api`]: the HTTP API (platforms, apps, bundle jobs, downloads, tokens);
//!   HTTP statuses are made there and nowhere else.
//! - [`requests`]: bundle requests checked and queued; [`jobs`]: running a
//!   job with the CLI's pipeline ([`jobs::package`] for RALF packages);
//!   [`workers`]: claiming, running, recording.
//! - [`store`] over [`db`]: records in SQLite (embedded) or PostgreSQL.
//! - [`queue`]: jobs to workers, in-process or through RabbitMQ.
//! - [`blobs`]: finished bundles in a directory or an OCI registry.
//! - [`probes`]: which probe reports are accepted, held or refused.
//! - [`signing`], [`auth`], [`metrics`], [`diff`], [`bundlegen_queue`].
//!
//! Embedded (the default) is one process with everything under a data
//! directory. Scale-out shares PostgreSQL, RabbitMQ and a registry between
//! any number of `serve` and `worker` processes.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod bundlegen_queue;
pub mod client;
pub mod config;
pub mod db;
pub mod diff;
pub mod jobs;
pub mod metrics;
pub mod probes;
pub mod queue;
pub mod requests;
pub mod serve;
pub mod service;
mod signals;
pub mod signing;
pub mod store;
pub mod transfer;
pub mod workers;

pub use config::{ServiceConfig, ServiceError};
pub use requests::RequestError;
pub use serve::{serve, worker};
pub use service::{Service, redact};
