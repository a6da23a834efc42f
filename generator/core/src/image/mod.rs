//! Reading OCI images from every source BundleGen users name: OCI layout
//! directories and archives, `docker save` archives, and registries.
//!
//! Whatever the source, the result is an [`Image`]: its configuration and its
//! layers, each blob checked against its digest and size when read.

use std::io::{self, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::thread::JoinHandle;

use oci_spec::image::{Digest, ImageConfiguration};

mod blob;
mod docker_archive;
mod layout;
mod platform;
mod reference;
pub mod registry;
mod resolve;
mod store;

pub use blob::VerifiedReader;
pub use platform::{TargetPlatform, normalize_arch};
pub use reference::{ArchiveImage, DEFAULT_TAG, ImageReference, Selector};
pub use registry::RegistryOptions;
pub use store::{DirFiles, ImageFiles, TarFiles};

use bundlegen_protocol::archive::Compression;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {input:?}: {reason}")]
    Reference { input: String, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} is not valid JSON for its type")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Store(String),
    #[error("image {reference} has no manifest for {wanted}; it has: {available}")]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("registry {url}: {message}")]
    Registry { url: String, message: String },
}

/// A layer of an image: where its blob is and what it must hash to.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Path of the blob inside the image store.
    pub path: String,
    /// Digest of the (compressed) blob, when the source states one.
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    /// Digest of the uncompressed tar, from the image configuration.
    pub diff_id: Digest,
    pub media_type: String,
}

/// An image ready to unpack.
pub struct Image {
    /// The reference it was opened from, for messages.
    pub reference: String,
    pub manifest_digest: Option<Digest>,
    pub config: ImageConfiguration,
    pub config_digest: Option<Digest>,
    pub layers: Vec<Layer>,
    files: Arc<dyn ImageFiles>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("reference", &self.reference)
            .field("manifest_digest", &self.manifest_digest)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

/// Bytes handed from the decompression thread to the reader at a time.
const CHUNK: usize = 128 * 1024;
/// Chunks in flight between the threads.
const CHUNKS_AHEAD: usize = 4;

/// A layer's uncompressed tar stream.
///
/// A thread reads the blob, checks its digest and inflates it, while the
/// caller applies what it gets, so decompression and filesystem work
/// overlap. The caller also checks the uncompressed digest (`diff_id`): the
/// inflating thread is the slower of the two. A digest mismatch arrives as
/// a read error at the end; [`LayerStream::finish`] drains what the tar
/// reader left and returns the outcome of both checks.
pub struct LayerStream {
    reader: VerifiedReader<Chunks>,
    worker: Option<JoinHandle<()>>,
    what: String,
}

/// What the thread inflated, chunk by chunk; read chunks go back to it to
/// be filled again, so the stream touches the same few buffers throughout.
struct Chunks {
    chunks: Receiver<io::Result<Vec<u8>>>,
    spare: Sender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    // The thread may have finished: then the buffer is simply dropped.
                    let _ = self.spare.send(used);
                    self.position = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The thread finished: end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl LayerStream {
    fn spawn(
        mut decoded: Box<dyn Read + Send>,
        blob_verified: Option<Arc<AtomicBool>>,
        diff_id: &Digest,
        what: String,
    ) -> Result<LayerStream, ImageError> {
        let (sender, chunks) = sync_channel(CHUNKS_AHEAD);
        let (spare, spares) = channel::<Vec<u8>>();
        let worker = std::thread::spawn(move || {
            loop {
                let mut chunk = spares.try_recv().unwrap_or_default();
                chunk.resize(CHUNK, 0);
                let mut filled = 0;
                let ended = loop {
                    match decoded.read(&mut chunk[filled..]) {
                        Ok(0) => break true,
                        Ok(n) => {
                            filled += n;
                            if filled == CHUNK {
                                break false;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = sender.send(Err(e));
                            return;
                        }
                    }
                };
                chunk.truncate(filled);
                // A closed channel means the reader gave up: stop quietly.
                if filled > 0 && sender.send(Ok(chunk)).is_err() {
                    return;
                }
                if ended {
                    break;
                }
            }
            if !blob_verified.is_none_or(|flag| flag.load(Ordering::Relaxed)) {
                let _ = sender.send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the end of the compressed stream",
                )));
            }
        });
        let chunks = Chunks {
            chunks,
            spare,
            current: Vec::new(),
            position: 0,
        };
        Ok(LayerStream {
            reader: VerifiedReader::new(chunks, diff_id, None, "uncompressed content (diff_id)")?,
            worker: Some(worker),
            what,
        })
    }

    /// Reads what is left and returns the outcome of the digest checks.
    pub fn finish(mut self) -> Result<(), ImageError> {
        let result = io::copy(&mut self, &mut io::sink());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        result.map(drop).map_err(|source| ImageError::Io {
            what: self.what.clone(),
            source,
        })
    }
}

impl Image {
    fn new(reference: String, resolved: resolve::Resolved, files: Arc<dyn ImageFiles>) -> Image {
        Image {
            reference,
            manifest_digest: Some(resolved.manifest_digest),
            config_digest: Some(resolved.manifest.config().digest().clone()),
            config: resolved.config,
            layers: resolved.layers,
            files,
        }
    }

    /// The platform the image says it is for.
    pub fn platform(&self) -> TargetPlatform {
        TargetPlatform::new(
            &self.config.os().to_string(),
            &self.config.architecture().to_string(),
            self.config.variant().as_deref(),
        )
    }

    /// "layer 2 of 3 (sha256:...)", for messages.
    pub fn layer_name(&self, index: usize) -> String {
        let layer = &self.layers[index];
        let id = layer
            .digest
            .as_ref()
            .map_or_else(|| layer.path.clone(), Digest::to_string);
        format!("layer {} of {} ({id})", index + 1, self.layers.len())
    }

    /// Opens layer `index` as an uncompressed tar stream (gzip, zstd or plain,
    /// recognised from the data itself).
    pub fn open_layer(&self, index: usize) -> Result<LayerStream, ImageError> {
        let layer = &self.layers[index];
        let what = self.layer_name(index);
        if layer.media_type.contains("+encrypted") {
            return Err(ImageError::Unsupported(format!(
                "{what} is encrypted ({})",
                layer.media_type
            )));
        }
        let (raw, _) = self.files.open(&layer.path)?;
        let (blob, blob_verified): (Box<dyn Read + Send>, _) = match &layer.digest {
            Some(digest) => {
                let verified = VerifiedReader::new(raw, digest, layer.size, "blob")?;
                let flag = verified.verified_flag();
                (Box::new(verified), Some(flag))
            }
            None => (raw, None),
        };
        let mut blob = BufReader::with_capacity(256 * 1024, blob);
        let head = io::BufRead::fill_buf(&mut blob).map_err(|source| ImageError::Io {
            what: what.clone(),
            source,
        })?;
        let decoded: Box<dyn Read + Send> = match Compression::sniff(head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => {
                Box::new(
                    zstd::stream::read::Decoder::with_buffer(blob).map_err(|source| ImageError::Io {
                        what: what.clone(),
                        source,
                    })?,
                )
            }
            Compression::None => Box::new(blob),
        };
        LayerStream::spawn(decoded, blob_verified, &layer.diff_id, what)
    }
}

/// Opens the image a reference names, choosing `platform` from a multi-platform index.
pub async fn open_image(
    reference: &ImageReference,
    platform: &TargetPlatform,
    registry: &RegistryOptions,
) -> Result<Image, ImageError> {
    match reference {
        ImageReference::OciLayout { dir, selector } => {
            let files = Arc::new(DirFiles::new(dir)?);
            layout::open(files, selector, platform, reference.to_string()).await
        }
        ImageReference::OciArchive { file, selector } => {
            let files = Arc::new(TarFiles::index(file)?);
            layout::open(files, selector, platform, reference.to_string()).await
        }
        ImageReference::DockerArchive { file, image } => {
            let files = Arc::new(TarFiles::index(file)?);
            docker_archive::open(files, image, reference.to_string())
        }
        ImageReference::Registry {
            host,
            repository,
            selector,
        } => registry::pull(host, repository, selector, platform, registry).await,
    }
}

fn parse_digest(text: &str, context: &str) -> Result<Digest, ImageError> {
    text.parse()
        .map_err(|e| ImageError::Store(format!("{context}: invalid digest {text:?}: {e}")))
}

/// Path of a blob in an OCI layout.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}
