//! LibAFL campaigns over programs of SCSI operations: domain mutators, state-coverage feedback from the emulator, a crash-consistency oracle as objective, and minimised reproducers written as traces.

#![deny(missing_docs)]

pub mod campaign;
pub mod findings;
pub mod generator;
pub mod harness;
pub mod mutators;
pub mod program;
pub mod seeds;
pub mod stats;
pub mod verdict;
