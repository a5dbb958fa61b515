//! A fast, deterministic hasher for integer keys (LBAs, page numbers).
//!
//! The default SipHash is keyed randomly per process, which would make
//! iteration order (and so which dirty cache line a seeded power loss keeps)
//! differ between runs of the same seed; it is also several times slower
//! than needed for keys an adversary does not choose.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hashing of 64-bit words (the Fx scheme).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type BuildFastHasher = BuildHasherDefault<FastHasher>;
