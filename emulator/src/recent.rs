//! Self-describing blocks written moments ago, kept as the bytes that
//! arrived, so reading one back is a copy rather than a regeneration.
//!
//! The cache and the medium keep a self-describing block as its tag, and a
//! read regenerates it ([`trace::pattern::fill_block`]: the fill and two
//! CRC32Cs). A fuzz execution reads back nearly every block it wrote, a few
//! commands later, so that regeneration was a sixth of its emulator time.
//! The bytes a write brought were checked against the same tag when it was
//! classified (header and body CRC32C), so they are the bytes the tag
//! regenerates.
//!
//! The blocks are kept in a ring in write order (one buffer that grows to at
//! most [`SLOTS`] blocks per logical unit, so a short-lived emulator pays
//! only for what it wrote) behind a small direct-mapped index. Remembering
//! costs a block copy per write; a stream that never reads its writes back
//! (a replayed copy) stops paying it after a warm-up, and tries again now
//! and then.

use crate::content::{BlockData, Tag};

/// Blocks remembered per logical unit.
pub const SLOTS: usize = 256;

/// Index entries: twice the blocks, so collisions seldom evict.
const INDEX: usize = 2 * SLOTS;

/// Writes remembered before the hit rate decides.
const WARM_UP: u64 = 1024;

/// Recently written self-describing blocks of one logical unit.
#[derive(Debug, Clone, Default)]
pub struct RecentBlocks {
    /// Block bytes, ring position `i` at `i * block_size`.
    ring: Vec<u8>,
    /// The tag of each ring position.
    tags: Vec<Tag>,
    /// Where the next block goes once the ring is full.
    next: usize,
    block_size: usize,
    /// Hash of a tag -> ring position + 1 (0: empty).
    index: Vec<u16>,
    offered: u64,
    hits: u64,
}

fn hash(t: &Tag) -> usize {
    let mut z = t.lba ^ t.seed.rotate_left(23) ^ u64::from(t.generation).rotate_left(47);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize % INDEX
}

impl RecentBlocks {
    /// A block just written, whose bytes were classified as `tag`'s.
    pub fn remember(&mut self, tag: Tag, bytes: &[u8]) {
        self.offered += 1;
        // After the warm-up, a stream that reads back fewer than one block
        // in four it writes only refreshes the ring every 64th write.
        if self.offered > WARM_UP
            && self.hits * 4 < self.offered
            && !self.offered.is_multiple_of(64)
        {
            return;
        }
        let bs = bytes.len();
        if self.index.is_empty() {
            self.index = vec![0; INDEX];
            self.block_size = bs;
            // Reserved, not touched: memory is used as blocks arrive.
            self.ring.reserve_exact(SLOTS * bs);
        }
        if bs != self.block_size {
            return;
        }
        let pos = if self.tags.len() < SLOTS {
            self.tags.push(tag);
            self.ring.extend_from_slice(bytes);
            self.tags.len() - 1
        } else {
            let pos = self.next;
            self.next = (pos + 1) % SLOTS;
            let old = std::mem::replace(&mut self.tags[pos], tag);
            let h = hash(&old);
            if usize::from(self.index[h]) == pos + 1 {
                self.index[h] = 0;
            }
            self.ring[pos * bs..(pos + 1) * bs].copy_from_slice(bytes);
            pos
        };
        self.index[hash(&tag)] = (pos + 1) as u16;
    }

    /// Append `d`'s `block_size` bytes to `out`: from the ring when it
    /// holds them, else rendered.
    pub fn render_append(&mut self, d: &BlockData, out: &mut Vec<u8>, block_size: usize) {
        if let (BlockData::Pattern(tag), true) = (d, block_size == self.block_size) {
            if let Some(&p) = self.index.get(hash(tag)) {
                let pos = usize::from(p).wrapping_sub(1);
                if self.tags.get(pos) == Some(tag) {
                    self.hits += 1;
                    out.extend_from_slice(&self.ring[pos * block_size..(pos + 1) * block_size]);
                    return;
                }
            }
        }
        d.render_append(out, block_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::pattern::{fill_block, BlockTag};

    fn block(lba: u64, generation: u32) -> (Tag, Vec<u8>) {
        let mut b = vec![0u8; 512];
        let t = BlockTag {
            lba,
            generation,
            seed: 3,
        };
        fill_block(&t, &mut b);
        (Tag::from(&t), b)
    }

    #[test]
    fn remembered_and_rendered_blocks_are_the_same_bytes() {
        let mut r = RecentBlocks::default();
        let mut out = Vec::new();
        for lba in 0..2 * SLOTS as u64 {
            let (t, b) = block(lba, 1);
            r.remember(t, &b);
        }
        // Every block reads back right, whether it is still in the table
        // or was pushed out by a later one.
        for lba in 0..2 * SLOTS as u64 {
            let (t, b) = block(lba, 1);
            out.clear();
            r.render_append(&BlockData::Pattern(t), &mut out, 512);
            assert_eq!(out, b, "LBA {lba}");
        }
        assert!(r.hits > 0 && r.hits < 2 * SLOTS as u64);
        // Another generation of a remembered LBA is not confused with it.
        let (t2, b2) = block(2 * SLOTS as u64 - 1, 2);
        out.clear();
        r.render_append(&BlockData::Pattern(t2), &mut out, 512);
        assert_eq!(out, b2);
        out.clear();
        r.render_append(&BlockData::Zero, &mut out, 512);
        assert_eq!(out, vec![0u8; 512]);
    }

    #[test]
    fn a_stream_that_never_reads_back_stops_filling_the_table() {
        let mut r = RecentBlocks::default();
        let (t, b) = block(1, 1);
        for _ in 0..WARM_UP + 10 * 64 {
            r.remember(t, &b);
        }
        let (t2, b2) = block(2, 1);
        for _ in 0..63 {
            r.remember(t2, &b2);
        }
        let mut out = Vec::new();
        r.render_append(&BlockData::Pattern(t2), &mut out, 512);
        assert_eq!(out, b2);
        assert_eq!(r.hits, 0, "skipped between refreshes, so rendered");
        r.remember(t2, &b2);
        out.clear();
        r.render_append(&BlockData::Pattern(t2), &mut out, 512);
        assert_eq!((out, r.hits), (b2, 1), "the 64th is remembered");
    }
}
