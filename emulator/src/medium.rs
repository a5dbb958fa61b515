//! The durable medium: a sparse map of extents, so a 2 TiB device costs
//! memory only for what was written, and a long run of self-describing
//! blocks written in order costs one entry.
//!
//! Unwritten (or unmapped) blocks read as zeros, which is also what SBC-3
//! 4.7.4.4 requires of a thin-provisioned unit reporting LBPRZ=1.

use crate::content::{BlockData, Tag};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A run of blocks with one kind of content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Extent {
    /// Written (mapped) zeros.
    Zero,
    /// Self-describing blocks whose tags step by one LBA per block from
    /// `first`.
    Pattern {
        /// Tag of the extent's first block.
        first: Tag,
    },
    /// Arbitrary bytes of one block (raw extents are always one block
    /// long: splitting a longer one would copy it).
    Raw(Arc<[u8]>),
    /// The same block repeated (WRITE SAME with non-zero data).
    Same(Arc<[u8]>),
}

impl Extent {
    /// The sub-run `[off, off + n)` of an extent.
    fn slice(&self, off: u64, n: u64, bs: usize) -> Extent {
        match self {
            Extent::Zero => Extent::Zero,
            Extent::Pattern { first } => Extent::Pattern {
                first: Tag {
                    lba: first.lba.wrapping_add(off),
                    ..*first
                },
            },
            Extent::Raw(b) => {
                debug_assert!(off == 0 && n == 1, "raw extents are one block");
                let _ = bs;
                Extent::Raw(b.clone())
            }
            Extent::Same(b) => Extent::Same(b.clone()),
        }
    }

    fn block(&self, off: u64, bs: usize) -> BlockData {
        match self {
            Extent::Zero => BlockData::Zero,
            Extent::Pattern { first } => BlockData::Pattern(Tag {
                lba: first.lba.wrapping_add(off),
                ..*first
            }),
            Extent::Raw(b) => {
                let _ = (off, bs);
                BlockData::Raw(b.clone())
            }
            Extent::Same(b) => BlockData::Raw(b.clone()),
        }
    }
}

/// Batches of at least this many runs may rebuild the map rather than
/// update it run by run ([`Medium::write_runs`]).
const REBUILD_MIN_RUNS: usize = 8;

/// Sparse durable storage for one LUN.
#[derive(Debug, Clone)]
pub struct Medium {
    block_size: usize,
    /// start LBA -> (length in blocks, content). Extents never overlap.
    extents: BTreeMap<u64, (u64, Extent)>,
}

impl Medium {
    /// An empty medium of `block_size`-byte blocks.
    pub fn new(block_size: u32) -> Self {
        Medium {
            block_size: block_size as usize,
            extents: BTreeMap::new(),
        }
    }

    /// Number of extents held (a measure of the medium's memory use).
    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// Store one block.
    pub fn write_block(&mut self, lba: u64, data: &BlockData) {
        let ext = match data {
            BlockData::Zero => Extent::Zero,
            BlockData::Pattern(t) => Extent::Pattern { first: *t },
            BlockData::Raw(b) => Extent::Raw(b.clone()),
        };
        self.insert(lba, 1, ext);
    }

    /// Store `n` blocks from `lba` that continue `first` block by block:
    /// consecutive tags of one stream from `first`'s, or zeros. One
    /// extent, as the blocks written one by one would merge into. A raw
    /// block cannot continue, so a raw `first` stores one block.
    pub fn write_run(&mut self, lba: u64, n: u64, first: &BlockData) {
        match first {
            BlockData::Zero => self.write_zeros(lba, n),
            BlockData::Pattern(t) if n > 0 => self.insert(lba, n, Extent::Pattern { first: *t }),
            BlockData::Pattern(_) => {}
            BlockData::Raw(_) => {
                debug_assert!(n == 1, "a raw block stands alone");
                self.write_block(lba, first);
            }
        }
    }

    /// Store runs `(lba, n, first)`, each as [`Medium::write_run`] would,
    /// in ascending LBA order and not overlapping: the extents end up
    /// exactly as writing them one by one leaves them, in one walk over
    /// the extents they touch. What a power loss writes back can be a run
    /// every few blocks (a destage unit written back line by line) over a
    /// medium often already cut that finely; run by run, each cost a dozen
    /// map updates, where here each run and each extent between runs
    /// costs one.
    ///
    /// Runs far apart (an extent wholly between them that neither
    /// touches) go in separate walks, so the extents between them are not
    /// taken out and put back.
    pub fn write_runs(&mut self, runs: &[(u64, u64, BlockData)]) {
        debug_assert!(
            runs.windows(2).all(|w| w[0].0 + run_len(&w[0]) <= w[1].0),
            "runs ascend without overlapping"
        );
        // A batch of runs a quarter the size of the map or more rebuilds
        // it (measured on fuzz programs: smaller batches, or batches into
        // a larger map, cost less run by run).
        if runs.len() >= REBUILD_MIN_RUNS && runs.len() * 4 >= self.extents.len() {
            self.write_runs_rebuilt(runs);
            return;
        }
        let mut i = 0;
        while i < runs.len() {
            let mut j = i + 1;
            while let Some(next) = runs.get(j) {
                let gap = runs[j - 1].0 + run_len(&runs[j - 1])..next.0;
                let apart = gap.start < gap.end
                    && (self.extents.range(gap.clone()).next())
                        .is_some_and(|(s, (len, _))| s + len <= gap.end);
                if apart {
                    break;
                }
                j += 1;
            }
            match &runs[i..j] {
                [(lba, n, first)] => self.write_run(*lba, *n, first),
                near => self.write_near_runs(near),
            }
            i = j;
        }
    }

    /// [`Medium::write_runs`] of runs no untouched extent separates.
    fn write_near_runs(&mut self, runs: &[(u64, u64, BlockData)]) {
        let (Some(f), Some(l)) = (runs.first(), runs.last()) else {
            return;
        };
        let (lo, hi) = (f.0, l.0.saturating_add(run_len(l)));
        // Every extent overlapping `[lo, hi)`, whole, out of the map.
        let from = self.first_overlapping(lo);
        let old: Vec<(u64, u64, Extent)> = (self.extents.range(from..hi))
            .map(|(k, (len, e))| (*k, *len, e.clone()))
            .collect();
        for (k, _, _) in &old {
            self.extents.remove(k);
        }
        let mut out = Vec::with_capacity(old.len() + 2 * runs.len());
        let end = lay(&old, runs, lo, hi, self.block_size, &mut out);
        // Join the neighbours outside the walk where they continue.
        let mut out = out.into_iter().peekable();
        if let Some((s, n, e)) = out.peek() {
            if let Some((&k, (len, left))) = self.extents.range_mut(..*s).next_back() {
                if k + *len == *s && continues(left, *len, e) {
                    *len += n;
                    out.next();
                }
            }
        }
        let mut last = None;
        for (s, n, e) in out {
            self.extents.insert(s, (n, e));
            last = Some((s, n));
        }
        let last = last.or_else(|| {
            let (&k, (len, _)) = self.extents.range(..end).next_back()?;
            Some((k, *len))
        });
        if let Some((k, len)) = last {
            self.merge_right(k, len);
        }
    }

    /// [`Medium::write_runs`] by rebuilding the map: one walk lays every
    /// run over the extents it meets, and the map is built anew from the
    /// result in order. Leaves exactly the extents the run-by-run walks
    /// leave (untouched extents between runs are copied whole, and joins
    /// happen where runs meet extents that continue them), at a cost per
    /// extent held rather than a descent of the map per run: what a power
    /// loss writes back after a large write is hundreds of runs a few
    /// blocks apart.
    fn write_runs_rebuilt(&mut self, runs: &[(u64, u64, BlockData)]) {
        let (Some(f), Some(l)) = (runs.first(), runs.last()) else {
            return;
        };
        let (lo, hi) = (f.0, l.0.saturating_add(run_len(l)));
        let from = self.first_overlapping(lo);
        let held = std::mem::take(&mut self.extents);
        let mut all: Vec<(u64, u64, Extent)> = Vec::with_capacity(held.len() + 2 * runs.len());
        let mut old = Vec::new();
        let mut held = held.into_iter().peekable();
        while let Some((k, (len, e))) = held.next_if(|(k, _)| *k < from) {
            all.push((k, len, e));
        }
        while let Some((k, (len, e))) = held.next_if(|(k, _)| *k < hi) {
            old.push((k, len, e));
        }
        // Laid straight after the extents before them: `lay` joins its
        // first piece to the last of those where it continues it.
        lay(&old, runs, lo, hi, self.block_size, &mut all);
        for (k, (n, e)) in held {
            push_merged(&mut all, k, n, e);
        }
        self.extents = all.into_iter().map(|(k, n, e)| (k, (n, e))).collect();
    }

    /// The first block of the extent holding `lba`, or `lba`.
    fn first_overlapping(&self, lba: u64) -> u64 {
        match self.extents.range(..lba).next_back() {
            Some((&k, (len, _))) if k + len > lba => k,
            _ => lba,
        }
    }

    /// Store `n` written zero blocks (mapped, unlike [`Medium::unmap`]).
    pub fn write_zeros(&mut self, lba: u64, n: u64) {
        if n > 0 {
            self.insert(lba, n, Extent::Zero);
        }
    }

    /// Store `block` in each of `n` blocks from `lba` (WRITE SAME): one
    /// extent whatever `n` is.
    pub fn write_same(&mut self, lba: u64, n: u64, block: &BlockData) {
        if n == 0 {
            return;
        }
        let ext = match block {
            BlockData::Zero => Extent::Zero,
            other => {
                let mut b = vec![0u8; self.block_size];
                other.render(&mut b);
                Extent::Same(b.into())
            }
        };
        self.insert(lba, n, ext);
    }

    /// Deallocate `n` blocks from `lba`: they read as zeros and report
    /// deallocated to GET LBA STATUS.
    pub fn unmap(&mut self, lba: u64, n: u64) {
        if n > 0 {
            self.carve(lba, lba.saturating_add(n));
        }
    }

    /// The content of one block.
    pub fn block(&self, lba: u64) -> BlockData {
        match self.extents.range(..=lba).next_back() {
            Some((&start, (len, ext))) if lba - start < *len => {
                ext.block(lba - start, self.block_size)
            }
            _ => BlockData::Zero,
        }
    }

    /// The content of `lba`, and how many blocks from it (itself included)
    /// the same extent, or the same unwritten gap, covers: the blocks
    /// after it are [`continued`] from it, so a reader of many blocks
    /// looks the map up once per extent instead of once per block.
    pub fn block_run(&self, lba: u64) -> (BlockData, u64) {
        match self.extents.range(..=lba).next_back() {
            Some((&start, (len, ext))) if lba - start < *len => (
                ext.block(lba - start, self.block_size),
                *len - (lba - start),
            ),
            _ => (BlockData::Zero, (self.next_extent(lba) - lba).max(1)),
        }
    }

    /// The content of `[lba, end)` run by run, in order: what
    /// [`Medium::block_run`] reports from `lba`, then from where that run
    /// ends, and so on (unwritten gaps as zeros), in one walk of the map
    /// rather than a lookup per run.
    pub fn for_each_run(&self, lba: u64, end: u64, mut f: impl FnMut(&BlockData, u64)) {
        let mut pos = lba;
        if let Some((&s, (len, ext))) = self.extents.range(..=lba).next_back() {
            if lba - s < *len {
                let stop = (s + len).min(end);
                f(&ext.block(lba - s, self.block_size), stop - lba);
                pos = stop;
            }
        }
        if pos >= end {
            return;
        }
        for (&s, (len, ext)) in self.extents.range(pos..end) {
            if s > pos {
                f(&BlockData::Zero, s - pos);
            }
            let stop = (s + len).min(end);
            f(&ext.block(0, self.block_size), stop - s);
            pos = stop;
        }
        if pos < end {
            f(&BlockData::Zero, end - pos);
        }
    }

    /// Render `out.len() / block_size` blocks from `lba` into `out`.
    pub fn read(&self, lba: u64, out: &mut [u8]) {
        let bs = self.block_size;
        for (i, chunk) in out.chunks_exact_mut(bs).enumerate() {
            self.block(lba + i as u64).render(chunk);
        }
    }

    /// Whether `lba` is mapped, and how many blocks from `lba` (up to `limit`)
    /// share that state: one GET LBA STATUS descriptor.
    pub fn mapping_run(&self, lba: u64, limit: u64) -> (bool, u64) {
        let end = lba.saturating_add(limit);
        if let Some((&start, (len, _))) = self.extents.range(..=lba).next_back() {
            if lba - start < *len {
                // Mapped: extend over adjacent extents.
                let mut cur = start + len;
                while cur < end {
                    match self.extents.get(&cur) {
                        Some((l, _)) => cur += l,
                        None => break,
                    }
                }
                return (true, cur.min(end) - lba);
            }
        }
        (false, self.next_extent(lba).min(end) - lba)
    }

    /// Where the first extent at or after `lba` starts (`u64::MAX` if none).
    fn next_extent(&self, lba: u64) -> u64 {
        self.extents
            .range(lba..)
            .next()
            .map(|(s, _)| *s)
            .unwrap_or(u64::MAX)
    }

    /// Remove everything in `[s, e)`, splitting extents that straddle either end.
    fn carve(&mut self, s: u64, e: u64) {
        self.split_at(s);
        self.split_at(e);
        while let Some((&k, _)) = self.extents.range(s..e).next() {
            self.extents.remove(&k);
        }
    }

    /// Make `at` an extent boundary.
    fn split_at(&mut self, at: u64) {
        let Some((&k, (len, _))) = self.extents.range(..at).next_back() else {
            return;
        };
        let len = *len;
        if k + len <= at {
            return;
        }
        let (_, ext) = self.extents.remove(&k).expect("extent just found");
        let left = at - k;
        let right = len - left;
        self.extents
            .insert(k, (left, ext.slice(0, left, self.block_size)));
        self.extents
            .insert(at, (right, ext.slice(left, right, self.block_size)));
    }

    fn insert(&mut self, lba: u64, n: u64, ext: Extent) {
        let ext = if n == 1 {
            match self.insert_one(lba, ext) {
                Ok(()) => return,
                Err(ext) => ext,
            }
        } else {
            ext
        };
        // The last block of the device is at most u64::MAX - 1 (capacity is
        // checked by the executor), so `lba + n` cannot wrap here.
        let end = lba.saturating_add(n);
        self.carve(lba, end);
        // Extend the left neighbour in place when the new run continues it:
        // this is what keeps a sequential pattern stream at one extent.
        if let Some((&k, (len, left))) = self.extents.range_mut(..lba).next_back() {
            if k + *len == lba && continues(left, *len, &ext) {
                *len += n;
                let total = *len;
                self.merge_right(k, total);
                return;
            }
        }
        self.extents.insert(lba, (n, ext));
        self.merge_right(lba, n);
    }

    /// The common case of a one-block write (every cache write-back): one
    /// ordered walk finds the extents around `lba`, then one or two map
    /// updates store the block, merged with either neighbour it continues.
    /// Returns `ext` back when the block lies inside a longer extent that
    /// must be split (the general path).
    fn insert_one(&mut self, lba: u64, ext: Extent) -> Result<(), Extent> {
        let right_key = lba.checked_add(1);
        let mut around = self.extents.range(..=right_key.unwrap_or(lba)).rev();
        let mut here = around.next();
        // The extent starting right after the block, if any.
        let mut right = None;
        if let Some((&k, r)) = here {
            if Some(k) == right_key {
                right = Some(r);
                here = around.next();
            }
        }
        // A neighbour on the right merges when the new block continues into
        // it (and then whatever the block joins on the left does too).
        let right_len = right
            .filter(|(_, r)| continues(&ext, 1, r))
            .map(|(l, _)| *l);
        enum Step {
            /// Replace the one-block extent at `lba`; `Some(k)`: merge it
            /// into the extent at `k` that it continues.
            Replace(Option<u64>),
            /// Grow the extent at `k`, which ends at `lba` and continues into it.
            Extend(u64),
            /// Start an extent at `lba` (nothing starts there).
            Insert,
        }
        let step = match here {
            Some((&k, (l, cur))) if lba - k < *l => {
                if *l != 1 {
                    // Rewriting a block with what it already holds (a
                    // replayed or repeated copy) leaves the extent whole.
                    let same = match (cur, &ext) {
                        (Extent::Pattern { first }, Extent::Pattern { first: t }) => {
                            *t == Tag {
                                lba: first.lba.wrapping_add(lba - k),
                                ..*first
                            }
                        }
                        (Extent::Zero, Extent::Zero) => true,
                        (Extent::Same(a), Extent::Raw(b)) => a == b,
                        _ => false,
                    };
                    return if same { Ok(()) } else { Err(ext) };
                }
                // Exactly this block: the left neighbour may absorb it.
                let left = around
                    .next()
                    .filter(|(lk, (ll, le))| **lk + *ll == lba && continues(le, *ll, &ext))
                    .map(|(lk, _)| *lk);
                Step::Replace(left)
            }
            Some((&k, (l, cur))) if k + l == lba && continues(cur, *l, &ext) => Step::Extend(k),
            _ => Step::Insert,
        };
        let grow = 1 + right_len.unwrap_or(0);
        if right_len.is_some() {
            if let Some(rk) = right_key {
                self.extents.remove(&rk);
            }
        }
        match step {
            Step::Replace(Some(k)) | Step::Extend(k) => {
                if matches!(step, Step::Replace(_)) {
                    self.extents.remove(&lba);
                }
                if let Some((len, _)) = self.extents.get_mut(&k) {
                    *len += grow;
                }
            }
            Step::Replace(None) => {
                if let Some(cur) = self.extents.get_mut(&lba) {
                    *cur = (grow, ext);
                }
            }
            Step::Insert => {
                self.extents.insert(lba, (grow, ext));
            }
        }
        Ok(())
    }

    fn merge_right(&mut self, k: u64, len: u64) {
        let end = k + len;
        let mergeable = match (self.extents.get(&k), self.extents.get(&end)) {
            (Some((l, left)), Some((_, right))) => continues(left, *l, right),
            _ => false,
        };
        if mergeable {
            if let Some((rlen, _)) = self.extents.remove(&end) {
                if let Some((l, _)) = self.extents.get_mut(&k) {
                    *l += rlen;
                }
            }
        }
    }
}

/// Blocks a run given to [`Medium::write_run`] stores: a raw block
/// stands alone.
fn run_len((_, n, first): &(u64, u64, BlockData)) -> u64 {
    match first {
        BlockData::Raw(_) => 1,
        _ => *n,
    }
}

/// Append to `out` what the extents `old` (ascending; from index `*next`
/// on) hold in `[from, to)`, moving `*next` past the extents used up.
fn old_pieces(
    old: &[(u64, u64, Extent)],
    next: &mut usize,
    from: u64,
    to: u64,
    bs: usize,
    out: &mut Vec<(u64, u64, Extent)>,
) {
    while let Some((s, len, e)) = old.get(*next) {
        let end = s + len;
        if end <= from {
            *next += 1;
            continue;
        }
        if *s >= to {
            break;
        }
        let (a, b) = ((*s).max(from), end.min(to));
        push_merged(out, a, b - a, e.slice(a - s, b - a, bs));
        if end > to {
            break;
        }
        *next += 1;
    }
}

/// Lay `runs` (ascending, within `[lo, hi)`) over `old`, the extents
/// overlapping `[lo, hi)` (ascending, out of the map), appending to `out`
/// what `[min(lo, first old), end)` then holds, joined to `out`'s last
/// extent where it continues it ([`push_merged`]); returns `end`, where
/// the last old extent or `hi` ends.
fn lay(
    old: &[(u64, u64, Extent)],
    runs: &[(u64, u64, BlockData)],
    lo: u64,
    hi: u64,
    bs: usize,
    out: &mut Vec<(u64, u64, Extent)>,
) -> u64 {
    let mut next_old = 0usize;
    let mut pos = old.first().map_or(lo, |o| o.0.min(lo));
    // End of the last run that replaced what the medium held.
    let mut cut_at = 0u64;
    for (lba, n, first) in runs {
        let (ext, n) = match first {
            BlockData::Zero => (Extent::Zero, *n),
            BlockData::Pattern(t) => (Extent::Pattern { first: *t }, *n),
            // A raw block stands alone (as in `write_run`).
            BlockData::Raw(b) => (Extent::Raw(b.clone()), 1),
        };
        if n == 0 {
            continue;
        }
        old_pieces(old, &mut next_old, pos, *lba, bs, out);
        // A one-block write of the bytes a longer WRITE SAME extent
        // holds leaves that extent whole (`insert_one`): its length is
        // what earlier runs left of it.
        let held = match (&ext, old.get(next_old)) {
            (Extent::Raw(b), Some((s, len, Extent::Same(a)))) => {
                *s <= *lba && lba - s < *len && a == b && s + len - (*s).max(cut_at) != 1
            }
            _ => false,
        };
        if held {
            old_pieces(old, &mut next_old, *lba, lba + 1, bs, out);
        } else {
            push_merged(out, *lba, n, ext);
            cut_at = lba + n;
        }
        pos = lba + n;
    }
    let end = old.last().map_or(hi, |o| (o.0 + o.1).max(hi));
    old_pieces(old, &mut next_old, pos, end, bs, out);
    end
}

/// Append an extent to an ascending list, into the last one when it
/// continues it (the map never holds two extents that could be one).
fn push_merged(out: &mut Vec<(u64, u64, Extent)>, s: u64, n: u64, e: Extent) {
    if let Some((ls, ln, le)) = out.last_mut() {
        if *ls + *ln == s && continues(le, *ln, &e) {
            *ln += n;
            return;
        }
    }
    out.push((s, n, e));
}

/// Does `next` continue `left` (of `len` blocks) seamlessly?
/// Block `k` of a run that starts with `first` (an extent's blocks, as
/// [`Medium::block_run`] reports them): `first` moved on `k` blocks.
pub fn continued(first: &BlockData, k: u64) -> BlockData {
    match first {
        BlockData::Pattern(t) => BlockData::Pattern(Tag {
            lba: t.lba.wrapping_add(k),
            ..*t
        }),
        other => other.clone(),
    }
}

/// Whether `next` is block `k` of a run that starts with `first`, so
/// [`Medium::write_run`] can store them together.
pub fn continues_run(first: &BlockData, k: u64, next: &BlockData) -> bool {
    match (first, next) {
        (BlockData::Zero, BlockData::Zero) => true,
        (BlockData::Pattern(a), BlockData::Pattern(b)) => {
            b.seed == a.seed && b.generation == a.generation && b.lba == a.lba.wrapping_add(k)
        }
        _ => false,
    }
}

fn continues(left: &Extent, len: u64, next: &Extent) -> bool {
    match (left, next) {
        (Extent::Zero, Extent::Zero) => true,
        (Extent::Pattern { first: a }, Extent::Pattern { first: b }) => {
            a.seed == b.seed && a.generation == b.generation && a.lba.wrapping_add(len) == b.lba
        }
        // Raw runs are never merged: overwriting one block inside a merged
        // run would copy the whole run to split it.
        (Extent::Raw(_), Extent::Raw(_)) => false,
        (Extent::Same(a), Extent::Same(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(lba: u64, g: u32) -> BlockData {
        BlockData::Pattern(Tag {
            lba,
            seed: 9,
            generation: g,
        })
    }

    #[test]
    fn sequential_pattern_writes_collapse_to_one_extent() {
        let mut m = Medium::new(512);
        for lba in 0..10_000 {
            m.write_block(lba, &pat(lba, 1));
        }
        assert_eq!(m.extent_count(), 1);
        assert_eq!(m.block(4321), pat(4321, 1));
        m.write_block(5000, &pat(5000, 2));
        assert_eq!(m.extent_count(), 3);
        assert_eq!(m.block(5000), pat(5000, 2));
        assert_eq!(m.block(5001), pat(5001, 1));
        assert_eq!(m.block(4999), pat(4999, 1));
        m.write_block(5000, &pat(5000, 1));
        assert_eq!(
            m.extent_count(),
            1,
            "rewriting the original generation re-merges"
        );
    }

    #[test]
    fn raw_zero_and_unmap_round_trip() {
        let mut m = Medium::new(512);
        let raw = BlockData::Raw(vec![0xab; 512].into());
        m.write_block(10, &raw);
        m.write_block(11, &BlockData::Raw(vec![0xcd; 512].into()));
        m.write_zeros(20, 5);
        assert_eq!(m.block(10), raw);
        assert_eq!(m.block(11), BlockData::Raw(vec![0xcd; 512].into()));
        assert_eq!(m.mapping_run(20, 100), (true, 5));
        assert_eq!(m.mapping_run(12, 100), (false, 8));
        m.unmap(11, 10);
        assert_eq!(m.block(11), BlockData::Zero);
        assert_eq!(m.block(10), raw);
        assert_eq!(m.mapping_run(11, 100), (false, 10));
        assert_eq!(m.mapping_run(21, 100), (true, 4));
        let mut out = vec![1u8; 1024];
        m.read(10, &mut out);
        assert!(out[..512].iter().all(|b| *b == 0xab) && out[512..].iter().all(|b| *b == 0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// The extent map agrees with a naive block-by-block model under any
        /// mix of one-block writes (the fast path), multi-block runs,
        /// batches of runs, WRITE SAME and unmaps, and never holds two
        /// touching extents that could have been one; a batch leaves the
        /// very extents its runs written one by one leave, whether it
        /// updates the map run by run or rebuilds it (batches of 2 to 12).
        #[test]
        fn extents_match_a_per_block_model(ops in proptest::collection::vec(
            (0u8..8, 0u64..64, 1u64..12, 0u64..3), 1..80)) {
            let mut m = Medium::new(512);
            // The same operations with each batch written run by run.
            let mut seq = Medium::new(512);
            let mut model = std::collections::HashMap::new();
            for (kind, lba, n, g) in ops {
                if kind >= 6 {
                    // Runs of zeros, of one stream's tags (continuing one
                    // another or not) and raw blocks (some the bytes a
                    // WRITE SAME below stored), with gaps or without.
                    let mut runs = Vec::new();
                    let mut at = lba;
                    for i in 0..(n % 11 + 2) {
                        let len = 1 + (g + i) % 3;
                        let first = match (i + g) % 3 {
                            0 => BlockData::Zero,
                            1 => BlockData::Pattern(Tag { lba: at + (i % 2), seed: 3, generation: 2 }),
                            _ => BlockData::Raw(vec![0x40 + ((g + i) % 3) as u8; 512].into()),
                        };
                        let len = if matches!(first, BlockData::Raw(_)) { 1 } else { len };
                        runs.push((at, len, first));
                        at += len + [0, 1, 4][((i + g + kind as u64) % 3) as usize];
                    }
                    m.write_runs(&runs);
                    for (l, k, first) in &runs {
                        seq.write_run(*l, *k, first);
                        for j in 0..*k { model.insert(l + j, continued(first, j)); }
                    }
                    proptest::prop_assert_eq!(&m.extents, &seq.extents);
                    continue;
                }
                match kind {
                    0 | 1 => {
                        // one block: a pattern continuing its LBA, or raw
                        let d = if kind == 0 { pat(lba, g as u32) } else { BlockData::Raw(vec![g as u8 + 1; 512].into()) };
                        m.write_block(lba, &d);
                        seq.write_block(lba, &d);
                        model.insert(lba, d);
                    }
                    2 => {
                        m.write_zeros(lba, n);
                        seq.write_zeros(lba, n);
                        for l in lba..lba + n { model.insert(l, BlockData::Zero); }
                    }
                    3 => {
                        let d = BlockData::Raw(vec![0x40 + g as u8; 512].into());
                        m.write_same(lba, n, &d);
                        seq.write_same(lba, n, &d);
                        for l in lba..lba + n { model.insert(l, d.clone()); }
                    }
                    4 => {
                        m.unmap(lba, n);
                        seq.unmap(lba, n);
                        for l in lba..lba + n { model.remove(&l); }
                    }
                    _ => {
                        // A run of one stream's tags, as a cache writes
                        // back consecutive dirty lines.
                        let first = BlockData::Pattern(Tag { lba: lba + g, seed: 3, generation: 2 });
                        m.write_run(lba, n, &first);
                        seq.write_run(lba, n, &first);
                        for k in 0..n { model.insert(lba + k, continued(&first, k)); }
                    }
                }
            }
            for l in 0..80 {
                let want = model.get(&l).cloned().unwrap_or(BlockData::Zero);
                proptest::prop_assert_eq!(m.block(l), want.clone(), "LBA {}", l);
                // The run the block starts: every block in it continues it.
                let (first, n) = m.block_run(l);
                proptest::prop_assert_eq!(&first, &want);
                for k in 0..n.min(90 - l) {
                    let got = model.get(&(l + k)).cloned().unwrap_or(BlockData::Zero);
                    proptest::prop_assert_eq!(continued(&first, k), got, "LBA {} + {}", l, k);
                }
                proptest::prop_assert_eq!(m.mapping_run(l, 1).0, model.contains_key(&l));
                // Walking the runs in one pass reports what block_run does
                // from each run's start.
                let mut walked = Vec::new();
                m.for_each_run(l, l + 20, |d, k| walked.push((d.clone(), k)));
                let mut stepped = Vec::new();
                let mut at = l;
                while at < l + 20 {
                    let (d, k) = m.block_run(at);
                    let k = k.min(l + 20 - at);
                    stepped.push((d, k));
                    at += k;
                }
                proptest::prop_assert_eq!(walked, stepped);
            }
            let mut prev: Option<(u64, u64, Extent)> = None;
            for (k, (len, e)) in &m.extents {
                if let Some((pk, pl, pe)) = &prev {
                    proptest::prop_assert!(pk + pl <= *k, "overlap");
                    proptest::prop_assert!(!(pk + pl == *k && continues(pe, *pl, e)), "unmerged at {}", k);
                }
                prev = Some((*k, *len, e.clone()));
            }
        }
    }

    #[test]
    fn blocks_at_the_top_of_the_lba_space_do_not_overflow() {
        let mut m = Medium::new(512);
        m.write_block(u64::MAX - 1, &pat(1, 1));
        assert_eq!(m.block(u64::MAX - 1), pat(1, 1));
        assert_eq!(m.mapping_run(u64::MAX - 1, 5), (true, 1));
        m.unmap(u64::MAX - 2, 2);
        assert_eq!(m.extent_count(), 0);
    }
}
