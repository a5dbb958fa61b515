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
    next_id: InitiatorId,
}

impl EmulatorDevice {
    /// Serves `emu`.
    pub fn new(emu: Emulator) -> EmulatorDevice {
        EmulatorDevice {
            emu,
            initiators: HashMap::new(),
            next_id: 1,
        }
    }

    /// The emulator (for power loss, coverage, inspection).
    pub fn emulator(&mut self) -> &mut Emulator {
        &mut self.emu
    }

    fn id(&mut self, port: &str) -> InitiatorId {
        // Ids start at 1: the emulator's `execute` speaks as initiator 0, so
        // in-process callers never alias a network initiator. They are never
        // reused, so a unit attention owed to a gone nexus cannot reach a
        // new one.
        if let Some(&id) = self.initiators.get(port) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.initiators.insert(port.to_string(), id);
        id
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

    fn nexus_lost(&mut self, initiator: &str) {
        // SPC-2 §5.5.1: a RESERVE(6)/(10) reservation is released when its
        // I_T nexus is lost (logout, dropped connection). The emulator's own
        // entry point does that without executing a command, so a pending
        // unit attention for this initiator is not consumed on its behalf.
        if let Some(id) = self.initiators.remove(initiator) {
            self.emu.nexus_lost(id);
        }
    }

    fn reset(&mut self, scope: ResetScope, _initiator: &str) {
        // SAM-5 §6.3.3: a LOGICAL UNIT RESET touches one unit (UNIT
        // ATTENTION, task set cleared, reservation released); a target
        // reset touches every unit.
        // A TARGET COLD RESET is the target's power cycle (RFC 7143
        // §11.5.1 ends every session; SAM-5 treats it as a power on): the
        // emulated disk loses what its volatile cache held, which is what
        // lets `scuzz fuzz --to iscsi://... --cold-reset` cut power.
        match scope {
            ResetScope::Lun(lun) => self.emu.reset_lun(lun),
            ResetScope::Target { cold: false } => self.emu.reset(),
            ResetScope::Target { cold: true } => {
                self.emu.power_loss();
            }
        }
    }
}
