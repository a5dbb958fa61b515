//! The device server of one logical unit: an SBC-3 direct-access block
//! device on a [`Medium`] behind a [`Cache`].
//!
//! [`Disk::execute`] takes a decoded [`Command`] and the Data-Out bytes the
//! controller moved, and produces Data-In bytes or a [`CommandError`]. It
//! never sees raw CDB bytes or host memory: decoding is [`Command::parse`]'s
//! job and DMA is the HBA model's.

use crate::cache::{Cache, CacheConfig};
use crate::command::Command;
use crate::content::{BlockData, Detected};
use crate::error::{CheckCondition, CommandError};
use crate::medium::Medium;
use crate::mode::{ModePages, PageControl};
use crate::pr::{Access, PersistentReservations};
use crate::recent::RecentBlocks;
use crate::rng::Rng;
use crate::runs::{DataOut, DataRuns, Part};
use crate::vpd::{self, BlockLimits, Identity};
use trace::cdb::{Cdb, CdbSize, Rw};
use trace::hash::FastMap;
use trace::ScsiStatus;

/// An initiator's identity, for unit attentions and reservations (the I_T
/// part of the I_T_L nexus). iSCSI targets derive it from the initiator
/// name and ISID; in-process users pass 0.
pub type InitiatorId = u64;

/// Commands an IMMED SYNCHRONIZE CACHE stays pending for before the
/// background flush completes (unless [`Disk::settle`] runs first).
pub const IMMED_FLUSH_DELAY: u32 = 8;

/// Geometry and features of one logical unit.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Capacity in logical blocks.
    pub capacity_blocks: u64,
    /// Thin provisioning: UNMAP, WRITE SAME with UNMAP, GET LBA STATUS,
    /// VPD B2h, LBPME in READ CAPACITY(16).
    pub thin: bool,
    /// Cache geometry and policy.
    pub cache: CacheConfig,
    /// What VPD B0h reports; MAXIMUM TRANSFER LENGTH is also enforced.
    pub limits: BlockLimits,
    /// INQUIRY identity.
    pub identity: Identity,
}

/// How a command that did not fail ended, for the HBA model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// GOOD or CONDITION MET.
    pub status: ScsiStatus,
    /// The data length the command's own fields call for (SPC-4's SPDTL):
    /// Data-In produced, or Data-Out the command expected.
    pub spdtl: u32,
    /// How the cache served the command.
    pub cache: CacheUse,
}

/// What a command did to or with the cache, for coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheUse {
    /// Some block was served from a cache line.
    pub hit: bool,
    /// A new line forced a write-back (the cache was full).
    pub evicted: bool,
    /// Lines were written to the medium by the command (flush, FUA).
    pub wrote_through: bool,
}

#[derive(Debug, Clone, Copy)]
struct PendingFlush {
    lba: u64,
    end: u64,
    countdown: u32,
}

/// One logical unit.
#[derive(Debug, Clone)]
pub struct Disk {
    cfg: DiskConfig,
    medium: Medium,
    cache: Cache,
    mode: ModePages,
    pending_flush: Option<PendingFlush>,
    /// Bumped by every power loss and reset; an initiator whose last seen
    /// value is lower has a unit attention pending.
    ua_epoch: u64,
    ua_seen: FastMap<InitiatorId, u64>,
    reservation: Option<InitiatorId>,
    pr: PersistentReservations,
    /// Unit attentions raised for one nexus (reservations preempted, ...).
    pending_ua: FastMap<InitiatorId, Vec<CheckCondition>>,
    stopped: bool,
    scratch: Vec<u8>,
    /// A block rendered from runs, to classify.
    block: Vec<u8>,
    /// Self-describing blocks just written, for reads that follow them.
    recent: RecentBlocks,
}

/// Per-call context the executor needs from the emulator.
pub struct Ctx<'a> {
    /// The emulator's seeded randomness.
    pub rng: &'a mut Rng,
    /// `stale-cache-read` is on.
    pub stale_cache_read: bool,
    /// The initiator sending the command.
    pub initiator: InitiatorId,
    /// Where a READ's data goes as runs (zeros, tags, bytes) instead of
    /// rendered bytes in `data_in`, when the caller can place runs.
    pub data_in_runs: Option<&'a mut DataRuns>,
}

/// Where [`Disk::read_blocks`] puts what it reads.
enum ReadInto<'a> {
    /// Rendered bytes.
    Bytes(&'a mut Vec<u8>),
    /// Runs: zeros, tags and raw bytes as stored.
    Runs(&'a mut DataRuns),
}

/// Classify a block that arrived as bytes, remembering a self-describing
/// one so reading it back is a copy.
fn classify<'b>(recent: &mut RecentBlocks, b: &'b [u8]) -> Detected<'b> {
    let d = BlockData::classify(b);
    if let Detected::Pattern(tag) = d {
        recent.remember(tag, b);
    }
    d
}

fn bad_cdb(byte: u16) -> CommandError {
    CheckCondition::invalid_field_in_cdb(byte, None).into()
}

/// ALLOCATION LENGTH (SPC-4 4.2.5.6): return at most `alloc` bytes.
fn truncate(data: &mut Vec<u8>, alloc: usize) {
    data.truncate(alloc);
}

impl Disk {
    /// A fresh, unwritten unit.
    pub fn new(cfg: DiskConfig) -> Self {
        let cache = Cache::new(cfg.cache);
        Disk {
            medium: Medium::new(cfg.block_size),
            mode: ModePages::new(cfg.cache.wce_default),
            cache,
            cfg,
            pending_flush: None,
            ua_epoch: 0,
            ua_seen: FastMap::default(),
            reservation: None,
            pr: PersistentReservations::default(),
            pending_ua: FastMap::default(),
            stopped: false,
            scratch: Vec::new(),
            block: Vec::new(),
            recent: RecentBlocks::default(),
        }
    }

    /// The unit's configuration.
    pub fn config(&self) -> &DiskConfig {
        &self.cfg
    }

    /// Current WCE.
    pub fn write_cache_enabled(&self) -> bool {
        self.mode.current.wce
    }

    /// The cache, for inspection.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The medium, for inspection.
    pub fn medium(&self) -> &Medium {
        &self.medium
    }

    /// What a READ of `blocks` blocks from `lba` would return now (with
    /// RCD as the caching page has it), pushed onto `out` as runs, without
    /// the command: no cache fill or touch, no DMA, no coverage. `false`
    /// (and nothing pushed) when the blocks are not all on the medium, or
    /// the READ's own cache fills could change what it returns
    /// ([`Cache::peek_run`]).
    ///
    /// A fuzzer checking what every block holds after a power loss needs
    /// the truth, not another trip through the path under test: moving it
    /// through READ, the HBA model and host memory cost as much as the
    /// program being judged.
    pub fn peek(&self, lba: u64, blocks: u32, out: &mut DataRuns) -> bool {
        if self.check_range(lba, u64::from(blocks)).is_err() {
            return false;
        }
        let bs = self.bs();
        self.cache.peek_run(
            lba,
            u64::from(blocks),
            self.mode.current.rcd,
            &self.medium,
            |first, n| out.push_blocks(first, n, bs),
        )
    }

    /// Complete any background work (a pending IMMED flush) now.
    pub fn settle(&mut self) {
        if let Some(p) = self.pending_flush.take() {
            self.cache.flush(p.lba, p.end, &mut self.medium);
        }
    }

    /// Time passes by one command: background flushes progress.
    pub fn tick(&mut self) {
        if let Some(p) = &mut self.pending_flush {
            p.countdown = p.countdown.saturating_sub(1);
            if p.countdown == 0 {
                self.settle();
            }
        }
    }

    /// Power failure: a seeded subset of dirty lines reaches the medium, the
    /// rest is lost; mode pages revert to their saved values; reservations
    /// are released; every initiator gets a unit attention. Returns the
    /// number of dirty blocks lost.
    pub fn power_loss(&mut self, rng: &mut Rng) -> u64 {
        self.pending_flush = None;
        let lost = self.cache.power_loss(&mut self.medium, rng);
        self.mode.power_on();
        self.pr.power_loss();
        self.after_reset();
        lost
    }

    /// Logical unit reset (SAM-5 6.3): the cache and mode pages survive,
    /// reservations do not, and a unit attention is raised.
    pub fn reset(&mut self) {
        self.after_reset();
    }

    /// The I_T nexus of `initiator` is gone (session logout or connection
    /// loss): SPC-2 7.21.1 releases its reservation.
    pub fn nexus_lost(&mut self, initiator: InitiatorId) {
        if self.reservation == Some(initiator) {
            self.reservation = None;
        }
    }

    fn after_reset(&mut self) {
        self.reservation = None;
        self.pending_ua.clear();
        self.stopped = false;
        self.ua_epoch += 1;
    }

    fn capacity(&self) -> u64 {
        self.cfg.capacity_blocks
    }

    fn bs(&self) -> usize {
        self.cfg.block_size as usize
    }

    /// SBC-3 4.5: every block of `[lba, lba + blocks)` must exist.
    fn check_range(&self, lba: u64, blocks: u64) -> Result<(), CommandError> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.capacity() => Ok(()),
            _ => Err(CheckCondition::lba_out_of_range().into()),
        }
    }

    /// SYNCHRONIZE CACHE and PRE-FETCH, whose block count zero means "from
    /// `lba` through the last block" (SBC-4 5.26, 5.11): the range starts
    /// with the block at `lba`, so that block must exist. An LBA one past
    /// the last is out of range even with a count of zero (libiscsi's
    /// PREFETCH 0blocks test asks the same of PRE-FETCH).
    fn check_through_end(&self, lba: u64, blocks: u32) -> Result<(), CommandError> {
        self.check_range(lba, u64::from(blocks.max(1)))
    }

    /// What a disk driver checks before splitting a READ or WRITE into
    /// several controller commands (it knows the capacity from READ
    /// CAPACITY): the whole range exists. Without this a command past the
    /// last LBA would be partly executed before its last piece failed.
    pub fn check_split_range(&self, lba: u64, blocks: u32) -> Result<(), CommandError> {
        self.check_range(lba, u64::from(blocks))
    }

    /// The checks every READ/WRITE-family command shares. The range is
    /// checked before the transfer length, so a command past the last LBA
    /// is LBA OUT OF RANGE whatever its length.
    fn check_rw(&self, rw: &Rw) -> Result<(), CommandError> {
        self.check_rw_data(rw, true)
    }

    /// [`Disk::check_rw`], with the MAXIMUM TRANSFER LENGTH check only when
    /// the command moves data (VERIFY with BYTCHK=0 moves none).
    fn check_rw_data(&self, rw: &Rw, moves_data: bool) -> Result<(), CommandError> {
        // SBC-3 5.8: without protection information, a non-zero
        // RDPROTECT/WRPROTECT is INVALID FIELD IN CDB.
        if rw.protect != 0 {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(7)).into());
        }
        self.check_range(rw.lba, u64::from(rw.blocks))?;
        // SBC-3 6.5.3: a transfer over MAXIMUM TRANSFER LENGTH is INVALID
        // FIELD IN CDB.
        let max = self.cfg.limits.max_transfer;
        if moves_data && max != 0 && rw.blocks > max {
            let byte = match rw.size {
                CdbSize::Six => 4,
                CdbSize::Ten => 7,
                CdbSize::Twelve => 6,
                CdbSize::Sixteen => 10,
            };
            return Err(bad_cdb(byte));
        }
        Ok(())
    }

    /// How a command touches the unit, for persistent reservation conflicts.
    fn access(cmd: &Command) -> Access {
        match cmd {
            Command::Cdb(c) => match c {
                Cdb::Inquiry { .. }
                | Cdb::ReportLuns { .. }
                | Cdb::RequestSense { .. }
                | Cdb::TestUnitReady
                | Cdb::ReadCapacity10
                | Cdb::ReadCapacity16 { .. } => Access::Always,
                Cdb::Read(_)
                | Cdb::Verify { .. }
                | Cdb::PreFetch { .. }
                | Cdb::GetLbaStatus { .. }
                | Cdb::ModeSense { .. } => Access::Read,
                _ => Access::Write,
            },
            Command::ReportSupportedOpcodes { .. }
            | Command::PersistentReserveIn { .. }
            | Command::PersistentReserveOut { .. }
            | Command::PreventAllow { .. } => Access::Always,
            Command::Reserve | Command::Release => Access::Write,
        }
    }

    /// Does this command touch the medium (and so conflict with reservations
    /// and a stopped unit)? SPC-2 table 35 lists what a reservation allows.
    fn allowed_when_reserved(cmd: &Command) -> bool {
        matches!(
            cmd,
            Command::Cdb(Cdb::Inquiry { .. } | Cdb::RequestSense { .. } | Cdb::ReportLuns { .. })
                | Command::Release
                | Command::ReportSupportedOpcodes { .. }
                | Command::PersistentReserveIn { .. }
        )
    }

    /// Run one command.
    pub fn execute(
        &mut self,
        ctx: &mut Ctx<'_>,
        cmd: &Command,
        data_out: DataOut<'_>,
        data_in: &mut Vec<u8>,
    ) -> Result<Done, CommandError> {
        data_in.clear();
        // Only WRITE and WRITE AND VERIFY take their Data-Out as runs; any
        // other command gets it rendered.
        let rendered;
        let (data_out, runs): (&[u8], Option<&DataRuns>) = match data_out {
            DataOut::Bytes(b) => (b, None),
            DataOut::Runs(r)
                if matches!(
                    cmd,
                    Command::Cdb(Cdb::Write(_) | Cdb::WriteAndVerify { .. })
                ) =>
            {
                (&[], Some(r))
            }
            DataOut::Runs(r) => {
                rendered = r.to_bytes();
                (&rendered, None)
            }
        };
        // SPC-4 5.14: a pending unit attention is reported once per I_T
        // nexus, on any command but INQUIRY, REPORT LUNS and REQUEST SENSE.
        let reports_ua = !matches!(
            cmd,
            Command::Cdb(Cdb::Inquiry { .. } | Cdb::ReportLuns { .. } | Cdb::RequestSense { .. })
        );
        let seen = self.ua_seen.entry(ctx.initiator).or_insert(0);
        if reports_ua && *seen < self.ua_epoch {
            *seen = self.ua_epoch;
            return Err(CheckCondition::power_on_reset().into());
        }
        if reports_ua {
            if let Some(q) = self.pending_ua.get_mut(&ctx.initiator) {
                if !q.is_empty() {
                    return Err(q.remove(0).into());
                }
            }
        }
        if let Some(holder) = self.reservation {
            if holder != ctx.initiator && !Self::allowed_when_reserved(cmd) {
                return Err(CommandError::ReservationConflict);
            }
        }
        // SPC-4 5.9.1: an SPC-2 RESERVE or RELEASE while a persistent
        // reservation exists conflicts; otherwise table 69 decides.
        if self.pr.is_reserved() && matches!(cmd, Command::Reserve | Command::Release) {
            return Err(CommandError::ReservationConflict);
        }
        self.pr.check(ctx.initiator, Self::access(cmd))?;
        let mut done = Done {
            status: ScsiStatus::GOOD,
            spdtl: 0,
            cache: CacheUse::default(),
        };
        match cmd {
            Command::Cdb(cdb) => self.execute_cdb(ctx, cdb, data_out, runs, data_in, &mut done)?,
            Command::Reserve => {
                // SPC-2 7.21.2: the holder may reserve again; anyone else
                // conflicts (checked above, as RESERVE is not allowed).
                self.reservation = Some(ctx.initiator);
            }
            Command::Release => {
                // SPC-2 7.16.2: a release by a non-holder is GOOD and does nothing.
                if self.reservation == Some(ctx.initiator) {
                    self.reservation = None;
                }
            }
            Command::PreventAllow { prevent } => {
                // A fixed disk has no medium to lock; PREVENT 10b/11b are obsolete.
                if *prevent > 1 {
                    return Err(CheckCondition::invalid_field_in_cdb(4, Some(0)).into());
                }
            }
            Command::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            } => {
                crate::opcodes::report(
                    *rctd,
                    *options,
                    *opcode,
                    *service_action,
                    self.cfg.thin,
                    data_in,
                )?;
                truncate(data_in, *alloc_len as usize);
            }
            Command::PersistentReserveIn {
                service_action,
                alloc_len,
            } => {
                self.pr.read(*service_action, data_in)?;
                truncate(data_in, usize::from(*alloc_len));
            }
            Command::PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                param_len,
            } => {
                done.spdtl = *param_len;
                // SPC-4 6.16.3: without SPEC_I_PT the list is 24 bytes.
                if *param_len != 24 || data_out.len() < 24 {
                    return Err(CheckCondition::parameter_list_length().into());
                }
                let ua =
                    self.pr
                        .write(ctx.initiator, *service_action, *scope, *pr_type, data_out)?;
                for (who, cc) in ua {
                    self.pending_ua.entry(who).or_default().push(cc);
                }
            }
        }
        if done.spdtl == 0 {
            done.spdtl = data_in.len() as u32;
        }
        Ok(done)
    }

    fn not_ready(&self) -> Result<(), CommandError> {
        if self.stopped {
            return Err(CheckCondition::not_ready_stopped().into());
        }
        Ok(())
    }

    fn execute_cdb(
        &mut self,
        ctx: &mut Ctx<'_>,
        cdb: &Cdb,
        data_out: &[u8],
        runs: Option<&DataRuns>,
        data_in: &mut Vec<u8>,
        done: &mut Done,
    ) -> Result<(), CommandError> {
        let bs = self.bs();
        match cdb {
            Cdb::TestUnitReady => self.not_ready()?,
            Cdb::RequestSense { desc, alloc_len } => {
                // Nothing pending (unit attentions are reported on the
                // command itself): NO SENSE, in the format asked for.
                if *desc {
                    data_in.extend_from_slice(&[0x72, 0, 0, 0, 0, 0, 0, 0]);
                } else {
                    data_in.extend_from_slice(
                        &CheckCondition::new(crate::error::SenseKey::NoSense, 0, 0).to_fixed(),
                    );
                }
                truncate(data_in, usize::from(*alloc_len));
            }
            Cdb::Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => {
                if !*evpd {
                    // SPC-4 6.4.1: PAGE CODE must be zero without EVPD.
                    if *page_code != 0 {
                        return Err(bad_cdb(2));
                    }
                    data_in.extend_from_slice(&vpd::standard(true));
                } else {
                    match vpd::vpd(
                        *page_code,
                        &self.cfg.identity,
                        &self.cfg.limits,
                        self.cfg.thin,
                    ) {
                        Some(p) => data_in.extend_from_slice(&p),
                        None => return Err(bad_cdb(2)),
                    }
                }
                truncate(data_in, usize::from(*alloc_len));
            }
            Cdb::ModeSense {
                size,
                dbd,
                llbaa,
                pc,
                page_code,
                subpage,
                alloc_len,
            } => {
                self.mode_sense(*size, *dbd, *llbaa, *pc, *page_code, *subpage, data_in)?;
                truncate(data_in, usize::from(*alloc_len));
            }
            Cdb::ModeSelect {
                size,
                pf,
                sp,
                param_len,
            } => {
                done.spdtl = u32::from(*param_len);
                let before = self.mode.current;
                self.mode_select(*size, *pf, *sp, *param_len, data_out)?;
                if self.mode.current != before {
                    // SPC-4 6.9: every other I_T nexus gets MODE
                    // PARAMETERS CHANGED (those this unit has seen).
                    let others: Vec<InitiatorId> = self
                        .ua_seen
                        .keys()
                        .copied()
                        .filter(|w| *w != ctx.initiator)
                        .collect();
                    for w in others {
                        self.pending_ua
                            .entry(w)
                            .or_default()
                            .push(CheckCondition::mode_parameters_changed());
                    }
                }
            }
            Cdb::StartStopUnit {
                power_condition,
                no_flush,
                loej,
                start,
                ..
            } => {
                // SBC-3 5.20: a POWER CONDITION other than START_VALID (0)
                // changes the power condition only; START and LOEJ are ignored.
                // LOEJ has nothing to eject on a fixed disk (RMB=0): the
                // unit just stops. Stopping without NO_FLUSH writes the
                // cache back first.
                let _ = loej;
                if *power_condition == 0 {
                    if !*start && !*no_flush {
                        self.cache.flush(0, u64::MAX, &mut self.medium);
                    }
                    self.stopped = !*start;
                }
            }
            Cdb::ReadCapacity10 => {
                self.not_ready()?;
                // SBC-3 5.15: RETURNED LBA FFFFFFFFh when the last LBA does not fit.
                let last = self.capacity() - 1;
                let last32 = u32::try_from(last).unwrap_or(u32::MAX);
                data_in.extend_from_slice(&last32.to_be_bytes());
                data_in.extend_from_slice(&self.cfg.block_size.to_be_bytes());
            }
            Cdb::ReadCapacity16 { alloc_len } => {
                self.not_ready()?;
                let mut d = vec![0u8; 32];
                d[0..8].copy_from_slice(&(self.capacity() - 1).to_be_bytes());
                d[8..12].copy_from_slice(&self.cfg.block_size.to_be_bytes());
                if self.cfg.thin {
                    d[14] = 0x80 | 0x40; // LBPME, LBPRZ
                }
                data_in.extend_from_slice(&d);
                truncate(data_in, *alloc_len as usize);
            }
            Cdb::Read(rw) => {
                self.not_ready()?;
                self.check_rw(rw)?;
                if rw.fua {
                    // SBC-3 5.8: with FUA the data comes from the medium, so
                    // a newer cached version is written to it first.
                    let end = rw.lba + u64::from(rw.blocks);
                    if self.cache.flush(rw.lba, end, &mut self.medium) > 0 {
                        done.cache.wrote_through = true;
                    }
                }
                match ctx.data_in_runs.take() {
                    Some(runs) => {
                        runs.clear();
                        self.read_blocks(ctx, rw.lba, rw.blocks, ReadInto::Runs(runs), done);
                        done.spdtl = runs.len() as u32;
                    }
                    None => {
                        self.read_blocks(ctx, rw.lba, rw.blocks, ReadInto::Bytes(data_in), done)
                    }
                }
            }
            Cdb::Write(rw) => {
                self.not_ready()?;
                self.check_rw(rw)?;
                done.spdtl = rw.blocks.saturating_mul(bs as u32);
                self.write_blocks(
                    ctx,
                    rw.lba,
                    rw.blocks,
                    rw.fua,
                    runs.map_or(DataOut::Bytes(data_out), DataOut::Runs),
                    done,
                );
            }
            Cdb::WriteAndVerify { rw, bytchk } => {
                self.not_ready()?;
                self.check_rw(rw)?;
                if *bytchk == 2 || *bytchk == 3 {
                    return Err(CheckCondition::invalid_field_in_cdb(1, Some(2)).into());
                }
                done.spdtl = rw.blocks.saturating_mul(bs as u32);
                // SBC-3 5.34: the data is written, then verified on the
                // medium: it goes through to the medium.
                self.write_blocks(
                    ctx,
                    rw.lba,
                    rw.blocks,
                    true,
                    runs.map_or(DataOut::Bytes(data_out), DataOut::Runs),
                    done,
                );
            }
            Cdb::Verify { rw, bytchk } => {
                self.not_ready()?;
                self.check_rw_data(rw, *bytchk != 0)?;
                self.verify(ctx, rw, *bytchk, data_out, done)?;
            }
            Cdb::SyncCache {
                lba, blocks, immed, ..
            } => {
                self.not_ready()?;
                self.check_through_end(*lba, *blocks)?;
                // SBC-3 5.22: NUMBER OF LOGICAL BLOCKS zero means through
                // the last block.
                let end = if *blocks == 0 {
                    u64::MAX
                } else {
                    lba + u64::from(*blocks)
                };
                if *immed {
                    self.settle();
                    self.pending_flush = Some(PendingFlush {
                        lba: *lba,
                        end,
                        countdown: IMMED_FLUSH_DELAY,
                    });
                } else {
                    if self.cache.flush(*lba, end, &mut self.medium) > 0 {
                        done.cache.wrote_through = true;
                    }
                }
            }
            Cdb::PreFetch { lba, blocks, .. } => {
                self.not_ready()?;
                self.check_through_end(*lba, *blocks)?;
            }
            Cdb::WriteSame {
                size,
                lba,
                blocks,
                unmap,
                anchor,
                ndob,
                protect,
                ..
            } => {
                self.not_ready()?;
                self.write_same(
                    *size, *lba, *blocks, *unmap, *anchor, *ndob, *protect, data_out, done,
                )?;
            }
            Cdb::Unmap {
                anchor, param_len, ..
            } => {
                self.not_ready()?;
                done.spdtl = u32::from(*param_len);
                self.unmap(*anchor, *param_len, data_out)?;
            }
            Cdb::ReportLuns { .. } => {
                // Answered by the target, which knows every LUN; a disk
                // never sees it.
                return Err(CheckCondition::internal_target_failure().into());
            }
            Cdb::CompareAndWrite {
                lba,
                blocks,
                fua,
                protect,
                ..
            } => {
                self.not_ready()?;
                self.compare_and_write(ctx, *lba, *blocks, *fua, *protect, data_out, done)?;
            }
            Cdb::GetLbaStatus { lba, alloc_len } => {
                self.not_ready()?;
                if !self.cfg.thin {
                    return Err(CheckCondition::invalid_opcode().into());
                }
                self.get_lba_status(*lba, *alloc_len, data_in)?;
            }
            Cdb::Other(_) => return Err(CheckCondition::invalid_opcode().into()),
        }
        Ok(())
    }

    /// Read `blocks` blocks into `out`, through the cache.
    fn read_blocks(
        &mut self,
        ctx: &mut Ctx<'_>,
        lba: u64,
        blocks: u32,
        mut out: ReadInto<'_>,
        done: &mut Done,
    ) {
        let bs = self.bs();
        if let ReadInto::Bytes(data_in) = &mut out {
            data_in.clear();
            data_in.reserve(blocks as usize * bs);
        }
        let rcd = self.mode.current.rcd;
        // Run by run: a cached extent or a medium extent reaches `out` as
        // one push, and a fill of many blocks is one new line extent.
        let recent = &mut self.recent;
        let used = self.cache.read_run(
            lba,
            u64::from(blocks),
            rcd,
            &mut self.medium,
            ctx.rng,
            |first, n| match &mut out {
                ReadInto::Bytes(data_in) => {
                    for k in 0..n {
                        recent.render_append(&crate::medium::continued(first, k), data_in, bs);
                    }
                }
                ReadInto::Runs(runs) => runs.push_blocks(first, n, bs),
            },
        );
        done.cache.hit |= used.hit;
        done.cache.evicted |= used.evicted;
    }

    /// Write the blocks of `data` from `lba`. A short `data` (the initiator
    /// sent less than the CDB asked for) writes only what arrived; a partial
    /// last block is merged into the block's current content.
    fn write_blocks(
        &mut self,
        ctx: &mut Ctx<'_>,
        lba: u64,
        blocks: u32,
        fua: bool,
        data: DataOut<'_>,
        done: &mut Done,
    ) {
        let data = match data {
            DataOut::Bytes(b) => b,
            DataOut::Runs(r) => {
                self.write_runs(ctx, lba, blocks, fua, r, done);
                return;
            }
        };
        let bs = self.bs();
        let wanted = (blocks as usize).saturating_mul(bs);
        let data = &data[..data.len().min(wanted)];
        let through = fua || !self.mode.current.wce;
        if data.len() == bs {
            // One whole block (a replayer's 4 KiB write) is no run.
            let d = classify(&mut self.recent, data);
            self.store_block(ctx, lba, d, through, done);
            if !through {
                self.cache.destage(&mut self.medium, ctx.rng);
            }
            return;
        }
        let mut chunks = data.chunks_exact(bs);
        let mut l = lba;
        // Blocks that continue one another (one stream's consecutive
        // tags, or zeros) go to the cache as one run; raw blocks one by one.
        let mut run: Option<(u64, u64, BlockData)> = None;
        for block in &mut chunks {
            let d = classify(&mut self.recent, block);
            let next = match d {
                Detected::Pattern(t) => Some(BlockData::Pattern(t)),
                Detected::Zero => Some(BlockData::Zero),
                Detected::Raw(_) => None,
            };
            match (&mut run, next) {
                (Some((s, n, first)), Some(b))
                    if *s + *n == l && crate::medium::continues_run(first, *n, &b) =>
                {
                    *n += 1;
                }
                (_, next) => {
                    if let Some((s, n, first)) = run.take() {
                        self.store_run(ctx, s, n, &first, through, done);
                    }
                    match next {
                        Some(b) => run = Some((l, 1, b)),
                        None => self.store_block(ctx, l, d, through, done),
                    }
                }
            }
            l += 1;
        }
        if let Some((s, n, first)) = run {
            self.store_run(ctx, s, n, &first, through, done);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.store_partial(ctx, l, tail, through, done);
        }
        if !through {
            self.cache.destage(&mut self.medium, ctx.rng);
        }
    }

    /// [`Disk::write_blocks`] from runs: a block that arrived as one whole
    /// piece of a self-describing block of this size is stored as its tag
    /// without a byte being looked at (rendering it would give bytes that
    /// classify as exactly that tag); any other block (bytes, zeros, a
    /// block stitched from two pieces, a partial one) is classified from
    /// its bytes as before.
    fn write_runs(
        &mut self,
        ctx: &mut Ctx<'_>,
        lba: u64,
        blocks: u32,
        fua: bool,
        runs: &DataRuns,
        done: &mut Done,
    ) {
        let bs = self.bs();
        let total = runs.len().min((blocks as usize).saturating_mul(bs));
        let through = fua || !self.mode.current.wce;
        let mut block = std::mem::take(&mut self.block);
        let whole_blocks = total / bs;
        // A run of whole tags (one stream's consecutive blocks) or zeros is
        // taken run by run; any other block one by one.
        let mut i = 0usize;
        while i < whole_blocks {
            let left = whole_blocks - i;
            let run = match runs.run_from(i * bs) {
                Some(Part::Piece(p)) if p.whole_blocks(bs as u32).is_some() => {
                    Some((BlockData::Pattern(p.tag), (p.len as usize / bs).min(left)))
                }
                Some(Part::Zero(z)) if z >= bs => Some((BlockData::Zero, (z / bs).min(left))),
                _ => None,
            };
            if let Some((first, n)) = run {
                self.store_run(ctx, lba + i as u64, n as u64, &first, through, done);
                i += n;
                continue;
            }
            let d = match runs.single(i * bs, bs) {
                Some(Part::Piece(p)) if p.is_whole_block(bs as u32) => Detected::Pattern(p.tag),
                Some(Part::Zero(_)) => Detected::Zero,
                Some(Part::Bytes(b)) => classify(&mut self.recent, b),
                _ => {
                    block.clear();
                    runs.render_append(i * bs, bs, &mut block);
                    classify(&mut self.recent, &block)
                }
            };
            self.store_block(ctx, lba + i as u64, d, through, done);
            i += 1;
        }
        let whole = total / bs * bs;
        if total > whole {
            block.clear();
            runs.render_append(whole, total - whole, &mut block);
            self.store_partial(ctx, lba + (total / bs) as u64, &block, through, done);
        }
        self.block = block;
        if !through {
            self.cache.destage(&mut self.medium, ctx.rng);
        }
    }

    /// Store `n` blocks from `lba` that continue `first` (one stream's
    /// consecutive tags, or zeros) as [`Disk::store_block`] would one by
    /// one, a stretch at a time.
    fn store_run(
        &mut self,
        ctx: &mut Ctx<'_>,
        lba: u64,
        n: u64,
        first: &BlockData,
        through: bool,
        done: &mut Done,
    ) {
        let single = match first {
            BlockData::Pattern(t) if n == 1 => Some(Detected::Pattern(*t)),
            BlockData::Zero if n == 1 => Some(Detected::Zero),
            _ => None,
        };
        if let Some(d) = single {
            // A line alone is cheaper stored as one.
            self.store_block(ctx, lba, d, through, done);
        } else if through {
            // FUA or WCE=0: the run goes to the medium as one extent, as
            // its blocks one by one would merge.
            self.cache
                .write_through_run(lba, n, first, &mut self.medium, ctx.stale_cache_read);
            done.cache.wrote_through = true;
        } else if self
            .cache
            .write_run(lba, n, first, &mut self.medium, ctx.rng)
        {
            done.cache.evicted = true;
        }
    }

    /// Store a partial last block: `tail` merged into the block's current
    /// content.
    fn store_partial(
        &mut self,
        ctx: &mut Ctx<'_>,
        l: u64,
        tail: &[u8],
        through: bool,
        done: &mut Done,
    ) {
        let bs = self.bs();
        let mut merged = std::mem::take(&mut self.scratch);
        merged.resize(bs, 0);
        self.current(l).render(&mut merged);
        merged[..tail.len()].copy_from_slice(tail);
        let d = BlockData::detect(&merged);
        self.scratch = merged;
        self.store(ctx, l, d, through, done);
    }

    /// [`Disk::store`] without copying raw data when a cache line can take
    /// it in place.
    fn store_block(
        &mut self,
        ctx: &mut Ctx<'_>,
        lba: u64,
        d: crate::content::Detected<'_>,
        through: bool,
        done: &mut Done,
    ) {
        if through {
            self.store(ctx, lba, d.to_data(), through, done);
            return;
        }
        if self.cache.write_block(lba, d, &mut self.medium, ctx.rng) {
            done.cache.evicted = true;
        }
    }

    fn store(&mut self, ctx: &mut Ctx<'_>, lba: u64, d: BlockData, through: bool, done: &mut Done) {
        if through {
            self.cache
                .write_through(lba, &d, &mut self.medium, ctx.stale_cache_read);
            done.cache.wrote_through = true;
        } else {
            if self.cache.write(lba, d, &mut self.medium, ctx.rng) {
                done.cache.evicted = true;
            }
        }
    }

    /// The newest content of a block (cache first), without side effects.
    fn current(&mut self, lba: u64) -> BlockData {
        match self.cache.get(lba, &self.medium) {
            (_, Some(d)) => d,
            _ => self.medium.block(lba),
        }
    }

    fn verify(
        &mut self,
        ctx: &mut Ctx<'_>,
        rw: &Rw,
        bytchk: u8,
        data_out: &[u8],
        done: &mut Done,
    ) -> Result<(), CommandError> {
        let bs = self.bs();
        match bytchk {
            // SBC-3 5.27: BYTCHK 00b checks the medium only; this medium
            // never has unrecoverable errors.
            0 => Ok(()),
            1 | 3 => {
                // 01b: compare every block; 11b: one block, compared with each.
                done.spdtl = if bytchk == 1 {
                    rw.blocks.saturating_mul(bs as u32)
                } else if rw.blocks > 0 {
                    bs as u32
                } else {
                    0
                };
                if data_out.len() < done.spdtl as usize {
                    return Err(CheckCondition::new(
                        crate::error::SenseKey::IllegalRequest,
                        0x0e,
                        0x03,
                    )
                    .into());
                }
                let mut cur = Vec::new();
                self.read_blocks(ctx, rw.lba, rw.blocks, ReadInto::Bytes(&mut cur), done);
                for (i, block) in cur.chunks_exact(bs).enumerate() {
                    let exp = if bytchk == 1 {
                        &data_out[i * bs..(i + 1) * bs]
                    } else {
                        &data_out[..bs]
                    };
                    if let Some(j) = block.iter().zip(exp).position(|(a, b)| a != b) {
                        return Err(CheckCondition::miscompare((i * bs + j) as u64).into());
                    }
                }
                Ok(())
            }
            _ => Err(CheckCondition::invalid_field_in_cdb(1, Some(2)).into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_same(
        &mut self,
        size: CdbSize,
        lba: u64,
        blocks: u32,
        unmap: bool,
        anchor: bool,
        ndob: bool,
        protect: u8,
        data_out: &[u8],
        done: &mut Done,
    ) -> Result<(), CommandError> {
        let bs = self.bs();
        if protect != 0 {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(7)).into());
        }
        // Anchored blocks are not modelled (VPD B2h ANC_SUP=0).
        if anchor {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(4)).into());
        }
        // SBC-3 5.42: UNMAP set on a unit without LBPWS is INVALID FIELD IN CDB.
        if unmap && !self.cfg.thin {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(3)).into());
        }
        // NUMBER OF LOGICAL BLOCKS zero (with WSNZ=0): through the last LBA.
        let n = if blocks == 0 {
            if lba >= self.capacity() {
                return Err(CheckCondition::lba_out_of_range().into());
            }
            self.capacity() - lba
        } else {
            u64::from(blocks)
        };
        self.check_range(lba, n)?;
        if n > self.cfg.limits.max_write_same {
            let byte = if size == CdbSize::Ten { 7 } else { 10 };
            return Err(bad_cdb(byte));
        }
        let block = if ndob {
            BlockData::Zero
        } else {
            done.spdtl = bs as u32;
            let Some(b) = data_out.get(..bs) else {
                return Err(CheckCondition::new(
                    crate::error::SenseKey::IllegalRequest,
                    0x0e,
                    0x03,
                )
                .into());
            };
            BlockData::detect(b)
        };
        // SBC-3 5.42: with UNMAP set, a thin unit unmaps the blocks rather
        // than writing the Data-Out block; with LBPRZ=1 they then read as
        // zeros whatever that block held.
        let dealloc = unmap;
        self.invalidate(lba, n);
        if dealloc {
            self.medium.unmap(lba, n);
        } else {
            self.medium.write_same(lba, n, &block);
        }
        done.cache.wrote_through = true;
        Ok(())
    }

    /// Drop cached copies of `[lba, lba + n)` before writing the medium
    /// directly, so no dirty line is later destaged over the new data.
    fn invalidate(&mut self, lba: u64, n: u64) {
        self.cache.invalidate_range(lba, lba.saturating_add(n));
    }

    fn unmap(&mut self, anchor: bool, param_len: u16, data: &[u8]) -> Result<(), CommandError> {
        if !self.cfg.thin {
            return Err(CheckCondition::invalid_opcode().into());
        }
        if anchor {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(0)).into());
        }
        let len = usize::from(param_len);
        if len == 0 {
            return Ok(()); // SBC-3 5.28: not an error, nothing to do
        }
        // SBC-3 5.28: a list shorter than its header is PARAMETER LIST
        // LENGTH ERROR.
        if len < 8 || data.len() < len {
            return Err(CheckCondition::parameter_list_length().into());
        }
        let list = &data[..len];
        let desc_len = usize::from(u16::from_be_bytes([list[2], list[3]]));
        let descs = list.get(8..8 + desc_len.min(len - 8)).unwrap_or(&[]);
        if descs.len() / 16 > self.cfg.limits.max_unmap_descriptors as usize {
            return Err(CheckCondition::invalid_field_in_parameter_list(2).into());
        }
        let mut ranges = Vec::new();
        for (i, d) in descs.chunks_exact(16).enumerate() {
            let lba = u64::from_be_bytes(d[0..8].try_into().expect("16-byte chunk"));
            let n = u64::from(u32::from_be_bytes(
                d[8..12].try_into().expect("16-byte chunk"),
            ));
            self.check_range(lba, n)?;
            if n > u64::from(self.cfg.limits.max_unmap_lbas) {
                return Err(CheckCondition::invalid_field_in_parameter_list(
                    (8 + i * 16 + 8) as u16,
                )
                .into());
            }
            ranges.push((lba, n));
        }
        for (lba, n) in ranges {
            self.invalidate(lba, n);
            self.medium.unmap(lba, n);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_and_write(
        &mut self,
        ctx: &mut Ctx<'_>,
        lba: u64,
        blocks: u8,
        fua: bool,
        protect: u8,
        data_out: &[u8],
        done: &mut Done,
    ) -> Result<(), CommandError> {
        let bs = self.bs();
        if protect != 0 {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(7)).into());
        }
        // SBC-3 5.2: more blocks than MAXIMUM COMPARE AND WRITE LENGTH is
        // INVALID FIELD IN CDB.
        if blocks > self.cfg.limits.max_compare_and_write {
            return Err(bad_cdb(13));
        }
        self.check_range(lba, u64::from(blocks))?;
        let n = usize::from(blocks) * bs;
        done.spdtl = (2 * n) as u32;
        if blocks == 0 {
            // SBC-3 5.2: zero blocks is not an error and moves nothing; a
            // Data-Out buffer sent anyway means the field cannot be what
            // the initiator meant (a count of 256 wrapped to 0).
            if !data_out.is_empty() {
                return Err(bad_cdb(13));
            }
            return Ok(());
        }
        if data_out.len() < 2 * n {
            return Err(
                CheckCondition::new(crate::error::SenseKey::IllegalRequest, 0x0e, 0x03).into(),
            );
        }
        let (verify, write) = data_out.split_at(n);
        let mut cur = Vec::new();
        self.read_blocks(ctx, lba, u32::from(blocks), ReadInto::Bytes(&mut cur), done);
        if let Some(j) = cur.iter().zip(verify).position(|(a, b)| a != b) {
            return Err(CheckCondition::miscompare(j as u64).into());
        }
        self.write_blocks(
            ctx,
            lba,
            u32::from(blocks),
            fua,
            DataOut::Bytes(&write[..n]),
            done,
        );
        Ok(())
    }

    fn get_lba_status(
        &mut self,
        lba: u64,
        alloc_len: u32,
        data_in: &mut Vec<u8>,
    ) -> Result<(), CommandError> {
        // SBC-3 5.6: a STARTING LBA past the last LBA is LBA OUT OF RANGE.
        if lba >= self.capacity() {
            return Err(CheckCondition::lba_out_of_range().into());
        }
        data_in.extend_from_slice(&[0u8; 8]);
        let max_desc = ((alloc_len as usize).saturating_sub(8) / 16).clamp(1, 64);
        let mut at = lba;
        for _ in 0..max_desc {
            if at >= self.capacity() {
                break;
            }
            let remaining = (self.capacity() - at).min(u64::from(u32::MAX));
            let (mapped, run) = self.lba_status_run(at, remaining);
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&at.to_be_bytes());
            d[8..12].copy_from_slice(&(run as u32).to_be_bytes());
            d[12] = if mapped { 0 } else { 1 };
            data_in.extend_from_slice(&d);
            at += run;
        }
        let len = (data_in.len() - 4) as u32;
        data_in[0..4].copy_from_slice(&len.to_be_bytes());
        truncate(data_in, alloc_len as usize);
        Ok(())
    }

    /// One GET LBA STATUS extent: whether `lba` is mapped and for how many
    /// blocks (up to `limit`). A block only the cache holds is mapped: the
    /// unit has data for it, even if the medium does not yet.
    fn lba_status_run(&self, lba: u64, limit: u64) -> (bool, u64) {
        let (on_medium, run) = self.medium.mapping_run(lba, limit);
        if on_medium {
            return (true, run);
        }
        if self.cache.is_dirty(lba) {
            return (true, self.cache.dirty_run(lba, run));
        }
        match self.cache.next_dirty(lba, lba + run) {
            Some(d) => (false, d - lba),
            None => (false, run),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn mode_sense(
        &mut self,
        size: CdbSize,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), CommandError> {
        let ten = size == CdbSize::Ten;
        let hdr = if ten { 8 } else { 4 };
        out.resize(hdr, 0);
        // DEVICE-SPECIFIC PARAMETER: DPOFUA (SBC-3 6.4.1).
        out[if ten { 3 } else { 2 }] = 0x10;
        if !dbd {
            let long = ten && llbaa;
            let cap = self.capacity();
            if long {
                let mut d = [0u8; 16];
                d[0..8].copy_from_slice(&cap.to_be_bytes());
                d[12..16].copy_from_slice(&self.cfg.block_size.to_be_bytes());
                out.extend_from_slice(&d);
                out[4] |= 1; // LONGLBA
            } else {
                let mut d = [0u8; 8];
                d[0..4].copy_from_slice(&u32::try_from(cap).unwrap_or(u32::MAX).to_be_bytes());
                d[5..8].copy_from_slice(&self.cfg.block_size.to_be_bytes()[1..4]);
                out.extend_from_slice(&d);
            }
            let bdl = out.len() - hdr;
            if ten {
                out[6..8].copy_from_slice(&(bdl as u16).to_be_bytes());
            } else {
                out[3] = bdl as u8;
            }
        }
        if self
            .mode
            .sense_pages(page, subpage, PageControl::from_bits(pc), out)
            .is_none()
        {
            // Point at SUBPAGE CODE when the page exists but the subpage
            // does not, else at PAGE CODE.
            let known_page = page == crate::mode::CACHING_PAGE || page == crate::mode::CONTROL_PAGE;
            return Err(bad_cdb(if subpage != 0 && known_page { 3 } else { 2 }));
        }
        // MODE DATA LENGTH excludes itself.
        if ten {
            let l = (out.len() - 2) as u16;
            out[0..2].copy_from_slice(&l.to_be_bytes());
        } else {
            out[0] = u8::try_from(out.len() - 1).unwrap_or(u8::MAX);
        }
        Ok(())
    }

    fn mode_select(
        &mut self,
        size: CdbSize,
        pf: bool,
        sp: bool,
        param_len: u16,
        data: &[u8],
    ) -> Result<(), CommandError> {
        let len = usize::from(param_len);
        if len == 0 {
            return Ok(());
        }
        // SPC-4 6.9: PF=0 means vendor-specific pages, which this unit has none of.
        if !pf {
            return Err(CheckCondition::invalid_field_in_cdb(1, Some(4)).into());
        }
        let list = data
            .get(..len)
            .ok_or(CheckCondition::parameter_list_length())?;
        let ten = size == CdbSize::Ten;
        let hdr = if ten { 8 } else { 4 };
        if list.len() < hdr {
            return Err(CheckCondition::parameter_list_length().into());
        }
        let bdl = if ten {
            usize::from(u16::from_be_bytes([list[6], list[7]]))
        } else {
            usize::from(list[3])
        };
        let desc = list
            .get(hdr..hdr + bdl)
            .ok_or(CheckCondition::parameter_list_length())?;
        let dlen = if ten && list[4] & 1 != 0 { 16 } else { 8 };
        for (i, d) in desc.chunks(dlen).enumerate() {
            if d.len() != dlen {
                return Err(CheckCondition::parameter_list_length().into());
            }
            // The block length is not changeable.
            let bl = u32::from_be_bytes([0, d[dlen - 3], d[dlen - 2], d[dlen - 1]]);
            if bl != self.cfg.block_size && bl != 0 {
                return Err(CheckCondition::invalid_field_in_parameter_list(
                    (hdr + i * dlen + dlen - 3) as u16,
                )
                .into());
            }
        }
        let before = self.mode.current;
        let after = self.mode.select(&list[hdr + bdl..], hdr + bdl, sp)?;
        // Turning write caching off: write back what the cache holds, so a
        // write-through unit has no volatile data left (SBC-3 leaves this to
        // the device; doing it is the safe choice real firmware makes).
        if before.wce && !after.wce {
            self.cache.flush(0, u64::MAX, &mut self.medium);
        }
        Ok(())
    }
}
