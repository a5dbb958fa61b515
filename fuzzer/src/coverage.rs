//! The coverage map LibAFL sees: the emulator's hashed entries renumbered
//! densely, in the order a campaign first hits them.
//!
//! The emulator hashes each state and transition into a 64 KiB map, but a
//! campaign reaches a few thousand of its entries (8,576 after ten minutes
//! on two cores). LibAFL's map observer and feedback pass over the whole
//! map after every execution (reset, hit-count buckets, novelty search),
//! which was a tenth of a campaign's time once the emulator itself got
//! fast. Renumbering the entries densely lets a [`VariableMapObserver`]
//! show LibAFL only the prefix that has ever been hit. The renumbering is
//! a bijection on the entries hit, so every novelty LibAFL finds is the
//! one it would find on the sparse map.
//!
//! The table lives in the fuzzer's state ([`DenseCoverage`] is state
//! metadata), so a client that LibAFL restarts from its saved state gets
//! back the numbering its history map was built with.
//!
//! [`VariableMapObserver`]: libafl::observers::VariableMapObserver

use serde::{Deserialize, Serialize};

/// AFL's hit-count class of `count`, as LibAFL's `HitcountsMapObserver`
/// classifies a map: 1, 2 and 3 hits apart, then 4-7, 8-15, 16-31, 32-127
/// and 128 or more, each class one bit. A transition taken a few more
/// times is not new; one taken an order of magnitude more often is.
pub fn count_class(count: u8) -> u8 {
    match count {
        0..=2 => count,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        128..=255 => 128,
    }
}

/// Dense numbers for the sparse map's entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenseCoverage {
    /// Sparse entry -> dense number + 1 (0: not hit yet).
    number: Vec<u32>,
    /// Entries numbered so far: the observer's usable length.
    len: usize,
}

libafl_bolts::impl_serdeany!(DenseCoverage);

impl DenseCoverage {
    /// A table for a sparse map of `sparse` entries, nothing numbered yet.
    pub fn new(sparse: usize) -> DenseCoverage {
        DenseCoverage {
            number: vec![0; sparse],
            len: 0,
        }
    }

    /// The dense number of sparse entry `i`, numbering it if it is new;
    /// `None` for an entry outside the sparse map.
    pub fn number(&mut self, i: u32) -> Option<usize> {
        let slot = self.number.get_mut(i as usize)?;
        if *slot == 0 {
            self.len += 1;
            *slot = self.len as u32;
        }
        Some(*slot as usize - 1)
    }

    /// Writes a run's hit entries (sparse entry, count) into `map` at
    /// their dense numbers as hit-count classes ([`count_class`]),
    /// numbering new ones; `map` must hold the whole sparse map's worth of
    /// entries.
    pub fn place(&mut self, hits: &[(u32, u8)], map: &mut [u8]) {
        for &(i, c) in hits {
            if let Some(e) = self.number(i).and_then(|d| map.get_mut(d)) {
                *e = count_class(c);
            }
        }
    }

    /// Entries numbered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first entry is numbered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_numbered_once_in_first_hit_order() {
        let mut d = DenseCoverage::new(1 << 16);
        assert!(d.is_empty());
        assert_eq!(d.number(40_000), Some(0));
        assert_eq!(d.number(7), Some(1));
        assert_eq!(d.number(40_000), Some(0));
        assert_eq!(d.number(65_535), Some(2));
        assert_eq!(d.number(1 << 16), None, "outside the map");
        assert_eq!(d.len(), 3);
        let mut map = vec![0u8; 1 << 16];
        d.place(&[(7, 5), (9, 1)], &mut map);
        // 5 hits are class 8.
        assert_eq!(&map[..4], &[0, 8, 0, 1]);
    }

    #[test]
    fn counts_fall_in_afl_classes() {
        // AFL's classes, written out: what LibAFL's hit-count observer
        // makes of a map, so a campaign's novelty is what it was with it.
        let mut want = [0u8; 256];
        for (c, w) in want.iter_mut().enumerate() {
            *w = match c {
                0 => 0,
                1 => 1,
                2 => 2,
                3 => 4,
                4..=7 => 8,
                8..=15 => 16,
                16..=31 => 32,
                32..=127 => 64,
                _ => 128,
            };
        }
        for c in 0..=255u8 {
            assert_eq!(count_class(c), want[c as usize], "{c} hits");
        }
    }
}
