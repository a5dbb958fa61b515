//! The seam between the iSCSI target and the logical units it serves.
//!
//! The target knows nothing of SBC: it hands each command's CDB and
//! Data-Out to a [`ScsiDevice`] and carries the outcome back. `scuzz serve`
//! plugs in the emulator (see [`crate::target::emulator`]); anything else
//! that executes CDBs can be served the same way.

use std::sync::{Arc, Mutex};

/// One SCSI command as the device server receives it.
#[derive(Debug, Clone, Copy)]
pub struct ScsiRequest<'a> {
    /// The SCSI initiator port name (`InitiatorName,i,0xISID`, RFC 7143
    /// §10.1.1): reservations and unit attentions are per I_T nexus.
    pub initiator: &'a str,
    /// Flat LUN.
    pub lun: u64,
    /// The CDB (16 bytes from the BHS plus any extended CDB).
    pub cdb: &'a [u8],
    /// Data-Out as received (exactly ExpectedDataTransferLength bytes, or
    /// fewer if the command carried none).
    pub data_out: &'a [u8],
    /// ExpectedDataTransferLength: the most Data-In the initiator accepts
    /// (for a write, the Data-Out length it announced).
    pub expected_length: u32,
}

/// A device's answer to a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScsiOutcome {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data (sent only with CHECK CONDITION).
    pub sense: Vec<u8>,
    /// Residual in bytes between the transfer the CDB asked for and the
    /// expected length: positive for underflow, negative for overflow
    /// (SAM-5 §5.3, RFC 7143 §11.4.5).
    pub residual: i64,
}

/// Reset scope of a task-management function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetScope {
    /// LOGICAL UNIT RESET of one LUN.
    Lun(u64),
    /// TARGET WARM RESET (`cold: false`) or TARGET COLD RESET.
    Target {
        /// Cold reset: as a power cycle of the target.
        cold: bool,
    },
}

/// What an iSCSI target needs from the logical units behind it.
pub trait ScsiDevice: Send {
    /// Executes one command. Data-In goes into `data_in` (cleared by the
    /// caller), at most `expected_length` bytes of it are sent.
    fn execute(&mut self, req: &ScsiRequest<'_>, data_in: &mut Vec<u8>) -> ScsiOutcome;

    /// Whether `lun` exists (for the TMF "LUN does not exist" response).
    fn has_lun(&self, lun: u64) -> bool;

    /// A LOGICAL UNIT RESET or TARGET RESET requested by `initiator`.
    fn reset(&mut self, scope: ResetScope, initiator: &str);

    /// The I_T nexus of `initiator` is gone (session closed or dropped).
    fn nexus_lost(&mut self, _initiator: &str) {}
}

/// A device shared by every session of a target: they all see one disk.
pub type SharedDevice = Arc<Mutex<dyn ScsiDevice>>;
