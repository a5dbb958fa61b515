//! Replay: runs a trace against a device and tells what came back.
//!
//! A captured workload becomes a regression test and a latency benchmark by
//! replaying it. The [`engine`] streams a trace's events in constant memory,
//! keeps at most `qd` commands in flight on a [`backend::Backend`] (the
//! in-process emulator, an iSCSI target, a Linux SG_IO device), paces them
//! as recorded or as fast as possible, and keeps the recording's ordering
//! where it matters ([`options::Order`]). Writes carry the recording's data
//! or self-describing blocks ([`data`]), so [`verify`] can judge every
//! block read back with the consistency oracle and name what went wrong
//! (stale, misdirected, dropped, torn, garbage). [`latency`] and [`report`]
//! turn completions into HdrHistogram percentiles, an interval log, an SVG
//! plot and a baseline comparison; [`suite`] runs a folder of traces
//! against their expectations for CI.
//!
//! ```
//! use replayer::options::{Order, Timing};
//! let t: Timing = "scale=2".parse().unwrap();
//! assert_eq!(t, Timing::Scaled(2.0));
//! assert_eq!("overlap".parse::<Order>().unwrap(), Order::Overlap);
//! ```

#![deny(missing_docs)]

pub mod backend;
pub mod data;
pub mod engine;
pub mod error;
pub mod extents;
pub mod latency;
pub mod options;
pub mod progress;
pub mod report;
pub mod runner;
pub mod source;
pub mod suite;
pub mod verify;

pub use backend::{Backend, BackendError, Outcome, Request};
pub use engine::{Engine, RunResult};
pub use error::ReplayError;
pub use options::{LunMap, Order, ReplayOptions, Timing};
pub use source::{FileTrace, MemoryTrace, TraceSource};
