//! LibAFL campaigns over programs of SCSI operations: domain mutators, state-coverage feedback from the emulator, a crash-consistency oracle as objective, and minimised reproducers written as traces.

#![deny(missing_docs)]

pub mod mutators;
pub mod program;
pub mod seeds;
