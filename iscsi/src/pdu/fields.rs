//! Small typed fields shared by several PDU kinds: LUN, login stage, task
//! attribute, task-management function, and the reserved tag value.

/// The reserved tag 0xffffffff (RFC 7143 §11.1: "reserved tag value"), used
/// where no Initiator or Target Transfer Tag applies.
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// An 8-byte SAM LUN field exactly as carried in the BHS.
///
/// Kept raw so the proxy forwards what it received; [`Lun::flat`] gives the
/// flat LUN number of the common single-level addressing methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lun(pub u64);

impl Lun {
    /// The LUN field for flat LUN `n` (SAM-5 §4.7.7: peripheral device
    /// addressing below 256, flat space addressing up to 16383).
    pub fn from_flat(n: u16) -> Lun {
        if n < 256 {
            Lun(u64::from(n) << 48)
        } else {
            Lun((0x4000 | u64::from(n & 0x3fff)) << 48)
        }
    }

    /// The flat LUN number for peripheral (00b) and flat space (01b)
    /// addressing of the first level; `None` for other methods or levels.
    pub fn flat(self) -> Option<u16> {
        let first = (self.0 >> 48) as u16;
        if self.0 & 0x0000_ffff_ffff_ffff != 0 {
            return None;
        }
        match first >> 14 {
            0b00 if first >> 8 == 0 => Some(first & 0xff),
            0b01 => Some(first & 0x3fff),
            _ => None,
        }
    }
}

/// Login stage (RFC 7143 §11.12.3, CSG and NSG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    Security,
    /// 1: LoginOperationalNegotiation.
    Operational,
    /// 3: FullFeaturePhase.
    FullFeature,
}

impl Stage {
    pub(crate) fn from_bits(b: u8) -> Option<Stage> {
        match b & 3 {
            0 => Some(Stage::Security),
            1 => Some(Stage::Operational),
            3 => Some(Stage::FullFeature),
            _ => None,
        }
    }

    pub(crate) fn bits(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::FullFeature => 3,
        }
    }
}

/// Task attribute of a SCSI Command (RFC 7143 §11.3.1, ATTR field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskAttribute {
    /// 0: Untagged.
    Untagged,
    /// 1: Simple.
    #[default]
    Simple,
    /// 2: Ordered.
    Ordered,
    /// 3: Head of queue.
    HeadOfQueue,
    /// 4: ACA.
    Aca,
}

impl TaskAttribute {
    pub(crate) fn from_bits(b: u8) -> Option<TaskAttribute> {
        Some(match b & 7 {
            0 => TaskAttribute::Untagged,
            1 => TaskAttribute::Simple,
            2 => TaskAttribute::Ordered,
            3 => TaskAttribute::HeadOfQueue,
            4 => TaskAttribute::Aca,
            _ => return None,
        })
    }

    pub(crate) fn bits(self) -> u8 {
        match self {
            TaskAttribute::Untagged => 0,
            TaskAttribute::Simple => 1,
            TaskAttribute::Ordered => 2,
            TaskAttribute::HeadOfQueue => 3,
            TaskAttribute::Aca => 4,
        }
    }
}

/// Task management function code (RFC 7143 §11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TmfFunction(pub u8);

impl TmfFunction {
    /// ABORT TASK.
    pub const ABORT_TASK: TmfFunction = TmfFunction(1);
    /// ABORT TASK SET.
    pub const ABORT_TASK_SET: TmfFunction = TmfFunction(2);
    /// CLEAR ACA.
    pub const CLEAR_ACA: TmfFunction = TmfFunction(3);
    /// CLEAR TASK SET.
    pub const CLEAR_TASK_SET: TmfFunction = TmfFunction(4);
    /// LOGICAL UNIT RESET.
    pub const LOGICAL_UNIT_RESET: TmfFunction = TmfFunction(5);
    /// TARGET WARM RESET.
    pub const TARGET_WARM_RESET: TmfFunction = TmfFunction(6);
    /// TARGET COLD RESET.
    pub const TARGET_COLD_RESET: TmfFunction = TmfFunction(7);
    /// TASK REASSIGN.
    pub const TASK_REASSIGN: TmfFunction = TmfFunction(8);
}

/// Task management response code (RFC 7143 §11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TmfResponse(pub u8);

impl TmfResponse {
    /// Function complete.
    pub const COMPLETE: TmfResponse = TmfResponse(0);
    /// Task does not exist.
    pub const NO_TASK: TmfResponse = TmfResponse(1);
    /// LUN does not exist.
    pub const NO_LUN: TmfResponse = TmfResponse(2);
    /// Task still allegiant.
    pub const STILL_ALLEGIANT: TmfResponse = TmfResponse(3);
    /// Task allegiance reassignment not supported.
    pub const REASSIGN_NOT_SUPPORTED: TmfResponse = TmfResponse(4);
    /// Task management function not supported.
    pub const NOT_SUPPORTED: TmfResponse = TmfResponse(5);
    /// Function authorization failed.
    pub const AUTH_FAILED: TmfResponse = TmfResponse(6);
    /// Function rejected.
    pub const REJECTED: TmfResponse = TmfResponse(255);
}
