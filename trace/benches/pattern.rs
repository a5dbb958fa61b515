//! Cost of self-describing blocks: filling and classifying 4 KiB blocks,
//! beside the floor they cannot beat in the same run (a 4 KiB copy and a
//! CRC32C of 4 KiB, which `fill_block` and `classify` each contain).
//!
//! `cargo bench -p scuzz-trace --features criterion --bench pattern`; figures go to
//! docs/performance.md, "trace: block patterns".

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use trace::pattern::{classify, fill_block, fill_blocks, inspect, BlockTag};

const BLOCK: usize = 4096;

fn bench(c: &mut Criterion) {
    let tag = BlockTag {
        lba: 2048,
        generation: 3,
        seed: 0x5eed,
    };
    let mut g = c.benchmark_group("pattern_4k");
    g.throughput(Throughput::Bytes(BLOCK as u64));

    let mut buf = vec![0u8; BLOCK];
    g.bench_function("fill_block", |b| {
        b.iter(|| fill_block(black_box(&tag), black_box(&mut buf)))
    });

    let mut written = vec![0u8; BLOCK];
    fill_block(&tag, &mut written);
    g.bench_function("classify_ok", |b| {
        b.iter(|| classify(black_box(&written), black_box(&tag)))
    });

    let zeros = vec![0u8; BLOCK];
    g.bench_function("classify_dropped", |b| {
        b.iter(|| classify(black_box(&zeros), black_box(&tag)))
    });

    let mut garbage = written.clone();
    garbage[0] ^= 1;
    g.bench_function("inspect_garbage", |b| {
        b.iter(|| inspect(black_box(&garbage)))
    });

    // Peers: the work any block generator and checker must at least do.
    let src = written.clone();
    let mut dst = vec![0u8; BLOCK];
    g.bench_function("peer_memcpy", |b| {
        b.iter(|| black_box(&mut dst).copy_from_slice(black_box(&src)))
    });
    g.bench_function("peer_crc32c", |b| {
        b.iter(|| crc32c::crc32c(black_box(&written)))
    });
    g.finish();

    // A 1 MiB WRITE's Data-Out: 256 tagged 4 KiB blocks.
    let mut g = c.benchmark_group("pattern_1m");
    g.throughput(Throughput::Bytes(1 << 20));
    let mut big = vec![0u8; 1 << 20];
    g.bench_function("fill_blocks", |b| {
        b.iter(|| fill_blocks(0x5eed, 3, black_box(2048), BLOCK, black_box(&mut big)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
