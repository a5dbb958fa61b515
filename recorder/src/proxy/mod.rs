//! The recording proxy behind `scuzz record`: an iSCSI relay between any
//! initiator and any target that forwards every byte unchanged and records
//! each command it carries.
//!
//! Bytes are forwarded as they arrive, never re-encoded: the proxy only
//! reads a copy of the stream, cut into PDUs (RFC 7143 §11.2: BHS, AHS,
//! header digest, padded data segment, data digest). Initiator-to-target
//! bytes are forwarded first and parsed after; target-to-initiator bytes are
//! parsed first, so that digests switch on (after the final Login Response)
//! before the initiator can send its first digest-protected PDU.
//!
//! Events go to a writer thread through a bounded channel, so trace
//! compression never stalls the relay; the writer flushes every second, so
//! a crash loses at most a second of trace. Either side dropping ends the
//! connection: commands still open are written as
//! [`trace::ServiceResponse::Incomplete`].

pub mod session;

use session::{PayloadCapture, Session};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trace::file::{TraceError, TraceWriter};
use trace::Event;

/// Largest PDU the proxy will buffer: a full BHS, 1020 bytes of AHS, both
/// digests and the 24-bit DataSegmentLength's maximum.
const MAX_PDU: usize = 48 + 1020 + 8 + (1 << 24) + 3;

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

struct Shared {
    seq: Arc<AtomicU64>,
    start: Instant,
    tx: SyncSender<Event>,
    capture: PayloadCapture,
    commands: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn send(&self, events: Vec<Event>) {
        for e in events {
            match self.tx.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    // The writer is behind: wait for it without blocking
                    // the runtime's other tasks.
                    let _ = tokio::task::block_in_place(|| self.tx.send(e).map_err(drop));
                }
                Err(TrySendError::Disconnected(_)) => return,
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
    let (tx, rx) = sync_channel::<Event>(4096);
    let writer_thread = std::thread::spawn(move || write_events(writer, rx));
    let shared = Arc::new(Shared {
        seq: Arc::new(AtomicU64::new(0)),
        start: Instant::now(),
        tx,
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
    rx: Receiver<Event>,
) -> Result<(W, u64), TraceError> {
    let mut last_flush = Instant::now();
    let mut n = 0u64;
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(e) => {
                w.write(&e)?;
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

/// Length of the PDU at the front of `b`, if its header is complete.
fn pdu_len(b: &[u8], digests: (bool, bool)) -> Option<usize> {
    if b.len() < 48 {
        return None;
    }
    let ahs = usize::from(b[4]) * 4;
    let data = usize::from(b[5]) << 16 | usize::from(b[6]) << 8 | usize::from(b[7]);
    let hd = if digests.0 { 4 } else { 0 };
    let dd = if digests.1 && data > 0 { 4 } else { 0 };
    Some(48 + ahs + hd + data + iscsi::pdu::pad_len(data) + dd)
}

/// Cuts the complete PDUs off the front of `buf` and feeds them to the
/// session.
fn parse(
    buf: &mut Vec<u8>,
    session: &Mutex<Session>,
    from_initiator: bool,
    now: u64,
) -> (Vec<Event>, bool) {
    let mut out = Vec::new();
    let mut s = match session.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    let mut at = 0;
    let mut framing_lost = false;
    while let Some(len) = pdu_len(&buf[at..], s.digests()) {
        if len > MAX_PDU {
            framing_lost = true;
            break;
        }
        if buf.len() - at < len {
            break;
        }
        let p = &buf[at..at + len];
        let mut bhs = [0u8; 48];
        bhs.copy_from_slice(&p[..48]);
        let ahs_len = usize::from(p[4]) * 4;
        let hd = if s.digests().0 { 4 } else { 0 };
        let dlen = usize::from(p[5]) << 16 | usize::from(p[6]) << 8 | usize::from(p[7]);
        let data_at = 48 + ahs_len + hd;
        if let Ok(h) = iscsi::pdu::Header::decode(&bhs, &p[48..48 + ahs_len]) {
            let data = &p[data_at..data_at + dlen];
            if from_initiator {
                s.from_initiator(&h, data, now, &mut out);
            } else {
                s.from_target(&h, data, now, &mut out);
            }
        }
        at += len;
    }
    buf.drain(..at);
    (out, framing_lost)
}

async fn relay(
    initiator: TcpStream,
    peer: SocketAddr,
    target: String,
    conn: u64,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let session = Arc::new(Mutex::new(Session::new(shared.seq.clone(), shared.capture)));
    let note = |text: String| Event::Note {
        time_ns: shared.now(),
        text,
    };
    let target_sock = match TcpStream::connect(&target).await {
        Ok(t) => t,
        Err(e) => {
            shared.send(vec![note(format!(
                "connection {conn} from {peer}: cannot reach target {target}: {e}"
            ))]);
            return;
        }
    };
    let _ = initiator.set_nodelay(true);
    let _ = target_sock.set_nodelay(true);
    shared.send(vec![note(format!(
        "connection {conn}: initiator {peer} to target {target}"
    ))]);
    let (mut ir, mut iw) = initiator.into_split();
    let (mut tr, mut tw) = target_sock.into_split();

    let up = {
        let (session, shared) = (session.clone(), shared.clone());
        async move {
            let mut chunk = vec![0u8; 256 << 10];
            let mut buf = Vec::new();
            let mut recording = true;
            loop {
                let n = match ir.read(&mut chunk).await {
                    Ok(0) => return "initiator closed the connection".to_string(),
                    Ok(n) => n,
                    Err(e) => return format!("initiator: {e}"),
                };
                if let Err(e) = tw.write_all(&chunk[..n]).await {
                    return format!("target: {e}");
                }
                if recording {
                    buf.extend_from_slice(&chunk[..n]);
                    let (ev, lost) = parse(&mut buf, &session, true, shared.now());
                    shared.send(ev);
                    if lost {
                        recording = false;
                        buf = Vec::new();
                        shared.send(vec![Event::Note { time_ns: shared.now(), text: format!("connection {conn}: initiator PDU framing lost; relaying without recording") }]);
                    }
                }
            }
        }
    };
    let down = {
        let (session, shared) = (session.clone(), shared.clone());
        async move {
            let mut chunk = vec![0u8; 256 << 10];
            let mut buf = Vec::new();
            let mut recording = true;
            loop {
                let n = match tr.read(&mut chunk).await {
                    Ok(0) => return "target closed the connection".to_string(),
                    Ok(n) => n,
                    Err(e) => return format!("target: {e}"),
                };
                if recording {
                    buf.extend_from_slice(&chunk[..n]);
                    let (ev, lost) = parse(&mut buf, &session, false, shared.now());
                    shared.send(ev);
                    if lost {
                        recording = false;
                        buf = Vec::new();
                        shared.send(vec![Event::Note { time_ns: shared.now(), text: format!("connection {conn}: target PDU framing lost; relaying without recording") }]);
                    }
                }
                if let Err(e) = iw.write_all(&chunk[..n]).await {
                    return format!("initiator: {e}");
                }
            }
        }
    };
    let why = tokio::select! {
        w = up => w,
        w = down => w,
        _ = stop.changed() => "proxy stopped".to_string(),
    };
    let mut out = Vec::new();
    let commands = {
        let mut s = match session.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.close(shared.now(), &mut out);
        s.commands
    };
    shared.commands.fetch_add(commands, Ordering::Relaxed);
    out.push(note(format!("connection {conn} ended: {why}")));
    shared.send(out);
}
