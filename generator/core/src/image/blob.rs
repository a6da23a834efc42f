//! Reading blobs with their digest and size checked.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

use super::ImageError;

/// Largest JSON document (index, manifest, config) read into memory.
pub const MAX_DOCUMENT_BYTES: u64 = 8 << 20;

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_digest(digest: &Digest) -> Result<Hasher, ImageError> {
        match digest.algorithm() {
            DigestAlgorithm::Sha256 => Ok(Hasher::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Ok(Hasher::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Ok(Hasher::Sha512(sha2::Sha512::new())),
            other => Err(ImageError::Unsupported(format!("digest algorithm {other} of {digest}"))),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish_hex(&mut self) -> String {
        match self {
            Hasher::Sha256(h) => bundlegen_protocol::digest::to_hex(&h.finalize_reset()),
            Hasher::Sha384(h) => bundlegen_protocol::digest::to_hex(&h.finalize_reset()),
            Hasher::Sha512(h) => bundlegen_protocol::digest::to_hex(&h.finalize_reset()),
        }
    }
}

/// Incremental digest and size check of a blob.
pub struct BlobCheck {
    hasher: Hasher,
    expected: Digest,
    expected_size: Option<u64>,
    seen: u64,
}

impl BlobCheck {
    pub fn new(expected: &Digest, expected_size: Option<u64>) -> Result<BlobCheck, ImageError> {
        Ok(BlobCheck {
            hasher: Hasher::for_digest(expected)?,
            expected: expected.clone(),
            expected_size,
            seen: 0,
        })
    }

    /// Adds data; fails as soon as there is more than the expected size.
    pub fn update(&mut self, data: &[u8]) -> Result<(), String> {
        self.hasher.update(data);
        self.seen += data.len() as u64;
        match self.expected_size {
            Some(size) if self.seen > size => Err(format!("more data than the {size} bytes its descriptor announces")),
            _ => Ok(()),
        }
    }

    /// Checks size and digest once all data was seen.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(size) = self.expected_size
            && self.seen != size
        {
            return Err(format!("{} bytes, but its descriptor says {size}", self.seen));
        }
        let actual = self.hasher.finish_hex();
        if actual != self.expected.digest() {
            return Err(format!(
                "digest mismatch: expected {}, content is {}:{actual}",
                self.expected,
                self.expected.algorithm()
            ));
        }
        Ok(())
    }
}

/// Passes data through while hashing it; at EOF, fails with `InvalidData` unless
/// the digest (and size, if known) match. Reading past the expected size fails
/// at once, so a lying server or archive cannot feed more than announced.
pub struct VerifiedReader<R> {
    inner: R,
    check: BlobCheck,
    what: String,
    verified: Arc<AtomicBool>,
}

impl<R: Read> VerifiedReader<R> {
    pub fn new(
        inner: R,
        expected: &Digest,
        expected_size: Option<u64>,
        what: impl Into<String>,
    ) -> Result<Self, ImageError> {
        Ok(VerifiedReader {
            inner,
            check: BlobCheck::new(expected, expected_size)?,
            what: what.into(),
            verified: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that turns true once the whole blob was read and matched.
    pub fn verified_flag(&self) -> Arc<AtomicBool> {
        self.verified.clone()
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fail =
            |what: &str, message: String| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {message}"));
        let got = self.inner.read(buf)?;
        if got > 0 {
            self.check.update(&buf[..got]).map_err(|m| fail(&self.what, m))?;
            return Ok(got);
        }
        if buf.is_empty() || self.verified.load(Ordering::Relaxed) {
            return Ok(0);
        }
        self.check.finish().map_err(|m| fail(&self.what, m))?;
        self.verified.store(true, Ordering::Relaxed);
        Ok(0)
    }
}

/// Reads a whole (small) document, verified when `digest` is given.
pub fn read_verified(
    reader: impl Read,
    digest: Option<&Digest>,
    size: Option<u64>,
    what: &str,
) -> Result<Vec<u8>, ImageError> {
    if let Some(size) = size
        && size > MAX_DOCUMENT_BYTES
    {
        return Err(ImageError::Unsupported(format!(
            "{what} is {size} bytes, more than the {MAX_DOCUMENT_BYTES} accepted"
        )));
    }
    let mut bytes = Vec::new();
    let limited = reader.take(MAX_DOCUMENT_BYTES + 1);
    let read = match digest {
        Some(digest) => VerifiedReader::new(limited, digest, size, what)?.read_to_end(&mut bytes),
        None => {
            let mut limited = limited;
            limited.read_to_end(&mut bytes)
        }
    };
    read.map_err(|source| ImageError::Io {
        what: what.to_string(),
        source,
    })?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ImageError::Unsupported(format!(
            "{what} is larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Reads a whole (small) JSON document, verified when `digest` is given,
/// and parses it.
pub fn read_document<T: serde::de::DeserializeOwned>(
    reader: impl Read,
    digest: Option<&Digest>,
    size: Option<u64>,
    what: &str,
) -> Result<T, ImageError> {
    let bytes = read_verified(reader, digest, size, what)?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn digest_of(data: &[u8]) -> Digest {
        Digest::from_str(&bundlegen_protocol::digest::Sha256Digest::of(data).to_string()).unwrap()
    }

    fn read_all(reader: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn accepts_matching_content_and_sets_the_flag() {
        let data = b"layer data";
        let mut reader = VerifiedReader::new(&data[..], &digest_of(data), Some(10), "blob").unwrap();
        let flag = reader.verified_flag();
        assert_eq!(read_all(&mut reader).unwrap(), data);
        assert!(flag.load(Ordering::Relaxed));
    }

    #[test]
    fn rejects_wrong_digest_short_and_long_content() {
        let data = b"layer data";
        let cases: [(&[u8], Option<u64>, &str); 3] = [
            (b"layer dat!", Some(10), "digest mismatch"),
            (b"layer", Some(10), "descriptor says 10"),
            (b"layer data and more", Some(10), "more data than the 10 bytes"),
        ];
        for (content, size, message) in cases {
            let mut reader = VerifiedReader::new(content, &digest_of(data), size, "blob x").unwrap();
            let flag = reader.verified_flag();
            let err = read_all(&mut reader).unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
            assert!(err.to_string().starts_with("blob x"), "{err}");
            assert!(!flag.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn sha512_digests_are_supported() {
        use sha2::Digest as _;
        let data = b"abc";
        let hex = bundlegen_protocol::digest::to_hex(&sha2::Sha512::digest(data));
        let digest = Digest::from_str(&format!("sha512:{hex}")).unwrap();
        let mut reader = VerifiedReader::new(&data[..], &digest, None, "blob").unwrap();
        assert_eq!(read_all(&mut reader).unwrap(), data);
    }
}
