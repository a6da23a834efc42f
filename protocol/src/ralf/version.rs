//! Package versions (1 to 4 numeric parts, as the spec's schema says) and
//! the dependency constraints libralf understands: `""`, `*`, an exact
//! version, `=`, `>`, `>=`, `<`, `<=`, `~` and `^`. The spec allows more
//! npm forms (`1.2.x`, `a - b`, `||`); boxes cannot resolve them, so we
//! neither write nor accept them.
//!
//! `~` and `^` follow npm: `~1.2.3` is `>=1.2.3 <1.3.0`, `~1` is `<2.0.0`;
//! `^1.2.3` is `<2.0.0`, `^0.2.3` is `<0.3.0`, `^0.0.3` is `<0.0.4`. Missing
//! parts compare as 0.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A package version: up to four numeric parts; missing parts are 0, so
/// `1.2` equals `1.2.0`.
#[derive(Debug, Clone)]
pub struct Version {
    parts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not {what}: {reason}")]
pub struct VersionError {
    input: String,
    what: &'static str,
    reason: &'static str,
}

impl Version {
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }

    fn part(&self, index: usize) -> u64 {
        self.parts.get(index).copied().unwrap_or(0)
    }

    fn from_parts(parts: Vec<u64>) -> Version {
        Version { parts }
    }
}

impl FromStr for Version {
    type Err = VersionError;

    /// `MAJOR[.MINOR[.PATCH[.BUILD]]]`, no leading zeros, at most 9 digits each.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| VersionError {
            input: input.to_string(),
            what: "a package version (1 to 4 numbers joined by dots)",
            reason,
        };
        let pieces: Vec<&str> = input.split('.').collect();
        if pieces.len() > 4 {
            return Err(error("more than 4 parts"));
        }
        let mut parts = Vec::with_capacity(pieces.len());
        for piece in pieces {
            if piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error("a part is not a number"));
            }
            if piece.len() > 9 {
                return Err(error("a part has more than 9 digits"));
            }
            if piece.len() > 1 && piece.starts_with('0') {
                return Err(error("a part has a leading zero"));
            }
            parts.push(piece.parse().unwrap());
        }
        Ok(Version { parts })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.parts.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (0..4)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A dependency's version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    Any,
    Exact(Version),
    Greater(Version),
    GreaterOrEqual(Version),
    Less(Version),
    LessOrEqual(Version),
    /// `~`: the same release line (minor, or major if only that is given).
    Tilde(Version),
    /// `^`: no change in the leftmost non-zero part.
    Caret(Version),
}

impl FromStr for Constraint {
    type Err = VersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        if text.is_empty() || text == "*" {
            return Ok(Constraint::Any);
        }
        let version = |rest: &str| {
            rest.trim().parse::<Version>().map_err(|_| VersionError {
                input: input.to_string(),
                what: "a dependency constraint boxes understand",
                reason: "use *, a version, or one of = > >= < <= ~ ^ before a version",
            })
        };
        Ok(if let Some(rest) = text.strip_prefix(">=") {
            Constraint::GreaterOrEqual(version(rest)?)
        } else if let Some(rest) = text.strip_prefix("<=") {
            Constraint::LessOrEqual(version(rest)?)
        } else if let Some(rest) = text.strip_prefix('>') {
            Constraint::Greater(version(rest)?)
        } else if let Some(rest) = text.strip_prefix('<') {
            Constraint::Less(version(rest)?)
        } else if let Some(rest) = text.strip_prefix('=') {
            Constraint::Exact(version(rest)?)
        } else if let Some(rest) = text.strip_prefix('~') {
            Constraint::Tilde(version(rest)?)
        } else if let Some(rest) = text.strip_prefix('^') {
            Constraint::Caret(version(rest)?)
        } else {
            Constraint::Exact(version(text)?)
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Any => f.write_str("*"),
            Constraint::Exact(v) => write!(f, "{v}"),
            Constraint::Greater(v) => write!(f, ">{v}"),
            Constraint::GreaterOrEqual(v) => write!(f, ">={v}"),
            Constraint::Less(v) => write!(f, "<{v}"),
            Constraint::LessOrEqual(v) => write!(f, "<={v}"),
            Constraint::Tilde(v) => write!(f, "~{v}"),
            Constraint::Caret(v) => write!(f, "^{v}"),
        }
    }
}

impl Constraint {
    pub fn matches(&self, version: &Version) -> bool {
        match self {
            Constraint::Any => true,
            Constraint::Exact(v) => version == v,
            Constraint::Greater(v) => version > v,
            Constraint::GreaterOrEqual(v) => version >= v,
            Constraint::Less(v) => version < v,
            Constraint::LessOrEqual(v) => version <= v,
            Constraint::Tilde(v) => {
                // ~1 → <2; ~1.2 and ~1.2.3 → <1.3.
                let upper = if v.parts.len() == 1 {
                    Version::from_parts(vec![v.part(0) + 1])
                } else {
                    Version::from_parts(vec![v.part(0), v.part(1) + 1])
                };
                version >= v && version < &upper
            }
            Constraint::Caret(v) => {
                // Bump the leftmost non-zero part among those given.
                let given = v.parts.len();
                let bump = (0..given).find(|&i| v.part(i) != 0).unwrap_or(given - 1);
                let mut upper: Vec<u64> = (0..bump).map(|i| v.part(i)).collect();
                upper.push(v.part(bump) + 1);
                version >= v && version < &Version::from_parts(upper)
            }
        }
    }

    /// The highest of `available` this constraint accepts.
    pub fn best<'a>(&self, available: impl IntoIterator<Item = &'a Version>) -> Option<&'a Version> {
        available.into_iter().filter(|v| self.matches(v)).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn versions_follow_the_schema() {
        for good in ["0", "1.2", "1.2.3", "1.2.3.4", "999999999.0"] {
            assert!(good.parse::<Version>().is_ok(), "{good}");
        }
        for bad in ["", "1.", ".1", "01", "1.02", "1.2.3.4.5", "1.2-rc1", "1234567890", "v1"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("1.2"), v("1.2"));
        assert_eq!(v("1.2").cmp(&v("1.2.0")), Ordering::Equal);
    }

    #[test]
    fn constraints_as_a_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "0.0.1", true),
            ("", "7", true),
            ("1.2.3", "1.2.3", true),
            ("1.2.3", "1.2.4", false),
            ("=1.2", "1.2.0", true),
            (">1.2", "1.2.1", true),
            (">1.2", "1.2", false),
            (">=1.2", "1.2", true),
            ("<2", "1.99", true),
            ("<2", "2.0", false),
            ("<=2", "2.0.0", true),
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("~1.2.3", "1.2.2", false),
            ("~1", "1.9.9", true),
            ("~1", "2.0", false),
            ("^1.2.3", "1.9.0", true),
            ("^1.2.3", "2.0.0", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^1", "1.5", true),
            ("^1", "2", false),
        ];
        for (constraint, version, expected) in table {
            let parsed: Constraint = constraint.parse().unwrap();
            assert_eq!(parsed.matches(&v(version)), *expected, "{constraint} vs {version}");
        }
        for bad in ["1.2.x", "1 - 2", "^1 || ^2", "latest", ">=a"] {
            assert!(bad.parse::<Constraint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_highest_satisfying_version_wins() {
        let available = [v("1.0"), v("1.4.2"), v("2.0"), v("1.4.10")];
        let constraint: Constraint = "^1.0".parse().unwrap();
        assert_eq!(constraint.best(&available), Some(&v("1.4.10")));
        assert_eq!("^3".parse::<Constraint>().unwrap().best(&available), None);
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(parts in proptest::collection::vec(0u64..1000, 1..=4), op in 0usize..8) {
            let version = Version::from_parts(parts);
            let text = ["", "=", ">", ">=", "<", "<=", "~", "^"][op];
            let constraint: Constraint = format!("{text}{version}").parse().unwrap();
            let again: Constraint = constraint.to_string().parse().unwrap();
            proptest::prop_assert_eq!(constraint.matches(&version), again.matches(&version));
            proptest::prop_assert_eq!(version.to_string().parse::<Version>().unwrap(), version);
        }
    }
}
