//! The bug catalogue: driver and controller mistakes the emulator can be
//! told to make, each a named switch that is off by default.
//!
//! Every entry models a mistake real HBA drivers have shipped (see
//! `docs/bug-catalogue.md` for the story of each and the symptom the
//! consistency oracle reports). One table below generates the enum, the CLI
//! spellings, parsing and the list of all bugs, so a new entry is one line.

use std::fmt;
use std::str::FromStr;

macro_rules! bugs {
    ($( $(#[$doc:meta])* $variant:ident = $cli:literal, )*) => {
        /// One catalogued driver or controller mistake.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[non_exhaustive]
        pub enum Bug { $( $(#[$doc])* $variant, )* }

        impl Bug {
            /// Every catalogued bug, in catalogue order.
            pub const ALL: &'static [Bug] = &[ $( Bug::$variant, )* ];

            /// The CLI spelling (`--bug NAME`).
            pub fn name(self) -> &'static str {
                match self { $( Bug::$variant => $cli, )* }
            }
        }

        impl FromStr for Bug {
            type Err = UnknownBug;
            fn from_str(s: &str) -> Result<Bug, UnknownBug> {
                match s { $( $cli => Ok(Bug::$variant), )* _ => Err(UnknownBug(s.to_string())) }
            }
        }
    };
}

bugs! {
    /// SYNCHRONIZE CACHE acknowledged GOOD without flushing the cache.
    SyncCacheNoop = "sync-cache-noop",
    /// The FUA bit is dropped: a write-through write stays in the volatile cache.
    FuaIgnored = "fua-ignored",
    /// Segments above the controller's addressable limit are programmed with
    /// their address truncated to the low 32 bits instead of being bounced.
    DmaTruncate32 = "dma-truncate-32",
    /// SG entries past the controller's segment limit are silently dropped.
    SgOverflowDrop = "sg-overflow-drop",
    /// A transfer split at the byte limit skips one block at each split.
    SplitOffByOne = "split-off-by-one",
    /// A write is completed before its data reached the cache; the DMA
    /// happens after the next command.
    EarlyCompletion = "early-completion",
    /// Writes still queued in the driver are overtaken by a SYNCHRONIZE CACHE.
    ReorderAcrossFlush = "reorder-across-flush",
    /// A write-through write (FUA, or WCE=0) leaves a stale clean cache line
    /// that later reads are served from.
    StaleCacheRead = "stale-cache-read",
    /// A short transfer is reported with residual 0 (full length moved).
    BadResidual = "bad-residual",
    /// An oversize task's SG list is truncated at the controller's byte
    /// limit and full success is reported.
    OversizeTruncate = "oversize-truncate",
    /// An oversize task's byte count is programmed into a register too
    /// narrow for it: the count wraps, then the controller clips it.
    OversizeClip = "oversize-clip",
}

/// A name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bug `{0}` (known: {known})", known = Bug::ALL.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownBug(pub String);

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of bugs switched on; empty (a correct driver) by default.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct BugSet(u32);

impl BugSet {
    /// No bugs: a correct driver and controller.
    pub const NONE: BugSet = BugSet(0);

    /// A set holding exactly `bugs`.
    pub fn of(bugs: &[Bug]) -> BugSet {
        bugs.iter().fold(BugSet::NONE, |s, b| s.with(*b))
    }

    /// This set with `bug` added.
    pub fn with(self, bug: Bug) -> BugSet {
        BugSet(self.0 | 1 << bug as u32)
    }

    /// Is `bug` switched on?
    #[inline]
    pub fn has(self, bug: Bug) -> bool {
        self.0 & (1 << bug as u32) != 0
    }

    /// The bugs switched on, in catalogue order.
    pub fn iter(self) -> impl Iterator<Item = Bug> {
        Bug::ALL.iter().copied().filter(move |b| self.has(*b))
    }

    /// True when no bug is on.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Bug> for BugSet {
    fn from_iter<I: IntoIterator<Item = Bug>>(iter: I) -> Self {
        iter.into_iter().fold(BugSet::NONE, |s, b| s.with(b))
    }
}

impl fmt::Display for BugSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Bug::name).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_spellings_round_trip() {
        assert_eq!(Bug::ALL.len(), 11);
        for b in Bug::ALL {
            assert_eq!(b.name().parse::<Bug>().unwrap(), *b);
            assert_eq!(b.to_string(), b.name());
        }
        let e = "dma-truncate-64".parse::<Bug>().unwrap_err().to_string();
        assert!(e.contains("dma-truncate-32"), "{e}");
    }

    #[test]
    fn bug_sets_hold_what_was_added() {
        let s = BugSet::of(&[Bug::FuaIgnored, Bug::OversizeClip]);
        assert!(s.has(Bug::FuaIgnored) && s.has(Bug::OversizeClip) && !s.has(Bug::BadResidual));
        assert_eq!(s.to_string(), "fua-ignored,oversize-clip");
        assert_eq!(BugSet::NONE.to_string(), "none");
    }
}
