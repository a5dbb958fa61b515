//! Latency accounting: HdrHistograms per opcode and per transfer-size class,
//! plus per-opcode interval histograms streamed to an HdrHistogram interval
//! log (`latency.hlog`) so a long run keeps constant memory.

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Significant digits every histogram keeps: 0.1% resolution over any range.
pub const SIGFIG: u8 = 3;

/// How often an interval histogram is written to the log.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The short, tag-safe name of a CDB's opcode family ("read", "write",
/// "sync-cache", ...), as used for histogram keys, hlog tags and plot series.
/// Sizes of the same family (READ(10), READ(16)) share one name.
pub fn opcode_class(cdb: &[u8]) -> Cow<'static, str> {
    let name = match cdb.first() {
        None => "empty",
        Some(0x08 | 0x28 | 0xa8 | 0x88) => "read",
        Some(0x0a | 0x2a | 0xaa | 0x8a) => "write",
        Some(0x35 | 0x91) => "sync-cache",
        Some(0x2f | 0x8f) => "verify",
        Some(0x41 | 0x93) => "write-same",
        Some(0x42) => "unmap",
        Some(0x00) => "test-unit-ready",
        Some(0x03) => "request-sense",
        Some(0x12) => "inquiry",
        Some(0x1a | 0x5a) => "mode-sense",
        Some(0x15 | 0x55) => "mode-select",
        Some(0x1b) => "start-stop-unit",
        Some(0x25) => "read-capacity",
        Some(0x9e) => "service-action-in",
        Some(0xa0) => "report-luns",
        Some(op) => return Cow::Owned(format!("op-{op:02x}h")),
    };
    Cow::Borrowed(name)
}

/// The transfer-size class of a command: the smallest power of two (at
/// least 512) not below its transfer length; 0 for no data.
pub fn size_class(bytes: u32) -> u32 {
    if bytes == 0 {
        0
    } else {
        bytes
            .max(512)
            .checked_next_power_of_two()
            .unwrap_or(u32::MAX)
    }
}

/// `4096` as `4k`, `1048576` as `1m`: fio's spelling of block sizes.
pub fn size_label(bytes: u32) -> String {
    match bytes {
        0 => "0".into(),
        b if b % (1 << 20) == 0 => format!("{}m", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => b.to_string(),
    }
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing: memory follows the largest latency seen, not a
    // worst-case bound chosen up front.
    Histogram::new(SIGFIG).expect("3 significant figures is a valid histogram precision")
}

/// Records `ns`, growing the histogram as needed (hdrhistogram's
/// `saturating_record` clamps instead of growing).
fn rec(h: &mut Histogram<u64>, ns: u64) {
    if h.record(ns).is_err() {
        h.saturating_record(ns);
    }
}

/// An open `latency.hlog`: one interval histogram per opcode per second,
/// written with hdrhistogram's interval-log writer.
pub struct HlogFile {
    out: BufWriter<File>,
    ser: V2DeflateSerializer,
}

impl HlogFile {
    /// Creates the log and writes its header (start time, base time, a
    /// legend comment).
    pub fn create(path: &Path, start: SystemTime) -> io::Result<HlogFile> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut ser = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment("scuzz replay latency log: values in nanoseconds, one tag per opcode")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut ser)?;
        Ok(HlogFile { out, ser })
    }

    fn write(
        &mut self,
        tag: &str,
        start: Duration,
        len: Duration,
        h: &Histogram<u64>,
    ) -> io::Result<()> {
        // A builder with no header options writes nothing, so a fresh writer
        // per interval appends exactly one line to the log.
        let mut w = IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.ser)?;
        w.write_histogram(h, start, len, Tag::new(tag))
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Flushes the log to disk.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Histograms of one opcode class.
pub struct OpHistograms {
    /// Every command of the class.
    pub all: Histogram<u64>,
    /// Per size class ([`size_class`]).
    pub sizes: BTreeMap<u32, Histogram<u64>>,
    /// Bytes moved.
    pub bytes: u64,
    interval: Histogram<u64>,
}

/// Histograms of one run.
pub struct Latency {
    started: Instant,
    /// Whole-run histogram of every command.
    pub all: Histogram<u64>,
    /// Whole-run histograms per opcode class.
    pub per_op: BTreeMap<String, OpHistograms>,
    interval_start: Duration,
    hlog: Option<HlogFile>,
}

impl Latency {
    /// Starts accounting now; intervals go to `hlog` if given.
    pub fn new(hlog: Option<HlogFile>) -> Latency {
        Latency {
            started: Instant::now(),
            all: new_histogram(),
            per_op: BTreeMap::new(),
            interval_start: Duration::ZERO,
            hlog,
        }
    }

    /// Time since accounting started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records one command of opcode class `op` and requested length
    /// `xfer_len` that moved `bytes` and took `ns`.
    pub fn record(&mut self, op: &str, xfer_len: u32, bytes: u32, ns: u64) -> io::Result<()> {
        rec(&mut self.all, ns);
        if !self.per_op.contains_key(op) {
            self.per_op.insert(
                op.to_string(),
                OpHistograms {
                    all: new_histogram(),
                    sizes: BTreeMap::new(),
                    bytes: 0,
                    interval: new_histogram(),
                },
            );
        }
        if let Some(h) = self.per_op.get_mut(op) {
            rec(&mut h.all, ns);
            h.bytes += u64::from(bytes);
            rec(
                h.sizes
                    .entry(size_class(xfer_len))
                    .or_insert_with(new_histogram),
                ns,
            );
            if self.hlog.is_some() {
                rec(&mut h.interval, ns);
            }
        }
        if self.hlog.is_some() && self.elapsed().saturating_sub(self.interval_start) >= INTERVAL {
            self.flush_interval()?;
        }
        Ok(())
    }

    fn flush_interval(&mut self) -> io::Result<()> {
        let now = self.elapsed();
        let len = now.saturating_sub(self.interval_start);
        if let Some(log) = self.hlog.as_mut() {
            for (op, h) in self.per_op.iter_mut() {
                if !h.interval.is_empty() {
                    log.write(op, self.interval_start, len, &h.interval)?;
                    h.interval.reset();
                }
            }
        }
        self.interval_start = now;
        Ok(())
    }

    /// Writes the last partial interval and closes the log.
    pub fn finish(&mut self) -> io::Result<()> {
        self.flush_interval()?;
        if let Some(log) = self.hlog.take() {
            log.finish()?;
        }
        Ok(())
    }

    /// Commands recorded.
    pub fn commands(&self) -> u64 {
        self.all.len()
    }

    /// Bytes moved by all commands.
    pub fn total_bytes(&self) -> u64 {
        self.per_op.values().map(|h| h.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_families_share_a_name() {
        assert_eq!(opcode_class(&[0x28; 10]), "read");
        assert_eq!(opcode_class(&[0x88; 16]), "read");
        assert_eq!(opcode_class(&[0x91; 16]), "sync-cache");
        assert_eq!(opcode_class(&[0xc5]), "op-c5h");
        assert_eq!(opcode_class(&[]), "empty");
    }

    #[test]
    fn size_classes_round_up_to_powers_of_two() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 8192);
        assert_eq!(size_class(u32::MAX), u32::MAX);
        assert_eq!(size_label(4096), "4k");
        assert_eq!(size_label(1 << 20), "1m");
        assert_eq!(size_label(512), "512");
    }

    #[test]
    fn records_per_opcode_and_size() {
        let mut l = Latency::new(None);
        l.record("read", 4096, 4096, 1000).unwrap();
        l.record("read", 65536, 65536, 9000).unwrap();
        l.record("write", 4096, 4096, 2000).unwrap();
        assert_eq!(l.commands(), 3);
        assert_eq!(l.per_op["read"].all.len(), 2);
        assert_eq!(l.per_op["read"].sizes[&65536].len(), 1);
        assert_eq!(l.total_bytes(), 4096 * 2 + 65536);
    }
}
