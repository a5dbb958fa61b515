//! `scuzz`: the command-line front of the workspace.
//!
//! clap parses here; each subcommand lives in `cmd/` as an `Args` struct and a
//! `run` function; the work itself lives in the crates. `main` maps errors to
//! the documented exit codes and prints the error chain once.
//!
//! Exit codes: 0 pass; 1 usage or I/O error; 2 data violation found;
//! 3 latency regression.

mod cmd;
mod demo;

/// mimalloc instead of the system allocator: a fuzzing campaign allocates
/// hundreds of small B-tree nodes and vectors per program it runs, and
/// glibc's malloc and free were a sixth of the harness's instructions.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Record, replay and fuzz SCSI workloads.
#[derive(Parser)]
#[command(name = "scuzz", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: boxing the larger argument structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// One line per command of a trace.
    Show(cmd::show::Args),
    /// Summary statistics of a trace.
    Stats(cmd::stats::Args),
    /// Synthesize the CDB stream of cp or fio through a modelled host and HBA.
    Synth(cmd::synth::Args),
    /// Convert a DEXT capture ring, ftrace text or a fio iolog into a trace.
    Import(cmd::import::Args),
    /// Convert a trace into another tool's format (fio iolog).
    Export(cmd::export::Args),
    /// Record every command between an iSCSI initiator and target (proxy).
    Record(cmd::record::Args),
    /// Serve the emulator as an iSCSI target.
    Serve(cmd::serve::Args),
    /// Compare two captures of the same workload.
    Diff(cmd::diff::Args),
    /// Replay a trace against the emulator, an iSCSI target or a SG_IO device.
    Replay(cmd::replay::Args),
    /// Fuzz SCSI programs against the emulator (LibAFL campaign).
    Fuzz(cmd::fuzz::Args),
    /// Summarise a fuzz campaign's findings and plot its coverage.
    Triage(cmd::triage::Args),
    /// The LSI 3108 DEXT report end to end: every candidate cause replayed on the emulator, then fuzzed.
    Demo(cmd::demo::Args),
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error, which here means "violation
    // found": a typo in a script's flags must not read as a finding.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Show(a) => cmd::show::run(a),
        Command::Stats(a) => cmd::stats::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Record(a) => cmd::record::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Fuzz(a) => cmd::fuzz::run(a),
        Command::Triage(a) => cmd::triage::run(a),
        Command::Demo(a) => cmd::demo::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scuzz: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, joined by ": " as `{:#}` does, but without a
/// cause whose text is already in the message: several crates' errors quote
/// their source in their own text and also expose it as `source()`, and
/// `{:#}` then printed the same sentence two or three times.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    /// An error that quotes its source and exposes it, as the crates'
    /// `thiserror` errors with `{source}` in their message do.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "backend sg:/dev/sg0: {}", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_quoted_is_printed_once() {
        let io = std::io::Error::other("open: permission denied");
        let e = anyhow::Error::new(Quoting(io)).context("replay cp.sczt");
        assert_eq!(
            error_chain(&e),
            "replay cp.sczt: backend sg:/dev/sg0: open: permission denied"
        );
        let plain = anyhow::anyhow!("bad header").context("cp.sczt at offset 0");
        assert_eq!(error_chain(&plain), "cp.sczt at offset 0: bad header");
    }
}
