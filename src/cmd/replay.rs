//! `scuzz replay`: run a trace against the emulator, an iSCSI target or a
//! SG_IO device; verify data, report latency, compare with a baseline; or
//! run a folder of regression cases (`--suite`).
//!
//! Exit codes (docs/replay.md): 0 pass; 1 usage or I/O error; 2 data
//! violation (or, with `--suite`, a case whose outcome differs from its
//! expect.toml); 3 latency regression against `--baseline`.

use anyhow::Context;
use replayer::backend::emulator::EmulatorSpec;
use replayer::options::{LunMap, ReplayOptions};
use replayer::report::parse_limits;
use replayer::runner::{self, parse_host_buffers, parse_size, RunSpec, Target};
use replayer::suite::{junit_xml, run_suite};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `scuzz replay`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace file (.sczt) to replay.
    #[arg(required_unless_present = "suite", conflicts_with = "suite")]
    pub trace: Option<PathBuf>,
    /// Destination: `emulator`, `sg:/dev/sgN`, `/dev/bsg/H:C:T:L`, or
    /// `iscsi://host:port/iqn/lun`.
    #[arg(long, default_value = "emulator")]
    pub to: String,
    /// Commands in flight at most (default: the highest depth the recording
    /// reached).
    #[arg(long)]
    pub qd: Option<u32>,
    /// Pacing: `afap` (as fast as possible), `original`, or `scale=X`
    /// (X times the recorded speed).
    #[arg(long, default_value = "afap")]
    pub timing: String,
    /// Ordering: `strict` (as recorded), `overlap` (overlapping LBA ranges
    /// and flushes keep their order), `free` (queue depth only).
    #[arg(long, default_value = "strict")]
    pub order: String,
    /// Passes over the trace.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Stop after this many commands.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Send LUN A's commands to LUN B (`A=B`, repeatable).
    #[arg(long = "lun-map", value_name = "A=B")]
    pub lun_map: Vec<String>,
    /// Judge every block read back with the consistency oracle and compare
    /// completions with the recording; ends with a read-back of every block
    /// written.
    #[arg(long)]
    pub verify: bool,
    /// Emulator: HBA preset (`generic`, `lsi3108`, `lsi3108-unsplit`;
    /// default: the trace's).
    #[arg(long)]
    pub hba: Option<String>,
    /// Emulator: switch on a bug from the catalogue (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
    /// Emulator: capacity (`1G`, `512M`; default: the trace's).
    #[arg(long)]
    pub capacity: Option<String>,
    /// Emulator: logical block size (default: the trace's).
    #[arg(long = "block-size")]
    pub block_size: Option<u32>,
    /// Emulator: cut power right after the command with this trace sequence
    /// number completes (repeatable).
    #[arg(long = "power-loss-at", value_name = "SEQ")]
    pub power_loss_at: Vec<u64>,
    /// Seed for the emulator's random choices and for fresh write data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Emulator: nanoseconds of service time added to every command.
    #[arg(long = "latency-add", value_name = "NS", default_value_t = 0)]
    pub latency_add: u64,
    /// Emulator: keep host buffers after each command (`keep`), free them
    /// (`discard`, constant memory), or keep them only when a bug is on
    /// (`auto`).
    #[arg(long = "host-memory", default_value = "auto")]
    pub host_memory: String,
    /// SG_IO: replay onto a device that holds a partition table.
    #[arg(long = "i-know-this-destroys-data")]
    pub destroy_ok: bool,
    /// Write fresh self-describing data (seeded from the clock), never the
    /// trace's: on a real device that still holds an earlier replay's
    /// blocks, a lost write of identical data would go unseen.
    #[arg(long = "fresh-data")]
    pub fresh_data: bool,
    /// iSCSI: a power loss in the trace is a TARGET COLD RESET (`scuzz
    /// serve` treats it as a power cycle) instead of a LOGICAL UNIT RESET.
    #[arg(long = "cold-reset", conflicts_with = "power_cycle_cmd")]
    pub cold_reset: bool,
    /// iSCSI: a power loss in the trace runs this shell command (it must
    /// power-cycle the target); the replayer then logs in again.
    #[arg(long = "power-cycle-cmd", value_name = "CMD")]
    pub power_cycle_cmd: Option<String>,
    /// iSCSI: CHAP user name.
    #[arg(long = "chap-user")]
    pub chap_user: Option<String>,
    /// iSCSI: CHAP secret.
    #[arg(long = "chap-secret")]
    pub chap_secret: Option<String>,
    /// Write summary.txt, summary.json, latency.hlog and latency.svg here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Compare with the report directory of an earlier run.
    #[arg(long, requires = "max_regression")]
    pub baseline: Option<PathBuf>,
    /// Allowed growth per percentile, e.g. `p99=10%,p50=5%`.
    #[arg(long = "max-regression")]
    pub max_regression: Option<String>,
    /// Growth below this many nanoseconds never counts as a regression.
    #[arg(long = "regression-floor", value_name = "NS", default_value_t = 50_000)]
    pub regression_floor: u64,
    /// Print summary.json to stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Run every case directory (with an expect.toml) in this folder.
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// With --suite: write JUnit XML here.
    #[arg(long, requires = "suite")]
    pub junit: Option<PathBuf>,
}

/// Runs `scuzz replay`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.suite {
        return suite(dir, args.junit.as_deref());
    }
    let trace = args.trace.clone().context("a trace file is required")?;
    let spec = spec(&args, trace)?;
    let report = runner::run(&spec)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.summary)?);
    } else {
        print!("{}", report.summary.to_text());
    }
    for r in &report.regressions {
        eprintln!("latency regression: {r}");
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}

fn spec(a: &Args, trace: PathBuf) -> anyhow::Result<RunSpec> {
    let mut lun_map = LunMap::default();
    for m in &a.lun_map {
        lun_map.add(m)?;
    }
    let options = ReplayOptions {
        qd: a.qd,
        timing: a.timing.parse()?,
        order: a.order.parse()?,
        repeat: a.repeat,
        limit: a.limit,
        lun_map,
        verify: a.verify,
        power_loss_at: a.power_loss_at.clone(),
        // Fresh data must differ from every earlier run's, whatever --seed.
        seed: if a.fresh_data {
            a.seed
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
        } else {
            a.seed
        },
        fresh_data: a.fresh_data,
        progress: !a.json,
    };
    let mut target = Target::parse(&a.to)?;
    let emulator_only = !a.bugs.is_empty()
        || a.hba.is_some()
        || a.capacity.is_some()
        || a.block_size.is_some()
        || !a.power_loss_at.is_empty()
        || a.latency_add > 0;
    match &mut target {
        Target::Emulator(e) => {
            if a.cold_reset || a.power_cycle_cmd.is_some() {
                anyhow::bail!("--cold-reset and --power-cycle-cmd need --to iscsi://... (the emulator cuts power itself)");
            }
            *e = EmulatorSpec {
                hba: a.hba.clone(),
                bugs: a.bugs.clone(),
                capacity_bytes: a
                    .capacity
                    .as_deref()
                    .map(parse_size)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                block_size: a.block_size,
                seed: a.seed,
                latency_add_ns: a.latency_add,
                host_buffers: parse_host_buffers(&a.host_memory)?,
            };
        }
        Target::Sg { destroy_ok, .. } => {
            if a.cold_reset || a.power_cycle_cmd.is_some() {
                anyhow::bail!("--cold-reset and --power-cycle-cmd need --to iscsi://...");
            }
            if emulator_only {
                anyhow::bail!("--hba, --bug, --capacity, --block-size, --power-loss-at and --latency-add need --to emulator");
            }
            *destroy_ok = a.destroy_ok;
        }
        Target::Iscsi {
            chap, power_cycle, ..
        } => {
            if emulator_only {
                anyhow::bail!("--hba, --bug, --capacity, --block-size, --power-loss-at and --latency-add need --to emulator");
            }
            *power_cycle = match (&a.power_cycle_cmd, a.cold_reset) {
                (Some(cmd), _) => iscsi::initiator::PowerCycle::Command(cmd.clone()),
                (None, true) => iscsi::initiator::PowerCycle::ColdReset,
                (None, false) => iscsi::initiator::PowerCycle::LunReset,
            };
            *chap = match (&a.chap_user, &a.chap_secret) {
                (Some(u), Some(s)) => Some((u.clone(), s.clone())),
                (None, None) => None,
                _ => anyhow::bail!("CHAP needs both --chap-user and --chap-secret"),
            };
        }
    }
    Ok(RunSpec {
        trace,
        target,
        options,
        report: a.report.clone(),
        baseline: a.baseline.clone(),
        limits: a
            .max_regression
            .as_deref()
            .map(parse_limits)
            .transpose()?
            .unwrap_or_default(),
        regression_floor_ns: a.regression_floor,
    })
}

fn suite(dir: &std::path::Path, junit: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let results = run_suite(dir)?;
    let mut failed = 0;
    for r in &results {
        let status = match (&r.error, r.ok) {
            (Some(_), _) => "ERROR",
            (None, true) => "ok",
            (None, false) => "FAIL",
        };
        println!(
            "{status:5} {:40} expected {:12} got {} ({:.2}s)",
            r.name, r.expected, r.actual, r.seconds
        );
        if let Some(e) = &r.error {
            println!("      {e}");
        }
        if !r.ok {
            failed += 1;
        }
    }
    println!(
        "suite: {} of {} cases as expected",
        results.len() - failed,
        results.len()
    );
    if let Some(path) = junit {
        std::fs::write(path, junit_xml(&dir.display().to_string(), &results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
