//! The service's API from the client side, for `bundlegen platform`,
//! `app`, `token` and `lookup`: each call is one request, with the bearer
//! token, and answers the service's JSON (errors carry its code).

use std::path::Path;
use std::time::Duration;

use bundlegen_protocol::http::{HttpError, client, send_for_json};
use bundlegen_protocol::tls::Remedies;
use reqwest::Method;
use serde_json::Value;

/// What to do about TLS trouble with the service, in the CLI's words.
const REMEDIES: Remedies = Remedies {
    plain_http: "the service speaks plain HTTP: give --server as an http:// URL",
    trust_ca: "pass the CA that signed the service's certificate with --ca FILE",
};

/// A connection to one service with one token.
pub struct ServiceClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// `name` as one URL path segment.
fn segment(name: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a valid base");
    url.path_segments_mut().expect("a base").push(name);
    url.path().trim_start_matches('/').to_string()
}

impl ServiceClient {
    /// `server` is the service's base URL (`https://bundlegen.example`).
    pub fn new(server: &str, token: String, ca: Option<&Path>) -> Result<ServiceClient, HttpError> {
        let base = server.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).map_err(|e| HttpError::Setup(format!("--server {server:?}: {e}")))?;
        Ok(ServiceClient {
            // Waiting lookups and document uploads can take a while.
            http: client(
                concat!("bundlegen/", env!("CARGO_PKG_VERSION")),
                ca,
                Duration::from_secs(660),
            )?,
            base,
            token,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<String>) -> Result<Value, HttpError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        send_for_json(request, &url, &REMEDIES).await
    }

    pub async fn platforms(&self) -> Result<Value, HttpError> {
        self.call(Method::GET, "/v1/platforms", None).await
    }

    /// A version of a platform (default: the current one).
    pub async fn platform(&self, name: &str, version: Option<i64>) -> Result<Value, HttpError> {
        let query = version.map(|v| format!("?version={v}")).unwrap_or_default();
        self.call(Method::GET, &format!("/v1/platforms/{}{query}", segment(name)), None)
            .await
    }

    /// Creates or updates the template (JSON text, sent as it is).
    pub async fn put_template(&self, name: &str, template: String) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}", segment(name));
        self.call(Method::PUT, &path, Some(template)).await
    }

    pub async fn post_probe(&self, name: &str, report: String) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}/probe", segment(name));
        self.call(Method::POST, &path, Some(report)).await
    }

    pub async fn put_libs(&self, name: &str, libs: String) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}/libs", segment(name));
        self.call(Method::PUT, &path, Some(libs)).await
    }

    pub async fn versions(&self, name: &str) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}/versions", segment(name));
        self.call(Method::GET, &path, None).await
    }

    /// From `from` (default: the one before `to`) to `to` (default: current).
    pub async fn diff(&self, name: &str, from: Option<i64>, to: Option<i64>) -> Result<Value, HttpError> {
        let mut query: Vec<String> = Vec::new();
        query.extend(from.map(|v| format!("from={v}")));
        query.extend(to.map(|v| format!("to={v}")));
        let path = format!("/v1/platforms/{}/diff?{}", segment(name), query.join("&"));
        self.call(Method::GET, &path, None).await
    }

    pub async fn accept(&self, name: &str, version: i64) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}/versions/{version}/accept", segment(name));
        self.call(Method::POST, &path, Some("{}".into())).await
    }

    pub async fn policy(&self, name: &str) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}/policy", segment(name));
        self.call(Method::GET, &path, None).await
    }

    pub async fn set_policy(&self, name: &str, policy: &Value) -> Result<Value, HttpError> {
        let path = format!("/v1/platforms/{}/policy", segment(name));
        self.call(Method::PUT, &path, Some(policy.to_string())).await
    }

    pub async fn apps(&self) -> Result<Value, HttpError> {
        self.call(Method::GET, "/v1/apps", None).await
    }

    pub async fn app(&self, app: &str, version: &str) -> Result<Value, HttpError> {
        let path = format!("/v1/apps/{}/versions/{}", segment(app), segment(version));
        self.call(Method::GET, &path, None).await
    }

    /// Registers an app version: `{"image", "metadata"?, "options"?}`.
    pub async fn put_app(&self, app: &str, version: &str, definition: &Value) -> Result<Value, HttpError> {
        let path = format!("/v1/apps/{}/versions/{}", segment(app), segment(version));
        self.call(Method::PUT, &path, Some(definition.to_string())).await
    }

    /// The bundle of an app version for a platform, waiting up to `wait`
    /// seconds while it is generated.
    pub async fn lookup(&self, app: &str, version: &str, platform: &str, wait: u64) -> Result<Value, HttpError> {
        let mut url = reqwest::Url::parse("http://x/v1/lookup").expect("a valid URL");
        url.query_pairs_mut()
            .append_pair("app", app)
            .append_pair("version", version)
            .append_pair("platform", platform)
            .append_pair("wait", &wait.to_string());
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        self.call(Method::GET, &path, None).await
    }

    pub async fn tokens(&self) -> Result<Value, HttpError> {
        self.call(Method::GET, "/v1/tokens", None).await
    }

    /// `{"name", "role", "platform"?, "device"?, "expiresInDays"?}`; the
    /// answer holds the token, shown this once.
    pub async fn create_token(&self, request: &Value) -> Result<Value, HttpError> {
        self.call(Method::POST, "/v1/tokens", Some(request.to_string())).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<Value, HttpError> {
        self.call(Method::DELETE, &format!("/v1/tokens/{}", segment(id)), None)
            .await
    }

    pub async fn signing_key(&self) -> Result<Value, HttpError> {
        self.call(Method::GET, "/v1/signing-key", None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_their_path_segment() {
        assert_eq!(segment("rpi3_reference"), "rpi3_reference");
        assert_eq!(segment("../tokens"), "..%2Ftokens");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
    }
}
