//! `scuzz serve`: the emulator as an iSCSI target.
//!
//! Any initiator (open-iscsi, QEMU, libiscsi's tools and compliance suite)
//! can then drive the emulated disk, its cache, its HBA model and any bugs
//! switched on, exactly as it would drive a real array.

use anyhow::{bail, Context};
use emulator::{Bug, BugSet, Emulator, EmulatorConfig};
use iscsi::target::emulator::EmulatorDevice;
use iscsi::target::{ChapCredentials, SharedDevice, Target, TargetConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use trace::HbaPreset;

/// Arguments of `scuzz serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on. Binding beyond loopback needs an explicit
    /// address here (e.g. 0.0.0.0:3260).
    #[arg(long, default_value = "127.0.0.1:3260")]
    pub listen: SocketAddr,
    /// The target's iSCSI name.
    #[arg(long, default_value = "iqn.2026-11.dev.scuzz:disk")]
    pub iqn: String,
    /// Number of LUNs (0 .. N-1), each an independent disk.
    #[arg(long, default_value_t = 1)]
    pub luns: u32,
    /// Capacity of each LUN: bytes, or with a K, M, G or T suffix (binary).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub capacity: u64,
    /// Logical block size: 512 or 4096.
    #[arg(long, default_value_t = 512)]
    pub block_size: u32,
    /// HBA model: generic, lsi3108, lsi3108-unsplit.
    #[arg(long, default_value = "generic")]
    pub hba: String,
    /// Switch on a catalogued bug (repeatable); see docs/bug-catalogue.md.
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
    /// Require CHAP: `user:secret`.
    #[arg(long, value_name = "USER:SECRET")]
    pub chap: Option<String>,
    /// Seed for the emulator's random choices (destaging, power loss).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Parses `1G`, `512M`, `4096`, ... into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s}: unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s}: not a size (e.g. 1G, 512M, 1048576)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s}: too large"))
}

/// Runs `scuzz serve` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let hba = HbaPreset::by_name(&args.hba).with_context(|| format!("--hba {}", args.hba))?;
    let mut bugs = BugSet::NONE;
    for name in &args.bugs {
        let bug: Bug = name.parse().with_context(|| format!("--bug {name}"))?;
        bugs = bugs.with(bug);
    }
    let bs = u64::from(args.block_size.max(1));
    if args.capacity / bs * bs != args.capacity {
        bail!(
            "--capacity {} is not a multiple of --block-size {}",
            args.capacity,
            args.block_size
        );
    }
    let cfg = EmulatorConfig {
        block_size: args.block_size,
        capacity_blocks: args.capacity / u64::from(args.block_size.max(1)),
        luns: args.luns,
        hba,
        bugs,
        seed: args.seed,
        ..EmulatorConfig::default()
    };
    let emu = Emulator::new(cfg).context("emulator configuration")?;
    let mut tcfg = TargetConfig::new(args.iqn.clone());
    if let Some(c) = &args.chap {
        let (user, secret) = c.split_once(':').context("--chap wants USER:SECRET")?;
        if user.is_empty() || secret.is_empty() {
            bail!("--chap wants a non-empty USER and SECRET");
        }
        tcfg.chap = Some(ChapCredentials {
            user: user.to_string(),
            secret: secret.as_bytes().to_vec(),
        });
    }
    let device: SharedDevice = Arc::new(Mutex::new(EmulatorDevice::new(emu)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() && args.chap.is_none() {
            eprintln!("scuzz serve: warning: {local} is reachable beyond this host and needs no CHAP");
        }
        eprintln!(
            "scuzz serve: listening on {local}, target {}, {} LUN(s) of {} bytes ({}-byte blocks, hba {}{})",
            args.iqn,
            args.luns,
            args.capacity,
            args.block_size,
            args.hba,
            if args.bugs.is_empty() {
                String::new()
            } else {
                format!(", bugs {}", args.bugs.join(","))
            }
        );
        let target = Target::new(tcfg, device)
            .with_events(Arc::new(|e| eprintln!("scuzz serve: {e}")));
        target.serve(listener, shutdown_signal()).await?;
        eprintln!("scuzz serve: shut down");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
