//! The CDBs producers build, chosen the way Linux's sd driver chooses them:
//! the 10-byte form while LBA and length fit, the 16-byte form beyond
//! (SBC-3 5.12/5.29: READ(10)/WRITE(10) carry a 32-bit LBA and a 16-bit
//! TRANSFER LENGTH).

use trace::cdb::{Cdb, CdbError, CdbSize, Rw};

/// Largest TRANSFER LENGTH a 10-byte READ/WRITE carries.
const MAX_BLOCKS_10: u32 = u16::MAX as u32;

fn size_for(lba: u64, blocks: u32) -> CdbSize {
    if lba.saturating_add(u64::from(blocks)) <= u64::from(u32::MAX) && blocks <= MAX_BLOCKS_10 {
        CdbSize::Ten
    } else {
        CdbSize::Sixteen
    }
}

/// READ(10/16) or WRITE(10/16) of `blocks` blocks at `lba`.
pub fn read_write(write: bool, lba: u64, blocks: u32, fua: bool) -> Result<Vec<u8>, CdbError> {
    let rw = Rw {
        size: size_for(lba, blocks),
        lba,
        blocks,
        fua,
        dpo: false,
        protect: 0,
        group: 0,
    };
    if write { Cdb::Write(rw) } else { Cdb::Read(rw) }.encode()
}

/// SYNCHRONIZE CACHE(10/16); `blocks` 0 flushes through the end of the
/// medium (SBC-3 5.22).
pub fn sync_cache(lba: u64, blocks: u32) -> Result<Vec<u8>, CdbError> {
    Cdb::SyncCache {
        size: size_for(lba, blocks),
        lba,
        blocks,
        immed: false,
        group: 0,
    }
    .encode()
}

/// UNMAP with its parameter list for one range (SBC-3 5.28: an 8-byte
/// header, then 16-byte block descriptors of LBA and NUMBER OF LOGICAL
/// BLOCKS). Returns the CDB and the Data-Out.
pub fn unmap(lba: u64, blocks: u32) -> Result<(Vec<u8>, Vec<u8>), CdbError> {
    let mut param = vec![0u8; 24];
    // UNMAP DATA LENGTH: bytes that follow it (n - 2).
    param[0..2].copy_from_slice(&22u16.to_be_bytes());
    // UNMAP BLOCK DESCRIPTOR DATA LENGTH: bytes of descriptors.
    param[2..4].copy_from_slice(&16u16.to_be_bytes());
    param[8..16].copy_from_slice(&lba.to_be_bytes());
    param[16..20].copy_from_slice(&blocks.to_be_bytes());
    let cdb = Cdb::Unmap {
        anchor: false,
        group: 0,
        param_len: 24,
    }
    .encode()?;
    Ok((cdb, param))
}

/// The single range of an UNMAP parameter list, if it holds exactly one
/// descriptor.
pub fn unmap_range(param: &[u8]) -> Option<(u64, u32)> {
    let desc_len = u16::from_be_bytes(param.get(2..4)?.try_into().ok()?);
    if desc_len != 16 {
        return None;
    }
    let lba = u64::from_be_bytes(param.get(8..16)?.try_into().ok()?);
    let blocks = u32::from_be_bytes(param.get(16..20)?.try_into().ok()?);
    Some((lba, blocks))
}

/// Bytes the command's data phase moves as its CDB asks for it: blocks ×
/// `block_size` for medium access, the allocation or parameter list length
/// otherwise (SPC-4 4.2.5.6), 8 for READ CAPACITY(10), 0 when the CDB alone
/// cannot tell. For sources that do not record the length (ftrace).
pub fn transfer_length(cdb: &Cdb, block_size: u32) -> u32 {
    let blocks = |n: u32| n.saturating_mul(block_size);
    match cdb {
        Cdb::Read(rw) | Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } => blocks(rw.blocks),
        Cdb::Verify { rw, bytchk } => {
            if *bytchk == 0 {
                0
            } else {
                blocks(rw.blocks)
            }
        }
        // SBC-3 5.2: the Data-Out holds the verify data, then the write data.
        Cdb::CompareAndWrite { blocks: n, .. } => blocks(u32::from(*n)).saturating_mul(2),
        Cdb::WriteSame { ndob, .. } => {
            if *ndob {
                0
            } else {
                block_size
            }
        }
        Cdb::RequestSense { alloc_len, .. } => u32::from(*alloc_len),
        Cdb::Inquiry { alloc_len, .. } | Cdb::ModeSense { alloc_len, .. } => u32::from(*alloc_len),
        Cdb::ModeSelect { param_len, .. } | Cdb::Unmap { param_len, .. } => u32::from(*param_len),
        Cdb::ReadCapacity10 => 8,
        Cdb::ReadCapacity16 { alloc_len }
        | Cdb::GetLbaStatus { alloc_len, .. }
        | Cdb::ReportLuns { alloc_len, .. } => *alloc_len,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_byte_until_the_fields_overflow() {
        assert_eq!(read_write(true, 0x1000, 8, false).unwrap()[0], 0x2a);
        assert_eq!(read_write(false, 0x1000, 8, false).unwrap()[0], 0x28);
        assert_eq!(read_write(true, 1 << 33, 8, false).unwrap()[0], 0x8a);
        assert_eq!(read_write(false, 0, 70_000, false).unwrap()[0], 0x88);
        assert_eq!(sync_cache(0, 0).unwrap()[0], 0x35);
    }

    #[test]
    fn unmap_parameter_list_round_trips() {
        let (cdb, p) = unmap(4096, 77).unwrap();
        assert_eq!(cdb[0], 0x42);
        assert_eq!(unmap_range(&p), Some((4096, 77)));
        assert_eq!(unmap_range(&p[..10]), None);
    }
}
