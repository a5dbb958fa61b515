//! The engine against the emulator: synthesized cp traces replay cleanly.

use crate::common::*;
use recorder::synth::payload::PayloadKind;
use replayer::runner::Verdict;
use trace::HbaPreset;

#[test]
fn cp_to_a_correct_emulator_passes_verification() {
    let t = cp(HbaPreset::lsi3108(), PayloadKind::Pattern, 8 << 20);
    let r = run(&emulator_run(&[], vec![]), &t);
    let v = r.summary.verify.clone().unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.summary.to_text());
    assert!(
        v.blocks_checked >= (8 << 20) / 512,
        "{}",
        r.summary.to_text()
    );
    assert!(r.summary.op("write").unwrap().count > 0);
    assert!(r.summary.op("read").unwrap().count > 0);
    assert!(r.summary.op("sync-cache").unwrap().count == 1);
}

#[test]
fn dma_truncate_32_misdirects_the_pages_above_4g() {
    let t = cp(HbaPreset::lsi3108(), PayloadKind::Pattern, 256 << 20);
    let r = run(&emulator_run(&["dma-truncate-32"], vec![]), &t);
    let v = r.summary.verify.clone().unwrap();
    assert_eq!(r.verdict, Verdict::DataViolation);
    assert_eq!(Verdict::DataViolation.exit_code(), 2);
    assert!(v.count("misdirected") > 0, "{}", v.to_text());
    assert!(
        v.first.iter().any(|f| f.message.contains("misdirected: ")
            && f.message.contains("holds data written for LBA")),
        "{}",
        v.to_text()
    );
    assert!(
        v.first[0]
            .message
            .starts_with("verify: bad header at offset"),
        "{}",
        v.to_text()
    );
    assert!(
        v.first[0].command.starts_with("seq ") && v.first[0].command.contains("READ(10)"),
        "{}",
        v.to_text()
    );
}

#[test]
fn sync_cache_noop_fails_only_when_power_is_cut_after_the_final_flush() {
    let t = cp(HbaPreset::lsi3108(), PayloadKind::Pattern, 8 << 20);
    let r = run(&emulator_run(&["sync-cache-noop"], vec![]), &t);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.summary.to_text());
    let flush = last_flush(&t);
    let r = run(&emulator_run(&["sync-cache-noop"], vec![flush]), &t);
    let v = r.summary.verify.clone().unwrap();
    assert_eq!(r.verdict, Verdict::DataViolation);
    assert!(v.count("stale") > 0, "{}", v.to_text());
    // The same cut with a correct cache loses nothing.
    let r = run(&emulator_run(&[], vec![flush]), &t);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.summary.to_text());
}

#[test]
fn limit_repeat_and_order_shape_the_run() {
    let t = cp(HbaPreset::generic(), PayloadKind::Pattern, 1 << 20);
    let submits = t
        .events
        .iter()
        .filter(|e| matches!(e, trace::Event::Submit(_)))
        .count() as u64;
    let mut spec = emulator_run(&[], vec![]);
    spec.options.limit = Some(7);
    assert_eq!(run(&spec, &t).summary.commands, 7);
    let mut spec = emulator_run(&[], vec![]);
    spec.options.repeat = 3;
    spec.options.order = replayer::Order::Free;
    spec.options.timing = replayer::Timing::Scaled(1000.0);
    let r = run(&spec, &t);
    assert_eq!(r.summary.commands, 3 * submits);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.summary.to_text());
    // Without --qd the recording's depth is used (cp's writeback keeps
    // several commands outstanding).
    assert!(r.summary.qd > 1, "qd {}", r.summary.qd);
}

#[test]
fn a_lun_map_to_a_missing_lun_is_an_error_naming_it() {
    let t = cp(HbaPreset::generic(), PayloadKind::Pattern, 1 << 20);
    let mut spec = emulator_run(&[], vec![]);
    spec.options.lun_map.add("0=5").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(replayer::runner::run_source(&spec, &t))
        .expect_err("LUN 5 does not exist");
    assert!(e.to_string().contains("LUN 5"), "{e}");
}

#[test]
fn digest_traces_replay_fresh_tagged_data_that_still_diagnoses() {
    // A production capture keeps digests, not data: the replayer writes
    // self-describing blocks of its own, so misdirection still shows.
    let t = cp(HbaPreset::lsi3108(), PayloadKind::Digest, 160 << 20);
    let r = run(&emulator_run(&[], vec![]), &t);
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.summary.to_text());
    let r = run(&emulator_run(&["dma-truncate-32"], vec![]), &t);
    let v = r.summary.verify.clone().unwrap();
    assert!(v.count("misdirected") > 0, "{}", v.to_text());
}
