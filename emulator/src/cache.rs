//! The controller's write-back cache: volatile while write caching is
//! enabled (caching mode page WCE=1), written back by a destage policy, and
//! partly lost on power failure.
//!
//! SBC-3 4.10: with WCE=1 the device may report a write complete once the
//! data is in cache; only SYNCHRONIZE CACHE, a FUA write, or its own destage
//! puts it on the medium. A power loss therefore leaves any subset of the
//! dirty lines on the medium, which [`Cache::power_loss`] draws from the seed.

use crate::content::{BlockData, Detected};
use crate::medium::Medium;
use crate::rng::Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};
use trace::hash::BuildFastHasher;

/// When the cache writes dirty lines back on its own.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Destage {
    /// Only when a line is needed for new data (then the least recently
    /// used line goes), on SYNCHRONIZE CACHE and for FUA writes: the
    /// laziest cache, which loses the most on power failure.
    #[default]
    None,
    /// Also in the background, oldest write first, whenever more than half
    /// the cache is dirty.
    Lru,
    /// Also in the background: after each write, with probability 1/4, a
    /// dirty line chosen by the seed.
    Random,
}

impl std::str::FromStr for Destage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Destage::None),
            "lru" => Ok(Destage::Lru),
            "random" => Ok(Destage::Random),
            o => Err(format!("unknown destage policy `{o}` (none, lru, random)")),
        }
    }
}

/// Cache geometry and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CacheConfig {
    /// Lines (one logical block each) the cache holds.
    pub capacity_blocks: u64,
    /// Background write-back policy.
    pub destage: Destage,
    /// WCE in the caching mode page's default and saved values: what the
    /// unit powers on with.
    pub wce_default: bool,
}

impl Default for CacheConfig {
    /// 64 MiB worth of 4 KiB lines, no background destage, write caching on
    /// (as controllers with a battery-less DRAM cache ship).
    fn default() -> Self {
        CacheConfig {
            capacity_blocks: 16_384,
            destage: Destage::None,
            wce_default: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Line {
    data: BlockData,
    dirty: bool,
    /// Last touch; matches the newest entry for this line in `lru`.
    stamp: u64,
    /// Stamp of the write that dirtied it; matches its entry in `dirty_order`.
    dirtied: u64,
}

/// Outcome of a cache lookup, for coverage and the stale-read bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from a dirty line.
    DirtyHit,
    /// Served from a clean line.
    CleanHit,
    /// Not cached.
    Miss,
}

/// Lines the tables are first sized for.
const INITIAL_LINES: u64 = 64;

/// A write-back cache in front of one [`Medium`].
///
/// Lines are found by hashing (every block a command touches is looked up,
/// so this is the emulator's hottest map); the few operations that need
/// LBA order (a flush writing back, a power loss drawing its survivors)
/// sort the dirty lines they collect, so outcomes do not depend on the
/// hash. Only the random eviction policy needs ordered lookups of every
/// line, and only it keeps an ordered index.
#[derive(Debug, Clone)]
pub struct Cache {
    cfg: CacheConfig,
    lines: HashMap<u64, Line, BuildFastHasher>,
    /// Every line's LBA, in order: kept only for [`Destage::Random`],
    /// whose victim is the first line at or after a random LBA.
    order: Option<BTreeSet<u64>>,
    /// (lba, stamp) in touch order; entries whose stamp is stale are skipped.
    lru: VecDeque<(u64, u64)>,
    /// (lba, dirtied) in write order, for oldest-first destage.
    dirty_order: VecDeque<(u64, u64)>,
    clock: u64,
    dirty: u64,
}

impl Cache {
    /// An empty cache, with room for a short run's lines (a fuzz
    /// execution's few dozen) before any table has to grow.
    pub fn new(cfg: CacheConfig) -> Self {
        let start = cfg.capacity_blocks.min(INITIAL_LINES) as usize;
        Cache {
            cfg,
            lines: HashMap::with_capacity_and_hasher(start, BuildFastHasher::default()),
            order: (cfg.destage == Destage::Random).then(BTreeSet::new),
            lru: VecDeque::with_capacity(2 * start),
            dirty_order: VecDeque::with_capacity(start),
            clock: 0,
            dirty: 0,
        }
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Dirty lines: data the medium does not have yet.
    pub fn dirty_count(&self) -> u64 {
        self.dirty
    }

    /// Lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Is the cache full (the next new line evicts one)?
    pub fn is_full(&self) -> bool {
        self.lines.len() as u64 >= self.cfg.capacity_blocks
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The cached content of `lba`, touching the line.
    pub fn get(&mut self, lba: u64) -> (Lookup, Option<&BlockData>) {
        let stamp = self.clock + 1;
        match self.lines.get_mut(&lba) {
            Some(l) => {
                self.clock = stamp;
                l.stamp = stamp;
                self.lru.push_back((lba, stamp));
                let kind = if l.dirty {
                    Lookup::DirtyHit
                } else {
                    Lookup::CleanHit
                };
                (kind, Some(&l.data))
            }
            None => (Lookup::Miss, None),
        }
    }

    /// The first dirty line in `[lba, end)`.
    pub fn next_dirty(&self, lba: u64, end: u64) -> Option<u64> {
        if self.dirty == 0 || lba >= end {
            return None;
        }
        if end - lba <= self.lines.len() as u64 {
            return (lba..end).find(|l| self.is_dirty(*l));
        }
        self.lines
            .iter()
            .filter(|(k, l)| l.dirty && (lba..end).contains(*k))
            .map(|(k, _)| *k)
            .min()
    }

    /// The lines in `[lba, end)` (dirty ones only with `dirty_only`), in LBA
    /// order: probing each LBA when the range is shorter than the cache,
    /// else scanning every line.
    fn lines_in(&self, lba: u64, end: u64, dirty_only: bool) -> Vec<u64> {
        if lba >= end {
            return Vec::new();
        }
        let wanted = |l: &Line| l.dirty || !dirty_only;
        if end - lba <= self.lines.len() as u64 {
            return (lba..end)
                .filter(|k| self.lines.get(k).is_some_and(wanted))
                .collect();
        }
        let mut keys: Vec<u64> = self
            .lines
            .iter()
            .filter(|(k, l)| wanted(l) && (lba..end).contains(*k))
            .map(|(k, _)| *k)
            .collect();
        sort_lbas(&mut keys);
        keys
    }

    /// Make room in the tables for `n` more lines (up to the capacity), so
    /// a write of many blocks grows them once rather than doubling its
    /// way up. Lines are never iterated in table order where it would
    /// matter (flushes and power losses sort what they collect).
    pub fn reserve(&mut self, n: usize) {
        let room = (self.cfg.capacity_blocks as usize).saturating_sub(self.lines.len());
        let n = n.min(room);
        self.lines.reserve(n);
        self.lru.reserve(n);
        self.dirty_order.reserve(n);
    }

    /// Is there a dirty line for `lba`? (Without touching it.)
    pub fn is_dirty(&self, lba: u64) -> bool {
        self.lines.get(&lba).is_some_and(|l| l.dirty)
    }

    /// Store a write in the cache (dirty), evicting a line if full.
    pub fn write(&mut self, lba: u64, data: BlockData, medium: &mut Medium, rng: &mut Rng) {
        self.write_detected(lba, Detected::Zero, Some(data), medium, rng);
    }

    /// [`Cache::write`] from a classified block: a line that already owns an
    /// unshared raw buffer is overwritten in place (no allocation).
    pub fn write_block(&mut self, lba: u64, d: Detected<'_>, medium: &mut Medium, rng: &mut Rng) {
        self.write_detected(lba, d, None, medium, rng);
    }

    fn write_detected(
        &mut self,
        lba: u64,
        d: Detected<'_>,
        owned: Option<BlockData>,
        medium: &mut Medium,
        rng: &mut Rng,
    ) {
        let stamp = self.tick();
        if let Some(l) = self.lines.get_mut(&lba) {
            if !l.dirty {
                self.dirty += 1;
            }
            match owned {
                Some(data) => l.data = data,
                None => d.store_into(&mut l.data),
            }
            l.dirty = true;
            l.stamp = stamp;
            l.dirtied = stamp;
        } else {
            let data = owned.unwrap_or_else(|| d.to_data());
            self.make_room(medium, rng);
            self.insert_line(
                lba,
                Line {
                    data,
                    dirty: true,
                    stamp,
                    dirtied: stamp,
                },
            );
            self.dirty += 1;
        }
        self.lru.push_back((lba, stamp));
        self.dirty_order.push_back((lba, stamp));
        self.compact_queues();
    }

    /// A write that went straight to the medium (FUA or WCE=0): keep any
    /// cached copy coherent. `stale_bug` models a controller that forgets to.
    pub fn write_through(
        &mut self,
        lba: u64,
        data: &BlockData,
        medium: &mut Medium,
        stale_bug: bool,
    ) {
        medium.write_block(lba, data);
        if stale_bug {
            return;
        }
        if let Some(l) = self.lines.get_mut(&lba) {
            if l.dirty {
                self.dirty -= 1;
            }
            l.data = data.clone();
            l.dirty = false;
        }
    }

    /// [`Cache::write_through`] of `n` blocks from `lba` that continue
    /// `first` (one stream's consecutive tags, or zeros): one extent on the
    /// medium, each cached copy kept coherent.
    pub fn write_through_run(
        &mut self,
        lba: u64,
        n: u64,
        first: &BlockData,
        medium: &mut Medium,
        stale_bug: bool,
    ) {
        medium.write_run(lba, n, first);
        if stale_bug || self.lines.is_empty() {
            return;
        }
        for k in 0..n {
            if let Some(l) = self.lines.get_mut(&(lba + k)) {
                if l.dirty {
                    self.dirty -= 1;
                }
                l.data = crate::medium::continued(first, k);
                l.dirty = false;
            }
        }
    }

    /// Keep a block just read from the medium as a clean line, if there is
    /// room or a clean line to give up for it.
    pub fn fill(&mut self, lba: u64, data: BlockData, medium: &mut Medium, rng: &mut Rng) {
        if self.lines.contains_key(&lba) {
            return;
        }
        let stamp = self.tick();
        self.make_room(medium, rng);
        self.insert_line(
            lba,
            Line {
                data,
                dirty: false,
                stamp,
                dirtied: 0,
            },
        );
        self.lru.push_back((lba, stamp));
        self.compact_queues();
    }

    /// Drop the cached copy of `lba` (after UNMAP or WRITE SAME): a dirty
    /// line must not be destaged over the newer medium content later.
    pub fn invalidate(&mut self, lba: u64) {
        if let Some(l) = self.remove_line(lba) {
            if l.dirty {
                self.dirty -= 1;
            }
        }
    }

    /// Drop every cached line in `[lba, end)`.
    pub fn invalidate_range(&mut self, lba: u64, end: u64) {
        if self.lines.is_empty() {
            return;
        }
        for k in self.lines_in(lba, end, false) {
            self.invalidate(k);
        }
    }

    fn insert_line(&mut self, lba: u64, line: Line) {
        self.lines.insert(lba, line);
        if let Some(o) = &mut self.order {
            o.insert(lba);
        }
    }

    fn remove_line(&mut self, lba: u64) -> Option<Line> {
        let l = self.lines.remove(&lba)?;
        if let Some(o) = &mut self.order {
            o.remove(&lba);
        }
        Some(l)
    }

    /// Write every dirty line in `[lba, end)` to the medium (SYNCHRONIZE
    /// CACHE). Returns how many lines were written.
    pub fn flush(&mut self, lba: u64, end: u64, medium: &mut Medium) -> u64 {
        if self.dirty == 0 || lba >= end {
            return 0;
        }
        let keys = self.lines_in(lba, end, true);
        write_back(&self.lines, &keys, medium);
        for k in &keys {
            if let Some(l) = self.lines.get_mut(k) {
                l.dirty = false;
            }
        }
        let n = keys.len() as u64;
        self.dirty -= n;
        n
    }

    /// Background write-back after a write command, by policy.
    pub fn destage(&mut self, medium: &mut Medium, rng: &mut Rng) -> u64 {
        match self.cfg.destage {
            Destage::None => 0,
            Destage::Lru => {
                let mut n = 0;
                while self.dirty > self.cfg.capacity_blocks / 2 {
                    let Some((lba, dirtied)) = self.dirty_order.pop_front() else {
                        break;
                    };
                    if self.destage_line(lba, dirtied, medium) {
                        n += 1;
                    }
                }
                n
            }
            Destage::Random => {
                if self.dirty == 0 || rng.below(4) != 0 {
                    return 0;
                }
                let i = rng.below(self.dirty_order.len() as u64) as usize;
                match self.dirty_order.get(i).copied() {
                    Some((lba, dirtied)) => u64::from(self.destage_line(lba, dirtied, medium)),
                    None => 0,
                }
            }
        }
    }

    fn destage_line(&mut self, lba: u64, dirtied: u64, medium: &mut Medium) -> bool {
        match self.lines.get_mut(&lba) {
            Some(l) if l.dirty && l.dirtied == dirtied => {
                medium.write_block(lba, &l.data);
                l.dirty = false;
                self.dirty -= 1;
                true
            }
            _ => false,
        }
    }

    /// Power failure: each dirty line independently reaches the medium or is
    /// lost, as the seed decides; the cache comes back empty. Returns how
    /// many dirty lines were lost.
    pub fn power_loss(&mut self, medium: &mut Medium, rng: &mut Rng) -> u64 {
        let mut lost = 0;
        // In LBA order: the seed's coins fall on the same lines whatever
        // the hash did.
        let mut dirty: Vec<u64> = (self.lines.iter())
            .filter(|(_, l)| l.dirty)
            .map(|(k, _)| *k)
            .collect();
        sort_lbas(&mut dirty);
        // Survivors keep their LBA order, so runs of them go back whole.
        dirty.retain(|_| {
            let keep = rng.coin();
            lost += u64::from(!keep);
            keep
        });
        write_back(&self.lines, &dirty, medium);
        self.lines.clear();
        if let Some(o) = &mut self.order {
            o.clear();
        }
        self.lru.clear();
        self.dirty_order.clear();
        self.dirty = 0;
        lost
    }

    fn make_room(&mut self, medium: &mut Medium, rng: &mut Rng) {
        while self.lines.len() as u64 >= self.cfg.capacity_blocks {
            let victim = match self.cfg.destage {
                Destage::Random => self.random_key(rng),
                Destage::None | Destage::Lru => self.lru_key(),
            };
            let Some(lba) = victim else { return };
            if let Some(l) = self.remove_line(lba) {
                if l.dirty {
                    medium.write_block(lba, &l.data);
                    self.dirty -= 1;
                }
            }
        }
    }

    fn lru_key(&mut self) -> Option<u64> {
        while let Some((lba, stamp)) = self.lru.pop_front() {
            if self.lines.get(&lba).is_some_and(|l| l.stamp == stamp) {
                return Some(lba);
            }
        }
        self.lines.keys().min().copied()
    }

    fn random_key(&mut self, rng: &mut Rng) -> Option<u64> {
        let order = self.order.as_ref()?;
        let first = *order.first()?;
        let last = *order.last()?;
        let pick = first + rng.below(last - first + 1);
        order.range(pick..).next().copied()
    }

    /// Rebuild the lazy queues when stale entries dominate, so their memory
    /// stays proportional to the cache.
    fn compact_queues(&mut self) {
        let limit = 4 * self.lines.len() + 64;
        if self.lru.len() > limit {
            let lines = &self.lines;
            self.lru
                .retain(|(lba, s)| lines.get(lba).is_some_and(|l| l.stamp == *s));
        }
        if self.dirty_order.len() > limit {
            let lines = &self.lines;
            self.dirty_order
                .retain(|(lba, s)| lines.get(lba).is_some_and(|l| l.dirty && l.dirtied == *s));
        }
    }
}

/// Sort LBAs collected from the line table. A power loss sorts every
/// dirty line, thousands after a campaign's large writes, and a
/// comparison sort of them was a tenth of a campaign's time: a
/// least-significant-digit radix sort over the bytes the largest LBA
/// uses (three passes on a 64 MiB disk) gives the same order in linear
/// time. Short lists keep the comparison sort.
fn sort_lbas(v: &mut Vec<u64>) {
    const RADIX_FROM: usize = 64;
    if v.len() < RADIX_FROM {
        v.sort_unstable();
        return;
    }
    let max = v.iter().copied().max().unwrap_or(0);
    let bytes = (64 - max.leading_zeros()).div_ceil(8) as usize;
    let mut other = vec![0u64; v.len()];
    for b in 0..bytes {
        let shift = 8 * b;
        let mut count = [0usize; 256];
        for x in v.iter() {
            count[((x >> shift) & 0xff) as usize] += 1;
        }
        let mut at = 0usize;
        for c in count.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for x in v.iter() {
            let d = ((x >> shift) & 0xff) as usize;
            other[count[d]] = *x;
            count[d] += 1;
        }
        std::mem::swap(v, &mut other);
    }
}

/// Write the lines at `lbas` (ascending, each present) to the medium: a
/// stretch of consecutive lines that continue one another (one stream's
/// tags, or zeros) as one run, the rest block by block. The medium ends
/// up holding exactly what writing them one by one would leave.
fn write_back(lines: &HashMap<u64, Line, BuildFastHasher>, lbas: &[u64], medium: &mut Medium) {
    let mut i = 0;
    while i < lbas.len() {
        let (l0, d0) = (lbas[i], &lines[&lbas[i]].data);
        let mut n = 1usize;
        while i + n < lbas.len()
            && lbas[i + n] == l0.wrapping_add(n as u64)
            && crate::medium::continues_run(d0, n as u64, &lines[&lbas[i + n]].data)
        {
            n += 1;
        }
        medium.write_run(l0, n as u64, d0);
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The radix sort orders LBAs as a comparison sort does, short
        /// lists and long, small LBAs and ones near 2^64.
        #[test]
        fn lbas_sort_as_a_comparison_sort_would(
            mut v in proptest::collection::vec(
                proptest::prop_oneof![0u64..300_000, proptest::prelude::any::<u64>()],
                0..700,
            )
        ) {
            let mut want = v.clone();
            want.sort_unstable();
            sort_lbas(&mut v);
            proptest::prop_assert_eq!(v, want);
        }
    }

    fn raw(v: u8) -> BlockData {
        BlockData::Raw(vec![v; 512].into())
    }

    fn cache(cap: u64, destage: Destage) -> (Cache, Medium, Rng) {
        (
            Cache::new(CacheConfig {
                capacity_blocks: cap,
                destage,
                wce_default: true,
            }),
            Medium::new(512),
            Rng::new(1),
        )
    }

    #[test]
    fn writes_stay_volatile_until_flushed() {
        let (mut c, mut m, mut r) = cache(8, Destage::None);
        c.write(3, raw(1), &mut m, &mut r);
        assert_eq!(m.block(3), BlockData::Zero);
        assert_eq!(c.get(3), (Lookup::DirtyHit, Some(&raw(1))));
        assert_eq!(c.flush(0, 3, &mut m), 0, "range excludes the line");
        assert_eq!(c.flush(3, 4, &mut m), 1);
        assert_eq!(m.block(3), raw(1));
        assert_eq!(c.dirty_count(), 0);
    }

    #[test]
    fn a_full_cache_writes_back_its_least_recently_used_line() {
        let (mut c, mut m, mut r) = cache(2, Destage::None);
        c.write(1, raw(1), &mut m, &mut r);
        c.write(2, raw(2), &mut m, &mut r);
        c.get(1);
        c.write(3, raw(3), &mut m, &mut r);
        assert_eq!(m.block(2), raw(2), "line 2 was least recently used");
        assert_eq!(m.block(1), BlockData::Zero);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn power_loss_keeps_a_seeded_subset_and_empties_the_cache() {
        let run = |seed| {
            let (mut c, mut m, _) = cache(64, Destage::None);
            let mut r = Rng::new(seed);
            for lba in 0..64 {
                c.write(lba, raw(lba as u8 + 1), &mut m, &mut r);
            }
            let lost = c.power_loss(&mut m, &mut r);
            assert!(c.is_empty());
            (
                lost,
                (0..64)
                    .map(|l| m.block(l) != BlockData::Zero)
                    .collect::<Vec<_>>(),
            )
        };
        let (lost, kept) = run(7);
        assert!(lost > 0 && lost < 64, "lost {lost}");
        assert_eq!(kept.iter().filter(|k| !**k).count() as u64, lost);
        assert_eq!(run(7), (lost, kept), "same seed, same survivors");
    }

    #[test]
    fn ranged_operations_agree_whether_they_probe_or_scan() {
        // Four lines: ranges of up to four LBAs are probed, longer ones
        // scanned; both must find the same lines.
        let (mut c, mut m, mut r) = cache(16, Destage::None);
        for lba in [3, 9, 10, 40] {
            c.write(lba, raw(lba as u8), &mut m, &mut r);
        }
        c.fill(5, raw(5), &mut m, &mut r);
        assert_eq!(c.next_dirty(4, 8), None);
        assert_eq!(c.next_dirty(8, 12), Some(9));
        assert_eq!(c.next_dirty(4, 100), Some(9));
        assert_eq!(c.next_dirty(0, u64::MAX), Some(3));
        assert_eq!(c.flush(9, 11, &mut m), 2, "probed");
        assert_eq!(c.flush(0, 1000, &mut m), 2, "scanned");
        assert_eq!(c.dirty_count(), 0);
        assert_eq!(m.block(40), raw(40));
        c.invalidate_range(0, 6);
        assert_eq!(c.len(), 3, "lines 3 and 5 dropped");
        c.invalidate_range(6, 1 << 40);
        assert!(c.is_empty());
    }

    #[test]
    fn random_eviction_takes_the_first_line_at_or_after_a_random_lba() {
        let (mut c, mut m, mut r) = cache(3, Destage::Random);
        for lba in [100, 200, 300, 400, 500] {
            c.write(lba, raw(1), &mut m, &mut r);
        }
        assert_eq!(c.len(), 3);
        let evicted = [100u64, 200, 300, 400, 500]
            .iter()
            .filter(|l| m.block(**l) == raw(1))
            .count();
        assert_eq!(evicted, 2, "each eviction wrote its dirty line back");
    }

    #[test]
    fn lru_destage_keeps_at_most_half_dirty() {
        let (mut c, mut m, mut r) = cache(8, Destage::Lru);
        for lba in 0..8 {
            c.write(lba, raw(1), &mut m, &mut r);
            c.destage(&mut m, &mut r);
        }
        assert_eq!(c.dirty_count(), 4);
        assert_eq!(m.block(0), raw(1), "oldest written first");
    }

    #[test]
    fn write_through_updates_the_cached_copy_unless_the_bug_is_on() {
        let (mut c, mut m, mut r) = cache(8, Destage::None);
        c.fill(5, raw(1), &mut m, &mut r);
        c.write_through(5, &raw(2), &mut m, false);
        assert_eq!(c.get(5).1, Some(&raw(2)));
        c.write_through(5, &raw(3), &mut m, true);
        assert_eq!(c.get(5).1, Some(&raw(2)), "stale line kept");
        assert_eq!(m.block(5), raw(3));
    }
}
