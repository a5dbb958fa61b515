//! Trace file throughput and size:
//! `cargo bench -p scuzz-trace --features criterion --bench trace_io`.
//!
//! Workload: a sequential 4 KiB write stream as a recorder in digest mode
//! writes it (block size 4096): per command one `Submit` carrying a WRITE(10)
//! CDB, one SG segment and one CRC32C digest, then one `Complete`. Measured:
//! events/s written and read, with and without zstd, and bytes per command.
//! Peer, in the same run: the same events as JSON Lines (serde_json), raw and
//! zstd-compressed, the format a quick home-made recorder would reach for.

use criterion::{black_box, criterion_group, Criterion, Throughput};
use std::io::{Read, Write};
use trace::file::{Compression, PayloadMode, TraceHeader, TraceReader, TraceWriter};
use trace::{
    Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
    TaskAttr,
};

const COMMANDS: u64 = 50_000;

/// Deterministic noise for timestamps and digests (splitmix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The workload: queue depth 8, 4 KiB writes at increasing LBAs, latencies of
/// 20-50 us with jitter, buffers from a pool of 8 pages above 4 GiB, a CRC32C
/// (random, as real digests are) per block.
fn workload() -> Vec<Event> {
    let mut events = Vec::with_capacity(2 * COMMANDS as usize);
    let mut t = 1_000_000u64;
    for i in 0..COMMANDS {
        t += 2_000 + mix(i) % 4_000;
        let lba = i as u32;
        let mut cdb = vec![0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        events.push(Event::Submit(Submit {
            seq: i,
            time_ns: t,
            nexus: Nexus { target: 0, lun: 0 },
            tag: i % 64,
            attr: TaskAttr::Simple,
            cdb,
            dir: Direction::ToDevice,
            xfer_len: 4096,
            sg: vec![Segment::new(0x1_0000_0000 + (i % 8) * 4096, 4096)],
            payload: Payload::Digests {
                granularity: 4096,
                crcs: vec![mix(!i) as u32],
            },
        }));
        // Completions lag by the queue depth.
        if i >= 8 {
            let s = i - 8;
            events.push(complete(s, t + mix(s ^ 0xabc) % 1_000));
        }
    }
    for s in COMMANDS - 8..COMMANDS {
        t += 20_000;
        events.push(complete(s, t));
    }
    events
}

fn complete(seq: u64, time_ns: u64) -> Event {
    Event::Complete(Complete {
        seq,
        time_ns,
        response: ServiceResponse::TaskComplete,
        status: ScsiStatus::GOOD,
        sense: Vec::new(),
        bytes_transferred: 4096,
        residual: 0,
        payload: Payload::None,
    })
}

fn header() -> TraceHeader {
    let mut h = TraceHeader::new("trace_io bench");
    h.block_size = 4096;
    h.capacity_blocks = 1 << 28;
    h.payload_mode = PayloadMode::Digest;
    h
}

fn write_trace(events: &[Event], c: Compression) -> Vec<u8> {
    let mut w = TraceWriter::new(Vec::with_capacity(8 << 20), &header(), c).unwrap();
    for ev in events {
        w.write(ev).unwrap();
    }
    w.finish().unwrap()
}

fn read_trace(bytes: &[u8]) -> usize {
    let r = TraceReader::new(bytes).unwrap();
    let mut n = 0;
    for ev in r {
        black_box(ev.unwrap());
        n += 1;
    }
    n
}

fn jsonl(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 << 20);
    for ev in events {
        serde_json::to_writer(&mut out, ev).unwrap();
        out.push(b'\n');
    }
    out
}

fn bench(c: &mut Criterion) {
    let events = workload();
    let n = events.len() as u64;
    let plain = write_trace(&events, Compression::None);
    let zstd = write_trace(&events, Compression::ZSTD_DEFAULT);
    let json = jsonl(&events);
    let json_zstd = zstd::encode_all(&json[..], 3).unwrap();
    assert_eq!(read_trace(&zstd), events.len());

    let per_cmd = |b: &[u8]| b.len() as f64 / COMMANDS as f64;
    println!(
        "bytes/command ({COMMANDS} sequential 4 KiB writes, digest mode): \
         sczt+zstd {:.1}, sczt {:.1}, jsonl+zstd {:.1}, jsonl {:.1}",
        per_cmd(&zstd),
        per_cmd(&plain),
        per_cmd(&json_zstd),
        per_cmd(&json)
    );

    let mut g = c.benchmark_group("trace_io");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.bench_function("write/sczt+zstd", |b| {
        b.iter(|| write_trace(&events, Compression::ZSTD_DEFAULT))
    });
    g.bench_function("write/sczt", |b| {
        b.iter(|| write_trace(&events, Compression::None))
    });
    g.bench_function("read/sczt+zstd", |b| b.iter(|| read_trace(&zstd)));
    g.bench_function("read/sczt", |b| b.iter(|| read_trace(&plain)));
    g.bench_function("write/jsonl+zstd (peer)", |b| {
        b.iter(|| {
            let enc = zstd::Encoder::new(Vec::with_capacity(8 << 20), 3).unwrap();
            let mut out = std::io::BufWriter::with_capacity(256 << 10, enc);
            for ev in &events {
                serde_json::to_writer(&mut out, ev).unwrap();
                out.write_all(b"\n").unwrap();
            }
            out.into_inner().ok().unwrap().finish().unwrap()
        })
    });
    g.bench_function("read/jsonl+zstd (peer)", |b| {
        b.iter(|| {
            let mut text = Vec::new();
            zstd::Decoder::new(&json_zstd[..])
                .unwrap()
                .read_to_end(&mut text)
                .unwrap();
            let mut n = 0;
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                black_box(serde_json::from_slice::<Event>(line).unwrap());
                n += 1;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
