//! The replay engine: streams a trace's events, prepares each command's
//! data, holds it until the ordering rules and the pacing let it go, keeps
//! at most `qd` commands in flight on the backend, and accounts for every
//! completion (latency, verification, comparison with the recording).
//!
//! Memory stays constant in the trace's length: events are read one at a
//! time, only in-flight commands are held, and the recording's completions
//! are kept only until their replayed counterpart finishes.

use crate::backend::{control, Backend, BackendError, Outcome, Request};
use crate::data;
use crate::error::ReplayError;
use crate::latency::{opcode_class, HlogFile, Latency};
use crate::options::{Order, ReplayOptions, Timing};
use crate::progress::Progress;
use crate::report::Summary;
use crate::source::TraceSource;
use crate::verify::{oracle_seq, CdbText, CommandRef, Verifier, READ_BACK_SEQ};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use trace::oracle::InitialContent;
use trace::{Cdb, Complete, Direction, Event, Payload, Submit, TaskAttr};

/// Largest transfer one replayed command may ask for. A trace's transfer
/// length is a 32-bit field; a corrupt or hostile one must not make the
/// replayer allocate 4 GiB.
pub const MAX_TRANSFER: u32 = 64 << 20;

/// How many TEST UNIT READY commands the engine sends to clear unit
/// attentions (power on, reset, mode change) before giving up.
const TUR_RETRIES: u32 = 16;

/// What a finished replay produced.
pub struct RunResult {
    /// Latency and throughput, as written to `summary.json`.
    pub summary: Summary,
    /// The histograms behind it (for the SVG plot).
    pub latency: Latency,
}

impl RunResult {
    /// Whether verification found a data violation or a completion that
    /// differs from the recording.
    pub fn has_violation(&self) -> bool {
        self.summary.verify.as_ref().is_some_and(|v| !v.passed())
    }
}

/// Maps keyed by command ids and sequence numbers: touched several times
/// per command, with keys the engine assigns, so the workspace's integer
/// hasher rather than SipHash.
type IdMap<V> = trace::hash::FastMap<u64, V>;

/// Geometry the engine learnt from a LUN (READ CAPACITY).
#[derive(Debug, Clone, Copy)]
struct LunInfo {
    block_size: u32,
}

/// The medium-facing meaning of a command, for ordering and verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read {
        lba: u64,
        blocks: u32,
    },
    Write {
        lba: u64,
        blocks: u32,
        fua: bool,
    },
    Flush {
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    /// MODE SELECT: may change WCE. `ten`: MODE SELECT(10)'s header.
    ModeSelect {
        ten: bool,
    },
    Other,
}

/// A command in flight.
struct Meta {
    seq: u64,
    /// The command's name for the oracle ([`crate::verify::oracle_seq`]).
    oseq: u64,
    pass: u32,
    lun: u64,
    op: std::borrow::Cow<'static, str>,
    /// The decoded CDB, or the raw bytes when it does not decode; turned
    /// into text only for a finding.
    cdb: CdbText,
    kind: Kind,
    xfer_len: u32,
    data_out: Option<Vec<u8>>,
}

struct Done {
    id: u64,
    ns: u64,
    result: Result<Outcome, BackendError>,
}

type InFlight<'b> = FuturesUnordered<Pin<Box<dyn Future<Output = Done> + 'b>>>;

/// One in-flight command as the ordering rules see it.
struct Slot {
    id: u64,
    lun: u64,
    range: Option<(u64, u64)>,
    barrier: bool,
}

/// The ordering rules of [`Order`].
#[derive(Default)]
struct Scheduler {
    slots: Vec<Slot>,
    /// In-flight commands whose recorded completion preceded the next
    /// submission (strict order waits for them).
    must_finish: HashSet<u64>,
}

impl Scheduler {
    fn admissible(
        &self,
        order: Order,
        qd: u32,
        lun: u64,
        range: Option<(u64, u64)>,
        barrier: bool,
    ) -> bool {
        if self.slots.len() >= qd as usize {
            return false;
        }
        if order == Order::Free {
            return true;
        }
        if order == Order::Strict && !self.must_finish.is_empty() {
            return false;
        }
        if barrier {
            return self.slots.is_empty();
        }
        self.slots.iter().all(|s| {
            !s.barrier
                && match (s.range, range) {
                    (Some((a0, a1)), Some((b0, b1))) => s.lun != lun || a1 <= b0 || b1 <= a0,
                    _ => true,
                }
        })
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.slots.iter().position(|s| s.id == id) {
            self.slots.swap_remove(i);
        }
        self.must_finish.remove(&id);
    }
}

/// A command read from the trace and made ready to issue.
struct Prepared {
    id: u64,
    meta: Meta,
    req: Request,
    range: Option<(u64, u64)>,
    barrier: bool,
    time_ns: u64,
}

/// The engine's state for one run.
pub struct Engine<'b, B: Backend> {
    backend: &'b B,
    opts: ReplayOptions,
    qd: u32,
    default_block_size: u32,
    luns: HashMap<u64, LunInfo>,
    verifier: Option<Verifier>,
    latency: Latency,
    progress: Progress,
    inflight: InFlight<'b>,
    meta: IdMap<Meta>,
    sched: Scheduler,
    /// Trace seq -> id of in-flight commands of the current pass.
    by_seq: IdMap<u64>,
    /// Recorded completions that arrived before the replayed one finished.
    recorded: IdMap<Complete>,
    /// Replayed outcomes waiting for their recorded completion.
    replayed: IdMap<(CommandRef, Outcome)>,
    next_id: u64,
    write_number: u32,
    issued: u64,
    pending_power_loss: bool,
    pool: Vec<Vec<u8>>,
    pass: u32,
    pacing: Option<(Instant, u64)>,
}

impl<'b, B: Backend> Engine<'b, B> {
    /// Prepares a run of `source` on `backend`. With `opts.qd == None` the
    /// queue depth is the recording's highest, found by a first pass over
    /// the trace.
    pub fn new(
        backend: &'b B,
        source: &dyn TraceSource,
        opts: ReplayOptions,
        hlog: Option<HlogFile>,
    ) -> Result<Self, ReplayError> {
        let (qd, total) = match opts.qd {
            Some(0) => {
                return Err(ReplayError::usage(
                    "--qd",
                    "the queue depth must be at least 1",
                ))
            }
            Some(q) => (q, None),
            None => {
                let (q, n) = recorded_depth(source)?;
                (q, Some(n))
            }
        };
        let total = total.map(|n| {
            let n = n.saturating_mul(u64::from(opts.repeat));
            opts.limit.map_or(n, |l| n.min(l))
        });
        let default_block_size = source
            .header()
            .map(|h| h.block_size)
            .filter(|b| *b > 0)
            .unwrap_or(512);
        let initial = if backend.unwritten_reads_zero() {
            InitialContent::Zeros
        } else {
            InitialContent::Unknown
        };
        let verifier = opts.verify.then(|| Verifier::new(initial));
        let progress = Progress::new(opts.progress, total);
        Ok(Engine {
            backend,
            qd,
            default_block_size,
            luns: HashMap::new(),
            verifier,
            latency: Latency::new(hlog),
            progress,
            inflight: FuturesUnordered::new(),
            meta: IdMap::default(),
            sched: Scheduler::default(),
            by_seq: IdMap::default(),
            recorded: IdMap::default(),
            replayed: IdMap::default(),
            next_id: 0,
            write_number: 0,
            issued: 0,
            pending_power_loss: false,
            pool: Vec::new(),
            pass: 0,
            pacing: None,
            opts,
        })
    }

    /// The queue depth this run uses.
    pub fn qd(&self) -> u32 {
        self.qd
    }

    /// Runs every pass, then (with `--verify`) reads back every block the
    /// run wrote, and returns the results.
    pub async fn run(mut self, source: &dyn TraceSource) -> Result<RunResult, ReplayError> {
        'passes: for pass in 0..self.opts.repeat.max(1) {
            self.pass = pass;
            self.pacing = None;
            let events = source.open()?;
            for ev in events {
                if self.opts.limit.is_some_and(|l| self.issued >= l) {
                    break 'passes;
                }
                match ev? {
                    Event::Submit(s) => self.submit(s).await?,
                    Event::Complete(c) => self.recorded_completion(c),
                    Event::PowerLoss { .. } => {
                        self.drain().await?;
                        self.power_loss().await?;
                    }
                    Event::Reset { .. } => {
                        self.drain().await?;
                        self.backend
                            .reset()
                            .await
                            .map_err(|e| self.backend_error(e))?;
                        self.recover_all().await?;
                    }
                    Event::Note { .. } => {}
                }
            }
            self.drain().await?;
            self.unmatched_recordings();
        }
        self.drain().await?;
        if self.pending_power_loss {
            self.power_loss().await?;
        }
        if self.verifier.is_some() {
            self.read_back().await?;
        }
        self.progress.finish();
        self.latency
            .finish()
            .map_err(|e| ReplayError::io("latency.hlog", e))?;
        let mut summary = Summary::new(
            &source.name(),
            &self.backend.describe(),
            self.qd,
            self.opts.timing.to_string(),
            self.opts.order.to_string(),
            &self.latency,
        );
        summary.verify = self.verifier.take().map(Verifier::into_summary);
        Ok(RunResult {
            summary,
            latency: self.latency,
        })
    }

    fn backend_error(&self, source: BackendError) -> ReplayError {
        ReplayError::Backend {
            backend: self.backend.describe(),
            source,
        }
    }

    /// Reads one Submit, prepares it, waits for its turn and issues it.
    async fn submit(&mut self, s: Submit) -> Result<(), ReplayError> {
        if self.pending_power_loss {
            self.drain().await?;
            self.power_loss().await?;
        }
        let lun = self.opts.lun_map.map(s.nexus.lun);
        let info = self.lun(lun).await?;
        let p = self.prepare(s, lun, info)?;
        // Wait for ordering and pacing.
        let target = self.pace(p.time_ns);
        loop {
            let ok = self
                .sched
                .admissible(self.opts.order, self.qd, lun, p.range, p.barrier);
            let due = target.is_none_or(|t| Instant::now() >= t);
            if ok && due {
                break;
            }
            match (ok, target, self.inflight.is_empty()) {
                (true, Some(t), true) => tokio::time::sleep_until(t.into()).await,
                (true, Some(t), false) => {
                    tokio::select! {
                        d = self.inflight.next() => if let Some(d) = d { self.finish(d)?; },
                        _ = tokio::time::sleep_until(t.into()) => {}
                    }
                }
                (_, _, false) => {
                    if let Some(d) = self.inflight.next().await {
                        self.finish(d)?;
                    }
                }
                // Not admissible with nothing in flight cannot happen: every
                // rule waits only for in-flight commands. (Admissible and
                // unpaced is due, handled above.)
                (false, _, true) | (true, None, _) => break,
            }
        }
        self.issue(p)
    }

    /// When a command recorded at `time_ns` is due, under `--timing`.
    fn pace(&mut self, time_ns: u64) -> Option<Instant> {
        let Timing::Scaled(scale) = self.opts.timing else {
            return None;
        };
        let (t0, first) = *self.pacing.get_or_insert((Instant::now(), time_ns));
        let offset = time_ns.saturating_sub(first) as f64 / scale;
        Some(t0 + Duration::from_nanos(offset.min(1e18) as u64))
    }

    fn prepare(&mut self, s: Submit, lun: u64, info: LunInfo) -> Result<Prepared, ReplayError> {
        if s.xfer_len > MAX_TRANSFER {
            return Err(ReplayError::Trace {
                path: Default::default(),
                message: format!(
                    "seq {}: transfer of {} bytes exceeds the replayer's {} MiB per-command limit",
                    s.seq,
                    s.xfer_len,
                    MAX_TRANSFER >> 20
                ),
            });
        }
        let cdb = Cdb::parse(&s.cdb).ok();
        let bs = info.block_size;
        let kind = match &cdb {
            Some(Cdb::Read(rw)) => Kind::Read {
                lba: rw.lba,
                blocks: rw.blocks,
            },
            Some(Cdb::Write(rw)) => Kind::Write {
                lba: rw.lba,
                blocks: rw.blocks,
                fua: rw.fua,
            },
            Some(Cdb::SyncCache {
                lba, blocks, immed, ..
            }) => Kind::Flush {
                lba: *lba,
                blocks: *blocks,
                immed: *immed,
            },
            Some(Cdb::ModeSelect { size, .. }) => Kind::ModeSelect {
                ten: *size == trace::CdbSize::Ten,
            },
            _ => Kind::Other,
        };
        let range = match kind {
            Kind::Read { lba, blocks } | Kind::Write { lba, blocks, .. } => {
                Some((lba, lba.saturating_add(u64::from(blocks))))
            }
            _ => None,
        };
        // Flushes, commands without an LBA range and ORDERED tasks keep
        // their place (SAM-5 8.6: an ORDERED task waits for older tasks and
        // holds newer ones).
        let barrier = range.is_none() || s.attr == TaskAttr::Ordered;
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        if s.dir == Direction::ToDevice {
            match kind {
                Kind::Write { lba, .. } => {
                    self.write_number = self.write_number.saturating_add(1);
                    let payload = if self.opts.fresh_data {
                        &Payload::None
                    } else {
                        &s.payload
                    };
                    data::write_blocks(
                        payload,
                        lba,
                        bs,
                        s.xfer_len,
                        self.opts.seed,
                        self.write_number,
                        &mut buf,
                    );
                }
                _ => {
                    data::other_data_out(&s.payload, s.xfer_len, &mut buf);
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let meta = Meta {
            seq: s.seq,
            oseq: oracle_seq(self.pass, s.seq),
            pass: self.pass,
            lun,
            op: opcode_class(&s.cdb),
            cdb: match cdb {
                Some(c) => CdbText::Decoded(c),
                None => CdbText::Raw(s.cdb.clone()),
            },
            kind,
            xfer_len: s.xfer_len,
            data_out: None,
        };
        let mut meta = meta;
        if matches!(kind, Kind::ModeSelect { .. }) {
            meta.data_out = Some(buf.clone());
        }
        let req = Request {
            lun,
            cdb: s.cdb,
            attr: s.attr,
            dir: s.dir,
            xfer_len: s.xfer_len,
            sg: s.sg,
            data: buf,
        };
        Ok(Prepared {
            id,
            meta,
            req,
            range,
            barrier,
            time_ns: s.time_ns,
        })
    }

    fn issue(&mut self, p: Prepared) -> Result<(), ReplayError> {
        let id = p.id;
        // The oracle hears of a command when the device does: a write
        // announced while it still waited for its turn would look as if it
        // overlapped commands that in fact completed before it.
        if let Some(v) = self.verifier.as_mut() {
            let (lun, oseq) = (p.meta.lun, p.meta.oseq);
            match p.meta.kind {
                Kind::Write { lba, blocks, fua } => {
                    v.write_submitted(oseq, lun, lba, blocks, fua, &p.req.data)
                }
                Kind::Flush { lba, blocks, immed } => {
                    v.flush_submitted(oseq, lun, lba, blocks, immed)
                }
                Kind::Read { .. } => v.read_submitted(oseq, lun),
                _ => {}
            }
        }
        self.sched.slots.push(Slot {
            id,
            lun: p.meta.lun,
            range: p.range,
            barrier: p.barrier,
        });
        self.by_seq.insert(p.meta.seq, id);
        let power_after = self.opts.power_loss_at.contains(&p.meta.seq);
        self.meta.insert(id, p.meta);
        let backend = self.backend;
        let req = p.req;
        let mut fut: Pin<Box<dyn Future<Output = Done> + 'b>> = Box::pin(async move {
            let start = Instant::now();
            let result = backend.execute(req).await;
            Done {
                id,
                ns: start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64,
                result,
            }
        });
        self.issued += 1;
        if power_after {
            self.pending_power_loss = true;
        }
        // A backend that completes synchronously (the in-process emulator)
        // is done after one poll: account for it now instead of queueing
        // it. Otherwise the in-flight set polls it again with a real waker.
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(done) => self.finish(done),
            Poll::Pending => {
                self.inflight.push(fut);
                Ok(())
            }
        }
    }

    /// Accounts for one completion.
    fn finish(&mut self, d: Done) -> Result<(), ReplayError> {
        self.sched.remove(d.id);
        let Some(meta) = self.meta.remove(&d.id) else {
            return Ok(());
        };
        if self.by_seq.get(&meta.seq) == Some(&d.id) {
            self.by_seq.remove(&meta.seq);
        }
        let outcome = d.result.map_err(|e| self.backend_error(e))?;
        self.latency
            .record(&meta.op, meta.xfer_len, outcome.bytes_transferred, d.ns)
            .map_err(|e| ReplayError::io("latency.hlog", e))?;
        self.progress.tick(&self.latency);
        if let (Kind::ModeSelect { ten }, true) = (meta.kind, outcome.is_good()) {
            if let (Some(v), Some(wce)) = (
                self.verifier.as_mut(),
                meta.data_out.as_deref().and_then(|d| caching_wce(d, ten)),
            ) {
                v.set_wce(meta.lun, wce);
            }
        }
        let block_size = self
            .luns
            .get(&meta.lun)
            .map_or(self.default_block_size, |l| l.block_size);
        if let Some(v) = self.verifier.as_mut() {
            let cref = meta.command_ref();
            let good = outcome.is_good();
            match meta.kind {
                Kind::Write { lba, blocks, .. } => {
                    v.write_completed(meta.oseq, meta.lun, lba, blocks, good);
                    if good {
                        let len = u64::from(blocks) * u64::from(block_size);
                        v.residual(
                            &cref,
                            meta.oseq,
                            meta.lun,
                            meta.xfer_len,
                            len,
                            outcome.residual,
                        );
                    }
                }
                Kind::Flush { .. } => v.flush_completed(meta.oseq, meta.lun, good),
                Kind::Read { lba, blocks } => {
                    let data: &[u8] = if good { &outcome.data } else { &[] };
                    v.read_completed(&cref, meta.oseq, meta.lun, lba, data);
                    if good {
                        let len = u64::from(blocks) * u64::from(block_size);
                        v.residual(
                            &cref,
                            meta.oseq,
                            meta.lun,
                            meta.xfer_len,
                            len,
                            outcome.residual,
                        );
                    }
                }
                _ => {}
            }
            match self.recorded.remove(&meta.seq) {
                Some(rec) => v.compare_completion(&cref, &rec, &outcome),
                None => {
                    let mut kept = outcome;
                    kept.data = Vec::new();
                    self.replayed.insert(meta.seq, (cref, kept));
                    return Ok(());
                }
            }
        }
        if self.pool.len() < self.qd as usize {
            self.pool.push(outcome.data);
        }
        Ok(())
    }

    /// A recorded completion read from the trace.
    fn recorded_completion(&mut self, c: Complete) {
        if let Some(&id) = self.by_seq.get(&c.seq) {
            self.sched.must_finish.insert(id);
        }
        let Some(v) = self.verifier.as_mut() else {
            return;
        };
        match self.replayed.remove(&c.seq) {
            Some((cref, outcome)) => v.compare_completion(&cref, &c, &outcome),
            None => {
                if self.by_seq.contains_key(&c.seq) {
                    self.recorded.insert(c.seq, c);
                }
            }
        }
    }

    /// At the end of a pass, replayed commands whose completion the
    /// recording never showed are not compared (the capture ended first).
    fn unmatched_recordings(&mut self) {
        self.replayed.clear();
        self.recorded.clear();
        self.by_seq.clear();
    }

    /// Waits for every in-flight command.
    async fn drain(&mut self) -> Result<(), ReplayError> {
        while let Some(d) = self.inflight.next().await {
            self.finish(d)?;
        }
        Ok(())
    }

    async fn power_loss(&mut self) -> Result<(), ReplayError> {
        self.pending_power_loss = false;
        self.backend
            .power_loss()
            .await
            .map_err(|e| self.backend_error(e))?;
        if let Some(v) = self.verifier.as_mut() {
            v.power_loss();
        }
        self.recover_all().await
    }

    /// After a power loss or reset: clear unit attentions and relearn the
    /// cache mode on every LUN seen so far.
    async fn recover_all(&mut self) -> Result<(), ReplayError> {
        let luns: Vec<u64> = self.luns.keys().copied().collect();
        for lun in luns {
            self.probe(lun).await?;
        }
        Ok(())
    }

    /// The geometry of `lun`, probing it on first use.
    async fn lun(&mut self, lun: u64) -> Result<LunInfo, ReplayError> {
        if let Some(i) = self.luns.get(&lun) {
            return Ok(*i);
        }
        let info = self.probe(lun).await?;
        self.luns.insert(lun, info);
        Ok(info)
    }

    /// TEST UNIT READY until GOOD, READ CAPACITY(16), MODE SENSE(10) of the
    /// caching page: what a host driver does before trusting a LUN.
    async fn probe(&mut self, lun: u64) -> Result<LunInfo, ReplayError> {
        let mut ready = false;
        for _ in 0..TUR_RETRIES {
            let o = control(self.backend, lun, vec![0; 6], 0)
                .await
                .map_err(|e| self.backend_error(e))?;
            if o.is_good() {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err(self.backend_error(BackendError::Refused(format!(
                "LUN {lun} did not become ready after {TUR_RETRIES} TEST UNIT READY commands"
            ))));
        }
        let mut rc16 = vec![0u8; 16];
        rc16[0] = 0x9e;
        rc16[1] = 0x10;
        rc16[13] = 32;
        let o = control(self.backend, lun, rc16, 32)
            .await
            .map_err(|e| self.backend_error(e))?;
        let block_size = if o.is_good() && o.data.len() >= 12 {
            u32::from_be_bytes([o.data[8], o.data[9], o.data[10], o.data[11]])
        } else {
            0
        };
        let block_size = if (512..=MAX_TRANSFER).contains(&block_size) {
            block_size
        } else {
            self.default_block_size
        };
        // MODE SENSE(10), DBD, caching page (SBC-4 7.5.5).
        let ms = vec![0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 252, 0];
        let o = control(self.backend, lun, ms, 252)
            .await
            .map_err(|e| self.backend_error(e))?;
        // Unknown cache mode: assume a volatile cache, the permissive case.
        let wce = if o.is_good() {
            caching_wce(&o.data, true).unwrap_or(true)
        } else {
            true
        };
        if let Some(v) = self.verifier.as_mut() {
            v.lun_ready(lun, block_size, wce);
        }
        Ok(LunInfo { block_size })
    }

    /// The closing sweep of `--verify`: read every block this run wrote and
    /// judge it, as fio's verify phase does after its writes.
    async fn read_back(&mut self) -> Result<(), ReplayError> {
        let Some(v) = self.verifier.as_ref() else {
            return Ok(());
        };
        let plan: Vec<(u64, u64, u64)> = v
            .written()
            .flat_map(|(lun, s, l)| {
                let bs = self
                    .luns
                    .get(&lun)
                    .map_or(self.default_block_size, |i| i.block_size);
                chunks(lun, s, l, bs)
            })
            .collect();
        for (i, (lun, lba, blocks)) in plan.into_iter().enumerate() {
            let oseq = READ_BACK_SEQ + i as u64;
            if let Some(v) = self.verifier.as_mut() {
                v.read_submitted(oseq, lun);
            }
            let bs = self
                .luns
                .get(&lun)
                .map_or(self.default_block_size, |l| l.block_size);
            let Some(len) = (blocks as u32).checked_mul(bs) else {
                continue;
            };
            let mut cdb = vec![0u8; 16];
            cdb[0] = 0x88;
            cdb[2..10].copy_from_slice(&lba.to_be_bytes());
            cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
            let text = CdbText::new(&cdb);
            let o = control(self.backend, lun, cdb, len)
                .await
                .map_err(|e| self.backend_error(e))?;
            if let Some(v) = self.verifier.as_mut() {
                let cref = CommandRef {
                    seq: None,
                    pass: self.pass,
                    cdb: text,
                };
                if o.is_good() {
                    v.read_completed(&cref, oseq, lun, lba, &o.data);
                } else {
                    v.read_completed(&cref, oseq, lun, lba, &[]);
                    v.read_back_failed(&cref, &o);
                }
            }
        }
        Ok(())
    }
}

impl Meta {
    fn command_ref(&self) -> CommandRef {
        CommandRef {
            seq: Some(self.seq),
            pass: self.pass,
            cdb: self.cdb.clone(),
        }
    }
}

/// Read-back commands of at most 128 KiB each over `[start, start + len)`.
fn chunks(
    lun: u64,
    start: u64,
    len: u64,
    block_size: u32,
) -> impl Iterator<Item = (u64, u64, u64)> {
    // 128 KiB: within every preset's per-command and per-segment limits, so
    // the read-back never depends on the HBA model splitting correctly.
    let max_blocks = (READ_BACK_BYTES / u64::from(block_size.max(1))).max(1);
    let n = len.div_ceil(max_blocks);
    (0..n).map(move |i| {
        let s = start + i * max_blocks;
        (lun, s, max_blocks.min(start + len - s))
    })
}

/// Bytes per closing read-back command.
const READ_BACK_BYTES: u64 = 128 << 10;

/// The WCE bit of the caching mode page (08h) in a MODE SENSE response or
/// MODE SELECT parameter list. `ten`: 10-byte header (8 bytes, block
/// descriptor length at bytes 6..8) rather than the 6-byte one (4 bytes,
/// length at byte 3). SBC-4 7.5.5: WCE is bit 2 of byte 2 of the page.
pub fn caching_wce(data: &[u8], ten: bool) -> Option<bool> {
    let (hdr, bdlen) = if ten {
        (
            8usize,
            usize::from(u16::from_be_bytes([*data.get(6)?, *data.get(7)?])),
        )
    } else {
        (4usize, usize::from(*data.get(3)?))
    };
    let mut at = hdr.checked_add(bdlen)?;
    while at < data.len() {
        let code = data.get(at)? & 0x3f;
        let spf = data.get(at)? & 0x40 != 0;
        let (body, len) = if spf {
            (
                at + 4,
                usize::from(u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?])),
            )
        } else {
            (at + 2, usize::from(*data.get(at + 1)?))
        };
        if code == 0x08 && !spf {
            return Some(data.get(at + 2)? & 0x04 != 0);
        }
        at = body.checked_add(len)?;
    }
    None
}

/// The recording's highest queue depth and its command count, in one
/// streaming pass. A trace without completions shows no concurrency: 1.
fn recorded_depth(source: &dyn TraceSource) -> Result<(u32, u64), ReplayError> {
    let mut outstanding: HashSet<u64> = HashSet::new();
    let mut max = 0usize;
    let mut submits = 0u64;
    let mut completes = 0u64;
    for ev in source.open()? {
        match ev? {
            Event::Submit(s) => {
                submits += 1;
                outstanding.insert(s.seq);
                max = max.max(outstanding.len());
            }
            Event::Complete(c) => {
                completes += 1;
                outstanding.remove(&c.seq);
            }
            Event::PowerLoss { .. } | Event::Reset { .. } => outstanding.clear(),
            Event::Note { .. } => {}
        }
        // A capture whose completions went missing must not make this set
        // grow with the trace.
        if outstanding.len() > 65536 {
            outstanding.clear();
        }
    }
    let qd = if completes == 0 {
        1
    } else {
        max.clamp(1, 4096) as u32
    };
    Ok((qd, submits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caching_page_wce_is_found_after_block_descriptors() {
        // MODE SENSE(10) header with an 8-byte block descriptor, then the
        // caching page with WCE set.
        let mut d = vec![0u8; 8];
        d[7] = 8;
        d.extend_from_slice(&[0; 8]);
        d.extend_from_slice(&[0x08, 0x12, 0x04]);
        d.extend_from_slice(&[0; 17]);
        assert_eq!(caching_wce(&d, true), Some(true));
        d[18] = 0;
        assert_eq!(caching_wce(&d, true), Some(false));
        assert_eq!(caching_wce(&d[..5], true), None);
        // 6-byte header, no descriptors.
        let d6 = [0, 0, 0, 0, 0x08, 0x12, 0x04];
        assert_eq!(caching_wce(&d6, false), Some(true));
    }

    #[test]
    fn scheduler_keeps_overlapping_ranges_and_barriers_in_order() {
        let mut s = Scheduler::default();
        s.slots.push(Slot {
            id: 1,
            lun: 0,
            range: Some((0, 8)),
            barrier: false,
        });
        assert!(!s.admissible(Order::Overlap, 32, 0, Some((4, 12)), false));
        assert!(s.admissible(Order::Overlap, 32, 0, Some((8, 16)), false));
        assert!(s.admissible(Order::Overlap, 32, 1, Some((4, 12)), false));
        assert!(!s.admissible(Order::Overlap, 32, 0, None, true));
        assert!(s.admissible(Order::Free, 32, 0, Some((4, 12)), false));
        assert!(!s.admissible(Order::Free, 1, 0, Some((100, 101)), false));
        s.must_finish.insert(1);
        assert!(!s.admissible(Order::Strict, 32, 0, Some((100, 101)), false));
        assert!(s.admissible(Order::Overlap, 32, 0, Some((100, 101)), false));
        s.remove(1);
        assert!(s.admissible(Order::Strict, 32, 0, None, true));
    }

    #[test]
    fn read_back_chunks_cover_the_range_exactly() {
        let c: Vec<_> = chunks(0, 10, 600, 512).collect();
        assert_eq!(c, vec![(0, 10, 256), (0, 266, 256), (0, 522, 88)]);
        let c: Vec<_> = chunks(1, 0, 70, 4096).collect();
        assert_eq!(c, vec![(1, 0, 32), (1, 32, 32), (1, 64, 6)]);
    }
}
