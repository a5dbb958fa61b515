//! Where commands go: one small async trait, and an adapter per destination.
//!
//! The engine knows nothing about emulators, sockets or ioctls: it hands a
//! [`Request`] to [`Backend::execute`] and gets an [`Outcome`] back. A SCSI
//! error (CHECK CONDITION, BUSY) is an outcome; only a failure to carry the
//! command at all is a [`BackendError`].

pub mod emulator;
pub mod iscsi;
pub mod sg;

use std::future::Future;
use trace::{Direction, ScsiStatus, Segment, ServiceResponse, TaskAttr};

/// One command for a backend: the CDB as recorded (with its LUN mapped), the
/// recorded SG list, and the Data-Out bytes.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Destination LUN (after `--lun-map`).
    pub lun: u64,
    /// CDB bytes.
    pub cdb: Vec<u8>,
    /// Task attribute.
    pub attr: TaskAttr,
    /// Data phase direction.
    pub dir: Direction,
    /// Requested transfer length in bytes.
    pub xfer_len: u32,
    /// Scatter-gather list recorded in the trace (may be empty: a backend
    /// that needs one generates its own).
    pub sg: Vec<Segment>,
    /// Data-Out for writes; for reads an empty buffer the backend may fill
    /// (its capacity is reused).
    pub data: Vec<u8>,
}

impl Request {
    /// A command without Data-Out, reading at most `data_in` bytes: the
    /// engine's own housekeeping (TEST UNIT READY, READ CAPACITY, MODE
    /// SENSE, the closing read-back).
    pub fn control(lun: u64, cdb: Vec<u8>, data_in: u32) -> Request {
        let dir = if data_in > 0 {
            Direction::FromDevice
        } else {
            Direction::None
        };
        Request {
            lun,
            cdb,
            attr: TaskAttr::Simple,
            dir,
            xfer_len: data_in,
            sg: Vec::new(),
            data: Vec::new(),
        }
    }
}

/// How a command ended on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Transport outcome.
    pub response: ServiceResponse,
    /// SCSI status.
    pub status: ScsiStatus,
    /// Sense bytes, empty if none.
    pub sense: Vec<u8>,
    /// Bytes actually moved.
    pub bytes_transferred: u32,
    /// Residual: positive for underflow.
    pub residual: i64,
    /// Data-In for reads; for writes the Data-Out buffer handed back so the
    /// engine can reuse its allocation.
    pub data: Vec<u8>,
}

impl Outcome {
    /// GOOD status with `data` moved in full.
    pub fn good(data: Vec<u8>, bytes_transferred: u32) -> Outcome {
        Outcome {
            response: ServiceResponse::TaskComplete,
            status: ScsiStatus::GOOD,
            sense: Vec::new(),
            bytes_transferred,
            residual: 0,
            data,
        }
    }

    /// Whether the command completed with GOOD status.
    pub fn is_good(&self) -> bool {
        self.response == ServiceResponse::TaskComplete && self.status == ScsiStatus::GOOD
    }
}

/// A backend could not carry a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The operation has no meaning for this backend (power loss on real
    /// hardware over SG_IO).
    #[error("{0} is not supported by this backend")]
    Unsupported(&'static str),
    /// The backend refuses to run, to protect data or because it is
    /// misconfigured.
    #[error("{0}")]
    Refused(String),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (device path, ioctl name).
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The transport (iSCSI connection) failed.
    #[error("transport: {0}")]
    Transport(String),
}

/// A destination for replayed commands.
///
/// `execute` takes `&self` so that many commands can be in flight at once;
/// a backend that serialises internally (the in-process emulator) simply
/// completes each future on its first poll.
pub trait Backend {
    /// Names the destination in reports (`emulator(lsi3108)`, `sg:/dev/sg2`).
    fn describe(&self) -> String;

    /// Runs one command to completion.
    fn execute(&self, req: Request) -> impl Future<Output = Result<Outcome, BackendError>>;

    /// Whether a block no command has written reads as zeros (a fresh
    /// emulator); a real disk holds old data, so the oracle does not judge
    /// unwritten blocks there.
    fn unwritten_reads_zero(&self) -> bool {
        false
    }

    /// Cuts power: the device loses whatever its volatile cache held. Only
    /// a model can do this on request.
    fn power_loss(&self) -> impl Future<Output = Result<(), BackendError>> {
        std::future::ready(Err(BackendError::Unsupported("power loss")))
    }

    /// Ends the connection cleanly after the run (iSCSI logout).
    fn close(&self) -> impl Future<Output = Result<(), BackendError>> {
        std::future::ready(Ok(()))
    }

    /// Resets the logical unit (cache kept, unit attention raised).
    fn reset(&self) -> impl Future<Output = Result<(), BackendError>> {
        std::future::ready(Err(BackendError::Unsupported("reset")))
    }
}

/// Runs a command without Data-Out and returns its outcome: the engine's
/// own housekeeping (TEST UNIT READY, READ CAPACITY, MODE SENSE).
pub async fn control<B: Backend>(
    backend: &B,
    lun: u64,
    cdb: Vec<u8>,
    data_in: u32,
) -> Result<Outcome, BackendError> {
    backend.execute(Request::control(lun, cdb, data_in)).await
}
