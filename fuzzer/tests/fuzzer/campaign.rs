//! Campaigns in process: LibAFL's loop over the emulator finds catalogued
//! bugs from the checked-in seeds, and writes findings that replay.

use crate::scenarios::target;
use emulator::Bug;
use fuzzer::campaign::{run_in_process, CampaignConfig};
use std::path::PathBuf;
use std::time::Duration;

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scuzz-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn config(out: PathBuf, preset: &str, bugs: &[Bug], secs: u64) -> CampaignConfig {
    CampaignConfig {
        target: target(preset, bugs),
        seeds: None,
        out,
        cores: "0".into(),
        duration: Duration::from_secs(secs),
        resume: false,
        seed: 1,
        broker_port: None,
        broker_listen: None,
        remote_broker: None,
        live: false,
        stop_after_findings: Some(1),
        stop_when_found: Vec::new(),
    }
}

#[test]
fn an_in_process_campaign_finds_sync_cache_noop_and_writes_a_finding() {
    let out = tempdir("scn");
    let cfg = config(out.clone(), "lsi3108", &[Bug::SyncCacheNoop], 60);
    let report = run_in_process(&cfg).unwrap();
    eprintln!("{report:?}");
    let found = fuzzer::findings::records_on_disk(&out.join("findings"));
    assert!(!found.is_empty(), "no finding after {:?}", report);
    let (dir, rec) = &found[0];
    assert_eq!(rec.signature.bug, "sync-cache-noop", "{rec:?}");
    for f in ["repro.sczt", "report.md", "program.json", "finding.json"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    if std::env::var_os("SCUZZ_KEEP").is_none() {
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn max_ops_bounds_every_program_the_campaign_keeps() {
    // Mutators insert and duplicate ops; none may grow a program past
    // `--max-ops`, and the manifest records the bound for triage.
    let out = tempdir("maxops");
    let mut cfg = config(out.clone(), "lsi3108", &[], 3);
    cfg.stop_after_findings = None;
    cfg.target.max_ops = 8;
    let report = run_in_process(&cfg).unwrap();
    let queue = fuzzer::findings::load_programs(&out.join("queue"));
    assert!(queue.len() > 8, "{report:?}: {} programs kept", queue.len());
    let longest = queue.iter().map(|p| p.ops.len()).max().unwrap();
    assert!(longest <= 8, "a kept program has {longest} ops");
    let manifest: fuzzer::campaign::Manifest =
        serde_json::from_str(&std::fs::read_to_string(out.join("campaign.json")).unwrap()).unwrap();
    assert_eq!(manifest.max_ops, 8);
    std::fs::remove_dir_all(&out).unwrap();
}
