//! The HBA path: bouncing, splitting, and what reaches the controller.

use crate::rig::{spread, Rig};
use emulator::{Bug, BugSet, EmulatorConfig};
use trace::oracle::ViolationClass;
use trace::{HbaPreset, Segment};

fn lsi(bugs: BugSet) -> Rig {
    Rig::new(EmulatorConfig {
        capacity_blocks: 1 << 16,
        hba: HbaPreset::lsi3108(),
        bugs,
        ..EmulatorConfig::default()
    })
}

/// A 1 MiB buffer in 4 KiB pages alternating below and above 4 GiB, the
/// way a page cache that spilled over 4 GiB hands it out.
fn mixed_sg() -> Vec<Segment> {
    (0..256u64)
        .map(|i| {
            Segment::new(
                if i % 2 == 0 {
                    0x4000_0000
                } else {
                    0x1_4000_0000
                } + i * 8192,
                4096,
            )
        })
        .collect()
}

#[test]
fn lsi3108_bounces_a_1mib_write_above_4g_and_it_lands_intact() {
    let mut r = lsi(BugSet::NONE);
    let sg = mixed_sg();
    let (out, _) = r.write(0, 2048, false, &sg);
    assert!(out.is_good());
    assert_eq!(
        out.bounced_bytes,
        512 * 1024,
        "every page above 4 GiB is bounced"
    );
    assert_eq!(
        out.controller_commands, 2,
        "1 MiB over a 512 KiB controller is split in two"
    );
    assert_eq!(out.bytes_transferred, 1 << 20);
    assert!(r.read_plain(0, 2048).is_empty());
    // And reads into high pages come back through the bounce buffer.
    assert!(r.read(0, 2048, &sg).is_empty());
}

#[test]
fn lsi3108_with_dma_truncate_32_reads_back_misdirected() {
    let mut r = lsi(BugSet::of(&[Bug::DmaTruncate32]));
    // Other data already sits where the truncated addresses point.
    let low: Vec<Segment> = mixed_sg()
        .iter()
        .map(|s| Segment::new(s.addr.0 & 0xffff_ffff, s.len))
        .collect();
    r.write(10_000, 2048, false, &low);
    let (out, _) = r.write(0, 2048, false, &mixed_sg());
    assert!(out.is_good(), "the driver reports success");
    assert!(out.bugs_fired.has(Bug::DmaTruncate32));
    let v = r.read_plain(0, 2048);
    assert!(!v.is_empty());
    assert!(
        v.iter()
            .all(|v| matches!(v.class, ViolationClass::Misdirected { .. })),
        "{}",
        v[0]
    );
    let ViolationClass::Misdirected { from_lba } = v[0].class else {
        unreachable!()
    };
    assert_eq!(
        (v[0].lba, from_lba),
        (8, 10_008),
        "page 1 of the buffer was read from page 1 of the low data"
    );
    assert!(
        v[0].to_string()
            .contains("misdirected: LBA 8..=15 holds data written for LBA 10008"),
        "{}",
        v[0]
    );
}

#[test]
fn generic_controller_takes_everything_in_one_command() {
    let mut r = Rig::new(EmulatorConfig::default());
    let (out, _) = r.write(0, 2048, false, &mixed_sg());
    assert_eq!((out.controller_commands, out.bounced_bytes), (1, 0));
}

#[test]
fn misaligned_segments_are_bounced() {
    let mut r = lsi(BugSet::NONE);
    // 2-byte aligned: the 3108 needs 4-byte alignment.
    let sg = [Segment::new(0x10_0002, 1000), Segment::new(0x20_0000, 24)];
    let (out, _) = r.write(0, 2, false, &sg);
    assert!(out.is_good());
    assert_eq!(
        out.bounced_bytes, 1000,
        "the aligned 24-byte segment goes direct"
    );
    assert!(r.read(0, 2, &sg).is_empty());
}

#[test]
fn a_task_whose_segment_limit_falls_inside_a_block_is_copied_through_one_bounce_region() {
    let mut r = lsi(BugSet::NONE);
    // 200 segments of 2 bytes and one of 112 cover a single block: the
    // 129-entry limit falls inside it, so no split on block boundaries
    // exists; the driver double-buffers instead.
    let mut sg: Vec<Segment> = (0..200u64)
        .map(|i| Segment::new(0x10_0000 + i * 64, 2))
        .collect();
    sg.push(Segment::new(0x50_0000, 112));
    let (out, _) = r.write(0, 1, false, &sg);
    assert!(out.is_good(), "{out:?}");
    assert_eq!(out.controller_commands, 1);
    assert!(r.read_plain(0, 1).is_empty());
    assert!(
        r.read(0, 1, &sg).is_empty(),
        "and reads scatter back through it"
    );
    // Segments above 4 GiB inside the coalesced region are copied too.
    let high: Vec<Segment> = sg
        .iter()
        .map(|s| Segment::new(s.addr.0 + (3 << 32), s.len))
        .collect();
    let (out, _) = r.write(1, 1, false, &high);
    assert!(out.is_good());
    assert!(r.read(1, 1, &high).is_empty());
}

#[test]
fn execute_stages_buffers_through_host_memory_and_bounces_them() {
    let mut r = lsi(BugSet::NONE);
    let data = vec![0x3cu8; 4096];
    let out = r.emu.execute(
        0,
        &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0],
        &data,
        &mut Vec::new(),
        4096,
    );
    let out = if out.is_unit_attention() {
        r.emu.execute(
            0,
            &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0],
            &data,
            &mut Vec::new(),
            4096,
        )
    } else {
        out
    };
    assert!(out.is_good());
    assert_eq!(out.bounced_bytes, 4096, "the staging window is above 4 GiB");
    let mut back = Vec::new();
    r.emu
        .execute(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[], &mut back, 4096);
    assert_eq!(back, data);
}

#[test]
fn spread_helper_never_overlaps() {
    let s = spread(0, 10_000, 3000);
    assert!(s.windows(2).all(|w| w[0].end() < w[1].addr.0));
}

#[test]
fn a_low_staging_window_is_not_bounced() {
    let mut r = lsi(BugSet::NONE);
    r.emu.set_staging_window(0x2000_0000);
    let w = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    let out = r.emu.execute(0, &w, &[1u8; 4096], &mut Vec::new(), 4096);
    let out = if out.is_unit_attention() {
        r.emu.execute(0, &w, &[1u8; 4096], &mut Vec::new(), 4096)
    } else {
        out
    };
    assert!(out.is_good());
    assert_eq!(out.bounced_bytes, 0);
}
