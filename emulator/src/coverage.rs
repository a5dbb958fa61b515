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
pub struct Coverage {
    map: Box<[u8; MAP_SIZE]>,
    prev: u32,
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
            map: Box::new([0u8; MAP_SIZE]),
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

    /// The map bytes (hit counts, saturating).
    pub fn map(&self) -> &[u8] {
        &self.map[..]
    }

    /// Mutable map bytes, for observers that reset the map between runs.
    pub fn map_mut(&mut self) -> &mut [u8] {
        &mut self.map[..]
    }

    /// Zero the map and forget the previous state.
    pub fn clear(&mut self) {
        self.map.fill(0);
        self.prev = 0;
    }

    /// Entries hit at least once.
    pub fn hit_entries(&self) -> usize {
        self.map.iter().filter(|b| **b != 0).count()
    }

    fn hit(&mut self, idx: u32) {
        let e = &mut self.map[idx as usize % MAP_SIZE];
        *e = e.saturating_add(1);
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
}
