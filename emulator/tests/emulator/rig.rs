//! A host driving the emulator the way an OS does: buffers placed in host
//! memory, tasks with SG lists, every command mirrored into the consistency
//! oracle.

use emulator::{Emulator, EmulatorConfig, Outcome, Task};
use trace::oracle::{Oracle, Violation, WriteData};
use trace::pattern::fill_blocks;
use trace::{Direction, Segment, TaskAttr};

/// Stream seed of the data the rig writes.
pub const SEED: u64 = 0x5c022;

/// How [`Rig::zero`] zeroes blocks.
#[derive(Debug, Clone, Copy)]
pub enum Zeroing {
    /// WRITE SAME(16) of a zero block.
    WriteSame {
        /// With the UNMAP bit.
        unmap: bool,
    },
    /// UNMAP.
    Unmap,
}

pub struct Rig {
    pub emu: Emulator,
    pub oracle: Oracle,
    pub seq: u64,
    pub bs: u32,
    gen: u32,
}

/// `n` bytes laid out from `base` as segments of `seg` bytes, one page gap
/// between them (so no two segments are contiguous or overlap).
pub fn spread(base: u64, n: u32, seg: u32) -> Vec<Segment> {
    let mut v = Vec::new();
    let mut off = 0u32;
    let mut addr = base;
    while off < n {
        let len = seg.min(n - off);
        v.push(Segment::new(addr, len));
        addr += u64::from(len).next_multiple_of(4096) + 4096;
        off += len;
    }
    v
}

pub fn cdb16(op: u8, lba: u64, blocks: u32, byte1: u8) -> Vec<u8> {
    let mut c = vec![op, byte1];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

/// The driver refused a task no correct driver can carry (here: a block
/// larger than the scaled-down controller's segment size), with INVALID
/// FIELD IN CDB before any controller command: the correct alternative to
/// corrupting it.
pub fn is_unsplittable(out: &Outcome) -> bool {
    out.controller_commands == 0 && out.sense_code() == Some((0x5, 0x24, 0x00))
}

impl Rig {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let bs = cfg.block_size;
        Rig {
            emu: Emulator::new(cfg).unwrap(),
            oracle: Oracle::new(bs),
            seq: 0,
            bs,
            gen: 0,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Submit, retrying once after a unit attention (as an OS does).
    pub fn submit(&mut self, cdb: &[u8], dir: Direction, xfer_len: u32, sg: &[Segment]) -> Outcome {
        let task = Task {
            initiator: 0,
            lun: 0,
            cdb,
            dir,
            xfer_len,
            sg,
            attr: TaskAttr::Simple,
        };
        let out = self.emu.submit(&task);
        if out.is_unit_attention() {
            return self.emu.submit(&task);
        }
        out
    }

    /// Write fresh self-describing data to `blocks` blocks at `lba` through
    /// `sg`; returns the data written.
    pub fn write(
        &mut self,
        lba: u64,
        blocks: u32,
        fua: bool,
        sg: &[Segment],
    ) -> (Outcome, Vec<u8>) {
        self.gen += 1;
        let n = blocks * self.bs;
        let mut data = vec![0u8; n as usize];
        fill_blocks(SEED, self.gen, lba, self.bs as usize, &mut data);
        let mut off = 0usize;
        for s in sg {
            let len = (s.len as usize).min(data.len() - off);
            self.emu.memory().write(s.addr.0, &data[off..off + len]);
            off += len;
        }
        let seq = self.next_seq();
        self.oracle.submit_write(
            seq,
            lba,
            blocks,
            WriteData::Pattern {
                seed: SEED,
                generation: self.gen,
            },
            fua,
        );
        let out = self.submit(
            &cdb16(0x8a, lba, blocks, if fua { 0x08 } else { 0 }),
            Direction::ToDevice,
            n,
            sg,
        );
        self.oracle.complete_write(seq, out.is_good());
        (out, data)
    }

    /// Read `blocks` blocks at `lba` into `sg` and check them.
    pub fn read(&mut self, lba: u64, blocks: u32, sg: &[Segment]) -> Vec<Violation> {
        let n = blocks * self.bs;
        let seq = self.next_seq();
        self.oracle.submit_read(seq);
        let out = self.submit(&cdb16(0x88, lba, blocks, 0), Direction::FromDevice, n, sg);
        if is_unsplittable(&out) {
            return Vec::new();
        }
        assert!(out.is_good(), "read failed: {out:?}");
        let mut data = vec![0u8; n as usize];
        let mut off = 0usize;
        for s in sg {
            let len = (s.len as usize).min(data.len() - off);
            self.emu.memory().read(s.addr.0, &mut data[off..off + len]);
            off += len;
        }
        self.oracle.check_read(seq, lba, &data)
    }

    /// Read through one plain low buffer, 64 KiB at a time (within every
    /// preset's limits, so a bug on the read path cannot hide one on the
    /// write path).
    pub fn read_plain(&mut self, lba: u64, blocks: u32) -> Vec<Violation> {
        let per = 65536 / self.bs;
        let mut v = Vec::new();
        let mut done = 0;
        while done < blocks {
            let n = per.min(blocks - done);
            let sg = [Segment::new(0x7000_0000, n * self.bs)];
            v.extend(self.read(lba + u64::from(done), n, &sg));
            done += n;
        }
        v
    }

    /// Zero `blocks` blocks at `lba`: WRITE SAME(16) of a zero block (with
    /// UNMAP or not), or UNMAP with one descriptor.
    pub fn zero(&mut self, lba: u64, blocks: u32, how: Zeroing) -> Outcome {
        let seq = self.next_seq();
        self.oracle
            .submit_write(seq, lba, blocks, WriteData::Zeros, false);
        let addr = 0x5000_0000;
        let out = match how {
            Zeroing::WriteSame { unmap } => {
                self.emu.memory().write(addr, &vec![0u8; self.bs as usize]);
                let cdb = cdb16(0x93, lba, blocks, if unmap { 0x08 } else { 0 });
                self.submit(
                    &cdb,
                    Direction::ToDevice,
                    self.bs,
                    &[Segment::new(addr, self.bs)],
                )
            }
            Zeroing::Unmap => {
                let mut p = vec![0u8; 24];
                p[0..2].copy_from_slice(&22u16.to_be_bytes());
                p[2..4].copy_from_slice(&16u16.to_be_bytes());
                p[8..16].copy_from_slice(&lba.to_be_bytes());
                p[16..20].copy_from_slice(&blocks.to_be_bytes());
                self.emu.memory().write(addr, &p);
                let cdb = [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
                self.submit(&cdb, Direction::ToDevice, 24, &[Segment::new(addr, 24)])
            }
        };
        self.oracle.complete_write(seq, out.is_good());
        out
    }

    pub fn flush(&mut self, lba: u64, blocks: u32, immed: bool) -> Outcome {
        let seq = self.next_seq();
        self.oracle.submit_flush(seq, lba, blocks, immed);
        let cdb = cdb16(0x91, lba, blocks, if immed { 0x02 } else { 0 });
        let out = self.submit(&cdb, Direction::None, 0, &[]);
        self.oracle.complete_flush(seq, out.is_good());
        out
    }

    /// MODE SELECT(6) of the caching page with WCE as given.
    pub fn set_wce(&mut self, on: bool) -> Outcome {
        let mut list = vec![0u8, 0, 0, 0, 0x08, 0x12];
        list.extend_from_slice(&[0u8; 18]);
        list[6] = if on { 0x04 } else { 0 };
        let addr = 0x6000_0000;
        self.emu.memory().write(addr, &list);
        let cdb = [0x15, 0x10, 0, 0, list.len() as u8, 0];
        let out = self.submit(
            &cdb,
            Direction::ToDevice,
            list.len() as u32,
            &[Segment::new(addr, list.len() as u32)],
        );
        if out.is_good() {
            self.oracle.set_wce(on);
        }
        out
    }

    pub fn power_loss(&mut self) {
        self.emu.power_loss();
        self.oracle.power_loss();
    }

    pub fn reset(&mut self) {
        self.emu.reset();
    }
}
