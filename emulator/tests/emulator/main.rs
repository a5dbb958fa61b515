//! Integration tests of the emulator, one module per concern: the SBC
//! target, the HBA path, the bug catalogue against the oracle, and the
//! no-bug property test.

mod bugs;
mod hba;
mod property;
mod rig;
mod sbc;
