//! Parallel gzip compression, the way pigz does it.
//!
//! Input is cut into fixed blocks; each block is deflated on its own thread
//! with the previous 32 KiB as a preset dictionary and ends with a sync flush,
//! so the concatenated blocks form one ordinary deflate stream inside one
//! gzip member (readable by every gzip reader, unlike multi-member output).
//! The block CRCs are combined in order. The output depends only on the data,
//! the level and the block size, never on the number of threads.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per block.
pub const BLOCK_SIZE: usize = 1 << 20;
const DICTIONARY_SIZE: usize = 32 * 1024;

struct Job {
    input: Vec<u8>,
    /// The last bytes of the previous block.
    dictionary: Vec<u8>,
    last: bool,
    /// A buffer to deflate into, of an earlier block or new.
    output: Vec<u8>,
    result: SyncSender<io::Result<Compressed>>,
}

struct Compressed {
    data: Vec<u8>,
    crc: crc32fast::Hasher,
    /// The block's input, handed back to be filled again.
    input: Vec<u8>,
}

/// Deflates one block with a compressor of its own: one reused after a
/// reset gives other bytes (zlib-ng's deflate_medium, which zlib-rs
/// follows, reads stale window bytes after `deflateReset`).
fn deflate_block(level: Compression, job: Job) -> io::Result<Compressed> {
    let mut compress = Compress::new(level, false);
    if !job.dictionary.is_empty() {
        compress.set_dictionary(&job.dictionary).map_err(io::Error::other)?;
    }
    let input = job.input.as_slice();
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // The output space offered at each call is fixed here, not left to the
    // buffer at hand: a sync flush that ends exactly where the space does
    // is repeated on the next call (the zlib manual warns of it), so the
    // bytes depend on it. Half the input + 1 KiB first; with less than
    // 64 KiB left, twice as much or 256 KiB more than used, whichever is more.
    let mut data = job.output;
    let mut offered = input.len() / 2 + 1024;
    let mut used = 0;
    loop {
        if offered - used < 64 * 1024 {
            offered = (offered * 2).max(used + 256 * 1024);
        }
        data.resize(offered, 0);
        let (consumed, produced) = (compress.total_in(), compress.total_out());
        let status = compress
            .compress(&input[consumed as usize..], &mut data[used..], flush)
            .map_err(io::Error::other)?;
        used += (compress.total_out() - produced) as usize;
        let all_in = compress.total_in() as usize == input.len();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            // A sync flush is complete once all input is in and output space was left over.
            _ => all_in && used < offered,
        };
        if done {
            break;
        }
    }
    data.truncate(used);
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    Ok(Compressed {
        data,
        crc,
        input: job.input,
    })
}

/// A `Write` that gzips what it is given on `threads` threads.
///
/// Block and output buffers go round between the writer and the workers
/// instead of being new for each block: fresh memory costs a page fault
/// per 4 KiB, a tenth of the whole run on a small image.
pub struct ParallelGzWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    /// The last `DICTIONARY_SIZE` bytes of the block before `block`.
    dictionary: Vec<u8>,
    spare_blocks: Vec<Vec<u8>>,
    spare_outputs: Vec<Vec<u8>>,
    pending: VecDeque<Receiver<io::Result<Compressed>>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    crc: crc32fast::Hasher,
    length: u64,
}

impl<W: Write> ParallelGzWriter<W> {
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let level = Compression::new(level.min(9));
        // Header: no name, mtime 0, OS "unknown", so nothing of the host leaks in.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        let (jobs, queue) = sync_channel::<Job>(threads * 2);
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match queue.lock().map(|q| q.recv()) {
                            Ok(Ok(job)) => job,
                            _ => return,
                        };
                        let result = job.result.clone();
                        let _ = result.send(deflate_block(level, job));
                    }
                })
            })
            .collect();
        Ok(ParallelGzWriter {
            out,
            block: Vec::with_capacity(BLOCK_SIZE),
            dictionary: Vec::new(),
            spare_blocks: Vec::new(),
            spare_outputs: Vec::new(),
            pending: VecDeque::new(),
            jobs: Some(jobs),
            workers,
            threads,
            crc: crc32fast::Hasher::new(),
            length: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let input = std::mem::take(&mut self.block);
        let start = input.len().saturating_sub(DICTIONARY_SIZE);
        let dictionary = std::mem::replace(&mut self.dictionary, input[start..].to_vec());
        let (result, receiver) = sync_channel(1);
        let job = Job {
            input,
            dictionary,
            last,
            output: self.spare_outputs.pop().unwrap_or_default(),
            result,
        };
        self.jobs
            .as_ref()
            .expect("jobs are open until finish")
            .send(job)
            .map_err(|_| io::Error::other("compression threads stopped"))?;
        self.pending.push_back(receiver);
        if !last {
            // One block per thread and one waiting keep every thread busy;
            // the next block waits for the oldest to be done and takes its buffers.
            while self.pending.len() > self.threads {
                self.write_oldest()?;
            }
            self.block = self
                .spare_blocks
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE));
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(receiver) = self.pending.pop_front() else {
            return Ok(());
        };
        let Compressed { data, crc, mut input } = receiver
            .recv()
            .map_err(|_| io::Error::other("a compression thread died"))??;
        self.out.write_all(&data)?;
        self.crc.combine(&crc);
        input.clear();
        self.spare_outputs.push(data);
        self.spare_blocks.push(input);
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.length as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..take]);
        self.length += take as u64;
        if self.block.len() == BLOCK_SIZE {
            self.submit(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::{Command, Stdio};

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text with a counter.
        let mut data = Vec::with_capacity(len);
        let mut i = 0u64;
        while data.len() < len {
            data.extend_from_slice(format!("line {i} of the sample, {}\n", i * 7919 % 1000).as_bytes());
            i += 1;
        }
        data.truncate(len);
        data
    }

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        let mut writer = ParallelGzWriter::new(Vec::new(), 6, threads).unwrap();
        for chunk in data.chunks(7777) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn output_is_one_member_that_gzip_readers_accept() {
        for len in [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE + 12345] {
            let data = sample(len);
            let gz = compress(&data, 3);
            // flate2's single-member decoder reads it all: it is one member.
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut decoded)
                .unwrap();
            assert!(decoded == data, "round trip of {len} bytes");
            // And GNU gzip agrees, CRC and length included.
            let mut gzip = Command::new("gzip")
                .args(["-dc"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            gzip.stdin.take().unwrap().write_all(&gz).unwrap();
            let output = gzip.wait_with_output().unwrap();
            assert!(output.status.success(), "gzip -d failed for {len} bytes");
            assert!(output.stdout == data);
        }
    }

    /// A block whose sync-flushed deflate is exactly as long as the first
    /// output space offered, so the flush is repeated: the bytes depend on
    /// the space offered at each call, not only on the data.
    #[test]
    fn a_flush_that_fills_the_offered_space_gives_the_bytes_it_always_gave() {
        let mut state: u64 = 7;
        let mut data: Vec<u8> = (0..524_549)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        data.resize(BLOCK_SIZE, b'a');
        data.extend_from_slice(b"the last block");
        // Written before block and output buffers were reused (commit 65f8bc4).
        let expected = "sha256:220d7f020027e593139269e0b42fe0dc85a3228ddef40aa1ac411f223864508d";
        for threads in [1, 2] {
            let gz = compress(&data, threads);
            assert_eq!(gz.len(), 525_351, "{threads} threads");
            assert_eq!(bundlegen_protocol::digest::Sha256Digest::of(&gz).to_string(), expected);
        }
        // A buffer of an earlier block, larger than the space first offered, changes nothing.
        let block = |output: Vec<u8>| {
            let (result, _receiver) = sync_channel(1);
            let job = Job {
                input: data[..BLOCK_SIZE].to_vec(),
                dictionary: Vec::new(),
                last: false,
                output,
                result,
            };
            deflate_block(Compression::new(6), job).unwrap().data
        };
        let fresh = block(Vec::new());
        assert_eq!(fresh.len(), BLOCK_SIZE / 2 + 1024 + 5, "the flush marker is repeated");
        assert!(block(vec![0xa5; 4 * BLOCK_SIZE]) == fresh);
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let data = sample(5 * BLOCK_SIZE + 999);
        let one = compress(&data, 1);
        assert!(one == compress(&data, 2));
        assert!(one == compress(&data, 7));
        assert!(one.len() < data.len() / 3, "it compresses");
    }
}
