//! Resumable HTTPS downloads. A download lives in its own directory: the
//! partial file, and a journal with the URL, the server's ETag and the total
//! size. After a restart (or a dropped connection) it continues with
//! `Range: bytes=N-` and `If-Range: ETAG`; a server that answers 200 instead
//! (the file changed, or no ranges) restarts it from zero. Transient
//! failures (connection errors, 408, 429, 5xx) are retried with exponential
//! back-off, honouring `Retry-After`; other 4xx are final.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::store::{NoRoom, Room};

const PARTIAL: &str = "bundle.part";
const COMPLETE: &str = "bundle";
const JOURNAL: &str = "journal.json";
/// What to do about TLS trouble with the service or a bundle's server, in
/// agent.toml's terms.
pub const REMEDIES: bundlegen_protocol::tls::Remedies = bundlegen_protocol::tls::Remedies {
    plain_http: "the server speaks plain HTTP: use an http:// URL (for `server` on another host, also set \
                 insecure_server = true)",
    trust_ca: "set ca_file in agent.toml to the CA that signed the server's certificate",
};

/// Room is checked again each time this many more bytes have arrived.
pub const ROOM_CHECK_INTERVAL: u64 = 1 << 20;
/// Longest wait between attempts, whatever the server asks.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
    #[error("{url}: the server refused it: {status}")]
    Refused { url: String, status: u16 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("{url}: the server sent more than the {total} bytes it announced")]
    Oversized { url: String, total: u64 },
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Journal {
    url: String,
    etag: Option<String>,
    total: Option<u64>,
}

/// An HTTP client for bundles and the service: the service's token is sent
/// to the service only, never to other hosts.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    server: Option<String>,
    token: Option<String>,
    /// The first retry's wait (doubled each time, up to five minutes).
    pub backoff: Duration,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Http {
    pub fn new(server: Option<String>, token: Option<String>, ca_file: Option<&Path>) -> Result<Http, String> {
        let builder =
            bundlegen_protocol::http::client_builder(concat!("stb-agent/", env!("CARGO_PKG_VERSION")), ca_file)
                .map_err(|e| e.to_string())?
                .read_timeout(Duration::from_secs(120));
        Ok(Http {
            client: builder.build().map_err(|e| e.to_string())?,
            server: server.map(|s| s.trim_end_matches('/').to_string()),
            token,
            backoff: Duration::from_secs(1),
        })
    }

    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// A request, with the token when it goes to the service.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match (&self.server, &self.token) {
            (Some(server), Some(token)) if url == server || url.starts_with(&format!("{server}/")) => {
                request.bearer_auth(token)
            }
            _ => request,
        }
    }

    fn wait_for(&self, attempt: u32, response: Option<&reqwest::Response>) -> Duration {
        let asked = response
            .and_then(|r| r.headers().get(header::RETRY_AFTER))
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        asked
            .unwrap_or_else(|| {
                self.backoff
                    .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            })
            .min(MAX_BACKOFF)
    }

    /// Downloads `url` into `dir` (resuming what is there); returns the
    /// complete file. `room` is checked with the total size once known, and
    /// again as the body arrives (a server need not say how big it is);
    /// `progress` gets (bytes done, total).
    pub async fn download(
        &self,
        url: &str,
        dir: &Path,
        attempts: u32,
        room: &Room,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
        cancel: &watch::Receiver<bool>,
    ) -> Result<PathBuf, DownloadError> {
        let mut transfer = Transfer::open(dir, url)?;
        if let Some(complete) = transfer.already_complete() {
            return Ok(complete);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            if *cancel.borrow() {
                return Err(DownloadError::Cancelled);
            }
            let have = transfer.have();
            let response = match unless_cancelled(cancel, transfer.request(self, have).send()).await? {
                Ok(response) => response,
                Err(e) if attempt < attempts => {
                    tracing::warn!("{url}: {e}; retrying");
                    self.sleep(attempt, None, cancel).await?;
                    continue;
                }
                Err(e) => return Err(transfer.failed(bundlegen_protocol::tls::explain(&e, &REMEDIES))),
            };
            let status = response.status();
            let retryable = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            if retryable {
                if attempt >= attempts {
                    return Err(transfer.refused(status));
                }
                self.sleep(attempt, Some(&response), cancel).await?;
                continue;
            }
            let append = match status {
                StatusCode::PARTIAL_CONTENT if content_range_start(&response) == Some(have) => true,
                // Not the range we asked for: start over.
                StatusCode::PARTIAL_CONTENT => {
                    truncate(&transfer.partial)?;
                    continue;
                }
                StatusCode::OK => false,
                StatusCode::RANGE_NOT_SATISFIABLE if transfer.journal.total == Some(have) => {
                    return transfer.finish();
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    truncate(&transfer.partial)?;
                    continue;
                }
                other => return Err(transfer.refused(other)),
            };
            let start = if append { have } else { 0 };
            let total = transfer.begin_body(&response, append).await?;
            if let Some(total) = total {
                room.check(start, total.saturating_sub(start))?;
            }
            let (done, outcome) = transfer
                .receive(response, append, start, room, progress, cancel)
                .await?;
            match outcome {
                Ok(()) if total.is_none_or(|t| t == done) => return transfer.finish(),
                Ok(()) => {
                    tracing::warn!("{url}: the body ended at {done} of {total:?} bytes; resuming");
                }
                Err(e) => tracing::warn!("{url}: interrupted at {done} bytes: {e}; resuming"),
            }
            if attempt >= attempts {
                return Err(transfer.failed(format!("incomplete after {attempts} attempts")));
            }
            self.sleep(attempt, None, cancel).await?;
        }
    }

    async fn sleep(
        &self,
        attempt: u32,
        response: Option<&reqwest::Response>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), DownloadError> {
        unless_cancelled(cancel, tokio::time::sleep(self.wait_for(attempt, response))).await
    }
}

/// `work`'s result, unless the download is cancelled first (a server that
/// stops answering must not hold a cancelled install).
async fn unless_cancelled<T>(
    cancel: &watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, DownloadError> {
    let mut cancel = cancel.clone();
    tokio::select! {
        value = work => Ok(value),
        Ok(_) = cancel.wait_for(|c| *c) => Err(DownloadError::Cancelled),
    }
}

/// One download's files: the partial file, the complete one, the journal.
struct Transfer {
    url: String,
    partial: PathBuf,
    complete: PathBuf,
    journal_path: PathBuf,
    journal: Journal,
}

impl Transfer {
    fn open(dir: &Path, url: &str) -> Result<Transfer, DownloadError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let journal_path = dir.join(JOURNAL);
        let journal: Journal = std::fs::read(&journal_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut transfer = Transfer {
            url: url.to_string(),
            partial: dir.join(PARTIAL),
            complete: dir.join(COMPLETE),
            journal_path,
            journal,
        };
        if transfer.journal.url != url {
            // Another URL (or none yet): nothing here can be resumed.
            let _ = std::fs::remove_file(&transfer.partial);
            let _ = std::fs::remove_file(&transfer.complete);
            transfer.journal = Journal {
                url: url.to_string(),
                ..Journal::default()
            };
        }
        Ok(transfer)
    }

    /// The file, if an earlier run finished it.
    fn already_complete(&self) -> Option<PathBuf> {
        self.complete.exists().then(|| self.complete.clone())
    }

    /// Bytes of the partial file.
    fn have(&self) -> u64 {
        std::fs::metadata(&self.partial).map_or(0, |m| m.len())
    }

    /// The request: the rest of the file, if the server said how to ask.
    fn request(&self, http: &Http, have: u64) -> reqwest::RequestBuilder {
        let request = http.request(reqwest::Method::GET, &self.url);
        match &self.journal.etag {
            Some(etag) if have > 0 => request
                .header(header::RANGE, format!("bytes={have}-"))
                .header(header::IF_RANGE, etag),
            _ => request,
        }
    }

    fn failed(&self, message: String) -> DownloadError {
        DownloadError::Failed {
            url: self.url.clone(),
            message,
        }
    }

    fn refused(&self, status: StatusCode) -> DownloadError {
        DownloadError::Refused {
            url: self.url.clone(),
            status: status.as_u16(),
        }
    }

    /// Records what the response says of the whole file (ETag, size) before
    /// its body is written; returns the total size if known.
    async fn begin_body(&mut self, response: &reqwest::Response, append: bool) -> Result<Option<u64>, DownloadError> {
        let total = if append {
            content_range_total(response).or(self.journal.total)
        } else {
            response.content_length()
        };
        if !append {
            self.journal.etag = response
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        self.journal.total = total;
        let bytes = serde_json::to_vec(&self.journal).expect("journal serialises");
        let journal_file = self.journal_path.clone();
        tokio::task::spawn_blocking(move || {
            bundlegen_protocol::fsutil::write_file_atomic(&journal_file, &bytes, 0o644)
        })
        .await
        .map_err(|e| io(&self.journal_path)(std::io::Error::other(e)))?
        .map_err(io(&self.journal_path))?;
        Ok(total)
    }

    /// Writes the body after `start` bytes, synced, while it fits in `room`
    /// and its announced size; returns the bytes the partial file holds and
    /// how the body ended.
    async fn receive(
        &self,
        mut response: reqwest::Response,
        append: bool,
        start: u64,
        room: &Room,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
        cancel: &watch::Receiver<bool>,
    ) -> Result<(u64, Result<(), reqwest::Error>), DownloadError> {
        let partial = &self.partial;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(partial)
            .await
            .map_err(io(partial))?;
        let total = self.journal.total;
        let mut done = start;
        let mut next_check = done + ROOM_CHECK_INTERVAL;
        progress(done, total);
        let outcome = loop {
            match unless_cancelled(cancel, response.chunk()).await? {
                Ok(Some(chunk)) => {
                    done += chunk.len() as u64;
                    if let Some(total) = total.filter(|t| done > *t) {
                        return Err(DownloadError::Oversized {
                            url: self.url.clone(),
                            total,
                        });
                    }
                    if done >= next_check {
                        room.check(done, total.map_or(0, |t| t - done))?;
                        next_check = done + ROOM_CHECK_INTERVAL;
                    }
                    file.write_all(&chunk).await.map_err(io(partial))?;
                    progress(done, total);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        // flush reports a failed write (a full disk) that sync_all would not.
        file.flush().await.map_err(io(partial))?;
        file.sync_all().await.map_err(io(partial))?;
        Ok((done, outcome))
    }

    fn finish(&self) -> Result<PathBuf, DownloadError> {
        std::fs::rename(&self.partial, &self.complete).map_err(io(&self.partial))?;
        Ok(self.complete.clone())
    }
}

fn truncate(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// `N` of `Content-Range: bytes N-M/T`.
fn content_range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// `T` of `Content-Range: bytes N-M/T`.
fn content_range_total(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    value.rsplit('/').next()?.trim().parse().ok()
}

/// Drops a download (its directory, or a pushed file).
pub fn discard(path: &Path) {
    if std::fs::remove_dir_all(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
