//! Sense data: what a device says when a command ends in CHECK CONDITION.
//!
//! Parses and builds both formats of SPC-4 4.5: fixed (response codes
//! 70h current / 71h deferred, 4.5.3) and descriptor (72h / 73h, 4.5.2, with
//! the information (00h) and sense-key-specific (02h) descriptors). Names of
//! sense keys and ASC/ASCQ pairs come from one table each, so `scuzz show`,
//! the emulator and the replayer spell them the same way.
//!
//! ```
//! use trace::sense::{Asc, SenseData, SenseKey};
//! let bytes = [0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0x00, 0, 0, 0, 0];
//! let sense = SenseData::parse(&bytes)?;
//! assert_eq!((sense.key, sense.asc_pair()), (SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB));
//! assert_eq!(sense.to_string(), "ILLEGAL REQUEST 24/00 invalid field in CDB");
//! assert_eq!(SenseData::invalid_field_in_cdb().to_fixed(), bytes);
//! # Ok::<(), trace::sense::SenseError>(())
//! ```

use crate::command::ScsiStatus;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! sense_keys {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        /// SENSE KEY (SPC-4 4.5.6; 0Ch is obsolete, 0Fh is COMPLETED in SPC-5).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum SenseKey {
            $(
                #[doc = $name]
                $variant = $code,
            )*
        }

        impl SenseKey {
            /// The key for the low four bits of `code`.
            pub fn from_code(code: u8) -> SenseKey {
                // Listed in code order, so the table's index is the code.
                const KEYS: [SenseKey; 16] = [$(SenseKey::$variant,)*];
                KEYS[usize::from(code & 0x0f)]
            }

            /// The key's name as SPC-4 spells it.
            pub fn name(self) -> &'static str {
                match self {
                    $(SenseKey::$variant => $name,)*
                }
            }
        }
    };
}

sense_keys! {
    NoSense = 0x0, "NO SENSE";
    RecoveredError = 0x1, "RECOVERED ERROR";
    NotReady = 0x2, "NOT READY";
    MediumError = 0x3, "MEDIUM ERROR";
    HardwareError = 0x4, "HARDWARE ERROR";
    IllegalRequest = 0x5, "ILLEGAL REQUEST";
    UnitAttention = 0x6, "UNIT ATTENTION";
    DataProtect = 0x7, "DATA PROTECT";
    BlankCheck = 0x8, "BLANK CHECK";
    VendorSpecific = 0x9, "VENDOR SPECIFIC";
    CopyAborted = 0xa, "COPY ABORTED";
    AbortedCommand = 0xb, "ABORTED COMMAND";
    Equal = 0xc, "EQUAL";
    VolumeOverflow = 0xd, "VOLUME OVERFLOW";
    Miscompare = 0xe, "MISCOMPARE";
    Completed = 0xf, "COMPLETED";
}

impl SenseKey {
    /// The four-bit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ADDITIONAL SENSE CODE and its QUALIFIER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Asc {
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
}

macro_rules! asc_table {
    ($($konst:ident = ($asc:literal, $ascq:literal), $text:literal;)*) => {
        impl Asc {
            $(
                #[doc = concat!("`", stringify!($asc), "/", stringify!($ascq), "`: ", $text, ".")]
                pub const $konst: Asc = Asc { asc: $asc, ascq: $ascq };
            )*
        }

        /// Every named pair, sorted by code: `(asc, ascq, text)`.
        const ASC_NAMES: &[(u8, u8, &str)] = &[$(($asc, $ascq, $text),)*];
    };
}

// SPC-4 Annex D wording, lower case except acronyms, as
// sg3_utils and the Linux kernel print them. Keep sorted: lookup is a binary
// search.
asc_table! {
    NO_ADDITIONAL_SENSE = (0x00, 0x00), "no additional sense information";
    IO_PROCESS_TERMINATED = (0x00, 0x06), "I/O process terminated";
    OPERATION_IN_PROGRESS = (0x00, 0x16), "operation in progress";
    CLEANING_REQUESTED = (0x00, 0x17), "cleaning requested";
    ATA_PASS_THROUGH_INFORMATION_AVAILABLE = (0x00, 0x1d), "ATA pass through information available";
    NO_SEEK_COMPLETE = (0x02, 0x00), "no seek complete";
    PERIPHERAL_DEVICE_WRITE_FAULT = (0x03, 0x00), "peripheral device write fault";
    NOT_READY_CAUSE_NOT_REPORTABLE = (0x04, 0x00), "logical unit not ready, cause not reportable";
    NOT_READY_BECOMING_READY = (0x04, 0x01), "logical unit is in process of becoming ready";
    NOT_READY_INITIALIZING_COMMAND_REQUIRED = (0x04, 0x02), "logical unit not ready, initializing command required";
    NOT_READY_MANUAL_INTERVENTION_REQUIRED = (0x04, 0x03), "logical unit not ready, manual intervention required";
    NOT_READY_FORMAT_IN_PROGRESS = (0x04, 0x04), "logical unit not ready, format in progress";
    NOT_READY_REBUILD_IN_PROGRESS = (0x04, 0x05), "logical unit not ready, rebuild in progress";
    NOT_READY_RECALCULATION_IN_PROGRESS = (0x04, 0x06), "logical unit not ready, recalculation in progress";
    NOT_READY_OPERATION_IN_PROGRESS = (0x04, 0x07), "logical unit not ready, operation in progress";
    NOT_READY_LONG_WRITE_IN_PROGRESS = (0x04, 0x08), "logical unit not ready, long write in progress";
    NOT_READY_SELF_TEST_IN_PROGRESS = (0x04, 0x09), "logical unit not ready, self-test in progress";
    NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION = (0x04, 0x0a), "logical unit not accessible, asymmetric access state transition";
    NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY = (0x04, 0x0b), "logical unit not accessible, target port in standby state";
    NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE = (0x04, 0x0c), "logical unit not accessible, target port in unavailable state";
    NOT_READY_STRUCTURE_CHECK_REQUIRED = (0x04, 0x0d), "logical unit not ready, structure check required";
    NOT_READY_AUXILIARY_MEMORY_NOT_ACCESSIBLE = (0x04, 0x10), "logical unit not ready, auxiliary memory not accessible";
    NOT_READY_NOTIFY_REQUIRED = (0x04, 0x11), "logical unit not ready, notify (enable spinup) required";
    NOT_READY_OFFLINE = (0x04, 0x12), "logical unit not ready, offline";
    NOT_READY_SANITIZE_IN_PROGRESS = (0x04, 0x1b), "logical unit not ready, sanitize in progress";
    NOT_READY_ADDITIONAL_POWER_NOT_GRANTED = (0x04, 0x1c), "logical unit not ready, additional power use not yet granted";
    DOES_NOT_RESPOND_TO_SELECTION = (0x05, 0x00), "logical unit does not respond to selection";
    COMMUNICATION_FAILURE = (0x08, 0x00), "logical unit communication failure";
    COMMUNICATION_TIMEOUT = (0x08, 0x01), "logical unit communication time-out";
    COMMUNICATION_PARITY_ERROR = (0x08, 0x02), "logical unit communication parity error";
    WRITE_ERROR = (0x0c, 0x00), "write error";
    WRITE_ERROR_AUTO_REALLOCATION_FAILED = (0x0c, 0x02), "write error - auto reallocation failed";
    WRITE_ERROR_RECOMMEND_REASSIGNMENT = (0x0c, 0x03), "write error - recommend reassignment";
    INFORMATION_UNIT_TOO_SHORT = (0x0e, 0x01), "information unit too short";
    INFORMATION_UNIT_TOO_LONG = (0x0e, 0x02), "information unit too long";
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = (0x0e, 0x03), "invalid field in command information unit";
    ID_CRC_OR_ECC_ERROR = (0x10, 0x00), "ID CRC or ECC error";
    LOGICAL_BLOCK_GUARD_CHECK_FAILED = (0x10, 0x01), "logical block guard check failed";
    LOGICAL_BLOCK_APPLICATION_TAG_CHECK_FAILED = (0x10, 0x02), "logical block application tag check failed";
    LOGICAL_BLOCK_REFERENCE_TAG_CHECK_FAILED = (0x10, 0x03), "logical block reference tag check failed";
    UNRECOVERED_READ_ERROR = (0x11, 0x00), "unrecovered read error";
    READ_RETRIES_EXHAUSTED = (0x11, 0x01), "read retries exhausted";
    UNRECOVERED_READ_ERROR_AUTO_REALLOCATE_FAILED = (0x11, 0x04), "unrecovered read error - auto reallocate failed";
    RECORD_NOT_FOUND = (0x14, 0x01), "record not found";
    PARAMETER_LIST_LENGTH_ERROR = (0x1a, 0x00), "parameter list length error";
    MISCOMPARE_DURING_VERIFY = (0x1d, 0x00), "miscompare during verify operation";
    INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00), "invalid command operation code";
    ACCESS_DENIED_NO_ACCESS_RIGHTS = (0x20, 0x02), "access denied - no access rights";
    LBA_OUT_OF_RANGE = (0x21, 0x00), "logical block address out of range";
    INVALID_ELEMENT_ADDRESS = (0x21, 0x01), "invalid element address";
    INVALID_ADDRESS_FOR_WRITE = (0x21, 0x02), "invalid address for write";
    INVALID_FIELD_IN_CDB = (0x24, 0x00), "invalid field in CDB";
    LOGICAL_UNIT_NOT_SUPPORTED = (0x25, 0x00), "logical unit not supported";
    INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00), "invalid field in parameter list";
    PARAMETER_NOT_SUPPORTED = (0x26, 0x01), "parameter not supported";
    PARAMETER_VALUE_INVALID = (0x26, 0x02), "parameter value invalid";
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION = (0x26, 0x04), "invalid release of persistent reservation";
    WRITE_PROTECTED = (0x27, 0x00), "write protected";
    HARDWARE_WRITE_PROTECTED = (0x27, 0x01), "hardware write protected";
    SOFTWARE_WRITE_PROTECTED = (0x27, 0x02), "logical unit software write protected";
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = (0x27, 0x07), "space allocation failed write protect";
    NOT_READY_TO_READY_CHANGE = (0x28, 0x00), "not ready to ready change, medium may have changed";
    POWER_ON_RESET = (0x29, 0x00), "power on, reset, or bus device reset occurred";
    POWER_ON_OCCURRED = (0x29, 0x01), "power on occurred";
    SCSI_BUS_RESET_OCCURRED = (0x29, 0x02), "SCSI bus reset occurred";
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = (0x29, 0x03), "bus device reset function occurred";
    DEVICE_INTERNAL_RESET = (0x29, 0x04), "device internal reset";
    TRANSCEIVER_MODE_CHANGED_TO_SINGLE_ENDED = (0x29, 0x05), "transceiver mode changed to single-ended";
    TRANSCEIVER_MODE_CHANGED_TO_LVD = (0x29, 0x06), "transceiver mode changed to LVD";
    I_T_NEXUS_LOSS_OCCURRED = (0x29, 0x07), "I_T nexus loss occurred";
    PARAMETERS_CHANGED = (0x2a, 0x00), "parameters changed";
    MODE_PARAMETERS_CHANGED = (0x2a, 0x01), "mode parameters changed";
    LOG_PARAMETERS_CHANGED = (0x2a, 0x02), "log parameters changed";
    RESERVATIONS_PREEMPTED = (0x2a, 0x03), "reservations preempted";
    RESERVATIONS_RELEASED = (0x2a, 0x04), "reservations released";
    REGISTRATIONS_PREEMPTED = (0x2a, 0x05), "registrations preempted";
    ASYMMETRIC_ACCESS_STATE_CHANGED = (0x2a, 0x06), "asymmetric access state changed";
    CAPACITY_DATA_HAS_CHANGED = (0x2a, 0x09), "capacity data has changed";
    TIMESTAMP_CHANGED = (0x2a, 0x10), "timestamp changed";
    COMMAND_SEQUENCE_ERROR = (0x2c, 0x00), "command sequence error";
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (0x2f, 0x00), "commands cleared by another initiator";
    COMMANDS_CLEARED_BY_POWER_LOSS_NOTIFICATION = (0x2f, 0x01), "commands cleared by power loss notification";
    COMMANDS_CLEARED_BY_DEVICE_SERVER = (0x2f, 0x02), "commands cleared by device server";
    MEDIUM_FORMAT_CORRUPTED = (0x31, 0x00), "medium format corrupted";
    NO_DEFECT_SPARE_LOCATION_AVAILABLE = (0x32, 0x00), "no defect spare location available";
    ROUNDED_PARAMETER = (0x37, 0x00), "rounded parameter";
    THIN_PROVISIONING_SOFT_THRESHOLD_REACHED = (0x38, 0x07), "thin provisioning soft threshold reached";
    SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00), "saving parameters not supported";
    MEDIUM_NOT_PRESENT = (0x3a, 0x00), "medium not present";
    MEDIUM_NOT_PRESENT_TRAY_CLOSED = (0x3a, 0x01), "medium not present - tray closed";
    MEDIUM_NOT_PRESENT_TRAY_OPEN = (0x3a, 0x02), "medium not present - tray open";
    LOGICAL_UNIT_NOT_SELF_CONFIGURED = (0x3e, 0x00), "logical unit has not self-configured yet";
    LOGICAL_UNIT_FAILURE = (0x3e, 0x01), "logical unit failure";
    TIMEOUT_ON_LOGICAL_UNIT = (0x3e, 0x02), "timeout on logical unit";
    TARGET_OPERATING_CONDITIONS_CHANGED = (0x3f, 0x00), "target operating conditions have changed";
    MICROCODE_CHANGED = (0x3f, 0x01), "microcode has been changed";
    INQUIRY_DATA_CHANGED = (0x3f, 0x03), "inquiry data has changed";
    REPORTED_LUNS_DATA_CHANGED = (0x3f, 0x0e), "reported LUNs data has changed";
    INTERNAL_TARGET_FAILURE = (0x44, 0x00), "internal target failure";
    SCSI_PARITY_ERROR = (0x47, 0x00), "SCSI parity error";
    IU_CRC_ERROR_DETECTED = (0x47, 0x03), "information unit iuCRC error detected";
    INITIATOR_DETECTED_ERROR_MESSAGE_RECEIVED = (0x48, 0x00), "initiator detected error message received";
    INVALID_MESSAGE_ERROR = (0x49, 0x00), "invalid message error";
    DATA_PHASE_ERROR = (0x4b, 0x00), "data phase error";
    OVERLAPPED_COMMANDS_ATTEMPTED = (0x4e, 0x00), "overlapped commands attempted";
    MEDIUM_REMOVAL_PREVENTED = (0x53, 0x02), "medium removal prevented";
    INSUFFICIENT_RESOURCES = (0x55, 0x03), "insufficient resources";
    INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04), "insufficient registration resources";
    FAILURE_PREDICTION_THRESHOLD_EXCEEDED = (0x5d, 0x00), "failure prediction threshold exceeded";
    LOW_POWER_CONDITION_ON = (0x5e, 0x00), "low power condition on";
}

impl Asc {
    /// The pair `asc/ascq`.
    pub const fn new(asc: u8, ascq: u8) -> Asc {
        Asc { asc, ascq }
    }

    /// SPC-4's text for the pair, or `None` for one the table lacks.
    pub fn name(self) -> Option<&'static str> {
        ASC_NAMES
            .binary_search_by_key(&(self.asc, self.ascq), |&(a, q, _)| (a, q))
            .ok()
            .and_then(|i| ASC_NAMES.get(i))
            .map(|r| r.2)
    }
}

impl fmt::Display for Asc {
    /// `24/00 invalid field in CDB`; families whose qualifier is a
    /// parameter (40/NN, 4D/NN) and the vendor-specific range (80h and up)
    /// are described generically.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X}/{:02X} ", self.asc, self.ascq)?;
        match (self.name(), self.asc, self.ascq) {
            (Some(name), _, _) => f.write_str(name),
            (None, 0x40, q) => write!(f, "diagnostic failure on component {q:02X}h"),
            (None, 0x4d, q) => write!(f, "tagged overlapped commands (task tag {q:02X}h)"),
            (None, a, _) if a >= 0x80 => f.write_str("vendor specific"),
            (None, _, q) if q >= 0x80 => f.write_str("vendor specific qualifier"),
            (None, _, _) => f.write_str("unknown additional sense code"),
        }
    }
}

/// Which sense data format, and whether it reports the current command or a
/// deferred error (SPC-4 4.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SenseFormat {
    /// Fixed format, current error (70h).
    FixedCurrent,
    /// Fixed format, deferred error (71h).
    FixedDeferred,
    /// Descriptor format, current error (72h).
    DescriptorCurrent,
    /// Descriptor format, deferred error (73h).
    DescriptorDeferred,
}

impl SenseFormat {
    /// RESPONSE CODE byte value.
    pub fn response_code(self) -> u8 {
        match self {
            SenseFormat::FixedCurrent => 0x70,
            SenseFormat::FixedDeferred => 0x71,
            SenseFormat::DescriptorCurrent => 0x72,
            SenseFormat::DescriptorDeferred => 0x73,
        }
    }

    /// Whether this is descriptor format.
    pub fn is_descriptor(self) -> bool {
        matches!(
            self,
            SenseFormat::DescriptorCurrent | SenseFormat::DescriptorDeferred
        )
    }

    /// Whether this reports a deferred error.
    pub fn is_deferred(self) -> bool {
        matches!(
            self,
            SenseFormat::FixedDeferred | SenseFormat::DescriptorDeferred
        )
    }

    fn with(descriptor: bool, deferred: bool) -> SenseFormat {
        match (descriptor, deferred) {
            (false, false) => SenseFormat::FixedCurrent,
            (false, true) => SenseFormat::FixedDeferred,
            (true, false) => SenseFormat::DescriptorCurrent,
            (true, true) => SenseFormat::DescriptorDeferred,
        }
    }
}

/// Why sense bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenseError {
    /// No bytes.
    #[error("empty sense data")]
    Empty,
    /// RESPONSE CODE is not 70h-73h (7Fh vendor-specific included).
    #[error("sense data response code {0:#04x} is not 70h-73h")]
    UnknownResponseCode(u8),
    /// Fewer bytes than the format's fixed part.
    #[error("sense data of {got} bytes, {format} format needs at least {need}")]
    TooShort {
        /// "fixed" or "descriptor".
        format: &'static str,
        /// Bytes given.
        got: usize,
        /// Bytes required.
        need: usize,
    },
    /// A descriptor's ADDITIONAL LENGTH runs past the sense data.
    #[error("sense descriptor {descriptor_type:#04x} at byte {offset} runs past the end of the sense data")]
    DescriptorOverrun {
        /// DESCRIPTOR TYPE.
        descriptor_type: u8,
        /// Byte offset of the descriptor within the sense data.
        offset: usize,
    },
}

/// Parsed sense data, format-independent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SenseData {
    /// SENSE KEY.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION (fixed: bytes 3-6 when VALID; descriptor: type 00h with
    /// VALID). Command-specific: the first LBA in error, or the miscompare
    /// offset of COMPARE AND WRITE / VERIFY.
    pub information: Option<u64>,
    /// SENSE KEY SPECIFIC bytes when SKSV is set (SKSV itself is bit 7 of
    /// the first byte and is kept set).
    pub sense_key_specific: Option<[u8; 3]>,
    /// Format and current/deferred.
    pub format: SenseFormat,
}

/// Length of the fixed-format sense Scuzz builds: through the SENSE KEY
/// SPECIFIC field (SPC-4 4.5.3, ADDITIONAL SENSE LENGTH 10).
pub const FIXED_SENSE_LEN: usize = 18;

/// SENSE KEY SPECIFIC field pointer for ILLEGAL REQUEST (SPC-4 4.5.2.4.2):
/// `in_cdb` is C/D, `byte` the FIELD POINTER, `bit` the BIT POINTER (with
/// BPV set) when one bit is at fault.
pub fn field_pointer(in_cdb: bool, byte: u16, bit: Option<u8>) -> [u8; 3] {
    let [hi, lo] = byte.to_be_bytes();
    let bits = match bit {
        Some(b) => 0x08 | (b & 0x07),
        None => 0,
    };
    [0x80 | (u8::from(in_cdb) << 6) | bits, hi, lo]
}

impl SenseData {
    /// Current-error, fixed-format sense with this key and ASC/ASCQ.
    pub fn new(key: SenseKey, asc: Asc) -> SenseData {
        SenseData {
            key,
            asc: asc.asc,
            ascq: asc.ascq,
            information: None,
            sense_key_specific: None,
            format: SenseFormat::FixedCurrent,
        }
    }

    /// The ASC/ASCQ pair.
    pub fn asc_pair(&self) -> Asc {
        Asc::new(self.asc, self.ascq)
    }

    /// ILLEGAL REQUEST with the given ASC/ASCQ.
    pub fn illegal_request(asc: u8, ascq: u8) -> SenseData {
        SenseData::new(SenseKey::IllegalRequest, Asc::new(asc, ascq))
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20/00).
    pub fn invalid_opcode() -> SenseData {
        SenseData::new(
            SenseKey::IllegalRequest,
            Asc::INVALID_COMMAND_OPERATION_CODE,
        )
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00).
    pub fn invalid_field_in_cdb() -> SenseData {
        SenseData::new(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00) pointing at the
    /// offending byte (and bit) of the CDB.
    pub fn invalid_field_in_cdb_at(byte: u16, bit: Option<u8>) -> SenseData {
        SenseData {
            sense_key_specific: Some(field_pointer(true, byte, bit)),
            ..SenseData::invalid_field_in_cdb()
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26/00).
    pub fn invalid_field_in_parameter_list() -> SenseData {
        SenseData::new(
            SenseKey::IllegalRequest,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        )
    }

    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (1A/00).
    pub fn parameter_list_length_error() -> SenseData {
        SenseData::new(SenseKey::IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00).
    pub fn lba_out_of_range() -> SenseData {
        SenseData::new(SenseKey::IllegalRequest, Asc::LBA_OUT_OF_RANGE)
    }

    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (25/00).
    pub fn lun_not_supported() -> SenseData {
        SenseData::new(SenseKey::IllegalRequest, Asc::LOGICAL_UNIT_NOT_SUPPORTED)
    }

    /// UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29/00).
    pub fn unit_attention_power_on_reset() -> SenseData {
        SenseData::new(SenseKey::UnitAttention, Asc::POWER_ON_RESET)
    }

    /// UNIT ATTENTION, MODE PARAMETERS CHANGED (2A/01).
    pub fn unit_attention_mode_parameters_changed() -> SenseData {
        SenseData::new(SenseKey::UnitAttention, Asc::MODE_PARAMETERS_CHANGED)
    }

    /// UNIT ATTENTION, CAPACITY DATA HAS CHANGED (2A/09).
    pub fn unit_attention_capacity_changed() -> SenseData {
        SenseData::new(SenseKey::UnitAttention, Asc::CAPACITY_DATA_HAS_CHANGED)
    }

    /// NOT READY, MEDIUM NOT PRESENT (3A/00).
    pub fn medium_not_present() -> SenseData {
        SenseData::new(SenseKey::NotReady, Asc::MEDIUM_NOT_PRESENT)
    }

    /// NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED
    /// (04/02): the unit was stopped by START STOP UNIT.
    pub fn not_ready_initializing_command_required() -> SenseData {
        SenseData::new(
            SenseKey::NotReady,
            Asc::NOT_READY_INITIALIZING_COMMAND_REQUIRED,
        )
    }

    /// DATA PROTECT, WRITE PROTECTED (27/00).
    pub fn write_protected() -> SenseData {
        SenseData::new(SenseKey::DataProtect, Asc::WRITE_PROTECTED)
    }

    /// MEDIUM ERROR, UNRECOVERED READ ERROR (11/00) at `lba`.
    pub fn unrecovered_read_error(lba: u64) -> SenseData {
        SenseData {
            information: Some(lba),
            ..SenseData::new(SenseKey::MediumError, Asc::UNRECOVERED_READ_ERROR)
        }
    }

    /// MEDIUM ERROR, WRITE ERROR (0C/00) at `lba`.
    pub fn write_error(lba: u64) -> SenseData {
        SenseData {
            information: Some(lba),
            ..SenseData::new(SenseKey::MediumError, Asc::WRITE_ERROR)
        }
    }

    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00).
    pub fn internal_target_failure() -> SenseData {
        SenseData::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE)
    }

    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (0E, 1D/00) with the
    /// INFORMATION field set to the byte offset of the first miscompare
    /// (SBC-3 COMPARE AND WRITE, and VERIFY with BYTCHK).
    pub fn miscompare(offset: u64) -> SenseData {
        SenseData {
            information: Some(offset),
            ..SenseData::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY)
        }
    }

    /// The same sense in another format (current/deferred kept).
    pub fn with_descriptor_format(mut self, descriptor: bool) -> SenseData {
        self.format = SenseFormat::with(descriptor, self.format.is_deferred());
        self
    }

    /// Parses fixed (70h/71h) or descriptor (72h/73h) sense data.
    ///
    /// Bounds-checked throughout; fields a short but well-formed fixed
    /// sense omits (some targets stop after byte 7) read as zero.
    /// Descriptors other than information and sense key specific are
    /// skipped. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<SenseData, SenseError> {
        let Some(&b0) = bytes.first() else {
            return Err(SenseError::Empty);
        };
        match b0 & 0x7f {
            0x70 | 0x71 => Self::parse_fixed(bytes, b0 & 0x7f == 0x71),
            0x72 | 0x73 => Self::parse_descriptor(bytes, b0 & 0x7f == 0x73),
            other => Err(SenseError::UnknownResponseCode(other)),
        }
    }

    fn parse_fixed(bytes: &[u8], deferred: bool) -> Result<SenseData, SenseError> {
        // SPC-4 4.5.3: byte 2 holds the key, byte 7 the ADDITIONAL SENSE
        // LENGTH; anything after byte 7 is only meaningful within it.
        let Some(head) = bytes.get(..8) else {
            return Err(SenseError::TooShort {
                format: "fixed",
                got: bytes.len(),
                need: 8,
            });
        };
        let end = (8 + usize::from(head[7])).min(bytes.len());
        let at = |i: usize| {
            if i < end {
                bytes.get(i).copied().unwrap_or(0)
            } else {
                0
            }
        };
        let valid = head[0] & 0x80 != 0;
        let information =
            valid.then(|| u64::from(u32::from_be_bytes([head[3], head[4], head[5], head[6]])));
        let sks = [at(15), at(16), at(17)];
        Ok(SenseData {
            key: SenseKey::from_code(head[2]),
            asc: at(12),
            ascq: at(13),
            information,
            sense_key_specific: (sks[0] & 0x80 != 0).then_some(sks),
            format: SenseFormat::with(false, deferred),
        })
    }

    fn parse_descriptor(bytes: &[u8], deferred: bool) -> Result<SenseData, SenseError> {
        let Some(head) = bytes.get(..8) else {
            return Err(SenseError::TooShort {
                format: "descriptor",
                got: bytes.len(),
                need: 8,
            });
        };
        let mut sense = SenseData {
            key: SenseKey::from_code(head[1]),
            asc: head[2],
            ascq: head[3],
            information: None,
            sense_key_specific: None,
            format: SenseFormat::with(true, deferred),
        };
        // SPC-4 4.5.2.1: descriptors follow byte 7 for ADDITIONAL SENSE
        // LENGTH bytes; a target may truncate to the allocation length, so
        // a descriptor cut by the end of the buffer is an error but one cut
        // only by the length byte is simply not there.
        let end = (8 + usize::from(head[7])).min(bytes.len());
        let mut off = 8;
        while off + 2 <= end {
            let (Some(&kind), Some(&len)) = (bytes.get(off), bytes.get(off + 1)) else {
                break;
            };
            let next = off + 2 + usize::from(len);
            let Some(d) = bytes.get(off..next).filter(|_| next <= end) else {
                return Err(SenseError::DescriptorOverrun {
                    descriptor_type: kind,
                    offset: off,
                });
            };
            match kind {
                // Information descriptor (4.5.2.2): VALID bit 7 of byte 2,
                // INFORMATION in bytes 4-11.
                0x00 if d.len() >= 12 && d[2] & 0x80 != 0 => {
                    let mut info = [0u8; 8];
                    info.copy_from_slice(&d[4..12]);
                    sense.information = Some(u64::from_be_bytes(info));
                }
                // Sense key specific descriptor (4.5.2.4): bytes 4-6.
                0x02 if d.len() >= 7 && d[4] & 0x80 != 0 => {
                    sense.sense_key_specific = Some([d[4], d[5], d[6]]);
                }
                _ => {}
            }
            off = next;
        }
        Ok(sense)
    }

    /// Fixed-format bytes (18 long). Fixed format has four bytes of
    /// INFORMATION (SPC-4 4.5.3); a value above 32 bits cannot be carried,
    /// so VALID is cleared and the field left zero rather than truncated.
    /// Use descriptor format to carry it.
    pub fn to_fixed(&self) -> Vec<u8> {
        self.fixed(self.format.is_deferred())
    }

    fn fixed(&self, deferred: bool) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_SENSE_LEN];
        b[0] = if deferred { 0x71 } else { 0x70 };
        if let Some(info) = self.information.and_then(|i| u32::try_from(i).ok()) {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key.code();
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(sks) = self.sense_key_specific {
            b[15..18].copy_from_slice(&sks);
            b[15] |= 0x80;
        }
        b
    }

    /// Descriptor-format bytes, with an information descriptor and a sense
    /// key specific descriptor when those are present.
    pub fn to_descriptor(&self) -> Vec<u8> {
        self.descriptor(self.format.is_deferred())
    }

    fn descriptor(&self, deferred: bool) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b[0] = if deferred { 0x73 } else { 0x72 };
        b[1] = self.key.code();
        b[2] = self.asc;
        b[3] = self.ascq;
        if let Some(info) = self.information {
            b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(mut sks) = self.sense_key_specific {
            sks[0] |= 0x80;
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&sks);
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }

    /// Bytes in `format`, whatever `self.format` says: a device server
    /// picks the format from the D_SENSE bit of its Control mode page
    /// (SPC-4 4.5.1), not from how the sense was built.
    /// `s.to_bytes(s.format)` reproduces parsed sense.
    pub fn to_bytes(&self, format: SenseFormat) -> Vec<u8> {
        if format.is_descriptor() {
            self.descriptor(format.is_deferred())
        } else {
            self.fixed(format.is_deferred())
        }
    }
}

impl fmt::Display for SenseData {
    /// `ILLEGAL REQUEST 24/00 invalid field in CDB`, then
    /// `information=N` and `deferred` when they apply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.asc_pair())?;
        if let Some(info) = self.information {
            write!(f, " information={info}")?;
        }
        if self.format.is_deferred() {
            f.write_str(" deferred")?;
        }
        Ok(())
    }
}

/// One line for a command's outcome: `GOOD`, or
/// `CHECK CONDITION ILLEGAL REQUEST 24/00 invalid field in CDB`. Sense bytes
/// that do not parse are described, not hidden.
pub fn describe_status(status: ScsiStatus, sense: &[u8]) -> String {
    let name = status.name();
    let name = if name == "UNKNOWN STATUS" {
        format!("STATUS {:#04x}", status.0)
    } else {
        name.to_string()
    };
    if sense.is_empty() {
        if status == ScsiStatus::CHECK_CONDITION {
            return format!("{name} (no sense data)");
        }
        return name;
    }
    match SenseData::parse(sense) {
        Ok(s) => format!("{name} {s}"),
        Err(e) => format!("{name} ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asc_table_is_sorted_for_binary_search() {
        assert!(ASC_NAMES
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    }

    #[test]
    fn display_matches_show_style() {
        assert_eq!(
            SenseData::invalid_field_in_cdb().to_string(),
            "ILLEGAL REQUEST 24/00 invalid field in CDB"
        );
        assert_eq!(
            describe_status(
                ScsiStatus::CHECK_CONDITION,
                &SenseData::invalid_field_in_cdb().to_fixed()
            ),
            "CHECK CONDITION ILLEGAL REQUEST 24/00 invalid field in CDB"
        );
        assert_eq!(describe_status(ScsiStatus::GOOD, &[]), "GOOD");
    }
}
