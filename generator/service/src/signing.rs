//! The service's signing key (ed25519, PKCS#8 on disk). What is signed and
//! how a box verifies it: [`bundlegen_protocol::signature`].

use std::path::Path;

use bundlegen_protocol::signature::{SignedIdentity, base64_encode};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing key {path}: {message}")]
    Key { path: String, message: String },
}

pub struct Signer {
    key: Ed25519KeyPair,
}

impl Signer {
    /// Loads the PKCS#8 key at `path`, or creates one there (mode 0600).
    pub fn load_or_create(path: &Path) -> Result<Signer, SigningError> {
        let error = |message: String| SigningError::Key {
            path: path.display().to_string(),
            message,
        };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| error("cannot generate a key".into()))?;
                bundlegen_protocol::fsutil::write_file_atomic(path, document.as_ref(), 0o600)
                    .map_err(|e| error(e.to_string()))?;
                document.as_ref().to_vec()
            }
            Err(e) => return Err(error(e.to_string())),
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| error(format!("not an ed25519 PKCS#8 key: {e}")))?;
        Ok(Signer { key })
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The base64 signature of an identity.
    pub fn sign(&self, identity: &SignedIdentity) -> String {
        base64_encode(self.key.sign(identity.message().as_bytes()).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use bundlegen_protocol::signature::verify;

    use super::*;

    fn identity(sha256: &str) -> SignedIdentity<'_> {
        SignedIdentity {
            sha256,
            app_id: "com.rdk.app",
            app_version: "1.0.0",
            platform: "rpi3",
            format: "tar.gz",
        }
    }

    #[test]
    fn signatures_verify_and_cover_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.p8");
        let signer = Signer::load_or_create(&path).unwrap();
        let again = Signer::load_or_create(&path).unwrap();
        assert_eq!(signer.public_key(), again.public_key(), "the key is kept");
        let signature = signer.sign(&identity("ab12"));
        assert!(verify(signer.public_key(), &identity("ab12"), &signature));
        assert!(!verify(signer.public_key(), &identity("ab13"), &signature));
        let other_platform = SignedIdentity {
            platform: "rpi4",
            ..identity("ab12")
        };
        assert!(!verify(signer.public_key(), &other_platform, &signature));
        assert!(!verify(signer.public_key(), &identity("ab12"), "not base64!"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
