//! The cache's extents found by LBA: one-line extents in a hash table,
//! longer ones in a B-tree, never the same line in both.
//!
//! Random single-block traffic (the replayer's 4 KiB reads into a full
//! cache, every one a miss) keeps the cache full of one-line extents and
//! costs a lookup, an eviction and an insertion per command: in a B-tree
//! of 16k keys those cost about twice what hash probes do. A fuzz
//! program's commands cover runs of blocks, kept as a few extents in LBA
//! order in the B-tree. Questions about order (what starts in a range,
//! what follows an LBA) ask both parts: the one-line extents by probing
//! LBA by LBA when the range is no longer than their count, else by
//! scanning them all, so a long range never costs per block.

use super::Extent;
use std::collections::{BTreeMap, HashMap};
use trace::hash::BuildFastHasher;

/// Extents keyed by first LBA, with one-line extents hashed.
#[derive(Debug, Clone)]
pub(super) struct ExtentMap {
    /// One-line extents, by LBA (empty unless `hash_singles`).
    singles: HashMap<u64, Extent, BuildFastHasher>,
    /// Every other extent, by first LBA.
    runs: BTreeMap<u64, Extent>,
    /// Whether one-line extents go to `singles`. Without it every extent
    /// is in the B-tree, for a policy that asks for order on each
    /// eviction (the random victim search).
    hash_singles: bool,
}

impl ExtentMap {
    /// An empty map; `hash_singles` as the field says.
    pub(super) fn new(hash_singles: bool) -> Self {
        ExtentMap {
            singles: HashMap::default(),
            runs: BTreeMap::new(),
            hash_singles,
        }
    }

    /// Extents held.
    pub(super) fn len(&self) -> usize {
        self.singles.len() + self.runs.len()
    }

    /// The extent holding `lba`, with its first LBA: one hash probe
    /// while no run is held.
    pub(super) fn containing(&self, lba: u64) -> Option<(u64, &Extent)> {
        if !self.singles.is_empty() {
            if let Some(e) = self.singles.get(&lba) {
                return Some((lba, e));
            }
        }
        if self.runs.is_empty() {
            return None;
        }
        self.runs
            .range(..=lba)
            .next_back()
            .filter(|(s, e)| lba - **s < e.n)
            .map(|(s, e)| (*s, e))
    }

    /// The extent starting at `start`.
    pub(super) fn starting_at(&self, start: u64) -> Option<&Extent> {
        if !self.singles.is_empty() {
            if let Some(e) = self.singles.get(&start) {
                return Some(e);
            }
        }
        self.runs.get(&start)
    }

    /// Where the first extent starting in `(lba, end)` starts, else `end`.
    pub(super) fn next_start(&self, lba: u64, end: u64) -> u64 {
        match lba.checked_add(1) {
            Some(from) => self.first_in(from, end, |_| true).unwrap_or(end),
            None => end,
        }
    }

    /// Where the first extent that starts in `[lba, end)` and satisfies
    /// `pred` starts.
    pub(super) fn first_in(
        &self,
        lba: u64,
        end: u64,
        pred: impl Fn(&Extent) -> bool,
    ) -> Option<u64> {
        if lba >= end {
            return None;
        }
        let run = (self.runs.range(lba..end))
            .find(|(_, e)| pred(e))
            .map(|(s, _)| *s);
        // A single line before the run found, if any, comes first.
        let end = run.unwrap_or(end);
        if self.singles.is_empty() || lba >= end {
            return run;
        }
        let single = if end - lba <= self.singles.len() as u64 {
            (lba..end).find(|l| self.singles.get(l).is_some_and(&pred))
        } else {
            (self.singles.iter())
                .filter(|(l, e)| (lba..end).contains(*l) && pred(e))
                .map(|(l, _)| *l)
                .min()
        };
        single.or(run)
    }

    /// The one-line extents in `[lba, end)` satisfying `pred`, in LBA
    /// order.
    fn singles_in(
        &self,
        lba: u64,
        end: u64,
        pred: &impl Fn(&Extent) -> bool,
    ) -> Vec<(u64, &Extent)> {
        if self.singles.is_empty() || lba >= end {
            return Vec::new();
        }
        if end - lba <= self.singles.len() as u64 {
            return (lba..end)
                .filter_map(|l| Some((l, self.singles.get(&l).filter(|e| pred(e))?)))
                .collect();
        }
        let mut lines: Vec<(u64, &Extent)> = (self.singles.iter())
            .filter(|(l, e)| (lba..end).contains(*l) && pred(e))
            .map(|(l, e)| (*l, e))
            .collect();
        sort_by_lba(&mut lines, |(l, _)| *l);
        lines
    }

    /// Hand `visit` each extent that starts in `[lba, end)` and satisfies
    /// `pred`, in LBA order.
    pub(super) fn for_each_in(
        &self,
        lba: u64,
        end: u64,
        pred: impl Fn(&Extent) -> bool,
        mut visit: impl FnMut(u64, &Extent),
    ) {
        let mut singles = self.singles_in(lba, end, &pred).into_iter();
        let mut single = singles.next();
        for (&s, e) in self.runs.range(lba..end).filter(|(_, e)| pred(e)) {
            while let Some((l, line)) = single.filter(|(l, _)| *l < s) {
                visit(l, line);
                single = singles.next();
            }
            visit(s, e);
        }
        while let Some((l, line)) = single {
            visit(l, line);
            single = singles.next();
        }
    }

    /// The first LBAs of the extents that start in `[lba, end)` and
    /// satisfy `pred`, in order.
    pub(super) fn starts_in(&self, lba: u64, end: u64, pred: impl Fn(&Extent) -> bool) -> Vec<u64> {
        let mut starts = Vec::new();
        self.for_each_in(lba, end, pred, |s, _| starts.push(s));
        starts
    }

    /// Every extent with its first LBA, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Extent)> {
        (self.singles.iter().chain(self.runs.iter())).map(|(s, e)| (*s, e))
    }

    /// The first LBA of the lowest extent.
    pub(super) fn first_start(&self) -> Option<u64> {
        let run = self.runs.keys().next().copied();
        let single = self.singles.keys().min().copied();
        run.into_iter().chain(single).min()
    }

    /// One past the last line of the highest extent.
    pub(super) fn last_end(&self) -> Option<u64> {
        let run = self.runs.iter().next_back().map(|(s, e)| s + e.n);
        let single = self.singles.keys().max().map(|l| l + 1);
        run.into_iter().chain(single).max()
    }

    /// Store an extent whose lines are not held.
    pub(super) fn insert(&mut self, start: u64, ext: Extent) {
        if ext.n == 1 && self.hash_singles {
            self.singles.insert(start, ext);
        } else {
            self.runs.insert(start, ext);
        }
    }

    /// Take out the extent starting at `start`.
    pub(super) fn remove(&mut self, start: u64) -> Option<Extent> {
        if !self.singles.is_empty() {
            if let Some(e) = self.singles.remove(&start) {
                return Some(e);
            }
        }
        self.runs.remove(&start)
    }

    /// Keep only the first `n` (at least one) lines of the extent at
    /// `start`, in place while it stays a run.
    pub(super) fn truncate(&mut self, start: u64, n: u64) {
        if n > 1 || !self.hash_singles {
            if let Some(e) = self.runs.get_mut(&start) {
                e.n = n;
            }
        } else if let Some(mut e) = self.runs.remove(&start) {
            e.n = n;
            self.singles.insert(start, e);
        }
    }

    /// Drop every extent.
    pub(super) fn clear(&mut self) {
        self.singles.clear();
        self.runs.clear();
    }
}

/// Sort what was collected from the hash table by LBA (`lba` of each
/// item; no two alike). A power loss after a campaign's scattered writes
/// sorts thousands of dirty lines, and a comparison sort of them was a
/// tenth of a campaign's time: a least-significant-digit radix sort over
/// the bytes the largest LBA uses (three passes on a 64 MiB disk) gives
/// the same order in linear time. Short lists keep the comparison sort.
fn sort_by_lba<T: Copy>(v: &mut Vec<T>, lba: impl Fn(&T) -> u64) {
    const RADIX_FROM: usize = 64;
    if v.len() < RADIX_FROM {
        v.sort_unstable_by_key(&lba);
        return;
    }
    let Some(&seed) = v.first() else { return };
    let max = v.iter().map(&lba).max().unwrap_or(0);
    let bytes = (64 - max.leading_zeros()).div_ceil(8) as usize;
    let mut other = vec![seed; v.len()];
    for b in 0..bytes {
        let shift = 8 * b;
        let digit = |x: &T| ((lba(x) >> shift) & 0xff) as usize;
        let mut count = [0usize; 256];
        for x in v.iter() {
            count[digit(x)] += 1;
        }
        let mut at = 0usize;
        for c in count.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for x in v.iter() {
            let d = digit(x);
            other[count[d]] = *x;
            count[d] += 1;
        }
        std::mem::swap(v, &mut other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The radix sort orders LBAs as a comparison sort does, short
        /// lists and long, small LBAs and ones near 2^64, carrying what
        /// goes with each.
        #[test]
        fn lbas_sort_as_a_comparison_sort_would(
            v in proptest::collection::btree_set(
                proptest::prop_oneof![0u64..300_000, proptest::prelude::any::<u64>()],
                0..700,
            )
        ) {
            let mut v: Vec<(u64, u64)> = v.into_iter().rev().map(|l| (l, !l)).collect();
            let mut want = v.clone();
            want.sort_unstable();
            sort_by_lba(&mut v, |(l, _)| *l);
            proptest::prop_assert_eq!(v, want);
        }
    }
}
