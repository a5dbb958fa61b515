//! Replay throughput to the in-process emulator: 4 KiB commands at QD32,
//! beside the emulator driven directly (no replayer) with the same
//! commands in the same run, so the replayer's own cost per command shows.
//!
//! `cargo bench -p scuzz-replayer --bench replay` (prints a Markdown table
//! for docs/performance.md; `REPLAY_BENCH_COMMANDS` sets the count).

use emulator::{Emulator, EmulatorConfig};
use replayer::backend::emulator::{EmulatorBackend, EmulatorSpec};
use replayer::options::{Order, ReplayOptions};
use replayer::{Backend, BackendError, Engine, MemoryTrace, Outcome, Request};
use std::time::Instant;
use trace::file::TraceHeader;
use trace::{Direction, Event, Nexus, Payload, Submit, TaskAttr};

const BLOCK: u32 = 4096;
const CAPACITY_BLOCKS: u64 = 1 << 18; // 1 GiB

fn rw10(write: bool, lba: u32) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = if write { 0x2a } else { 0x28 };
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[8] = 1;
    c
}

/// `n` random 4 KiB commands (xorshift LBAs), all reads or all writes.
fn commands(n: u64, write: bool) -> Vec<Event> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|seq| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let lba = (x % CAPACITY_BLOCKS) as u32;
            Event::Submit(Submit {
                seq,
                time_ns: seq * 1000,
                nexus: Nexus::default(),
                tag: seq,
                attr: TaskAttr::Simple,
                cdb: rw10(write, lba),
                dir: if write {
                    Direction::ToDevice
                } else {
                    Direction::FromDevice
                },
                xfer_len: BLOCK,
                sg: Vec::new(),
                payload: Payload::None,
            })
        })
        .collect()
}

fn header() -> TraceHeader {
    let mut h = TraceHeader::new("bench");
    h.block_size = BLOCK;
    h.capacity_blocks = CAPACITY_BLOCKS;
    h
}

/// Completes every command at once with GOOD and zeros: what the engine
/// alone costs per command (reading events, data, ordering, accounting).
struct Sink;

impl Backend for Sink {
    fn describe(&self) -> String {
        "sink".into()
    }

    async fn execute(&self, mut req: Request) -> Result<Outcome, BackendError> {
        if req.dir == Direction::FromDevice {
            req.data.clear();
            req.data.resize(req.xfer_len as usize, 0);
        }
        let n = req.xfer_len;
        Ok(Outcome::good(req.data, n))
    }
}

/// Commands per second through the replayer to the emulator.
fn replay(events: Vec<Event>) -> f64 {
    let t = MemoryTrace {
        name: "bench".into(),
        header: Some(header()),
        events,
    };
    let backend = EmulatorBackend::new(&EmulatorSpec::default(), t.header.as_ref()).unwrap();
    run(&backend, &t)
}

/// Commands per second through the replayer to [`Sink`].
fn replay_sink(events: Vec<Event>) -> f64 {
    let t = MemoryTrace {
        name: "bench".into(),
        header: Some(header()),
        events,
    };
    run(&Sink, &t)
}

fn run<B: Backend>(backend: &B, t: &MemoryTrace) -> f64 {
    let n = t.events.len() as f64;
    let opts = ReplayOptions {
        qd: Some(32),
        order: Order::Free,
        ..ReplayOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::new(backend, t, opts, None).unwrap();
        let start = Instant::now();
        let r = engine.run(t).await.unwrap();
        assert_eq!(r.summary.commands as f64, n);
        n / start.elapsed().as_secs_f64()
    })
}

/// Commands per second with the same commands sent straight to
/// `Emulator::execute`, one at a time, data generated the same way.
fn direct(events: &[Event], write: bool) -> f64 {
    let mut emu = Emulator::new(EmulatorConfig {
        block_size: BLOCK,
        capacity_blocks: CAPACITY_BLOCKS,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let mut out = Vec::new();
    let mut data = vec![0u8; BLOCK as usize];
    // Clear the power-on unit attention.
    emu.execute(0, &[0; 6], &[], &mut out, 0);
    let start = Instant::now();
    for (i, e) in events.iter().enumerate() {
        let Event::Submit(s) = e else { continue };
        if write {
            let lba = u32::from_be_bytes([s.cdb[2], s.cdb[3], s.cdb[4], s.cdb[5]]);
            trace::pattern::fill_blocks(1, i as u32 + 1, u64::from(lba), BLOCK as usize, &mut data);
            emu.execute(0, &s.cdb, &data, &mut out, BLOCK);
        } else {
            emu.execute(0, &s.cdb, &[], &mut out, BLOCK);
        }
    }
    events.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it, as a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("REPLAY_BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 10_000 });
    println!("| workload ({n} commands, 4 KiB, QD32) | replayer → emulator | peer: emulator alone | replayer → sink (engine ceiling) |");
    println!("|---|---|---|---|");
    for (name, write) in [
        ("random read", false),
        ("random write (fresh pattern data)", true),
    ] {
        let ev = commands(n, write);
        let peer = direct(&ev, write);
        let sink = replay_sink(ev.clone());
        let r = replay(ev);
        println!(
            "| {name} | {:.2} M cmd/s | {:.2} M cmd/s | {:.2} M cmd/s |",
            r / 1e6,
            peer / 1e6,
            sink / 1e6
        );
    }
}
