//! Packages in OCI registries, as OCI artifacts: `package-push` uploads the
//! blobs and the package manifest under a tag, and the signature manifest
//! under `sha256-<package manifest hex>.sig` (the cosign convention, which
//! needs no referrers API, so `skopeo copy` and any registry carry it);
//! `package-pull` fetches them (every digest checked) and writes the `.ralf`
//! again, byte for byte the same for packages this tool wrote.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use bundlegen_protocol::digest::Sha256Digest;
use bundlegen_protocol::ralf::layout::{Descriptor, Manifest};
use bundlegen_protocol::ralf::package::{PackageFile, read_layout};
use bundlegen_protocol::ralf::{ContentKind, media};
use oci_spec::image::Digest;

use super::PackageError;
use super::assemble::{self, Layout, PackageFormat};
use super::content::Content;
use crate::image::registry::Repository;
use crate::image::{ImageError, RegistryOptions};

/// Largest manifest or config read.
const MAX_DOCUMENT: u64 = 1 << 20;

fn digest(d: &Sha256Digest) -> Digest {
    d.to_string().parse().expect("a sha256 digest is an OCI digest")
}

fn registry_error(message: impl Into<String>) -> PackageError {
    PackageError::Registry(message.into())
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: Sha256Digest,
    pub signature_tag: Option<String>,
}

/// Copies `name` of the package to a file in `dir` (registries take files).
fn blob_file(package: &PackageFile, descriptor: &Descriptor, dir: &Path) -> Result<std::path::PathBuf, PackageError> {
    let path = dir.join(descriptor.digest.hex());
    let mut reader = package
        .reader(&descriptor.blob_path())
        .ok_or_else(|| registry_error(format!("blob {} is missing from the package", descriptor.digest)))?;
    let mut file = File::create(&path).map_err(|source| PackageError::Io {
        what: "staging a blob",
        source,
    })?;
    io::copy(&mut reader, &mut file).map_err(|source| PackageError::Io {
        what: "staging a blob",
        source,
    })?;
    Ok(path)
}

/// Pushes a package to `repository` at `host` under `tag`.
pub async fn push(
    package: &Path,
    host: &str,
    repository: &str,
    tag: &str,
    options: &RegistryOptions,
) -> Result<Pushed, PackageError> {
    let file = PackageFile::open(package).map_err(|e| registry_error(format!("{}: {e}", package.display())))?;
    let layout = read_layout(&file).map_err(|e| registry_error(format!("{}: {e}", package.display())))?;
    let repo = Repository::new(host, repository, options)?;
    let staging = tempfile::tempdir().map_err(|source| PackageError::Io {
        what: "staging blobs",
        source,
    })?;
    let push_blobs = |descriptors: Vec<Descriptor>| async {
        for descriptor in descriptors {
            file.check_blob(&descriptor)
                .map_err(|e| registry_error(e.to_string()))?;
            let path = blob_file(&file, &descriptor, staging.path())?;
            repo.push_blob(&path, &digest(&descriptor.digest), descriptor.size)
                .await?;
        }
        Ok::<_, PackageError>(())
    };
    push_blobs(vec![layout.manifest.config.clone(), layout.content.clone()]).await?;
    let manifest_bytes = file
        .read_blob(&layout.manifest_descriptor, MAX_DOCUMENT)
        .map_err(|e| registry_error(e.to_string()))?;
    repo.put_manifest(tag, media::MANIFEST, manifest_bytes).await?;
    let signature_tag = match &layout.signature {
        Some((descriptor, signature)) => {
            let mut blobs = vec![signature.config.clone()];
            blobs.extend(signature.layers.iter().cloned());
            push_blobs(blobs).await?;
            let bytes = file
                .read_blob(descriptor, MAX_DOCUMENT)
                .map_err(|e| registry_error(e.to_string()))?;
            let tag = assemble::signature_tag(&layout.manifest_descriptor.digest);
            repo.put_manifest(&tag, media::MANIFEST, bytes).await?;
            Some(tag)
        }
        None => None,
    };
    Ok(Pushed {
        manifest: layout.manifest_descriptor.digest,
        signature_tag,
    })
}

/// What was pulled.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub manifest: Sha256Digest,
    pub signed: bool,
}

fn read_file(path: &Path) -> Result<Vec<u8>, PackageError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_DOCUMENT).read_to_end(&mut bytes))
        .map_err(|source| PackageError::Io {
            what: "reading a pulled blob",
            source,
        })?;
    Ok(bytes)
}

/// Pulls the package `reference` (a tag or `sha256:` digest) of
/// `repository` at `host` into `output`.
pub async fn pull(
    host: &str,
    repository: &str,
    reference: &str,
    output: &Path,
    format: PackageFormat,
    replace: bool,
    options: &RegistryOptions,
) -> Result<Pulled, PackageError> {
    let repo = Repository::new(host, repository, options)?;
    let (manifest_bytes, manifest_digest) = repo.manifest(reference).await?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| registry_error(format!("{reference}: not an image manifest: {e}")))?;
    if manifest.config.media_type != media::CONFIG {
        return Err(registry_error(format!(
            "{reference} is not a RALF package (its config is {})",
            manifest.config.media_type
        )));
    }
    let [content_descriptor] = &manifest.layers[..] else {
        return Err(registry_error(format!(
            "{reference}: a package has one layer, this has {}",
            manifest.layers.len()
        )));
    };
    let kind = ContentKind::from_media_type(&content_descriptor.media_type).ok_or_else(|| {
        registry_error(format!(
            "{reference}: content of unknown media type {}",
            content_descriptor.media_type
        ))
    })?;
    let staging = tempfile::tempdir().map_err(|source| PackageError::Io {
        what: "staging blobs",
        source,
    })?;
    let fetch = |d: &Descriptor| {
        let (dir, digest, size) = (staging.path().to_path_buf(), digest(&d.digest), d.size);
        let repo = &repo;
        async move { repo.fetch_blob(&digest, size, &dir).await }
    };
    let blob_path = |d: &Descriptor| staging.path().join(d.blob_path());
    fetch(&manifest.config).await?;
    fetch(content_descriptor).await?;
    let config_bytes = read_file(&blob_path(&manifest.config))?;
    let config: bundlegen_protocol::ralf::config::PackageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| registry_error(format!("{reference}: its config: {e}")))?;
    let manifest_sha = Sha256Digest::from_bytes(
        bundlegen_protocol::digest::from_hex(manifest_digest.digest())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| registry_error("the registry named a manifest that is not sha256"))?,
    );
    let mut manifest_descriptor = Descriptor::of(media::MANIFEST, &manifest_bytes);
    assemble::package_descriptor(&mut manifest_descriptor, &config.id);
    let mut blobs = vec![(manifest.config.digest, config_bytes), (manifest_sha, manifest_bytes)];
    let mut manifests = vec![manifest_descriptor];
    // The signature, where the cosign convention puts it; none is no error.
    let signed = match repo.manifest(&assemble::signature_tag(&manifest_sha)).await {
        Ok((bytes, _)) => {
            let signature: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| registry_error(format!("the signature manifest: {e}")))?;
            fetch(&signature.config).await?;
            blobs.push((signature.config.digest, read_file(&blob_path(&signature.config))?));
            for layer in &signature.layers {
                fetch(layer).await?;
                blobs.push((layer.digest, read_file(&blob_path(layer))?));
            }
            let mut descriptor = Descriptor::of(media::MANIFEST, &bytes);
            assemble::signature_descriptor_of(&mut descriptor, &manifest_sha);
            blobs.push((descriptor.digest, bytes));
            manifests.push(descriptor);
            true
        }
        Err(ImageError::NotFound(_)) => false,
        Err(other) => return Err(other.into()),
    };
    let content_path = blob_path(content_descriptor);
    let mut content = Content {
        kind,
        file: File::open(&content_path).map_err(|source| PackageError::Io {
            what: "reading the pulled content",
            source,
        })?,
        size: content_descriptor.size,
        digest: content_descriptor.digest,
        annotations: content_descriptor.annotations.clone(),
    };
    let layout = Layout {
        index: assemble::index(manifests),
        blobs,
        content: content_descriptor.clone(),
        manifest: manifest_sha,
    };
    let (sha256, size) = super::write_package_file(output, replace, |file| {
        assemble::write_container(&layout, &mut content, format, file)
    })?;
    Ok(Pulled {
        sha256,
        size,
        manifest: manifest_sha,
        signed,
    })
}
