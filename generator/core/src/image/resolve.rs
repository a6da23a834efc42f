//! From stored content to an image, the same way for every source: a
//! descriptor is followed through image indexes (choosing the platform's
//! manifest) to a manifest, whose configuration and layers make the image.
//! Sources differ only in how they hand over a verified document
//! ([`Documents`]): read from a layout or archive, or fetched from a
//! registry into its cache first.

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};

use super::blob::read_verified;
use super::{ImageError, ImageFiles, Layer, TargetPlatform, blob_path, parse_digest};

/// Nested indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 4;

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// What a document is to its source (registries serve them at different URLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// An image manifest or index.
    Manifest,
    /// An image configuration.
    Config,
}

/// A source of manifests, indexes and configurations.
pub trait Documents {
    /// The bytes of the document `descriptor` names, checked against its
    /// digest and size.
    async fn document(&self, descriptor: &Descriptor, kind: DocumentKind, what: &str) -> Result<Vec<u8>, ImageError>;
}

/// Documents read from an image store (a layout, an archive, a registry's
/// cache), verified as they are read.
pub struct StoredDocuments<'a>(pub &'a dyn ImageFiles);

impl Documents for StoredDocuments<'_> {
    async fn document(&self, descriptor: &Descriptor, _kind: DocumentKind, what: &str) -> Result<Vec<u8>, ImageError> {
        let (file, _) = self.0.open(&blob_path(descriptor.digest()))?;
        read_verified(file, Some(descriptor.digest()), Some(descriptor.size()), what)
    }
}

/// An image's manifest, configuration and layers, resolved.
pub struct Resolved {
    pub manifest: ImageManifest,
    pub manifest_digest: Digest,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
}

/// Follows `descriptor` to the image for `platform`.
pub async fn resolve(
    documents: &impl Documents,
    descriptor: Descriptor,
    platform: &TargetPlatform,
    reference: &str,
) -> Result<Resolved, ImageError> {
    let mut descriptor = descriptor;
    for _ in 0..=MAX_INDEX_DEPTH {
        let digest = descriptor.digest().clone();
        let what = format!("manifest {digest} of {reference}");
        let bytes = documents.document(&descriptor, DocumentKind::Manifest, &what).await?;
        let media_type = descriptor.media_type().to_string();
        match Document::parse(&bytes, &what)? {
            Document::Index(index) => {
                descriptor = choose_manifest(index.manifests(), platform, reference)?.clone();
            }
            Document::Manifest(_) if INDEX_TYPES.contains(&media_type.as_str()) => {
                return Err(ImageError::Store(format!(
                    "{what}: the descriptor says {media_type} but the content is a manifest"
                )));
            }
            Document::Manifest(manifest) => {
                let config_descriptor = manifest.config();
                let config_what = format!("configuration {} of {reference}", config_descriptor.digest());
                let config_bytes = documents
                    .document(config_descriptor, DocumentKind::Config, &config_what)
                    .await?;
                let config: ImageConfiguration =
                    serde_json::from_slice(&config_bytes).map_err(|source| ImageError::Json {
                        what: config_what,
                        source,
                    })?;
                let layers = manifest_layers(&manifest, &config, reference)?;
                return Ok(Resolved {
                    manifest: *manifest,
                    manifest_digest: digest,
                    config,
                    layers,
                });
            }
        }
    }
    Err(ImageError::Unsupported(format!(
        "{reference}: image indexes nested too deep"
    )))
}

/// A parsed manifest-or-index document.
enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl Document {
    /// Recognises the document from its content, whatever the descriptor said.
    fn parse(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            what: what.to_string(),
            source,
        })?;
        if value.get("schemaVersion").and_then(serde_json::Value::as_u64) == Some(1) {
            return Err(ImageError::Unsupported(format!(
                "{what} is a Docker schema 1 manifest; push the image again with a current tool"
            )));
        }
        let json_error = |source| ImageError::Json {
            what: what.to_string(),
            source,
        };
        if value.get("manifests").is_some() {
            Ok(Document::Index(Box::new(
                serde_json::from_value(value).map_err(json_error)?,
            )))
        } else {
            Ok(Document::Manifest(Box::new(
                serde_json::from_value(value).map_err(json_error)?,
            )))
        }
    }
}

/// The platform a descriptor of an index is for.
fn descriptor_platform(descriptor: &Descriptor) -> Option<TargetPlatform> {
    descriptor.platform().as_ref().map(|p| {
        TargetPlatform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    })
}

fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest")
}

/// Picks the best manifest of an index for `platform`.
pub fn choose_manifest<'a>(
    manifests: impl IntoIterator<Item = &'a Descriptor>,
    platform: &TargetPlatform,
    reference: &str,
) -> Result<&'a Descriptor, ImageError> {
    let candidates: Vec<&Descriptor> = manifests.into_iter().filter(|d| !is_attestation(d)).collect();
    if let [only] = candidates.as_slice()
        && only.platform().is_none()
    {
        return Ok(only);
    }
    candidates
        .iter()
        .filter_map(|d| Some((platform.match_score(&descriptor_platform(d)?)?, *d)))
        // Highest score wins; the first listed wins a tie.
        .fold(None, |best: Option<(u8, &Descriptor)>, (score, d)| match best {
            Some((best_score, _)) if best_score >= score => best,
            _ => Some((score, d)),
        })
        .map(|(_, d)| d)
        .ok_or_else(|| ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            wanted: platform.to_string(),
            available: candidates
                .iter()
                .map(|d| descriptor_platform(d).map_or_else(|| "(no platform)".to_string(), |p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Builds the layer list of a manifest, checked against the configuration.
fn manifest_layers(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    reference: &str,
) -> Result<Vec<Layer>, ImageError> {
    let config_type = manifest.config().media_type().to_string();
    if !config_type.is_empty() && !IMAGE_CONFIG_TYPES.contains(&config_type.as_str()) {
        return Err(ImageError::Unsupported(format!(
            "{reference} is not a container image (its config is {config_type})"
        )));
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Store(format!(
            "{reference}: the manifest lists {} layers but the configuration {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(descriptor, diff_id)| {
            Ok(Layer {
                path: blob_path(descriptor.digest()),
                digest: Some(descriptor.digest().clone()),
                size: Some(descriptor.size()),
                diff_id: parse_digest(diff_id, reference)?,
                media_type: descriptor.media_type().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use oci_spec::image::MediaType;
    use serde_json::{Value, json};

    use super::*;

    /// Documents kept in memory, by digest.
    #[derive(Default)]
    struct InMemory(BTreeMap<String, Vec<u8>>);

    impl InMemory {
        fn add(&mut self, document: &Value, media_type: &str) -> Descriptor {
            let bytes = serde_json::to_vec(document).unwrap();
            let digest: Digest = bundlegen_protocol::digest::Sha256Digest::of(&bytes)
                .to_string()
                .parse()
                .unwrap();
            let descriptor = Descriptor::new(MediaType::from(media_type), bytes.len() as u64, digest.clone());
            self.0.insert(digest.to_string(), bytes);
            descriptor
        }
    }

    impl Documents for InMemory {
        async fn document(&self, descriptor: &Descriptor, _: DocumentKind, what: &str) -> Result<Vec<u8>, ImageError> {
            let bytes = self
                .0
                .get(&descriptor.digest().to_string())
                .ok_or_else(|| ImageError::NotFound(what.to_string()))?;
            read_verified(
                bytes.as_slice(),
                Some(descriptor.digest()),
                Some(descriptor.size()),
                what,
            )
        }
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    fn with_image(documents: &mut InMemory, arch: &str) -> Descriptor {
        let config = documents.add(
            &json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
            "application/vnd.oci.image.config.v1+json",
        );
        documents.add(
            &json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": []}),
            MANIFEST,
        )
    }

    fn index_of(documents: &mut InMemory, manifests: Vec<Value>) -> Descriptor {
        documents.add(
            &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}),
            INDEX,
        )
    }

    fn run(documents: &InMemory, top: Descriptor, arch: &str) -> Result<Resolved, ImageError> {
        let platform = TargetPlatform::new("linux", arch, None);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resolve(documents, top, &platform, "test"))
    }

    fn with_platform(descriptor: &Descriptor, arch: &str) -> Value {
        let mut value = serde_json::to_value(descriptor).unwrap();
        value["platform"] = json!({"architecture": arch, "os": "linux"});
        value
    }

    #[test]
    fn indexes_lead_to_the_platform_manifest() {
        let mut documents = InMemory::default();
        let arm = with_image(&mut documents, "arm64");
        let amd = with_image(&mut documents, "amd64");
        let inner = index_of(
            &mut documents,
            vec![with_platform(&arm, "arm64"), with_platform(&amd, "amd64")],
        );
        let top = index_of(&mut documents, vec![serde_json::to_value(&inner).unwrap()]);
        let resolved = run(&documents, top.clone(), "arm64").unwrap();
        assert_eq!(resolved.manifest_digest, *arm.digest());
        assert_eq!(resolved.config.architecture().to_string(), "arm64");
        let resolved = run(&documents, top.clone(), "amd64").unwrap();
        assert_eq!(resolved.manifest_digest, *amd.digest());
        assert!(matches!(
            run(&documents, top, "riscv64"),
            Err(ImageError::NoMatchingPlatform { .. })
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut documents = InMemory::default();
        let mut top = with_image(&mut documents, "arm64");
        for depth in 1..=MAX_INDEX_DEPTH + 1 {
            top = index_of(&mut documents, vec![serde_json::to_value(&top).unwrap()]);
            let resolved = run(&documents, top.clone(), "arm64");
            if depth <= MAX_INDEX_DEPTH {
                assert!(resolved.is_ok(), "{depth} indexes are followed");
            } else {
                let error = resolved.err().unwrap().to_string();
                assert!(error.contains("nested too deep"), "{error}");
            }
        }
    }

    #[test]
    fn a_manifest_announced_as_an_index_is_refused() {
        let mut documents = InMemory::default();
        let manifest = with_image(&mut documents, "arm64");
        let lying = Descriptor::new(MediaType::from(INDEX), manifest.size(), manifest.digest().clone());
        let error = run(&documents, lying, "arm64").err().unwrap().to_string();
        assert!(error.contains("the content is a manifest"), "{error}");
    }

    #[test]
    fn a_document_that_does_not_match_its_digest_is_refused() {
        let mut documents = InMemory::default();
        let manifest = with_image(&mut documents, "arm64");
        documents.0.get_mut(&manifest.digest().to_string()).unwrap().push(b' ');
        let wrong_size = Descriptor::new(
            MediaType::from(MANIFEST),
            manifest.size() + 1,
            manifest.digest().clone(),
        );
        let error = run(&documents, wrong_size, "arm64").err().unwrap();
        assert!(
            bundlegen_protocol::error_chain(&error).contains("digest mismatch"),
            "{error:?}"
        );
    }
}
