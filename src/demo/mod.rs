//! The LSI 3108 report as an experiment (`scuzz demo`).
//!
//! The report gives symptoms, not a cause: buffered copies of 256 MB
//! corrupt while 128 MB pass, direct I/O passes, nothing needs a power cut,
//! and fio's first bad 1 MiB block is the second one. Each candidate cause
//! in the emulator's bug catalogue is a hypothesis; this module tests every
//! one the same way: synthesize the report's workloads through the report's
//! HBA and memory map ([`recorder::synth`]), replay each against the
//! emulator with that one bug switched on, with and without a power cut
//! after the final SYNCHRONIZE CACHE ([`replayer::runner`]), and derive every
//! symptom from what verification found ([`symptoms`]). Nothing in the
//! table is written down in advance: change the preset (its address bits,
//! whether its byte limit reaches the splitter) and the table changes.

pub mod fuzz;
pub mod symptoms;
pub mod table;

use anyhow::Context;
use emulator::Bug;
use recorder::synth::cp::{layout, synth_cp, CpParams};
use recorder::synth::fio::{synth_fio, FioParams, FioRw, FILE_START};
use recorder::synth::Machine;
use replayer::backend::emulator::EmulatorSpec;
use replayer::runner::{run_source, RunSpec, Target};
use replayer::{MemoryTrace, ReplayOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use symptoms::Symptoms;
use trace::file::TraceHeader;
use trace::{Cdb, Event, HbaPreset};

/// The byte limit an OS splitter applies when the driver's own limit never
/// reached it (IOKit's and Linux's common default of 1 MiB per command):
/// what `lsi3108-unsplit` models.
pub const OS_DEFAULT_MAX_TRANSFER: u32 = 1 << 20;

/// Everything a demo run depends on.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The preset under test, with the command line's overrides applied.
    pub preset: HbaPreset,
    /// The same controller with its byte limit not applied by the splitter.
    pub unsplit: HbaPreset,
    /// Physical memory of the modelled host.
    pub mem: u64,
    /// Free memory below 4 GiB when each workload starts.
    pub low_free: u64,
    /// Page-cache page size.
    pub page_size: u64,
    /// The file size the report says passes (128 MB).
    pub small: u64,
    /// The file size the report says fails (256 MB).
    pub large: u64,
    /// fio's `bs=` (1 MiB in the report).
    pub fio_bs: u64,
    /// Seed of the synthesizers and the emulator.
    pub seed: u64,
    /// Replays run at once.
    pub threads: usize,
}

impl DemoConfig {
    /// The report's setup on `preset`: 16 GiB of memory of which 128 MiB is
    /// free below 4 GiB, 16 KiB pages, `cp` of 128 and 256 MiB, fio with
    /// 1 MiB blocks. `scale` divides every size except fio's block size (a
    /// smaller demo for tests; 1 is the real one).
    pub fn report(preset: HbaPreset, scale: u64, seed: u64) -> DemoConfig {
        let scale = scale.max(1);
        DemoConfig {
            unsplit: byte_limit_not_applied(&preset),
            preset,
            mem: 16 << 30,
            low_free: (128 << 20) / scale,
            page_size: 16 << 10,
            small: (128 << 20) / scale,
            large: (256 << 20) / scale,
            fio_bs: 1 << 20,
            seed,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// `preset` with its byte limits replaced in the splitter by the OS
/// default: the DEXT passed `kIOMaximumByteCountWriteKey` through
/// `UserReportHBAConstraints`, which does not carry it
/// (`driverkit-scsi.md`), so the controller's limit stays but the OS no
/// longer cuts I/O to it.
pub fn byte_limit_not_applied(preset: &HbaPreset) -> HbaPreset {
    let mut p = preset.clone();
    p.splitter.max_bytes_read = OS_DEFAULT_MAX_TRANSFER;
    p.splitter.max_bytes_write = OS_DEFAULT_MAX_TRANSFER;
    p.name = if preset.name == "lsi3108" {
        "lsi3108-unsplit".into()
    } else {
        format!("{}-unsplit", preset.name)
    };
    p
}

/// `preset` with the controller and the splitter addressing `bits` bits
/// (`--address-bits`), renamed so reports show the change.
pub fn with_address_bits(mut preset: HbaPreset, bits: u8) -> HbaPreset {
    preset.controller.address_bits = bits;
    preset.splitter.address_bits = bits;
    preset.name = format!("{}+address-bits={bits}", preset.name);
    preset
}

/// Which of the two presets a row runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Splitter {
    /// The preset as given: every limit reaches the splitter.
    ByteLimitApplied,
    /// The byte limit never reached the splitter.
    ByteLimitNotApplied,
}

/// One candidate cause: a catalogued bug (or none, the control) on one
/// preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The bug switched on; `None` is a correct driver.
    pub bug: Option<Bug>,
    /// Which preset.
    pub splitter: Splitter,
}

impl Candidate {
    /// The row's name in the table.
    pub fn label(&self) -> String {
        match (self.bug, self.splitter) {
            (None, Splitter::ByteLimitApplied) => "no bug (control)".into(),
            (None, Splitter::ByteLimitNotApplied) => {
                "no bug (control, byte limit not applied)".into()
            }
            (Some(b), Splitter::ByteLimitApplied) => b.name().into(),
            (Some(b), Splitter::ByteLimitNotApplied) => {
                format!("{b} (byte limit not applied)")
            }
        }
    }
}

/// Bugs whose faulty step is the driver's handling of a task over the
/// controller's byte limit: with a splitter that honours the limit no such
/// task exists, so they are also run on the preset where it does not.
pub fn depends_on_byte_limit(bug: Bug) -> bool {
    matches!(
        bug,
        Bug::OversizeTruncate | Bug::OversizeClip | Bug::SplitOffByOne
    )
}

/// Every row of the table: the control, each catalogued bug on the preset,
/// then the control and the byte-limit bugs on the unsplit preset.
pub fn candidates() -> Vec<Candidate> {
    let mut v = vec![Candidate {
        bug: None,
        splitter: Splitter::ByteLimitApplied,
    }];
    v.extend(Bug::ALL.iter().map(|b| Candidate {
        bug: Some(*b),
        splitter: Splitter::ByteLimitApplied,
    }));
    v.push(Candidate {
        bug: None,
        splitter: Splitter::ByteLimitNotApplied,
    });
    v.extend(
        Bug::ALL
            .iter()
            .filter(|b| depends_on_byte_limit(**b))
            .map(|b| Candidate {
                bug: Some(*b),
                splitter: Splitter::ByteLimitNotApplied,
            }),
    );
    v
}

/// The report's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `cp` of the size that passes, then a checksum read.
    CpSmall,
    /// `cp` of the size that fails, then a checksum read.
    CpLarge,
    /// `fio --direct=1 --rw=write --verify`.
    FioDirect,
    /// The same job buffered (the report's `direct=1` removed).
    FioBuffered,
}

impl Workload {
    /// All four, in table order.
    pub const ALL: [Workload; 4] = [
        Workload::CpSmall,
        Workload::CpLarge,
        Workload::FioDirect,
        Workload::FioBuffered,
    ];

    /// How the tutorial and the table name it (`cp 128M`, ...).
    pub fn label(self, cfg: &DemoConfig) -> String {
        let m = |b: u64| size(b);
        match self {
            Workload::CpSmall => format!("cp {}", m(cfg.small)),
            Workload::CpLarge => format!("cp {}", m(cfg.large)),
            Workload::FioDirect => format!(
                "fio --direct=1 --bs={} --size={} --verify",
                m(cfg.fio_bs),
                m(cfg.large)
            ),
            Workload::FioBuffered => format!(
                "fio --direct=0 --bs={} --size={} --verify",
                m(cfg.fio_bs),
                m(cfg.large)
            ),
        }
    }
}

/// `256M`, `1M`, `16K`, or bytes.
pub fn size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes & ((1 << shift) - 1) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A synthesized workload held in memory, ready to replay any number of
/// times.
#[derive(Debug, Clone)]
pub struct SynthTrace {
    /// Its header (HBA preset, capacity, block size).
    pub header: TraceHeader,
    /// Its events.
    pub events: Vec<Event>,
    /// Sequence number of the last SYNCHRONIZE CACHE: where the power cut
    /// goes.
    pub final_flush: Option<u64>,
    /// LBA of the file's first byte, to turn a bad LBA into a file offset.
    pub file_start_lba: u64,
}

/// Synthesizes workload `w` on `preset`.
pub fn synthesize(cfg: &DemoConfig, preset: &HbaPreset, w: Workload) -> anyhow::Result<SynthTrace> {
    let machine = Machine {
        hba: preset.clone(),
        page_size: cfg.page_size,
        mem: cfg.mem,
        low_free: cfg.low_free,
        seed: cfg.seed,
        ..Machine::default()
    };
    let bs = u64::from(machine.block_size);
    let mut events = Vec::new();
    let mut sink = |e: Event| {
        events.push(e);
        Ok(())
    };
    let label = w.label(cfg);
    let (capacity, file_start_lba) = match w {
        Workload::CpSmall | Workload::CpLarge => {
            let size = if w == Workload::CpSmall {
                cfg.small
            } else {
                cfg.large
            };
            let p = CpParams::new(machine.clone(), size);
            synth_cp(&p, &mut sink).with_context(|| format!("synthesizing {label}"))?;
            (p.capacity_blocks(), layout::DATA / bs)
        }
        Workload::FioDirect | Workload::FioBuffered => {
            let mut p = FioParams::new(
                machine.clone(),
                FioRw::Write,
                cfg.fio_bs,
                cfg.large,
                w == Workload::FioDirect,
            );
            p.verify = true;
            synth_fio(&p, &mut sink).with_context(|| format!("synthesizing {label}"))?;
            (p.capacity_blocks(), FILE_START / bs)
        }
    };
    let final_flush = events.iter().rev().find_map(|e| match e {
        Event::Submit(s) if matches!(Cdb::parse(&s.cdb), Ok(Cdb::SyncCache { .. })) => Some(s.seq),
        _ => None,
    });
    Ok(SynthTrace {
        header: machine.header(&label, capacity),
        events,
        final_flush,
        file_start_lba,
    })
}

/// What one replay found.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Which workload.
    pub workload: Workload,
    /// Power was cut right after the final SYNCHRONIZE CACHE.
    pub power_cut: bool,
    /// Verification passed.
    pub passed: bool,
    /// Blocks read back and judged.
    pub blocks_checked: u64,
    /// Blocks the oracle rejected.
    pub data_violations: u64,
    /// Completions unlike the recording's.
    pub completion_mismatches: u64,
    /// Bad blocks per classification.
    pub classes: BTreeMap<String, u64>,
    /// File offset of the first bad block found, in bytes.
    pub first_bad_offset: Option<u64>,
    /// Classification of the first bad block.
    pub first_bad_class: Option<String>,
    /// The first offending command, as the replayer words it.
    pub first_finding: Option<String>,
}

/// Replays `t` against the emulator with `bug` on, cutting power after the
/// final flush if `power_cut`.
pub fn replay(
    rt: &tokio::runtime::Runtime,
    name: &str,
    t: &SynthTrace,
    workload: Workload,
    bug: Option<Bug>,
    power_cut: bool,
    seed: u64,
) -> anyhow::Result<RunOutcome> {
    let power_loss_at = match (power_cut, t.final_flush) {
        (true, Some(seq)) => vec![seq],
        (true, None) => anyhow::bail!("{name}: the workload issues no SYNCHRONIZE CACHE"),
        (false, _) => Vec::new(),
    };
    let spec = RunSpec {
        trace: PathBuf::from(name),
        // The preset comes from the trace header (it may carry overrides
        // no preset name spells).
        target: Target::Emulator(EmulatorSpec {
            bugs: bug.iter().map(|b| b.name().to_string()).collect(),
            seed,
            ..EmulatorSpec::default()
        }),
        options: ReplayOptions {
            verify: true,
            power_loss_at,
            seed,
            ..ReplayOptions::default()
        },
        report: None,
        baseline: None,
        limits: Vec::new(),
        regression_floor_ns: 0,
    };
    let source = MemoryTrace {
        name: name.to_string(),
        header: Some(t.header.clone()),
        events: t.events.clone(),
    };
    let report = rt
        .block_on(run_source(&spec, &source))
        .with_context(|| format!("replaying {name}"))?;
    let v = report
        .summary
        .verify
        .with_context(|| format!("{name}: the replay verified nothing"))?;
    let bs = u64::from(t.header.block_size.max(1));
    let first_bad_offset = v
        .first_bad
        .as_ref()
        .map(|b| b.lba.saturating_sub(t.file_start_lba).saturating_mul(bs));
    Ok(RunOutcome {
        workload,
        power_cut,
        passed: v.passed(),
        blocks_checked: v.blocks_checked,
        data_violations: v.data_violations,
        completion_mismatches: v.completion_mismatches,
        classes: v
            .classes
            .iter()
            .filter(|(k, n)| k.as_str() != "ok" && **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
        first_bad_offset,
        first_bad_class: v.first_bad.map(|b| b.class),
        first_finding: v
            .first
            .first()
            .map(|f| format!("{}: {}", f.command, f.message)),
    })
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The candidate.
    pub candidate: Candidate,
    /// Its label.
    pub label: String,
    /// The preset it ran on.
    pub preset: String,
    /// Every replay, in workload order, without then with the power cut.
    pub runs: Vec<RunOutcome>,
    /// The symptoms those runs show.
    pub symptoms: Symptoms,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// The preset under test.
    pub preset: HbaPreset,
    /// Its variant whose byte limit does not reach the splitter.
    pub unsplit: HbaPreset,
    /// Memory map: free memory below 4 GiB at the start.
    pub low_free: u64,
    /// Physical memory.
    pub mem: u64,
    /// fio's block size.
    pub fio_bs: u64,
    /// Workload names, in run order.
    pub workloads: Vec<String>,
    /// One row per candidate.
    pub rows: Vec<Row>,
    /// Index in `rows` of the candidate matching the most symptoms (a bug,
    /// never the control), if any matches one the control does not.
    pub leading: Option<usize>,
    /// Seconds the runs took.
    pub seconds: f64,
}

impl DemoReport {
    /// The leading row.
    pub fn leading_row(&self) -> Option<&Row> {
        self.leading.and_then(|i| self.rows.get(i))
    }
}

/// Progress of the run matrix, for a progress bar.
pub trait Progress: Sync {
    /// `total` replays will run.
    fn start(&self, total: u64);
    /// One finished; `what` names it.
    fn done(&self, what: &str);
}

/// Runs every candidate against every workload, with and without the power
/// cut, on `cfg.threads` threads.
pub fn run(cfg: &DemoConfig, progress: &dyn Progress) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let rows = candidates();
    let presets = [
        (Splitter::ByteLimitApplied, &cfg.preset),
        (Splitter::ByteLimitNotApplied, &cfg.unsplit),
    ];
    // Synthesis is deterministic and bug-independent: once per preset and
    // workload, shared by every row.
    let mut traces: BTreeMap<(Splitter, Workload), SynthTrace> = BTreeMap::new();
    for (splitter, preset) in presets {
        for w in Workload::ALL {
            traces.insert((splitter, w), synthesize(cfg, preset, w)?);
        }
    }
    let mut jobs = Vec::new();
    for r in 0..rows.len() {
        for w in Workload::ALL {
            for power_cut in [false, true] {
                jobs.push((r, w, power_cut));
            }
        }
    }
    // Largest first, so the last job to finish is a short one.
    jobs.sort_by_key(|(r, w, p)| (*w == Workload::CpSmall, *r, *w, *p));
    progress.start(jobs.len() as u64);
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<(usize, Workload, bool), RunOutcome>> = Mutex::new(BTreeMap::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..cfg.threads.clamp(1, jobs.len().max(1)) {
            s.spawn(|| {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(r, w, power_cut)) = jobs.get(i) else {
                        break;
                    };
                    if failure.lock().map_or(true, |f| f.is_some()) {
                        break;
                    }
                    let c = rows[r];
                    let t = &traces[&(c.splitter, w)];
                    let name = format!(
                        "{} [{}]{}",
                        w.label(cfg),
                        c.label(),
                        if power_cut { " + power cut" } else { "" }
                    );
                    match replay(&rt, &name, t, w, c.bug, power_cut, cfg.seed) {
                        Ok(o) => {
                            if let Ok(mut m) = results.lock() {
                                m.insert((r, w, power_cut), o);
                            }
                            progress.done(&name);
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(rows.len());
    for (r, c) in rows.iter().enumerate() {
        let mut runs = Vec::new();
        for w in Workload::ALL {
            for power_cut in [false, true] {
                let o = results
                    .remove(&(r, w, power_cut))
                    .with_context(|| format!("no result for {} / {}", c.label(), w.label(cfg)))?;
                runs.push(o);
            }
        }
        let symptoms = Symptoms::from_runs(&runs, cfg.fio_bs);
        out.push(Row {
            candidate: *c,
            label: c.label(),
            preset: match c.splitter {
                Splitter::ByteLimitApplied => cfg.preset.name.clone(),
                Splitter::ByteLimitNotApplied => cfg.unsplit.name.clone(),
            },
            runs,
            symptoms,
        });
    }
    let leading = symptoms::leading(&out);
    Ok(DemoReport {
        preset: cfg.preset.clone(),
        unsplit: cfg.unsplit.clone(),
        low_free: cfg.low_free,
        mem: cfg.mem,
        fio_bs: cfg.fio_bs,
        workloads: Workload::ALL.iter().map(|w| w.label(cfg)).collect(),
        rows: out,
        leading,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_bug_has_a_row_and_byte_limit_bugs_two() {
        let c = candidates();
        for b in Bug::ALL {
            let n = c.iter().filter(|x| x.bug == Some(*b)).count();
            assert_eq!(n, if depends_on_byte_limit(*b) { 2 } else { 1 }, "{b}");
        }
        assert_eq!(c.iter().filter(|x| x.bug.is_none()).count(), 2);
    }

    #[test]
    fn unsplit_variant_of_lsi3108_is_the_named_preset() {
        assert_eq!(
            byte_limit_not_applied(&HbaPreset::lsi3108()),
            HbaPreset::lsi3108_unsplit()
        );
        let p = with_address_bits(HbaPreset::lsi3108(), 64);
        assert_eq!(p.controller.address_bits, 64);
        assert_eq!(p.splitter.address_bits, 64);
        assert_eq!(p.name, "lsi3108+address-bits=64");
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(size(256 << 20), "256M");
        assert_eq!(size(16 << 10), "16K");
        assert_eq!(size(1000), "1000");
    }
}
