//! A fast, deterministic hasher for integer keys (LBAs, page numbers,
//! command sequence numbers).
//!
//! The default SipHash is keyed randomly per process, which would make
//! iteration order (and so which dirty cache line a seeded power loss keeps)
//! differ between runs of the same seed; it is also several times slower
//! than needed for keys an adversary does not choose. The oracle and the
//! emulator look keys up per block, so this is on every hot path.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hashing of 64-bit words (the Fx scheme).
#[derive(Debug, Default, Clone, Copy)]
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

/// A `HashMap` keyed by integers with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildFastHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_equal_and_neighbours_differ() {
        let b = BuildFastHasher::default();
        assert_eq!(b.hash_one(42u64), b.hash_one(42u64));
        assert_ne!(b.hash_one(42u64), b.hash_one(43u64));
    }
}
