//! A package's OCI layout (config, content, manifest, signature manifest,
//! index) and the `.ralf` file holding it: a ZIP, or a tar with PAX comment
//! padding, with the content blob's data 4096-aligned either way so a box
//! can loop-mount it where it lies.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use bundlegen_protocol::digest::{CountingWriter, Sha256Digest};
use bundlegen_protocol::ralf::config::PackageConfig;
use bundlegen_protocol::ralf::layout::{Descriptor, Index, Manifest, to_json};
use bundlegen_protocol::ralf::zip::ZipWriter;
use bundlegen_protocol::ralf::{ContentKind, OCI_LAYOUT, media, signature};
use bundlegen_protocol::signature::base64_encode;
use serde_json::json;

use super::PackageError;
use super::content::Content;
use super::sign::SigningIdentity;

/// The `.ralf` container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFormat {
    Zip,
    Tar,
}

/// Content data is aligned to this in the container.
const ALIGN: u64 = 4096;
/// Plain tar content up to this size is deflated in a ZIP.
const DEFLATE_UP_TO: u64 = 16 << 20;

/// A package's small blobs and its index, ready to be written.
pub struct Layout {
    pub index: Vec<u8>,
    /// Blobs other than the content, in the order they are written.
    pub blobs: Vec<(Sha256Digest, Vec<u8>)>,
    pub content: Descriptor,
    pub manifest: Sha256Digest,
}

fn title(kind: ContentKind) -> &'static str {
    match kind {
        ContentKind::Tar => "package.tar",
        ContentKind::TarGzip => "package.tar.gz",
        ContentKind::TarZstd => "package.tar.zst",
        ContentKind::Erofs { .. } => "package.erofs",
        ContentKind::Empty => "package.json",
    }
}

/// Lays the package out: the config, the content's descriptor, the package
/// manifest, and (with a signer) the cosign signature manifest.
pub fn layout(
    config: &PackageConfig,
    content: &Content,
    signer: Option<&SigningIdentity>,
) -> Result<Layout, PackageError> {
    let config_bytes = config.to_json();
    let mut config_descriptor = Descriptor::of(media::CONFIG, &config_bytes);
    config_descriptor
        .annotations
        .insert(media::TITLE.into(), "package.json".into());
    let mut content_descriptor = Descriptor {
        media_type: content.kind.media_type(),
        digest: content.digest,
        size: content.size,
        artifact_type: None,
        annotations: content.annotations.clone(),
    };
    content_descriptor
        .annotations
        .insert(media::TITLE.into(), title(content.kind).into());
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::MANIFEST.into()),
        artifact_type: Some(media::ARTIFACT_TYPE.into()),
        config: config_descriptor.clone(),
        layers: vec![content_descriptor.clone()],
        annotations: Default::default(),
    };
    let manifest_bytes = to_json(&manifest);
    let mut manifest_descriptor = Descriptor::of(media::MANIFEST, &manifest_bytes);
    manifest_descriptor.artifact_type = Some(media::ARTIFACT_TYPE.into());
    manifest_descriptor
        .annotations
        .insert(media::REF_NAME.into(), config.id.clone());
    let mut blobs = vec![
        (config_descriptor.digest, config_bytes),
        (manifest_descriptor.digest, manifest_bytes),
    ];
    let mut manifests = vec![manifest_descriptor.clone()];
    if let Some(signer) = signer {
        let payload = signature::payload(&config.id, &manifest_descriptor.digest, Default::default());
        let signed = signer.sign(&payload)?;
        let mut payload_descriptor = Descriptor::of(media::SIGNATURE_LAYER, &payload);
        payload_descriptor
            .annotations
            .insert(media::SIGNATURE.into(), base64_encode(&signed));
        if let Some(certificate) = signer.certificate_pem() {
            payload_descriptor
                .annotations
                .insert(media::CERTIFICATE.into(), certificate);
        }
        if let Some(chain) = signer.chain_pem() {
            payload_descriptor.annotations.insert(media::CHAIN.into(), chain);
        }
        // cosign's signature image config, with no time in it.
        let signature_config = serde_json::to_vec(&json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [payload_descriptor.digest.to_string()]},
        }))
        .expect("a JSON value serializes");
        let signature_config_descriptor = Descriptor::of(media::SIGNATURE_CONFIG, &signature_config);
        let signature_manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::MANIFEST.into()),
            artifact_type: None,
            config: signature_config_descriptor.clone(),
            layers: vec![payload_descriptor.clone()],
            annotations: Default::default(),
        };
        let signature_bytes = to_json(&signature_manifest);
        let mut signature_descriptor = Descriptor::of(media::MANIFEST, &signature_bytes);
        signature_descriptor_of(&mut signature_descriptor, &manifest_descriptor.digest);
        blobs.push((signature_config_descriptor.digest, signature_config));
        blobs.push((payload_descriptor.digest, payload));
        blobs.push((signature_descriptor.digest, signature_bytes));
        manifests.push(signature_descriptor);
    }
    Ok(Layout {
        index: index(manifests),
        blobs,
        content: content_descriptor,
        manifest: manifest_descriptor.digest,
    })
}

/// The index entry of a package manifest: the artifact type, the package id
/// as its name (what ralfpack and bolt write).
pub fn package_descriptor(descriptor: &mut Descriptor, id: &str) {
    descriptor.artifact_type = Some(media::ARTIFACT_TYPE.into());
    descriptor.annotations.insert(media::REF_NAME.into(), id.to_string());
}

/// The index entry of a signature manifest: named `sha256-<package manifest hex>.sig`.
pub fn signature_descriptor_of(descriptor: &mut Descriptor, manifest: &Sha256Digest) {
    descriptor
        .annotations
        .insert(media::REF_NAME.into(), signature_tag(manifest));
}

/// The tag cosign gives the signature of `manifest`.
pub fn signature_tag(manifest: &Sha256Digest) -> String {
    format!("sha256-{}.sig", manifest.hex())
}

/// `index.json` over these manifest entries.
pub fn index(manifests: Vec<Descriptor>) -> Vec<u8> {
    to_json(&Index {
        schema_version: 2,
        media_type: Some(media::INDEX.into()),
        manifests,
        annotations: Default::default(),
    })
}

fn io_error(source: io::Error) -> PackageError {
    PackageError::Io {
        what: "writing the package",
        source,
    }
}

/// Writes the layout and the content into `out` as `format`.
pub fn write_container(
    layout: &Layout,
    content: &mut Content,
    format: PackageFormat,
    out: &File,
) -> Result<(), PackageError> {
    content.file.rewind().map_err(io_error)?;
    let content_name = layout.content.blob_path();
    let mut content_data = io::BufReader::with_capacity(1 << 20, &content.file);
    match format {
        PackageFormat::Zip => {
            let mut zip = ZipWriter::new(io::BufWriter::with_capacity(1 << 20, out)).map_err(io_error)?;
            zip.add_stored("oci-layout", &mut &OCI_LAYOUT[..], OCI_LAYOUT.len() as u64, 1)
                .map_err(io_error)?;
            zip.add_stored("index.json", &mut &layout.index[..], layout.index.len() as u64, 1)
                .map_err(io_error)?;
            let (config, rest) = layout.blobs.split_first().expect("a config blob");
            zip.add_stored(&blob_name(&config.0), &mut &config.1[..], config.1.len() as u64, 1)
                .map_err(io_error)?;
            // Small plain tar is deflated, as ralfpack does (it is extracted,
            // never mounted); large content is stored: deflate is one thread.
            if content.kind == ContentKind::Tar && content.size <= DEFLATE_UP_TO {
                zip.add_deflated(&content_name, &mut content_data, content.size)
                    .map_err(io_error)?;
            } else {
                zip.add_stored(&content_name, &mut content_data, content.size, ALIGN)
                    .map_err(io_error)?;
            }
            for (digest, bytes) in rest {
                zip.add_stored(&blob_name(digest), &mut &bytes[..], bytes.len() as u64, 1)
                    .map_err(io_error)?;
            }
            zip.finish().map_err(io_error)?.flush().map_err(io_error)?;
        }
        PackageFormat::Tar => {
            let mut tar = tar::Builder::new(CountingWriter::new(io::BufWriter::with_capacity(1 << 20, out)));
            append_tar(
                &mut tar,
                "oci-layout",
                &mut &OCI_LAYOUT[..],
                OCI_LAYOUT.len() as u64,
                false,
            )?;
            append_tar(
                &mut tar,
                "index.json",
                &mut &layout.index[..],
                layout.index.len() as u64,
                false,
            )?;
            let (config, rest) = layout.blobs.split_first().expect("a config blob");
            append_tar(
                &mut tar,
                &blob_name(&config.0),
                &mut &config.1[..],
                config.1.len() as u64,
                false,
            )?;
            append_tar(&mut tar, &content_name, &mut content_data, content.size, true)?;
            for (digest, bytes) in rest {
                append_tar(&mut tar, &blob_name(digest), &mut &bytes[..], bytes.len() as u64, false)?;
            }
            tar.into_inner()
                .map_err(io_error)?
                .into_inner()
                .flush()
                .map_err(io_error)?;
        }
    }
    Ok(())
}

fn blob_name(digest: &Sha256Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Appends a file; `align` puts its data at a multiple of 4096 with a PAX
/// header whose comment pads to there.
fn append_tar<W: Write>(
    tar: &mut tar::Builder<CountingWriter<W>>,
    name: &str,
    data: &mut impl Read,
    size: u64,
    align: bool,
) -> Result<(), PackageError> {
    if align {
        let position = tar.get_ref().count();
        if !(position + 512).is_multiple_of(ALIGN) {
            // PAX header (512) + its data (a multiple of 512) + the entry's header (512).
            let mut padded = (ALIGN - (position + 1024) % ALIGN) % ALIGN;
            if padded < 512 {
                padded += ALIGN;
            }
            // The record "LEN comment=VALUE\n" is exactly `padded` bytes long.
            let value = vec![b'0'; padded as usize - padded.to_string().len() - " comment=\n".len()];
            tar.append_pax_extensions([("comment", &value[..])]).map_err(io_error)?;
            debug_assert!((tar.get_ref().count() + 512).is_multiple_of(ALIGN));
        }
    }
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data.take(size)).map_err(io_error)
}
