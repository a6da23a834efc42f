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
    input: Arc<Vec<u8>>,
    dictionary: Option<Arc<Vec<u8>>>,
    last: bool,
    result: SyncSender<io::Result<Compressed>>,
}

struct Compressed {
    data: Vec<u8>,
    crc: crc32fast::Hasher,
}

fn deflate_block(job: &Job, level: Compression) -> io::Result<Compressed> {
    let mut compress = Compress::new(level, false);
    if let Some(dictionary) = &job.dictionary {
        let start = dictionary.len().saturating_sub(DICTIONARY_SIZE);
        compress
            .set_dictionary(&dictionary[start..])
            .map_err(io::Error::other)?;
    }
    let input = job.input.as_slice();
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut data = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        if data.capacity() - data.len() < 64 * 1024 {
            data.reserve(256 * 1024);
        }
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&input[consumed..], &mut data, flush)
            .map_err(io::Error::other)?;
        let all_in = compress.total_in() as usize == input.len();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            // A sync flush is complete once all input is in and output space was left over.
            _ => all_in && data.len() < data.capacity(),
        };
        if done {
            break;
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    Ok(Compressed { data, crc })
}

/// A `Write` that gzips what it is given on `threads` threads.
pub struct ParallelGzWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    previous: Option<Arc<Vec<u8>>>,
    pending: VecDeque<Receiver<io::Result<Compressed>>>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
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
                        let _ = job.result.send(deflate_block(&job, level));
                    }
                })
            })
            .collect();
        Ok(ParallelGzWriter {
            out,
            block: Vec::with_capacity(BLOCK_SIZE),
            previous: None,
            pending: VecDeque::new(),
            jobs: Some(jobs),
            workers,
            max_pending: threads * 2,
            crc: crc32fast::Hasher::new(),
            length: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let input = Arc::new(std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE)));
        let (result, receiver) = sync_channel(1);
        let job = Job {
            input: input.clone(),
            dictionary: self.previous.take(),
            last,
            result,
        };
        self.jobs
            .as_ref()
            .expect("jobs are open until finish")
            .send(job)
            .map_err(|_| io::Error::other("compression threads stopped"))?;
        self.previous = Some(input);
        self.pending.push_back(receiver);
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(receiver) = self.pending.pop_front() else {
            return Ok(());
        };
        let compressed = receiver
            .recv()
            .map_err(|_| io::Error::other("a compression thread died"))??;
        self.out.write_all(&compressed.data)?;
        self.crc.combine(&compressed.crc);
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

    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let data = sample(5 * BLOCK_SIZE + 999);
        let one = compress(&data, 1);
        assert!(one == compress(&data, 2));
        assert!(one == compress(&data, 7));
        assert!(one.len() < data.len() / 3, "it compresses");
    }
}
