//! Where events come from: a trace file (streamed, reopened for each pass)
//! or events already in memory (a fuzzer's reproducer, a test).

use crate::error::ReplayError;
use std::path::{Path, PathBuf};
use trace::file::{TraceHeader, TraceReader};
use trace::Event;

/// A stream of events that can be started again from the beginning.
pub trait TraceSource {
    /// Names the trace in reports.
    fn name(&self) -> String;

    /// The trace's header, if it has one.
    fn header(&self) -> Option<&TraceHeader>;

    /// Starts a pass over the events.
    fn open(
        &self,
    ) -> Result<Box<dyn Iterator<Item = Result<Event, ReplayError>> + '_>, ReplayError>;
}

/// A `.sczt` file, read in constant memory.
pub struct FileTrace {
    path: PathBuf,
    header: TraceHeader,
}

impl FileTrace {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<FileTrace, ReplayError> {
        let r = TraceReader::open(path).map_err(|e| trace_error(path, e))?;
        Ok(FileTrace {
            path: path.to_path_buf(),
            header: r.header().clone(),
        })
    }
}

fn trace_error(path: &Path, e: trace::file::TraceError) -> ReplayError {
    ReplayError::Trace {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl TraceSource for FileTrace {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn header(&self) -> Option<&TraceHeader> {
        Some(&self.header)
    }

    fn open(
        &self,
    ) -> Result<Box<dyn Iterator<Item = Result<Event, ReplayError>> + '_>, ReplayError> {
        let r = TraceReader::open(&self.path).map_err(|e| trace_error(&self.path, e))?;
        let path = self.path.clone();
        Ok(Box::new(
            r.map(move |ev| ev.map_err(|e| trace_error(&path, e))),
        ))
    }
}

/// Events held in memory.
pub struct MemoryTrace {
    /// Name for reports.
    pub name: String,
    /// Header, if any.
    pub header: Option<TraceHeader>,
    /// The events, in stream order.
    pub events: Vec<Event>,
}

impl TraceSource for MemoryTrace {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn header(&self) -> Option<&TraceHeader> {
        self.header.as_ref()
    }

    fn open(
        &self,
    ) -> Result<Box<dyn Iterator<Item = Result<Event, ReplayError>> + '_>, ReplayError> {
        Ok(Box::new(self.events.iter().cloned().map(Ok)))
    }
}
