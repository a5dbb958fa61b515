//! Typed Basic Header Segments, one struct per PDU kind (RFC 7143 §11).
//!
//! Decoding reads fixed offsets of a `[u8; 48]` through [`super::wire`];
//! nothing here can index past the header. Fields keep the RFC's names;
//! reserved fields are dropped on decode and written as zero on encode.

use super::error::PduError;
use super::fields::{Lun, Stage, TaskAttribute, TmfFunction};
use super::wire::*;

/// Opcodes (RFC 7143 §11.2.1.2). Initiator opcodes are 0x00–0x1f, target
/// opcodes 0x20–0x3f.
#[allow(missing_docs)]
pub mod opcode {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT_REQUEST: u8 = 0x02;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    pub const SNACK: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

const F: u8 = 0x80;
const IMM: u8 = 0x40;

/// NOP-Out (RFC 7143 §11.18): an initiator ping or the answer to a NOP-In.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Command (RFC 7143 §11.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiCommand {
    /// I bit: delivered for immediate delivery, does not advance CmdSN.
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out follows.
    pub final_: bool,
    /// R bit: data flows to the initiator.
    pub read: bool,
    /// W bit: data flows to the target.
    pub write: bool,
    /// Task attribute.
    pub attr: TaskAttribute,
    /// Logical unit.
    pub lun: Lun,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length (the write length for bidirectional).
    pub expected_length: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// The CDB: the 16 BHS bytes followed by the Extended CDB AHS, if any.
    pub cdb: Vec<u8>,
    /// Bidirectional Read Expected Data Transfer Length AHS (§11.3.5).
    pub bidi_read_length: Option<u32>,
}

/// SCSI Response (RFC 7143 §11.4). The data segment carries SenseLength and
/// the sense data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// 0x00 Command Completed at Target, 0x01 Target Failure.
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_read_residual: u32,
    pub residual: u32,
}

/// Task Management Function Request (RFC 7143 §11.5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TmfFunction,
    pub lun: Lun,
    pub itt: u32,
    pub referenced_tt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Task Management Function Response (RFC 7143 §11.6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct TaskMgmtResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// Login Request (RFC 7143 §11.12).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LoginRequest {
    /// T bit: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C bit: the text continues in the next PDU.
    pub cont: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Login Response (RFC 7143 §11.13).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

/// Text Request (RFC 7143 §11.10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Text Response (RFC 7143 §11.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Data-Out (RFC 7143 §11.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct DataOut {
    pub final_: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

/// SCSI Data-In (RFC 7143 §11.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataIn {
    /// F bit: last PDU of the sequence.
    pub final_: bool,
    /// A bit: acknowledge requested (ErrorRecoveryLevel > 0 only).
    pub ack: bool,
    /// O bit (with S): residual overflow.
    pub overflow: bool,
    /// U bit (with S): residual underflow.
    pub underflow: bool,
    /// S bit with the status byte: the status phase is collapsed into this
    /// PDU (RFC 7143 §11.7.4), no SCSI Response follows.
    pub status: Option<u8>,
    /// Logical unit (when A is set).
    pub lun: Lun,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN (meaningful with S).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset of this PDU's data.
    pub buffer_offset: u32,
    /// Residual Count (meaningful with S).
    pub residual: u32,
}

/// Logout Request (RFC 7143 §11.14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct LogoutRequest {
    pub immediate: bool,
    /// 0 close the session, 1 close the connection, 2 remove the
    /// connection for recovery.
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Logout Response (RFC 7143 §11.15).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct LogoutResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

/// SNACK Request (RFC 7143 §11.16).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Snack {
    /// 0 Data/R2T, 1 Status, 2 DataACK, 3 R-Data.
    pub kind: u8,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

/// Ready To Transfer (RFC 7143 §11.8).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct R2t {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_length: u32,
}

/// Asynchronous Message (RFC 7143 §11.9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct AsyncMessage {
    pub lun: Lun,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: u8,
    pub vcode: u8,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
}

/// Reject (RFC 7143 §11.17). The data segment is the rejected PDU's header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Reject {
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
}

/// NOP-In (RFC 7143 §11.19): the answer to a ping, or a target's own ping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct NopIn {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// A typed Basic Header Segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Header {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

/// AHS types (RFC 7143 §11.2.2.1).
const AHS_EXTENDED_CDB: u8 = 1;
const AHS_BIDI_READ_LENGTH: u8 = 2;

fn stage(opcode: &'static str, field: &'static str, bits: u8) -> Result<Stage, PduError> {
    Stage::from_bits(bits).ok_or(PduError::InvalidField {
        opcode,
        field,
        value: u64::from(bits & 3),
    })
}

impl Header {
    /// The opcode this header encodes as.
    pub fn opcode(&self) -> u8 {
        use opcode::*;
        match self {
            Header::NopOut(_) => NOP_OUT,
            Header::ScsiCommand(_) => SCSI_COMMAND,
            Header::TaskMgmtRequest(_) => TASK_MGMT_REQUEST,
            Header::LoginRequest(_) => LOGIN_REQUEST,
            Header::TextRequest(_) => TEXT_REQUEST,
            Header::DataOut(_) => DATA_OUT,
            Header::LogoutRequest(_) => LOGOUT_REQUEST,
            Header::Snack(_) => SNACK,
            Header::NopIn(_) => NOP_IN,
            Header::ScsiResponse(_) => SCSI_RESPONSE,
            Header::TaskMgmtResponse(_) => TASK_MGMT_RESPONSE,
            Header::LoginResponse(_) => LOGIN_RESPONSE,
            Header::TextResponse(_) => TEXT_RESPONSE,
            Header::DataIn(_) => DATA_IN,
            Header::LogoutResponse(_) => LOGOUT_RESPONSE,
            Header::R2t(_) => R2T,
            Header::AsyncMessage(_) => ASYNC_MESSAGE,
            Header::Reject(_) => REJECT,
        }
    }

    /// The PDU kind's name as RFC 7143 spells it.
    pub fn name(&self) -> &'static str {
        opcode_name(self.opcode())
    }

    /// Decodes a BHS and its AHS area (already split off by the framing
    /// layer; `ahs.len()` is TotalAHSLength × 4).
    pub fn decode(b: &Bhs, ahs: &[u8]) -> Result<Header, PduError> {
        use opcode::*;
        let op = b[0] & 0x3f;
        let imm = b[0] & IMM != 0;
        let f = b[1] & F != 0;
        let lun = Lun(u64_at(b, 8));
        let itt = u32_at(b, 16);
        Ok(match op {
            NOP_OUT => Header::NopOut(NopOut {
                immediate: imm,
                lun,
                itt,
                ttt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            SCSI_COMMAND => {
                let attr = TaskAttribute::from_bits(b[1]).ok_or(PduError::InvalidField {
                    opcode: "SCSI Command",
                    field: "ATTR",
                    value: u64::from(b[1] & 7),
                })?;
                let mut cdb = b[32..48].to_vec();
                let mut bidi_read_length = None;
                parse_command_ahs(ahs, &mut cdb, &mut bidi_read_length)?;
                Header::ScsiCommand(ScsiCommand {
                    immediate: imm,
                    final_: f,
                    read: b[1] & 0x40 != 0,
                    write: b[1] & 0x20 != 0,
                    attr,
                    lun,
                    itt,
                    expected_length: u32_at(b, 20),
                    cmd_sn: u32_at(b, 24),
                    exp_stat_sn: u32_at(b, 28),
                    cdb,
                    bidi_read_length,
                })
            }
            TASK_MGMT_REQUEST => Header::TaskMgmtRequest(TaskMgmtRequest {
                immediate: imm,
                function: TmfFunction(b[1] & 0x7f),
                lun,
                itt,
                referenced_tt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
                ref_cmd_sn: u32_at(b, 32),
                exp_data_sn: u32_at(b, 36),
            }),
            LOGIN_REQUEST => {
                let transit = b[1] & 0x80 != 0;
                let cont = b[1] & 0x40 != 0;
                if transit && cont {
                    // RFC 7143 §11.12.2: T and C both set is a protocol error.
                    return Err(PduError::InvalidField {
                        opcode: "Login Request",
                        field: "T and C",
                        value: u64::from(b[1] >> 6),
                    });
                }
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginRequest(LoginRequest {
                    transit,
                    cont,
                    csg: stage("Login Request", "CSG", b[1] >> 2)?,
                    nsg: if transit {
                        stage("Login Request", "NSG", b[1])?
                    } else {
                        Stage::from_bits(b[1]).unwrap_or(Stage::Security)
                    },
                    version_max: b[2],
                    version_min: b[3],
                    isid,
                    tsih: u16_at(b, 14),
                    itt,
                    cid: u16_at(b, 20),
                    cmd_sn: u32_at(b, 24),
                    exp_stat_sn: u32_at(b, 28),
                })
            }
            TEXT_REQUEST => Header::TextRequest(TextRequest {
                immediate: imm,
                final_: f,
                cont: b[1] & 0x40 != 0,
                lun,
                itt,
                ttt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            DATA_OUT => Header::DataOut(DataOut {
                final_: f,
                lun,
                itt,
                ttt: u32_at(b, 20),
                exp_stat_sn: u32_at(b, 28),
                data_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
            }),
            LOGOUT_REQUEST => Header::LogoutRequest(LogoutRequest {
                immediate: imm,
                reason: b[1] & 0x7f,
                itt,
                cid: u16_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            SNACK => Header::Snack(Snack {
                kind: b[1] & 0x0f,
                lun,
                itt,
                ttt: u32_at(b, 20),
                exp_stat_sn: u32_at(b, 28),
                beg_run: u32_at(b, 40),
                run_length: u32_at(b, 44),
            }),
            NOP_IN => Header::NopIn(NopIn {
                lun,
                itt,
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            SCSI_RESPONSE => Header::ScsiResponse(ScsiResponse {
                bidi_overflow: b[1] & 0x10 != 0,
                bidi_underflow: b[1] & 0x08 != 0,
                overflow: b[1] & 0x04 != 0,
                underflow: b[1] & 0x02 != 0,
                response: b[2],
                status: b[3],
                itt,
                snack_tag: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                exp_data_sn: u32_at(b, 36),
                bidi_read_residual: u32_at(b, 40),
                residual: u32_at(b, 44),
            }),
            TASK_MGMT_RESPONSE => Header::TaskMgmtResponse(TaskMgmtResponse {
                response: b[2],
                itt,
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            LOGIN_RESPONSE => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                let transit = b[1] & 0x80 != 0;
                Header::LoginResponse(LoginResponse {
                    transit,
                    cont: b[1] & 0x40 != 0,
                    csg: stage("Login Response", "CSG", b[1] >> 2)?,
                    nsg: if transit {
                        stage("Login Response", "NSG", b[1])?
                    } else {
                        Stage::from_bits(b[1]).unwrap_or(Stage::Security)
                    },
                    version_max: b[2],
                    version_active: b[3],
                    isid,
                    tsih: u16_at(b, 14),
                    itt,
                    stat_sn: u32_at(b, 24),
                    exp_cmd_sn: u32_at(b, 28),
                    max_cmd_sn: u32_at(b, 32),
                    status_class: b[36],
                    status_detail: b[37],
                })
            }
            TEXT_RESPONSE => Header::TextResponse(TextResponse {
                final_: f,
                cont: b[1] & 0x40 != 0,
                lun,
                itt,
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            DATA_IN => Header::DataIn(DataIn {
                final_: f,
                ack: b[1] & 0x40 != 0,
                overflow: b[1] & 0x04 != 0,
                underflow: b[1] & 0x02 != 0,
                status: (b[1] & 0x01 != 0).then_some(b[3]),
                lun,
                itt,
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                data_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
                residual: u32_at(b, 44),
            }),
            LOGOUT_RESPONSE => Header::LogoutResponse(LogoutResponse {
                response: b[2],
                itt,
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                time2wait: u16_at(b, 40),
                time2retain: u16_at(b, 42),
            }),
            R2T => Header::R2t(R2t {
                lun,
                itt,
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                r2t_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
                desired_length: u32_at(b, 44),
            }),
            ASYNC_MESSAGE => Header::AsyncMessage(AsyncMessage {
                lun,
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                event: b[36],
                vcode: b[37],
                parameter1: u16_at(b, 38),
                parameter2: u16_at(b, 40),
                parameter3: u16_at(b, 42),
            }),
            REJECT => Header::Reject(Reject {
                reason: b[2],
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                data_sn: u32_at(b, 36),
            }),
            other => return Err(PduError::UnknownOpcode(other)),
        })
    }

    /// Encodes the BHS (with TotalAHSLength and DataSegmentLength filled in)
    /// and appends any AHS to `ahs_out`.
    pub fn encode(&self, data_len: u32, ahs_out: &mut Vec<u8>) -> Bhs {
        let mut b: Bhs = [0; BHS_LEN];
        b[0] = self.opcode();
        let ahs_start = ahs_out.len();
        match self {
            Header::NopOut(h) => {
                b[0] |= if h.immediate { IMM } else { 0 };
                b[1] = F;
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 24, h.cmd_sn);
                put_u32(&mut b, 28, h.exp_stat_sn);
            }
            Header::ScsiCommand(h) => {
                b[0] |= if h.immediate { IMM } else { 0 };
                b[1] = (if h.final_ { F } else { 0 })
                    | (if h.read { 0x40 } else { 0 })
                    | (if h.write { 0x20 } else { 0 })
                    | h.attr.bits();
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.expected_length);
                put_u32(&mut b, 24, h.cmd_sn);
                put_u32(&mut b, 28, h.exp_stat_sn);
                let n = h.cdb.len().min(16);
                b[32..32 + n].copy_from_slice(&h.cdb[..n]);
                if h.cdb.len() > 16 {
                    let ext = &h.cdb[16..];
                    // RFC 7143 §11.3.4: AHSLength counts the reserved byte
                    // and the CDB bytes beyond the 16 in the BHS.
                    let ahs_len = (ext.len() + 1).min(usize::from(u16::MAX)) as u16;
                    ahs_out.extend_from_slice(&ahs_len.to_be_bytes());
                    ahs_out.push(AHS_EXTENDED_CDB);
                    ahs_out.push(0);
                    ahs_out.extend_from_slice(&ext[..usize::from(ahs_len) - 1]);
                    ahs_out.resize(ahs_out.len() + pad_len(usize::from(ahs_len) - 1), 0);
                }
                if let Some(len) = h.bidi_read_length {
                    ahs_out.extend_from_slice(&5u16.to_be_bytes());
                    ahs_out.push(AHS_BIDI_READ_LENGTH);
                    ahs_out.push(0);
                    ahs_out.extend_from_slice(&len.to_be_bytes());
                }
            }
            Header::TaskMgmtRequest(h) => {
                b[0] |= if h.immediate { IMM } else { 0 };
                b[1] = F | (h.function.0 & 0x7f);
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.referenced_tt);
                put_u32(&mut b, 24, h.cmd_sn);
                put_u32(&mut b, 28, h.exp_stat_sn);
                put_u32(&mut b, 32, h.ref_cmd_sn);
                put_u32(&mut b, 36, h.exp_data_sn);
            }
            Header::LoginRequest(h) => {
                // RFC 7143 §11.12: a Login Request always has the I bit set.
                b[0] |= IMM;
                b[1] = (if h.transit { 0x80 } else { 0 })
                    | (if h.cont { 0x40 } else { 0 })
                    | (h.csg.bits() << 2)
                    | h.nsg.bits();
                b[2] = h.version_max;
                b[3] = h.version_min;
                b[8..14].copy_from_slice(&h.isid);
                put_u16(&mut b, 14, h.tsih);
                put_u32(&mut b, 16, h.itt);
                put_u16(&mut b, 20, h.cid);
                put_u32(&mut b, 24, h.cmd_sn);
                put_u32(&mut b, 28, h.exp_stat_sn);
            }
            Header::TextRequest(h) => {
                b[0] |= if h.immediate { IMM } else { 0 };
                b[1] = (if h.final_ { F } else { 0 }) | (if h.cont { 0x40 } else { 0 });
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 24, h.cmd_sn);
                put_u32(&mut b, 28, h.exp_stat_sn);
            }
            Header::DataOut(h) => {
                b[1] = if h.final_ { F } else { 0 };
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 28, h.exp_stat_sn);
                put_u32(&mut b, 36, h.data_sn);
                put_u32(&mut b, 40, h.buffer_offset);
            }
            Header::LogoutRequest(h) => {
                b[0] |= if h.immediate { IMM } else { 0 };
                b[1] = F | (h.reason & 0x7f);
                put_u32(&mut b, 16, h.itt);
                put_u16(&mut b, 20, h.cid);
                put_u32(&mut b, 24, h.cmd_sn);
                put_u32(&mut b, 28, h.exp_stat_sn);
            }
            Header::Snack(h) => {
                b[1] = F | (h.kind & 0x0f);
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 28, h.exp_stat_sn);
                put_u32(&mut b, 40, h.beg_run);
                put_u32(&mut b, 44, h.run_length);
            }
            Header::NopIn(h) => {
                b[1] = F;
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
            }
            Header::ScsiResponse(h) => {
                b[1] = F
                    | (if h.bidi_overflow { 0x10 } else { 0 })
                    | (if h.bidi_underflow { 0x08 } else { 0 })
                    | (if h.overflow { 0x04 } else { 0 })
                    | (if h.underflow { 0x02 } else { 0 });
                b[2] = h.response;
                b[3] = h.status;
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.snack_tag);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                put_u32(&mut b, 36, h.exp_data_sn);
                put_u32(&mut b, 40, h.bidi_read_residual);
                put_u32(&mut b, 44, h.residual);
            }
            Header::TaskMgmtResponse(h) => {
                b[1] = F;
                b[2] = h.response;
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
            }
            Header::LoginResponse(h) => {
                b[1] = (if h.transit { 0x80 } else { 0 })
                    | (if h.cont { 0x40 } else { 0 })
                    | (h.csg.bits() << 2)
                    | h.nsg.bits();
                b[2] = h.version_max;
                b[3] = h.version_active;
                b[8..14].copy_from_slice(&h.isid);
                put_u16(&mut b, 14, h.tsih);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                b[36] = h.status_class;
                b[37] = h.status_detail;
            }
            Header::TextResponse(h) => {
                b[1] = (if h.final_ { F } else { 0 }) | (if h.cont { 0x40 } else { 0 });
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
            }
            Header::DataIn(h) => {
                b[1] = (if h.final_ { F } else { 0 })
                    | (if h.ack { 0x40 } else { 0 })
                    | (if h.overflow { 0x04 } else { 0 })
                    | (if h.underflow { 0x02 } else { 0 })
                    | (if h.status.is_some() { 0x01 } else { 0 });
                b[3] = h.status.unwrap_or(0);
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                put_u32(&mut b, 36, h.data_sn);
                put_u32(&mut b, 40, h.buffer_offset);
                put_u32(&mut b, 44, h.residual);
            }
            Header::LogoutResponse(h) => {
                b[1] = F;
                b[2] = h.response;
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                put_u16(&mut b, 40, h.time2wait);
                put_u16(&mut b, 42, h.time2retain);
            }
            Header::R2t(h) => {
                b[1] = F;
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, h.itt);
                put_u32(&mut b, 20, h.ttt);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                put_u32(&mut b, 36, h.r2t_sn);
                put_u32(&mut b, 40, h.buffer_offset);
                put_u32(&mut b, 44, h.desired_length);
            }
            Header::AsyncMessage(h) => {
                b[1] = F;
                put_u64(&mut b, 8, h.lun.0);
                put_u32(&mut b, 16, 0xffff_ffff);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                b[36] = h.event;
                b[37] = h.vcode;
                put_u16(&mut b, 38, h.parameter1);
                put_u16(&mut b, 40, h.parameter2);
                put_u16(&mut b, 42, h.parameter3);
            }
            Header::Reject(h) => {
                b[1] = F;
                b[2] = h.reason;
                put_u32(&mut b, 16, 0xffff_ffff);
                put_u32(&mut b, 24, h.stat_sn);
                put_u32(&mut b, 28, h.exp_cmd_sn);
                put_u32(&mut b, 32, h.max_cmd_sn);
                put_u32(&mut b, 36, h.data_sn);
            }
        }
        let ahs_words = (ahs_out.len() - ahs_start) / 4;
        b[4] = ahs_words.min(255) as u8;
        put_u24(&mut b, 5, data_len & 0x00ff_ffff);
        b
    }
}

/// Parses the AHS area of a SCSI Command (RFC 7143 §11.2.2): a sequence of
/// `AHSLength(2) AHSType(1) specific(AHSLength)` records, each padded to 4.
fn parse_command_ahs(
    ahs: &[u8],
    cdb: &mut Vec<u8>,
    bidi: &mut Option<u32>,
) -> Result<(), PduError> {
    let mut off = 0usize;
    while off < ahs.len() {
        let hdr = ahs.get(off..off + 3).ok_or(PduError::BadAhs {
            offset: off,
            reason: "AHS header runs past TotalAHSLength",
        })?;
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        let kind = hdr[2];
        // The specific part starts at off+3 and is `len` bytes long, then
        // padding to the next 4-byte boundary.
        let end = off
            .checked_add(3)
            .and_then(|x| x.checked_add(len))
            .filter(|&e| e <= ahs.len())
            .ok_or(PduError::BadAhs {
                offset: off,
                reason: "AHSLength runs past TotalAHSLength",
            })?;
        let body = &ahs[off + 3..end];
        match kind {
            AHS_EXTENDED_CDB => {
                if len < 2 {
                    return Err(PduError::BadAhs {
                        offset: off,
                        reason: "extended CDB AHS shorter than its reserved byte",
                    });
                }
                // First byte of the specific part is reserved.
                cdb.extend_from_slice(&body[1..]);
            }
            AHS_BIDI_READ_LENGTH => {
                if len != 5 {
                    return Err(PduError::BadAhs {
                        offset: off,
                        reason: "bidirectional read length AHS must have AHSLength 5",
                    });
                }
                *bidi = Some(u32::from_be_bytes([body[1], body[2], body[3], body[4]]));
            }
            _ => {
                return Err(PduError::BadAhs {
                    offset: off,
                    reason: "unknown AHSType",
                })
            }
        }
        off = end + pad_len(end);
    }
    Ok(())
}

/// The name RFC 7143 gives an opcode.
pub fn opcode_name(op: u8) -> &'static str {
    use opcode::*;
    match op & 0x3f {
        NOP_OUT => "NOP-Out",
        SCSI_COMMAND => "SCSI Command",
        TASK_MGMT_REQUEST => "Task Management Function Request",
        LOGIN_REQUEST => "Login Request",
        TEXT_REQUEST => "Text Request",
        DATA_OUT => "SCSI Data-Out",
        LOGOUT_REQUEST => "Logout Request",
        SNACK => "SNACK Request",
        NOP_IN => "NOP-In",
        SCSI_RESPONSE => "SCSI Response",
        TASK_MGMT_RESPONSE => "Task Management Function Response",
        LOGIN_RESPONSE => "Login Response",
        TEXT_RESPONSE => "Text Response",
        DATA_IN => "SCSI Data-In",
        LOGOUT_RESPONSE => "Logout Response",
        R2T => "Ready To Transfer",
        ASYNC_MESSAGE => "Asynchronous Message",
        REJECT => "Reject",
        _ => "unknown",
    }
}
