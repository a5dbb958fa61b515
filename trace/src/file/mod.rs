//! The trace file (`.sczt`): a versioned header, then a stream of framed
//! events, each protected by CRC32C, optionally compressed with zstd.
//!
//! The byte layout is specified in `docs/trace-format.md` precisely enough
//! for a C writer (the DEXT capture shim). In short:
//!
//! ```text
//! preamble   "SCZT" | major u16 | minor u16 | compression u8 | 0 0 0 | crc32c u32     (16 bytes)
//! frame      len u32 | crc32c(len) u32 | crc32c(body) u32 | body[len]                  (12 + len bytes)
//! file       preamble, header frame, event frames (or zstd chunk frames), end frame (len 0)
//! ```
//!
//! Why the frame carries two CRCs: a flipped bit in the length must be told
//! apart from a trace cut short. With a single CRC over length and body, a
//! length corrupted upwards sends the reader past the end of the file, which
//! looks exactly like a torn tail. Checking the length on its own first means
//! a bad length is always [`TraceError::Corrupt`], a short file always
//! [`TraceError::TornTail`], and no hostile length is ever acted upon.
//!
//! Reading and writing hold at most one frame in memory (one chunk when
//! compressed), whatever the trace's length.
//!
//! ```
//! use trace::file::{Compression, TraceHeader, TraceReader, TraceWriter};
//! use trace::Event;
//!
//! let mut w = TraceWriter::new(Vec::new(), &TraceHeader::new("doc"), Compression::None)?;
//! w.write(&Event::Reset { time_ns: 5 })?;
//! let bytes = w.finish()?;
//! let r = TraceReader::new(&bytes[..])?;
//! assert_eq!(r.header().producer, "doc");
//! let events: Vec<Event> = r.collect::<Result<_, _>>()?;
//! assert_eq!(events, vec![Event::Reset { time_ns: 5 }]);
//! # Ok::<(), trace::file::TraceError>(())
//! ```

mod codec;
mod header;
mod reader;
mod writer;

pub use header::{PayloadMode, TraceHeader};
pub use reader::TraceReader;
pub use writer::TraceWriter;

use std::path::{Path, PathBuf};

/// The four bytes every trace starts with.
pub const MAGIC: [u8; 4] = *b"SCZT";
/// Format major version this crate writes. A reader refuses files with a
/// newer major version: their layout may differ anywhere after the version
/// field.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version this crate writes. Newer minors only add things an
/// older reader can skip (new event kinds, trailing header fields), so they
/// are accepted.
pub const VERSION_MINOR: u16 = 0;
/// Size of the fixed preamble before the first frame.
pub const PREAMBLE_LEN: usize = 16;
/// Size of a frame's header (length and two CRCs).
pub const FRAME_HEADER_LEN: usize = 12;
/// Largest frame body a reader accepts: a hostile length can never make it
/// allocate more.
pub const MAX_FRAME_BODY: u32 = 64 << 20;
/// Largest encoded event. One event less than a frame, so that a chunk holding
/// a single incompressible event still fits in a frame after zstd's worst-case
/// expansion.
pub const MAX_EVENT_BODY: u32 = 63 << 20;
/// The writer closes a compressed chunk once its uncompressed records reach
/// this size: large enough for zstd to find the repetition between commands,
/// small enough that a crash loses little.
pub const CHUNK_TARGET: usize = 128 << 10;

/// How event frames are stored after the header frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// One frame per event. What a C writer produces.
    None,
    /// Events are gathered into chunks, each chunk one zstd frame inside one
    /// trace frame. A torn or corrupt chunk loses every event in it.
    Zstd {
        /// zstd compression level (1 fast ... 19 small; 3 is zstd's default).
        level: i32,
    },
}

impl Compression {
    /// zstd at its default level, the usual choice for recordings.
    pub const ZSTD_DEFAULT: Compression = Compression::Zstd { level: 3 };

    /// The preamble's compression byte.
    pub(crate) fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd { .. } => 1,
        }
    }
}

/// Why a trace could not be read or written.
///
/// Offsets are byte offsets from the start of the file, pointing at the start
/// of the frame (or preamble) concerned, so `dd skip=OFFSET` lands on it.
/// Errors from [`TraceReader::open`] and [`TraceWriter::create`] arrive
/// wrapped in [`TraceError::InFile`]; [`TraceError::inner`] strips that for
/// matching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The underlying reader or writer failed.
    ///
    /// The message includes the OS error, so it is not also chained as a
    /// `source` (an error chain would print it twice).
    #[error("I/O error at byte {offset}: {cause}")]
    Io {
        /// Bytes of the trace read or written before the failure.
        offset: u64,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The trace file could not be opened or created.
    #[error("cannot open: {cause}")]
    Open {
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The file does not start with `SCZT`: not a trace at all.
    #[error("not a Scuzz trace: bytes 0..4 are {found:02x?}, expected \"SCZT\"")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 4],
    },
    /// Written by a newer, incompatible version of the format.
    #[error(
        "trace format version {found_major}.{found_minor} is newer than this scuzz supports \
         (major version {supported}); upgrade scuzz to read it"
    )]
    UnsupportedVersion {
        /// Major version in the file.
        found_major: u16,
        /// Minor version in the file.
        found_minor: u16,
        /// The newest major version this reader understands.
        supported: u16,
    },
    /// The preamble names a compression method this reader does not know.
    #[error("trace uses unknown compression method {code} (preamble byte 8)")]
    UnsupportedCompression {
        /// The preamble's compression byte.
        code: u8,
    },
    /// A frame failed its CRC or its content does not decode.
    #[error("corrupt trace at byte {offset}: {reason}")]
    Corrupt {
        /// Start of the bad frame (or of the preamble).
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The trace ends part-way through a frame: a crash while recording, or
    /// a copy cut short. Everything before `offset` was read.
    #[error("trace is cut short inside the frame at byte {offset} (torn tail)")]
    TornTail {
        /// Start of the incomplete frame.
        offset: u64,
    },
    /// An event could not be encoded, or is too large for a frame.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// An event's payload breaks the header's [`PayloadMode`] promise.
    #[error("event carries a {found} payload, but the trace header promises {promised:?}")]
    PayloadMode {
        /// What the header promised.
        promised: PayloadMode,
        /// The payload kind the event carried.
        found: &'static str,
    },
    /// An earlier write failed part-way, so the trace's tail is unusable and
    /// the writer refuses to append after it.
    #[error("an earlier write failed at byte {offset}; the trace cannot be extended")]
    Poisoned {
        /// Where the failed write started.
        offset: u64,
    },
    /// Any of the above, for a named file. The message is the file name
    /// and the wrapped message; [`TraceError::inner`] gives the wrapped error.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The trace file.
        path: PathBuf,
        /// What went wrong in it.
        error: Box<TraceError>,
    },
}

impl TraceError {
    /// This error with the file it concerns, so the message names it.
    /// Already-wrapped errors are returned unchanged.
    pub fn in_file(self, path: &Path) -> TraceError {
        match self {
            e @ TraceError::InFile { .. } => e,
            e => TraceError::InFile {
                path: path.to_path_buf(),
                error: Box::new(e),
            },
        }
    }

    /// The error without its file context, for matching on the variant.
    pub fn inner(&self) -> &TraceError {
        match self {
            TraceError::InFile { error, .. } => error.inner(),
            e => e,
        }
    }

    /// The file the error concerns, if known.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TraceError::InFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The byte offset the error concerns, if it has one.
    pub fn offset(&self) -> Option<u64> {
        match self.inner() {
            TraceError::Io { offset, .. }
            | TraceError::Corrupt { offset, .. }
            | TraceError::TornTail { offset }
            | TraceError::Poisoned { offset } => Some(*offset),
            TraceError::BadMagic { .. }
            | TraceError::UnsupportedVersion { .. }
            | TraceError::UnsupportedCompression { .. } => Some(0),
            _ => None,
        }
    }
}

/// CRC32C as every frame uses it (Castagnoli, reflected, init and final XOR
/// 0xFFFFFFFF; `crc32c("123456789") == 0xE3069283`).
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The 12-byte header of a frame with this body.
pub(crate) fn frame_header(body: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let len = (body.len() as u32).to_le_bytes();
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&len);
    h[4..8].copy_from_slice(&crc32c(&len).to_le_bytes());
    h[8..12].copy_from_slice(&crc32c(body).to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_check_value() {
        // RFC 3720 B.4 / the Castagnoli check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn in_file_wraps_once_and_inner_unwraps() {
        let e = TraceError::TornTail { offset: 7 }.in_file(Path::new("a.sczt"));
        let e = e.in_file(Path::new("b.sczt"));
        assert_eq!(
            e.to_string(),
            "a.sczt: trace is cut short inside the frame at byte 7 (torn tail)"
        );
        assert!(matches!(e.inner(), TraceError::TornTail { offset: 7 }));
        assert_eq!(e.offset(), Some(7));
    }
}
