//! What one run of a program concluded: the violations the oracle and the
//! protocol checks found, and which bug paths of the device fired.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Violation classes that are not about data: the device answered a valid
/// command wrongly (SPC-4/SBC-4 status and sense rules).
pub mod protocol {
    /// A valid command in range ended in CHECK CONDITION.
    pub const UNEXPECTED_CHECK: &str = "protocol-unexpected-check-condition";
    /// A command addressing blocks past the capacity did not end in
    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE (SBC-4 4.5).
    pub const MISSING_RANGE_CHECK: &str = "protocol-missing-lba-out-of-range";
    /// No UNIT ATTENTION after power loss or reset (SAM-5 6.2, SPC-4 5.14).
    pub const MISSING_UNIT_ATTENTION: &str = "protocol-missing-unit-attention";
}

/// One thing that went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// Class: the oracle's (`stale`, `misdirected`, `dropped`, `torn`,
    /// `garbage`, `unexpected`, `bad-residual`, as `scuzz replay --verify`
    /// names them) or one of the [`protocol`] classes.
    pub class: String,
    /// Index in the program of the op that observed it; `None` for the
    /// read-back after the final power loss.
    pub op: Option<usize>,
    /// Command sequence number (as in the reproducer trace) that observed it.
    pub seq: Option<u64>,
    /// The block concerned, for data violations.
    pub lba: Option<u64>,
    /// The oracle's or checker's explanation, naming the commands involved.
    pub detail: String,
}

impl Violation {
    /// True for classes about stored data rather than status, sense or
    /// residual.
    pub fn is_data(&self) -> bool {
        !self.class.starts_with("protocol-") && self.class != "bad-residual"
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if let Some(lba) = self.lba {
            write!(f, " at LBA {lba}")?;
        }
        match (self.op, self.seq) {
            (Some(op), Some(seq)) => write!(f, " (op {op}, command #{seq})")?,
            (None, Some(seq)) => write!(f, " (final read-back, command #{seq})")?,
            _ => {}
        }
        write!(f, ": {}", self.detail)
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Verdict {
    /// Violations in the order found.
    pub violations: Vec<Violation>,
    /// CLI names of the catalogued bugs whose code path the run took.
    pub bug_path: Vec<String>,
    /// Commands submitted.
    pub commands: u64,
    /// The device could not carry the run (a real target went away): the
    /// run says nothing about the device's correctness, and the campaign
    /// stops with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_error: Option<String>,
}

impl Verdict {
    /// The verdict of a run the device could not carry.
    pub fn aborted(e: impl fmt::Display) -> Verdict {
        Verdict {
            device_error: Some(e.to_string()),
            ..Verdict::default()
        }
    }

    /// True when nothing went wrong.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The class of the first violation (what a user sees first).
    pub fn class(&self) -> Option<&str> {
        self.violations.first().map(|v| v.class.as_str())
    }

    /// The deduplication key during a campaign: violation class × bug
    /// path. The minimal op shape is added once the finding is minimised
    /// (see [`crate::findings::Signature`]).
    pub fn key(&self) -> Option<String> {
        let class = self.class()?;
        if self.bug_path.is_empty() {
            Some(format!("{class}@none"))
        } else {
            Some(format!("{class}@{}", self.bug_path.join("+")))
        }
    }
}
