//! A set of LBA ranges kept merged, so that a 20 GiB sequential write costs
//! one entry: which blocks this run wrote, for the closing read-back sweep
//! and for deciding which reads the oracle can judge.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)` of LBAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extents {
    /// start -> end.
    map: BTreeMap<u64, u64>,
}

impl Extents {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, start + len)`, merging with touching ranges. A range
    /// reaching past 2^64 is clipped there.
    pub fn insert(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut s = start;
        let mut e = start.saturating_add(len);
        // A range starting at or before `s` that reaches it.
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                if pe >= e {
                    return;
                }
                s = ps;
                e = e.max(pe);
                self.map.remove(&ps);
            }
        }
        // Ranges starting inside or right after the new one.
        while let Some((&ns, &ne)) = self.map.range(s..).next() {
            if ns > e {
                break;
            }
            e = e.max(ne);
            self.map.remove(&ns);
        }
        self.map.insert(s, e);
    }

    /// Whether every block of `[start, start + len)` is in the set.
    pub fn contains(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        match self.map.range(..=start).next_back() {
            Some((_, &e)) => e >= end,
            None => len == 0,
        }
    }

    /// Whether block `lba` is in the set.
    pub fn contains_block(&self, lba: u64) -> bool {
        self.contains(lba, 1)
    }

    /// The ranges, ascending, as `(start, len)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e - s))
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total blocks covered.
    pub fn blocks(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequential_writes_merge_into_one_range() {
        let mut x = Extents::new();
        for i in 0..1000 {
            x.insert(i * 8, 8);
        }
        assert_eq!(x.len(), 1);
        assert_eq!(x.blocks(), 8000);
        assert!(x.contains(0, 8000));
        assert!(!x.contains(0, 8001));
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..20), 0..40)) {
            let mut x = Extents::new();
            let mut bits = [false; 256];
            for (s, l) in ops {
                x.insert(s, l);
                for b in s..s + l { bits[b as usize] = true; }
            }
            for (b, set) in bits.iter().enumerate() {
                prop_assert_eq!(x.contains_block(b as u64), *set);
            }
            // Disjoint and non-adjacent.
            let v: Vec<_> = x.iter().collect();
            for w in v.windows(2) {
                prop_assert!(w[0].0 + w[0].1 < w[1].0);
            }
        }
    }
}
