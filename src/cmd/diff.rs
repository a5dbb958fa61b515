//! `scuzz diff A.sczt B.sczt`: two captures of the same workload side by
//! side (the KEXT-era trace against the DEXT one, a passing run against a
//! failing one), then the first point where their streams diverge, aligned
//! by LBA range and flush order rather than by sequence number.

use anyhow::Context;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trace::diff::{diff, Profile, Profiler, TraceDiff};
use trace::TraceReader;

/// Arguments of `scuzz diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The reference trace (e.g. the KEXT capture, or a passing run).
    pub a: PathBuf,
    /// The trace compared against it.
    pub b: PathBuf,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show every compared figure, not only those that differ.
    #[arg(long)]
    pub all: bool,
}

fn profile(path: &Path) -> anyhow::Result<Profile> {
    let mut reader = TraceReader::open(path)?;
    let mut p = Profiler::new(reader.header());
    for ev in &mut reader {
        let ev = ev.map_err(|e| e.in_file(path))?;
        p.add(&ev);
    }
    Ok(p.finish())
}

/// Runs `scuzz diff`. Exits 0 when the traces agree, 1 when they differ
/// (like diff(1)), and reports unreadable traces as errors naming the file.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let a = profile(&args.a).with_context(|| format!("reading {}", args.a.display()))?;
    let b = profile(&args.b).with_context(|| format!("reading {}", args.b.display()))?;
    let d = diff(&a, &b);
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &args, &d)?;
    }
    Ok(if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(out: &mut impl Write, args: &Args, d: &TraceDiff) -> io::Result<()> {
    let name = |p: &Path| {
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
    };
    let (na, nb) = (name(&args.a), name(&args.b));
    let rows: Vec<_> = d.rows.iter().filter(|r| args.all || r.differs).collect();
    let w0 = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6);
    let w1 = rows
        .iter()
        .map(|r| r.a.len())
        .max()
        .unwrap_or(0)
        .max(na.len());
    writeln!(out, "{:w0$}  {:>w1$}  {}", "", na, nb)?;
    if rows.is_empty() {
        writeln!(out, "(every compared figure is the same)")?;
    }
    for r in rows {
        let mark = if r.differs { "  *" } else { "" };
        writeln!(out, "{:w0$}  {:>w1$}  {}{mark}", r.name, r.a, r.b)?;
    }
    writeln!(out)?;
    match &d.divergence {
        None => writeln!(
            out,
            "streams agree: the same blocks are written and read between the same flushes"
        )?,
        Some(div) => {
            let seqs = |s: Option<(u64, u64)>| {
                s.map_or("-".to_string(), |(a, b)| format!("seq {a}..={b}"))
            };
            writeln!(
                out,
                "first divergence: flush epoch {}: {}",
                div.epoch, div.what
            )?;
            writeln!(out, "  in {na}: {}", seqs(div.a_seqs))?;
            writeln!(out, "  in {nb}: {}", seqs(div.b_seqs))?;
        }
    }
    if d.alignment_truncated {
        writeln!(
            out,
            "note: alignment stopped early (more than 1M extents in a trace)"
        )?;
    }
    Ok(())
}
