//! The initiator's errors.

use crate::codec::CodecError;
use crate::login::keys::NegotiationError;
use crate::login::LoginStatus;
use crate::pdu::RejectReason;
use std::fmt;
use thiserror::Error;

/// A command as the error messages name it: its tags, LUN and CDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId {
    /// Initiator Task Tag it was sent with.
    pub itt: u32,
    /// CmdSN it was sent with.
    pub cmd_sn: u32,
    /// Flat LUN (or the raw LUN field's first level).
    pub lun: u16,
    /// The CDB's first bytes (up to 16).
    pub cdb: Vec<u8>,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ITT {:#010x} CmdSN {} LUN {} CDB",
            self.itt, self.cmd_sn, self.lun
        )?;
        for b in &self.cdb {
            write!(f, " {b:02x}")?;
        }
        Ok(())
    }
}

/// Why an initiator operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InitiatorError {
    /// The TCP connection could not be made.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The portal.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while reading or writing PDUs.
    #[error("connection to {addr}: {source}")]
    Io {
        /// The portal.
        addr: String,
        /// The framing or socket error.
        #[source]
        source: CodecError,
    },
    /// The target answered the login with a non-zero status (RFC 7143
    /// §11.13.5).
    #[error("login to {target} refused: {status}")]
    LoginRejected {
        /// The target name asked for.
        target: String,
        /// Status-Class and Status-Detail.
        status: LoginStatus,
    },
    /// The portal sent the login elsewhere (RFC 7143 §11.13.5, Status-Class
    /// one) and the redirection could not be followed: no TargetAddress, or
    /// more hops than [`crate::initiator::MAX_REDIRECTS`].
    #[error("login to {target} redirected to `{address}` ({status}), not followed")]
    Redirected {
        /// The target name asked for.
        target: String,
        /// Status-Class 1 and its detail (temporarily or permanently moved).
        status: LoginStatus,
        /// The TargetAddress given, as sent (`host[:port][,tpgt]`).
        address: String,
    },
    /// The target's answer to an operational key is outside what was offered.
    #[error("login negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    /// CHAP could not proceed (target chose it without credentials, or sent
    /// a malformed challenge).
    #[error("CHAP: {0}")]
    Chap(String),
    /// The target broke RFC 7143; the connection is closed (ErrorRecoveryLevel 0).
    #[error("protocol violation by the target: {0}")]
    Protocol(String),
    /// The connection was lost while this command was in flight; whether
    /// the target executed it is unknown. Later commands reconnect.
    #[error("connection lost with command in flight ({task}): {reason}")]
    ConnectionLost {
        /// The command.
        task: TaskId,
        /// Why the connection ended.
        reason: String,
    },
    /// A task-management function or logout was in flight when the
    /// connection was lost.
    #[error("connection lost during {what}: {reason}")]
    ConnectionLostDuring {
        /// The operation.
        what: &'static str,
        /// Why the connection ended.
        reason: String,
    },
    /// The session is logged out (or reconnecting failed); nothing was sent.
    #[error("session closed: {0}")]
    Closed(String),
    /// The target rejected the command PDU (RFC 7143 §11.17).
    #[error("target rejected {task} with reason {reason:#04x}", reason = .reason.0)]
    Rejected {
        /// The command.
        task: TaskId,
        /// The Reject reason code.
        reason: RejectReason,
    },
    /// The command was terminated by a task-management function
    /// (ABORT TASK, LUN RESET, ...) before it completed.
    #[error("{task} terminated by {function}")]
    Aborted {
        /// The command.
        task: TaskId,
        /// The terminating function's name.
        function: &'static str,
    },
    /// No response within [`crate::initiator::LoginOptions::command_timeout`].
    #[error("{task} timed out after {after:?} ({})", if *.aborted { "aborted" } else { "connection dropped" })]
    CommandTimeout {
        /// The command.
        task: TaskId,
        /// The limit that passed.
        after: std::time::Duration,
        /// Whether the target confirmed ABORT TASK; if not, the connection
        /// was dropped and the next command logs in again.
        aborted: bool,
    },
    /// The request itself is invalid (nothing was sent).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The target did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A power cycle could not be carried out (the user's command failed,
    /// or the target did not come back).
    #[error("power cycle: {0}")]
    PowerCycle(String),
}

impl InitiatorError {
    /// The command this error is about, if it names one.
    pub fn task(&self) -> Option<&TaskId> {
        match self {
            InitiatorError::ConnectionLost { task, .. }
            | InitiatorError::CommandTimeout { task, .. }
            | InitiatorError::Rejected { task, .. }
            | InitiatorError::Aborted { task, .. } => Some(task),
            _ => None,
        }
    }
}
