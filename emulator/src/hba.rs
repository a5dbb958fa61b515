//! The HBA path: where each transfer limit is enforced, and what a driver
//! does with a task that breaks one.
//!
//! Three layers see a command (issue 11; `docs/bug-catalogue.md`):
//!
//! 1. the **OS splitter** cuts I/O to the limits the driver published
//!    ([`HbaPreset::splitter`]); that happens before a [`Task`] exists: the
//!    task handed to [`crate::Emulator::submit`] is what it produced;
//! 2. the **driver** ([`plan`]) builds the controller's SG list from the
//!    task's buffer: pieces no longer than the controller's segment size,
//!    pieces the controller cannot address (or that break its alignment)
//!    copied through low bounce memory, and a task over the controller's
//!    byte or segment limit split into several controller commands at block
//!    boundaries (double-buffering a piece when the segment limit falls
//!    inside a block). Catalogued bugs replace exactly one of those steps with
//!    the mistake real drivers make;
//! 3. the **controller** ([`check_controller`]) accepts at most
//!    [`HbaConstraints::max_segments`] entries and
//!    [`HbaConstraints::max_bytes`] bytes per command, and moves data only
//!    through those entries.

use crate::bugs::{Bug, BugSet};
use crate::command::Command;
use crate::error::CheckCondition;
use crate::memory::HostMemory;
use crate::runs::DataRuns;
use crate::sbc::InitiatorId;
use trace::cdb::{Cdb, CdbSize, Rw};
use trace::{Direction, HbaConstraints, HbaPreset, Segment, TaskAttr};

/// The most one controller command moves, whatever the preset says: an
/// "unlimited" controller still has a transfer register, and the emulator
/// must not allocate what a hostile length field asks for. Tasks above it
/// are split like any other oversize task.
pub const MAX_COMMAND_BYTES: u64 = 256 << 20;

/// The largest task the driver accepts (1 GiB): no OS builds larger I/O,
/// and refusing it up front keeps a hostile transfer length from making
/// the emulator fill gigabytes of host memory.
pub const MAX_TASK_BYTES: u32 = 1 << 30;

/// The byte limit the controller really enforces.
pub fn controller_max_bytes(ctl: &HbaConstraints, write: bool) -> u64 {
    u64::from(ctl.max_bytes(write)).min(MAX_COMMAND_BYTES)
}

/// A task as the OS hands it to the driver (DriverKit's
/// `SCSIUserParallelTask`, with the buffer already described as segments).
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    /// Who sent it (for unit attentions and reservations).
    pub initiator: InitiatorId,
    /// Logical unit.
    pub lun: u64,
    /// The CDB bytes.
    pub cdb: &'a [u8],
    /// Data phase direction.
    pub dir: Direction,
    /// Requested transfer length (`fRequestedTransferCount`, iSCSI EDTL).
    pub xfer_len: u32,
    /// The buffer, as (physical address, length) runs in host memory.
    pub sg: &'a [Segment],
    /// Task attribute.
    pub attr: TaskAttr,
}

/// The driver's bounce memory: low memory the controller can reach, that
/// stands in for host pages it cannot. It is host memory itself (offsets
/// are its addresses), so self-describing blocks pass through it as tags,
/// as they do through the pages they are copied from and to.
#[derive(Debug, Default)]
pub struct BounceBuffer {
    mem: HostMemory,
    len: usize,
    /// Runs in transit between host memory and the buffer.
    tmp: DataRuns,
}

impl BounceBuffer {
    /// Empty the buffer: every offset reads as zero again.
    pub fn clear(&mut self) {
        if self.len > 0 {
            self.mem = HostMemory::new();
        }
        self.len = 0;
    }

    /// Bytes handed out so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was handed out.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hand out the next `n` bytes (zeros); returns their offset.
    fn reserve(&mut self, n: usize) -> usize {
        let at = self.len;
        self.len += n;
        at
    }

    /// The buffer's memory (offsets are addresses).
    pub fn memory(&self) -> &HostMemory {
        &self.mem
    }

    /// Copy `n` bytes of host memory at `addr` to offset `at`.
    fn fill_from(&mut self, mem: &HostMemory, addr: u64, n: usize, at: usize) {
        self.tmp.clear();
        mem.read_runs(addr, n, &mut self.tmp);
        self.mem.write_runs(at as u64, &self.tmp, 0, n);
    }

    /// Copy `n` bytes at offset `at` to host memory at `addr`.
    fn copy_to(&mut self, at: usize, n: usize, mem: &mut HostMemory, addr: u64) {
        self.tmp.clear();
        self.mem.read_runs(at as u64, n, &mut self.tmp);
        mem.write_runs(addr, &self.tmp, 0, n);
    }

    /// Copy `n` bytes at offset `from` to offset `to` (not overlapping).
    fn copy_within(&mut self, from: usize, n: usize, to: usize) {
        self.tmp.clear();
        self.mem.read_runs(from as u64, n, &mut self.tmp);
        self.mem.write_runs(to as u64, &self.tmp, 0, n);
    }
}

/// Where a controller SG entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mem {
    /// Host memory at this address.
    Host(u64),
    /// The driver's bounce buffer at `offset`, standing in for host memory
    /// at `host` (copied there after a read completes).
    Bounce {
        /// Offset in the bounce buffer.
        offset: usize,
        /// The host address the data belongs to.
        host: u64,
    },
    /// The driver's bounce buffer at `offset`, holding a copy of several
    /// task pieces ([`Plan::coalesced`] entry `index`) so that one entry
    /// covers what the controller's segment limit could not.
    Coalesced {
        /// Offset in the bounce buffer.
        offset: usize,
        /// Index into [`Plan::coalesced`].
        index: usize,
    },
}

impl Mem {
    fn advance(self, by: u32) -> Mem {
        match self {
            Mem::Host(a) => Mem::Host(a.wrapping_add(u64::from(by))),
            Mem::Bounce { offset, host } => Mem::Bounce {
                offset: offset + by as usize,
                host: host.wrapping_add(u64::from(by)),
            },
            Mem::Coalesced { offset, index } => Mem::Coalesced {
                offset: offset + by as usize,
                index,
            },
        }
    }
}

/// One entry of a controller SG list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Where the bytes are.
    pub mem: Mem,
    /// How many.
    pub len: u32,
}

/// One command as the driver programs the controller with it.
#[derive(Debug, Clone)]
pub struct ControllerCommand {
    /// The command (the task's own, or one piece of a split).
    pub cmd: Command,
    /// Its SG list.
    pub entries: Vec<Entry>,
}

impl ControllerCommand {
    /// Bytes the SG list covers.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.len)).sum()
    }
}

/// What the driver made of a task.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Controller commands, in order.
    pub commands: Vec<ControllerCommand>,
    /// Bytes copied through bounce memory.
    pub bounced: u64,
    /// The task was split.
    pub split: bool,
    /// Some segment lay above the controller's addressable limit.
    pub above_limit: bool,
    /// Some segment broke the controller's alignment.
    pub misaligned: bool,
    /// Catalogued bugs whose faulty step actually ran for this task.
    pub fired: BugSet,
    /// The driver will report the whole transfer done whatever moved (the
    /// buggy oversize paths).
    pub claims_full: bool,
    /// Bounce regions that stand for several task pieces: (offset in the
    /// bounce buffer, the pieces in order), for the copy back after a read.
    pub coalesced: Vec<(usize, Vec<Entry>)>,
    /// SG lists of earlier tasks, emptied, for the next task's commands
    /// ([`plan`]): a command costs no allocation once the lists have grown.
    spare: Vec<Vec<Entry>>,
}

impl Plan {
    /// Empty the plan for the next task, keeping its SG lists' memory.
    fn recycle(&mut self) {
        // Named field by field, so a field added to `Plan` fails to compile
        // here until it is reset too.
        let Plan {
            commands,
            bounced,
            split,
            above_limit,
            misaligned,
            fired,
            claims_full,
            coalesced,
            spare,
        } = self;
        for c in commands.drain(..) {
            let mut e = c.entries;
            e.clear();
            spare.push(e);
        }
        for (_, mut e) in coalesced.drain(..) {
            e.clear();
            spare.push(e);
        }
        *bounced = 0;
        *split = false;
        *above_limit = false;
        *misaligned = false;
        *fired = BugSet::default();
        *claims_full = false;
    }

    /// An empty SG list.
    fn list(&mut self) -> Vec<Entry> {
        self.spare.pop().unwrap_or_default()
    }

    /// Keep `list`'s memory for a later [`Plan::list`].
    fn give_back(&mut self, mut list: Vec<Entry>) {
        list.clear();
        self.spare.push(list);
    }
}

/// Block geometry the driver needs to split READ/WRITE.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Logical block size.
    pub block_size: u32,
}

/// Build the controller SG list and controller commands for a task into
/// `p`, whatever it held before: the emulator plans every task into one
/// `Plan`, so its SG lists' memory is reused. On an error what `p` holds is
/// unspecified.
///
/// `cmd` is the task's decoded CDB (an undecodable CDB is sent as-is, as a
/// real driver would, and the device answers it). For writes, bounced
/// pieces are copied from host memory into `bounce` here.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    task: &Task<'_>,
    cmd: Command,
    preset: &HbaPreset,
    bugs: BugSet,
    geo: Geometry,
    mem: &HostMemory,
    bounce: &mut BounceBuffer,
    p: &mut Plan,
) -> Result<(), CheckCondition> {
    let ctl = &preset.controller;
    let write = task.dir == Direction::ToDevice;
    p.recycle();
    bounce.clear();
    if task.xfer_len > MAX_TASK_BYTES {
        return Err(CheckCondition::invalid_field_in_cdb(0, None));
    }

    // The driver honours the requested length even if the SG list is longer.
    let mut entries = p.list();
    entries.reserve(task.sg.len());
    let mut remaining = if task.dir == Direction::None {
        0
    } else {
        u64::from(task.xfer_len)
    };
    let limit = ctl.address_limit();
    let align = u64::from(ctl.segment_alignment.max(1));
    // Alignments are powers of two on every real controller: a mask then
    // spares two 64-bit divisions per entry, the costliest instructions of
    // a fuzzer's submit path.
    let misaligned_at = |addr: u64, n: u64| {
        if align.is_power_of_two() {
            (addr | n) & (align - 1) != 0
        } else {
            !addr.is_multiple_of(align) || !n.is_multiple_of(align)
        }
    };
    for seg in task.sg {
        if remaining == 0 {
            break;
        }
        let mut left = u64::from(seg.len).min(remaining);
        remaining -= left;
        let mut addr = seg.addr.0;
        while left > 0 {
            let n = left.min(u64::from(ctl.max_segment_bytes.max(1))) as u32;
            let end = addr.checked_add(u64::from(n));
            let above = end.is_none_or(|e| e > limit);
            let misaligned = misaligned_at(addr, u64::from(n));
            p.above_limit |= above;
            p.misaligned |= misaligned;
            let mem_ref = if above && bugs.has(Bug::DmaTruncate32) {
                // The mistake: program the low bits of the address instead
                // of bouncing (for a 32-bit controller, `addr & 0xffff_ffff`).
                p.fired = p.fired.with(Bug::DmaTruncate32);
                Mem::Host(addr & (limit.wrapping_sub(1)))
            } else if above || misaligned {
                // Correct: copy through low memory the controller can reach
                // (xnu's IODMACommand does this when there is no IOMMU).
                let offset = bounce.reserve(n as usize);
                if write {
                    bounce.fill_from(mem, addr, n as usize, offset);
                }
                p.bounced += u64::from(n);
                Mem::Bounce { offset, host: addr }
            } else {
                Mem::Host(addr)
            };
            entries.push(Entry {
                mem: mem_ref,
                len: n,
            });
            addr = addr.wrapping_add(u64::from(n));
            left -= u64::from(n);
        }
    }

    let max_segs = ctl.max_segments(write) as usize;
    let max_bytes = controller_max_bytes(ctl, write);
    if entries.len() > max_segs && bugs.has(Bug::SgOverflowDrop) {
        // The mistake: copy only as many entries as the controller's SG
        // table holds and forget the rest.
        entries.truncate(max_segs);
        p.fired = p.fired.with(Bug::SgOverflowDrop);
        p.claims_full = true;
    }
    let total: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
    let fits = entries.len() <= max_segs && total <= max_bytes;

    // Block-addressed commands whose data a driver can cut at block
    // boundaries: READ, WRITE, VERIFY with BYTCHK=01b, WRITE AND VERIFY.
    let rw = match &cmd {
        Command::Cdb(Cdb::Read(rw)) => Some((*rw, Kind::Read)),
        Command::Cdb(Cdb::Write(rw)) => Some((*rw, Kind::Write)),
        Command::Cdb(Cdb::Verify { rw, bytchk: 1 }) => Some((*rw, Kind::Verify)),
        Command::Cdb(Cdb::WriteAndVerify { rw, bytchk }) => {
            Some((*rw, Kind::WriteAndVerify(*bytchk)))
        }
        _ => None,
    };
    let cmd = strip_fua(cmd, bugs, p);
    let Some((rw, kind)) = rw.filter(|_| !fits) else {
        if !fits {
            // A correct driver cannot split a command it does not
            // understand: fail it rather than send the controller more than
            // it takes (SBC-3 6.5.3 uses the same sense for a transfer over
            // the device's limit).
            return Err(CheckCondition::invalid_field_in_cdb(0, None));
        }
        p.commands.push(ControllerCommand { cmd, entries });
        return Ok(());
    };
    // Checked arithmetic on the LBA range: a range that wraps past 2^64 is
    // refused before anything is split (SBC-3 4.5: LBA OUT OF RANGE).
    if rw.lba.checked_add(u64::from(rw.blocks)).is_none() {
        return Err(CheckCondition::lba_out_of_range());
    }
    let bs = u64::from(geo.block_size);
    let fua = rw.fua && !p.fired.has(Bug::FuaIgnored);
    let spdtl = u64::from(rw.blocks) * bs;
    let split_bytes = total.min(spdtl) / bs * bs;
    let max_chunk = max_bytes / bs * bs;
    let piece = |lba: u64, blocks: u64, entries: Vec<Entry>| {
        let rw = Rw {
            size: CdbSize::Sixteen,
            lba,
            blocks: blocks as u32,
            fua,
            dpo: rw.dpo,
            protect: rw.protect,
            group: rw.group,
        };
        let cdb = match kind {
            Kind::Write => Cdb::Write(rw),
            Kind::Read => Cdb::Read(rw),
            Kind::Verify => Cdb::Verify {
                rw: Rw { fua: false, ..rw },
                bytchk: 1,
            },
            Kind::WriteAndVerify(bytchk) => Cdb::WriteAndVerify {
                rw: Rw { fua: false, ..rw },
                bytchk,
            },
        };
        ControllerCommand {
            cmd: Command::Cdb(cdb),
            entries,
        }
    };

    if total > max_bytes && bugs.has(Bug::OversizeTruncate) {
        // The mistake: cut the SG list at the controller's byte limit,
        // send one command for what is left, report the whole task done.
        let (taken, got) = take(&entries, 0, max_chunk, max_segs, bs, p.list());
        p.commands.push(piece(rw.lba, got / bs, taken));
        p.fired = p.fired.with(Bug::OversizeTruncate);
        p.claims_full = true;
        p.give_back(entries);
        return Ok(());
    }
    if total > max_bytes && bugs.has(Bug::OversizeClip) {
        // The mistake: write the byte count into a register sized for the
        // controller's maximum (one bit wider than it needs); the count
        // wraps, and the controller clips what is left to its maximum.
        let bits = 64 - max_bytes.leading_zeros();
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let programmed = (split_bytes & mask).min(max_chunk) / bs * bs;
        if programmed > 0 {
            let (taken, got) = take(&entries, 0, programmed, max_segs, bs, p.list());
            p.commands.push(piece(rw.lba, got / bs, taken));
        }
        p.fired = p.fired.with(Bug::OversizeClip);
        p.claims_full = true;
        p.give_back(entries);
        return Ok(());
    }

    // Correct split: consecutive pieces, each within both limits and a
    // whole number of blocks.
    if max_chunk == 0 {
        return Err(CheckCondition::invalid_field_in_cdb(0, None));
    }
    let mut pos = 0u64;
    let mut lba = rw.lba;
    while pos < split_bytes {
        let (taken, got) = take(
            &entries,
            pos,
            (split_bytes - pos).min(max_chunk),
            max_segs,
            bs,
            p.list(),
        );
        if got == 0 {
            // max_segs entries cannot hold even one block: copy the next
            // piece through one contiguous bounce region (what xnu's
            // IODMACommand double-buffering does), so one entry covers it.
            let seg_max = u64::from(ctl.max_segment_bytes) / bs * bs;
            let want = (split_bytes - pos).min(max_chunk).min(seg_max);
            if want == 0 {
                // Not even one block fits one entry: no correct way exists.
                return Err(CheckCondition::invalid_field_in_cdb(0, None));
            }
            p.give_back(taken);
            let (pieces, _) = take(&entries, pos, want, usize::MAX, 1, p.list());
            let offset = bounce.reserve(want as usize);
            if write {
                let mut tmp = DataRuns::new();
                gather(&pieces, mem, bounce, &mut tmp);
                bounce.mem.write_runs(offset as u64, &tmp, 0, tmp.len());
            }
            p.bounced += want;
            let index = p.coalesced.len();
            p.coalesced.push((offset, pieces));
            let entry = Entry {
                mem: Mem::Coalesced { offset, index },
                len: want as u32,
            };
            let mut one = p.list();
            one.push(entry);
            p.commands.push(piece(lba, want / bs, one));
            pos += want;
            lba += want / bs;
            continue;
        }
        p.commands.push(piece(lba, got / bs, taken));
        pos += got;
        lba += got / bs;
    }
    p.split = p.commands.len() > 1;
    if p.split && bugs.has(Bug::SplitOffByOne) {
        // The mistake: every piece after the first starts one block late in
        // both LBA and buffer (the split point computed from an inclusive
        // end), so the block at each split is never transferred.
        for c in p.commands.iter_mut().skip(1) {
            if let Some(r) = rw_of_mut(&mut c.cmd) {
                r.lba += 1;
                r.blocks -= 1;
            }
            c.entries = skip_bytes(&c.entries, bs);
        }
        p.commands
            .retain(|c| !matches!(rw_of(&c.cmd), Some(r) if r.blocks == 0));
        p.fired = p.fired.with(Bug::SplitOffByOne);
        p.claims_full = true;
    }
    p.give_back(entries);
    Ok(())
}

/// Which block-addressed command a split piece repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Verify,
    WriteAndVerify(u8),
}

/// The LBA/length fields of a command the driver can split.
pub fn rw_of(cmd: &Command) -> Option<Rw> {
    match cmd {
        Command::Cdb(Cdb::Read(r) | Cdb::Write(r))
        | Command::Cdb(Cdb::Verify { rw: r, .. } | Cdb::WriteAndVerify { rw: r, .. }) => Some(*r),
        _ => None,
    }
}

fn rw_of_mut(cmd: &mut Command) -> Option<&mut Rw> {
    match cmd {
        Command::Cdb(Cdb::Read(r) | Cdb::Write(r))
        | Command::Cdb(Cdb::Verify { rw: r, .. } | Cdb::WriteAndVerify { rw: r, .. }) => Some(r),
        _ => None,
    }
}

fn strip_fua(cmd: Command, bugs: BugSet, p: &mut Plan) -> Command {
    if !bugs.has(Bug::FuaIgnored) {
        return cmd;
    }
    match cmd {
        Command::Cdb(Cdb::Write(mut rw)) if rw.fua => {
            // The mistake: the FUA bit is not copied into the controller's
            // command, so the write lands in the volatile cache.
            rw.fua = false;
            p.fired = p.fired.with(Bug::FuaIgnored);
            Command::Cdb(Cdb::Write(rw))
        }
        Command::Cdb(Cdb::CompareAndWrite {
            lba,
            blocks,
            fua: true,
            dpo,
            protect,
            group,
        }) => {
            p.fired = p.fired.with(Bug::FuaIgnored);
            Command::Cdb(Cdb::CompareAndWrite {
                lba,
                blocks,
                fua: false,
                dpo,
                protect,
                group,
            })
        }
        other => other,
    }
}

/// Entries covering bytes `[pos, pos + want)` of `entries`, at most
/// `max_segs` of them, trimmed to a whole number of `bs`-byte blocks,
/// appended to `out` (an empty list whose memory is reused); returns them
/// and the bytes they cover.
fn take(
    entries: &[Entry],
    pos: u64,
    want: u64,
    max_segs: usize,
    bs: u64,
    mut out: Vec<Entry>,
) -> (Vec<Entry>, u64) {
    // Pass 1: how far max_segs entries reach.
    let mut skip = pos;
    let mut got = 0u64;
    for e in entries {
        if out.len() >= max_segs || got >= want {
            break;
        }
        let len = u64::from(e.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(want - got);
        out.push(Entry {
            mem: e.mem.advance(skip as u32),
            len: n as u32,
        });
        got += n;
        skip = 0;
    }
    // Pass 2: give back the partial block at the end.
    let whole = got / bs * bs;
    let mut excess = got - whole;
    while excess > 0 {
        let Some(last) = out.last_mut() else { break };
        let cut = excess.min(u64::from(last.len));
        last.len -= cut as u32;
        excess -= cut;
        if last.len == 0 {
            out.pop();
        }
    }
    (out, whole)
}

/// `entries` without their first `n` bytes.
fn skip_bytes(entries: &[Entry], n: u64) -> Vec<Entry> {
    let total: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
    take(
        entries,
        n,
        total.saturating_sub(n),
        usize::MAX,
        1,
        Vec::new(),
    )
    .0
}

/// The controller's own check of a command it is given: more entries or
/// bytes than it takes is refused, not truncated.
pub fn check_controller(
    c: &ControllerCommand,
    ctl: &HbaConstraints,
    write: bool,
) -> Result<(), CheckCondition> {
    if c.entries.len() > ctl.max_segments(write) as usize
        || c.bytes() > controller_max_bytes(ctl, write)
    {
        return Err(CheckCondition::invalid_field_in_cdb(0, None));
    }
    Ok(())
}

/// Gather a controller command's Data-Out into `out`, as runs: pieces of
/// self-describing blocks stay pieces (two that continue each other, such
/// as a block cut by a page or entry boundary, merge back).
pub fn gather(entries: &[Entry], mem: &HostMemory, bounce: &BounceBuffer, out: &mut DataRuns) {
    out.clear();
    for e in entries {
        match e.mem {
            Mem::Host(a) => mem.read_runs(a, e.len as usize, out),
            Mem::Bounce { offset, .. } | Mem::Coalesced { offset, .. } => {
                bounce.mem.read_runs(offset as u64, e.len as usize, out)
            }
        }
    }
}

/// Scatter Data-In through a controller command's entries; returns the
/// bytes placed (at most `data.len()`).
pub fn scatter(
    entries: &[Entry],
    data: &DataRuns,
    mem: &mut HostMemory,
    bounce: &mut BounceBuffer,
) -> u64 {
    let mut at = 0usize;
    for e in entries {
        if at >= data.len() {
            break;
        }
        let n = (e.len as usize).min(data.len() - at);
        match e.mem {
            Mem::Host(a) => mem.write_runs(a, data, at, n),
            Mem::Bounce { offset, .. } | Mem::Coalesced { offset, .. } => {
                bounce.mem.write_runs(offset as u64, data, at, n)
            }
        }
        at += n;
    }
    at as u64
}

/// After a read through bounce memory: copy the bounce buffer back to the
/// host pages it stands for (coalesced regions first, into the pieces they
/// were made of).
pub fn copy_back(plan: &Plan, mem: &mut HostMemory, bounce: &mut BounceBuffer) {
    for (offset, pieces) in &plan.coalesced {
        let mut at = *offset;
        for e in pieces {
            let n = e.len as usize;
            match e.mem {
                Mem::Host(a) => bounce.copy_to(at, n, mem, a),
                Mem::Bounce { offset: o, host } => {
                    bounce.copy_within(at, n, o);
                    bounce.copy_to(o, n, mem, host);
                }
                // Pieces are cut from the task's entries, which are never
                // coalesced themselves.
                Mem::Coalesced { .. } => {}
            }
            at += n;
        }
    }
    for c in &plan.commands {
        for e in &c.entries {
            if let Mem::Bounce { offset, host } = e.mem {
                bounce.copy_to(offset, e.len as usize, mem, host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_task(sg: &[Segment], blocks: u32) -> (Vec<u8>, u32) {
        let mut cdb = vec![0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb.extend_from_slice(&blocks.to_be_bytes());
        cdb.extend_from_slice(&[0, 0]);
        (cdb, sg.iter().map(|s| s.len).sum())
    }

    fn run(
        sg: &[Segment],
        blocks: u32,
        preset: &HbaPreset,
        bugs: BugSet,
    ) -> Result<Plan, CheckCondition> {
        let (cdb, xfer) = write_task(sg, blocks);
        let task = Task {
            initiator: 0,
            lun: 0,
            cdb: &cdb,
            dir: Direction::ToDevice,
            xfer_len: xfer,
            sg,
            attr: TaskAttr::Simple,
        };
        let cmd = Command::parse(&cdb).unwrap();
        let mut p = Plan::default();
        plan(
            &task,
            cmd,
            preset,
            bugs,
            Geometry { block_size: 512 },
            &HostMemory::new(),
            &mut BounceBuffer::default(),
            &mut p,
        )
        .map(|()| p)
    }

    fn pages(n: u64, base: u64) -> Vec<Segment> {
        (0..n)
            .map(|i| Segment::new(base + i * 8192, 4096))
            .collect()
    }

    #[test]
    fn segments_above_4g_are_bounced_on_a_32_bit_controller() {
        let p = run(
            &pages(4, 0x1_0000_0000),
            32,
            &HbaPreset::lsi3108(),
            BugSet::NONE,
        )
        .unwrap();
        assert_eq!(p.bounced, 16384);
        assert!(p.commands[0]
            .entries
            .iter()
            .all(|e| matches!(e.mem, Mem::Bounce { .. })));
        let p = run(
            &pages(4, 0x1_0000_0000),
            32,
            &HbaPreset::lsi3108(),
            BugSet::of(&[Bug::DmaTruncate32]),
        )
        .unwrap();
        assert_eq!(p.commands[0].entries[0].mem, Mem::Host(0));
        assert!(p.fired.has(Bug::DmaTruncate32));
        let p = run(
            &pages(4, 0x1_0000_0000),
            32,
            &HbaPreset::generic(),
            BugSet::NONE,
        )
        .unwrap();
        assert_eq!(p.bounced, 0);
    }

    #[test]
    fn oversize_tasks_split_within_both_limits() {
        let preset = HbaPreset::lsi3108_unsplit();
        // 1 MiB in 256 pages: over 512 KiB and over 129 segments.
        let p = run(&pages(256, 0x10_0000), 2048, &preset, BugSet::NONE).unwrap();
        assert!(p.split);
        let mut lba = 0;
        for c in &p.commands {
            check_controller(c, &preset.controller, true).unwrap();
            let Command::Cdb(Cdb::Write(rw)) = c.cmd else {
                panic!()
            };
            assert_eq!(rw.lba, lba);
            assert_eq!(c.bytes(), u64::from(rw.blocks) * 512);
            lba += u64::from(rw.blocks);
        }
        assert_eq!(lba, 2048);
    }

    #[test]
    fn oversize_bugs_lose_the_tail() {
        let preset = HbaPreset::lsi3108_unsplit();
        let one_mib = [Segment::new(0x10_0000, 0x10_0000)];
        let p = run(
            &one_mib,
            2048,
            &preset,
            BugSet::of(&[Bug::OversizeTruncate]),
        )
        .unwrap();
        assert_eq!(p.commands.len(), 1);
        assert_eq!(p.commands[0].bytes(), 0x8_0000);
        assert!(p.claims_full);
        let p = run(&one_mib, 2048, &preset, BugSet::of(&[Bug::OversizeClip])).unwrap();
        assert!(p.commands.is_empty(), "1 MiB wraps to 0 in a 20-bit count");
        let p = run(&one_mib, 2048, &preset, BugSet::of(&[Bug::SplitOffByOne])).unwrap();
        let Command::Cdb(Cdb::Write(rw)) = p.commands[1].cmd else {
            panic!()
        };
        assert_eq!((rw.lba, rw.blocks), (1025, 1023));
    }

    #[test]
    fn segment_overflow_is_split_or_dropped() {
        let preset = HbaPreset::lsi3108();
        let sg: Vec<Segment> = (0..130).map(|i| Segment::new(i * 8192, 2048)).collect();
        let p = run(&sg, 520, &preset, BugSet::NONE).unwrap();
        assert_eq!(p.commands.len(), 2);
        let p = run(&sg, 520, &preset, BugSet::of(&[Bug::SgOverflowDrop])).unwrap();
        assert_eq!(p.commands.len(), 1);
        assert_eq!(p.commands[0].entries.len(), 129);
    }
}
