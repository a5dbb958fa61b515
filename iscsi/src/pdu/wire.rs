//! Big-endian field access on the 48-byte Basic Header Segment.
//!
//! Every decoder reads through these helpers on a `[u8; 48]`, so field
//! offsets are the only thing a PDU kind spells out and no index can run past
//! the header.

/// Length of the Basic Header Segment (RFC 7143 §11.2.1).
pub const BHS_LEN: usize = 48;

/// The raw Basic Header Segment.
pub type Bhs = [u8; BHS_LEN];

#[inline]
pub(crate) fn u16_at(b: &Bhs, off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn u32_at(b: &Bhs, off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
pub(crate) fn u64_at(b: &Bhs, off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(x)
}

#[inline]
pub(crate) fn put_u16(b: &mut Bhs, off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_u24(b: &mut Bhs, off: usize, v: u32) {
    b[off..off + 3].copy_from_slice(&v.to_be_bytes()[1..]);
}

#[inline]
pub(crate) fn put_u32(b: &mut Bhs, off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_u64(b: &mut Bhs, off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Bytes of padding that follow `len` bytes to reach a 4-byte boundary
/// (RFC 7143 §11.1: segments are padded to a multiple of 4 bytes).
#[inline]
pub fn pad_len(len: usize) -> usize {
    (4 - (len & 3)) & 3
}
