//! `scuzz serve` against software nobody on this team wrote: libiscsi's
//! compliance suite (compared test by test with tgtd, the reference
//! target) and QEMU's iSCSI block driver.
//!
//! Needs `tgt` and `libiscsi-bin` on PATH and QEMU 7.2's tools unpacked by
//! `scripts/fetch-qemu-iscsi` (`scripts/test` installs all of them). A
//! missing tool fails the test with the command that installs it.

mod common;

use common::{qemu, Serve, IQN};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not on PATH: install it with `apt-get install {package}` (scripts/test does)"
    );
}

/// One compliance test's result as iscsi-test-cu reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Passed and ran its checks.
    Passed,
    /// Passed without checking anything: it printed `[SKIPPED]` (the target
    /// reported the feature unsupported, or the test needs something absent).
    Skipped,
    /// Failed.
    Failed,
}

impl Verdict {
    fn passes(self) -> bool {
        self != Verdict::Failed
    }
}

/// Parses iscsi-test-cu's console output: `Suite: S`, then per test
/// `  Test: T ...`, its messages, and a verdict (`passed` or `FAILED` at the
/// start of a line or right after the dots). Messages printed after the
/// verdict belong to the suite's setup and teardown, not to the test.
fn parse_results(out: &str) -> BTreeMap<String, Verdict> {
    let mut results = BTreeMap::new();
    let mut suite = String::new();
    let mut current: Option<(String, bool)> = None;
    for line in out.lines() {
        let t = line.trim_start();
        if let Some(s) = t.strip_prefix("Suite: ") {
            suite = s.trim().to_string();
            continue;
        }
        let mut rest = t;
        if let Some(r) = t.strip_prefix("Test: ") {
            let Some((name, after)) = r.split_once(" ...") else {
                continue;
            };
            current = Some((format!("{suite}.{}", name.trim()), false));
            rest = after.trim_start();
        }
        let Some((name, skipped)) = current.as_mut() else {
            continue;
        };
        let verdict = if rest.starts_with("passed") {
            Some(if *skipped {
                Verdict::Skipped
            } else {
                Verdict::Passed
            })
        } else if rest.starts_with("FAILED") {
            Some(Verdict::Failed)
        } else {
            if rest.contains("[SKIPPED]") {
                *skipped = true;
            }
            None
        };
        if let Some(v) = verdict {
            results.insert(std::mem::take(name), v);
            current = None;
        }
    }
    results
}

fn run_suite(url: &str, workdir: &Path) -> BTreeMap<String, Verdict> {
    std::fs::create_dir_all(workdir).expect("workdir");
    let out = Command::new("iscsi-test-cu")
        .args(["--dataloss", "--test=ALL", url])
        .current_dir(workdir)
        .stdin(Stdio::null())
        .output()
        .expect("run iscsi-test-cu");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    std::fs::write(workdir.join("console.txt"), &text).expect("save console");
    let results = parse_results(&text);
    assert!(
        results.len() > 200,
        "only {} results parsed from iscsi-test-cu against {url}; console in {}",
        results.len(),
        workdir.display()
    );
    results
}

fn summary(r: &BTreeMap<String, Verdict>) -> (usize, usize, usize) {
    let passed = r.values().filter(|v| v.passes()).count();
    let ran = r.values().filter(|v| **v == Verdict::Passed).count();
    (passed, ran, r.len())
}

/// Every libiscsi compliance test that passes against tgtd passes against
/// Scuzz, and Scuzz runs the checks of more of them (it implements thin
/// provisioning, GET LBA STATUS and COMPARE AND WRITE, which tgtd's
/// default backing store reports unsupported).
#[test]
fn compliance_parity_with_tgtd() {
    require("tgtd", "tgt");
    require("iscsi-test-cu", "libiscsi-bin");
    let scratch = std::env::temp_dir().join(format!("scuzz-compliance-{}", std::process::id()));
    let tgt_results = {
        let tgtd = iscsi::testing::Tgtd::builder()
            .size(128 << 20)
            .start()
            .expect("start tgtd");
        run_suite(&tgtd.url(1), &scratch.join("tgtd"))
    };
    let ours = {
        let serve = Serve::start(&["--capacity", "128M"]);
        let r = run_suite(&serve.url(0), &scratch.join("scuzz"));
        drop(serve.drain_log());
        r
    };
    let (tp, tr, tn) = summary(&tgt_results);
    let (sp, sr, sn) = summary(&ours);
    println!("tgtd:  passed {tp} of {tn}, ran their checks in {tr} (the rest skipped)");
    println!("scuzz: passed {sp} of {sn}, ran their checks in {sr} (the rest skipped)");
    let mut regressions = Vec::new();
    for (name, v) in &tgt_results {
        let mine = ours.get(name).copied();
        if v.passes() && !mine.is_some_and(Verdict::passes) {
            regressions.push(format!("{name}: tgtd {v:?}, scuzz {mine:?}"));
        }
    }
    let better: Vec<&String> = ours
        .iter()
        .filter(|(n, v)| v.passes() && tgt_results.get(*n) == Some(&Verdict::Failed))
        .map(|(n, _)| n)
        .collect();
    let more_checks: Vec<&String> = ours
        .iter()
        .filter(|(n, v)| **v == Verdict::Passed && tgt_results.get(*n) == Some(&Verdict::Skipped))
        .map(|(n, _)| n)
        .collect();
    println!("scuzz passes, tgtd fails ({}): {better:?}", better.len());
    println!(
        "scuzz runs the checks, tgtd skips ({}): {more_checks:?}",
        more_checks.len()
    );
    assert!(
        regressions.is_empty(),
        "tests passing against tgtd but not against scuzz serve (consoles in {}):\n{}",
        scratch.display(),
        regressions.join("\n")
    );
    assert!(sr > tr, "scuzz ran the checks of {sr} tests, tgtd of {tr}");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// QEMU copies 64 MiB of random data into the emulator and back out
/// byte-identically, and qemu-io's pattern write, flush and read verify.
#[test]
fn qemu_img_convert_roundtrip_and_qemu_io() {
    let serve = Serve::start(&["--capacity", "64M"]);
    let dir = std::env::temp_dir().join(format!("scuzz-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.img");
    let back = dir.join("back.img");
    // Seeded, incompressible, non-repeating: any misplaced block shows.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..64 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&src, &data).unwrap();
    let url = serve.url(0);
    qemu(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &url,
        ],
    );
    qemu(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url,
            back.to_str().unwrap(),
        ],
    );
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), data.len());
    if let Some(i) = got.iter().zip(&data).position(|(a, b)| a != b) {
        panic!("copy differs first at byte {i} (LBA {})", i / 512);
    }
    let io = qemu(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xa5 3M 1M",
            "-c",
            "flush",
            "-c",
            "read -P 0xa5 3M 1M",
            &url,
        ],
    );
    // qemu-io reports a pattern mismatch as "Pattern verification failed"
    // with exit status 0, so the text is checked too.
    assert!(!io.contains("failed"), "qemu-io: {io}");
    assert_eq!(
        io.matches("read 1048576/1048576 bytes").count(),
        1,
        "qemu-io: {io}"
    );
    // The same with CRC32C header digests (libiscsi's only digest).
    let opts = format!(
        "driver=iscsi,transport=tcp,portal=127.0.0.1:{},target={IQN},lun=0,header-digest=crc32c",
        serve.port
    );
    let io = qemu(
        "qemu-io",
        &[
            "--image-opts",
            &opts,
            "-c",
            "write -P 0x3c 5M 256k",
            "-c",
            "read -P 0x3c 5M 256k",
        ],
    );
    assert!(!io.contains("failed"), "qemu-io with header digests: {io}");
    let log = serve.drain_log().join("\n");
    assert!(
        log.contains("HeaderDigest=CRC32C"),
        "QEMU's session did not negotiate header digests: {log}"
    );
    assert_eq!(
        io.matches("read 262144/262144 bytes").count(),
        1,
        "qemu-io: {io}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn parse_results_reads_verdicts_and_skips() {
    let console = "\
Suite: CompareAndWrite
  Test: Simple ...passed
  Test: Miscompare ...    [FAILED] COMPAREANDWRITE successful
    [FAILED] again
FAILED
    1. test_compareandwrite_miscompare.c:73  - CU_ASSERT_EQUAL(_r,0)
  Test: Unwritten ...    [SKIPPED] COMPAREANDWRITE is not implemented.
passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.
  Test: After ...passed

Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...
    Test sending invalid iSCSI DataSN
    [FAILED] WRITE10 command failed with status 2
passed
";
    let r = parse_results(console);
    assert_eq!(r["CompareAndWrite.Simple"], Verdict::Passed);
    assert_eq!(r["CompareAndWrite.Miscompare"], Verdict::Failed);
    assert_eq!(r["CompareAndWrite.Unwritten"], Verdict::Skipped);
    assert_eq!(
        r["CompareAndWrite.After"],
        Verdict::Passed,
        "teardown noise is not the next test's"
    );
    assert_eq!(r["iSCSIdatasn.iSCSIDataSnInvalid"], Verdict::Passed);
    assert_eq!(r.len(), 5);
}

/// `scuzz serve` logs each session to stderr and exits cleanly on SIGTERM
/// (as on Ctrl-C), closing the sessions it serves.
#[test]
fn serve_logs_sessions_and_shuts_down_on_sigterm() {
    require("iscsi-inq", "libiscsi-bin");
    let mut serve = Serve::start(&["--capacity", "16M", "--luns", "2"]);
    let out = Command::new("iscsi-inq")
        .arg(serve.url(1))
        .output()
        .expect("run iscsi-inq");
    assert!(out.status.success(), "iscsi-inq on LUN 1: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DIRECT_ACCESS"));
    let status = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = serve.child.wait().expect("scuzz serve exits");
    assert!(exit.success(), "exit status {exit:?}");
    let text = serve.log.iter().collect::<Vec<_>>().join("\n");
    assert!(text.contains("normal session"), "{text}");
    assert!(text.contains("ended: logout"), "{text}");
    assert!(text.contains("shut down"), "{text}");
}

/// Bad sizes, presets, bug names and CHAP strings are usage errors that
/// name the flag.
#[test]
fn serve_rejects_bad_arguments() {
    for (args, needle) in [
        (&["--capacity", "1X"][..], "--capacity"),
        (&["--hba", "nosuch"][..], "--hba"),
        (&["--bug", "nosuch"][..], "--bug"),
        (&["--chap", "nocolon"][..], "--chap"),
        (&["--block-size", "1000"][..], "block"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_scuzz"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
