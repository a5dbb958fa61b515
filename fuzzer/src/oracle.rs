//! The consistency oracle the harness drives beside the device (design §6):
//! a shadow of what every block may hold.
//!
//! Per block it keeps the values that may be on the medium (the *durable*
//! set: after a power loss it is not known which of several writes the
//! cache destaged, so it is a set until a read tells) and the writes since
//! (the *volatile* list). Rules, with the clause that justifies each:
//! - a completed write with FUA, or while WCE=0, is durable (SBC-4 5.40,
//!   SBC-4 7.5.6 caching page: WCE=0 means GOOD only after the medium has
//!   the data);
//! - a SYNCHRONIZE CACHE that completes GOOD without IMMED makes every write
//!   completed before it in its range durable (SBC-4 5.26); with IMMED the
//!   host is never told when the flush ends, so it proves nothing;
//! - without a power loss a read returns the newest completed write
//!   (read-your-writes);
//! - after a power loss a block holds its durable value or any write since
//!   (a volatile cache may destage any subset, in any order), never an older
//!   value, another block's data, or garbage; never-durable blocks may read
//!   as zeros;
//! - a write that failed may or may not have landed: both are permitted.
//!
//! Blocks are compared by their self-describing tags ([`trace::pattern`]),
//! so the oracle keeps no data, only (generation, command) pairs.

use crate::verdict::Violation;
use std::collections::HashMap;
use trace::pattern::{self, BlockState};

/// One write as the oracle remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    generation: u32,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Since {
    v: Version,
    good: bool,
}

#[derive(Debug, Clone, Default)]
struct Block {
    /// Possible durable values; `None` is "never written" (zeros).
    durable: Vec<Option<Version>>,
    /// Writes since the durable point, in completion order.
    since: Vec<Since>,
    /// The flush that last made this block durable, for explanations.
    flushed_by: Option<u64>,
}

impl Block {
    fn fresh() -> Block {
        Block {
            durable: vec![None],
            since: Vec::new(),
            flushed_by: None,
        }
    }

    /// Values a read may return now.
    fn allowed(&self) -> Vec<Option<Version>> {
        match self.since.iter().rposition(|s| s.good) {
            Some(g) => self.since[g..]
                .iter()
                .enumerate()
                .filter(|(i, s)| *i == 0 || !s.good)
                .map(|(_, s)| Some(s.v))
                .collect(),
            None => {
                let mut v = self.durable.clone();
                v.extend(self.since.iter().map(|s| Some(s.v)));
                v
            }
        }
    }

    fn make_durable(&mut self) {
        match self.since.iter().rposition(|s| s.good) {
            Some(g) => {
                self.durable = self.since[g..]
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| *i == 0 || !s.good)
                    .map(|(_, s)| Some(s.v))
                    .collect();
            }
            None => self.durable.extend(self.since.iter().map(|s| Some(s.v))),
        }
        self.since.clear();
    }
}

/// The oracle for one run.
#[derive(Debug)]
pub struct Shadow {
    block_size: u32,
    wce: bool,
    blocks: HashMap<u64, Block>,
    pending: HashMap<u64, (u64, u32, Version, bool)>,
    flushes: HashMap<u64, (u64, u32, bool)>,
    seed: Option<u64>,
}

impl Shadow {
    /// An oracle for a device of `block_size`-byte blocks, never written.
    pub fn new(block_size: u32) -> Shadow {
        Shadow {
            block_size,
            wce: true,
            blocks: HashMap::new(),
            pending: HashMap::new(),
            flushes: HashMap::new(),
            seed: None,
        }
    }

    /// The block size this oracle judges.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The device's write cache is now on or off.
    pub fn set_wce(&mut self, on: bool) {
        self.wce = on;
    }

    /// A write of `blocks` self-describing blocks from `lba`, stream `seed`,
    /// `generation`, was submitted as command `seq`.
    pub fn submit_write(
        &mut self,
        seq: u64,
        lba: u64,
        blocks: u32,
        seed: u64,
        generation: u32,
        fua: bool,
    ) {
        self.seed = Some(seed);
        self.pending
            .insert(seq, (lba, blocks, Version { generation, seq }, fua));
    }

    /// Command `seq` (a write) completed, GOOD or not.
    pub fn complete_write(&mut self, seq: u64, good: bool) {
        let Some((lba, blocks, v, fua)) = self.pending.remove(&seq) else {
            return;
        };
        let durable = good && (fua || !self.wce);
        for b in lba..lba.saturating_add(u64::from(blocks)) {
            let blk = self.blocks.entry(b).or_insert_with(Block::fresh);
            blk.since.push(Since { v, good });
            if durable {
                blk.make_durable();
                blk.flushed_by = Some(seq);
            }
        }
    }

    /// SYNCHRONIZE CACHE of `blocks` from `lba` (0: to the end) submitted
    /// as command `seq`.
    pub fn submit_flush(&mut self, seq: u64, lba: u64, blocks: u32, immed: bool) {
        self.flushes.insert(seq, (lba, blocks, immed));
    }

    /// The flush `seq` completed, GOOD or not.
    pub fn complete_flush(&mut self, seq: u64, good: bool) {
        let Some((lba, blocks, immed)) = self.flushes.remove(&seq) else {
            return;
        };
        if !good || immed {
            return;
        }
        let end = if blocks == 0 {
            u64::MAX
        } else {
            lba.saturating_add(u64::from(blocks))
        };
        for (b, blk) in self.blocks.iter_mut() {
            if *b >= lba && *b < end && !blk.since.is_empty() {
                blk.make_durable();
                blk.flushed_by = Some(seq);
            }
        }
    }

    /// Power was cut: every block may now hold its durable value or any
    /// write since; which one, the next read tells.
    pub fn power_loss(&mut self) {
        self.pending.clear();
        self.flushes.clear();
        for blk in self.blocks.values_mut() {
            blk.durable.extend(blk.since.drain(..).map(|s| Some(s.v)));
            blk.durable.dedup();
        }
    }

    /// Judges one block read back by command `seq` from `lba`. Returns the
    /// violation, if any, with the commands involved.
    pub fn check_read(&mut self, seq: u64, lba: u64, buf: &[u8]) -> Option<Violation> {
        let blk = self.blocks.entry(lba).or_insert_with(Block::fresh);
        let allowed = blk.allowed();
        let seed = self.seed;
        let state = pattern::inspect(buf);
        let found: Option<Option<Version>> = match state {
            BlockState::Zeros => Some(None),
            BlockState::Valid { tag } if tag.lba == lba && Some(tag.seed) == seed => allowed
                .iter()
                .copied()
                .find(|a| a.is_some_and(|v| v.generation == tag.generation))
                .or(Some(Some(Version {
                    generation: tag.generation,
                    seq: u64::MAX,
                }))),
            _ => None,
        };
        if let Some(f) = found {
            if allowed.contains(&f) {
                if blk.since.is_empty() && f.is_none_or(|v| v.seq != u64::MAX) {
                    blk.durable = vec![f];
                }
                return None;
            }
        }
        let newest = allowed
            .iter()
            .flatten()
            .max_by_key(|v| v.generation)
            .copied();
        let oldest = allowed
            .iter()
            .flatten()
            .min_by_key(|v| v.generation)
            .copied();
        let expect = match (newest, allowed.contains(&None)) {
            (Some(v), _) => format!("generation {} written by command #{}", v.generation, v.seq),
            (None, _) => "zeros (never written)".to_string(),
        };
        let expect = if allowed.len() > 1 {
            format!("one of {} versions, newest {expect}", allowed.len())
        } else {
            expect
        };
        let durable_note = match blk.flushed_by {
            Some(f) => format!("; made durable by command #{f}"),
            None => String::new(),
        };
        let (class, what) = match state {
            BlockState::Zeros => ("dropped", "zeros".to_string()),
            BlockState::Garbage => ("garbage", "no valid block header".to_string()),
            BlockState::Torn { tag } => (
                "torn",
                format!(
                    "a torn block (header for LBA {} generation {})",
                    tag.lba, tag.generation
                ),
            ),
            BlockState::Valid { tag } if tag.lba != lba => (
                "misdirected",
                format!(
                    "data written for LBA {} (generation {})",
                    tag.lba, tag.generation
                ),
            ),
            BlockState::Valid { tag } if Some(tag.seed) != seed => (
                "foreign",
                format!("a block of another stream (seed {:#x})", tag.seed),
            ),
            BlockState::Valid { tag } => {
                let class = match oldest {
                    Some(o) if tag.generation < o.generation => "stale",
                    Some(_) | None if newest.is_some_and(|n| tag.generation > n.generation) => {
                        "newer"
                    }
                    _ => "stale",
                };
                (class, format!("generation {}", tag.generation))
            }
        };
        Some(Violation {
            class: class.to_string(),
            op: None,
            seq: Some(seq),
            lba: Some(lba),
            detail: format!("block holds {what}, expected {expect}{durable_note}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::pattern::fill_blocks;

    const SEED: u64 = 7;

    fn block(lba: u64, generation: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        fill_blocks(SEED, generation, lba, 512, &mut b);
        b
    }

    fn write(o: &mut Shadow, seq: u64, lba: u64, generation: u32, fua: bool) {
        o.submit_write(seq, lba, 1, SEED, generation, fua);
        o.complete_write(seq, true);
    }

    #[test]
    fn read_your_writes_without_power_loss() {
        let mut o = Shadow::new(512);
        write(&mut o, 0, 5, 1, false);
        write(&mut o, 1, 5, 2, false);
        assert!(o.check_read(2, 5, &block(5, 2)).is_none());
        let v = o.check_read(3, 5, &block(5, 1)).unwrap();
        assert_eq!(v.class, "stale");
        assert!(v.detail.contains("command #1"), "{}", v.detail);
        assert_eq!(
            o.check_read(4, 5, &block(6, 2)).unwrap().class,
            "misdirected"
        );
        assert_eq!(o.check_read(5, 5, &[0u8; 512]).unwrap().class, "dropped");
    }

    #[test]
    fn flushed_data_must_survive_power_loss() {
        let mut o = Shadow::new(512);
        write(&mut o, 0, 9, 1, false);
        o.submit_flush(1, 0, 0, false);
        o.complete_flush(1, true);
        write(&mut o, 2, 9, 2, false);
        o.power_loss();
        // Either the flushed or the later write may be there...
        assert!(o.check_read(3, 9, &block(9, 1)).is_none());
        // ...and after the read says which, the block holds it.
        assert_eq!(o.check_read(4, 9, &block(9, 2)).unwrap().class, "newer");
        let mut o = Shadow::new(512);
        write(&mut o, 0, 9, 1, false);
        o.submit_flush(1, 0, 0, false);
        o.complete_flush(1, true);
        o.power_loss();
        let v = o.check_read(2, 9, &[0u8; 512]).unwrap();
        assert_eq!(v.class, "dropped");
        assert!(v.detail.contains("durable by command #1"), "{}", v.detail);
    }

    #[test]
    fn unflushed_writes_may_be_lost_and_immed_proves_nothing() {
        let mut o = Shadow::new(512);
        write(&mut o, 0, 3, 1, false);
        o.submit_flush(1, 0, 0, true);
        o.complete_flush(1, true);
        o.power_loss();
        assert!(o.check_read(2, 3, &[0u8; 512]).is_none());
    }

    #[test]
    fn fua_and_write_through_are_durable_at_completion() {
        let mut o = Shadow::new(512);
        write(&mut o, 0, 1, 1, true);
        o.set_wce(false);
        write(&mut o, 1, 2, 2, false);
        o.power_loss();
        assert_eq!(o.check_read(2, 1, &[0u8; 512]).unwrap().class, "dropped");
        assert_eq!(o.check_read(3, 2, &[0u8; 512]).unwrap().class, "dropped");
        assert!(o.check_read(4, 1, &block(1, 1)).is_none());
    }

    #[test]
    fn failed_writes_may_or_may_not_land() {
        let mut o = Shadow::new(512);
        write(&mut o, 0, 4, 1, false);
        o.submit_write(1, 4, 1, SEED, 2, false);
        o.complete_write(1, false);
        assert!(o.check_read(2, 4, &block(4, 1)).is_none());
        assert!(o.check_read(3, 4, &block(4, 2)).is_none());
    }
}
