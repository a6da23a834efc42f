//! Target platforms and choosing a manifest from an image index.

use std::fmt;

/// The os/architecture/variant a bundle is made for, in OCI (GOARCH) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl fmt::Display for TargetPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

pub use bundlegen_protocol::probe::normalize_arch;

impl TargetPlatform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> TargetPlatform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        TargetPlatform {
            os: os.trim().to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// The platform of the machine running this program (skopeo's default).
    pub fn host() -> TargetPlatform {
        TargetPlatform::new("linux", std::env::consts::ARCH, None)
    }

    /// The name opkg packages use for it (`armv7`, `arm64`, `amd64`):
    /// architecture and variant run together.
    pub fn package_architecture(&self) -> String {
        format!("{}{}", self.architecture, self.variant.as_deref().unwrap_or(""))
    }

    /// How well an image built for `candidate` runs here: `None` if it does
    /// not, higher is better (exact variant, then unspecified, then an older
    /// ARM variant, which newer cores still run).
    pub fn match_score(&self, candidate: &TargetPlatform) -> Option<u8> {
        if candidate.os != self.os || candidate.architecture != self.architecture {
            return None;
        }
        match (&self.variant, &candidate.variant) {
            (want, have) if want == have => Some(3),
            (_, None) => Some(2),
            (None, Some(_)) => Some(1),
            (Some(want), Some(have)) if self.architecture == "arm" => {
                let level = |v: &str| v.trim_start_matches('v').parse::<u8>().ok();
                match (level(want), level(have)) {
                    (Some(want), Some(have)) if have < want => Some(1),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_spellings_map_to_oci_names() {
        let cases = [
            (("aarch64", None), ("arm64", None)),
            (("arm64", Some("v8")), ("arm64", None)),
            (("armv7", None), ("arm", Some("v7"))),
            (("arm", Some("v7")), ("arm", Some("v7"))),
            (("armhf", None), ("arm", Some("v7"))),
            (("arm", Some("V6")), ("arm", Some("v6"))),
            (("x86_64", None), ("amd64", None)),
            (("AMD64", None), ("amd64", None)),
            (("i686", None), ("386", None)),
            (("riscv64", None), ("riscv64", None)),
        ];
        for ((arch, variant), (want_arch, want_variant)) in cases {
            let (got_arch, got_variant) = normalize_arch(arch, variant);
            assert_eq!(
                (got_arch.as_str(), got_variant.as_deref()),
                (want_arch, want_variant),
                "{arch} {variant:?}"
            );
        }
    }

    #[test]
    fn scores_rank_exact_then_unspecified_then_older_arm() {
        let want = TargetPlatform::new("linux", "arm", Some("v7"));
        let score = |arch: &str, variant: Option<&str>| want.match_score(&TargetPlatform::new("linux", arch, variant));
        assert_eq!(score("arm", Some("v7")), Some(3));
        assert_eq!(score("arm", None), Some(2));
        assert_eq!(score("arm", Some("v6")), Some(1));
        assert_eq!(score("arm", Some("v8")), None);
        assert_eq!(score("arm64", None), None);
        assert_eq!(
            want.match_score(&TargetPlatform::new("windows", "arm", Some("v7"))),
            None
        );
        let any_arm64 = TargetPlatform::new("linux", "aarch64", None);
        assert_eq!(
            any_arm64.match_score(&TargetPlatform::new("linux", "arm64", Some("v8"))),
            Some(3)
        );
    }
}
