//! `docker save` archives (`docker-archive:`).

use std::sync::Arc;

use oci_spec::image::{Digest, ImageConfiguration};
use serde::Deserialize;

use super::blob::read_document;
use super::{ArchiveImage, Image, ImageError, ImageFiles, ImageReference, Layer, parse_digest};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The digest a `docker save` file name states: `<hex>.json` (older Docker) or
/// `blobs/sha256/<hex>` (Docker 25 and later).
fn digest_from_name(path: &str) -> Option<Digest> {
    let hex = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json"))
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))?;
    format!("sha256:{hex}").parse().ok()
}

/// Whether two image names are the same once Docker's defaults are filled in
/// (`app:1` is `docker.io/library/app:1`).
fn same_name(a: &str, b: &str) -> bool {
    let normal = |name: &str| {
        format!("docker://{name}")
            .parse::<ImageReference>()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| name.to_string())
    };
    a == b || normal(a) == normal(b)
}

pub fn open(files: Arc<dyn ImageFiles>, wanted: &ArchiveImage, reference: String) -> Result<Image, ImageError> {
    let (manifest_file, size) = files.open("manifest.json").map_err(|_| {
        ImageError::NotFound(format!(
            "{} is not a docker save archive (no manifest.json)",
            files.describe()
        ))
    })?;
    let what = format!("{}/manifest.json", files.describe());
    let entries: Vec<ArchiveManifestEntry> = read_document(manifest_file, None, Some(size), &what)?;
    let tags = || {
        entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entry = match wanted {
        ArchiveImage::Only => match entries.as_slice() {
            [only] => only,
            [] => return Err(ImageError::NotFound(format!("any image in {}", files.describe()))),
            _ => {
                return Err(ImageError::Reference {
                    input: reference,
                    reason: format!("the archive holds several images; name one of: {}", tags()),
                });
            }
        },
        ArchiveImage::Named(name) => entries
            .iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| same_name(t, name)))
            .ok_or_else(|| ImageError::NotFound(format!("image {name} in {}; it has: {}", files.describe(), tags())))?,
        ArchiveImage::Index(n) => entries.get(*n).ok_or_else(|| {
            ImageError::NotFound(format!("image @{n} in {} ({} images)", files.describe(), entries.len()))
        })?,
    };
    let config_digest = digest_from_name(&entry.config);
    let config_what = format!("configuration {} of {reference}", entry.config);
    let (config_file, size) = files.open(&entry.config)?;
    let config: ImageConfiguration = read_document(config_file, config_digest.as_ref(), Some(size), &config_what)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Store(format!(
            "{reference}: manifest.json lists {} layers but the configuration {} diff_ids",
            entry.layers.len(),
            diff_ids.len()
        )));
    }
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(path, diff_id)| {
            Ok(Layer {
                path: path.clone(),
                digest: digest_from_name(path),
                size: None,
                diff_id: parse_digest(diff_id, &reference)?,
                media_type: String::new(),
            })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(Image {
        reference,
        manifest_digest: None,
        config_digest,
        config,
        layers,
        files,
    })
}
