//! The ZIP subset a `.ralf` package is: a strict reader for untrusted
//! packages and a deterministic writer.
//!
//! Hand-written rather than a general ZIP crate because a package needs
//! exactly this subset, checked more strictly than a general reader does:
//! stored and deflated entries only, one disk, no encryption, unique and
//! relative names, entries' data inside the file and not overlapping one
//! another or the directory, and the byte offset of every entry's data, so
//! the box can loop-mount a stored EROFS blob where it lies. The writer
//! stores content blobs 4096-aligned (padding in an extra field), uses no
//! data descriptors (libralf refuses them), a fixed timestamp, and ZIP64
//! only where a size or offset needs it.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::digest::CountingWriter;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_DIRECTORY: u32 = 0x0605_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
/// The extra field the writer pads with to align an entry's data.
const ALIGNMENT_EXTRA: u16 = 0xa11e;
/// 1980-01-01 00:00:00, the earliest DOS time: no build time in packages.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;
/// Entries a package may have (a handful of blobs in practice).
pub const MAX_ENTRIES: usize = 4096;
const MAX_NAME: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Stored,
    Deflated,
}

/// One entry, as the central directory and its local header describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: String,
    pub method: Method,
    /// Where its (possibly compressed) data starts in the file.
    pub data_offset: u64,
    pub compressed_size: u64,
    pub size: u64,
    pub crc32: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("reading the package: {0}")]
    Io(#[from] io::Error),
    #[error("not a ZIP file: {0}")]
    NotZip(&'static str),
    #[error("entry {name:?}: {reason}")]
    Entry { name: String, reason: String },
    #[error("the ZIP directory is malformed: {0}")]
    Directory(String),
}

fn entry_error(name: &str, reason: impl Into<String>) -> ZipError {
    ZipError::Entry {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Little-endian fields of a record read from the file.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
}

fn read_at(file: &impl FileExt, at: u64, len: usize) -> Result<Vec<u8>, ZipError> {
    let mut buffer = vec![0u8; len];
    file.read_exact_at(&mut buffer, at)?;
    Ok(buffer)
}

/// Where the central directory is and how many entries it has.
struct Directory {
    offset: u64,
    size: u64,
    entries: u64,
}

fn find_directory(file: &impl FileExt, len: u64) -> Result<Directory, ZipError> {
    const EOCD: u64 = 22;
    if len < EOCD {
        return Err(ZipError::NotZip("too short"));
    }
    // The record is the last thing in the file, after at most a 64 KiB comment.
    let tail_len = len.min(EOCD + 0xffff);
    let tail = read_at(file, len - tail_len, tail_len as usize)?;
    let at = (0..=tail.len() - EOCD as usize)
        .rev()
        .find(|&i| {
            tail[i..i + 4] == END_OF_DIRECTORY.to_le_bytes()
                && i + EOCD as usize + usize::from(u16::from_le_bytes([tail[i + 20], tail[i + 21]])) == tail.len()
        })
        .ok_or(ZipError::NotZip("no end of central directory record"))?;
    let eocd_offset = len - tail_len + at as u64;
    let mut fields = Fields::new(&tail[at + 4..]);
    let (disk, directory_disk) = (fields.u16().unwrap(), fields.u16().unwrap());
    let (disk_entries, entries) = (fields.u16().unwrap(), fields.u16().unwrap());
    let (size, offset) = (fields.u32().unwrap(), fields.u32().unwrap());
    if disk != 0 || directory_disk != 0 || disk_entries != entries {
        return Err(ZipError::Directory("spans several disks".into()));
    }
    let mut directory = Directory {
        offset: offset.into(),
        size: size.into(),
        entries: entries.into(),
    };
    if entries == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff {
        // ZIP64: a locator right before the record points at the real one.
        let locator_at = eocd_offset
            .checked_sub(20)
            .ok_or(ZipError::Directory("no ZIP64 locator".into()))?;
        let locator = read_at(file, locator_at, 20)?;
        let mut fields = Fields::new(&locator);
        if fields.u32() != Some(ZIP64_LOCATOR) {
            return Err(ZipError::Directory("no ZIP64 locator".into()));
        }
        let (_disk, record_at, _disks) = (fields.u32().unwrap(), fields.u64().unwrap(), fields.u32().unwrap());
        if record_at.checked_add(56).is_none_or(|end| end > locator_at) {
            return Err(ZipError::Directory("ZIP64 record out of place".into()));
        }
        let record = read_at(file, record_at, 56)?;
        let mut fields = Fields::new(&record);
        if fields.u32() != Some(ZIP64_END) {
            return Err(ZipError::Directory("no ZIP64 end record".into()));
        }
        fields.take(12); // record size, versions
        let (disk, directory_disk) = (fields.u32().unwrap(), fields.u32().unwrap());
        let (disk_entries, entries) = (fields.u64().unwrap(), fields.u64().unwrap());
        if disk != 0 || directory_disk != 0 || disk_entries != entries {
            return Err(ZipError::Directory("spans several disks".into()));
        }
        directory = Directory {
            entries,
            size: fields.u64().unwrap(),
            offset: fields.u64().unwrap(),
        };
    }
    if directory.entries > MAX_ENTRIES as u64 {
        return Err(ZipError::Directory(format!("more than {MAX_ENTRIES} entries")));
    }
    if directory
        .offset
        .checked_add(directory.size)
        .is_none_or(|end| end > eocd_offset)
    {
        return Err(ZipError::Directory("the directory lies outside the file".into()));
    }
    Ok(directory)
}

/// A name that names a file inside the package: relative, no `.` or `..`
/// components, no empty ones, no backslashes.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("empty or over-long name".into());
    }
    if name.starts_with('/') || name.contains('\\') || name.contains('\0') {
        return Err("not a relative path".into());
    }
    if name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("has an empty, . or .. component".into());
    }
    Ok(())
}

/// Reads and checks the central directory and every local header.
pub fn read_entries(file: &impl FileExt, len: u64) -> Result<Vec<ZipEntry>, ZipError> {
    let directory = find_directory(file, len)?;
    if directory.size > (MAX_ENTRIES * (46 + MAX_NAME + 0x1_0000 * 2)) as u64 {
        return Err(ZipError::Directory("directory too large".into()));
    }
    let bytes = read_at(file, directory.offset, directory.size as usize)?;
    let mut fields = Fields::new(&bytes);
    let mut entries = Vec::with_capacity(directory.entries as usize);
    let mut names = HashSet::new();
    let truncated = || ZipError::Directory("truncated entry".into());
    for _ in 0..directory.entries {
        if fields.u32().ok_or_else(truncated)? != CENTRAL_HEADER {
            return Err(ZipError::Directory("bad central header signature".into()));
        }
        let header = fields.take(42).ok_or_else(truncated)?;
        let mut h = Fields::new(header);
        h.take(4); // versions
        let flags = h.u16().unwrap();
        let method = h.u16().unwrap();
        h.take(4); // time, date
        let crc32 = h.u32().unwrap();
        let mut compressed_size = u64::from(h.u32().unwrap());
        let mut size = u64::from(h.u32().unwrap());
        let (name_len, extra_len, comment_len) = (h.u16().unwrap(), h.u16().unwrap(), h.u16().unwrap());
        let disk = h.u16().unwrap();
        h.take(6); // attributes
        let mut local_offset = u64::from(h.u32().unwrap());
        let name = fields.take(name_len.into()).ok_or_else(truncated)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| ZipError::Directory("a name is not UTF-8".into()))?;
        let extra = fields.take(extra_len.into()).ok_or_else(truncated)?;
        fields.take(comment_len.into()).ok_or_else(truncated)?;
        check_name(&name).map_err(|reason| entry_error(&name, reason))?;
        if !names.insert(name.clone()) {
            return Err(entry_error(&name, "appears twice"));
        }
        if flags & 0x1 != 0 || flags & 0x40 != 0 {
            return Err(entry_error(&name, "encrypted"));
        }
        if disk != 0 && disk != 0xffff {
            return Err(entry_error(&name, "on another disk"));
        }
        let method = match method {
            STORED => Method::Stored,
            DEFLATED => Method::Deflated,
            other => {
                return Err(entry_error(
                    &name,
                    format!("compression method {other}: only stored and deflated"),
                ));
            }
        };
        // ZIP64 values follow in this order for each field that is all ones.
        let mut extras = Fields::new(extra);
        while let (Some(id), Some(len)) = (extras.u16(), extras.u16()) {
            let data = extras
                .take(len.into())
                .ok_or_else(|| entry_error(&name, "truncated extra field"))?;
            if id == ZIP64_EXTRA {
                let mut values = Fields::new(data);
                let bad = || entry_error(&name, "short ZIP64 field");
                if size == 0xffff_ffff {
                    size = values.u64().ok_or_else(bad)?;
                }
                if compressed_size == 0xffff_ffff {
                    compressed_size = values.u64().ok_or_else(bad)?;
                }
                if local_offset == 0xffff_ffff {
                    local_offset = values.u64().ok_or_else(bad)?;
                }
            }
        }
        if method == Method::Stored && size != compressed_size {
            return Err(entry_error(&name, "stored with two different sizes"));
        }
        let local = read_at(file, local_offset, 30).map_err(|_| entry_error(&name, "local header outside the file"))?;
        let mut l = Fields::new(&local);
        if l.u32() != Some(LOCAL_HEADER) {
            return Err(entry_error(&name, "bad local header signature"));
        }
        l.take(22);
        let (local_name_len, local_extra_len) = (l.u16().unwrap(), l.u16().unwrap());
        let local_name = read_at(file, local_offset + 30, local_name_len.into())?;
        if local_name != name.as_bytes() {
            return Err(entry_error(&name, "local header names another file"));
        }
        let data_offset = local_offset + 30 + u64::from(local_name_len) + u64::from(local_extra_len);
        if data_offset
            .checked_add(compressed_size)
            .is_none_or(|end| end > directory.offset)
        {
            return Err(entry_error(&name, "data runs past the directory"));
        }
        entries.push(ZipEntry {
            name,
            method,
            data_offset,
            compressed_size,
            size,
            crc32,
        });
    }
    // No two entries may share bytes (overlapping entries are a ZIP bomb's trick).
    let mut spans: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| (e.data_offset, e.data_offset + e.compressed_size))
        .collect();
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(ZipError::Directory("entries overlap".into()));
    }
    Ok(entries)
}

/// Reads an entry's data (inflating it if deflated), at most `limit` bytes
/// of output, and checks its size and CRC.
pub fn read_entry(file: &impl FileExt, entry: &ZipEntry, limit: u64) -> Result<Vec<u8>, ZipError> {
    if entry.size > limit {
        return Err(entry_error(
            &entry.name,
            format!("{} bytes, more than {limit}", entry.size),
        ));
    }
    let raw = read_at(file, entry.data_offset, entry.compressed_size as usize)?;
    let data = match entry.method {
        Method::Stored => raw,
        Method::Deflated => {
            let mut out = Vec::with_capacity(entry.size as usize);
            flate2::read::DeflateDecoder::new(&raw[..])
                .take(entry.size + 1)
                .read_to_end(&mut out)
                .map_err(|e| entry_error(&entry.name, format!("cannot inflate: {e}")))?;
            out
        }
    };
    if data.len() as u64 != entry.size {
        return Err(entry_error(&entry.name, "size differs from the directory's"));
    }
    if crc32fast::hash(&data) != entry.crc32 {
        return Err(entry_error(&entry.name, "CRC mismatch"));
    }
    Ok(data)
}

/// Writes a ZIP file entry by entry; [`finish`](Self::finish) writes the
/// directory. Nothing in it depends on the time or the machine.
pub struct ZipWriter<W: Write + Seek> {
    out: W,
    /// Values from this on are written as ZIP64 (4 GiB; lower in tests).
    zip64_from: u64,
    position: u64,
    written: Vec<ZipEntry>,
    local_offsets: Vec<u64>,
}

impl<W: Write + Seek> ZipWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let position = out.stream_position()?;
        Ok(ZipWriter {
            out,
            zip64_from: 0xffff_ffff,
            position,
            written: Vec::new(),
            local_offsets: Vec::new(),
        })
    }

    fn needs_zip64(&self, value: u64) -> bool {
        value >= self.zip64_from
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Adds `size` bytes from `data`, stored, with the data starting at a
    /// multiple of `align` (1 for none). Returns the data's offset.
    pub fn add_stored(&mut self, name: &str, data: &mut impl Read, size: u64, align: u64) -> io::Result<u64> {
        self.add(name, Method::Stored, size, align, |out| {
            let mut hasher = crc32fast::Hasher::new();
            let copied = io::copy(
                &mut data.take(size),
                &mut HashingWrite {
                    out,
                    hasher: &mut hasher,
                },
            )?;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name}: source shorter than {size} bytes"),
                ));
            }
            Ok((size, hasher.finalize()))
        })
    }

    /// Adds `data` deflated.
    pub fn add_deflated(&mut self, name: &str, data: &mut impl Read, size: u64) -> io::Result<u64> {
        self.add(name, Method::Deflated, size, 1, |out| {
            let mut hasher = crc32fast::Hasher::new();
            let mut encoder = flate2::write::DeflateEncoder::new(CountingWriter::new(out), flate2::Compression::new(6));
            let copied = io::copy(
                &mut data.take(size),
                &mut HashingWrite {
                    out: &mut encoder,
                    hasher: &mut hasher,
                },
            )?;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name}: source shorter than {size} bytes"),
                ));
            }
            let counter = encoder.finish()?;
            Ok((counter.count(), hasher.finalize()))
        })
    }

    fn add(
        &mut self,
        name: &str,
        method: Method,
        size: u64,
        align: u64,
        write_data: impl FnOnce(&mut W) -> io::Result<(u64, u32)>,
    ) -> io::Result<u64> {
        check_name(name).map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {reason}")))?;
        let local_offset = self.position;
        // Reserve ZIP64 sizes when the data might reach 4 GiB (deflate can grow a little).
        let zip64 = self.needs_zip64(size.saturating_add(size / 1000 + 1024));
        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
            extra.extend_from_slice(&16u16.to_le_bytes());
            extra.extend_from_slice(&[0u8; 16]);
        }
        let unpadded = local_offset + 30 + name.len() as u64 + extra.len() as u64;
        let mut padding = unpadded.next_multiple_of(align.max(1)) - unpadded;
        if padding > 0 && padding < 4 {
            padding += align;
        }
        if padding > 0 {
            extra.extend_from_slice(&ALIGNMENT_EXTRA.to_le_bytes());
            extra.extend_from_slice(&((padding - 4) as u16).to_le_bytes());
            extra.resize(extra.len() + padding as usize - 4, 0);
        }
        let method_code = if method == Method::Stored { STORED } else { DEFLATED };
        let mut header = Vec::with_capacity(30 + name.len() + extra.len());
        header.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        header.extend_from_slice(&(if zip64 { 45u16 } else { 20 }).to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // flags: no data descriptor
        header.extend_from_slice(&method_code.to_le_bytes());
        header.extend_from_slice(&DOS_TIME.to_le_bytes());
        header.extend_from_slice(&DOS_DATE.to_le_bytes());
        header.extend_from_slice(&[0u8; 12]); // crc and sizes, written once known
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        header.extend_from_slice(&extra);
        self.put(&header)?;
        let data_offset = self.position;
        let (compressed_size, crc32) = write_data(&mut self.out)?;
        self.position += compressed_size;
        // Patch the CRC and sizes into the local header.
        let mut known = Vec::with_capacity(12);
        known.extend_from_slice(&crc32.to_le_bytes());
        if zip64 {
            known.extend_from_slice(&[0xff; 8]);
        } else {
            known.extend_from_slice(&(compressed_size as u32).to_le_bytes());
            known.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.out.seek(SeekFrom::Start(local_offset + 14))?;
        self.out.write_all(&known)?;
        if zip64 {
            self.out
                .seek(SeekFrom::Start(local_offset + 30 + name.len() as u64 + 4))?;
            self.out.write_all(&size.to_le_bytes())?;
            self.out.write_all(&compressed_size.to_le_bytes())?;
        }
        self.out.seek(SeekFrom::Start(self.position))?;
        self.written.push(ZipEntry {
            name: name.to_string(),
            method,
            data_offset,
            compressed_size,
            size,
            crc32,
        });
        self.local_offsets.push(local_offset);
        Ok(data_offset)
    }

    /// Writes the central directory and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let directory_offset = self.position;
        let entries = std::mem::take(&mut self.written);
        let offsets = std::mem::take(&mut self.local_offsets);
        let zip64_from = self.zip64_from;
        for (entry, local_offset) in entries.iter().zip(offsets) {
            let mut zip64 = Vec::new();
            let mut field = |value: u64| {
                if value >= zip64_from {
                    zip64.extend_from_slice(&value.to_le_bytes());
                    0xffff_ffffu32
                } else {
                    value as u32
                }
            };
            let size = field(entry.size);
            let compressed = field(entry.compressed_size);
            let offset = field(local_offset);
            let mut extra = Vec::new();
            if !zip64.is_empty() {
                extra.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
                extra.extend_from_slice(&(zip64.len() as u16).to_le_bytes());
                extra.extend_from_slice(&zip64);
            }
            let version: u16 = if extra.is_empty() { 20 } else { 45 };
            let mut header = Vec::new();
            header.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
            header.extend_from_slice(&((3 << 8) | version).to_le_bytes()); // made by Unix
            header.extend_from_slice(&version.to_le_bytes());
            header.extend_from_slice(&0u16.to_le_bytes());
            header.extend_from_slice(
                &(if entry.method == Method::Stored {
                    STORED
                } else {
                    DEFLATED
                })
                .to_le_bytes(),
            );
            header.extend_from_slice(&DOS_TIME.to_le_bytes());
            header.extend_from_slice(&DOS_DATE.to_le_bytes());
            header.extend_from_slice(&entry.crc32.to_le_bytes());
            header.extend_from_slice(&compressed.to_le_bytes());
            header.extend_from_slice(&size.to_le_bytes());
            header.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
            header.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            header.extend_from_slice(&[0u8; 4]); // comment length, disk
            header.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            header.extend_from_slice(&((0o100644u32) << 16).to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            header.extend_from_slice(entry.name.as_bytes());
            header.extend_from_slice(&extra);
            self.put(&header)?;
        }
        let directory_size = self.position - directory_offset;
        let count = entries.len() as u64;
        let zip64 = self.needs_zip64(directory_offset) || self.needs_zip64(directory_size) || count >= 0xffff;
        if zip64 {
            let record_offset = self.position;
            let mut record = Vec::new();
            record.extend_from_slice(&ZIP64_END.to_le_bytes());
            record.extend_from_slice(&44u64.to_le_bytes());
            record.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
            record.extend_from_slice(&45u16.to_le_bytes());
            record.extend_from_slice(&[0u8; 8]); // disks
            record.extend_from_slice(&count.to_le_bytes());
            record.extend_from_slice(&count.to_le_bytes());
            record.extend_from_slice(&directory_size.to_le_bytes());
            record.extend_from_slice(&directory_offset.to_le_bytes());
            record.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
            record.extend_from_slice(&0u32.to_le_bytes());
            record.extend_from_slice(&record_offset.to_le_bytes());
            record.extend_from_slice(&1u32.to_le_bytes());
            self.put(&record)?;
        }
        let small = |value: u64, max: u64| if zip64 { max } else { value };
        let mut end = Vec::new();
        end.extend_from_slice(&END_OF_DIRECTORY.to_le_bytes());
        end.extend_from_slice(&[0u8; 4]);
        end.extend_from_slice(&(small(count, 0xffff) as u16).to_le_bytes());
        end.extend_from_slice(&(small(count, 0xffff) as u16).to_le_bytes());
        end.extend_from_slice(&(small(directory_size, 0xffff_ffff) as u32).to_le_bytes());
        end.extend_from_slice(&(small(directory_offset, 0xffff_ffff) as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.put(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

struct HashingWrite<'a, W> {
    out: &'a mut W,
    hasher: &'a mut crc32fast::Hasher,
}

impl<W: Write> Write for HashingWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::process::Command;

    use super::*;

    fn write_sample(path: &std::path::Path) -> Vec<ZipEntry> {
        let file = File::create(path).unwrap();
        let mut zip = ZipWriter::new(file).unwrap();
        zip.add_stored("oci-layout", &mut &b"{\"imageLayoutVersion\":\"1.0.0\"}"[..], 30, 1)
            .unwrap();
        let blob: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let offset = zip
            .add_stored("blobs/sha256/aa", &mut &blob[..], blob.len() as u64, 4096)
            .unwrap();
        assert_eq!(offset % 4096, 0);
        let text = b"hello hello hello hello hello".repeat(100);
        zip.add_deflated("blobs/sha256/bb", &mut &text[..], text.len() as u64)
            .unwrap();
        zip.finish().unwrap();
        let file = File::open(path).unwrap();
        read_entries(&file, file.metadata().unwrap().len()).unwrap()
    }

    #[test]
    fn written_files_read_back_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ralf");
        let entries = write_sample(&path);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].data_offset % 4096, 0);
        assert_eq!(entries[2].method, Method::Deflated);
        let file = File::open(&path).unwrap();
        assert_eq!(
            read_entry(&file, &entries[0], 100).unwrap(),
            b"{\"imageLayoutVersion\":\"1.0.0\"}"
        );
        assert_eq!(read_entry(&file, &entries[2], 1 << 20).unwrap().len(), 2900);
        assert!(read_entry(&file, &entries[2], 100).is_err(), "the limit holds");
    }

    #[test]
    fn unzip_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.zip");
        write_sample(&path);
        let Ok(output) = Command::new("unzip").arg("-t").arg(&path).output() else {
            eprintln!("skipped: no unzip here");
            return;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && text.contains("No errors detected"), "{text}");
    }

    #[test]
    fn same_inputs_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        write_sample(&dir.path().join("a"));
        write_sample(&dir.path().join("b"));
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            std::fs::read(dir.path().join("b")).unwrap()
        );
    }

    #[test]
    fn hostile_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ralf");
        write_sample(&path);
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8]| {
            let path = dir.path().join("bad");
            std::fs::write(&path, bytes).unwrap();
            let file = File::open(&path).unwrap();
            read_entries(&file, bytes.len() as u64)
        };
        assert!(check(&good[..good.len() - 1]).is_err(), "truncated end record");
        assert!(check(b"not a zip at all, just some bytes here").is_err());
        // Rename the second entry to the first's name, in the directory.
        let directory = good.windows(4).position(|w| w == CENTRAL_HEADER.to_le_bytes()).unwrap();
        let mut twice = good.clone();
        let second = directory + 46 + "oci-layout".len();
        twice[second + 46..second + 46 + 10].copy_from_slice(b"oci-layout");
        twice[second + 28..second + 30].copy_from_slice(&10u16.to_le_bytes());
        assert!(check(&twice).is_err(), "duplicate or mismatched names");
        // A name with a `..` component.
        let mut escape = good.clone();
        escape[directory + 46..directory + 46 + 10].copy_from_slice(b"../layout!");
        assert!(check(&escape).is_err());
        // An entry whose data runs into the directory.
        let mut long = good.clone();
        long[directory + 20..directory + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        long[directory + 24..directory + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check(&long).is_err());
    }

    #[test]
    fn zip64_offsets_and_sizes_round_trip() {
        // The ZIP64 records as a 4 GiB package has them, with the threshold
        // lowered so the test writes kilobytes, not gigabytes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.ralf");
        let file = File::create(&path).unwrap();
        let mut zip = ZipWriter::new(file).unwrap();
        zip.zip64_from = 1000;
        let blob: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        zip.add_stored("blobs/sha256/big", &mut &blob[..], blob.len() as u64, 4096)
            .unwrap();
        zip.add_stored("index.json", &mut &b"{}"[..], 2, 1).unwrap();
        let text = vec![b'a'; 3000];
        zip.add_deflated("blobs/sha256/text", &mut &text[..], text.len() as u64)
            .unwrap();
        zip.finish().unwrap();
        let file = File::open(&path).unwrap();
        let entries = read_entries(&file, file.metadata().unwrap().len()).unwrap();
        assert_eq!(entries[0].size, 5000);
        assert_eq!(read_entry(&file, &entries[0], 10_000).unwrap(), blob);
        assert!(entries[1].data_offset > 5000, "an offset past the threshold");
        assert_eq!(read_entry(&file, &entries[1], 10).unwrap(), b"{}");
        assert_eq!(read_entry(&file, &entries[2], 10_000).unwrap(), text);
        if let Ok(output) = Command::new("unzip").arg("-t").arg(&path).output() {
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success() && text.contains("No errors detected"), "{text}");
        }
    }
}
