//! The controller's write-back cache: volatile while write caching is
//! enabled (caching mode page WCE=1), written back by a destage policy, and
//! partly lost on power failure.
//!
//! SBC-3 4.10: with WCE=1 the device may report a write complete once the
//! data is in cache; only SYNCHRONIZE CACHE, a FUA write, or its own destage
//! puts it on the medium. A power loss therefore leaves any subset of the
//! dirty lines on the medium. [`Cache::power_loss`] draws it from the seed
//! unit by unit, as a controller destages ([`Fate`]): every subset stays
//! reachable.

use crate::content::{BlockData, Detected};
use crate::medium::{continued, continues_run, Medium};
use crate::rng::Rng;
use extent_map::ExtentMap;
use std::collections::VecDeque;
use std::num::NonZeroU64;

mod extent_map;

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

/// What the lines of an [`Extent`] hold.
#[derive(Debug, Clone)]
enum Content {
    /// Line `k` holds [`continued`]`(first, k)`.
    Run(BlockData),
    /// Each line holds what the medium holds at its LBA: clean lines a
    /// read kept. A read after a power loss can meet a medium cut into
    /// short extents (a unit written back line by line); its fill stays
    /// one extent however many medium extents it covers. Sound because
    /// the medium changes under a line only through that line (its own
    /// write-back, a write-through that updates it) or after it is
    /// invalidated (UNMAP, WRITE SAME); the one exception, a
    /// write-through with the stale-cache bug, first pins the old content
    /// ([`Cache::pin_medium_lines`]).
    Medium,
}

/// A run of consecutive lines that a command stored or touched together:
/// line `k` of it holds its `content`, was last touched at `stamp + k`
/// and, when dirty, dirtied at `dirtied + k`.
///
/// A command visits its blocks in LBA order and the clock ticks once per
/// block, so the lines one command touches carry consecutive stamps in
/// LBA order: a 2,000-block read or write is one extent, and writing,
/// touching, flushing or losing it costs one map update instead of one
/// per block, while every line keeps the stamp it would have had alone.
#[derive(Debug, Clone)]
struct Extent {
    /// Lines in the run.
    n: u64,
    /// Always [`Content::Run`] while dirty.
    content: Content,
    /// Last touch of the first line.
    stamp: u64,
    /// While dirty, the dirtying write of the first line (stamps start
    /// at 1). No flag beside it: at 56 bytes rather than 64, a full
    /// cache's 16k one-line extents make a hash table that fits the
    /// caches a random workload misses in (measured: padding to 96 bytes
    /// cost 10% of the random reads' rate).
    dirtied: Option<NonZeroU64>,
}

const _: () = assert!(std::mem::size_of::<Extent>() <= 56);

impl Extent {
    /// The lines from `k` on.
    fn tail(&self, k: u64) -> Extent {
        Extent {
            n: self.n - k,
            content: match &self.content {
                Content::Run(first) => Content::Run(continued(first, k)),
                Content::Medium => Content::Medium,
            },
            stamp: self.stamp + k,
            dirtied: self.dirtied_from(k),
        }
    }

    fn dirty(&self) -> bool {
        self.dirtied.is_some()
    }

    /// What `dirtied` is for the lines from `k` on.
    fn dirtied_from(&self, k: u64) -> Option<NonZeroU64> {
        self.dirtied.map(|d| d.saturating_add(k))
    }

    /// Whether `next`, starting where this extent ends, describes lines
    /// this extent could hold itself: same state, content, stamps and
    /// dirtying writes continuing line by line.
    fn joins(&self, next: &Extent) -> bool {
        next.dirtied == self.dirtied_from(self.n)
            && next.stamp == self.stamp + self.n
            && match (&self.content, &next.content) {
                (Content::Run(a), Content::Run(b)) => continues_run(a, self.n, b),
                (Content::Medium, Content::Medium) => true,
                _ => false,
            }
    }

    /// The first line's content, unless it lives on the medium (never
    /// so for a dirty extent).
    fn first(&self) -> Option<&BlockData> {
        match &self.content {
            Content::Run(first) => Some(first),
            Content::Medium => None,
        }
    }

    /// Hand `emit` the content of lines `[lba, end)`, this extent starting
    /// at `start`.
    fn emit(
        &self,
        start: u64,
        lba: u64,
        end: u64,
        medium: &Medium,
        emit: &mut impl FnMut(&BlockData, u64),
    ) {
        match &self.content {
            Content::Run(first) => emit(&continued(first, lba - start), end - lba),
            Content::Medium => read_medium(medium, lba, end, emit),
        }
    }
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

/// How a read of many blocks used the cache (see [`Cache::read_run`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadUse {
    /// Some block was served from a line.
    pub hit: bool,
    /// Some block was kept as a line while the cache was full.
    pub evicted: bool,
}

/// LRU entries tolerated per extent, and beyond that, before the queue
/// is rebuilt. When that happens is not observable, so tests rebuild as
/// soon as an entry is stale, to exercise it.
const LRU_SLACK: (usize, usize) = if cfg!(test) { (1, 0) } else { (4, 64) };

/// A write-back cache in front of one [`Medium`].
///
/// Lines are held as extents of consecutive lines (`Extent`) in LBA
/// order, so a command costs per run of blocks rather than per block,
/// and flushes and power losses walk the dirty lines in LBA order without
/// sorting. Eviction takes the least recently touched line (the first
/// live line of the `lru` queue); oldest-first destage the first line of
/// the dirty extent with the oldest dirtying write. Every outcome is the
/// one a cache of single lines would give: extents are a representation,
/// never a policy.
#[derive(Debug, Clone)]
pub struct Cache {
    cfg: CacheConfig,
    /// First LBA -> extent; extents never overlap.
    lines: ExtentMap,
    /// (first LBA, stamp) per touch of consecutive lines, in stamp order:
    /// line `lba + k` was touched at `stamp + k`, for every stamp up to
    /// the next entry's (or the clock). Every tick is some line's touch,
    /// so an entry's stamps are its touch's, plus after a rebuild stamps
    /// no line holds (no line can match them: stamps are never reused).
    /// A line touched again or dropped leaves its old entry stale (a
    /// line is live in exactly the entry holding its stamp); eviction
    /// skips stale heads, an extent at a time, so the first live line is
    /// the least recently used. A queue push per touch instead of an
    /// ordered index kept up to date on every extent change, and 16
    /// bytes an entry: random single-block traffic pushes one a command.
    lru: VecDeque<(u64, u64)>,
    /// The line after the one touched last, and the stamp it would have
    /// had had the same touch gone on: where a new touch continues it.
    last_touch: (u64, u64),
    /// Lines held.
    held: u64,
    dirty: u64,
    clock: u64,
    /// For [`Destage::Random`] only: (lba, dirtied) per line write, in
    /// write order, stale entries included until a compaction drops them.
    /// The policy picks an entry by index among all of them, so the queue
    /// (stale entries, compaction points) is kept line by line exactly,
    /// and writes and fills under it go line by line.
    queue: Option<VecDeque<(u64, u64)>>,
    /// What a flush or power loss writes back, kept empty between them
    /// for its allocation (a power loss after a large write pushes a
    /// run every few lines).
    back: WriteBack,
    /// Scratch for [`Cache::power_loss`], kept for its capacity.
    unit: DestageUnit,
}

impl Cache {
    /// An empty cache.
    pub fn new(cfg: CacheConfig) -> Self {
        Cache {
            cfg,
            // The random policy's victim search asks for order on every
            // eviction: it keeps every extent in the B-tree.
            lines: ExtentMap::new(cfg.destage != Destage::Random),
            lru: VecDeque::new(),
            last_touch: (0, 0),
            held: 0,
            dirty: 0,
            clock: 0,
            queue: (cfg.destage == Destage::Random).then(VecDeque::new),
            back: WriteBack::default(),
            unit: DestageUnit::default(),
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
        self.held as usize
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Is the cache full (the next new line evicts one)?
    pub fn is_full(&self) -> bool {
        self.held >= self.cfg.capacity_blocks
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Free lines before the next new one evicts.
    fn room(&self) -> u64 {
        self.cfg.capacity_blocks.saturating_sub(self.held)
    }

    /// The extent holding `lba`, with its first LBA.
    fn containing(&self, lba: u64) -> Option<(u64, &Extent)> {
        self.lines.containing(lba)
    }

    /// Where the lines missing from `pos` (not held) end, up to `end`:
    /// a one-line range needs no lookup.
    fn gap_end(&self, pos: u64, end: u64) -> u64 {
        if end - pos == 1 {
            end
        } else {
            self.lines.next_start(pos, end)
        }
    }

    /// Store an extent, merged with either neighbour it joins.
    fn put(&mut self, mut start: u64, mut ext: Extent) {
        let end = start + ext.n;
        let right = (self.lines.starting_at(end)).is_some_and(|r| ext.joins(r));
        let left = (start.checked_sub(1))
            .and_then(|l| self.containing(l))
            .filter(|(k, l)| k + l.n == start && l.joins(&ext))
            .map(|(k, _)| k);
        if let Some(r) = right.then(|| self.take(end)).flatten() {
            ext.n += r.n;
        }
        if let Some(l) = left.and_then(|k| self.take(k)) {
            ext = Extent {
                n: l.n + ext.n,
                ..l
            };
            start -= l.n;
        }
        self.insert(start, ext);
    }

    /// Store an extent as it is.
    fn insert(&mut self, start: u64, ext: Extent) {
        self.lines.insert(start, ext);
    }

    fn take(&mut self, start: u64) -> Option<Extent> {
        self.lines.remove(start)
    }

    /// Store an extent whose stamps were just taken, and queue the touch.
    /// No extent on the right can continue stamps this new, and one on
    /// the left only if it holds the line touched just before, so most
    /// touches skip the neighbour search (merging is never needed for
    /// correctness, only to keep the map small).
    fn put_touched(&mut self, start: u64, ext: Extent) {
        let (stamp, n) = (ext.stamp, ext.n);
        if self.last_touch == (start, stamp) {
            self.put(start, ext);
        } else {
            self.insert(start, ext);
        }
        self.last_touch = (start + n, stamp + n);
        self.touched(start, stamp);
    }

    /// Lines from `lba` were just touched at stamps from `stamp` (and are
    /// stored).
    fn touched(&mut self, lba: u64, stamp: u64) {
        if self.cfg.destage == Destage::Random {
            // Its victims are chosen by LBA, never by age.
            return;
        }
        self.queue_touch(lba, stamp);
        if self.lru.len() > LRU_SLACK.0 * self.lines.len() + LRU_SLACK.1 {
            // Stale entries dominate: rebuild from the extents, whose
            // stamp ranges never overlap.
            let mut live: Vec<(u64, u64)> =
                (self.lines.iter()).map(|(s, e)| (e.stamp, s)).collect();
            live.sort_unstable();
            self.lru.clear();
            for (stamp, lba) in live {
                self.queue_touch(lba, stamp);
            }
        }
    }

    /// Queue a touch from `lba` at `stamp`, newer than any queued, unless
    /// the last entry's lines run on to it.
    fn queue_touch(&mut self, lba: u64, stamp: u64) {
        match self.lru.back() {
            Some(&(l, s)) if l.checked_add(stamp - s) == Some(lba) => {}
            _ => self.lru.push_back((lba, stamp)),
        }
    }

    /// Lines the LRU queue's head entry covers: up to the next entry's
    /// stamp, or through the clock.
    fn head_lines(&self) -> u64 {
        match (self.lru.front(), self.lru.get(1)) {
            (Some(&(_, s)), Some(&(_, next))) => next - s,
            (Some(&(_, s)), None) => self.clock + 1 - s,
            _ => 0,
        }
    }

    /// Take the least recently used line out of the map (its LBA and
    /// itself), and off the queue: the first live line of the first entry.
    fn take_lru(&mut self) -> Option<(u64, Extent)> {
        while let Some(&(lba, stamp)) = self.lru.front() {
            // Lines of the head entry that are stale: through the end of
            // the extent holding `lba` (its stamps differ from the entry's
            // by the same amount on every line), or up to the next extent.
            // A head usually starts its extent, which one removal finds.
            let stale = match self.take(lba) {
                Some(mut line) if line.stamp == stamp => {
                    if line.n > 1 {
                        self.insert(lba + 1, line.tail(1));
                        line.n = 1;
                    }
                    self.pop_lru(1);
                    return Some((lba, line));
                }
                Some(e) => {
                    let k = e.n;
                    self.insert(lba, e);
                    k
                }
                None => match self.containing(lba) {
                    Some((s, e)) if e.stamp + (lba - s) == stamp => {
                        self.pop_lru(1);
                        return Some((lba, self.cut(s, lba, lba + 1)));
                    }
                    Some((s, e)) => s + e.n - lba,
                    None => {
                        self.lines
                            .next_start(lba, lba.saturating_add(self.head_lines()))
                            - lba
                    }
                },
            };
            self.pop_lru(stale);
        }
        // Every line has a live entry, so this is unreachable with lines
        // held; the lowest line keeps the choice defined regardless.
        let s = self.lines.first_start()?;
        Some((s, self.cut(s, s, s + 1)))
    }

    /// Drop the first `k` lines of the LRU queue's head entry.
    fn pop_lru(&mut self, k: u64) {
        let m = self.head_lines();
        if let Some(h) = self.lru.front_mut() {
            if k >= m {
                self.lru.pop_front();
            } else {
                *h = (h.0 + k, h.1 + k);
            }
        }
    }

    /// Make `at` an extent boundary.
    fn split_at(&mut self, at: u64) {
        let Some((s, e)) = self.containing(at) else {
            return;
        };
        if s == at {
            return;
        }
        let right = e.tail(at - s);
        self.lines.truncate(s, at - s);
        self.insert(at, right);
    }

    /// Take the lines `[lba, end)` of the extent at `s` (which holds them)
    /// out of the map as their own extent, leaving the rest of it.
    fn cut(&mut self, s: u64, lba: u64, end: u64) -> Extent {
        let mut e = self.take(s).expect("cut inside an extent");
        if s < lba {
            let right = e.tail(lba - s);
            e.n = lba - s;
            self.insert(s, e);
            e = right;
        }
        if end - lba < e.n {
            let rest = e.tail(end - lba);
            e.n = end - lba;
            self.insert(end, rest);
        }
        e
    }

    /// The cached content of `lba`, touching the line.
    pub fn get(&mut self, lba: u64, medium: &Medium) -> (Lookup, Option<BlockData>) {
        let Some((s, e)) = self.containing(lba) else {
            return (Lookup::Miss, None);
        };
        let data = match &e.content {
            Content::Run(first) => continued(first, lba - s),
            Content::Medium => medium.block(lba),
        };
        let mut line = self.cut(s, lba, lba + 1);
        let stamp = self.tick();
        line.stamp = stamp;
        let kind = if line.dirty() {
            Lookup::DirtyHit
        } else {
            Lookup::CleanHit
        };
        self.put_touched(lba, line);
        (kind, Some(data))
    }

    /// The first dirty line in `[lba, end)`.
    pub fn next_dirty(&self, lba: u64, end: u64) -> Option<u64> {
        if self.dirty == 0 || lba >= end {
            return None;
        }
        if self.containing(lba).is_some_and(|(_, e)| e.dirty()) {
            return Some(lba);
        }
        self.lines.first_in(lba + 1, end, |e| e.dirty())
    }

    /// How many dirty lines follow one another from `lba` (up to
    /// `limit`): blocks only the cache holds, one GET LBA STATUS extent.
    pub fn dirty_run(&self, lba: u64, limit: u64) -> u64 {
        let end = lba.saturating_add(limit);
        let mut pos = lba;
        while pos < end {
            match self.containing(pos) {
                Some((s, e)) if e.dirty() => pos = s + e.n,
                _ => break,
            }
        }
        pos.min(end) - lba
    }

    /// Is there a dirty line for `lba`? (Without touching it.)
    pub fn is_dirty(&self, lba: u64) -> bool {
        self.containing(lba).is_some_and(|(_, e)| e.dirty())
    }

    /// Store a write in the cache (dirty), evicting a line if full.
    /// Returns whether the cache was full and the block's line not dirty
    /// (what the disk reports as an eviction, for coverage).
    pub fn write(&mut self, lba: u64, data: BlockData, medium: &mut Medium, rng: &mut Rng) -> bool {
        self.write_detected(lba, Detected::Zero, Some(data), medium, rng)
    }

    /// [`Cache::write`] from a classified block: a line that already owns an
    /// unshared raw buffer is overwritten in place (no allocation).
    pub fn write_block(
        &mut self,
        lba: u64,
        d: Detected<'_>,
        medium: &mut Medium,
        rng: &mut Rng,
    ) -> bool {
        self.write_detected(lba, d, None, medium, rng)
    }

    fn write_detected(
        &mut self,
        lba: u64,
        d: Detected<'_>,
        owned: Option<BlockData>,
        medium: &mut Medium,
        rng: &mut Rng,
    ) -> bool {
        let stamp = self.tick();
        let found = self.containing(lba).map(|(s, e)| (s, e.dirty()));
        let evicted = self.is_full() && !found.is_some_and(|(_, dirty)| dirty);
        if let Some((s, _)) = found {
            let mut line = self.cut(s, lba, lba + 1);
            if !line.dirty() {
                self.dirty += 1;
            }
            match (owned, &mut line.content) {
                (Some(data), c) => *c = Content::Run(data),
                (None, Content::Run(first)) => d.store_into(first),
                (None, c) => *c = Content::Run(d.to_data()),
            }
            line.stamp = stamp;
            line.dirtied = NonZeroU64::new(stamp);
            self.put_touched(lba, line);
        } else {
            let first = owned.unwrap_or_else(|| d.to_data());
            self.make_room(medium, rng);
            self.put_touched(
                lba,
                Extent {
                    n: 1,
                    content: Content::Run(first),
                    stamp,
                    dirtied: NonZeroU64::new(stamp),
                },
            );
            self.held += 1;
            self.dirty += 1;
        }
        if let Some(q) = &mut self.queue {
            q.push_back((lba, stamp));
        }
        self.compact_queue();
        evicted
    }

    /// Store `n` written blocks from `lba` that continue `first` (one
    /// stream's consecutive tags, or zeros) as dirty lines: what `n`
    /// [`Cache::write`]s in LBA order leave, a stretch of lines at a time
    /// while no line has to be evicted. Returns whether some block found
    /// the cache full and its own line not dirty (what a block-by-block
    /// writer reports as an eviction).
    pub fn write_run(
        &mut self,
        lba: u64,
        n: u64,
        first: &BlockData,
        medium: &mut Medium,
        rng: &mut Rng,
    ) -> bool {
        let end = lba + n;
        let mut evicted = false;
        let mut pos = lba;
        while pos < end {
            let data = continued(first, pos - lba);
            let cached = self.containing(pos).map(|(s, e)| (s, s + e.n, e.dirty()));
            if self.queue.is_some() || (cached.is_none() && self.room() == 0) {
                // A new line in a full cache evicts one, which may be a
                // line further on in this run: one line at a time.
                evicted |= self.write(pos, data, medium, rng);
                pos += 1;
                continue;
            }
            let seg_end = match cached {
                Some((s, e_end, dirty)) => {
                    evicted |= self.is_full() && !dirty;
                    let seg_end = e_end.min(end);
                    if !self.cut(s, pos, seg_end).dirty() {
                        self.dirty += seg_end - pos;
                    }
                    seg_end
                }
                None => {
                    let seg_end = self.gap_end(pos, end).min(pos + self.room());
                    self.held += seg_end - pos;
                    self.dirty += seg_end - pos;
                    seg_end
                }
            };
            let stamp = self.clock + 1;
            self.clock += seg_end - pos;
            self.put_touched(
                pos,
                Extent {
                    n: seg_end - pos,
                    content: Content::Run(data),
                    stamp,
                    dirtied: NonZeroU64::new(stamp),
                },
            );
            pos = seg_end;
        }
        evicted
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
        if stale_bug {
            self.pin_medium_lines(lba, 1, medium);
            medium.write_block(lba, data);
            return;
        }
        medium.write_block(lba, data);
        self.overwrite_cached(lba, 1, data);
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
        if stale_bug {
            self.pin_medium_lines(lba, n, medium);
            medium.write_run(lba, n, first);
            return;
        }
        medium.write_run(lba, n, first);
        if self.is_empty() {
            return;
        }
        self.overwrite_cached(lba, n, first);
    }

    /// The cached lines in `[lba, lba + n)` now hold what the medium was
    /// just given (blocks continuing `first`) and are clean; their stamps
    /// stay (a write-through is no use of the line).
    fn overwrite_cached(&mut self, lba: u64, n: u64, first: &BlockData) {
        let end = lba + n;
        let mut pos = lba;
        while pos < end {
            let (s, seg_end) = match self.containing(pos) {
                Some((s, e)) => (s, (s + e.n).min(end)),
                None => {
                    pos = self.lines.next_start(pos, end);
                    continue;
                }
            };
            let mut part = self.cut(s, pos, seg_end);
            if part.dirty() {
                self.dirty -= part.n;
            }
            part.content = Content::Run(continued(first, pos - lba));
            part.dirtied = None;
            self.put(pos, part);
            pos = seg_end;
        }
    }

    /// Before the medium changes under lines `[lba, lba + n)` without
    /// them (the stale-cache bug), give the lines that mirror the medium
    /// their content as it still is.
    fn pin_medium_lines(&mut self, lba: u64, n: u64, medium: &Medium) {
        let end = lba + n;
        let mut pos = lba;
        while pos < end {
            let (s, seg_end) = match self.containing(pos) {
                Some((s, e)) if matches!(e.content, Content::Medium) => (s, (s + e.n).min(end)),
                Some((s, e)) => {
                    pos = s + e.n;
                    continue;
                }
                None => {
                    pos = self.lines.next_start(pos, end);
                    continue;
                }
            };
            let part = self.cut(s, pos, seg_end);
            let mut at = pos;
            read_medium(medium, pos, seg_end, &mut |first, run| {
                let k = at - pos;
                self.put(
                    at,
                    Extent {
                        n: run,
                        content: Content::Run(first.clone()),
                        stamp: part.stamp + k,
                        dirtied: part.dirtied_from(k),
                    },
                );
                at += run;
            });
            pos = seg_end;
        }
    }

    /// Keep a block just read from the medium as a clean line, if there is
    /// room or a clean line to give up for it.
    pub fn fill(&mut self, lba: u64, data: BlockData, medium: &mut Medium, rng: &mut Rng) {
        if self.containing(lba).is_none() {
            self.fill_absent(lba, data, medium, rng);
        }
    }

    /// [`Cache::fill`] of a line known not to be held.
    fn fill_absent(&mut self, lba: u64, data: BlockData, medium: &mut Medium, rng: &mut Rng) {
        let stamp = self.tick();
        self.make_room(medium, rng);
        self.put_touched(
            lba,
            Extent {
                n: 1,
                content: Content::Run(data),
                stamp,
                dirtied: None,
            },
        );
        self.held += 1;
        self.compact_queue();
    }

    /// Read `n` blocks from `lba` through the cache, handing `emit` their
    /// content in LBA order as runs (`(first, count)`: `count` blocks
    /// continuing `first`). Each block is what a block-by-block reader
    /// gets: a cached line (touched) unless RCD=1 and the line is clean
    /// (SBC-3 6.4.5: read from the medium, except data only the cache
    /// holds), else the medium, kept as a clean line unless RCD=1.
    pub fn read_run(
        &mut self,
        lba: u64,
        n: u64,
        rcd: bool,
        medium: &mut Medium,
        rng: &mut Rng,
        mut emit: impl FnMut(&BlockData, u64),
    ) -> ReadUse {
        let end = lba + n;
        let mut used = ReadUse::default();
        let mut pos = lba;
        while pos < end {
            let cached = self.containing(pos).map(|(s, e)| (s, s + e.n, e.dirty()));
            if let Some((s, e_end, dirty)) = cached {
                let seg_end = e_end.min(end);
                if rcd && !dirty {
                    read_medium(medium, pos, seg_end, &mut emit);
                    pos = seg_end;
                    continue;
                }
                let mut part = self.cut(s, pos, seg_end);
                part.emit(pos, pos, seg_end, medium, &mut emit);
                part.stamp = self.clock + 1;
                self.clock += part.n;
                self.put_touched(pos, part);
                used.hit = true;
                pos = seg_end;
                continue;
            }
            if !rcd && (self.queue.is_some() || self.room() == 0) {
                // Keeping this block evicts a line (whose write-back may
                // change the medium further on), or the random policy's
                // queue must see fills one by one.
                let (d, _) = medium.block_run(pos);
                emit(&d, 1);
                used.evicted |= self.is_full();
                self.fill_absent(pos, d, medium, rng);
                pos += 1;
                continue;
            }
            let gap_end = self.gap_end(pos, end);
            if rcd {
                read_medium(medium, pos, gap_end, &mut emit);
                pos = gap_end;
                continue;
            }
            let fill_end = gap_end.min(pos + self.room());
            let n = fill_end - pos;
            read_medium(medium, pos, fill_end, &mut emit);
            let stamp = self.clock + 1;
            self.clock += n;
            self.held += n;
            self.put_touched(
                pos,
                Extent {
                    n,
                    content: Content::Medium,
                    stamp,
                    dirtied: None,
                },
            );
            pos = fill_end;
        }
        used
    }

    /// What [`Cache::read_run`] would hand `emit` for the same blocks,
    /// without reading: no fill, no touch, no eviction, no random number.
    /// A block is a cached line unless RCD=1 and the line is clean, else
    /// the medium. `false` (nothing emitted) when the read could evict a
    /// line before it reached it: a clean line that differs from the
    /// medium (the stale-line bug's) would then be read from the medium.
    pub fn peek_run(
        &self,
        lba: u64,
        n: u64,
        rcd: bool,
        medium: &Medium,
        mut emit: impl FnMut(&BlockData, u64),
    ) -> bool {
        if !rcd && self.room() < n {
            return false;
        }
        let end = lba.saturating_add(n);
        let mut pos = lba;
        while pos < end {
            if let Some((s, e)) = self.containing(pos) {
                let seg_end = (s + e.n).min(end);
                if rcd && !e.dirty() {
                    read_medium(medium, pos, seg_end, &mut emit);
                } else {
                    e.emit(s, pos, seg_end, medium, &mut emit);
                }
                pos = seg_end;
                continue;
            }
            let gap_end = self.gap_end(pos, end);
            read_medium(medium, pos, gap_end, &mut emit);
            pos = gap_end;
        }
        true
    }

    /// Drop the cached copy of `lba` (after UNMAP or WRITE SAME): a dirty
    /// line must not be destaged over the newer medium content later.
    pub fn invalidate(&mut self, lba: u64) {
        self.invalidate_range(lba, lba.saturating_add(1));
    }

    /// Drop every cached line in `[lba, end)`.
    pub fn invalidate_range(&mut self, lba: u64, end: u64) {
        if self.is_empty() || lba >= end {
            return;
        }
        self.split_at(lba);
        self.split_at(end);
        for s in self.lines.starts_in(lba, end, |_| true) {
            if let Some(e) = self.take(s) {
                self.held -= e.n;
                if e.dirty() {
                    self.dirty -= e.n;
                }
            }
        }
    }

    /// Write every dirty line in `[lba, end)` to the medium (SYNCHRONIZE
    /// CACHE). Returns how many lines were written.
    pub fn flush(&mut self, lba: u64, end: u64, medium: &mut Medium) -> u64 {
        if self.dirty == 0 || lba >= end {
            return 0;
        }
        // The dirty extents overlapping the range, found in one walk.
        let from = self.containing(lba).map_or(lba, |(s, _)| s);
        let dirty = self.lines.starts_in(from, end, |e| e.dirty());
        let mut back = std::mem::take(&mut self.back);
        let mut written = 0;
        for s in dirty {
            let Some((s, e)) = self.containing(s.max(lba)) else {
                continue;
            };
            let pos = s.max(lba);
            let next = (s + e.n).min(end);
            let mut part = self.cut(s, pos, next);
            if let Some(first) = part.first() {
                back.push(pos, part.n, first);
            }
            written += part.n;
            part.dirtied = None;
            self.put(pos, part);
        }
        back.finish(medium);
        self.back = back;
        self.dirty -= written;
        written
    }

    /// Background write-back after a write command, by policy.
    pub fn destage(&mut self, medium: &mut Medium, rng: &mut Rng) -> u64 {
        match self.cfg.destage {
            Destage::None => 0,
            Destage::Lru => {
                // Oldest write first. Dirtying writes are stamps, unique
                // per line, so the dirty extents' ranges of them never
                // interleave: the oldest lines are a prefix of the
                // extent whose range starts lowest.
                let mut n = 0;
                while self.dirty > self.cfg.capacity_blocks / 2 {
                    let Some((s, e)) = (self.lines.iter())
                        .filter(|(_, e)| e.dirty())
                        .min_by_key(|(_, e)| e.dirtied)
                    else {
                        break;
                    };
                    let m = e.n.min(self.dirty - self.cfg.capacity_blocks / 2);
                    let mut part = self.cut(s, s, s + m);
                    if let Some(first) = part.first() {
                        medium.write_run(s, m, first);
                    }
                    part.dirtied = None;
                    self.put(s, part);
                    self.dirty -= m;
                    n += m;
                }
                n
            }
            Destage::Random => {
                if self.dirty == 0 || rng.below(4) != 0 {
                    return 0;
                }
                let Some(q) = &self.queue else { return 0 };
                let i = rng.below(q.len() as u64) as usize;
                match q.get(i).copied() {
                    Some((lba, dirtied)) if self.dirtied_at(lba) == Some(dirtied) => {
                        let s = self.containing(lba).map_or(lba, |(s, _)| s);
                        let mut line = self.cut(s, lba, lba + 1);
                        if let Some(first) = line.first() {
                            medium.write_block(lba, first);
                        }
                        line.dirtied = None;
                        self.put(lba, line);
                        self.dirty -= 1;
                        1
                    }
                    _ => 0,
                }
            }
        }
    }

    /// When `lba` holds a dirty line: the stamp of the write that dirtied it.
    fn dirtied_at(&self, lba: u64) -> Option<u64> {
        self.containing(lba)
            .and_then(|(s, e)| e.dirtied_from(lba - s))
            .map(NonZeroU64::get)
    }

    /// Power failure: each destage unit (a run of lines dirtied in one
    /// sequence, as one write leaves them) was written back whole, not at
    /// all, cut short after a prefix, or line by line in any subset, as the
    /// seed decides; the cache comes back empty. Returns how many dirty
    /// lines were lost. See [`Fate`] for why units rather than lines.
    pub fn power_loss(&mut self, medium: &mut Medium, rng: &mut Rng) -> u64 {
        let mut lost = 0;
        let mut back = std::mem::take(&mut self.back);
        let mut unit = std::mem::take(&mut self.unit);
        // Units in LBA order, so the seed's draws fall on the same lines
        // however the cache grouped them into extents.
        let mut end: Option<(u64, u64)> = None;
        self.lines.for_each_in(
            0,
            u64::MAX,
            |e| e.dirty(),
            |s, e| {
                let (Some(first), Some(d)) = (e.first(), e.dirtied) else {
                    return;
                };
                // An extent crossing a segment boundary is two units' lines.
                let mut k = 0;
                while k < e.n {
                    let at = s + k;
                    let piece = (e.n - k).min(SEGMENT_LINES - at % SEGMENT_LINES);
                    if at % SEGMENT_LINES == 0 || end != Some((at, d.get() + k)) {
                        lost += unit.settle(rng, &mut back);
                    }
                    unit.extents.push((at, piece, continued(first, k)));
                    k += piece;
                    end = Some((s + k, d.get() + k));
                }
            },
        );
        lost += unit.settle(rng, &mut back);
        back.finish(medium);
        self.back = back;
        self.unit = unit;
        self.lines.clear();
        self.lru.clear();
        if let Some(q) = &mut self.queue {
            q.clear();
        }
        self.held = 0;
        self.dirty = 0;
        lost
    }

    fn make_room(&mut self, medium: &mut Medium, rng: &mut Rng) {
        while self.held >= self.cfg.capacity_blocks {
            let victim = match self.cfg.destage {
                Destage::Random => self.random_key(rng).map(|l| {
                    let s = self.containing(l).map_or(l, |(s, _)| s);
                    (l, self.cut(s, l, l + 1))
                }),
                Destage::None | Destage::Lru => self.take_lru(),
            };
            let Some((lba, line)) = victim else { return };
            self.held -= 1;
            if line.dirty() {
                if let Some(first) = line.first() {
                    medium.write_block(lba, first);
                }
                self.dirty -= 1;
            }
        }
    }

    /// The random policy's victim: the first line at or after a random LBA
    /// between the first and last lines.
    fn random_key(&mut self, rng: &mut Rng) -> Option<u64> {
        let first = self.lines.first_start()?;
        let last = self.lines.last_end()? - 1;
        let pick = first + rng.below(last - first + 1);
        match self.containing(pick) {
            Some(_) => Some(pick),
            None => Some(self.lines.next_start(pick, u64::MAX)),
        }
    }

    /// Rebuild the random policy's queue when stale entries dominate, so
    /// its memory stays proportional to the cache.
    fn compact_queue(&mut self) {
        let limit = 4 * self.held as usize + 64;
        let Some(mut q) = self.queue.take() else {
            return;
        };
        if q.len() > limit {
            q.retain(|(lba, s)| self.dirtied_at(*lba) == Some(*s));
        }
        self.queue = Some(q);
    }
}

/// Read `[lba, end)` from the medium, extent by extent, into `emit`.
fn read_medium(medium: &Medium, lba: u64, end: u64, emit: &mut impl FnMut(&BlockData, u64)) {
    medium.for_each_run(lba, end, emit);
}

/// Dirty lines on their way to the medium in ascending LBA order: a
/// stretch of consecutive lines that continue one another (one stream's
/// tags, or zeros) goes as one run, however many extents it spans, and
/// the runs go together ([`Medium::write_runs`]). The medium ends up
/// holding exactly what writing the lines one by one would leave.
#[derive(Debug, Clone, Default)]
struct WriteBack {
    /// (first LBA, lines, content of the first) of each stretch.
    runs: Vec<(u64, u64, BlockData)>,
}

impl WriteBack {
    /// Add `n` lines from `lba` continuing `first`.
    fn push(&mut self, lba: u64, n: u64, first: &BlockData) {
        if let Some((s, len, d)) = self.runs.last_mut() {
            if *s + *len == lba && continues_run(d, *len, first) {
                *len += n;
                return;
            }
        }
        self.runs.push((lba, n, first.clone()));
    }

    /// Write what is pending.
    fn finish(&mut self, medium: &mut Medium) {
        medium.write_runs(&self.runs);
        self.runs.clear();
    }
}

/// Lines in a cache segment: a destage unit never crosses an aligned
/// segment boundary, as a controller writes its cache back segment by
/// segment (64 KiB of 512-byte lines, 512 KiB of 4 KiB ones; MegaRAID's
/// smallest strip is 64 KiB). Without the bound a long sequential stream,
/// all dirtied in sequence, would be one unit that a power cut keeps or
/// loses whole a quarter of the time each.
pub const SEGMENT_LINES: u64 = 128;

/// What a power failure did to one destage unit, drawn with equal odds.
///
/// A controller destages a unit (the lines one write sequence dirtied,
/// within one segment) as one operation in LBA order, so a cut either
/// finds it untouched, finished, or part way through; a cache that
/// destages out of order can still leave any subset, which the
/// line-by-line fate keeps reachable. Drawing per unit rather than per
/// line is closer to hardware, keeps about as much on average (of an
/// `n`-line unit, `(4n - 1) / 8n` of the lines over the four fates: just
/// under a half for a long unit, 1/2 for a coin per line, 3/8 for a
/// one-line unit), and leaves a few extents on the medium instead of one
/// every other block: the write-back and every later read of a torn
/// region were a third of a grown fuzz program's time
/// (`docs/performance.md`, tenth pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Never written back: every line lost.
    Lost,
    /// Written back whole.
    Kept,
    /// Cut short: the first `k` lines (`k` below the unit's length, so at
    /// least one line is lost) reached the medium.
    Torn(u64),
    /// Written back out of order: each line reached the medium or not on
    /// a coin of its own.
    Lines,
}

impl Fate {
    /// The fate of the `n`-line unit starting at `lba`. Drawn the same way
    /// by the cache and by its line-by-line reference model, so their
    /// survivors agree.
    ///
    /// The draw is mixed with the unit's LBA: the seed's stream alone
    /// would give the first unit of every program's first power loss the
    /// same fate, so a campaign (one seed) could never see, say, its
    /// lowest write lost.
    pub fn draw(rng: &mut Rng, lba: u64, n: u64) -> Fate {
        match Rng::mix(rng.next_u64() ^ lba) >> 62 {
            0 => Fate::Lost,
            1 => Fate::Kept,
            2 => Fate::Torn(rng.below(n)),
            _ => Fate::Lines,
        }
    }
}

/// The extents of one destage unit, gathered in LBA order until it ends.
#[derive(Debug, Clone, Default)]
struct DestageUnit {
    /// (first LBA, lines, content of the first) of each extent.
    extents: Vec<(u64, u64, BlockData)>,
}

impl DestageUnit {
    /// Draw the unit's [`Fate`], queue its survivors on `back` and empty
    /// it. Returns the lines lost.
    fn settle(&mut self, rng: &mut Rng, back: &mut WriteBack) -> u64 {
        let n: u64 = self.extents.iter().map(|(_, len, _)| len).sum();
        let Some((lba, _, _)) = self.extents.first() else {
            return 0;
        };
        let mut lost = 0;
        match Fate::draw(rng, *lba, n) {
            Fate::Lost => lost = n,
            Fate::Kept => {
                for (s, len, first) in &self.extents {
                    back.push(*s, *len, first);
                }
            }
            Fate::Torn(k) => {
                let mut left = k;
                for (s, len, first) in &self.extents {
                    let keep = left.min(*len);
                    if keep > 0 {
                        back.push(*s, keep, first);
                    }
                    left -= keep;
                }
                lost = n - k;
            }
            Fate::Lines => {
                for (s, len, first) in &self.extents {
                    // Survivors in runs: one push per run of surviving
                    // lines rather than per line.
                    let mut run: Option<u64> = None;
                    for k in 0..*len {
                        if rng.coin() {
                            run.get_or_insert(k);
                        } else {
                            lost += 1;
                            if let Some(a) = run.take() {
                                back.push(s + a, k - a, &continued(first, a));
                            }
                        }
                    }
                    if let Some(a) = run {
                        back.push(s + a, len - a, &continued(first, a));
                    }
                }
            }
        }
        self.extents.clear();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.get(3, &m), (Lookup::DirtyHit, Some(raw(1))));
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
        c.get(1, &m);
        c.write(3, raw(3), &mut m, &mut r);
        assert_eq!(m.block(2), raw(2), "line 2 was least recently used");
        assert_eq!(m.block(1), BlockData::Zero);
        assert_eq!(c.len(), 2);
    }

    /// Eight units of eight lines (written in sequence, one LBA apart):
    /// each comes back lost, kept, cut after a prefix or in some other
    /// subset, as the seed says, and every kind turns up.
    #[test]
    fn power_loss_settles_each_destage_unit_and_empties_the_cache() {
        let run = |seed| {
            let (mut c, mut m, _) = cache(128, Destage::None);
            let mut r = Rng::new(seed);
            for unit in 0..8u64 {
                for k in 0..8 {
                    let lba = unit * 9 + k;
                    c.write(lba, raw(lba as u8 + 1), &mut m, &mut r);
                }
            }
            let lost = c.power_loss(&mut m, &mut r);
            assert!(c.is_empty());
            let kept: Vec<Vec<bool>> = (0..8u64)
                .map(|u| {
                    (0..8)
                        .map(|k| m.block(u * 9 + k) != BlockData::Zero)
                        .collect()
                })
                .collect();
            (lost, kept)
        };
        let mut seen = [false; 4];
        for seed in 0..32 {
            let (lost, kept) = run(seed);
            let survivors = kept.iter().flatten().filter(|k| **k).count() as u64;
            assert_eq!(lost, 64 - survivors, "seed {seed}");
            assert_eq!(run(seed), (lost, kept.clone()), "same seed, same survivors");
            for unit in &kept {
                let n = unit.iter().filter(|k| **k).count();
                let prefix = unit.iter().take_while(|k| **k).count() == n;
                seen[match (n, prefix) {
                    (0, _) => 0,
                    (8, _) => 1,
                    (_, true) => 2,
                    (_, false) => 3,
                }] = true;
            }
        }
        assert_eq!(seen, [true; 4], "lost, kept, torn, line by line");
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
        assert_eq!(c.get(5, &m).1, Some(raw(2)));
        c.write_through(5, &raw(3), &mut m, true);
        assert_eq!(c.get(5, &m).1, Some(raw(2)), "stale line kept");
        assert_eq!(m.block(5), raw(3));
    }

    /// The cache as it was before lines were grouped into extents: one
    /// line per block, lazy LRU and write-order queues. The extent cache
    /// must be indistinguishable from it.
    mod per_line {
        use super::super::{Destage, Fate, Lookup, SEGMENT_LINES};
        use crate::content::BlockData;
        use crate::medium::{continued, continues_run, Medium};
        use crate::rng::Rng;
        use std::collections::{BTreeMap, VecDeque};

        struct Line {
            data: BlockData,
            dirty: bool,
            stamp: u64,
            dirtied: u64,
        }

        pub struct Reference {
            cap: u64,
            destage: Destage,
            lines: BTreeMap<u64, Line>,
            lru: VecDeque<(u64, u64)>,
            dirty_order: VecDeque<(u64, u64)>,
            clock: u64,
            pub dirty: u64,
        }

        impl Reference {
            pub fn new(cap: u64, destage: Destage) -> Self {
                Reference {
                    cap,
                    destage,
                    lines: BTreeMap::new(),
                    lru: VecDeque::new(),
                    dirty_order: VecDeque::new(),
                    clock: 0,
                    dirty: 0,
                }
            }

            pub fn len(&self) -> usize {
                self.lines.len()
            }

            pub fn is_full(&self) -> bool {
                self.lines.len() as u64 >= self.cap
            }

            pub fn is_dirty(&self, lba: u64) -> bool {
                self.lines.get(&lba).is_some_and(|l| l.dirty)
            }

            pub fn next_dirty(&self, lba: u64, end: u64) -> Option<u64> {
                (lba..end).find(|l| self.is_dirty(*l))
            }

            pub fn get(&mut self, lba: u64) -> (Lookup, Option<BlockData>) {
                let Some(l) = self.lines.get_mut(&lba) else {
                    return (Lookup::Miss, None);
                };
                self.clock += 1;
                l.stamp = self.clock;
                self.lru.push_back((lba, self.clock));
                let kind = if l.dirty {
                    Lookup::DirtyHit
                } else {
                    Lookup::CleanHit
                };
                (kind, Some(l.data.clone()))
            }

            pub fn write(&mut self, lba: u64, data: BlockData, m: &mut Medium, rng: &mut Rng) {
                self.clock += 1;
                let stamp = self.clock;
                if let Some(l) = self.lines.get_mut(&lba) {
                    self.dirty += u64::from(!l.dirty);
                    *l = Line {
                        data,
                        dirty: true,
                        stamp,
                        dirtied: stamp,
                    };
                } else {
                    self.make_room(m, rng);
                    self.lines.insert(
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
                self.compact();
            }

            /// What the disk's block-by-block writer did: the eviction
            /// flag, then each block's write.
            pub fn write_run(
                &mut self,
                lba: u64,
                n: u64,
                first: &BlockData,
                m: &mut Medium,
                rng: &mut Rng,
            ) -> bool {
                let mut evicted = false;
                for k in 0..n {
                    evicted |= self.is_full() && !self.is_dirty(lba + k);
                    self.write(lba + k, continued(first, k), m, rng);
                }
                evicted
            }

            pub fn write_through(
                &mut self,
                lba: u64,
                n: u64,
                first: &BlockData,
                m: &mut Medium,
                stale: bool,
            ) {
                m.write_run(lba, n, first);
                for k in 0..n {
                    match self.lines.get_mut(&(lba + k)) {
                        Some(l) if !stale => {
                            self.dirty -= u64::from(l.dirty);
                            l.data = continued(first, k);
                            l.dirty = false;
                        }
                        _ => {}
                    }
                }
            }

            pub fn fill(&mut self, lba: u64, data: BlockData, m: &mut Medium, rng: &mut Rng) {
                if self.lines.contains_key(&lba) {
                    return;
                }
                self.clock += 1;
                let stamp = self.clock;
                self.make_room(m, rng);
                self.lines.insert(
                    lba,
                    Line {
                        data,
                        dirty: false,
                        stamp,
                        dirtied: 0,
                    },
                );
                self.lru.push_back((lba, stamp));
                self.compact();
            }

            /// The disk's block-by-block read: the blocks returned, hit
            /// and eviction flags.
            pub fn read(
                &mut self,
                lba: u64,
                n: u64,
                rcd: bool,
                m: &mut Medium,
                rng: &mut Rng,
            ) -> (Vec<BlockData>, bool, bool) {
                let (mut out, mut hit, mut evicted) = (Vec::new(), false, false);
                for l in lba..lba + n {
                    if !rcd || self.is_dirty(l) {
                        if let (_, Some(d)) = self.get(l) {
                            out.push(d);
                            hit = true;
                            continue;
                        }
                    }
                    let d = m.block(l);
                    out.push(d.clone());
                    if !rcd {
                        evicted |= self.is_full();
                        self.fill(l, d, m, rng);
                    }
                }
                (out, hit, evicted)
            }

            pub fn invalidate(&mut self, lba: u64, end: u64) {
                for l in lba..end {
                    if let Some(l) = self.lines.remove(&l) {
                        self.dirty -= u64::from(l.dirty);
                    }
                }
            }

            fn write_back(&self, lbas: &[u64], m: &mut Medium) {
                let mut i = 0;
                while i < lbas.len() {
                    let d0 = &self.lines[&lbas[i]].data;
                    let mut n = 1;
                    while i + n < lbas.len()
                        && lbas[i + n] == lbas[i] + n as u64
                        && continues_run(d0, n as u64, &self.lines[&lbas[i + n]].data)
                    {
                        n += 1;
                    }
                    m.write_run(lbas[i], n as u64, d0);
                    i += n;
                }
            }

            pub fn flush(&mut self, lba: u64, end: u64, m: &mut Medium) -> u64 {
                let keys: Vec<u64> = (self.lines.range(lba..end))
                    .filter(|(_, l)| l.dirty)
                    .map(|(k, _)| *k)
                    .collect();
                self.write_back(&keys, m);
                for k in &keys {
                    self.lines.get_mut(k).unwrap().dirty = false;
                }
                self.dirty -= keys.len() as u64;
                keys.len() as u64
            }

            fn destage_line(&mut self, lba: u64, dirtied: u64, m: &mut Medium) -> bool {
                match self.lines.get_mut(&lba) {
                    Some(l) if l.dirty && l.dirtied == dirtied => {
                        m.write_block(lba, &l.data);
                        l.dirty = false;
                        self.dirty -= 1;
                        true
                    }
                    _ => false,
                }
            }

            pub fn destage(&mut self, m: &mut Medium, rng: &mut Rng) -> u64 {
                match self.destage {
                    Destage::None => 0,
                    Destage::Lru => {
                        let mut n = 0;
                        while self.dirty > self.cap / 2 {
                            let Some((lba, d)) = self.dirty_order.pop_front() else {
                                break;
                            };
                            n += u64::from(self.destage_line(lba, d, m));
                        }
                        n
                    }
                    Destage::Random => {
                        if self.dirty == 0 || rng.below(4) != 0 {
                            return 0;
                        }
                        let i = rng.below(self.dirty_order.len() as u64) as usize;
                        match self.dirty_order.get(i).copied() {
                            Some((lba, d)) => u64::from(self.destage_line(lba, d, m)),
                            None => 0,
                        }
                    }
                }
            }

            pub fn power_loss(&mut self, m: &mut Medium, rng: &mut Rng) -> u64 {
                let dirty: Vec<(u64, u64)> = (self.lines.iter())
                    .filter(|(_, l)| l.dirty)
                    .map(|(k, l)| (*k, l.dirtied))
                    .collect();
                // Destage units: runs of lines dirtied in sequence.
                let mut units: Vec<Vec<u64>> = Vec::new();
                for (i, (lba, d)) in dirty.iter().enumerate() {
                    match i.checked_sub(1).map(|j| dirty[j]) {
                        Some((pl, pd))
                            if pl + 1 == *lba && pd + 1 == *d && lba % SEGMENT_LINES != 0 =>
                        {
                            units.last_mut().unwrap().push(*lba)
                        }
                        _ => units.push(vec![*lba]),
                    }
                }
                let mut keys = Vec::new();
                for unit in units {
                    let n = unit.len();
                    let kept: Vec<u64> = match Fate::draw(rng, unit[0], n as u64) {
                        Fate::Lost => vec![],
                        Fate::Kept => unit,
                        Fate::Torn(k) => unit[..k as usize].to_vec(),
                        Fate::Lines => unit.into_iter().filter(|_| rng.coin()).collect(),
                    };
                    keys.extend(kept);
                }
                let lost = dirty.len() as u64 - keys.len() as u64;
                self.write_back(&keys, m);
                *self = Reference::new(self.cap, self.destage);
                lost
            }

            fn make_room(&mut self, m: &mut Medium, rng: &mut Rng) {
                while self.lines.len() as u64 >= self.cap {
                    let victim = match self.destage {
                        Destage::Random => {
                            let (Some(f), Some(l)) =
                                (self.lines.keys().next(), self.lines.keys().next_back())
                            else {
                                return;
                            };
                            let pick = f + rng.below(l - f + 1);
                            self.lines.range(pick..).next().map(|(k, _)| *k)
                        }
                        _ => loop {
                            let Some((lba, s)) = self.lru.pop_front() else {
                                break None;
                            };
                            if self.lines.get(&lba).is_some_and(|l| l.stamp == s) {
                                break Some(lba);
                            }
                        },
                    };
                    let Some(lba) = victim else { return };
                    let l = self.lines.remove(&lba).unwrap();
                    if l.dirty {
                        m.write_block(lba, &l.data);
                        self.dirty -= 1;
                    }
                }
            }

            fn compact(&mut self) {
                let limit = 4 * self.lines.len() + 64;
                let lines = &self.lines;
                if self.lru.len() > limit {
                    self.lru
                        .retain(|(k, s)| lines.get(k).is_some_and(|l| l.stamp == *s));
                }
                if self.dirty_order.len() > limit {
                    self.dirty_order
                        .retain(|(k, s)| lines.get(k).is_some_and(|l| l.dirty && l.dirtied == *s));
                }
            }
        }
    }

    /// Content for the model test: zeros, a tag (of one of two streams,
    /// continuing its LBA or not), or raw bytes.
    fn content(kind: u8, lba: u64, g: u32, shift: u64) -> BlockData {
        match kind % 3 {
            0 => BlockData::Zero,
            1 => BlockData::Pattern(crate::content::Tag {
                lba: lba + shift,
                seed: 1 + u64::from(g % 2),
                generation: g,
            }),
            _ => raw(g as u8 + 1),
        }
    }

    /// LBAs the model test uses: reads and writes reach up to 52.
    const SPAN: u64 = 56;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any sequence of writes (single blocks and runs), reads with and
        /// without RCD, fills, lookups, write-throughs (with and without
        /// the stale-line bug), invalidations, flushes, destages and power
        /// losses, under every destage policy and capacities small enough
        /// to evict, leaves the extent cache indistinguishable from the
        /// per-line cache it replaced: the same results and flags, lines,
        /// dirty lines, medium contents and random numbers drawn. A peek
        /// before each read sees what the read returns, or says it cannot.
        #[test]
        fn extents_behave_as_single_lines(
            cap in proptest::prop_oneof![0u64..10, 10u64..64],
            policy in 0u8..3,
            seed in proptest::prelude::any::<u64>(),
            ops in proptest::collection::vec(
                (0u8..14, 0u64..40, proptest::prop_oneof![1u64..2, 1u64..13], 0u8..3, 0u32..4, 0u64..2, proptest::prelude::any::<bool>()),
                1..60,
            ),
        ) {
            use proptest::prop_assert_eq as eq;
            let destage = [Destage::None, Destage::Lru, Destage::Random][policy as usize];
            let (mut c, mut m, _) = cache(cap, destage);
            let mut model = per_line::Reference::new(cap, destage);
            let (mut mm, mut r, mut mr) = (Medium::new(512), Rng::new(seed), Rng::new(seed));
            for (step, (op, lba, n, kind, g, shift, flag)) in ops.into_iter().enumerate() {
                let data = content(kind, lba, g, shift);
                // Runs continue a tag or zeros; raw blocks stand alone.
                let first = content(kind % 2, lba, g, shift);
                match op {
                    0 | 1 => {
                        let full = model.is_full() && !model.is_dirty(lba);
                        eq!(c.write(lba, data.clone(), &mut m, &mut r), full, "write flag, step {}", step);
                        model.write(lba, data, &mut mm, &mut mr);
                    }
                    2 | 3 => eq!(
                        c.write_run(lba, n, &first, &mut m, &mut r),
                        model.write_run(lba, n, &first, &mut mm, &mut mr),
                        "write_run flag, step {}", step
                    ),
                    4 | 5 => {
                        let mut peeked = Vec::new();
                        let told = c.peek_run(lba, n, flag && op == 5, &m, |d, k| {
                            peeked.extend((0..k).map(|i| crate::medium::continued(d, i)))
                        });
                        let mut got = Vec::new();
                        let used = c.read_run(lba, n, flag && op == 5, &mut m, &mut r, |d, k| {
                            got.extend((0..k).map(|i| crate::medium::continued(d, i)))
                        });
                        let (want, hit, evicted) = model.read(lba, n, flag && op == 5, &mut mm, &mut mr);
                        eq!(&got, &want, "read, step {}", step);
                        if told {
                            eq!(peeked, want, "peek before the read, step {}", step);
                        } else {
                            eq!(peeked.len(), 0, "a peek that cannot tell emits nothing");
                        }
                        eq!((used.hit, used.evicted), (hit, evicted), "read flags, step {}", step);
                    }
                    6 => eq!(c.get(lba, &m), model.get(lba), "get, step {}", step),
                    7 => {
                        c.fill(lba, data.clone(), &mut m, &mut r);
                        model.fill(lba, data, &mut mm, &mut mr);
                    }
                    8 => {
                        if n == 1 {
                            c.write_through(lba, &data, &mut m, flag);
                            model.write_through(lba, 1, &data, &mut mm, flag);
                        } else {
                            c.write_through_run(lba, n, &first, &mut m, flag);
                            model.write_through(lba, n, &first, &mut mm, flag);
                        }
                    }
                    9 => {
                        if n == 1 { c.invalidate(lba) } else { c.invalidate_range(lba, lba + n) }
                        model.invalidate(lba, lba + n);
                    }
                    10 => {
                        let end = if flag { u64::MAX } else { lba + n };
                        eq!(c.flush(lba, end, &mut m), model.flush(lba, end, &mut mm), "flush, step {}", step);
                    }
                    11 | 12 => eq!(c.destage(&mut m, &mut r), model.destage(&mut mm, &mut mr), "destage, step {}", step),
                    _ => eq!(c.power_loss(&mut m, &mut r), model.power_loss(&mut mm, &mut mr), "power loss, step {}", step),
                }
                eq!(c.len(), model.len(), "lines, step {}", step);
                eq!(c.dirty_count(), model.dirty, "dirty lines, step {}", step);
                eq!(c.is_full(), model.is_full());
                eq!(r.clone().next_u64(), mr.clone().next_u64(), "rng use, step {}", step);
                for l in 0..SPAN {
                    eq!(c.is_dirty(l), model.is_dirty(l), "dirty LBA {}, step {}", l, step);
                    eq!(m.block(l), mm.block(l), "medium LBA {}, step {}", l, step);
                }
                eq!(c.next_dirty(lba, lba + n), model.next_dirty(lba, lba + n));
                let want = (lba..lba + n).take_while(|l| model.is_dirty(*l)).count() as u64;
                eq!(c.dirty_run(lba, n), want, "dirty run, step {}", step);
                eq!(m.extent_count(), mm.extent_count(), "medium extents, step {}", step);
            }
        }
    }
}
