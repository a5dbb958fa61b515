//! `cp` of one file onto a file system on the device, through the page
//! cache, followed by an fsync and a verifying read of the copy.
//!
//! The stream, in order (see `docs/workloads.md` for why each step looks the
//! way it does):
//! 1. a journal record for the file's creation;
//! 2. the copy: `cp` writes the file chunk by chunk into page-cache pages
//!    drawn from [`PhysMemory`]; whenever the dirty window fills, writeback
//!    issues the dirty pages in clusters bounded by the splitter, then the
//!    file system logs the new allocation (journal record + inode block);
//! 3. the fsync: remaining dirty pages, a wait for all writes, the journal
//!    commit and inode, a wait, and SYNCHRONIZE CACHE;
//! 4. the caches are dropped and the copy is read back in read-ahead
//!    clusters (the checksum step of the report).

use super::memory::PhysMemory;
use super::payload::PayloadMaker;
use super::timeline::{Command, CommandKind, Timeline};
use super::writeback::{FileGeometry, PageCache};
use super::{Machine, SynthError, SynthSummary};
use crate::cdbs;
use trace::{Event, Payload, Segment, TaskAttr};

/// Where the file system keeps things, in bytes from the start of the
/// device. A 1 MiB-aligned partition, an 8 MiB journal, one inode-table
/// block, and file data from 16 MiB: the shape of HFS+/APFS and ext4 alike
/// at this level of detail (metadata in its own region, away from data).
pub mod layout {
    /// Start of the journal.
    pub const JOURNAL: u64 = 1 << 20;
    /// Journal size.
    pub const JOURNAL_LEN: u64 = 8 << 20;
    /// One journal record (descriptor + logged metadata blocks).
    pub const JOURNAL_RECORD: u64 = 8 << 10;
    /// The block holding the file's inode.
    pub const INODE: u64 = 9 << 20;
    /// File-system metadata block size.
    pub const FS_BLOCK: u64 = 4096;
    /// First byte of file data.
    pub const DATA: u64 = 16 << 20;
    /// Kernel buffer holding metadata being written: allocated at boot, in
    /// low memory below the page cache's range.
    pub const META_BUFFER: u64 = 8 << 20;
}

/// Parameters of `scuzz synth cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpParams {
    /// The host.
    pub machine: Machine,
    /// File size in bytes (a multiple of the block size).
    pub size: u64,
    /// Bytes `cp` moves per `write(2)`.
    pub copy_chunk: u64,
    /// Whether the verifying read pass follows the fsync.
    pub read_back: bool,
}

impl CpParams {
    /// A copy of `size` bytes on `machine`, with cp's 1 MiB buffer and the
    /// read-back pass.
    pub fn new(machine: Machine, size: u64) -> Self {
        CpParams {
            machine,
            size,
            copy_chunk: 1 << 20,
            read_back: true,
        }
    }

    /// Device capacity the stream needs, in blocks: data region plus the
    /// file rounded up to 1 MiB, plus 1 MiB of slack.
    pub fn capacity_blocks(&self) -> u64 {
        let bytes = layout::DATA + self.size.div_ceil(1 << 20) * (1 << 20) + (1 << 20);
        bytes / u64::from(self.machine.block_size)
    }
}

/// Metadata writes: a circular journal and the inode block, from a fixed
/// kernel buffer, each with its own write generation.
struct Metadata {
    journal_slot: u64,
    journal_generations: Vec<u32>,
    inode_generation: u32,
    bs: u64,
}

impl Metadata {
    fn new(bs: u64) -> Self {
        let slots = (layout::JOURNAL_LEN / layout::JOURNAL_RECORD) as usize;
        Metadata {
            journal_slot: 0,
            journal_generations: vec![0; slots],
            inode_generation: 0,
            bs,
        }
    }

    // One call site per metadata kind; a parameter struct would only rename
    // these eight.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        byte_offset: u64,
        len: u64,
        generation: u32,
        fua: bool,
        t: &mut Timeline,
        pm: &mut PayloadMaker,
        sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<(), SynthError> {
        let lba = byte_offset / self.bs;
        let blocks = len.div_ceil(self.bs) as u32;
        let bytes = u64::from(blocks) * self.bs;
        t.submit(
            Command {
                kind: CommandKind::Write,
                cdb: cdbs::read_write(true, lba, blocks, fua)?,
                xfer_len: bytes as u32,
                sg: vec![Segment::new(layout::META_BUFFER, bytes as u32)],
                data_out: pm.make(lba, blocks, generation),
                data_in: Payload::None,
                attr: TaskAttr::Simple,
            },
            sink,
        )?;
        Ok(())
    }

    /// One journal record, then the inode block (checkpointed in place).
    fn log_update(
        &mut self,
        with_inode: bool,
        t: &mut Timeline,
        pm: &mut PayloadMaker,
        sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<(), SynthError> {
        let slot = self.journal_slot as usize % self.journal_generations.len();
        self.journal_slot += 1;
        self.journal_generations[slot] += 1;
        let off = layout::JOURNAL + slot as u64 * layout::JOURNAL_RECORD;
        self.write(
            off,
            layout::JOURNAL_RECORD,
            self.journal_generations[slot],
            false,
            t,
            pm,
            sink,
        )?;
        if with_inode {
            self.inode_generation += 1;
            self.write(
                layout::INODE,
                layout::FS_BLOCK,
                self.inode_generation,
                false,
                t,
                pm,
                sink,
            )?;
        }
        Ok(())
    }
}

/// Streams the cp workload into `sink`.
pub fn synth_cp(
    p: &CpParams,
    sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
) -> Result<SynthSummary, SynthError> {
    let m = &p.machine;
    m.validate()?;
    let bs = u64::from(m.block_size);
    if p.size == 0 || p.size % bs != 0 {
        return Err(SynthError::InvalidParameter {
            name: "size",
            reason: format!(
                "{} is not a positive multiple of the {bs}-byte block",
                p.size
            ),
        });
    }
    if p.copy_chunk == 0 {
        return Err(SynthError::InvalidParameter {
            name: "copy-chunk",
            reason: "must be positive".into(),
        });
    }
    let geom = FileGeometry {
        start_lba: layout::DATA / bs,
        size: p.size,
        block_size: m.block_size,
        page_size: m.page_size,
    };
    let mem =
        PhysMemory::new(m.page_size, m.mem, m.low_free, m.seed)?.with_max_run(m.max_run_pages);
    let mut cache = PageCache::new(geom, m.hba.splitter, mem, 1)?;
    let mut pm = PayloadMaker::new(m.payload, m.seed, m.block_size, m.digest_granularity);
    let mut t = Timeline::new(m.writeback_depth, m.latency);
    let mut meta = Metadata::new(bs);
    // cp copies from another device at ~2 GB/s into the page cache.
    let copy_ns_per_page = m.page_size * 1_000_000_000 / 2_000_000_000;

    t.note(
        format!("synth cp: create, {} bytes, hba {}", p.size, m.hba.name),
        sink,
    )?;
    meta.log_update(true, &mut t, &mut pm, sink)?;

    let pages = geom.pages();
    let pages_per_chunk = p.copy_chunk.div_ceil(m.page_size).max(1);
    let mut page = 0;
    while page < pages {
        let end = (page + pages_per_chunk).min(pages);
        for q in page..end {
            cache.dirty_page(q)?;
            t.advance(copy_ns_per_page);
        }
        page = end;
        if cache.dirty_bytes() >= m.dirty_window {
            cache.writeback(&mut t, &mut pm, sink)?;
            meta.log_update(true, &mut t, &mut pm, sink)?;
        }
    }

    t.note("synth cp: fsync", sink)?;
    cache.writeback(&mut t, &mut pm, sink)?;
    // The file system waits for data before committing the metadata that
    // points at it (ordered mode), and for the commit before the flush.
    t.drain(sink)?;
    meta.log_update(true, &mut t, &mut pm, sink)?;
    t.drain(sink)?;
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
        sink,
    )?;
    t.drain(sink)?;

    if p.read_back {
        t.note("synth cp: caches dropped; verifying read", sink)?;
        cache.drop_caches();
        let per = m.read_cluster.div_ceil(m.page_size).max(1);
        let mut first = 0;
        while first < pages {
            cache.read_pages(first, per, m.read_cluster, &mut t, &mut pm, sink)?;
            first += per;
        }
        t.drain(sink)?;
    }

    Ok(SynthSummary {
        commands: t.stats().commands,
        writes: cache.write_stats,
        reads: cache.read_stats,
        flushes: 1,
        memory: cache.memory().stats(),
        capacity_blocks: p.capacity_blocks(),
    })
}
