//! INQUIRY data: the standard page and the vital product data pages a
//! SBC-3 disk reports (00h, 80h, 83h, B0h, B1h, and B2h when thin
//! provisioned).

/// What the unit says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// LUN this identity belongs to.
    pub lun: u64,
    /// UNIT SERIAL NUMBER (ASCII).
    pub serial: String,
    /// NAA IEEE Registered Extended designator (NAA 6), 16 bytes.
    pub naa: [u8; 16],
}

/// Block limits (SBC-3 6.5.3), in logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLimits {
    /// MAXIMUM TRANSFER LENGTH (0: no limit reported).
    pub max_transfer: u32,
    /// OPTIMAL TRANSFER LENGTH.
    pub optimal_transfer: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH.
    pub max_compare_and_write: u8,
    /// MAXIMUM UNMAP LBA COUNT (0 without thin provisioning).
    pub max_unmap_lbas: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH.
    pub max_write_same: u64,
}

/// T10 vendor identification (8 bytes, space padded).
pub const VENDOR: &[u8; 8] = b"SCUZZ   ";
/// Product identification (16 bytes).
pub const PRODUCT: &[u8; 16] = b"EMULATED DISK   ";
/// Product revision level (4 bytes).
pub const REVISION: &[u8; 4] = b"0001";

/// Standard INQUIRY data (SPC-4 6.4.2), 96 bytes.
pub fn standard(lun_present: bool) -> Vec<u8> {
    let mut d = vec![0u8; 96];
    // PERIPHERAL QUALIFIER 011b / type 1Fh: no unit at this LUN (SPC-4 6.4.2).
    d[0] = if lun_present { 0x00 } else { 0x7f };
    d[2] = 0x06; // VERSION: SPC-4
    d[3] = 0x12; // HISUP, RESPONSE DATA FORMAT 2
    d[4] = (d.len() - 5) as u8;
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    // VERSION DESCRIPTORS: SAM-5, SPC-4, SBC-3, iSCSI (SPC-4 table 144).
    for (i, v) in [0x00a0u16, 0x0460, 0x04c0, 0x0960].iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

fn page(code: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8, code];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// The VPD pages supported, ascending as SPC-4 7.8.13 requires.
pub fn supported(thin: bool) -> Vec<u8> {
    let mut v = vec![0x00, 0x80, 0x83, 0xb0, 0xb1];
    if thin {
        v.push(0xb2);
    }
    v
}

/// Build VPD page `code`, or `None` if the unit does not have it.
pub fn vpd(code: u8, id: &Identity, limits: &BlockLimits, thin: bool) -> Option<Vec<u8>> {
    Some(match code {
        0x00 => page(0x00, &supported(thin)),
        0x80 => page(0x80, id.serial.as_bytes()),
        0x83 => {
            let mut b = Vec::new();
            // NAA designator: code set binary, association LU, type NAA.
            b.extend_from_slice(&[0x01, 0x03, 0x00, id.naa.len() as u8]);
            b.extend_from_slice(&id.naa);
            // T10 vendor ID designator: code set ASCII, type T10.
            let mut t10 = VENDOR.to_vec();
            t10.extend_from_slice(id.serial.as_bytes());
            b.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
            b.extend_from_slice(&t10);
            page(0x83, &b)
        }
        0xb0 => {
            let mut b = vec![0u8; 0x3c];
            b[1] = limits.max_compare_and_write;
            b[2..4].copy_from_slice(&1u16.to_be_bytes()); // OPTIMAL TRANSFER LENGTH GRANULARITY
            b[4..8].copy_from_slice(&limits.max_transfer.to_be_bytes());
            b[8..12].copy_from_slice(&limits.optimal_transfer.to_be_bytes());
            b[12..16].copy_from_slice(&limits.max_transfer.to_be_bytes()); // MAXIMUM PREFETCH LENGTH
            b[16..20].copy_from_slice(&limits.max_unmap_lbas.to_be_bytes());
            b[20..24].copy_from_slice(&limits.max_unmap_descriptors.to_be_bytes());
            if thin {
                b[24..28].copy_from_slice(&1u32.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
                b[28] = 0x80; // UGAVALID, alignment 0
            }
            b[32..40].copy_from_slice(&limits.max_write_same.to_be_bytes());
            page(0xb0, &b)
        }
        0xb1 => {
            let mut b = vec![0u8; 0x3c];
            b[0..2].copy_from_slice(&1u16.to_be_bytes()); // non-rotating medium
            b[3] = 0x02; // 3.5" nominal form factor
            page(0xb1, &b)
        }
        0xb2 if thin => {
            // LBPU, LBPWS, LBPWS10, LBPRZ; PROVISIONING TYPE 010b thin.
            page(0xb2, &[0x00, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0x00])
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            lun: 0,
            serial: "SCZ0000".into(),
            naa: [0x60; 16],
        }
    }

    const LIMITS: BlockLimits = BlockLimits {
        max_transfer: 1024,
        optimal_transfer: 128,
        max_compare_and_write: 1,
        max_unmap_lbas: 0,
        max_unmap_descriptors: 0,
        max_write_same: 0xffff,
    };

    #[test]
    fn supported_pages_are_sorted_and_each_one_exists() {
        for thin in [false, true] {
            let s = supported(thin);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            for c in s {
                let p = vpd(c, &id(), &LIMITS, thin).unwrap();
                assert_eq!(p[1], c);
                assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])) + 4, p.len());
            }
        }
        assert!(vpd(0xb2, &id(), &LIMITS, false).is_none());
    }

    #[test]
    fn block_limits_report_the_max_transfer() {
        let p = vpd(0xb0, &id(), &LIMITS, false).unwrap();
        assert_eq!(p.len(), 0x40);
        assert_eq!(&p[8..12], &1024u32.to_be_bytes());
    }
}
