//! State-transition coverage for the fuzzer: which combinations of command
//! class, cache state, scatter-gather shape, constraint path and bug path a
//! run has reached, as hit counts in a fixed-size byte map (the shape
//! AFL-style map observers expect).
//!
//! Each command marks its own tuple and the edge from the previous command's
//! tuple, so a program that reaches a known state by a new route is still
//! new. The emulator keeps the map behind an `Option`: with coverage off the
//! cost is one branch per command.

/// Bytes in the coverage map.
pub const MAP_SIZE: usize = 1 << 16;

/// What kind of command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpClass {
    /// READ.
    Read = 1,
    /// WRITE (no FUA).
    Write,
    /// WRITE with FUA.
    WriteFua,
    /// SYNCHRONIZE CACHE.
    SyncCache,
    /// SYNCHRONIZE CACHE with IMMED.
    SyncCacheImmed,
    /// WRITE SAME or UNMAP.
    Provisioning,
    /// MODE SELECT/SENSE.
    Mode,
    /// COMPARE AND WRITE, VERIFY, WRITE AND VERIFY.
    Compare,
    /// Anything else without data to the medium.
    Other,
    /// A command that ended in CHECK CONDITION.
    Failed,
    /// Power loss.
    PowerLoss,
    /// Reset.
    Reset,
}

/// The cache's state as a command saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CacheState {
    /// Write caching off.
    WriteThrough = 1,
    /// On, nothing dirty.
    Clean,
    /// On, some dirty lines.
    Dirty,
    /// On and full: the command forced a write-back.
    Full,
}

/// Shape of a task's SG list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SgShape {
    /// log2 bucket of the segment count (0 = no data).
    pub count_bucket: u8,
    /// Some segment lies above the controller's addressable limit.
    pub above_limit: bool,
    /// Some segment breaks the controller's alignment.
    pub misaligned: bool,
}

/// Which part of the HBA model handled the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ConstraintPath {
    /// Within every limit.
    #[default]
    Direct = 1,
    /// Bounced through low memory.
    Bounced,
    /// Split into several controller commands.
    Split,
    /// Bounced and split.
    BouncedSplit,
    /// Failed by the driver.
    Rejected,
}

/// The coverage map.
///
/// A fuzzer builds one emulator per execution, and a run touches a few
/// dozen of the map's 65 536 entries: allocating, zeroing and freeing the
/// whole map each time cost more than the commands it recorded. So the map
/// remembers which entries it set ([`Coverage::touched`]), clears only
/// those, and goes back to a per-thread pool when dropped, already clear,
/// for the next [`Coverage::new`] on that thread.
pub struct Coverage {
    map: Option<Box<[u8; MAP_SIZE]>>,
    /// Entries that went from 0 to hit since the last clear, in that order.
    touched: Vec<u32>,
    /// The map was handed out mutably ([`Coverage::map_mut`]): what was
    /// written through it is not in `touched`, so the next clear is a full one.
    untracked: bool,
    prev: u32,
}

/// Maps kept per thread for reuse; more than a few means the caller keeps
/// many emulators alive at once, and those are simply freed.
const POOL_MAPS: usize = 4;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Box<[u8; MAP_SIZE]>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn fresh_map() -> Box<[u8; MAP_SIZE]> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| {
        // Zeroed allocation straight from the allocator, never through the stack.
        vec![0u8; MAP_SIZE]
            .into_boxed_slice()
            .try_into()
            .expect("MAP_SIZE bytes")
    })
}

impl Drop for Coverage {
    fn drop(&mut self) {
        self.clear();
        if let Some(map) = self.map.take() {
            // `try_with`: during thread teardown the pool may be gone.
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAPS {
                    p.push(map);
                }
            });
        }
    }
}

impl std::fmt::Debug for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coverage")
            .field("hit_entries", &self.hit_entries())
            .finish()
    }
}

impl Default for Coverage {
    fn default() -> Self {
        Coverage {
            map: Some(fresh_map()),
            // A run hits a few dozen entries: grown once or twice at most.
            touched: Vec::with_capacity(64),
            untracked: false,
            prev: 0,
        }
    }
}

fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

impl Coverage {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn bytes(&self) -> &[u8; MAP_SIZE] {
        self.map.as_deref().expect("the map is only taken on drop")
    }

    fn bytes_mut(&mut self) -> &mut [u8; MAP_SIZE] {
        self.map
            .as_deref_mut()
            .expect("the map is only taken on drop")
    }

    /// The map bytes (hit counts, saturating).
    pub fn map(&self) -> &[u8] {
        &self.bytes()[..]
    }

    /// Mutable map bytes, for observers that reset the map between runs.
    pub fn map_mut(&mut self) -> &mut [u8] {
        self.untracked = true;
        &mut self.bytes_mut()[..]
    }

    /// The entries hit since the last [`Coverage::clear`], in the order
    /// they were first hit: every non-zero entry is among them, so a
    /// caller can copy or merge a run's coverage in time proportional to
    /// what it hit rather than to the map. `None` once [`Coverage::map_mut`]
    /// has handed the map out (writes through it are not tracked) until the
    /// next clear.
    pub fn touched(&self) -> Option<&[u32]> {
        (!self.untracked).then_some(&self.touched[..])
    }

    /// Zero the map and forget the previous state.
    pub fn clear(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        let untracked = std::mem::replace(&mut self.untracked, false);
        let map = self.bytes_mut();
        if untracked {
            map.fill(0);
        } else {
            for &i in &touched {
                map[i as usize] = 0;
            }
        }
        self.touched = touched;
        self.touched.clear();
        self.prev = 0;
    }

    /// Entries hit at least once.
    pub fn hit_entries(&self) -> usize {
        self.bytes().iter().filter(|b| **b != 0).count()
    }

    fn hit(&mut self, idx: u32) {
        let i = idx as usize % MAP_SIZE;
        let e = &mut self.bytes_mut()[i];
        if *e == 0 {
            *e = 1;
            self.touched.push(i as u32);
        } else {
            *e = e.saturating_add(1);
        }
    }

    /// Mark one command's tuple and the edge from the previous one.
    pub fn mark(
        &mut self,
        op: OpClass,
        cache: CacheState,
        sg: SgShape,
        path: ConstraintPath,
        bug_fired: u32,
    ) {
        let state = (op as u32)
            | (cache as u32) << 5
            | u32::from(sg.count_bucket) << 8
            | u32::from(sg.above_limit) << 13
            | u32::from(sg.misaligned) << 14
            | (path as u32) << 15
            | bug_fired << 18;
        let cur = mix(state);
        self.hit(cur);
        self.hit(cur ^ (self.prev >> 1));
        self.prev = cur;
    }

    /// Mark a discrete event (power loss outcome, eviction, destage) that is
    /// not a command's tuple.
    pub fn event(&mut self, kind: u32, detail: u32) {
        let cur = mix(0x8000_0000 | kind << 16 | (detail & 0xffff));
        self.hit(cur);
    }
}

/// log2 bucket of a segment count: 0, 1, 2-3, 4-7, ... capped at 31.
pub fn count_bucket(n: usize) -> u8 {
    (usize::BITS - n.leading_zeros()).min(31) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_routes_to_the_same_state_are_different_edges() {
        let mut a = Coverage::new();
        let s = SgShape::default();
        a.mark(
            OpClass::Write,
            CacheState::Clean,
            s,
            ConstraintPath::Direct,
            0,
        );
        a.mark(
            OpClass::Read,
            CacheState::Dirty,
            s,
            ConstraintPath::Direct,
            0,
        );
        let n = a.hit_entries();
        a.mark(
            OpClass::SyncCache,
            CacheState::Dirty,
            s,
            ConstraintPath::Direct,
            0,
        );
        a.mark(
            OpClass::Read,
            CacheState::Dirty,
            s,
            ConstraintPath::Direct,
            0,
        );
        assert!(a.hit_entries() > n + 2);
        a.clear();
        assert_eq!(a.hit_entries(), 0);
        assert_eq!(count_bucket(0), 0);
        assert_eq!(count_bucket(129), 8);
    }

    #[test]
    fn touched_lists_every_hit_entry_and_pooled_maps_come_back_clear() {
        let s = SgShape::default();
        let mut a = Coverage::new();
        a.mark(
            OpClass::Write,
            CacheState::Clean,
            s,
            ConstraintPath::Direct,
            0,
        );
        a.mark(
            OpClass::Write,
            CacheState::Dirty,
            s,
            ConstraintPath::Direct,
            0,
        );
        a.event(1, 3);
        let mut from_touched = vec![0u8; MAP_SIZE];
        for &i in a.touched().unwrap() {
            from_touched[i as usize] = a.map()[i as usize];
        }
        assert_eq!(from_touched, a.map(), "every non-zero entry is listed");
        assert_eq!(a.touched().unwrap().len(), a.hit_entries());
        drop(a);
        // Several at once, so at least one comes from the pool.
        let maps: Vec<Coverage> = (0..POOL_MAPS + 1).map(|_| Coverage::new()).collect();
        assert!(maps.iter().all(|m| m.hit_entries() == 0));
        let mut b = Coverage::new();
        b.map_mut()[7] = 9;
        assert_eq!(b.touched(), None, "writes through map_mut are not tracked");
        b.clear();
        assert_eq!(b.hit_entries(), 0);
        assert_eq!(b.touched(), Some(&[][..]));
        b.map_mut()[9] = 1;
        drop(b);
        drop(maps);
        let c: Vec<Coverage> = (0..POOL_MAPS + 1).map(|_| Coverage::new()).collect();
        assert!(c.iter().all(|m| m.hit_entries() == 0));
    }
}
