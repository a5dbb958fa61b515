//! Replay over iSCSI to a real tgtd (needs tgtd and root, as the iscsi
//! crate's interop tests do; scripts/test provides them).

use crate::common::*;
use iscsi::testing::Tgtd;
use recorder::synth::payload::PayloadKind;
use replayer::runner::{Target, Verdict};
use trace::HbaPreset;

#[test]
fn cp_replayed_to_tgtd_reads_back_what_it_wrote() {
    assert!(
        Tgtd::available(),
        "tgtd is not usable: install `tgt` and run as root"
    );
    let t = cp(HbaPreset::lsi3108(), PayloadKind::Pattern, 8 << 20);
    let tgtd = Tgtd::builder().size(32 << 20).start().unwrap();
    let mut spec = emulator_run(&[], vec![]);
    spec.target = Target::Iscsi {
        url: tgtd.url(1),
        chap: None,
        power_cycle: Default::default(),
    };
    spec.options.qd = Some(8);
    let r = run(&spec, &t);
    let v = r.summary.verify.clone().unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.summary.to_text());
    // Every block the copy wrote was read back by the trace and again by
    // the closing sweep.
    assert!(v.blocks_checked >= 2 * (8 << 20) / 512, "{}", v.to_text());
    assert!(r.summary.backend.starts_with("iscsi://"));
    // The backing file holds the copy's self-describing blocks.
    let backing = std::fs::read(tgtd.backing_path()).unwrap();
    let first = 16 << 20; // cp's data region starts at 16 MiB
    match trace::pattern::inspect(&backing[first..first + 512]) {
        trace::BlockState::Valid { tag } => assert_eq!(tag.lba, (first / 512) as u64),
        other => panic!("{other:?}"),
    }
}
