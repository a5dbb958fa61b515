//! Streaming trace writer.

use super::codec;
use super::header::{payload_kind, PayloadMode, Preamble, TraceHeader};
use super::{frame_header, Compression, TraceError, CHUNK_TARGET, MAX_EVENT_BODY, MAX_FRAME_BODY};
use crate::command::Event;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes a trace, one event at a time, in constant memory.
///
/// Uncompressed, each event is written as its own frame as soon as
/// [`TraceWriter::write`] is called (into `W`, which should buffer).
/// Compressed, events gather in a chunk of about [`CHUNK_TARGET`] bytes that is
/// compressed and written when full, at [`TraceWriter::flush`] and at
/// [`TraceWriter::finish`]. Dropping the writer without `finish` leaves a
/// trace without its end frame, which readers accept but report as
/// unfinished (and, compressed, without its last chunk).
pub struct TraceWriter<W: Write> {
    w: W,
    path: Option<PathBuf>,
    payload_mode: PayloadMode,
    /// Bytes handed to `w` so far.
    offset: u64,
    /// Scratch for one event's body.
    body: Vec<u8>,
    zstd: Option<Zstd>,
    events: u64,
    poisoned: Option<u64>,
}

struct Zstd {
    compressor: zstd::bulk::Compressor<'static>,
    /// Uncompressed records of the open chunk.
    chunk: Vec<u8>,
    /// Scratch for the compressed chunk.
    out: Vec<u8>,
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace in `w`: writes the preamble and the header frame.
    pub fn new(
        w: W,
        header: &TraceHeader,
        compression: Compression,
    ) -> Result<TraceWriter<W>, TraceError> {
        let zstd = match compression {
            Compression::None => None,
            Compression::Zstd { level } => {
                let compressor = zstd::bulk::Compressor::new(level)
                    .map_err(|e| TraceError::Encode(format!("zstd level {level}: {e}")))?;
                Some(Zstd {
                    compressor,
                    chunk: Vec::with_capacity(CHUNK_TARGET + 4096),
                    out: Vec::new(),
                })
            }
        };
        let mut tw = TraceWriter {
            w,
            path: None,
            payload_mode: header.payload_mode,
            offset: 0,
            body: Vec::with_capacity(256),
            zstd,
            events: 0,
            poisoned: None,
        };
        let preamble = Preamble::current(compression).encode();
        tw.put(&[&preamble])?;
        let mut body = Vec::new();
        codec::encode_header(header, &mut body).map_err(TraceError::Encode)?;
        if body.len() > MAX_EVENT_BODY as usize {
            return Err(TraceError::Encode(format!(
                "header is {} bytes, more than the {MAX_EVENT_BODY}-byte limit",
                body.len()
            )));
        }
        tw.put_frame_owned(&body)?;
        Ok(tw)
    }

    /// Appends one event.
    ///
    /// Fails without writing anything if the event cannot be encoded, is
    /// larger than [`MAX_EVENT_BODY`] or carries a payload the header's
    /// [`PayloadMode`] does not permit; the writer stays usable. An I/O
    /// failure poisons the writer, as the trace's tail is then unknown.
    pub fn write(&mut self, ev: &Event) -> Result<(), TraceError> {
        self.check_poison()?;
        let payload = match ev {
            Event::Submit(s) => Some(&s.payload),
            Event::Complete(c) => Some(&c.payload),
            _ => None,
        };
        if let Some(p) = payload {
            if !self.payload_mode.permits(p) {
                return Err(TraceError::PayloadMode {
                    promised: self.payload_mode,
                    found: payload_kind(p),
                });
            }
        }
        self.body.clear();
        codec::encode_event(ev, &mut self.body)
            .map_err(|e| self.with_path(TraceError::Encode(e)))?;
        if self.body.len() > MAX_EVENT_BODY as usize {
            return Err(self.with_path(TraceError::Encode(format!(
                "event is {} bytes encoded, more than the {MAX_EVENT_BODY}-byte limit",
                self.body.len()
            ))));
        }
        self.events += 1;
        match &mut self.zstd {
            None => {
                let body = std::mem::take(&mut self.body);
                let r = self.put_frame_owned(&body);
                self.body = body;
                r
            }
            Some(z) => {
                if !z.chunk.is_empty() && z.chunk.len() + 4 + self.body.len() > CHUNK_TARGET {
                    self.emit_chunk()?;
                }
                let z = self.zstd.as_mut().expect("compressed writer has a chunk");
                z.chunk
                    .extend_from_slice(&(self.body.len() as u32).to_le_bytes());
                z.chunk.extend_from_slice(&self.body);
                if z.chunk.len() >= CHUNK_TARGET {
                    self.emit_chunk()?;
                }
                Ok(())
            }
        }
    }

    /// Makes every event written so far readable by another process: closes
    /// the open chunk (compressed) and flushes `W`. It does not fsync; see
    /// [`TraceWriter::sync`] for files.
    ///
    /// Each flush of a compressed trace ends a chunk, so flushing after every
    /// few events costs compression ratio.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.check_poison()?;
        self.emit_chunk()?;
        let offset = self.offset;
        self.w
            .flush()
            .map_err(|cause| self.with_path(TraceError::Io { offset, cause }))
    }

    /// Writes the end frame, flushes, and returns `W`. A trace without its
    /// end frame is readable, but readers report it as unfinished.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.flush()?;
        self.put_frame_owned(&[])?;
        let offset = self.offset;
        self.w
            .flush()
            .map_err(|cause| self.with_path(TraceError::Io { offset, cause }))?;
        Ok(self.w)
    }

    /// Events accepted so far.
    pub fn events_written(&self) -> u64 {
        self.events
    }

    /// Bytes handed to `W` so far (the compressed chunk being filled is not
    /// counted until it is written).
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.w
    }

    fn check_poison(&self) -> Result<(), TraceError> {
        match self.poisoned {
            Some(offset) => Err(self.with_path(TraceError::Poisoned { offset })),
            None => Ok(()),
        }
    }

    fn with_path(&self, e: TraceError) -> TraceError {
        match &self.path {
            Some(p) => e.in_file(p),
            None => e,
        }
    }

    /// Compresses and writes the open chunk, if it holds anything.
    fn emit_chunk(&mut self) -> Result<(), TraceError> {
        let Some(z) = &mut self.zstd else {
            return Ok(());
        };
        if z.chunk.is_empty() {
            return Ok(());
        }
        z.out.clear();
        z.out
            .reserve(zstd::zstd_safe::compress_bound(z.chunk.len()));
        z.compressor
            .compress_to_buffer(&z.chunk[..], &mut z.out)
            .map_err(|e| TraceError::Encode(format!("zstd: {e}")))?;
        z.chunk.clear();
        let out = std::mem::take(&mut z.out);
        let r = self.put_frame_owned(&out);
        if let Some(z) = &mut self.zstd {
            z.out = out;
        }
        r
    }

    fn put_frame_owned(&mut self, body: &[u8]) -> Result<(), TraceError> {
        if body.len() > MAX_FRAME_BODY as usize {
            return Err(self.with_path(TraceError::Encode(format!(
                "frame of {} bytes exceeds the {MAX_FRAME_BODY}-byte limit",
                body.len()
            ))));
        }
        let header = frame_header(body);
        self.put(&[&header, body])
    }

    /// Writes `parts` as one unit: on failure the writer is poisoned at the
    /// unit's start, the last offset up to which the trace is known intact.
    fn put(&mut self, parts: &[&[u8]]) -> Result<(), TraceError> {
        let start = self.offset;
        for part in parts {
            if let Err(cause) = self.w.write_all(part) {
                self.poisoned = Some(start);
                return Err(self.with_path(TraceError::Io {
                    offset: start,
                    cause,
                }));
            }
            self.offset += part.len() as u64;
        }
        Ok(())
    }
}

impl TraceWriter<BufWriter<File>> {
    /// Creates (or truncates) the file at `path` and starts a trace in it.
    /// Errors name the file.
    pub fn create(
        path: &Path,
        header: &TraceHeader,
        compression: Compression,
    ) -> Result<TraceWriter<BufWriter<File>>, TraceError> {
        let f = File::create(path).map_err(|cause| TraceError::Open { cause }.in_file(path))?;
        let mut w = TraceWriter::new(BufWriter::with_capacity(256 << 10, f), header, compression)
            .map_err(|e| e.in_file(path))?;
        w.path = Some(path.to_path_buf());
        Ok(w)
    }

    /// [`TraceWriter::flush`], then asks the OS to put the data on stable
    /// storage, so a power cut after this returns loses nothing written.
    pub fn sync(&mut self) -> Result<(), TraceError> {
        self.flush()?;
        let offset = self.offset;
        self.w
            .get_ref()
            .sync_data()
            .map_err(|cause| self.with_path(TraceError::Io { offset, cause }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// Accepts `room` bytes, then fails every write.
    struct Full {
        room: usize,
        data: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_poisons_the_writer() {
        let h = TraceHeader::new("t");
        let mut w = TraceWriter::new(
            Full {
                room: 80,
                data: Vec::new(),
            },
            &h,
            Compression::None,
        )
        .unwrap();
        let start = w.bytes_written();
        let note = Event::Note {
            time_ns: 0,
            text: "x".repeat(100),
        };
        let e = w.write(&note).unwrap_err();
        assert!(
            matches!(e, TraceError::Io { offset, .. } if offset == start),
            "{e}"
        );
        let e = w.write(&Event::Reset { time_ns: 1 }).unwrap_err();
        assert!(
            matches!(e, TraceError::Poisoned { offset } if offset == start),
            "{e}"
        );
        assert!(matches!(w.finish(), Err(TraceError::Poisoned { .. })));
    }

    #[test]
    fn an_oversized_event_is_refused_and_the_writer_carries_on() {
        let mut h = TraceHeader::new("t");
        h.payload_mode = PayloadMode::Mixed;
        let mut w = TraceWriter::new(Vec::new(), &h, Compression::ZSTD_DEFAULT).unwrap();
        let huge = Event::Note {
            time_ns: 0,
            text: "x".repeat(MAX_EVENT_BODY as usize),
        };
        assert!(matches!(w.write(&huge), Err(TraceError::Encode(_))));
        w.write(&Event::Reset { time_ns: 1 }).unwrap();
        assert_eq!(w.events_written(), 1);
        let bytes = w.finish().unwrap();
        let events: Vec<Event> = crate::file::TraceReader::new(&bytes[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(events, vec![Event::Reset { time_ns: 1 }]);
    }
}
