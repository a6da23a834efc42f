//! Where a [`MemoryRootfs`](super::MemoryRootfs) keeps file contents: one
//! stream of bytes, appended to, read back by offset. Its first bytes are
//! in memory, the rest in an unnamed file (sequential writes, never synced,
//! gone when closed).
//!
//! Memory first because most app images fit and are read back at once: no
//! system call per write or read, no page-cache bookkeeping, and the archive
//! reads the bytes where they are. The file keeps a large image's memory
//! bounded.

use std::fs::File;
use std::io::{self, BufWriter, Cursor, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bundlegen_protocol::digest::CountingWriter;

/// The bytes held in memory before the rest goes to the file: all of a
/// small app image, a bounded share of a large one (per job, in the service).
pub(super) const IN_MEMORY: usize = 16 << 20;

pub(super) struct Spool {
    /// Reserved whole at the start, so it never moves or grows: pages not
    /// written to are never touched.
    memory: Vec<u8>,
    file: Arc<File>,
    writer: CountingWriter<BufWriter<File>>,
}

impl Spool {
    /// An empty spool holding its first `in_memory` bytes in memory and
    /// the rest in a file in `dir`.
    pub(super) fn new(dir: &Path, in_memory: usize) -> io::Result<Spool> {
        let file = tempfile::tempfile_in(dir)?;
        // Large enough to make few writes, small enough to touch few pages.
        let writer = BufWriter::with_capacity(256 << 10, file.try_clone()?);
        Ok(Spool {
            memory: Vec::with_capacity(in_memory),
            file: Arc::new(file),
            writer: CountingWriter::new(writer),
        })
    }

    /// Bytes appended so far: the offset of the next.
    pub(super) fn len(&self) -> u64 {
        self.memory.len() as u64 + self.writer.count()
    }

    /// The bytes at `offset..offset + len`, those in memory borrowed.
    /// What is in the file must have been flushed.
    pub(super) fn read(&self, offset: u64, len: u64) -> SpoolReader<&[u8]> {
        self.reader(offset, len, |memory| memory)
    }

    /// [`Spool::read`] for a reader that outlives the borrow: the bytes in
    /// memory are copied.
    pub(super) fn read_owned(&self, offset: u64, len: u64) -> SpoolReader<Vec<u8>> {
        self.reader(offset, len, <[u8]>::to_vec)
    }

    fn reader<'a, M: AsRef<[u8]>>(
        &'a self,
        offset: u64,
        len: u64,
        memory: impl FnOnce(&'a [u8]) -> M,
    ) -> SpoolReader<M> {
        // Memory is full before anything goes to the file: the bytes below
        // `held` are all in memory, those from it on all in the file.
        let held = self.memory.len() as u64;
        let in_memory = offset.min(held) as usize..(offset + len).min(held) as usize;
        let from_file = len - in_memory.len() as u64;
        Cursor::new(memory(&self.memory[in_memory])).chain(FileRange {
            file: self.file.clone(),
            offset: offset.max(held) - held,
            left: from_file,
        })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.memory.capacity() - self.memory.len();
        if room > 0 {
            let n = buf.len().min(room);
            self.memory.extend_from_slice(&buf[..n]);
            return Ok(n);
        }
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// One file's bytes in the spool: those in memory, then those in the file.
pub(super) type SpoolReader<M> = io::Chain<Cursor<M>, FileRange>;

/// Bytes of the spool file, read with positioned reads.
pub(super) struct FileRange {
    file: Arc<File>,
    offset: u64,
    left: u64,
}

impl FileRange {
    /// Bytes left to read.
    pub(super) fn left(&self) -> u64 {
        self.left
    }
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..want], self.offset)?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += got as u64;
        self.left -= got as u64;
        Ok(got)
    }
}
