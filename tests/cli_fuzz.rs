//! `scuzz fuzz` and `scuzz triage` end to end: short multi-process
//! campaigns through LibAFL's Launcher and LLMP broker, kill and resume,
//! and findings replayed by `scuzz replay`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scuzz"))
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scuzz-cli-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/seeds")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("scuzz runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn findings(out: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut v: Vec<(PathBuf, serde_json::Value)> = std::fs::read_dir(out.join("findings"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let text = std::fs::read_to_string(e.path().join("finding.json")).ok()?;
                    Some((e.path(), serde_json::from_str(&text).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn bug_of(rec: &serde_json::Value) -> String {
    rec["signature"]["bug"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The CI campaign: one minute at most, two bugs on, both must be found,
/// each finding must replay through `scuzz replay` with its bug and pass
/// without it.
#[test]
fn a_short_campaign_finds_sync_cache_noop_and_dma_truncate_32_and_the_findings_replay() {
    let out = tempdir("ci");
    let o = run(scuzz()
        .args([
            "fuzz",
            "--hba",
            "lsi3108",
            "--bug",
            "sync-cache-noop",
            "--bug",
            "dma-truncate-32",
        ])
        .arg("--seeds")
        .arg(seeds())
        .arg("--out")
        .arg(&out)
        .args(["--cores", "0", "--time", "60s", "--seed", "3", "--quiet"])
        .args([
            "--until-found",
            "sync-cache-noop",
            "--until-found",
            "dma-truncate-32",
        ]));
    assert_eq!(
        o.status.code(),
        Some(2),
        "fuzz exits 2 when it found something"
    );
    let found = findings(&out);
    for bug in ["sync-cache-noop", "dma-truncate-32"] {
        assert!(
            found
                .iter()
                .any(|(_, r)| bug_of(r).split('+').any(|b| b == bug)),
            "{bug} not found: {found:?}"
        );
    }
    // Data findings replay through the replayer; protocol ones (status and
    // sense) show as completion mismatches against the reference
    // completions recorded with the bug off.
    for (dir, rec) in &found {
        let bug = bug_of(rec);
        if bug == "none" {
            panic!("finding with no bug: {}", dir.display());
        }
        let repro = dir.join("repro.sczt");
        let replay = |bugs: &[&str]| {
            let mut c = scuzz();
            c.args([
                "replay", "--to", "emulator", "--hba", "lsi3108", "--seed", "3", "--verify",
            ]);
            for b in bugs {
                c.args(["--bug", b]);
            }
            c.arg(&repro);
            let o = c.output().unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).to_string(),
            )
        };
        let bugs: Vec<&str> = bug.split('+').collect();
        let (first, text1) = replay(&bugs);
        let (second, text2) = replay(&bugs);
        assert_eq!(
            first,
            Some(2),
            "{} must fail replayed with {bug}:\n{text1}",
            repro.display()
        );
        assert_eq!(second, first, "replays disagree");
        let class = rec["signature"]["class"].as_str().unwrap();
        if !class.starts_with("protocol-") {
            assert!(
                text1.contains(&format!("{class} ")),
                "replay output lacks `{class}`:\n{text1}"
            );
        }
        let verdict = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("verify:"))
                .map(str::to_string)
        };
        assert_eq!(
            verdict(&text1),
            verdict(&text2),
            "same classification every time"
        );
        let (clean, text) = replay(&[]);
        assert_eq!(
            clean,
            Some(0),
            "{} must pass with the bug off:\n{text}",
            repro.display()
        );
    }
    // Triage summarises and plots.
    let t = run(scuzz().arg("triage").arg(&out));
    assert!(t.status.success());
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(
        text.contains("dma-truncate-32") && text.contains("sync-cache-noop"),
        "{text}"
    );
    // One finding a line, its columns lined up whatever the class's length.
    let cols: Vec<usize> = text.lines().filter_map(|l| l.find(" ops  +")).collect();
    assert!(cols.len() >= 2, "{text}");
    assert!(cols.windows(2).all(|w| w[0] == w[1]), "columns: {text}");
    let svg = std::fs::read_to_string(out.join("coverage.svg")).unwrap();
    assert!(svg.contains("<svg"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// No bug on: a short two-core campaign from the checked-in seeds finds
/// nothing (the ten-minute version is a documented benchmark).
#[test]
fn with_no_bug_a_two_core_campaign_from_the_seeds_finds_nothing() {
    let out = tempdir("clean");
    let o = run(scuzz()
        .args(["fuzz", "--hba", "lsi3108"])
        .arg("--seeds")
        .arg(seeds())
        .arg("--out")
        .arg(&out)
        .args(["--cores", "0-1", "--time", "20s", "--seed", "5", "--quiet"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "no finding expected: {:?}",
        findings(&out)
    );
    assert!(findings(&out).is_empty());
    let stats = std::fs::read_to_string(out.join("stats.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    assert!(
        last["execs"].as_u64().unwrap() > 100,
        "campaign barely ran: {last}"
    );
    assert_eq!(last["clients"].as_u64(), Some(2), "{last}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// The programs of a campaign's queue, and its files (`cN/NAME`, one
/// directory per client) with their bytes.
fn queue(out: &Path) -> (Vec<fuzzer::program::ScsiProgram>, Vec<(String, Vec<u8>)>) {
    let dir = out.join("queue");
    let mut files = Vec::new();
    for client in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(client.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = format!(
                "{}/{}",
                client.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            files.push((name, std::fs::read(f.path()).unwrap()));
        }
    }
    files.sort();
    (fuzzer::findings::load_programs(&dir), files)
}

/// A campaign killed with SIGKILL (every process of it) and resumed keeps
/// its corpus and findings, and goes on from them.
#[test]
fn a_campaign_killed_with_sigkill_resumes_with_its_corpus_and_findings() {
    use std::os::unix::process::CommandExt;
    let out = tempdir("kill");
    let mut child = scuzz()
        .args(["fuzz", "--hba", "lsi3108", "--bug", "fua-ignored"])
        .arg("--seeds")
        .arg(seeds())
        .arg("--out")
        .arg(&out)
        .args(["--cores", "0", "--time", "120s", "--seed", "9", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let start = Instant::now();
    while findings(&out).is_empty() || queue(&out).0.len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no finding to kill over"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let kill = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(kill.success());
    let _ = child.wait();
    let (programs_before, files_before) = queue(&out);
    let findings_before: Vec<PathBuf> = findings(&out).into_iter().map(|(d, _)| d).collect();
    assert!(!findings_before.is_empty());

    let o = run(scuzz()
        .args(["fuzz", "--hba", "lsi3108", "--bug", "fua-ignored"])
        .arg("--out")
        .arg(&out)
        .args([
            "--cores", "0", "--time", "5s", "--seed", "10", "--quiet", "--resume",
        ]));
    assert_eq!(o.status.code(), Some(2));
    let (programs_after, files_after) = queue(&out);
    for (k, p) in programs_before.iter().enumerate() {
        assert!(
            programs_after.contains(p),
            "corpus entry {k} of {} lost on resume",
            programs_before.len()
        );
    }
    // The killed session's packs are read, never appended to: a record
    // the kill tore stays the last one of its pack.
    for (name, bytes) in &files_before {
        assert!(
            files_after.iter().any(|(n, b)| n == name && b == bytes),
            "queue file {name} changed on resume"
        );
    }
    assert!(
        files_after.len() > files_before.len(),
        "the resumed session wrote no pack"
    );
    // The resumed session re-ran the queue and kept its entries again, but
    // wrote none of them out again: each is on disk once, in its old pack.
    let mut stored = std::collections::HashMap::new();
    for (name, _) in &files_after {
        let read = fuzzer::queue::read_pack(&out.join("queue").join(name)).unwrap();
        for e in &read.entries {
            let p = fuzzer::program::ScsiProgram::from_saved(e).unwrap();
            *stored.entry(p).or_insert(0) += 1;
        }
    }
    for (k, p) in programs_before.iter().enumerate() {
        assert_eq!(stored.get(p), Some(&1), "corpus entry {k} stored again");
    }
    let findings_after: Vec<PathBuf> = findings(&out).into_iter().map(|(d, _)| d).collect();
    for f in &findings_before {
        assert!(
            findings_after.contains(f),
            "finding {} lost on resume",
            f.display()
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("campaign.json")).unwrap()).unwrap();
    assert_eq!(manifest["resumed"], 1);
    // Starting over in the same directory without --resume is refused.
    let again = run(scuzz()
        .args(["fuzz", "--out"])
        .arg(&out)
        .args(["--time", "1s", "--quiet"]));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// `--to iscsi://`: programs run over our initiator against `scuzz serve`
/// with its flush a no-op; a TARGET COLD RESET is the power cut. The lost
/// flush shows as stale or dropped blocks, and the finding says it came
/// from a real target and how to replay it there.
#[test]
fn fuzzing_a_real_target_over_iscsi_finds_a_lost_flush() {
    let serve = common::Serve::start(&["--capacity", "16M", "--bug", "sync-cache-noop"]);
    let out = tempdir("iscsi-serve");
    let o = run(scuzz()
        .args([
            "fuzz",
            "--to",
            &serve.url(0),
            "--cold-reset",
            "--time",
            "90s",
        ])
        .args(["--until-findings", "1", "--quiet", "--seed", "5"])
        .arg("--seeds")
        .arg(seeds())
        .arg("--out")
        .arg(&out));
    assert_eq!(o.status.code(), Some(2), "findings exit with 2");
    let f = findings(&out);
    // `--until-findings 1` stops at the first, but one program can give
    // two signatures at once (a stale and a dropped block): every one must
    // be the lost flush.
    assert!(!f.is_empty());
    for (_, manifest) in &f {
        let class = manifest["signature"]["class"].as_str().unwrap_or_default();
        assert!(class == "stale" || class == "dropped", "class {class}");
    }
    let report = std::fs::read_to_string(f[0].0.join("report.md")).unwrap();
    assert!(report.contains("found on a real target"), "{report}");
    assert!(
        report.contains(&format!("scuzz replay --to {}", serve.url(0))),
        "{report}"
    );
    let repro = trace::TraceReader::open(&f[0].0.join("repro.sczt")).unwrap();
    assert_eq!(
        repro.header().labels.get("device").map(String::as_str),
        Some(serve.url(0).as_str())
    );
    // The report's replay command, power cycle included, shows it again
    // (what survives a power cut is seeded per cut, so allow a few tries).
    assert!(report.contains("--cold-reset --fresh-data"), "{report}");
    let repro = f[0].0.join("repro.sczt");
    let shown = (0..12).any(|_| {
        let o = run(scuzz()
            .args([
                "replay",
                "--to",
                &serve.url(0),
                "--cold-reset",
                "--fresh-data",
            ])
            .arg("--verify")
            .arg(&repro));
        assert!(matches!(o.status.code(), Some(0 | 2)), "{o:?}");
        o.status.code() == Some(2)
    });
    assert!(
        shown,
        "the reproducer never showed the violation in 12 replays"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A correct target (tgtd, LOGICAL UNIT RESET as the power loss) gives no
/// finding: optional features it refuses with ILLEGAL REQUEST are not
/// violations, and blocks an earlier run left are never mistaken for this
/// run's.
#[test]
fn fuzzing_tgtd_over_iscsi_finds_nothing() {
    assert!(
        iscsi::testing::Tgtd::available(),
        "tgtd is not installed: scripts/test installs the tgt package"
    );
    let t = iscsi::testing::Tgtd::builder()
        .size(16 << 20)
        .start()
        .unwrap();
    let out = tempdir("iscsi-tgtd");
    let o = run(scuzz()
        .args([
            "fuzz",
            "--to",
            &t.url(1),
            "--time",
            "15s",
            "--quiet",
            "--seed",
            "2",
        ])
        .arg("--seeds")
        .arg(seeds())
        .arg("--out")
        .arg(&out));
    assert_eq!(o.status.code(), Some(0));
    assert!(findings(&out).is_empty());
    let stats = std::fs::read_to_string(out.join("stats.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    assert!(last["execs"].as_u64().unwrap() > 50, "{last}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_real_target_refuses_emulator_options_and_several_cores() {
    let serve = common::Serve::start(&["--capacity", "16M"]);
    let out = tempdir("iscsi-refuse");
    let url = serve.url(0);
    let cases: [(&[&str], &str); 3] = [
        (&["--to", &url, "--bug", "sync-cache-noop"], "--bug"),
        (&["--to", &url, "--cores", "0-1"], "one client"),
        (&["--to", "iscsi://127.0.0.1:1/iqn.none/0"], "login"),
    ];
    for (args, says) in cases {
        let o = run(scuzz()
            .arg("fuzz")
            .args(args)
            .args(["--time", "5s", "--out"])
            .arg(&out));
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `--resume` without `--max-ops` keeps the campaign's own bound: a user
/// who resumes an 8-op campaign must not find 200-op programs in it.
#[test]
fn a_resumed_campaign_keeps_its_max_ops() {
    let out = tempdir("maxops-resume");
    let first = run(scuzz()
        .args(["fuzz", "--out"])
        .arg(&out)
        .args(["--max-ops", "6", "--cores", "0", "--in-process"])
        .args(["--time", "2s", "--seed", "4", "--quiet"]));
    assert_eq!(first.status.code(), Some(0));
    let again = run(scuzz()
        .args(["fuzz", "--out"])
        .arg(&out)
        .args(["--resume", "--cores", "0", "--in-process"])
        .args(["--time", "2s", "--seed", "4", "--quiet"]));
    assert_eq!(again.status.code(), Some(0));
    let (programs, _) = queue(&out);
    assert!(programs.len() > 6, "{} programs kept", programs.len());
    let longest = programs.iter().map(|p| p.ops.len()).max().unwrap();
    assert!(longest <= 6, "a program of {longest} ops after the resume");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("campaign.json")).unwrap()).unwrap();
    assert_eq!(
        (manifest["max_ops"].as_u64(), manifest["resumed"].as_u64()),
        (Some(6), Some(1))
    );
    std::fs::remove_dir_all(&out).unwrap();
}
