//! Reading EROFS images: what a package's EROFS content holds, for
//! `bundlegen package --depends-on` (which files and libraries a base or
//! runtime package provides) and for tests without root. Reads what this
//! writer and `mkfs.erofs` write: compact and extended inodes, flat plain
//! and inline data, full and compact compression indexes, lz4 and zstd,
//! 4 KiB blocks. Images are untrusted: every offset is checked, directory
//! loops are refused, and reads are bounded by the caller's limit.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::*;
use super::lz4;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the image: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an EROFS image this reader knows: {0}")]
    Unsupported(String),
    #[error("inode {nid}: {reason}")]
    Corrupt { nid: u64, reason: String },
    #[error("the image holds more than {0} bytes of files")]
    TooLarge(u64),
}

fn corrupt(nid: u64, reason: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        nid,
        reason: reason.into(),
    }
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Device,
    Socket,
}

/// An inode's header facts.
#[derive(Debug, Clone)]
pub struct InodeInfo {
    pub nid: u64,
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    pub nlink: u32,
    layout: u16,
    /// Where the data (or index) after the header and xattrs starts.
    data_at: u64,
    union: u32,
}

/// A logical cluster's index entry: type, cluster offset (or distance for
/// NONHEAD) and physical block address (heads).
type Lcluster = (u16, u16, u32);

/// An opened image at `base` in `file`.
pub struct ErofsImage<'a, F: FileExt> {
    file: &'a F,
    base: u64,
    len: u64,
    meta_blkaddr: u64,
    pub root_nid: u64,
    zero_padding: bool,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

impl<'a, F: FileExt> ErofsImage<'a, F> {
    /// Opens the image of `len` bytes at `base` in `file`.
    pub fn open(file: &'a F, base: u64, len: u64) -> Result<Self, ReadError> {
        let mut sb = [0u8; 128];
        file.read_exact_at(&mut sb, base + SUPERBLOCK_OFFSET as u64)?;
        if u32_at(&sb, 0) != 0xE0F5_E1E2 {
            return Err(ReadError::Unsupported("no EROFS superblock".into()));
        }
        if sb[12] != BLOCK_BITS {
            return Err(ReadError::Unsupported(format!(
                "{}-byte blocks",
                1u64 << sb[12].min(63)
            )));
        }
        let incompat = u32_at(&sb, 80);
        // Zero padding and compression configs; big pclusters share the cfgs bit.
        let known = FEATURE_ZERO_PADDING | FEATURE_COMPR_CFGS;
        if incompat & !known != 0 {
            return Err(ReadError::Unsupported(format!("features {:#x}", incompat & !known)));
        }
        Ok(ErofsImage {
            file,
            base,
            len,
            meta_blkaddr: u64::from(u32_at(&sb, 40)),
            root_nid: u64::from(u16_at(&sb, 14)),
            zero_padding: incompat & FEATURE_ZERO_PADDING != 0,
        })
    }

    fn read(&self, offset: u64, len: usize, nid: u64) -> Result<Vec<u8>, ReadError> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(corrupt(nid, "points outside the image"));
        }
        let mut buffer = vec![0u8; len];
        self.file.read_exact_at(&mut buffer, self.base + offset)?;
        Ok(buffer)
    }

    pub fn inode(&self, nid: u64) -> Result<InodeInfo, ReadError> {
        let at = self
            .meta_blkaddr
            .checked_mul(BLOCK)
            .and_then(|m| nid.checked_mul(SLOT).and_then(|n| m.checked_add(n)))
            .ok_or_else(|| corrupt(nid, "inode number out of range"))?;
        let head = self.read(at, 32, nid)?;
        let format = u16_at(&head, 0);
        let extended = format & 1 == 1;
        let layout = (format >> 1) & 7;
        let header = if extended { self.read(at, 64, nid)? } else { head };
        let xattr_count = u16_at(&header, 2);
        let mode = u32::from(u16_at(&header, 4));
        let (size, union, nlink) = if extended {
            (
                u64::from_le_bytes(header[8..16].try_into().unwrap()),
                u32_at(&header, 16),
                u32_at(&header, 44),
            )
        } else {
            (
                u64::from(u32_at(&header, 8)),
                u32_at(&header, 16),
                u32::from(u16_at(&header, 6)),
            )
        };
        let xattr_size = if xattr_count == 0 {
            0
        } else {
            12 + (u64::from(xattr_count) - 1) * 4
        };
        let kind = match mode & 0o170_000 {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File,
            S_IFLNK => Kind::Symlink,
            S_IFIFO => Kind::Fifo,
            0o020_000 | 0o060_000 => Kind::Device,
            0o140_000 => Kind::Socket,
            other => return Err(corrupt(nid, format!("file type {other:o}"))),
        };
        Ok(InodeInfo {
            nid,
            kind,
            mode: mode & 0o7777,
            size,
            nlink,
            layout,
            data_at: at + if extended { EXTENDED_INODE } else { COMPACT_INODE } + xattr_size,
            union,
        })
    }

    /// An inode's whole data, at most `limit` bytes.
    pub fn data(&self, inode: &InodeInfo, limit: u64) -> Result<Vec<u8>, ReadError> {
        if inode.size > limit {
            return Err(ReadError::TooLarge(limit));
        }
        match inode.layout {
            0 | 2 => self.flat(inode),
            1 | 3 => self.compressed(inode),
            other => Err(ReadError::Unsupported(format!(
                "inode {} has data layout {other}",
                inode.nid
            ))),
        }
    }

    fn flat(&self, inode: &InodeInfo) -> Result<Vec<u8>, ReadError> {
        let size = inode.size;
        let inline = inode.layout == 2;
        let tail = if inline { size % BLOCK } else { 0 };
        let body = size - tail;
        let mut data = if body > 0 {
            self.read(u64::from(inode.union) * BLOCK, body as usize, inode.nid)?
        } else {
            Vec::new()
        };
        if tail > 0 {
            if inode.data_at % BLOCK + tail > BLOCK {
                return Err(corrupt(inode.nid, "inline data crosses a block"));
            }
            data.extend(self.read(inode.data_at, tail as usize, inode.nid)?);
        }
        Ok(data)
    }

    /// Each logical cluster's (type, cluster offset, block address), from
    /// a full or compact index.
    fn lclusters(&self, inode: &InodeInfo) -> Result<(u8, Vec<Lcluster>), ReadError> {
        let nid = inode.nid;
        let header_at = inode.data_at.next_multiple_of(8);
        let header = self.read(header_at, 8, nid)?;
        let advise = u16_at(&header, 4);
        let algorithm = header[6] & 15;
        // Bit 0 is COMPACTED_2B in compact indexes, encoded extents in full ones.
        let allowed = if inode.layout == 3 { 0x1 } else { 0 };
        if header[7] & 0x80 != 0 || header[7] & 7 != 0 || advise & !allowed != 0 {
            return Err(ReadError::Unsupported(format!(
                "inode {nid} uses fragments, tail-packing, big or larger clusters"
            )));
        }
        let count = inode.size.div_ceil(BLOCK) as usize;
        let mut entries = Vec::with_capacity(count);
        if inode.layout == 1 {
            let raw = self.read(header_at + 16, count * 8, nid)?;
            for entry in raw.chunks(8) {
                let kind = u16_at(entry, 0) & 3;
                let (a, b) = (u16_at(entry, 2), u32_at(entry, 4));
                entries.push((kind, a, b));
            }
            return Ok((algorithm, entries));
        }
        // Compact: 4-byte packs of 2 entries, and (with COMPACTED_2B)
        // 32-byte packs of 16; each pack ends with a block address.
        let start = header_at + 8;
        let initial = match ((32 - start % 32) / 4) as usize {
            8 => 0,
            n => n,
        };
        let two_byte = if advise & 1 != 0 && initial < count {
            (count - initial) / 16 * 16
        } else {
            0
        };
        let mut at = start;
        let mut decode =
            |pack_entries: usize, pack_size: u64, at: &mut u64, remaining: usize| -> Result<(), ReadError> {
                let pack = self.read(*at, pack_size as usize, nid)?;
                let bits = (pack_size as usize * 8 - 32) / pack_entries;
                let blkaddr = u32_at(&pack, pack_size as usize - 4);
                let mut heads = 0u32;
                for i in 0..pack_entries.min(remaining) {
                    let bit = i * bits;
                    let word = u32::from_le_bytes([
                        pack[bit / 8],
                        pack[bit / 8 + 1],
                        *pack.get(bit / 8 + 2).unwrap_or(&0),
                        *pack.get(bit / 8 + 3).unwrap_or(&0),
                    ]) >> (bit % 8);
                    let kind = ((word >> 12) & 3) as u16;
                    let lo = (word & 0xfff) as u16;
                    if kind == LCLUSTER_NONHEAD {
                        entries.push((kind, lo, 0));
                    } else {
                        heads += 1;
                        entries.push((kind, lo, blkaddr.wrapping_add(heads)));
                    }
                }
                *at += pack_size;
                Ok(())
            };
        let mut left = count;
        let mut region = |entries_per_pack: usize,
                          pack_size: u64,
                          n: usize,
                          at: &mut u64,
                          left: &mut usize|
         -> Result<(), ReadError> {
            let mut done = 0;
            while done < n {
                decode(entries_per_pack, pack_size, at, (n - done).min(*left))?;
                let step = entries_per_pack.min(n - done);
                done += step;
                *left -= step.min(*left);
            }
            Ok(())
        };
        region(2, 8, initial.min(count), &mut at, &mut left)?;
        region(16, 32, two_byte, &mut at, &mut left)?;
        let rest = left;
        region(2, 8, rest, &mut at, &mut left)?;
        Ok((algorithm, entries))
    }

    fn compressed(&self, inode: &InodeInfo) -> Result<Vec<u8>, ReadError> {
        let nid = inode.nid;
        let (algorithm, entries) = self.lclusters(inode)?;
        // Extents: each head's start and cluster; each runs to the next head.
        let mut heads = Vec::new();
        for (lcn, (kind, clusterofs, blkaddr)) in entries.iter().enumerate() {
            if *kind != LCLUSTER_NONHEAD {
                if u64::from(*clusterofs) >= BLOCK {
                    return Err(corrupt(nid, "cluster offset past the cluster"));
                }
                heads.push((lcn as u64 * BLOCK + u64::from(*clusterofs), *kind, *blkaddr));
            }
        }
        if heads.first().is_none_or(|h| h.0 != 0) {
            return Err(corrupt(nid, "the first logical cluster is not a head"));
        }
        let mut data = Vec::with_capacity(inode.size as usize);
        for (i, (start, kind, blkaddr)) in heads.iter().enumerate() {
            let end = heads.get(i + 1).map_or(inode.size, |h| h.0).min(inode.size);
            if end < *start {
                return Err(corrupt(nid, "extents out of order"));
            }
            let length = (end - start) as usize;
            // mkfs.erofs may end an index with an empty head at the end of file.
            if length == 0 {
                continue;
            }
            let block = self.read(u64::from(*blkaddr) * BLOCK, BLOCK as usize, nid)?;
            if *kind == LCLUSTER_PLAIN {
                if length > BLOCK as usize {
                    return Err(corrupt(nid, "a plain extent longer than its cluster"));
                }
                data.extend_from_slice(&block[..length]);
                continue;
            }
            let input = if self.zero_padding || algorithm != ALGORITHM_LZ4 {
                &block[block.iter().position(|&b| b != 0).unwrap_or(block.len())..]
            } else {
                &block[..]
            };
            let decoded = match algorithm {
                ALGORITHM_LZ4 => lz4::decompress(input, length).map_err(|e| corrupt(nid, e))?,
                ALGORITHM_ZSTD => {
                    let mut out = Vec::with_capacity(length);
                    zstd::stream::read::Decoder::new(input)
                        .and_then(|d| d.take(length as u64).read_to_end(&mut out))
                        .map_err(|e| corrupt(nid, format!("zstd: {e}")))?;
                    out
                }
                other => return Err(ReadError::Unsupported(format!("compression algorithm {other}"))),
            };
            if decoded.len() != length {
                return Err(corrupt(nid, "an extent decodes short"));
            }
            data.extend(decoded);
        }
        Ok(data)
    }

    /// A directory's entries but `.` and `..`: (name, nid, file type).
    pub fn read_dir(&self, inode: &InodeInfo) -> Result<Vec<(Vec<u8>, u64)>, ReadError> {
        let data = self.data(inode, 1 << 30)?;
        let nid = inode.nid;
        let mut entries = Vec::new();
        for block in data.chunks(BLOCK as usize) {
            if block.len() < DIRENT {
                return Err(corrupt(nid, "directory block too short"));
            }
            let first = u16_at(block, 8) as usize;
            if first < DIRENT || !first.is_multiple_of(DIRENT) || first > block.len() {
                return Err(corrupt(nid, "bad directory entry table"));
            }
            let count = first / DIRENT;
            for i in 0..count {
                let dirent = &block[i * DIRENT..(i + 1) * DIRENT];
                let child = u64::from_le_bytes(dirent[0..8].try_into().unwrap());
                let name_at = u16_at(dirent, 8) as usize;
                let name_end = if i + 1 < count {
                    u16_at(block, (i + 1) * DIRENT + 8) as usize
                } else {
                    block.len()
                };
                if name_at > name_end || name_end > block.len() {
                    return Err(corrupt(nid, "directory names out of place"));
                }
                let raw = &block[name_at..name_end];
                let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                if name != b"." && name != b".." {
                    entries.push((name.to_vec(), child));
                }
            }
        }
        Ok(entries)
    }

    /// Every entry of the tree, depth first: (path inside, inode). A
    /// directory seen twice (a loop) or a name with `/` is an error.
    pub fn walk(&self, mut visit: impl FnMut(&Path, &InodeInfo) -> Result<(), ReadError>) -> Result<(), ReadError> {
        let root = self.inode(self.root_nid)?;
        if root.kind != Kind::Dir {
            return Err(corrupt(self.root_nid, "the root is not a directory"));
        }
        let mut seen = HashSet::from([self.root_nid]);
        let mut stack = vec![(PathBuf::new(), root)];
        while let Some((path, dir)) = stack.pop() {
            for (name, nid) in self.read_dir(&dir)? {
                if name.is_empty() || name.contains(&b'/') || name.len() > NAME_MAX {
                    return Err(corrupt(dir.nid, "a name that is not one"));
                }
                let child = self.inode(nid)?;
                let child_path = path.join(std::ffi::OsStr::from_bytes(&name));
                visit(&child_path, &child)?;
                if child.kind == Kind::Dir {
                    if !seen.insert(nid) {
                        return Err(corrupt(nid, "a directory appears twice (a loop)"));
                    }
                    stack.push((child_path, child));
                }
            }
        }
        Ok(())
    }
}

impl<F: FileExt> ErofsImage<'_, F> {
    /// Writes the tree into `root` (directories, files with their modes,
    /// symlinks; hard links as copies, FIFOs and devices left out), over
    /// what is there. Returns the bytes of file data, at most `limit`.
    pub fn extract(&self, root: &mut bundlegen_protocol::root::RootDir, limit: u64) -> Result<u64, ReadError> {
        use bundlegen_protocol::root::MissingDirs;
        use std::io::Write;
        let failed = |path: &Path, e: bundlegen_protocol::root::RootError| {
            ReadError::Io(std::io::Error::other(format!("{}: {e}", path.display())))
        };
        let mut total = 0u64;
        let mut directories = Vec::new();
        self.walk(|path, inode| {
            match inode.kind {
                Kind::Dir => {
                    // Over a lower layer's tree: a directory stays, anything else goes.
                    match root.lstat(path).map_err(|e| failed(path, e))? {
                        Some(stat) if stat.st_mode & 0o170_000 == S_IFDIR => {}
                        Some(_) => {
                            root.remove_all(path).map_err(|e| failed(path, e))?;
                            root.mkdir(path, 0o700, MissingDirs::Create)
                                .map_err(|e| failed(path, e))?;
                        }
                        None => {
                            root.mkdir(path, 0o700, MissingDirs::Create)
                                .map_err(|e| failed(path, e))?;
                        }
                    }
                    let resolved = root.resolve(path, MissingDirs::Fail).map_err(|e| failed(path, e))?;
                    directories.push((resolved, inode.mode));
                }
                Kind::File => {
                    total += inode.size;
                    if total > limit {
                        return Err(ReadError::TooLarge(limit));
                    }
                    let data = self.data(inode, limit)?;
                    let _ = root.remove_all(path);
                    let (mut file, resolved) = root
                        .create_file(path, 0o600, MissingDirs::Create)
                        .map_err(|e| failed(path, e))?;
                    file.write_all(&data)?;
                    root.set_mode(&resolved, inode.mode).map_err(|e| failed(path, e))?;
                }
                Kind::Symlink => {
                    let target = self.data(inode, 4096)?;
                    let _ = root.remove_all(path);
                    root.symlink(
                        path,
                        Path::new(std::ffi::OsStr::from_bytes(&target)),
                        MissingDirs::Create,
                    )
                    .map_err(|e| failed(path, e))?;
                }
                Kind::Fifo | Kind::Device | Kind::Socket => {}
            }
            Ok(())
        })?;
        for (resolved, mode) in directories.iter().rev() {
            root.set_mode(resolved, *mode)
                .map_err(|e| failed(Path::new("(directory)"), e))?;
        }
        Ok(total)
    }
}
