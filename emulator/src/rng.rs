//! The emulator's only source of randomness: a seeded SplitMix64 stream.
//!
//! Every choice that is not dictated by the commands (which dirty lines a
//! power loss keeps, which line the random destage policy writes back) is
//! drawn from here, so one seed replays a run exactly.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for
/// choosing cache lines; not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5c75_2275_c0ff_ee00)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        Rng::mix(self.0)
    }

    /// SplitMix64's finaliser: every input bit reaches every output bit,
    /// so a draw combined with a value (an LBA) stays uniform.
    pub fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability 1/2.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}
