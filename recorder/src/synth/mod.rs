//! Synthesizers: the CDB streams that real tools (`cp`, `fio`) produce
//! through a buffered or direct I/O path, for developers without the
//! hardware.
//!
//! Each model streams events into a sink (`FnMut(Event)`), holding only the
//! dirty page window and the commands in flight, so a 20 GiB copy costs the
//! same memory as a 20 MiB one. Everything random is drawn from a seed.
//! The models and the reasoning behind every parameter are in
//! `docs/workloads.md`.

pub mod cp;
pub mod fio;
pub mod memory;
pub mod payload;
pub mod rng;
pub mod timeline;
pub mod writeback;

use memory::MemoryStats;
use payload::PayloadKind;
use std::collections::BTreeMap;
use timeline::LatencyModel;
use trace::file::TraceHeader;
use trace::{CdbError, HbaPreset};
use writeback::ClusterStats;

/// Why a synthesizer could not produce its stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// A parameter is out of range; `name` is the CLI flag.
    #[error("--{name}: {reason}")]
    InvalidParameter {
        /// The flag, without dashes.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The dirty window does not fit in memory.
    #[error("modelled memory of {mem_bytes} bytes is exhausted by dirty pages; raise --mem or lower the dirty window")]
    OutOfMemory {
        /// The `--mem` value.
        mem_bytes: u64,
    },
    /// A transfer would not fit the command model's 32-bit length.
    #[error("{what} of {bytes} bytes exceeds a 32-bit transfer length")]
    TooLarge {
        /// What was being built.
        what: &'static str,
        /// Its size.
        bytes: u64,
    },
    /// A CDB could not be encoded (a codec limit).
    #[error("encoding a CDB: {0}")]
    Cdb(#[from] CdbError),
    /// The sink (usually a trace writer) failed.
    #[error("writing the stream: {0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

/// The host a workload runs on: memory, page cache, HBA path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// HBA preset; its `splitter` limits shape every command.
    pub hba: HbaPreset,
    /// Logical block size of the device.
    pub block_size: u32,
    /// Page-cache page size (16 KiB on Apple silicon, 4 KiB on x86).
    pub page_size: u64,
    /// Physical memory size.
    pub mem: u64,
    /// Free memory below 4 GiB when the workload starts.
    pub low_free: u64,
    /// Seed of every random choice and of the block data.
    pub seed: u64,
    /// Payload attached to data commands.
    pub payload: PayloadKind,
    /// Longest run of physically contiguous free pages (fragmentation).
    pub max_run_pages: u64,
    /// Bytes of digest per CRC in digest mode.
    pub digest_granularity: u32,
    /// Dirty bytes that start a writeback pass.
    pub dirty_window: u64,
    /// Commands writeback keeps outstanding.
    pub writeback_depth: usize,
    /// Largest read a cache miss issues (read-ahead cluster).
    pub read_cluster: u64,
    /// Synthesized completion times.
    pub latency: LatencyModel,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            hba: HbaPreset::generic(),
            block_size: 512,
            page_size: 16 << 10,
            mem: 16 << 30,
            low_free: 128 << 20,
            seed: 0,
            payload: PayloadKind::Pattern,
            max_run_pages: memory::MAX_RUN_PAGES,
            digest_granularity: 4096,
            dirty_window: 8 << 20,
            writeback_depth: 32,
            read_cluster: 1 << 20,
            latency: LatencyModel::default(),
        }
    }
}

impl Machine {
    fn validate(&self) -> Result<(), SynthError> {
        let bad = |name, reason: String| Err(SynthError::InvalidParameter { name, reason });
        if !matches!(
            self.block_size,
            512 | 1024 | 2048 | 4096 | 8192 | 16384 | 32768 | 65536
        ) {
            return bad(
                "block-size",
                format!(
                    "{} is not a power of two from 512 to 64 KiB",
                    self.block_size
                ),
            );
        }
        if self.page_size % u64::from(self.block_size) != 0 {
            return bad(
                "page-size",
                format!(
                    "{} is not a multiple of the {}-byte block",
                    self.page_size, self.block_size
                ),
            );
        }
        if self.digest_granularity % self.block_size != 0 {
            return bad(
                "digest-granularity",
                format!(
                    "{} is not a multiple of the block size",
                    self.digest_granularity
                ),
            );
        }
        if self.dirty_window < self.page_size {
            return bad(
                "dirty-window",
                format!("{} is smaller than one page", self.dirty_window),
            );
        }
        if self.max_run_pages == 0 {
            return bad("max-run-pages", "must be at least 1".into());
        }
        if self.writeback_depth == 0 {
            return bad("queue-depth", "must be at least 1".into());
        }
        Ok(())
    }

    /// A trace header describing this machine and a device of
    /// `capacity_blocks`; `workload` goes into the labels with the seed and
    /// the note that completions are synthesized.
    pub fn header(&self, workload: &str, capacity_blocks: u64) -> TraceHeader {
        let mut h = TraceHeader::new(concat!("scuzz-recorder ", env!("CARGO_PKG_VERSION")));
        h.block_size = self.block_size;
        h.capacity_blocks = capacity_blocks;
        h.hba = Some(self.hba.clone());
        h.payload_mode = self.payload.mode();
        let mut labels = BTreeMap::new();
        labels.insert("workload".into(), workload.into());
        labels.insert("seed".into(), self.seed.to_string());
        labels.insert("completions".into(), "synthesized".into());
        labels.insert("page-size".into(), self.page_size.to_string());
        labels.insert("mem".into(), self.mem.to_string());
        labels.insert("low-free".into(), self.low_free.to_string());
        h.labels = labels;
        h
    }
}

/// What a synthesizer produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynthSummary {
    /// Commands issued.
    pub commands: u64,
    /// Shape of the writes.
    pub writes: ClusterStats,
    /// Shape of the reads.
    pub reads: ClusterStats,
    /// SYNCHRONIZE CACHE commands.
    pub flushes: u64,
    /// Where page-cache pages came from.
    pub memory: MemoryStats,
    /// Device capacity the stream needs, in blocks.
    pub capacity_blocks: u64,
}

impl std::fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commands: {} writes (largest {} bytes, {} segments), {} reads (largest {} bytes, {} segments), {} flushes; pages below/above 4 GiB: {}/{}",
            self.commands,
            self.writes.commands,
            self.writes.max_bytes,
            self.writes.max_segments,
            self.reads.commands,
            self.reads.max_bytes,
            self.reads.max_segments,
            self.flushes,
            self.memory.low_pages,
            self.memory.high_pages
        )
    }
}

/// Parses a size with an optional binary suffix (`512`, `16K`, `256M`,
/// `16G`, `1T`; `KiB`/`k` spellings accepted), as fio and the CLI take them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{s}`: unknown size suffix `{suffix}`")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` overflows 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
