//! For every catalogued bug, a minimal hand-written program the harness
//! flags with that bug on and passes with every bug off: the harness and its
//! oracle see each bug, and see nothing when there is none.

use emulator::{Bug, BugSet};
use fuzzer::harness::{Harness, Target};
use fuzzer::program::{Op, ScsiProgram, Transfer};
use trace::{HbaPreset, Lba, Segment};

pub fn w(lba: u64, blocks: u32, fua: bool, addr: u64) -> Op {
    Op::Write(Transfer {
        lba: Lba(lba),
        blocks,
        fua,
        sg: vec![Segment::new(addr, blocks * 512)],
        extra: 0,
    })
}

pub fn r(lba: u64, blocks: u32, addr: u64) -> Op {
    Op::Read(Transfer {
        lba: Lba(lba),
        blocks,
        fua: false,
        sg: vec![Segment::new(addr, blocks * 512)],
        extra: 0,
    })
}

pub fn sync() -> Op {
    Op::SyncCache {
        lba: Lba(0),
        blocks: 0,
        immed: false,
    }
}

/// (bug, preset, program) triples: the catalogue's minimal scenarios.
pub fn scenarios() -> Vec<(Bug, &'static str, ScsiProgram)> {
    let many_segments = Op::Write(Transfer {
        lba: Lba(0),
        blocks: 200,
        fua: false,
        sg: (0..200)
            .map(|i| Segment::new(0x20_0000 + i * 0x1000, 512))
            .collect(),
        extra: 0,
    });
    vec![
        (
            Bug::SyncCacheNoop,
            "lsi3108",
            ScsiProgram::new(vec![w(0, 64, false, 0x10_0000), sync()]),
        ),
        (
            Bug::FuaIgnored,
            "lsi3108",
            ScsiProgram::new(vec![w(0, 64, true, 0x10_0000)]),
        ),
        (
            Bug::DmaTruncate32,
            "lsi3108",
            ScsiProgram::new(vec![w(0, 8, false, 0x1_0010_0000), sync()]),
        ),
        (
            Bug::SgOverflowDrop,
            "lsi3108",
            ScsiProgram::new(vec![many_segments, sync()]),
        ),
        (
            Bug::SplitOffByOne,
            "lsi3108-unsplit",
            ScsiProgram::new(vec![w(0, 1536, false, 0x10_0000), sync()]),
        ),
        (
            Bug::EarlyCompletion,
            "lsi3108",
            ScsiProgram::new(vec![w(0, 64, false, 0x10_0000), sync()]),
        ),
        (
            Bug::ReorderAcrossFlush,
            "lsi3108",
            ScsiProgram::new(vec![w(0, 64, false, 0x10_0000), sync()]),
        ),
        (
            Bug::StaleCacheRead,
            "lsi3108",
            ScsiProgram::new(vec![
                w(0, 8, false, 0x10_0000),
                w(0, 8, true, 0x20_0000),
                r(0, 8, 0x30_0000),
            ]),
        ),
        (
            Bug::BadResidual,
            "lsi3108",
            ScsiProgram::new(vec![Op::Read(Transfer {
                lba: Lba(0),
                blocks: 8,
                fua: false,
                sg: vec![Segment::new(0x10_0000, 4096)],
                extra: 512,
            })]),
        ),
        (
            Bug::OversizeTruncate,
            "lsi3108-unsplit",
            ScsiProgram::new(vec![w(0, 1536, false, 0x10_0000), sync()]),
        ),
        (
            Bug::OversizeClip,
            "lsi3108-unsplit",
            ScsiProgram::new(vec![w(0, 1536, false, 0x10_0000), sync()]),
        ),
    ]
}

pub fn target(preset: &str, bugs: &[Bug]) -> Target {
    let mut t = Target::new(HbaPreset::by_name(preset).unwrap());
    t.bugs = BugSet::of(bugs);
    t
}

#[test]
fn every_catalogued_bug_has_a_scenario() {
    let s = scenarios();
    for b in Bug::ALL {
        assert!(s.iter().any(|(x, _, _)| x == b), "no scenario for {b}");
    }
}

#[test]
fn each_scenario_violates_with_its_bug_and_passes_without() {
    for (bug, preset, prog) in scenarios() {
        let clean = Harness::new(target(preset, &[])).run(&prog);
        assert!(
            clean.passed(),
            "{bug} scenario fails with no bug: {:#?}",
            clean.violations
        );
        let v = Harness::new(target(preset, &[bug])).run(&prog);
        assert!(!v.passed(), "{bug} scenario passes with the bug on");
        let class = v.class().unwrap().to_string();
        let culprits = fuzzer::findings::attribute(&target(preset, &[bug]), &prog, &class);
        assert_eq!(
            culprits,
            vec![bug],
            "{bug}: attributed to {culprits:?} ({class})"
        );
    }
}

/// Regression: a transfer the OS splitter cuts, running past the last LBA,
/// lands its in-range pieces. The harness once told the oracle nothing about
/// them, and an unseeded no-bug campaign flagged the landed data as written
/// by no one (a false positive).
#[test]
fn a_split_write_past_the_end_lands_its_in_range_pieces_without_a_violation() {
    let t = target("lsi3108", &[]);
    let end = t.capacity_blocks;
    // 4 MiB from 3.5 MiB before the end: eight 512 KiB pieces, the last out of range.
    let lba = end - 7 * 1024 - 5;
    let prog = ScsiProgram::new(vec![
        w(lba + 5, 4, false, 0x10_0000),
        w(lba, 8192, false, 0x1_0000_0000),
    ]);
    let v = Harness::new(t).run(&prog);
    assert!(v.passed(), "{:#?}", v.violations);
}

/// A fuzzing run judges the final read-back from what the emulator holds
/// (`Device::peek`); a recorded run, whose reproducer must hold the READs,
/// issues them. Both must give the same verdict, violations and details
/// included, with every catalogued bug and with none, on the scenarios and
/// on random programs (power losses, flushes, large and scattered
/// transfers).
#[test]
fn a_read_back_judged_from_the_device_gives_the_verdict_its_reads_give() {
    let mut cases: Vec<(Option<Bug>, &str)> = vec![(None, "lsi3108")];
    cases.extend(scenarios().into_iter().map(|(b, p, _)| (Some(b), p)));
    let mut violated = 0;
    for (bug, preset) in cases {
        let t = target(preset, bug.as_slice());
        let mut h = Harness::new(t);
        let limits = h.limits();
        let mut progs: Vec<ScsiProgram> = (0..40)
            .map(|i| fuzzer::generator::random_program(0x5eed ^ i, &limits))
            .collect();
        progs.extend(
            scenarios()
                .into_iter()
                .filter(|(b, _, _)| Some(*b) == bug)
                .map(|(_, _, p)| p),
        );
        for (i, p) in progs.iter().enumerate() {
            let fuzzed = h.run(p);
            let (recorded, events) = h.record(p);
            assert!(!events.is_empty());
            assert_eq!(
                format!("{fuzzed:?}"),
                format!("{recorded:?}"),
                "{bug:?} on {preset}, program {i}"
            );
            violated += usize::from(!fuzzed.passed());
        }
    }
    assert!(
        violated >= 10,
        "only {violated} programs violated: the comparison saw too little"
    );
}
