//! What a synthesized command carries as data: the recipe for its
//! self-describing blocks (`pattern`), the digests of those blocks
//! (`digest`), or the bytes (`full`).
//!
//! Pattern mode is the default: a few bytes per command, and the replayer
//! regenerates every block from (seed, LBA, generation). Digest mode is what
//! a production capture keeps; it lets a consumer that cannot regenerate
//! blocks still verify reads. Full mode is for small traces and fuzz seeds.

use super::SynthError;
use trace::pattern::fill_blocks;
use trace::Payload;

/// Which payload the synthesizer attaches (the CLI's `--payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadKind {
    /// [`Payload::Pattern`]: seed and generation.
    #[default]
    Pattern,
    /// [`Payload::Digests`]: CRC32C per `digest_granularity` bytes.
    Digest,
    /// [`Payload::Full`]: every byte.
    Full,
}

impl PayloadKind {
    /// The trace header's payload mode for this kind.
    pub fn mode(self) -> trace::file::PayloadMode {
        match self {
            PayloadKind::Pattern => trace::file::PayloadMode::Pattern,
            PayloadKind::Digest => trace::file::PayloadMode::Digest,
            PayloadKind::Full => trace::file::PayloadMode::Full,
        }
    }
}

impl std::str::FromStr for PayloadKind {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self, SynthError> {
        match s {
            "pattern" => Ok(PayloadKind::Pattern),
            "digest" => Ok(PayloadKind::Digest),
            "full" => Ok(PayloadKind::Full),
            other => Err(SynthError::InvalidParameter {
                name: "payload",
                reason: format!("`{other}` is not pattern, digest or full"),
            }),
        }
    }
}

/// Builds payloads for one stream.
#[derive(Debug, Clone)]
pub struct PayloadMaker {
    kind: PayloadKind,
    seed: u64,
    block_size: usize,
    digest_granularity: usize,
    buf: Vec<u8>,
}

impl PayloadMaker {
    /// Payloads of `kind` for blocks of `block_size` bytes from stream
    /// `seed`; digests cover `digest_granularity` bytes each (a multiple of
    /// the block size).
    pub fn new(kind: PayloadKind, seed: u64, block_size: u32, digest_granularity: u32) -> Self {
        PayloadMaker {
            kind,
            seed,
            block_size: block_size as usize,
            digest_granularity: digest_granularity.max(block_size) as usize,
            buf: Vec::new(),
        }
    }

    /// The stream seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The payload of `blocks` blocks from `lba`, all of `generation`.
    pub fn make(&mut self, lba: u64, blocks: u32, generation: u32) -> Payload {
        match self.kind {
            PayloadKind::Pattern => Payload::Pattern {
                seed: self.seed,
                generation,
            },
            PayloadKind::Digest | PayloadKind::Full => {
                let len = blocks as usize * self.block_size;
                self.buf.clear();
                self.buf.resize(len, 0);
                fill_blocks(self.seed, generation, lba, self.block_size, &mut self.buf);
                if self.kind == PayloadKind::Full {
                    Payload::Full(self.buf.clone())
                } else {
                    Payload::Digests {
                        granularity: self.digest_granularity as u32,
                        crcs: self
                            .buf
                            .chunks(self.digest_granularity)
                            .map(crc32c::crc32c)
                            .collect(),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_cover_the_transfer_at_the_granularity() {
        let mut m = PayloadMaker::new(PayloadKind::Digest, 5, 512, 4096);
        let Payload::Digests { granularity, crcs } = m.make(100, 24, 1) else {
            panic!()
        };
        assert_eq!(granularity, 4096);
        assert_eq!(crcs.len(), 3);
        let Payload::Full(bytes) =
            PayloadMaker::new(PayloadKind::Full, 5, 512, 4096).make(100, 24, 1)
        else {
            panic!()
        };
        assert_eq!(crcs[2], crc32c::crc32c(&bytes[8192..]));
        assert_eq!(
            PayloadMaker::new(PayloadKind::Pattern, 5, 512, 0).make(0, 1, 3),
            Payload::Pattern {
                seed: 5,
                generation: 3
            }
        );
    }
}
