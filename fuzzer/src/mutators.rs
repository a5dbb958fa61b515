//! Mutators that know what a SCSI program means.
//!
//! Byte-level havoc would almost never turn a recorded `cp` into the
//! sequence that corrupts data: it would break LBAs and SG lists long before
//! it moved a flush. Each mutator here makes one edit a storage engineer
//! would try by hand (move the flush, cut power earlier, push a buffer above
//! 4 GiB, make the transfer one block too long for the HBA), and
//! [`domain_mutations`] stacks them havoc-style under LibAFL's
//! [`HavocScheduledMutator`](libafl::mutators::HavocScheduledMutator).
//!
//! Every mutator's output is fitted ([`ScsiProgram::fit`]) so it always
//! executes: the mutator fits it, or its edit cannot unfit a fitted
//! program ([`KEEPS_FIT`]).

use crate::program::{Limits, Op, OpKind, ScsiProgram, Transfer, DEFAULT_BUFFER};
use libafl::corpus::{Corpus, CorpusId};
use libafl::mutators::{MutationResult, Mutator};
use libafl::state::{HasCorpus, HasRand};
use libafl_bolts::rands::Rand;
use libafl_bolts::tuples::{tuple_list, tuple_list_type};
use libafl_bolts::Named;
use std::borrow::Cow;
use trace::{HbaPreset, Lba, PhysAddr, Segment};

/// What mutators aim at: the device's geometry and the HBA's limits, both
/// the controller's and the OS splitter's (they differ when a byte limit
/// never reached the splitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// The device and the caps every program is fitted to.
    pub limits: Limits,
    /// Controller SG entries per write.
    pub max_segments_write: u32,
    /// Controller SG entries per read.
    pub max_segments_read: u32,
    /// Byte limits worth straddling (controller and splitter, reads and
    /// writes), each below the fitter's transfer cap.
    pub byte_limits: [u32; 4],
    /// First address the controller cannot reach (2^32 for a 32-bit HBA).
    pub address_limit: u64,
}

impl Hints {
    /// Hints for `preset` on a device with `limits`.
    pub fn new(mut limits: Limits, preset: &HbaPreset) -> Hints {
        let c = &preset.controller;
        let s = &preset.splitter;
        limits.max_transfer_bytes = aimed_transfer_cap(&limits, preset);
        let cap = limits.max_transfer_bytes.saturating_sub(limits.block_size);
        Hints {
            limits,
            max_segments_write: c.max_segments_write,
            max_segments_read: c.max_segments_read,
            byte_limits: [
                c.max_bytes_write,
                c.max_bytes_read,
                s.max_bytes_write,
                s.max_bytes_read,
            ]
            .map(|b| b.min(cap)),
            // A 64-bit HBA has no such line; 4 GiB is still where 32-bit
            // arithmetic in a driver breaks, so aim there.
            address_limit: c.address_limit().min(1 << 32),
        }
    }
}

/// The longest transfer mutators make: twice the HBA's largest byte limit
/// (controller or splitter), within the fitter's cap.
///
/// Past its limits a transfer is cut into limit-sized commands that all
/// take the same path, so a longer one adds no behaviour, only blocks to
/// move and hit counts to bump: with the fitter's 4 MiB as the ceiling,
/// doubling edits drove most of a campaign's transfers to 4 MiB (60% of
/// the blocks its queue moved, at eight times the LSI 3108's 512 KiB),
/// and each execution cost that much more. Twice the largest limit still
/// straddles every limit and still splits into several commands. With no
/// finite limit (a generic HBA) the fitter's cap stands.
fn aimed_transfer_cap(limits: &Limits, preset: &HbaPreset) -> u32 {
    let largest = [&preset.controller, &preset.splitter]
        .iter()
        .flat_map(|c| [c.max_bytes_read, c.max_bytes_write])
        .filter(|b| *b != u32::MAX)
        .max();
    let bs = limits.block_size.max(1);
    match largest {
        Some(b) => (b.saturating_mul(2) / bs * bs).clamp(bs, limits.max_transfer_bytes.max(bs)),
        None => limits.max_transfer_bytes,
    }
}

/// A small deterministic generator, seeded from the state's RNG for each
/// mutation so that mutations replay with the campaign's seed.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Dice {
        Dice(seed)
    }

    /// Next 64 random bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// Uniform index into a collection of `len` items (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The body of a domain mutation: edits the program and says whether it
/// changed anything.
pub type Edit = fn(&mut Dice, &Hints, &mut ScsiProgram) -> bool;

/// One named domain edit, as a LibAFL [`Mutator`].
#[derive(Debug, Clone)]
pub struct ProgramMutator {
    name: Cow<'static, str>,
    edit: Edit,
    hints: Hints,
    /// The edit leaves a fitted program fitted ([`KEEPS_FIT`]).
    keeps_fit: bool,
}

/// Edits that only move, drop, copy or insert whole ops that need no
/// fitting, or change a flag or an LBA (which fitting never touches): a
/// fitted program stays fitted, so the mutator skips [`ScsiProgram::fit`],
/// whose pass over every SG list of the program was a twentieth of a
/// campaign's mutation and a stack runs up to eight edits per mutant.
/// `keep_fit_edits_leave_fitted_programs_fitted` holds each to it.
pub const KEEPS_FIT: [&str; 11] = [
    "reorder-ops",
    "insert-sync-cache",
    "drop-sync-cache",
    "move-sync-cache",
    "insert-power-loss",
    "move-power-loss",
    "flip-fua",
    "overlap-lba",
    "duplicate-span",
    "drop-op",
    "insert-wce-or-reset",
];

impl ProgramMutator {
    /// The mutator `name` applying `edit` with `hints`.
    pub fn new(name: &'static str, edit: Edit, hints: Hints) -> ProgramMutator {
        ProgramMutator {
            name: Cow::Borrowed(name),
            edit,
            hints,
            keeps_fit: KEEPS_FIT.contains(&name),
        }
    }
}

impl Named for ProgramMutator {
    fn name(&self) -> &Cow<'static, str> {
        &self.name
    }
}

impl<S: HasRand> Mutator<ScsiProgram, S> for ProgramMutator {
    fn mutate(
        &mut self,
        state: &mut S,
        input: &mut ScsiProgram,
    ) -> Result<MutationResult, libafl::Error> {
        let mut dice = Dice::new(state.rand_mut().next());
        if (self.edit)(&mut dice, &self.hints, input) {
            // An input the corpus took from elsewhere (a resumed campaign
            // under other limits) may not be fitted yet; the harness fits a
            // copy of such a program before it runs it.
            if !self.keeps_fit {
                input.fit(&self.hints.limits);
            }
            Ok(MutationResult::Mutated)
        } else {
            Ok(MutationResult::Skipped)
        }
    }

    fn post_exec(&mut self, _state: &mut S, _new: Option<CorpusId>) -> Result<(), libafl::Error> {
        Ok(())
    }
}

/// How many random corpus entries a splice tries for one whose program is
/// in memory before it gives up.
const SPLICE_PICKS: usize = 16;

/// Splices two corpus entries: a prefix of this program, then a suffix of
/// another. Recorded workloads differ mostly in where they flush; splicing
/// gives one the other's tail.
#[derive(Debug, Clone)]
pub struct SpliceMutator {
    hints: Hints,
}

impl SpliceMutator {
    /// A splicer fitting its output with `hints`.
    pub fn new(hints: Hints) -> SpliceMutator {
        SpliceMutator { hints }
    }
}

impl Named for SpliceMutator {
    fn name(&self) -> &Cow<'static, str> {
        &Cow::Borrowed("splice")
    }
}

impl<S: HasRand + HasCorpus<ScsiProgram>> Mutator<ScsiProgram, S> for SpliceMutator {
    fn mutate(
        &mut self,
        state: &mut S,
        input: &mut ScsiProgram,
    ) -> Result<MutationResult, libafl::Error> {
        let count = state.corpus().count();
        if count < 2 {
            return Ok(MutationResult::Skipped);
        }
        let mut dice = Dice::new(state.rand_mut().next());
        // A partner the corpus holds in memory, or none: reading an
        // evicted entry back from its pack and decoding it cost more than
        // the execution it was for, and a minute into a campaign most
        // entries are evicted (splices that read one back were a tenth of
        // the campaign's time). Packs keep the newest entries and those
        // picked lately in memory, so partners lean to those.
        let mut found = None;
        for _ in 0..SPLICE_PICKS {
            let id = state.corpus().nth(dice.index(count));
            if state.corpus().get(id)?.borrow().input().is_some() {
                found = Some(id);
                break;
            }
        }
        let Some(id) = found else {
            return Ok(MutationResult::Skipped);
        };
        if state.corpus().current().as_ref() == Some(&id) {
            return Ok(MutationResult::Skipped);
        }
        let mut tc = state.corpus().get(id)?.borrow_mut();
        let other = tc.load_input(state.corpus())?;
        if other.ops.is_empty() {
            return Ok(MutationResult::Skipped);
        }
        let cut = dice.index(input.ops.len() + 1);
        let from = dice.index(other.ops.len());
        input.ops.truncate(cut);
        // Only what fitting would keep: a long partner's tail past the cap
        // would be copied (every SG list of it) only to be cut again.
        let room = self.hints.limits.max_ops.saturating_sub(cut);
        input
            .ops
            .extend(other.ops[from..].iter().take(room).cloned());
        drop(tc);
        input.fit(&self.hints.limits);
        Ok(MutationResult::Mutated)
    }

    fn post_exec(&mut self, _state: &mut S, _new: Option<CorpusId>) -> Result<(), libafl::Error> {
        Ok(())
    }
}

/// The domain mutators as a tuple for
/// [`HavocScheduledMutator`](libafl::mutators::HavocScheduledMutator).
pub type DomainMutations = tuple_list_type!(
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    ProgramMutator,
    SpliceMutator
);

/// Every domain edit with its name, in the order [`domain_mutations`] uses.
pub const EDITS: [(&str, Edit); 20] = [
    ("reorder-ops", reorder_ops),
    ("insert-sync-cache", insert_sync_cache),
    ("drop-sync-cache", drop_sync_cache),
    ("move-sync-cache", move_sync_cache),
    ("insert-power-loss", insert_power_loss),
    ("move-power-loss", move_power_loss),
    ("flip-fua", flip_fua),
    ("split-segment", split_segment),
    ("merge-segments", merge_segments),
    ("segment-above-4g", segment_above_4g),
    ("grow-segment-count", grow_segment_count),
    ("resize-across-byte-limit", resize_across_byte_limit),
    ("overlap-lba", overlap_lba),
    ("duplicate-span", duplicate_span),
    ("insert-op", insert_op),
    ("drop-op", drop_op),
    ("tweak-length", tweak_length),
    ("insert-wce-or-reset", insert_wce_or_reset),
    ("read-back", read_back),
    ("short-transfer", short_transfer),
];

/// The full stack of domain mutators for a device and HBA.
pub fn domain_mutations(hints: Hints) -> DomainMutations {
    let m = |i: usize| ProgramMutator::new(EDITS[i].0, EDITS[i].1, hints);
    tuple_list!(
        m(0),
        m(1),
        m(2),
        m(3),
        m(4),
        m(5),
        m(6),
        m(7),
        m(8),
        m(9),
        m(10),
        m(11),
        m(12),
        m(13),
        m(14),
        m(15),
        m(16),
        m(17),
        m(18),
        m(19),
        SpliceMutator::new(hints)
    )
}

fn indices_of(p: &ScsiProgram, pred: impl Fn(&Op) -> bool) -> Vec<usize> {
    p.ops
        .iter()
        .enumerate()
        .filter(|(_, o)| pred(o))
        .map(|(i, _)| i)
        .collect()
}

fn pick_where(d: &mut Dice, p: &ScsiProgram, pred: impl Fn(&Op) -> bool) -> Option<usize> {
    let v = indices_of(p, pred);
    (!v.is_empty()).then(|| v[d.index(v.len())])
}

fn has_room(h: &Hints, p: &ScsiProgram) -> bool {
    p.ops.len() < h.limits.max_ops
}

/// A random LBA range inside the device, biased small.
fn random_range(d: &mut Dice, h: &Hints) -> (u64, u32) {
    // Mostly a few blocks, as page-cache writeback of small files is;
    // rarely large (the byte-limit mutator reaches the HBA's limits).
    let blocks = match d.below(32) {
        0 => 1 + d.below(u64::from(h.limits.max_blocks() / 8)) as u32,
        1..=4 => 1 + d.below(128) as u32,
        _ => 1 + d.below(16) as u32,
    };
    let cap = h
        .limits
        .capacity_blocks
        .saturating_sub(u64::from(blocks))
        .max(1);
    (d.below(cap), blocks)
}

/// A page-aligned address in low memory, or above 4 GiB one time in eight.
fn random_addr(d: &mut Dice, h: &Hints) -> u64 {
    if d.one_in(8) {
        h.address_limit + d.below(1 << 20) * 4096
    } else {
        0x10_0000 + d.below(0x3_0000) * 4096
    }
}

fn fresh_transfer(d: &mut Dice, h: &Hints) -> Transfer {
    let (lba, blocks) = random_range(d, h);
    Transfer {
        lba: Lba(lba),
        blocks,
        fua: d.one_in(6),
        sg: vec![Segment::new(
            random_addr(d, h),
            blocks.saturating_mul(h.limits.block_size),
        )],
        extra: 0,
    }
}

/// Reorder: move one op to another place (writes overtaking a flush is the
/// classic reordering hazard).
pub fn reorder_ops(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    if p.ops.len() < 2 {
        return false;
    }
    let from = d.index(p.ops.len());
    let op = p.ops.remove(from);
    let to = d.index(p.ops.len() + 1);
    p.ops.insert(to, op);
    from != to
}

/// Insert a SYNCHRONIZE CACHE: of the whole medium, or of a written range.
pub fn insert_sync_cache(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    if !has_room(h, p) {
        return false;
    }
    let at = d.index(p.ops.len() + 1);
    let (lba, blocks) = match pick_where(d, p, |o| o.kind() == OpKind::Write) {
        Some(w) if d.coin() => p.ops[w].lba_range().unwrap_or((0, 0)),
        _ => (0, 0),
    };
    p.ops.insert(
        at,
        Op::SyncCache {
            lba: Lba(lba),
            blocks,
            immed: d.one_in(4),
        },
    );
    true
}

/// Drop a SYNCHRONIZE CACHE.
pub fn drop_sync_cache(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    match pick_where(d, p, |o| o.kind() == OpKind::SyncCache) {
        Some(i) => {
            p.ops.remove(i);
            true
        }
        None => false,
    }
}

fn move_kind(d: &mut Dice, p: &mut ScsiProgram, kind: OpKind) -> bool {
    let Some(i) = pick_where(d, p, |o| o.kind() == kind) else {
        return false;
    };
    let op = p.ops.remove(i);
    let to = d.index(p.ops.len() + 1);
    p.ops.insert(to, op);
    true
}

/// Move a SYNCHRONIZE CACHE elsewhere.
pub fn move_sync_cache(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    move_kind(d, p, OpKind::SyncCache)
}

/// Cut power somewhere, most often right after a flush or a write.
pub fn insert_power_loss(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    if !has_room(h, p) {
        return false;
    }
    let after = pick_where(d, p, |o| {
        matches!(o.kind(), OpKind::SyncCache | OpKind::Write)
    });
    let at = match after {
        Some(i) if !d.one_in(4) => i + 1,
        _ => d.index(p.ops.len() + 1),
    };
    p.ops.insert(at, Op::PowerLoss);
    true
}

/// Move a power cut elsewhere.
pub fn move_power_loss(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    move_kind(d, p, OpKind::PowerLoss)
}

/// Flip FUA on a write (or a read).
pub fn flip_fua(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.transfer().is_some()) else {
        return false;
    };
    let t = p.ops[i].transfer_mut().expect("picked a transfer");
    t.fua = !t.fua;
    true
}

/// Split one SG entry in two at a 512-byte boundary; the second half may
/// move elsewhere in memory.
pub fn split_segment(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| {
        o.sg().is_some_and(|sg| sg.iter().any(|s| s.len >= 1024))
    }) else {
        return false;
    };
    let sg = p.ops[i].sg_mut().expect("picked an SG list");
    let cands: Vec<usize> = (0..sg.len()).filter(|&k| sg[k].len >= 1024).collect();
    let k = cands[d.index(cands.len())];
    let s = sg[k];
    let units = s.len / 512;
    let first = 512 * (1 + d.below(u64::from(units - 1)) as u32);
    let second_addr = if d.coin() {
        s.addr.0 + u64::from(first)
    } else {
        random_addr(d, h)
    };
    sg[k].len = first;
    sg.insert(k + 1, Segment::new(second_addr, s.len - first));
    true
}

/// Merge two neighbouring SG entries into one contiguous entry.
pub fn merge_segments(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.sg().is_some_and(|sg| sg.len() >= 2)) else {
        return false;
    };
    let sg = p.ops[i].sg_mut().expect("picked an SG list");
    let k = d.index(sg.len() - 1);
    let Some(len) = sg[k].len.checked_add(sg[k + 1].len) else {
        return false;
    };
    sg[k].len = len;
    sg.remove(k + 1);
    true
}

/// Move one SG entry (or a whole buffer) above the HBA's addressable limit
/// (4 GiB for a 32-bit controller): the page cache spilling into high
/// memory.
pub fn segment_above_4g(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.sg().is_some_and(|sg| !sg.is_empty())) else {
        return false;
    };
    let base = h.address_limit + d.below(1 << 16) * 4096;
    let sg = p.ops[i].sg_mut().expect("picked an SG list");
    if d.coin() {
        let k = d.index(sg.len());
        sg[k].addr = PhysAddr(base);
    } else {
        let mut at = base;
        for s in sg.iter_mut() {
            s.addr = PhysAddr(at);
            at += u64::from(s.len).div_ceil(4096) * 4096;
        }
    }
    true
}

/// Re-plan a transfer as more page-sized entries than the controller takes,
/// growing the transfer if it is too short for that many.
pub fn grow_segment_count(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.transfer().is_some()) else {
        return false;
    };
    let write = p.ops[i].kind() == OpKind::Write;
    let limit = if write {
        h.max_segments_write
    } else {
        h.max_segments_read
    };
    let limit = u64::from(limit.min(h.limits.max_segments as u32 - 8));
    let want = limit + 1 + d.below(8);
    let bs = u64::from(h.limits.block_size);
    // Entries of one 512-byte unit or one page, whichever the blocks allow.
    let unit = if d.coin() { 512 } else { 4096 };
    let t = p.ops[i].transfer_mut().expect("picked a transfer");
    let need_blocks = (want * unit).div_ceil(bs);
    if need_blocks > u64::from(h.limits.max_blocks()) {
        return false;
    }
    t.blocks = t.blocks.max(need_blocks as u32);
    let bytes = u64::from(t.blocks) * bs;
    let per = (bytes / want).max(1);
    let per = (per / 512).max(1) * 512;
    let base = t.sg.first().map_or(DEFAULT_BUFFER, |s| s.addr.0);
    let stride = per.div_ceil(4096) * 4096 + if d.coin() { 4096 } else { 0 };
    t.sg = (0..want)
        .map(|k| Segment::new(base + k * stride, per as u32))
        .collect();
    true
}

/// Resize a transfer to just below, at, or just above one of the HBA's
/// byte limits (controller or splitter).
pub fn resize_across_byte_limit(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.transfer().is_some()) else {
        return false;
    };
    let limit = h.byte_limits[d.index(h.byte_limits.len())];
    let bs = h.limits.block_size;
    let at = i64::from(limit / bs.max(1));
    let delta = d.below(5) as i64 - 2;
    let blocks = (at + delta).clamp(1, i64::from(h.limits.max_blocks())) as u32;
    let t = p.ops[i].transfer_mut().expect("picked a transfer");
    t.blocks = blocks;
    true
}

/// Move an op's LBA so it overlaps a write's range: overwrites, stale reads
/// and flushes that cover (or just miss) a write.
pub fn overlap_lba(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(w) = pick_where(d, p, |o| o.kind() == OpKind::Write) else {
        return false;
    };
    let (wl, wb) = p.ops[w].lba_range().expect("writes have a range");
    let Some(o) = pick_where(d, p, |o| o.lba_range().is_some()) else {
        return false;
    };
    if o == w && p.ops.len() > 1 {
        return false;
    }
    let span = i64::from(wb.max(1));
    let off = d.below((2 * span - 1) as u64) as i64 - (span - 1);
    let to = (wl as i64).saturating_add(off).max(0) as u64;
    p.ops[o].set_lba(to);
    true
}

/// Duplicate a span of ops at another place: a workload doing the same
/// thing twice, with the second write generation overwriting the first.
pub fn duplicate_span(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    if p.ops.is_empty() || !has_room(h, p) {
        return false;
    }
    let start = d.index(p.ops.len());
    let room = h.limits.max_ops - p.ops.len();
    let len = 1 + d.index((p.ops.len() - start).min(room).min(16));
    let span: Vec<Op> = p.ops[start..start + len].to_vec();
    let at = d.index(p.ops.len() + 1);
    p.ops.splice(at..at, span);
    true
}

/// Insert a fresh write or read inside the device.
pub fn insert_op(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    if !has_room(h, p) {
        return false;
    }
    let at = d.index(p.ops.len() + 1);
    let op = match d.below(8) {
        0..=3 => Op::Write(fresh_transfer(d, h)),
        4 | 5 => Op::Read(fresh_transfer(d, h)),
        6 => {
            let (lba, blocks) = random_range(d, h);
            Op::WriteSame {
                lba: Lba(lba),
                blocks,
                unmap: d.one_in(4),
                sg: vec![Segment::new(random_addr(d, h), h.limits.block_size)],
            }
        }
        _ => {
            let (lba, blocks) = random_range(d, h);
            Op::Unmap {
                lba: Lba(lba),
                blocks,
            }
        }
    };
    p.ops.insert(at, op);
    true
}

/// Drop any op.
pub fn drop_op(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    if p.ops.is_empty() {
        return false;
    }
    p.ops.remove(d.index(p.ops.len()));
    true
}

/// Halve, double or nudge a transfer's length.
pub fn tweak_length(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.lba_range().is_some()) else {
        return false;
    };
    let max = h.limits.max_blocks();
    match &mut p.ops[i] {
        Op::Write(t) | Op::Read(t) => {
            t.blocks = match d.below(4) {
                0 => (t.blocks / 2).max(1),
                1 => t.blocks.saturating_mul(2).min(max),
                2 => t.blocks.saturating_add(1).min(max),
                _ => t.blocks.saturating_sub(1).max(1),
            }
        }
        Op::SyncCache { blocks, .. } | Op::WriteSame { blocks, .. } | Op::Unmap { blocks, .. } => {
            *blocks = if d.coin() {
                *blocks / 2
            } else {
                blocks.saturating_add(1 + d.below(8) as u32)
            }
        }
        _ => return false,
    }
    true
}

/// Insert a write-cache toggle, a LUN reset or a barrier.
pub fn insert_wce_or_reset(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    if !has_room(h, p) {
        return false;
    }
    let at = d.index(p.ops.len() + 1);
    let op = match d.below(4) {
        0 => Op::SetWce(false),
        1 => Op::SetWce(true),
        2 => Op::Reset,
        _ => Op::Barrier,
    };
    p.ops.insert(at, op);
    true
}

/// Insert a read of a range an earlier op wrote, right after it or later:
/// the harness checks every read against the oracle, so this is how a
/// stale cache line is caught before any power loss.
pub fn read_back(d: &mut Dice, h: &Hints, p: &mut ScsiProgram) -> bool {
    if !has_room(h, p) {
        return false;
    }
    let Some(w) = pick_where(d, p, |o| {
        matches!(o.kind(), OpKind::Write | OpKind::WriteSame)
    }) else {
        return false;
    };
    let (lba, blocks) = p.ops[w].lba_range().expect("writes have a range");
    let blocks = blocks.clamp(1, h.limits.max_blocks());
    let at = w + 1 + d.index(p.ops.len() - w);
    let t = Transfer {
        lba: Lba(lba),
        blocks,
        fua: d.one_in(4),
        sg: vec![Segment::new(
            random_addr(d, h),
            blocks.saturating_mul(h.limits.block_size),
        )],
        extra: 0,
    };
    p.ops.insert(at, Op::Read(t));
    true
}

/// Make a read's buffer longer than its data (or undo it): a short
/// transfer whose residual the driver must report.
pub fn short_transfer(d: &mut Dice, _h: &Hints, p: &mut ScsiProgram) -> bool {
    let Some(i) = pick_where(d, p, |o| o.kind() == OpKind::Read) else {
        return false;
    };
    let Op::Read(t) = &mut p.ops[i] else {
        return false;
    };
    t.extra = if t.extra > 0 && d.coin() {
        0
    } else {
        512 * (1 + d.below(8) as u32)
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints() -> Hints {
        Hints::new(Limits::new(512, 1 << 17), &HbaPreset::lsi3108())
    }

    fn cp_like() -> ScsiProgram {
        let mut ops = Vec::new();
        for i in 0..8u64 {
            ops.push(Op::Write(Transfer {
                lba: Lba(i * 64),
                blocks: 64,
                fua: false,
                sg: (0..8)
                    .map(|k| Segment::new(0x20_0000 + (i * 8 + k) * 4096, 4096))
                    .collect(),
                extra: 0,
            }));
        }
        ops.push(Op::SyncCache {
            lba: Lba(0),
            blocks: 0,
            immed: false,
        });
        ScsiProgram::new(ops)
    }

    #[test]
    fn transfers_are_aimed_at_twice_the_largest_limit() {
        let l = Limits::new(512, 1 << 17);
        assert_eq!(
            hints().limits.max_transfer_bytes,
            1 << 20,
            "lsi3108: 2 x 512 KiB"
        );
        let unsplit = Hints::new(l, &HbaPreset::lsi3108_unsplit());
        assert_eq!(
            unsplit.limits.max_transfer_bytes,
            2 << 20,
            "2 x the 1 MiB splitter"
        );
        let generic = Hints::new(l, &HbaPreset::generic());
        assert_eq!(
            generic.limits.max_transfer_bytes,
            Limits::MAX_TRANSFER_BYTES
        );
        // Every byte limit stays reachable from above.
        for b in unsplit.byte_limits {
            assert!(b < unsplit.limits.max_transfer_bytes);
        }
    }

    #[test]
    fn keep_fit_edits_leave_fitted_programs_fitted() {
        let h = hints();
        let mut d = Dice::new(11);
        let mut kept = 0;
        for name in KEEPS_FIT {
            let (_, edit) = EDITS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} is not an edit"));
            for _ in 0..300 {
                let mut p = cp_like();
                // Grown and spliced shapes too: many SG entries, FUA, reads.
                for _ in 0..d.below(4) {
                    let (_, other) = EDITS[d.index(EDITS.len())];
                    other(&mut d, &h, &mut p);
                    p.fit(&h.limits);
                }
                assert!(p.is_fitted(&h.limits));
                if edit(&mut d, &h, &mut p) {
                    kept += 1;
                    assert!(p.is_fitted(&h.limits), "{name} left an unfitted program");
                }
            }
        }
        assert!(kept > 1000, "only {kept} edits applied");
    }

    #[test]
    fn every_edit_keeps_programs_fitted() {
        let h = hints();
        let mut d = Dice::new(7);
        for (name, edit) in EDITS {
            for _ in 0..200 {
                let mut p = cp_like();
                if edit(&mut d, &h, &mut p) {
                    p.fit(&h.limits);
                    let mut again = p.clone();
                    again.fit(&h.limits);
                    assert_eq!(p, again, "{name} left an unfitted program");
                    assert!(p.ops.len() <= h.limits.max_ops, "{name}");
                }
            }
        }
    }

    #[test]
    fn targeted_edits_reach_their_targets() {
        let h = hints();
        let mut d = Dice::new(1);
        let mut p = cp_like();
        assert!(segment_above_4g(&mut d, &h, &mut p));
        assert!(p
            .ops
            .iter()
            .filter_map(Op::sg)
            .flatten()
            .any(|s| s.addr.0 >= 1 << 32));

        let mut p = cp_like();
        assert!(grow_segment_count(&mut d, &h, &mut p));
        p.fit(&h.limits);
        assert!(p.ops.iter().filter_map(Op::sg).any(|sg| sg.len() > 129));

        let mut seen_over = false;
        for _ in 0..50 {
            let mut p = cp_like();
            resize_across_byte_limit(&mut d, &h, &mut p);
            seen_over |= p
                .ops
                .iter()
                .filter_map(Op::transfer)
                .any(|t| t.blocks * 512 > 0x8_0000);
        }
        assert!(seen_over);

        let mut p = cp_like();
        assert!(drop_sync_cache(&mut d, &h, &mut p));
        assert_eq!(p.count(OpKind::SyncCache), 0);
        assert!(insert_power_loss(&mut d, &h, &mut p));
        assert_eq!(p.count(OpKind::PowerLoss), 1);
    }

    #[test]
    fn overlap_lba_makes_ranges_intersect() {
        let h = hints();
        let mut d = Dice::new(3);
        let mut hits = 0;
        for _ in 0..100 {
            let mut p = ScsiProgram::new(vec![
                Op::Write(Transfer {
                    lba: Lba(100),
                    blocks: 8,
                    fua: false,
                    sg: vec![Segment::new(0x10000, 4096)],
                    extra: 0,
                }),
                Op::Read(Transfer {
                    lba: Lba(5000),
                    blocks: 8,
                    fua: false,
                    sg: vec![Segment::new(0x20000, 4096)],
                    extra: 0,
                }),
            ]);
            overlap_lba(&mut d, &h, &mut p);
            let (a, _) = p.ops[0].lba_range().unwrap();
            let (b, _) = p.ops[1].lba_range().unwrap();
            if a.abs_diff(b) < 8 {
                hits += 1;
            }
        }
        assert!(hits > 30, "{hits}");
    }
}
