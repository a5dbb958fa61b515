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
