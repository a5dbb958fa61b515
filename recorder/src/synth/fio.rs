//! fio's I/O pattern for `rw=write|randwrite|rw`, buffered or direct, with
//! an optional verify pass.
//!
//! Direct I/O (`direct=1`) takes fio's own buffers (one per `iodepth` slot,
//! allocated once) and maps them for DMA through the path that honours the
//! addressable-bits limit: an IOMMU (DART on Apple silicon) maps each
//! buffer at one contiguous I/O virtual address below the limit, so a
//! command carries few, large segments, all below 4 GiB on a 32-bit HBA.
//! The OS splitter still cuts each fio block at its byte and segment
//! limits. Buffered I/O goes through the same page cache and writeback as
//! [`super::cp`]: page frames from anywhere in memory, clustered by the
//! splitter.

use super::memory::{PhysMemory, FOUR_GIB};
use super::payload::PayloadMaker;
use super::rng::SplitMix64;
use super::timeline::{Command, CommandKind, Timeline};
use super::writeback::{FileGeometry, PageCache};
use super::{Machine, SynthError, SynthSummary};
use crate::cdbs;
use trace::{Event, Payload, Segment, TaskAttr};

/// fio's `rw=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FioRw {
    /// Sequential writes.
    Write,
    /// Random writes, each block once (fio's random map).
    RandWrite,
    /// Sequential mixed reads and writes (`rwmixread=50`).
    Rw,
}

impl std::str::FromStr for FioRw {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self, SynthError> {
        match s {
            "write" => Ok(FioRw::Write),
            "randwrite" => Ok(FioRw::RandWrite),
            "rw" | "readwrite" => Ok(FioRw::Rw),
            other => Err(SynthError::InvalidParameter {
                name: "rw",
                reason: format!("`{other}` is not write, randwrite or rw"),
            }),
        }
    }
}

/// Parameters of `scuzz synth fio`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FioParams {
    /// The host.
    pub machine: Machine,
    /// `rw=`.
    pub rw: FioRw,
    /// `bs=` in bytes.
    pub bs: u64,
    /// `size=` in bytes.
    pub size: u64,
    /// `direct=1`.
    pub direct: bool,
    /// `verify=crc32c` (any method): read everything written back.
    pub verify: bool,
    /// `iodepth=` (direct I/O; buffered writes go through writeback's depth).
    pub iodepth: usize,
    /// `end_fsync=1`: fsync (SYNCHRONIZE CACHE) after the write phase.
    pub end_fsync: bool,
    /// `rwmixread=` for `rw=rw`, in percent.
    pub rwmixread: u32,
}

impl FioParams {
    /// fio defaults for the given pattern: no verify, iodepth 1, end_fsync.
    pub fn new(machine: Machine, rw: FioRw, bs: u64, size: u64, direct: bool) -> Self {
        FioParams {
            machine,
            rw,
            bs,
            size,
            direct,
            verify: false,
            iodepth: 1,
            end_fsync: true,
            rwmixread: 50,
        }
    }

    /// Device capacity the stream needs, in blocks.
    pub fn capacity_blocks(&self) -> u64 {
        (FILE_START + self.size.div_ceil(1 << 20) * (1 << 20) + (1 << 20))
            / u64::from(self.machine.block_size)
    }
}

/// fio's file starts 1 MiB into the device (a partition's alignment).
pub const FILE_START: u64 = 1 << 20;

/// A bijection on `0..n` with O(1) state: a 4-round Feistel network on the
/// next even power of two, cycle-walked into range. fio keeps a bitmap
/// (`random_map`) to hit each block once; this gives the same property for
/// any size without the bitmap.
struct Permutation {
    n: u64,
    half: u32,
    keys: [u64; 4],
}

impl Permutation {
    fn new(n: u64, rng: &mut SplitMix64) -> Self {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let bits = bits + (bits & 1);
        Permutation {
            n,
            half: bits / 2,
            keys: [
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
            ],
        }
    }

    fn round(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut l, mut r) = (x >> self.half, x & mask);
        for k in self.keys {
            let mut z = (r ^ k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z ^= z >> 29;
            (l, r) = (r, l ^ (z & mask));
        }
        (l << self.half) | r
    }

    fn get(&self, i: u64) -> u64 {
        let mut x = self.round(i);
        while x >= self.n {
            x = self.round(x);
        }
        x
    }
}

struct Direct {
    geom: FileGeometry,
    iovm_base: u64,
    slot_stride: u64,
    slots: u64,
    next_slot: u64,
}

impl Direct {
    /// One fio I/O of `len` bytes at file offset `off` from the next buffer
    /// slot, split by the splitter into commands.
    #[allow(clippy::too_many_arguments)]
    fn io(
        &mut self,
        write: bool,
        off: u64,
        len: u64,
        data_in: bool,
        m: &Machine,
        t: &mut Timeline,
        pm: &mut PayloadMaker,
        sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<(u64, u64, usize), SynthError> {
        let lim = m.hba.splitter;
        let slot = self.next_slot % self.slots;
        self.next_slot += 1;
        let buf = self.iovm_base + slot * self.slot_stride;
        let seg_max = u64::from(lim.max_segment_bytes);
        let max_bytes = u64::from(lim.max_bytes(write))
            .min(seg_max.saturating_mul(u64::from(lim.max_segments(write))))
            / u64::from(m.block_size)
            * u64::from(m.block_size);
        let (mut done, mut cmds, mut max_cmd, mut max_segs) = (0u64, 0u64, 0u64, 0usize);
        while done < len {
            let n = (len - done).min(max_bytes.max(u64::from(m.block_size)));
            let mut sg = Vec::new();
            let mut o = 0;
            while o < n {
                let l = (n - o).min(seg_max);
                sg.push(Segment::new(buf + done + o, l as u32));
                o += l;
            }
            let lba = self.geom.start_lba + (off + done) / u64::from(m.block_size);
            let blocks = (n / u64::from(m.block_size)) as u32;
            let payload = pm.make(lba, blocks, 1);
            let (data_out, data_in) = match (write, data_in) {
                (true, _) => (payload, Payload::None),
                (false, true) => (Payload::None, payload),
                (false, false) => (Payload::None, Payload::None),
            };
            max_segs = max_segs.max(sg.len());
            t.submit(
                Command {
                    kind: if write {
                        CommandKind::Write
                    } else {
                        CommandKind::Read
                    },
                    cdb: cdbs::read_write(write, lba, blocks, false)?,
                    xfer_len: n as u32,
                    sg,
                    data_out,
                    data_in,
                    attr: TaskAttr::Simple,
                },
                sink,
            )?;
            cmds += 1;
            max_cmd = max_cmd.max(n);
            done += n;
        }
        Ok((cmds, max_cmd, max_segs))
    }
}

/// Streams the fio workload into `sink`.
pub fn synth_fio(
    p: &FioParams,
    sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
) -> Result<SynthSummary, SynthError> {
    let m = &p.machine;
    m.validate()?;
    let bsz = u64::from(m.block_size);
    let bad = |name, reason: String| Err(SynthError::InvalidParameter { name, reason });
    if p.bs == 0 || p.bs % bsz != 0 {
        return bad(
            "bs",
            format!(
                "{} is not a positive multiple of the {bsz}-byte block",
                p.bs
            ),
        );
    }
    if p.bs > u64::from(u32::MAX) {
        return bad("bs", format!("{} exceeds 4 GiB", p.bs));
    }
    if p.size < p.bs || p.size % p.bs != 0 {
        return bad(
            "size",
            format!("{} is not a positive multiple of bs={}", p.size, p.bs),
        );
    }
    if p.iodepth == 0 {
        return bad("iodepth", "must be at least 1".into());
    }
    if p.rwmixread > 100 {
        return bad("rwmixread", format!("{} is over 100", p.rwmixread));
    }
    let geom = FileGeometry {
        start_lba: FILE_START / bsz,
        size: p.size,
        block_size: m.block_size,
        page_size: m.page_size,
    };
    let mut rng = SplitMix64::new(m.seed ^ 0xf10);
    let mut pm = PayloadMaker::new(m.payload, m.seed, m.block_size, m.digest_granularity);
    let n = p.size / p.bs;
    let perm = Permutation::new(n, &mut rng);
    let offset_of = |i: u64| -> u64 {
        match p.rw {
            FioRw::RandWrite => perm.get(i) * p.bs,
            FioRw::Write | FioRw::Rw => i * p.bs,
        }
    };
    let label = format!(
        "synth fio: rw={} bs={} size={} direct={} iodepth={} hba {}",
        match p.rw {
            FioRw::Write => "write",
            FioRw::RandWrite => "randwrite",
            FioRw::Rw => "rw",
        },
        p.bs,
        p.size,
        u8::from(p.direct),
        p.iodepth,
        m.hba.name
    );
    let mut summary = SynthSummary {
        capacity_blocks: p.capacity_blocks(),
        ..SynthSummary::default()
    };
    let mut written: Vec<bool> = Vec::new();
    let track_writes = p.verify && p.rw == FioRw::Rw;
    if track_writes {
        written = vec![
            false;
            usize::try_from(n).map_err(|_| SynthError::TooLarge {
                what: "fio job",
                bytes: p.size
            })?
        ];
    }
    let flush = |t: &mut Timeline,
                 sink: &mut dyn FnMut(Event) -> Result<(), SynthError>|
     -> Result<(), SynthError> {
        let mut s = |e| sink(e);
        t.drain(&mut s)?;
        t.submit(
            Command {
                kind: CommandKind::Flush,
                cdb: cdbs::sync_cache(0, 0)?,
                xfer_len: 0,
                sg: Vec::new(),
                data_out: Payload::None,
                data_in: Payload::None,
                attr: TaskAttr::Simple,
            },
            &mut s,
        )?;
        t.drain(&mut s)
    };

    if p.direct {
        let mut t = Timeline::new(p.iodepth.saturating_mul(4), m.latency);
        t.note(label, sink)?;
        let limit = m.hba.splitter.address_limit().min(FOUR_GIB);
        let slot_stride = p.bs.div_ceil(m.page_size) * m.page_size;
        let iovm_base = limit / 2;
        if iovm_base.saturating_add(slot_stride.saturating_mul(p.iodepth as u64)) > limit {
            return bad(
                "iodepth",
                format!(
                    "{} buffers of {} bytes do not fit below the DMA limit",
                    p.iodepth, p.bs
                ),
            );
        }
        let mut d = Direct {
            geom,
            iovm_base,
            slot_stride,
            slots: p.iodepth as u64,
            next_slot: 0,
        };
        let account = |s: &mut SynthSummary, write: bool, (c, b, g): (u64, u64, usize)| {
            let st = if write { &mut s.writes } else { &mut s.reads };
            st.commands += c;
            st.max_bytes = st.max_bytes.max(b);
            st.max_segments = st.max_segments.max(g);
        };
        for i in 0..n {
            let off = offset_of(i);
            let write = p.rw != FioRw::Rw || !rng.percent(p.rwmixread);
            if track_writes && write {
                written[i as usize] = true;
            }
            let r = d.io(write, off, p.bs, false, m, &mut t, &mut pm, sink)?;
            account(&mut summary, write, r);
        }
        if p.end_fsync {
            t.note("synth fio: end_fsync", sink)?;
            flush(&mut t, sink)?;
            summary.flushes += 1;
        }
        if p.verify {
            t.drain(sink)?;
            t.note("synth fio: verify", sink)?;
            for off in verify_offsets(p, n, &written) {
                let r = d.io(false, off, p.bs, true, m, &mut t, &mut pm, sink)?;
                account(&mut summary, false, r);
            }
        }
        t.drain(sink)?;
        summary.commands = t.stats().commands;
        return Ok(summary);
    }

    let mem =
        PhysMemory::new(m.page_size, m.mem, m.low_free, m.seed)?.with_max_run(m.max_run_pages);
    let mut cache = PageCache::new(geom, m.hba.splitter, mem, 1)?;
    let mut t = Timeline::new(m.writeback_depth, m.latency);
    t.note(label, sink)?;
    let pages_per_io = p.bs.div_ceil(m.page_size);
    for i in 0..n {
        let off = offset_of(i);
        let first = off / m.page_size;
        let write = p.rw != FioRw::Rw || !rng.percent(p.rwmixread);
        if write {
            if track_writes {
                written[i as usize] = true;
            }
            for q in first..first + pages_per_io {
                cache.dirty_page(q)?;
            }
            t.advance(p.bs * 1_000_000_000 / 4_000_000_000);
            if cache.dirty_bytes() >= m.dirty_window {
                cache.writeback(&mut t, &mut pm, sink)?;
            }
        } else {
            // A buffered read of data never written: a cache miss, read in
            // and returned as whatever the device holds (no expectation).
            let mut none = PayloadMaker::new(
                super::payload::PayloadKind::Pattern,
                m.seed,
                m.block_size,
                m.digest_granularity,
            );
            cache.read_pages(
                first,
                pages_per_io,
                m.read_cluster,
                &mut t,
                &mut none,
                &mut |e| {
                    sink(match e {
                        Event::Complete(mut c) => {
                            c.payload = Payload::None;
                            Event::Complete(c)
                        }
                        other => other,
                    })
                },
            )?;
        }
    }
    cache.writeback(&mut t, &mut pm, sink)?;
    if p.end_fsync {
        t.note("synth fio: end_fsync", sink)?;
        flush(&mut t, sink)?;
        summary.flushes += 1;
    }
    if p.verify {
        t.drain(sink)?;
        t.note("synth fio: caches invalidated; verify", sink)?;
        cache.drop_caches();
        for off in verify_offsets(p, n, &written) {
            cache.read_pages(
                off / m.page_size,
                pages_per_io,
                m.read_cluster,
                &mut t,
                &mut pm,
                sink,
            )?;
        }
    }
    t.drain(sink)?;
    summary.commands = t.stats().commands;
    summary.writes = cache.write_stats;
    let r = cache.read_stats;
    summary.reads = r;
    summary.memory = cache.memory().stats();
    Ok(summary)
}

/// Offsets fio's verify phase reads: every block written, in offset order
/// (fio sorts its verify list, `verify_sort=1`).
fn verify_offsets<'a>(
    p: &'a FioParams,
    n: u64,
    written: &'a [bool],
) -> impl Iterator<Item = u64> + 'a {
    (0..n)
        .filter(move |&i| p.rw != FioRw::Rw || written.get(i as usize).copied().unwrap_or(false))
        .map(move |i| i * p.bs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_hits_every_index_once() {
        for n in [1u64, 2, 3, 17, 1000, 4096] {
            let p = Permutation::new(n, &mut SplitMix64::new(n));
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let x = p.get(i);
                assert!(!seen[x as usize]);
                seen[x as usize] = true;
            }
        }
    }
}
