//! `scuzz stats`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `scuzz stats`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace file (.sczt).
    pub trace: PathBuf,
}

/// Runs `scuzz stats`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{}: reading traces is not wired yet", args.trace.display())
}
