//! Memory and speed of a large sequential copy through the emulator, with
//! the consistency oracle watching: what a `synth cp` replay costs.
//!
//! `cargo run --release -p scuzz-emulator --example big_copy -- [GiB]`
//! (default 20). Writes the size in 1 MiB self-describing WRITE(16)s through
//! an `lsi3108` HBA (buffer above 4 GiB, so every byte is bounced and every
//! task split), flushes, reads everything back in 1 MiB READ(16)s, checks
//! every block with the oracle, and prints the peak resident set size.

use emulator::{Emulator, EmulatorConfig, Task};
use std::time::Instant;
use trace::oracle::{Oracle, WriteData};
use trace::pattern::fill_blocks;
use trace::{Direction, HbaPreset, Segment, TaskAttr};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn cdb16(op: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn main() {
    let gib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let bs = 4096u32;
    let per = (1u32 << 20) / bs;
    let commands = gib * 1024;
    let mut emu = Emulator::new(EmulatorConfig {
        block_size: bs,
        capacity_blocks: (gib << 30) / u64::from(bs) + 1024,
        hba: HbaPreset::lsi3108(),
        ..EmulatorConfig::default()
    })
    .expect("valid configuration");
    let mut oracle = Oracle::new(bs);
    let sg: Vec<Segment> = (0..u64::from(per))
        .map(|i| Segment::new(0x1_0000_0000 + i * 4096, 4096))
        .collect();
    let mut buf = vec![0u8; 1 << 20];
    let mut seq = 0u64;
    let t = Instant::now();
    for i in 0..commands {
        let lba = i * u64::from(per);
        fill_blocks(1, 1, lba, bs as usize, &mut buf);
        emu.memory().write(sg[0].addr.0, &buf);
        seq += 1;
        oracle.submit_write(
            seq,
            lba,
            per,
            WriteData::Pattern {
                seed: 1,
                generation: 1,
            },
            false,
        );
        let cdb = cdb16(0x8a, lba, per);
        let task = Task {
            initiator: 0,
            lun: 0,
            cdb: &cdb,
            dir: Direction::ToDevice,
            xfer_len: 1 << 20,
            sg: &sg,
            attr: TaskAttr::Simple,
        };
        let out = emu.submit(&task);
        assert!(out.is_good(), "{out:?}");
        oracle.complete_write(seq, true);
    }
    let write_s = t.elapsed().as_secs_f64();
    seq += 1;
    oracle.submit_flush(seq, 0, 0, false);
    let out = emu.submit(&Task {
        initiator: 0,
        lun: 0,
        cdb: &cdb16(0x91, 0, 0),
        dir: Direction::None,
        xfer_len: 0,
        sg: &[],
        attr: TaskAttr::Simple,
    });
    oracle.complete_flush(seq, out.is_good());
    let t = Instant::now();
    let mut bad = 0usize;
    for i in 0..commands {
        let lba = i * u64::from(per);
        seq += 1;
        let cdb = cdb16(0x88, lba, per);
        let task = Task {
            initiator: 0,
            lun: 0,
            cdb: &cdb,
            dir: Direction::FromDevice,
            xfer_len: 1 << 20,
            sg: &sg,
            attr: TaskAttr::Simple,
        };
        assert!(emu.submit(&task).is_good());
        emu.memory().read(sg[0].addr.0, &mut buf);
        bad += oracle.check_read(seq, lba, &buf).len();
    }
    let read_s = t.elapsed().as_secs_f64();
    println!(
        "{gib} GiB in {commands} x 1 MiB: write {:.0} MB/s, read+verify {:.0} MB/s, violations {bad}, \
         medium extents {}, oracle runs {}, peak RSS {} MiB",
        (gib << 30) as f64 / write_s / 1e6,
        (gib << 30) as f64 / read_s / 1e6,
        emu.disk(0).map_or(0, |d| d.medium().extent_count()),
        oracle.runs(),
        peak_rss_kib() / 1024
    );
}
