use fuzzer::harness::{Harness, Target};
use fuzzer::mutators::Dice;
use fuzzer::program::{Op, ScsiProgram, Transfer};
use std::time::Instant;
use trace::{Lba, Segment};
fn main() {
    let t = Target::new(trace::HbaPreset::lsi3108());
    let mut h = Harness::new(t.clone());
    let limits = h.limits();
    let mut d = Dice::new(1);
    let mut progs = Vec::new();
    for _ in 0..64 {
        let mut ops = Vec::new();
        while ops.len() < 32 {
            let blocks = 1 + d.below(8) as u32;
            let lba = d.below(limits.capacity_blocks - 8);
            let sg = vec![Segment::new(0x10_0000 + d.below(1024) * 4096, blocks * 512)];
            let t = Transfer { lba: Lba(lba), blocks, fua: d.one_in(8), sg, extra: 0 };
            ops.push(match d.below(10) { 0..=5 => Op::Write(t), 6 | 7 => Op::Read(t), 8 => Op::SyncCache { lba: Lba(0), blocks: 0, immed: false }, _ => Op::PowerLoss });
        }
        let mut p = ScsiProgram::new(ops);
        p.fit(&limits);
        progs.push(p);
    }
    let mut map = vec![0u8; fuzzer::harness::MAP_SIZE];
    let n = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20000usize);
    let s = Instant::now();
    for i in 0..n { let v = h.run(&progs[i % 64], Some(&mut map)); assert!(v.passed(), "{:?}", v.violations); }
    println!("{:.0} execs/s", n as f64 / s.elapsed().as_secs_f64());
}
