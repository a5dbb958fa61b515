//! Command descriptor blocks: typed decode and bit-exact encode.
//!
//! [`Cdb::parse`] checks the length against the opcode's group (SPC-4
//! 4.2.5.1) and yields a typed view; [`Cdb::encode`] writes it back. Field
//! names and bit positions follow SBC-3/SPC-4 so the view reads like the
//! standard's tables. Opcodes without a typed view decode to [`Cdb::Other`],
//! which keeps every byte of the opcode's group.
//!
//! ```
//! use trace::cdb::Cdb;
//! // WRITE(16) LBA 2048, 256 blocks, FUA, as it arrives in an iSCSI PDU.
//! let field = [0x8a, 0x08, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0, 0, 0x01, 0x00, 0, 0];
//! let cdb = Cdb::parse(&field)?;
//! assert_eq!(cdb.to_string(), "WRITE(16) lba=2048 blocks=256 FUA");
//! assert_eq!(cdb.lba_range(), Some((2048, 256)));
//! assert_eq!(cdb.encode()?, field);
//! # Ok::<(), trace::cdb::CdbError>(())
//! ```
//!
//! # Canonical form
//!
//! The typed view keeps every field SBC-3/SPC-4 defines for the command and
//! drops reserved and obsolete bits and the CONTROL byte (NACA and LINK are
//! transport business). [`Cdb::encode`] writes them as zero. So
//! `parse(encode(x)) == x` for every value `encode` accepts, and
//! `encode(parse(b)) == b` for a CDB `b` whose reserved, obsolete and CONTROL
//! bits are zero. A trace keeps the raw bytes beside the typed view for
//! exactly this reason (see [`crate::command::Submit::cdb`]).
//!
//! # Values that do not fit
//!
//! A typed value can hold numbers its CDB size cannot carry: an LBA above
//! 21 bits in READ(6), 70 000 blocks in WRITE(10), FUA in a 6-byte CDB. Rather
//! than truncate silently (the very bug class Scuzz hunts), [`Cdb::encode`]
//! returns [`CdbError::FieldOverflow`] or [`CdbError::InvalidField`];
//! [`Cdb::validate`] runs the same checks without writing.
//!
//! # Lengths on the wire
//!
//! iSCSI carries every CDB in a 16-byte field (RFC 7143 11.3.5), so a READ(10)
//! arrives followed by six pad bytes. [`Cdb::parse`] accepts CDBs longer than
//! the opcode's group needs and reads only the group's bytes; a shorter one is
//! [`CdbError::TooShort`].

use crate::command::Direction;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which of an opcode family's CDB sizes was used (READ(6)/(10)/(12)/(16)...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CdbSize {
    /// 6-byte CDB (group 0).
    Six,
    /// 10-byte CDB (groups 1 and 2).
    Ten,
    /// 12-byte CDB (group 5).
    Twelve,
    /// 16-byte CDB (group 4).
    Sixteen,
}

impl CdbSize {
    /// Length in bytes.
    #[allow(clippy::len_without_is_empty)] // a CDB size is never empty
    pub fn len(self) -> usize {
        match self {
            CdbSize::Six => 6,
            CdbSize::Ten => 10,
            CdbSize::Twelve => 12,
            CdbSize::Sixteen => 16,
        }
    }

    /// The `(n)` suffix SBC uses in command names.
    fn suffix(self) -> &'static str {
        match self {
            CdbSize::Six => "(6)",
            CdbSize::Ten => "(10)",
            CdbSize::Twelve => "(12)",
            CdbSize::Sixteen => "(16)",
        }
    }
}

/// Fields shared by READ, WRITE and VERIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rw {
    /// CDB size used.
    pub size: CdbSize,
    /// LOGICAL BLOCK ADDRESS (21 bits in 6-byte, 32 in 10/12, 64 in 16).
    pub lba: u64,
    /// TRANSFER LENGTH in blocks, after the 6-byte rule (0 means 256).
    pub blocks: u32,
    /// FUA: write through / read from the medium.
    pub fua: bool,
    /// DPO: disable page out.
    pub dpo: bool,
    /// RDPROTECT / WRPROTECT / VRPROTECT (3 bits; 0 in 6-byte CDBs).
    pub protect: u8,
    /// GROUP NUMBER (5 bits for 10/12; 6 bits for 16; 0 in 6-byte CDBs).
    pub group: u8,
}

/// A decoded CDB.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cdb {
    /// TEST UNIT READY (00h).
    TestUnitReady,
    /// REQUEST SENSE (03h).
    RequestSense {
        /// DESC: descriptor-format sense requested.
        desc: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u8,
    },
    /// INQUIRY (12h).
    Inquiry {
        /// EVPD: a vital product data page is requested.
        evpd: bool,
        /// PAGE CODE (meaningful with EVPD).
        page_code: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// MODE SENSE(6) (1Ah) / MODE SENSE(10) (5Ah).
    ModeSense {
        /// 6 or 10.
        size: CdbSize,
        /// DBD: disable block descriptors.
        dbd: bool,
        /// LLBAA: long LBA block descriptors accepted (10-byte only).
        llbaa: bool,
        /// PC: page control (0 current, 1 changeable, 2 default, 3 saved).
        pc: u8,
        /// PAGE CODE (6 bits).
        page_code: u8,
        /// SUBPAGE CODE.
        subpage: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// MODE SELECT(6) (15h) / MODE SELECT(10) (55h).
    ModeSelect {
        /// 6 or 10.
        size: CdbSize,
        /// PF: page format.
        pf: bool,
        /// SP: save pages.
        sp: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u16,
    },
    /// START STOP UNIT (1Bh).
    StartStopUnit {
        /// IMMED.
        immed: bool,
        /// POWER CONDITION MODIFIER (4 bits).
        power_condition_modifier: u8,
        /// POWER CONDITION (4 bits).
        power_condition: u8,
        /// NO_FLUSH.
        no_flush: bool,
        /// LOEJ: load/eject.
        loej: bool,
        /// START.
        start: bool,
    },
    /// READ CAPACITY(10) (25h). The obsolete LBA and PMI fields are not kept.
    ReadCapacity10,
    /// READ CAPACITY(16) (SERVICE ACTION IN(16) 9Eh / 10h).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// READ(6/10/12/16) (08h, 28h, A8h, 88h).
    Read(Rw),
    /// WRITE(6/10/12/16) (0Ah, 2Ah, AAh, 8Ah).
    Write(Rw),
    /// VERIFY(10/12/16) (2Fh, AFh, 8Fh).
    Verify {
        /// LBA, blocks, DPO, VRPROTECT, group (fua unused, false).
        rw: Rw,
        /// BYTCHK (2 bits): 0 medium only, 1 compare Data-Out.
        bytchk: u8,
    },
    /// SYNCHRONIZE CACHE(10/16) (35h, 91h).
    SyncCache {
        /// 10 or 16.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS of the first block to flush.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS; 0 = through the end of the medium.
        blocks: u32,
        /// IMMED: return status before the flush completes.
        immed: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// WRITE SAME(10/16) (41h, 93h).
    WriteSame {
        /// 10 or 16.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (0: to the end, if the device allows).
        blocks: u32,
        /// UNMAP: deallocate instead of writing, if the device can.
        unmap: bool,
        /// ANCHOR.
        anchor: bool,
        /// NDOB: no Data-Out buffer, write zeros (16-byte only).
        ndob: bool,
        /// WRPROTECT (3 bits).
        protect: u8,
        /// GROUP NUMBER.
        group: u8,
    },
    /// UNMAP (42h).
    Unmap {
        /// ANCHOR.
        anchor: bool,
        /// GROUP NUMBER.
        group: u8,
        /// PARAMETER LIST LENGTH.
        param_len: u16,
    },
    /// REPORT LUNS (A0h).
    ReportLuns {
        /// SELECT REPORT.
        select_report: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// COMPARE AND WRITE (89h, SBC-3): the Data-Out buffer holds
    /// `blocks` verify blocks then `blocks` write blocks.
    CompareAndWrite {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (one byte).
        blocks: u8,
        /// FUA.
        fua: bool,
        /// DPO.
        dpo: bool,
        /// WRPROTECT (3 bits).
        protect: u8,
        /// GROUP NUMBER (6 bits).
        group: u8,
    },
    /// GET LBA STATUS (SERVICE ACTION IN(16) 9Eh / 12h, SBC-3).
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// PRE-FETCH(10/16) (34h, 90h).
    PreFetch {
        /// 10 or 16.
        size: CdbSize,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// PREFETCH LENGTH in blocks; 0 = through the end of the medium.
        blocks: u32,
        /// IMMED.
        immed: bool,
        /// GROUP NUMBER.
        group: u8,
    },
    /// WRITE AND VERIFY(10/12/16) (2Eh, AEh, 8Eh).
    WriteAndVerify {
        /// LBA, blocks, DPO, WRPROTECT, group (fua unused, false).
        rw: Rw,
        /// BYTCHK (2 bits).
        bytchk: u8,
    },
    /// Any other opcode, kept byte for byte (the opcode group's length, or
    /// everything given for variable-length and vendor-specific groups).
    Other(Vec<u8>),
}

/// Why a CDB could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CdbError {
    /// No bytes at all.
    #[error("empty CDB")]
    Empty,
    /// Fewer bytes than the opcode's group requires.
    #[error("CDB for opcode {opcode:#04x} is {got} bytes, its group needs {need}")]
    TooShort {
        /// Operation code.
        opcode: u8,
        /// Bytes given.
        got: usize,
        /// Bytes the opcode's group defines.
        need: usize,
    },
    /// More bytes than any CDB may have (260, variable-length maximum).
    #[error("CDB of {0} bytes is longer than the 260-byte maximum")]
    TooLong(usize),
    /// A field holds a value the standard forbids or the codec cannot carry.
    #[error("CDB opcode {opcode:#04x}: invalid {field}")]
    InvalidField {
        /// Operation code.
        opcode: u8,
        /// The field, named as in SBC-3/SPC-4.
        field: &'static str,
    },
    /// A field's value needs more bits than the CDB size has for it.
    #[error("CDB opcode {opcode:#04x}: {field} {value} exceeds the field's maximum {max}")]
    FieldOverflow {
        /// Operation code.
        opcode: u8,
        /// The field, named as in SBC-3/SPC-4.
        field: &'static str,
        /// The value asked for.
        value: u64,
        /// The largest value the field carries.
        max: u64,
    },
    /// The output buffer given to [`Cdb::encode_into`] is too small.
    #[error("CDB needs {need} bytes, the buffer has {got}")]
    BufferTooSmall {
        /// Bytes the encoded CDB needs.
        need: usize,
        /// Bytes the buffer has.
        got: usize,
    },
}

/// Largest CDB SPC-4 allows (variable-length, 4.2.3).
pub const MAX_CDB_LEN: usize = 260;

/// The length SPC-4 4.2.5.1 assigns to an opcode's group, or `None` for
/// group 3 (reserved / variable-length 7Fh) and groups 6 and 7 (vendor
/// specific), whose length the opcode alone does not tell.
pub fn group_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The opcode table (style practice 7): one line per opcode, used by
// `Cdb::name`, `Display`, `Cdb::direction` for `Other`, and `opcode_name`.
// ---------------------------------------------------------------------------

/// Data phase an opcode has, as far as the opcode alone tells.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dp {
    /// No data phase.
    No,
    /// Data-In.
    In,
    /// Data-Out.
    Out,
    /// Depends on fields (VERIFY's BYTCHK, ATA PASS-THROUGH's T_DIR).
    Var,
}

/// `(opcode, name, data phase)`, SPC-4 / SBC-3 spellings.
const OPCODES: &[(u8, &str, Dp)] = &[
    (0x00, "TEST UNIT READY", Dp::No),
    (0x01, "REZERO UNIT", Dp::No),
    (0x03, "REQUEST SENSE", Dp::In),
    (0x04, "FORMAT UNIT", Dp::Out),
    (0x07, "REASSIGN BLOCKS", Dp::Out),
    (0x08, "READ(6)", Dp::In),
    (0x0a, "WRITE(6)", Dp::Out),
    (0x0b, "SEEK(6)", Dp::No),
    (0x12, "INQUIRY", Dp::In),
    (0x15, "MODE SELECT(6)", Dp::Out),
    (0x16, "RESERVE(6)", Dp::No),
    (0x17, "RELEASE(6)", Dp::No),
    (0x1a, "MODE SENSE(6)", Dp::In),
    (0x1b, "START STOP UNIT", Dp::No),
    (0x1c, "RECEIVE DIAGNOSTIC RESULTS", Dp::In),
    (0x1d, "SEND DIAGNOSTIC", Dp::Out),
    (0x1e, "PREVENT ALLOW MEDIUM REMOVAL", Dp::No),
    (0x25, "READ CAPACITY(10)", Dp::In),
    (0x28, "READ(10)", Dp::In),
    (0x2a, "WRITE(10)", Dp::Out),
    (0x2b, "SEEK(10)", Dp::No),
    (0x2e, "WRITE AND VERIFY(10)", Dp::Out),
    (0x2f, "VERIFY(10)", Dp::Var),
    (0x34, "PRE-FETCH(10)", Dp::No),
    (0x35, "SYNCHRONIZE CACHE(10)", Dp::No),
    (0x37, "READ DEFECT DATA(10)", Dp::In),
    (0x3b, "WRITE BUFFER", Dp::Out),
    (0x3c, "READ BUFFER(10)", Dp::In),
    (0x3e, "READ LONG(10)", Dp::In),
    (0x3f, "WRITE LONG(10)", Dp::Out),
    (0x41, "WRITE SAME(10)", Dp::Out),
    (0x42, "UNMAP", Dp::Out),
    (0x48, "SANITIZE", Dp::Out),
    (0x4c, "LOG SELECT", Dp::Out),
    (0x4d, "LOG SENSE", Dp::In),
    (0x55, "MODE SELECT(10)", Dp::Out),
    (0x56, "RESERVE(10)", Dp::No),
    (0x57, "RELEASE(10)", Dp::No),
    (0x5a, "MODE SENSE(10)", Dp::In),
    (0x5e, "PERSISTENT RESERVE IN", Dp::In),
    (0x5f, "PERSISTENT RESERVE OUT", Dp::Out),
    (0x7f, "VARIABLE LENGTH", Dp::Var),
    (0x83, "THIRD-PARTY COPY OUT", Dp::Out),
    (0x84, "THIRD-PARTY COPY IN", Dp::In),
    (0x85, "ATA PASS-THROUGH(16)", Dp::Var),
    (0x86, "ACCESS CONTROL IN", Dp::In),
    (0x87, "ACCESS CONTROL OUT", Dp::Out),
    (0x88, "READ(16)", Dp::In),
    (0x89, "COMPARE AND WRITE", Dp::Out),
    (0x8a, "WRITE(16)", Dp::Out),
    (0x8c, "READ ATTRIBUTE", Dp::In),
    (0x8d, "WRITE ATTRIBUTE", Dp::Out),
    (0x8e, "WRITE AND VERIFY(16)", Dp::Out),
    (0x8f, "VERIFY(16)", Dp::Var),
    (0x90, "PRE-FETCH(16)", Dp::No),
    (0x91, "SYNCHRONIZE CACHE(16)", Dp::No),
    (0x93, "WRITE SAME(16)", Dp::Out),
    (0x9e, "SERVICE ACTION IN(16)", Dp::In),
    (0x9f, "SERVICE ACTION OUT(16)", Dp::Out),
    (0xa0, "REPORT LUNS", Dp::In),
    (0xa1, "ATA PASS-THROUGH(12)", Dp::Var),
    (0xa2, "SECURITY PROTOCOL IN", Dp::In),
    (0xa3, "MAINTENANCE IN", Dp::In),
    (0xa4, "MAINTENANCE OUT", Dp::Out),
    (0xa8, "READ(12)", Dp::In),
    (0xaa, "WRITE(12)", Dp::Out),
    (0xab, "SERVICE ACTION IN(12)", Dp::In),
    (0xae, "WRITE AND VERIFY(12)", Dp::Out),
    (0xaf, "VERIFY(12)", Dp::Var),
    (0xb5, "SECURITY PROTOCOL OUT", Dp::Out),
    (0xb7, "READ DEFECT DATA(12)", Dp::In),
];

/// `(opcode, service action, name)` for opcodes whose byte 1 bits 4-0 hold a
/// SERVICE ACTION (SPC-4 4.2.5.1).
const SERVICE_ACTIONS: &[(u8, u8, &str)] = &[
    (0x5e, 0x00, "READ KEYS"),
    (0x5e, 0x01, "READ RESERVATION"),
    (0x5e, 0x02, "REPORT CAPABILITIES"),
    (0x5e, 0x03, "READ FULL STATUS"),
    (0x5f, 0x00, "REGISTER"),
    (0x5f, 0x01, "RESERVE"),
    (0x5f, 0x02, "RELEASE"),
    (0x5f, 0x03, "CLEAR"),
    (0x5f, 0x04, "PREEMPT"),
    (0x5f, 0x05, "PREEMPT AND ABORT"),
    (0x5f, 0x06, "REGISTER AND IGNORE EXISTING KEY"),
    (0x5f, 0x07, "REGISTER AND MOVE"),
    (0x9e, 0x10, "READ CAPACITY(16)"),
    (0x9e, 0x12, "GET LBA STATUS"),
    (0x9e, 0x13, "REPORT REFERRALS"),
    (0xa3, 0x05, "REPORT IDENTIFYING INFORMATION"),
    (0xa3, 0x0a, "REPORT TARGET PORT GROUPS"),
    (0xa3, 0x0b, "REPORT ALIASES"),
    (0xa3, 0x0c, "REPORT SUPPORTED OPERATION CODES"),
    (0xa3, 0x0d, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS"),
    (0xa3, 0x0e, "REPORT PRIORITY"),
    (0xa3, 0x0f, "REPORT TIMESTAMP"),
    (0xa4, 0x06, "SET IDENTIFYING INFORMATION"),
    (0xa4, 0x0a, "SET TARGET PORT GROUPS"),
    (0xa4, 0x0e, "SET PRIORITY"),
    (0xa4, 0x0f, "SET TIMESTAMP"),
];

/// Index from opcode to its row in [`OPCODES`], built at compile time.
const OPCODE_INDEX: [u8; 256] = {
    let mut index = [u8::MAX; 256];
    let mut i = 0;
    while i < OPCODES.len() {
        index[OPCODES[i].0 as usize] = i as u8;
        i += 1;
    }
    index
};

fn opcode_row(opcode: u8) -> Option<&'static (u8, &'static str, Dp)> {
    OPCODES.get(usize::from(OPCODE_INDEX[usize::from(opcode)]))
}

/// The SPC-4/SBC-3 name of an opcode (`"WRITE(16)"`, `"MAINTENANCE IN"`),
/// or `None` if the table does not know it.
pub fn opcode_name(opcode: u8) -> Option<&'static str> {
    opcode_row(opcode).map(|r| r.1)
}

/// The name of a service action of an opcode that has them
/// (`(0xa3, 0x0c)` → `"REPORT SUPPORTED OPERATION CODES"`).
pub fn service_action_name(opcode: u8, service_action: u8) -> Option<&'static str> {
    SERVICE_ACTIONS
        .iter()
        .find(|&&(o, s, _)| o == opcode && s == service_action)
        .map(|r| r.2)
}

fn has_service_actions(opcode: u8) -> bool {
    SERVICE_ACTIONS.iter().any(|&(o, _, _)| o == opcode)
}

// ---------------------------------------------------------------------------
// Big-endian field access on a zero-padded 16-byte copy: every index is a
// constant below 16, so decoding cannot go out of bounds whatever the input.
// ---------------------------------------------------------------------------

fn be(b: &[u8; 16], off: usize, n: usize) -> u64 {
    b[off..off + n]
        .iter()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn put_be(b: &mut [u8; 16], off: usize, n: usize, v: u64) {
    for i in 0..n {
        b[off + i] = (v >> (8 * (n - 1 - i))) as u8;
    }
}

fn bit(byte: u8, n: u8) -> bool {
    byte & (1 << n) != 0
}

fn flag(v: bool, n: u8) -> u8 {
    u8::from(v) << n
}

const fn max_of_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The GROUP NUMBER width: SBC-3 gives 10- and 12-byte CDBs five bits;
/// SBC-4 gives 16-byte CDBs six (byte 14 bits 5-0).
fn group_bits(size: CdbSize) -> u32 {
    match size {
        CdbSize::Sixteen => 6,
        CdbSize::Six => 0,
        _ => 5,
    }
}

/// Accumulates field checks for one opcode.
struct Check {
    opcode: u8,
}

impl Check {
    fn fits(&self, field: &'static str, value: u64, bits: u32) -> Result<(), CdbError> {
        let max = max_of_bits(bits);
        if value > max {
            Err(CdbError::FieldOverflow {
                opcode: self.opcode,
                field,
                value,
                max,
            })
        } else {
            Ok(())
        }
    }

    fn invalid(&self, field: &'static str) -> CdbError {
        CdbError::InvalidField {
            opcode: self.opcode,
            field,
        }
    }
}

impl Cdb {
    /// Decodes a CDB.
    ///
    /// Reads only the opcode group's bytes (SPC-4 4.2.5.1), so the 16-byte
    /// padded field of an iSCSI SCSI Command PDU parses as the CDB it
    /// carries. Reserved, obsolete and CONTROL bits are ignored. Never
    /// panics.
    pub fn parse(bytes: &[u8]) -> Result<Cdb, CdbError> {
        let Some(&opcode) = bytes.first() else {
            return Err(CdbError::Empty);
        };
        if bytes.len() > MAX_CDB_LEN {
            return Err(CdbError::TooLong(bytes.len()));
        }
        let Some(need) = group_len(opcode) else {
            return Ok(Cdb::Other(bytes.to_vec()));
        };
        let Some(used) = bytes.get(..need) else {
            return Err(CdbError::TooShort {
                opcode,
                got: bytes.len(),
                need,
            });
        };
        let mut b = [0u8; 16];
        b[..need].copy_from_slice(used);
        let rw10 = |size: CdbSize| {
            let (lba, blocks, group) = match size {
                CdbSize::Ten => (be(&b, 2, 4), be(&b, 7, 2), b[6] & 0x1f),
                CdbSize::Twelve => (be(&b, 2, 4), be(&b, 6, 4), b[10] & 0x1f),
                _ => (be(&b, 2, 8), be(&b, 10, 4), b[14] & 0x3f),
            };
            Rw {
                size,
                lba,
                blocks: blocks as u32,
                fua: bit(b[1], 3),
                dpo: bit(b[1], 4),
                protect: b[1] >> 5,
                group,
            }
        };
        let rw6 = || {
            // SBC-3 READ(6): "A TRANSFER LENGTH field set to zero specifies that
            // 256 logical blocks shall be read."
            let blocks = match b[4] {
                0 => 256,
                n => u32::from(n),
            };
            Rw {
                size: CdbSize::Six,
                lba: be(&b, 1, 3) & 0x1f_ffff,
                blocks,
                fua: false,
                dpo: false,
                protect: 0,
                group: 0,
            }
        };
        // VERIFY / WRITE AND VERIFY have BYTCHK where READ/WRITE have FUA.
        let verify = |size: CdbSize| {
            let mut rw = rw10(size);
            rw.fua = false;
            (rw, (b[1] >> 1) & 0x3)
        };
        let cdb = match opcode {
            0x00 => Cdb::TestUnitReady,
            0x03 => Cdb::RequestSense {
                desc: bit(b[1], 0),
                alloc_len: b[4],
            },
            0x12 => Cdb::Inquiry {
                evpd: bit(b[1], 0),
                page_code: b[2],
                alloc_len: be(&b, 3, 2) as u16,
            },
            0x1a => Cdb::ModeSense {
                size: CdbSize::Six,
                dbd: bit(b[1], 3),
                llbaa: false,
                pc: b[2] >> 6,
                page_code: b[2] & 0x3f,
                subpage: b[3],
                alloc_len: u16::from(b[4]),
            },
            0x5a => Cdb::ModeSense {
                size: CdbSize::Ten,
                dbd: bit(b[1], 3),
                llbaa: bit(b[1], 4),
                pc: b[2] >> 6,
                page_code: b[2] & 0x3f,
                subpage: b[3],
                alloc_len: be(&b, 7, 2) as u16,
            },
            0x15 => Cdb::ModeSelect {
                size: CdbSize::Six,
                pf: bit(b[1], 4),
                sp: bit(b[1], 0),
                param_len: u16::from(b[4]),
            },
            0x55 => Cdb::ModeSelect {
                size: CdbSize::Ten,
                pf: bit(b[1], 4),
                sp: bit(b[1], 0),
                param_len: be(&b, 7, 2) as u16,
            },
            0x1b => Cdb::StartStopUnit {
                immed: bit(b[1], 0),
                power_condition_modifier: b[3] & 0x0f,
                power_condition: b[4] >> 4,
                no_flush: bit(b[4], 2),
                loej: bit(b[4], 1),
                start: bit(b[4], 0),
            },
            0x25 => Cdb::ReadCapacity10,
            0x9e => match b[1] & 0x1f {
                0x10 => Cdb::ReadCapacity16 {
                    alloc_len: be(&b, 10, 4) as u32,
                },
                0x12 => Cdb::GetLbaStatus {
                    lba: be(&b, 2, 8),
                    alloc_len: be(&b, 10, 4) as u32,
                },
                _ => Cdb::Other(used.to_vec()),
            },
            0x08 => Cdb::Read(rw6()),
            0x0a => Cdb::Write(rw6()),
            0x28 => Cdb::Read(rw10(CdbSize::Ten)),
            0x2a => Cdb::Write(rw10(CdbSize::Ten)),
            0xa8 => Cdb::Read(rw10(CdbSize::Twelve)),
            0xaa => Cdb::Write(rw10(CdbSize::Twelve)),
            0x88 => Cdb::Read(rw10(CdbSize::Sixteen)),
            0x8a => Cdb::Write(rw10(CdbSize::Sixteen)),
            0x2f | 0xaf | 0x8f => {
                let (rw, bytchk) = verify(size_of_opcode(opcode));
                Cdb::Verify { rw, bytchk }
            }
            0x2e | 0xae | 0x8e => {
                let (rw, bytchk) = verify(size_of_opcode(opcode));
                Cdb::WriteAndVerify { rw, bytchk }
            }
            0x35 | 0x91 | 0x34 | 0x90 => {
                let size = size_of_opcode(opcode);
                let rw = rw10(size);
                let (lba, blocks, group, immed) = (rw.lba, rw.blocks, rw.group, bit(b[1], 1));
                if opcode == 0x35 || opcode == 0x91 {
                    Cdb::SyncCache {
                        size,
                        lba,
                        blocks,
                        immed,
                        group,
                    }
                } else {
                    Cdb::PreFetch {
                        size,
                        lba,
                        blocks,
                        immed,
                        group,
                    }
                }
            }
            0x41 | 0x93 => {
                let size = size_of_opcode(opcode);
                let rw = rw10(size);
                Cdb::WriteSame {
                    size,
                    lba: rw.lba,
                    blocks: rw.blocks,
                    unmap: bit(b[1], 3),
                    anchor: bit(b[1], 4),
                    ndob: size == CdbSize::Sixteen && bit(b[1], 0),
                    protect: b[1] >> 5,
                    group: rw.group,
                }
            }
            0x42 => Cdb::Unmap {
                anchor: bit(b[1], 0),
                group: b[6] & 0x1f,
                param_len: be(&b, 7, 2) as u16,
            },
            0xa0 => Cdb::ReportLuns {
                select_report: b[2],
                alloc_len: be(&b, 6, 4) as u32,
            },
            0x89 => Cdb::CompareAndWrite {
                lba: be(&b, 2, 8),
                blocks: b[13],
                fua: bit(b[1], 3),
                dpo: bit(b[1], 4),
                protect: b[1] >> 5,
                group: b[14] & 0x3f,
            },
            _ => Cdb::Other(used.to_vec()),
        };
        Ok(cdb)
    }

    /// The operation code.
    ///
    /// For a size a command does not exist in (a 6-byte SYNCHRONIZE CACHE),
    /// the opcode of its 10-byte form; [`Cdb::validate`] refuses such a
    /// value. For an empty [`Cdb::Other`], 0.
    pub fn opcode(&self) -> u8 {
        let by_size = |s: CdbSize, six: u8, ten: u8, twelve: u8, sixteen: u8| match s {
            CdbSize::Six => six,
            CdbSize::Ten => ten,
            CdbSize::Twelve => twelve,
            CdbSize::Sixteen => sixteen,
        };
        match self {
            Cdb::TestUnitReady => 0x00,
            Cdb::RequestSense { .. } => 0x03,
            Cdb::Inquiry { .. } => 0x12,
            Cdb::ModeSense { size, .. } => by_size(*size, 0x1a, 0x5a, 0x5a, 0x5a),
            Cdb::ModeSelect { size, .. } => by_size(*size, 0x15, 0x55, 0x55, 0x55),
            Cdb::StartStopUnit { .. } => 0x1b,
            Cdb::ReadCapacity10 => 0x25,
            Cdb::ReadCapacity16 { .. } | Cdb::GetLbaStatus { .. } => 0x9e,
            Cdb::Read(rw) => by_size(rw.size, 0x08, 0x28, 0xa8, 0x88),
            Cdb::Write(rw) => by_size(rw.size, 0x0a, 0x2a, 0xaa, 0x8a),
            Cdb::Verify { rw, .. } => by_size(rw.size, 0x2f, 0x2f, 0xaf, 0x8f),
            Cdb::WriteAndVerify { rw, .. } => by_size(rw.size, 0x2e, 0x2e, 0xae, 0x8e),
            Cdb::SyncCache { size, .. } => by_size(*size, 0x35, 0x35, 0x35, 0x91),
            Cdb::PreFetch { size, .. } => by_size(*size, 0x34, 0x34, 0x34, 0x90),
            Cdb::WriteSame { size, .. } => by_size(*size, 0x41, 0x41, 0x41, 0x93),
            Cdb::Unmap { .. } => 0x42,
            Cdb::ReportLuns { .. } => 0xa0,
            Cdb::CompareAndWrite { .. } => 0x89,
            Cdb::Other(bytes) => bytes.first().copied().unwrap_or(0),
        }
    }

    /// The service action, for the typed commands that have one.
    fn service_action(&self) -> Option<u8> {
        match self {
            Cdb::ReadCapacity16 { .. } => Some(0x10),
            Cdb::GetLbaStatus { .. } => Some(0x12),
            Cdb::Other(bytes) if has_service_actions(self.opcode()) => {
                bytes.get(1).map(|b| b & 0x1f)
            }
            _ => None,
        }
    }

    /// The command's name as SPC-4/SBC-3 spell it: `"WRITE(16)"`,
    /// `"SYNCHRONIZE CACHE(10)"`, `"READ CAPACITY(16)"`. For an opcode the
    /// table does not know, `"UNKNOWN"`.
    pub fn name(&self) -> &'static str {
        let op = self.opcode();
        if let Some(name) = self
            .service_action()
            .and_then(|sa| service_action_name(op, sa))
            .filter(|_| !matches!(self, Cdb::Other(_)))
        {
            return name;
        }
        opcode_name(op).unwrap_or("UNKNOWN")
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Cdb::Other(bytes) => bytes.len(),
            _ => group_len(self.opcode()).unwrap_or(0),
        }
    }

    /// Checks that every field fits its CDB size, without encoding.
    pub fn validate(&self) -> Result<(), CdbError> {
        let mut scratch = [0u8; 16];
        match self {
            Cdb::Other(bytes) => check_other(bytes),
            _ => self.encode_typed(&mut scratch).map(|_| ()),
        }
    }

    /// Encodes in canonical form (reserved bits and CONTROL zero).
    ///
    /// Fails rather than truncate a field the CDB size cannot carry.
    pub fn encode(&self) -> Result<Vec<u8>, CdbError> {
        match self {
            Cdb::Other(bytes) => {
                check_other(bytes)?;
                Ok(bytes.clone())
            }
            _ => {
                let mut b = [0u8; 16];
                let n = self.encode_typed(&mut b)?;
                Ok(b[..n].to_vec())
            }
        }
    }

    /// Encodes into `buf` without allocating, for hot paths; returns the
    /// length written. A 16-byte buffer holds every typed CDB (and is the
    /// iSCSI CDB field); only a long [`Cdb::Other`] needs more.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, CdbError> {
        let (n, b) = match self {
            Cdb::Other(bytes) => {
                check_other(bytes)?;
                let got = buf.len();
                let out = buf.get_mut(..bytes.len()).ok_or(CdbError::BufferTooSmall {
                    need: bytes.len(),
                    got,
                })?;
                out.copy_from_slice(bytes);
                return Ok(bytes.len());
            }
            _ => {
                let mut b = [0u8; 16];
                (self.encode_typed(&mut b)?, b)
            }
        };
        let got = buf.len();
        let out = buf
            .get_mut(..n)
            .ok_or(CdbError::BufferTooSmall { need: n, got })?;
        out.copy_from_slice(&b[..n]);
        Ok(n)
    }

    /// Writes a typed CDB into `b` (zeroed by the caller); returns its length.
    fn encode_typed(&self, b: &mut [u8; 16]) -> Result<usize, CdbError> {
        let op = self.opcode();
        let c = Check { opcode: op };
        b[0] = op;
        match self {
            Cdb::TestUnitReady | Cdb::ReadCapacity10 => {}
            Cdb::RequestSense { desc, alloc_len } => {
                b[1] = flag(*desc, 0);
                b[4] = *alloc_len;
            }
            Cdb::Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => {
                b[1] = flag(*evpd, 0);
                b[2] = *page_code;
                put_be(b, 3, 2, u64::from(*alloc_len));
            }
            Cdb::ModeSense {
                size,
                dbd,
                llbaa,
                pc,
                page_code,
                subpage,
                alloc_len,
            } => {
                c.fits("PC", u64::from(*pc), 2)?;
                c.fits("PAGE CODE", u64::from(*page_code), 6)?;
                b[2] = (pc << 6) | page_code;
                b[3] = *subpage;
                match size {
                    CdbSize::Six => {
                        if *llbaa {
                            return Err(c.invalid("LLBAA"));
                        }
                        c.fits("ALLOCATION LENGTH", u64::from(*alloc_len), 8)?;
                        b[1] = flag(*dbd, 3);
                        b[4] = *alloc_len as u8;
                    }
                    CdbSize::Ten => {
                        b[1] = flag(*dbd, 3) | flag(*llbaa, 4);
                        put_be(b, 7, 2, u64::from(*alloc_len));
                    }
                    _ => return Err(c.invalid("CDB size")),
                }
            }
            Cdb::ModeSelect {
                size,
                pf,
                sp,
                param_len,
            } => {
                b[1] = flag(*pf, 4) | flag(*sp, 0);
                match size {
                    CdbSize::Six => {
                        c.fits("PARAMETER LIST LENGTH", u64::from(*param_len), 8)?;
                        b[4] = *param_len as u8;
                    }
                    CdbSize::Ten => put_be(b, 7, 2, u64::from(*param_len)),
                    _ => return Err(c.invalid("CDB size")),
                }
            }
            Cdb::StartStopUnit {
                immed,
                power_condition_modifier,
                power_condition,
                no_flush,
                loej,
                start,
            } => {
                c.fits(
                    "POWER CONDITION MODIFIER",
                    u64::from(*power_condition_modifier),
                    4,
                )?;
                c.fits("POWER CONDITION", u64::from(*power_condition), 4)?;
                b[1] = flag(*immed, 0);
                b[3] = *power_condition_modifier;
                b[4] =
                    (power_condition << 4) | flag(*no_flush, 2) | flag(*loej, 1) | flag(*start, 0);
            }
            Cdb::ReadCapacity16 { alloc_len } => {
                b[1] = 0x10;
                put_be(b, 10, 4, u64::from(*alloc_len));
            }
            Cdb::GetLbaStatus { lba, alloc_len } => {
                b[1] = 0x12;
                put_be(b, 2, 8, *lba);
                put_be(b, 10, 4, u64::from(*alloc_len));
            }
            Cdb::Read(rw) | Cdb::Write(rw) => encode_rw(&c, b, rw, flag(rw.fua, 3))?,
            Cdb::Verify { rw, bytchk } | Cdb::WriteAndVerify { rw, bytchk } => {
                if rw.size == CdbSize::Six {
                    return Err(c.invalid("CDB size"));
                }
                if rw.fua {
                    return Err(c.invalid("FUA"));
                }
                c.fits("BYTCHK", u64::from(*bytchk), 2)?;
                encode_rw(&c, b, rw, bytchk << 1)?;
            }
            Cdb::SyncCache {
                size,
                lba,
                blocks,
                immed,
                group,
            }
            | Cdb::PreFetch {
                size,
                lba,
                blocks,
                immed,
                group,
            } => {
                encode_lba_blocks(
                    &c,
                    b,
                    *size,
                    *lba,
                    *blocks,
                    *group,
                    &[CdbSize::Ten, CdbSize::Sixteen],
                )?;
                b[1] = flag(*immed, 1);
            }
            Cdb::WriteSame {
                size,
                lba,
                blocks,
                unmap,
                anchor,
                ndob,
                protect,
                group,
            } => {
                encode_lba_blocks(
                    &c,
                    b,
                    *size,
                    *lba,
                    *blocks,
                    *group,
                    &[CdbSize::Ten, CdbSize::Sixteen],
                )?;
                c.fits("WRPROTECT", u64::from(*protect), 3)?;
                if *ndob && *size != CdbSize::Sixteen {
                    return Err(c.invalid("NDOB"));
                }
                b[1] = (protect << 5) | flag(*anchor, 4) | flag(*unmap, 3) | flag(*ndob, 0);
            }
            Cdb::Unmap {
                anchor,
                group,
                param_len,
            } => {
                c.fits("GROUP NUMBER", u64::from(*group), 5)?;
                b[1] = flag(*anchor, 0);
                b[6] = *group;
                put_be(b, 7, 2, u64::from(*param_len));
            }
            Cdb::ReportLuns {
                select_report,
                alloc_len,
            } => {
                b[2] = *select_report;
                put_be(b, 6, 4, u64::from(*alloc_len));
            }
            Cdb::CompareAndWrite {
                lba,
                blocks,
                fua,
                dpo,
                protect,
                group,
            } => {
                c.fits("WRPROTECT", u64::from(*protect), 3)?;
                c.fits("GROUP NUMBER", u64::from(*group), 6)?;
                b[1] = (protect << 5) | flag(*dpo, 4) | flag(*fua, 3);
                put_be(b, 2, 8, *lba);
                b[13] = *blocks;
                b[14] = *group;
            }
            Cdb::Other(_) => return Err(c.invalid("typed encoding of OTHER")),
        }
        Ok(group_len(op).unwrap_or(16))
    }

    /// The medium range a command addresses: `(lba, blocks)` for READ,
    /// WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, WRITE SAME,
    /// PRE-FETCH and SYNCHRONIZE CACHE; `None` for the rest (UNMAP's ranges
    /// are in its parameter list). For SYNCHRONIZE CACHE, PRE-FETCH and
    /// WRITE SAME `blocks == 0` means "through the last LBA" (SBC-3); the caller knows the capacity, this codec does not.
    pub fn lba_range(&self) -> Option<(u64, u32)> {
        match self {
            Cdb::Read(rw)
            | Cdb::Write(rw)
            | Cdb::Verify { rw, .. }
            | Cdb::WriteAndVerify { rw, .. } => Some((rw.lba, rw.blocks)),
            Cdb::SyncCache { lba, blocks, .. }
            | Cdb::PreFetch { lba, blocks, .. }
            | Cdb::WriteSame { lba, blocks, .. } => Some((*lba, *blocks)),
            Cdb::CompareAndWrite { lba, blocks, .. } => Some((*lba, u32::from(*blocks))),
            _ => None,
        }
    }

    /// The data phase the command asks for. A zero allocation or parameter
    /// list length means no data phase (SPC-4 4.2.5.6). For [`Cdb::Other`]
    /// the opcode table's direction, or [`Direction::None`] when the opcode
    /// alone cannot tell.
    pub fn direction(&self) -> Direction {
        let some = |n: u64, d: Direction| if n == 0 { Direction::None } else { d };
        use Direction::{FromDevice as In, None as No, ToDevice as Out};
        match self {
            Cdb::TestUnitReady
            | Cdb::StartStopUnit { .. }
            | Cdb::SyncCache { .. }
            | Cdb::PreFetch { .. } => No,
            Cdb::RequestSense { alloc_len, .. } => some(u64::from(*alloc_len), In),
            Cdb::Inquiry { alloc_len, .. } | Cdb::ModeSense { alloc_len, .. } => {
                some(u64::from(*alloc_len), In)
            }
            Cdb::ModeSelect { param_len, .. } | Cdb::Unmap { param_len, .. } => {
                some(u64::from(*param_len), Out)
            }
            Cdb::ReadCapacity10 => In,
            Cdb::ReadCapacity16 { alloc_len }
            | Cdb::GetLbaStatus { alloc_len, .. }
            | Cdb::ReportLuns { alloc_len, .. } => some(u64::from(*alloc_len), In),
            Cdb::Read(rw) => some(u64::from(rw.blocks), In),
            Cdb::Write(rw) => some(u64::from(rw.blocks), Out),
            Cdb::Verify { rw, bytchk } => {
                if *bytchk == 0 {
                    No
                } else {
                    some(u64::from(rw.blocks), Out)
                }
            }
            Cdb::WriteAndVerify { rw, .. } => some(u64::from(rw.blocks), Out),
            Cdb::CompareAndWrite { blocks, .. } => some(u64::from(*blocks), Out),
            // WRITE SAME sends one block even when NUMBER OF LOGICAL BLOCKS
            // is 0; NDOB (SBC-4) sends none.
            Cdb::WriteSame { ndob, .. } => {
                if *ndob {
                    No
                } else {
                    Out
                }
            }
            Cdb::Other(_) => match opcode_row(self.opcode()).map(|r| r.2) {
                Some(Dp::In) => In,
                Some(Dp::Out) => Out,
                _ => No,
            },
        }
    }

    /// Bytes the data phase should move on a LUN with `block_size`-byte
    /// logical blocks: what an initiator puts in iSCSI's Expected Data
    /// Transfer Length and what a target's residual is measured against.
    ///
    /// Allocation and parameter list lengths count as given (a target may
    /// return less: SPC-4 4.2.5.6). VERIFY moves its blocks only when
    /// BYTCHK asks for a compare, and BYTCHK 11b sends a single block
    /// (SBC-3 VERIFY(10)); COMPARE AND WRITE sends twice its
    /// blocks (verify data, then write data); WRITE SAME sends one block
    /// unless NDOB. `None` for [`Cdb::Other`], whose data phase the codec
    /// does not know, and when the product overflows 64 bits.
    pub fn data_len(&self, block_size: u32) -> Option<u64> {
        let bs = u64::from(block_size);
        let blocks = |n: u32| u64::from(n).checked_mul(bs);
        match self {
            Cdb::TestUnitReady
            | Cdb::StartStopUnit { .. }
            | Cdb::SyncCache { .. }
            | Cdb::PreFetch { .. } => Some(0),
            Cdb::RequestSense { alloc_len, .. } => Some(u64::from(*alloc_len)),
            Cdb::Inquiry { alloc_len, .. } | Cdb::ModeSense { alloc_len, .. } => {
                Some(u64::from(*alloc_len))
            }
            Cdb::ModeSelect { param_len, .. } | Cdb::Unmap { param_len, .. } => {
                Some(u64::from(*param_len))
            }
            // READ CAPACITY(10) parameter data is eight bytes (SBC-3).
            Cdb::ReadCapacity10 => Some(8),
            Cdb::ReadCapacity16 { alloc_len }
            | Cdb::GetLbaStatus { alloc_len, .. }
            | Cdb::ReportLuns { alloc_len, .. } => Some(u64::from(*alloc_len)),
            Cdb::Read(rw) | Cdb::Write(rw) => blocks(rw.blocks),
            Cdb::Verify { rw, bytchk } => match bytchk {
                0 => Some(0),
                3 => Some(if rw.blocks == 0 { 0 } else { bs }),
                _ => blocks(rw.blocks),
            },
            Cdb::WriteAndVerify { rw, .. } => blocks(rw.blocks),
            Cdb::CompareAndWrite { blocks: n, .. } => blocks(u32::from(*n))?.checked_mul(2),
            Cdb::WriteSame { ndob, .. } => Some(if *ndob { 0 } else { bs }),
            Cdb::Other(_) => None,
        }
    }

    /// Whether the command changes the medium's content: WRITE, WRITE AND
    /// VERIFY, COMPARE AND WRITE, WRITE SAME and UNMAP. FORMAT UNIT and
    /// SANITIZE, untyped here, are not counted.
    pub fn is_medium_write(&self) -> bool {
        matches!(
            self,
            Cdb::Write(_)
                | Cdb::WriteAndVerify { .. }
                | Cdb::CompareAndWrite { .. }
                | Cdb::WriteSame { .. }
                | Cdb::Unmap { .. }
        )
    }
}

/// The size implied by an opcode in a READ/WRITE/VERIFY-like family.
fn size_of_opcode(opcode: u8) -> CdbSize {
    match opcode >> 5 {
        0 => CdbSize::Six,
        4 => CdbSize::Sixteen,
        5 => CdbSize::Twelve,
        _ => CdbSize::Ten,
    }
}

fn check_other(bytes: &[u8]) -> Result<(), CdbError> {
    let Some(&opcode) = bytes.first() else {
        return Err(CdbError::Empty);
    };
    if bytes.len() > MAX_CDB_LEN {
        return Err(CdbError::TooLong(bytes.len()));
    }
    if let Some(need) = group_len(opcode) {
        if bytes.len() < need {
            return Err(CdbError::TooShort {
                opcode,
                got: bytes.len(),
                need,
            });
        }
    }
    Ok(())
}

/// LBA, block count and group number at the positions of the 10/12/16-byte
/// READ/WRITE layout (SBC-3 READ(10)/(12)/(16)).
fn encode_lba_blocks(
    c: &Check,
    b: &mut [u8; 16],
    size: CdbSize,
    lba: u64,
    blocks: u32,
    group: u8,
    allowed: &[CdbSize],
) -> Result<(), CdbError> {
    if !allowed.contains(&size) {
        return Err(c.invalid("CDB size"));
    }
    c.fits("GROUP NUMBER", u64::from(group), group_bits(size))?;
    match size {
        CdbSize::Ten => {
            c.fits("LOGICAL BLOCK ADDRESS", lba, 32)?;
            c.fits("TRANSFER LENGTH", u64::from(blocks), 16)?;
            put_be(b, 2, 4, lba);
            b[6] = group;
            put_be(b, 7, 2, u64::from(blocks));
        }
        CdbSize::Twelve => {
            c.fits("LOGICAL BLOCK ADDRESS", lba, 32)?;
            put_be(b, 2, 4, lba);
            put_be(b, 6, 4, u64::from(blocks));
            b[10] = group;
        }
        CdbSize::Sixteen => {
            put_be(b, 2, 8, lba);
            put_be(b, 10, 4, u64::from(blocks));
            b[14] = group;
        }
        CdbSize::Six => return Err(c.invalid("CDB size")),
    }
    Ok(())
}

/// READ/WRITE/VERIFY layouts; `byte1_low` carries FUA or BYTCHK.
fn encode_rw(c: &Check, b: &mut [u8; 16], rw: &Rw, byte1_low: u8) -> Result<(), CdbError> {
    if rw.size == CdbSize::Six {
        // SBC-3 READ(6)/WRITE(6): 21-bit LBA, TRANSFER LENGTH 0 means 256, and no
        // FUA, DPO, protection or group fields.
        c.fits("LOGICAL BLOCK ADDRESS", rw.lba, 21)?;
        if rw.blocks == 0 || rw.blocks > 256 {
            return Err(CdbError::FieldOverflow {
                opcode: c.opcode,
                field: "TRANSFER LENGTH",
                value: u64::from(rw.blocks),
                max: 256,
            });
        }
        if rw.fua {
            return Err(c.invalid("FUA"));
        }
        if rw.dpo {
            return Err(c.invalid("DPO"));
        }
        if rw.protect != 0 {
            return Err(c.invalid("PROTECT"));
        }
        if rw.group != 0 {
            return Err(c.invalid("GROUP NUMBER"));
        }
        put_be(b, 1, 3, rw.lba);
        b[4] = (rw.blocks & 0xff) as u8;
        return Ok(());
    }
    c.fits("PROTECT", u64::from(rw.protect), 3)?;
    let all = [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen];
    encode_lba_blocks(c, b, rw.size, rw.lba, rw.blocks, rw.group, &all)?;
    b[1] = (rw.protect << 5) | flag(rw.dpo, 4) | byte1_low;
    Ok(())
}

impl fmt::Display for Cdb {
    /// One line in `scuzz show` style: `WRITE(16) lba=2048 blocks=256 FUA`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rw = |f: &mut fmt::Formatter<'_>, rw: &Rw| -> fmt::Result {
            write!(f, " lba={} blocks={}", rw.lba, rw.blocks)?;
            if rw.fua {
                f.write_str(" FUA")?;
            }
            if rw.dpo {
                f.write_str(" DPO")?;
            }
            if rw.protect != 0 {
                write!(f, " protect={}", rw.protect)?;
            }
            if rw.group != 0 {
                write!(f, " group={}", rw.group)?;
            }
            Ok(())
        };
        if let Cdb::Other(bytes) = self {
            let op = self.opcode();
            write!(f, "OTHER opcode={op:#04x}")?;
            if let Some(name) = opcode_name(op) {
                write!(f, " ({name})")?;
            }
            if let Some((sa, name)) = self
                .service_action()
                .and_then(|sa| service_action_name(op, sa).map(|n| (sa, n)))
            {
                write!(f, " sa={sa:#04x} ({name})")?;
            }
            if bytes.is_empty() {
                f.write_str(" (empty)")?;
            }
            return Ok(());
        }
        f.write_str(self.name())?;
        match self {
            Cdb::TestUnitReady | Cdb::ReadCapacity10 | Cdb::Other(_) => Ok(()),
            Cdb::RequestSense { desc, alloc_len } => {
                if *desc {
                    f.write_str(" desc")?;
                }
                write!(f, " alloc={alloc_len}")
            }
            Cdb::Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => {
                if *evpd {
                    write!(f, " evpd page={page_code:#04x}")?;
                } else if *page_code != 0 {
                    write!(f, " page={page_code:#04x}")?;
                }
                write!(f, " alloc={alloc_len}")
            }
            Cdb::ModeSense {
                dbd,
                llbaa,
                pc,
                page_code,
                subpage,
                alloc_len,
                ..
            } => {
                write!(f, " page={page_code:#04x}")?;
                if *subpage != 0 {
                    write!(f, " subpage={subpage:#04x}")?;
                }
                if *pc != 0 {
                    write!(f, " pc={pc}")?;
                }
                if *dbd {
                    f.write_str(" DBD")?;
                }
                if *llbaa {
                    f.write_str(" LLBAA")?;
                }
                write!(f, " alloc={alloc_len}")
            }
            Cdb::ModeSelect {
                pf, sp, param_len, ..
            } => {
                if *pf {
                    f.write_str(" PF")?;
                }
                if *sp {
                    f.write_str(" SP")?;
                }
                write!(f, " len={param_len}")
            }
            Cdb::StartStopUnit {
                immed,
                power_condition_modifier,
                power_condition,
                no_flush,
                loej,
                start,
            } => {
                f.write_str(if *start { " START" } else { " STOP" })?;
                if *loej {
                    f.write_str(" LOEJ")?;
                }
                if *no_flush {
                    f.write_str(" NO_FLUSH")?;
                }
                if *power_condition != 0 {
                    write!(f, " power_condition={power_condition:#x}")?;
                }
                if *power_condition_modifier != 0 {
                    write!(f, " modifier={power_condition_modifier}")?;
                }
                if *immed {
                    f.write_str(" IMMED")?;
                }
                Ok(())
            }
            Cdb::ReadCapacity16 { alloc_len } => write!(f, " alloc={alloc_len}"),
            Cdb::GetLbaStatus { lba, alloc_len } => write!(f, " lba={lba} alloc={alloc_len}"),
            Cdb::Read(r) | Cdb::Write(r) => rw(f, r),
            Cdb::Verify { rw: r, bytchk } | Cdb::WriteAndVerify { rw: r, bytchk } => {
                rw(f, r)?;
                if *bytchk != 0 {
                    write!(f, " bytchk={bytchk}")?;
                }
                Ok(())
            }
            Cdb::SyncCache {
                lba,
                blocks,
                immed,
                group,
                ..
            }
            | Cdb::PreFetch {
                lba,
                blocks,
                immed,
                group,
                ..
            } => {
                write!(f, " lba={lba} blocks={blocks}")?;
                if *immed {
                    f.write_str(" IMMED")?;
                }
                if *group != 0 {
                    write!(f, " group={group}")?;
                }
                Ok(())
            }
            Cdb::WriteSame {
                lba,
                blocks,
                unmap,
                anchor,
                ndob,
                protect,
                group,
                ..
            } => {
                write!(f, " lba={lba} blocks={blocks}")?;
                for (set, name) in [(*unmap, " UNMAP"), (*anchor, " ANCHOR"), (*ndob, " NDOB")] {
                    if set {
                        f.write_str(name)?;
                    }
                }
                if *protect != 0 {
                    write!(f, " protect={protect}")?;
                }
                if *group != 0 {
                    write!(f, " group={group}")?;
                }
                Ok(())
            }
            Cdb::Unmap {
                anchor,
                group,
                param_len,
            } => {
                write!(f, " len={param_len}")?;
                if *anchor {
                    f.write_str(" ANCHOR")?;
                }
                if *group != 0 {
                    write!(f, " group={group}")?;
                }
                Ok(())
            }
            Cdb::ReportLuns {
                select_report,
                alloc_len,
            } => write!(f, " select={select_report:#04x} alloc={alloc_len}"),
            Cdb::CompareAndWrite {
                lba,
                blocks,
                fua,
                dpo,
                protect,
                group,
            } => rw(
                f,
                &Rw {
                    size: CdbSize::Sixteen,
                    lba: *lba,
                    blocks: u32::from(*blocks),
                    fua: *fua,
                    dpo: *dpo,
                    protect: *protect,
                    group: *group,
                },
            ),
        }
    }
}

/// The `(n)` suffix of a size, for callers building names of families.
impl fmt::Display for CdbSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(size: CdbSize, lba: u64, blocks: u32) -> Rw {
        Rw {
            size,
            lba,
            blocks,
            fua: false,
            dpo: false,
            protect: 0,
            group: 0,
        }
    }

    #[test]
    fn read6_transfer_length_zero_means_256_blocks() {
        let cdb = Cdb::parse(&[0x08, 0x01, 0x02, 0x03, 0x00, 0x00]).unwrap();
        assert_eq!(cdb, Cdb::Read(rw(CdbSize::Six, 0x01_0203, 256)));
        assert_eq!(
            cdb.encode().unwrap(),
            vec![0x08, 0x01, 0x02, 0x03, 0x00, 0x00]
        );
    }

    #[test]
    fn read6_cannot_carry_zero_blocks_or_a_22_bit_lba() {
        assert!(matches!(
            Cdb::Read(rw(CdbSize::Six, 0, 0)).encode(),
            Err(CdbError::FieldOverflow {
                field: "TRANSFER LENGTH",
                ..
            })
        ));
        assert!(matches!(
            Cdb::Write(rw(CdbSize::Six, 1 << 21, 1)).encode(),
            Err(CdbError::FieldOverflow {
                field: "LOGICAL BLOCK ADDRESS",
                max: 0x1f_ffff,
                ..
            })
        ));
    }

    #[test]
    fn a_padded_ten_byte_cdb_parses_from_the_iscsi_16_byte_field() {
        let mut field = [0u8; 16];
        field[..10].copy_from_slice(&[0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]);
        field[12] = 0xee; // padding is never read
        assert_eq!(
            Cdb::parse(&field).unwrap(),
            Cdb::Read(rw(CdbSize::Ten, 16, 8))
        );
    }

    #[test]
    fn too_short_names_opcode_and_lengths() {
        assert_eq!(
            Cdb::parse(&[0x8a, 0, 0]),
            Err(CdbError::TooShort {
                opcode: 0x8a,
                got: 3,
                need: 16
            })
        );
        assert_eq!(Cdb::parse(&[]), Err(CdbError::Empty));
    }

    #[test]
    fn display_matches_show_style() {
        let mut w = rw(CdbSize::Sixteen, 2048, 256);
        w.fua = true;
        assert_eq!(
            Cdb::Write(w).to_string(),
            "WRITE(16) lba=2048 blocks=256 FUA"
        );
        let sync = Cdb::SyncCache {
            size: CdbSize::Ten,
            lba: 0,
            blocks: 0,
            immed: true,
            group: 0,
        };
        assert_eq!(
            sync.to_string(),
            "SYNCHRONIZE CACHE(10) lba=0 blocks=0 IMMED"
        );
        let inq = Cdb::Inquiry {
            evpd: true,
            page_code: 0x83,
            alloc_len: 255,
        };
        assert_eq!(inq.to_string(), "INQUIRY evpd page=0x83 alloc=255");
        let other = Cdb::parse(&[0xa3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(other.to_string(), "OTHER opcode=0xa3 (MAINTENANCE IN)");
    }

    #[test]
    fn opcode_table_has_no_duplicates() {
        for (i, row) in OPCODES.iter().enumerate() {
            assert_eq!(opcode_row(row.0).map(|r| r.1), Some(row.1), "row {i}");
        }
    }
}
