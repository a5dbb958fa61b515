//! Why a PDU could not be decoded, and the Reject reason each failure earns.

use thiserror::Error;

/// Reject reason codes (RFC 7143 §11.17.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RejectReason(pub u8);

impl RejectReason {
    /// Data (payload) digest error: the PDU is discarded, the connection stays.
    pub const DATA_DIGEST_ERROR: RejectReason = RejectReason(0x02);
    /// SNACK Reject.
    pub const SNACK_REJECT: RejectReason = RejectReason(0x03);
    /// Protocol Error (e.g., SNACK Request for a status that was already acknowledged).
    pub const PROTOCOL_ERROR: RejectReason = RejectReason(0x04);
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: RejectReason = RejectReason(0x05);
    /// Immediate command reject: too many immediate commands.
    pub const IMMEDIATE_COMMAND_REJECT: RejectReason = RejectReason(0x06);
    /// Task in progress.
    pub const TASK_IN_PROGRESS: RejectReason = RejectReason(0x07);
    /// Invalid data ack.
    pub const INVALID_DATA_ACK: RejectReason = RejectReason(0x08);
    /// Invalid PDU field.
    pub const INVALID_PDU_FIELD: RejectReason = RejectReason(0x09);
    /// Long op reject: out of resources generating a Target Transfer Tag.
    pub const LONG_OP_REJECT: RejectReason = RejectReason(0x0a);
    /// Waiting for Logout.
    pub const WAITING_FOR_LOGOUT: RejectReason = RejectReason(0x0c);
}

/// A malformed or unacceptable PDU.
///
/// Each variant knows whether the connection can survive it
/// ([`PduError::is_fatal`]) and which Reject reason answers it
/// ([`PduError::reject_reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PduError {
    /// Fewer bytes than a field or segment needs.
    #[error("truncated PDU: {what} needs {need} bytes, {have} available")]
    Truncated {
        /// The part being read (BHS, AHS, data segment, digest).
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The opcode is not one RFC 7143 defines for this direction.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// DataSegmentLength exceeds what this side declared it can receive
    /// (MaxRecvDataSegmentLength, RFC 7143 §13.12).
    #[error("DataSegmentLength {len} exceeds MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong {
        /// DataSegmentLength of the PDU.
        len: u32,
        /// The declared limit.
        max: u32,
    },
    /// An AHS is malformed or inconsistent with TotalAHSLength.
    #[error("bad AHS at offset {offset}: {reason}")]
    BadAhs {
        /// Byte offset within the AHS area.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A field holds a value the standard forbids.
    #[error("invalid {field} = {value:#x} in {opcode} PDU")]
    InvalidField {
        /// PDU kind.
        opcode: &'static str,
        /// Field name as RFC 7143 spells it.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// HeaderDigest did not match (RFC 7143 §7.8: the connection must go).
    #[error("header digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    HeaderDigest {
        /// Digest on the wire.
        received: u32,
        /// Digest of the bytes received.
        computed: u32,
    },
    /// DataDigest did not match (RFC 7143 §7.8: discard the PDU, Reject it).
    #[error("data digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    DataDigest {
        /// Digest on the wire.
        received: u32,
        /// Digest of the bytes received.
        computed: u32,
    },
    /// A text data segment is not `key=value\0` pairs.
    #[error("malformed text key at byte {offset}: {reason}")]
    BadText {
        /// Byte offset within the (reassembled) text.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

impl PduError {
    /// The Reject reason a target sends for this PDU.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            PduError::UnknownOpcode(_) => RejectReason::COMMAND_NOT_SUPPORTED,
            PduError::DataDigest { .. } => RejectReason::DATA_DIGEST_ERROR,
            PduError::InvalidField { .. } | PduError::BadAhs { .. } => {
                RejectReason::INVALID_PDU_FIELD
            }
            _ => RejectReason::PROTOCOL_ERROR,
        }
    }

    /// Whether the PDU boundary itself is lost or untrustworthy, so the
    /// connection cannot continue (RFC 7143 §7.8: a header digest error or a
    /// length that cannot be honoured leaves no way to find the next PDU).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            PduError::HeaderDigest { .. }
                | PduError::DataSegmentTooLong { .. }
                | PduError::Truncated { .. }
        )
    }
}
