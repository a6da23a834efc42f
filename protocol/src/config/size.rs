//! Sizes as BundleGen writes them: `100M`, `100MB`, `100MiB`, `1.5G`, `4096`.
//!
//! BundleGen parses them with `humanfriendly.parse_size(binary=True)`: every
//! unit is a power of 1024, and a bare number counts bytes (so `"23"` is 23
//! bytes, not 23 MiB).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
        for (unit, factor) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a size (like 100M, 1.5G or a number of bytes)");
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit.trim_end_matches('s');
        let power = match unit.chars().next() {
            None | Some('b') => 0,
            Some('k') => 1,
            Some('m') => 2,
            Some('g') => 3,
            Some('t') => 4,
            Some('p') => 5,
            Some('e') => 6,
            _ => return Err(bad()),
        };
        // Only the prefix, the prefix + "b", the binary symbol or a unit name.
        let names = [
            "", "kilobyte", "megabyte", "gigabyte", "terabyte", "petabyte", "exabyte",
        ];
        let binary_names = [
            "", "kibibyte", "mebibyte", "gibibyte", "tebibyte", "pebibyte", "exbibyte",
        ];
        let ok = unit.is_empty()
            || unit == "b"
            || unit == "byte"
            || (unit.len() == 1)
            || unit.len() == 2 && unit.ends_with('b')
            || unit.len() == 3 && unit.ends_with("ib")
            || unit == names[power]
            || unit == binary_names[power];
        if !ok {
            return Err(bad());
        }
        let bytes = number * 1024f64.powi(power as i32);
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Size(bytes as u64))
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A byte count or a size text, as the files accept it.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes: a number, or a text with a binary unit such as \"512M\", \"1.5G\", \"100MiB\" or \"2 megabytes\".",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9.]+\\s*[A-Za-z ]*$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_humanfriendly_binary() {
        let cases = [
            ("100M", 104_857_600),
            ("100MB", 104_857_600),
            ("100MiB", 104_857_600),
            ("100 mb", 104_857_600),
            ("128M", 134_217_728),
            ("4096M", 4_294_967_296),
            ("1.5G", 1_610_612_736),
            ("23", 23),
            ("512B", 512),
            ("2 megabytes", 2_097_152),
            ("1k", 1024),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)), "{text}");
        }
        for bad in ["", "M", "ten", "10X", "10 lightyears", "-5M"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }

    #[test]
    fn prints_the_largest_exact_unit() {
        assert_eq!(Size(104_857_600).to_string(), "100M");
        assert_eq!(Size(1536).to_string(), "1536");
        assert_eq!(Size(2048).to_string(), "2K");
    }
}
