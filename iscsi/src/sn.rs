//! Serial number arithmetic (RFC 1982 with SERIAL_BITS = 32), which RFC
//! 7143 §4.2.2.1 prescribes for CmdSN, StatSN, DataSN and R2TSN: every
//! counter wraps, so "less than" is a comparison within half the space.

/// `a < b` in serial number arithmetic.
#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// `a > b` in serial number arithmetic.
#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// Whether `sn` lies in the window `[lo, hi]` (both inclusive).
#[inline]
pub fn in_window(sn: u32, lo: u32, hi: u32) -> bool {
    !lt(sn, lo) && !gt(sn, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        assert!(lt(1, 2));
        assert!(lt(0xffff_fff0, 3));
        assert!(gt(3, 0xffff_fff0));
        assert!(!lt(5, 5));
        assert!(in_window(0xffff_ffff, 0xffff_fff0, 10));
        assert!(!in_window(11, 0xffff_fff0, 10));
    }
}
