//! Errors, and the wire answer each one becomes.
//!
//! [`EmulatorError`] is for the caller that builds an emulator with a bad
//! configuration. [`CommandError`] is what the device server answers a
//! command with: every variant knows its SCSI status and, for CHECK
//! CONDITION, its sense key / additional sense code (SPC-4 4.5), so the
//! executor returns errors and one place turns them into bytes.

use std::fmt;
use trace::ScsiStatus;

/// A configuration the emulator cannot be built with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// SBC allows any block size; the emulator models the two disks ship with.
    #[error("block size {0} is not supported (512 or 4096)")]
    BlockSize(u32),
    /// The capacity must be at least one block and its byte size must fit in 64 bits.
    #[error("capacity of {0} blocks is out of range")]
    Capacity(u64),
    /// At least one LUN; at most 256 (single-level flat LUN addressing).
    #[error("LUN count {0} is out of range (1..=256)")]
    Luns(u32),
    /// The cache must hold at least one block.
    #[error("cache capacity must be at least one block")]
    CacheCapacity,
}

/// SPC-4 table 48: the sense keys the emulator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// 0h: nothing to report.
    NoSense = 0x0,
    /// 2h: the logical unit is not accessible.
    NotReady = 0x2,
    /// 3h: unrecovered read error.
    MediumError = 0x3,
    /// 4h: the device failed.
    HardwareError = 0x4,
    /// 5h: the command or its parameters were wrong.
    IllegalRequest = 0x5,
    /// 6h: something changed the initiator should know about.
    UnitAttention = 0x6,
    /// 7h: write protected.
    DataProtect = 0x7,
    /// Bh: the device server aborted the command.
    AbortedCommand = 0xb,
    /// Eh: a compare (COMPARE AND WRITE, VERIFY BYTCHK) failed.
    Miscompare = 0xe,
}

/// Where in the CDB or parameter list the offending field is (SPC-4
/// 4.5.2.4.2, sense-key specific field pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True: the field is in the CDB; false: in the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit of the field, if it is narrower than a byte.
    pub bit: Option<u8>,
}

/// A CHECK CONDITION: sense key, ASC/ASCQ, and the optional INFORMATION and
/// field-pointer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckCondition {
    /// Sense key.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION field (VALID set), e.g. the miscompare offset.
    pub info: Option<u64>,
    /// Sense-key specific field pointer (SKSV set).
    pub field: Option<FieldPointer>,
}

impl CheckCondition {
    /// A sense key with ASC/ASCQ and nothing else.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Self {
        CheckCondition {
            key,
            asc,
            ascq,
            info: None,
            field: None,
        }
    }

    /// 20/00 INVALID COMMAND OPERATION CODE.
    pub const fn invalid_opcode() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x20, 0x00)
    }

    /// 24/00 INVALID FIELD IN CDB, pointing at `byte` (and `bit`).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Self {
        let mut c = Self::new(SenseKey::IllegalRequest, 0x24, 0x00);
        c.field = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        });
        c
    }

    /// 26/00 INVALID FIELD IN PARAMETER LIST, pointing at `byte`.
    pub const fn invalid_field_in_parameter_list(byte: u16) -> Self {
        let mut c = Self::new(SenseKey::IllegalRequest, 0x26, 0x00);
        c.field = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit: None,
        });
        c
    }

    /// 1A/00 PARAMETER LIST LENGTH ERROR.
    pub const fn parameter_list_length() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x1a, 0x00)
    }

    /// 21/00 LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x00)
    }

    /// 25/00 LOGICAL UNIT NOT SUPPORTED.
    pub const fn lun_not_supported() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x25, 0x00)
    }

    /// 29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const fn power_on_reset() -> Self {
        Self::new(SenseKey::UnitAttention, 0x29, 0x00)
    }

    /// 2A/01 MODE PARAMETERS CHANGED.
    pub const fn mode_parameters_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2a, 0x01)
    }

    /// 2A/03 RESERVATIONS PREEMPTED.
    pub const fn reservations_preempted() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2a, 0x03)
    }

    /// 1D/00 MISCOMPARE DURING VERIFY OPERATION, with the offset of the first
    /// differing byte in INFORMATION (SBC-3 5.2 COMPARE AND WRITE).
    pub const fn miscompare(offset: u64) -> Self {
        let mut c = Self::new(SenseKey::Miscompare, 0x1d, 0x00);
        c.info = Some(offset);
        c
    }

    /// 04/02 LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (after
    /// START STOP UNIT with START=0).
    pub const fn not_ready_stopped() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x02)
    }

    /// 0C/00 WRITE ERROR: the controller could not move the data (a DMA
    /// through memory it cannot address, with no bounce buffer).
    pub const fn write_error() -> Self {
        Self::new(SenseKey::MediumError, 0x0c, 0x00)
    }

    /// 44/00 INTERNAL TARGET FAILURE.
    pub const fn internal_target_failure() -> Self {
        Self::new(SenseKey::HardwareError, 0x44, 0x00)
    }

    /// Fixed-format sense data (SPC-4 4.5.3), 18 bytes.
    pub fn to_fixed(&self) -> Vec<u8> {
        let mut s = vec![0u8; 18];
        s[0] = 0x70;
        if let Some(info) = self.info {
            s[0] |= 0x80;
            // INFORMATION is four bytes in fixed format; larger values
            // saturate, as SPC-4 leaves them to descriptor format.
            let v = u32::try_from(info).unwrap_or(u32::MAX);
            s[3..7].copy_from_slice(&v.to_be_bytes());
        }
        s[2] = self.key as u8;
        s[7] = 10; // ADDITIONAL SENSE LENGTH
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(fp) = self.field {
            s[15] = 0x80 | if fp.in_cdb { 0x40 } else { 0 };
            if let Some(bit) = fp.bit {
                s[15] |= 0x08 | (bit & 7);
            }
            s[16..18].copy_from_slice(&fp.byte.to_be_bytes());
        }
        s
    }
}

impl fmt::Display for CheckCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sense key {:x}h, ASC/ASCQ {:02x}h/{:02x}h",
            self.key as u8, self.asc, self.ascq
        )
    }
}

/// How the device server ends a command that does not complete GOOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// CHECK CONDITION with sense data.
    #[error("CHECK CONDITION: {0}")]
    Check(CheckCondition),
    /// RESERVATION CONFLICT (SPC-4 5.9): another I_T nexus holds the unit.
    #[error("RESERVATION CONFLICT")]
    ReservationConflict,
}

impl CommandError {
    /// The SCSI status this error is reported with.
    pub fn status(&self) -> ScsiStatus {
        match self {
            CommandError::Check(_) => ScsiStatus::CHECK_CONDITION,
            CommandError::ReservationConflict => ScsiStatus::RESERVATION_CONFLICT,
        }
    }

    /// Sense bytes, empty unless CHECK CONDITION.
    pub fn sense(&self) -> Vec<u8> {
        match self {
            CommandError::Check(c) => c.to_fixed(),
            CommandError::ReservationConflict => Vec::new(),
        }
    }
}

impl From<CheckCondition> for CommandError {
    fn from(c: CheckCondition) -> Self {
        CommandError::Check(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sense_carries_key_asc_and_field_pointer() {
        let s = CheckCondition::invalid_field_in_cdb(1, Some(3)).to_fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!((s[12], s[13]), (0x24, 0x00));
        assert_eq!(s[15], 0x80 | 0x40 | 0x08 | 3);
        assert_eq!(&s[16..18], &[0, 1]);
        let m = CheckCondition::miscompare(513).to_fixed();
        assert_eq!(m[0], 0xf0);
        assert_eq!(&m[3..7], &513u32.to_be_bytes());
        assert_eq!(m[2], 0x0e);
    }
}
