//! Runs a program against a fresh emulator beside the consistency oracle,
//! the way a host would issue it.
//!
//! The harness plays the host's part faithfully, because a finding is only
//! worth replaying on hardware if the host side was correct:
//! - every write's Data-Out is self-describing ([`trace::pattern`]) and is
//!   placed in host memory at its SG entries just before submission, so a
//!   block read back says which LBA and write generation it holds;
//! - the OS splitter is applied: a transfer over the byte limit that
//!   reached the splitter ([`trace::HbaPreset::splitter`]) is sent as
//!   several tasks at block boundaries, as the OS would. The segment count
//!   is left to the driver: a DEXT receives one IOVM segment per task and
//!   builds the controller's list from physical pages itself
//!   (`driverkit-scsi.md`), so nothing above it bounds the entry count;
//! - after a power loss or reset the next command is TEST UNIT READY, which
//!   must report the unit attention (SPC-4 5.14), and the caching mode page
//!   reverts to its saved value;
//! - WCE changes go through MODE SENSE then MODE SELECT of the caching page,
//!   as `sdparm --set WCE` does;
//! - the program ends with a power loss and a read-back of every block it
//!   wrote, through one low, aligned buffer within every HBA limit so the
//!   check itself cannot take a faulty path: the oracle sees the truth.
//!
//! Blocks touched by WRITE SAME or UNMAP hold data the self-describing
//! format cannot tag (replicated blocks, zeros); they are left out of the
//! data checks for the rest of the run rather than risk a false positive.
//!
//! Each run records, on request, the exact events it issued
//! ([`Harness::record`]): that is the reproducer trace.

use crate::device::{Device, DeviceError, DeviceSpec, EmulatorDevice, IscsiDevice};
use crate::program::{Limits, Op, ScsiProgram, Transfer};
use crate::verdict::{protocol, Verdict, Violation};
use emulator::{BugSet, EmulatorConfig, Outcome, Task};
use trace::cdb::{Cdb, CdbSize, Rw};
use trace::oracle::{Oracle, WriteData};
use trace::pattern;
use trace::{
    Complete, Direction, Event, HbaPreset, Lba, Nexus, Payload, ScsiStatus, Segment,
    ServiceResponse, Submit, TaskAttr,
};

/// Bytes in the emulator's coverage map (what the map observer holds).
pub const MAP_SIZE: usize = emulator::coverage::MAP_SIZE;

/// Host address of the read-back buffer and of small parameter lists: low,
/// page-aligned, reachable by any controller.
const SCRATCH: u64 = 0x8_0000;

/// The device a campaign fuzzes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Controller model and the limits that reached the OS splitter.
    pub preset: HbaPreset,
    /// Catalogued bugs switched on.
    pub bugs: BugSet,
    /// Logical block size (512 or 4096).
    pub block_size: u32,
    /// Capacity in blocks.
    pub capacity_blocks: u64,
    /// The emulator's seed (which dirty blocks survive a power loss), and
    /// the base of the data pattern's seed.
    pub device_seed: u64,
    /// Where programs run: the emulator (default) or a real target, for
    /// which `preset` and `bugs` mean nothing and `block_size` and
    /// `capacity_blocks` are what the target reports.
    pub device: DeviceSpec,
}

impl Target {
    /// A 64 MiB disk of 512-byte blocks behind `preset`, no bugs, seed 0.
    pub fn new(preset: HbaPreset) -> Target {
        Target {
            preset,
            bugs: BugSet::NONE,
            block_size: 512,
            capacity_blocks: 64 << 11,
            device_seed: 0,
            device: DeviceSpec::Emulator,
        }
    }

    /// The emulator configuration for this target.
    pub fn emulator_config(&self) -> EmulatorConfig {
        EmulatorConfig {
            block_size: self.block_size,
            capacity_blocks: self.capacity_blocks,
            luns: 1,
            hba: self.preset.clone(),
            bugs: self.bugs,
            seed: self.device_seed,
            ..EmulatorConfig::default()
        }
    }
}

/// Runs programs. Holds reusable buffers, so one harness per thread.
pub struct Harness {
    target: Target,
    cfg: EmulatorConfig,
    device: Option<Box<dyn Device>>,
    limits: Limits,
    data: Vec<u8>,
    param: Vec<u8>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("target", &self.target)
            .finish()
    }
}

/// Everything one run accumulates.
struct Run<'a> {
    emu: Box<dyn Device>,
    failed: Option<DeviceError>,
    data_seed: u64,
    oracle: Oracle,
    verdict: Verdict,
    seq: u64,
    generation: u32,
    ordered_next: bool,
    wce: bool,
    written: Vec<(u64, u32)>,
    tainted: Vec<(u64, u64)>,
    events: Option<&'a mut Vec<Event>>,
    op: Option<usize>,
}

/// Why a harness could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The emulator refused the configuration.
    #[error(transparent)]
    Emulator(#[from] emulator::EmulatorError),
    /// The real target could not be reached.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// What the harness pretends a command returned once the device failed:
/// TASK ABORTED is never judged as GOOD, and the run's verdict is replaced
/// by the device error anyway.
fn aborted_outcome() -> Outcome {
    Outcome {
        status: ScsiStatus::TASK_ABORTED,
        sense: Vec::new(),
        bytes_transferred: 0,
        residual: 0,
        controller_commands: 0,
        bounced_bytes: 0,
        bugs_fired: BugSet::NONE,
    }
}

fn sense_of(out: &Outcome) -> Option<(u8, u8, u8)> {
    out.sense_code()
}

fn rw_cdb(write: bool, lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    let size = if lba <= u64::from(u32::MAX) && blocks <= 0xffff {
        CdbSize::Ten
    } else {
        CdbSize::Sixteen
    };
    let rw = Rw {
        size,
        lba,
        blocks,
        fua,
        dpo: false,
        protect: 0,
        group: 0,
    };
    let cdb = if write { Cdb::Write(rw) } else { Cdb::Read(rw) };
    cdb.encode()
        .expect("READ/WRITE fields are in range for the chosen CDB size")
}

impl Harness {
    /// A harness for `target`, refusing one the emulator cannot build (block
    /// size, capacity) with the emulator's reason, or a real target it
    /// cannot log in to.
    pub fn try_new(target: Target) -> Result<Harness, HarnessError> {
        target.emulator_config().validate()?;
        let mut h = Harness::new(target);
        if h.target.device.is_external() {
            h.device = Some(h.connect()?);
        }
        Ok(h)
    }

    /// A harness for `target` (see [`Harness::try_new`]); a real target is
    /// logged in to at the first run.
    pub fn new(target: Target) -> Harness {
        let cfg = target.emulator_config();
        let limits = Limits::new(target.block_size, target.capacity_blocks);
        Harness {
            target,
            cfg,
            device: None,
            limits,
            data: Vec::new(),
            param: Vec::new(),
        }
    }

    fn connect(&self) -> Result<Box<dyn Device>, DeviceError> {
        Ok(match &self.target.device {
            DeviceSpec::Emulator => Box::new(EmulatorDevice::new(self.cfg.clone())?),
            DeviceSpec::Iscsi(t) => Box::new(IscsiDevice::connect(t)?),
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// What programs are fitted to.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs `program` (fitted first if it is not); with `coverage`, adds
    /// the entries the run hit to it. `coverage` must come zeroed, as
    /// LibAFL's map observers reset theirs before every run: clearing 64 KiB
    /// again here would cost more than the entries a run hits.
    pub fn run(&mut self, program: &ScsiProgram, coverage: Option<&mut [u8]>) -> Verdict {
        self.execute(program, coverage, None)
    }

    /// Runs `program` and returns the events it issued: the reproducer.
    pub fn record(&mut self, program: &ScsiProgram) -> (Verdict, Vec<Event>) {
        let mut events = Vec::new();
        let v = self.execute(program, None, Some(&mut events));
        (v, events)
    }

    fn execute(
        &mut self,
        program: &ScsiProgram,
        coverage: Option<&mut [u8]>,
        events: Option<&mut Vec<Event>>,
    ) -> Verdict {
        // Mutators and the generator fit what they make; anything else
        // (a hand-edited corpus entry, an imported seed) is fitted here.
        let refit;
        let p = if program
            .ops
            .iter()
            .all(|o| o.sg().is_none_or(|sg| sg.len() <= self.limits.max_segments))
        {
            let mut c = program.clone();
            c.fit(&self.limits);
            if &c == program {
                program
            } else {
                refit = c;
                &refit
            }
        } else {
            let mut c = program.clone();
            c.fit(&self.limits);
            refit = c;
            &refit
        };
        let mut dev = match self.device.take().map_or_else(|| self.connect(), Ok) {
            Ok(d) => d,
            Err(e) => return Verdict::aborted(e),
        };
        if let Err(e) = dev.begin(coverage.is_some()) {
            self.device = Some(dev);
            return Verdict::aborted(e);
        }
        let data_seed = dev.data_seed(self.target.device_seed ^ 0x5c0a_2a11_f022_0000);
        let initial = dev.initial_content();
        let mut run = Run {
            emu: dev,
            failed: None,
            data_seed,
            oracle: Oracle::new(self.target.block_size).with_initial_content(initial),
            verdict: Verdict::default(),
            seq: 0,
            generation: 0,
            ordered_next: false,
            wce: self.cfg.cache.wce_default,
            written: Vec::new(),
            tainted: Vec::new(),
            events,
            op: None,
        };
        run.oracle.set_wce(run.wce);
        // Power-on unit attention: consumed, not judged (SPC-4 allows a
        // device to report it or not before the first command).
        self.tur(&mut run, false);
        for (i, op) in p.ops.iter().enumerate() {
            if run.failed.is_some() {
                break;
            }
            run.op = Some(i);
            self.op(&mut run, op);
        }
        run.op = None;
        if !run.written.is_empty() && run.failed.is_none() {
            self.power_loss(&mut run);
            self.read_back(&mut run);
        }
        let Run {
            mut emu,
            failed,
            mut verdict,
            seq,
            ..
        } = run;
        if let Some(map) = coverage {
            emu.copy_coverage(map);
        }
        self.device = Some(emu);
        if let Some(e) = failed {
            return Verdict::aborted(e);
        }
        verdict.commands = seq;
        verdict.bug_path.sort();
        verdict.bug_path.dedup();
        verdict
    }

    fn violation(run: &mut Run<'_>, class: &str, seq: u64, lba: Option<u64>, detail: String) {
        run.verdict.violations.push(Violation {
            class: class.to_string(),
            op: run.op,
            seq: Some(seq),
            lba,
            detail,
        });
    }

    /// Submits one task, recording it; returns the outcome and its seq.
    fn submit(
        &mut self,
        run: &mut Run<'_>,
        cdb: &[u8],
        dir: Direction,
        xfer_len: u32,
        sg: &[Segment],
        payload: Payload,
    ) -> (Outcome, u64) {
        let seq = run.seq;
        run.seq += 1;
        let attr = if std::mem::take(&mut run.ordered_next) {
            TaskAttr::Ordered
        } else {
            TaskAttr::Simple
        };
        let task = Task {
            initiator: 0,
            lun: 0,
            cdb,
            dir,
            xfer_len,
            sg,
            attr,
        };
        let out = match run.emu.submit(&task) {
            Ok(out) => out,
            Err(e) => {
                // The run is over (see `execute`); what follows must not
                // judge a completion that never came.
                run.failed.get_or_insert(e);
                return (aborted_outcome(), seq);
            }
        };
        for b in out.bugs_fired.iter() {
            run.verdict.bug_path.push(b.name().to_string());
        }
        if let Some(ev) = run.events.as_deref_mut() {
            ev.push(Event::Submit(Submit {
                seq,
                time_ns: seq * 2,
                nexus: Nexus::default(),
                tag: seq,
                attr,
                cdb: cdb.to_vec(),
                dir,
                xfer_len,
                sg: sg.to_vec(),
                payload,
            }));
            ev.push(Event::Complete(Complete {
                seq,
                time_ns: seq * 2 + 1,
                response: ServiceResponse::TaskComplete,
                status: out.status,
                sense: out.sense.clone(),
                bytes_transferred: out.bytes_transferred,
                residual: out.residual,
                payload: Payload::None,
            }));
        }
        (out, seq)
    }

    /// TEST UNIT READY after power loss or reset: must report the unit
    /// attention when `judge` (SAM-5 6.2: a power on or reset establishes
    /// a unit attention for every I_T nexus).
    fn tur(&mut self, run: &mut Run<'_>, judge: bool) {
        let (out, seq) = self.submit(run, &[0u8; 6], Direction::None, 0, &[], Payload::None);
        if judge && !out.is_unit_attention() {
            Self::violation(
                run,
                protocol::MISSING_UNIT_ATTENTION,
                seq,
                None,
                format!(
                    "TEST UNIT READY after power loss or reset returned {} without UNIT ATTENTION",
                    out.status.name()
                ),
            );
        }
        if out.is_unit_attention() {
            // SPC-4 5.14: one unit attention per condition; a second TUR
            // must then succeed, which the next command checks.
            let _ = self.submit(run, &[0u8; 6], Direction::None, 0, &[], Payload::None);
        }
    }

    fn power_loss(&mut self, run: &mut Run<'_>) {
        if let Err(e) = run.emu.power_loss() {
            run.failed.get_or_insert(e);
            return;
        }
        run.oracle.power_loss();
        if let Some(ev) = run.events.as_deref_mut() {
            ev.push(Event::PowerLoss {
                time_ns: run.seq * 2,
            });
        }
        // The caching page reverts to its saved value (the default: the
        // harness never saves pages).
        run.wce = self.cfg.cache.wce_default;
        run.oracle.set_wce(run.wce);
        self.tur(run, true);
    }

    fn in_range(&self, lba: u64, blocks: u32) -> bool {
        lba.checked_add(u64::from(blocks))
            .is_some_and(|end| end <= self.target.capacity_blocks)
    }

    fn is_tainted(run: &Run<'_>, lba: u64) -> bool {
        run.tainted.iter().any(|&(a, b)| lba >= a && lba < b)
    }

    /// Judges the status of a command: out-of-range LBAs must fail with
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE (SBC-4 4.5); an in-range command
    /// within every controller limit must succeed. Returns whether it
    /// succeeded.
    fn judge_status(
        &mut self,
        run: &mut Run<'_>,
        out: &Outcome,
        seq: u64,
        what: &str,
        range: Option<(u64, u32)>,
        within_limits: bool,
    ) -> bool {
        let good = out.is_good();
        // A real target may lack optional features (SYNCHRONIZE CACHE's
        // IMMED, WRITE SAME, UNMAP, ...) and then must refuse them with
        // ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE or INVALID FIELD
        // IN CDB (SPC-4 §4.5.2, SBC-4 §5.24): that is no violation. Plain
        // READ and WRITE are mandatory. The emulator supports everything,
        // so there such a refusal is still judged.
        let unsupported = self.target.device.is_external()
            && !matches!(what, "READ" | "WRITE")
            && sense_of(out).is_some_and(|(k, asc, _)| k == 0x5 && (asc == 0x20 || asc == 0x24));
        if unsupported {
            return false;
        }
        match range {
            Some((lba, blocks)) if blocks > 0 && !self.in_range(lba, blocks) => {
                let ok = sense_of(out).is_some_and(|(k, asc, _)| k == 0x5 && asc == 0x21);
                if !ok {
                    Self::violation(
                        run,
                        protocol::MISSING_RANGE_CHECK,
                        seq,
                        Some(lba),
                        format!("{what} of {blocks} blocks at LBA {lba} past the last LBA {} returned {}", self.target.capacity_blocks.saturating_sub(1), out.status.name()),
                    );
                }
                false
            }
            _ => {
                if !good && within_limits && !out.is_unit_attention() {
                    let sense = sense_of(out).map_or("no sense".to_string(), |(k, a, q)| {
                        format!("sense {k:x}/{a:02x}/{q:02x}")
                    });
                    Self::violation(
                        run,
                        protocol::UNEXPECTED_CHECK,
                        seq,
                        None,
                        format!("valid {what} failed: {} ({sense})", out.status.name()),
                    );
                }
                good
            }
        }
    }

    fn fits_controller(&self, bytes: u64, segs: usize, write: bool) -> bool {
        let c = &self.target.preset.controller;
        segs <= c.max_segments(write) as usize && bytes <= u64::from(c.max_bytes(write))
    }

    /// Splits a transfer the way the OS splitter does: pieces of at most
    /// the splitter's bytes, at block boundaries. Returns
    /// (first block offset, blocks, SG entries) per piece.
    fn split(&self, t: &Transfer, write: bool) -> Vec<(u32, u32, Vec<Segment>)> {
        let s = &self.target.preset.splitter;
        let bs = u64::from(self.target.block_size);
        let max_bytes = (u64::from(s.max_bytes(write)) / bs * bs).max(bs);
        let max_segs = usize::MAX;
        let total = u64::from(t.blocks) * bs;
        if total <= max_bytes {
            return vec![(0, t.blocks, t.sg.clone())];
        }
        let mut pieces = Vec::new();
        let mut sg_i = 0usize;
        let mut sg_off = 0u64;
        let mut done = 0u64;
        while done < total {
            let mut piece_sg: Vec<Segment> = Vec::new();
            let mut got = 0u64;
            // Take entries while within both limits; cut the piece at a
            // block boundary.
            while got < max_bytes && sg_i < t.sg.len() && piece_sg.len() < max_segs {
                let seg = t.sg[sg_i];
                let left = u64::from(seg.len) - sg_off;
                let take = left.min(max_bytes - got);
                piece_sg.push(Segment::new(seg.addr.0 + sg_off, take as u32));
                got += take;
                if take == left {
                    sg_i += 1;
                    sg_off = 0;
                } else {
                    sg_off += take;
                }
            }
            let whole = got / bs * bs;
            if whole == 0 {
                // Segments smaller than a block and the segment limit
                // reached: the OS cannot split this; send the rest whole.
                pieces.push((
                    (done / bs) as u32,
                    ((total - done) / bs) as u32,
                    t.sg.clone(),
                ));
                return pieces;
            }
            // Give back the bytes past the block boundary.
            let mut excess = got - whole;
            while excess > 0 {
                let last = piece_sg.last_mut().expect("nonempty piece");
                let l = u64::from(last.len);
                if l <= excess {
                    piece_sg.pop();
                    excess -= l;
                    if sg_off == 0 {
                        sg_i -= 1;
                        sg_off = u64::from(t.sg[sg_i].len) - l;
                    } else {
                        sg_off -= l;
                    }
                } else {
                    last.len = (l - excess) as u32;
                    if sg_off == 0 {
                        sg_i -= 1;
                        sg_off = u64::from(t.sg[sg_i].len) - excess;
                    } else {
                        sg_off -= excess;
                    }
                    excess = 0;
                }
            }
            pieces.push(((done / bs) as u32, (whole / bs) as u32, piece_sg));
            done += whole;
        }
        pieces
    }

    fn write(&mut self, run: &mut Run<'_>, t: &Transfer) {
        let bs = self.target.block_size as usize;
        run.generation = run.generation.wrapping_add(1).max(1);
        let generation = run.generation;
        let seed = run.data_seed;
        for (off, blocks, sg) in self.split(t, true) {
            let lba = t.lba.0.wrapping_add(u64::from(off));
            // Judged per piece: when the splitter cuts a transfer that runs
            // past the last LBA, the pieces inside the medium land and only
            // the rest fails (found by an unseeded no-bug campaign, which
            // flagged the landed pieces as data no write produced).
            let in_range = self.in_range(lba, blocks);
            let bytes = blocks as usize * bs;
            // Every byte is about to be overwritten: grow, never re-zero.
            if self.data.len() < bytes {
                self.data.resize(bytes, 0);
            }
            let data = &mut self.data[..bytes];
            pattern::fill_blocks(seed, generation, lba, bs, data);
            let mut pos = 0usize;
            for s in &sg {
                let n = (s.len as usize).min(bytes - pos);
                run.emu.memory().write(s.addr.0, &data[pos..pos + n]);
                pos += n;
            }
            let cdb = rw_cdb(true, lba, blocks, t.fua);
            let payload = Payload::Pattern { seed, generation };
            let within = self.fits_controller(bytes as u64, sg.len(), true);
            let seq = run.seq;
            if in_range && blocks > 0 {
                run.oracle.submit_write(
                    seq,
                    lba,
                    blocks,
                    WriteData::Pattern { seed, generation },
                    t.fua,
                );
            }
            let (out, seq) =
                self.submit(run, &cdb, Direction::ToDevice, bytes as u32, &sg, payload);
            let good = self.judge_status(run, &out, seq, "WRITE", Some((lba, blocks)), within);
            if in_range && blocks > 0 {
                run.oracle.complete_write(seq, good);
                run.written.push((lba, blocks));
            }
            if good {
                self.judge_residual(run, &out, seq, bytes as u32, bytes as u32);
            }
        }
    }

    /// SAM-5 5.4.3: residual = requested length - bytes the command moves.
    fn judge_residual(
        &mut self,
        run: &mut Run<'_>,
        out: &Outcome,
        seq: u64,
        xfer_len: u32,
        spdtl: u32,
    ) {
        if let Some(v) = run
            .oracle
            .check_residual(seq, xfer_len, u64::from(spdtl), out.residual)
        {
            let op = run.op;
            run.verdict.violations.push(Violation {
                class: v.class.name().to_string(),
                op,
                seq: Some(seq),
                lba: None,
                detail: v.to_string(),
            });
        }
    }

    fn read(&mut self, run: &mut Run<'_>, t: &Transfer, extra: u32) {
        let bs = self.target.block_size as usize;
        for (off, blocks, sg) in self.split(t, false) {
            let lba = t.lba.0.wrapping_add(u64::from(off));
            // Per piece, as for writes: pieces inside the medium are read
            // and checked even when the whole transfer runs past its end.
            let in_range = self.in_range(lba, blocks);
            let bytes = blocks as usize * bs;
            // A buffer longer than the data (a short transfer) ends with a
            // slack entry the device must leave alone.
            let mut sg = sg;
            if extra > 0 {
                let at = sg
                    .iter()
                    .map(Segment::end)
                    .max()
                    .unwrap_or(SCRATCH)
                    .div_ceil(4096)
                    * 4096;
                sg.push(Segment::new(at, extra));
            }
            let xfer = bytes as u32 + extra;
            // Host buffers are reused: clear them so stale bytes from an
            // earlier transfer cannot pass for data this read returned.
            for s in &sg {
                run.emu.memory().free(s.addr.0, u64::from(s.len));
            }
            let cdb = rw_cdb(false, lba, blocks, t.fua);
            let within = self.fits_controller(u64::from(xfer), sg.len(), false);
            run.oracle.submit_read(run.seq);
            let (out, seq) =
                self.submit(run, &cdb, Direction::FromDevice, xfer, &sg, Payload::None);
            let good = self.judge_status(run, &out, seq, "READ", Some((lba, blocks)), within);
            if !good || !in_range || blocks == 0 {
                continue;
            }
            self.judge_residual(run, &out, seq, xfer, bytes as u32);
            // The SG list covers `bytes` (the fitter guarantees it), so
            // every byte checked below is read back first.
            if self.data.len() < bytes {
                self.data.resize(bytes, 0);
            }
            let mut pos = 0usize;
            for s in &sg {
                if pos >= bytes {
                    break;
                }
                let n = (s.len as usize).min(bytes - pos);
                run.emu
                    .memory()
                    .read(s.addr.0, &mut self.data[pos..pos + n]);
                pos += n;
            }
            // Should a list ever fall short, what it did not cover reads as
            // zeros, as an untouched buffer would.
            self.data[pos.min(bytes)..bytes].fill(0);
            self.check_blocks(run, seq, lba, blocks);
        }
    }

    /// Judges the blocks of one read (in `self.data`) with the oracle,
    /// skipping runs of blocks whose content cannot be tagged.
    fn check_blocks(&mut self, run: &mut Run<'_>, seq: u64, lba: u64, blocks: u32) {
        let bs = self.target.block_size as usize;
        let mut i = 0usize;
        while i < blocks as usize {
            if Self::is_tainted(run, lba + i as u64) {
                i += 1;
                continue;
            }
            let start = i;
            while i < blocks as usize && !Self::is_tainted(run, lba + i as u64) {
                i += 1;
            }
            let data = &self.data[start * bs..i * bs];
            for v in run.oracle.check_read(seq, lba + start as u64, data) {
                let op = run.op;
                run.verdict.violations.push(Violation {
                    class: v.class.name().to_string(),
                    op,
                    seq: Some(seq),
                    lba: Some(v.lba),
                    detail: v.to_string(),
                });
            }
        }
    }

    fn sync(&mut self, run: &mut Run<'_>, lba: u64, blocks: u32, immed: bool) {
        // SYNCHRONIZE CACHE(10) carries 32-bit LBAs and 16-bit counts.
        let size = if lba <= u64::from(u32::MAX) && blocks <= 0xffff {
            CdbSize::Ten
        } else {
            CdbSize::Sixteen
        };
        let cdb = Cdb::SyncCache {
            size,
            lba,
            blocks,
            immed,
            group: 0,
        }
        .encode()
        .expect("SYNCHRONIZE CACHE fields in range");
        let seq = run.seq;
        run.oracle.submit_flush(seq, lba, blocks, immed);
        let (out, seq) = self.submit(run, &cdb, Direction::None, 0, &[], Payload::None);
        let range = if blocks == 0 {
            (lba.min(self.target.capacity_blocks), 0)
        } else {
            (lba, blocks)
        };
        let range_ok = lba < self.target.capacity_blocks || (blocks == 0 && lba == 0);
        let good = if !range_ok {
            self.judge_status(
                run,
                &out,
                seq,
                "SYNCHRONIZE CACHE",
                Some((lba, blocks.max(1))),
                true,
            )
        } else {
            self.judge_status(run, &out, seq, "SYNCHRONIZE CACHE", Some(range), true)
        };
        run.oracle.complete_flush(seq, good);
    }

    fn set_wce(&mut self, run: &mut Run<'_>, on: bool) {
        // MODE SENSE(10) of the caching page, current values.
        let sense = Cdb::ModeSense {
            size: CdbSize::Ten,
            dbd: true,
            llbaa: false,
            pc: 0,
            page_code: 0x08,
            subpage: 0,
            alloc_len: 64,
        };
        let cdb = sense.encode().expect("MODE SENSE fields in range");
        run.emu.memory().free(SCRATCH, 64);
        let (out, seq) = self.submit(
            run,
            &cdb,
            Direction::FromDevice,
            64,
            &[Segment::new(SCRATCH, 64)],
            Payload::None,
        );
        if !self.judge_status(run, &out, seq, "MODE SENSE", None, true) {
            return;
        }
        let mut page = [0u8; 64];
        run.emu.memory().read(SCRATCH, &mut page);
        let data_len = usize::from(u16::from_be_bytes([page[0], page[1]])) + 2;
        let bdl = usize::from(u16::from_be_bytes([page[6], page[7]]));
        let at = 8 + bdl;
        if data_len > page.len() || page.get(at).map(|c| c & 0x3f) != Some(0x08) {
            return;
        }
        let plen = usize::from(page[at + 1]) + 2;
        let end = (at + plen).min(data_len).min(page.len());
        // MODE SELECT(10): header with MODE DATA LENGTH reserved (0), no
        // block descriptors, then the page with PS cleared (SPC-4 7.5.7).
        self.param.clear();
        self.param.extend_from_slice(&[0u8; 8]);
        self.param.extend_from_slice(&page[at..end]);
        self.param[8] &= 0x3f;
        if let Some(flags) = self.param.get_mut(10) {
            if on {
                *flags |= 0x04;
            } else {
                *flags &= !0x04;
            }
        }
        let len = self.param.len() as u16;
        let select = Cdb::ModeSelect {
            size: CdbSize::Ten,
            pf: true,
            sp: false,
            param_len: len,
        };
        let cdb = select.encode().expect("MODE SELECT fields in range");
        let param = std::mem::take(&mut self.param);
        run.emu.memory().write(SCRATCH, &param);
        let (out, seq) = self.submit(
            run,
            &cdb,
            Direction::ToDevice,
            u32::from(len),
            &[Segment::new(SCRATCH, u32::from(len))],
            Payload::Full(param.clone()),
        );
        self.param = param;
        if self.judge_status(run, &out, seq, "MODE SELECT", None, true) {
            run.wce = on;
            run.oracle.set_wce(on);
        }
    }

    fn write_same(
        &mut self,
        run: &mut Run<'_>,
        lba: u64,
        blocks: u32,
        unmap: bool,
        sg: &[Segment],
    ) {
        let bs = self.target.block_size;
        let cdb = Cdb::WriteSame {
            size: CdbSize::Sixteen,
            lba,
            blocks,
            unmap,
            anchor: false,
            ndob: false,
            protect: 0,
            group: 0,
        }
        .encode()
        .expect("WRITE SAME fields in range");
        for s in sg {
            run.emu.memory().free(s.addr.0, u64::from(s.len));
        }
        let (out, seq) = self.submit(
            run,
            &cdb,
            Direction::ToDevice,
            bs,
            sg,
            Payload::Full(vec![0; bs as usize]),
        );
        // Judge only the range rule: a device may refuse WRITE SAME of more
        // blocks than its MAXIMUM WRITE SAME LENGTH (SBC-4 6.6.5).
        let range = Some((lba, blocks.max(1)));
        let ok = self.judge_status(run, &out, seq, "WRITE SAME", range, false);
        let _ = ok;
        if self.in_range(lba, blocks.max(1)) {
            let end = if blocks == 0 {
                self.target.capacity_blocks
            } else {
                lba + u64::from(blocks)
            };
            run.tainted.push((lba, end));
        }
    }

    fn unmap(&mut self, run: &mut Run<'_>, lba: u64, blocks: u32) {
        // SBC-4 5.30.2: 8-byte header, one 16-byte block descriptor.
        let mut p = vec![0u8; 24];
        p[0..2].copy_from_slice(&22u16.to_be_bytes());
        p[2..4].copy_from_slice(&16u16.to_be_bytes());
        p[8..16].copy_from_slice(&lba.to_be_bytes());
        p[16..20].copy_from_slice(&blocks.to_be_bytes());
        let cdb = Cdb::Unmap {
            anchor: false,
            group: 0,
            param_len: 24,
        }
        .encode()
        .expect("UNMAP fields in range");
        run.emu.memory().write(SCRATCH, &p);
        let (out, seq) = self.submit(
            run,
            &cdb,
            Direction::ToDevice,
            24,
            &[Segment::new(SCRATCH, 24)],
            Payload::Full(p),
        );
        let _ = self.judge_status(run, &out, seq, "UNMAP", Some((lba, blocks)), false);
        if blocks > 0 && self.in_range(lba, blocks) {
            run.tainted.push((lba, lba + u64::from(blocks)));
        }
    }

    fn op(&mut self, run: &mut Run<'_>, op: &Op) {
        match op {
            Op::Write(t) => self.write(run, t),
            Op::Read(t) => self.read(run, t, t.extra),
            Op::SyncCache { lba, blocks, immed } => self.sync(run, lba.0, *blocks, *immed),
            Op::PowerLoss => self.power_loss(run),
            Op::Reset => {
                if let Err(e) = run.emu.reset() {
                    run.failed.get_or_insert(e);
                    return;
                }
                if let Some(ev) = run.events.as_deref_mut() {
                    ev.push(Event::Reset {
                        time_ns: run.seq * 2,
                    });
                }
                self.tur(run, true);
            }
            Op::SetWce(on) => self.set_wce(run, *on),
            Op::WriteSame {
                lba,
                blocks,
                unmap,
                sg,
            } => self.write_same(run, lba.0, *blocks, *unmap, sg),
            Op::Unmap { lba, blocks } => self.unmap(run, lba.0, *blocks),
            Op::Barrier => run.ordered_next = true,
        }
    }

    /// The crash-consistency check: every block the program wrote, read
    /// through one low buffer in pieces within every limit.
    fn read_back(&mut self, run: &mut Run<'_>) {
        let bs = u64::from(self.target.block_size);
        let mut ranges: Vec<(u64, u64)> = run
            .written
            .iter()
            .map(|&(l, b)| (l, l + u64::from(b)))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let p = &self.target.preset;
        let max_bytes = u64::from(
            p.controller
                .max_bytes_read
                .min(p.splitter.max_bytes_read)
                .min(self.limits.max_transfer_bytes),
        );
        let seg_bytes = u64::from(p.controller.max_segment_bytes.max(self.target.block_size));
        let chunk = (max_bytes.min(seg_bytes) / bs).max(1);
        for (a, b) in merged {
            let mut lba = a;
            while lba < b {
                let n = (b - lba).min(chunk) as u32;
                let t = Transfer {
                    lba: Lba(lba),
                    blocks: n,
                    fua: false,
                    sg: vec![Segment::new(SCRATCH, n * self.target.block_size)],
                    extra: 0,
                };
                self.read(run, &t, 0);
                lba += u64::from(n);
            }
        }
    }
}
