//! One module per subcommand: `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod demo;
pub mod diff;
pub mod export;
pub mod fuzz;
pub mod import;
pub mod record;
pub mod replay;
pub mod serve;
pub mod show;
pub mod stats;
pub mod synth;
pub mod triage;
