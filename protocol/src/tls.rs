//! TLS server settings from PEM files (rustls with ring), shared by the
//! generator service and the agent's developer endpoint.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server configuration for a certificate chain and its key, offering
/// HTTP/2 and HTTP/1.1 (or only HTTP/1.1).
pub fn server_config(cert: &Path, key: &Path, http2: bool) -> Result<rustls::ServerConfig, String> {
    let bad = |what: &Path, e: String| format!("{}: {e}", what.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in it".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| bad(cert, e.to_string()))?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// What a user of a client can do about TLS trouble, in that client's
/// words (its flags or configuration keys).
#[derive(Debug, Clone, Copy)]
pub struct Remedies {
    /// For a server that speaks plain HTTP: e.g. "pass --plain-http".
    pub plain_http: &'static str,
    /// For a certificate from a CA not trusted here: e.g. "pass its CA with --ca FILE".
    pub trust_ca: &'static str,
}

/// A failed request's error and causes, with what to do when TLS is what
/// failed (rustls names the trouble; people should not have to decode it).
pub fn explain(error: &(dyn std::error::Error + 'static), remedies: &Remedies) -> String {
    let text = crate::error_chain(error);
    match hint(&text, remedies) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

fn hint(text: &str, remedies: &Remedies) -> Option<String> {
    let has = |needle: &str| text.contains(needle);
    let hint = if has("InvalidContentType") || has("corrupt message") {
        format!("the server answered in plain HTTP, not TLS: {}", remedies.plain_http)
    } else if has("UnknownIssuer") {
        format!(
            "the server's certificate is signed by a CA this machine does not trust: {}",
            remedies.trust_ca
        )
    } else if has("CaUsedAsEndEntity") {
        "the server presents a CA certificate as its own: give the server a certificate signed by that CA \
         (a leaf, not the CA itself)"
            .to_string()
    } else if has("NotValidForName") || has("not valid for name") {
        "the server's certificate does not name this host: use a name the certificate lists, or reissue it".to_string()
    } else if has("Expired") || has("NotValidYet") {
        "the server's certificate is outside its validity period (or this machine's clock is wrong)".to_string()
    } else if has("SelfSigned") {
        format!("the server's certificate is self-signed: {}", remedies.trust_ca)
    } else {
        return None;
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failed(&'static str);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failed {}

    #[test]
    fn each_tls_trouble_gets_its_remedy() {
        let remedies = Remedies {
            plain_http: "pass --plain-http",
            trust_ca: "pass its CA with --registry-ca FILE",
        };
        let cases = [
            (
                "received corrupt message of type InvalidContentType",
                "pass --plain-http",
            ),
            ("invalid peer certificate: UnknownIssuer", "--registry-ca FILE"),
            (
                "invalid peer certificate: BadEncoding ... CaUsedAsEndEntity",
                "a leaf, not the CA",
            ),
            ("certificate not valid for name \"x\"", "does not name this host"),
            ("invalid peer certificate: Expired", "validity period"),
        ];
        for (error, remedy) in cases {
            let explained = explain(&Failed(error), &remedies);
            assert!(
                explained.starts_with(error) && explained.contains(remedy),
                "{explained}"
            );
        }
        assert_eq!(explain(&Failed("connection refused"), &remedies), "connection refused");
    }
}
