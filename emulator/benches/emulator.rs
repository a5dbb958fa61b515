//! In-process throughput of the emulator: 4 KiB writes with the write cache
//! on, through the full HBA path (SG list in host memory, driver, controller,
//! cache), against the simplest possible peer in the same run: a hash map
//! of 4 KiB boxes (a RAM disk with no cache, no DMA and no checks).
//!
//! `cargo bench -p scuzz-emulator --features criterion --bench emulator`;
//! figures are recorded in docs/performance.md, section "emulator".

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use emulator::{CacheConfig, Destage, Emulator, EmulatorConfig, Task};
use std::collections::HashMap;
use trace::pattern::fill_block;
use trace::{BlockTag, Direction, Segment, TaskAttr};

const BUF: u64 = 0x10_0000;

fn emulator(cache_blocks: u64) -> Emulator {
    Emulator::new(EmulatorConfig {
        block_size: 4096,
        capacity_blocks: 1 << 20,
        cache: CacheConfig {
            capacity_blocks: cache_blocks,
            destage: Destage::Lru,
            wce_default: true,
        },
        ..Default::default()
    })
    .unwrap()
}

fn write16(lba: u64) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x8a;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[13] = 1;
    cdb
}

/// 4 KiB WRITE(16)s over `span` LBAs (sequential, wrapping) into an
/// emulator whose cache holds `cache_blocks` lines.
fn bench_writes(c: &mut Criterion, name: &str, pattern: bool, span: u64, cache_blocks: u64) {
    let mut emu = emulator(cache_blocks);
    let sg = [Segment::new(BUF, 4096)];
    let mut block = vec![0x5au8; 4096];
    if pattern {
        fill_block(
            &BlockTag {
                lba: 0,
                generation: 1,
                seed: 7,
            },
            &mut block,
        );
    }
    emu.memory().write(BUF, &block);
    let mut lba = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            let cdb = write16(lba % span);
            lba += 1;
            let t = Task {
                initiator: 0,
                lun: 0,
                cdb: &cdb,
                dir: Direction::ToDevice,
                xfer_len: 4096,
                sg: &sg,
                attr: TaskAttr::Simple,
            };
            black_box(emu.submit(&t))
        })
    });
}

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("emulator");
    g.throughput(Throughput::Elements(1));
    drop(g);
    // Working set inside a 64 MiB cache: every write is a cache hit.
    bench_writes(c, "emulator/write_4k_raw_cache_hit", false, 8192, 16_384);
    bench_writes(c, "emulator/write_4k_pattern_cache_hit", true, 8192, 16_384);
    // Working set four times the cache: LRU write-back to the medium.
    bench_writes(c, "emulator/write_4k_raw_destaging", false, 65_536, 16_384);
    bench_writes(
        c,
        "emulator/write_4k_pattern_destaging",
        true,
        65_536,
        16_384,
    );
    sequential_copy(c);

    // The same stream through execute(): the byte buffer is staged in host
    // memory first (what the iSCSI target does).
    let mut emu = emulator(16_384);
    let data = vec![0x5au8; 4096];
    let mut sink = Vec::new();
    let mut lba = 0u64;
    c.bench_function("emulator/write_4k_raw_execute", |b| {
        b.iter(|| {
            let cdb = write16(lba % 8192);
            lba += 1;
            black_box(emu.execute(0, &cdb, &data, &mut sink, 4096))
        })
    });

    // Peer: a RAM disk that copies the block into a hash map.
    let mut peer: HashMap<u64, Box<[u8; 4096]>> = HashMap::new();
    let block = [0x5au8; 4096];
    let mut lba = 0u64;
    c.bench_function("peer/hashmap_ramdisk_write_4k", |b| {
        b.iter(|| {
            let e = peer
                .entry(lba % 8192)
                .or_insert_with(|| Box::new([0u8; 4096]));
            e.copy_from_slice(black_box(&block));
            lba += 1;
        })
    });
}

/// A `cp`-like stream: each LBA's own self-describing block (prepared in
/// host memory beforehand, one buffer per LBA), written in order over 4x
/// the cache, so every write also writes one block back and the medium
/// extends one extent.
fn sequential_copy(c: &mut Criterion) {
    const SPAN: u64 = 4096;
    let mut emu = emulator(1024);
    let mut block = vec![0u8; 4096];
    for lba in 0..SPAN {
        fill_block(
            &BlockTag {
                lba,
                generation: 1,
                seed: 7,
            },
            &mut block,
        );
        emu.memory().write(BUF + lba * 4096, &block);
    }
    let mut lba = 0u64;
    c.bench_function("emulator/write_4k_sequential_copy_destaging", |b| {
        b.iter(|| {
            let l = lba % SPAN;
            let cdb = write16(l);
            lba += 1;
            let sg = [Segment::new(BUF + l * 4096, 4096)];
            let t = Task {
                initiator: 0,
                lun: 0,
                cdb: &cdb,
                dir: Direction::ToDevice,
                xfer_len: 4096,
                sg: &sg,
                attr: TaskAttr::Simple,
            };
            black_box(emu.submit(&t))
        })
    });
}

/// What a fuzz execution costs the emulator: a fresh 64 MiB emulator with
/// coverage on, 32 commands (4 KiB writes and reads, a flush), a power loss.
fn fuzz_exec(c: &mut Criterion) {
    let sg = [Segment::new(BUF, 4096)];
    let block = [0x6bu8; 4096];
    c.bench_function("emulator/fuzz_exec_32_ops_fresh_64mib", |b| {
        b.iter(|| {
            let mut emu = Emulator::new(EmulatorConfig {
                block_size: 4096,
                capacity_blocks: 16_384,
                hba: trace::HbaPreset::lsi3108(),
                ..Default::default()
            })
            .unwrap();
            emu.enable_coverage();
            emu.memory().write(BUF, &block);
            for i in 0..32u64 {
                let (op, dir) = match i % 4 {
                    0 | 1 => (0x8a, Direction::ToDevice),
                    2 => (0x88, Direction::FromDevice),
                    _ => (0x91, Direction::None),
                };
                let mut cdb = write16(i * 7 % 16_000);
                cdb[0] = op;
                let (xfer, sg): (u32, &[Segment]) = if dir == Direction::None {
                    (0, &[])
                } else {
                    (4096, &sg)
                };
                if op == 0x91 {
                    cdb[10..14].copy_from_slice(&[0; 4]);
                }
                let t = Task {
                    initiator: 0,
                    lun: 0,
                    cdb: &cdb,
                    dir,
                    xfer_len: xfer,
                    sg,
                    attr: TaskAttr::Simple,
                };
                black_box(emu.submit(&t));
            }
            emu.power_loss();
            black_box(emu.coverage().map(|m| m[0]))
        })
    });
}

criterion_group!(benches, writes, fuzz_exec);
criterion_main!(benches);
