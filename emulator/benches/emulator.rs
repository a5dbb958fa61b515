//! In-process throughput: 4 KiB writes with the write cache on.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use emulator::{Emulator, EmulatorConfig, Task};
use trace::{Direction, Segment, TaskAttr};

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("emulator");
    g.throughput(Throughput::Elements(1));
    let mut emu = Emulator::new(EmulatorConfig {
        block_size: 4096,
        capacity_blocks: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    emu.memory().write(0x10_0000, &[0x5a; 4096]);
    let sg = [Segment::new(0x10_0000, 4096)];
    let mut lba = 0u64;
    g.bench_function("write_4k_cached_submit", |b| {
        b.iter(|| {
            let mut cdb = [0u8; 16];
            cdb[0] = 0x8a;
            cdb[2..10].copy_from_slice(&(lba % 8192).to_be_bytes());
            cdb[13] = 1;
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
            emu.submit(&t)
        })
    });
    g.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
