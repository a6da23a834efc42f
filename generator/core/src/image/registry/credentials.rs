//! Registry credentials, each bound to the registry host it was given for:
//! `--creds HOST=USER:PASSWORD`, or a docker-style `auth.json` (what
//! skopeo and podman read). They never go to another host, nor over plain
//! HTTP except to the registry the user asked to reach that way.

use std::collections::BTreeMap;
use std::path::Path;

pub use bundlegen_protocol::registry::{Credentials, normalize_host};

/// `--creds` as given: for a host, or (BundleGen's form) for the registry
/// the command pulls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsArg {
    pub host: Option<String>,
    pub credentials: Credentials,
}

impl std::str::FromStr for CredentialsArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // `HOST[:PORT]=USER:PASSWORD`; a password may hold '=' itself.
        let is_host = |candidate: &str| match candidate.rsplit_once(':') {
            None => !candidate.is_empty(),
            Some((name, port)) => !name.is_empty() && port.parse::<u16>().is_ok(),
        };
        match text.split_once('=') {
            Some((host, rest)) if is_host(host) => Ok(CredentialsArg {
                host: Some(normalize_host(host)),
                credentials: rest.parse()?,
            }),
            _ => Ok(CredentialsArg {
                host: None,
                credentials: text.parse().map_err(|e| format!("{e}, or HOST=USER:PASSWORD"))?,
            }),
        }
    }
}

/// Credentials by registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialStore {
    by_host: BTreeMap<String, Credentials>,
}

impl CredentialStore {
    pub fn insert(&mut self, host: &str, credentials: Credentials) {
        self.by_host.insert(normalize_host(host), credentials);
    }

    /// The credentials given for `host` (a reference's registry name).
    pub fn for_host(&self, host: &str) -> Option<&Credentials> {
        self.by_host.get(&normalize_host(host))
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// Reads a docker-style auth file: `{"auths": {"HOST": {"auth":
    /// base64("USER:PASSWORD")}}}` (or `username` and `password`).
    pub fn load_auth_file(&mut self, path: &Path) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct AuthFile {
            #[serde(default)]
            auths: BTreeMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        let bad = |why: String| format!("{}: {why}", path.display());
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not an auth file: {e}")))?;
        // serde would take a JSON array for the struct: only an object is one.
        if !value.is_object() {
            return Err(bad("not an auth file: a JSON object is expected".into()));
        }
        let file: AuthFile = serde_json::from_value(value).map_err(|e| bad(format!("not an auth file: {e}")))?;
        for (host, entry) in file.auths {
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = bundlegen_protocol::signature::base64_decode(auth.trim())
                        .ok_or_else(|| bad(format!("auths.{host}.auth is not base64")))?;
                    String::from_utf8(decoded)
                        .map_err(|_| bad(format!("auths.{host}.auth is not text")))?
                        .parse()
                        .map_err(|e| bad(format!("auths.{host}.auth: {e}")))?
                }
                (None, Some(user), Some(password)) => Credentials { user, password },
                _ => continue, // an entry for a credential helper: nothing to send
            };
            self.insert(&host, credentials);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_name_their_host_or_none() {
        let cases: [(&str, Option<&str>, &str, &str); 5] = [
            (
                "registry.example=alice:s3cr=t",
                Some("registry.example"),
                "alice",
                "s3cr=t",
            ),
            ("localhost:5000=bob:pw", Some("localhost:5000"), "bob", "pw"),
            ("Index.Docker.IO=carol:pw", Some("docker.io"), "carol", "pw"),
            ("dave:pass=word", None, "dave", "pass=word"),
            ("erin:pw", None, "erin", "pw"),
        ];
        for (text, host, user, password) in cases {
            let arg: CredentialsArg = text.parse().unwrap();
            assert_eq!(arg.host.as_deref(), host, "{text}");
            assert_eq!(
                (arg.credentials.user.as_str(), arg.credentials.password.as_str()),
                (user, password)
            );
        }
        assert!("host=nocolon".parse::<CredentialsArg>().is_err());
    }

    #[test]
    fn auth_files_are_read_as_skopeo_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let auth = bundlegen_protocol::signature::base64_encode(b"alice:secret");
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "registry.example:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                "helper.example": {"identitytoken": "x"}
            }})
            .to_string(),
        )
        .unwrap();
        let mut store = CredentialStore::default();
        store.load_auth_file(&path).unwrap();
        assert_eq!(store.for_host("registry.example:5000").unwrap().user, "alice");
        assert_eq!(store.for_host("docker.io").unwrap().password, "pw");
        assert!(
            store.for_host("registry.example").is_none(),
            "another port is another registry"
        );
        assert!(store.for_host("helper.example").is_none());
        std::fs::write(&path, "[]").unwrap();
        assert!(store.load_auth_file(&path).unwrap_err().contains("auth.json"));
    }
}
