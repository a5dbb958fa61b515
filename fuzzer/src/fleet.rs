//! Fleets: one campaign spread over several machines by chaining their
//! LLMP brokers.
//!
//! Each machine runs its own `scuzz fuzz` (its own clients, broker, `OUT`
//! directory and monitor). One machine's broker listens for other brokers
//! (`--broker-listen 0.0.0.0 --broker-port PORT`); the others connect to it
//! (`--remote-broker HOST:PORT`) with LLMP's broker-to-broker protocol over
//! TCP. Whatever one broker forwards to its own clients (new corpus
//! entries) then also travels over the link and is forwarded to the other
//! machine's clients, which evaluate it as any imported testcase.
//!
//! LibAFL 0.16's `Launcher` keeps its remote broker address to itself
//! (`launch_with_hooks` never hands it to the broker it starts), so this
//! module runs the broker role itself: [`serve`] is what the campaign's
//! `Launcher::launch_with_manager` calls for the broker. It differs from
//! LibAFL's own broker loop in three ways a fleet needs:
//!
//! - **The connecting end of a link** is ours ([`link`]), not LibAFL's
//!   `connect_b2b`, whose proxy thread blocks writing while the other end's
//!   blocks writing too: the link deadlocked whenever both machines had
//!   entries to send at once (see [`link`]). The listening end stays
//!   LibAFL's; one end that never blocks is enough.
//! - **Stopping.** A link that connects to this broker is registered as
//!   one more client that never says goodbye, so LibAFL's "every client
//!   has left" test never holds on a machine others link to, and the
//!   campaign would never end. [`serve`] keeps that test and adds the
//!   campaign's own stop rule: once the deadline or the findings goal is
//!   reached and this machine's clients have been silent for
//!   [`LOCAL_QUIET`], the broker stops.
//! - **Statistics.** Events that arrive over a link ([`LLMP_FLAG_FROM_B2B`])
//!   are forwarded to the local clients without reaching the monitor, so
//!   `OUT/stats.jsonl` describes this machine's clients only (the remote
//!   machine's clients would otherwise be counted as extra local clients
//!   with the remote corpus sizes).

use libafl::events::StdLlmpEventHook;
use libafl::monitors::Monitor;
use libafl_bolts::llmp::{
    Broker, Flags, Listener, LlmpBroker, LlmpBrokerInner, LlmpHook, LlmpMsgHookResult, Tag,
    TcpResponse, LLMP_FLAG_FROM_B2B,
};
use libafl_bolts::shmem::ShMemProvider;
use libafl_bolts::tuples::tuple_list;
use libafl_bolts::ClientId;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod link;

use link::{Link, Outbox};

/// How long this machine's clients must have said nothing, once the
/// campaign's stop rule holds, before a broker with fleet links stops.
/// Clients report at least once a second while they run.
pub const LOCAL_QUIET: Duration = Duration::from_secs(3);

/// How often the broker polls its clients' pages when idle (LibAFL's own
/// broker loop uses the same).
const POLL: Duration = Duration::from_millis(5);

/// After this long without any message the monitor is called anyway
/// (LibAFL's heartbeat timeout).
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Where a broker listens and which broker it links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerAddrs {
    /// Address the broker's TCP listener binds (its port is the broker
    /// port). Local clients always reach it on 127.0.0.1, so it is the
    /// loopback address or an unspecified one (`0.0.0.0`, `::`).
    pub listen: SocketAddr,
    /// Another machine's broker to link to, if any.
    pub remote: Option<SocketAddr>,
}

impl BrokerAddrs {
    /// A broker on `port`, listening on `ip` (loopback when `None`), linked
    /// to `remote`. Refuses a listening address the local clients could not
    /// reach.
    pub fn new(
        ip: Option<IpAddr>,
        port: u16,
        remote: Option<SocketAddr>,
    ) -> Result<BrokerAddrs, FleetError> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if !(ip.is_loopback() || ip.is_unspecified()) {
            return Err(FleetError::Listen(ip));
        }
        Ok(BrokerAddrs {
            listen: SocketAddr::new(ip, port),
            remote,
        })
    }

    /// Binds the broker's listener now, before any process is forked, so a
    /// port in use is reported to the user and port 0 becomes a free port
    /// no one can take in between (the broker inherits the socket).
    pub fn bind(&self) -> Result<TcpListener, FleetError> {
        TcpListener::bind(self.listen).map_err(|source| FleetError::Bind {
            addr: self.listen,
            source,
        })
    }
}

/// The largest greeting accepted from a remote broker: a hostname and a
/// shared-memory description, a few hundred bytes.
const MAX_HELLO: u32 = 64 * 1024;

/// How long the remote broker may take to accept and greet.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that an LLMP broker answers at `addr` before the campaign starts,
/// and returns the hostname it gives. The link itself is made later by the
/// broker process; this only turns a typo or a closed firewall into an
/// error at the command line.
pub fn probe(addr: SocketAddr) -> Result<String, FleetError> {
    let fail = |reason: String| FleetError::Connect { addr, reason };
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| fail(format!("no connection: {e}")))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    // An LLMP broker greets first: a big-endian u32 length, then a
    // postcard-encoded `TcpResponse::BrokerConnectHello`.
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| fail(format!("no LLMP broker greeting: {e}")))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HELLO {
        return Err(fail(format!(
            "not an LLMP broker (greeting of {len} bytes announced, at most {MAX_HELLO})"
        )));
    }
    let mut body = vec![0u8; len as usize];
    stream
        .read_exact(&mut body)
        .map_err(|e| fail(format!("greeting cut short: {e}")))?;
    match TcpResponse::try_from(body) {
        Ok(TcpResponse::BrokerConnectHello { hostname, .. }) => Ok(hostname),
        Ok(_) | Err(_) => Err(fail("not an LLMP broker greeting".into())),
    }
}

/// Why the fleet part of a campaign could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// `--broker-listen` named an address local clients cannot reach.
    #[error(
        "--broker-listen {0}: this machine's clients reach the broker on 127.0.0.1, so listen on \
         127.0.0.1 (this machine only) or 0.0.0.0 / :: (all interfaces, then restrict with a firewall)"
    )]
    Listen(IpAddr),
    /// The broker's listening address could not be bound.
    #[error("broker listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The link to the other machine's broker failed.
    #[error("--remote-broker {addr}: {reason}")]
    Connect {
        /// The other broker.
        addr: SocketAddr,
        /// LLMP's complaint.
        reason: String,
    },
    /// A link was asked for where there is no broker to hold it.
    #[error("--remote-broker: {0}")]
    NoBroker(String),
}

impl From<FleetError> for libafl::Error {
    fn from(e: FleetError) -> Self {
        libafl::Error::illegal_argument(e.to_string())
    }
}

/// When the campaign's stop rule is satisfied, as the broker sees it.
pub trait StopCheck {
    /// Whether the campaign should stop now (deadline passed, findings goal
    /// reached). Called about once a second.
    fn should_stop(&mut self) -> bool;
}

impl<F: FnMut() -> bool> StopCheck for F {
    fn should_stop(&mut self) -> bool {
        self()
    }
}

/// What a broker saw, for the campaign's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetTally {
    /// Events received over fleet links and passed on to local clients.
    pub received: u64,
    /// Events queued for the link this broker made (`--remote-broker`).
    pub queued: u64,
    /// Events that link dropped because the other broker read too slowly
    /// ([`link::MAX_BACKLOG`]) or the link was lost.
    pub dropped: u64,
}

/// How long a broker that is stopping keeps writing what its link still
/// holds (the entries its clients found last).
const LINK_FLUSH: Duration = Duration::from_secs(2);

/// Milliseconds on the broker's clock (since it started), shared between
/// the hook and the loop.
#[derive(Debug, Clone)]
struct Clock {
    start: Instant,
    last_local_ms: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
            last_local_ms: Arc::new(AtomicU64::new(0)),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn local_message(&self) {
        self.last_local_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn local_quiet_for(&self) -> Duration {
        self.quiet_at(self.now_ms())
    }

    /// How long the local clients had been silent at `now_ms`.
    fn quiet_at(&self, now_ms: u64) -> Duration {
        let last = self.last_local_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms.saturating_sub(last))
    }
}

/// The broker's hook: local clients' events go to LibAFL's
/// [`StdLlmpEventHook`] (statistics, the monitor, forwarding of new
/// testcases); events from a fleet link go straight to the local clients.
/// Whatever it forwards to the local clients also goes to the `outbox` of
/// the link this broker made, if any.
pub struct FleetHook<H> {
    inner: H,
    clock: Clock,
    outbox: Option<Outbox>,
}

impl<H, SHM, SP> LlmpHook<SHM, SP> for FleetHook<H>
where
    H: LlmpHook<SHM, SP>,
{
    fn on_new_message(
        &mut self,
        broker_inner: &mut LlmpBrokerInner<SHM, SP>,
        client_id: ClientId,
        msg_tag: &mut Tag,
        msg_flags: &mut Flags,
        msg: &mut [u8],
        new_msgs: &mut Vec<(Tag, Flags, Vec<u8>)>,
    ) -> Result<LlmpMsgHookResult, libafl::Error> {
        if *msg_flags & LLMP_FLAG_FROM_B2B == LLMP_FLAG_FROM_B2B {
            // The other broker only sends what it forwarded to its own
            // clients: new testcases (statistics and objectives stay on
            // their machine). They go on over this broker's own link too,
            // so entries travel along a chain of machines.
            self.clock.received.fetch_add(1, Ordering::Relaxed);
            if let Some(outbox) = &self.outbox {
                outbox.push(client_id, *msg_tag, *msg_flags, msg);
            }
            return Ok(LlmpMsgHookResult::ForwardToClients);
        }
        self.clock.local_message();
        let result = self.inner.on_new_message(
            broker_inner,
            client_id,
            msg_tag,
            msg_flags,
            msg,
            new_msgs,
        )?;
        if let (LlmpMsgHookResult::ForwardToClients, Some(outbox)) = (&result, &self.outbox) {
            outbox.push(client_id, *msg_tag, *msg_flags, msg);
        }
        Ok(result)
    }

    fn on_timeout(&mut self) -> Result<(), libafl::Error> {
        self.inner.on_timeout()
    }
}

/// Runs this machine's LLMP broker: accepts clients (and other machines'
/// brokers) on `listener` (from [`BrokerAddrs::bind`]), links to `remote`
/// if given, forwards new testcases between the local
/// clients and the fleet, feeds `monitor` with the local clients'
/// statistics, and returns once the campaign is over (see the module
/// documentation for when that is). `local_clients` is how many clients
/// this machine starts.
pub fn serve<I, MT, SP>(
    shmem: SP,
    listener: TcpListener,
    remote: Option<SocketAddr>,
    monitor: MT,
    local_clients: NonZeroUsize,
    mut stop: impl StopCheck,
) -> Result<FleetTally, libafl::Error>
where
    I: serde::de::DeserializeOwned,
    MT: Monitor,
    SP: ShMemProvider,
{
    let clock = Clock::new();
    // The link before the broker's hook, which feeds it, and before the
    // listener lets local clients in: their first entries (the seeds,
    // imported in milliseconds) are queued for it from the start. It
    // registers no client with the broker: messages from the other machine
    // go straight onto the broker's page for the local clients.
    let mut link = remote.and_then(|remote| {
        // The remote answered the probe a moment ago; if it has gone since,
        // this machine's campaign still runs, alone.
        match Link::connect(remote, Outbox::default()) {
            Ok(link) => Some((remote, link)),
            Err(e) => {
                eprintln!("scuzz fuzz: --remote-broker {remote}: {e}; fuzzing without the link");
                None
            }
        }
    });
    let outbox = link.as_ref().map(|(_, l)| l.outbox().clone());
    let hook = FleetHook {
        inner: StdLlmpEventHook::<I, MT>::new(monitor)?,
        clock: clock.clone(),
        outbox: outbox.clone(),
    };
    let mut broker = LlmpBroker::new(shmem, tuple_list!(hook))?;
    let mut link_received = 0;
    broker
        .inner_mut()
        .launch_listener(Listener::Tcp(listener))?;
    broker.set_exit_after(local_clients);

    let mut heartbeat_due = Instant::now() + HEARTBEAT;
    let mut next_stop_check = Instant::now();
    let mut stopping = false;
    loop {
        let now = Instant::now();
        if now >= heartbeat_due {
            Broker::on_timeout(&mut broker)?;
            heartbeat_due = now + HEARTBEAT;
        }
        if broker.broker_once()? {
            heartbeat_due = Instant::now() + HEARTBEAT;
        }
        let lost = match &mut link {
            Some((remote, l)) => match l.pump(broker.inner_mut()) {
                Ok(_) => false,
                Err(e) => {
                    eprintln!(
                        "scuzz fuzz: --remote-broker {remote}: {e}; fuzzing on without the link"
                    );
                    true
                }
            },
            None => false,
        };
        if lost {
            if let Some((_, l)) = link.take() {
                link_received += l.received();
                l.outbox().close();
            }
        }
        // LibAFL's own rule: every client this machine started has come
        // and gone (never true while another machine's link is registered).
        if !broker.has_clients()
            && broker
                .num_clients_seen()
                .saturating_sub(broker.nb_listeners())
                >= local_clients.get()
        {
            break;
        }
        // The campaign's rule, for brokers with fleet links.
        if !stopping && Instant::now() >= next_stop_check {
            stopping = stop.should_stop();
            next_stop_check = Instant::now() + Duration::from_secs(1);
        }
        if stopping && clock.local_quiet_for() >= LOCAL_QUIET {
            break;
        }
        std::thread::sleep(POLL);
    }
    if let Some((remote, mut l)) = link {
        match l.flush(broker.inner_mut(), LINK_FLUSH) {
            Ok(true) => {}
            Ok(false) => eprintln!(
                "scuzz fuzz: --remote-broker {remote}: the other broker did not read this one's \
                 last entries within {LINK_FLUSH:?}"
            ),
            Err(e) => eprintln!("scuzz fuzz: --remote-broker {remote}: {e}"),
        }
        link_received += l.received();
    }
    let (queued, dropped) = outbox.map_or((0, 0), |o| o.counts());
    if dropped > 0 {
        eprintln!(
            "scuzz fuzz: --remote-broker: {dropped} of {} entries were not sent (the other broker \
             read too slowly, or the link was lost)",
            queued + dropped
        );
    }
    // LibAFL's loop ends with an "exiting" message on the broker's page; its
    // tag is private to `ll_mp` 0.16, and by now no local client is left to
    // read it (fleet links close when this process ends).
    Ok(FleetTally {
        received: clock.received.load(Ordering::Relaxed) + link_received,
        queued,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_must_be_reachable_by_local_clients() {
        let any = BrokerAddrs::new(Some("0.0.0.0".parse().unwrap()), 1337, None).unwrap();
        assert_eq!(any.listen, "0.0.0.0:1337".parse().unwrap());
        let v6 = BrokerAddrs::new(Some("::".parse().unwrap()), 1337, None).unwrap();
        assert!(v6.listen.ip().is_unspecified());
        let local = BrokerAddrs::new(None, 7, None).unwrap();
        assert_eq!(local.listen, "127.0.0.1:7".parse().unwrap());
        let e = BrokerAddrs::new(Some("10.1.2.3".parse().unwrap()), 1337, None).unwrap_err();
        assert!(e.to_string().contains("--broker-listen 10.1.2.3"), "{e}");
    }

    /// A port that answers but is no LLMP broker (a web server, say) must
    /// be named as such, without trusting the length it appears to send.
    #[test]
    fn a_probe_refuses_what_is_not_a_broker() {
        use std::io::Write;
        let web = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = web.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = web.accept().unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            let (s, _) = web.accept().unwrap();
            drop(s);
        });
        let e = probe(addr).unwrap_err().to_string();
        assert!(e.contains("not an LLMP broker"), "{e}");
        let e = probe(addr).unwrap_err().to_string();
        assert!(e.contains("no LLMP broker greeting"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn quiet_time_counts_from_the_last_local_message() {
        let clock = Clock::new();
        assert_eq!(clock.quiet_at(2_500), Duration::from_millis(2_500));
        clock.last_local_ms.store(1_000, Ordering::Relaxed);
        assert_eq!(clock.quiet_at(4_000), LOCAL_QUIET);
        // A message stamped after `now` (another thread) is no silence.
        assert_eq!(clock.quiet_at(500), Duration::ZERO);
        clock.local_message();
        assert!(clock.last_local_ms.load(Ordering::Relaxed) <= clock.now_ms());
    }
}
