//! Integration tests of the emulator, one module per concern: the SBC
//! target, the HBA path, the bug catalogue against the oracle, the no-bug
//! property test, and the tagged data path against the byte path.

mod bugs;
mod hba;
mod property;
mod rig;
mod sbc;
mod tagged;
