//! The SBC target through `execute`: what a compliance suite checks.

use emulator::{Emulator, EmulatorConfig, Outcome};

fn emu() -> Emulator {
    Emulator::new(EmulatorConfig {
        capacity_blocks: 1000,
        luns: 2,
        ..EmulatorConfig::default()
    })
    .unwrap()
}

fn run(e: &mut Emulator, cdb: &[u8], out: &[u8], xfer: u32) -> (Outcome, Vec<u8>) {
    let mut data = Vec::new();
    let o = e.execute(0, cdb, out, &mut data, xfer);
    (o, data)
}

fn sense(o: &Outcome) -> Option<(u8, u8, u8)> {
    o.sense_code()
}

#[test]
fn inquiry_standard_and_vpd_pages() {
    let mut e = emu();
    let (o, d) = run(&mut e, &[0x12, 0, 0, 0, 96, 0], &[], 96);
    assert!(o.is_good());
    assert_eq!(d.len(), 96);
    assert_eq!(&d[8..13], b"SCUZZ");
    let (_, d) = run(&mut e, &[0x12, 1, 0x00, 0, 255, 0], &[], 255);
    assert_eq!(&d[4..], &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    let (_, d) = run(&mut e, &[0x12, 1, 0x83, 0, 255, 0], &[], 255);
    assert_eq!(d[5] & 0x0f, 3, "first designator is NAA");
    assert_eq!(d[8] >> 4, 6);
    let (o, _) = run(&mut e, &[0x12, 1, 0x42, 0, 255, 0], &[], 255);
    assert_eq!(sense(&o), Some((5, 0x24, 0)));
    let (o, _) = run(&mut e, &[0x12, 0, 0x80, 0, 255, 0], &[], 255);
    assert_eq!(sense(&o), Some((5, 0x24, 0)), "page code without EVPD");
    // Allocation length truncates and the residual says so.
    let (o, d) = run(&mut e, &[0x12, 0, 0, 0, 36, 0], &[], 200);
    assert_eq!((d.len(), o.residual), (36, 164));
}

#[test]
fn read_capacity_and_lba_range_checks() {
    let mut e = emu();
    let (_, d) = run(&mut e, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
    assert_eq!(d, [0, 0, 0x03, 0xe7, 0, 0, 2, 0]);
    let mut rc16 = [0u8; 16];
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[13] = 32;
    let (_, d) = run(&mut e, &rc16, &[], 32);
    assert_eq!(&d[0..8], &999u64.to_be_bytes());
    assert_eq!(d[14] & 0x80, 0x80, "LBPME when thin");
    // READ(16) at the last LBA is fine, one past it is 21/00, and an LBA
    // whose end overflows 64 bits is 21/00 too, not a panic.
    let mut r16 = [0u8; 16];
    r16[0] = 0x88;
    r16[2..10].copy_from_slice(&999u64.to_be_bytes());
    r16[13] = 1;
    assert!(run(&mut e, &r16, &[], 512).0.is_good());
    r16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(sense(&run(&mut e, &r16, &[], 512).0), Some((5, 0x21, 0)));
    assert_eq!(
        sense(&run(&mut e, &[0x28, 0, 0, 0, 3, 0xe8, 0, 0, 0, 0], &[], 0).0),
        None,
        "0 blocks at capacity"
    );
    assert_eq!(
        sense(&run(&mut e, &[0x28, 0, 0, 0, 3, 0xe9, 0, 0, 0, 0], &[], 0).0),
        Some((5, 0x21, 0))
    );
    assert_eq!(
        sense(&run(&mut e, &[0x28, 0xe0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512).0),
        Some((5, 0x24, 0)),
        "RDPROTECT"
    );
    assert_eq!(
        sense(&run(&mut e, &[0xc9, 0, 0, 0, 0, 0], &[], 0).0),
        Some((5, 0x20, 0))
    );
}

#[test]
fn write_residuals_follow_the_edtl() {
    let mut e = emu();
    // One block written with EDTL 200: GOOD, 200 bytes land, overflow.
    let (o, _) = run(
        &mut e,
        &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        &[b'b'; 200],
        200,
    );
    assert!(o.is_good());
    assert_eq!(o.residual, 200 - 512);
    let (_, d) = run(&mut e, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], 512);
    assert!(d[..200].iter().all(|b| *b == b'b') && d[200..].iter().all(|b| *b == 0));
    // EDTL of two blocks for a one-block write: underflow of one block.
    let (o, _) = run(
        &mut e,
        &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        &[b'c'; 1024],
        1024,
    );
    assert_eq!(o.residual, 512);
}

#[test]
fn mode_pages_wce_persists_across_reset_not_power_loss() {
    let mut e = emu();
    let (o, d) = run(&mut e, &[0x1a, 0, 0x08, 0, 255, 0], &[], 255);
    assert!(o.is_good());
    assert_eq!(d[3], 8, "block descriptor");
    assert_eq!(d[12] & 0x3f, 0x08);
    assert_eq!(d[14] & 0x04, 0x04, "WCE on by default");
    let (_, ch) = run(&mut e, &[0x1a, 0, 0x48, 0, 255, 0], &[], 255);
    assert_eq!(ch[14], 0x05, "WCE and RCD changeable");
    let (_, all) = run(&mut e, &[0x1a, 0, 0x3f, 0, 255, 0], &[], 255);
    assert_eq!(usize::from(all[0]) + 1, all.len());
    let mut list = vec![0u8, 0, 0, 0, 0x08, 0x12];
    list.extend_from_slice(&[0; 18]);
    let (o, _) = run(&mut e, &[0x15, 0x10, 0, 0, 24, 0], &list, 24);
    assert!(o.is_good(), "{o:?}");
    e.reset();
    let (o, _) = run(&mut e, &[0x00, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(sense(&o), Some((6, 0x29, 0)), "unit attention after reset");
    let (o, _) = run(&mut e, &[0x00, 0, 0, 0, 0, 0], &[], 0);
    assert!(o.is_good(), "reported once");
    let (_, d) = run(&mut e, &[0x1a, 0, 0x08, 0, 255, 0], &[], 255);
    assert_eq!(d[14] & 0x04, 0, "WCE off survives a reset");
    e.power_loss();
    run(&mut e, &[0x00, 0, 0, 0, 0, 0], &[], 0);
    let (_, d) = run(&mut e, &[0x1a, 0, 0x08, 0, 255, 0], &[], 255);
    assert_eq!(d[14] & 0x04, 0x04, "power loss restores the saved value");
    list[6] = 0x08; // MF is not changeable
    let (o, _) = run(&mut e, &[0x15, 0x10, 0, 0, 24, 0], &list, 24);
    assert_eq!(sense(&o), Some((5, 0x26, 0)));
}

#[test]
fn report_luns_and_missing_luns() {
    let mut e = emu();
    let (o, d) = run(&mut e, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[], 256);
    assert!(o.is_good());
    assert_eq!(&d[0..4], &16u32.to_be_bytes());
    assert_eq!(d[17], 1);
    let mut data = Vec::new();
    let o = e.execute(7, &[0x12, 0, 0, 0, 96, 0], &[], &mut data, 96);
    assert!(o.is_good());
    assert_eq!(data[0], 0x7f, "no unit at LUN 7");
    let o = e.execute(7, &[0x00, 0, 0, 0, 0, 0], &[], &mut data, 0);
    assert_eq!(sense(&o), Some((5, 0x25, 0)));
    assert_eq!(
        sense(&run(&mut e, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], &[], 8).0),
        Some((5, 0x24, 0))
    );
}

#[test]
fn unmap_write_same_and_get_lba_status() {
    let mut e = emu();
    run(
        &mut e,
        &[0x2a, 0, 0, 0, 0, 10, 0, 0, 4, 0],
        &[7u8; 2048],
        2048,
    );
    let gls = |e: &mut Emulator, lba: u64| {
        let mut c = [0u8; 16];
        c[0] = 0x9e;
        c[1] = 0x12;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[13] = 64;
        run(e, &c, &[], 64)
    };
    let (_, d) = gls(&mut e, 10);
    assert_eq!(
        (&d[8..16], &d[16..20], d[20]),
        (&10u64.to_be_bytes()[..], &4u32.to_be_bytes()[..], 0)
    );
    let mut list = vec![0u8, 22, 0, 16, 0, 0, 0, 0];
    list.extend_from_slice(&11u64.to_be_bytes());
    list.extend_from_slice(&2u32.to_be_bytes());
    list.extend_from_slice(&[0; 4]);
    let (o, _) = run(&mut e, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list, 24);
    assert!(o.is_good(), "{o:?}");
    let (_, d) = gls(&mut e, 11);
    assert_eq!(
        (&d[16..20], d[20]),
        (&2u32.to_be_bytes()[..], 1),
        "deallocated"
    );
    let (o, _) = gls(&mut e, 1000);
    assert_eq!(sense(&o), Some((5, 0x21, 0)), "GetLBAStatus.BeyondEol");
    let (o, _) = gls(&mut e, u64::MAX);
    assert_eq!(sense(&o), Some((5, 0x21, 0)));
    // WRITE SAME(16) with UNMAP over a written range deallocates it.
    let mut ws = [0u8; 16];
    ws[0] = 0x93;
    ws[1] = 0x08;
    ws[9] = 10;
    ws[13] = 4;
    assert!(run(&mut e, &ws, &[0u8; 512], 512).0.is_good());
    let (_, d) = run(&mut e, &[0x28, 0, 0, 0, 0, 10, 0, 0, 4, 0], &[], 2048);
    assert!(d.iter().all(|b| *b == 0));
    // WRITE SAME(10) of a data block to the end of the disk is one extent.
    let ws10 = [0x41, 0, 0, 0, 0, 100, 0, 0, 0, 0];
    assert!(run(&mut e, &ws10, &[9u8; 512], 512).0.is_good());
    let (_, d) = run(&mut e, &[0x28, 0, 0, 0, 3, 0xe7, 0, 0, 1, 0], &[], 512);
    assert_eq!(d, vec![9u8; 512]);
}

#[test]
fn compare_and_write_miscompare_reports_the_offset() {
    let mut e = emu();
    run(&mut e, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[1u8; 512], 512);
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[13] = 1;
    let mut buf = vec![1u8; 512];
    buf.extend_from_slice(&[2u8; 512]);
    assert!(run(&mut e, &caw, &buf, 1024).0.is_good());
    let (o, _) = run(&mut e, &caw, &buf, 1024);
    assert_eq!(sense(&o), Some((0xe, 0x1d, 0)));
    assert_eq!(&o.sense[3..7], &0u32.to_be_bytes(), "first byte differs");
    let mut buf2 = vec![2u8; 512];
    buf2[300] = 9;
    buf2.extend_from_slice(&[3u8; 512]);
    let (o, _) = run(&mut e, &caw, &buf2, 1024);
    assert_eq!(&o.sense[3..7], &300u32.to_be_bytes());
}

#[test]
fn reservations_conflict_between_initiators() {
    let mut e = emu();
    let mut d = Vec::new();
    assert!(e
        .execute_from(1, 0, &[0x16, 0, 0, 0, 0, 0], &[], &mut d, 0)
        .is_good());
    assert!(e
        .execute_from(1, 0, &[0x16, 0, 0, 0, 0, 0], &[], &mut d, 0)
        .is_good());
    let o = e.execute_from(2, 0, &[0x16, 0, 0, 0, 0, 0], &[], &mut d, 0);
    assert_eq!(o.status, trace::ScsiStatus::RESERVATION_CONFLICT);
    assert!(
        e.execute_from(2, 0, &[0x17, 0, 0, 0, 0, 0], &[], &mut d, 0)
            .is_good(),
        "release by non-holder"
    );
    let o = e.execute_from(2, 0, &[0x1a, 0, 0x3f, 0, 255, 0], &[], &mut d, 255);
    assert_eq!(o.status, trace::ScsiStatus::RESERVATION_CONFLICT);
    assert!(
        e.execute_from(2, 0, &[0x12, 0, 0, 0, 36, 0], &[], &mut d, 36)
            .is_good(),
        "INQUIRY allowed"
    );
    assert!(e
        .execute_from(1, 0, &[0x17, 0, 0, 0, 0, 0], &[], &mut d, 0)
        .is_good());
    assert!(e
        .execute_from(2, 0, &[0x16, 0, 0, 0, 0, 0], &[], &mut d, 0)
        .is_good());
}

#[test]
fn sync_cache_immed_completes_later_and_power_loss_before_that_may_lose_data() {
    let mut e = emu();
    run(&mut e, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[1u8; 512], 512);
    let (o, _) = run(&mut e, &[0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);
    assert!(o.is_good());
    assert_eq!(
        e.disk(0).unwrap().cache().dirty_count(),
        1,
        "IMMED: not flushed yet"
    );
    e.settle();
    assert_eq!(e.disk(0).unwrap().cache().dirty_count(), 0);
    assert_eq!(
        sense(&run(&mut e, &[0x35, 0, 0, 0, 0x03, 0xe8, 0, 0, 1, 0], &[], 0).0),
        Some((5, 0x21, 0))
    );
}

/// SYNCHRONIZE CACHE and PRE-FETCH with a block count of zero run from the
/// LBA through the last block: at the last LBA that is one block, one past
/// it is LBA OUT OF RANGE (a no-bug fuzz campaign caught the emulator
/// accepting it).
#[test]
fn a_count_of_zero_through_the_end_starts_at_an_existing_block() {
    let mut e = emu();
    for op in [0x35u8, 0x34] {
        let at = |lba: u32| {
            let b = lba.to_be_bytes();
            [op, 0, b[0], b[1], b[2], b[3], 0, 0, 0, 0]
        };
        assert!(
            run(&mut e, &at(999), &[], 0).0.is_good(),
            "{op:#x} at the last LBA"
        );
        assert_eq!(
            sense(&run(&mut e, &at(1000), &[], 0).0),
            Some((5, 0x21, 0)),
            "{op:#x} one past the last LBA"
        );
    }
}

#[test]
fn hostile_cdbs_never_panic() {
    for preset in [trace::HbaPreset::generic(), trace::HbaPreset::lsi3108()] {
        hostile_cdbs_on(
            Emulator::new(EmulatorConfig {
                capacity_blocks: 1000,
                luns: 2,
                hba: preset,
                ..EmulatorConfig::default()
            })
            .unwrap(),
        );
    }
}

#[test]
fn split_commands_past_the_last_lba_are_refused_whole() {
    // Regression (libiscsi Read16.BeyondEol on lsi3108): a READ(16) of 129
    // 4 KiB blocks at LBA 2^64-1 is split by the driver; the LBA arithmetic
    // overflowed, and a WRITE past the end was partly executed.
    let mut e = Emulator::new(EmulatorConfig {
        block_size: 4096,
        capacity_blocks: 1000,
        hba: trace::HbaPreset::lsi3108(),
        ..EmulatorConfig::default()
    })
    .unwrap();
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    c[13] = 129;
    let o = e.execute(0, &c, &[], &mut Vec::new(), 129 * 4096);
    assert_eq!(sense(&o), Some((5, 0x21, 0)));
    c[0] = 0x8a;
    c[2..10].copy_from_slice(&900u64.to_be_bytes());
    c[13] = 200; // 100 blocks past the end, in two pieces
    let o = e.execute(0, &c, &vec![7u8; 200 * 4096], &mut Vec::new(), 200 * 4096);
    assert_eq!(sense(&o), Some((5, 0x21, 0)));
    let mut d = Vec::new();
    e.execute(0, &[0x28, 0, 0, 0, 3, 0x84, 0, 0, 1, 0], &[], &mut d, 4096);
    assert_eq!(d, vec![0u8; 4096], "nothing of the refused write landed");
}

/// Random CDBs of every length, with random transfer lengths (one in eight
/// over the LSI 3108's 512 KiB, so the driver splits them), to any LUN.
fn hostile_cdbs_on(mut e: Emulator) {
    let mut x = 0x1234_5678_9abc_def0u64;
    let big = vec![0xa5u8; 2 << 20];
    for len in 0..40usize {
        for _ in 0..200 {
            let cdb: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let xfer = if x % 8 == 3 {
                (x >> 20) as u32 % (2 << 20)
            } else {
                (x >> 40) as u32 % 8192
            };
            let out = &big[..xfer as usize];
            let mut d = Vec::new();
            let o = e.execute(
                x % 3,
                &cdb,
                if x & 1 == 0 { out } else { &[] },
                &mut d,
                xfer,
            );
            assert!(d.len() <= xfer as usize);
            let _ = o;
        }
    }
}

#[test]
fn a_2_tib_disk_costs_memory_only_for_what_is_written() {
    let mut e = Emulator::new(EmulatorConfig {
        capacity_blocks: 1 << 32,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let last = (1u64 << 32) - 1;
    let mut w = [0u8; 16];
    w[0] = 0x8a;
    w[2..10].copy_from_slice(&last.to_be_bytes());
    w[13] = 1;
    assert!(e
        .execute(0, &w, &[0x77; 512], &mut Vec::new(), 512)
        .is_good());
    let mut r = w;
    r[0] = 0x88;
    let mut d = Vec::new();
    assert!(e.execute(0, &r, &[], &mut d, 512).is_good());
    assert_eq!(d, vec![0x77; 512]);
    // A READ of 2^32-1 blocks is refused before anything is allocated
    // (MAXIMUM TRANSFER LENGTH), not attempted; so is a 4 GiB buffer.
    let mut huge = [0u8; 16];
    huge[0] = 0x88;
    huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    let o = e.execute(0, &huge, &[], &mut d, 512);
    assert_eq!(sense(&o), Some((5, 0x24, 0)));
    let o = e.execute(0, &huge, &[], &mut d, u32::MAX);
    assert_eq!(sense(&o), Some((5, 0x24, 0)));
    assert!(e.disk(0).unwrap().medium().extent_count() <= 1);
}

#[test]
fn mode_select_tells_other_initiators_their_parameters_changed() {
    let mut e = emu();
    let mut d = Vec::new();
    assert!(e
        .execute_from(2, 0, &[0x00, 0, 0, 0, 0, 0], &[], &mut d, 0)
        .is_good());
    let mut list = vec![0u8, 0, 0, 0, 0x08, 0x12];
    list.extend_from_slice(&[0; 18]);
    assert!(e
        .execute_from(1, 0, &[0x15, 0x10, 0, 0, 24, 0], &list, &mut d, 24)
        .is_good());
    let o = e.execute_from(2, 0, &[0x00, 0, 0, 0, 0, 0], &[], &mut d, 0);
    assert_eq!(sense(&o), Some((6, 0x2a, 0x01)));
    assert!(e
        .execute_from(2, 0, &[0x00, 0, 0, 0, 0, 0], &[], &mut d, 0)
        .is_good());
    assert!(
        e.execute_from(1, 0, &[0x00, 0, 0, 0, 0, 0], &[], &mut d, 0)
            .is_good(),
        "not the sender"
    );
}

#[test]
fn persistent_reservations_through_execute() {
    let mut e = emu();
    let mut d = Vec::new();
    let prout = |sa: u8, ty: u8| [0x5f, sa, ty, 0, 0, 0, 0, 0, 24, 0];
    let params = |rk: u64, sark: u64| {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&rk.to_be_bytes());
        p[8..16].copy_from_slice(&sark.to_be_bytes());
        p
    };
    assert!(e
        .execute_from(1, 0, &prout(6, 0), &params(0, 0x11), &mut d, 24)
        .is_good());
    assert!(
        e.execute_from(1, 0, &prout(1, 3), &params(0x11, 0), &mut d, 24)
            .is_good(),
        "EXCLUSIVE ACCESS"
    );
    let o = e.execute_from(2, 0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[], &mut d, 512);
    assert_eq!(o.status, trace::ScsiStatus::RESERVATION_CONFLICT);
    assert!(e
        .execute_from(2, 0, &[0x12, 0, 0, 0, 36, 0], &[], &mut d, 36)
        .is_good());
    let prin = [0x5e, 0x01, 0, 0, 0, 0, 0, 0, 64, 0];
    assert!(e.execute_from(2, 0, &prin, &[], &mut d, 64).is_good());
    assert_eq!((d.len(), d[21]), (24, 3));
    let o = e.execute_from(1, 0, &prout(0, 0), &params(0x11, 0)[..20], &mut d, 20);
    assert_eq!(sense(&o), Some((5, 0x1a, 0)));
}

/// READ(16)/WRITE(16) with LBAs near 0, the capacity and 2^64, block counts
/// up to 4096 and mismatched transfer lengths, through every preset with no
/// bug and with every bug at once: never a panic, never more data than
/// asked for.
#[test]
fn hostile_read_write_ranges_never_panic() {
    let big = vec![0x3cu8; 4 << 20];
    for preset in ["generic", "lsi3108", "lsi3108-unsplit"] {
        for bugs in [
            emulator::BugSet::NONE,
            emulator::Bug::ALL.iter().copied().collect(),
        ] {
            let mut e = Emulator::new(EmulatorConfig {
                capacity_blocks: 5000,
                hba: trace::HbaPreset::by_name(preset).unwrap(),
                bugs,
                ..EmulatorConfig::default()
            })
            .unwrap();
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..400 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let lba = match x % 4 {
                    0 => x >> 52,
                    1 => 5000 - (x >> 58),
                    2 => u64::MAX - (x >> 56),
                    _ => (x >> 33) % 6000,
                };
                let blocks = ((x >> 20) % 4097) as u32;
                let xfer = match (x >> 8) % 3 {
                    0 => blocks * 512,
                    1 => ((x >> 30) % (4 << 20)) as u32,
                    _ => (blocks * 512).saturating_sub(512),
                };
                let mut c = [0u8; 16];
                c[0] = if x & 1 == 0 { 0x8a } else { 0x88 };
                c[2..10].copy_from_slice(&lba.to_be_bytes());
                c[10..14].copy_from_slice(&blocks.to_be_bytes());
                let out = if c[0] == 0x8a {
                    &big[..xfer as usize]
                } else {
                    &[][..]
                };
                let mut d = Vec::new();
                let o = e.execute(0, &c, out, &mut d, xfer);
                assert!(d.len() <= xfer as usize, "{o:?}");
                if x.is_multiple_of(50) {
                    e.power_loss();
                }
            }
        }
    }
}

#[test]
fn split_verify_and_write_and_verify_behave_as_one_command() {
    // 256 blocks of 4 KiB (1 MiB) over a 512 KiB controller: the driver
    // splits WRITE AND VERIFY and VERIFY like READ and WRITE, and a
    // miscompare in the second piece is reported from the task's start.
    let mut e = Emulator::new(EmulatorConfig {
        block_size: 4096,
        capacity_blocks: 1000,
        hba: trace::HbaPreset::lsi3108(),
        ..EmulatorConfig::default()
    })
    .unwrap();
    let data: Vec<u8> = (0..256 * 4096u32).map(|i| (i / 4096) as u8).collect();
    let wav = [0x2e, 0, 0, 0, 0, 0, 0, 1, 0, 0];
    let o = e.execute(0, &wav, &data, &mut Vec::new(), data.len() as u32);
    let o = if o.is_unit_attention() {
        e.execute(0, &wav, &data, &mut Vec::new(), data.len() as u32)
    } else {
        o
    };
    assert!(o.is_good(), "{o:?}");
    assert_eq!(o.controller_commands, 2);
    let verify = [0x2f, 0x02, 0, 0, 0, 0, 0, 1, 0, 0]; // BYTCHK=01b
    assert!(e
        .execute(0, &verify, &data, &mut Vec::new(), data.len() as u32)
        .is_good());
    let mut bad = data.clone();
    bad[200 * 4096 + 7] ^= 0xff;
    let o = e.execute(0, &verify, &bad, &mut Vec::new(), bad.len() as u32);
    assert_eq!(sense(&o), Some((0xe, 0x1d, 0)));
    assert_eq!(&o.sense[3..7], &((200 * 4096 + 7) as u32).to_be_bytes());
    // BYTCHK=0 moves no data: no transfer-length limit applies.
    assert!(e
        .execute(
            0,
            &[0x2f, 0, 0, 0, 0, 0, 0, 3, 0xe8, 0],
            &[],
            &mut Vec::new(),
            0
        )
        .is_good());
    // Past the end is LBA OUT OF RANGE, whatever the length.
    let o = e.execute(
        0,
        &[0x2f, 0, 0, 0, 3, 0xe7, 0, 1, 0, 0],
        &[],
        &mut Vec::new(),
        0,
    );
    assert_eq!(sense(&o), Some((5, 0x21, 0)));
}
