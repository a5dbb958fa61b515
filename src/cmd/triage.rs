//! `scuzz triage DIR`: what a campaign found, and `DIR/coverage.svg`
//! (coverage and findings over time).

use anyhow::Context;
use fuzzer::campaign::{Layout, Manifest};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `scuzz triage`.
#[derive(clap::Args)]
pub struct Args {
    /// Campaign directory (the --out of `scuzz fuzz`).
    pub dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `scuzz triage`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&args.dir);
    let manifest = Manifest::read(&layout.manifest())
        .with_context(|| format!("{}: not a campaign directory", args.dir.display()))?;
    let series = fuzzer::stats::read_series(&layout.stats());
    let found = fuzzer::findings::records_on_disk(&layout.findings());
    let svg = args.dir.join("coverage.svg");
    let title = format!(
        "scuzz fuzz --hba {} --bug {}",
        manifest.hba,
        if manifest.bugs.is_empty() {
            "none".into()
        } else {
            manifest.bugs.join(",")
        }
    );
    fuzzer::stats::render_svg(&series, &svg, &title)
        .map_err(anyhow::Error::msg)
        .with_context(|| svg.display().to_string())?;
    let last = series.last();
    if args.json {
        let j = serde_json::json!({
            "campaign": manifest,
            "elapsed_s": last.map_or(0.0, |l| l.elapsed_s),
            "execs": last.map_or(0, |l| l.execs),
            "coverage": last.map_or(0, |l| l.coverage),
            "corpus": last.map_or(0, |l| l.corpus),
            "findings": found.iter().map(|(d, r)| serde_json::json!({
                "signature": r.signature.to_string(),
                "class": r.signature.class,
                "bug": r.signature.bug,
                "shape": r.signature.shape,
                "ops": r.ops_after,
                "found_unix_ms": r.unix_ms,
                "dir": d,
            })).collect::<Vec<_>>(),
            "coverage_svg": svg,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "campaign {}: --hba {} --bug {} ({} blocks of {} bytes, seed {}, resumed {} times)",
            args.dir.display(),
            manifest.hba,
            if manifest.bugs.is_empty() {
                "none".to_string()
            } else {
                manifest.bugs.join(",")
            },
            manifest.capacity_blocks,
            manifest.block_size,
            manifest.device_seed,
            manifest.resumed
        );
        if let Some(l) = last {
            println!("{l}");
        }
        println!("{} finding(s):", found.len());
        // Columns as wide as their longest entry: protocol classes
        // ("protocol-missing-lba-out-of-range") run past any fixed width.
        let class_w = found
            .iter()
            .map(|(_, r)| r.signature.class.len())
            .max()
            .unwrap_or(0);
        let bug_w = found
            .iter()
            .map(|(_, r)| r.signature.bug.len())
            .max()
            .unwrap_or(0);
        for (dir, r) in &found {
            let after_s = r.unix_ms.saturating_sub(manifest.started_unix_ms) as f64 / 1000.0;
            println!(
                "  {:<class_w$}  {:<bug_w$}  {:>3} ops  +{:>7.1}s  {}",
                r.signature.class,
                r.signature.bug,
                r.ops_after,
                after_s,
                dir.join("report.md").display()
            );
        }
        println!("coverage and findings over time: {}", svg.display());
    }
    Ok(ExitCode::SUCCESS)
}
