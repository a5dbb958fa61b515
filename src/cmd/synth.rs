//! `scuzz synth cp|fio`: synthesized workloads (recorder::synth), written
//! to a trace as they are generated.

use anyhow::Context;
use recorder::synth::cp::{synth_cp, CpParams};
use recorder::synth::fio::{synth_fio, FioParams, FioRw};
use recorder::synth::payload::PayloadKind;
use recorder::synth::{parse_size, Machine, SynthError, SynthSummary};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trace::file::{Compression, TraceHeader, TraceWriter};
use trace::{Event, HbaPreset};

/// Arguments of `scuzz synth`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(clap::Subcommand)]
enum Workload {
    /// A buffered `cp` of one file, its fsync and a verifying read.
    Cp(CpArgs),
    /// fio's write, randwrite or rw pattern, buffered or direct.
    Fio(FioArgs),
}

/// The host and HBA path, shared by every workload.
#[derive(clap::Args)]
struct MachineArgs {
    /// HBA preset: generic, lsi3108, lsi3108-unsplit. Its splitter limits
    /// shape every command.
    #[arg(long, default_value = "generic")]
    hba: String,
    /// Replace the OS splitter's byte limit (models a byte limit that never
    /// reached the splitter, e.g. `--hba lsi3108 --os-max-transfer 1M`).
    #[arg(long, value_parser = size)]
    os_max_transfer: Option<u64>,
    /// Page-cache page size (16K on Apple silicon, 4K on x86).
    #[arg(long, default_value = "16K", value_parser = size)]
    page_size: u64,
    /// Physical memory.
    #[arg(long, default_value = "16G", value_parser = size)]
    mem: u64,
    /// Free memory below 4 GiB when the workload starts.
    #[arg(long, default_value = "128M", value_parser = size)]
    low_free: u64,
    /// Logical block size of the device.
    #[arg(long, default_value = "512", value_parser = size)]
    block_size: u64,
    /// Seed of every random choice and of the block data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Payload of data commands: pattern (recipe), digest (CRC32C per 4 KiB),
    /// full (bytes).
    #[arg(long, default_value = "pattern")]
    payload: String,
    /// Dirty bytes that start a writeback pass.
    #[arg(long, default_value = "8M", value_parser = size)]
    dirty_window: u64,
    /// Longest run of physically contiguous free pages (1: every page its
    /// own segment).
    #[arg(long, default_value_t = recorder::synth::memory::MAX_RUN_PAGES)]
    max_run_pages: u64,
    /// Commands writeback keeps outstanding.
    #[arg(long, default_value_t = 32)]
    queue_depth: usize,
    /// Largest read a page-cache miss issues (read-ahead cluster); the
    /// splitter's read limit still applies.
    #[arg(long, default_value = "1M", value_parser = size)]
    read_cluster: u64,
    /// Output trace.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Store events uncompressed (one frame each) instead of zstd chunks.
    #[arg(long)]
    no_compress: bool,
}

#[derive(clap::Args)]
struct CpArgs {
    /// File size.
    #[arg(long, value_parser = size)]
    size: u64,
    /// Skip the verifying read pass after the fsync.
    #[arg(long)]
    no_read_back: bool,
    #[command(flatten)]
    machine: MachineArgs,
}

#[derive(clap::Args)]
struct FioArgs {
    /// fio's rw=: write, randwrite or rw.
    #[arg(long)]
    rw: String,
    /// fio's bs=.
    #[arg(long, value_parser = size)]
    bs: u64,
    /// fio's size=.
    #[arg(long, value_parser = size)]
    size: u64,
    /// fio's direct= (0 buffered, 1 direct).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    direct: u8,
    /// Read everything written back (fio's verify=).
    #[arg(long)]
    verify: bool,
    /// fio's iodepth= (direct I/O).
    #[arg(long, default_value_t = 1)]
    iodepth: usize,
    /// fio's rwmixread= for --rw rw.
    #[arg(long, default_value_t = 50)]
    rwmixread: u32,
    /// No fsync after the write phase (fio's end_fsync=0).
    #[arg(long)]
    no_end_fsync: bool,
    #[command(flatten)]
    machine: MachineArgs,
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s)
}

impl MachineArgs {
    fn machine(&self) -> anyhow::Result<Machine> {
        let mut hba = HbaPreset::by_name(&self.hba)?;
        if let Some(b) = self.os_max_transfer {
            let b = u32::try_from(b).context("--os-max-transfer exceeds 4 GiB")?;
            hba = hba.with_os_max_transfer(b);
        }
        let payload: PayloadKind = self.payload.parse()?;
        Ok(Machine {
            hba,
            block_size: u32::try_from(self.block_size).context("--block-size exceeds 4 GiB")?,
            page_size: self.page_size,
            mem: self.mem,
            low_free: self.low_free,
            seed: self.seed,
            payload,
            max_run_pages: self.max_run_pages,
            dirty_window: self.dirty_window,
            writeback_depth: self.queue_depth,
            read_cluster: self.read_cluster,
            ..Machine::default()
        })
    }

    fn compression(&self) -> Compression {
        if self.no_compress {
            Compression::None
        } else {
            Compression::ZSTD_DEFAULT
        }
    }
}

/// Streams a generator into a trace file.
fn write_trace(
    path: &Path,
    header: &TraceHeader,
    compression: Compression,
    generate: impl FnOnce(
        &mut dyn FnMut(Event) -> Result<(), SynthError>,
    ) -> Result<SynthSummary, SynthError>,
) -> anyhow::Result<SynthSummary> {
    let mut w = TraceWriter::create(path, header, compression)?;
    match generate(&mut |e| w.write(&e).map_err(|e| SynthError::Sink(Box::new(e)))) {
        Ok(summary) => {
            w.finish()?;
            Ok(summary)
        }
        Err(e) => {
            // Parameters are checked before the first event: a half-written
            // trace would only mislead.
            drop(w);
            let _ = std::fs::remove_file(path);
            Err(e).with_context(|| format!("synthesizing {}", path.display()))
        }
    }
}

/// Runs `scuzz synth`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (summary, out) = match args.workload {
        Workload::Cp(a) => {
            let m = a.machine.machine()?;
            let mut p = CpParams::new(m, a.size);
            p.read_back = !a.no_read_back;
            let mut h = p.machine.header("cp", p.capacity_blocks());
            h.labels.insert("size".into(), a.size.to_string());
            let s = write_trace(&a.machine.output, &h, a.machine.compression(), |sink| {
                synth_cp(&p, &mut |e| sink(e))
            })?;
            (s, a.machine.output)
        }
        Workload::Fio(a) => {
            let m = a.machine.machine()?;
            let rw: FioRw = a.rw.parse()?;
            let mut p = FioParams::new(m, rw, a.bs, a.size, a.direct == 1);
            p.verify = a.verify;
            p.iodepth = a.iodepth;
            p.rwmixread = a.rwmixread;
            p.end_fsync = !a.no_end_fsync;
            let mut h = p.machine.header("fio", p.capacity_blocks());
            for (k, v) in [
                ("rw", a.rw.clone()),
                ("bs", a.bs.to_string()),
                ("size", a.size.to_string()),
                ("direct", a.direct.to_string()),
                ("iodepth", a.iodepth.to_string()),
                ("verify", u8::from(a.verify).to_string()),
            ] {
                h.labels.insert(k.into(), v);
            }
            let s = write_trace(&a.machine.output, &h, a.machine.compression(), |sink| {
                synth_fio(&p, &mut |e| sink(e))
            })?;
            (s, a.machine.output)
        }
    };
    println!("{}: {summary}", out.display());
    Ok(ExitCode::SUCCESS)
}
