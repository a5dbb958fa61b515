//! The emulator as a [`ScsiDevice`]: what `scuzz serve` exports.
//!
//! Each SCSI initiator port (InitiatorName plus ISID) becomes one emulator
//! [`InitiatorId`], so reservations and unit attentions are kept per I_T
//! nexus as SPC requires, and two sessions from one host are two initiators.

use super::device::{ResetScope, ScsiDevice, ScsiOutcome, ScsiRequest};
use emulator::{Emulator, InitiatorId};
use std::collections::HashMap;

/// An [`Emulator`] served over iSCSI.
#[derive(Debug)]
pub struct EmulatorDevice {
    emu: Emulator,
    initiators: HashMap<String, InitiatorId>,
}

impl EmulatorDevice {
    /// Serves `emu`.
    pub fn new(emu: Emulator) -> EmulatorDevice {
        EmulatorDevice {
            emu,
            initiators: HashMap::new(),
        }
    }

    /// The emulator (for power loss, coverage, inspection).
    pub fn emulator(&mut self) -> &mut Emulator {
        &mut self.emu
    }

    fn id(&mut self, port: &str) -> InitiatorId {
        // Ids start at 1: the emulator's `execute` speaks as initiator 0, so
        // in-process callers never alias a network initiator.
        let next = self.initiators.len() as InitiatorId + 1;
        *self.initiators.entry(port.to_string()).or_insert(next)
    }
}

impl ScsiDevice for EmulatorDevice {
    fn execute(&mut self, req: &ScsiRequest<'_>, data_in: &mut Vec<u8>) -> ScsiOutcome {
        let id = self.id(req.initiator);
        let out = self.emu.execute_from(
            id,
            req.lun,
            req.cdb,
            req.data_out,
            data_in,
            req.expected_length,
        );
        ScsiOutcome {
            status: out.status.0,
            sense: out.sense,
            residual: out.residual,
        }
    }

    fn has_lun(&self, lun: u64) -> bool {
        lun < u64::from(self.emu.config().luns)
    }

    fn reset(&mut self, _scope: ResetScope, _initiator: &str) {
        // The emulator models a target reset; a LUN reset has the same
        // observable effect on a unit (SAM-5 §6.3.3: UNIT ATTENTION, task
        // set cleared, reservations released).
        self.emu.reset();
    }
}
