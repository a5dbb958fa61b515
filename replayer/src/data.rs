//! Data-Out for replayed writes: the recording's bytes when it kept them,
//! the same self-describing blocks regenerated when it kept their recipe,
//! and fresh self-describing blocks when it kept only digests or nothing,
//! so that every block read back can still be judged (design §4).

use trace::pattern::{fill_blocks, HEADER_LEN};
use trace::Payload;

/// Where a write's data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteData {
    /// The recording's bytes.
    Recorded,
    /// The recording's self-describing blocks, regenerated.
    Regenerated,
    /// New self-describing blocks (the recording kept digests or nothing).
    Fresh,
    /// Zeros (a parameter list the recording did not keep).
    Zeros,
}

impl WriteData {
    /// Whether the bytes are those the recorded device saw, so its read
    /// data can be compared with ours.
    pub fn reproduces_recording(self) -> bool {
        matches!(self, WriteData::Recorded | WriteData::Regenerated)
    }
}

/// Fills `buf` with the Data-Out of a WRITE of `xfer_len` bytes at `lba`.
///
/// Fresh blocks carry `seed` and the run's write number as their
/// generation: it grows with every write, so a later write to an LBA always
/// has the larger generation, as the block format requires, without a
/// per-LBA table.
pub fn write_blocks(
    payload: &Payload,
    lba: u64,
    block_size: u32,
    xfer_len: u32,
    seed: u64,
    write_number: u32,
    buf: &mut Vec<u8>,
) -> WriteData {
    let len = xfer_len as usize;
    buf.clear();
    if let Payload::Full(bytes) = payload {
        buf.extend_from_slice(&bytes[..bytes.len().min(len)]);
        buf.resize(len, 0);
        return WriteData::Recorded;
    }
    buf.resize(len, 0);
    let bs = block_size as usize;
    if bs < HEADER_LEN {
        return WriteData::Zeros;
    }
    let whole = len / bs * bs;
    let (seed, generation, kind) = match payload {
        Payload::Pattern { seed, generation } => (*seed, *generation, WriteData::Regenerated),
        _ => (seed, write_number, WriteData::Fresh),
    };
    fill_blocks(seed, generation, lba, bs, &mut buf[..whole]);
    kind
}

/// Fills `buf` with the Data-Out of a command that is not a WRITE (MODE
/// SELECT, UNMAP, WRITE SAME): the recording's bytes, or zeros.
pub fn other_data_out(payload: &Payload, xfer_len: u32, buf: &mut Vec<u8>) -> WriteData {
    let len = xfer_len as usize;
    buf.clear();
    match payload {
        Payload::Full(bytes) => {
            buf.extend_from_slice(&bytes[..bytes.len().min(len)]);
            buf.resize(len, 0);
            WriteData::Recorded
        }
        _ => {
            buf.resize(len, 0);
            WriteData::Zeros
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::pattern::{inspect, BlockState};

    #[test]
    fn fresh_blocks_name_their_lba_and_write_number() {
        let mut b = Vec::new();
        let k = write_blocks(&Payload::None, 100, 512, 1024, 7, 3, &mut b);
        assert_eq!(k, WriteData::Fresh);
        assert_eq!(b.len(), 1024);
        match inspect(&b[512..]) {
            BlockState::Valid { tag } => {
                assert_eq!((tag.lba, tag.generation, tag.seed), (101, 3, 7));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pattern_payload_is_regenerated_and_full_is_copied() {
        let mut b = Vec::new();
        let k = write_blocks(
            &Payload::Pattern {
                seed: 9,
                generation: 2,
            },
            5,
            4096,
            4096,
            1,
            1,
            &mut b,
        );
        assert_eq!(k, WriteData::Regenerated);
        assert!(
            matches!(inspect(&b), BlockState::Valid { tag } if tag.seed == 9 && tag.generation == 2)
        );
        let k = write_blocks(&Payload::Full(vec![1, 2, 3]), 0, 512, 512, 0, 0, &mut b);
        assert_eq!(k, WriteData::Recorded);
        assert_eq!(&b[..4], &[1, 2, 3, 0]);
        assert_eq!(b.len(), 512);
    }

    #[test]
    fn a_short_trailing_block_stays_zero() {
        let mut b = Vec::new();
        write_blocks(&Payload::None, 0, 512, 700, 1, 1, &mut b);
        assert!(b[512..].iter().all(|&x| x == 0));
    }
}
