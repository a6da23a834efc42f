//! Byte streams for HTTP bodies: files (or parts of them) and registry
//! responses (or parts of them), read in 256 KiB chunks.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

/// `length` bytes of a file from its current position.
pub fn file_stream(file: tokio::fs::File, length: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        (file, length),
        |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buffer = vec![0u8; left.min(256 * 1024) as usize];
            match file.read(&mut buffer).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "file shorter than expected",
                    )),
                    (file, 0),
                )),
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(buffer), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        },
    ))
}

/// A registry response's body: `skip` bytes dropped, then `length` bytes.
pub fn response_stream(response: reqwest::Response, skip: u64, length: u64) -> ByteStream {
    let chunks = response
        .bytes_stream()
        .map(|c| c.map(|b| b.to_vec()).map_err(std::io::Error::other));
    Box::pin(futures_util::stream::unfold(
        (Box::pin(chunks), skip, length),
        |(mut chunks, mut skip, mut left)| async move {
            loop {
                if left == 0 {
                    return None;
                }
                match chunks.next().await? {
                    Err(e) => return Some((Err(e), (chunks, 0, 0))),
                    Ok(mut chunk) => {
                        let drop = skip.min(chunk.len() as u64) as usize;
                        chunk.drain(..drop);
                        skip -= drop as u64;
                        chunk.truncate(left.min(chunk.len() as u64) as usize);
                        if chunk.is_empty() {
                            continue;
                        }
                        left -= chunk.len() as u64;
                        return Some((Ok(chunk), (chunks, skip, left)));
                    }
                }
            }
        },
    ))
}
