//! The commands this unit implements, as one table: REPORT SUPPORTED
//! OPERATION CODES (SPC-4 6.35) is generated from it, so the report cannot
//! drift from what the executor accepts.

use crate::error::{CheckCondition, CommandError};

/// (operation code, service action, CDB length, needs thin provisioning)
const SUPPORTED: &[(u8, Option<u16>, u16, bool)] = &[
    (0x00, None, 6, false),        // TEST UNIT READY
    (0x03, None, 6, false),        // REQUEST SENSE
    (0x08, None, 6, false),        // READ(6)
    (0x0a, None, 6, false),        // WRITE(6)
    (0x12, None, 6, false),        // INQUIRY
    (0x15, None, 6, false),        // MODE SELECT(6)
    (0x16, None, 6, false),        // RESERVE(6)
    (0x17, None, 6, false),        // RELEASE(6)
    (0x1a, None, 6, false),        // MODE SENSE(6)
    (0x1b, None, 6, false),        // START STOP UNIT
    (0x1e, None, 6, false),        // PREVENT ALLOW MEDIUM REMOVAL
    (0x25, None, 10, false),       // READ CAPACITY(10)
    (0x28, None, 10, false),       // READ(10)
    (0x2a, None, 10, false),       // WRITE(10)
    (0x2e, None, 10, false),       // WRITE AND VERIFY(10)
    (0x2f, None, 10, false),       // VERIFY(10)
    (0x34, None, 10, false),       // PRE-FETCH(10)
    (0x35, None, 10, false),       // SYNCHRONIZE CACHE(10)
    (0x41, None, 10, false),       // WRITE SAME(10)
    (0x42, None, 10, true),        // UNMAP
    (0x55, None, 10, false),       // MODE SELECT(10)
    (0x56, None, 10, false),       // RESERVE(10)
    (0x57, None, 10, false),       // RELEASE(10)
    (0x5a, None, 10, false),       // MODE SENSE(10)
    (0x88, None, 16, false),       // READ(16)
    (0x89, None, 16, false),       // COMPARE AND WRITE
    (0x8a, None, 16, false),       // WRITE(16)
    (0x8e, None, 16, false),       // WRITE AND VERIFY(16)
    (0x8f, None, 16, false),       // VERIFY(16)
    (0x90, None, 16, false),       // PRE-FETCH(16)
    (0x91, None, 16, false),       // SYNCHRONIZE CACHE(16)
    (0x93, None, 16, false),       // WRITE SAME(16)
    (0x9e, Some(0x10), 16, false), // READ CAPACITY(16)
    (0x9e, Some(0x12), 16, true),  // GET LBA STATUS
    (0xa0, None, 12, false),       // REPORT LUNS
    (0xa3, Some(0x0c), 12, false), // REPORT SUPPORTED OPERATION CODES
    (0xa8, None, 12, false),       // READ(12)
    (0xaa, None, 12, false),       // WRITE(12)
    (0xae, None, 12, false),       // WRITE AND VERIFY(12)
    (0xaf, None, 12, false),       // VERIFY(12)
];

fn has_service_actions(opcode: u8) -> bool {
    matches!(opcode, 0x9e | 0x9f | 0xa3 | 0xa4 | 0x7f)
}

fn timeouts(out: &mut Vec<u8>) {
    // Command timeouts descriptor (SPC-4 6.35.4): length 0Ah, no nominal or
    // recommended timeout reported (0: not specified).
    out.extend_from_slice(&[0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

/// Build the REPORT SUPPORTED OPERATION CODES parameter data.
pub fn report(
    rctd: bool,
    options: u8,
    opcode: u8,
    sa: u16,
    thin: bool,
    out: &mut Vec<u8>,
) -> Result<(), CommandError> {
    let table = SUPPORTED.iter().filter(|e| thin || !e.3);
    match options {
        0 => {
            out.extend_from_slice(&[0; 4]);
            for (op, sa, len, _) in table {
                let mut d = [0u8; 8];
                d[0] = *op;
                if let Some(sa) = sa {
                    d[2..4].copy_from_slice(&sa.to_be_bytes());
                    d[5] |= 0x01; // SERVACTV
                }
                if rctd {
                    d[5] |= 0x02; // CTDP
                }
                d[6..8].copy_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&d);
                if rctd {
                    timeouts(out);
                }
            }
            let l = (out.len() - 4) as u32;
            out[0..4].copy_from_slice(&l.to_be_bytes());
            Ok(())
        }
        1..=3 => {
            // 001b: opcode without service action; 010b: with; 011b: either.
            let with_sa = has_service_actions(opcode);
            if (options == 1 && with_sa) || (options == 2 && !with_sa) {
                return Err(CheckCondition::invalid_field_in_cdb(2, Some(2)).into());
            }
            let found = table
                .into_iter()
                .find(|e| e.0 == opcode && (!with_sa || e.1 == Some(sa)));
            out.extend_from_slice(&[0, 0, 0, 0]);
            if rctd {
                out[1] |= 0x80; // CTDP
            }
            match found {
                None => out[1] |= 0x01, // SUPPORT 001b: not supported
                Some((op, sa, len, _)) => {
                    out[1] |= 0x03; // SUPPORT 011b: supported as the standard says
                    out[2..4].copy_from_slice(&len.to_be_bytes());
                    // CDB USAGE DATA: the opcode, the service action where
                    // the CDB carries it, every other bit potentially used.
                    let mut usage = vec![0xffu8; usize::from(*len)];
                    usage[0] = *op;
                    if let Some(sa) = sa {
                        usage[1] = (*sa as u8) & 0x1f;
                    }
                    if let Some(last) = usage.last_mut() {
                        *last = 0x07; // CONTROL: NACA and the obsolete link bits
                    }
                    out.extend_from_slice(&usage);
                    if rctd {
                        timeouts(out);
                    }
                }
            }
            Ok(())
        }
        _ => Err(CheckCondition::invalid_field_in_cdb(2, Some(2)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_commands_report_lists_each_row_once() {
        let mut out = Vec::new();
        report(false, 0, 0, 0, true, &mut out).unwrap();
        assert_eq!(out.len(), 4 + 8 * SUPPORTED.len());
        let mut out = Vec::new();
        report(true, 0, 0, 0, false, &mut out).unwrap();
        assert_eq!(out.len(), 4 + 20 * (SUPPORTED.len() - 2));
    }

    #[test]
    fn one_command_report_says_supported_or_not() {
        let mut out = Vec::new();
        report(false, 1, 0x28, 0, false, &mut out).unwrap();
        assert_eq!(out[1] & 7, 3);
        assert_eq!(&out[2..4], &[0, 10]);
        assert_eq!(out[4], 0x28);
        let mut out = Vec::new();
        report(false, 1, 0xc0, 0, false, &mut out).unwrap();
        assert_eq!(out[1] & 7, 1);
        assert!(report(false, 1, 0x9e, 0x10, false, &mut Vec::new()).is_err());
        let mut out = Vec::new();
        report(false, 2, 0x9e, 0x10, false, &mut out).unwrap();
        assert_eq!(out[5], 0x10);
    }
}
