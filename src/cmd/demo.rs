//! `scuzz demo`: the LSI 3108 DEXT report, end to end, on the embedded
//! emulator. Every candidate cause in the bug catalogue is replayed against
//! the report's workloads; the table of which ones reproduce every symptom
//! comes from those runs (`crate::demo`). Then a short fuzz campaign
//! against the leading cause prints a minimised reproducer.
//!
//! Exit codes: 0 the demo ran (whatever the table says); 1 usage or I/O
//! error.

use crate::demo::{self, fuzz, DemoConfig};
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trace::HbaPreset;

/// Arguments of `scuzz demo`.
#[derive(clap::Args)]
pub struct Args {
    /// HBA preset under test (generic, lsi3108, lsi3108-unsplit).
    #[arg(long, default_value = "lsi3108")]
    pub hba: String,
    /// Override the addressable bits of the preset's controller and
    /// splitter (64: a controller that reaches all memory).
    #[arg(long = "address-bits", value_name = "N", value_parser = clap::value_parser!(u8).range(20..=64))]
    pub address_bits: Option<u8>,
    /// Replace the OS splitter's byte limit of the preset (e.g. 1M: the
    /// driver's limit never reached the splitter).
    #[arg(long = "os-max-transfer", value_name = "SIZE")]
    pub os_max_transfer: Option<String>,
    /// Seed of the synthesizers, the emulator and the fuzzer.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Skip the fuzz campaign.
    #[arg(long = "no-fuzz")]
    pub no_fuzz: bool,
    /// Seconds the fuzz campaign may run (it stops at its first finding).
    #[arg(long = "fuzz-time", value_name = "SECS", default_value_t = 15)]
    pub fuzz_time: u64,
    /// Where the campaign and its reproducer go.
    #[arg(long, default_value = "scuzz-demo")]
    pub out: PathBuf,
    /// Replays run at once (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Divide every size (free low memory, the file sizes) by N; fio's
    /// block size stays. For tests: the real demo is scale 1.
    #[arg(long, default_value_t = 1, hide = true)]
    pub scale: u64,
}

/// A progress bar on stderr when it is a terminal.
struct Bar(Option<ProgressBar>);

impl demo::Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }

    fn done(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_string());
            b.inc(1);
        }
    }
}

fn bar(json: bool) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar(None);
    }
    let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30} {pos}/{len} replays  {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    if json {
        b.set_message("replaying");
    }
    Bar(Some(b))
}

fn config(args: &Args) -> anyhow::Result<DemoConfig> {
    let mut preset = HbaPreset::by_name(&args.hba).context("--hba")?;
    if let Some(s) = &args.os_max_transfer {
        let bytes = recorder::synth::parse_size(s)
            .map_err(anyhow::Error::msg)
            .context("--os-max-transfer")?;
        let bytes = u32::try_from(bytes)
            .ok()
            .filter(|b| *b >= 4096)
            .with_context(|| format!("--os-max-transfer {s}: must be from 4K to 4G - 1"))?;
        preset = preset.with_os_max_transfer(bytes);
    }
    if let Some(bits) = args.address_bits {
        preset = demo::with_address_bits(preset, bits);
    }
    if (128u64 << 20).checked_rem(args.scale) != Some(0) {
        bail!("--scale {}: must divide 128M", args.scale);
    }
    let mut cfg = DemoConfig::report(preset, args.scale, args.seed);
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads: must be at least 1");
        }
        cfg.threads = t;
    }
    Ok(cfg)
}

/// Runs `scuzz demo`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = config(&args)?;
    let progress = bar(args.json);
    if !args.json {
        eprintln!(
            "scuzz demo: {} candidate causes x {} workloads x (without, with a power cut) on the emulator...",
            demo::candidates().len(),
            demo::Workload::ALL.len()
        );
    }
    let report = demo::run(&cfg, &progress)?;
    if let Some(b) = &progress.0 {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if !args.json {
        write!(out, "{}", demo::table::render(&report))?;
        out.flush()?;
    }

    let fuzzed = match (args.no_fuzz, report.leading_row()) {
        (true, _) => None,
        (false, None) => {
            if !args.json {
                writeln!(out, "\nno cause leads: nothing to fuzz")?;
            }
            None
        }
        (false, Some(row)) => {
            let bug = row
                .candidate
                .bug
                .context("the leading row has no bug (never the control)")?;
            let preset = match row.candidate.splitter {
                demo::Splitter::ByteLimitApplied => &cfg.preset,
                demo::Splitter::ByteLimitNotApplied => &cfg.unsplit,
            };
            if !args.json {
                writeln!(
                    out,
                    "\nfuzzing {} on {} for up to {} s (LibAFL, 1 core, seeded with a synthesized cp {})...",
                    bug,
                    preset.name,
                    args.fuzz_time,
                    demo::size(fuzz::SEED_COPY)
                )?;
                out.flush()?;
            }
            let f = fuzz::campaign(
                &cfg,
                preset,
                bug,
                &args.out,
                Duration::from_secs(args.fuzz_time),
            )?;
            if !args.json {
                print_fuzz(&mut out, &f)?;
            }
            Some(f)
        }
    };
    if args.json {
        let doc = serde_json::json!({ "demo": report, "fuzz": fuzzed });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_fuzz(out: &mut impl Write, f: &fuzz::FuzzOutcome) -> std::io::Result<()> {
    match &f.finding {
        None => writeln!(
            out,
            "no finding in {:.0} s (campaign in {}); try a longer --fuzz-time",
            f.seconds,
            f.campaign.display()
        ),
        Some(r) => {
            writeln!(
                out,
                "finding {} after {:.1} s, minimised from {} to {} operations:",
                r.signature, f.seconds, r.ops_before, r.ops_after
            )?;
            for l in r.program.lines() {
                writeln!(out, "  {l}")?;
            }
            writeln!(out, "violation: {}", r.violation)?;
            writeln!(out, "reproducer: {}", r.trace.display())?;
            writeln!(out, "replay it:  {}", r.replay)?;
            writeln!(
                out,
                "on hardware: scuzz replay --to iscsi://HOST:3260/IQN/0 --verify {}  (or --to sg:/dev/sgN)",
                r.trace.display()
            )
        }
    }
}
