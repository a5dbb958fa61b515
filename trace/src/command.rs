//! The command model: one SCSI command as an HBA driver sees it, from
//! submission to completion.
//!
//! Fields follow DriverKit's `SCSIUserParallelTask`/`SCSIUserParallelResponse`
//! and Linux's `scsi_cmnd`, so a capture from either maps onto them without
//! loss. The CDB is kept as raw bytes: a trace must record what the driver
//! really sent, including reserved bits a typed view would normalise away;
//! [`crate::cdb::Cdb::parse`] gives the typed view on demand.

use crate::units::PhysAddr;
use arbitrary::Arbitrary;
use serde::{Deserialize, Serialize};

/// The I_T_L nexus a command is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, Arbitrary)]
pub struct Nexus {
    /// Target (initiator-side target ID, or iSCSI session index).
    pub target: u32,
    /// Logical unit number (flat, as in REPORT LUNS' single-level format).
    pub lun: u64,
}

/// SAM task attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, Arbitrary)]
pub enum TaskAttr {
    /// SIMPLE: may be reordered with other simple tasks.
    #[default]
    Simple,
    /// ORDERED: all older tasks complete first, no newer task starts before it.
    Ordered,
    /// HEAD OF QUEUE: runs before queued tasks.
    HeadOfQueue,
    /// ACA: for auto contingent allegiance recovery.
    Aca,
}

/// Direction of the data phase, as `fTransferDirection` encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, Arbitrary)]
pub enum Direction {
    /// No data phase.
    #[default]
    None,
    /// Data-Out: host memory to device (writes).
    ToDevice,
    /// Data-In: device to host memory (reads).
    FromDevice,
}

/// One scatter-gather entry: a run of host memory the HBA moves data through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Arbitrary)]
pub struct Segment {
    /// Start of the run in the host's address space.
    pub addr: PhysAddr,
    /// Length in bytes.
    pub len: u32,
}

impl Segment {
    /// A segment of `len` bytes at `addr`.
    pub fn new(addr: u64, len: u32) -> Self {
        Segment {
            addr: PhysAddr(addr),
            len,
        }
    }

    /// One past the last byte, saturating at 2^64 so a hostile trace cannot
    /// make summaries overflow.
    pub fn end(&self) -> u64 {
        self.addr.0.saturating_add(u64::from(self.len))
    }
}

/// What a trace keeps of a command's data.
///
/// Production captures of many gigabytes keep digests; fuzz inputs and
/// small traces keep the bytes; synthesized workloads keep only the recipe
/// for their self-describing blocks, which is enough to regenerate every
/// byte.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, Arbitrary)]
pub enum Payload {
    /// Nothing kept.
    #[default]
    None,
    /// Every byte of the transfer.
    Full(#[serde(with = "byte_string")] Vec<u8>),
    /// CRC32C of each `granularity`-byte chunk of the transfer (the last
    /// chunk may be short).
    Digests {
        /// Chunk size in bytes (normally the logical block size).
        granularity: u32,
        /// One CRC32C per chunk.
        crcs: Vec<u32>,
    },
    /// Self-describing blocks (see [`crate::pattern`]): block `i` of the
    /// transfer is the tagged block for `lba + i`, this generation and
    /// stream seed.
    Pattern {
        /// Stream seed the fill is derived from.
        seed: u64,
        /// Write generation of every block in the transfer.
        generation: u32,
    },
}

/// SCSI status byte (SAM-5 table 33).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Arbitrary)]
pub struct ScsiStatus(pub u8);

impl ScsiStatus {
    /// GOOD.
    pub const GOOD: ScsiStatus = ScsiStatus(0x00);
    /// CHECK CONDITION: sense data describes the error.
    pub const CHECK_CONDITION: ScsiStatus = ScsiStatus(0x02);
    /// CONDITION MET.
    pub const CONDITION_MET: ScsiStatus = ScsiStatus(0x04);
    /// BUSY.
    pub const BUSY: ScsiStatus = ScsiStatus(0x08);
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: ScsiStatus = ScsiStatus(0x18);
    /// TASK SET FULL.
    pub const TASK_SET_FULL: ScsiStatus = ScsiStatus(0x28);
    /// ACA ACTIVE.
    pub const ACA_ACTIVE: ScsiStatus = ScsiStatus(0x30);
    /// TASK ABORTED.
    pub const TASK_ABORTED: ScsiStatus = ScsiStatus(0x40);

    /// The status' name as SAM spells it.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "GOOD",
            0x02 => "CHECK CONDITION",
            0x04 => "CONDITION MET",
            0x08 => "BUSY",
            0x18 => "RESERVATION CONFLICT",
            0x28 => "TASK SET FULL",
            0x30 => "ACA ACTIVE",
            0x40 => "TASK ABORTED",
            _ => "UNKNOWN STATUS",
        }
    }
}

/// How the transport says the command ended (SAM service response), which is
/// separate from the SCSI status: a command can fail to be delivered at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, Arbitrary)]
pub enum ServiceResponse {
    /// TASK COMPLETE: the status byte is meaningful.
    #[default]
    TaskComplete,
    /// SERVICE DELIVERY OR TARGET FAILURE.
    DeliveryFailure,
    /// The command was still in flight when the capture ended (initiator or
    /// target dropped, recorder stopped).
    Incomplete,
}

/// A command as submitted to the HBA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub struct Submit {
    /// Submission order within the trace, unique; `Complete::seq` refers to it.
    pub seq: u64,
    /// Nanoseconds since the trace started.
    pub time_ns: u64,
    /// Where the command is going.
    pub nexus: Nexus,
    /// Initiator task tag (or DriverKit `fTaskTagIdentifier`).
    pub tag: u64,
    /// Task attribute.
    pub attr: TaskAttr,
    /// The CDB exactly as sent (6 to 32 bytes; 260 for variable-length).
    pub cdb: Vec<u8>,
    /// Data phase direction.
    pub dir: Direction,
    /// Requested transfer length in bytes (`fRequestedTransferCount`).
    pub xfer_len: u32,
    /// DMA scatter-gather list as the host presented it; empty if unknown.
    pub sg: Vec<Segment>,
    /// Data-Out, for writes.
    pub payload: Payload,
}

/// A command's completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub struct Complete {
    /// `Submit::seq` of the command this completes.
    pub seq: u64,
    /// Nanoseconds since the trace started.
    pub time_ns: u64,
    /// Transport outcome.
    pub response: ServiceResponse,
    /// SCSI status.
    pub status: ScsiStatus,
    /// Sense data bytes as returned (fixed or descriptor format), empty if none.
    pub sense: Vec<u8>,
    /// Bytes actually moved.
    pub bytes_transferred: u32,
    /// Residual as the target reported it: positive for underflow (fewer
    /// bytes than requested), negative for overflow.
    pub residual: i64,
    /// Data-In, for reads.
    pub payload: Payload,
}

/// One event in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub enum Event {
    /// A command was submitted.
    Submit(Submit),
    /// A command completed.
    Complete(Complete),
    /// Power was cut: the device lost its volatile cache.
    PowerLoss {
        /// Nanoseconds since the trace started.
        time_ns: u64,
    },
    /// The LUN or target was reset (cache kept, unit attention raised).
    Reset {
        /// Nanoseconds since the trace started.
        time_ns: u64,
    },
    /// Free text a producer attaches to a point in the stream.
    Note {
        /// Nanoseconds since the trace started.
        time_ns: u64,
        /// The text.
        text: String,
    },
}

impl Event {
    /// Nanoseconds since the trace started.
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Submit(s) => s.time_ns,
            Event::Complete(c) => c.time_ns,
            Event::PowerLoss { time_ns }
            | Event::Reset { time_ns }
            | Event::Note { time_ns, .. } => *time_ns,
        }
    }
}

/// [`Payload::Full`]'s bytes handed to serde as one byte string instead of a
/// sequence of `u8`: the same encoding in bincode (a length, then the
/// bytes; `docs/trace-format.md` unchanged) and in JSON (an array of
/// numbers), but one copy instead of a serializer call per byte, which was
/// most of the recording proxy's trace-writer time in full mode.
mod byte_string {
    use serde::{de, Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        /// Formats without a byte string (JSON) write an array of numbers.
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The hint comes from the input: capped, not trusted.
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}
