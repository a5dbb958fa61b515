//! Summary statistics of a trace: what `scuzz stats` prints and what
//! `scuzz diff` compares.
//!
//! [`TraceStats`] is fed events one at a time, so a trace of any length is
//! summarised in memory proportional to its commands in flight, not to its
//! length. [`TraceStats::report`] turns it into a [`StatsReport`], a plain
//! serialisable value.
//!
//! Submissions and completions are paired by `seq`. Latency is completion
//! time minus submission time, as recorded; queue depth is the number of
//! commands submitted and not yet completed.

use crate::cdb::{opcode_name, Cdb};
use crate::command::{Event, ScsiStatus, ServiceResponse, Submit};
use crate::file::TraceHeader;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Commands in flight beyond this are not tracked (their completions count
/// as unpaired): a hostile trace of submissions alone cannot exhaust memory.
const MAX_PENDING: usize = 1 << 20;
/// Queue depths at or above this share one histogram bucket.
const DEPTH_BUCKET_CAP: u64 = 1024;
/// Segment counts above this are bucketed by powers of two.
const SG_EXACT_CAP: u64 = 1024;
/// The 4 GiB line that 32-bit DMA addressing cannot cross.
const FOUR_GIB: u64 = 1 << 32;

/// Accumulates statistics over a stream of events.
pub struct TraceStats {
    block_size: u32,
    first_ns: Option<u64>,
    last_ns: u64,
    events: EventCounts,
    opcodes: BTreeMap<String, OpcodeAcc>,
    pending: HashMap<u64, Pending>,
    unpaired_completions: u64,
    untracked_submissions: u64,
    statuses: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    flush: FlushAcc,
    depth: u64,
    max_depth: u64,
    depth_since_ns: u64,
    depth_time: BTreeMap<u64, u64>,
    sg_counts: BTreeMap<u64, u64>,
    max_dma_addr: Option<u64>,
    segments: u64,
    segments_above_4g: u64,
    commands_above_4g: u64,
}

struct Pending {
    time_ns: u64,
    opcode_key: String,
}

#[derive(Default)]
struct OpcodeAcc {
    opcode: u8,
    count: u64,
    bytes: u64,
    bytes_transferred: u64,
    not_good: u64,
    latency: Option<Histogram<u64>>,
}

struct FlushAcc {
    count: u64,
    /// Bytes written since the last flush was submitted.
    since_last: u64,
    between: Histogram<u64>,
    min: Option<u64>,
    max: u64,
}

/// How many of each kind of event the trace holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    /// All events.
    pub total: u64,
    /// Command submissions.
    pub submits: u64,
    /// Command completions.
    pub completes: u64,
    /// Power-loss markers.
    pub power_losses: u64,
    /// Reset markers.
    pub resets: u64,
    /// Notes.
    pub notes: u64,
}

/// The summary of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    /// Event counts by kind.
    pub events: EventCounts,
    /// Time from the first to the last event, in ns.
    pub duration_ns: u64,
    /// Per command name (`WRITE(10)`), sorted by name.
    pub opcodes: Vec<OpcodeStats>,
    /// Completions by status (`GOOD`, `CHECK CONDITION`, ...).
    pub statuses: BTreeMap<String, u64>,
    /// Commands submitted and never completed.
    pub incomplete: u64,
    /// Completions without a matching submission.
    pub unpaired_completions: u64,
    /// Latency over all paired commands.
    pub latency: LatencySummary,
    /// SYNCHRONIZE CACHE behaviour.
    pub flushes: FlushStats,
    /// Queue depth over time.
    pub queue_depth: QueueDepthStats,
    /// Scatter-gather lists and DMA addresses.
    pub sg: SgStats,
}

/// One row of the per-command table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpcodeStats {
    /// Command name as SPC/SBC spell it.
    pub name: String,
    /// Operation code.
    pub opcode: u8,
    /// Submissions.
    pub count: u64,
    /// Bytes requested (sum of transfer lengths).
    pub bytes: u64,
    /// Bytes the completions report as moved.
    pub bytes_transferred: u64,
    /// Completions with a status other than GOOD or a failed delivery.
    pub not_good: u64,
    /// Latency of this command's completions.
    pub latency: LatencySummary,
}

/// Latency percentiles in ns (HdrHistogram, 3 significant digits).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// How often the trace flushes and how much data each flush covers: the
/// measure of how much a lost cache can cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlushStats {
    /// SYNCHRONIZE CACHE(10/16) commands.
    pub count: u64,
    /// Bytes written between consecutive flushes (from the trace start to
    /// the first flush, then flush to flush): smallest.
    pub bytes_between_min: u64,
    /// Median (HdrHistogram, 3 significant digits).
    pub bytes_between_median: u64,
    /// Largest.
    pub bytes_between_max: u64,
    /// Bytes written after the last flush: never made durable by the trace.
    pub bytes_after_last_flush: u64,
}

/// Queue depth: commands submitted and not yet completed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueDepthStats {
    /// Largest depth reached.
    pub max: u64,
    /// Time-weighted mean depth.
    pub mean: f64,
    /// Nanoseconds spent at each depth (the last bucket holds every depth
    /// at or above 1024).
    pub time_at_depth_ns: BTreeMap<u64, u64>,
}

/// Scatter-gather shapes and where the DMA went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SgStats {
    /// Commands by segment count (counts above 1024 are rounded up to a
    /// power of two). Commands with no recorded SG list are under 0.
    pub segment_count_histogram: BTreeMap<u64, u64>,
    /// Segments in all.
    pub segments: u64,
    /// Highest byte address any segment reaches (`None` without segments).
    pub max_dma_addr: Option<u64>,
    /// Segments with any byte at or above 4 GiB.
    pub segments_above_4g: u64,
    /// Commands with at least one such segment.
    pub commands_above_4g: u64,
}

/// Records `v`, growing the histogram as needed (`saturating_record` would
/// clamp to the current range instead of growing it).
fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid HdrHistogram precision")
}

impl TraceStats {
    /// Empty statistics for a trace with this header (its block size turns
    /// block counts into bytes).
    pub fn new(header: &TraceHeader) -> TraceStats {
        TraceStats {
            block_size: header.block_size,
            first_ns: None,
            last_ns: 0,
            events: EventCounts::default(),
            opcodes: BTreeMap::new(),
            pending: HashMap::new(),
            unpaired_completions: 0,
            untracked_submissions: 0,
            statuses: BTreeMap::new(),
            latency: new_histogram(),
            flush: FlushAcc {
                count: 0,
                since_last: 0,
                between: new_histogram(),
                min: None,
                max: 0,
            },
            depth: 0,
            max_depth: 0,
            depth_since_ns: 0,
            depth_time: BTreeMap::new(),
            sg_counts: BTreeMap::new(),
            max_dma_addr: None,
            segments: 0,
            segments_above_4g: 0,
            commands_above_4g: 0,
        }
    }

    /// Statistics of a whole event sequence.
    pub fn from_events<'a>(
        header: &TraceHeader,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> TraceStats {
        let mut s = TraceStats::new(header);
        for ev in events {
            s.add(ev);
        }
        s
    }

    /// Latency of every paired command, in ns.
    pub fn latency_histogram(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// Adds one event.
    pub fn add(&mut self, ev: &Event) {
        let t = ev.time_ns();
        self.advance_clock(t);
        self.events.total += 1;
        match ev {
            Event::Submit(s) => self.submit(s),
            Event::Complete(c) => {
                self.events.completes += 1;
                let status = match c.response {
                    ServiceResponse::TaskComplete => status_name(c.status),
                    ServiceResponse::DeliveryFailure => "SERVICE DELIVERY FAILURE".to_string(),
                    ServiceResponse::Incomplete => "INCOMPLETE".to_string(),
                };
                let good = c.response == ServiceResponse::TaskComplete
                    && matches!(c.status, ScsiStatus::GOOD | ScsiStatus::CONDITION_MET);
                *self.statuses.entry(status).or_default() += 1;
                match self.pending.remove(&c.seq) {
                    Some(p) => {
                        self.set_depth(self.depth.saturating_sub(1));
                        let lat = c.time_ns.saturating_sub(p.time_ns);
                        record(&mut self.latency, lat);
                        if let Some(op) = self.opcodes.get_mut(&p.opcode_key) {
                            op.bytes_transferred += u64::from(c.bytes_transferred);
                            if !good {
                                op.not_good += 1;
                            }
                            record(op.latency.get_or_insert_with(new_histogram), lat);
                        }
                    }
                    None => self.unpaired_completions += 1,
                }
            }
            Event::PowerLoss { .. } => self.events.power_losses += 1,
            Event::Reset { .. } => self.events.resets += 1,
            Event::Note { .. } => self.events.notes += 1,
        }
    }

    fn advance_clock(&mut self, t: u64) {
        if self.first_ns.is_none() {
            self.first_ns = Some(t);
            self.depth_since_ns = t;
        }
        // Producers write events in order; a timestamp that goes backwards
        // adds no time rather than wrapping.
        if t > self.depth_since_ns {
            let bucket = self.depth.min(DEPTH_BUCKET_CAP);
            *self.depth_time.entry(bucket).or_default() += t - self.depth_since_ns;
            self.depth_since_ns = t;
        }
        self.last_ns = self.last_ns.max(t);
    }

    fn set_depth(&mut self, d: u64) {
        self.depth = d;
        self.max_depth = self.max_depth.max(d);
    }

    fn submit(&mut self, s: &Submit) {
        self.events.submits += 1;
        let cdb = Cdb::parse(&s.cdb);
        let (key, opcode) = match &cdb {
            Ok(c) => (c.name().to_string(), c.opcode()),
            Err(_) => {
                let op = s.cdb.first().copied().unwrap_or(0);
                let name = opcode_name(op).unwrap_or("UNKNOWN");
                (format!("{name} (malformed)"), op)
            }
        };
        let op = self.opcodes.entry(key.clone()).or_default();
        op.opcode = opcode;
        op.count += 1;
        op.bytes += u64::from(s.xfer_len);

        if let Ok(c) = &cdb {
            if matches!(c, Cdb::SyncCache { .. }) {
                let f = &mut self.flush;
                f.count += 1;
                record(&mut f.between, f.since_last);
                f.min = Some(f.min.map_or(f.since_last, |m| m.min(f.since_last)));
                f.max = f.max.max(f.since_last);
                f.since_last = 0;
            } else if c.is_medium_write() {
                self.flush.since_last = self.flush.since_last.saturating_add(written_bytes(
                    c,
                    s.xfer_len,
                    self.block_size,
                ));
            }
        }

        if self.pending.len() < MAX_PENDING && !self.pending.contains_key(&s.seq) {
            self.pending.insert(
                s.seq,
                Pending {
                    time_ns: s.time_ns,
                    opcode_key: key,
                },
            );
            self.set_depth(self.depth + 1);
        } else {
            self.untracked_submissions += 1;
        }

        let n = s.sg.len() as u64;
        let bucket = if n <= SG_EXACT_CAP {
            n
        } else {
            n.next_power_of_two()
        };
        *self.sg_counts.entry(bucket).or_default() += 1;
        let mut above = false;
        for seg in &s.sg {
            self.segments += 1;
            if seg.len == 0 {
                continue;
            }
            let last = seg.end() - 1;
            self.max_dma_addr = Some(self.max_dma_addr.map_or(last, |m| m.max(last)));
            if last >= FOUR_GIB {
                self.segments_above_4g += 1;
                above = true;
            }
        }
        if above {
            self.commands_above_4g += 1;
        }
    }

    /// The summary so far. Commands still pending count as incomplete.
    pub fn report(&self) -> StatsReport {
        let duration_ns = self.first_ns.map_or(0, |f| self.last_ns - f);
        let total_depth_time: u64 = self.depth_time.values().sum();
        let weighted: f64 = self
            .depth_time
            .iter()
            .map(|(d, ns)| *d as f64 * *ns as f64)
            .sum();
        let f = &self.flush;
        StatsReport {
            events: self.events.clone(),
            duration_ns,
            opcodes: self
                .opcodes
                .iter()
                .map(|(name, o)| OpcodeStats {
                    name: name.clone(),
                    opcode: o.opcode,
                    count: o.count,
                    bytes: o.bytes,
                    bytes_transferred: o.bytes_transferred,
                    not_good: o.not_good,
                    latency: o.latency.as_ref().map(summarise).unwrap_or_default(),
                })
                .collect(),
            statuses: self.statuses.clone(),
            incomplete: self.pending.len() as u64 + self.untracked_submissions,
            unpaired_completions: self.unpaired_completions,
            latency: summarise(&self.latency),
            flushes: FlushStats {
                count: f.count,
                bytes_between_min: f.min.unwrap_or(0),
                bytes_between_median: if f.count == 0 {
                    0
                } else {
                    f.between.value_at_quantile(0.5)
                },
                bytes_between_max: f.max,
                bytes_after_last_flush: f.since_last,
            },
            queue_depth: QueueDepthStats {
                max: self.max_depth,
                mean: if total_depth_time == 0 {
                    0.0
                } else {
                    weighted / total_depth_time as f64
                },
                time_at_depth_ns: self.depth_time.clone(),
            },
            sg: SgStats {
                segment_count_histogram: self.sg_counts.clone(),
                segments: self.segments,
                max_dma_addr: self.max_dma_addr,
                segments_above_4g: self.segments_above_4g,
                commands_above_4g: self.commands_above_4g,
            },
        }
    }
}

/// Bytes a medium write puts on the medium: its block count times the block
/// size when both are known (WRITE SAME writes many blocks from one), else
/// its transfer length.
fn written_bytes(c: &Cdb, xfer_len: u32, block_size: u32) -> u64 {
    match c.lba_range() {
        Some((_, blocks)) if blocks > 0 && block_size > 0 => {
            u64::from(blocks) * u64::from(block_size)
        }
        _ => u64::from(xfer_len),
    }
}

fn status_name(s: ScsiStatus) -> String {
    match s.name() {
        "UNKNOWN STATUS" => format!("STATUS {:#04x}", s.0),
        n => n.to_string(),
    }
}

fn summarise(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        min_ns: h.min(),
        mean_ns: h.mean(),
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Complete, Direction, Nexus, Payload, Segment, TaskAttr};

    fn submit(seq: u64, t: u64, cdb: Vec<u8>, xfer: u32, sg: Vec<Segment>) -> Event {
        Event::Submit(Submit {
            seq,
            time_ns: t,
            nexus: Nexus::default(),
            tag: seq,
            attr: TaskAttr::Simple,
            cdb,
            dir: Direction::ToDevice,
            xfer_len: xfer,
            sg,
            payload: Payload::None,
        })
    }

    fn complete(seq: u64, t: u64, status: ScsiStatus) -> Event {
        Event::Complete(Complete {
            seq,
            time_ns: t,
            response: ServiceResponse::TaskComplete,
            status,
            sense: vec![],
            bytes_transferred: 4096,
            residual: 0,
            payload: Payload::None,
        })
    }

    fn write10(lba: u8, blocks: u8) -> Vec<u8> {
        vec![0x2a, 0, 0, 0, 0, lba, 0, 0, blocks, 0]
    }

    #[test]
    fn pairs_commands_and_measures_depth_latency_flushes_and_dma() {
        let mut h = TraceHeader::new("t");
        h.block_size = 512;
        let sync = vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let events = vec![
            submit(0, 0, write10(0, 8), 4096, vec![Segment::new(0x1000, 4096)]),
            submit(
                1,
                100,
                write10(8, 8),
                4096,
                vec![Segment::new(0xffff_f000, 0x2000)],
            ),
            complete(0, 1_000, ScsiStatus::GOOD),
            complete(1, 1_100, ScsiStatus::CHECK_CONDITION),
            submit(2, 2_000, sync.clone(), 0, vec![]),
            complete(2, 3_000, ScsiStatus::GOOD),
            submit(3, 3_000, write10(16, 1), 512, vec![]),
            submit(4, 3_500, sync, 0, vec![]),
            submit(5, 4_000, write10(17, 2), 1024, vec![]),
            complete(9, 4_000, ScsiStatus::GOOD),
            Event::PowerLoss { time_ns: 5_000 },
        ];
        let r = TraceStats::from_events(&h, &events).report();
        assert_eq!(r.events.total, 11);
        assert_eq!(r.events.submits, 6);
        assert_eq!(r.duration_ns, 5_000);
        assert_eq!(r.incomplete, 3);
        assert_eq!(r.unpaired_completions, 1);
        let w = r.opcodes.iter().find(|o| o.name == "WRITE(10)").unwrap();
        assert_eq!(
            (w.opcode, w.count, w.bytes, w.not_good),
            (0x2a, 4, 4096 * 2 + 512 + 1024, 1)
        );
        assert_eq!(w.latency.count, 2);
        assert_eq!(r.statuses["CHECK CONDITION"], 1);
        assert_eq!(r.latency.count, 3);
        assert_eq!(r.latency.max_ns, 1_000);
        assert_eq!(r.latency.min_ns, 1_000);
        assert_eq!(r.flushes.bytes_between_median, 512);
        assert_eq!(r.flushes.count, 2);
        assert_eq!(r.flushes.bytes_between_max, 8192);
        assert_eq!(r.flushes.bytes_between_min, 512);
        assert_eq!(r.flushes.bytes_after_last_flush, 1024);
        assert_eq!(r.queue_depth.max, 3);
        // Depth 1 for 100 ns, 2 for 900, 1 for 100, 0 for 900, 1 for 1000,
        // 1 for 500, 2 for 500, 3 for 1000 (until the power loss at 5000).
        assert_eq!(r.queue_depth.time_at_depth_ns[&2], 1_400);
        assert_eq!(r.queue_depth.time_at_depth_ns[&3], 1_000);
        assert_eq!(r.sg.segment_count_histogram[&0], 4);
        assert_eq!(r.sg.max_dma_addr, Some(0x1_0000_0fff));
        assert_eq!((r.sg.segments_above_4g, r.sg.commands_above_4g), (1, 1));
    }

    #[test]
    fn malformed_cdbs_and_empty_traces_do_not_panic() {
        let h = TraceHeader::new("t");
        let r = TraceStats::from_events(&h, &[]).report();
        assert_eq!(r.latency, LatencySummary::default());
        let events = [submit(
            0,
            5,
            vec![0x2a, 0],
            0,
            vec![Segment::new(u64::MAX, u32::MAX)],
        )];
        let r = TraceStats::from_events(&h, &events).report();
        assert_eq!(r.opcodes[0].name, "WRITE(10) (malformed)");
        assert_eq!(r.sg.max_dma_addr, Some(u64::MAX - 1));
    }
}
