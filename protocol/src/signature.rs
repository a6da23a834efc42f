//! Bundle signatures: ed25519 over a bundle's sha256 and identity, so a box
//! can check that what it downloaded is what the generator service built,
//! for its app and platform, whoever served the bytes (a registry, a CDN).
//!
//! The signed message is UTF-8 text, one field per line:
//!
//! ```text
//! bundlegen-bundle-v1
//! sha256:<hex of the archive>
//! app:<app id>
//! version:<app version, or empty>
//! platform:<platform name>
//! format:<tar.gz | tar.zst | ipk>
//! ```
//!
//! with a final newline. Signatures are base64 (standard alphabet, padded);
//! the service publishes its public key as 32 raw bytes in base64 and hex.

use ring::signature::{ED25519, UnparsedPublicKey};

/// What a bundle's signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdentity<'a> {
    pub sha256: &'a str,
    pub app_id: &'a str,
    pub app_version: &'a str,
    pub platform: &'a str,
    pub format: &'a str,
}

impl SignedIdentity<'_> {
    pub fn message(&self) -> String {
        format!(
            "bundlegen-bundle-v1\nsha256:{}\napp:{}\nversion:{}\nplatform:{}\nformat:{}\n",
            self.sha256, self.app_id, self.app_version, self.platform, self.format
        )
    }
}

/// Checks a base64 signature against a raw public key (what a box does).
pub fn verify(public_key: &[u8], identity: &SignedIdentity, signature: &str) -> bool {
    let Some(signature) = base64_decode(signature) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(identity.message().as_bytes(), &signature)
        .is_ok()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_like_the_standard_alphabet() {
        for (raw, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), raw);
        }
        assert_eq!(base64_decode("a!b"), None);
    }

    #[test]
    fn the_message_lists_every_field() {
        let identity = SignedIdentity {
            sha256: "ab",
            app_id: "com.rdk.app",
            app_version: "",
            platform: "rpi3",
            format: "ipk",
        };
        assert_eq!(
            identity.message(),
            "bundlegen-bundle-v1\nsha256:ab\napp:com.rdk.app\nversion:\nplatform:rpi3\nformat:ipk\n"
        );
    }
}
