//! The shared language of Scuzz.
//!
//! Every producer of SCSI workloads (the recording proxy, the DEXT capture
//! shim, importers, synthesizers, the fuzzer) writes a trace, and every
//! consumer (replayer, fuzzer seeds, `scuzz show`/`stats`/`diff`) reads one.
//! This crate holds what they share: the command model ([`command`]), CDB
//! decode and encode ([`cdb`]), sense data ([`sense`]), HBA constraints
//! ([`hba`]), the trace file format ([`file`](mod@file)) and self-describing block data
//! ([`pattern`]).

#![deny(missing_docs)]

pub mod cdb;
pub mod command;
pub mod diff;
pub mod file;
pub mod hash;
pub mod hba;
pub mod oracle;
pub mod pattern;
pub mod sense;
pub mod stats;
pub mod units;

pub use cdb::{Cdb, CdbError, CdbSize, Rw};
pub use command::{
    Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
    TaskAttr,
};
pub use file::{Compression, PayloadMode, TraceError, TraceHeader, TraceReader, TraceWriter};
pub use hba::{HbaConstraints, HbaPreset};
pub use pattern::{BlockState, BlockTag, Classification};
pub use sense::{describe_status, Asc, SenseData, SenseError, SenseFormat, SenseKey};
pub use units::{Lba, PhysAddr};
