//! `scuzz stats`: a trace's summary, from [`trace::stats::TraceStats`].
//!
//! On a torn or corrupt trace the summary of everything readable is printed,
//! then the error, and the exit status is 1.

use crate::cmd::show::duration;
use serde_json::json;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use trace::stats::{LatencySummary, StatsReport, TraceStats};
use trace::{Compression, TraceReader};

/// Arguments of `scuzz stats`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace file (.sczt).
    pub trace: PathBuf,
    /// Print one JSON object (header, format and statistics) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `scuzz stats`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut reader = TraceReader::open(&args.trace)?;
    let mut stats = TraceStats::new(reader.header());
    let mut failure = None;
    for item in &mut reader {
        match item {
            Ok(ev) => stats.add(&ev),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let report = stats.report();
    let compression = match reader.compression() {
        Compression::None => "none",
        _ => "zstd",
    };
    let (major, minor) = reader.version();
    let mut out = io::stdout().lock();
    let written = if args.json {
        let v = json!({
            "file": args.trace.display().to_string(),
            "format_version": format!("{major}.{minor}"),
            "compression": compression,
            "complete": reader.is_complete(),
            "error": failure.as_ref().map(|e| e.to_string()),
            "header": reader.header(),
            "stats": report,
        });
        writeln!(out, "{v}")
    } else {
        let mut text = String::new();
        let h = reader.header();
        text.push_str(&format!("trace: {}\n", args.trace.display()));
        text.push_str(&format!(
            "  format {major}.{minor}, compression {compression}, {}\n",
            if reader.is_complete() {
                "complete"
            } else {
                "no end frame (unfinished)"
            }
        ));
        text.push_str(&format!("  producer: {}\n", h.producer));
        text.push_str(&format!(
            "  device: block size {}, capacity {} blocks ({}), payloads: {}\n",
            h.block_size,
            h.capacity_blocks,
            bytes(h.capacity_blocks.saturating_mul(u64::from(h.block_size))),
            h.payload_mode.name()
        ));
        if let Some(hba) = &h.hba {
            text.push_str(&format!(
                "  hba: {} (controller: {})\n",
                hba.name, hba.controller
            ));
        }
        for (k, v) in &h.labels {
            text.push_str(&format!("  label {k}={v}\n"));
        }
        text.push('\n');
        render(&report, &mut text);
        out.write_all(text.as_bytes())
    };
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other?,
    }
    if let Some(e) = failure {
        return Err(
            anyhow::Error::new(e).context("the statistics above cover only the readable part")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `4.0 KiB`, `1.2 GiB`: binary units, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn latency_line(l: &LatencySummary) -> String {
    if l.count == 0 {
        return "no completed commands".into();
    }
    format!(
        "min {}  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        duration(l.min_ns),
        duration(l.mean_ns as u64),
        duration(l.p50_ns),
        duration(l.p90_ns),
        duration(l.p99_ns),
        duration(l.p999_ns),
        duration(l.max_ns)
    )
}

fn render(r: &StatsReport, t: &mut String) {
    let e = &r.events;
    t.push_str(&format!(
        "events: {} ({} submits, {} completes, {} power losses, {} resets, {} notes) over {}\n",
        e.total,
        e.submits,
        e.completes,
        e.power_losses,
        e.resets,
        e.notes,
        duration(r.duration_ns)
    ));
    t.push_str(&format!(
        "incomplete commands: {}, completions without submission: {}\n\n",
        r.incomplete, r.unpaired_completions
    ));

    t.push_str(&format!(
        "{:<26} {:>6} {:>8} {:>12} {:>8} {:>10} {:>10}\n",
        "command", "opcode", "count", "bytes", "not good", "p50", "p99"
    ));
    for o in &r.opcodes {
        let (p50, p99) = if o.latency.count == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (duration(o.latency.p50_ns), duration(o.latency.p99_ns))
        };
        t.push_str(&format!(
            "{:<26} {:>6} {:>8} {:>12} {:>8} {:>10} {:>10}\n",
            o.name,
            format!("0x{:02x}", o.opcode),
            o.count,
            bytes(o.bytes),
            o.not_good,
            p50,
            p99
        ));
    }
    let statuses: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
    t.push_str(&format!(
        "\nstatus: {}\n",
        if statuses.is_empty() {
            "-".into()
        } else {
            statuses.join(", ")
        }
    ));
    t.push_str(&format!(
        "latency ({} commands): {}\n",
        r.latency.count,
        latency_line(&r.latency)
    ));

    let f = &r.flushes;
    t.push_str(&format!("\nflushes: {} SYNCHRONIZE CACHE\n", f.count));
    if f.count > 0 {
        t.push_str(&format!(
            "  bytes written between flushes: min {}  median {}  max {}\n",
            bytes(f.bytes_between_min),
            bytes(f.bytes_between_median),
            bytes(f.bytes_between_max)
        ));
    }
    t.push_str(&format!(
        "  written after the last flush: {}\n",
        bytes(f.bytes_after_last_flush)
    ));

    let q = &r.queue_depth;
    t.push_str(&format!(
        "\nqueue depth: max {}  mean {:.2}\n",
        q.max, q.mean
    ));
    let total: u64 = q.time_at_depth_ns.values().sum();
    if total > 0 {
        t.push_str(&format!("  {:>6} {:>12} {:>7}\n", "depth", "time", "share"));
        for (d, ns) in &q.time_at_depth_ns {
            let share = *ns as f64 / total as f64;
            let label = if *d >= 1024 {
                format!("{d}+")
            } else {
                d.to_string()
            };
            t.push_str(&format!(
                "  {:>6} {:>12} {:>6.1}% {}\n",
                label,
                duration(*ns),
                share * 100.0,
                "#".repeat((share * 40.0).round() as usize)
            ));
        }
    }

    let sg = &r.sg;
    t.push_str(&format!("\nscatter-gather: {} segments\n", sg.segments));
    t.push_str(&format!("  {:>8} {:>8}\n", "segments", "commands"));
    for (n, c) in &sg.segment_count_histogram {
        t.push_str(&format!("  {n:>8} {c:>8}\n"));
    }
    match sg.max_dma_addr {
        Some(a) => t.push_str(&format!("  highest DMA address: {}\n", trace::PhysAddr(a))),
        None => t.push_str("  highest DMA address: - (no SG lists recorded)\n"),
    }
    t.push_str(&format!(
        "  segments above 4 GiB: {} (in {} commands)\n",
        sg.segments_above_4g, sg.commands_above_4g
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
