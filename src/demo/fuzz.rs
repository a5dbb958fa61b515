//! The demo's last step: a short LibAFL campaign against the leading
//! cause, seeded with a synthesized `cp`, and the minimised reproducer it
//! finds, ready to replay on the emulator or on hardware.

use super::{size, DemoConfig};
use anyhow::Context;
use emulator::{Bug, BugSet};
use fuzzer::campaign::{run_in_process, CampaignConfig, Layout};
use fuzzer::findings::records_on_disk;
use fuzzer::harness::Target;
use fuzzer::program::ScsiProgram;
use recorder::synth::cp::{synth_cp, CpParams};
use recorder::synth::Machine;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trace::{Compression, HbaPreset, TraceWriter};

/// Size of the seed copy: small enough for the fuzzer's 64 MiB disk, with
/// half its page cache above 4 GiB (the seed's low free memory is half of
/// it), so the seed already carries the address shape of the large copy.
pub const SEED_COPY: u64 = 4 << 20;

/// What the campaign found.
#[derive(Debug, Clone, Serialize)]
pub struct FuzzOutcome {
    /// The bug fuzzed.
    pub bug: String,
    /// The preset fuzzed.
    pub preset: String,
    /// The campaign directory.
    pub campaign: PathBuf,
    /// Seconds fuzzed.
    pub seconds: f64,
    /// The reproducer, if one was found.
    pub finding: Option<Reproducer>,
}

/// A minimised reproducer.
#[derive(Debug, Clone, Serialize)]
pub struct Reproducer {
    /// `class--bug--shape`.
    pub signature: String,
    /// Its directory (`repro.sczt`, `report.md`, `program.json`).
    pub dir: PathBuf,
    /// The trace to replay.
    pub trace: PathBuf,
    /// Operations before and after minimisation.
    pub ops_before: usize,
    /// Operations after minimisation.
    pub ops_after: usize,
    /// The minimised program, one operation per line.
    pub program: String,
    /// The first violation the oracle reported.
    pub violation: String,
    /// The command that replays it.
    pub replay: String,
}

/// Writes a synthesized `cp` of [`SEED_COPY`] on `preset` into `dir`.
pub fn write_seed(cfg: &DemoConfig, preset: &HbaPreset, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = Machine {
        hba: preset.clone(),
        page_size: cfg.page_size,
        mem: cfg.mem,
        low_free: SEED_COPY / 2,
        seed: cfg.seed,
        ..Machine::default()
    };
    let p = CpParams::new(machine.clone(), SEED_COPY);
    let path = dir.join(format!("cp-{}-{}.sczt", size(SEED_COPY), preset.name));
    let header = machine.header(&format!("cp {}", size(SEED_COPY)), p.capacity_blocks());
    let mut w = TraceWriter::create(&path, &header, Compression::None)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut err = None;
    synth_cp(&p, &mut |e| {
        if let Err(x) = w.write(&e) {
            err = Some(x);
        }
        Ok(())
    })
    .context("synthesizing the seed copy")?;
    if let Some(e) = err {
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    w.finish()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The replay command line for a reproducer of `bug` on `preset`.
pub fn replay_command(preset: &HbaPreset, bug: Bug, seed: u64, trace: &Path) -> String {
    // A preset with overrides has no name `--hba` knows: the reproducer's
    // header carries it, and the replayer takes it from there.
    let hba = if HbaPreset::by_name(&preset.name).is_ok() {
        format!(" --hba {}", preset.name)
    } else {
        String::new()
    };
    format!(
        "scuzz replay --to emulator{hba} --bug {} --seed {seed} --verify {}",
        bug.name(),
        trace.display()
    )
}

/// Fuzzes `bug` on `preset` for at most `time`, stopping at the first
/// finding attributed to it, under `out`.
pub fn campaign(
    cfg: &DemoConfig,
    preset: &HbaPreset,
    bug: Bug,
    out: &Path,
    time: Duration,
) -> anyhow::Result<FuzzOutcome> {
    let dir = out.join(format!("campaign-{}", bug.name()));
    if Layout::new(&dir).manifest().exists() {
        // A previous demo's campaign: the demo starts its own each time.
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let seeds = out.join("seeds");
    write_seed(cfg, preset, &seeds)?;
    let target = Target {
        preset: preset.clone(),
        bugs: BugSet::of(&[bug]),
        device_seed: cfg.seed,
        ..Target::new(preset.clone())
    };
    let config = CampaignConfig {
        target,
        seeds: Some(seeds),
        out: dir.clone(),
        cores: "0".into(),
        duration: time,
        resume: false,
        seed: cfg.seed,
        broker_port: None,
        broker_listen: None,
        remote_broker: None,
        live: false,
        stop_after_findings: None,
        stop_when_found: vec![bug.name().to_string()],
    };
    let started = Instant::now();
    run_in_process(&config).context("fuzz campaign")?;
    let seconds = started.elapsed().as_secs_f64();
    let found = records_on_disk(&Layout::new(&dir).findings());
    let mine = found
        .iter()
        .find(|(_, r)| r.signature.bug.split('+').any(|b| b == bug.name()))
        .or(found.first());
    let finding = match mine {
        None => None,
        Some((fdir, rec)) => {
            let program_path = fdir.join("program.json");
            let program: ScsiProgram = serde_json::from_slice(
                &std::fs::read(&program_path)
                    .with_context(|| format!("reading {}", program_path.display()))?,
            )
            .with_context(|| format!("parsing {}", program_path.display()))?;
            let trace = fdir.join("repro.sczt");
            Some(Reproducer {
                signature: rec.signature.to_string(),
                dir: fdir.clone(),
                replay: replay_command(preset, bug, cfg.seed, &trace),
                trace,
                ops_before: rec.ops_before,
                ops_after: rec.ops_after,
                program: program.to_string(),
                violation: rec
                    .verdict
                    .violations
                    .first()
                    .map_or_else(String::new, ToString::to_string),
            })
        }
    };
    Ok(FuzzOutcome {
        bug: bug.name().to_string(),
        preset: preset.name.clone(),
        campaign: dir,
        seconds,
        finding,
    })
}
