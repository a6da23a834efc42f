//! Sends a probe report to the generator service
//! (`POST /v1/platforms/NAME/probe`, bearer token).

use std::path::Path;
use std::time::Duration;

use bundlegen_protocol::http::{HttpError, client, send_for_json};
use bundlegen_protocol::tls::Remedies;

/// What the service answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Accepted {
    pub name: String,
    pub version: i64,
    /// Kept for a platform team's review before it is used.
    #[serde(default)]
    pub held: bool,
    /// Why it is held.
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Posts `report` (JSON) to `url`; `ca` adds a trusted CA (PEM) for a
/// service with a private certificate; `remedies` say, in the caller's
/// terms, what to do about TLS trouble.
pub async fn upload(
    url: &str,
    token: &str,
    report: Vec<u8>,
    ca: Option<&Path>,
    remedies: &Remedies,
) -> Result<Accepted, HttpError> {
    let client = client(
        concat!("platform-probe/", env!("CARGO_PKG_VERSION")),
        ca,
        Duration::from_secs(300),
    )?;
    let request = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(report);
    send_for_json(request, url, remedies).await
}
