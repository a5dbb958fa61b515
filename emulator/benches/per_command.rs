//! The emulator's two hot paths as its consumers drive them, in a plain
//! binary that runs the same work every time, so `valgrind --tool=callgrind`
//! gives repeatable instruction counts on a shared, noisy machine:
//!
//! - `fuzz N`: N fuzzer-like executions. Each builds a fresh 64 MiB
//!   `lsi3108` emulator (512-byte blocks) with coverage on and runs a
//!   32-op program of 1-8 block writes of self-describing data, reads,
//!   flushes and power losses, then a final power loss and a read-back of
//!   everything written: what `fuzzer::harness` asks of the emulator, with
//!   the data generated once beforehand so only the emulator is measured.
//! - `write N` / `read N`: N random 4 KiB WRITE(10)s of fresh
//!   self-describing data (READ(10)s) through `Emulator::execute` on a
//!   1 GiB LUN with the default cache: what the replayer's in-process
//!   backend does at any queue depth (it completes inline).
//! - `raw N`: the same writes with arbitrary (not self-describing) data,
//!   as an iSCSI initiator copying ordinary files sends.
//!
//! Under callgrind, `--toggle-collect='per_command::drive*'` counts the
//! emulator's work alone (data generation for `write` and the copy of the
//! coverage map into the fuzzer's observer map stay outside).
//! `cargo bench -p scuzz-emulator --bench per_command -- fuzz 20000`
//! prints wall-clock rates; without `--bench` (as `cargo test
//! --all-targets` runs it) a short smoke run of each mode.

use emulator::{Emulator, EmulatorConfig, Outcome, Task};
use std::cell::Cell;
use std::time::Instant;
use trace::pattern::fill_blocks;
use trace::{Direction, HbaPreset, Segment, TaskAttr};

thread_local! {
    /// `PER_COMMAND_DIGEST=1`: fold every outcome, every byte read and
    /// every coverage map into one FNV-1a digest, printed at the end, so
    /// two builds can be shown to behave identically. Off when measuring.
    static DIGEST: Cell<Option<u64>> = const { Cell::new(None) };
}

fn digest(bytes: &[u8]) {
    DIGEST.with(|d| {
        if let Some(mut h) = d.get() {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
            d.set(Some(h));
        }
    });
}

fn digest_outcome(o: &Outcome) {
    if DIGEST.with(|d| d.get().is_some()) {
        digest(&[o.status.0]);
        digest(&o.sense);
        digest(&o.bytes_transferred.to_le_bytes());
        digest(&o.residual.to_le_bytes());
        digest(&o.controller_commands.to_le_bytes());
        digest(&o.bounced_bytes.to_le_bytes());
        digest(format!("{:?}", o.bugs_fired).as_bytes());
    }
}

/// SplitMix64, for programs that are the same on every run.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((u128::from(z ^ (z >> 31)) * u128::from(n)) >> 64) as u64
    }
}

const FUZZ_BS: u64 = 512;
const FUZZ_CAPACITY: u64 = 64 << 11;
const BUF: u64 = 0x10_0000;

enum Op {
    /// LBA, blocks, FUA, buffer address, Data-Out.
    Write(u64, u32, bool, u64, Vec<u8>),
    /// LBA, blocks, buffer address.
    Read(u64, u32, u64),
    Flush,
    PowerLoss,
}

fn rw10(write: bool, lba: u64, blocks: u32, fua: bool) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = if write { 0x2a } else { 0x28 };
    c[1] = if fua { 0x08 } else { 0 };
    c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
    c[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
    c
}

/// 64 programs shaped like the fuzzer benchmark's (`fuzzer/benches/fuzz.rs`,
/// `programs()`): 60% writes, 20% reads, 10% flushes, 10% power losses.
fn programs() -> Vec<Vec<Op>> {
    let mut d = Dice(1);
    let mut generation = 0u32;
    (0..64)
        .map(|_| {
            (0..32)
                .map(|_| {
                    let blocks = 1 + d.below(8) as u32;
                    let lba = d.below(FUZZ_CAPACITY - 8);
                    let addr = BUF + d.below(1024) * 4096;
                    let fua = d.below(8) == 0;
                    match d.below(10) {
                        0..=5 => {
                            generation += 1;
                            let mut data = vec![0u8; blocks as usize * FUZZ_BS as usize];
                            fill_blocks(7, generation, lba, FUZZ_BS as usize, &mut data);
                            Op::Write(lba, blocks, fua, addr, data)
                        }
                        6 | 7 => Op::Read(lba, blocks, addr),
                        8 => Op::Flush,
                        _ => Op::PowerLoss,
                    }
                })
                .collect()
        })
        .collect()
}

fn fuzz_config() -> EmulatorConfig {
    EmulatorConfig {
        block_size: FUZZ_BS as u32,
        capacity_blocks: FUZZ_CAPACITY,
        hba: HbaPreset::lsi3108(),
        ..EmulatorConfig::default()
    }
}

fn submit(emu: &mut Emulator, cdb: &[u8], dir: Direction, sg: &[Segment]) -> u32 {
    let xfer_len = sg.iter().map(|s| s.len).sum();
    let out = emu.submit(&Task {
        initiator: 0,
        lun: 0,
        cdb,
        dir,
        xfer_len,
        sg,
        attr: TaskAttr::Simple,
    });
    digest_outcome(&out);
    out.bytes_transferred ^ u32::from(out.status.0)
}

fn tur(emu: &mut Emulator) -> u32 {
    let a = submit(emu, &[0; 6], Direction::None, &[]);
    a ^ submit(emu, &[0; 6], Direction::None, &[])
}

fn read(emu: &mut Emulator, lba: u64, blocks: u32, addr: u64, buf: &mut Vec<u8>) -> u32 {
    let len = blocks * FUZZ_BS as u32;
    emu.memory().free(addr, u64::from(len));
    let s = submit(
        emu,
        &rw10(false, lba, blocks, false),
        Direction::FromDevice,
        &[Segment::new(addr, len)],
    );
    buf.resize(len as usize, 0);
    emu.memory().read(addr, buf);
    digest(buf);
    s ^ u32::from(buf[len as usize - 1])
}

/// One fuzz execution: everything the emulator does for it, from building
/// it to the final read-back ([`drive_drop`] counts dropping it).
#[inline(never)]
fn drive_fuzz(cfg: &EmulatorConfig, prog: &[Op], buf: &mut Vec<u8>) -> (Emulator, u32) {
    let mut emu = Emulator::new(cfg.clone()).expect("valid configuration");
    emu.enable_coverage();
    let mut acc = tur(&mut emu);
    let mut written = Vec::new();
    for op in prog {
        acc ^= match op {
            Op::Write(lba, blocks, fua, addr, data) => {
                emu.memory().write(*addr, data);
                written.push((*lba, *blocks, *addr));
                submit(
                    &mut emu,
                    &rw10(true, *lba, *blocks, *fua),
                    Direction::ToDevice,
                    &[Segment::new(*addr, data.len() as u32)],
                )
            }
            Op::Read(lba, blocks, addr) => read(&mut emu, *lba, *blocks, *addr, buf),
            Op::Flush => submit(
                &mut emu,
                &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Direction::None,
                &[],
            ),
            Op::PowerLoss => {
                digest(&emu.power_loss().to_le_bytes());
                tur(&mut emu)
            }
        };
    }
    digest(&emu.power_loss().to_le_bytes());
    acc ^= tur(&mut emu);
    for (lba, blocks, addr) in written {
        acc ^= read(&mut emu, lba, blocks, addr, buf);
    }
    (emu, acc)
}

#[inline(never)]
fn drive_drop(emu: Emulator) {
    drop(emu);
}

fn fuzz(n: usize) {
    let progs = programs();
    let cfg = fuzz_config();
    let mut map = vec![0u8; emulator::coverage::MAP_SIZE];
    let mut buf = Vec::new();
    let mut touched = Vec::new();
    let mut acc = 0;
    let start = Instant::now();
    for i in 0..n {
        let (mut emu, a) = drive_fuzz(&cfg, &progs[i % progs.len()], &mut buf);
        acc ^= a;
        // The fuzzer's observer map (outside the emulator's count): the
        // last run's entries cleared, this run's copied, by the touched list.
        if let Some(cov) = emu.coverage_mut() {
            for &i in &touched {
                map[i as usize] = 0;
            }
            touched.clear();
            match cov.touched() {
                Some(t) => {
                    for &i in t {
                        map[i as usize] = cov.map()[i as usize];
                    }
                    touched.extend_from_slice(t);
                }
                None => map.copy_from_slice(cov.map()),
            }
            digest(&map);
        }
        drive_drop(emu);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("fuzz: {n} executions, {rate:.0} execs/s of emulator time ({acc:x})");
}

const REPLAY_BS: u32 = 4096;
const REPLAY_CAPACITY: u64 = 1 << 18;

fn replay_emulator() -> Emulator {
    let mut emu = Emulator::new(EmulatorConfig {
        block_size: REPLAY_BS,
        capacity_blocks: REPLAY_CAPACITY,
        ..EmulatorConfig::default()
    })
    .expect("valid configuration");
    // What the replayer's emulator backend does: stage below 4 GiB.
    emu.set_staging_window(0x1000_0000);
    let mut sink = Vec::new();
    emu.execute(0, &[0; 6], &[], &mut sink, 0);
    emu
}

#[inline(never)]
fn drive_execute(
    emu: &mut Emulator,
    cdb: &[u8],
    data_out: &[u8],
    data_in: &mut Vec<u8>,
) -> emulator::Outcome {
    let out = emu.execute(0, cdb, data_out, data_in, REPLAY_BS);
    digest_outcome(&out);
    digest(data_in);
    out
}

/// `n` random 4 KiB commands (xorshift LBAs, as the replayer's benchmark);
/// writes carry self-describing blocks, or arbitrary bytes with `raw`.
fn replay(n: u64, write: bool, raw: bool) {
    let mut emu = replay_emulator();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = vec![0u8; REPLAY_BS as usize];
    let mut sink = Vec::new();
    let mut acc = 0u32;
    let start = Instant::now();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lba = x % REPLAY_CAPACITY;
        let cdb = rw10(write, lba, 1, false);
        let out = if write {
            if raw {
                data[..8].copy_from_slice(&i.to_le_bytes());
                data[8..16].copy_from_slice(&lba.to_le_bytes());
            } else {
                fill_blocks(1, i as u32 + 1, lba, REPLAY_BS as usize, &mut data);
            }
            drive_execute(&mut emu, &cdb, &data, &mut sink)
        } else {
            drive_execute(&mut emu, &cdb, &[], &mut sink)
        };
        acc ^= out.bytes_transferred;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    if write && DIGEST.with(|d| d.get().is_some()) {
        // What the writes left, cache and medium: a sample of the LUN read
        // back, so the digest covers stored content too.
        for lba in (0..REPLAY_CAPACITY).step_by(61) {
            drive_execute(&mut emu, &rw10(false, lba, 1, false), &[], &mut sink);
        }
    }
    let what = match (write, raw) {
        (true, true) => "raw write",
        (true, false) => "write",
        _ => "read",
    };
    println!("{what}: {n} commands, {:.3} M cmd/s ({acc:x})", rate / 1e6);
}

fn main() {
    if std::env::var_os("PER_COMMAND_DIGEST").is_some() {
        DIGEST.with(|d| d.set(Some(0xcbf2_9ce4_8422_2325)));
    }
    run();
    if let Some(h) = DIGEST.with(|d| d.get()) {
        println!("digest {h:016x}");
    }
}

fn run() {
    let full = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n = |default: u64| {
        args.get(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(if full { default } else { 50 })
    };
    match args.first().map(String::as_str) {
        Some("fuzz") => fuzz(n(20_000) as usize),
        Some("write") => replay(n(1_000_000), true, false),
        Some("raw") => replay(n(1_000_000), true, true),
        Some("read") => replay(n(1_000_000), false, false),
        _ => {
            fuzz(n(20_000) as usize);
            replay(n(1_000_000), true, false);
            replay(n(1_000_000), true, true);
            replay(n(1_000_000), false, false);
        }
    }
}
