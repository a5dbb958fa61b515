//! `scuzz export fio-iolog`: a trace as a fio v3 iolog that
//! `fio --read_iolog` replays.

use anyhow::Context;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use trace::file::TraceReader;

/// Arguments of `scuzz export`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    format: Format,
}

#[derive(clap::Subcommand)]
enum Format {
    /// fio iolog version 3.
    FioIolog {
        /// Trace file (.sczt).
        trace: PathBuf,
        /// Output iolog.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// File the iolog's I/O goes to (LUN n > 0 becomes FILE.lunN); fio's
        /// --replay_redirect can change it at replay time.
        #[arg(long, default_value = "/dev/sdX")]
        file: String,
        /// Block size, when the trace header does not give one.
        #[arg(long)]
        block_size: Option<u32>,
    },
}

/// Runs `scuzz export`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Format::FioIolog {
        trace,
        output,
        file,
        block_size,
    } = args.format;
    let reader = TraceReader::open(&trace)?;
    let bs = match (reader.header().block_size, block_size) {
        (_, Some(b)) => b,
        (b, None) => b,
    };
    let mut out = BufWriter::new(
        File::create(&output).with_context(|| format!("creating {}", output.display()))?,
    );
    let s = recorder::fio_iolog::export_fio_iolog(reader, bs, &file, &mut out)
        .with_context(|| format!("exporting {} to {}", trace.display(), output.display()))?;
    for (what, n) in &s.skipped {
        eprintln!(
            "scuzz: {}: {n} {what} commands have no fio iolog action; skipped",
            trace.display()
        );
    }
    println!("{}: {} actions", output.display(), s.actions);
    Ok(ExitCode::SUCCESS)
}
