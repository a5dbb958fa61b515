//! `scuzz demo` end to end, at 1/32 of the report's sizes (`--scale 32`:
//! 4 MiB of free low memory, `cp` of 4 and 8 MiB, fio 8 MiB with 1 MiB
//! blocks) so a debug build finishes in seconds; the shape of the
//! experiment is the real one. Every assertion reads the table the demo
//! computed from its runs: flipping a preset property must flip the rows
//! it explains.

use serde_json::Value;
use std::process::Command;

fn demo(extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args([
            "demo",
            "--json",
            "--no-fuzz",
            "--scale",
            "32",
            "--threads",
            "2",
        ])
        .args(extra)
        .output()
        .expect("run scuzz demo");
    assert!(
        out.status.success(),
        "scuzz demo {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).expect("demo --json prints one JSON document");
    v["demo"].clone()
}

fn row<'a>(d: &'a Value, label: &str) -> &'a Value {
    d["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["label"] == label)
        .unwrap_or_else(|| panic!("no row `{label}`"))
}

fn holds(r: &Value) -> [bool; 5] {
    let s = &r["symptoms"];
    [
        "small_ok",
        "large_corrupt",
        "direct_ok",
        "no_power_cut_needed",
        "first_bad_matches",
    ]
    .map(|k| s[k].as_bool().unwrap_or_else(|| panic!("symptom {k}")))
}

fn all_pass(r: &Value) -> bool {
    r["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .all(|o| o["passed"] == true)
}

#[test]
fn table_on_lsi3108_follows_the_runs() {
    let d = demo(&[]);
    // 16 rows: the control, 11 catalogued bugs, then the control and the
    // three byte-limit bugs where the limit never reached the splitter.
    assert_eq!(d["rows"].as_array().unwrap().len(), 16);
    for r in d["rows"].as_array().unwrap() {
        assert_eq!(r["runs"].as_array().unwrap().len(), 8, "{}", r["label"]);
    }

    // A correct driver passes everything, on both presets.
    assert!(all_pass(row(&d, "no bug (control)")));
    assert!(all_pass(row(
        &d,
        "no bug (control, byte limit not applied)"
    )));

    // dma-truncate-32: the size threshold, direct I/O clean, no power cut
    // needed. fio's first bad block comes out where the page cache crosses
    // 4 GiB (the free low memory), not at the report's 1 MiB.
    let dma = row(&d, "dma-truncate-32");
    assert_eq!(holds(dma), [true, true, true, true, false]);
    let low_free = d["low_free"].as_u64().unwrap();
    assert_eq!(
        dma["symptoms"]["fio_first_bad_block"].as_u64(),
        Some(low_free)
    );
    assert_eq!(
        d["rows"][d["leading"].as_u64().unwrap() as usize]["label"],
        "dma-truncate-32"
    );

    // A lost flush needs the power cut the report never had.
    let noop = row(&d, "sync-cache-noop");
    assert_eq!(holds(noop), [true, false, true, false, false]);
    assert!(!noop["symptoms"]["power_cut_only"]
        .as_array()
        .unwrap()
        .is_empty());

    // The oversize bugs never fire while the splitter honours the 512 KiB
    // limit, and corrupt everything (direct I/O too) when it does not:
    // whether the byte limit reaches the splitter flips their verdict.
    for bug in ["oversize-truncate", "oversize-clip"] {
        let applied = row(&d, bug);
        let unsplit = row(&d, &format!("{bug} (byte limit not applied)"));
        assert!(all_pass(applied), "{bug}");
        assert_eq!(holds(applied), [true, false, true, false, false], "{bug}");
        assert_eq!(holds(unsplit), [false, true, false, true, false], "{bug}");
        assert_eq!(unsplit["preset"], "lsi3108-unsplit");
    }
}

#[test]
fn sixty_four_bit_addressing_clears_dma_truncate_32() {
    let d = demo(&["--address-bits", "64"]);
    assert_eq!(d["preset"]["controller"]["address_bits"], 64);
    let dma = row(&d, "dma-truncate-32");
    assert!(all_pass(dma), "a 64-bit controller has nothing to truncate");
    assert_eq!(dma["symptoms"]["reproduces"], false);
    assert_eq!(holds(dma), holds(row(&d, "no bug (control)")));
    let leading = d["leading"]
        .as_u64()
        .map(|i| d["rows"][i as usize]["label"].clone());
    assert_ne!(leading, Some("dma-truncate-32".into()));
}

#[test]
fn bad_flags_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args(["demo", "--no-fuzz", "--hba", "lsi9999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--hba") && err.contains("lsi3108"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args(["demo", "--no-fuzz", "--os-max-transfer", "12Q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--os-max-transfer"));
}

#[test]
fn an_os_byte_limit_of_1m_exposes_the_oversize_bugs_on_the_preset_itself() {
    let d = demo(&["--os-max-transfer", "1M"]);
    assert_eq!(d["preset"]["splitter"]["max_bytes_write"], 1 << 20);
    for bug in ["oversize-truncate", "oversize-clip"] {
        let r = row(&d, bug);
        assert!(
            !all_pass(r),
            "{bug} must fire once 1 MiB transfers reach the driver"
        );
        assert_eq!(
            holds(r),
            holds(row(&d, &format!("{bug} (byte limit not applied)")))
        );
    }
    assert!(
        all_pass(row(&d, "no bug (control)")),
        "a correct driver splits"
    );
}
