//! Comparing two captures of the same workload: what `scuzz diff` prints.
//!
//! The question behind it is the report's last line, "this did not happen
//! with the KEXT": two captures of one `cp` differ in how the stack cut and
//! placed the I/O (transfer sizes, segment counts, DMA addresses), and maybe
//! in what it wrote and when it flushed. The first kind of difference is
//! shown as side-by-side figures; the second as the first point where the
//! streams diverge.
//!
//! Streams are aligned by LBA range and flush order, not by sequence
//! number: a stack that splits a 1 MiB writeback into two 512 KiB commands
//! has issued twice the commands but written the same blocks between the
//! same flushes, and that is not a divergence. Each stream is cut into
//! *epochs* at every SYNCHRONIZE CACHE, power loss and reset; within an
//! epoch the blocks written and the blocks read are merged into extents, and
//! two epochs agree when their extents do.

use crate::cdb::Cdb;
use crate::command::{Event, Submit};
use crate::file::TraceHeader;
use crate::stats::{StatsReport, TraceStats};
use serde::Serialize;
use std::collections::BTreeMap;

/// Extents kept per epoch before the profile stops aligning (a random-write
/// trace of millions of scattered blocks): memory stays bounded and the
/// report says alignment was cut short.
const MAX_EXTENTS: usize = 1 << 20;
const FOUR_GIB: u64 = 1 << 32;

/// A run of blocks `[lba, lba + blocks)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// First block.
    pub lba: u64,
    /// Block count.
    pub blocks: u64,
}

impl Extent {
    fn end(&self) -> u64 {
        self.lba.saturating_add(self.blocks)
    }
}

/// Merges `[lba, lba+blocks)` into a sorted, non-overlapping extent list.
fn insert_extent(list: &mut Vec<Extent>, lba: u64, blocks: u64) {
    if blocks == 0 {
        return;
    }
    let new = Extent { lba, blocks };
    // Fast path: sequential streams append or extend the last extent.
    if let Some(last) = list.last_mut() {
        if last.end() == lba {
            last.blocks = last.blocks.saturating_add(blocks);
            return;
        }
        if last.end() < lba {
            list.push(new);
            return;
        }
    } else {
        list.push(new);
        return;
    }
    let mut start = lba;
    let mut end = new.end();
    // First extent whose end reaches the new one's start (touching merges).
    let i = list.partition_point(|e| e.end() < start);
    let mut j = i;
    while j < list.len() && list[j].lba <= end {
        start = start.min(list[j].lba);
        end = end.max(list[j].end());
        j += 1;
    }
    list.splice(
        i..j,
        [Extent {
            lba: start,
            blocks: end - start,
        }],
    );
}

/// What ends an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Boundary {
    /// A SYNCHRONIZE CACHE (its seq).
    Flush(u64),
    /// A power loss marker.
    PowerLoss,
    /// A reset marker.
    Reset,
    /// The end of the trace.
    End,
}

/// The commands between two boundaries, reduced to what they touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Epoch {
    /// Blocks written (WRITE, WRITE SAME, COMPARE AND WRITE, ...), merged.
    pub written: Vec<Extent>,
    /// Blocks read, merged.
    pub read: Vec<Extent>,
    /// Other commands by name.
    pub other: BTreeMap<String, u64>,
    /// Seq of the first and last command in the epoch.
    pub seqs: Option<(u64, u64)>,
}

/// Power-of-two size classes, labelled by upper bound (`<=4K`).
fn size_class(bytes: u64) -> u64 {
    bytes.max(1).next_power_of_two()
}

/// Everything `diff` compares about one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The `scuzz stats` figures.
    pub stats: StatsReport,
    /// Commands by transfer size class (power-of-two upper bound in bytes).
    pub transfer_sizes: BTreeMap<u64, u64>,
    /// Segments by size class (power-of-two upper bound in bytes).
    pub segment_sizes: BTreeMap<u64, u64>,
    /// Epochs with the boundary that closed each.
    pub epochs: Vec<(Epoch, Boundary)>,
    /// First command (seq) with a segment at or above 4 GiB.
    pub first_seq_above_4g: Option<u64>,
    /// Whether alignment stopped early (too many extents).
    pub truncated: bool,
}

/// Builds a [`Profile`] one event at a time.
pub struct Profiler {
    stats: TraceStats,
    transfer_sizes: BTreeMap<u64, u64>,
    segment_sizes: BTreeMap<u64, u64>,
    epochs: Vec<(Epoch, Boundary)>,
    current: Epoch,
    extents: usize,
    first_seq_above_4g: Option<u64>,
    truncated: bool,
}

impl Profiler {
    /// An empty profile for a trace with this header.
    pub fn new(header: &TraceHeader) -> Profiler {
        Profiler {
            stats: TraceStats::new(header),
            transfer_sizes: BTreeMap::new(),
            segment_sizes: BTreeMap::new(),
            epochs: Vec::new(),
            current: Epoch::default(),
            extents: 0,
            first_seq_above_4g: None,
            truncated: false,
        }
    }

    fn close_epoch(&mut self, why: Boundary) {
        let e = std::mem::take(&mut self.current);
        self.epochs.push((e, why));
    }

    fn submit(&mut self, s: &Submit) {
        if s.xfer_len > 0 {
            *self
                .transfer_sizes
                .entry(size_class(u64::from(s.xfer_len)))
                .or_default() += 1;
        }
        for seg in &s.sg {
            *self
                .segment_sizes
                .entry(size_class(u64::from(seg.len)))
                .or_default() += 1;
            if self.first_seq_above_4g.is_none() && seg.end() > FOUR_GIB {
                self.first_seq_above_4g = Some(s.seq);
            }
        }
        let cdb = Cdb::parse(&s.cdb).ok();
        if let Some(Cdb::SyncCache { .. }) = cdb {
            self.close_epoch(Boundary::Flush(s.seq));
            return;
        }
        let e = &mut self.current;
        e.seqs = Some(e.seqs.map_or((s.seq, s.seq), |(a, _)| (a, s.seq)));
        let before = e.written.len() + e.read.len();
        match &cdb {
            Some(
                c @ (Cdb::Read(_)
                | Cdb::Write(_)
                | Cdb::WriteSame { .. }
                | Cdb::CompareAndWrite { .. }),
            ) if !self.truncated => {
                if let Some((lba, blocks)) = c.lba_range() {
                    let list = if matches!(c, Cdb::Read(_)) {
                        &mut e.read
                    } else {
                        &mut e.written
                    };
                    insert_extent(list, lba, u64::from(blocks));
                }
            }
            Some(c) => *e.other.entry(c.name().to_string()).or_default() += 1,
            None => {
                *e.other
                    .entry(format!("malformed CDB {:02x?}", s.cdb))
                    .or_default() += 1
            }
        }
        let after = e.written.len() + e.read.len();
        self.extents = (self.extents + after).saturating_sub(before);
        if self.extents > MAX_EXTENTS {
            self.truncated = true;
        }
    }

    /// Adds one event.
    pub fn add(&mut self, ev: &Event) {
        self.stats.add(ev);
        match ev {
            Event::Submit(s) => self.submit(s),
            Event::PowerLoss { .. } => self.close_epoch(Boundary::PowerLoss),
            Event::Reset { .. } => self.close_epoch(Boundary::Reset),
            Event::Complete(_) | Event::Note { .. } => {}
        }
    }

    /// The finished profile.
    pub fn finish(mut self) -> Profile {
        if self.current != Epoch::default() || self.epochs.is_empty() {
            self.close_epoch(Boundary::End);
        }
        Profile {
            stats: self.stats.report(),
            transfer_sizes: self.transfer_sizes,
            segment_sizes: self.segment_sizes,
            epochs: self.epochs,
            first_seq_above_4g: self.first_seq_above_4g,
            truncated: self.truncated,
        }
    }
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What is compared (`WRITE(10) commands`, `segments <=4K`, ...).
    pub name: String,
    /// Value in A, rendered.
    pub a: String,
    /// Value in B, rendered.
    pub b: String,
    /// Whether they differ.
    pub differs: bool,
}

/// Where the two streams first disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// Epoch index (0 = before the first flush).
    pub epoch: usize,
    /// What differs, in words.
    pub what: String,
    /// The seq range of that epoch in A and in B.
    pub a_seqs: Option<(u64, u64)>,
    /// The seq range of that epoch in B.
    pub b_seqs: Option<(u64, u64)>,
}

/// The comparison of two profiles.
#[derive(Debug, Clone, Serialize)]
pub struct TraceDiff {
    /// Every compared figure, in display order.
    pub rows: Vec<Row>,
    /// The first divergence of the aligned streams, if any.
    pub divergence: Option<Divergence>,
    /// Whether either side stopped aligning early.
    pub alignment_truncated: bool,
}

impl TraceDiff {
    /// Whether anything differs.
    pub fn is_empty(&self) -> bool {
        self.divergence.is_none() && self.rows.iter().all(|r| !r.differs)
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (div, unit) in UNITS {
        // Every unit is a power of two: a whole multiple has no low bits set.
        if b >= div && b & (div - 1) == 0 {
            return format!("{}{unit}", b / div);
        }
    }
    b.to_string()
}

fn row(rows: &mut Vec<Row>, name: impl Into<String>, a: String, b: String) {
    let differs = a != b;
    rows.push(Row {
        name: name.into(),
        a,
        b,
        differs,
    });
}

/// Rows for two keyed histograms, one row per key present in either.
fn histogram_rows(
    rows: &mut Vec<Row>,
    label: &str,
    a: &BTreeMap<u64, u64>,
    b: &BTreeMap<u64, u64>,
    key: impl Fn(u64) -> String,
) {
    let keys: std::collections::BTreeSet<u64> = a.keys().chain(b.keys()).copied().collect();
    for k in keys {
        let get = |m: &BTreeMap<u64, u64>| m.get(&k).copied().unwrap_or(0).to_string();
        row(rows, format!("{label} {}", key(k)), get(a), get(b));
    }
}

fn describe_extents(list: &[Extent]) -> String {
    match list {
        [] => "nothing".into(),
        [e] => format!("LBA {}..{}", e.lba, e.end()),
        [first, .., last] => format!(
            "{} extents from LBA {} to {}",
            list.len(),
            first.lba,
            last.end()
        ),
    }
}

/// The first block in `a` that `b` lacks, or the reverse.
fn first_difference(a: &[Extent], b: &[Extent]) -> Option<u64> {
    let contains = |list: &[Extent], lba: u64| {
        let i = list.partition_point(|e| e.end() <= lba);
        list.get(i).is_some_and(|e| e.lba <= lba)
    };
    // Candidates: every extent start and end on either side.
    let mut points: Vec<u64> = a.iter().chain(b).flat_map(|e| [e.lba, e.end()]).collect();
    points.sort_unstable();
    points
        .into_iter()
        .find(|&p| contains(a, p) != contains(b, p))
}

fn compare_epochs(a: &Profile, b: &Profile) -> Option<Divergence> {
    let n = a.epochs.len().max(b.epochs.len());
    for i in 0..n {
        let (ea, eb) = (a.epochs.get(i), b.epochs.get(i));
        let a_seqs = ea.and_then(|e| e.0.seqs);
        let b_seqs = eb.and_then(|e| e.0.seqs);
        let what = match (ea, eb) {
            (Some(_), None) => Some("A has more flush epochs than B (B ends here)".to_string()),
            (None, Some(_)) => Some("B has more flush epochs than A (A ends here)".to_string()),
            (Some((x, xb)), Some((y, yb))) => {
                if x.written != y.written {
                    let lba = first_difference(&x.written, &y.written);
                    Some(format!(
                        "blocks written differ{}: A wrote {}, B wrote {}",
                        lba.map(|l| format!(" first at LBA {l}"))
                            .unwrap_or_default(),
                        describe_extents(&x.written),
                        describe_extents(&y.written)
                    ))
                } else if x.read != y.read {
                    let lba = first_difference(&x.read, &y.read);
                    Some(format!(
                        "blocks read differ{}: A read {}, B read {}",
                        lba.map(|l| format!(" first at LBA {l}"))
                            .unwrap_or_default(),
                        describe_extents(&x.read),
                        describe_extents(&y.read)
                    ))
                } else if x.other != y.other {
                    Some(format!(
                        "other commands differ: A {:?}, B {:?}",
                        x.other, y.other
                    ))
                } else if std::mem::discriminant(xb) != std::mem::discriminant(yb) {
                    Some(format!(
                        "the epoch ends differently: A by {xb:?}, B by {yb:?}"
                    ))
                } else {
                    None
                }
            }
            (None, None) => None,
        };
        if let Some(what) = what {
            return Some(Divergence {
                epoch: i,
                what,
                a_seqs,
                b_seqs,
            });
        }
    }
    None
}

/// Compares two profiles.
pub fn diff(a: &Profile, b: &Profile) -> TraceDiff {
    let mut rows = Vec::new();
    let (sa, sb) = (&a.stats, &b.stats);
    row(
        &mut rows,
        "commands",
        sa.events.submits.to_string(),
        sb.events.submits.to_string(),
    );
    let names: std::collections::BTreeSet<&str> = sa
        .opcodes
        .iter()
        .chain(&sb.opcodes)
        .map(|o| o.name.as_str())
        .collect();
    for name in names {
        let find = |s: &StatsReport| s.opcodes.iter().find(|o| o.name == name).cloned();
        let (oa, ob) = (find(sa), find(sb));
        let count = |o: &Option<crate::stats::OpcodeStats>| o.as_ref().map_or(0, |o| o.count);
        let bytes = |o: &Option<crate::stats::OpcodeStats>| o.as_ref().map_or(0, |o| o.bytes);
        row(
            &mut rows,
            format!("{name} commands"),
            count(&oa).to_string(),
            count(&ob).to_string(),
        );
        row(
            &mut rows,
            format!("{name} bytes"),
            human_bytes(bytes(&oa)),
            human_bytes(bytes(&ob)),
        );
        let lat = |o: &Option<crate::stats::OpcodeStats>,
                   f: fn(&crate::stats::LatencySummary) -> u64| {
            o.as_ref()
                .filter(|o| o.latency.count > 0)
                .map_or("-".to_string(), |o| format!("{}us", f(&o.latency) / 1000))
        };
        row(
            &mut rows,
            format!("{name} latency p50"),
            lat(&oa, |l| l.p50_ns),
            lat(&ob, |l| l.p50_ns),
        );
        row(
            &mut rows,
            format!("{name} latency p99"),
            lat(&oa, |l| l.p99_ns),
            lat(&ob, |l| l.p99_ns),
        );
    }
    histogram_rows(
        &mut rows,
        "transfers <=",
        &a.transfer_sizes,
        &b.transfer_sizes,
        human_bytes,
    );
    histogram_rows(
        &mut rows,
        "SG lists with segments =",
        &sa.sg.segment_count_histogram,
        &sb.sg.segment_count_histogram,
        |k| k.to_string(),
    );
    histogram_rows(
        &mut rows,
        "segments <=",
        &a.segment_sizes,
        &b.segment_sizes,
        human_bytes,
    );
    let addr = |s: &StatsReport| {
        s.sg.max_dma_addr
            .map_or("-".to_string(), |x| crate::units::PhysAddr(x).to_string())
    };
    row(&mut rows, "highest DMA address", addr(sa), addr(sb));
    row(
        &mut rows,
        "segments above 4 GiB",
        sa.sg.segments_above_4g.to_string(),
        sb.sg.segments_above_4g.to_string(),
    );
    row(
        &mut rows,
        "commands above 4 GiB",
        sa.sg.commands_above_4g.to_string(),
        sb.sg.commands_above_4g.to_string(),
    );
    let first4g = |p: &Profile| {
        p.first_seq_above_4g
            .map_or("-".to_string(), |s| format!("seq {s}"))
    };
    row(
        &mut rows,
        "first command above 4 GiB",
        first4g(a),
        first4g(b),
    );
    row(
        &mut rows,
        "flushes",
        sa.flushes.count.to_string(),
        sb.flushes.count.to_string(),
    );
    row(
        &mut rows,
        "bytes between flushes (max)",
        human_bytes(sa.flushes.bytes_between_max),
        human_bytes(sb.flushes.bytes_between_max),
    );
    row(
        &mut rows,
        "bytes after last flush",
        human_bytes(sa.flushes.bytes_after_last_flush),
        human_bytes(sb.flushes.bytes_after_last_flush),
    );
    row(
        &mut rows,
        "max queue depth",
        sa.queue_depth.max.to_string(),
        sb.queue_depth.max.to_string(),
    );
    TraceDiff {
        rows,
        divergence: compare_epochs(a, b),
        alignment_truncated: a.truncated || b.truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdb::{CdbSize, Rw};
    use crate::command::{Direction, Nexus, Payload, Segment, TaskAttr};

    fn write(seq: u64, lba: u64, blocks: u32, sg: Vec<Segment>) -> Event {
        let rw = Rw {
            size: CdbSize::Ten,
            lba,
            blocks,
            fua: false,
            dpo: false,
            protect: 0,
            group: 0,
        };
        Event::Submit(Submit {
            seq,
            time_ns: seq,
            nexus: Nexus::default(),
            tag: seq,
            attr: TaskAttr::Simple,
            cdb: Cdb::Write(rw).encode().unwrap(),
            dir: Direction::ToDevice,
            xfer_len: blocks * 512,
            sg,
            payload: Payload::None,
        })
    }

    fn flush(seq: u64) -> Event {
        let c = Cdb::SyncCache {
            size: CdbSize::Ten,
            lba: 0,
            blocks: 0,
            immed: false,
            group: 0,
        };
        Event::Submit(Submit {
            seq,
            time_ns: seq,
            nexus: Nexus::default(),
            tag: seq,
            attr: TaskAttr::Simple,
            cdb: c.encode().unwrap(),
            dir: Direction::None,
            xfer_len: 0,
            sg: vec![],
            payload: Payload::None,
        })
    }

    fn profile(events: &[Event]) -> Profile {
        let mut p = Profiler::new(&TraceHeader::new("test"));
        events.iter().for_each(|e| p.add(e));
        p.finish()
    }

    #[test]
    fn extents_merge_touching_and_overlapping_runs() {
        let mut l = Vec::new();
        insert_extent(&mut l, 10, 5);
        insert_extent(&mut l, 0, 5);
        insert_extent(&mut l, 5, 5); // bridges both
        assert_eq!(l, vec![Extent { lba: 0, blocks: 15 }]);
        insert_extent(&mut l, 100, 1);
        insert_extent(&mut l, 14, 90); // swallows the gap up to 104
        assert_eq!(
            l,
            vec![Extent {
                lba: 0,
                blocks: 104
            }]
        );
    }

    #[test]
    fn a_trace_against_itself_differs_nowhere() {
        let ev = vec![write(0, 0, 8, vec![Segment::new(0x1000, 4096)]), flush(1)];
        let d = diff(&profile(&ev), &profile(&ev));
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn splitting_the_same_blocks_differently_is_not_a_divergence() {
        let a = vec![write(0, 0, 16, vec![Segment::new(0x1000, 8192)]), flush(1)];
        let b = vec![
            write(0, 8, 8, vec![Segment::new(0x1_0000_0000, 4096)]),
            write(1, 0, 8, vec![Segment::new(0x1000, 4096)]),
            flush(2),
        ];
        let d = diff(&profile(&a), &profile(&b));
        assert_eq!(d.divergence, None);
        let differing: Vec<&str> = d
            .rows
            .iter()
            .filter(|r| r.differs)
            .map(|r| r.name.as_str())
            .collect();
        assert!(differing.contains(&"segments above 4 GiB"), "{differing:?}");
        assert!(differing.contains(&"WRITE(10) commands"), "{differing:?}");
        assert!(!differing.contains(&"flushes"), "{differing:?}");
    }

    #[test]
    fn a_write_moved_across_a_flush_is_the_divergence() {
        let a = vec![write(0, 0, 8, vec![]), write(1, 8, 8, vec![]), flush(2)];
        let b = vec![write(0, 0, 8, vec![]), flush(1), write(2, 8, 8, vec![])];
        let d = diff(&profile(&a), &profile(&b))
            .divergence
            .expect("diverges");
        assert_eq!(d.epoch, 0);
        assert!(d.what.contains("first at LBA 8"), "{}", d.what);
    }
}
