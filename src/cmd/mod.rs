//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod diff;
pub mod show;
pub mod stats;
pub mod synth;
pub mod import;
pub mod export;
pub mod record;
pub mod replay;
pub mod serve;
pub mod fuzz;
pub mod triage;
pub mod demo;
