//! `scuzz fuzz`: a LibAFL campaign over programs of SCSI operations against
//! the emulator, or a real target over iSCSI (docs/fuzzing.md).
//!
//! Exit codes: 0 no finding; 1 usage or I/O error; 2 findings written.

use anyhow::{bail, Context};
use emulator::{Bug, BugSet};
use fuzzer::campaign::{launch, run_in_process, CampaignConfig, Layout, Manifest};
use fuzzer::device::{DeviceSpec, IscsiTarget, PowerCycle};
use fuzzer::harness::Target;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trace::HbaPreset;

/// Arguments of `scuzz fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// HBA preset of the emulated controller (`generic`, `lsi3108`,
    /// `lsi3108-unsplit`).
    #[arg(long, default_value = "lsi3108")]
    pub hba: String,
    /// Switch on a catalogued bug (repeatable); none: look for
    /// disagreements with a correct driver.
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
    /// Directory of `.sczt` traces whose commands seed the corpus.
    #[arg(long)]
    pub seeds: Option<PathBuf>,
    /// Campaign directory: queue/, solutions/, findings/, stats.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Cores to fuzz on, one client each (`0`, `0-1`, `0,2`, `all`).
    #[arg(long, default_value = "0")]
    pub cores: String,
    /// How long to fuzz (`90s`, `10m`, `8h`, `1d`).
    #[arg(long, default_value = "10m")]
    pub time: String,
    /// Continue the campaign in --out (after a crash or kill) keeping its
    /// corpus and findings.
    #[arg(long)]
    pub resume: bool,
    /// Seed of the fuzzer's and the emulator's random choices. How long
    /// programs take also steers a campaign, so two campaigns from one seed
    /// can differ; a finding replays from its seed alone.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Longest program, in operations: mutations grow none past it and
    /// longer seeds are cut (libFuzzer's `-max_len`, for programs)
    /// [default: 256; with --resume, the campaign's own].
    #[arg(long = "max-ops", value_name = "N", value_parser = max_ops)]
    pub max_ops: Option<usize>,
    /// Emulated capacity (`64M`, `1G`).
    #[arg(long, default_value = "64M")]
    pub capacity: String,
    /// Logical block size: 512 or 4096.
    #[arg(long = "block-size", default_value_t = 512)]
    pub block_size: u32,
    /// LLMP broker port (default: a free one). A fleet's hub fixes it so
    /// other machines can link to it.
    #[arg(long = "broker-port")]
    pub broker_port: Option<u16>,
    /// Address the broker listens on: 127.0.0.1 (default, this machine
    /// only), or 0.0.0.0 / :: so other machines' brokers can link to it
    /// (`--remote-broker` there). No authentication: firewall the port.
    #[arg(
        long = "broker-listen",
        value_name = "IP",
        conflicts_with = "in_process"
    )]
    pub broker_listen: Option<std::net::IpAddr>,
    /// Link this machine's broker to another machine's (`HOST:PORT`, its
    /// `--broker-port`), so new corpus entries flow between the campaigns.
    #[arg(
        long = "remote-broker",
        value_name = "HOST:PORT",
        conflicts_with = "in_process"
    )]
    pub remote_broker: Option<String>,
    /// Stop as soon as this many findings exist.
    #[arg(long = "until-findings", value_name = "N")]
    pub until_findings: Option<usize>,
    /// Stop as soon as a finding attributed to this bug exists (repeatable:
    /// all of them); `BUG/data` waits for a data-loss or corruption class,
    /// `BUG/CLASS` for that class.
    #[arg(long = "until-found", value_name = "BUG")]
    pub until_found: Vec<String>,
    /// Run one client in this process (no broker): for debugging and
    /// profiling; ignores --cores.
    #[arg(long = "in-process")]
    pub in_process: bool,
    /// No live statistics on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Where programs run: `emulator`, or a real target
    /// `iscsi://[user%secret@]host[:port]/target-iqn/lun` (one client,
    /// stateful and slower; its blocks are overwritten; block size and
    /// capacity come from the target).
    #[arg(long, default_value = "emulator", value_name = "DEVICE")]
    pub to: String,
    /// Real target: what a program's power loss becomes, a shell command
    /// that power-cycles the target (a new login follows). Default: a
    /// LOGICAL UNIT RESET.
    #[arg(
        long = "power-cycle-cmd",
        value_name = "CMD",
        conflicts_with = "cold_reset"
    )]
    pub power_cycle_cmd: Option<String>,
    /// Real target: a power loss is a TARGET COLD RESET (`scuzz serve`
    /// treats it as a power cycle of its emulated disk).
    #[arg(long = "cold-reset")]
    pub cold_reset: bool,
}

/// `--max-ops`: 1 to 4096 (a program is held in memory whole and run once
/// per execution; tens of operations is the useful range).
fn max_ops(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}`: expected a number of operations from 1 to 4096"
        )),
    }
}

/// The bound on program length: `--max-ops`, else a resumed campaign's
/// own (from `campaign.json`), else the default.
fn max_ops_for(args: &Args) -> anyhow::Result<usize> {
    if let Some(n) = args.max_ops {
        return Ok(n);
    }
    let manifest = Layout::new(&args.out).manifest();
    if args.resume && manifest.is_file() {
        return Ok(Manifest::read(&manifest)?.max_ops);
    }
    Ok(fuzzer::program::Limits::MAX_OPS)
}

/// `90s`, `10m`, `8h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86400),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("--time `{t}` is not a duration (90s, 10m, 8h)"))?;
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// `HOST:PORT` of another machine's broker, resolved now so a typo fails
/// before the campaign starts.
fn remote_broker(spec: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    spec.to_socket_addrs()
        .with_context(|| format!("--remote-broker `{spec}`: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("--remote-broker `{spec}`: no address for this host"))
}

fn config(args: &Args) -> anyhow::Result<CampaignConfig> {
    let preset = HbaPreset::by_name(&args.hba)?;
    let bugs: BugSet = args
        .bugs
        .iter()
        .map(|b| b.parse::<Bug>())
        .collect::<Result<_, _>>()?;
    let bytes = replayer::runner::parse_size(&args.capacity).map_err(anyhow::Error::msg)?;
    let mut target = Target {
        preset,
        bugs,
        block_size: args.block_size,
        capacity_blocks: bytes / u64::from(args.block_size.max(1)),
        device_seed: args.seed,
        device: DeviceSpec::Emulator,
        max_ops: max_ops_for(args)?,
    };
    if args.to != "emulator" {
        if !args.to.starts_with("iscsi://") {
            bail!(
                "--to `{}`: expected `emulator` or iscsi://host[:port]/target-iqn/lun",
                args.to
            );
        }
        if !target.bugs.is_empty() {
            bail!(
                "--bug switches on an emulator bug: it means nothing with --to {}",
                args.to
            );
        }
        let power_cycle = match (&args.power_cycle_cmd, args.cold_reset) {
            (Some(cmd), _) => PowerCycle::Command(cmd.clone()),
            (None, true) => PowerCycle::ColdReset,
            (None, false) => PowerCycle::LunReset,
        };
        let spec = IscsiTarget {
            url: args.to.clone(),
            power_cycle,
        };
        let g = fuzzer::device::probe(&spec).context("--to")?;
        target.block_size = g.block_size;
        target.capacity_blocks = g.capacity_blocks;
        target.device = DeviceSpec::Iscsi(spec);
    } else if args.power_cycle_cmd.is_some() || args.cold_reset {
        bail!("--power-cycle-cmd and --cold-reset apply to a real target (--to iscsi://...)");
    }
    if !target.device.is_external() {
        // A real target was reached and measured by the probe above.
        fuzzer::harness::Harness::try_new(target.clone()).context("emulated device")?;
    }
    if let Some(dir) = &args.seeds {
        if !dir.is_dir() {
            bail!("--seeds {}: not a directory", dir.display());
        }
    }
    Ok(CampaignConfig {
        target,
        seeds: args.seeds.clone(),
        out: args.out.clone(),
        cores: args.cores.clone(),
        duration: parse_duration(&args.time)?,
        resume: args.resume,
        seed: args.seed,
        broker_port: args.broker_port,
        broker_listen: args.broker_listen,
        remote_broker: args
            .remote_broker
            .as_deref()
            .map(remote_broker)
            .transpose()?,
        live: !args.quiet,
        stop_after_findings: args.until_findings,
        stop_when_found: args.until_found.clone(),
    })
}

/// Runs `scuzz fuzz`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = config(&args)?;
    if args.in_process {
        run_in_process(&cfg)?;
    } else {
        launch(&cfg)?;
    }
    let layout = Layout::new(&cfg.out);
    let found = fuzzer::findings::records_on_disk(&layout.findings());
    eprintln!(
        "scuzz fuzz: {} finding(s) in {}",
        found.len(),
        layout.findings().display()
    );
    for (dir, rec) in &found {
        let op_s = if rec.ops_after == 1 { "op" } else { "ops" };
        eprintln!(
            "  {}  ({} {op_s})  {}",
            rec.signature,
            rec.ops_after,
            dir.join("report.md").display()
        );
    }
    Ok(ExitCode::from(if found.is_empty() { 0 } else { 2 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(8 * 3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn remote_brokers_resolve_or_name_the_flag() {
        assert_eq!(
            remote_broker("127.0.0.1:1337").unwrap(),
            "127.0.0.1:1337".parse().unwrap()
        );
        let e = remote_broker("nowhere").unwrap_err();
        assert!(
            format!("{e:#}").contains("--remote-broker `nowhere`"),
            "{e:#}"
        );
    }
}
