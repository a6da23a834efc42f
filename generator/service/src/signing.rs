//! The service's signing key (ed25519, PKCS#8 on disk). What is signed and
//! how a box verifies it: [`bundlegen_protocol::signature`].

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bundlegen_protocol::signature::{SignedIdentity, base64_encode};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The file is not a key we can use: a configuration to fix.
    #[error("signing key {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("signing key {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Signer {
    key: Ed25519KeyPair,
}

impl Signer {
    /// Reads an ed25519 key: PKCS#8, DER or PEM (as `bundlegen key
    /// generate` and `openssl genpkey -algorithm ed25519` write it).
    pub fn load(path: &Path) -> Result<Signer, SigningError> {
        let bytes = std::fs::read(path).map_err(|source| SigningError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Signer::from_bytes(&bytes).map_err(|message| SigningError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Signer, String> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            match PrivateKeyDer::from_pem_slice(bytes) {
                Ok(PrivateKeyDer::Pkcs8(der)) => der.secret_pkcs8_der().to_vec(),
                Ok(_) => return Err("a PEM key, but not PKCS#8 (BEGIN PRIVATE KEY)".into()),
                Err(e) => return Err(format!("not a PEM private key: {e}")),
            }
        } else {
            bytes.to_vec()
        };
        // openssl writes PKCS#8 v1 (no public key); ring's own, v2.
        let key =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| format!("not an ed25519 PKCS#8 key: {e}"))?;
        Ok(Signer { key })
    }

    /// Makes a new key at `path` (mode 0600); an existing file is never
    /// replaced.
    pub fn generate(path: &Path) -> Result<Signer, SigningError> {
        let io = |source| SigningError::Io {
            path: path.display().to_string(),
            source,
        };
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| io(std::io::Error::other("the system's random number generator failed")))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(document.as_ref())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Signer::from_bytes(document.as_ref()).map_err(|message| SigningError::Invalid {
            path: path.display().to_string(),
            message,
        })
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
        let signer = Signer::generate(&path).unwrap();
        let again = Signer::load(&path).unwrap();
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

    #[test]
    fn keys_from_openssl_are_taken_and_anything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("openssl.pem");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()
            .expect("openssl runs");
        assert!(made.success());
        let signer = Signer::load(&pem).unwrap();
        let der = dir.path().join("openssl.der");
        let converted = std::process::Command::new("openssl")
            .args(["pkey", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .status()
            .expect("openssl runs");
        assert!(converted.success());
        assert_eq!(Signer::load(&der).unwrap().public_key(), signer.public_key());

        let rsa = dir.path().join("rsa.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "rsa",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
                "-out",
            ])
            .arg(&rsa)
            .output()
            .expect("openssl runs");
        assert!(made.status.success());
        for (file, content) in [("garbage", &b"not a key"[..]), ("empty", b"")] {
            std::fs::write(dir.path().join(file), content).unwrap();
        }
        for bad in ["rsa.pem", "garbage", "empty"] {
            assert!(
                matches!(Signer::load(&dir.path().join(bad)), Err(SigningError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Signer::load(&dir.path().join("missing")),
            Err(SigningError::Io { .. })
        ));
        // A key is never replaced by a new one.
        assert!(matches!(Signer::generate(&pem), Err(SigningError::Io { .. })));
        assert_eq!(Signer::load(&pem).unwrap().public_key(), signer.public_key());
    }
}
