//! The fuzzer's input: a program of SCSI operations, each transfer with the
//! scatter-gather plan the host would hand the HBA.
//!
//! A program is what a file system and page cache do to a disk, reduced to
//! the parts that decide whether data survives: which blocks are written
//! with which SG list, where the flushes and FUA writes fall, and when power
//! is cut. Mutators ([`crate::mutators`]) edit it structurally; the
//! [`crate::harness::Harness`] runs it against the emulator beside the
//! consistency oracle.
//!
//! Every program is *fitted* to the device ([`ScsiProgram::fit`]) before it
//! runs, so any value a mutator or `arbitrary` produces is executable: each
//! SG list is trimmed or extended to cover exactly its transfer, segments of
//! one command never overlap (a host never DMAs two blocks through the same
//! bytes), and sizes are capped so one input cannot ask for gigabytes of
//! host memory. LBAs are left alone: an out-of-range LBA is a legitimate
//! test of the device's CHECK CONDITION (SBC-4 4.5: LOGICAL BLOCK ADDRESS
//! OUT OF RANGE).

use arbitrary::{Arbitrary, Unstructured};
use libafl::inputs::Input;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::Hash;
use std::path::Path;
use trace::{Lba, PhysAddr, Segment};

/// One data transfer (READ or WRITE) with its SG plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    /// First logical block.
    pub lba: Lba,
    /// Number of blocks (the CDB's TRANSFER LENGTH).
    pub blocks: u32,
    /// FUA: for a write, through to the medium before GOOD; for a read, from
    /// the medium (SBC-4 5.11, 5.40).
    pub fua: bool,
    /// Host buffer as the SG list the HBA receives, in data order.
    pub sg: Vec<Segment>,
    /// For reads: bytes the host asks for beyond what the CDB transfers (a
    /// short transfer: the device must report them as residual, SAM-5
    /// 5.4.3). Always 0 for writes.
    #[serde(default)]
    pub extra: u32,
}

/// One operation of a program.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// WRITE(10/16) of self-describing blocks.
    Write(Transfer),
    /// READ(10/16), checked against the oracle.
    Read(Transfer),
    /// SYNCHRONIZE CACHE(10/16) of a range (0 blocks: to the end of the
    /// medium, SBC-4 5.26).
    SyncCache {
        /// First block to flush.
        lba: Lba,
        /// Blocks to flush; 0 means through the last LBA.
        blocks: u32,
        /// IMMED: GOOD before the flush completes.
        immed: bool,
    },
    /// Power is cut: the volatile cache loses what it has not destaged.
    PowerLoss,
    /// Logical unit reset: the cache survives, a unit attention is raised.
    Reset,
    /// MODE SELECT of the caching page with WCE on or off.
    SetWce(bool),
    /// WRITE SAME(16): one block of data replicated over a range, or a
    /// deallocation with UNMAP set.
    WriteSame {
        /// First block.
        lba: Lba,
        /// Blocks to write.
        blocks: u32,
        /// UNMAP bit: deallocate instead of writing, if the LUN can.
        unmap: bool,
        /// SG plan of the single Data-Out block.
        sg: Vec<Segment>,
    },
    /// UNMAP of one range.
    Unmap {
        /// First block.
        lba: Lba,
        /// Blocks to deallocate.
        blocks: u32,
    },
    /// The next command is sent with the ORDERED task attribute (SAM-5
    /// 8.6: every older task completes before it starts).
    Barrier,
}

/// The kind of an [`Op`], for shapes, statistics and mutators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpKind {
    /// [`Op::Write`].
    Write,
    /// [`Op::Read`].
    Read,
    /// [`Op::SyncCache`].
    SyncCache,
    /// [`Op::PowerLoss`].
    PowerLoss,
    /// [`Op::Reset`].
    Reset,
    /// [`Op::SetWce`].
    SetWce,
    /// [`Op::WriteSame`].
    WriteSame,
    /// [`Op::Unmap`].
    Unmap,
    /// [`Op::Barrier`].
    Barrier,
}

impl OpKind {
    /// One letter per kind, for op-shape signatures (`W` write, `F` FUA
    /// write is spelled by [`Op::shape_letter`]).
    pub fn letter(self) -> char {
        match self {
            OpKind::Write => 'W',
            OpKind::Read => 'R',
            OpKind::SyncCache => 'S',
            OpKind::PowerLoss => 'P',
            OpKind::Reset => 'X',
            OpKind::SetWce => 'C',
            OpKind::WriteSame => 'M',
            OpKind::Unmap => 'U',
            OpKind::Barrier => 'B',
        }
    }
}

impl Op {
    /// This op's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Write(_) => OpKind::Write,
            Op::Read(_) => OpKind::Read,
            Op::SyncCache { .. } => OpKind::SyncCache,
            Op::PowerLoss => OpKind::PowerLoss,
            Op::Reset => OpKind::Reset,
            Op::SetWce(_) => OpKind::SetWce,
            Op::WriteSame { .. } => OpKind::WriteSame,
            Op::Unmap { .. } => OpKind::Unmap,
            Op::Barrier => OpKind::Barrier,
        }
    }

    /// The op's letter in a shape signature: the kind's letter, with FUA
    /// writes as `F`, IMMED flushes as `I` and WCE off as `c`, since those
    /// change what is durable.
    pub fn shape_letter(&self) -> char {
        match self {
            Op::Write(t) if t.fua => 'F',
            Op::SyncCache { immed: true, .. } => 'I',
            Op::SetWce(false) => 'c',
            other => other.kind().letter(),
        }
    }

    /// The op's transfer, for reads and writes.
    pub fn transfer(&self) -> Option<&Transfer> {
        match self {
            Op::Write(t) | Op::Read(t) => Some(t),
            _ => None,
        }
    }

    /// The op's transfer, mutably.
    pub fn transfer_mut(&mut self) -> Option<&mut Transfer> {
        match self {
            Op::Write(t) | Op::Read(t) => Some(t),
            _ => None,
        }
    }

    /// The op's SG list, for every op that moves data.
    pub fn sg_mut(&mut self) -> Option<&mut Vec<Segment>> {
        match self {
            Op::Write(t) | Op::Read(t) => Some(&mut t.sg),
            Op::WriteSame { sg, .. } => Some(sg),
            _ => None,
        }
    }

    /// The op's SG list, for every op that moves data.
    pub fn sg(&self) -> Option<&[Segment]> {
        match self {
            Op::Write(t) | Op::Read(t) => Some(&t.sg),
            Op::WriteSame { sg, .. } => Some(sg),
            _ => None,
        }
    }

    /// The LBA range the op addresses, if it addresses one.
    pub fn lba_range(&self) -> Option<(u64, u32)> {
        match self {
            Op::Write(t) | Op::Read(t) => Some((t.lba.0, t.blocks)),
            Op::SyncCache { lba, blocks, .. }
            | Op::WriteSame { lba, blocks, .. }
            | Op::Unmap { lba, blocks } => Some((lba.0, *blocks)),
            _ => None,
        }
    }

    /// Moves the op's LBA, where it has one.
    pub fn set_lba(&mut self, to: u64) {
        match self {
            Op::Write(t) | Op::Read(t) => t.lba = Lba(to),
            Op::SyncCache { lba, .. } | Op::WriteSame { lba, .. } | Op::Unmap { lba, .. } => {
                *lba = Lba(to)
            }
            _ => {}
        }
    }
}

/// The device and host a program is fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Device capacity in blocks (mutators aim inside it).
    pub capacity_blocks: u64,
    /// Most operations in one program.
    pub max_ops: usize,
    /// Most bytes in one transfer: caps the host memory an input can ask for.
    pub max_transfer_bytes: u32,
    /// Most SG entries in one command.
    pub max_segments: usize,
}

impl Limits {
    /// Default cap on a program's length.
    pub const MAX_OPS: usize = 256;
    /// Default cap on one transfer: 4 MiB, eight times the LSI 3108's
    /// 512 KiB limit, so oversize transfers stay reachable.
    pub const MAX_TRANSFER_BYTES: u32 = 4 << 20;
    /// Default cap on a read's slack beyond its data.
    pub const MAX_EXTRA: u32 = 64 << 10;
    /// Default cap on one SG list: well past the 129 entries the LSI 3108
    /// takes, so overflowing it stays reachable.
    pub const MAX_SEGMENTS: usize = 1024;

    /// Limits for a device of `capacity_blocks` blocks of `block_size` bytes.
    pub fn new(block_size: u32, capacity_blocks: u64) -> Limits {
        Limits {
            block_size,
            capacity_blocks,
            max_ops: Self::MAX_OPS,
            max_transfer_bytes: Self::MAX_TRANSFER_BYTES,
            max_segments: Self::MAX_SEGMENTS,
        }
    }

    /// Most blocks in one transfer.
    pub fn max_blocks(&self) -> u32 {
        (self.max_transfer_bytes / self.block_size.max(1)).max(1)
    }
}

/// Where the fitter places a buffer that has no segment at all: 1 MiB,
/// ordinary low memory.
pub const DEFAULT_BUFFER: u64 = 0x10_0000;

/// Page size used when the fitter must move a segment: real SG entries
/// start on page boundaries more often than not.
const PAGE: u64 = 4096;

/// A program of SCSI operations: the fuzzer's input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ScsiProgram {
    /// The operations, in submission order.
    pub ops: Vec<Op>,
}

/// The first bytes of a zstd frame (RFC 8878 §3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Largest program a file may unpack to. The biggest programs a campaign
/// keeps are a few MB of JSON (SG lists of a thousand segments per
/// transfer); this only stops a damaged or hostile file from taking all
/// memory.
const MAX_PROGRAM_JSON: u64 = 256 << 20;

impl ScsiProgram {
    /// What a campaign's queue keeps of a program: its compact JSON,
    /// compressed with zstd (level 1), one record of a pack
    /// ([`crate::queue`]). Campaigns add thousands of entries a minute and
    /// each client writes every entry it keeps; SG lists compress about
    /// ninefold, so an overnight campaign writes gigabytes, not tens of
    /// them. `zstdcat PACK | jq` reads them.
    pub fn to_queue_bytes(&self) -> Result<Vec<u8>, String> {
        thread_local! {
            /// One compression context per thread: making one per entry was
            /// most of what compressing cost.
            static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let json = serde_json::to_vec(self).map_err(|e| format!("program to JSON: {e}"))?;
        ZSTD.with(|z| {
            let mut z = z.borrow_mut();
            if z.is_none() {
                let mut c = zstd::bulk::Compressor::new(1).map_err(|e| format!("zstd: {e}"))?;
                // Tables sized for a program rather than level 1's defaults:
                // zstd clears them before every frame, and that clearing
                // (and faulting the pages in) was a third of what keeping
                // an entry cost.
                for p in [
                    zstd::zstd_safe::CParameter::WindowLog(17),
                    zstd::zstd_safe::CParameter::HashLog(12),
                ] {
                    c.set_parameter(p).map_err(|e| format!("zstd: {e}"))?;
                }
                *z = Some(c);
            }
            let z = z.as_mut().expect("made above");
            z.compress(&json)
                .map_err(|e| format!("compressing the program: {e}"))
        })
    }

    /// A program from its JSON, plain (hand-written seeds, `program.json`
    /// of a finding) or zstd-compressed (queue entries).
    pub fn from_saved(bytes: &[u8]) -> Result<ScsiProgram, String> {
        if bytes.starts_with(&ZSTD_MAGIC) {
            thread_local! {
                /// One decompression context per thread: a campaign reloads
                /// entries its cache evicted every time it picks them.
                static UNZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            // The size the frame declares (ours always do); capped, so a
            // damaged or hostile header cannot ask for all memory.
            let size = match zstd::zstd_safe::get_frame_content_size(bytes) {
                Ok(Some(n)) if n <= MAX_PROGRAM_JSON => n as usize,
                Ok(Some(_)) => {
                    return Err(format!(
                        "unpacks to more than {} MiB of JSON",
                        MAX_PROGRAM_JSON >> 20
                    ))
                }
                Ok(None) | Err(_) => return Err("zstd frame: no content size in its header".into()),
            };
            let json = UNZSTD.with(|z| {
                let mut z = z.borrow_mut();
                if z.is_none() {
                    *z = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
                }
                let z = z.as_mut().expect("made above");
                z.decompress(bytes, size)
                    .map_err(|e| format!("zstd frame: {e}"))
            })?;
            serde_json::from_slice(&json).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())
        }
    }
}

impl Input for ScsiProgram {
    /// [`ScsiProgram::to_queue_bytes`], written atomically (temporary file,
    /// then rename), so a campaign killed mid-write never leaves a half
    /// entry.
    fn to_file<P: AsRef<Path>>(&self, path: P) -> Result<(), libafl::Error> {
        let bytes = self.to_queue_bytes().map_err(libafl::Error::serialize)?;
        libafl_bolts::fs::write_file_atomic(path, &bytes)
    }

    fn from_file<P: AsRef<Path>>(path: P) -> Result<Self, libafl::Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)?;
        ScsiProgram::from_saved(&bytes).map_err(|e| {
            libafl::Error::serialize(format!("{}: not a Scuzz program: {e}", path.display()))
        })
    }
}

impl ScsiProgram {
    /// A program of `ops`.
    pub fn new(ops: Vec<Op>) -> ScsiProgram {
        ScsiProgram { ops }
    }

    /// The op-shape string: one letter per op (see [`Op::shape_letter`]).
    pub fn shape(&self) -> String {
        self.ops.iter().map(Op::shape_letter).collect()
    }

    /// Number of ops of `kind`.
    pub fn count(&self, kind: OpKind) -> usize {
        self.ops.iter().filter(|o| o.kind() == kind).count()
    }

    /// Makes the program executable on a device with `limits` (see the
    /// module documentation). Idempotent: a fitted program fits unchanged.
    pub fn fit(&mut self, limits: &Limits) {
        self.ops.truncate(limits.max_ops);
        let bs = u64::from(limits.block_size.max(1));
        for op in &mut self.ops {
            let write = matches!(op, Op::Write(_));
            match op {
                Op::Write(t) | Op::Read(t) => {
                    t.blocks = t.blocks.min(limits.max_blocks());
                    t.extra = if write {
                        0
                    } else {
                        t.extra.min(Limits::MAX_EXTRA)
                    };
                    fit_sg_if_needed(&mut t.sg, u64::from(t.blocks) * bs, limits.max_segments);
                }
                Op::WriteSame { sg, .. } => fit_sg_if_needed(sg, bs, limits.max_segments),
                _ => {}
            }
        }
    }

    /// Whether [`ScsiProgram::fit`] would leave this program as it is,
    /// found without copying it: the harness asks before every run, and
    /// the programs a campaign runs come fitted from the mutators.
    pub fn is_fitted(&self, limits: &Limits) -> bool {
        let bs = u64::from(limits.block_size.max(1));
        self.ops.len() <= limits.max_ops
            && self.ops.iter().all(|op| match op {
                Op::Write(t) | Op::Read(t) => {
                    let write = matches!(op, Op::Write(_));
                    t.blocks <= limits.max_blocks()
                        && if write {
                            t.extra == 0
                        } else {
                            t.extra <= Limits::MAX_EXTRA
                        }
                        && sg_fitted(&t.sg, u64::from(t.blocks) * bs, limits.max_segments)
                }
                Op::WriteSame { sg, .. } => sg_fitted(sg, bs, limits.max_segments),
                _ => true,
            })
    }

    /// Builds a program from unstructured bytes and fits it: the plain
    /// random generator (no seeds, no feedback) and the campaign's fallback
    /// when no seed is given.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> ScsiProgram {
        let mut p = ScsiProgram::arbitrary_take_rest(Unstructured::new(bytes)).unwrap_or_default();
        p.fit(limits);
        p
    }
}

/// Whether [`fit_sg`] would leave `sg` as it is for `bytes` bytes: no
/// empty entry, within the entry cap, exactly `bytes` long (so, with no
/// empty entry, every entry needed), below 2^64, and each entry clear of
/// the span of those before it.
fn sg_fitted(sg: &[Segment], bytes: u64, max_segments: usize) -> bool {
    if sg.len() > max_segments.max(1) {
        return false;
    }
    let mut total = 0u64;
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for s in sg {
        let len = u64::from(s.len);
        if len == 0 {
            return false;
        }
        total += len;
        let Some(end) = s.addr.0.checked_add(len) else {
            return false;
        };
        if s.addr.0 < hi && end > lo {
            return false;
        }
        lo = lo.min(s.addr.0);
        hi = hi.max(end);
    }
    total == bytes
}

/// [`fit_sg`], after one read-only pass that finds most lists already
/// fitted: a mutation changes one or two transfers of a program that is
/// fitted again after every mutation of a stack, and `fit_sg`'s passes
/// over every list (each writing every entry) were a twentieth of a
/// campaign's time.
fn fit_sg_if_needed(sg: &mut Vec<Segment>, bytes: u64, max_segments: usize) {
    if !sg_fitted(sg, bytes, max_segments) {
        fit_sg(sg, bytes, max_segments);
    }
}

/// Fits `sg` to exactly `bytes` bytes: zero-length entries dropped, the list
/// capped at `max_segments`, surplus trimmed from the tail, a shortfall added
/// to the last entry (or a new one after it), addresses kept below 2^64, and
/// an entry overlapping an earlier one of the same list moved past them.
pub fn fit_sg(sg: &mut Vec<Segment>, bytes: u64, max_segments: usize) {
    sg.retain(|s| s.len > 0);
    sg.truncate(max_segments.max(1));
    // Trim to `bytes`.
    let mut remaining = bytes;
    let mut keep = 0;
    for s in sg.iter_mut() {
        if remaining == 0 {
            break;
        }
        let take = u64::from(s.len).min(remaining);
        s.len = take as u32;
        remaining -= take;
        keep += 1;
    }
    sg.truncate(keep);
    // Extend to `bytes`.
    while remaining > 0 {
        match sg.last_mut() {
            Some(last) if u64::from(last.len) + remaining <= u64::from(u32::MAX) => {
                last.len += remaining as u32;
                remaining = 0;
            }
            _ => {
                let take = remaining.min(u64::from(u32::MAX) & !(PAGE - 1));
                let addr = sg.last().map_or(DEFAULT_BUFFER, |l| l.end());
                if sg.len() >= max_segments.max(1) {
                    // No room for another entry: grow the last one as far as
                    // a u32 length allows, then stop (a transfer cap far
                    // below 4 GiB makes this unreachable in practice).
                    if let Some(last) = sg.last_mut() {
                        let room = u64::from(u32::MAX - last.len);
                        last.len += room.min(remaining) as u32;
                    }
                    break;
                }
                sg.push(Segment::new(addr, take as u32));
                remaining -= take;
            }
        }
    }
    // Keep every entry below 2^64 and apart from the others.
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for s in sg.iter_mut() {
        let len = u64::from(s.len);
        if s.addr.0.checked_add(len).is_none() {
            s.addr = PhysAddr((u64::MAX - len) & !(PAGE - 1));
        }
        let (start, end) = (s.addr.0, s.addr.0 + len);
        if start < hi && end > lo {
            let moved = hi.div_ceil(PAGE).saturating_mul(PAGE);
            s.addr = PhysAddr(if moved.checked_add(len).is_some() {
                moved
            } else {
                DEFAULT_BUFFER
            });
        }
        lo = lo.min(s.addr.0);
        hi = hi.max(s.addr.0 + len);
    }
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Op> {
        let transfer = |u: &mut Unstructured<'a>| -> arbitrary::Result<Transfer> {
            Ok(Transfer {
                lba: Lba(u.arbitrary()?),
                blocks: u.arbitrary()?,
                fua: u.arbitrary()?,
                sg: u.arbitrary()?,
                extra: if u.ratio(1, 8)? { u.arbitrary()? } else { 0 },
            })
        };
        Ok(match u.int_in_range(0u8..=8)? {
            0 => Op::Write(transfer(u)?),
            1 => Op::Read(transfer(u)?),
            2 => Op::SyncCache {
                lba: Lba(u.arbitrary()?),
                blocks: u.arbitrary()?,
                immed: u.arbitrary()?,
            },
            3 => Op::PowerLoss,
            4 => Op::Reset,
            5 => Op::SetWce(u.arbitrary()?),
            6 => Op::WriteSame {
                lba: Lba(u.arbitrary()?),
                blocks: u.arbitrary()?,
                unmap: u.arbitrary()?,
                sg: u.arbitrary()?,
            },
            7 => Op::Unmap {
                lba: Lba(u.arbitrary()?),
                blocks: u.arbitrary()?,
            },
            _ => Op::Barrier,
        })
    }
}

impl<'a> Arbitrary<'a> for ScsiProgram {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<ScsiProgram> {
        Ok(ScsiProgram {
            ops: u.arbitrary()?,
        })
    }
}

fn write_sg(f: &mut fmt::Formatter<'_>, sg: &[Segment]) -> fmt::Result {
    const SHOWN: usize = 6;
    write!(f, "sg[{}]", sg.len())?;
    for (i, s) in sg.iter().take(SHOWN).enumerate() {
        write!(
            f,
            "{}{}+{:#x}",
            if i == 0 { " " } else { ", " },
            s.addr,
            s.len
        )?;
    }
    if sg.len() > SHOWN {
        write!(f, ", ... ({} more)", sg.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write(t) | Op::Read(t) => {
                let name = if matches!(self, Op::Write(_)) {
                    "WRITE"
                } else {
                    "READ"
                };
                write!(
                    f,
                    "{name:<13} lba {} +{}{}  ",
                    t.lba,
                    t.blocks,
                    if t.fua { " FUA" } else { "" }
                )?;
                write_sg(f, &t.sg)
            }
            Op::SyncCache { lba, blocks, immed } => {
                write!(f, "SYNC CACHE    lba {lba} +{blocks}")?;
                if *blocks == 0 {
                    f.write_str(" (to end)")?;
                }
                if *immed {
                    f.write_str(" IMMED")?;
                }
                Ok(())
            }
            Op::PowerLoss => f.write_str("POWER LOSS"),
            Op::Reset => f.write_str("LUN RESET"),
            Op::SetWce(on) => write!(f, "MODE SELECT   caching WCE={}", u8::from(*on)),
            Op::WriteSame {
                lba,
                blocks,
                unmap,
                sg,
            } => {
                write!(
                    f,
                    "WRITE SAME    lba {lba} +{blocks}{}  ",
                    if *unmap { " UNMAP" } else { "" }
                )?;
                write_sg(f, sg)
            }
            Op::Unmap { lba, blocks } => write!(f, "UNMAP         lba {lba} +{blocks}"),
            Op::Barrier => f.write_str("BARRIER       (next command ORDERED)"),
        }
    }
}

impl fmt::Display for ScsiProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "{i:>4}  {op}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(512, 1 << 17)
    }

    /// `is_fitted` answers what fitting a copy and comparing would, on
    /// programs from raw bytes (mostly unfitted), their fitted forms, and
    /// fitted forms nudged by one field.
    #[test]
    fn is_fitted_agrees_with_fitting_a_copy() {
        let mut small = limits();
        small.max_segments = 4;
        small.max_ops = 6;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut seen = [0usize; 2];
        for round in 0..3000 {
            let l = if round % 2 == 0 { limits() } else { small };
            let bytes: Vec<u8> = (0..64 + next() % 512).map(|_| next() as u8).collect();
            let raw =
                ScsiProgram::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap_or_default();
            let mut fitted = raw.clone();
            fitted.fit(&l);
            let mut nudged = fitted.clone();
            if let Some(op) = nudged.ops.iter_mut().find(|o| o.sg().is_some()) {
                let (Op::Write(Transfer { sg, .. })
                | Op::Read(Transfer { sg, .. })
                | Op::WriteSame { sg, .. }) = op
                else {
                    unreachable!("ops with an SG list")
                };
                let total: u32 = sg.iter().map(|s| s.len).sum();
                let over = l.max_segments as u32 + 1;
                match next() % 5 {
                    // The same bytes in one entry more than the cap.
                    3 if total >= 512 * over => {
                        *sg = (0..over)
                            .map(|k| {
                                let len = if k + 1 < over { 512 } else { total - 512 * k };
                                Segment::new(0x10_0000 + u64::from(k) * (1 << 20), len)
                            })
                            .collect();
                    }
                    0 => sg[0].len += 1,
                    1 => sg.push(Segment::new(sg[0].addr.0 + (1 << 30), 0)),
                    // The same bytes, as two entries over one buffer.
                    2 if total >= 1024 => {
                        let a = sg[0].addr.0;
                        *sg = vec![Segment::new(a, total - 512), Segment::new(a, 512)];
                    }
                    _ => sg[0].addr = PhysAddr(u64::MAX - 100),
                }
            }
            // One field of a transfer past its cap, everything else fitted.
            let mut stretched = fitted.clone();
            let bs = l.block_size;
            match next() % 3 {
                0 => {
                    while stretched.ops.len() <= l.max_ops {
                        stretched.ops.push(Op::Barrier);
                    }
                }
                k => {
                    let blocks = l.max_blocks() + 1;
                    let t = Transfer {
                        lba: Lba(0),
                        blocks: if k == 1 { blocks } else { 1 },
                        fua: false,
                        sg: vec![Segment::new(
                            0x10_0000,
                            if k == 1 { blocks * bs } else { bs },
                        )],
                        extra: if k == 1 { 0 } else { Limits::MAX_EXTRA + 1 },
                    };
                    stretched.ops.insert(0, Op::Read(t));
                    stretched.ops.truncate(l.max_ops);
                }
            }
            for p in [&raw, &fitted, &nudged, &stretched] {
                let mut c = p.clone();
                c.fit(&l);
                let want = &c == p;
                assert_eq!(p.is_fitted(&l), want, "round {round}: {p:?}");
                seen[usize::from(want)] += 1;
            }
        }
        assert!(
            seen[0] > 1000 && seen[1] > 1000,
            "both answers exercised: {seen:?}"
        );
    }

    #[test]
    fn fit_covers_exactly_the_transfer() {
        let mut p = ScsiProgram::new(vec![Op::Write(Transfer {
            lba: Lba(0),
            blocks: 4,
            fua: false,
            sg: vec![
                Segment::new(0x1000, 100),
                Segment::new(0x9000, 0),
                Segment::new(0x20000, 5000),
            ],
            extra: 0,
        })]);
        p.fit(&limits());
        let sg = p.ops[0].sg().unwrap();
        assert_eq!(sg.iter().map(|s| u64::from(s.len)).sum::<u64>(), 2048);
        assert_eq!(
            sg,
            &[Segment::new(0x1000, 100), Segment::new(0x20000, 1948)]
        );
        let before = p.clone();
        p.fit(&limits());
        assert_eq!(p, before, "fitting is idempotent");
    }

    #[test]
    fn fit_extends_a_short_plan_and_creates_a_missing_one() {
        let mut sg = vec![Segment::new(0x4000, 512)];
        fit_sg(&mut sg, 4096, 8);
        assert_eq!(sg, vec![Segment::new(0x4000, 4096)]);
        let mut empty = vec![];
        fit_sg(&mut empty, 1024, 8);
        assert_eq!(empty, vec![Segment::new(DEFAULT_BUFFER, 1024)]);
    }

    #[test]
    fn fit_separates_overlapping_segments_and_stays_below_2_64() {
        let mut sg = vec![
            Segment::new(0x1000, 0x1000),
            Segment::new(0x1800, 0x1000),
            Segment::new(u64::MAX - 10, 0x200),
        ];
        fit_sg(&mut sg, 0x2200, 8);
        for (i, a) in sg.iter().enumerate() {
            assert!(a.addr.0.checked_add(u64::from(a.len)).is_some());
            for b in &sg[i + 1..] {
                assert!(
                    a.end() <= b.addr.0 || b.end() <= a.addr.0,
                    "{a:?} overlaps {b:?}"
                );
            }
        }
    }

    #[test]
    fn arbitrary_programs_always_fit() {
        let mut seed = 0x1234_5678u64;
        for _ in 0..300 {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            let p = ScsiProgram::from_bytes(&bytes, &limits());
            for op in &p.ops {
                if let Some(t) = op.transfer() {
                    let total: u64 = t.sg.iter().map(|s| u64::from(s.len)).sum();
                    assert_eq!(total, u64::from(t.blocks) * 512);
                    assert!(t.sg.len() <= Limits::MAX_SEGMENTS);
                }
            }
        }
    }

    #[test]
    fn programs_round_trip_through_json_files() {
        let dir = std::env::temp_dir().join(format!("scuzz-prog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = ScsiProgram::new(vec![
            Op::SetWce(true),
            Op::Write(Transfer {
                lba: Lba(8),
                blocks: 1,
                fua: true,
                sg: vec![Segment::new(0x1_0000_0000, 512)],
                extra: 0,
            }),
            Op::SyncCache {
                lba: Lba(0),
                blocks: 0,
                immed: true,
            },
            Op::PowerLoss,
        ]);
        let path = dir.join("p.json");
        p.to_file(&path).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            on_disk.starts_with(&ZSTD_MAGIC),
            "queue entries are compressed"
        );
        assert_eq!(ScsiProgram::from_file(&path).unwrap(), p);
        assert_eq!(p.shape(), "CFIP");
        // Plain JSON (a hand-written seed, a finding's program.json) reads too.
        std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
        assert_eq!(ScsiProgram::from_file(&path).unwrap(), p);
        std::fs::write(&path, b"{ not json").unwrap();
        let e = ScsiProgram::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("p.json"), "{e}");
        // A damaged frame is an error naming the file, not a panic.
        std::fs::write(&path, &on_disk[..on_disk.len() / 2]).unwrap();
        let e = ScsiProgram::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("p.json") && e.contains("zstd"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
