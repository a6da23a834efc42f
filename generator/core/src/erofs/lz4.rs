//! LZ4 block compression into a fixed output size, the way EROFS needs it:
//! each 4 KiB physical cluster holds one LZ4 block that decodes to as much
//! input as fitted (`LZ4_compress_destSize`'s contract). Hash chains with
//! lazy matching, searched `depth` candidates deep (lz4hc's approach), and
//! the LZ4 block format's end rules: the last 5 bytes are literals and the
//! last match starts at least 12 bytes before the end.

const MIN_MATCH: usize = 4;
const LAST_LITERALS: usize = 5;
const MF_LIMIT: usize = 12;
const MAX_DISTANCE: usize = 65_535;
const HASH_BITS: u32 = 16;
const CHAIN_SIZE: usize = 1 << 16;
/// Matches longer than this are not indexed whole.
const LONG_MATCH: usize = 64;

/// The match finder's tables, reused across blocks of one input buffer.
pub struct Lz4Compressor {
    /// Last position (+1) with each hash, 0 for none.
    head: Vec<u32>,
    /// Distance back to the previous position with the same hash.
    chain: Vec<u16>,
    /// Candidates tried per position.
    depth: usize,
    /// Positions of the current input below this are in the tables.
    inserted: usize,
}

fn hash(bytes: &[u8]) -> usize {
    let v = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
}

/// Bytes `a` and `b` share at their starts, up to `limit`.
fn common(input: &[u8], a: usize, b: usize, limit: usize) -> usize {
    let mut n = 0;
    while n + 8 <= limit {
        let x = u64::from_le_bytes(input[a + n..a + n + 8].try_into().unwrap());
        let y = u64::from_le_bytes(input[b + n..b + n + 8].try_into().unwrap());
        let diff = x ^ y;
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < limit && input[a + n] == input[b + n] {
        n += 1;
    }
    n
}

/// Encoded size of a literal run (or match) length's extension bytes.
fn extension_len(value: usize) -> usize {
    if value < 15 { 0 } else { 1 + (value - 15) / 255 }
}

fn put_extension(out: &mut Vec<u8>, mut value: usize) {
    if value < 15 {
        return;
    }
    value -= 15;
    while value >= 255 {
        out.push(255);
        value -= 255;
    }
    out.push(value as u8);
}

/// Bytes one sequence takes: token, literal run, offset, match length.
fn sequence_cost(literals: usize, match_len: usize) -> usize {
    1 + extension_len(literals) + literals + 2 + extension_len(match_len - MIN_MATCH)
}

/// Bytes the closing literal run takes.
fn final_cost(literals: usize) -> usize {
    1 + extension_len(literals) + literals
}

/// The longest closing literal run `budget` bytes hold.
fn max_literals(budget: usize) -> usize {
    let mut literals = budget.saturating_sub(1);
    while literals > 0 && final_cost(literals) > budget {
        literals -= 1;
    }
    literals
}

impl Lz4Compressor {
    pub fn new(depth: usize) -> Self {
        Lz4Compressor {
            head: vec![0; 1 << HASH_BITS],
            chain: vec![0; CHAIN_SIZE],
            depth: depth.max(1),
            inserted: 0,
        }
    }

    /// Starts on a new input buffer. Entries left from the last one are not
    /// cleared: a candidate is only used after its bytes are compared.
    pub fn begin(&mut self) {
        self.inserted = 0;
    }

    /// Adds every position before `position` not yet in the tables.
    fn insert_up_to(&mut self, input: &[u8], position: usize) {
        while self.inserted < position {
            self.insert(input, self.inserted);
            self.inserted += 1;
        }
    }

    fn insert(&mut self, input: &[u8], position: usize) {
        let h = hash(&input[position..]);
        let previous = self.head[h] as usize;
        // A stale entry (from an earlier buffer) at or past `position` links nowhere.
        let delta = if previous == 0 || previous > position {
            0
        } else {
            position + 1 - previous
        };
        self.chain[position % CHAIN_SIZE] = delta.min(MAX_DISTANCE) as u16;
        self.head[h] = (position + 1) as u32;
    }

    /// The longest match for `position` among earlier positions not before
    /// `floor`, with its length not reaching past `end`.
    fn find(&self, input: &[u8], position: usize, floor: usize, end: usize) -> Option<(usize, usize)> {
        let limit = end - position;
        if limit < MIN_MATCH {
            return None;
        }
        let mut candidate = self.head[hash(&input[position..])] as usize;
        let mut best: Option<(usize, usize)> = None;
        let mut tries = self.depth;
        // Candidates are stored +1; `candidate` here is a position + 1.
        while candidate > floor && tries > 0 {
            let at = candidate - 1;
            if at >= position {
                // Inserted ahead of the search (never here) or stale.
                break;
            }
            let distance = position - at;
            if distance > MAX_DISTANCE {
                break;
            }
            let best_len = best.map_or(MIN_MATCH - 1, |b| b.1);
            // Cheap reject: the byte that would make it longer must match.
            if input[at + best_len.min(limit - 1)] == input[position + best_len.min(limit - 1)] {
                let len = common(input, at, position, limit);
                if len > best_len {
                    best = Some((distance, len));
                    if len == limit {
                        break;
                    }
                }
            }
            tries -= 1;
            let delta = self.chain[at % CHAIN_SIZE] as usize;
            if delta == 0 || delta > at {
                break;
            }
            candidate -= delta;
        }
        best.filter(|b| b.1 >= MIN_MATCH)
    }

    /// Compresses a prefix of `input[start..]` (no farther than `limit`)
    /// into at most `capacity` bytes. Returns how many input bytes the
    /// block decodes to and appends the block to `out`.
    pub fn compress_prefix(
        &mut self,
        input: &[u8],
        start: usize,
        limit: usize,
        capacity: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let end = limit.min(input.len());
        let out_start = out.len();
        let budget = |out: &Vec<u8>| capacity - (out.len() - out_start);
        let mut anchor = start;
        let mut position = start;
        // The closing literal run after the last match must be this long.
        let mut closing_min = 0usize;
        // Matches must end LAST_LITERALS before the input's end, and start MF_LIMIT before.
        let match_end = end.saturating_sub(LAST_LITERALS);
        while position + MF_LIMIT <= end {
            self.insert_up_to(input, position);
            let Some((mut distance, mut len)) = self.find(input, position, start, match_end) else {
                position += 1;
                continue;
            };
            let mut at = position;
            // Lazy: a longer match one byte on is worth a literal.
            while at + 1 + MF_LIMIT <= end {
                self.insert_up_to(input, at + 1);
                match self.find(input, at + 1, start, match_end) {
                    Some((d, l)) if l > len => {
                        at += 1;
                        distance = d;
                        len = l;
                    }
                    _ => break,
                }
            }
            let literals = at - anchor;
            let closing = (MF_LIMIT - len.min(MF_LIMIT)).max(LAST_LITERALS);
            let fits_input = at + len + closing <= end;
            if !fits_input || sequence_cost(literals, len) + final_cost(closing) > budget(out) {
                // No room for this match and the literals that must follow it.
                break;
            }
            let token_literals = literals.min(15) as u8;
            let token_match = (len - MIN_MATCH).min(15) as u8;
            out.push((token_literals << 4) | token_match);
            put_extension(out, literals);
            out.extend_from_slice(&input[anchor..at]);
            out.extend_from_slice(&(distance as u16).to_le_bytes());
            put_extension(out, len - MIN_MATCH);
            position = at + len;
            anchor = position;
            closing_min = closing;
            // Inside a long match (runs of one byte, copies), indexing every
            // position costs more than it finds: keep only its last stretch.
            if len > LONG_MATCH {
                self.inserted = self.inserted.max(position - LONG_MATCH / 2);
            }
        }
        // Close with as many literals as fit (at least what the last match needs).
        let available = end - anchor;
        let literals = available.min(max_literals(budget(out)));
        debug_assert!(literals >= closing_min.min(available));
        out.push((literals.min(15) as u8) << 4);
        put_extension(out, literals);
        out.extend_from_slice(&input[anchor..anchor + literals]);
        anchor + literals - start
    }
}

/// Decodes an LZ4 block until it has produced `size` bytes, as the kernel's
/// `LZ4_decompress_safe_partial` does (older images may hold more in a
/// cluster than the extent uses). Every offset and length is checked: a
/// hostile block is an error, never a read outside what was decoded.
pub fn decompress(block: &[u8], size: usize) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(size);
    let mut i = 0;
    let read_len = |i: &mut usize, mut n: usize| -> Result<usize, &'static str> {
        if n == 15 {
            loop {
                let b = *block.get(*i).ok_or("truncated length")?;
                *i += 1;
                n = n.checked_add(b as usize).ok_or("length overflow")?;
                if b != 255 {
                    break;
                }
            }
        }
        Ok(n)
    };
    while out.len() < size {
        let token = *block.get(i).ok_or("truncated token")?;
        i += 1;
        let literals = read_len(&mut i, (token >> 4) as usize)?;
        let run = block
            .get(i..i.checked_add(literals).ok_or("length overflow")?)
            .ok_or("truncated literals")?;
        let take = run.len().min(size - out.len());
        out.extend_from_slice(&run[..take]);
        i += literals;
        if out.len() >= size || i >= block.len() {
            break;
        }
        let distance =
            u16::from_le_bytes([*block.get(i).ok_or("no offset")?, *block.get(i + 1).ok_or("no offset")?]) as usize;
        i += 2;
        if distance == 0 || distance > out.len() {
            return Err("a match reaches before the block");
        }
        let len = read_len(&mut i, (token & 15) as usize)? + MIN_MATCH;
        let len = len.min(size - out.len());
        let from = out.len() - distance;
        for k in 0..len {
            out.push(out[from + k]);
        }
    }
    if out.len() != size {
        return Err("decodes to fewer bytes than the extent holds");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn blocks(input: &[u8], capacity: usize, depth: usize) -> Vec<(usize, Vec<u8>)> {
        let mut compressor = Lz4Compressor::new(depth);
        compressor.begin();
        let mut start = 0;
        let mut out = Vec::new();
        while start < input.len() {
            let mut block = Vec::new();
            let consumed = compressor.compress_prefix(input, start, input.len(), capacity, &mut block);
            assert!(consumed > 0 || input.len() == start);
            assert!(block.len() <= capacity, "{} > {capacity}", block.len());
            out.push((consumed, block));
            start += consumed;
        }
        out
    }

    /// The block format's end rules the kernel's full decoder relies on:
    /// it ends with literals, the last 5 bytes are literals and the last
    /// match starts at least 12 bytes before the end.
    fn end_rules_hold(block: &[u8], size: usize) -> bool {
        let (mut i, mut out) = (0usize, 0usize);
        let length = |i: &mut usize, mut n: usize| {
            if n == 15 {
                loop {
                    let b = block[*i];
                    *i += 1;
                    n += b as usize;
                    if b != 255 {
                        break;
                    }
                }
            }
            n
        };
        loop {
            let token = block[i];
            i += 1;
            let literals = length(&mut i, (token >> 4) as usize);
            i += literals;
            out += literals;
            if i == block.len() {
                return out == size;
            }
            i += 2;
            let len = length(&mut i, (token & 15) as usize) + MIN_MATCH;
            if out + MF_LIMIT > size || out + len + LAST_LITERALS > size {
                return false;
            }
            out += len;
        }
    }

    fn round_trip(input: &[u8], capacity: usize) {
        let mut decoded = Vec::new();
        for (consumed, block) in blocks(input, capacity, 16) {
            assert!(end_rules_hold(&block, consumed), "end rules broken");
            decoded.extend(decompress(&block, consumed).unwrap());
        }
        assert_eq!(decoded, input);
    }

    #[test]
    fn hostile_blocks_are_errors() {
        assert!(decompress(&[0x10], 1).is_err(), "truncated literals");
        assert!(decompress(&[0x0f, 0x05, 0x00], 40).is_err(), "match before the start");
        assert!(
            decompress(&[0x10, b'a', 0x09, 0x00], 20).is_err(),
            "offset past the output"
        );
        assert!(decompress(&[0xf0, 0xff, 0xff], 10).is_err(), "length runs off the end");
        assert_eq!(
            decompress(&[0x30, b'a', b'b', b'c'], 2).unwrap(),
            b"ab",
            "stops at the size asked"
        );
    }

    #[test]
    fn text_compresses_and_round_trips() {
        let text: Vec<u8> = (0..200_000)
            .map(|i| b"the quick brown fox jumps over the lazy dog "[i % 44])
            .collect();
        round_trip(&text, 4096);
        let first = &blocks(&text, 4096, 16)[0];
        assert!(
            first.0 > 100_000,
            "repetitive text fills a block with much input: {}",
            first.0
        );
    }

    #[test]
    fn incompressible_data_fills_a_block_with_less_than_its_size() {
        let mut state = 0x1234_5678u64;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        round_trip(&noise, 4096);
        assert!(blocks(&noise, 4096, 16)[0].0 < 4096);
    }

    #[test]
    fn zeros_reach_far() {
        let zeros = vec![0u8; 1 << 20];
        round_trip(&zeros, 4096);
    }

    #[test]
    fn tiny_inputs() {
        for n in 0..40 {
            let input: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            round_trip(&input, 4096);
        }
    }

    proptest! {
        #[test]
        fn any_input_round_trips(
            input in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..20_000),
            capacity in 64usize..5000,
        ) {
            round_trip(&input, capacity);
        }
    }
}
