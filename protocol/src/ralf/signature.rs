//! Package signatures: a cosign "simple signing" payload naming the package
//! manifest's digest, signed with ECDSA P-256 or RSA (PKCS#1 v1.5), both over
//! SHA-256; the signer's certificate (and chain) ride in the signature
//! layer's annotations and are verified against trusted CA roots.

use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use serde_json::{Map, Value};
use webpki::{EndEntityCert, KeyUsage, RawPublicKeyEntity};

use super::certificate::{self, CertificateInfo};
use crate::digest::Sha256Digest;

pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER value bytes.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Signature algorithms a package may use (SHA-256 with ECDSA P-256 or RSA).
const ALGORITHMS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature payload: {0}")]
    Payload(String),
    #[error("signer certificate: {0}")]
    Certificate(String),
    #[error("the signer's certificate is not trusted: {0}")]
    Untrusted(String),
    #[error("the signature does not verify with {0}")]
    Invalid(&'static str),
}

/// The payload: `docker-reference` names the package (its id), `optional`
/// is an object (never `null`: ralfpack's verifier refuses that).
pub fn payload(reference: &str, manifest: &Sha256Digest, optional: Map<String, Value>) -> Vec<u8> {
    let document = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": manifest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": optional,
    });
    serde_json::to_vec(&document).expect("a payload serializes")
}

/// What a payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub reference: String,
    pub manifest: Sha256Digest,
}

/// Parses a payload as strictly as ralfpack's verifier: under `critical`
/// only `type`, `identity.docker-reference` and `image.docker-manifest-digest`,
/// all strings; the exact type; a sha256 digest; `optional` an object.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, SignatureError> {
    let bad = |what: &str| SignatureError::Payload(what.to_string());
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| SignatureError::Payload(format!("not JSON: {e}")))?;
    let top = document.as_object().ok_or_else(|| bad("not an object"))?;
    if let Some(key) = top.keys().find(|k| *k != "critical" && *k != "optional") {
        return Err(SignatureError::Payload(format!("unknown key {key:?}")));
    }
    match top.get("optional") {
        Some(Value::Object(_)) => {}
        Some(_) => return Err(bad("`optional` must be an object (not null)")),
        None => return Err(bad("no `optional`")),
    }
    let critical = top
        .get("critical")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `critical` object"))?;
    let only = |object: &Map<String, Value>, key: &str, what: &str| -> Result<String, SignatureError> {
        if object.len() != 1 {
            return Err(SignatureError::Payload(format!("`{what}` must hold only {key:?}")));
        }
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| SignatureError::Payload(format!("`{what}.{key}` must be a string")))
    };
    if critical.len() != 3 {
        return Err(bad("`critical` must hold exactly type, identity and image"));
    }
    if critical.get("type").and_then(Value::as_str) != Some(PAYLOAD_TYPE) {
        return Err(SignatureError::Payload(format!(
            "`critical.type` must be {PAYLOAD_TYPE:?}"
        )));
    }
    let identity = critical
        .get("identity")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `critical.identity`"))?;
    let image = critical
        .get("image")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `critical.image`"))?;
    let reference = only(identity, "docker-reference", "critical.identity")?;
    let digest = only(image, "docker-manifest-digest", "critical.image")?;
    let manifest = digest
        .parse()
        .map_err(|_| SignatureError::Payload(format!("{digest:?} is not a sha256 digest")))?;
    Ok(Payload { reference, manifest })
}

/// Whom a package is checked against.
#[derive(Debug, Clone)]
pub enum Trust {
    /// CA roots; the signer's certificate must chain to one. Without
    /// `check_time` (`--no-check-time`), the chain need only have been valid
    /// at some moment, not now.
    Roots {
        roots: Vec<CertificateDer<'static>>,
        check_time: bool,
    },
    /// One public key (SubjectPublicKeyInfo), no certificates needed.
    Key(SubjectPublicKeyInfoDer<'static>),
}

/// Checks `signature` over `payload`: with a key, against it; with roots,
/// the certificate (PEM, from the package) must chain to them through the
/// chain's certificates, be valid now and allow code signing if it limits
/// its uses. Returns the signer's certificate, if there was one.
pub fn verify(
    trust: &Trust,
    certificate_pem: Option<&str>,
    chain_pem: Option<&str>,
    payload: &[u8],
    signature: &[u8],
    now: UnixTime,
) -> Result<Option<CertificateInfo>, SignatureError> {
    let signer = match certificate_pem {
        Some(pem) => {
            let certificates = certificate::from_pem(pem.as_bytes()).map_err(SignatureError::Certificate)?;
            Some(certificates.into_iter().next().expect("from_pem returns one at least"))
        }
        None => None,
    };
    let info = signer
        .as_ref()
        .map(|der| certificate::describe(der).map_err(SignatureError::Certificate))
        .transpose()?;
    match trust {
        Trust::Key(key) => {
            let entity = RawPublicKeyEntity::try_from(key)
                .map_err(|e| SignatureError::Certificate(format!("the key: {e:?}")))?;
            ALGORITHMS
                .iter()
                .any(|alg| entity.verify_signature(*alg, payload, signature).is_ok())
                .then_some(info)
                .ok_or(SignatureError::Invalid("the given key"))
        }
        Trust::Roots { roots, check_time } => {
            let der = signer.ok_or_else(|| SignatureError::Certificate("the package carries no certificate".into()))?;
            let chain = match chain_pem {
                Some(pem) => certificate::from_pem(pem.as_bytes())
                    .map_err(|e| SignatureError::Certificate(format!("chain: {e}")))?,
                None => Vec::new(),
            };
            let anchors: Vec<_> = roots
                .iter()
                .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
                .collect::<Result<_, _>>()
                .map_err(|e| SignatureError::Untrusted(format!("a CA root cannot be used: {e:?}")))?;
            let end_entity =
                EndEntityCert::try_from(&der).map_err(|e| SignatureError::Certificate(format!("{e:?}")))?;
            // Without time checks, any moment inside every validity period
            // will do: try each certificate's start and end.
            let mut times = vec![now];
            if !check_time {
                for der in std::iter::once(&der).chain(&chain).chain(roots) {
                    if let Ok(info) = certificate::describe(der) {
                        times.push(unix_time(info.not_before));
                        times.push(unix_time(info.not_after - 1));
                    }
                }
            }
            let mut result = Err(webpki::Error::UnknownIssuer);
            for time in times {
                result = end_entity
                    .verify_for_usage(
                        ALGORITHMS,
                        &anchors,
                        &chain,
                        time,
                        KeyUsage::required_if_present(CODE_SIGNING),
                        None,
                        None,
                    )
                    .map(drop);
                if result.is_ok() {
                    break;
                }
            }
            result.map_err(|e| SignatureError::Untrusted(untrusted_reason(&e)))?;
            ALGORITHMS
                .iter()
                .any(|alg| end_entity.verify_signature(*alg, payload, signature).is_ok())
                .then_some(info)
                .ok_or(SignatureError::Invalid("the signer's certificate"))
        }
    }
}

fn unix_time(seconds: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds.max(0) as u64))
}

fn untrusted_reason(error: &webpki::Error) -> String {
    match error {
        webpki::Error::CertExpired { .. } => "it has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "it is not valid yet".into(),
        webpki::Error::UnknownIssuer => "it is not issued by a trusted CA (or the chain is missing)".into(),
        // A trusted CA (or chain certificate) has the issuer's name, but
        // another key signed the certificate.
        webpki::Error::InvalidSignatureForPublicKey => {
            "it is not issued by a trusted CA (one of the same name did not sign it)".into()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => "its extended key usage does not allow code signing".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Sha256Digest {
        Sha256Digest::of(b"manifest")
    }

    #[test]
    fn our_payloads_parse_back() {
        let bytes = payload("com.example.app", &digest(), Map::new());
        let parsed = parse_payload(&bytes).unwrap();
        assert_eq!(parsed.reference, "com.example.app");
        assert_eq!(parsed.manifest, digest());
    }

    #[test]
    fn payloads_are_read_strictly() {
        let good = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"x"}},"image":{{"docker-manifest-digest":"{}"}},"type":"{PAYLOAD_TYPE}"}},"optional":{{}}}}"#,
            digest()
        );
        assert!(parse_payload(good.as_bytes()).is_ok());
        let bad = [
            good.replace(r#""optional":{}"#, r#""optional":null"#),
            good.replace(r#","optional":{}"#, ""),
            good.replace(PAYLOAD_TYPE, "atomic container signature"),
            good.replace(r#""docker-reference":"x""#, r#""docker-reference":1"#),
            good.replace(r#""docker-reference":"x""#, r#""docker-reference":"x","extra":"y""#),
            good.replace("sha256:", "sha512:"),
            good.replace(r#""optional":{}"#, r#""optional":{},"more":1"#),
            "[]".to_string(),
        ];
        for text in bad {
            assert!(parse_payload(text.as_bytes()).is_err(), "{text}");
        }
    }
}
