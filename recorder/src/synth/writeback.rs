//! The page cache's I/O: dirty pages of one file written back in clusters,
//! and cache misses read in clusters.
//!
//! A cluster is what the OS layer that splits I/O hands the driver as one
//! command: file pages that are consecutive on disk, closed as soon as one
//! more page would exceed the splitter's byte limit or its segment count.
//! One page is one scatter-gather segment, except that a page physically
//! adjacent to the previous one extends that segment (up to the segment
//! byte limit), as `IODMACommand` and Linux's `blk_rq_map_sg` both merge.
//! The limits are the splitter's ([`HbaPreset::splitter`]), not the
//! controller's: whether the two agree is exactly what `lsi3108-unsplit`
//! varies.
//!
//! [`HbaPreset::splitter`]: trace::HbaPreset

use super::memory::PhysMemory;
use super::payload::PayloadMaker;
use super::timeline::{Command, CommandKind, Timeline};
use super::SynthError;
use crate::cdbs;
use std::collections::BTreeMap;
use trace::{Event, HbaConstraints, Payload, Segment, TaskAttr};

/// Where a file lives on the device and how it is cut into pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileGeometry {
    /// LBA of the file's first byte (files are laid out contiguously).
    pub start_lba: u64,
    /// File size in bytes (a multiple of the block size).
    pub size: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Page-cache page size in bytes (a multiple of the block size).
    pub page_size: u64,
}

impl FileGeometry {
    /// Number of pages, the last possibly partial.
    pub fn pages(&self) -> u64 {
        self.size.div_ceil(self.page_size)
    }

    /// LBA of page `p`.
    pub fn page_lba(&self, p: u64) -> u64 {
        self.start_lba + p * (self.page_size / u64::from(self.block_size))
    }

    /// Bytes of page `p` that belong to the file.
    pub fn page_bytes(&self, p: u64) -> u64 {
        self.page_size
            .min(self.size.saturating_sub(p * self.page_size))
    }
}

/// A command being assembled from pages.
struct Cluster {
    first_page: u64,
    next_page: u64,
    bytes: u64,
    sg: Vec<Segment>,
    phys: Vec<u64>,
}

impl Cluster {
    fn new(page: u64) -> Self {
        Cluster {
            first_page: page,
            next_page: page,
            bytes: 0,
            sg: Vec::new(),
            phys: Vec::new(),
        }
    }

    /// Adds the page if it keeps the cluster within `lim`.
    fn try_push(
        &mut self,
        page: u64,
        phys: u64,
        len: u64,
        lim: &HbaConstraints,
        write: bool,
    ) -> bool {
        if page != self.next_page || self.bytes + len > u64::from(lim.max_bytes(write)) {
            return false;
        }
        let merges = self.sg.last().is_some_and(|s| {
            s.end() == phys && u64::from(s.len) + len <= u64::from(lim.max_segment_bytes)
        });
        if merges {
            if let Some(s) = self.sg.last_mut() {
                s.len += len as u32;
            }
        } else {
            if self.sg.len() as u64 >= u64::from(lim.max_segments(write)) {
                return false;
            }
            self.sg.push(Segment::new(phys, len as u32));
        }
        self.bytes += len;
        self.next_page += 1;
        self.phys.push(phys);
        true
    }
}

/// Shape of the largest commands issued, for summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Commands issued.
    pub commands: u64,
    /// Largest transfer in bytes.
    pub max_bytes: u64,
    /// Largest segment count.
    pub max_segments: usize,
}

/// The page cache of one file.
pub struct PageCache {
    geom: FileGeometry,
    limits: HbaConstraints,
    mem: PhysMemory,
    dirty: BTreeMap<u64, u64>,
    generation: u32,
    /// Writes issued by writeback.
    pub write_stats: ClusterStats,
    /// Reads issued for cache misses.
    pub read_stats: ClusterStats,
}

impl PageCache {
    /// A cache for `geom` drawing pages from `mem`, clustering under the
    /// splitter limits `limits`. Every page written gets `generation`.
    pub fn new(
        geom: FileGeometry,
        limits: HbaConstraints,
        mem: PhysMemory,
        generation: u32,
    ) -> Result<Self, SynthError> {
        for (write, dir) in [(true, "write"), (false, "read")] {
            if u64::from(limits.max_bytes(write)) < geom.page_size {
                return Err(SynthError::InvalidParameter {
                    name: "page-size",
                    reason: format!(
                        "a {}-byte page exceeds the splitter's {} limit of {} bytes",
                        geom.page_size,
                        dir,
                        limits.max_bytes(write)
                    ),
                });
            }
            if limits.max_segments(write) == 0 {
                return Err(SynthError::InvalidParameter {
                    name: "hba",
                    reason: format!("the splitter allows no segments per {dir}"),
                });
            }
        }
        if u64::from(limits.max_segment_bytes) < geom.page_size {
            return Err(SynthError::InvalidParameter {
                name: "page-size",
                reason: format!(
                    "a {}-byte page exceeds the {}-byte segment limit",
                    geom.page_size, limits.max_segment_bytes
                ),
            });
        }
        Ok(PageCache {
            geom,
            limits,
            mem,
            dirty: BTreeMap::new(),
            generation,
            write_stats: ClusterStats::default(),
            read_stats: ClusterStats::default(),
        })
    }

    /// The memory the cache draws from.
    pub fn memory(&self) -> &PhysMemory {
        &self.mem
    }

    /// Drops every clean page (see [`PhysMemory::drop_caches`]).
    pub fn drop_caches(&mut self) {
        self.mem.drop_caches();
    }

    /// Bytes currently dirty.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.len() as u64 * self.geom.page_size
    }

    /// A `write(2)` touched page `p`: it gets a page frame if it has none.
    pub fn dirty_page(&mut self, p: u64) -> Result<(), SynthError> {
        if !self.dirty.contains_key(&p) {
            let a = self.mem.alloc()?;
            self.dirty.insert(p, a);
        }
        Ok(())
    }

    /// Writes back every dirty page, in file order, in clusters.
    pub fn writeback(
        &mut self,
        t: &mut Timeline,
        pm: &mut PayloadMaker,
        sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<(), SynthError> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut cluster: Option<Cluster> = None;
        for (p, phys) in dirty {
            let len = self.geom.page_bytes(p);
            let fits = cluster
                .as_mut()
                .is_some_and(|c| c.try_push(p, phys, len, &self.limits, true));
            if !fits {
                if let Some(c) = cluster.take() {
                    self.issue(c, true, t, pm, sink)?;
                }
                let mut c = Cluster::new(p);
                // A single page always fits: checked in `new`.
                c.try_push(p, phys, len, &self.limits, true);
                cluster = Some(c);
            }
        }
        if let Some(c) = cluster.take() {
            self.issue(c, true, t, pm, sink)?;
        }
        Ok(())
    }

    /// Reads pages `first..first + count` into freshly allocated frames (a
    /// cache miss after the cache was dropped), in clusters of at most
    /// `cluster_bytes`.
    pub fn read_pages(
        &mut self,
        first: u64,
        count: u64,
        cluster_bytes: u64,
        t: &mut Timeline,
        pm: &mut PayloadMaker,
        sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<(), SynthError> {
        let mut lim = self.limits;
        lim.max_bytes_read = lim
            .max_bytes_read
            .min(cluster_bytes.clamp(self.geom.page_size, u64::from(u32::MAX)) as u32);
        let end = first.saturating_add(count).min(self.geom.pages());
        let mut cluster: Option<Cluster> = None;
        for p in first..end {
            let phys = self.mem.alloc()?;
            let len = self.geom.page_bytes(p);
            let fits = cluster
                .as_mut()
                .is_some_and(|c| c.try_push(p, phys, len, &lim, false));
            if !fits {
                if let Some(c) = cluster.take() {
                    self.issue(c, false, t, pm, sink)?;
                }
                let mut c = Cluster::new(p);
                c.try_push(p, phys, len, &lim, false);
                cluster = Some(c);
            }
        }
        if let Some(c) = cluster.take() {
            self.issue(c, false, t, pm, sink)?;
        }
        Ok(())
    }

    fn issue(
        &mut self,
        c: Cluster,
        write: bool,
        t: &mut Timeline,
        pm: &mut PayloadMaker,
        sink: &mut impl FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<(), SynthError> {
        let lba = self.geom.page_lba(c.first_page);
        let blocks = u32::try_from(c.bytes / u64::from(self.geom.block_size)).map_err(|_| {
            SynthError::TooLarge {
                what: "cluster",
                bytes: c.bytes,
            }
        })?;
        let payload = pm.make(lba, blocks, self.generation);
        let (data_out, data_in) = if write {
            (payload, Payload::None)
        } else {
            (Payload::None, payload)
        };
        let stats = if write {
            &mut self.write_stats
        } else {
            &mut self.read_stats
        };
        stats.commands += 1;
        stats.max_bytes = stats.max_bytes.max(c.bytes);
        stats.max_segments = stats.max_segments.max(c.sg.len());
        t.submit(
            Command {
                kind: if write {
                    CommandKind::Write
                } else {
                    CommandKind::Read
                },
                cdb: cdbs::read_write(write, lba, blocks, false)?,
                xfer_len: c.bytes as u32,
                sg: c.sg,
                data_out,
                data_in,
                attr: TaskAttr::Simple,
            },
            sink,
        )?;
        // Written back or read in, the pages are clean cache from now on.
        for a in c.phys {
            self.mem.release_clean(a);
        }
        Ok(())
    }
}
