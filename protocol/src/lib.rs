//! Types and wire formats shared by the bundle generator, the platform probe
//! and the on-box agent. Kept small: the agent links it on the set-top box.

pub mod archive;
pub mod cdi;
pub mod civil;
pub mod config;
pub mod digest;
pub mod fsutil;
#[cfg(feature = "http")]
pub mod http;
pub mod idmap;
pub mod manifest;
pub mod plugins;
pub mod probe;
pub mod ralf;
#[cfg(feature = "registry")]
pub mod registry;
pub mod root;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod signature;
pub mod tar_read;
pub mod tls;

/// An error and its causes, joined by ": " (what `anyhow`'s `{:#}` prints),
/// for messages that must carry the whole story, such as API responses.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
