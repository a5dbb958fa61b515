//! Synthesizers against the report's numbers: lsi3108's splitter limits,
//! the 128 MiB low-memory threshold, the flush before the read pass.

use recorder::synth::cp::{layout, synth_cp, CpParams};
use recorder::synth::fio::{synth_fio, FioParams, FioRw};
use recorder::synth::payload::PayloadKind;
use recorder::synth::{Machine, SynthError};
use trace::file::{Compression, TraceWriter};
use trace::{Cdb, Event, HbaPreset, Payload, Submit};

const FOUR_GIB: u64 = 1 << 32;

fn machine(hba: HbaPreset) -> Machine {
    Machine {
        hba,
        page_size: 16 << 10,
        mem: 16 << 30,
        low_free: 128 << 20,
        seed: 7,
        ..Machine::default()
    }
}

fn fio_events(p: &FioParams) -> Vec<Event> {
    let mut v = Vec::new();
    synth_fio(p, &mut |e| {
        v.push(e);
        Ok(())
    })
    .unwrap();
    v
}

fn cp_events(p: &CpParams) -> Vec<Event> {
    let mut v = Vec::new();
    synth_cp(p, &mut |e| {
        v.push(e);
        Ok(())
    })
    .unwrap();
    v
}

fn submits(ev: &[Event]) -> impl Iterator<Item = (&Submit, Cdb)> {
    ev.iter().filter_map(|e| match e {
        Event::Submit(s) => Some((s, Cdb::parse(&s.cdb).unwrap())),
        _ => None,
    })
}

#[test]
fn cp_256m_lsi3108_stays_within_the_splitter_and_spills_above_4g_after_low_free() {
    let p = CpParams::new(machine(HbaPreset::lsi3108()), 256 << 20);
    let ev = cp_events(&p);
    let data_lba = layout::DATA / 512;
    let threshold_lba = data_lba + (128 << 20) / 512;
    let (mut writes, mut high, mut low) = (0, 0, 0);
    for (s, cdb) in submits(&ev) {
        if let Cdb::Write(rw) = cdb {
            writes += 1;
            assert!(
                s.xfer_len <= 512 << 10,
                "seq {} writes {} bytes",
                s.seq,
                s.xfer_len
            );
            assert!(
                s.sg.len() <= 129,
                "seq {} has {} segments",
                s.seq,
                s.sg.len()
            );
            assert_eq!(
                s.sg.iter().map(|g| u64::from(g.len)).sum::<u64>(),
                u64::from(s.xfer_len)
            );
            if rw.lba >= data_lba {
                if rw.lba >= threshold_lba {
                    assert!(
                        s.sg.iter().all(|g| g.addr.0 >= FOUR_GIB),
                        "seq {} past 128 MiB has low pages",
                        s.seq
                    );
                    high += 1;
                } else {
                    assert!(
                        s.sg.iter().all(|g| g.addr.0 < FOUR_GIB),
                        "seq {} below 128 MiB has high pages",
                        s.seq
                    );
                    low += 1;
                }
            }
        }
    }
    assert!(
        writes > 512 && high > 200 && low > 200,
        "{writes} {high} {low}"
    );
}

#[test]
fn cp_ends_its_writes_with_a_flush_before_the_read_pass() {
    let p = CpParams::new(machine(HbaPreset::lsi3108()), 32 << 20);
    let ev = cp_events(&p);
    let pos = |pred: &dyn Fn(&Cdb) -> bool| -> Vec<usize> {
        ev.iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Event::Submit(s) if pred(&Cdb::parse(&s.cdb).unwrap()) => Some(i),
                _ => None,
            })
            .collect()
    };
    let flushes = pos(&|c| matches!(c, Cdb::SyncCache { .. }));
    let writes = pos(&|c| matches!(c, Cdb::Write(_)));
    let reads = pos(&|c| matches!(c, Cdb::Read(_)));
    assert_eq!(flushes.len(), 1);
    let f = flushes[0];
    assert!(writes.iter().all(|&w| w < f));
    assert!(reads.iter().all(|&r| r > f));
    // Every write completed before the flush was sent; the flush completed
    // before the first read.
    let done_before = |i: usize| {
        ev[..i]
            .iter()
            .filter(|e| matches!(e, Event::Complete(_)))
            .count()
    };
    assert_eq!(done_before(f), writes.len());
    let flush_seq = match &ev[f] {
        Event::Submit(s) => s.seq,
        _ => unreachable!(),
    };
    let flush_done = ev
        .iter()
        .position(|e| matches!(e, Event::Complete(c) if c.seq == flush_seq))
        .unwrap();
    assert!(flush_done < reads[0]);
    // The read pass covers the whole file.
    let read_bytes: u64 = submits(&ev)
        .filter(|(_, c)| matches!(c, Cdb::Read(_)))
        .map(|(s, _)| u64::from(s.xfer_len))
        .sum();
    assert_eq!(read_bytes, 32 << 20);
}

#[test]
fn cp_without_the_byte_limit_at_the_splitter_issues_oversize_writes() {
    for m in [
        machine(HbaPreset::lsi3108_unsplit()),
        machine(HbaPreset::lsi3108().with_os_max_transfer(1 << 20)),
    ] {
        let s = synth_cp(&CpParams::new(m, 64 << 20), &mut |_| Ok(())).unwrap();
        assert!(s.writes.max_bytes > 512 << 10, "{s}");
        assert!(s.writes.max_bytes <= 1 << 20, "{s}");
        assert!(s.writes.max_segments <= 129);
    }
}

#[test]
fn cp_small_pages_hit_the_segment_limit_before_the_byte_limit() {
    // 4 KiB pages under a 1 MiB splitter: 256 pages would fit the byte
    // limit, the 129-entry SG list cuts first unless pages merge.
    let mut m = machine(HbaPreset::lsi3108_unsplit());
    m.page_size = 4096;
    m.max_run_pages = 1;
    let ev = cp_events(&CpParams::new(m, 32 << 20));
    let mut at_limit = 0;
    for (s, c) in submits(&ev) {
        if matches!(c, Cdb::Write(_)) {
            assert!(s.sg.len() <= 129);
            at_limit += usize::from(s.sg.len() == 129);
        }
    }
    assert!(at_limit > 0);
}

#[test]
fn cp_is_deterministic_by_seed() {
    let p = CpParams::new(machine(HbaPreset::lsi3108()), 8 << 20);
    assert_eq!(cp_events(&p), cp_events(&p));
    let mut q = p.clone();
    q.machine.seed = 8;
    assert_ne!(cp_events(&p), cp_events(&q));
}

#[test]
fn cp_256m_digest_trace_is_under_2_mib() {
    let mut m = machine(HbaPreset::lsi3108());
    m.payload = PayloadKind::Digest;
    let p = CpParams::new(m, 256 << 20);
    let header = p.machine.header("cp", p.capacity_blocks());
    let mut w = TraceWriter::new(Vec::new(), &header, Compression::ZSTD_DEFAULT).unwrap();
    let mut digests = 0;
    synth_cp(&p, &mut |e| {
        if let Event::Submit(Submit {
            payload: Payload::Digests { .. },
            ..
        }) = &e
        {
            digests += 1;
        }
        w.write(&e).map_err(|e| SynthError::Sink(Box::new(e)))
    })
    .unwrap();
    let bytes = w.finish().unwrap();
    assert!(digests > 500);
    assert!(
        bytes.len() < 2 << 20,
        "digest-mode trace is {} bytes",
        bytes.len()
    );
}

#[test]
fn fio_direct_uses_low_iovm_addresses_and_splits_at_the_splitter() {
    let mut p = FioParams::new(
        machine(HbaPreset::lsi3108()),
        FioRw::Write,
        1 << 20,
        64 << 20,
        true,
    );
    p.iodepth = 4;
    p.verify = true;
    let ev = fio_events(&p);
    let (mut w, mut r) = (0, 0);
    for (s, c) in submits(&ev) {
        match c {
            Cdb::Write(_) => {
                w += 1;
                assert_eq!(s.xfer_len, 512 << 10);
            }
            Cdb::Read(_) => {
                r += 1;
                assert!(matches!(
                    ev.iter().find_map(|e| match e {
                        Event::Complete(c) if c.seq == s.seq => Some(&c.payload),
                        _ => None,
                    }),
                    Some(Payload::Pattern { .. })
                ));
            }
            _ => {}
        }
        assert!(s.sg.iter().all(|g| g.end() <= FOUR_GIB));
    }
    assert_eq!((w, r), (128, 128));
    // Unsplit: fio's 1 MiB blocks reach the driver whole.
    let mut u = p.clone();
    u.machine.hba = HbaPreset::lsi3108_unsplit();
    let s = synth_fio(&u, &mut |_| Ok(())).unwrap();
    assert_eq!(s.writes.max_bytes, 1 << 20);
}

#[test]
fn fio_buffered_randwrite_goes_through_writeback() {
    let mut p = FioParams::new(
        machine(HbaPreset::lsi3108()),
        FioRw::RandWrite,
        64 << 10,
        256 << 20,
        false,
    );
    p.verify = true;
    let ev = fio_events(&p);
    let mut written = vec![false; (256 << 20) / 512];
    let base = (1 << 20) / 512;
    for (s, c) in submits(&ev) {
        if let Cdb::Write(rw) = c {
            assert!(s.xfer_len <= 512 << 10 && s.sg.len() <= 129);
            for b in rw.lba..rw.lba + u64::from(rw.blocks) {
                written[(b - base) as usize] = true;
            }
        }
    }
    assert!(written.iter().all(|&w| w), "every block written");
    let s = synth_fio(&p, &mut |_| Ok(())).unwrap();
    assert!(s.memory.high_pages > 0);
    assert_eq!(s.flushes, 1);
}

#[test]
fn fio_rw_mixes_reads_and_verifies_only_what_it_wrote() {
    let mut p = FioParams::new(
        machine(HbaPreset::generic()),
        FioRw::Rw,
        128 << 10,
        16 << 20,
        true,
    );
    p.verify = true;
    p.iodepth = 8;
    let s = synth_fio(&p, &mut |_| Ok(())).unwrap();
    let writes = s.writes.commands;
    assert!(writes > 20 && writes < 108, "{s}");
    assert_eq!(s.reads.commands, 128 - writes + writes);
}

#[test]
fn bad_parameters_name_their_flag() {
    let e = synth_cp(
        &CpParams::new(machine(HbaPreset::lsi3108()), 1000),
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--size"), "{e}");
    let mut m = machine(HbaPreset::lsi3108());
    m.page_size = 1 << 20;
    let e = synth_cp(&CpParams::new(m, 1 << 20), &mut |_| Ok(())).unwrap_err();
    assert!(e.to_string().contains("--page-size"), "{e}");
    let p = FioParams::new(
        machine(HbaPreset::lsi3108()),
        FioRw::Write,
        1000,
        1 << 20,
        true,
    );
    assert!(synth_fio(&p, &mut |_| Ok(()))
        .unwrap_err()
        .to_string()
        .contains("--bs"));
}
