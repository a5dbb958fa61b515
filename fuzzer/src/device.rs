//! Where a program's commands go: the embedded emulator, or a real target
//! reached over iSCSI.
//!
//! The harness plays the host the same way for both: it places each
//! write's data in host memory at its SG entries, submits the task, and
//! reads a read's data back from its SG entries. What differs is what sits
//! below the driver:
//!
//! - the **emulator** is built fresh for every run, so a run is a pure
//!   function of the program (a finding replays exactly), it models the
//!   HBA's DMA constraints and the catalogued bugs, and it reports
//!   state-transition coverage;
//! - a **real target** keeps its medium between runs and its internals are
//!   hidden. Its data path starts at the wire: the host-memory buffer is
//!   gathered in SG order into the Data-Out the initiator sends, as any
//!   driver's DMA would before the bytes leave the host. Coverage is what
//!   the target lets an initiator observe: the (command, status, sense,
//!   residual) responses and the transitions between them. Every run uses
//!   a fresh pattern seed, so a block left by an earlier run can never pass
//!   for one this run wrote, and blocks this run did not write may hold
//!   anything ([`InitialContent::Unknown`]).
//!
//! A real target has no power switch the fuzzer can reach, so a program's
//! power loss becomes what the user can offer: a LOGICAL UNIT RESET (the
//! default: the unit must raise a unit attention, nothing need be lost), a
//! TARGET COLD RESET (`scuzz serve` treats it as a power cycle), or a
//! command of the user's (`--power-cycle-cmd`, e.g. a switched PDU or a
//! hypervisor's reset) followed by a new login.

use emulator::memory::HostMemory;
use emulator::runs::DataRuns;
use emulator::{BugSet, Emulator, EmulatorConfig, Outcome, Task};
use iscsi::initiator::{redact_url, CommandRequest, IscsiUrl, LoginOptions, Session};
use iscsi::pdu::TaskAttribute;
use std::time::Duration;
use trace::oracle::InitialContent;
use trace::{Direction, ScsiStatus};

pub use iscsi::initiator::PowerCycle;

/// A real target behind the workspace's iSCSI initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiTarget {
    /// `iscsi://[user%secret@]host[:port]/target-iqn/lun`.
    pub url: String,
    /// What a program's power loss becomes.
    pub power_cycle: PowerCycle,
}

/// Which device a campaign fuzzes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The embedded emulator, fresh for every run.
    #[default]
    Emulator,
    /// A real target over iSCSI (stateful, slower).
    Iscsi(IscsiTarget),
}

impl DeviceSpec {
    /// Whether runs reach a real, stateful target.
    pub fn is_external(&self) -> bool {
        !matches!(self, DeviceSpec::Emulator)
    }

    /// A short name for reports (`emulator` or the target's URL without
    /// credentials).
    pub fn describe(&self) -> String {
        match self {
            DeviceSpec::Emulator => "emulator".into(),
            DeviceSpec::Iscsi(t) => redact_url(&t.url),
        }
    }
}

/// Why a device could not carry a run (not a finding: the campaign stops).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device}: {reason}")]
pub struct DeviceError {
    /// The device (URL without credentials).
    pub device: String,
    /// What failed.
    pub reason: String,
}

/// Logs in to a real target and asks its geometry: a campaign's programs
/// are fitted to what the target reports, so range checks judge against
/// the real last LBA.
pub fn probe(spec: &IscsiTarget) -> Result<Geometry, DeviceError> {
    let mut d = IscsiDevice::connect(spec)?;
    let g = d.geometry()?;
    let _ = d.rt.block_on(d.session.logout());
    Ok(g)
}

/// A device runs see: fresh per run or persistent, with host memory the
/// harness fills and reads.
pub(crate) trait Device: Send {
    /// Prepares for one run.
    fn begin(&mut self, coverage: bool) -> Result<(), DeviceError>;
    /// Submits one task and waits for its completion.
    fn submit(&mut self, task: &Task<'_>) -> Result<Outcome, DeviceError>;
    /// The host memory tasks' SG entries point into.
    fn memory(&mut self) -> &mut HostMemory;
    /// A power loss (or what stands in for one).
    fn power_loss(&mut self) -> Result<(), DeviceError>;
    /// A reset of the unit.
    fn reset(&mut self) -> Result<(), DeviceError>;
    /// Hands `hit` every coverage entry the run hit, with its count, if
    /// coverage was asked for in [`Device::begin`]: entries in proportion
    /// to what the run did, not to the map's size.
    fn for_each_hit(&mut self, hit: &mut dyn FnMut(u32, u8));
    /// What blocks this run has not written may read as.
    fn initial_content(&self) -> InitialContent;
    /// The pattern seed for this run's writes, given the campaign's.
    fn data_seed(&self, base: u64) -> u64;
    /// What a READ of `blocks` blocks from `lba` would return now, pushed
    /// onto `out`, without issuing it; `false` when the device cannot say
    /// (a real target can only be read).
    fn peek(&mut self, _lba: u64, _blocks: u32, _out: &mut DataRuns) -> bool {
        false
    }
}

/// Every non-zero entry of a whole coverage map.
fn for_each_nonzero(map: &[u8], hit: &mut dyn FnMut(u32, u8)) {
    for (i, &c) in map.iter().enumerate() {
        if c != 0 {
            hit(i as u32, c);
        }
    }
}

/// The embedded emulator, rebuilt for every run.
pub(crate) struct EmulatorDevice {
    cfg: EmulatorConfig,
    emu: Emulator,
}

fn build(cfg: &EmulatorConfig) -> Result<Emulator, DeviceError> {
    let mut emu = Emulator::new(cfg.clone()).map_err(|e| DeviceError {
        device: "emulator".into(),
        reason: e.to_string(),
    })?;
    // The harness judges a block read back by its tag when host memory
    // holds it as one: READ data stays tags all the way.
    emu.set_tagged_reads(true);
    Ok(emu)
}

impl EmulatorDevice {
    /// Refuses a configuration the emulator cannot build.
    pub(crate) fn new(cfg: EmulatorConfig) -> Result<EmulatorDevice, DeviceError> {
        let emu = build(&cfg)?;
        Ok(EmulatorDevice { cfg, emu })
    }
}

impl Device for EmulatorDevice {
    fn begin(&mut self, coverage: bool) -> Result<(), DeviceError> {
        // The previous run's emulator is dropped by the assignment, before
        // coverage is enabled or a page written, so its map and host pages
        // go back to the emulator's per-thread pools and are reused.
        self.emu = build(&self.cfg)?;
        if coverage {
            self.emu.enable_coverage();
        }
        Ok(())
    }
    fn submit(&mut self, task: &Task<'_>) -> Result<Outcome, DeviceError> {
        Ok(self.emu.submit(task))
    }
    fn memory(&mut self) -> &mut HostMemory {
        self.emu.memory()
    }
    fn power_loss(&mut self) -> Result<(), DeviceError> {
        self.emu.power_loss();
        Ok(())
    }
    fn reset(&mut self) -> Result<(), DeviceError> {
        self.emu.reset();
        Ok(())
    }
    fn peek(&mut self, lba: u64, blocks: u32, out: &mut DataRuns) -> bool {
        self.emu.peek(0, lba, blocks, out)
    }
    fn for_each_hit(&mut self, hit: &mut dyn FnMut(u32, u8)) {
        let Some(cov) = self.emu.coverage_mut() else {
            return;
        };
        let src = cov.map();
        match cov.touched() {
            // A run hits a few hundred entries of 64 Ki: visit those.
            Some(touched) => {
                for &i in touched {
                    if let Some(&c) = src.get(i as usize) {
                        hit(i, c);
                    }
                }
            }
            None => for_each_nonzero(src, hit),
        }
    }
    fn initial_content(&self) -> InitialContent {
        InitialContent::Zeros
    }
    fn data_seed(&self, base: u64) -> u64 {
        base
    }
}

/// How long one command may take before the run is abandoned: a real
/// target under a power-cycle script can be slow, but not this slow.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A real target over iSCSI: one session, one command at a time.
pub(crate) struct IscsiDevice {
    spec: IscsiTarget,
    name: String,
    url: IscsiUrl,
    rt: tokio::runtime::Runtime,
    session: Session,
    mem: HostMemory,
    map: Option<Vec<u8>>,
    prev: u32,
    runs: u64,
    salt: u64,
    buf: Vec<u8>,
}

/// The capacity and block size a target reports (READ CAPACITY (16)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Blocks.
    pub capacity_blocks: u64,
}

impl IscsiDevice {
    /// Logs in to `spec.url`.
    pub(crate) fn connect(spec: &IscsiTarget) -> Result<IscsiDevice, DeviceError> {
        let name = redact_url(&spec.url);
        let fail = |reason: String| DeviceError {
            device: name.clone(),
            reason,
        };
        let url: IscsiUrl = spec.url.parse().map_err(|e| fail(format!("{e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("starting the I/O runtime: {e}")))?;
        let session = rt
            .block_on(Session::login(&url.addr(), &LoginOptions::from_url(&url)))
            .map_err(|e| fail(format!("login: {e}")))?;
        // Distinct from every earlier campaign's seeds, so blocks an earlier
        // campaign left on the medium never match this one's tags.
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Ok(IscsiDevice {
            spec: spec.clone(),
            name,
            url,
            rt,
            session,
            mem: HostMemory::new(),
            map: None,
            prev: 0,
            runs: 0,
            salt,
            buf: Vec::new(),
        })
    }

    fn fail(&self, reason: impl Into<String>) -> DeviceError {
        DeviceError {
            device: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// READ CAPACITY (16) (SBC-4 §5.20), after clearing the unit attention
    /// a new login may raise.
    pub(crate) fn geometry(&mut self) -> Result<Geometry, DeviceError> {
        for _ in 0..3 {
            let mut cdb = [0u8; 16];
            cdb[0] = 0x9e;
            cdb[1] = 0x10;
            cdb[13] = 32;
            let r = self.command(&cdb, Direction::FromDevice, 32, &[])?;
            if r.status == 0 && r.data_in.len() >= 12 {
                let d = &r.data_in;
                let last = u64::from_be_bytes(d[0..8].try_into().expect("8 bytes"));
                let bs = u32::from_be_bytes(d[8..12].try_into().expect("4 bytes"));
                return Ok(Geometry {
                    block_size: bs,
                    capacity_blocks: last.saturating_add(1),
                });
            }
        }
        Err(self.fail("READ CAPACITY (16) kept failing"))
    }

    fn command(
        &mut self,
        cdb: &[u8],
        dir: Direction,
        xfer_len: u32,
        data_out: &[u8],
    ) -> Result<iscsi::initiator::CommandResponse, DeviceError> {
        let lun = self.url.lun;
        let mut req = match dir {
            Direction::ToDevice => CommandRequest::write(lun, cdb, data_out.to_vec()),
            Direction::FromDevice => CommandRequest::read(lun, cdb, xfer_len),
            _ => CommandRequest::no_data(lun, cdb),
        };
        req.attr = TaskAttribute::Simple;
        let session = &self.session;
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, session.command(&req)).await });
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.fail(format!("command {:#04x}: {e}", cdb[0]))),
            Err(_) => Err(self.fail(format!(
                "command {:#04x} took more than {} s",
                cdb[0],
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Marks a response and the transition from the previous one.
    fn mark(&mut self, opcode: u8, out: &Outcome, bytes: u32) {
        let Some(map) = self.map.as_mut() else {
            return;
        };
        let (key, asc, ascq) = out.sense_code().unwrap_or((0, 0, 0));
        let residual = out.residual.signum() as i8 as u8;
        let size = (u32::BITS - bytes.leading_zeros()) as u8;
        let state = u64::from(opcode)
            | u64::from(out.status.0) << 8
            | u64::from(key) << 16
            | u64::from(asc) << 20
            | u64::from(ascq) << 28
            | u64::from(residual) << 36
            | u64::from(size) << 44;
        let cur = (state.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
        let n = map.len();
        for idx in [cur as usize % n, (cur ^ (self.prev >> 1)) as usize % n] {
            map[idx] = map[idx].saturating_add(1);
        }
        self.prev = cur;
    }

    /// A LOGICAL UNIT RESET, cold reset or user command, through the
    /// initiator (which also checks the task-management response).
    fn cycle(&mut self, how: &PowerCycle) -> Result<(), DeviceError> {
        let lun = self.url.lun;
        let session = &self.session;
        self.rt
            .block_on(session.power_cycle(lun, how))
            .map_err(|e| self.fail(e.to_string()))
    }
}

impl Device for IscsiDevice {
    fn begin(&mut self, coverage: bool) -> Result<(), DeviceError> {
        self.runs += 1;
        self.mem = HostMemory::new();
        self.prev = 0;
        self.map = coverage.then(|| vec![0u8; crate::harness::MAP_SIZE]);
        Ok(())
    }

    fn submit(&mut self, task: &Task<'_>) -> Result<Outcome, DeviceError> {
        let write = task.dir == Direction::ToDevice;
        if write {
            // The host's DMA: the SG entries gathered in order.
            self.buf.clear();
            self.buf.resize(task.xfer_len as usize, 0);
            let mut pos = 0usize;
            for s in task.sg {
                let n = (s.len as usize).min(self.buf.len() - pos);
                self.mem.read(s.addr.0, &mut self.buf[pos..pos + n]);
                pos += n;
            }
        }
        let data = std::mem::take(&mut self.buf);
        let r = self.command(task.cdb, task.dir, task.xfer_len, &data);
        self.buf = data;
        let r = r?;
        let residual = r.residual.signed();
        let moved = if write {
            (i64::from(task.xfer_len) - residual.max(0)).clamp(0, i64::from(task.xfer_len)) as u32
        } else {
            // Data-In scattered over the SG entries, as the HBA would.
            let mut pos = 0usize;
            for s in task.sg {
                if pos >= r.data_in.len() {
                    break;
                }
                let n = (s.len as usize).min(r.data_in.len() - pos);
                self.mem.write(s.addr.0, &r.data_in[pos..pos + n]);
                pos += n;
            }
            r.data_in.len() as u32
        };
        let out = Outcome {
            // RFC 7143 §11.4.3: a non-zero response means no valid status.
            status: if r.response == 0 {
                ScsiStatus(r.status)
            } else {
                ScsiStatus::TASK_ABORTED
            },
            sense: r.sense.to_vec(),
            bytes_transferred: moved,
            residual,
            controller_commands: 1,
            bounced_bytes: 0,
            bugs_fired: BugSet::NONE,
        };
        self.mark(task.cdb.first().copied().unwrap_or(0), &out, task.xfer_len);
        Ok(out)
    }

    fn memory(&mut self) -> &mut HostMemory {
        &mut self.mem
    }

    fn power_loss(&mut self) -> Result<(), DeviceError> {
        let how = self.spec.power_cycle.clone();
        self.cycle(&how)
    }

    fn reset(&mut self) -> Result<(), DeviceError> {
        self.cycle(&PowerCycle::LunReset)
    }

    fn for_each_hit(&mut self, hit: &mut dyn FnMut(u32, u8)) {
        if let Some(src) = self.map.as_deref() {
            for_each_nonzero(src, hit);
        }
    }

    fn initial_content(&self) -> InitialContent {
        InitialContent::Unknown
    }

    fn data_seed(&self, base: u64) -> u64 {
        base ^ self.salt ^ self.runs.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl std::fmt::Debug for IscsiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiDevice")
            .field("target", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_name_the_target_without_its_secret() {
        let spec = DeviceSpec::Iscsi(IscsiTarget {
            url: "iscsi://alice%s3cret@10.0.0.1:3260/iqn.x:disk/0".into(),
            power_cycle: PowerCycle::LunReset,
        });
        assert_eq!(spec.describe(), "iscsi://10.0.0.1:3260/iqn.x:disk/0");
    }

    #[test]
    fn a_bad_url_is_refused_with_its_reason() {
        let e = IscsiDevice::connect(&IscsiTarget {
            url: "iscsi://host-without-iqn".into(),
            power_cycle: PowerCycle::LunReset,
        })
        .unwrap_err();
        assert!(e.reason.contains("bad iSCSI URL"), "{e}");
    }
}
