//! Streaming trace reader.

use super::codec;
use super::header::{Preamble, TraceHeader};
use super::{
    crc32c, Compression, TraceError, FRAME_HEADER_LEN, MAGIC, MAX_EVENT_BODY, MAX_FRAME_BODY,
    PREAMBLE_LEN, VERSION_MAJOR, VERSION_MINOR,
};
use crate::command::Event;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// Bodies up to this size are read into a buffer sized from the (CRC-checked)
/// length; longer ones grow with the data actually present, so a crafted
/// length on a short file cannot make the reader allocate 64 MiB.
const EAGER_BODY: usize = 1 << 20;

/// Reads a trace as an iterator of events, in constant memory.
///
/// Iteration yields every event up to the first problem, then that problem
/// as one `Err` ([`TraceError::TornTail`] if the trace was cut short,
/// [`TraceError::Corrupt`] if a frame fails its checks), then ends. A trace
/// that simply stops after a whole frame (a recording still in progress, or
/// one whose writer never called `finish`) ends without error;
/// [`TraceReader::is_complete`] tells the two apart.
pub struct TraceReader<R: Read> {
    r: R,
    path: Option<PathBuf>,
    header: TraceHeader,
    major: u16,
    minor: u16,
    compression: Compression,
    /// Bytes consumed from `r`.
    offset: u64,
    /// The current frame's body.
    body: Vec<u8>,
    zstd: Option<ChunkState>,
    done: bool,
    complete: bool,
    skipped: u64,
}

struct ChunkState {
    decompressor: zstd::bulk::Decompressor<'static>,
    /// The current chunk, decompressed.
    raw: Vec<u8>,
    /// Next record in `raw`.
    pos: usize,
    /// File offset of the chunk's frame, for errors.
    frame_offset: u64,
    /// Index of the next record within the chunk, for errors.
    record: u64,
}

impl<R: Read> TraceReader<R> {
    /// Reads and checks the preamble and header frame.
    pub fn new(mut r: R) -> Result<TraceReader<R>, TraceError> {
        let mut p = [0u8; PREAMBLE_LEN];
        let got = read_full(&mut r, &mut p).map_err(|cause| TraceError::Io { offset: 0, cause })?;
        if got < PREAMBLE_LEN {
            // Say "not a trace" rather than "torn" when the bytes present
            // already rule a trace out.
            let n = got.min(4);
            if p[..n] != MAGIC[..n] {
                return Err(TraceError::BadMagic {
                    found: [p[0], p[1], p[2], p[3]],
                });
            }
            let major = u16::from_le_bytes([p[4], p[5]]);
            if got >= 6 && major > VERSION_MAJOR {
                return Err(TraceError::UnsupportedVersion {
                    found_major: major,
                    found_minor: u16::from_le_bytes([p[6], p[7]]),
                    supported: VERSION_MAJOR,
                });
            }
            return Err(TraceError::TornTail { offset: 0 });
        }
        let preamble = Preamble::decode(&p)?;
        let compression = preamble.compression()?;
        let zstd = match compression {
            Compression::None => None,
            Compression::Zstd { .. } => Some(ChunkState {
                decompressor: zstd::bulk::Decompressor::new().map_err(|cause| TraceError::Io {
                    offset: PREAMBLE_LEN as u64,
                    cause,
                })?,
                raw: Vec::new(),
                pos: 0,
                frame_offset: 0,
                record: 0,
            }),
        };
        let mut tr = TraceReader {
            r,
            path: None,
            header: TraceHeader::new(""),
            major: preamble.major,
            minor: preamble.minor,
            compression,
            offset: PREAMBLE_LEN as u64,
            body: Vec::new(),
            zstd,
            done: false,
            complete: false,
            skipped: 0,
        };
        let start = tr.offset;
        match tr.read_frame()? {
            None => return Err(TraceError::TornTail { offset: start }),
            Some(0) => {
                return Err(TraceError::Corrupt {
                    offset: start,
                    reason: "end frame where the header frame belongs".into(),
                })
            }
            Some(_) => {}
        }
        tr.header =
            codec::decode_header(&tr.body, tr.newer_minor()).map_err(|e| TraceError::Corrupt {
                offset: start,
                reason: format!("header does not decode: {e}"),
            })?;
        Ok(tr)
    }

    /// The trace's header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Format version of the file, `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        (self.major, self.minor)
    }

    /// How the events are stored (the zstd level is not recorded; it reads
    /// as zstd's default).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Bytes consumed so far: after an event, the end of the frame that held
    /// it (compressed: of its chunk).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the end frame was reached: the writer finished the trace.
    /// Meaningful once iteration has ended.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Events of kinds this reader does not know (from a newer minor version)
    /// that were skipped.
    pub fn skipped_unknown(&self) -> u64 {
        self.skipped
    }

    fn newer_minor(&self) -> bool {
        self.minor > VERSION_MINOR
    }

    /// Reads one frame into `self.body`; `Ok(None)` at a clean end of file,
    /// `Ok(Some(len))` otherwise.
    fn read_frame(&mut self) -> Result<Option<usize>, TraceError> {
        let start = self.offset;
        let mut h = [0u8; FRAME_HEADER_LEN];
        let got = read_full(&mut self.r, &mut h).map_err(|cause| TraceError::Io {
            offset: start,
            cause,
        })?;
        if got == 0 {
            return Ok(None);
        }
        if got < FRAME_HEADER_LEN {
            return Err(TraceError::TornTail { offset: start });
        }
        let len_bytes = [h[0], h[1], h[2], h[3]];
        let len = u32::from_le_bytes(len_bytes);
        let len_crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let body_crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if crc32c(&len_bytes) != len_crc {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: "frame length fails its CRC".into(),
            });
        }
        if len > MAX_FRAME_BODY {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: format!("frame length {len} exceeds the {MAX_FRAME_BODY}-byte limit"),
            });
        }
        let len = len as usize;
        self.body.clear();
        let complete = if len <= EAGER_BODY {
            self.body.resize(len, 0);
            let got = read_full(&mut self.r, &mut self.body).map_err(|cause| TraceError::Io {
                offset: start,
                cause,
            })?;
            got == len
        } else {
            let got = (&mut self.r)
                .take(len as u64)
                .read_to_end(&mut self.body)
                .map_err(|cause| TraceError::Io {
                    offset: start,
                    cause,
                })?;
            got == len
        };
        if !complete {
            return Err(TraceError::TornTail { offset: start });
        }
        if crc32c(&self.body) != body_crc {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: "frame body fails its CRC".into(),
            });
        }
        self.offset = start + (FRAME_HEADER_LEN + len) as u64;
        Ok(Some(len))
    }

    fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        let allow_trailing = self.newer_minor();
        loop {
            if let Some(z) = &mut self.zstd {
                if z.pos < z.raw.len() {
                    let at = z.frame_offset;
                    let idx = z.record;
                    let rest = &z.raw[z.pos..];
                    let bad = |why: String| TraceError::Corrupt {
                        offset: at,
                        reason: format!("record {idx} of the chunk: {why}"),
                    };
                    let Some(len) = rest.get(..4) else {
                        return Err(bad("chunk ends inside a record length".into()));
                    };
                    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
                    if len == 0 || len > MAX_EVENT_BODY {
                        return Err(bad(format!("record length {len} is out of range")));
                    }
                    let Some(body) = rest.get(4..4 + len as usize) else {
                        return Err(bad(format!("record of {len} bytes overruns the chunk")));
                    };
                    let decoded = decode(body, allow_trailing).map_err(bad);
                    z.pos += 4 + len as usize;
                    z.record += 1;
                    match decoded? {
                        Some(ev) => return Ok(Some(ev)),
                        None => {
                            self.skipped += 1;
                            continue;
                        }
                    }
                }
            }
            let start = self.offset;
            let len = match self.read_frame()? {
                None => return Ok(None),
                Some(len) => len,
            };
            if len == 0 {
                self.complete = true;
                let mut probe = [0u8; 1];
                let got = read_full(&mut self.r, &mut probe).map_err(|cause| TraceError::Io {
                    offset: self.offset,
                    cause,
                })?;
                if got != 0 {
                    return Err(TraceError::Corrupt {
                        offset: self.offset,
                        reason: "data after the end frame".into(),
                    });
                }
                return Ok(None);
            }
            match &mut self.zstd {
                None => match decode(&self.body, allow_trailing) {
                    Ok(Some(ev)) => return Ok(Some(ev)),
                    Ok(None) => self.skipped += 1,
                    Err(reason) => {
                        return Err(TraceError::Corrupt {
                            offset: start,
                            reason,
                        })
                    }
                },
                Some(z) => {
                    decompress(&mut z.decompressor, &self.body, &mut z.raw).map_err(|reason| {
                        TraceError::Corrupt {
                            offset: start,
                            reason,
                        }
                    })?;
                    z.pos = 0;
                    z.record = 0;
                    z.frame_offset = start;
                }
            }
        }
    }

    fn with_path(&self, e: TraceError) -> TraceError {
        match &self.path {
            Some(p) => e.in_file(p),
            None => e,
        }
    }
}

impl TraceReader<BufReader<File>> {
    /// Opens the trace at `path`. Every error, now and during iteration,
    /// names the file.
    pub fn open(path: &Path) -> Result<TraceReader<BufReader<File>>, TraceError> {
        let f = File::open(path).map_err(|cause| TraceError::Open { cause }.in_file(path))?;
        let mut r = TraceReader::new(BufReader::with_capacity(256 << 10, f))
            .map_err(|e| e.in_file(path))?;
        r.path = Some(path.to_path_buf());
        Ok(r)
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Result<Event, TraceError>> {
        if self.done {
            return None;
        }
        match self.next_event() {
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(self.with_path(e)))
            }
        }
    }
}

/// Decodes an event body; `Ok(None)` for an event kind from a newer minor
/// version, which the caller skips.
fn decode(body: &[u8], newer_minor: bool) -> Result<Option<Event>, String> {
    match codec::decode_event(body, newer_minor) {
        Ok(ev) => Ok(Some(ev)),
        Err(_)
            if newer_minor
                && codec::event_variant(body).is_some_and(|v| v >= codec::KNOWN_EVENT_VARIANTS) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("event does not decode: {e}")),
    }
}

/// Decompresses one chunk into `raw`, refusing to produce more than a frame's
/// worth of bytes whatever the chunk claims.
fn decompress(
    d: &mut zstd::bulk::Decompressor<'static>,
    src: &[u8],
    raw: &mut Vec<u8>,
) -> Result<(), String> {
    let limit = MAX_FRAME_BODY as usize;
    raw.clear();
    match zstd::zstd_safe::get_frame_content_size(src) {
        Ok(Some(n)) => {
            if n > limit as u64 {
                return Err(format!(
                    "chunk claims {n} bytes uncompressed, over the {limit} limit"
                ));
            }
            raw.reserve(n as usize);
            let got = d
                .decompress_to_buffer(src, raw)
                .map_err(|e| format!("zstd: {e}"))?;
            if got as u64 != n {
                return Err(format!(
                    "chunk decompressed to {got} bytes, its frame says {n}"
                ));
            }
        }
        Ok(None) => {
            // A streaming compressor may leave the size out.
            let dec =
                zstd::stream::read::Decoder::with_buffer(src).map_err(|e| format!("zstd: {e}"))?;
            dec.take(limit as u64 + 1)
                .read_to_end(raw)
                .map_err(|e| format!("zstd: {e}"))?;
            if raw.len() > limit {
                return Err(format!("chunk decompresses to more than {limit} bytes"));
            }
        }
        Err(_) => return Err("chunk is not a zstd frame".into()),
    }
    if raw.is_empty() {
        return Err("chunk holds no events".into());
    }
    Ok(())
}

/// Reads until `buf` is full or the reader is exhausted; returns the count.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
