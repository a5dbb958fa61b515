//! The recording proxy behind `scuzz record`: an iSCSI relay between any
//! initiator and any target that forwards every byte unchanged and records
//! each command it carries.
//!
//! Bytes are forwarded as they arrive, never re-encoded. Each direction
//! has a thread that reads what has arrived into one buffer, writes it on
//! in one call and cuts it into PDUs where it lies (RFC 7143 §11.2: BHS,
//! AHS, header digest, padded data segment, data digest): only headers are
//! copied, and command data goes from the relay's buffer straight into the
//! command's reassembly buffer, or nowhere with `--payload none`.
//! Bytes are parsed before they are forwarded, in both directions, so the
//! session sees each PDU before the peer can react to it (a command before
//! its answer, a status before its ITT is reused, the final Login Response
//! before the first digest-protected PDU).
//!
//! Events go to a writer thread, so trace encoding and compression never
//! run on the relay threads; the writer flushes every second, so a crash
//! loses at most a second of trace. What is queued for it is bounded in
//! bytes: a writer slower than the wire slows the relay rather than growing
//! memory. Either side dropping ends the connection: commands still open
//! are written as [`trace::ServiceResponse::Incomplete`].

pub mod session;

use session::{DataUse, PayloadCapture, Session};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use trace::file::{TraceError, TraceWriter};
use trace::{Event, Payload};

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Accepting connections failed.
    #[error("accepting on {addr}: {source}")]
    Accept {
        /// The listening address.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The trace could not be written.
    #[error("writing the trace: {0}")]
    Trace(#[from] TraceError),
}

/// Counts of one proxy run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxySummary {
    /// Initiator connections relayed.
    pub connections: u64,
    /// Commands recorded.
    pub commands: u64,
    /// Events written.
    pub events: u64,
}

/// Payload bytes the relay may have queued for the writer. Beyond this it
/// waits: a writer slower than the wire (full payloads to a slow disk)
/// slows the relay down instead of growing the proxy's memory.
const BACKLOG_BYTES: u64 = 64 << 20;

/// Bytes of events sent to the writer and not yet written.
#[derive(Default)]
struct Backlog {
    bytes: Mutex<u64>,
    drained: Condvar,
    closed: std::sync::atomic::AtomicBool,
}

/// Closes the backlog when the writer thread ends, however it ends: once
/// nothing drains it, nobody may wait on it.
struct WriterGone<'a>(&'a Backlog);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        *self.0.lock() = 0;
        self.0.closed.store(true, Ordering::Relaxed);
        self.0.drained.notify_all();
    }
}

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        match self.bytes.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        }
    }

    /// Counts `n` more bytes in, if there is room (always, when nothing is
    /// queued: one event larger than the budget still passes).
    fn try_add(&self, n: u64) -> bool {
        let mut q = self.lock();
        let room = *q == 0 || *q + n <= BACKLOG_BYTES;
        if room {
            *q += n;
        }
        room
    }

    /// Counts `n` more bytes in, waiting for the writer to make room.
    fn add(&self, n: u64) {
        let mut q = self.lock();
        while *q != 0 && *q + n > BACKLOG_BYTES && !self.closed.load(Ordering::Relaxed) {
            q = match self.drained.wait(q) {
                Ok(q) => q,
                Err(p) => p.into_inner(),
            };
        }
        *q += n;
    }

    /// The writer has written `n` bytes' worth of events.
    fn remove(&self, n: u64) {
        let mut q = self.lock();
        *q = q.saturating_sub(n);
        self.drained.notify_all();
    }
}

/// What an event holds in memory beyond its fixed fields: what the backlog
/// counts.
fn held_bytes(e: &Event) -> u64 {
    let payload = |p: &Payload| match p {
        Payload::Full(b) => b.len() as u64,
        Payload::Digests { crcs, .. } => crcs.len() as u64 * 4,
        _ => 0,
    };
    match e {
        Event::Submit(s) => payload(&s.payload) + s.cdb.len() as u64,
        Event::Complete(c) => payload(&c.payload) + c.sense.len() as u64,
        Event::Note { text, .. } => text.len() as u64,
        _ => 0,
    }
}

/// An event on its way to the writer. A digest-mode payload travels as its
/// bytes with the block size to digest them at: the CRCs are computed on the
/// writer thread, not on the relay's path (on the 2-core machine, the writer
/// runs on the core the relay's pipeline leaves idle).
struct Queued {
    event: Event,
    digest: Option<u32>,
}

impl From<Event> for Queued {
    fn from(event: Event) -> Self {
        Queued {
            event,
            digest: None,
        }
    }
}

impl Queued {
    /// The event as the trace records it.
    fn finish(self) -> Event {
        let Queued { mut event, digest } = self;
        if let Some(granularity) = digest {
            let payload = match &mut event {
                Event::Submit(s) => &mut s.payload,
                Event::Complete(c) => &mut c.payload,
                _ => return event,
            };
            if let Payload::Full(bytes) = payload {
                *payload = session::digests(granularity, bytes);
            }
        }
        event
    }
}

/// Tags `events` (fresh from `s`, which defers digests) with the block
/// sizes their payloads are to be digested at.
fn queue(events: Vec<Event>, s: &mut Session) -> Vec<Queued> {
    events
        .into_iter()
        .map(|event| {
            let bytes = match &event {
                Event::Submit(x) => matches!(x.payload, Payload::Full(_)),
                Event::Complete(x) => matches!(x.payload, Payload::Full(_)),
                _ => false,
            };
            let digest = if bytes {
                s.take_deferred_digest()
            } else {
                None
            };
            Queued { event, digest }
        })
        .collect()
}

struct Shared {
    seq: Arc<AtomicU64>,
    start: Instant,
    tx: SyncSender<Queued>,
    backlog: Arc<Backlog>,
    capture: PayloadCapture,
    commands: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Queues events for the writer from an async task.
    fn send(&self, events: Vec<Queued>) {
        for e in events {
            let n = held_bytes(&e.event);
            if !self.backlog.try_add(n) {
                // The writer is behind: wait for it without blocking the
                // runtime's other tasks.
                tokio::task::block_in_place(|| self.backlog.add(n));
            }
            match self.tx.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    let _ = tokio::task::block_in_place(|| self.tx.send(e).map_err(drop));
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Queues events for the writer from a relay thread, which may block.
    fn send_blocking(&self, events: Vec<Queued>) {
        for e in events {
            self.backlog.add(held_bytes(&e.event));
            if self.tx.send(e).is_err() {
                return;
            }
        }
    }
}

/// Runs the proxy until `shutdown` resolves: accepts initiators on
/// `listener`, connects each to `target`, relays and records into `writer`.
/// On shutdown, open connections are closed, their open commands written as
/// incomplete, and the trace finished.
pub async fn run<W: Write + Send + 'static>(
    listener: TcpListener,
    target: String,
    capture: PayloadCapture,
    writer: TraceWriter<W>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(W, ProxySummary), ProxyError> {
    let (tx, rx) = sync_channel::<Queued>(4096);
    let backlog = Arc::new(Backlog::default());
    let written = backlog.clone();
    let writer_thread = std::thread::Builder::new()
        .name("scuzz-trace-wr".into())
        .spawn(move || {
            let _gone = WriterGone(&written);
            write_events(writer, rx, &written)
        })
        .map_err(|cause| TraceError::Io { offset: 0, cause })?;
    let shared = Arc::new(Shared {
        seq: Arc::new(AtomicU64::new(0)),
        start: Instant::now(),
        tx,
        backlog,
        capture,
        commands: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut connections = 0u64;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tokio::pin!(shutdown);
    let accept_err = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            acc = listener.accept() => match acc {
                Ok((sock, peer)) => {
                    connections += 1;
                    let (shared, target, stop) = (shared.clone(), target.clone(), stop_rx.clone());
                    tasks.spawn(relay(sock, peer, target, connections, shared, stop));
                }
                Err(source) => break Some(ProxyError::Accept { addr: addr.clone(), source }),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let commands = shared.commands.load(Ordering::Relaxed);
    drop(shared);
    let (w, events) = writer_thread.join().map_err(|_| TraceError::Io {
        offset: 0,
        cause: std::io::Error::other("trace writer thread panicked"),
    })??;
    if let Some(e) = accept_err {
        return Err(e);
    }
    Ok((
        w,
        ProxySummary {
            connections,
            commands,
            events,
        },
    ))
}

fn write_events<W: Write>(
    mut w: TraceWriter<W>,
    rx: Receiver<Queued>,
    backlog: &Backlog,
) -> Result<(W, u64), TraceError> {
    let mut last_flush = Instant::now();
    let mut n = 0u64;
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(q) => {
                let held = held_bytes(&q.event);
                let e = q.finish();
                let written = w.write(&e);
                drop(e);
                backlog.remove(held);
                written?;
                n += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            w.flush()?;
            last_flush = Instant::now();
        }
    }
    Ok((w.finish()?, n))
}

/// Bytes read from a socket at a time: a few of the largest Data-In PDUs
/// targets send (MaxRecvDataSegmentLength 256 KiB is common), so that one
/// wakeup forwards everything that has arrived.
const RELAY_CHUNK: usize = 512 << 10;

/// Where the cutter is in the PDU passing through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Collecting BHS, AHS and header digest.
    Head,
    /// Inside the data segment.
    Data,
    /// Counting past padding and data digest.
    Trailer,
}

/// Cuts one direction's byte stream into PDUs as it passes (RFC 7143
/// §11.2: BHS, AHS, header digest, padded data segment, data digest),
/// feeding the session each header, the data segment in the pieces the
/// reads delivered, and each PDU's end. The bytes are parsed where they lie
/// in the relay's buffer: only headers (and the few segments the session
/// wants whole) are copied.
struct Cutter {
    from_initiator: bool,
    stage: Stage,
    /// The header bytes collected so far.
    head: Vec<u8>,
    /// How many header bytes this PDU has: 48 until the BHS is in.
    head_len: usize,
    /// The PDU's header, if it decoded; undecodable PDUs are skipped by
    /// their length.
    header: Option<iscsi::pdu::Header>,
    data_use: DataUse,
    data_len: usize,
    data_seen: usize,
    /// Padding and data digest still to pass.
    trailer: usize,
    whole: Vec<u8>,
}

impl Cutter {
    fn new(from_initiator: bool) -> Self {
        Cutter {
            from_initiator,
            stage: Stage::Head,
            head: Vec::with_capacity(48 + 1020 + 4),
            head_len: 48,
            header: None,
            data_use: DataUse::Skip,
            data_len: 0,
            data_seen: 0,
            trailer: 0,
            whole: Vec::new(),
        }
    }

    /// Feeds the next bytes of the stream.
    fn feed(&mut self, mut b: &[u8], s: &mut Session, now: u64, out: &mut Vec<Event>) {
        loop {
            match self.stage {
                Stage::Head => {
                    if b.is_empty() {
                        break;
                    }
                    let n = (self.head_len - self.head.len()).min(b.len());
                    self.head.extend_from_slice(&b[..n]);
                    b = &b[n..];
                    if self.head.len() < self.head_len {
                        continue;
                    }
                    if self.head_len == 48 {
                        let ahs = usize::from(self.head[4]) * 4;
                        let hd = if s.digests().0 { 4 } else { 0 };
                        self.head_len = 48 + ahs + hd;
                        if self.head_len > 48 {
                            continue;
                        }
                    }
                    self.header_done(s, now, out);
                }
                Stage::Data => {
                    if self.data_seen == self.data_len {
                        self.stage = Stage::Trailer;
                        continue;
                    }
                    if b.is_empty() {
                        break;
                    }
                    let n = (self.data_len - self.data_seen).min(b.len());
                    let piece = &b[..n];
                    match (self.data_use, &self.header) {
                        (DataUse::Pieces, Some(h)) => {
                            // data_seen < 2^24: a 24-bit length.
                            s.data(h, self.data_seen as u32, piece);
                        }
                        (DataUse::Whole, _) => self.whole.extend_from_slice(piece),
                        _ => {}
                    }
                    self.data_seen += n;
                    b = &b[n..];
                }
                Stage::Trailer => {
                    if self.trailer == 0 {
                        if let Some(h) = self.header.take() {
                            s.end(self.from_initiator, &h, &self.whole, now, out);
                        }
                        self.stage = Stage::Head;
                        continue;
                    }
                    if b.is_empty() {
                        break;
                    }
                    let n = self.trailer.min(b.len());
                    self.trailer -= n;
                    b = &b[n..];
                }
            }
        }
    }

    /// The whole header is in: decode it and set up its data segment.
    fn header_done(&mut self, s: &mut Session, now: u64, out: &mut Vec<Event>) {
        let h = &self.head;
        let ahs_len = usize::from(h[4]) * 4;
        let data_len = usize::from(h[5]) << 16 | usize::from(h[6]) << 8 | usize::from(h[7]);
        let mut bhs = [0u8; 48];
        bhs.copy_from_slice(&h[..48]);
        self.header = iscsi::pdu::Header::decode(&bhs, &h[48..48 + ahs_len]).ok();
        self.data_use = match &self.header {
            Some(hdr) => s.header(self.from_initiator, hdr, now, out),
            None => DataUse::Skip,
        };
        let dd = if s.digests().1 && data_len > 0 { 4 } else { 0 };
        self.data_len = data_len;
        self.data_seen = 0;
        self.trailer = iscsi::pdu::pad_len(data_len) + dd;
        self.whole.clear();
        self.head.clear();
        self.head_len = 48;
        self.stage = Stage::Data;
    }
}

/// Relays one direction until either side fails: reads what has arrived,
/// forwards it in one write and parses it in place. Returns why it stopped.
///
/// A blocking thread per direction rather than an async task: measured on
/// the 2-core machine, the async relay's extra scheduling hop per wakeup cost
/// more than a tenth of qemu-img's throughput.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    from_initiator: bool,
    session: &Mutex<Session>,
    shared: &Shared,
) -> String {
    use std::io::{ErrorKind, Read};
    let (me, peer) = if from_initiator {
        ("initiator", "target")
    } else {
        ("target", "initiator")
    };
    let mut buf = vec![0u8; RELAY_CHUNK];
    let mut cut = Cutter::new(from_initiator);
    let mut events = Vec::new();
    let parse = |cut: &mut Cutter, chunk: &[u8], events: &mut Vec<Event>| {
        let mut s = match session.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        cut.feed(chunk, &mut s, shared.now(), events);
        // Sent under the session's lock: the two directions' events reach
        // the writer in the order the session made them (a Submit before
        // its Complete).
        if !events.is_empty() {
            shared.send_blocking(queue(std::mem::take(events), &mut s));
        }
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return format!("{me} closed the connection"),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return format!("{me}: {e}"),
        };
        let chunk = &buf[..n];
        // Parsed before forwarded, in both directions, so the session sees
        // every PDU before the peer can react to it: a command before the
        // target's answer (which the other thread parses), a status before
        // the initiator reuses its ITT for a new command, the final Login
        // Response (digests switch on with it) before the first
        // digest-protected PDU.
        parse(&mut cut, chunk, &mut events);
        if let Err(e) = to.write_all(chunk) {
            return format!("{peer}: {e}");
        }
    }
}

/// The socket as a blocking std stream, for a relay thread.
fn blocking(sock: TcpStream) -> std::io::Result<std::net::TcpStream> {
    let s = sock.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

async fn relay(
    initiator: TcpStream,
    peer: SocketAddr,
    target: String,
    conn: u64,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut session = Session::new(shared.seq.clone(), shared.capture);
    session.defer_digests();
    let session = Arc::new(Mutex::new(session));
    let note = |text: String| Event::Note {
        time_ns: shared.now(),
        text,
    };
    let target_sock = match TcpStream::connect(&target).await {
        Ok(t) => t,
        Err(e) => {
            shared.send(vec![Queued::from(note(format!(
                "connection {conn} from {peer}: cannot reach target {target}: {e}"
            )))]);
            return;
        }
    };
    let _ = initiator.set_nodelay(true);
    let _ = target_sock.set_nodelay(true);
    // Each socket twice: one handle per direction's thread, and one here to
    // shut both down when either direction ends or the proxy stops.
    let socks = (|| {
        let (i, t) = (blocking(initiator)?, blocking(target_sock)?);
        Ok::<_, std::io::Error>([
            i.try_clone()?,
            t.try_clone()?,
            i.try_clone()?,
            t.try_clone()?,
            i,
            t,
        ])
    })();
    let [i_up, t_up, i_down, t_down, i, t] = match socks {
        Ok(s) => s,
        Err(e) => {
            shared.send(vec![Queued::from(note(format!(
                "connection {conn} from {peer}: cannot set up the relay: {e}"
            )))]);
            return;
        }
    };
    shared.send(vec![note(format!(
        "connection {conn}: initiator {peer} to target {target}"
    ))
    .into()]);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut spawned = 0;
    for (from_initiator, from, to) in [(true, i_up, t_up), (false, t_down, i_down)] {
        let (session, shared, done) = (session.clone(), shared.clone(), done_tx.clone());
        let name = if from_initiator {
            "scuzz-relay-up"
        } else {
            "scuzz-relay-down"
        };
        let started = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let why = pump(from, to, from_initiator, &session, &shared);
                let _ = done.send(why);
            });
        match started {
            Ok(_) => spawned += 1,
            Err(e) => {
                let _ = done_tx.send(format!("cannot start the relay thread: {e}"));
            }
        }
    }
    drop(done_tx);
    let why = tokio::select! {
        w = done_rx.recv() => w.unwrap_or_default(),
        _ = stop.changed() => "proxy stopped".to_string(),
    };
    // Either side ending ends the connection: both sockets shut, so the
    // other direction's blocking read returns too.
    let _ = i.shutdown(std::net::Shutdown::Both);
    let _ = t.shutdown(std::net::Shutdown::Both);
    while spawned > 0 && done_rx.recv().await.is_some() {}
    let (mut out, commands) = {
        let mut s = match session.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let mut out = Vec::new();
        s.close(shared.now(), &mut out);
        (queue(out, &mut s), s.commands)
    };
    shared.commands.fetch_add(commands, Ordering::Relaxed);
    out.push(note(format!("connection {conn} ended: {why}")).into());
    shared.send(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi::pdu::{DataIn, DataOut, Header, Lun, R2t, ScsiCommand, ScsiResponse, Stage};

    /// One PDU's wire form (digest fields present when `digests` says so;
    /// the cutter only counts past them, so their values do not matter).
    fn wire(h: &Header, data: &[u8], digests: (bool, bool)) -> Vec<u8> {
        let mut ahs = Vec::new();
        let bhs = h.encode(data.len() as u32, &mut ahs);
        let mut w = bhs.to_vec();
        w.extend_from_slice(&ahs);
        if digests.0 {
            w.extend_from_slice(&[0xd1; 4]);
        }
        if !data.is_empty() {
            w.extend_from_slice(data);
            w.resize(w.len() + iscsi::pdu::pad_len(data.len()), 0);
            if digests.1 {
                w.extend_from_slice(&[0xd2; 4]);
            }
        }
        w
    }

    fn write_cmd(itt: u32, len: u32, cdb_len: usize) -> Header {
        let mut cdb = vec![0x2a, 0, 0, 0, 0, 8, 0, 0, (len / 512) as u8, 0];
        if cdb_len > 16 {
            cdb[0] = 0x7f;
        }
        cdb.resize(cdb_len, 0);
        Header::ScsiCommand(ScsiCommand {
            write: true,
            itt,
            expected_length: len,
            lun: Lun::from_flat(0),
            cdb,
            ..Default::default()
        })
    }

    /// The PDUs of a login with both digests, a write (immediate data, an
    /// R2T, two Data-Out PDUs with padding), a write whose CDB needs an AHS,
    /// and a read answered by Data-In with the status.
    fn conversation() -> Vec<(bool, Header, Vec<u8>)> {
        let data: Vec<u8> = (0..6001u32).map(|i| ((i * 31) >> 3) as u8).collect();
        vec![
            (
                false,
                session::tests::login_response(true, Stage::FullFeature),
                b"HeaderDigest=CRC32C\0DataDigest=CRC32C\0".to_vec(),
            ),
            (true, write_cmd(1, 6001, 16), data[..1001].to_vec()),
            (
                false,
                Header::R2t(R2t {
                    itt: 1,
                    buffer_offset: 1001,
                    desired_length: 5000,
                    ..Default::default()
                }),
                Vec::new(),
            ),
            (
                true,
                Header::DataOut(DataOut {
                    itt: 1,
                    buffer_offset: 1001,
                    ..Default::default()
                }),
                data[1001..3003].to_vec(),
            ),
            (
                true,
                Header::DataOut(DataOut {
                    itt: 1,
                    buffer_offset: 3003,
                    final_: true,
                    ..Default::default()
                }),
                data[3003..].to_vec(),
            ),
            (
                false,
                Header::ScsiResponse(ScsiResponse {
                    itt: 1,
                    ..Default::default()
                }),
                Vec::new(),
            ),
            (true, write_cmd(2, 512, 32), vec![5; 512]),
            (
                false,
                Header::ScsiResponse(ScsiResponse {
                    itt: 2,
                    status: 2,
                    ..Default::default()
                }),
                vec![0, 4, 0x70, 0, 5, 0],
            ),
            (
                true,
                Header::ScsiCommand(ScsiCommand {
                    read: true,
                    final_: true,
                    itt: 3,
                    expected_length: 1024,
                    cdb: {
                        let mut c = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0];
                        c.resize(16, 0);
                        c
                    },
                    ..Default::default()
                }),
                Vec::new(),
            ),
            (
                false,
                Header::DataIn(DataIn {
                    itt: 3,
                    status: Some(0),
                    final_: true,
                    ..Default::default()
                }),
                data[..1024].to_vec(),
            ),
        ]
    }

    fn events_of_whole_pdus(capture: PayloadCapture) -> Vec<Event> {
        let mut s = Session::new(Arc::new(AtomicU64::new(0)), capture);
        let mut out = Vec::new();
        for (from_initiator, h, data) in conversation() {
            if from_initiator {
                s.from_initiator(&h, &data, 7, &mut out);
            } else {
                s.from_target(&h, &data, 7, &mut out);
            }
        }
        out
    }

    /// Cuts the conversation's wire bytes in `piece`-byte reads, as the
    /// relay does: digests deferred to the writer, which finishes each
    /// event.
    fn events_of_stream(capture: PayloadCapture, piece: usize) -> Vec<Event> {
        let mut s = Session::new(Arc::new(AtomicU64::new(0)), capture);
        s.defer_digests();
        let (mut up, mut down) = (Cutter::new(true), Cutter::new(false));
        let mut queued = Vec::new();
        for (from_initiator, h, data) in conversation() {
            let bytes = wire(&h, &data, s.digests());
            let cut = if from_initiator { &mut up } else { &mut down };
            for chunk in bytes.chunks(piece) {
                let mut out = Vec::new();
                cut.feed(chunk, &mut s, 7, &mut out);
                queued.extend(queue(out, &mut s));
            }
        }
        queued.into_iter().map(Queued::finish).collect()
    }

    #[test]
    fn cutting_the_stream_at_any_read_boundary_records_what_whole_pdus_record() {
        for capture in [
            PayloadCapture::Full,
            PayloadCapture::Digest,
            PayloadCapture::None,
        ] {
            let whole = events_of_whole_pdus(capture);
            assert_eq!(whole.len(), 6, "{whole:?}");
            if capture == PayloadCapture::Full {
                let Event::Submit(s) = &whole[0] else {
                    panic!("{whole:?}")
                };
                assert!(matches!(&s.payload, Payload::Full(d) if d.len() == 6001));
            }
            if capture == PayloadCapture::Digest {
                let Event::Submit(s) = &whole[0] else {
                    panic!("{whole:?}")
                };
                assert!(matches!(&s.payload, Payload::Digests { crcs, .. } if crcs.len() == 12));
            }
            for piece in [1, 3, 47, 48, 52, 1000, 4096, 1 << 20] {
                assert_eq!(
                    events_of_stream(capture, piece),
                    whole,
                    "{capture:?}, {piece}-byte reads"
                );
            }
        }
    }

    #[test]
    fn the_backlog_waits_only_while_something_is_queued() {
        let b = Backlog::default();
        assert!(b.try_add(BACKLOG_BYTES + 1), "one oversized event passes");
        assert!(!b.try_add(1));
        b.remove(BACKLOG_BYTES + 1);
        assert!(b.try_add(BACKLOG_BYTES));
        drop(WriterGone(&b));
        // No writer left: adding never waits.
        b.add(BACKLOG_BYTES);
        b.add(BACKLOG_BYTES);
    }
}
