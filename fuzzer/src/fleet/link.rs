//! The connecting end of a fleet link: this machine's broker talking LLMP's
//! broker-to-broker protocol to another machine's broker, without LibAFL's
//! proxy thread.
//!
//! LibAFL 0.16's link (`LlmpBrokerInner::connect_b2b`, and the thread its
//! listener starts for a broker that connects, both `b2b_thread_on`) is one
//! thread per end that alternates two blocking steps: write every message
//! its broker has forwarded since the last turn to the socket, then read
//! *one* message from it (waiting up to three seconds). When both brokers
//! have a few megabytes to send at once (a machine starting from seeds
//! meets a hub with thousands of entries), both threads block in `write`
//! with full socket buffers, each waiting for the other to read, and the
//! link is dead for the rest of the campaign. In the fleet test's runs
//! (`tests/cli_fleet.rs`) one of the spoke's ~12,000 messages crossed: the
//! one the hub's thread read before starting its own long write.
//!
//! A deadlock needs both ends stuck in a write. This end never blocks: the
//! broker's own loop calls [`Link::pump`], which writes what the socket
//! takes, keeps the rest, and reads everything that has arrived, so the
//! other end's writes always complete and its thread always comes back to
//! read ours. The listening end may stay LibAFL's.
//!
//! The wire format is LibAFL's: each message is a big-endian `u32` length
//! and a postcard-encoded `TcpRemoteNewMessage` (the sender's client id,
//! tag, flags and payload). That type's fields are private, so [`Wire`]
//! mirrors it; a test holds the two encodings equal.

use libafl_bolts::llmp::{
    recv_tcp_msg, send_tcp_msg, Flags, LlmpBrokerInner, Tag, TcpRequest, TcpResponse,
    LLMP_FLAG_FROM_B2B,
};
use libafl_bolts::shmem::{ShMem, ShMemProvider};
use libafl_bolts::ClientId;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The largest message accepted from the other broker. LLMP messages live
/// in shared-memory pages; a corpus entry is a few kilobytes.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How many bytes of messages may wait for the other broker to read them
/// (beside the batch being written) before newer ones are dropped and
/// counted.
pub const MAX_BACKLOG: usize = 256 * 1024 * 1024;

/// LLMP's own control tags (private to `ll_mp` 0.16.1, values copied):
/// unset, end of page, new client, client exit, broker exiting, slow
/// receiver. Receivers consume them, so no broker forwards one; arriving
/// over a link, one would make this machine's clients misread their page
/// (a forged end of page) or stop (a forged exit).
const CONTROL_TAGS: [Tag; 6] = [
    Tag(0xDEADAF),
    Tag(0xAF1E0F1),
    Tag(0xC11E471),
    Tag(0xC11E472),
    Tag(0x13C5171),
    Tag(0x70051041),
];

/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How much one [`Link::pump`] reads at most, so a peer that sends without
/// pause cannot hold the broker's loop.
const READ_BUDGET: usize = 64 * READ_CHUNK;

/// Why a link could not be made or was lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// LLMP's handshake failed (LibAFL's error, as text).
    #[error("handshake: {0}")]
    Handshake(String),
    /// The other broker answered the hello with something else.
    #[error("handshake: unexpected answer from the other broker")]
    Unexpected,
    /// A message announced more bytes than any broker sends.
    #[error("message {index} announces {len} bytes (at most {MAX_MESSAGE})")]
    TooLong {
        /// Messages received before it.
        index: u64,
        /// The announced length.
        len: u32,
    },
    /// A message's body is not LLMP's broker-to-broker message.
    #[error("message {index}: not an LLMP broker-to-broker message: {reason}")]
    Decode {
        /// Messages received before it.
        index: u64,
        /// postcard's complaint.
        reason: String,
    },
    /// A message carried one of LLMP's control tags, which no broker
    /// forwards.
    #[error("message {index} carries LLMP's control tag {tag:#x}, which no broker forwards")]
    ControlTag {
        /// Messages received before it.
        index: u64,
        /// The tag.
        tag: u32,
    },
    /// The other broker closed the connection.
    #[error("the other broker closed the link")]
    Closed,
    /// This machine's broker could not take a message onto its page.
    #[error("this broker's page: {0}")]
    Broker(String),
}

impl From<libafl_bolts::Error> for LinkError {
    fn from(e: libafl_bolts::Error) -> Self {
        LinkError::Handshake(e.to_string())
    }
}

/// LibAFL's `TcpRemoteNewMessage`, field for field (postcard encodes
/// fields in order, without names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    /// The client that sent it on its own machine (informational: the
    /// receiving broker stamps its own id).
    pub client_id: ClientId,
    /// The LLMP tag.
    pub tag: Tag,
    /// The LLMP flags.
    pub flags: Flags,
    /// The message.
    pub payload: Vec<u8>,
}

/// Appends one framed message to `out`.
fn encode(client_id: ClientId, tag: Tag, flags: Flags, payload: &[u8], out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct WireRef<'a> {
        client_id: ClientId,
        tag: Tag,
        flags: Flags,
        payload: &'a [u8],
    }
    let body = postcard::to_allocvec(&WireRef {
        client_id,
        tag,
        flags,
        payload,
    })
    .expect("postcard encodes plain integers and bytes into a Vec");
    // `Outbox::push` refuses payloads over `MAX_MESSAGE`, far below 4 GiB.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
}

/// The next whole message at the front of `buf`, with the bytes it took;
/// `None` until all of it has arrived.
fn decode(buf: &[u8], index: u64) -> Result<Option<(Wire, usize)>, LinkError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let body_len = usize::try_from(len).unwrap_or(usize::MAX);
    if body_len > MAX_MESSAGE {
        return Err(LinkError::TooLong { index, len });
    }
    let Some(body) = buf.get(4..4 + body_len) else {
        return Ok(None);
    };
    let wire = postcard::from_bytes::<Wire>(body).map_err(|e| LinkError::Decode {
        index,
        reason: e.to_string(),
    })?;
    if CONTROL_TAGS.contains(&wire.tag) {
        return Err(LinkError::ControlTag {
            index,
            tag: wire.tag.0,
        });
    }
    Ok(Some((wire, 4 + body_len)))
}

/// Messages this machine's broker forwarded to its clients, framed for the
/// link. The broker's hook fills it; [`Link::pump`] empties it.
#[derive(Debug, Clone)]
pub struct Outbox(Arc<Mutex<OutboxInner>>);

#[derive(Debug)]
struct OutboxInner {
    bytes: Vec<u8>,
    cap: usize,
    queued: u64,
    dropped: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::with_backlog(MAX_BACKLOG)
    }
}

impl Outbox {
    /// An outbox holding at most `cap` bytes the other broker has not read.
    pub fn with_backlog(cap: usize) -> Outbox {
        Outbox(Arc::new(Mutex::new(OutboxInner {
            bytes: Vec::new(),
            cap,
            queued: 0,
            dropped: 0,
        })))
    }

    /// Queues one message (dropped, and counted, past the backlog or
    /// [`MAX_MESSAGE`]).
    pub fn push(&self, client_id: ClientId, tag: Tag, flags: Flags, payload: &[u8]) {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if payload.len() > MAX_MESSAGE
            || inner.bytes.len().saturating_add(payload.len()) > inner.cap
        {
            inner.dropped += 1;
            return;
        }
        encode(client_id, tag, flags, payload, &mut inner.bytes);
        inner.queued += 1;
    }

    /// Exchanges what is queued for `batch` (an empty buffer, handed back
    /// for its allocation).
    fn take(&self, batch: &mut Vec<u8>) {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        batch.clear();
        std::mem::swap(batch, &mut inner.bytes);
    }

    fn is_empty(&self) -> bool {
        let inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        inner.bytes.is_empty()
    }

    /// Stops queueing: the link is gone. What is queued is let go, and
    /// everything pushed from now on is dropped and counted.
    pub fn close(&self) {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        inner.cap = 0;
        inner.bytes = Vec::new();
    }

    /// (messages queued, messages dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.queued, inner.dropped)
    }
}

/// One link to another machine's broker, from the connecting end.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    outbox: Outbox,
    /// The batch taken from the outbox; `written` of its bytes are. The
    /// next is taken once this one is written, so while the other broker
    /// reads slowly the outbox fills and its backlog limit holds.
    sending: Vec<u8>,
    written: usize,
    /// Bytes read, not yet a whole message.
    receiving: Vec<u8>,
    received: u64,
}

impl Link {
    /// Connects to the broker at `remote` and introduces this one as a
    /// remote broker (LLMP's `RemoteBrokerHello`); the other broker then
    /// starts its end of the link.
    pub fn connect(remote: SocketAddr, outbox: Outbox) -> Result<Link, LinkError> {
        let mut stream = TcpStream::connect_timeout(&remote, HANDSHAKE_TIMEOUT)?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        match TcpResponse::try_from(recv_tcp_msg(&mut stream)?)? {
            TcpResponse::BrokerConnectHello { .. } => {}
            _ => return Err(LinkError::Unexpected),
        }
        send_tcp_msg(
            &mut stream,
            &TcpRequest::RemoteBrokerHello {
                hostname: hostname(),
            },
        )?;
        match TcpResponse::try_from(recv_tcp_msg(&mut stream)?)? {
            TcpResponse::RemoteBrokerAccepted { .. } => {}
            _ => return Err(LinkError::Unexpected),
        }
        stream.set_nonblocking(true)?;
        // Entries are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            outbox,
            sending: Vec::new(),
            written: 0,
            receiving: Vec::new(),
            received: 0,
        })
    }

    /// Where this link takes the messages it sends from.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Messages received over the link so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether everything queued has been written.
    pub fn is_flushed(&self) -> bool {
        self.written == self.sending.len() && self.outbox.is_empty()
    }

    /// Writes what the socket takes now, then hands every message that has
    /// arrived to `broker`'s clients (flagged [`LLMP_FLAG_FROM_B2B`]).
    /// Never waits. Returns whether anything moved.
    pub fn pump<SHM: ShMem, SP: ShMemProvider<ShMem = SHM>>(
        &mut self,
        broker: &mut LlmpBrokerInner<SHM, SP>,
    ) -> Result<bool, LinkError> {
        let moved = self.send()?;
        Ok(self.receive(broker)? || moved)
    }

    fn send(&mut self) -> Result<bool, LinkError> {
        let mut moved = false;
        loop {
            if self.written == self.sending.len() {
                self.written = 0;
                self.outbox.take(&mut self.sending);
                if self.sending.is_empty() {
                    return Ok(moved);
                }
            }
            match self.stream.write(&self.sending[self.written..]) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => {
                    self.written += n;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(moved),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn receive<SHM: ShMem, SP: ShMemProvider<ShMem = SHM>>(
        &mut self,
        broker: &mut LlmpBrokerInner<SHM, SP>,
    ) -> Result<bool, LinkError> {
        let mut moved = false;
        let mut chunk = [0u8; READ_CHUNK];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => {
                    self.receiving.extend_from_slice(&chunk[..n]);
                    budget = budget.saturating_sub(n);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut taken = 0;
        while let Some((wire, used)) = decode(&self.receiving[taken..], self.received)? {
            taken += used;
            self.received += 1;
            broker
                .send_buf_with_flags(wire.tag, wire.flags | LLMP_FLAG_FROM_B2B, &wire.payload)
                .map_err(|e| LinkError::Broker(e.to_string()))?;
        }
        self.receiving.drain(..taken);
        Ok(moved)
    }

    /// Pumps until everything queued is written or `limit` has passed
    /// (the campaign is ending: its last entries should still reach the
    /// other machine). Returns whether it all went.
    pub fn flush<SHM: ShMem, SP: ShMemProvider<ShMem = SHM>>(
        &mut self,
        broker: &mut LlmpBrokerInner<SHM, SP>,
        limit: Duration,
    ) -> Result<bool, LinkError> {
        let deadline = Instant::now() + limit;
        loop {
            self.pump(broker)?;
            if self.is_flushed() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// This machine's name, for the other broker's log.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "<unknown>".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libafl_bolts::llmp::TcpRemoteNewMessage;

    /// Our frames must be what LibAFL's end of the link reads (its type's
    /// fields are private: decoding ours and encoding it again must give
    /// the same bytes).
    #[test]
    fn frames_are_libafls_broker_to_broker_messages() {
        let mut framed = Vec::new();
        let payload: Vec<u8> = (0..=255).cycle().take(1000).collect();
        encode(ClientId(7), Tag(0x2B0741), Flags(2), &payload, &mut framed);
        let body = framed[4..].to_vec();
        assert_eq!(
            u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize,
            body.len()
        );
        let theirs = TcpRemoteNewMessage::try_from(body.clone()).expect("LibAFL decodes our frame");
        assert_eq!(postcard::to_allocvec(&theirs).unwrap(), body);
        let (ours, used) = decode(&framed, 0).unwrap().expect("a whole frame");
        assert_eq!(used, framed.len());
        assert_eq!(
            ours,
            Wire {
                client_id: ClientId(7),
                tag: Tag(0x2B0741),
                flags: Flags(2),
                payload
            }
        );
    }

    #[test]
    fn a_frame_is_decoded_only_once_whole() {
        let mut framed = Vec::new();
        encode(ClientId(1), Tag(1), Flags(0), b"abc", &mut framed);
        encode(ClientId(1), Tag(2), Flags(0), b"de", &mut framed);
        for cut in 0..framed.len() {
            let whole = decode(&framed[..cut], 0).unwrap();
            let first_len = 4 + 1 + 1 + 1 + 1 + 3;
            assert_eq!(whole.is_some(), cut >= first_len, "cut at {cut}");
        }
        let (first, used) = decode(&framed, 0).unwrap().unwrap();
        assert_eq!(first.payload, b"abc");
        let (second, _) = decode(&framed[used..], 1).unwrap().unwrap();
        assert_eq!(
            (second.tag, second.payload.as_slice()),
            (Tag(2), &b"de"[..])
        );
    }

    /// A length field is not an allocation request, and a body that is not
    /// a message is named as such.
    #[test]
    fn bad_frames_are_refused() {
        let huge = u32::MAX.to_be_bytes();
        let e = decode(&huge, 3).unwrap_err();
        assert!(matches!(e, LinkError::TooLong { index: 3, .. }), "{e}");
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(&[0xff, 0xff, 0xff]);
        let e = decode(&junk, 5).unwrap_err();
        assert!(e.to_string().starts_with("message 5: not an LLMP"), "{e}");
        let mut exiting = Vec::new();
        encode(ClientId(1), Tag(0x13C5171), Flags(0), &[], &mut exiting);
        let e = decode(&exiting, 0).unwrap_err();
        assert!(
            matches!(e, LinkError::ControlTag { tag: 0x13C5171, .. }),
            "{e}"
        );
    }

    /// Regression: LibAFL's connecting end deadlocked with the hub's when
    /// both had more to send than the sockets hold. Here both ends send
    /// 12.8 MB at once (loopback holds a few MB each way); every message
    /// must arrive on the other side.
    #[test]
    fn a_link_carries_everything_both_ways_while_both_ends_flood() {
        use libafl_bolts::llmp::{Listener, LlmpBroker, LlmpClient};
        use libafl_bolts::shmem::StdShMemProvider;
        use std::net::TcpListener;
        use std::sync::atomic::{AtomicBool, Ordering};

        const N: usize = 200;
        const SIZE: usize = 64 * 1024;
        const TAG: Tag = Tag(0x5C022);
        let limit = Duration::from_secs(120);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let done = Arc::new(AtomicBool::new(false));

        // The hub: LibAFL's broker, listener and (for the link) proxy thread.
        let hub_done = done.clone();
        let hub = std::thread::spawn(move || {
            let mut broker = LlmpBroker::new(StdShMemProvider::new().unwrap(), ()).unwrap();
            broker
                .inner_mut()
                .launch_listener(Listener::Tcp(listener))
                .unwrap();
            while !hub_done.load(Ordering::Relaxed) {
                broker.broker_once().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // A client of the hub: sends everything at once, then counts what
        // comes from the spoke.
        let client = std::thread::spawn(move || {
            let mut c =
                LlmpClient::create_attach_to_tcp(StdShMemProvider::new().unwrap(), addr.port())
                    .unwrap();
            let me = c.sender().id();
            for i in 0..N {
                c.send_buf(TAG, &vec![i as u8; SIZE]).unwrap();
            }
            let started = Instant::now();
            let mut got = 0;
            while got < N && started.elapsed() < limit {
                match c.recv_buf().unwrap() {
                    Some((from, tag, buf)) if from != me => {
                        assert_eq!((tag, buf.len()), (TAG, SIZE));
                        got += 1;
                    }
                    Some(_) => {}
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            got
        });

        // The spoke: its clients' entries all queued before the link runs.
        let mut spoke = LlmpBroker::new(StdShMemProvider::new().unwrap(), ()).unwrap();
        let outbox = Outbox::default();
        for i in 0..N {
            outbox.push(ClientId(1), TAG, Flags(0), &vec![i as u8; SIZE]);
        }
        let mut link = Link::connect(addr, outbox).unwrap();
        let started = Instant::now();
        while !(link.received() >= N as u64 && link.is_flushed()) && started.elapsed() < limit {
            if !link.pump(spoke.inner_mut()).unwrap() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let spoke_got = link.received();
        let hub_got = client.join().unwrap();
        done.store(true, Ordering::Relaxed);
        hub.join().unwrap();
        assert_eq!((spoke_got, hub_got), (N as u64, N));
    }

    /// What the link is for: a peer that stops reading makes it queue and
    /// then drop, never wait.
    #[test]
    fn a_pump_never_waits_for_a_peer_that_stops_reading() {
        use libafl_bolts::llmp::{BrokerId, LlmpBroker};
        use libafl_bolts::shmem::StdShMemProvider;
        use std::net::TcpListener;
        use std::sync::mpsc;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let page = StdShMemProvider::new().unwrap().new_shmem(4096).unwrap();
        let broker_shmem_description = page.description();
        // A broker that greets, accepts the link, and never reads again.
        let silent = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let hello = TcpResponse::BrokerConnectHello {
                broker_shmem_description,
                hostname: "silent".into(),
            };
            send_tcp_msg(&mut s, &hello).unwrap();
            recv_tcp_msg(&mut s).unwrap();
            let accepted = TcpResponse::RemoteBrokerAccepted {
                broker_id: BrokerId(1),
            };
            send_tcp_msg(&mut s, &accepted).unwrap();
            s
        });
        let outbox = Outbox::with_backlog(4 << 20);
        let link = Link::connect(addr, outbox.clone()).unwrap();
        let _kept_open = silent.join().unwrap();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let mut link = link;
            let mut broker = LlmpBroker::new(StdShMemProvider::new().unwrap(), ()).unwrap();
            let payload = vec![0u8; 64 * 1024];
            // 64 MiB: far more than the socket buffers and the backlog.
            for _ in 0..1024 {
                outbox.push(ClientId(1), Tag(1), Flags(0), &payload);
                link.pump(broker.inner_mut()).unwrap();
            }
            done.send((outbox.counts(), link.is_flushed())).unwrap();
        });
        let ((queued, dropped), flushed) = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("a pump waited for the silent peer");
        assert!(
            queued > 0 && dropped > 0 && !flushed,
            "{queued} {dropped} {flushed}"
        );
    }

    #[test]
    fn an_outbox_drops_and_counts_past_its_backlog() {
        let outbox = Outbox::with_backlog(100);
        outbox.push(ClientId(1), Tag(1), Flags(0), b"x");
        outbox.push(ClientId(1), Tag(1), Flags(0), &[0u8; 100]);
        assert_eq!(outbox.counts(), (1, 1));
        let mut out = Vec::new();
        outbox.take(&mut out);
        assert_eq!(decode(&out, 0).unwrap().unwrap().0.payload, b"x");
        assert!(outbox.is_empty());
        outbox.close();
        outbox.push(ClientId(1), Tag(1), Flags(0), b"y");
        assert_eq!(outbox.counts(), (1, 2));
    }
}
