//! EROFS on-disk structures (Linux's `fs/erofs/erofs_fs.h`), encoded
//! little-endian into byte buffers. Only what the writer uses: 4 KiB blocks,
//! compact and extended inodes, flat and full-index compressed layouts.

pub const BLOCK: u64 = 4096;
pub const BLOCK_BITS: u8 = 12;
pub const SUPERBLOCK_OFFSET: usize = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
pub const SLOT: u64 = 32;
pub const COMPACT_INODE: u64 = 32;
pub const EXTENDED_INODE: u64 = 64;
pub const DIRENT: usize = 12;
pub const NAME_MAX: usize = 255;

pub const FEATURE_ZERO_PADDING: u32 = 0x1;
pub const FEATURE_COMPR_CFGS: u32 = 0x2;

/// Compact inodes unless the size or link count needs the extended form.
pub fn header_len(size: u64, nlink: u64) -> u64 {
    if size > u64::from(u32::MAX) || nlink > u64::from(u16::MAX) {
        EXTENDED_INODE
    } else {
        COMPACT_INODE
    }
}

/// Whether a tail of `tail` bytes goes inline, with a `header_len` header,
/// in one block.
pub fn tail_fits(header_len: u64, tail: u64) -> bool {
    tail > 0 && header_len + tail <= BLOCK
}

/// `h_algorithmtype` values.
pub const ALGORITHM_LZ4: u8 = 0;
pub const ALGORITHM_ZSTD: u8 = 3;

/// Data layouts (`i_format` bits 1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLayout {
    FlatPlain = 0,
    CompressedFull = 1,
    FlatInline = 2,
}

/// `S_IFMT` kinds and their dirent file types.
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFIFO: u32 = 0o010_000;
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_FIFO: u8 = 5;
pub const FT_SYMLINK: u8 = 7;

/// Logical cluster types of full compression indexes.
pub const LCLUSTER_PLAIN: u16 = 0;
pub const LCLUSTER_HEAD: u16 = 1;
pub const LCLUSTER_NONHEAD: u16 = 2;

pub struct Superblock {
    pub root_nid: u16,
    pub inodes: u64,
    pub build_time: u64,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub feature_incompat: u32,
    /// `lz4_max_distance` (0: default) or, with `COMPR_CFGS`, the algorithms' bitmap.
    pub compression_field: u16,
}

impl Superblock {
    /// Block 0: 1024 bytes of nothing, the 128-byte superblock, and the
    /// compression configuration records that follow it.
    pub fn encode(&self, configs: &[u8]) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK as usize];
        let sb = &mut block[SUPERBLOCK_OFFSET..];
        sb[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        sb[12] = BLOCK_BITS;
        sb[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        sb[16..24].copy_from_slice(&self.inodes.to_le_bytes());
        sb[24..32].copy_from_slice(&self.build_time.to_le_bytes());
        sb[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        sb[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        sb[80..84].copy_from_slice(&self.feature_incompat.to_le_bytes());
        sb[84..86].copy_from_slice(&self.compression_field.to_le_bytes());
        sb[128..128 + configs.len()].copy_from_slice(configs);
        block
    }
}

/// The zstd configuration record: window of `1 << (10 + window_log)`.
pub fn zstd_config(window_log: u8) -> Vec<u8> {
    let mut record = vec![0u8; 8];
    record[0..2].copy_from_slice(&6u16.to_le_bytes());
    record[3] = window_log;
    record
}

/// One inode's header fields.
pub struct InodeHeader {
    pub extended: bool,
    pub layout: DataLayout,
    pub mode: u32,
    pub nlink: u32,
    pub size: u64,
    /// `i_u`: block address, compressed block count or 0.
    pub union: u32,
    pub ino: u32,
    pub mtime: u64,
}

impl InodeHeader {
    /// Owners are always root (packages are all-root).
    pub fn encode(&self, out: &mut [u8]) {
        let format = u16::from(self.extended) | ((self.layout as u16) << 1);
        out[0..2].copy_from_slice(&format.to_le_bytes());
        out[4..6].copy_from_slice(&(self.mode as u16).to_le_bytes());
        if self.extended {
            out[8..16].copy_from_slice(&self.size.to_le_bytes());
            out[16..20].copy_from_slice(&self.union.to_le_bytes());
            out[20..24].copy_from_slice(&self.ino.to_le_bytes());
            out[32..40].copy_from_slice(&self.mtime.to_le_bytes());
            out[44..48].copy_from_slice(&self.nlink.to_le_bytes());
        } else {
            out[6..8].copy_from_slice(&(self.nlink as u16).to_le_bytes());
            out[8..12].copy_from_slice(&(self.size as u32).to_le_bytes());
            out[16..20].copy_from_slice(&self.union.to_le_bytes());
            out[20..24].copy_from_slice(&self.ino.to_le_bytes());
        }
    }
}

/// The 8-byte map header of a compressed inode (4 KiB logical clusters).
pub fn map_header(algorithm: u8) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[6] = algorithm;
    header
}

/// One full-index entry.
pub fn lcluster_index(kind: u16, cluster_offset: u16, value: u32) -> [u8; 8] {
    let mut entry = [0u8; 8];
    entry[0..2].copy_from_slice(&kind.to_le_bytes());
    entry[2..4].copy_from_slice(&cluster_offset.to_le_bytes());
    entry[4..8].copy_from_slice(&value.to_le_bytes());
    entry
}

/// A NONHEAD entry: `back` lclusters to its head, `ahead` to the next one.
pub fn nonhead_index(back: u16, ahead: u16) -> [u8; 8] {
    lcluster_index(LCLUSTER_NONHEAD, 0, u32::from(back) | (u32::from(ahead) << 16))
}

/// Directory blocks for sorted `(name, nid, file type)` entries: each
/// block's dirents, then its names; full blocks zero-padded, the last one
/// as long as it is used.
pub fn directory_blocks(entries: &[(&[u8], u64, u8)]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut used = 0;
        while end < entries.len() && used + DIRENT + entries[end].0.len() <= BLOCK as usize {
            used += DIRENT + entries[end].0.len();
            end += 1;
        }
        let group = &entries[start..end];
        let mut block = vec![0u8; used];
        let mut name_at = DIRENT * group.len();
        for (i, (name, nid, file_type)) in group.iter().enumerate() {
            let dirent = &mut block[i * DIRENT..(i + 1) * DIRENT];
            dirent[0..8].copy_from_slice(&nid.to_le_bytes());
            dirent[8..10].copy_from_slice(&(name_at as u16).to_le_bytes());
            dirent[10] = *file_type;
            block[name_at..name_at + name.len()].copy_from_slice(name);
            name_at += name.len();
        }
        blocks.push(block);
        start = end;
    }
    let last = blocks.len().saturating_sub(1);
    for block in &mut blocks[..last] {
        block.resize(BLOCK as usize, 0);
    }
    blocks
}

/// The size directory data takes (the last block as long as it is used),
/// from the names alone.
pub fn directory_size(names: &[&[u8]]) -> u64 {
    let entries: Vec<(&[u8], u64, u8)> = names.iter().map(|n| (*n, 0, 0)).collect();
    let blocks = directory_blocks(&entries);
    blocks.iter().map(|b| b.len() as u64).sum()
}
