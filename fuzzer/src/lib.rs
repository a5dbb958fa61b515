//! LibAFL campaigns over programs of SCSI operations: the part of Scuzz that
//! turns one recorded workload into millions of plausible variants and finds
//! the one that loses or corrupts data.
//!
//! - [`program`]: the input, a [`program::ScsiProgram`] of writes, reads,
//!   flushes, power losses, resets, WCE toggles, WRITE SAME, UNMAP and
//!   barriers, each transfer with its SG plan; serde, `arbitrary`, LibAFL's
//!   `Input`;
//! - [`seeds`]: programs from `.sczt` traces;
//! - [`mutators`]: domain mutators for LibAFL's `HavocScheduledMutator`;
//! - [`harness`]: runs a program against a fresh emulator beside
//!   `trace::oracle`, as a faithful host would, into a [`verdict::Verdict`];
//! - [`device`]: what the harness drives: the emulator, or a real target
//!   over iSCSI (`--to iscsi://`);
//! - [`scheduler`]: LibAFL's minimizer, culling only after the corpus
//!   changed;
//! - [`queue`]: the corpus on disk as packs, one append-only file per
//!   client and session;
//! - [`campaign`]: the LibAFL wiring (executor, observers, objective,
//!   findings stage, monitor, `Launcher`), `--resume`;
//! - [`fleet`]: one campaign over several machines, their brokers linked;
//! - [`findings`]: minimisation, attribution to a catalogued bug, and the
//!   `repro.sczt`/`report.md` a user replays;
//! - [`stats`], [`generator`]: the time series and plot, random programs.
//!
//! ```
//! use fuzzer::harness::{Harness, Target};
//! use fuzzer::program::{Op, ScsiProgram, Transfer};
//! use emulator::{Bug, BugSet};
//! use trace::{HbaPreset, Lba, Segment};
//!
//! // A write, a flush, then (added by the harness) a power loss and a
//! // read-back: with SYNCHRONIZE CACHE a no-op, the write is lost.
//! let write = Op::Write(Transfer { lba: Lba(0), blocks: 64, fua: false,
//!     sg: vec![Segment::new(0x10_0000, 64 * 512)], extra: 0 });
//! let flush = Op::SyncCache { lba: Lba(0), blocks: 0, immed: false };
//! let program = ScsiProgram::new(vec![write, flush]);
//! let mut target = Target::new(HbaPreset::lsi3108());
//! assert!(Harness::new(target.clone()).run(&program).passed());
//! target.bugs = BugSet::of(&[Bug::SyncCacheNoop]);
//! let verdict = Harness::new(target).run(&program);
//! assert_eq!(verdict.class(), Some("dropped"));
//! ```

#![deny(missing_docs)]

pub mod campaign;
pub mod coverage;
pub mod device;
pub mod energy;
pub mod findings;
pub mod fleet;
pub mod generator;
pub mod harness;
pub mod mutators;
pub mod program;
pub mod queue;
pub mod scheduler;
pub mod seeds;
pub mod stats;
pub mod verdict;
