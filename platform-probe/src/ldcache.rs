//! Reads `/etc/ld.so.cache` directly (no `ldconfig -p`): the new format
//! (`glibc-ld.so.cache1.1`), alone or after the old `ld.so-1.7.0` table,
//! either byte order, and the extension sections that name glibc-hwcaps
//! subdirectories. Layout from glibc's `sysdeps/generic/dl-cache.h`.

/// `ld.so-1.7.0`, the old format's magic.
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
/// The old header: magic, padding, `nlibs`.
const OLD_HEADER_SIZE: usize = 16;
/// `{int flags; unsigned key, value;}`.
const OLD_ENTRY_SIZE: usize = 12;
/// `glibc-ld.so.cache` followed by the version `1.1`.
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
/// Magic, version, `nlibs`, `len_strings`, flags, padding, extension offset, unused.
const NEW_HEADER_SIZE: usize = 48;
/// `{int32 flags; uint32 key, value, osversion; uint64 hwcap}`.
const NEW_ENTRY_SIZE: usize = 24;
/// Byte-order values of the new header's `flags` byte.
const ENDIAN_LITTLE: u8 = 2;
const ENDIAN_BIG: u8 = 3;
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const EXTENSION_TAG_GENERATOR: u32 = 0;
const EXTENSION_TAG_GLIBC_HWCAPS: u32 = 1;
/// `hwcap` values whose upper half is this (ignoring the ISA level bits)
/// index a glibc-hwcaps subdirectory name with their lower half.
const HWCAP_EXTENSION: u64 = 1 << 62;
const HWCAP_ISA_LEVEL_MASK: u64 = 0x3ff;

/// Entry type bits (`FLAG_TYPE_MASK`).
pub const FLAG_TYPE_MASK: i32 = 0x00ff;
pub const FLAG_ELF: i32 = 0x0001;
pub const FLAG_ELF_LIBC5: i32 = 0x0002;
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
/// Architecture bits (`FLAG_REQUIRED_MASK`).
pub const FLAG_ARCH_MASK: i32 = 0xff00;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdCacheError {
    #[error("not an ld.so.cache file (unknown magic)")]
    Magic,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("entry {index}: {field} offset {offset} is outside the string table")]
    BadString {
        index: usize,
        field: &'static str,
        offset: u32,
    },
}

/// One cache entry: a file name the loader may look up, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The name looked up (`libz.so.1`; also unversioned dev links).
    pub key: String,
    /// Absolute path of the file.
    pub path: String,
    /// `FLAG_ELF_LIBC6 | FLAG_ARM_LIBHF`, ...
    pub flags: i32,
    /// The glibc-hwcaps subdirectory (`x86-64-v3`) of an hwcaps entry.
    pub hwcaps: Option<String>,
    /// A legacy hwcap mask (not an hwcaps subdirectory), 0 for most entries.
    pub hwcap: u64,
}

impl CacheEntry {
    /// How `ldconfig -p` describes the entry: `libc6,x86-64`,
    /// `libc6,hard-float, hwcap: "x86-64-v3"`, ...
    pub fn describe(&self) -> String {
        let mut text = match self.flags & FLAG_TYPE_MASK {
            0 => "libc4",
            FLAG_ELF => "ELF",
            FLAG_ELF_LIBC5 => "libc5",
            FLAG_ELF_LIBC6 => "libc6",
            _ => "unknown",
        }
        .to_string();
        let arch = match self.flags & FLAG_ARCH_MASK {
            0 => None,
            0x0100 => Some(",64bit".to_string()),
            0x0200 => Some(",IA-64".to_string()),
            0x0300 => Some(",x86-64".to_string()),
            0x0400 | 0x0500 | 0x0700 => Some(",64bit".to_string()),
            0x0600 => Some(",N32".to_string()),
            0x0800 => Some(",x32".to_string()),
            0x0900 => Some(",hard-float".to_string()),
            0x0a00 => Some(",AArch64".to_string()),
            0x0b00 => Some(",soft-float".to_string()),
            0x0c00 => Some(",nan2008".to_string()),
            0x0d00 => Some(",N32,nan2008".to_string()),
            0x0e00 => Some(",64bit,nan2008".to_string()),
            0x0f00 => Some(",soft-float".to_string()),
            0x1000 => Some(",double-float".to_string()),
            other => Some(format!(",{other}")),
        };
        text.extend(arch);
        if let Some(hwcaps) = &self.hwcaps {
            text.push_str(&format!(", hwcap: \"{hwcaps}\""));
        } else if self.hwcap != 0 {
            text.push_str(&format!(", hwcap: {:#018x}", self.hwcap));
        }
        text
    }
}

/// A parsed cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdCache {
    pub entries: Vec<CacheEntry>,
    /// The ldconfig that wrote it (`ldconfig (GNU libc) 2.36`), if recorded.
    pub generator: Option<String>,
    /// Whether the file is in the old format only (no hwcaps, no arch flags
    /// beyond the type).
    pub old_format_only: bool,
}

/// Reads fixed-size integers in the cache's byte order, bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.data.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let bytes = self.bytes::<4>(at)?;
        Some(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    fn u64(&self, at: usize) -> Option<u64> {
        let bytes = self.bytes::<8>(at)?;
        Some(if self.big_endian {
            u64::from_be_bytes(bytes)
        } else {
            u64::from_le_bytes(bytes)
        })
    }

    /// The NUL-terminated string at `base + offset`.
    fn string(&self, base: usize, offset: u32) -> Option<String> {
        let start = base.checked_add(offset as usize)?;
        let rest = self.data.get(start..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

/// Parses a cache file's bytes.
pub fn parse(data: &[u8]) -> Result<LdCache, LdCacheError> {
    if data.starts_with(NEW_MAGIC) {
        return parse_new(data, 0);
    }
    if !data.starts_with(OLD_MAGIC) {
        return Err(LdCacheError::Magic);
    }
    // The old table is always in the writer's byte order; its count tells
    // which one when the sizes only fit one way round.
    let little = Reader {
        data,
        big_endian: false,
    };
    let big = Reader { data, big_endian: true };
    let fits = |count: Option<u32>| {
        count.is_some_and(|n| {
            (n as usize).saturating_mul(OLD_ENTRY_SIZE) <= data.len() - OLD_HEADER_SIZE.min(data.len())
        })
    };
    let reader = if fits(little.u32(12)) {
        little
    } else if fits(big.u32(12)) {
        big
    } else {
        return Err(LdCacheError::Truncated("old-format entry table"));
    };
    let count = reader.u32(12).unwrap_or(0) as usize;
    let strings = OLD_HEADER_SIZE + count * OLD_ENTRY_SIZE;
    let embedded = strings.next_multiple_of(8);
    if data.len() > embedded + NEW_HEADER_SIZE && data[embedded..].starts_with(NEW_MAGIC) {
        return parse_new(data, embedded);
    }
    let mut cache = LdCache {
        old_format_only: true,
        ..LdCache::default()
    };
    for index in 0..count {
        let at = OLD_HEADER_SIZE + index * OLD_ENTRY_SIZE;
        let flags = reader.u32(at).ok_or(LdCacheError::Truncated("old-format entry"))? as i32;
        let key_offset = reader.u32(at + 4).ok_or(LdCacheError::Truncated("old-format entry"))?;
        let value_offset = reader.u32(at + 8).ok_or(LdCacheError::Truncated("old-format entry"))?;
        let key = reader.string(strings, key_offset).ok_or(LdCacheError::BadString {
            index,
            field: "key",
            offset: key_offset,
        })?;
        let path = reader.string(strings, value_offset).ok_or(LdCacheError::BadString {
            index,
            field: "value",
            offset: value_offset,
        })?;
        cache.entries.push(CacheEntry {
            key,
            path,
            flags,
            hwcaps: None,
            hwcap: 0,
        });
    }
    Ok(cache)
}

/// Parses the new format whose header starts at `base`; its string offsets
/// count from `base` too (glibc's `cache_data = (const char *) cache_new`).
fn parse_new(data: &[u8], base: usize) -> Result<LdCache, LdCacheError> {
    if data.len() < base + NEW_HEADER_SIZE {
        return Err(LdCacheError::Truncated("header"));
    }
    let endian_flag = data[base + 28] & 3;
    let big_endian = match endian_flag {
        ENDIAN_LITTLE => false,
        ENDIAN_BIG => true,
        // Written by an ldconfig that did not record it: the count that
        // fits the file tells.
        _ => {
            let little = Reader {
                data,
                big_endian: false,
            }
            .u32(base + 20)
            .unwrap_or(u32::MAX) as usize;
            little.saturating_mul(NEW_ENTRY_SIZE) > data.len()
        }
    };
    let reader = Reader { data, big_endian };
    let count = reader.u32(base + 20).ok_or(LdCacheError::Truncated("header"))? as usize;
    let entries_start = base + NEW_HEADER_SIZE;
    if count.saturating_mul(NEW_ENTRY_SIZE) > data.len() - entries_start {
        return Err(LdCacheError::Truncated("entry table"));
    }
    let (generator, hwcaps_names) = read_extensions(&reader, base);
    let mut cache = LdCache {
        generator,
        ..LdCache::default()
    };
    for index in 0..count {
        let at = entries_start + index * NEW_ENTRY_SIZE;
        let truncated = LdCacheError::Truncated("entry");
        let flags = reader.u32(at).ok_or(truncated.clone())? as i32;
        let key_offset = reader.u32(at + 4).ok_or(truncated.clone())?;
        let value_offset = reader.u32(at + 8).ok_or(truncated.clone())?;
        let hwcap = reader.u64(at + 16).ok_or(truncated)?;
        let key = reader.string(base, key_offset).ok_or(LdCacheError::BadString {
            index,
            field: "key",
            offset: key_offset,
        })?;
        let path = reader.string(base, value_offset).ok_or(LdCacheError::BadString {
            index,
            field: "value",
            offset: value_offset,
        })?;
        let is_hwcaps = (hwcap >> 32) & !HWCAP_ISA_LEVEL_MASK == HWCAP_EXTENSION >> 32;
        let hwcaps = is_hwcaps
            .then(|| hwcaps_names.get((hwcap & 0xffff_ffff) as usize).cloned())
            .flatten();
        cache.entries.push(CacheEntry {
            key,
            path,
            flags,
            hwcaps,
            hwcap: if is_hwcaps { 0 } else { hwcap },
        });
    }
    Ok(cache)
}

/// The generator string and the glibc-hwcaps subdirectory names of the
/// extension sections, if there are any (a damaged extension is ignored, as
/// the loader ignores it). Extension offsets count from the start of the
/// file; the subdirectory names are string-table offsets from `base`.
fn read_extensions(reader: &Reader, base: usize) -> (Option<String>, Vec<String>) {
    let mut generator = None;
    let mut hwcaps = Vec::new();
    let Some(offset) = reader.u32(base + 32).filter(|&o| o != 0) else {
        return (generator, hwcaps);
    };
    let header = offset as usize;
    if reader.u32(header) != Some(EXTENSION_MAGIC) {
        return (generator, hwcaps);
    }
    let count = reader.u32(header + 4).unwrap_or(0) as usize;
    for section in 0..count.min(64) {
        let at = header + 8 + section * 16;
        let (Some(tag), Some(start), Some(size)) = (reader.u32(at), reader.u32(at + 8), reader.u32(at + 12)) else {
            break;
        };
        let start = start as usize;
        match tag {
            EXTENSION_TAG_GENERATOR => {
                generator = reader
                    .data
                    .get(start..start + size as usize)
                    .map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_string());
            }
            EXTENSION_TAG_GLIBC_HWCAPS => {
                hwcaps = (0..size as usize / 4)
                    .map_while(|i| reader.u32(start + i * 4))
                    .map(|string| reader.string(base, string).unwrap_or_default())
                    .collect();
            }
            _ => {}
        }
    }
    (generator, hwcaps)
}

#[cfg(test)]
mod tests;
