//! What a person reads of an X.509 certificate: subject, issuer and validity,
//! from a small DER walk. Chains are *verified* by webpki (see
//! [`super::signature`]); this only describes them, for `package-info`, for
//! the signer the agent reports, and for the "expires in under 3 years"
//! check when signing.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A certificate's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// One DER element: tag and content.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads the element at the start of `input`; returns it and the rest.
fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count].iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((
        Element {
            tag,
            content: &rest[..length],
        },
        &rest[length..],
    ))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (e, rest) = element(input)?;
    (e.tag == tag).then_some((e.content, rest))
}

const SEQUENCE: u8 = 0x30;

fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        _ => None,
    }
}

/// `CN=..., O=...` from a Name (a sequence of sets of type-value pairs).
fn name(content: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    let mut sets = content;
    while !sets.is_empty() {
        let (set, rest) = expect(sets, 0x31)?;
        sets = rest;
        let mut pairs = set;
        while !pairs.is_empty() {
            let (pair, rest) = expect(pairs, SEQUENCE)?;
            pairs = rest;
            let (oid, value) = expect(pair, 0x06)?;
            let (value, _) = element(value)?;
            let text = match value.tag {
                0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8_lossy(value.content).into_owned(),
                0x1e => String::from_utf16_lossy(
                    &value
                        .content
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect::<Vec<_>>(),
                ),
                _ => continue,
            };
            if let Some(key) = attribute_name(oid) {
                parts.push(format!("{key}={text}"));
            }
        }
    }
    Some(parts.join(", "))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(e: &Element<'_>) -> Option<i64> {
    let text = std::str::from_utf8(e.content).ok()?.strip_suffix('Z')?;
    let (year, rest) = match e.tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().unwrap();
    let days = crate::civil::days_from_civil(year, field(0), field(2));
    Some(days * 86_400 + field(4) * 3600 + field(6) * 60 + field(8))
}

/// Describes a DER certificate.
pub fn describe(der: &[u8]) -> Result<CertificateInfo, String> {
    let parse = || -> Option<CertificateInfo> {
        let (certificate, _) = expect(der, SEQUENCE)?;
        let (tbs, _) = expect(certificate, SEQUENCE)?;
        let mut rest = tbs;
        let (first, after) = element(rest)?;
        if first.tag == 0xa0 {
            rest = after; // explicit version
        }
        let (_, rest) = expect(rest, 0x02)?; // serial
        let (_, rest) = expect(rest, SEQUENCE)?; // signature algorithm
        let (issuer, rest) = expect(rest, SEQUENCE)?;
        let (validity, rest) = expect(rest, SEQUENCE)?;
        let (subject, _) = expect(rest, SEQUENCE)?;
        let (not_before, after) = element(validity)?;
        let (not_after, _) = element(after)?;
        Some(CertificateInfo {
            subject: name(subject)?,
            issuer: name(issuer)?,
            not_before: time(&not_before)?,
            not_after: time(&not_after)?,
        })
    };
    parse().ok_or_else(|| "not a DER X.509 certificate this reader understands".into())
}

/// Every certificate in a PEM text, in order.
pub fn from_pem(text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certificates)
}

/// A DER certificate as PEM text.
pub fn to_pem(der: &[u8]) -> String {
    let body = crate::signature::base64_encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_generalized_times() {
        let utc = Element {
            tag: 0x17,
            content: b"491231235959Z",
        };
        assert_eq!(time(&utc), Some(2_524_607_999));
        let generalized = Element {
            tag: 0x18,
            content: b"20500101000000Z",
        };
        assert_eq!(time(&generalized), Some(2_524_608_000));
        let local = Element {
            tag: 0x17,
            content: b"491231235959+0100",
        };
        assert_eq!(time(&local), None);
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(describe(b"").is_err());
        assert!(describe(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(describe(&[0x30, 0x03, 0x30, 0x01]).is_err());
    }
}
