//! Report files: the interval log reads back with hdrhistogram's own
//! reader, the SVG is well-formed with one series per opcode, and a
//! baseline comparison flags added latency but not a rerun.

use crate::common::*;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use recorder::synth::payload::PayloadKind;
use replayer::report::parse_limits;
use replayer::runner::{Target, Verdict};
use std::collections::BTreeSet;
use trace::HbaPreset;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("scuzz-replayer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn report_dir_holds_a_readable_hlog_and_a_well_formed_svg() {
    let t = cp(HbaPreset::generic(), PayloadKind::Pattern, 2 << 20);
    let dir = temp_dir("report");
    let mut spec = emulator_run(&[], vec![]);
    spec.report = Some(dir.clone());
    let r = run(&spec, &t);
    let ops: BTreeSet<String> = r
        .summary
        .ops
        .iter()
        .map(|o| o.op.clone())
        .filter(|o| o != "all")
        .collect();

    // latency.hlog: every interval decodes, tags are opcode classes, and
    // the counts add up to the commands the summary reports per opcode.
    let log = std::fs::read(dir.join("latency.hlog")).unwrap();
    let mut de = Deserializer::new();
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            let tag = h
                .tag()
                .expect("every interval is tagged")
                .as_str()
                .to_string();
            let bytes = base64_decode(h.encoded_histogram());
            let hist: Histogram<u64> = de.deserialize(&mut &bytes[..]).unwrap();
            *counts.entry(tag).or_default() += hist.len();
        }
    }
    for op in &ops {
        assert_eq!(
            counts.get(op).copied(),
            Some(r.summary.op(op).unwrap().count),
            "tag {op}"
        );
    }

    // latency.svg: an SVG root, one polyline per opcode (plus legend
    // samples), axis text present.
    let svg = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(doc.root_element().has_tag_name("svg"));
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert!(
        lines >= ops.len(),
        "{lines} polylines for {} opcodes",
        ops.len()
    );
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        text.contains("Percentile") && text.contains("99%"),
        "{text}"
    );
    for op in &ops {
        assert!(text.contains(op.as_str()), "legend lacks {op}");
    }

    // summary.txt and summary.json.
    let txt = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(txt.contains("clat percentiles"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["commands"].as_u64(), Some(r.summary.commands));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Standard base64, as the interval log encodes histograms.
fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64 alphabet") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn added_latency_is_a_regression_and_a_rerun_is_not() {
    let t = cp(HbaPreset::generic(), PayloadKind::Pattern, 1 << 20);
    let base = temp_dir("baseline");
    let mut spec = emulator_run(&[], vec![]);
    spec.options.verify = false;
    spec.report = Some(base.clone());
    assert_eq!(run(&spec, &t).verdict, Verdict::Pass);

    // Compared with a baseline of (loaded-machine) milliseconds, 100 ms per
    // command is far past p99=10%,p50=5% and past the 25 ms noise floor; a
    // rerun without it stays under the floor.
    let mut slow = spec.clone();
    slow.report = None;
    slow.baseline = Some(base.clone());
    slow.limits = parse_limits("p99=10%,p50=5%").unwrap();
    slow.regression_floor_ns = 25_000_000;
    let mut rerun = slow.clone();
    if let Target::Emulator(e) = &mut slow.target {
        e.latency_add_ns = 100_000_000;
    }
    let r = run(&slow, &t);
    assert_eq!(r.verdict, Verdict::LatencyRegression, "{:?}", r.regressions);
    assert!(
        r.regressions
            .iter()
            .any(|g| g.op == "write" && g.percentile == 50.0),
        "{:?}",
        r.regressions
    );
    assert_eq!(Verdict::LatencyRegression.exit_code(), 3);

    // The same run without the added latency stays within the floor.
    if let Target::Emulator(e) = &mut rerun.target {
        e.latency_add_ns = 0;
    }
    let r = run(&rerun, &t);
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.regressions);
    std::fs::remove_dir_all(&base).unwrap();
}
