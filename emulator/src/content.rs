//! What a stored block holds, kept as compactly as its content allows.
//!
//! Replays of multi-gigabyte synthesized workloads write self-describing
//! blocks (see [`trace::pattern`]): every byte follows from the block's tag
//! (LBA it was written for, generation, stream seed). Such a block is kept as
//! its tag and regenerated on read, so a 20 GiB `cp` costs a few extents, not
//! 20 GiB; all-zero blocks cost nothing, and only arbitrary data is kept as
//! bytes.

use std::sync::Arc;
use trace::pattern::{self, BlockTag};

/// The content of one logical block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockData {
    /// Every byte zero.
    Zero,
    /// A self-describing block, regenerated from its tag. The tag's LBA may
    /// differ from where the block is stored (misdirected data stays compact).
    Pattern(Tag),
    /// Arbitrary bytes, exactly one block long; shared, so the cache and
    /// the medium can hold the same block without copying it.
    Raw(Arc<[u8]>),
}

/// The identity of a self-describing block: enough to regenerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    /// LBA the block was generated for.
    pub lba: u64,
    /// Stream seed.
    pub seed: u64,
    /// Write generation.
    pub generation: u32,
}

impl From<&BlockTag> for Tag {
    fn from(t: &BlockTag) -> Self {
        Tag {
            lba: t.lba,
            seed: t.seed,
            generation: t.generation,
        }
    }
}

impl From<Tag> for BlockTag {
    fn from(t: Tag) -> Self {
        BlockTag {
            lba: t.lba,
            seed: t.seed,
            generation: t.generation,
        }
    }
}

/// What [`BlockData::classify`] found, borrowing raw bytes instead of
/// copying them, so a cache line that already owns a raw buffer can be
/// overwritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected<'a> {
    /// All zeros.
    Zero,
    /// A valid self-describing block.
    Pattern(Tag),
    /// Anything else.
    Raw(&'a [u8]),
}

impl Detected<'_> {
    /// The owned form.
    pub fn to_data(self) -> BlockData {
        match self {
            Detected::Zero => BlockData::Zero,
            Detected::Pattern(t) => BlockData::Pattern(t),
            Detected::Raw(b) => BlockData::Raw(Arc::from(b)),
        }
    }

    /// Store into `slot`, reusing its raw buffer when nothing else shares it.
    pub fn store_into(self, slot: &mut BlockData) {
        if let (Detected::Raw(b), BlockData::Raw(arc)) = (self, &mut *slot) {
            if let Some(mine) = Arc::get_mut(arc) {
                if mine.len() == b.len() {
                    mine.copy_from_slice(b);
                    return;
                }
            }
        }
        *slot = self.to_data();
    }
}

impl BlockData {
    /// Classify one block without copying it.
    pub fn classify(buf: &[u8]) -> Detected<'_> {
        if buf.starts_with(&pattern::MAGIC) {
            if let pattern::BlockState::Valid { tag } = pattern::inspect(buf) {
                return Detected::Pattern(Tag::from(&tag));
            }
        }
        if is_zero(buf) {
            return Detected::Zero;
        }
        Detected::Raw(buf)
    }

    /// Recognise `buf` (one block): zero, a valid self-describing block (its
    /// header and body CRC32C both verify, so regenerating it from the tag
    /// gives these bytes back unless someone forged a block with a matching
    /// CRC), or raw bytes.
    pub fn detect(buf: &[u8]) -> BlockData {
        Self::classify(buf).to_data()
    }

    /// Write the block's bytes into `out` (one block).
    pub fn render(&self, out: &mut [u8]) {
        match self {
            BlockData::Zero => out.fill(0),
            BlockData::Pattern(t) => pattern::fill_block(&BlockTag::from(*t), out),
            BlockData::Raw(b) => out.copy_from_slice(b),
        }
    }

    /// Append the block's `block_size` bytes to `out`: what [`render`]
    /// writes, without zeroing the space first for raw blocks.
    ///
    /// [`render`]: BlockData::render
    pub fn render_append(&self, out: &mut Vec<u8>, block_size: usize) {
        let at = out.len();
        match self {
            BlockData::Raw(b) if b.len() == block_size => out.extend_from_slice(b),
            _ => {
                out.resize(at + block_size, 0);
                if !matches!(self, BlockData::Zero) {
                    self.render(&mut out[at..]);
                }
            }
        }
    }
}

/// True if every byte of `buf` is zero. Runs on every block written, so it
/// ORs 64-byte chunks (which the compiler vectorises) and stops at the first
/// chunk with a set bit.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_zero_pattern_and_raw_blocks_and_renders_them_back() {
        let mut buf = vec![0u8; 4096];
        assert_eq!(BlockData::detect(&buf), BlockData::Zero);
        let tag = BlockTag {
            lba: 77,
            seed: 5,
            generation: 3,
        };
        pattern::fill_block(&tag, &mut buf);
        let d = BlockData::detect(&buf);
        assert_eq!(
            d,
            BlockData::Pattern(Tag {
                lba: 77,
                seed: 5,
                generation: 3
            })
        );
        let mut back = vec![0u8; 4096];
        d.render(&mut back);
        assert_eq!(back, buf);
        let mut appended = vec![1u8];
        d.render_append(&mut appended, 4096);
        BlockData::Zero.render_append(&mut appended, 4096);
        BlockData::Raw(vec![7u8; 4096].into()).render_append(&mut appended, 4096);
        assert_eq!(appended[1..4097], buf[..]);
        assert!(appended[4097..8193].iter().all(|b| *b == 0));
        assert!(appended[8193..].iter().all(|b| *b == 7) && appended.len() == 12289);
        buf[100] ^= 1; // body no longer matches its checksum: kept as bytes
        let d = BlockData::detect(&buf);
        assert!(matches!(d, BlockData::Raw(_)));
        d.render(&mut back);
        assert_eq!(back, buf);
    }
}
