//! Random programs with no seeds, no feedback and no domain knowledge: the
//! campaign's fallback corpus and the baseline the benchmark compares with.

use crate::mutators::Dice;
use crate::program::{Limits, ScsiProgram};
use libafl::generators::Generator;
use libafl::state::HasRand;
use libafl_bolts::rands::Rand;

/// Bytes of entropy behind one random program: enough for a few dozen ops.
pub const ENTROPY_BYTES: usize = 1024;

/// A program made by `arbitrary` from `ENTROPY_BYTES` pseudo-random bytes
/// drawn from `seed`, then fitted.
pub fn random_program(seed: u64, limits: &Limits) -> ScsiProgram {
    let mut d = Dice::new(seed);
    let mut bytes = vec![0u8; ENTROPY_BYTES];
    for chunk in bytes.chunks_mut(8) {
        let w = d.next_u64().to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    ScsiProgram::from_bytes(&bytes, limits)
}

/// [`random_program`] as a LibAFL [`Generator`].
#[derive(Debug, Clone, Copy)]
pub struct RandomProgramGenerator {
    limits: Limits,
}

impl RandomProgramGenerator {
    /// A generator of programs fitted to `limits`.
    pub fn new(limits: Limits) -> RandomProgramGenerator {
        RandomProgramGenerator { limits }
    }
}

impl<S: HasRand> Generator<ScsiProgram, S> for RandomProgramGenerator {
    fn generate(&mut self, state: &mut S) -> Result<ScsiProgram, libafl::Error> {
        Ok(random_program(state.rand_mut().next(), &self.limits))
    }
}
