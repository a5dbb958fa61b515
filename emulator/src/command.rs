//! The device server's view of a command: every CDB the emulator executes,
//! decoded once into a typed value.
//!
//! Opcodes the trace codec types ([`trace::Cdb`]) are taken from it; the
//! SPC commands only a target needs (reservations, PREVENT ALLOW MEDIUM
//! REMOVAL, REPORT SUPPORTED OPERATION CODES) are decoded here from the bytes
//! the codec keeps in [`Cdb::Other`]. Past this module
//! the executor never looks at raw CDB bytes.

use crate::error::CheckCondition;
use trace::cdb::{group_len, Cdb, CdbError};

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// A command the trace codec decodes.
    Cdb(Cdb),
    /// RESERVE(6)/(10) (16h, 56h), SPC-2 7.21.
    Reserve,
    /// RELEASE(6)/(10) (17h, 57h), SPC-2 7.16.
    Release,
    /// PREVENT ALLOW MEDIUM REMOVAL (1Eh).
    PreventAllow {
        /// PREVENT field.
        prevent: u8,
    },
    /// REPORT SUPPORTED OPERATION CODES (A3h/0Ch), SPC-4 6.35.
    ReportSupportedOpcodes {
        /// RCTD: return command timeouts descriptor.
        rctd: bool,
        /// REPORTING OPTIONS.
        options: u8,
        /// REQUESTED OPERATION CODE.
        opcode: u8,
        /// REQUESTED SERVICE ACTION.
        service_action: u16,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// PERSISTENT RESERVE IN (5Eh), SPC-4 6.15.
    PersistentReserveIn {
        /// SERVICE ACTION.
        service_action: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// PERSISTENT RESERVE OUT (5Fh), SPC-4 6.16.
    PersistentReserveOut {
        /// SERVICE ACTION.
        service_action: u8,
        /// SCOPE.
        scope: u8,
        /// TYPE.
        pr_type: u8,
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
}

fn be(b: &[u8], at: usize, n: usize) -> Result<u64, CheckCondition> {
    let f = b
        .get(at..at + n)
        .ok_or(CheckCondition::invalid_field_in_cdb(0, None))?;
    Ok(f.iter().fold(0u64, |v, x| v << 8 | u64::from(*x)))
}

impl Command {
    /// Decode a CDB.
    ///
    /// SPC-4 4.2.5.1 and table 11: an opcode the unit does not implement is
    /// INVALID COMMAND OPERATION CODE (20/00); a field it cannot honour is
    /// INVALID FIELD IN CDB (24/00).
    pub fn parse(bytes: &[u8]) -> Result<Command, CheckCondition> {
        let opcode = *bytes.first().ok_or(CheckCondition::invalid_opcode())?;
        if let Some(n) = group_len(opcode) {
            if bytes.len() < n {
                return Err(CheckCondition::invalid_field_in_cdb(0, None));
            }
        }
        let cdb = match Cdb::parse(bytes) {
            Ok(c) => c,
            Err(CdbError::InvalidField { field, .. }) => {
                return Err(CheckCondition::invalid_field_in_cdb(
                    field_byte(opcode, field),
                    None,
                ))
            }
            Err(_) => return Err(CheckCondition::invalid_field_in_cdb(0, None)),
        };
        let raw = match cdb {
            Cdb::Other(raw) => raw,
            typed => return Ok(Command::Cdb(typed)),
        };
        let b = raw.as_slice();
        let bit = |byte: usize, bit: u8| b.get(byte).is_some_and(|v| v >> bit & 1 == 1);
        let byte = |i: usize| b.get(i).copied().unwrap_or(0);
        Ok(match opcode {
            0x16 | 0x56 => {
                // Third-party and extent reservations are obsolete (SPC-2 7.21.1).
                if bit(1, 4) || bit(1, 0) {
                    return Err(CheckCondition::invalid_field_in_cdb(1, None));
                }
                Command::Reserve
            }
            0x17 | 0x57 => {
                if bit(1, 4) || bit(1, 0) {
                    return Err(CheckCondition::invalid_field_in_cdb(1, None));
                }
                Command::Release
            }
            0x1e => Command::PreventAllow {
                prevent: byte(4) & 3,
            },
            0xa3 if byte(1) & 0x1f == 0x0c => Command::ReportSupportedOpcodes {
                rctd: bit(2, 7),
                options: byte(2) & 7,
                opcode: byte(3),
                service_action: be(b, 4, 2)? as u16,
                alloc_len: be(b, 6, 4)? as u32,
            },
            0x5e => Command::PersistentReserveIn {
                service_action: byte(1) & 0x1f,
                alloc_len: be(b, 7, 2)? as u16,
            },
            0x5f => Command::PersistentReserveOut {
                service_action: byte(1) & 0x1f,
                scope: byte(2) >> 4,
                pr_type: byte(2) & 0xf,
                param_len: be(b, 5, 4)? as u32,
            },
            _ => return Err(CheckCondition::invalid_opcode()),
        })
    }
}

/// Byte offset of a field the codec rejected, for the sense field pointer.
fn field_byte(opcode: u8, field: &str) -> u16 {
    match field {
        "SERVICE ACTION" => 1,
        "PAGE CODE" => 2,
        _ if opcode == 0x12 => 1,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_target_only_opcodes() {
        assert_eq!(
            Command::parse(&[0x16, 0, 0, 0, 0, 0]).unwrap(),
            Command::Reserve
        );
        assert_eq!(
            Command::parse(&[0x16, 0x10, 0, 0, 0, 0]).unwrap_err().asc,
            0x24
        );
        let mut rsoc = [0u8; 12];
        rsoc[0] = 0xa3;
        rsoc[1] = 0x0c;
        rsoc[2] = 0x01;
        rsoc[3] = 0x28;
        rsoc[9] = 64;
        assert_eq!(
            Command::parse(&rsoc).unwrap(),
            Command::ReportSupportedOpcodes {
                rctd: false,
                options: 1,
                opcode: 0x28,
                service_action: 0,
                alloc_len: 64
            }
        );
        assert!(matches!(
            Command::parse(&[0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0]).unwrap(),
            Command::Cdb(Cdb::Read(_))
        ));
    }

    #[test]
    fn unknown_opcodes_and_short_cdbs_get_the_right_sense() {
        assert_eq!(
            Command::parse(&[0xc5, 0, 0, 0, 0, 0]).unwrap_err(),
            CheckCondition::invalid_opcode()
        );
        assert_eq!(
            Command::parse(&[]).unwrap_err(),
            CheckCondition::invalid_opcode()
        );
        assert_eq!(Command::parse(&[0x28, 0, 0]).unwrap_err().asc, 0x24);
    }
}
