//! The signer of packages: a private key (PEM: PKCS#8, SEC1 or PKCS#1;
//! ECDSA P-256 or RSA) and its certificate and chain, or all three in one
//! PKCS#12 file, checked to belong together and, like ralfpack, to stay
//! valid for 3 more years unless told.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bundlegen_protocol::ralf::certificate;
use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;

use super::pkcs12;

/// How long a signing certificate must still be valid (3 years).
pub const MIN_REMAINING: i64 = 3 * 365 * 86_400 + 86_400;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Pkcs12 { path: PathBuf, reason: String },
    #[error("{key} is not the key of {certificate}")]
    Mismatch { key: PathBuf, certificate: PathBuf },
    #[error(
        "{path}: the certificate expires in {days} days; packages signed with it stop installing then (pass --skip-certificate-expiry-check to sign anyway)"
    )]
    ExpiresSoon { path: PathBuf, days: i64 },
    #[error("signing failed: {0}")]
    Sign(String),
}

pub struct SigningIdentity {
    key: Arc<dyn SigningKey>,
    scheme: SignatureScheme,
    certificate: Option<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// Where the signing material is.
#[derive(Debug, Clone, Default)]
pub struct SigningFiles {
    pub key: PathBuf,
    /// None: a bare key, no certificate (verifiable with the public key only).
    pub certificate: Option<PathBuf>,
    pub chain: Vec<PathBuf>,
    /// Sign with a certificate that expires within 3 years.
    pub skip_expiry_check: bool,
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, SignError> {
    let text = std::fs::read(path).map_err(|e| SignError::Certificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    certificate::from_pem(&text).map_err(|reason| SignError::Certificate {
        path: path.to_path_buf(),
        reason,
    })
}

impl SigningIdentity {
    /// Loads and checks the signing material; `now` is seconds since the epoch.
    pub fn load(files: &SigningFiles, now: i64) -> Result<SigningIdentity, SignError> {
        let der = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| SignError::Key {
            path: files.key.clone(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let mut identity = SigningIdentity::from_key(&der, &files.key)?;
        let Some(path) = &files.certificate else {
            return Ok(identity);
        };
        let certificate = certificates(path)?.remove(0);
        if !identity.is_key_of(&certificate, path)? {
            return Err(SignError::Mismatch {
                key: files.key.clone(),
                certificate: path.clone(),
            });
        }
        let mut chain = Vec::new();
        for file in &files.chain {
            chain.extend(certificates(file)?);
        }
        identity.certify(certificate, chain, path, files.skip_expiry_check, now)?;
        Ok(identity)
    }

    /// Loads the key, its certificate and the rest of the chain from a
    /// PKCS#12 file (decrypted by `openssl`, in memory only): the
    /// certificate is the one the key belongs to, the others are the chain.
    pub fn load_pkcs12(
        path: &Path,
        passphrase: &str,
        skip_expiry_check: bool,
        now: i64,
    ) -> Result<SigningIdentity, SignError> {
        let pkcs12_error = |reason: String| SignError::Pkcs12 {
            path: path.to_path_buf(),
            reason,
        };
        let pem = pkcs12::to_pem(path, passphrase).map_err(pkcs12_error)?;
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| pkcs12_error("holds no private key".into()))?;
        let mut identity = SigningIdentity::from_key(&der, path)?;
        let mut chain = certificate::from_pem(&pem).unwrap_or_default();
        let leaf = chain
            .iter()
            .position(|candidate| matches!(identity.is_key_of(candidate, path), Ok(true)))
            .ok_or_else(|| pkcs12_error("holds no certificate of its private key".into()))?;
        let certificate = chain.remove(leaf);
        identity.certify(certificate, chain, path, skip_expiry_check, now)?;
        Ok(identity)
    }

    /// A bare key: ECDSA P-256 or RSA, the schemes packages are signed with.
    fn from_key(der: &PrivateKeyDer<'_>, path: &Path) -> Result<SigningIdentity, SignError> {
        let key_error = |reason: String| SignError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let key = rustls::crypto::ring::sign::any_supported_type(der).map_err(|e| key_error(e.to_string()))?;
        let scheme = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
        .into_iter()
        .find(|scheme| key.choose_scheme(&[*scheme]).is_some())
        .ok_or_else(|| key_error("not an ECDSA P-256 or RSA key (packages are signed with one of those)".into()))?;
        Ok(SigningIdentity {
            key,
            scheme,
            certificate: None,
            chain: Vec::new(),
        })
    }

    /// Whether the key is `certificate`'s: sign something and check it.
    fn is_key_of(&self, certificate: &CertificateDer<'_>, path: &Path) -> Result<bool, SignError> {
        let probe = b"bundlegen signing key check";
        let signature = self.sign(probe)?;
        let end_entity = webpki::EndEntityCert::try_from(certificate).map_err(|e| SignError::Certificate {
            path: path.to_path_buf(),
            reason: format!("{e:?}"),
        })?;
        Ok([
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        ]
        .iter()
        .any(|alg| end_entity.verify_signature(*alg, probe, &signature).is_ok()))
    }

    /// Attaches the key's certificate once it is known to stay valid long enough.
    fn certify(
        &mut self,
        certificate: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        path: &Path,
        skip_expiry_check: bool,
        now: i64,
    ) -> Result<(), SignError> {
        let info = certificate::describe(&certificate).map_err(|reason| SignError::Certificate {
            path: path.to_path_buf(),
            reason,
        })?;
        if !skip_expiry_check && info.not_after - now < MIN_REMAINING {
            return Err(SignError::ExpiresSoon {
                path: path.to_path_buf(),
                days: (info.not_after - now) / 86_400,
            });
        }
        self.certificate = Some(certificate);
        self.chain = chain;
        Ok(())
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or_else(|| SignError::Sign("the key no longer offers its scheme".into()))?;
        signer.sign(message).map_err(|e| SignError::Sign(e.to_string()))
    }

    /// The certificate as PEM (the signature layer's annotation).
    pub fn certificate_pem(&self) -> Option<String> {
        self.certificate.as_ref().map(|c| certificate::to_pem(c))
    }

    /// The chain as concatenated PEM.
    pub fn chain_pem(&self) -> Option<String> {
        (!self.chain.is_empty()).then(|| self.chain.iter().map(|c| certificate::to_pem(c)).collect())
    }
}
