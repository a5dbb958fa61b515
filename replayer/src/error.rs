//! The replayer's error type: what stopped a replay, as opposed to what a
//! replay found (violations and regressions are results, see
//! [`crate::verify`] and [`crate::report`]).

use std::path::PathBuf;

/// Why a replay could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The trace could not be read (the message names the file and the
    /// byte offset).
    #[error("{message}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What the reader reported (it names the byte offset).
        message: String,
    },
    /// The backend failed to carry a command (transport down, ioctl error);
    /// a SCSI error status is not this, it is an outcome.
    #[error("backend {backend}: {source}")]
    Backend {
        /// Which backend.
        backend: String,
        /// What went wrong.
        #[source]
        source: crate::backend::BackendError,
    },
    /// An option value that cannot be used.
    #[error("{option}: {message}")]
    Usage {
        /// The option, as spelled on the command line.
        option: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// Writing a report file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A baseline or expectation file could not be parsed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl ReplayError {
    /// Shorthand for a usage error.
    pub fn usage(option: &'static str, message: impl Into<String>) -> Self {
        ReplayError::Usage {
            option,
            message: message.into(),
        }
    }

    /// Shorthand for an I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReplayError::Io {
            path: path.into(),
            source,
        }
    }
}
