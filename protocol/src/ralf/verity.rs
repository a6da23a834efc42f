//! dm-verity hash trees in veritysetup's on-disk format, for EROFS content
//! layers: `[data, 4096-aligned][superblock block at `offset`][hash levels,
//! top first]`, SHA-256, 4096-byte data and hash blocks, format 1 (the salt
//! is hashed before each block).
//!
//! The generator appends a tree ([`append_tree`]); the box checks one in
//! userspace where the kernel has no device-mapper ([`verify`]): every data
//! block and every hash block is recomputed and compared, and the root with
//! the signed one. `veritysetup verify` accepts what [`append_tree`] writes.

use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
const DIGEST: usize = 32;
const DIGESTS_PER_BLOCK: u64 = BLOCK / DIGEST as u64;
const SIGNATURE: &[u8; 8] = b"verity\0\0";
/// Longest salt the superblock holds.
pub const MAX_SALT: usize = 256;
/// How much data is hashed per read.
const CHUNK_BLOCKS: u64 = 256;

/// A tree as written: what the package's annotations say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTree {
    pub root_hash: [u8; DIGEST],
    pub salt: Vec<u8>,
    pub data_blocks: u64,
    /// Where the superblock starts: the data's size.
    pub hash_offset: u64,
    /// Bytes after the data: the superblock block and the hash blocks.
    pub tree_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("reading the content: {0}")]
    Io(#[from] io::Error),
    #[error("the data size {0} is not a positive multiple of 4096")]
    DataSize(u64),
    #[error("salt of {0} bytes: at most 256")]
    SaltSize(usize),
    #[error("no dm-verity superblock at offset {0}")]
    NoSuperblock(u64),
    #[error("the dm-verity superblock is not one this reader knows: {0}")]
    Superblock(String),
    #[error("the dm-verity superblock's {field} differs from the package's annotation")]
    Mismatch { field: &'static str },
    #[error("data block {0} does not match its hash")]
    DataBlock(u64),
    #[error("hash block {0} of the tree does not match")]
    HashBlock(u64),
    #[error("the root hash differs from the signed one")]
    RootHash,
}

/// The superblock's fields we write and check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl Superblock {
    /// veritysetup's 512-byte layout, little-endian, in a zeroed block.
    pub fn encode(&self) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK as usize];
        block[0..8].copy_from_slice(SIGNATURE);
        block[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
        block[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: salt first
        block[16..32].copy_from_slice(&self.uuid);
        block[32..38].copy_from_slice(b"sha256");
        block[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        block[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        block[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        block[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        block[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        block
    }

    /// Reads a superblock, accepting only what [`encode`](Self::encode)
    /// writes (SHA-256, 4096-byte blocks, format 1).
    pub fn decode(block: &[u8]) -> Result<Superblock, VerityError> {
        let bad = |what: &str| VerityError::Superblock(what.to_string());
        if block.len() < 512 || &block[0..8] != SIGNATURE {
            return Err(bad("no \"verity\" signature"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().unwrap());
        if u32_at(8) != 1 || u32_at(12) != 1 {
            return Err(bad("version or hash type other than 1"));
        }
        let algorithm = &block[32..64];
        let name_end = algorithm.iter().position(|&b| b == 0).unwrap_or(algorithm.len());
        if &algorithm[..name_end] != b"sha256" {
            return Err(bad("hash algorithm other than sha256"));
        }
        if u32_at(64) != BLOCK as u32 || u32_at(68) != BLOCK as u32 {
            return Err(bad("block sizes other than 4096"));
        }
        let salt_size = usize::from(u16::from_le_bytes([block[80], block[81]]));
        if salt_size > MAX_SALT {
            return Err(bad("salt longer than 256 bytes"));
        }
        Ok(Superblock {
            uuid: block[16..32].try_into().unwrap(),
            data_blocks: u64::from_le_bytes(block[72..80].try_into().unwrap()),
            salt: block[88..88 + salt_size].to_vec(),
        })
    }
}

/// Blocks in each level, top level first (none for a single data block,
/// whose root is its own hash).
fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut blocks = data_blocks;
    while blocks > 1 {
        blocks = blocks.div_ceil(DIGESTS_PER_BLOCK);
        sizes.push(blocks);
    }
    sizes.reverse();
    sizes
}

fn hash_block(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(block);
    hasher.finalize().into()
}

/// The tree of the first `data_blocks` blocks at `base` in `source`: its
/// levels, top first, each as its hash blocks' bytes, and the root.
fn compute(
    source: &impl FileExt,
    base: u64,
    data_blocks: u64,
    salt: &[u8],
    mut check_data: impl FnMut(u64, &[u8; DIGEST]) -> Result<(), VerityError>,
) -> Result<(Vec<Vec<u8>>, [u8; DIGEST]), VerityError> {
    let mut digests: Vec<u8> = Vec::with_capacity(data_blocks as usize * DIGEST);
    let mut buffer = vec![0u8; (CHUNK_BLOCKS * BLOCK) as usize];
    let mut block = 0;
    while block < data_blocks {
        let count = (data_blocks - block).min(CHUNK_BLOCKS);
        let bytes = &mut buffer[..(count * BLOCK) as usize];
        source.read_exact_at(bytes, base + block * BLOCK)?;
        for (i, data) in bytes.chunks(BLOCK as usize).enumerate() {
            let digest = hash_block(salt, data);
            check_data(block + i as u64, &digest)?;
            digests.extend_from_slice(&digest);
        }
        block += count;
    }
    // Bottom up: each level is the previous one's digests in zero-padded blocks.
    let mut levels = Vec::new();
    let mut below = digests;
    let root = loop {
        if below.len() == DIGEST {
            break below[..].try_into().unwrap();
        }
        let mut level = below;
        level.resize(level.len().div_ceil(BLOCK as usize) * BLOCK as usize, 0);
        below = level.chunks(BLOCK as usize).flat_map(|b| hash_block(salt, b)).collect();
        levels.push(level);
    };
    levels.reverse();
    Ok((levels, root))
}

/// Appends the superblock and hash tree of `file`'s first `data_size` bytes
/// (a multiple of 4096) right after them.
pub fn append_tree<F: FileExt>(
    file: &F,
    data_size: u64,
    salt: &[u8],
    uuid: [u8; 16],
) -> Result<VerityTree, VerityError> {
    if data_size == 0 || !data_size.is_multiple_of(BLOCK) {
        return Err(VerityError::DataSize(data_size));
    }
    if salt.len() > MAX_SALT {
        return Err(VerityError::SaltSize(salt.len()));
    }
    let data_blocks = data_size / BLOCK;
    let (levels, root_hash) = compute(file, 0, data_blocks, salt, |_, _| Ok(()))?;
    let superblock = Superblock {
        uuid,
        data_blocks,
        salt: salt.to_vec(),
    };
    file.write_all_at(&superblock.encode(), data_size)?;
    let mut at = data_size + BLOCK;
    for level in &levels {
        file.write_all_at(level, at)?;
        at += level.len() as u64;
    }
    Ok(VerityTree {
        root_hash,
        salt: salt.to_vec(),
        data_blocks,
        hash_offset: data_size,
        tree_size: at - data_size,
    })
}

/// Bytes of superblock and tree [`append_tree`] writes after `data_size` bytes.
pub fn tree_size(data_size: u64) -> u64 {
    BLOCK + level_sizes(data_size / BLOCK).iter().sum::<u64>() * BLOCK
}

/// Checks, in userspace, the verity-protected content at `base` in `source`
/// (`hash_offset` bytes of data, then superblock and tree) against the signed
/// `root_hash` and `salt`: the superblock, every data block's hash, every
/// hash block, and the root. Reads everything once.
pub fn verify(
    source: &impl FileExt,
    base: u64,
    hash_offset: u64,
    root_hash: &[u8; DIGEST],
    salt: &[u8],
) -> Result<(), VerityError> {
    if hash_offset == 0 || !hash_offset.is_multiple_of(BLOCK) {
        return Err(VerityError::DataSize(hash_offset));
    }
    let mut block = vec![0u8; BLOCK as usize];
    source
        .read_exact_at(&mut block, base + hash_offset)
        .map_err(|_| VerityError::NoSuperblock(hash_offset))?;
    let superblock = Superblock::decode(&block)?;
    let data_blocks = hash_offset / BLOCK;
    if superblock.data_blocks != data_blocks {
        return Err(VerityError::Mismatch {
            field: "data block count",
        });
    }
    if superblock.salt != salt {
        return Err(VerityError::Mismatch { field: "salt" });
    }
    // The stored bottom level says what each data block must hash to.
    let sizes = level_sizes(data_blocks);
    let tree_start = base + hash_offset + BLOCK;
    let mut stored = Vec::with_capacity(sizes.len());
    let mut at = tree_start;
    for size in &sizes {
        let mut level = vec![0u8; (size * BLOCK) as usize];
        source.read_exact_at(&mut level, at)?;
        at += size * BLOCK;
        stored.push(level);
    }
    let bottom = stored.last().cloned().unwrap_or_default();
    let (levels, root) = compute(source, base, data_blocks, salt, |index, digest| {
        let at = index as usize * DIGEST;
        match bottom.get(at..at + DIGEST) {
            Some(expected) if expected != digest => Err(VerityError::DataBlock(index)),
            _ => Ok(()),
        }
    })?;
    let mut index = 0;
    for (computed, stored) in levels.iter().zip(&stored) {
        for (a, b) in computed.chunks(BLOCK as usize).zip(stored.chunks(BLOCK as usize)) {
            if a != b {
                return Err(VerityError::HashBlock(index));
            }
            index += 1;
        }
    }
    if &root != root_hash {
        return Err(VerityError::RootHash);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(blocks: u64) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..blocks * BLOCK).map(|i| (i * 7 % 251) as u8).collect();
        file.as_file().write_all_at(&data, 0).unwrap();
        file
    }

    #[test]
    fn levels_follow_veritysetup() {
        assert!(level_sizes(1).is_empty());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![1, 2]);
        assert_eq!(level_sizes(128 * 128 + 1), vec![1, 2, 129]);
        assert_eq!(tree_size(4096), 4096);
        assert_eq!(tree_size(129 * 4096), 4 * 4096);
    }

    #[test]
    fn one_block_root_is_its_own_hash() {
        let file = image(1);
        let tree = append_tree(file.as_file(), BLOCK, b"salt", [0; 16]).unwrap();
        let mut data = vec![0u8; BLOCK as usize];
        file.as_file().read_exact_at(&mut data, 0).unwrap();
        assert_eq!(tree.root_hash, hash_block(b"salt", &data));
        assert_eq!(file.as_file().metadata().unwrap().len(), 2 * BLOCK);
    }

    #[test]
    fn a_written_tree_verifies_and_any_flipped_byte_fails() {
        for blocks in [1, 5, 130] {
            let file = image(blocks);
            let size = blocks * BLOCK;
            let tree = append_tree(file.as_file(), size, &[9; 32], [1; 16]).unwrap();
            assert_eq!(file.as_file().metadata().unwrap().len(), size + tree.tree_size);
            verify(file.as_file(), 0, size, &tree.root_hash, &tree.salt).unwrap();
            let total = size + tree.tree_size;
            let hash_blocks = [size + BLOCK, total - 1]
                .into_iter()
                .filter(|&at| at >= size + BLOCK && at < total);
            for at in [0, size - 1, size + 88].into_iter().chain(hash_blocks) {
                let mut byte = [0u8];
                file.as_file().read_exact_at(&mut byte, at).unwrap();
                file.as_file().write_all_at(&[byte[0] ^ 0x40], at).unwrap();
                let result = verify(file.as_file(), 0, size, &tree.root_hash, &tree.salt);
                assert!(result.is_err(), "{blocks} blocks, byte {at} flipped: accepted");
                file.as_file().write_all_at(&byte, at).unwrap();
            }
            let other = [0u8; 32];
            assert!(matches!(
                verify(file.as_file(), 0, size, &other, &tree.salt),
                Err(VerityError::RootHash)
            ));
        }
    }

    #[test]
    fn superblock_round_trips_and_rejects_others() {
        let superblock = Superblock {
            uuid: [3; 16],
            data_blocks: 77,
            salt: vec![1, 2, 3],
        };
        let block = superblock.encode();
        assert_eq!(Superblock::decode(&block).unwrap(), superblock);
        let mut other = block.clone();
        other[32..38].copy_from_slice(b"sha1\0\0");
        assert!(Superblock::decode(&other).is_err());
        let mut other = block;
        other[0] = b'V';
        assert!(Superblock::decode(&other).is_err());
    }
}
