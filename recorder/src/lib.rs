//! Capture: how real CDB streams enter Scuzz.
//!
//! A user captures production workloads; a developer without the hardware
//! synthesizes the same streams. Every path ends in [`trace::Event`]s that a
//! [`trace::file::TraceWriter`] stores:
//!
//! - [`proxy`]: the recording iSCSI proxy behind `scuzz record`, between
//!   any initiator and any target;
//! - [`synth`]: models of `cp` and `fio` through the page cache or direct
//!   I/O, shaped by the HBA preset's OS splitter limits
//!   ([`synth::cp::synth_cp`], [`synth::fio::synth_fio`]);
//! - [`dext`]: the ring-buffer layout the DriverKit capture shim
//!   (`recorder/dext/scuzz_capture.{h,c}`) writes, and its importer;
//! - [`ftrace`]: Linux `scsi_dispatch_cmd_*` trace events;
//! - [`fio_iolog`]: fio iolog v2/v3 import and v3 export;
//! - [`import`]: the line-numbered warnings the text importers share;
//!   [`cdbs`]: the CDBs producers build.
//!
//! ```
//! use recorder::synth::{cp::{synth_cp, CpParams}, Machine};
//! use trace::HbaPreset;
//!
//! let machine = Machine { hba: HbaPreset::lsi3108(), ..Machine::default() };
//! let mut events = Vec::new();
//! let summary = synth_cp(&CpParams::new(machine, 4 << 20), &mut |e| {
//!     events.push(e);
//!     Ok(())
//! })?;
//! assert!(summary.writes.max_bytes <= 512 << 10);
//! assert_eq!(summary.flushes, 1);
//! # Ok::<(), recorder::synth::SynthError>(())
//! ```

#![deny(missing_docs)]
// `u64::is_multiple_of` is Rust 1.87; the workspace's MSRV is 1.85.
#![allow(unknown_lints, clippy::manual_is_multiple_of)]

pub mod cdbs;
pub mod dext;
pub mod fio_iolog;
pub mod ftrace;
pub mod import;
pub mod proxy;
pub mod synth;
