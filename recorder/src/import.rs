//! What the text importers (ftrace, fio iolog) share: line-numbered
//! warnings for malformed lines, which never stop the rest of a file from
//! importing, and the error type for what does stop it.

use std::fmt;

/// Warnings kept in full; beyond this only the count grows, so a file of
/// garbage cannot exhaust memory.
pub const MAX_WARNINGS: usize = 1000;

/// A line that could not be imported (or only in part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWarning {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for LineWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input failed.
    #[error("reading line {line}: {source}")]
    Io {
        /// Line being read.
        line: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The input is not of the expected kind at all.
    #[error("line {line}: {reason}")]
    NotThisFormat {
        /// Line that gave it away.
        line: u64,
        /// Why.
        reason: String,
    },
    /// A CDB could not be built.
    #[error("line {line}: encoding a CDB: {source}")]
    Cdb {
        /// Line of the command.
        line: u64,
        /// Codec error.
        #[source]
        source: trace::CdbError,
    },
    /// The sink (usually a trace writer) failed.
    #[error("writing the trace: {0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

/// Counts and warnings of one import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Lines read.
    pub lines: u64,
    /// Commands (Submit events) produced.
    pub commands: u64,
    /// Events produced.
    pub events: u64,
    /// The first [`MAX_WARNINGS`] warnings.
    pub warnings: Vec<LineWarning>,
    /// All warnings, including those not kept.
    pub warning_count: u64,
}

impl ImportSummary {
    pub(crate) fn warn(&mut self, line: u64, message: impl Into<String>) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(LineWarning {
                line,
                message: message.into(),
            });
        }
    }
}
