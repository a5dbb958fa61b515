//! Command descriptor blocks: typed decode and bit-exact encode.
//!
//! [`Cdb::parse`] checks the length against the opcode's group (SPC-4 4.2.5.1)
//! and yields a typed view; [`Cdb::encode`] writes it back. Field names and
//! bit positions follow SBC-3/SPC-4 so the view reads like the standard's
//! tables. Opcodes without a typed view decode to [`Cdb::Other`], which keeps
//! every byte.

use serde::{Deserialize, Serialize};

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
    pub fn len(self) -> usize {
        match self {
            CdbSize::Six => 6,
            CdbSize::Ten => 10,
            CdbSize::Twelve => 12,
            CdbSize::Sixteen => 16,
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
    /// READ CAPACITY(10) (25h).
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
    /// VERIFY(10/16) (2Fh, 8Fh).
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
    /// Any other opcode, kept byte for byte.
    Other(Vec<u8>),
}

/// Why a CDB could not be decoded.
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
}
