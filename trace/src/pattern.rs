//! Self-describing block data (design §4): every block Scuzz writes says
//! which LBA, write generation and stream it was written for, so a block read
//! back can be diagnosed without a copy of the expected data.
//!
//! ```
//! use trace::pattern::{classify, fill_block, BlockTag, Classification};
//! let mut block = vec![0u8; 4096];
//! fill_block(&BlockTag { lba: 7, generation: 2, seed: 1 }, &mut block);
//! // The oracle expected the third write to LBA 7: this one was lost.
//! let expected = BlockTag { lba: 7, generation: 3, seed: 1 };
//! assert_eq!(classify(&block, &expected), Classification::Stale { found_generation: 2 });
//! ```
//!
//! # Block layout
//!
//! All integers little-endian. Offsets in bytes from the start of the block.
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 8 | magic | ASCII `SCUZZBLK` (`53 43 55 5A 5A 42 4C 4B`) |
//! | 8 | 8 | lba | the LBA the block was written for |
//! | 16 | 4 | generation | write generation of that LBA within the stream |
//! | 20 | 4 | block_len | the block's length in bytes (512, 4096, ...) |
//! | 24 | 8 | seed | the stream seed |
//! | 32 | 4 | body_crc | CRC32C (Castagnoli, as iSCSI uses) of bytes 40..block_len |
//! | 36 | 4 | header_crc | CRC32C of bytes 0..36 |
//! | 40 | block_len − 40 | fill | pseudo-random bytes keyed by (seed, lba, generation) |
//!
//! The fill comes from a wyrand-style generator started from
//! `state = mix(seed ^ mix(lba ^ mix(generation ^ 0x5cb5_b10c_0000_0000)))`,
//! with `mix` the splitmix64 finaliser
//! (`z = (z ^ z >> 30) * 0xbf58_476d_1ce4_e5b9; z = (z ^ z >> 27) * 0x94d0_49bb_1331_11eb; z ^ z >> 31`,
//! wrapping). Each step is
//! `state += 0xa076_1d64_78bd_642f; t = state as u128 * (state ^ 0xe703_7ed1_a0b4_28db) as u128`
//! (wrapping add, full 128-bit product) and emits 16 bytes: the 64-bit word
//! `(t mod 2^64) ^ (t >> 64)`, then the word `t >> 64`, each little-endian. The last step is
//! truncated to the bytes left.
//! A reader does not need to regenerate it: the body CRC already tells a
//! torn block from a whole one. The fill is pseudo-random so that devices that
//! compress or deduplicate still store every byte.
//!
//! Two CRCs, because the verdicts need both: a valid header CRC says the
//! block's first sector is one Scuzz wrote (so LBA and generation can be
//! trusted); a wrong body CRC under a valid header says the rest of the block
//! came from somewhere else: a torn write.

use serde::{Deserialize, Serialize};
use std::fmt;

/// First eight bytes of every Scuzz block.
pub const MAGIC: [u8; 8] = *b"SCUZZBLK";

/// Bytes taken by the header; the fill starts here.
pub const HEADER_LEN: usize = 40;

const BODY_CRC_AT: usize = 32;
const HEADER_CRC_AT: usize = 36;

/// What a block says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockTag {
    /// The LBA the block was written for.
    pub lba: u64,
    /// Write generation of that LBA (1 for the first write, and so on).
    pub generation: u32,
    /// Seed of the stream that wrote it.
    pub seed: u64,
}

/// The splitmix64 finaliser: a cheap bijective mix, so nearby keys give
/// unrelated fill.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fill_body(tag: &BlockTag, body: &mut [u8]) {
    let mut state =
        mix(tag.seed ^ mix(tag.lba ^ mix(u64::from(tag.generation) ^ 0x5cb5_b10c_0000_0000)));
    // One 64x64->128 multiply yields two words: the halves folded together
    // (classic wyrand), then the high half alone. The low half alone would
    // be weak: its low bits depend only on the state's low bits. Half the
    // multiplies of classic wyrand keeps a 4 KiB fill well under a
    // microsecond.
    let mut step = || {
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        ((t as u64) ^ ((t >> 64) as u64), (t >> 64) as u64)
    };
    let mut pairs = body.chunks_exact_mut(16);
    for p in &mut pairs {
        let (lo, hi) = step();
        p[..8].copy_from_slice(&lo.to_le_bytes());
        p[8..].copy_from_slice(&hi.to_le_bytes());
    }
    let tail = pairs.into_remainder();
    if !tail.is_empty() {
        let (lo, hi) = step();
        let mut last = [0u8; 16];
        last[..8].copy_from_slice(&lo.to_le_bytes());
        last[8..].copy_from_slice(&hi.to_le_bytes());
        let n = tail.len();
        tail.copy_from_slice(&last[..n]);
    }
}

/// Writes the tagged block for `tag` into `buf`; `buf.len()` is the block
/// size (512 and 4096 in practice; any length of at least [`HEADER_LEN`]
/// works).
///
/// # Panics
///
/// If `buf` is shorter than [`HEADER_LEN`] or longer than `u32::MAX`: a
/// caller bug, not a property of data read from a device.
pub fn fill_block(tag: &BlockTag, buf: &mut [u8]) {
    assert!(
        buf.len() >= HEADER_LEN,
        "block of {} bytes cannot hold the {HEADER_LEN}-byte header",
        buf.len()
    );
    let block_len = u32::try_from(buf.len()).expect("block length fits in 32 bits");
    let (header, body) = buf.split_at_mut(HEADER_LEN);
    fill_body(tag, body);
    header[0..8].copy_from_slice(&MAGIC);
    header[8..16].copy_from_slice(&tag.lba.to_le_bytes());
    header[16..20].copy_from_slice(&tag.generation.to_le_bytes());
    header[20..24].copy_from_slice(&block_len.to_le_bytes());
    header[24..32].copy_from_slice(&tag.seed.to_le_bytes());
    header[BODY_CRC_AT..HEADER_CRC_AT].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let hcrc = crc32c::crc32c(&header[..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..HEADER_LEN].copy_from_slice(&hcrc.to_le_bytes());
}

/// Fills `buf` with consecutive tagged blocks of `block_size` bytes, the
/// first for `first_lba`, all with the same `seed` and `generation`: the
/// Data-Out of one WRITE. LBAs past 2^64 wrap (no device has them).
///
/// # Panics
///
/// If `block_size` is below [`HEADER_LEN`] or `buf.len()` is not a multiple
/// of it.
pub fn fill_blocks(seed: u64, generation: u32, first_lba: u64, block_size: usize, buf: &mut [u8]) {
    assert!(
        block_size >= HEADER_LEN,
        "block size {block_size} cannot hold the {HEADER_LEN}-byte header"
    );
    assert!(
        buf.chunks_exact(block_size).remainder().is_empty(),
        "buffer of {} bytes is not a whole number of {block_size}-byte blocks",
        buf.len()
    );
    for (i, block) in buf.chunks_exact_mut(block_size).enumerate() {
        let tag = BlockTag {
            lba: first_lba.wrapping_add(i as u64),
            generation,
            seed,
        };
        fill_block(&tag, block);
    }
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The tag of a block whose header is intact: magic, header CRC, and a
/// recorded block length equal to `buf.len()`. Says nothing about the body;
/// see [`inspect`].
pub fn read_tag(buf: &[u8]) -> Option<BlockTag> {
    let header = buf.get(..HEADER_LEN)?;
    if header[..8] != MAGIC {
        return None;
    }
    if crc32c::crc32c(&header[..HEADER_CRC_AT]) != le_u32(header, HEADER_CRC_AT)? {
        return None;
    }
    if u64::from(le_u32(header, 20)?) != buf.len() as u64 {
        return None;
    }
    Some(BlockTag {
        lba: le_u64(header, 8)?,
        generation: le_u32(header, 16)?,
        seed: le_u64(header, 24)?,
    })
}

/// What a block read back is, before comparing it with any expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockState {
    /// Every byte zero: never written (or deallocated).
    Zeros,
    /// No valid header and not all zeros.
    Garbage,
    /// Header valid, body CRC wrong.
    Torn {
        /// What the header says.
        tag: BlockTag,
    },
    /// Header and body intact.
    Valid {
        /// What the header says.
        tag: BlockTag,
    },
}

fn all_zero(buf: &[u8]) -> bool {
    // OR-reduce 64-byte chunks (vectorises) and stop at the first non-zero
    // one, so garbage is rejected as quickly as zeros are accepted.
    let mut chunks = buf.chunks_exact(64);
    let clean = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0);
    clean && chunks.remainder().iter().all(|&b| b == 0)
}

/// Reads what `buf` says about itself, for an oracle that knows a set of
/// permitted writes rather than one expected tag. The caller compares
/// `tag.lba` with the LBA it read.
pub fn inspect(buf: &[u8]) -> BlockState {
    match read_tag(buf) {
        Some(tag) => {
            let body_ok = buf.get(HEADER_LEN..).map(crc32c::crc32c) == le_u32(buf, BODY_CRC_AT);
            if body_ok {
                BlockState::Valid { tag }
            } else {
                BlockState::Torn { tag }
            }
        }
        None if all_zero(buf) => BlockState::Zeros,
        None => BlockState::Garbage,
    }
}

/// A block read back, judged against the write that should be there (the
/// table of design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Classification {
    /// The expected write.
    Ok,
    /// An older write to this LBA: a lost write (flush not honoured, cache
    /// dropped, reorder across a flush).
    Stale {
        /// Generation found.
        found_generation: u32,
    },
    /// A later write to this LBA than expected (the oracle's expectation is
    /// behind, or a write landed that should not have).
    Newer {
        /// Generation found.
        found_generation: u32,
    },
    /// A block written for another LBA: DMA address truncation, wrong SG
    /// offset, LBA arithmetic.
    Misdirected {
        /// LBA the data was written for.
        from_lba: u64,
        /// Its generation.
        generation: u32,
    },
    /// A whole block for this LBA from another stream (another seed): a
    /// different run or initiator wrote it, so its generation says nothing
    /// about this stream's order.
    Foreign {
        /// The other stream's seed.
        seed: u64,
        /// Its generation.
        generation: u32,
    },
    /// All zeros: never written, or a segment of the transfer never landed.
    Dropped,
    /// Header valid, body CRC wrong: partial DMA, power cut mid-block.
    Torn,
    /// No valid header: host memory reused, DMA from the wrong page.
    Garbage,
}

/// Classifies `buf` against the write `expected` says should be there.
///
/// Order of checks: zeros, header, body CRC, LBA, seed, generation. A torn
/// block is reported as torn whatever LBA its header names, since its body
/// cannot be trusted.
pub fn classify(buf: &[u8], expected: &BlockTag) -> Classification {
    match inspect(buf) {
        BlockState::Zeros => Classification::Dropped,
        BlockState::Garbage => Classification::Garbage,
        BlockState::Torn { .. } => Classification::Torn,
        BlockState::Valid { tag } => {
            if tag.lba != expected.lba {
                Classification::Misdirected {
                    from_lba: tag.lba,
                    generation: tag.generation,
                }
            } else if tag.seed != expected.seed {
                Classification::Foreign {
                    seed: tag.seed,
                    generation: tag.generation,
                }
            } else if tag.generation < expected.generation {
                Classification::Stale {
                    found_generation: tag.generation,
                }
            } else if tag.generation > expected.generation {
                Classification::Newer {
                    found_generation: tag.generation,
                }
            } else {
                Classification::Ok
            }
        }
    }
}

impl Classification {
    /// Whether the block is what was expected.
    pub fn is_ok(&self) -> bool {
        matches!(self, Classification::Ok)
    }

    /// Short lower-case name, for counters and JSON (`"misdirected"`).
    pub fn name(&self) -> &'static str {
        match self {
            Classification::Ok => "ok",
            Classification::Stale { .. } => "stale",
            Classification::Newer { .. } => "newer",
            Classification::Misdirected { .. } => "misdirected",
            Classification::Foreign { .. } => "foreign",
            Classification::Dropped => "dropped",
            Classification::Torn => "torn",
            Classification::Garbage => "garbage",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            Classification::Ok => f.write_str("ok"),
            Classification::Stale { found_generation } => write!(
                f,
                "{name}: block holds an older write to this LBA (generation {found_generation})"
            ),
            Classification::Newer { found_generation } => write!(
                f,
                "{name}: block holds a later write to this LBA (generation {found_generation})"
            ),
            Classification::Misdirected {
                from_lba,
                generation,
            } => write!(
                f,
                "{name}: block holds data written for LBA {from_lba} (generation {generation})"
            ),
            Classification::Foreign { seed, generation } => write!(
                f,
                "{name}: block holds data of another stream (seed {seed:#x}, generation {generation})"
            ),
            Classification::Dropped => write!(f, "{name}: block was never written (all zeros)"),
            Classification::Torn => write!(
                f,
                "{name}: header valid but block CRC mismatch (partial write)"
            ),
            Classification::Garbage => write!(
                f,
                "{name}: no valid block header and not zeros (data Scuzz never wrote)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_read_tag() {
        let tag = BlockTag {
            lba: 77,
            generation: 3,
            seed: 9,
        };
        let mut b = vec![0u8; 512];
        fill_block(&tag, &mut b);
        assert_eq!(read_tag(&b), Some(tag));
        assert_eq!(&b[..8], b"SCUZZBLK");
        assert_eq!(classify(&b, &tag), Classification::Ok);
    }

    #[test]
    fn header_length_must_match_the_buffer() {
        let tag = BlockTag {
            lba: 1,
            generation: 1,
            seed: 1,
        };
        let mut b = vec![0u8; 4096];
        fill_block(&tag, &mut b);
        assert_eq!(read_tag(&b[..512]), None);
    }

    #[test]
    fn odd_lengths_fill_the_tail() {
        let tag = BlockTag {
            lba: 5,
            generation: 2,
            seed: 3,
        };
        let mut b = vec![0u8; 45];
        fill_block(&tag, &mut b);
        assert_eq!(inspect(&b), BlockState::Valid { tag });
    }
}
