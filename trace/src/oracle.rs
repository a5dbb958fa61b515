//! The consistency oracle (design §6): a shadow model of what every block
//! may hold, fed with the commands a device was sent and the data it
//! returned, and blind to how the device works inside. The replayer and the
//! fuzzer run it against the emulator, an iSCSI target or a real disk alike.
//!
//! # Rules
//!
//! - **Durable point**: the newest write to a block that is certainly on the
//!   medium: a write completed with FUA, a write completed while write
//!   caching was off, or a write completed before a SYNCHRONIZE CACHE that
//!   covered the block was submitted and then completed (IMMED flushes give
//!   no such guarantee: their GOOD status only says the command was valid).
//! - **Without power loss**, a read returns the newest completed write.
//!   Writes still in flight when the read was submitted may or may not be
//!   visible; two writes whose lifetimes overlapped may land in either order.
//!   Formally, a version is ruled out once a write to the block that was
//!   submitted after it completed has itself completed (with no power loss
//!   since).
//! - **After power loss**, a block may hold its durable value or any write
//!   submitted after that point (completed or not): a volatile cache may
//!   destage any subset in any order. Never an older value, never another
//!   block's data, never data nobody wrote. Blocks are atomic; a multi-block
//!   write may land partially. With no durable write yet, the block's
//!   initial content is permitted too.
//!
//! # Memory
//!
//! History is kept per run of blocks with the same history (an extent map),
//! and a write's data is kept once, as a self-describing pattern recipe,
//! per-block CRC32C digests or "zeros", however many runs refer to it.
//! Versions older than a durable point are pruned, so a 20 GiB sequential
//! copy costs one run per write command, not one entry per block.

use crate::hash::FastMap;
use crate::pattern::{self, BlockState};
use std::collections::BTreeMap;
use std::fmt;

/// What a write put in its blocks, as the oracle needs to recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteData {
    /// Self-describing blocks: block `i` is the pattern block for
    /// `lba + i` with this seed and generation.
    Pattern {
        /// Stream seed.
        seed: u64,
        /// Write generation.
        generation: u32,
    },
    /// CRC32C of each block.
    Digests(Vec<u32>),
    /// Every byte zero (WRITE SAME of zeros, UNMAP on a unit with LBPRZ=1).
    Zeros,
}

impl WriteData {
    /// Describe a write's Data-Out: a pattern recipe if every block is the
    /// valid self-describing block for its own LBA with one seed and
    /// generation, zeros if all zero, else per-block digests.
    pub fn from_bytes(lba: u64, block_size: u32, data: &[u8]) -> WriteData {
        let bs = block_size as usize;
        let mut recipe: Option<(u64, u32)> = None;
        let mut pattern_ok = bs > 0 && !data.is_empty();
        let mut zeros = true;
        for (i, b) in data.chunks(bs.max(1)).enumerate() {
            match pattern::inspect(b) {
                BlockState::Valid { tag }
                    if pattern_ok && tag.lba == lba.wrapping_add(i as u64) =>
                {
                    zeros = false;
                    match recipe {
                        None => recipe = Some((tag.seed, tag.generation)),
                        Some(r) if r == (tag.seed, tag.generation) => {}
                        Some(_) => pattern_ok = false,
                    }
                }
                BlockState::Zeros => pattern_ok = false,
                _ => {
                    zeros = false;
                    pattern_ok = false;
                }
            }
        }
        match recipe {
            Some((seed, generation)) if pattern_ok => WriteData::Pattern { seed, generation },
            _ if zeros => WriteData::Zeros,
            _ => WriteData::Digests(data.chunks(bs.max(1)).map(crc32c::crc32c).collect()),
        }
    }
}

/// What a never-written block reads as on the device under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialContent {
    /// Zeros (a fresh emulator, a new sparse file, a thin LUN).
    #[default]
    Zeros,
    /// Anything (a real disk with old data): unwritten blocks are not checked.
    Unknown,
}

/// How a block read back breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationClass {
    /// An older write to this LBA than permitted: a lost write (flush not
    /// honoured, cache dropped, reordered across a flush, stale cache line).
    Stale,
    /// Data written for another LBA: DMA address truncation, wrong SG
    /// offset, LBA arithmetic.
    Misdirected {
        /// LBA the data was written for.
        from_lba: u64,
    },
    /// Zeros where a write should be: a segment or split piece that never
    /// landed.
    Dropped,
    /// A self-describing header whose body does not match: partial DMA.
    Torn,
    /// No valid header where a self-describing block should be: host
    /// memory reused, DMA from the wrong page.
    Garbage,
    /// Data no known write to this block produced (arbitrary-data writes,
    /// where no header tells more).
    Unexpected,
    /// The residual reported for a transfer is not what was moved.
    BadResidual {
        /// Residual implied by the command (requested minus its own length).
        expected: i64,
        /// Residual the device reported.
        reported: i64,
    },
}

impl ViolationClass {
    /// Short lower-case name, for counters and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            ViolationClass::Stale => "stale",
            ViolationClass::Misdirected { .. } => "misdirected",
            ViolationClass::Dropped => "dropped",
            ViolationClass::Torn => "torn",
            ViolationClass::Garbage => "garbage",
            ViolationClass::Unexpected => "unexpected",
            ViolationClass::BadResidual { .. } => "bad-residual",
        }
    }
}

/// One broken rule: a run of consecutive blocks of one read that fail the
/// same way, with the commands involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// First LBA of the run.
    pub lba: u64,
    /// Blocks in the run.
    pub blocks: u32,
    /// Block size, for byte offsets in messages.
    pub block_size: u32,
    /// The read (or, for [`ViolationClass::BadResidual`], the command) that
    /// saw it.
    pub read_seq: u64,
    /// Classification.
    pub class: ViolationClass,
    /// The write whose data the block should hold (the newest permitted).
    pub expected_write_seq: Option<u64>,
    /// The write whose data the block does hold, when known.
    pub found_write_seq: Option<u64>,
    /// The flush that made the expected write durable, if one did.
    pub flush_seq: Option<u64>,
    /// A power loss happened since the expected write completed.
    pub after_power_loss: bool,
}

impl fmt::Display for Violation {
    /// fio's wording where it says the same thing (`verify: bad header`,
    /// offset, length), then Scuzz's classification and the commands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bs = u64::from(self.block_size);
        let off = self.lba.saturating_mul(bs);
        let len = u64::from(self.blocks) * bs;
        let seq = |s: Option<u64>| s.map_or("none".to_string(), |s| s.to_string());
        match self.class {
            ViolationClass::BadResidual { expected, reported } => {
                return write!(
                    f,
                    "bad residual: command seq {} reported residual {reported}, the transfer implies {expected}",
                    self.read_seq
                )
            }
            ViolationClass::Torn | ViolationClass::Unexpected => {
                write!(f, "verify: bad data at offset {off}, length {len}: ")?
            }
            _ => write!(f, "verify: bad header at offset {off}, length {len}: ")?,
        }
        let last = self
            .lba
            .saturating_add(u64::from(self.blocks).saturating_sub(1));
        let range = if self.blocks > 1 {
            format!("LBA {}..={last}", self.lba)
        } else {
            format!("LBA {}", self.lba)
        };
        match self.class {
            ViolationClass::Stale => write!(
                f,
                "stale: {range} holds an older write (write seq {}) instead of write seq {}",
                seq(self.found_write_seq),
                seq(self.expected_write_seq)
            )?,
            ViolationClass::Misdirected { from_lba } => write!(
                f,
                "misdirected: {range} holds data written for LBA {from_lba} (write seq {}); expected write seq {}",
                seq(self.found_write_seq),
                seq(self.expected_write_seq)
            )?,
            ViolationClass::Dropped => write!(
                f,
                "dropped: {range} reads as zeros; write seq {} never landed",
                seq(self.expected_write_seq)
            )?,
            ViolationClass::Torn => write!(f, "torn: {range} has a valid header but a corrupt body")?,
            ViolationClass::Garbage => write!(
                f,
                "garbage: {range} holds no valid header; expected write seq {}",
                seq(self.expected_write_seq)
            )?,
            ViolationClass::Unexpected => write!(
                f,
                "unexpected: {range} holds data no write to it produced; expected write seq {}",
                seq(self.expected_write_seq)
            )?,
            ViolationClass::BadResidual { .. } => {}
        }
        write!(f, " (read seq {}", self.read_seq)?;
        if let Some(fl) = self.flush_seq {
            write!(f, ", durable since flush seq {fl}")?;
        }
        if self.after_power_loss {
            write!(f, ", after power loss")?;
        }
        write!(f, ")")
    }
}

#[derive(Debug, Clone)]
struct Rec {
    lba: u64,
    blocks: u64,
    data: WriteData,
    fua: bool,
    submit: u64,
    /// Completion tick; `None` while in flight.
    complete: Option<u64>,
    ok: bool,
}

#[derive(Debug, Clone, Copy)]
struct Flush {
    lba: u64,
    end: u64,
    immed: bool,
    submit: u64,
}

/// History of a run of blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Hist {
    /// Durable write (`None`: the initial content).
    durable: Option<u64>,
    /// The flush that made it durable (`None` if FUA/write-through or initial).
    durable_by: Option<u64>,
    /// Writes submitted after the durable point, in submission order.
    versions: Vec<u64>,
    /// The last two versions pruned, to name a stale block's writer.
    old: Vec<u64>,
}

/// Which version a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
    Initial,
    Write(u64),
}

/// A candidate with its write's record, looked up once for a run of
/// history rather than once for every block or run of a read judged
/// against it.
#[derive(Debug, Clone, Copy)]
struct Version<'r> {
    cand: Cand,
    /// `None` for the initial content (or a record no longer held).
    rec: Option<&'r Rec>,
}

/// The oracle.
#[derive(Debug)]
pub struct Oracle {
    block_size: u32,
    initial: InitialContent,
    wce: bool,
    tick: u64,
    last_power_loss: u64,
    power_losses: u64,
    runs: BTreeMap<u64, (u64, Hist)>,
    recs: FastMap<u64, Rec>,
    flushes: FastMap<u64, Flush>,
    reads: FastMap<u64, u64>,
    live_after_gc: usize,
    /// The stretches a read pins, kept from read to read: a read after a
    /// power loss pins hundreds, and growing a new list for each cost more
    /// than filling it.
    pins: Vec<(u64, u64, Cand)>,
    /// Reads are a last look ([`Oracle::last_look`]): nothing they find
    /// is pinned.
    last_look: bool,
    /// Settle what a read pins one block at a time, the plainest way:
    /// the reference the property tests hold the one-pass settle to.
    #[cfg(test)]
    pin_block_by_block: bool,
}

impl Oracle {
    /// An oracle for a unit of `block_size`-byte blocks, with write caching
    /// assumed on (the conservative assumption: nothing is durable until
    /// FUA or a flush says so) and unwritten blocks reading as zeros.
    pub fn new(block_size: u32) -> Self {
        Oracle {
            block_size: block_size.max(1),
            initial: InitialContent::Zeros,
            wce: true,
            tick: 0,
            last_power_loss: 0,
            power_losses: 0,
            runs: BTreeMap::new(),
            recs: FastMap::default(),
            flushes: FastMap::default(),
            reads: FastMap::default(),
            live_after_gc: 0,
            pins: Vec::new(),
            last_look: false,
            #[cfg(test)]
            pin_block_by_block: false,
        }
    }

    /// Start over as `Oracle::new(block_size)` with `initial` content
    /// would, keeping the tables' allocations: the fuzzer judges tens of
    /// thousands of programs a second, one oracle each, and growing every
    /// table anew for each cost 1.5–4% of a run over a grown fuzz queue.
    pub fn renew(&mut self, initial: InitialContent) {
        // Named field by field, so a new field cannot be left holding the
        // last run's value.
        let Oracle {
            block_size: _,
            initial: i,
            wce,
            tick,
            last_power_loss,
            power_losses,
            runs,
            recs,
            flushes,
            reads,
            live_after_gc,
            pins,
            last_look,
            #[cfg(test)]
            pin_block_by_block,
        } = self;
        *i = initial;
        *wce = true;
        *tick = 0;
        *last_power_loss = 0;
        *power_losses = 0;
        runs.clear();
        recs.clear();
        flushes.clear();
        reads.clear();
        *live_after_gc = 0;
        pins.clear();
        *last_look = false;
        #[cfg(test)]
        {
            *pin_block_by_block = false;
        }
    }

    /// Say what never-written blocks read as.
    pub fn with_initial_content(mut self, initial: InitialContent) -> Self {
        self.initial = initial;
        self
    }

    /// Block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Write records held (a measure of memory use).
    pub fn records(&self) -> usize {
        self.recs.len()
    }

    /// Runs of history held (a measure of memory use).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// A write of `blocks` blocks at `lba` was submitted.
    pub fn submit_write(&mut self, seq: u64, lba: u64, blocks: u32, data: WriteData, fua: bool) {
        let t = self.next_tick();
        let end = lba.saturating_add(u64::from(blocks));
        self.recs.insert(
            seq,
            Rec {
                lba,
                blocks: u64::from(blocks),
                data,
                fua,
                submit: t,
                complete: None,
                ok: false,
            },
        );
        if blocks > 0 {
            // Blocks no write has touched yet (most of a fuzz program's
            // writes) take one new run; no neighbour can share a history
            // naming a write just submitted, so nothing merges.
            let untouched = self
                .runs
                .range(..end)
                .next_back()
                .is_none_or(|(k, (len, _))| k.saturating_add(*len) <= lba);
            if untouched {
                let h = Hist {
                    versions: vec![seq],
                    ..Hist::default()
                };
                self.runs.insert(lba, (end - lba, h));
            } else {
                for_range(&mut self.runs, lba, end, |h| h.versions.push(seq));
            }
        }
        self.maybe_gc();
    }

    /// A write completed (`ok`: with GOOD status). A completed FUA write,
    /// or any write while write caching is off, becomes the durable point.
    pub fn complete_write(&mut self, seq: u64, ok: bool) {
        let t = self.next_tick();
        let Some(r) = self.recs.get_mut(&seq) else {
            return;
        };
        if r.complete.is_some() {
            return;
        }
        r.complete = Some(t);
        r.ok = ok;
        if ok && (r.fua || !self.wce) {
            let (lba, n) = (r.lba, r.blocks);
            self.make_durable(seq, lba, lba.saturating_add(n), None);
        }
    }

    /// A SYNCHRONIZE CACHE of `blocks` blocks (0: to the end) was submitted.
    pub fn submit_flush(&mut self, seq: u64, lba: u64, blocks: u32, immed: bool) {
        let t = self.next_tick();
        let end = if blocks == 0 {
            u64::MAX
        } else {
            lba.saturating_add(u64::from(blocks))
        };
        self.flushes.insert(
            seq,
            Flush {
                lba,
                end,
                immed,
                submit: t,
            },
        );
    }

    /// A SYNCHRONIZE CACHE completed. With GOOD status (and no IMMED), every
    /// write in its range that completed before it was submitted is durable.
    pub fn complete_flush(&mut self, seq: u64, ok: bool) {
        self.next_tick();
        let Some(fl) = self.flushes.remove(&seq) else {
            return;
        };
        if !ok || fl.immed {
            return;
        }
        // Split at the flush's edges, then settle each run on its own.
        let keys: Vec<u64> = {
            split_at(&mut self.runs, fl.lba);
            split_at(&mut self.runs, fl.end);
            self.runs.range(fl.lba..fl.end).map(|(k, _)| *k).collect()
        };
        for k in keys {
            let Some((_, h)) = self.runs.get(&k) else {
                continue;
            };
            // Completed before the flush was submitted, successfully, and
            // after the last power loss (what a power loss dropped, a later
            // flush cannot write back).
            let p = self.last_power_loss;
            let recs = &self.recs;
            let done = || {
                h.versions.iter().copied().filter(|s| {
                    recs.get(s)
                        .is_some_and(|r| r.ok && r.complete.is_some_and(|c| c < fl.submit && c > p))
                })
            };
            let Some(newest) = done().max_by_key(|s| recs[s].submit) else {
                continue;
            };
            // Durable only if it certainly landed after the others: each
            // other one completed before it was submitted.
            let ns = recs[&newest].submit;
            let ordered = done().all(|s| s == newest || recs[&s].complete.is_some_and(|c| c < ns));
            if ordered {
                let len = self.runs[&k].0;
                // No merging until every run is settled: a merge would
                // carry this run's new state into a neighbour outside the
                // flush's range.
                self.make_durable_in(
                    newest,
                    k,
                    k.saturating_add(len).min(fl.end),
                    Some(seq),
                    false,
                );
            }
        }
        merge_in(&mut self.runs, fl.lba, fl.end);
    }

    /// Write caching was turned on or off (MODE SELECT completed). Turning
    /// it off makes nothing durable by itself.
    pub fn set_wce(&mut self, on: bool) {
        self.wce = on;
    }

    /// Power was lost: writes in flight are over (they may or may not have
    /// landed), flushes in flight guarantee nothing, and write caching is
    /// assumed on again (a unit powers up with its saved mode pages, which
    /// the oracle cannot see; [`Oracle::set_wce`] after a MODE SENSE says
    /// otherwise).
    pub fn power_loss(&mut self) {
        let t = self.next_tick();
        self.wce = true;
        self.last_power_loss = t;
        self.power_losses += 1;
        for r in self.recs.values_mut() {
            if r.complete.is_none() {
                r.complete = Some(t);
                r.ok = false;
            }
        }
        self.flushes.clear();
        self.reads.clear();
    }

    /// From now on every read is the last look at the blocks it covers: a
    /// crash-consistency read-back that reads each block once. A read after
    /// a power loss normally pins what it finds (the medium now holds that
    /// version, so a later read must find it again); with no later read of
    /// those blocks, pinning is work whose result nobody reads, and on a
    /// read-back after a power loss that kept a random subset of lines it
    /// was a quarter of a fuzz program's time. Verdicts are unchanged for
    /// reads of disjoint blocks; a caller that read a block twice after
    /// this would have its second read judged as if the first never
    /// happened (more permissive, never a false violation).
    pub fn last_look(&mut self) {
        self.last_look = true;
    }

    /// A read was submitted (optional: without it, a read is taken as
    /// submitted when checked).
    pub fn submit_read(&mut self, seq: u64) {
        let t = self.next_tick();
        self.reads.insert(seq, t);
    }

    /// Check a completed read's data (whole blocks from `lba`).
    pub fn check_read(&mut self, seq: u64, lba: u64, data: &[u8]) -> Vec<Violation> {
        let bs = self.block_size as usize;
        let blocks = (data.len() / bs) as u64;
        let src = PerBlock(|i| ReadBlock::Bytes(&data[i * bs..(i + 1) * bs]));
        self.check_read_src(seq, lba, blocks, &src)
    }

    /// [`Oracle::check_read`] for a caller that holds some blocks as the
    /// tag of a whole self-describing block rather than as bytes (a host
    /// that never rendered them, [`ReadSpan::Block`]), or runs of
    /// consecutive self-describing blocks as one first tag and a count
    /// ([`ReadSpan::Tags`]), as a host that moved a transfer as one run
    /// does: a run that matches one version of a stretch of blocks with
    /// one history is judged in one step, anything else block by block,
    /// and the verdicts are exactly those of the blocks' bytes.
    pub fn check_read_spans(
        &mut self,
        seq: u64,
        lba: u64,
        spans: &[ReadSpan<'_>],
    ) -> Vec<Violation> {
        let src = Spans::new(spans);
        let blocks = src.blocks();
        self.check_read_src(seq, lba, blocks, &src)
    }

    /// Which version every block of a run (of tags or of zeros) matches,
    /// when that can be told for the run as a whole: the first candidate
    /// (in the order [`Oracle::permitted`] gives them, the order the
    /// per-block check tries them in) that the run's first block matches,
    /// provided every candidate before it fails for every block of the run
    /// alike. `None` when a candidate is judged by a digest (a CRC per
    /// block) or none matches (the blocks are then judged one by one,
    /// which names each violation).
    fn run_matches(&self, cands: &[Version<'_>], lba: u64, run: RunOf) -> Option<Cand> {
        for c in cands {
            let all = match c.cand {
                Cand::Initial => match self.initial {
                    // A valid self-describing block is not zeros.
                    InitialContent::Zeros => run == RunOf::Zeros,
                    InitialContent::Unknown => true,
                },
                Cand::Write(_) => match (c.rec.map(|r| &r.data), run) {
                    // Block k of the run holds tag `first.lba + k` and is
                    // read at `lba + k`: all match, or none does.
                    (Some(WriteData::Pattern { seed, generation }), RunOf::Tags(first)) => {
                        first.lba == lba && first.seed == *seed && first.generation == *generation
                    }
                    (Some(WriteData::Zeros), RunOf::Zeros) => true,
                    (Some(WriteData::Digests(_)), _) => return None,
                    _ => false,
                },
            };
            if all {
                return Some(c.cand);
            }
        }
        None
    }

    fn check_read_src<'d>(
        &mut self,
        seq: u64,
        lba: u64,
        blocks: u64,
        src: &impl ReadSource<'d>,
    ) -> Vec<Violation> {
        let now = self.next_tick();
        let at = self.reads.remove(&seq).unwrap_or(now);
        let mut out: Vec<Violation> = Vec::new();
        // Stretches `[s, e)` of blocks pinned to one version after a power
        // loss, consecutive blocks pinned to the same version as one.
        let mut stretches = std::mem::take(&mut self.pins);
        stretches.clear();
        let mut pin_to = |l: u64, m: u64, c: Cand| match stretches.last_mut() {
            Some((_, e, prev)) if *e == l && *prev == c => *e = e.saturating_add(m),
            _ => stretches.push((l, l.saturating_add(m), c)),
        };
        // What a run of history may hold, its records looked up once.
        let mut cands: Vec<Version<'_>> = Vec::with_capacity(4);
        let crashed = self.power_losses > 0 && at > self.last_power_loss && !self.last_look;
        // Every block of a run shares its history, so what it may hold is
        // worked out once per run, not once per block.
        let mut i = 0u64;
        while i < blocks {
            let l = lba.wrapping_add(i);
            let (h, run_left) = self.hist_run(l);
            let n = run_left.min(blocks - i);
            let expected = self.permitted(h, at, &mut cands);
            // After a power loss, what a read finds is on the medium: pin
            // it, if no write since the loss could change it.
            let pin = crashed
                && (cands.len() > 1 || !h.versions.is_empty())
                && h.versions.iter().all(|s| {
                    self.recs
                        .get(s)
                        .is_some_and(|r| r.submit < self.last_power_loss)
                });
            let mut j = 0u64;
            while j < n {
                let l = lba.wrapping_add(i + j);
                // A run of tags inside this history: one step when it can
                // be judged whole.
                if let Some((first, left)) = src.run_at((i + j) as usize) {
                    let m = left.min(n - j);
                    if let Some(c) = self.run_matches(&cands, l, first) {
                        if pin {
                            pin_to(l, m, c);
                        }
                        j += m;
                        continue;
                    }
                }
                let mut view = BlockView::new(src.block((i + j) as usize), self.block_size);
                j += 1;
                if let Some(c) = cands.iter().find(|c| self.matches(c, l, &mut view)) {
                    if pin {
                        pin_to(l, 1, c.cand);
                    }
                    continue;
                }
                let v = self.classify(seq, l, h, expected, &mut view);
                match out.last_mut() {
                    Some(prev) if continues(prev, &v) => prev.blocks += 1,
                    _ => out.push(v),
                }
            }
            i += n;
        }
        // The candidates borrow the records; the map is settled next.
        drop(cands);
        #[cfg(test)]
        if self.pin_block_by_block {
            for &(s, e, c) in &stretches {
                let mut b = s;
                while b < e {
                    for_range(&mut self.runs, b, b + 1, |h| *h = pinned(h, c));
                    b += 1;
                }
            }
            return out;
        }
        // In LBA order (a read that does not wrap past 2^64), the whole
        // read is settled in one pass over the map: a power loss keeps a
        // random subset of lines, so a read after it pins short stretches
        // that alternate between versions, and splitting the map at each
        // of their ends cost more than the read's check itself.
        if stretches.windows(2).all(|w| w[0].1 <= w[1].0) {
            settle(&mut self.runs, &stretches);
        } else {
            for &(s, e, c) in &stretches {
                for_range(&mut self.runs, s, e, |h| *h = pinned(h, c));
            }
        }
        self.pins = stretches;
        out
    }

    /// Check a completed command's residual: `xfer_len` requested,
    /// `command_len` bytes called for by the CDB, `reported` by the device.
    pub fn check_residual(
        &self,
        seq: u64,
        xfer_len: u32,
        command_len: u64,
        reported: i64,
    ) -> Option<Violation> {
        let expected = i64::from(xfer_len) - command_len.min(i64::MAX as u64) as i64;
        (expected != reported).then_some(Violation {
            lba: 0,
            blocks: 0,
            block_size: self.block_size,
            read_seq: seq,
            class: ViolationClass::BadResidual { expected, reported },
            expected_write_seq: None,
            found_write_seq: None,
            flush_seq: None,
            after_power_loss: false,
        })
    }

    /// Make write `seq` the durable point of `[s, e)` where it is still a
    /// candidate (never moving a durable point backwards).
    fn make_durable(&mut self, seq: u64, s: u64, e: u64, flush: Option<u64>) {
        self.make_durable_in(seq, s, e, flush, true);
    }

    fn make_durable_in(&mut self, seq: u64, s: u64, e: u64, flush: Option<u64>, merge: bool) {
        let recs = &self.recs;
        let Some(submit) = recs.get(&seq).map(|r| r.submit) else {
            return;
        };
        for_range_with(&mut self.runs, s, e, merge, |h| {
            if !h.versions.contains(&seq) {
                return;
            }
            if let Some(d) = h.durable {
                remember(&mut h.old, d);
            }
            h.durable = Some(seq);
            h.durable_by = flush;
            // Versions the new durable write certainly landed after go.
            h.versions.retain(|v| {
                let gone = *v == seq
                    || recs.get(v).is_none_or(|r| {
                        r.complete.is_some_and(|c| c < submit) && r.submit < submit
                    });
                if gone && *v != seq {
                    remember(&mut h.old, *v);
                }
                !gone
            });
        });
    }

    fn hist(&self, lba: u64) -> &Hist {
        self.hist_run(lba).0
    }

    /// The history of `lba` and how many blocks from `lba` share it (to the
    /// end of its run, or to the next run for a never-written gap).
    fn hist_run(&self, lba: u64) -> (&Hist, u64) {
        match self.runs.range(..=lba).next_back() {
            Some((k, (len, h))) if lba - k < *len => (h, *len - (lba - k)),
            _ => {
                let gap = match self.runs.range(lba.saturating_add(1)..).next() {
                    Some((k, _)) => k - lba,
                    None => u64::MAX - lba,
                };
                (&EMPTY, gap.max(1))
            }
        }
    }

    /// The versions a read submitted at tick `at` may return (into
    /// `cands`, in the order they are tried), and the one it should (the
    /// newest completed one).
    fn permitted<'r>(&'r self, h: &Hist, at: u64, cands: &mut Vec<Version<'r>>) -> Option<Cand> {
        let p = self.last_power_loss;
        // The newest write that completed, successfully, since the last
        // power loss and before the read: it rules out every version that
        // completed before it was submitted.
        let ymax = h
            .versions
            .iter()
            .filter_map(|s| {
                let r = self.recs.get(s)?;
                let c = r.complete?;
                (r.ok && c > p && c < at).then_some(r.submit)
            })
            .max();
        let excluded =
            |complete: Option<u64>| matches!((complete, ymax), (Some(c), Some(y)) if c < y);
        cands.clear();
        cands.reserve(h.versions.len() + 1);
        let mut expected = None;
        let (dur, dur_rec, dur_complete) = match h.durable {
            None => (Cand::Initial, None, Some(0)),
            Some(d) => {
                let r = self.recs.get(&d);
                (Cand::Write(d), r, r.and_then(|r| r.complete))
            }
        };
        if !excluded(dur_complete) {
            cands.push(Version {
                cand: dur,
                rec: dur_rec,
            });
        }
        expected = expected.or(Some(dur));
        for s in &h.versions {
            let Some(r) = self.recs.get(s) else { continue };
            if excluded(r.complete) {
                continue;
            }
            cands.push(Version {
                cand: Cand::Write(*s),
                rec: Some(r),
            });
            if r.ok && r.complete.is_some_and(|c| c < at) {
                expected = Some(Cand::Write(*s));
            }
        }
        expected
    }

    fn matches(&self, c: &Version<'_>, lba: u64, view: &mut BlockView<'_>) -> bool {
        match (c.cand, c.rec) {
            (Cand::Initial, _) => match self.initial {
                InitialContent::Zeros => view.is_zero(),
                InitialContent::Unknown => true,
            },
            (Cand::Write(_), Some(r)) => record_matches(r, lba, view),
            (Cand::Write(_), None) => false,
        }
    }

    fn rec_matches(&self, s: u64, lba: u64, view: &mut BlockView<'_>) -> bool {
        self.recs
            .get(&s)
            .is_some_and(|r| record_matches(r, lba, view))
    }

    /// Every write this block's history still names, newest first.
    fn known(&self, h: &Hist) -> Vec<u64> {
        let mut v: Vec<u64> = h.versions.iter().rev().copied().collect();
        v.extend(h.durable);
        v.extend(h.old.iter().rev().copied());
        v
    }

    fn classify(
        &self,
        read_seq: u64,
        lba: u64,
        h: &Hist,
        expected: Option<Cand>,
        view: &mut BlockView<'_>,
    ) -> Violation {
        let exp_seq = match expected {
            Some(Cand::Write(s)) => Some(s),
            _ => None,
        };
        let exp_rec = exp_seq.and_then(|s| self.recs.get(&s));
        let flush_seq = if exp_seq.is_some() && exp_seq == h.durable {
            h.durable_by
        } else {
            None
        };
        let after_power_loss = self.power_losses > 0
            && exp_rec
                .and_then(|r| r.complete)
                .is_none_or(|c| c < self.last_power_loss);
        let (class, found) = match view.state() {
            BlockState::Zeros => (ViolationClass::Dropped, None),
            BlockState::Torn { .. } => (ViolationClass::Torn, None),
            BlockState::Valid { tag } if tag.lba != lba => {
                let found = self.known(self.hist(tag.lba)).into_iter().find(|s| {
                    matches!(self.recs.get(s).map(|r| &r.data),
                        Some(WriteData::Pattern { seed, generation }) if *seed == tag.seed && *generation == tag.generation)
                });
                (ViolationClass::Misdirected { from_lba: tag.lba }, found)
            }
            BlockState::Valid { tag } => {
                let found = self
                    .known(h)
                    .into_iter()
                    .find(|s| self.rec_matches(*s, lba, view));
                // Under unknown initial content, a block for this LBA from
                // another stream is what the unit held before these
                // commands: older still.
                let older = match exp_rec.map(|r| &r.data) {
                    Some(WriteData::Pattern { seed, generation }) => {
                        (*seed == tag.seed && tag.generation < *generation)
                            || (self.initial == InitialContent::Unknown && *seed != tag.seed)
                    }
                    _ => false,
                };
                if found.is_some() || older {
                    (ViolationClass::Stale, found)
                } else {
                    (ViolationClass::Unexpected, None)
                }
            }
            BlockState::Garbage => {
                let found = self
                    .known(h)
                    .into_iter()
                    .find(|s| self.rec_matches(*s, lba, view));
                match found {
                    Some(s) => (ViolationClass::Stale, Some(s)),
                    // Data nobody in this stream wrote, where the unit's
                    // earlier content is unknown: most likely that content.
                    None if self.initial == InitialContent::Unknown && exp_rec.is_some() => {
                        (ViolationClass::Stale, None)
                    }
                    None if matches!(exp_rec.map(|r| &r.data), Some(WriteData::Pattern { .. })) => {
                        (ViolationClass::Garbage, None)
                    }
                    None => (ViolationClass::Unexpected, None),
                }
            }
        };
        Violation {
            lba,
            blocks: 1,
            block_size: self.block_size,
            read_seq,
            class,
            expected_write_seq: exp_seq,
            found_write_seq: found,
            flush_seq,
            after_power_loss,
        }
    }

    /// Drop records no history names any more (amortised: only when the
    /// record count has doubled since the last collection).
    fn maybe_gc(&mut self) {
        if self.recs.len() <= 2 * self.live_after_gc + 4096 {
            return;
        }
        let mut live = std::collections::HashSet::new();
        for (_, h) in self.runs.values() {
            live.extend(h.durable);
            live.extend(h.versions.iter().copied());
            live.extend(h.old.iter().copied());
        }
        self.recs
            .retain(|s, r| live.contains(s) || r.complete.is_none());
        self.live_after_gc = self.recs.len();
    }
}

/// Whether a block read at `lba` holds what write `r` put there.
fn record_matches(r: &Rec, lba: u64, view: &mut BlockView<'_>) -> bool {
    match &r.data {
        WriteData::Pattern { seed, generation } => matches!(
            view.state(),
            BlockState::Valid { tag } if tag.lba == lba && tag.seed == *seed && tag.generation == *generation
        ),
        WriteData::Digests(d) => d
            .get(lba.wrapping_sub(r.lba) as usize)
            .is_some_and(|crc| *crc == view.crc()),
        WriteData::Zeros => view.is_zero(),
    }
}

fn remember(old: &mut Vec<u64>, s: u64) {
    if old.last() != Some(&s) {
        old.push(s);
        if old.len() > 2 {
            old.remove(0);
        }
    }
}

fn continues(prev: &Violation, v: &Violation) -> bool {
    let next = prev.lba.wrapping_add(u64::from(prev.blocks));
    let class_ok = match (prev.class, v.class) {
        (
            ViolationClass::Misdirected { from_lba: a },
            ViolationClass::Misdirected { from_lba: b },
        ) => b == a.wrapping_add(u64::from(prev.blocks)),
        (a, b) => a == b,
    };
    v.lba == next
        && class_ok
        && prev.expected_write_seq == v.expected_write_seq
        && prev.found_write_seq == v.found_write_seq
        && prev.flush_seq == v.flush_seq
        && prev.after_power_loss == v.after_power_loss
}

/// One block of a read, as [`Oracle::check_read_spans`] takes it in a [`ReadSpan::Block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBlock<'a> {
    /// The block's bytes (one block long).
    Bytes(&'a [u8]),
    /// A whole self-describing block of this tag at the oracle's block
    /// size, known valid without its bytes: the bytes
    /// [`pattern::fill_block`] generates for it.
    Tagged(pattern::BlockTag),
    /// A block of zeros (a buffer the device left untouched, an unwritten
    /// block), known zero without its bytes.
    Zeros,
}

/// A stretch of a read, as [`Oracle::check_read_spans`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSpan<'a> {
    /// One block.
    Block(ReadBlock<'a>),
    /// `blocks` whole self-describing blocks at the oracle's block size:
    /// the first tagged `first`, each next one the next LBA of the same
    /// seed and generation (what one WRITE of a pattern stores).
    Tags {
        /// The first block's tag.
        first: pattern::BlockTag,
        /// Blocks in the run.
        blocks: u64,
    },
    /// `blocks` blocks of zeros.
    Zeros {
        /// Blocks in the run.
        blocks: u64,
    },
}

/// What every block of a run of a read holds, as the run-level check
/// sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunOf {
    /// Consecutive tags of one stream, from this one.
    Tags(pattern::BlockTag),
    /// Zeros.
    Zeros,
}

/// Blocks of a read as the check walks them.
trait ReadSource<'d> {
    /// Block `i`.
    fn block(&self, i: usize) -> ReadBlock<'d>;
    /// When block `i` is in a run of tags or zeros: what it holds and how
    /// many blocks of the run are left from it (itself included).
    fn run_at(&self, i: usize) -> Option<(RunOf, u64)>;
}

/// Blocks one by one.
struct PerBlock<F>(F);

impl<'d, F: Fn(usize) -> ReadBlock<'d>> ReadSource<'d> for PerBlock<F> {
    fn block(&self, i: usize) -> ReadBlock<'d> {
        (self.0)(i)
    }
    fn run_at(&self, _: usize) -> Option<(RunOf, u64)> {
        None
    }
}

/// Spans, with the first block of each for lookup.
struct Spans<'s, 'd> {
    spans: &'s [ReadSpan<'d>],
    /// First block of each span, and the total at the end.
    starts: Vec<u64>,
    /// The span the last lookup found: the check walks blocks in order,
    /// so the next lookup is nearly always there or in the next span.
    cursor: std::cell::Cell<usize>,
}

impl<'s, 'd> Spans<'s, 'd> {
    fn new(spans: &'s [ReadSpan<'d>]) -> Self {
        let mut starts = Vec::with_capacity(spans.len() + 1);
        let mut at = 0u64;
        for s in spans {
            starts.push(at);
            at = at.saturating_add(match s {
                ReadSpan::Block(_) => 1,
                ReadSpan::Tags { blocks, .. } | ReadSpan::Zeros { blocks } => *blocks,
            });
        }
        starts.push(at);
        Spans {
            spans,
            starts,
            cursor: std::cell::Cell::new(0),
        }
    }

    fn blocks(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// The span holding block `i` and `i`'s offset in it.
    fn find(&self, i: usize) -> (&ReadSpan<'d>, u64) {
        let i = i as u64;
        let holds =
            |k: usize| k < self.spans.len() && self.starts[k] <= i && i < self.starts[k + 1];
        let mut k = self.cursor.get();
        if !holds(k) {
            k = if holds(k + 1) {
                k + 1
            } else {
                self.starts.partition_point(|s| *s <= i) - 1
            };
            self.cursor.set(k);
        }
        (&self.spans[k], i - self.starts[k])
    }
}

impl<'d> ReadSource<'d> for Spans<'_, 'd> {
    fn block(&self, i: usize) -> ReadBlock<'d> {
        match self.find(i) {
            (ReadSpan::Block(b), _) => *b,
            (ReadSpan::Tags { first, .. }, k) => ReadBlock::Tagged(pattern::BlockTag {
                lba: first.lba.wrapping_add(k),
                ..*first
            }),
            (ReadSpan::Zeros { .. }, _) => ReadBlock::Zeros,
        }
    }
    fn run_at(&self, i: usize) -> Option<(RunOf, u64)> {
        match self.find(i) {
            (ReadSpan::Block(_), _) => None,
            (&ReadSpan::Zeros { blocks }, k) => Some((RunOf::Zeros, blocks - k)),
            (&ReadSpan::Tags { first, blocks }, k) => {
                let tag = pattern::BlockTag {
                    lba: first.lba.wrapping_add(k),
                    ..first
                };
                Some((RunOf::Tags(tag), blocks - k))
            }
        }
    }
}

/// A block read back, with its inspection and CRC computed at most once.
struct BlockView<'a> {
    data: ReadBlock<'a>,
    block_size: u32,
    state: Option<BlockState>,
    crc: Option<u32>,
}

impl<'a> BlockView<'a> {
    fn new(data: ReadBlock<'a>, block_size: u32) -> Self {
        BlockView {
            data,
            block_size,
            state: match data {
                ReadBlock::Tagged(tag) => Some(BlockState::Valid { tag }),
                ReadBlock::Zeros => Some(BlockState::Zeros),
                ReadBlock::Bytes(_) => None,
            },
            crc: None,
        }
    }
    fn state(&mut self) -> BlockState {
        let data = self.data;
        *self.state.get_or_insert_with(|| match data {
            ReadBlock::Bytes(b) => pattern::inspect(b),
            ReadBlock::Tagged(tag) => BlockState::Valid { tag },
            ReadBlock::Zeros => BlockState::Zeros,
        })
    }
    fn crc(&mut self) -> u32 {
        let (data, bs) = (self.data, self.block_size as usize);
        *self.crc.get_or_insert_with(|| match data {
            ReadBlock::Bytes(b) => crc32c::crc32c(b),
            ReadBlock::Tagged(tag) => {
                let mut b = vec![0u8; bs];
                pattern::fill_block(&tag, &mut b);
                crc32c::crc32c(&b)
            }
            ReadBlock::Zeros => crc32c::crc32c(&vec![0u8; bs]),
        })
    }
    fn is_zero(&mut self) -> bool {
        self.state() == BlockState::Zeros
    }
}

type Runs = BTreeMap<u64, (u64, Hist)>;

/// The history of a never-written block.
static EMPTY: Hist = Hist {
    durable: None,
    durable_by: None,
    versions: Vec::new(),
    old: Vec::new(),
};

/// The history of a block a read found holding version `c` after a power
/// loss, when no write since could change it: that version is now what
/// the medium holds, durable, with nothing newer pending.
fn pinned(h: &Hist, c: Cand) -> Hist {
    Hist {
        durable: match c {
            Cand::Initial => None,
            Cand::Write(s) => Some(s),
        },
        durable_by: None,
        versions: Vec::new(),
        old: h.old.clone(),
    }
}

/// Pin each stretch `[s, e)` to its version (ascending, disjoint
/// stretches), leaving exactly the runs that splitting the map at each
/// stretch's ends, pinning, and merging equal neighbours would leave, in
/// one pass: the runs the read covers are cut where a stretch or a run
/// ends into a plan, and the plan is laid over the map, overwriting a run
/// whose start it keeps, inserting only the runs that start anew (one per
/// stretch and old history it covers) and removing only those merged away.
fn settle(runs: &mut Runs, stretches: &[(u64, u64, Cand)]) {
    let (Some(&(lo, _, _)), Some(&(_, hi, _))) = (stretches.first(), stretches.last()) else {
        return;
    };
    if lo >= hi {
        return;
    }
    // The run holding `lo` may start before it.
    let start = match runs.range(..lo).next_back() {
        Some((&k, (l, _))) if k.saturating_add(*l) > lo => k,
        _ => lo,
    };
    let mut plan = Plan {
        pieces: Vec::with_capacity(2 * stretches.len() + 2),
        stretches,
        next: 0,
    };
    let mut at = start;
    for (&k, (l, h)) in runs.range(start..hi) {
        plan.cut(at, k, None);
        let end = k.saturating_add(*l);
        plan.cut(k, end, Some(h));
        at = end;
    }
    plan.cut(at, hi, None);
    let mut pieces = plan.pieces;
    // Lay the plan over the runs it replaces (both in LBA order).
    let mut gone: Vec<u64> = Vec::new();
    let mut p = 0;
    for (k, v) in runs.range_mut(start..hi) {
        while p < pieces.len() && pieces[p].0 < *k {
            p += 1;
        }
        match pieces.get_mut(p) {
            Some((pk, len, piece)) if pk == k => {
                v.0 = *len;
                if let Piece::Put(h) = std::mem::replace(piece, Piece::Placed) {
                    v.1 = h;
                }
                p += 1;
            }
            _ => gone.push(*k),
        }
    }
    for k in gone {
        runs.remove(&k);
    }
    for (k, l, piece) in pieces {
        if let Piece::Put(h) = piece {
            runs.insert(k, (l, h));
        }
    }
    merge_in(runs, lo, hi);
}

/// What [`settle`] does with one piece of the map.
enum Piece {
    /// The run starting here keeps its history (its length may shrink).
    Keep,
    /// A run starting here with this history.
    Put(Hist),
    /// Already laid over the run starting here.
    Placed,
}

/// The pieces [`settle`] cuts the runs a read covers into, in LBA order.
struct Plan<'s> {
    /// First block, blocks, and what becomes of them.
    pieces: Vec<(u64, u64, Piece)>,
    stretches: &'s [(u64, u64, Cand)],
    /// The first stretch not yet wholly behind the cut.
    next: usize,
}

impl Plan<'_> {
    /// Cut `[a, b)`, the run starting at `a` with history `h` (`None`: a
    /// never-written gap), where the stretches start and end.
    fn cut(&mut self, a: u64, b: u64, h: Option<&Hist>) {
        let mut at = a;
        while at < b {
            while self
                .stretches
                .get(self.next)
                .is_some_and(|&(_, e, _)| e <= at)
            {
                self.next += 1;
            }
            let (end, c) = match self.stretches.get(self.next) {
                Some(&(s, e, c)) if s <= at => (e.min(b), Some(c)),
                Some(&(s, _, _)) => (s.min(b), None),
                None => (b, None),
            };
            let piece = match (h, c) {
                (h, Some(c)) => Piece::Put(pinned(h.unwrap_or(&EMPTY), c)),
                // The unpinned head of a run keeps its place in the map.
                (Some(_), None) if at == a => Piece::Keep,
                (Some(h), None) => Piece::Put(h.clone()),
                (None, None) => {
                    at = end;
                    continue;
                }
            };
            // A piece equal to the new one before it extends it.
            match (self.pieces.last_mut(), &piece) {
                (Some((k, l, Piece::Put(prev))), Piece::Put(h))
                    if k.saturating_add(*l) == at && prev == h =>
                {
                    *l += end - at
                }
                _ => self.pieces.push((at, end - at, piece)),
            }
            at = end;
        }
    }
}

/// Make `at` a run boundary.
fn split_at(runs: &mut Runs, at: u64) {
    let Some((&k, (len, h))) = runs.range_mut(..at).next_back() else {
        return;
    };
    if k.saturating_add(*len) <= at {
        return;
    }
    let tail = (*len - (at - k), h.clone());
    *len = at - k;
    runs.insert(at, tail);
}

/// Apply `f` to the history of every block in `[s, e)`, creating runs for
/// never-written gaps, then re-merge equal neighbours.
fn for_range(runs: &mut Runs, s: u64, e: u64, f: impl FnMut(&mut Hist)) {
    for_range_with(runs, s, e, true, f)
}

fn for_range_with(runs: &mut Runs, s: u64, e: u64, merge: bool, mut f: impl FnMut(&mut Hist)) {
    if s >= e {
        return;
    }
    split_at(runs, s);
    split_at(runs, e);
    // One walk applies `f` and finds the never-written gaps, which then
    // get an empty history with `f` applied (each history is changed on
    // its own, so the order does not matter).
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut cur = s;
    for (&k, (l, h)) in runs.range_mut(s..e) {
        if k > cur {
            gaps.push((cur, k - cur));
        }
        cur = k + *l;
        f(h);
    }
    if cur < e {
        gaps.push((cur, e - cur));
    }
    for (k, l) in gaps {
        let mut h = Hist::default();
        f(&mut h);
        runs.insert(k, (l, h));
    }
    if merge {
        merge_in(runs, s, e);
    }
}

/// Merge adjacent runs with equal histories from the run before `s` up to
/// the run starting at `e` (a chain of equal runs may carry on past `e`).
fn merge_in(runs: &mut Runs, s: u64, e: u64) {
    let start = runs.range(..s).next_back().map(|(k, _)| *k).unwrap_or(s);
    // One pass over the runs: which run absorbs which neighbours.
    let mut grown: Vec<(u64, u64)> = Vec::new();
    let mut absorbed: Vec<u64> = Vec::new();
    {
        let mut it = runs.range(start..);
        let Some((&k0, (l0, h0))) = it.next() else {
            return;
        };
        let (mut keep, mut keep_len, mut keep_h, mut merged) = (k0, *l0, h0, false);
        for (&k, (l, h)) in it {
            if keep.saturating_add(keep_len) == k && keep_h == h {
                keep_len += *l;
                absorbed.push(k);
                merged = true;
                continue;
            }
            if merged {
                grown.push((keep, keep_len));
            }
            if k > e {
                merged = false;
                break;
            }
            (keep, keep_len, keep_h, merged) = (k, *l, h, false);
        }
        if merged {
            grown.push((keep, keep_len));
        }
    }
    for k in absorbed {
        runs.remove(&k);
    }
    for (k, len) in grown {
        if let Some((l, _)) = runs.get_mut(&k) {
            *l = len;
        }
    }
}

#[cfg(test)]
mod tests {

    /// A renewed oracle is the one `new` makes: every field back to its
    /// start, whatever the run before it did.
    #[test]
    fn a_renewed_oracle_is_a_new_one() {
        let mut o = Oracle::new(512);
        o.set_wce(false);
        o.submit_write(
            1,
            10,
            4,
            WriteData::Pattern {
                seed: 5,
                generation: 1,
            },
            true,
        );
        o.complete_write(1, true);
        o.submit_write(
            2,
            12,
            4,
            WriteData::Pattern {
                seed: 5,
                generation: 2,
            },
            false,
        );
        o.submit_flush(3, 0, 0, false);
        o.power_loss();
        o.submit_read(4);
        o.last_look();
        let _ = o.check_read(4, 10, &[0u8; 512]);
        o.renew(InitialContent::Unknown);
        let fresh = Oracle::new(512).with_initial_content(InitialContent::Unknown);
        assert_eq!(format!("{o:?}"), format!("{fresh:?}"));
    }

    #[test]
    fn blocks_given_as_tags_are_judged_as_their_bytes() {
        use crate::pattern::{fill_block, BlockTag};
        let bs = 512usize;
        let build = || {
            let mut o = Oracle::new(bs as u32);
            for (seq, generation) in [(1u64, 1u32), (2, 2)] {
                o.submit_write(
                    seq,
                    10,
                    4,
                    WriteData::Pattern {
                        seed: 5,
                        generation,
                    },
                    false,
                );
                o.complete_write(seq, true);
            }
            o.submit_read(3);
            o
        };
        // Ok, stale, misdirected, foreign: each a whole tagged block.
        let tags = [
            BlockTag {
                lba: 10,
                generation: 2,
                seed: 5,
            },
            BlockTag {
                lba: 11,
                generation: 1,
                seed: 5,
            },
            BlockTag {
                lba: 40,
                generation: 2,
                seed: 5,
            },
            BlockTag {
                lba: 13,
                generation: 2,
                seed: 6,
            },
        ];
        let mut bytes = vec![0u8; tags.len() * bs];
        for (t, b) in tags.iter().zip(bytes.chunks_exact_mut(bs)) {
            fill_block(t, b);
        }
        let by_bytes = build().check_read(3, 10, &bytes);
        let blocks: Vec<ReadSpan<'_>> = tags
            .iter()
            .map(|t| ReadSpan::Block(ReadBlock::Tagged(*t)))
            .collect();
        let by_tags = build().check_read_spans(3, 10, &blocks);
        assert_eq!(by_bytes.len(), 3, "{by_bytes:?}");
        assert_eq!(by_tags, by_bytes);
        // Mixed: bytes for some blocks, tags for others.
        let mixed = [
            ReadSpan::Block(ReadBlock::Bytes(&bytes[..bs])),
            ReadSpan::Block(ReadBlock::Tagged(tags[1])),
            ReadSpan::Block(ReadBlock::Bytes(&bytes[2 * bs..3 * bs])),
            ReadSpan::Block(ReadBlock::Tagged(tags[3])),
        ];
        assert_eq!(build().check_read_spans(3, 10, &mixed), by_bytes);
        // As one-block runs of tags, and with the good first block's run
        // carried on by the next LBA (a stale block there, not a match).
        let spans: Vec<ReadSpan<'_>> = tags
            .iter()
            .map(|t| ReadSpan::Tags {
                first: *t,
                blocks: 1,
            })
            .collect();
        assert_eq!(build().check_read_spans(3, 10, &spans), by_bytes);
        let mut two = vec![0u8; 2 * bs];
        fill_blocks(5, 2, 10, bs, &mut two);
        let run = [ReadSpan::Tags {
            first: tags[0],
            blocks: 2,
        }];
        assert_eq!(build().check_read_spans(3, 10, &run), vec![]);
        assert_eq!(build().check_read(3, 10, &two), vec![]);
    }

    use super::*;
    use crate::pattern::fill_blocks;
    /// One step of the span check: a history, then reads given as spans.
    #[derive(Debug, Clone)]
    enum SpanStep {
        /// LBA, blocks, data (0 pattern, 1 arbitrary bytes, 2 zeros),
        /// completes, FUA.
        Write(u64, u64, u8, bool, bool),
        Flush(u64, u64),
        PowerLoss,
        /// LBA and the read's stretches: (kind, blocks, LBA shift, generation).
        Read(u64, Vec<(u8, u64, i8, u32)>),
    }

    fn span_step() -> impl proptest::strategy::Strategy<Value = SpanStep> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..40, 1u64..12, 0u8..3, any::<bool>(), any::<bool>())
                .prop_map(|(l, n, d, c, f)| SpanStep::Write(l, n, d, c, f)),
            1 => (0u64..40, 0u64..12).prop_map(|(l, n)| SpanStep::Flush(l, n)),
            1 => Just(SpanStep::PowerLoss),
            3 => (
                0u64..40,
                proptest::collection::vec(
                    (0u8..7, 1u64..10, prop_oneof![6 => Just(0i8), 1 => Just(1), 1 => Just(-1)], 0u32..8),
                    1..5
                )
            )
                .prop_map(|(l, sp)| SpanStep::Read(l, sp)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// Runs of tags judged in one step give exactly the verdicts (and
        /// leave exactly the history) that the same blocks' bytes do.
        #[test]
        fn runs_of_tags_are_judged_as_their_blocks_bytes(
            unknown in proptest::prelude::any::<bool>(),
            steps in proptest::collection::vec(span_step(), 1..40)
        ) {
            use crate::pattern::BlockTag;
            let bs = BS as usize;
            let mut by_bytes = fresh(unknown);
            let mut by_spans = fresh(unknown);
            let mut seq = 0u64;
            let mut gen = 0u32;
            let mut in_flight = Vec::new();
            for st in steps {
                seq += 1;
                match st {
                    SpanStep::Write(l, n, d, completes, fua) => {
                        gen += 1;
                        let data = match d {
                            0 => WriteData::Pattern { seed: 7, generation: gen },
                            1 => WriteData::from_bytes(l, BS, &vec![gen as u8 | 1; n as usize * bs]),
                            _ => WriteData::Zeros,
                        };
                        for o in [&mut by_bytes, &mut by_spans] {
                            o.submit_write(seq, l, n as u32, data.clone(), fua);
                        }
                        if completes {
                            for o in [&mut by_bytes, &mut by_spans] {
                                o.complete_write(seq, true);
                            }
                        } else {
                            in_flight.push(seq);
                        }
                    }
                    SpanStep::Flush(l, n) => {
                        for o in [&mut by_bytes, &mut by_spans] {
                            o.submit_flush(seq, l, n as u32, false);
                            o.complete_flush(seq, true);
                        }
                        // Writes in flight complete now, some failing.
                        for s in in_flight.drain(..) {
                            for o in [&mut by_bytes, &mut by_spans] {
                                o.complete_write(s, s % 3 != 0);
                            }
                        }
                    }
                    SpanStep::PowerLoss => {
                        for o in [&mut by_bytes, &mut by_spans] {
                            o.power_loss();
                        }
                    }
                    SpanStep::Read(l, spec) => {
                        let mut bytes = Vec::new();
                        let mut spans = Vec::new();
                        let mut at = l;
                        // Rendered blocks for the `Block` spans, built
                        // first so the spans can borrow them.
                        let mut blocks_bytes: Vec<Vec<u8>> = Vec::new();
                        for (kind, n, shift, g) in &spec {
                            let first = BlockTag {
                                lba: at.wrapping_add(*shift as i64 as u64),
                                generation: *g,
                                seed: if *g == 7 { 6 } else { 7 },
                            };
                            let mut b = vec![0u8; *n as usize * bs];
                            match kind {
                                // Zeros and arbitrary bytes.
                                0 | 5 | 6 => {}
                                1 => b.fill(0x5a),
                                _ => fill_blocks(first.seed, first.generation, first.lba, bs, &mut b),
                            }
                            bytes.extend_from_slice(&b);
                            blocks_bytes.push(b);
                            at += n;
                        }
                        for ((kind, n, shift, g), b) in spec.iter().zip(&blocks_bytes) {
                            let _ = (shift, g);
                            match kind {
                                0..=2 => spans.extend(b.chunks_exact(bs).map(|c| ReadSpan::Block(ReadBlock::Bytes(c)))),
                                3 => spans.extend(b.chunks_exact(bs).map(|c| match pattern::inspect(c) {
                                    BlockState::Valid { tag } => ReadSpan::Block(ReadBlock::Tagged(tag)),
                                    _ => ReadSpan::Block(ReadBlock::Bytes(c)),
                                })),
                                5 => spans.push(ReadSpan::Zeros { blocks: *n }),
                                6 => spans.extend((0..*n).map(|_| ReadSpan::Block(ReadBlock::Zeros))),
                                _ => match pattern::inspect(&b[..bs]) {
                                    BlockState::Valid { tag } => spans.push(ReadSpan::Tags { first: tag, blocks: *n }),
                                    _ => unreachable!("a generated block is valid"),
                                },
                            }
                        }
                        for o in [&mut by_bytes, &mut by_spans] {
                            o.submit_read(seq);
                        }
                        let want = by_bytes.check_read(seq, l, &bytes);
                        let got = by_spans.check_read_spans(seq, l, &spans);
                        proptest::prop_assert_eq!(got, want);
                        proptest::prop_assert_eq!(&by_spans.runs, &by_bytes.runs);
                    }
                }
            }
        }
    }

    /// What a block of the device model below holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Held {
        Zeros,
        Tag(pattern::BlockTag),
        /// Every byte this value (an arbitrary-data write).
        Bytes(u8),
    }

    /// One step against a device with a volatile cache that keeps a random
    /// subset of its dirty blocks when power is lost.
    #[derive(Debug, Clone)]
    enum PinStep {
        /// LBA, blocks, data (0–1 pattern, 2 zeros, 3 arbitrary bytes),
        /// FUA, completes at once.
        Write(u64, u64, u8, bool, bool),
        Flush(u64, u64),
        /// Which dirty blocks land (bit `lba % 64`).
        PowerLoss(u64),
        Read(u64, u64),
        /// A block goes bad in the cache: zeros, another LBA's tag,
        /// garbage, an unwritten generation.
        Corrupt(u64, u8),
    }

    fn pin_step() -> impl proptest::strategy::Strategy<Value = PinStep> {
        use proptest::prelude::*;
        prop_oneof![
            5 => (0u64..48, 1u64..16, 0u8..4, any::<bool>(), any::<bool>())
                .prop_map(|(l, n, d, f, c)| PinStep::Write(l, n, d, f, c)),
            1 => (0u64..48, 0u64..16).prop_map(|(l, n)| PinStep::Flush(l, n)),
            2 => any::<u64>().prop_map(PinStep::PowerLoss),
            4 => (0u64..48, 1u64..17).prop_map(|(l, n)| PinStep::Read(l, n)),
            1 => (0u64..64, 0u8..4).prop_map(|(l, w)| PinStep::Corrupt(l, w)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// After power losses, what a read pins is settled in one pass
        /// over the run map: the verdicts, and the history every block is
        /// left with, are those of the same read checked and pinned block
        /// by block, whether the read comes as runs of tags and zeros or
        /// as bytes.
        #[test]
        fn a_read_pinned_in_one_pass_leaves_the_history_pinning_block_by_block_does(
            unknown in proptest::prelude::any::<bool>(),
            steps in proptest::collection::vec(pin_step(), 1..60)
        ) {
            use crate::pattern::{fill_block, BlockTag};
            let bs = BS as usize;
            let mut by_runs = fresh(unknown);
            let mut by_bytes = fresh(unknown);
            let mut by_block = fresh(unknown);
            by_block.pin_block_by_block = true;
            let mut cache = [Held::Zeros; 64];
            let mut medium = cache;
            let mut in_flight = Vec::new();
            let (mut seq, mut gen) = (0u64, 0u32);
            for st in steps {
                seq += 1;
                let oracles = [&mut by_runs, &mut by_bytes, &mut by_block];
                match st {
                    PinStep::Write(l, n, d, fua, completes) => {
                        gen += 1;
                        let x = gen as u8 | 1;
                        let data = match d {
                            0 | 1 => WriteData::Pattern { seed: 7, generation: gen },
                            2 => WriteData::Zeros,
                            _ => WriteData::from_bytes(l, BS, &vec![x; n as usize * bs]),
                        };
                        for b in l..l + n {
                            cache[b as usize] = match d {
                                0 | 1 => Held::Tag(BlockTag { lba: b, generation: gen, seed: 7 }),
                                2 => Held::Zeros,
                                _ => Held::Bytes(x),
                            };
                            if fua && completes {
                                medium[b as usize] = cache[b as usize];
                            }
                        }
                        for o in oracles {
                            o.submit_write(seq, l, n as u32, data.clone(), fua);
                            if completes {
                                o.complete_write(seq, true);
                            }
                        }
                        if !completes {
                            in_flight.push(seq);
                        }
                    }
                    PinStep::Flush(l, n) => {
                        let end = if n == 0 { 64 } else { (l + n).min(64) };
                        medium[l as usize..end as usize].copy_from_slice(&cache[l as usize..end as usize]);
                        for o in oracles {
                            o.submit_flush(seq, l, n as u32, false);
                            o.complete_flush(seq, true);
                            for s in &in_flight {
                                o.complete_write(*s, true);
                            }
                        }
                        in_flight.clear();
                    }
                    PinStep::PowerLoss(lands) => {
                        for b in 0..64 {
                            if lands >> b & 1 == 1 {
                                medium[b] = cache[b];
                            }
                        }
                        cache = medium;
                        in_flight.clear();
                        for o in oracles {
                            o.power_loss();
                        }
                    }
                    PinStep::Corrupt(l, what) => {
                        let tag = BlockTag { lba: l, generation: 0, seed: 7 };
                        cache[l as usize] = match what {
                            0 => Held::Zeros,
                            1 => Held::Tag(BlockTag { lba: (l + 1) % 64, generation: gen, seed: 7 }),
                            2 => Held::Bytes(0x5a),
                            _ => Held::Tag(tag),
                        };
                    }
                    PinStep::Read(l, n) => {
                        let held = &cache[l as usize..(l + n) as usize];
                        let mut bytes = vec![0u8; n as usize * bs];
                        for (h, b) in held.iter().zip(bytes.chunks_exact_mut(bs)) {
                            match h {
                                Held::Zeros => {}
                                Held::Tag(t) => fill_block(t, b),
                                Held::Bytes(x) => b.fill(*x),
                            }
                        }
                        // Tags of one write continuing, and zeros, as runs.
                        let mut spans: Vec<ReadSpan<'_>> = Vec::new();
                        for (k, h) in held.iter().enumerate() {
                            match (spans.last_mut(), h) {
                                (Some(ReadSpan::Tags { first, blocks }), Held::Tag(t))
                                    if *t == BlockTag { lba: first.lba + *blocks, ..*first } =>
                                {
                                    *blocks += 1
                                }
                                (Some(ReadSpan::Zeros { blocks }), Held::Zeros) => *blocks += 1,
                                (_, Held::Tag(t)) => spans.push(ReadSpan::Tags { first: *t, blocks: 1 }),
                                (_, Held::Zeros) => spans.push(ReadSpan::Zeros { blocks: 1 }),
                                (_, Held::Bytes(_)) => spans.push(ReadSpan::Block(ReadBlock::Bytes(
                                    &bytes[k * bs..(k + 1) * bs],
                                ))),
                            }
                        }
                        for o in oracles {
                            o.submit_read(seq);
                        }
                        let want = by_block.check_read(seq, l, &bytes);
                        proptest::prop_assert_eq!(&by_bytes.check_read(seq, l, &bytes), &want);
                        proptest::prop_assert_eq!(&by_runs.check_read_spans(seq, l, &spans), &want);
                        for b in 0..80 {
                            proptest::prop_assert_eq!(by_bytes.hist(b), by_block.hist(b), "LBA {}", b);
                            proptest::prop_assert_eq!(by_runs.hist(b), by_block.hist(b), "LBA {}", b);
                        }
                        proptest::prop_assert_eq!(&by_runs.runs, &by_bytes.runs);
                    }
                }
            }
        }
    }

    const BS: u32 = 512;

    /// An oracle for `BS`-byte blocks whose unwritten blocks read as zeros
    /// or, on a used disk, as anything.
    fn fresh(unknown: bool) -> Oracle {
        let initial = if unknown {
            InitialContent::Unknown
        } else {
            InitialContent::Zeros
        };
        Oracle::new(BS).with_initial_content(initial)
    }

    fn pat(lba: u64, n: usize, gen: u32) -> Vec<u8> {
        let mut b = vec![0u8; n * BS as usize];
        fill_blocks(7, gen, lba, BS as usize, &mut b);
        b
    }

    fn write(o: &mut Oracle, seq: u64, lba: u64, n: usize, gen: u32, fua: bool) -> Vec<u8> {
        let d = pat(lba, n, gen);
        o.submit_write(seq, lba, n as u32, WriteData::from_bytes(lba, BS, &d), fua);
        o.complete_write(seq, true);
        d
    }

    #[test]
    fn from_bytes_recognises_patterns_zeros_and_arbitrary_data() {
        assert_eq!(
            WriteData::from_bytes(10, BS, &pat(10, 3, 2)),
            WriteData::Pattern {
                seed: 7,
                generation: 2
            }
        );
        assert_eq!(
            WriteData::from_bytes(10, BS, &vec![0; 1024]),
            WriteData::Zeros
        );
        assert!(
            matches!(WriteData::from_bytes(11, BS, &pat(10, 2, 2)), WriteData::Digests(d) if d.len() == 2)
        );
    }

    #[test]
    fn read_your_writes_and_stale_reads_are_flagged() {
        let mut o = Oracle::new(BS);
        let g1 = write(&mut o, 1, 100, 4, 1, false);
        assert!(o.check_read(2, 100, &g1).is_empty());
        let g2 = write(&mut o, 3, 100, 4, 2, false);
        assert!(o.check_read(4, 100, &g2).is_empty());
        let v = o.check_read(5, 100, &g1);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].class, ViolationClass::Stale);
        assert_eq!(
            (v[0].blocks, v[0].expected_write_seq, v[0].found_write_seq),
            (4, Some(3), Some(1))
        );
        assert!(
            v[0].to_string()
                .starts_with("verify: bad header at offset 51200, length 2048: stale"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn a_last_look_judges_as_a_pinning_read_does_but_pins_nothing() {
        // Blocks 0..8 flushed as g1, then g2 unflushed, then power lost:
        // each block may hold either. The read finds them alternating, with
        // block 5 holding block 1's data (misdirected).
        let build = || {
            let mut o = Oracle::new(BS);
            let g1 = write(&mut o, 1, 0, 8, 1, false);
            o.submit_flush(2, 0, 0, false);
            o.complete_flush(2, true);
            let g2 = write(&mut o, 3, 0, 8, 2, false);
            o.power_loss();
            let mut found = Vec::new();
            for b in 0..8usize {
                let src = if b % 2 == 0 { &g1 } else { &g2 };
                let b = if b == 5 { 1 } else { b };
                found.extend_from_slice(&src[b * BS as usize..(b + 1) * BS as usize]);
            }
            (o, found)
        };
        let (mut pinning, found) = build();
        let (mut last, _) = build();
        last.last_look();
        let runs = last.runs();
        let v = last.check_read(4, 0, &found);
        assert_eq!(v, pinning.check_read(4, 0, &found));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].class, v[0].lba),
            (ViolationClass::Misdirected { from_lba: 1 }, 5)
        );
        assert_eq!(
            last.runs(),
            runs,
            "a last look leaves the history as it was"
        );
        assert!(pinning.runs() > runs, "a pinning read splits the history");
    }

    #[test]
    fn power_loss_permits_any_version_since_the_durable_point_only() {
        let mut o = Oracle::new(BS);
        let g1 = write(&mut o, 1, 0, 1, 1, false);
        o.submit_flush(2, 0, 0, false);
        o.complete_flush(2, true);
        let g2 = write(&mut o, 3, 0, 1, 2, false);
        let _g3 = write(&mut o, 4, 0, 1, 3, false);
        o.power_loss();
        // Durable g1, or the unflushed g2 (a cache may destage any subset).
        assert!(o.check_read(5, 0, &g2).is_empty());
        // ... but once a read has seen g2 after the power loss, g1 is gone.
        let v = o.check_read(6, 0, &g1);
        assert_eq!(v[0].class, ViolationClass::Stale);
        let mut o2 = Oracle::new(BS);
        let g1 = write(&mut o2, 1, 0, 1, 1, false);
        o2.submit_flush(2, 0, 1, false);
        o2.complete_flush(2, true);
        o2.power_loss();
        let v = o2.check_read(3, 0, &vec![0; BS as usize]);
        assert_eq!(v[0].class, ViolationClass::Dropped);
        assert_eq!(v[0].flush_seq, Some(2));
        assert!(v[0].after_power_loss);
        assert!(o2.check_read(4, 0, &g1).is_empty());
    }

    #[test]
    fn misdirected_blocks_name_their_origin() {
        let mut o = Oracle::new(BS);
        let a = write(&mut o, 1, 0, 2, 1, true);
        write(&mut o, 2, 8, 2, 1, true);
        let v = o.check_read(3, 8, &a);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].class, ViolationClass::Misdirected { from_lba: 0 });
        assert_eq!(
            (v[0].blocks, v[0].found_write_seq, v[0].expected_write_seq),
            (2, Some(1), Some(2))
        );
    }

    #[test]
    fn in_flight_writes_may_or_may_not_be_visible() {
        let mut o = Oracle::new(BS);
        let g1 = write(&mut o, 1, 0, 1, 1, false);
        let g2 = pat(0, 1, 2);
        o.submit_write(2, 0, 1, WriteData::from_bytes(0, BS, &g2), false);
        o.submit_read(3);
        assert!(o.check_read(3, 0, &g1).is_empty());
        o.submit_read(4);
        assert!(o.check_read(4, 0, &g2).is_empty());
        o.complete_write(2, true);
        o.submit_read(5);
        assert_eq!(o.check_read(5, 0, &g1)[0].class, ViolationClass::Stale);
    }

    #[test]
    fn unwritten_and_arbitrary_blocks() {
        let mut o = Oracle::new(BS);
        assert!(o.check_read(1, 5, &vec![0; 512]).is_empty());
        assert_eq!(
            o.check_read(2, 5, &vec![1; 512])[0].class,
            ViolationClass::Unexpected
        );
        let raw = vec![0x5a; 512];
        o.submit_write(3, 5, 1, WriteData::from_bytes(5, BS, &raw), false);
        o.complete_write(3, true);
        assert!(o.check_read(4, 5, &raw).is_empty());
        assert_eq!(
            o.check_read(5, 5, &vec![0; 512])[0].class,
            ViolationClass::Dropped
        );
        let mut u = Oracle::new(BS).with_initial_content(InitialContent::Unknown);
        assert!(u.check_read(1, 5, &vec![1; 512]).is_empty());
    }

    #[test]
    fn on_a_used_disk_a_lost_write_shows_the_older_content_as_stale() {
        // A real target keeps its medium: a durable write that did not land
        // leaves what an earlier stream (another seed) or someone else put
        // there. That is a lost write, not corruption.
        let mut u = Oracle::new(BS).with_initial_content(InitialContent::Unknown);
        write(&mut u, 1, 9, 1, 1, true);
        let mut earlier = vec![0u8; 512];
        fill_blocks(99, 4, 9, 512, &mut earlier);
        assert_eq!(u.check_read(2, 9, &earlier)[0].class, ViolationClass::Stale);
        assert_eq!(
            u.check_read(3, 9, &vec![0x33; 512])[0].class,
            ViolationClass::Stale
        );
        let mut elsewhere = vec![0u8; 512];
        fill_blocks(7, 1, 10, 512, &mut elsewhere);
        assert!(matches!(
            u.check_read(4, 9, &elsewhere)[0].class,
            ViolationClass::Misdirected { from_lba: 10 }
        ));
    }

    #[test]
    fn residuals_are_checked() {
        let o = Oracle::new(BS);
        assert!(o.check_residual(1, 1024, 512, 512).is_none());
        let v = o.check_residual(1, 1024, 512, 0).unwrap();
        assert_eq!(
            v.class,
            ViolationClass::BadResidual {
                expected: 512,
                reported: 0
            }
        );
    }

    #[test]
    fn a_flush_makes_nothing_durable_outside_its_range() {
        // Regression (found by the emulator's property test): merging runs
        // while settling a flush carried durability past its last block.
        let mut o = Oracle::new(BS);
        o.submit_write(
            1,
            67,
            34,
            WriteData::Pattern {
                seed: 1,
                generation: 1,
            },
            false,
        );
        o.complete_write(1, true);
        o.submit_write(
            2,
            96,
            39,
            WriteData::Pattern {
                seed: 1,
                generation: 2,
            },
            false,
        );
        o.complete_write(2, true);
        o.submit_flush(3, 67, 35, false);
        o.complete_flush(3, true);
        assert_eq!(o.hist(101).durable, Some(2));
        assert_eq!(o.hist(102).durable, None);
        o.power_loss();
        assert!(o.check_read(4, 102, &vec![0; 512]).is_empty());
    }

    #[test]
    fn a_flush_after_power_loss_does_not_resurrect_lost_writes() {
        // Regression (property test): the write may have died with the cache.
        let mut o = Oracle::new(BS);
        write(&mut o, 1, 0, 1, 1, false);
        o.power_loss();
        o.submit_flush(2, 0, 0, false);
        o.complete_flush(2, true);
        assert!(o.check_read(3, 0, &vec![0; 512]).is_empty());
    }

    #[test]
    fn memory_stays_proportional_to_commands_not_blocks() {
        let mut o = Oracle::new(4096);
        for i in 0..2000u64 {
            let d = WriteData::Pattern {
                seed: 1,
                generation: 1,
            };
            o.submit_write(i, i * 256, 256, d, false);
            o.complete_write(i, true);
        }
        o.submit_flush(9999, 0, 0, false);
        o.complete_flush(9999, true);
        assert!(o.runs() <= 2000, "{}", o.runs());
        assert_eq!(o.records(), 2000);
    }

    /// A legal device: writes land in a volatile cache at once, FUA and
    /// flushes make them durable, a power loss keeps only what was durable.
    /// Whatever it returns, the oracle must accept; and the run map must
    /// stay sorted, disjoint and gap-free where written.
    #[derive(Debug, Clone)]
    enum Step {
        Write(u64, u64, bool),
        Flush(u64, u64),
        Read(u64, u64),
        PowerLoss,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..60, 1u64..6, any::<bool>()).prop_map(|(l, n, f)| Step::Write(l, n, f)),
            1 => (0u64..60, 0u64..8).prop_map(|(l, n)| Step::Flush(l, n)),
            2 => (0u64..60, 1u64..6).prop_map(|(l, n)| Step::Read(l, n)),
            1 => Just(Step::PowerLoss),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn a_correct_device_is_never_flagged(steps in proptest::collection::vec(step(), 1..60)) {
            let bs = BS as usize;
            let mut o = Oracle::new(BS);
            let mut cache = vec![vec![0u8; bs]; 64];
            let mut medium = cache.clone();
            let mut seq = 0u64;
            let mut gen = 0u32;
            for st in steps {
                seq += 1;
                match st {
                    Step::Write(l, n, fua) => {
                        gen += 1;
                        let d = pat(l, n as usize, gen);
                        o.submit_write(seq, l, n as u32, WriteData::Pattern { seed: 7, generation: gen }, fua);
                        for i in 0..n as usize {
                            cache[l as usize + i].copy_from_slice(&d[i * bs..(i + 1) * bs]);
                            if fua {
                                medium[l as usize + i].copy_from_slice(&d[i * bs..(i + 1) * bs]);
                            }
                        }
                        o.complete_write(seq, true);
                    }
                    Step::Flush(l, n) => {
                        o.submit_flush(seq, l, n as u32, false);
                        let end = if n == 0 { 64 } else { (l + n).min(64) };
                        for b in l..end {
                            medium[b as usize] = cache[b as usize].clone();
                        }
                        o.complete_flush(seq, true);
                    }
                    Step::Read(l, n) => {
                        o.submit_read(seq);
                        let data: Vec<u8> = (l..l + n).flat_map(|b| cache[b as usize].clone()).collect();
                        let v = o.check_read(seq, l, &data);
                        proptest::prop_assert!(v.is_empty(), "{:?}", v);
                    }
                    Step::PowerLoss => {
                        o.power_loss();
                        cache = medium.clone();
                    }
                }
                let mut end = 0u64;
                for (&k, (len, _)) in &o.runs {
                    proptest::prop_assert!(k >= end && *len > 0, "runs overlap at {}", k);
                    end = k + len;
                }
            }
            // Everything read back at the end matches too.
            let all: Vec<u8> = cache.concat();
            seq += 1;
            let v = o.check_read(seq, 0, &all);
            proptest::prop_assert!(v.is_empty(), "{:?}", v);
        }
    }
}
