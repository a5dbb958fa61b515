//! Submission order, tags and synthesized completion times.
//!
//! A synthesized trace carries completions so that `scuzz stats` and the
//! replayer's latency comparison have something to show; their times come
//! from this deliberately simple device model, not from hardware (the trace
//! header says so with the label `completions=synthesized`). The model: one
//! FIFO server (a controller streaming into its DRAM cache), service time =
//! fixed overhead + bytes / bandwidth, and a host that keeps at most
//! `queue_depth` commands outstanding. Events are emitted in time order, so a
//! completion appears before any submission made after it.

use std::collections::{BTreeSet, VecDeque};
use trace::{
    Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
    TaskAttr,
};

/// Service-time parameters of the synthesized device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyModel {
    /// Fixed cost of a WRITE, in ns (command setup and cache insert).
    pub write_overhead_ns: u64,
    /// Fixed cost of a READ, in ns (a cache miss to the medium).
    pub read_overhead_ns: u64,
    /// Data rate while transferring, bytes per second.
    pub bytes_per_sec: u64,
    /// Time to destage the cache on SYNCHRONIZE CACHE, in ns.
    pub flush_ns: u64,
    /// Host time between two submissions, in ns.
    pub issue_gap_ns: u64,
}

impl Default for LatencyModel {
    /// A SAS RAID controller with write-back cache: 20 µs to accept a write
    /// into DRAM, 80 µs for a read that misses cache, 1.2 GB/s on the wire,
    /// 3 ms to destage on a flush.
    fn default() -> Self {
        LatencyModel {
            write_overhead_ns: 20_000,
            read_overhead_ns: 80_000,
            bytes_per_sec: 1_200_000_000,
            flush_ns: 3_000_000,
            issue_gap_ns: 2_000,
        }
    }
}

impl LatencyModel {
    fn service_ns(&self, cmd: &Command) -> u64 {
        let transfer =
            u64::from(cmd.xfer_len).saturating_mul(1_000_000_000) / self.bytes_per_sec.max(1);
        match cmd.kind {
            CommandKind::Flush => self.flush_ns,
            CommandKind::Write => self.write_overhead_ns + transfer,
            CommandKind::Read => self.read_overhead_ns + transfer,
        }
    }
}

/// What the latency model needs to know of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// Data-Out.
    Write,
    /// Data-In.
    Read,
    /// SYNCHRONIZE CACHE.
    Flush,
}

/// A command about to be issued.
#[derive(Debug, Clone)]
pub struct Command {
    /// For the latency model.
    pub kind: CommandKind,
    /// Raw CDB.
    pub cdb: Vec<u8>,
    /// Requested transfer length in bytes.
    pub xfer_len: u32,
    /// Scatter-gather list.
    pub sg: Vec<Segment>,
    /// Data-Out payload (writes).
    pub data_out: Payload,
    /// Data-In payload the completion carries (reads): what the device
    /// returns if it works.
    pub data_in: Payload,
    /// Task attribute.
    pub attr: TaskAttr,
}

struct InFlight {
    seq: u64,
    tag: u64,
    done_ns: u64,
    bytes: u32,
    data_in: Payload,
}

/// Counts for summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimelineStats {
    /// Commands issued.
    pub commands: u64,
    /// Largest number of commands outstanding at once.
    pub max_outstanding: usize,
}

/// Issues commands into an event sink with synthesized timing.
pub struct Timeline {
    now: u64,
    next_seq: u64,
    queue_depth: usize,
    inflight: VecDeque<InFlight>,
    device_free_at: u64,
    free_tags: BTreeSet<u64>,
    latency: LatencyModel,
    nexus: Nexus,
    stats: TimelineStats,
}

impl Timeline {
    /// A timeline keeping at most `queue_depth` (at least 1) commands
    /// outstanding.
    pub fn new(queue_depth: usize, latency: LatencyModel) -> Self {
        let queue_depth = queue_depth.max(1);
        Timeline {
            now: 0,
            next_seq: 0,
            queue_depth,
            inflight: VecDeque::with_capacity(queue_depth),
            device_free_at: 0,
            free_tags: (0..queue_depth as u64).collect(),
            latency,
            nexus: Nexus::default(),
            stats: TimelineStats::default(),
        }
    }

    /// The host clock, ns since the trace started.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Host work that takes `ns` (copying data into the page cache...).
    pub fn advance(&mut self, ns: u64) {
        self.now = self.now.saturating_add(ns);
    }

    /// Counts so far.
    pub fn stats(&self) -> TimelineStats {
        self.stats
    }

    /// A marker at the current time.
    pub fn note<E>(
        &mut self,
        text: impl Into<String>,
        sink: &mut impl FnMut(Event) -> Result<(), E>,
    ) -> Result<(), E> {
        self.emit_done_until(self.now, sink)?;
        sink(Event::Note {
            time_ns: self.now,
            text: text.into(),
        })
    }

    /// Issues `cmd`, first waiting for a free queue slot; emits every
    /// completion that happens before it.
    pub fn submit<E>(
        &mut self,
        cmd: Command,
        sink: &mut impl FnMut(Event) -> Result<(), E>,
    ) -> Result<u64, E> {
        if self.inflight.len() >= self.queue_depth {
            if let Some(first) = self.inflight.front() {
                self.now = self.now.max(first.done_ns);
            }
        }
        self.emit_done_until(self.now, sink)?;
        let tag = self.free_tags.pop_first().unwrap_or(self.next_seq);
        let seq = self.next_seq;
        self.next_seq += 1;
        let service = self.latency.service_ns(&cmd);
        let start = self.now.max(self.device_free_at);
        let done_ns = start.saturating_add(service);
        self.device_free_at = done_ns;
        let dir = match cmd.kind {
            CommandKind::Write => Direction::ToDevice,
            CommandKind::Read => Direction::FromDevice,
            CommandKind::Flush => Direction::None,
        };
        sink(Event::Submit(Submit {
            seq,
            time_ns: self.now,
            nexus: self.nexus,
            tag,
            attr: cmd.attr,
            cdb: cmd.cdb,
            dir,
            xfer_len: cmd.xfer_len,
            sg: cmd.sg,
            payload: cmd.data_out,
        }))?;
        self.inflight.push_back(InFlight {
            seq,
            tag,
            done_ns,
            bytes: cmd.xfer_len,
            data_in: cmd.data_in,
        });
        self.stats.commands += 1;
        self.stats.max_outstanding = self.stats.max_outstanding.max(self.inflight.len());
        self.now = self.now.saturating_add(self.latency.issue_gap_ns);
        Ok(seq)
    }

    /// Waits for every outstanding command (an fsync waiting for writeback,
    /// a barrier before a flush).
    pub fn drain<E>(&mut self, sink: &mut impl FnMut(Event) -> Result<(), E>) -> Result<(), E> {
        if let Some(last) = self.inflight.back() {
            self.now = self.now.max(last.done_ns);
        }
        self.emit_done_until(u64::MAX, sink)
    }

    fn emit_done_until<E>(
        &mut self,
        t: u64,
        sink: &mut impl FnMut(Event) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.inflight.front().is_some_and(|f| f.done_ns <= t) {
            let Some(f) = self.inflight.pop_front() else {
                break;
            };
            self.free_tags.insert(f.tag);
            sink(Event::Complete(Complete {
                seq: f.seq,
                time_ns: f.done_ns,
                response: ServiceResponse::TaskComplete,
                status: ScsiStatus::GOOD,
                sense: Vec::new(),
                bytes_transferred: f.bytes,
                residual: 0,
                payload: f.data_in,
            }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(len: u32) -> Command {
        Command {
            kind: CommandKind::Write,
            cdb: vec![0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            xfer_len: len,
            sg: vec![],
            data_out: Payload::None,
            data_in: Payload::None,
            attr: TaskAttr::Simple,
        }
    }

    #[test]
    fn events_are_time_ordered_and_queue_depth_is_honoured() {
        let mut t = Timeline::new(4, LatencyModel::default());
        let mut ev = Vec::new();
        let mut sink = |e: Event| -> Result<(), ()> {
            ev.push(e);
            Ok(())
        };
        for _ in 0..50 {
            t.submit(write(1 << 20), &mut sink).unwrap();
        }
        t.drain(&mut sink).unwrap();
        assert_eq!(t.stats().max_outstanding, 4);
        let mut outstanding = 0i32;
        let mut last = 0;
        let mut tags = std::collections::HashSet::new();
        for e in &ev {
            assert!(e.time_ns() >= last);
            last = e.time_ns();
            match e {
                Event::Submit(s) => {
                    outstanding += 1;
                    assert!(tags.insert(s.tag), "tag {} reused while outstanding", s.tag);
                }
                Event::Complete(c) => {
                    outstanding -= 1;
                    let s = ev.iter().find_map(|e| match e {
                        Event::Submit(s) if s.seq == c.seq => Some(s.tag),
                        _ => None,
                    });
                    tags.remove(&s.unwrap());
                }
                _ => {}
            }
            assert!((0..=4).contains(&outstanding));
        }
        assert_eq!(outstanding, 0);
    }
}
