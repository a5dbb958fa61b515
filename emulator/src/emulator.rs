//! The emulator: logical units behind a controller and its driver, fed
//! tasks whose data lives in host memory.

use crate::bugs::Bug;
use crate::command::Command;
use crate::config::EmulatorConfig;
use crate::coverage::{self, CacheState, ConstraintPath, Coverage, OpClass, SgShape};
use crate::error::{CheckCondition, CommandError, EmulatorError};
use crate::hba::{self, BounceBuffer, ControllerCommand, Geometry, Plan, Task};
use crate::memory::HostMemory;
use crate::rng::Rng;
use crate::runs::{DataOut, DataRuns, Part};
use crate::sbc::{CacheUse, Ctx, Disk, DiskConfig, Done, InitiatorId};
use crate::vpd::{self, BlockLimits, Identity};
use trace::cdb::Cdb;
use trace::{Direction, ScsiStatus, Segment, TaskAttr};

/// Where [`Emulator::execute`] stages byte buffers in host memory: high
/// enough (above 4 GiB) that a 32-bit controller must bounce them, as it
/// would a real high buffer.
pub const STAGING_WINDOW: u64 = 0x7f00_0000_0000;

/// How a task ended, as the driver reports it to the OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// SCSI status.
    pub status: ScsiStatus,
    /// Fixed-format sense data for CHECK CONDITION, else empty.
    pub sense: Vec<u8>,
    /// Bytes the driver reports moved.
    pub bytes_transferred: u32,
    /// Requested minus actual length (positive underflow, negative
    /// overflow), as the driver reports it.
    pub residual: i64,
    /// Commands the driver sent the controller for this task (0 when it
    /// answered itself, more than 1 after a split).
    pub controller_commands: u32,
    /// Bytes copied through bounce memory.
    pub bounced_bytes: u64,
    /// Catalogued bugs whose faulty step ran for this task.
    pub bugs_fired: crate::bugs::BugSet,
}

impl Outcome {
    fn good() -> Self {
        Outcome {
            status: ScsiStatus::GOOD,
            sense: Vec::new(),
            bytes_transferred: 0,
            residual: 0,
            controller_commands: 0,
            bounced_bytes: 0,
            bugs_fired: crate::bugs::BugSet::NONE,
        }
    }

    fn failed(err: CommandError, xfer_len: u32) -> Self {
        Outcome {
            status: err.status(),
            sense: err.sense(),
            residual: i64::from(xfer_len),
            ..Self::good()
        }
    }

    /// GOOD (or CONDITION MET).
    pub fn is_good(&self) -> bool {
        self.status == ScsiStatus::GOOD || self.status == ScsiStatus::CONDITION_MET
    }

    /// (sense key, ASC, ASCQ) for CHECK CONDITION.
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        (self.sense.len() >= 14).then(|| (self.sense[2] & 0x0f, self.sense[12], self.sense[13]))
    }

    /// A unit attention (power on / reset) the caller should retry after.
    pub fn is_unit_attention(&self) -> bool {
        self.status == ScsiStatus::CHECK_CONDITION
            && self.sense_code().is_some_and(|(k, _, _)| k == 0x6)
    }
}

/// Writes a buggy driver completed before sending them to the controller.
#[derive(Debug)]
struct Deferred {
    lun: u64,
    initiator: InitiatorId,
    commands: Vec<ControllerCommand>,
    bounce: BounceBuffer,
    /// `early-completion`: land after the next task; otherwise
    /// (`reorder-across-flush`) before it, unless it is a flush.
    after_next: bool,
}

/// An emulated SCSI target: LUNs with caches, the HBA driver and controller
/// in front of them, and the host memory their data moves through.
pub struct Emulator {
    cfg: EmulatorConfig,
    disks: Vec<Disk>,
    mem: HostMemory,
    rng: Rng,
    cov: Option<Box<Coverage>>,
    bounce: BounceBuffer,
    /// The current task's plan (kept between tasks for its memory).
    plan: Plan,
    scratch: Vec<u8>,
    data_in: Vec<u8>,
    /// A controller command's Data-Out, and a READ's Data-In, as runs.
    runs_out: DataRuns,
    runs_in: DataRuns,
    /// READ data lands in host memory as tags where the device holds tags
    /// ([`Emulator::set_tagged_reads`]).
    tagged_reads: bool,
    deferred: Vec<Deferred>,
    /// What the current task's controller commands did to the cache.
    cache_use: CacheUse,
    /// Where `execute` stages buffers.
    window: u64,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        std::mem::take(&mut self.runs_out).give_back();
        std::mem::take(&mut self.runs_in).give_back();
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.cfg)
            .field("memory", &self.mem)
            .finish()
    }
}

impl Emulator {
    /// Build an emulator; every LUN starts unwritten with an empty cache.
    pub fn new(cfg: EmulatorConfig) -> Result<Self, EmulatorError> {
        cfg.validate()?;
        let bs = u64::from(cfg.block_size);
        let ctl = &cfg.hba.controller;
        // MAXIMUM TRANSFER LENGTH: what one controller command can carry
        // (the driver splits larger tasks).
        let max_bytes =
            hba::controller_max_bytes(ctl, false).min(hba::controller_max_bytes(ctl, true));
        let max_transfer = (max_bytes / bs) as u32;
        let limits = BlockLimits {
            max_transfer,
            optimal_transfer: (0x10_0000 / bs) as u32,
            // Both halves of the Data-Out must fit one controller command.
            max_compare_and_write: (max_transfer / 2).min(255) as u8,
            max_unmap_lbas: if cfg.thin_provisioning {
                0xffff_ffff
            } else {
                0
            },
            max_unmap_descriptors: if cfg.thin_provisioning { 256 } else { 0 },
            max_write_same: cfg.capacity_blocks,
        };
        let disks = (0..u64::from(cfg.luns))
            .map(|lun| {
                let mut naa = [0u8; 16];
                // NAA 6 (IEEE Registered Extended), a locally administered
                // OUI, then the seed and LUN so every emulated unit differs.
                naa[0] = 0x60;
                naa[1..4].copy_from_slice(&[0x0a, 0xbc, 0xde]);
                naa[4..12].copy_from_slice(&cfg.seed.to_be_bytes());
                naa[12..16].copy_from_slice(&(lun as u32).to_be_bytes());
                Disk::new(DiskConfig {
                    block_size: cfg.block_size,
                    capacity_blocks: cfg.capacity_blocks,
                    thin: cfg.thin_provisioning,
                    cache: cfg.cache,
                    limits,
                    identity: Identity {
                        lun,
                        serial: format!("SCZ{:08x}L{:03}", cfg.seed as u32, lun),
                        naa,
                    },
                })
            })
            .collect();
        Ok(Emulator {
            rng: Rng::new(cfg.seed),
            cfg,
            disks,
            mem: HostMemory::new(),
            cov: None,
            bounce: BounceBuffer::default(),
            plan: Plan::default(),
            scratch: Vec::new(),
            data_in: Vec::new(),
            runs_out: DataRuns::reused(),
            runs_in: DataRuns::reused(),
            tagged_reads: false,
            deferred: Vec::new(),
            cache_use: CacheUse::default(),
            window: STAGING_WINDOW,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EmulatorConfig {
        &self.cfg
    }

    /// Whether READ data is placed in host memory as pieces of
    /// self-describing blocks where the device holds such blocks (off by
    /// default). Reading those bytes back renders them, so nothing an
    /// initiator can observe changes; what changes is the cost: an
    /// initiator that judges blocks by their tag ([`HostMemory::read_runs`])
    /// never has them generated, while one that reads every byte pays the
    /// generation the device's recent-block copy would otherwise save it.
    pub fn set_tagged_reads(&mut self, on: bool) {
        self.tagged_reads = on;
    }

    /// Host memory, where initiators place task buffers.
    pub fn memory(&mut self) -> &mut HostMemory {
        &mut self.mem
    }

    /// A LUN's device server, for inspection.
    pub fn disk(&self, lun: u64) -> Option<&Disk> {
        self.disks.get(usize::try_from(lun).ok()?)
    }

    /// What a READ of `blocks` blocks from `lba` of `lun` would return
    /// now, pushed onto `out` as runs, without issuing it ([`Disk::peek`]).
    /// `false` when the LUN or the blocks do not exist, or while the driver
    /// still holds writes back (a delayed DMA lands around the next
    /// command, so what a READ returns would depend on the READ).
    pub fn peek(&self, lun: u64, lba: u64, blocks: u32, out: &mut DataRuns) -> bool {
        self.deferred.is_empty() && self.disk(lun).is_some_and(|d| d.peek(lba, blocks, out))
    }

    /// Turn on the coverage map (64 KiB), cleared.
    pub fn enable_coverage(&mut self) {
        self.cov = Some(Box::default());
    }

    /// The coverage map, if enabled.
    pub fn coverage(&self) -> Option<&[u8]> {
        self.cov.as_deref().map(Coverage::map)
    }

    /// The coverage map, mutable (to clear between fuzz runs).
    pub fn coverage_mut(&mut self) -> Option<&mut Coverage> {
        self.cov.as_deref_mut()
    }

    /// Power failure: writes the driver still held are gone, each cache
    /// keeps a seeded subset of its dirty lines, and every LUN raises a unit
    /// attention (29/00). Returns the dirty blocks lost.
    pub fn power_loss(&mut self) -> u64 {
        self.deferred.clear();
        let mut lost = 0;
        for d in &mut self.disks {
            lost += d.power_loss(&mut self.rng);
        }
        if let Some(c) = &mut self.cov {
            c.mark(
                OpClass::PowerLoss,
                CacheState::Clean,
                SgShape::default(),
                ConstraintPath::Direct,
                u32::from(lost > 0),
            );
            c.event(1, coverage::count_bucket(lost as usize).into());
        }
        lost
    }

    /// Target reset: the driver first sends what it queued, caches are
    /// kept, reservations dropped, and every LUN raises a unit attention.
    pub fn reset(&mut self) {
        self.land(|_| true);
        for d in &mut self.disks {
            d.reset();
        }
        if let Some(c) = &mut self.cov {
            c.mark(
                OpClass::Reset,
                CacheState::Clean,
                SgShape::default(),
                ConstraintPath::Direct,
                0,
            );
        }
    }

    /// LOGICAL UNIT RESET of one LUN (a task management function): as
    /// [`Emulator::reset`], for that LUN only. Unknown LUNs are ignored.
    pub fn reset_lun(&mut self, lun: u64) {
        self.land(|d| d.lun == lun);
        if let Some(d) = usize::try_from(lun)
            .ok()
            .and_then(|l| self.disks.get_mut(l))
        {
            d.reset();
        }
    }

    /// An initiator's I_T nexus ended (logout, connection loss): its
    /// reservations are released.
    pub fn nexus_lost(&mut self, initiator: InitiatorId) {
        for d in &mut self.disks {
            d.nexus_lost(initiator);
        }
    }

    /// Move the host-memory window [`Emulator::execute`] stages buffers in
    /// (default [`STAGING_WINDOW`], above 4 GiB): below 4 GiB, a 32-bit
    /// controller reaches it without bouncing, and `dma-truncate-32` no
    /// longer applies to iSCSI traffic.
    pub fn set_staging_window(&mut self, addr: u64) {
        self.window = addr;
    }

    /// Number of LUNs.
    pub fn luns(&self) -> u64 {
        self.disks.len() as u64
    }

    /// Let background work finish: queued driver writes land and pending
    /// IMMED flushes complete.
    pub fn settle(&mut self) {
        self.land(|_| true);
        for d in &mut self.disks {
            d.settle();
        }
    }

    /// Run a task through driver, controller and device, moving data only
    /// through `task.sg` in host memory.
    pub fn submit(&mut self, task: &Task<'_>) -> Outcome {
        let parsed = Command::parse(task.cdb);
        let is_flush = matches!(parsed, Ok(Command::Cdb(Cdb::SyncCache { .. })));
        if !is_flush {
            // reorder-across-flush: queued writes reach the controller
            // before the next command, unless that command is a flush.
            self.land(|d| !d.after_next);
        }
        let queued_before = self.deferred.len();
        self.cache_use = CacheUse::default();
        let (out, op, path, shape, cache) = self.run(task, parsed);
        if is_flush {
            self.land(|d| !d.after_next);
        }
        // early-completion: the DMA of a write acknowledged earlier happens
        // now, after the task that followed it.
        let mut i = 0;
        let mut landed = 0;
        while i < self.deferred.len() && landed < queued_before {
            if self.deferred[i].after_next {
                let d = self.deferred.remove(i);
                self.run_deferred(d);
            } else {
                i += 1;
            }
            landed += 1;
        }
        for d in &mut self.disks {
            d.tick();
        }
        if let Some(c) = &mut self.cov {
            let op = if out.status == ScsiStatus::CHECK_CONDITION {
                OpClass::Failed
            } else {
                op
            };
            let mut fired = 0u32;
            for b in out.bugs_fired.iter() {
                fired |= 1 << (b as u32 % 14);
            }
            c.mark(op, cache, shape, path, fired);
            // What the command did to the cache (hit, forced write-back,
            // write-through) per command class: transitions the tuple alone
            // does not show.
            let u = self.cache_use;
            let bits =
                u32::from(u.hit) | u32::from(u.evicted) << 1 | u32::from(u.wrote_through) << 2;
            if bits != 0 {
                c.event(2, bits | (op as u32) << 3);
            }
        }
        out
    }

    /// Run a task whose data is a byte buffer (what an iSCSI target holds):
    /// the buffer is staged in host memory (at [`STAGING_WINDOW`] unless
    /// [`Emulator::set_staging_window`] moved it) and moves
    /// through the HBA like any other. `data_in` receives what the device
    /// returned (at most `xfer_len` bytes). Initiator 0.
    pub fn execute(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut Vec<u8>,
        xfer_len: u32,
    ) -> Outcome {
        self.execute_from(0, lun, cdb, data_out, data_in, xfer_len)
    }

    /// [`Emulator::execute`] on behalf of a given initiator (the I_T nexus
    /// that unit attentions and reservations are tracked for).
    pub fn execute_from(
        &mut self,
        initiator: InitiatorId,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut Vec<u8>,
        xfer_len: u32,
    ) -> Outcome {
        let dir = if !data_out.is_empty() {
            Direction::ToDevice
        } else if xfer_len == 0 {
            Direction::None
        } else {
            match Cdb::parse(cdb).map(|c| c.direction()) {
                Ok(Direction::ToDevice) => Direction::ToDevice,
                _ => Direction::FromDevice,
            }
        };
        if dir == Direction::ToDevice {
            let n = data_out.len().min(xfer_len as usize);
            self.mem.write(self.window, &data_out[..n]);
            if n < xfer_len as usize {
                // Whatever the initiator did not send reads as zeros.
                let rest = u64::from(xfer_len) - n as u64;
                self.mem.free(self.window.saturating_add(n as u64), rest);
            }
        }
        let sg = [Segment::new(self.window, xfer_len)];
        let sg: &[Segment] = if xfer_len == 0 { &[] } else { &sg };
        let task = Task {
            initiator,
            lun,
            cdb,
            dir,
            xfer_len,
            sg,
            attr: TaskAttr::Simple,
        };
        let out = self.submit(&task);
        data_in.clear();
        if dir == Direction::FromDevice && out.bytes_transferred > 0 {
            self.mem
                .read_append(self.window, out.bytes_transferred as usize, data_in);
        }
        out
    }

    fn cache_state(&self, lun: u64) -> CacheState {
        match self.disk(lun) {
            Some(d) if d.write_cache_enabled() => {
                if d.cache().is_full() {
                    CacheState::Full
                } else if d.cache().dirty_count() > 0 {
                    CacheState::Dirty
                } else {
                    CacheState::Clean
                }
            }
            _ => CacheState::WriteThrough,
        }
    }

    fn run(
        &mut self,
        task: &Task<'_>,
        parsed: Result<Command, CheckCondition>,
    ) -> (Outcome, OpClass, ConstraintPath, SgShape, CacheState) {
        let cache = self.cache_state(task.lun);
        let mut shape = SgShape {
            count_bucket: coverage::count_bucket(task.sg.len()),
            ..SgShape::default()
        };
        let op = match &parsed {
            Ok(Command::Cdb(c)) => match c {
                Cdb::Read(_) => OpClass::Read,
                Cdb::Write(rw) if rw.fua => OpClass::WriteFua,
                Cdb::Write(_) => OpClass::Write,
                Cdb::SyncCache { immed: true, .. } => OpClass::SyncCacheImmed,
                Cdb::SyncCache { .. } => OpClass::SyncCache,
                Cdb::WriteSame { .. } | Cdb::Unmap { .. } => OpClass::Provisioning,
                Cdb::ModeSense { .. } | Cdb::ModeSelect { .. } => OpClass::Mode,
                Cdb::CompareAndWrite { .. } | Cdb::Verify { .. } | Cdb::WriteAndVerify { .. } => {
                    OpClass::Compare
                }
                _ => OpClass::Other,
            },
            _ => OpClass::Other,
        };
        let cmd = match parsed {
            Ok(c) => c,
            Err(cc) => {
                // Sent to the device as-is; it rejects what it cannot decode.
                let err = self.lun_error(task.lun, task.cdb).unwrap_or(cc.into());
                return (
                    Outcome::failed(err, task.xfer_len),
                    op,
                    ConstraintPath::Direct,
                    shape,
                    cache,
                );
            }
        };
        let bugs = self.cfg.bugs;
        if bugs.has(Bug::SyncCacheNoop) && matches!(cmd, Command::Cdb(Cdb::SyncCache { .. })) {
            // The mistake: the driver answers SYNCHRONIZE CACHE itself.
            let mut out = Outcome::good();
            out.bugs_fired = out.bugs_fired.with(Bug::SyncCacheNoop);
            return (out, op, ConstraintPath::Direct, shape, cache);
        }
        let geo = Geometry {
            block_size: self.cfg.block_size,
        };
        let cmd_for_check = cmd.clone();
        let mut plan = std::mem::take(&mut self.plan);
        let planned = hba::plan(
            task,
            cmd,
            &self.cfg.hba,
            bugs,
            geo,
            &self.mem,
            &mut self.bounce,
            &mut plan,
        );
        let (out, path) = match planned {
            Ok(()) => self.run_plan(task, &mut plan, &cmd_for_check, &mut shape),
            Err(cc) => (
                Outcome::failed(cc.into(), task.xfer_len),
                ConstraintPath::Rejected,
            ),
        };
        self.plan = plan;
        (out, op, path, shape, cache)
    }

    /// Runs a planned task's controller commands (or queues them, for the
    /// bugs that complete a write before its DMA); `cmd` is the task's own
    /// command, before the driver split it.
    fn run_plan(
        &mut self,
        task: &Task<'_>,
        plan: &mut Plan,
        cmd: &Command,
        shape: &mut SgShape,
    ) -> (Outcome, ConstraintPath) {
        let bugs = self.cfg.bugs;
        let task_spdtl = match cmd {
            Command::Cdb(
                Cdb::Read(rw)
                | Cdb::Write(rw)
                | Cdb::Verify { rw, bytchk: 1 }
                | Cdb::WriteAndVerify { rw, .. },
            ) => Some(u64::from(rw.blocks) * u64::from(self.cfg.block_size)),
            _ => None,
        };
        let is_write = matches!(cmd, Command::Cdb(Cdb::Write(_)));
        if plan.commands.len() > 1 {
            if let (Some(d), Some(rw)) = (self.disk(task.lun), hba::rw_of(cmd)) {
                if let Err(e) = d.check_split_range(rw.lba, rw.blocks) {
                    return (Outcome::failed(e, task.xfer_len), ConstraintPath::Rejected);
                }
            }
        }
        shape.above_limit = plan.above_limit;
        shape.misaligned = plan.misaligned;
        let path = match (plan.bounced > 0, plan.split) {
            (false, false) => ConstraintPath::Direct,
            (true, false) => ConstraintPath::Bounced,
            (false, true) => ConstraintPath::Split,
            (true, true) => ConstraintPath::BouncedSplit,
        };
        let mut out = Outcome::good();
        out.bounced_bytes = plan.bounced;
        out.bugs_fired = plan.fired;
        out.controller_commands = plan.commands.len() as u32;

        let delay = if bugs.has(Bug::EarlyCompletion) {
            Some(true)
        } else if bugs.has(Bug::ReorderAcrossFlush) {
            Some(false)
        } else {
            None
        };
        if let (Some(after_next), true) = (delay, is_write) {
            // The mistake: complete the write to the OS now, program the
            // controller later.
            let bug = if after_next {
                Bug::EarlyCompletion
            } else {
                Bug::ReorderAcrossFlush
            };
            out.bugs_fired = out.bugs_fired.with(bug);
            let spdtl = task_spdtl.unwrap_or(0);
            self.finish(&mut out, task.xfer_len, spdtl);
            self.deferred.push(Deferred {
                lun: task.lun,
                initiator: task.initiator,
                commands: std::mem::take(&mut plan.commands),
                bounce: std::mem::take(&mut self.bounce),
                after_next,
            });
            return (out, path);
        }

        let mut spdtl_sum = 0u64;
        let mut result: Result<(), CommandError> = Ok(());
        let mut bounce = std::mem::take(&mut self.bounce);
        let mut last_status = ScsiStatus::GOOD;
        for c in &plan.commands {
            match self.controller(task.lun, task.initiator, task.dir, c, &mut bounce) {
                Ok(done) => {
                    spdtl_sum += u64::from(done.spdtl);
                    self.cache_use.hit |= done.cache.hit;
                    self.cache_use.evicted |= done.cache.evicted;
                    self.cache_use.wrote_through |= done.cache.wrote_through;
                    last_status = done.status;
                }
                Err(e) => {
                    result = Err(self.rebase_miscompare(e, cmd, &c.cmd));
                    break;
                }
            }
        }
        if task.dir == Direction::FromDevice && plan.bounced > 0 {
            hba::copy_back(plan, &mut self.mem, &mut bounce);
        }
        self.bounce = bounce;
        match result {
            Err(e) => {
                let f = Outcome::failed(e, task.xfer_len);
                out.status = f.status;
                out.sense = f.sense;
                out.residual = f.residual;
            }
            Ok(()) => {
                out.status = last_status;
                let spdtl = if plan.claims_full || plan.split {
                    task_spdtl.unwrap_or(spdtl_sum)
                } else {
                    spdtl_sum
                };
                self.finish(&mut out, task.xfer_len, spdtl);
            }
        }
        (out, path)
    }

    /// A miscompare in one piece of a split VERIFY reports its offset from
    /// the piece's start; the driver reports it from the task's.
    fn rebase_miscompare(&self, e: CommandError, task: &Command, piece: &Command) -> CommandError {
        match (e, hba::rw_of(task), hba::rw_of(piece)) {
            (CommandError::Check(mut cc), Some(t), Some(p))
                if cc.key == crate::error::SenseKey::Miscompare && p.lba > t.lba =>
            {
                let shift = (p.lba - t.lba).saturating_mul(u64::from(self.cfg.block_size));
                cc.info = cc.info.map(|o| o.saturating_add(shift));
                CommandError::Check(cc)
            }
            (e, _, _) => e,
        }
    }

    /// Transfer length and residual for a task that completed, as SAM-5
    /// 5.4.3 defines them; `bad-residual` reports every short transfer full.
    fn finish(&self, out: &mut Outcome, xfer_len: u32, spdtl: u64) {
        out.bytes_transferred = u64::from(xfer_len).min(spdtl) as u32;
        out.residual = i64::from(xfer_len) - spdtl.min(i64::MAX as u64) as i64;
        if out.residual != 0 && self.cfg.bugs.has(Bug::BadResidual) {
            // The mistake: the driver reports the requested length as moved.
            out.residual = 0;
            out.bytes_transferred = xfer_len;
            out.bugs_fired = out.bugs_fired.with(Bug::BadResidual);
        }
    }

    /// The controller runs one command: checks its limits, moves Data-Out
    /// from the entries, lets the device execute, moves Data-In back.
    fn controller(
        &mut self,
        lun: u64,
        initiator: InitiatorId,
        dir: Direction,
        c: &ControllerCommand,
        bounce: &mut BounceBuffer,
    ) -> Result<Done, CommandError> {
        let write = dir == Direction::ToDevice;
        hba::check_controller(c, &self.cfg.hba.controller, write)?;
        let mut rendered = std::mem::take(&mut self.scratch);
        let mut runs_out = std::mem::take(&mut self.runs_out);
        let mut runs_in = std::mem::take(&mut self.runs_in);
        let mut data_in = std::mem::take(&mut self.data_in);
        runs_out.clear();
        runs_in.clear();
        // One entry inside one host page of bytes (a 4 KiB write, or a few
        // 512-byte blocks) is handed to the device where it lies, uncopied.
        let direct = match c.entries.as_slice() {
            [hba::Entry {
                mem: hba::Mem::Host(a),
                len,
            }] if write => self.mem.slice(*a, *len as usize),
            _ => None,
        };
        if write && direct.is_none() {
            hba::gather(&c.entries, &self.mem, bounce, &mut runs_out);
        }
        let data_out = match (direct, runs_out.single(0, runs_out.len())) {
            (Some(d), _) => DataOut::Bytes(d),
            (None, Some(Part::Bytes(b))) => DataOut::Bytes(b),
            (None, _) if runs_out.is_empty() => DataOut::Bytes(&[]),
            (None, _) if is_block_write(&c.cmd) => DataOut::Runs(&runs_out),
            (None, _) => {
                rendered.clear();
                runs_out.render_append(0, runs_out.len(), &mut rendered);
                DataOut::Bytes(&rendered)
            }
        };
        let tagged_in = !write && self.tagged_reads && matches!(c.cmd, Command::Cdb(Cdb::Read(_)));
        let mut server = Server {
            disks: &mut self.disks,
            rng: &mut self.rng,
            bugs: self.cfg.bugs,
        };
        let r = server.device(
            lun,
            initiator,
            &c.cmd,
            data_out,
            &mut data_in,
            tagged_in.then_some(&mut runs_in),
        );
        if r.is_ok() && !write {
            if runs_in.is_empty() {
                // Bytes from the device: scattered as one run, uncopied.
                runs_in.adopt_bytes(data_in);
                hba::scatter(&c.entries, &runs_in, &mut self.mem, bounce);
                data_in = runs_in.take_bytes();
            } else {
                hba::scatter(&c.entries, &runs_in, &mut self.mem, bounce);
            }
        }
        self.scratch = rendered;
        self.runs_out = runs_out;
        self.runs_in = runs_in;
        self.data_in = data_in;
        r
    }

    fn lun_error(&self, lun: u64, cdb: &[u8]) -> Option<CommandError> {
        let exists = usize::try_from(lun).is_ok_and(|l| l < self.disks.len());
        let lun_free = matches!(cdb.first(), Some(0x12 | 0xa0 | 0x03));
        (!exists && !lun_free).then(|| CheckCondition::lun_not_supported().into())
    }

    /// Send queued writes matching `which` to the controller, in order.
    fn land(&mut self, which: impl Fn(&Deferred) -> bool) {
        if self.deferred.is_empty() {
            return;
        }
        let all = std::mem::take(&mut self.deferred);
        for d in all {
            if which(&d) {
                self.run_deferred(d);
            } else {
                self.deferred.push(d);
            }
        }
    }

    fn run_deferred(&mut self, mut d: Deferred) {
        for c in &d.commands {
            // Already reported GOOD: an error here is lost, as it was in
            // the driver that made this mistake.
            let _ = self.controller(d.lun, d.initiator, Direction::ToDevice, c, &mut d.bounce);
        }
    }
}

/// WRITE and WRITE AND VERIFY: the commands whose Data-Out the device
/// takes as runs.
fn is_block_write(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Cdb(Cdb::Write(_) | Cdb::WriteAndVerify { .. })
    )
}

/// The target's device side, borrowed apart from host memory so a
/// controller command's Data-Out can be read in place while a LUN executes.
struct Server<'a> {
    disks: &'a mut [Disk],
    rng: &'a mut Rng,
    bugs: crate::bugs::BugSet,
}

impl Server<'_> {
    /// LUN addressing (SAM-5 4.7, SPC-4 6.33): the target answers REPORT
    /// LUNS itself, and commands to a LUN that does not exist.
    fn device(
        &mut self,
        lun: u64,
        initiator: InitiatorId,
        cmd: &Command,
        data_out: DataOut<'_>,
        data_in: &mut Vec<u8>,
        data_in_runs: Option<&mut DataRuns>,
    ) -> Result<Done, CommandError> {
        data_in.clear();
        if let Command::Cdb(Cdb::ReportLuns {
            select_report,
            alloc_len,
        }) = cmd
        {
            // SPC-4 6.33: ALLOCATION LENGTH under 16 is INVALID FIELD IN CDB.
            if *alloc_len < 16 {
                return Err(CheckCondition::invalid_field_in_cdb(6, None).into());
            }
            // SELECT REPORT 00h, 01h (well-known only: none here) and 02h.
            if *select_report > 2 {
                return Err(CheckCondition::invalid_field_in_cdb(2, None).into());
            }
            let luns: Vec<u64> = if *select_report == 1 {
                Vec::new()
            } else {
                (0..self.disks.len() as u64).collect()
            };
            data_in.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
            data_in.extend_from_slice(&[0; 4]);
            for l in luns {
                // Peripheral device addressing for LUNs below 256.
                data_in.extend_from_slice(&[0, l as u8, 0, 0, 0, 0, 0, 0]);
            }
            data_in.truncate(*alloc_len as usize);
            return Ok(Done {
                status: ScsiStatus::GOOD,
                spdtl: data_in.len() as u32,
                cache: Default::default(),
            });
        }
        let Some(disk) = usize::try_from(lun)
            .ok()
            .and_then(|l| self.disks.get_mut(l))
        else {
            if let Command::Cdb(Cdb::Inquiry {
                evpd: false,
                alloc_len,
                ..
            }) = cmd
            {
                data_in.extend_from_slice(&vpd::standard(false));
                data_in.truncate(usize::from(*alloc_len));
                return Ok(Done {
                    status: ScsiStatus::GOOD,
                    spdtl: data_in.len() as u32,
                    cache: Default::default(),
                });
            }
            return Err(CheckCondition::lun_not_supported().into());
        };
        let mut ctx = Ctx {
            rng: self.rng,
            stale_cache_read: self.bugs.has(Bug::StaleCacheRead),
            initiator,
            data_in_runs,
        };
        disk.execute(&mut ctx, cmd, data_out, data_in)
    }
}
