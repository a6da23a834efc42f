//! A strict, bounded tar reader for untrusted archives (image layers, bundles).
//!
//! Reads v7, ustar, GNU (long names, base-256 numbers) and PAX archives. Unlike
//! the `tar` crate's reader it bounds every extension record it buffers (a
//! hostile GNU long name cannot exhaust memory), verifies header checksums,
//! rejects sparse files instead of mis-reading them, and reports the byte
//! offset of each entry's data (used to read blobs straight out of an archive).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

const BLOCK: u64 = 512;
/// Largest GNU long name / long link record accepted.
pub const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest PAX extended header accepted.
pub const MAX_PAX_HEADER: u64 = 1024 * 1024;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Dir,
    Fifo,
}

/// One entry's header, with extensions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: PathBuf,
    pub kind: TarKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub link_target: Option<PathBuf>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Offset of the entry's data from the start of the stream.
    pub data_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("reading tar stream at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("tar header at byte {offset}: {reason}")]
    BadHeader { offset: u64, reason: String },
    #[error("tar entry {path:?} at byte {offset}: {reason}")]
    Unsupported { offset: u64, path: PathBuf, reason: String },
}

/// Streams entries out of a tar archive. Call [`TarReader::next_entry`], read the
/// entry's data with [`TarReader::data`] (unread data is skipped), repeat.
pub struct TarReader<R> {
    inner: R,
    offset: u64,
    /// Data bytes of the current entry not yet read, then its padding.
    remaining: u64,
    padding: u64,
    global_pax: BTreeMap<String, Vec<u8>>,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            global_pax: BTreeMap::new(),
            done: false,
        }
    }

    /// Bytes consumed from the underlying stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Gives back the underlying reader, positioned after what was consumed
    /// (callers verifying a digest drain it to EOF).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reader over the current entry's data.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { reader: self }
    }

    fn io_error(&self, source: io::Error) -> TarError {
        TarError::Io {
            offset: self.offset,
            source,
        }
    }

    fn skip(&mut self, mut count: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while count > 0 {
            let want = count.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want]).map_err(|e| self.io_error(e))?;
            if got == 0 {
                return Err(self.io_error(io::ErrorKind::UnexpectedEof.into()));
            }
            self.offset += got as u64;
            count -= got as u64;
        }
        Ok(())
    }

    /// Skips `count` bytes; `Ok(false)` if the stream ended exactly at the
    /// start (nothing left at all).
    fn skip_to_eof_or(&mut self, count: u64) -> Result<bool, TarError> {
        if count == 0 {
            return Ok(true);
        }
        let mut buf = [0u8; BLOCK as usize];
        let first = self
            .inner
            .read(&mut buf[..count as usize])
            .map_err(|e| self.io_error(e))?;
        if first == 0 {
            return Ok(false);
        }
        self.offset += first as u64;
        self.skip(count - first as u64)?;
        Ok(true)
    }

    /// Reads a whole block; `Ok(false)` on a clean EOF before any byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK as usize]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < block.len() {
            let got = self.inner.read(&mut block[filled..]).map_err(|e| self.io_error(e))?;
            if got == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(self.io_error(io::ErrorKind::UnexpectedEof.into()));
            }
            filled += got;
            self.offset += got as u64;
        }
        Ok(true)
    }

    fn read_record(&mut self, size: u64, max: u64, what: &str, header_offset: u64) -> Result<Vec<u8>, TarError> {
        if size > max {
            return Err(TarError::BadHeader {
                offset: header_offset,
                reason: format!("{what} of {size} bytes is larger than the {max} allowed"),
            });
        }
        let mut data = vec![0u8; size as usize];
        self.inner.read_exact(&mut data).map_err(|e| self.io_error(e))?;
        self.offset += size;
        self.skip(padding_of(size))?;
        Ok(data)
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let (remaining, padding) = (self.remaining, self.padding);
        self.remaining = 0;
        self.padding = 0;
        self.skip(remaining)?;
        // umoci 0.4.7 writes layers that end right after the last entry's
        // data, without padding or end blocks; accept EOF there, as umoci does.
        if !self.skip_to_eof_or(padding)? {
            self.done = true;
            return Ok(None);
        }

        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut block = [0u8; BLOCK as usize];
        loop {
            let header_offset = self.offset;
            if !self.read_block(&mut block)? {
                // EOF without end-of-archive blocks: accepted, as GNU tar does.
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                // End of archive: one or two zero blocks. Consume the second if present.
                let mut second = [0u8; BLOCK as usize];
                let _ = self.read_block(&mut second)?;
                self.done = true;
                return Ok(None);
            }
            let header = RawHeader::parse(&block, header_offset)?;
            match header.typeflag {
                b'L' => {
                    long_name = Some(trim_nul(self.read_record(
                        header.size,
                        MAX_LONG_NAME,
                        "GNU long name",
                        header_offset,
                    )?))
                }
                b'K' => {
                    long_link = Some(trim_nul(self.read_record(
                        header.size,
                        MAX_LONG_NAME,
                        "GNU long link",
                        header_offset,
                    )?))
                }
                b'x' => {
                    let data = self.read_record(header.size, MAX_PAX_HEADER, "PAX header", header_offset)?;
                    pax.extend(parse_pax(&data, header_offset)?);
                }
                b'g' => {
                    let data = self.read_record(header.size, MAX_PAX_HEADER, "PAX global header", header_offset)?;
                    self.global_pax.extend(parse_pax(&data, header_offset)?);
                }
                b'V' => {
                    // Volume label: no file, skip its data.
                    self.skip(header.size + padding_of(header.size))?;
                }
                _ => {
                    let mut merged = self.global_pax.clone();
                    merged.extend(pax);
                    let mut entry = header.into_entry(long_name, long_link, &merged, self.offset)?;
                    // Only regular files have data; anything stored after another
                    // kind of header (allowed for hardlinks) is skipped.
                    if entry.kind == TarKind::File {
                        self.remaining = entry.size;
                        self.padding = padding_of(entry.size);
                    } else {
                        self.padding = entry.size + padding_of(entry.size);
                        entry.size = 0;
                    }
                    return Ok(Some(entry));
                }
            }
        }
    }
}

fn padding_of(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Reader over the current entry's data.
pub struct EntryData<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reader = &mut *self.reader;
        if reader.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(reader.remaining.min(usize::MAX as u64) as usize);
        let got = reader.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("tar entry data truncated at byte {}", reader.offset),
            ));
        }
        reader.offset += got as u64;
        reader.remaining -= got as u64;
        Ok(got)
    }
}

struct RawHeader {
    offset: u64,
    name: Vec<u8>,
    mode: u64,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link_name: Vec<u8>,
    dev_major: u64,
    dev_minor: u64,
}

fn field(block: &[u8], start: usize, len: usize) -> &[u8] {
    let raw = &block[start..start + len];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(len);
    &raw[..end]
}

fn parse_number(raw: &[u8], what: &str, offset: u64) -> Result<u64, TarError> {
    let bad = |reason: String| TarError::BadHeader { offset, reason };
    if let Some(&first) = raw.first()
        && first & 0x80 != 0
    {
        // GNU base-256: big-endian, first byte's top bit is the marker.
        if first & 0x40 != 0 {
            return Err(bad(format!("negative {what}")));
        }
        let mut value: u64 = u64::from(first & 0x3f);
        for &b in &raw[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad(format!("{what} overflows")))?;
        }
        return Ok(value);
    }
    let text = raw.iter().take_while(|&&b| b != 0).copied().collect::<Vec<u8>>();
    let text = std::str::from_utf8(&text).map_err(|_| bad(format!("{what} is not octal")))?;
    let text = text.trim_matches(' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| bad(format!("{what} {text:?} is not octal")))
}

impl RawHeader {
    fn parse(block: &[u8; BLOCK as usize], offset: u64) -> Result<RawHeader, TarError> {
        let stored = parse_number(&block[148..156], "checksum", offset)?;
        let unsigned: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) })
            .sum();
        let signed: i64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(b as i8)
                }
            })
            .sum();
        if stored != unsigned && stored as i64 != signed {
            return Err(TarError::BadHeader {
                offset,
                reason: format!(
                    "checksum mismatch (stored {stored}, computed {unsigned}): not a tar archive or corrupt"
                ),
            });
        }
        let magic = &block[257..263];
        let is_ustar = magic == b"ustar\0";
        let mut name = field(block, 0, 100).to_vec();
        if is_ustar {
            let prefix = field(block, 345, 155);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        Ok(RawHeader {
            offset,
            name,
            mode: parse_number(&block[100..108], "mode", offset)?,
            uid: parse_number(&block[108..116], "uid", offset)?,
            gid: parse_number(&block[116..124], "gid", offset)?,
            size: parse_number(&block[124..136], "size", offset)?,
            mtime: parse_number(&block[136..148], "mtime", offset)?,
            typeflag: block[156],
            link_name: field(block, 157, 100).to_vec(),
            dev_major: parse_number(&block[329..337], "device major", offset)?,
            dev_minor: parse_number(&block[337..345], "device minor", offset)?,
        })
    }

    fn into_entry(
        self,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: &BTreeMap<String, Vec<u8>>,
        data_offset: u64,
    ) -> Result<TarEntry, TarError> {
        let offset = self.offset;
        let mut name = long_name.unwrap_or(self.name);
        let mut link = long_link.unwrap_or(self.link_name);
        let mut size = self.size;
        let mut uid = self.uid;
        let mut gid = self.gid;
        let mut mtime = self.mtime as i64;
        let mut xattrs = BTreeMap::new();
        let pax_number = |key: &str, value: &[u8]| -> Result<u64, TarError> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| TarError::BadHeader {
                    offset,
                    reason: format!("PAX {key} value is not a number"),
                })
        };
        for (key, value) in pax {
            match key.as_str() {
                "path" => name = value.clone(),
                "linkpath" => link = value.clone(),
                "size" => size = pax_number(key, value)?,
                "uid" => uid = pax_number(key, value)?,
                "gid" => gid = pax_number(key, value)?,
                "mtime" => {
                    // Seconds with an optional fraction; the fraction is dropped.
                    let text = std::str::from_utf8(value).unwrap_or("");
                    let whole = text.split('.').next().unwrap_or("");
                    mtime = whole.parse::<i64>().map_err(|_| TarError::BadHeader {
                        offset,
                        reason: "PAX mtime is not a number".into(),
                    })?;
                }
                key if key.starts_with("SCHILY.xattr.") => {
                    xattrs.insert(key["SCHILY.xattr.".len()..].to_string(), value.clone());
                }
                key if key.starts_with("GNU.sparse.") => {
                    return Err(TarError::Unsupported {
                        offset,
                        path: bytes_to_path(name),
                        reason: "sparse files are not supported".into(),
                    });
                }
                _ => {}
            }
        }
        let path = bytes_to_path(name);
        let kind = match self.typeflag {
            b'0' | b'\0' | b'7' if path.as_os_str().as_encoded_bytes().ends_with(b"/") => TarKind::Dir,
            b'0' | b'\0' | b'7' => TarKind::File,
            b'1' => TarKind::HardLink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::CharDevice,
            b'4' => TarKind::BlockDevice,
            b'5' => TarKind::Dir,
            b'6' => TarKind::Fifo,
            b'S' => {
                return Err(TarError::Unsupported {
                    offset,
                    path,
                    reason: "GNU sparse files are not supported".into(),
                });
            }
            other => {
                return Err(TarError::Unsupported {
                    offset,
                    path,
                    reason: format!("unknown entry type {:?}", other as char),
                });
            }
        };
        let link_target = matches!(kind, TarKind::HardLink | TarKind::Symlink).then(|| bytes_to_path(link));
        let small = |value: u64, what: &str| {
            u32::try_from(value).map_err(|_| TarError::BadHeader {
                offset,
                reason: format!("{what} {value} out of range"),
            })
        };
        Ok(TarEntry {
            mode: (self.mode & 0o7777) as u32,
            uid,
            gid,
            mtime,
            size,
            link_target,
            dev_major: small(self.dev_major, "device major")?,
            dev_minor: small(self.dev_minor, "device minor")?,
            xattrs,
            data_offset,
            kind,
            path,
        })
    }
}

fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// Parses PAX records: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn parse_pax(mut data: &[u8], offset: u64) -> Result<BTreeMap<String, Vec<u8>>, TarError> {
    let bad = |reason: &str| TarError::BadHeader {
        offset,
        reason: format!("malformed PAX record: {reason}"),
    };
    let mut records = BTreeMap::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let space = data.iter().position(|&b| b == b' ').ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad length"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("length does not match"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(|| bad("no '='"))?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad("key is not UTF-8"))?;
        records.insert(key.to_string(), record[eq + 1..].to_vec());
        data = &data[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests;
