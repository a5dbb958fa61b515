//! `scuzz diff` on synthesized `cp` traces that differ in exactly one
//! parameter: the figures that parameter moves differ, no other figure
//! does, and the streams still agree block for block (the same file is
//! written and read between the same flushes). A trace diffed with itself
//! shows no difference and exits 0.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scuzz(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args(args)
        .output()
        .expect("run scuzz")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scuzz-diff-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn synth(dir: &Path, name: &str, args: &[&str]) -> String {
    let out = dir.join(name);
    let o = out.to_str().unwrap().to_string();
    let mut a = vec!["synth", "cp"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", &o]);
    let r = scuzz(&a);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    o
}

/// The names of the figures that differ, and the divergence, from `--json`.
fn differing(a: &str, b: &str) -> (Vec<String>, Value, Option<i32>) {
    let r = scuzz(&["diff", "--json", a, b]);
    let v: Value = serde_json::from_slice(&r.stdout).expect("diff --json");
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["differs"] == true)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    (rows, v["divergence"].clone(), r.status.code())
}

fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

#[test]
fn more_memory_above_4gib_shows_as_addresses_and_segments_only() {
    let d = tmp("mem");
    let small = synth(
        &d,
        "mem2g.sczt",
        &["--size", "256M", "--hba", "lsi3108", "--mem", "2G"],
    );
    let large = synth(
        &d,
        "mem16g.sczt",
        &["--size", "256M", "--hba", "lsi3108", "--mem", "16G"],
    );
    let (rows, divergence, code) = differing(&small, &large);
    assert_eq!(code, Some(1), "diff exits 1 when the traces differ");
    assert!(
        divergence.is_null(),
        "same blocks, same flushes: {divergence}"
    );
    for must in [
        "highest DMA address",
        "segments above 4 GiB",
        "commands above 4 GiB",
    ] {
        assert!(
            rows.iter().any(|r| r == must),
            "{must} missing from {rows:?}"
        );
    }
    // Page placement moves segment counts and sizes; nothing about the
    // commands themselves (count, opcodes, bytes, transfer sizes, flushes,
    // latencies) may differ.
    for r in &rows {
        let expected = r.starts_with("SG lists with segments")
            || r.starts_with("segments <=")
            || r.contains("4 GiB")
            || r == "highest DMA address";
        assert!(expected, "spurious difference `{r}` in {rows:?}");
    }
    let v: Value =
        serde_json::from_slice(&scuzz(&["diff", "--json", &small, &large]).stdout).unwrap();
    assert_eq!(row(&v, "segments above 4 GiB")["a"], "0");
    assert_ne!(row(&v, "segments above 4 GiB")["b"], "0");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_lsi3108_splitter_shows_as_transfer_sizes_and_segment_counts() {
    let d = tmp("hba");
    let generic = synth(&d, "generic.sczt", &["--size", "64M", "--hba", "generic"]);
    let lsi = synth(&d, "lsi3108.sczt", &["--size", "64M", "--hba", "lsi3108"]);
    let (rows, divergence, code) = differing(&generic, &lsi);
    assert_eq!(code, Some(1));
    assert!(divergence.is_null(), "{divergence}");
    assert!(rows.iter().any(|r| r == "transfers <= 512K"), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.starts_with("SG lists with segments")),
        "{rows:?}"
    );
    for r in &rows {
        // A 64 MiB copy fits below 4 GiB either way, flushes and bytes
        // are the same: only the cut of the I/O (and what it costs in
        // synthesized time) may differ.
        let expected = r.starts_with("transfers <=")
            || r.starts_with("SG lists with segments")
            || r.starts_with("segments <=")
            || r.ends_with("commands")
            || r.contains("latency");
        assert!(expected, "spurious difference `{r}` in {rows:?}");
        assert!(
            !r.contains("4 GiB") && !r.contains("bytes") && !r.contains("flush"),
            "{r}"
        );
    }
    let text = String::from_utf8(scuzz(&["diff", &generic, &lsi]).stdout).unwrap();
    assert!(text.contains("streams agree"), "{text}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_trace_against_itself_has_no_difference() {
    let d = tmp("self");
    let t = synth(&d, "cp.sczt", &["--size", "64M", "--hba", "lsi3108"]);
    let (rows, divergence, code) = differing(&t, &t);
    assert!(rows.is_empty(), "{rows:?}");
    assert!(divergence.is_null());
    assert_eq!(code, Some(0));
    let r = scuzz(&["diff", &t, &t]);
    let text = String::from_utf8(r.stdout).unwrap();
    assert!(
        text.contains("(every compared figure is the same)"),
        "{text}"
    );
    assert_eq!(r.status.code(), Some(0));
    std::fs::remove_dir_all(&d).ok();
}
