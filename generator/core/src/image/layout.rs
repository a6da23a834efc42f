//! OCI image layouts (`oci:` directories and `oci-archive:` tars).

use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex};

use super::blob::read_document;
use super::resolve::{StoredDocuments, choose_manifest, resolve};
use super::{Image, ImageError, ImageFiles, Selector, TargetPlatform};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

/// Opens the image `selector` names in the layout `files`.
pub async fn open(
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
    let index: ImageIndex = read_document(index_file, None, Some(size), &what)?;
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
    let resolved = resolve(&StoredDocuments(files.as_ref()), descriptor, platform, &reference).await?;
    Ok(Image::new(reference, resolved, files))
}
