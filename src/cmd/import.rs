//! `scuzz import dext|ftrace|fio-iolog`: captures from elsewhere into a
//! trace.

use anyhow::Context;
use recorder::import::{ImportError, ImportSummary};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trace::file::{Compression, PayloadMode, TraceHeader, TraceWriter};
use trace::Event;

/// Arguments of `scuzz import`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    source: Source,
}

#[derive(clap::Subcommand)]
enum Source {
    /// A dump of the DEXT capture shim's ring (recorder/dext/scuzz_capture.h).
    Dext {
        /// The ring dump.
        ring: PathBuf,
        /// Output trace.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Linux ftrace text with scsi_dispatch_cmd_{start,done,error,timeout}.
    Ftrace {
        /// The trace text (/sys/kernel/tracing/trace or trace-cmd report).
        file: PathBuf,
        /// Logical block size, to turn transfer lengths into bytes.
        #[arg(long, default_value_t = 512)]
        block_size: u32,
        /// Output trace.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// A fio iolog, version 2 or 3.
    FioIolog {
        /// The iolog.
        file: PathBuf,
        /// Logical block size: offsets and lengths are multiples of it.
        #[arg(long, default_value_t = 512)]
        block_size: u32,
        /// Output trace.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

fn header(producer: &str, block_size: u32, mode: PayloadMode, source: &Path) -> TraceHeader {
    let mut h = TraceHeader::new(format!(
        "scuzz-recorder {} ({producer})",
        env!("CARGO_PKG_VERSION")
    ));
    h.block_size = block_size;
    h.payload_mode = mode;
    h.labels
        .insert("source".into(), source.display().to_string());
    h
}

fn report(input: &Path, out: &Path, s: &ImportSummary) {
    for w in &s.warnings {
        eprintln!("scuzz: {}: {w}", input.display());
    }
    if s.warning_count > s.warnings.len() as u64 {
        eprintln!(
            "scuzz: {}: {} more warnings",
            input.display(),
            s.warning_count - s.warnings.len() as u64
        );
    }
    println!(
        "{}: {} commands ({} events) from {} lines of {}; {} warnings",
        out.display(),
        s.commands,
        s.events,
        s.lines,
        input.display(),
        s.warning_count
    );
}

/// Runs `scuzz import`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.source {
        Source::Dext { ring, output } => {
            let dump =
                std::fs::read(&ring).with_context(|| format!("reading {}", ring.display()))?;
            let imp =
                recorder::dext::import_ring(&dump).with_context(|| ring.display().to_string())?;
            let mut h = header("dext", 0, PayloadMode::None, &ring);
            h.labels.insert(
                "dext-records-lost".into(),
                imp.header.lost_records().to_string(),
            );
            let mut w = TraceWriter::create(&output, &h, Compression::ZSTD_DEFAULT)?;
            for e in &imp.events {
                w.write(e)?;
            }
            w.finish()?;
            for warn in &imp.warnings {
                eprintln!("scuzz: {}: {warn}", ring.display());
            }
            let cmds = imp
                .events
                .iter()
                .filter(|e| matches!(e, Event::Submit(_)))
                .count();
            println!(
                "{}: {cmds} commands ({} events) from {} ring records ({} overwritten); {} records skipped",
                output.display(),
                imp.events.len(),
                imp.header.write_index.min(u64::from(imp.header.slot_count)),
                imp.header.lost_records(),
                imp.warnings.len()
            );
        }
        Source::Ftrace {
            file,
            block_size,
            output,
        } => {
            let input = BufReader::new(
                File::open(&file).with_context(|| format!("opening {}", file.display()))?,
            );
            let h = header("ftrace", block_size, PayloadMode::None, &file);
            let mut w = TraceWriter::create(&output, &h, Compression::ZSTD_DEFAULT)?;
            let s = recorder::ftrace::import_ftrace(input, block_size, &mut |e| {
                w.write(&e).map_err(|e| ImportError::Sink(Box::new(e)))
            })
            .with_context(|| file.display().to_string())?;
            w.finish()?;
            report(&file, &output, &s);
        }
        Source::FioIolog {
            file,
            block_size,
            output,
        } => {
            let input = BufReader::new(
                File::open(&file).with_context(|| format!("opening {}", file.display()))?,
            );
            // Writes carry no data, trims their UNMAP parameter list.
            let h = header("fio-iolog", block_size, PayloadMode::Mixed, &file);
            let mut w = TraceWriter::create(&output, &h, Compression::ZSTD_DEFAULT)?;
            let s = recorder::fio_iolog::import_fio_iolog(input, block_size, &mut |e| {
                w.write(&e).map_err(|e| ImportError::Sink(Box::new(e)))
            })
            .with_context(|| file.display().to_string())?;
            w.finish()?;
            report(&file, &output, &s);
        }
    }
    Ok(ExitCode::SUCCESS)
}
