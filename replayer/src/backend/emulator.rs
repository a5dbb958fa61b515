//! The in-process emulator as a replay destination.
//!
//! Data moves the way it does on a host: the backend writes a WRITE's
//! Data-Out into the emulator's host memory at the addresses of the
//! recorded scatter-gather list, the emulated HBA moves it through that list
//! (honouring or, with a bug switched on, mishandling its constraints), and
//! a READ's Data-In is gathered back from the same addresses. That is how a
//! DMA-address bug such as `dma-truncate-32` becomes visible: the HBA reads
//! another page than the one the backend filled.

use super::{Backend, BackendError, Outcome, Request};
use crate::error::ReplayError;
use emulator::{Bug, BugSet, Emulator, EmulatorConfig, Task};
use std::sync::Mutex;
use std::time::Duration;
use trace::file::TraceHeader;
use trace::{Direction, HbaPreset, Segment};

/// Host addresses for commands whose trace has no SG list (and for the
/// engine's own housekeeping): below 4 GiB, so that 32-bit DMA limits do
/// not touch them, and away from the low memory synthesized page caches use.
pub const SCRATCH_BASE: u64 = 0xe000_0000;

/// Segment size of a generated SG list: within every preset's segment limit.
pub const SCRATCH_SEGMENT: u32 = 64 << 10;

/// Whether the backend keeps the host pages a command used after it
/// completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostBuffers {
    /// `keep` when a bug is switched on (a misdirected DMA must find the
    /// data an earlier command left there), `discard` otherwise.
    #[default]
    Auto,
    /// Keep every page: memory grows with the recording's buffer footprint.
    Keep,
    /// Free each command's pages when it completes: constant memory.
    Discard,
}

impl HostBuffers {
    /// `auto`, `keep` or `discard`.
    pub fn parse(s: &str) -> Option<HostBuffers> {
        match s {
            "auto" => Some(HostBuffers::Auto),
            "keep" => Some(HostBuffers::Keep),
            "discard" => Some(HostBuffers::Discard),
            _ => None,
        }
    }
}

/// The emulator's options as `--to emulator` takes them; unset fields come
/// from the trace's header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmulatorSpec {
    /// `--hba` preset name (default: the trace's, else `generic`).
    pub hba: Option<String>,
    /// `--bug` names.
    pub bugs: Vec<String>,
    /// `--capacity` in bytes (default: the trace's, else 1 GiB).
    pub capacity_bytes: Option<u64>,
    /// `--block-size` (default: the trace's, else 512).
    pub block_size: Option<u32>,
    /// `--seed` for every random choice the emulator makes.
    pub seed: u64,
    /// `--latency-add`: service time added to every command, ns.
    pub latency_add_ns: u64,
    /// `--host-memory`.
    pub host_buffers: HostBuffers,
}

/// The emulator behind the [`Backend`] trait.
pub struct EmulatorBackend {
    emu: Mutex<Emulator>,
    name: String,
    latency_add: Duration,
    discard: bool,
}

fn config_error(message: String) -> ReplayError {
    ReplayError::usage("--to emulator", message)
}

impl EmulatorBackend {
    /// Builds the emulator `spec` describes, defaulting from `header`.
    pub fn new(
        spec: &EmulatorSpec,
        header: Option<&TraceHeader>,
    ) -> Result<EmulatorBackend, ReplayError> {
        let hba = match (&spec.hba, header.and_then(|h| h.hba.clone())) {
            (Some(name), _) => {
                HbaPreset::by_name(name).map_err(|e| ReplayError::usage("--hba", e.to_string()))?
            }
            (None, Some(h)) => h,
            (None, None) => HbaPreset::generic(),
        };
        let mut bugs = BugSet::default();
        for b in &spec.bugs {
            let bug: Bug = b
                .parse()
                .map_err(|e: emulator::UnknownBug| ReplayError::usage("--bug", e.to_string()))?;
            bugs = bugs.with(bug);
        }
        let block_size = spec
            .block_size
            .or(header.map(|h| h.block_size).filter(|b| *b > 0))
            .unwrap_or(512);
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(ReplayError::usage(
                "--block-size",
                format!("{block_size} is not a power of two from 512 to 64 KiB"),
            ));
        }
        let capacity_blocks = match spec.capacity_bytes {
            Some(b) => b / u64::from(block_size),
            None => header
                .map(|h| h.capacity_blocks)
                .filter(|c| *c > 0)
                .unwrap_or((1 << 30) / u64::from(block_size)),
        };
        if capacity_blocks == 0 {
            return Err(ReplayError::usage("--capacity", "smaller than one block"));
        }
        let discard = match spec.host_buffers {
            HostBuffers::Auto => bugs.is_empty(),
            HostBuffers::Keep => false,
            HostBuffers::Discard => true,
        };
        let name = {
            let mut n = format!("emulator({}", hba.name);
            for b in bugs.iter() {
                n.push_str(&format!(", {}", b.name()));
            }
            n.push(')');
            n
        };
        let cfg = EmulatorConfig {
            block_size,
            capacity_blocks,
            hba,
            bugs,
            seed: spec.seed,
            ..EmulatorConfig::default()
        };
        let mut emu = Emulator::new(cfg).map_err(|e| config_error(e.to_string()))?;
        emu.set_staging_window(SCRATCH_BASE);
        Ok(EmulatorBackend {
            emu: Mutex::new(emu),
            name,
            latency_add: Duration::from_nanos(spec.latency_add_ns),
            discard,
        })
    }
}

/// The SG list a command moves its data through: the recorded one if it
/// covers the transfer, otherwise contiguous scratch segments.
fn sg_for(sg: &[Segment], xfer_len: u32) -> std::borrow::Cow<'_, [Segment]> {
    let recorded: u64 = sg.iter().map(|s| u64::from(s.len)).sum();
    if !sg.is_empty() && recorded >= u64::from(xfer_len) {
        return std::borrow::Cow::Borrowed(sg);
    }
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < u64::from(xfer_len) {
        let len = (u64::from(xfer_len) - off).min(u64::from(SCRATCH_SEGMENT)) as u32;
        out.push(Segment::new(SCRATCH_BASE + off, len));
        off += u64::from(len);
    }
    std::borrow::Cow::Owned(out)
}

fn return_outcome(o: emulator::Outcome, data: Vec<u8>) -> Outcome {
    Outcome {
        response: trace::ServiceResponse::TaskComplete,
        status: o.status,
        sense: o.sense,
        bytes_transferred: o.bytes_transferred,
        residual: o.residual,
        data,
    }
}

impl Backend for EmulatorBackend {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn unwritten_reads_zero(&self) -> bool {
        true
    }

    async fn execute(&self, mut req: Request) -> Result<Outcome, BackendError> {
        let outcome = {
            let mut emu = self
                .emu
                .lock()
                .map_err(|_| BackendError::Transport("emulator lock poisoned".into()))?;
            if req.sg.is_empty() {
                // No recorded SG list: the emulator stages the buffer in its
                // own window (moved below 4 GiB at construction) and keeps
                // reusing it, so memory stays flat.
                let data_out = if req.dir == Direction::ToDevice {
                    std::mem::take(&mut req.data)
                } else {
                    Vec::new()
                };
                let mut data_in = if req.dir == Direction::ToDevice {
                    Vec::new()
                } else {
                    std::mem::take(&mut req.data)
                };
                data_in.clear();
                let o = emu.execute(req.lun, &req.cdb, &data_out, &mut data_in, req.xfer_len);
                let data = if req.dir == Direction::ToDevice {
                    data_out
                } else {
                    data_in
                };
                return_outcome(o, data)
            } else {
                let sg = sg_for(&req.sg, req.xfer_len);
                if req.dir == Direction::ToDevice {
                    let mut at = 0usize;
                    for s in sg.iter() {
                        let end = (at + s.len as usize).min(req.data.len());
                        if at >= end {
                            break;
                        }
                        emu.memory().write(s.addr.0, &req.data[at..end]);
                        at = end;
                    }
                }
                let task = Task {
                    initiator: 0,
                    lun: req.lun,
                    cdb: &req.cdb,
                    dir: req.dir,
                    xfer_len: req.xfer_len,
                    sg: &sg,
                    attr: req.attr,
                };
                let o = emu.submit(&task);
                if req.dir == Direction::FromDevice {
                    let want = (o.bytes_transferred.min(req.xfer_len)) as usize;
                    req.data.clear();
                    req.data.resize(want, 0);
                    let mut at = 0usize;
                    for s in sg.iter() {
                        let end = (at + s.len as usize).min(want);
                        if at >= end {
                            break;
                        }
                        emu.memory().read(s.addr.0, &mut req.data[at..end]);
                        at = end;
                    }
                }
                if self.discard {
                    for s in sg.iter() {
                        emu.memory().free(s.addr.0, u64::from(s.len));
                    }
                }
                return_outcome(o, req.data)
            }
        };
        if !self.latency_add.is_zero() {
            tokio::time::sleep(self.latency_add).await;
        }
        Ok(outcome)
    }

    async fn power_loss(&self) -> Result<(), BackendError> {
        let mut emu = self
            .emu
            .lock()
            .map_err(|_| BackendError::Transport("emulator lock poisoned".into()))?;
        emu.power_loss();
        Ok(())
    }

    async fn reset(&self) -> Result<(), BackendError> {
        let mut emu = self
            .emu
            .lock()
            .map_err(|_| BackendError::Transport("emulator lock poisoned".into()))?;
        emu.reset();
        Ok(())
    }
}
