//! Seeds from traces: a recorded or synthesized workload becomes the
//! campaign's starting corpus.
//!
//! Each `Submit` maps to the op it performs, keeping its SG list, LBAs and
//! flush placement; `PowerLoss` and `Reset` markers map to their ops; an
//! ORDERED task attribute becomes a barrier before the command. Commands
//! that do not change what is stored (INQUIRY, TEST UNIT READY...) are
//! skipped. A trace longer than a program may be is cut into consecutive
//! programs, each a seed.
//!
//! LBAs are folded into the fuzzed device's capacity (the campaign's disk is
//! usually smaller than the one recorded): each transfer keeps its offset
//! modulo the capacity, and its length, so overlaps and sequential runs
//! within one seed survive.

use crate::program::{Limits, Op, ScsiProgram, Transfer};
use std::path::{Path, PathBuf};
use trace::file::{TraceError, TraceReader};
use trace::{Cdb, Event, Lba, Payload, Submit, TaskAttr};

/// Why seeds could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// The seed directory could not be listed.
    #[error("cannot list seed directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A trace could not be read (the error names the file and offset).
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A program file could not be read or parsed.
    #[error("seed program {path}: {reason}")]
    Program {
        /// The file.
        path: PathBuf,
        /// What was wrong (the JSON parser names line and column).
        reason: String,
    },
}

/// Most seeds taken from one trace: a multi-gigabyte capture would otherwise
/// flood the corpus with near-identical chunks.
pub const MAX_SEEDS_PER_TRACE: usize = 64;

/// Ops per seed program when a trace is cut: long enough to hold a flush
/// interval of a `cp` (whose writes are up to 1 MiB each), short enough to
/// execute in a few milliseconds.
pub const SEED_OPS: usize = 16;

/// Converts one trace's events into programs.
#[derive(Debug)]
pub struct SeedBuilder {
    limits: Limits,
    trace_block_size: u32,
    programs: Vec<ScsiProgram>,
    current: Vec<Op>,
}

impl SeedBuilder {
    /// A builder for a device with `limits`, reading a trace whose blocks
    /// are `trace_block_size` bytes (0: unknown, taken to match).
    pub fn new(limits: Limits, trace_block_size: u32) -> SeedBuilder {
        SeedBuilder {
            limits,
            trace_block_size,
            programs: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Converts a trace LBA range to the fuzzed device: rescale to its block
    /// size, then fold into its capacity.
    fn fold(&self, lba: u64, blocks: u32) -> (u64, u32) {
        let bs = u64::from(self.limits.block_size.max(1));
        let tbs = if self.trace_block_size == 0 {
            bs
        } else {
            u64::from(self.trace_block_size)
        };
        let byte = u128::from(lba) * u128::from(tbs);
        let lba = (byte / u128::from(bs)) as u64;
        let blocks = ((u128::from(blocks) * u128::from(tbs)).div_ceil(u128::from(bs)))
            .min(u128::from(u32::MAX)) as u32;
        let cap = self.limits.capacity_blocks.max(1);
        let blocks = blocks
            .min(self.limits.max_blocks())
            .min(cap.min(u64::from(u32::MAX)) as u32);
        let mut lba = lba % cap;
        if lba + u64::from(blocks) > cap {
            lba = cap - u64::from(blocks);
        }
        (lba, blocks)
    }

    fn push(&mut self, op: Op) {
        self.current.push(op);
        if self.current.len() >= SEED_OPS {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if !self.current.is_empty() && self.programs.len() < MAX_SEEDS_PER_TRACE {
            let mut p = ScsiProgram::new(std::mem::take(&mut self.current));
            p.fit(&self.limits);
            self.programs.push(p);
        }
        self.current.clear();
    }

    /// Feeds one event.
    pub fn event(&mut self, ev: &Event) {
        match ev {
            Event::Submit(s) => self.submit(s),
            Event::PowerLoss { .. } => self.push(Op::PowerLoss),
            Event::Reset { .. } => self.push(Op::Reset),
            Event::Complete(_) | Event::Note { .. } => {}
        }
    }

    fn submit(&mut self, s: &Submit) {
        let Ok(cdb) = Cdb::parse(&s.cdb) else { return };
        if s.attr == TaskAttr::Ordered {
            self.push(Op::Barrier);
        }
        match cdb {
            Cdb::Write(rw) | Cdb::Read(rw) => {
                let (lba, blocks) = self.fold(rw.lba, rw.blocks);
                // A read whose buffer is longer than its data is a short
                // transfer; keep the slack so the residual is checked.
                let data = u64::from(blocks) * u64::from(self.limits.block_size);
                let extra = match cdb {
                    Cdb::Read(_) => u64::from(s.xfer_len)
                        .saturating_sub(data)
                        .min(u64::from(u32::MAX)) as u32,
                    _ => 0,
                };
                let t = Transfer {
                    lba: Lba(lba),
                    blocks,
                    fua: rw.fua,
                    sg: s.sg.clone(),
                    extra,
                };
                self.push(if matches!(cdb, Cdb::Write(_)) {
                    Op::Write(t)
                } else {
                    Op::Read(t)
                });
            }
            Cdb::SyncCache {
                lba, blocks, immed, ..
            } => {
                let (lba, blocks) = if blocks == 0 {
                    (self.fold(lba, 1).0, 0)
                } else {
                    self.fold(lba, blocks)
                };
                self.push(Op::SyncCache {
                    lba: Lba(lba),
                    blocks,
                    immed,
                });
            }
            Cdb::WriteSame {
                lba, blocks, unmap, ..
            } => {
                let (lba, blocks) = self.fold(lba, blocks);
                self.push(Op::WriteSame {
                    lba: Lba(lba),
                    blocks,
                    unmap,
                    sg: s.sg.clone(),
                });
            }
            Cdb::Unmap { .. } => {
                for (lba, blocks) in unmap_descriptors(&s.payload) {
                    let (lba, blocks) = self.fold(lba, blocks);
                    self.push(Op::Unmap {
                        lba: Lba(lba),
                        blocks,
                    });
                }
            }
            Cdb::ModeSelect { .. } => {
                if let Some(wce) = caching_page_wce(&s.payload) {
                    self.push(Op::SetWce(wce));
                }
            }
            _ => {}
        }
    }

    /// The programs built so far, cutting the last partial one.
    pub fn finish(mut self) -> Vec<ScsiProgram> {
        self.cut();
        self.programs
    }
}

/// The block descriptors of an UNMAP parameter list (SBC-4 5.30.2: an
/// 8-byte header, then 16-byte descriptors of LBA (8) and count (4)), when
/// the trace kept the Data-Out bytes.
fn unmap_descriptors(payload: &Payload) -> Vec<(u64, u32)> {
    let Payload::Full(bytes) = payload else {
        return Vec::new();
    };
    bytes
        .get(8..)
        .unwrap_or(&[])
        .chunks_exact(16)
        .map(|d| {
            let lba = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
            let n = u32::from_be_bytes(d[8..12].try_into().expect("4 bytes"));
            (lba, n)
        })
        .collect()
}

/// WCE from a MODE SELECT parameter list holding the caching page (08h),
/// when the trace kept the Data-Out bytes. Handles the 6-byte form's 4-byte
/// header and the 10-byte form's 8-byte one by looking for the page code
/// after a block-descriptor-length-sized skip (SPC-4 7.5.4/7.5.5).
fn caching_page_wce(payload: &Payload) -> Option<bool> {
    let Payload::Full(b) = payload else {
        return None;
    };
    for (hdr, bdl) in [
        (4usize, usize::from(*b.get(3)?)),
        (8, usize::from(u16::from_be_bytes([*b.get(6)?, *b.get(7)?]))),
    ] {
        let at = hdr + bdl;
        if b.get(at).map(|c| c & 0x3f) == Some(0x08) {
            return b.get(at + 2).map(|flags| flags & 0x04 != 0);
        }
    }
    None
}

/// Imports one trace file.
pub fn import_trace(path: &Path, limits: &Limits) -> Result<Vec<ScsiProgram>, SeedError> {
    let reader = TraceReader::open(path)?;
    let mut b = SeedBuilder::new(*limits, reader.header().block_size);
    for ev in reader {
        b.event(&ev?);
    }
    Ok(b.finish())
}

/// Reads one program saved as JSON (`program.json` in a finding, a
/// hand-written program) or as a campaign's queue entry (the same JSON,
/// zstd-compressed), fitted to `limits`.
pub fn import_program(path: &Path, limits: &Limits) -> Result<ScsiProgram, SeedError> {
    let bad = |reason: String| SeedError::Program {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut p = ScsiProgram::from_saved(&bytes).map_err(bad)?;
    p.fit(limits);
    Ok(p)
}

/// Imports every `.sczt` trace and every `.json` program of `dir` (not
/// recursively), in name order: a recorded workload and a hand-written or
/// previously found program seed a campaign alike.
pub fn import_dir(dir: &Path, limits: &Limits) -> Result<Vec<ScsiProgram>, SeedError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SeedError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sczt" || x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        if p.extension().is_some_and(|x| x == "json") {
            out.push(import_program(&p, limits)?);
        } else {
            out.extend(import_trace(&p, limits)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::{Direction, Nexus, Segment};

    fn submit(seq: u64, cdb: Cdb, sg: Vec<Segment>, attr: TaskAttr) -> Event {
        Event::Submit(Submit {
            seq,
            time_ns: seq,
            nexus: Nexus::default(),
            tag: seq,
            attr,
            cdb: cdb.encode().unwrap(),
            dir: Direction::ToDevice,
            xfer_len: sg.iter().map(|s| s.len).sum(),
            sg,
            payload: Payload::None,
        })
    }

    fn rw(lba: u64, blocks: u32, fua: bool) -> trace::Rw {
        trace::Rw {
            size: trace::CdbSize::Sixteen,
            lba,
            blocks,
            fua,
            dpo: false,
            protect: 0,
            group: 0,
        }
    }

    #[test]
    fn a_cp_like_trace_keeps_sg_lists_lbas_and_flushes() {
        let limits = Limits::new(512, 1 << 17);
        let mut b = SeedBuilder::new(limits, 512);
        let sg = vec![
            Segment::new(0x1_2000_0000, 4096),
            Segment::new(0x3000, 4096),
        ];
        b.event(&submit(
            0,
            Cdb::Write(rw(16, 16, false)),
            sg.clone(),
            TaskAttr::Simple,
        ));
        b.event(&submit(
            1,
            Cdb::Write(rw(1 << 20, 8, true)),
            vec![Segment::new(0x5000, 4096)],
            TaskAttr::Ordered,
        ));
        b.event(&submit(
            2,
            Cdb::SyncCache {
                size: trace::CdbSize::Ten,
                lba: 0,
                blocks: 0,
                immed: false,
                group: 0,
            },
            vec![],
            TaskAttr::Simple,
        ));
        b.event(&Event::PowerLoss { time_ns: 3 });
        let progs = b.finish();
        assert_eq!(progs.len(), 1);
        let p = &progs[0];
        assert_eq!(p.shape(), "WBFSP");
        assert_eq!(
            p.ops[0],
            Op::Write(Transfer {
                lba: Lba(16),
                blocks: 16,
                fua: false,
                sg,
                extra: 0
            })
        );
        let (lba, blocks) = p.ops[2].lba_range().unwrap();
        assert!(lba + u64::from(blocks) <= 1 << 17, "folded into capacity");
    }

    #[test]
    fn long_traces_are_cut_into_programs() {
        let limits = Limits::new(512, 1 << 17);
        let mut b = SeedBuilder::new(limits, 4096);
        for i in 0..(SEED_OPS as u64 * 3 + 5) {
            b.event(&submit(
                i,
                Cdb::Write(rw(i, 1, false)),
                vec![Segment::new(0x1000, 4096)],
                TaskAttr::Simple,
            ));
        }
        let progs = b.finish();
        assert_eq!(progs.len(), 4);
        assert!(progs.iter().all(|p| p.ops.len() <= SEED_OPS));
        // 4096-byte trace blocks are eight 512-byte blocks here.
        assert_eq!(progs[0].ops[1].lba_range(), Some((8, 8)));
    }

    #[test]
    fn program_files_seed_beside_traces_and_bad_ones_name_their_file() {
        let dir = std::env::temp_dir().join(format!("scuzz-seed-json-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let limits = Limits::new(512, 1 << 17);
        let p = ScsiProgram::new(vec![Op::PowerLoss, Op::Barrier]);
        std::fs::write(dir.join("a.json"), serde_json::to_vec(&p).unwrap()).unwrap();
        let got = import_dir(&dir, &limits).unwrap();
        assert_eq!(got, vec![p]);
        std::fs::write(dir.join("b.json"), b"{\"ops\": [\"Nonsense\"]}").unwrap();
        let err = import_dir(&dir, &limits).unwrap_err().to_string();
        assert!(err.contains("b.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
