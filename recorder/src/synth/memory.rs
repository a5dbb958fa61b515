//! Physical memory as the page cache draws from it.
//!
//! The model that explains the report's 128 MB threshold: a kernel hands out
//! free low memory (below 4 GiB) first, and only once that is used up takes
//! pages from above 4 GiB. A buffered copy therefore puts its first
//! `low_free` bytes of page cache below 4 GiB and everything after above, so
//! a driver that mishandles 64-bit DMA addresses works for small files and
//! corrupts large ones. See `docs/workloads.md` ("Physical memory").
//!
//! Free memory is fragmented: pages come in runs of physically contiguous
//! pages separated by gaps (pages other users hold). Adjacent file pages that
//! land in one run merge into one scatter-gather segment, as in a real
//! writeback; most do not.

use super::rng::SplitMix64;
use super::SynthError;
use std::collections::VecDeque;

/// The 4 GiB line a 32-bit DMA engine cannot cross.
pub const FOUR_GIB: u64 = 1 << 32;
/// Low memory below this is the kernel's own (and the legacy DMA zone): the
/// page cache never gets it.
pub const LOW_START: u64 = 16 << 20;
/// Default longest run of physically contiguous free pages handed out in a
/// row ([`PhysMemory::with_max_run`] changes it).
pub const MAX_RUN_PAGES: u64 = 8;
/// Largest gap (pages held by someone else) between two runs.
pub const MAX_GAP_PAGES: u64 = 16;

/// Where pages came from, for summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Pages handed out below 4 GiB.
    pub low_pages: u64,
    /// Pages handed out at or above 4 GiB.
    pub high_pages: u64,
    /// Pages taken back from clean page cache (memory was full).
    pub reclaimed_pages: u64,
}

#[derive(Debug, Clone)]
struct Region {
    cursor: u64,
    end: u64,
}

/// A physical page allocator with a low-memory budget.
#[derive(Debug, Clone)]
pub struct PhysMemory {
    page: u64,
    mem_bytes: u64,
    low_free_bytes: u64,
    seed: u64,
    low: Region,
    high: Region,
    low_budget: u64,
    run_left: u64,
    max_run: u64,
    rng: SplitMix64,
    reclaimable: VecDeque<u64>,
    stats: MemoryStats,
}

impl PhysMemory {
    /// Memory of `mem_bytes` with `low_free_bytes` free below 4 GiB, handing
    /// out `page`-byte pages.
    pub fn new(
        page: u64,
        mem_bytes: u64,
        low_free_bytes: u64,
        seed: u64,
    ) -> Result<Self, SynthError> {
        if page == 0 || !page.is_power_of_two() {
            return Err(SynthError::InvalidParameter {
                name: "page-size",
                reason: format!("{page} is not a power of two"),
            });
        }
        if low_free_bytes > FOUR_GIB - LOW_START {
            return Err(SynthError::InvalidParameter {
                name: "low-free",
                reason: format!("{low_free_bytes} bytes do not fit between 16 MiB and 4 GiB"),
            });
        }
        if mem_bytes < page {
            return Err(SynthError::InvalidParameter {
                name: "mem",
                reason: format!("{mem_bytes} bytes is less than one page"),
            });
        }
        let mut m = PhysMemory {
            page,
            mem_bytes,
            low_free_bytes,
            seed,
            low: Region { cursor: 0, end: 0 },
            high: Region { cursor: 0, end: 0 },
            low_budget: 0,
            run_left: 0,
            max_run: MAX_RUN_PAGES,
            rng: SplitMix64::new(seed),
            reclaimable: VecDeque::new(),
            stats: MemoryStats::default(),
        };
        m.reset(seed);
        Ok(m)
    }

    fn reset(&mut self, seed: u64) {
        self.low = Region {
            cursor: LOW_START,
            end: FOUR_GIB,
        };
        // RAM above 4 GiB: what the machine has beyond the first 4 GiB. The
        // PCI hole's remapping is not modelled; it only moves the end.
        let high_end = if self.mem_bytes > FOUR_GIB {
            self.mem_bytes
        } else {
            FOUR_GIB
        };
        self.high = Region {
            cursor: FOUR_GIB,
            end: high_end,
        };
        self.low_budget = self.low_free_bytes / self.page;
        self.run_left = 0;
        self.rng = SplitMix64::new(seed);
        self.reclaimable.clear();
    }

    /// Free memory whose contiguous runs are at most `pages` long (1: no
    /// two pages handed out in a row are adjacent, the worst fragmentation).
    pub fn with_max_run(mut self, pages: u64) -> Self {
        self.max_run = pages.max(1);
        self
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page
    }

    /// One free page: low memory while the budget lasts, then high memory,
    /// then the oldest clean page-cache page.
    pub fn alloc(&mut self) -> Result<u64, SynthError> {
        if self.low_budget > 0 {
            if let Some(a) = self.take_low() {
                self.low_budget -= 1;
                self.stats.low_pages += 1;
                return Ok(a);
            }
            // Low memory ran out before the budget: the budget was optimistic.
            self.low_budget = 0;
            self.run_left = 0;
        }
        if let Some(a) = self.take_high() {
            self.stats.high_pages += 1;
            return Ok(a);
        }
        if let Some(a) = self.reclaimable.pop_front() {
            self.stats.reclaimed_pages += 1;
            if a >= FOUR_GIB {
                self.stats.high_pages += 1;
            } else {
                self.stats.low_pages += 1;
            }
            return Ok(a);
        }
        Err(SynthError::OutOfMemory {
            mem_bytes: self.mem_bytes,
        })
    }

    fn take_low(&mut self) -> Option<u64> {
        let (page, rng, run_left) = (self.page, &mut self.rng, &mut self.run_left);
        take(&mut self.low, page, self.max_run, rng, run_left)
    }

    fn take_high(&mut self) -> Option<u64> {
        let (page, rng, run_left) = (self.page, &mut self.rng, &mut self.run_left);
        take(&mut self.high, page, self.max_run, rng, run_left)
    }

    /// A page-cache page became clean: it may be reclaimed when memory runs
    /// short, oldest first (LRU).
    pub fn release_clean(&mut self, addr: u64) {
        self.reclaimable.push_back(addr);
    }

    /// Drop every cached page (`purge` on macOS, `echo 3 >
    /// /proc/sys/vm/drop_caches` on Linux): free memory returns to its
    /// initial shape, so a following read pass again starts in low memory.
    pub fn drop_caches(&mut self) {
        self.seed = self.seed.wrapping_add(0x5eed_d809);
        let s = self.seed;
        self.reset(s);
    }

    /// Where pages came from so far.
    pub fn stats(&self) -> MemoryStats {
        self.stats
    }
}

fn take(
    r: &mut Region,
    page: u64,
    max_run: u64,
    rng: &mut SplitMix64,
    run_left: &mut u64,
) -> Option<u64> {
    if *run_left == 0 {
        let gap = rng.range_inclusive(1, MAX_GAP_PAGES);
        r.cursor = r.cursor.saturating_add(gap * page);
        *run_left = rng.range_inclusive(1, max_run);
    }
    if r.cursor.checked_add(page)? > r.end {
        *run_left = 0;
        return None;
    }
    let a = r.cursor;
    r.cursor += page;
    *run_left -= 1;
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_budget_is_spent_before_high_memory() {
        let page = 16 << 10;
        let mut m = PhysMemory::new(page, 16 << 30, 1 << 20, 1).unwrap();
        let budget = (1 << 20) / page;
        for _ in 0..budget {
            assert!(m.alloc().unwrap() < FOUR_GIB);
        }
        for _ in 0..100 {
            assert!(m.alloc().unwrap() >= FOUR_GIB);
        }
        assert_eq!(m.stats().low_pages, budget);
    }

    #[test]
    fn pages_are_distinct_aligned_and_sometimes_contiguous() {
        let page = 4096;
        let mut m = PhysMemory::new(page, 8 << 30, 64 << 20, 9).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut contiguous = 0;
        let mut prev = 0;
        for _ in 0..10_000 {
            let a = m.alloc().unwrap();
            assert_eq!(a % page, 0);
            assert!(seen.insert(a));
            if a == prev + page {
                contiguous += 1;
            }
            prev = a;
        }
        assert!(contiguous > 1000 && contiguous < 9000, "{contiguous}");
    }

    #[test]
    fn full_memory_reclaims_clean_pages_and_reports_exhaustion() {
        let page = 1 << 20;
        // 4 GiB of RAM: nothing above 4 GiB, low budget of 4 pages.
        let mut m = PhysMemory::new(page, FOUR_GIB, 4 * page, 3).unwrap();
        let got: Vec<u64> = (0..4).map(|_| m.alloc().unwrap()).collect();
        assert!(matches!(m.alloc(), Err(SynthError::OutOfMemory { .. })));
        m.release_clean(got[1]);
        assert_eq!(m.alloc().unwrap(), got[1]);
        assert_eq!(m.stats().reclaimed_pages, 1);
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = PhysMemory::new(3000, 1 << 30, 0, 0).unwrap_err();
        assert!(e.to_string().contains("page-size"), "{e}");
        let e = PhysMemory::new(4096, 1 << 30, 5 << 30, 0).unwrap_err();
        assert!(e.to_string().contains("low-free"), "{e}");
    }
}
