//! Newtypes for the units SCSI and DMA arithmetic mixes up: a logical block
//! address is not a byte offset, and a physical address is not either.

use arbitrary::Arbitrary;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A logical block address on a LUN, in units of the LUN's block size.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Arbitrary,
)]
pub struct Lba(pub u64);

/// An address in the host's physical (or I/O virtual) address space, as an
/// HBA sees it in a scatter-gather entry.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Arbitrary,
)]
pub struct PhysAddr(pub u64);

impl fmt::Display for Lba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for PhysAddr {
    /// Hex with `_` every 32 bits, so an address above 4 GiB stands out:
    /// `0x1_2000_0000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hi = self.0 >> 32;
        let lo = self.0 & 0xffff_ffff;
        if hi == 0 {
            write!(f, "{:#x}", lo)
        } else {
            write!(f, "{:#x}_{:04x}_{:04x}", hi, lo >> 16, lo & 0xffff)
        }
    }
}

impl PhysAddr {
    /// The address `len` bytes further on, or `None` if it would pass 2^64.
    pub fn checked_add(self, len: u64) -> Option<PhysAddr> {
        self.0.checked_add(len).map(PhysAddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys_addr_display_marks_the_4g_boundary() {
        assert_eq!(PhysAddr(0x1000).to_string(), "0x1000");
        assert_eq!(PhysAddr(0x1_2000_0000).to_string(), "0x1_2000_0000");
    }
}
