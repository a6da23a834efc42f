//! OCI image layouts (`oci:` directories and `oci-archive:` tars).

use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex};

use super::blob::read_document;
use super::{
    Document, INDEX_TYPES, Image, ImageError, ImageFiles, Selector, TargetPlatform, blob_path, choose_manifest,
    manifest_layers,
};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Nested indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 4;

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

/// Opens the image `selector` names in the layout `files`.
pub fn open(
    files: Arc<dyn ImageFiles>,
    selector: &Selector,
    platform: &TargetPlatform,
    reference: String,
) -> Result<Image, ImageError> {
    if !files.exists("oci-layout") {
        return Err(ImageError::NotFound(format!(
            "{} is not an OCI image layout (no oci-layout file)",
            files.describe()
        )));
    }
    let (index_file, size) = files.open("index.json")?;
    let what = format!("{}/index.json", files.describe());
    let (index, _): (ImageIndex, _) = read_document(index_file, None, Some(size), &what)?;
    let descriptor = match selector {
        Selector::Tag(tag) => {
            let tagged: Vec<&Descriptor> = index.manifests().iter().filter(|d| ref_name(d) == Some(tag)).collect();
            match tagged.as_slice() {
                [] if index.manifests().len() == 1 && ref_name(&index.manifests()[0]).is_none() => {
                    index.manifests()[0].clone()
                }
                [] => {
                    let mut names: Vec<&str> = index.manifests().iter().filter_map(ref_name).collect();
                    names.sort_unstable();
                    names.dedup();
                    return Err(ImageError::NotFound(format!(
                        "tag {tag:?} in OCI layout {}; it has: {}",
                        files.describe(),
                        if names.is_empty() {
                            "no tags".to_string()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
                [only] => (*only).clone(),
                // Several manifests under one name: one per platform.
                many => choose_manifest(many.iter().copied(), platform, &reference)?.clone(),
            }
        }
        Selector::Digest(digest) => match index.manifests().iter().find(|d| d.digest() == digest) {
            Some(descriptor) => descriptor.clone(),
            None => {
                return Err(ImageError::NotFound(format!(
                    "manifest {digest} in OCI layout {}",
                    files.describe()
                )));
            }
        },
    };
    resolve(files, &descriptor, platform, reference, 0)
}

fn resolve(
    files: Arc<dyn ImageFiles>,
    descriptor: &Descriptor,
    platform: &TargetPlatform,
    reference: String,
    depth: usize,
) -> Result<Image, ImageError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImageError::Unsupported(format!(
            "{reference}: image indexes nested too deep"
        )));
    }
    let digest = descriptor.digest();
    let what = format!("manifest {digest} of {reference}");
    let (file, _) = files.open(&blob_path(digest))?;
    let (_, bytes): (serde_json::Value, _) = read_document(file, Some(digest), Some(descriptor.size()), &what)?;
    let media_type = descriptor.media_type().to_string();
    match Document::parse(&bytes, &what)? {
        Document::Index(index) => {
            let chosen = choose_manifest(index.manifests(), platform, &reference)?.clone();
            resolve(files, &chosen, platform, reference, depth + 1)
        }
        Document::Manifest(_) if INDEX_TYPES.contains(&media_type.as_str()) => Err(ImageError::Store(format!(
            "{what}: the descriptor says {media_type} but the content is a manifest"
        ))),
        Document::Manifest(manifest) => {
            let config_descriptor = manifest.config();
            let config_what = format!("configuration {} of {reference}", config_descriptor.digest());
            let (config_file, _) = files.open(&blob_path(config_descriptor.digest()))?;
            let (config, _): (ImageConfiguration, _) = read_document(
                config_file,
                Some(config_descriptor.digest()),
                Some(config_descriptor.size()),
                &config_what,
            )?;
            let layers = manifest_layers(&manifest, &config, &reference)?;
            Ok(Image {
                reference,
                manifest_digest: Some(digest.clone()),
                config_digest: Some(config_descriptor.digest().clone()),
                config,
                layers,
                files,
            })
        }
    }
}
