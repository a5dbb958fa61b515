//! `scuzz replay` end to end: traces from `scuzz synth cp` replayed to the
//! emulator, the documented exit codes, reports and baselines, suite mode,
//! and a QEMU workload recorded through `scuzz record` replayed into a
//! fresh tgtd.

mod common;

use common::text;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use trace::{Event, TraceReader};

fn scuzz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args(args)
        .output()
        .expect("scuzz runs")
}

fn tmp(name: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-replay-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

/// `scuzz synth cp --size SIZE --hba lsi3108` into a temp file.
fn synth_cp(size: &str) -> PathBuf {
    let out = tmp(&format!("cp-{size}.sczt"));
    if !out.exists() {
        let o = scuzz(&[
            "synth",
            "cp",
            "--size",
            size,
            "--hba",
            "lsi3108",
            "-o",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    out
}

fn last_flush(trace: &Path) -> u64 {
    TraceReader::open(trace)
        .unwrap()
        .filter_map(|e| match e.unwrap() {
            Event::Submit(s) if matches!(s.cdb[0], 0x35 | 0x91) => Some(s.seq),
            _ => None,
        })
        .last()
        .expect("cp ends with a flush")
}

#[test]
fn synth_cp_replays_clean_and_dma_truncate_32_misdirects_with_exit_2() {
    let small = synth_cp("8M");
    let o = scuzz(&["replay", s(&small), "--verify"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("verify: PASS"), "{}", text(&o));

    // Past 128 MiB the page cache spills above 4 GiB.
    let big = synth_cp("160M");
    let o = scuzz(&["replay", s(&big), "--verify", "--bug", "dma-truncate-32"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("verify: FAIL"), "{out}");
    assert!(out.contains("misdirected: LBA"), "{out}");
    assert!(out.contains("holds data written for LBA"), "{out}");
    assert!(out.contains("verify: bad header at offset"), "{out}");
}

#[test]
fn sync_cache_noop_fails_only_with_power_cut_after_the_final_flush() {
    let t = synth_cp("8M");
    let flush = last_flush(&t).to_string();
    let o = scuzz(&["replay", s(&t), "--verify", "--bug", "sync-cache-noop"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = scuzz(&[
        "replay",
        s(&t),
        "--verify",
        "--bug",
        "sync-cache-noop",
        "--power-loss-at",
        &flush,
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let out = text(&o);
    let stale = out
        .split("stale ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(stale > 0, "{out}");
    // A correct cache survives the same cut.
    let o = scuzz(&["replay", s(&t), "--verify", "--power-loss-at", &flush]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn baseline_flags_added_latency_with_exit_3() {
    let t = synth_cp("1M");
    let base = tmp("base");
    let o = scuzz(&["replay", s(&t), "--report", s(&base)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    for f in ["summary.txt", "summary.json", "latency.hlog", "latency.svg"] {
        assert!(base.join(f).is_file(), "{f} missing");
    }
    let cmp = [
        "--baseline",
        s(&base),
        "--max-regression",
        "p99=10%,p50=5%",
        "--regression-floor",
        "25000000",
    ];
    let mut args = vec!["replay", s(&t), "--latency-add", "100000000"];
    args.extend(cmp);
    let o = scuzz(&args);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        text(&o).contains("latency regression: write p50"),
        "{}",
        text(&o)
    );
    let mut args = vec!["replay", s(&t)];
    args.extend(cmp);
    let o = scuzz(&args);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn usage_errors_exit_1() {
    let t = synth_cp("1M");
    let o = scuzz(&["replay", s(&t), "--bug", "no-such-bug"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("no-such-bug"), "{}", text(&o));
    let o = scuzz(&["replay", s(&t), "--timing", "fast"]);
    assert_eq!(code(&o), 1);
    let o = scuzz(&["replay", "/nonexistent.sczt"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o).contains("/nonexistent.sczt"), "{}", text(&o));
    let o = scuzz(&[
        "replay",
        s(&t),
        "--to",
        "sg:/dev/sg0",
        "--bug",
        "fua-ignored",
    ]);
    assert_eq!(code(&o), 1);
}

#[test]
fn regression_suite_passes_and_writes_junit() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/regression");
    let junit = tmp("junit.xml");
    let o = scuzz(&["replay", "--suite", s(&corpus), "--junit", s(&junit)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.starts_with("<?xml"));
    assert!(x.contains("failures=\"0\" errors=\"0\""), "{x}");
    assert!(x.contains("name=\"cp-160m-dma-truncate-32\""), "{x}");

    // A case whose expectation is wrong fails the suite with exit 2 and a
    // <failure> naming what happened instead.
    let bad = tmp("suite-bad");
    std::fs::create_dir_all(bad.join("wrong")).unwrap();
    let trace = corpus.join("traces/cp-8m-lsi3108.sczt");
    std::fs::write(
        bad.join("wrong/expect.toml"),
        format!(
            "trace = {:?}\nexpect = \"misdirected\"\n[backend]\nhba = \"lsi3108\"\n",
            s(&trace)
        ),
    )
    .unwrap();
    let junit = tmp("junit-bad.xml");
    let o = scuzz(&["replay", "--suite", s(&bad), "--junit", s(&junit)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(
        x.contains("<failure message=\"expected misdirected, got pass\""),
        "{x}"
    );
}

/// QEMU converts an image onto tgtd through `scuzz record` (full payloads);
/// replaying that trace onto a fresh tgtd leaves a byte-identical backing
/// file. Needs tgtd and QEMU 7.2's tools (scripts/test provides them).
#[test]
fn qemu_img_trace_replays_byte_identical_into_a_fresh_tgtd() {
    assert!(
        iscsi::testing::Tgtd::available(),
        "tgtd is not usable: install `tgt` and run as root"
    );
    common::qemu_root();
    const SIZE: u64 = 8 << 20;
    let first = iscsi::testing::Tgtd::builder().size(SIZE).start().unwrap();
    let trace = tmp("qemu.sczt");
    let rec = common::Record::start(&first.addr().to_string(), "full", &trace);
    // An image with structure: distinct data per MiB and a hole.
    let src = tmp("qemu-src.raw");
    let mut img = vec![0u8; 6 << 20];
    for (i, b) in img.iter_mut().enumerate() {
        if !(2 << 20..3 << 20).contains(&i) {
            *b = (i / 4096 % 251) as u8 ^ (i % 7) as u8;
        }
    }
    std::fs::write(&src, &img).unwrap();
    common::qemu_copy_in(
        &src,
        &format!("iscsi://127.0.0.1:{}/{}/1", rec.port, first.iqn()),
    );
    rec.interrupt();
    let recorded = std::fs::read(first.backing_path()).unwrap();
    assert_eq!(&recorded[..img.len()], &img[..], "qemu-img wrote the image");

    let second = iscsi::testing::Tgtd::builder().size(SIZE).start().unwrap();
    let o = scuzz(&["replay", s(&trace), "--to", &second.url(1)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let replayed = std::fs::read(second.backing_path()).unwrap();
    assert_eq!(recorded.len(), replayed.len());
    assert!(recorded == replayed, "backing files differ after replay");
}
