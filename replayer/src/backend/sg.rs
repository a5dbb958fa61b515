//! Linux SCSI pass-through: `/dev/sgN` through the SG_IO ioctl with the v3
//! header (`sg_io_hdr`), `/dev/bsg/...` with the v4 header (`sg_io_v4`).
//!
//! Replaying writes destroys what the device holds, so the backend refuses
//! a device that carries a partition table (an MBR boot signature or a GPT
//! header) unless the caller confirms. Each command runs its ioctl on
//! tokio's blocking pool, so `--qd` commands can be outstanding at once.
//! The sg driver takes at most [`SG_MAX_QUEUE`] commands at a time on one
//! open file, so the backend opens the device node again for every 16
//! commands in flight.
//!
//! tests/cli_sg.rs runs all of this against a real kernel in a QEMU guest.

use super::{Backend, BackendError, Outcome, Request};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use trace::{Direction, ScsiStatus, ServiceResponse};

/// `SG_IO` (include/scsi/sg.h).
const SG_IO: libc::c_ulong = 0x2285;
const SG_DXFER_NONE: libc::c_int = -1;
const SG_DXFER_TO_DEV: libc::c_int = -2;
const SG_DXFER_FROM_DEV: libc::c_int = -3;
/// `SG_SCSI_RESET` (include/scsi/sg.h) with its logical-unit target
/// (`SG_SCSI_RESET_DEVICE`), kept from escalating to the target, bus or
/// host when the driver cannot reset just the unit.
const SG_SCSI_RESET: libc::c_ulong = 0x2284;
const SG_SCSI_RESET_DEVICE: libc::c_int = 1;
const SG_SCSI_RESET_NO_ESCALATE: libc::c_int = 0x100;
/// Sense buffer size: SPC-5 caps sense data at 252 bytes.
const SENSE_LEN: usize = 252;
/// Per-command timeout handed to the kernel, in milliseconds.
const TIMEOUT_MS: u32 = 60_000;
/// Commands the sg driver keeps per open file (SG_MAX_QUEUE in
/// drivers/scsi/sg.c); one more concurrent SG_IO on the same file fails
/// with EDOM. bsg has no such limit.
pub const SG_MAX_QUEUE: usize = 16;
/// DRIVER_SENSE (include/scsi/sg.h, low nibble of `driver_status`): the
/// kernel sets it on every CHECK CONDITION (sg.c, scsi_bsg.c), so it says
/// "sense data is in the buffer", not "the command was not delivered".
const DRIVER_SENSE: u32 = 0x08;
/// UNIT ATTENTION conditions `open` clears before it judges the device: a
/// logical unit may queue several (power on, then a changed capacity, then
/// changed mode parameters) and reports one per command (SAM-5, unit
/// attention conditions).
const UNIT_ATTENTION_RETRIES: usize = 8;

/// `struct sg_io_hdr` (include/scsi/sg.h), the v3 interface of /dev/sg.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

/// `struct sg_io_v4` (include/uapi/linux/bsg.h), the interface of /dev/bsg.
#[repr(C)]
#[derive(Default)]
struct SgIoV4 {
    guard: i32,
    protocol: u32,
    subprotocol: u32,
    request_len: u32,
    request: u64,
    request_tag: u64,
    request_attr: u32,
    request_priority: u32,
    request_extra: u32,
    max_response_len: u32,
    response: u64,
    dout_iovec_count: u32,
    dout_xfer_len: u32,
    din_iovec_count: u32,
    din_xfer_len: u32,
    dout_xferp: u64,
    din_xferp: u64,
    timeout: u32,
    flags: u32,
    usr_ptr: u64,
    spare_in: u32,
    driver_status: u32,
    transport_status: u32,
    device_status: u32,
    retry_delay: u32,
    info: u32,
    duration: u32,
    response_len: u32,
    din_resid: i32,
    dout_resid: i32,
    generated_tag: u64,
    spare_out: u32,
    padding: u32,
}

/// Which ioctl header the device node takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interface {
    V3,
    V4,
}

/// A SCSI device reached through SG_IO.
pub struct SgBackend {
    path: PathBuf,
    handles: Arc<Handles>,
    iface: Interface,
}

/// The device's open files and the commands in flight on each, so no file
/// carries more than the driver takes.
struct Handles {
    path: PathBuf,
    per_file: usize,
    files: Mutex<Vec<(Arc<File>, usize)>>,
}

/// A command's place on one of the open files, given back on drop.
struct Slot {
    handles: Arc<Handles>,
    index: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut files = self
            .handles
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, n)) = files.get_mut(self.index) {
            *n = n.saturating_sub(1);
        }
    }
}

fn open_device(path: &Path) -> Result<File, BackendError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| BackendError::Io {
            context: format!("open {}", path.display()),
            source,
        })
}

impl Handles {
    /// A file with room for one more command, opening another when all
    /// are full.
    fn acquire(self: &Arc<Self>) -> Result<(Arc<File>, Slot), BackendError> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match files.iter().position(|(_, n)| *n < self.per_file) {
            Some(i) => i,
            None => {
                files.push((Arc::new(open_device(&self.path)?), 0));
                files.len() - 1
            }
        };
        files[index].1 += 1;
        let file = Arc::clone(&files[index].0);
        let slot = Slot {
            handles: Arc::clone(self),
            index,
        };
        Ok((file, slot))
    }
}

/// Why a device looks like it holds data somebody wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTable {
    /// Boot signature 55h AAh at byte 510 of LBA 0.
    Mbr,
    /// `EFI PART` at the start of LBA 1.
    Gpt,
}

/// Looks for a partition table in the first two blocks of a device.
pub fn partition_table(first_blocks: &[u8], block_size: usize) -> Option<PartitionTable> {
    if first_blocks.get(block_size..block_size + 8) == Some(b"EFI PART") {
        return Some(PartitionTable::Gpt);
    }
    if first_blocks.get(510..512) == Some(&[0x55, 0xaa]) {
        return Some(PartitionTable::Mbr);
    }
    None
}

impl SgBackend {
    /// Opens `path` (`/dev/sgN` or `/dev/bsg/H:C:T:L`), checks it answers
    /// SG_IO, and refuses it if it holds a partition table and
    /// `destroy_ok` is false.
    pub async fn open(path: &Path, destroy_ok: bool) -> Result<SgBackend, BackendError> {
        let file = open_device(path)?;
        let iface = if path.starts_with("/dev/bsg") {
            Interface::V4
        } else {
            Interface::V3
        };
        let b = SgBackend {
            path: path.to_path_buf(),
            handles: Arc::new(Handles {
                path: path.to_path_buf(),
                per_file: match iface {
                    Interface::V3 => SG_MAX_QUEUE,
                    Interface::V4 => usize::MAX,
                },
                files: Mutex::new(vec![(Arc::new(file), 0)]),
            }),
            iface,
        };
        // READ CAPACITY(10) for the block size, then the first two blocks.
        let rc = b
            .past_unit_attention(|| Request::control(0, vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8))
            .await?;
        if !rc.is_good() || rc.data.len() < 8 {
            return Err(BackendError::Refused(format!(
                "{}: READ CAPACITY failed ({}), cannot check for a partition table",
                path.display(),
                trace::sense::describe_status(rc.status, &rc.sense)
            )));
        }
        let bs = u32::from_be_bytes([rc.data[4], rc.data[5], rc.data[6], rc.data[7]])
            .clamp(512, 1 << 16);
        let read = || Request::control(0, vec![0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], bs * 2);
        let first = b.past_unit_attention(read).await?;
        if !first.is_good() && !destroy_ok {
            return Err(BackendError::Refused(format!(
                "{}: READ(10) of LBA 0 and 1 failed ({}), so a partition table cannot be \
                 ruled out. Pass --i-know-this-destroys-data to go ahead",
                path.display(),
                trace::sense::describe_status(first.status, &first.sense)
            )));
        }
        if let (Some(t), false) = (partition_table(&first.data, bs as usize), destroy_ok) {
            return Err(BackendError::Refused(format!(
                "{} holds a{} partition table; replaying writes would destroy it. \
                 Pass --i-know-this-destroys-data to go ahead",
                path.display(),
                if t == PartitionTable::Gpt {
                    " GPT"
                } else {
                    "n MBR"
                }
            )));
        }
        Ok(b)
    }

    /// Runs the command `make` builds, again while the device answers
    /// CHECK CONDITION with UNIT ATTENTION. Nothing may have spoken to the
    /// device since it powered on or was reset (no `sd` bound to it, or a
    /// reset after `sd` probed), and its first command then reports that
    /// instead of running (SAM-5, unit attention conditions); the kernel
    /// hands a pass-through command's UNIT ATTENTION back unretried.
    async fn past_unit_attention(
        &self,
        make: impl Fn() -> Request,
    ) -> Result<Outcome, BackendError> {
        let mut last = self.execute(make()).await?;
        for _ in 0..UNIT_ATTENTION_RETRIES {
            if !is_unit_attention(&last) {
                break;
            }
            last = self.execute(make()).await?;
        }
        Ok(last)
    }

    /// The sg node that can reset this device: the node itself, or for a
    /// bsg node the sg node of the same H:C:T:L, since bsg has no reset
    /// ioctl.
    fn reset_node(&self) -> Result<PathBuf, BackendError> {
        if self.iface == Interface::V3 {
            return Ok(self.path.clone());
        }
        let hctl = self.path.file_name().unwrap_or_default();
        let dir = Path::new("/sys/class/bsg")
            .join(hctl)
            .join("device/scsi_generic");
        let sg = std::fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| Path::new("/dev").join(e.file_name()));
        sg.ok_or_else(|| {
            BackendError::Refused(format!(
                "{}: a reset needs the device's sg node (bsg has no reset ioctl), \
                 and {} lists none; load the sg module",
                self.path.display(),
                dir.display()
            ))
        })
    }

    /// LOGICAL UNIT RESET through `SG_SCSI_RESET` (SAM-5 7.7): the unit
    /// aborts its tasks, keeps its cache, and raises a UNIT ATTENTION the
    /// engine then clears.
    async fn lu_reset(&self) -> Result<(), BackendError> {
        let node = self.reset_node()?;
        let handles = Arc::clone(&self.handles);
        let same = node == self.path;
        tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
            let file = if same {
                handles.acquire()?.0
            } else {
                Arc::new(open_device(&node)?)
            };
            let what: libc::c_int = SG_SCSI_RESET_DEVICE | SG_SCSI_RESET_NO_ESCALATE;
            // SAFETY: SG_SCSI_RESET reads one int from the pointer, which
            // lives until the synchronous ioctl returns.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), SG_SCSI_RESET as _, &what) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                let source = if e.raw_os_error() == Some(libc::EACCES) {
                    std::io::Error::new(
                        e.kind(),
                        format!("{e}; a reset needs CAP_SYS_ADMIN and CAP_SYS_RAWIO"),
                    )
                } else {
                    e
                };
                return Err(BackendError::Io {
                    context: format!("LOGICAL UNIT RESET (SG_SCSI_RESET) on {}", node.display()),
                    source,
                });
            }
            Ok(())
        })
        .await
        .map_err(|e| BackendError::Transport(format!("SG_IO worker: {e}")))?
    }
}

/// "WRITE(16) of 41943040 bytes", for error messages.
fn command_name(cdb: &[u8], xfer_len: u32) -> String {
    let op = cdb.first().copied().unwrap_or(0);
    let name = trace::cdb::Cdb::parse(cdb)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|_| format!("opcode {op:02X}h"));
    format!("{name} of {xfer_len} bytes")
}

/// Adds to the errno Linux refuses a pass-through command with the limit
/// it most likely hit: the kernel says only ENOMEM or EINVAL.
fn explain(iface: Interface, len: usize, e: std::io::Error) -> std::io::Error {
    let hint = match (iface, e.raw_os_error()) {
        (Interface::V3, Some(libc::ENOMEM)) if len > 0 => {
            "the sg driver copies each transfer through a kernel buffer of at most the \
             HBA's max_segments times sg's scatter_elem_sz (/sys/module/sg/parameters/\
             scatter_elem_sz, 32 KiB by default); replay through the device's /dev/bsg \
             node, which maps the buffer directly, or raise scatter_elem_sz"
        }
        (_, Some(libc::EINVAL)) if len > 0 => {
            "Linux refuses a pass-through transfer larger than the HBA's \
             max_hw_sectors_kb (/sys/block/sdX/queue/max_hw_sectors_kb) or with more \
             segments than it takes; replay a trace whose largest transfer fits \
             (`scuzz stats` shows it)"
        }
        (Interface::V3, Some(libc::EDOM)) => {
            "the sg driver's queue on this file is full (SG_MAX_QUEUE)"
        }
        _ => return e,
    };
    std::io::Error::new(e.kind(), format!("{e}; {hint}"))
}

/// Whether a completion is CHECK CONDITION with sense key UNIT ATTENTION.
fn is_unit_attention(o: &Outcome) -> bool {
    o.response == ServiceResponse::TaskComplete
        && o.status == ScsiStatus::CHECK_CONDITION
        && trace::sense::SenseData::parse(&o.sense)
            .is_ok_and(|s| s.key == trace::sense::SenseKey::UnitAttention)
}

/// The service response of an SG_IO command from the status fields the
/// kernel fills in besides the SCSI status byte: `host_status` (v3) or
/// `transport_status` (v4) is the host byte, non-zero when the HBA or
/// transport failed (DID_NO_CONNECT, DID_TIME_OUT, DID_RESET, ...); the low
/// nibble of `driver_status` is DRIVER_OK or DRIVER_SENSE when the target
/// answered, anything else (DRIVER_ERROR, DRIVER_TIMEOUT, ...) when the
/// mid-layer gave up. A CHECK CONDITION is a completed task whatever the
/// sense says.
fn service_response(host_status: u32, driver_status: u32) -> ServiceResponse {
    let driver = driver_status & 0x0f;
    if host_status != 0 || (driver != 0 && driver != DRIVER_SENSE) {
        ServiceResponse::DeliveryFailure
    } else {
        ServiceResponse::TaskComplete
    }
}

fn run_v3(file: &File, req: &mut Request, sense: &mut [u8; SENSE_LEN]) -> std::io::Result<Outcome> {
    let (dir, len) = match req.dir {
        Direction::None => (SG_DXFER_NONE, 0),
        Direction::ToDevice => (SG_DXFER_TO_DEV, req.data.len()),
        Direction::FromDevice => {
            req.data.clear();
            req.data.resize(req.xfer_len as usize, 0);
            (SG_DXFER_FROM_DEV, req.data.len())
        }
    };
    let mut hdr = SgIoHdr {
        interface_id: b'S' as libc::c_int,
        dxfer_direction: dir,
        cmd_len: req.cdb.len().min(255) as u8,
        mx_sb_len: SENSE_LEN as u8,
        iovec_count: 0,
        dxfer_len: len as u32,
        dxferp: req.data.as_mut_ptr().cast(),
        cmdp: req.cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: TIMEOUT_MS,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: `hdr` points at `req.cdb`, `req.data` (dxfer_len bytes long)
    // and `sense` (mx_sb_len bytes), all alive and unaliased until the
    // synchronous ioctl returns.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), SG_IO as _, &mut hdr as *mut SgIoHdr) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let resid = hdr.resid.max(0) as u32;
    let moved = (len as u32).saturating_sub(resid);
    if req.dir == Direction::FromDevice {
        req.data.truncate(moved as usize);
    }
    Ok(Outcome {
        response: service_response(hdr.host_status.into(), hdr.driver_status.into()),
        status: ScsiStatus(hdr.status),
        sense: sense[..usize::from(hdr.sb_len_wr).min(SENSE_LEN)].to_vec(),
        bytes_transferred: moved,
        residual: i64::from(resid),
        data: std::mem::take(&mut req.data),
    })
}

fn run_v4(file: &File, req: &mut Request, sense: &mut [u8; SENSE_LEN]) -> std::io::Result<Outcome> {
    if req.dir == Direction::FromDevice {
        req.data.clear();
        req.data.resize(req.xfer_len as usize, 0);
    }
    let len = req.data.len() as u32;
    let mut h = SgIoV4 {
        guard: i32::from(b'Q'),
        request_len: req.cdb.len() as u32,
        request: req.cdb.as_ptr() as u64,
        max_response_len: SENSE_LEN as u32,
        response: sense.as_mut_ptr() as u64,
        timeout: TIMEOUT_MS,
        ..Default::default()
    };
    match req.dir {
        Direction::ToDevice => {
            h.dout_xfer_len = len;
            h.dout_xferp = req.data.as_ptr() as u64;
        }
        Direction::FromDevice => {
            h.din_xfer_len = len;
            h.din_xferp = req.data.as_mut_ptr() as u64;
        }
        Direction::None => {}
    }
    // SAFETY: every pointer in `h` refers to a buffer of the stated length
    // owned by `req` or `sense`, alive until the synchronous ioctl returns.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), SG_IO as _, &mut h as *mut SgIoV4) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let resid = if req.dir == Direction::FromDevice {
        h.din_resid
    } else {
        h.dout_resid
    }
    .max(0) as u32;
    let moved = len.saturating_sub(resid);
    if req.dir == Direction::FromDevice {
        req.data.truncate(moved as usize);
    }
    Ok(Outcome {
        response: service_response(h.transport_status, h.driver_status),
        status: ScsiStatus((h.device_status & 0xff) as u8),
        sense: sense[..(h.response_len as usize).min(SENSE_LEN)].to_vec(),
        bytes_transferred: moved,
        residual: i64::from(resid),
        data: std::mem::take(&mut req.data),
    })
}

impl Backend for SgBackend {
    fn describe(&self) -> String {
        format!("sg:{}", self.path.display())
    }

    /// A host cannot cut a real disk's power; like the iSCSI backend's
    /// default, it offers a LOGICAL UNIT RESET instead. The cache survives
    /// it, which the oracle permits after a power loss (every write since
    /// the last flush may or may not be there), so a fuzzer's reproducer,
    /// which ends with a power loss, replays on hardware.
    async fn power_loss(&self) -> Result<(), BackendError> {
        self.lu_reset().await
    }

    async fn reset(&self) -> Result<(), BackendError> {
        self.lu_reset().await
    }

    async fn execute(&self, mut req: Request) -> Result<Outcome, BackendError> {
        // The node is one logical unit; sending another LUN's commands to
        // it would merge two disks' workloads onto one without a word.
        if req.lun != 0 {
            return Err(BackendError::Refused(format!(
                "the trace addresses LUN {lun}, but {} is a single logical unit (it takes \
                 the trace's LUN 0); send LUN {lun} here with --lun-map {lun}=0, or replay \
                 it to that unit's own node",
                self.path.display(),
                lun = req.lun
            )));
        }
        let (file, slot) = self.handles.acquire()?;
        let iface = self.iface;
        let path = self.path.clone();
        let command = command_name(&req.cdb, req.xfer_len);
        let len = match req.dir {
            Direction::ToDevice => req.data.len(),
            Direction::FromDevice => req.xfer_len as usize,
            Direction::None => 0,
        };
        tokio::task::spawn_blocking(move || {
            // The slot is given back when the ioctl has returned, even if
            // the caller stopped waiting.
            let _slot = slot;
            let mut sense = [0u8; SENSE_LEN];
            match iface {
                Interface::V3 => run_v3(&file, &mut req, &mut sense),
                Interface::V4 => run_v4(&file, &mut req, &mut sense),
            }
        })
        .await
        .map_err(|e| BackendError::Transport(format!("SG_IO worker: {e}")))?
        .map_err(|e| BackendError::Io {
            context: format!("SG_IO on {}, {command}", path.display()),
            source: explain(iface, len, e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layouts_match_the_kernel() {
        // x86-64 and aarch64 sizes from include/scsi/sg.h and bsg.h.
        assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
        assert_eq!(std::mem::size_of::<SgIoV4>(), 160);
    }

    #[test]
    fn check_condition_is_a_completed_task_and_host_errors_are_not() {
        // What sg.c and scsi_bsg.c report for a CHECK CONDITION: the
        // status byte, DRIVER_SENSE, host byte DID_OK.
        assert_eq!(
            service_response(0, DRIVER_SENSE),
            ServiceResponse::TaskComplete
        );
        assert_eq!(service_response(0, 0), ServiceResponse::TaskComplete);
        // DID_NO_CONNECT, DID_TIME_OUT; DRIVER_ERROR, DRIVER_TIMEOUT.
        for (host, driver) in [(0x01, 0), (0x03, 0), (0, 0x04), (0, 0x06), (0x03, 0x08)] {
            assert_eq!(
                service_response(host, driver),
                ServiceResponse::DeliveryFailure,
                "host {host:#x} driver {driver:#x}"
            );
        }
    }

    #[test]
    fn unit_attention_is_recognised_in_fixed_and_descriptor_sense() {
        let ua = |sense: Vec<u8>| Outcome {
            response: ServiceResponse::TaskComplete,
            status: ScsiStatus::CHECK_CONDITION,
            sense,
            bytes_transferred: 0,
            residual: 0,
            data: Vec::new(),
        };
        // 29h/00h POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[7] = 10;
        fixed[12] = 0x29;
        assert!(is_unit_attention(&ua(fixed.clone())));
        let descriptor = vec![0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0];
        assert!(is_unit_attention(&ua(descriptor)));
        // ILLEGAL REQUEST is not retried, nor is GOOD.
        fixed[2] = 0x05;
        assert!(!is_unit_attention(&ua(fixed)));
        assert!(!is_unit_attention(&Outcome::good(Vec::new(), 0)));
    }

    #[test]
    fn refused_transfers_name_the_limit() {
        let e = |code| std::io::Error::from_raw_os_error(code);
        let m = explain(Interface::V3, 40 << 20, e(libc::ENOMEM)).to_string();
        assert!(
            m.contains("scatter_elem_sz") && m.contains("/dev/bsg"),
            "{m}"
        );
        let m = explain(Interface::V4, 40 << 20, e(libc::EINVAL)).to_string();
        assert!(m.contains("max_hw_sectors_kb"), "{m}");
        // Other errors pass unchanged.
        let m = explain(Interface::V4, 0, e(libc::EIO)).to_string();
        assert_eq!(m, e(libc::EIO).to_string());
        assert_eq!(
            command_name(&[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], 512),
            "WRITE(16) of 512 bytes"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_open_file_carries_more_than_the_sg_queue() {
        let path = std::env::temp_dir().join(format!("scuzz-sg-slots-{}", std::process::id()));
        std::fs::write(&path, [0u8; 16]).unwrap();
        let handles = Arc::new(Handles {
            path: path.clone(),
            per_file: SG_MAX_QUEUE,
            files: Mutex::new(vec![(Arc::new(File::open(&path).unwrap()), 0)]),
        });
        let mut slots: Vec<_> = (0..40).map(|_| handles.acquire().unwrap().1).collect();
        let load = |h: &Handles| -> Vec<usize> {
            h.files.lock().unwrap().iter().map(|(_, n)| *n).collect()
        };
        assert_eq!(load(&handles), [16, 16, 8]);
        // A freed place on the first file is reused before a new file opens.
        slots.swap_remove(3);
        assert_eq!(load(&handles), [15, 16, 8]);
        let _again = handles.acquire().unwrap();
        assert_eq!(load(&handles), [16, 16, 8]);
        drop(slots);
        std::fs::remove_file(&path).unwrap();
    }

    /// A backend on a plain file, for the checks made before any ioctl.
    fn on_file(name: &str, node: &str, iface: Interface) -> (SgBackend, PathBuf) {
        let path = std::env::temp_dir().join(format!("scuzz-sg-{name}-{}", std::process::id()));
        std::fs::write(&path, [0u8; 16]).unwrap();
        let b = SgBackend {
            path: PathBuf::from(node),
            handles: Arc::new(Handles {
                path: path.clone(),
                per_file: usize::MAX,
                files: Mutex::new(vec![(Arc::new(File::open(&path).unwrap()), 0)]),
            }),
            iface,
        };
        (b, path)
    }

    #[test]
    fn a_bsg_node_without_an_sg_sibling_cannot_be_reset() {
        let (b, path) = on_file("reset", "/dev/bsg/99:0:0:0", Interface::V4);
        let e = b.reset_node().unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(
            e.contains("/sys/class/bsg/99:0:0:0/device/scsi_generic"),
            "{e}"
        );
        assert!(e.contains("load the sg module"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn commands_for_another_lun_are_refused_not_merged() {
        let (b, path) = on_file("lun", "/dev/sg99", Interface::V3);
        let req = Request::control(1, vec![0; 6], 0);
        let e = b.execute(req).await.unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("LUN 1") && e.contains("--lun-map 1=0"), "{e}");
    }

    #[test]
    fn finds_mbr_and_gpt() {
        let mut b = vec![0u8; 1024];
        assert_eq!(partition_table(&b, 512), None);
        b[510] = 0x55;
        b[511] = 0xaa;
        assert_eq!(partition_table(&b, 512), Some(PartitionTable::Mbr));
        b[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(partition_table(&b, 512), Some(PartitionTable::Gpt));
        // 4 KiB sectors: the GPT header is at byte 4096.
        let mut c = vec![0u8; 8192];
        c[4096..4104].copy_from_slice(b"EFI PART");
        assert_eq!(partition_table(&c, 4096), Some(PartitionTable::Gpt));
        assert_eq!(partition_table(&c[..100], 4096), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_regular_file_is_not_a_scsi_device() {
        let dir = std::env::temp_dir().join(format!("scuzz-sg-{}", std::process::id()));
        std::fs::write(&dir, [0u8; 16]).unwrap();
        let e = SgBackend::open(&dir, false)
            .await
            .err()
            .expect("SG_IO on a file must fail");
        std::fs::remove_file(&dir).unwrap();
        assert!(e.to_string().contains("SG_IO"), "{e}");
    }
}
