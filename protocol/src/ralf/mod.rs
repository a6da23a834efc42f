//! RALF packages ("bolt" packages): RDK's signed OCI-artifact app packages.
//!
//! A package is a `.ralf` file, a ZIP (or tar) holding an OCI image layout:
//! `oci-layout`, `index.json` and `blobs/sha256/*`. The index names a
//! package manifest (a config blob, [`config::PackageConfig`], and one
//! content layer: a tar, or an EROFS image with a dm-verity tree) and a
//! cosign-style signature manifest tagged `sha256-<package manifest>.sig`.
//!
//! The generator writes packages (`bundlegen-core`'s `package` module); the
//! generator's `verify-package`, `package-info` and the box's agent read them
//! through [`package::PackageFile`] and [`package::verify`], which make every
//! check ralfpack's verifier makes, in its order. Where RDK's tools disagree
//! with the spec, `docs/ralf.md` says what we do and why.

pub mod certificate;
pub mod config;
pub mod layout;
pub mod package;
pub mod signature;
pub mod verity;
pub mod version;
pub mod zip;

/// OCI media types and annotation keys packages use.
pub mod media {
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const ARTIFACT_TYPE: &str = "application/vnd.rdk.package+type";
    pub const CONFIG: &str = "application/vnd.rdk.package.config.v1+json";
    pub const CONTENT_PREFIX: &str = "application/vnd.rdk.package.content.layer.v1.";
    pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const SIGNATURE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const SIGNATURE_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    pub const TITLE: &str = "org.opencontainers.image.title";
    pub const ROOT_HASH: &str = "org.rdk.package.content.dmverity.roothash";
    pub const SALT: &str = "org.rdk.package.content.dmverity.salt";
    pub const OFFSET: &str = "org.rdk.package.content.dmverity.offset";
    pub const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
    pub const CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
    pub const CHAIN: &str = "dev.sigstore.cosign/chain";
}

/// `{"imageLayoutVersion":"1.0.0"}`, exactly (libralf compares the whole object).
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The EROFS compressions of content layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErofsCompression {
    Lz4,
    Zstd,
    None,
}

/// What a package's content layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentKind {
    Tar,
    TarGzip,
    TarZstd,
    /// An EROFS image with a dm-verity tree; `legacy` for the deprecated
    /// `…erofs+dmverity` type (lz4), which libralf 1.2 alone reads.
    Erofs {
        compression: ErofsCompression,
        legacy: bool,
    },
    /// No payload (metadata-only web apps).
    Empty,
}

impl ContentKind {
    pub fn from_media_type(media_type: &str) -> Option<ContentKind> {
        if media_type == media::EMPTY {
            return Some(ContentKind::Empty);
        }
        let erofs = |compression| ContentKind::Erofs {
            compression,
            legacy: false,
        };
        Some(match media_type.strip_prefix(media::CONTENT_PREFIX)? {
            "tar" => ContentKind::Tar,
            "tar+gzip" => ContentKind::TarGzip,
            "tar+zstd" => ContentKind::TarZstd,
            "erofs.lz4+dmverity" => erofs(ErofsCompression::Lz4),
            "erofs.zstd+dmverity" => erofs(ErofsCompression::Zstd),
            "erofs.nocmpr+dmverity" => erofs(ErofsCompression::None),
            "erofs+dmverity" => ContentKind::Erofs {
                compression: ErofsCompression::Lz4,
                legacy: true,
            },
            _ => return None,
        })
    }

    pub fn media_type(self) -> String {
        let suffix = match self {
            ContentKind::Empty => return media::EMPTY.to_string(),
            ContentKind::Tar => "tar",
            ContentKind::TarGzip => "tar+gzip",
            ContentKind::TarZstd => "tar+zstd",
            ContentKind::Erofs { legacy: true, .. } => "erofs+dmverity",
            ContentKind::Erofs { compression, .. } => match compression {
                ErofsCompression::Lz4 => "erofs.lz4+dmverity",
                ErofsCompression::Zstd => "erofs.zstd+dmverity",
                ErofsCompression::None => "erofs.nocmpr+dmverity",
            },
        };
        format!("{}{suffix}", media::CONTENT_PREFIX)
    }

    /// The content names `bundlegen package --content` and the service take.
    pub const NAMES: &'static [&'static str] =
        &["tar", "tar+gzip", "tar+zstd", "erofs.lz4", "erofs.zstd", "erofs.nocmpr"];

    /// `tar`, `tar+gzip`, `tar+zstd`, `erofs.lz4`, `erofs.zstd` or `erofs.nocmpr`.
    pub fn from_name(name: &str) -> Option<ContentKind> {
        let erofs = |compression| ContentKind::Erofs {
            compression,
            legacy: false,
        };
        Some(match name {
            "tar" => ContentKind::Tar,
            "tar+gzip" => ContentKind::TarGzip,
            "tar+zstd" => ContentKind::TarZstd,
            "erofs.lz4" => erofs(ErofsCompression::Lz4),
            "erofs.zstd" => erofs(ErofsCompression::Zstd),
            "erofs.nocmpr" => erofs(ErofsCompression::None),
            _ => return None,
        })
    }

    pub fn is_erofs(self) -> bool {
        matches!(self, ContentKind::Erofs { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_round_trip() {
        for kind in [
            ContentKind::Tar,
            ContentKind::TarGzip,
            ContentKind::TarZstd,
            ContentKind::Empty,
            ContentKind::Erofs {
                compression: ErofsCompression::Lz4,
                legacy: false,
            },
            ContentKind::Erofs {
                compression: ErofsCompression::Zstd,
                legacy: false,
            },
            ContentKind::Erofs {
                compression: ErofsCompression::None,
                legacy: false,
            },
            ContentKind::Erofs {
                compression: ErofsCompression::Lz4,
                legacy: true,
            },
        ] {
            assert_eq!(ContentKind::from_media_type(&kind.media_type()), Some(kind));
        }
        assert_eq!(
            ContentKind::from_media_type("application/vnd.rdk.package.content.layer.v1.zip"),
            None
        );
        assert_eq!(ContentKind::from_media_type("application/octet-stream"), None);
        for name in ContentKind::NAMES {
            let kind = ContentKind::from_name(name).unwrap();
            assert!(kind.media_type().contains(name), "{name}");
        }
    }
}
