//! An async (tokio) iSCSI initiator: how the replayer and the fuzzer reach
//! real targets.
//!
//! [`Session::login`] connects, authenticates (None or CHAP) and negotiates
//! with the same key rules the target uses ([`crate::login::Negotiated`]).
//! A [`Session`] is a cheap, cloneable handle; [`Session::command`] may be
//! called from many tasks at once and the commands are pipelined up to the
//! target's CmdSN window (RFC 7143 §4.2.2.1). Writes send immediate and
//! unsolicited data as negotiated and answer R2T with Data-Out; reads are
//! reassembled from Data-In, with status collapse, residuals and sense.
//! [`Session::task_mgmt`] sends ABORT TASK, LUN RESET and TARGET WARM RESET;
//! [`Session::logout`] ends the session; [`discover`] runs a SendTargets
//! discovery session.
//!
//! Error recovery is level 0: if the connection fails, each command in
//! flight fails with [`InitiatorError::ConnectionLost`] naming it (whether
//! the target executed it is unknown), and the next command logs in again
//! (same ISID, so the target reinstates the session, §6.3.5).
//!
//! ```no_run
//! # async fn f() -> Result<(), iscsi::initiator::InitiatorError> {
//! use iscsi::initiator::{CommandRequest, IscsiUrl, LoginOptions, Session};
//! let url: IscsiUrl = "iscsi://127.0.0.1:3260/iqn.2026-11.dev.scuzz:disk/1".parse().unwrap();
//! let session = Session::login(&url.addr(), &LoginOptions::from_url(&url)).await?;
//! let inquiry = [0x12, 0, 0, 0, 96, 0];
//! let r = session.command(&CommandRequest::read(url.lun, &inquiry, 96)).await?;
//! assert_eq!(r.status, 0);
//! session.logout().await?;
//! # Ok(()) }
//! ```

mod connection;
mod error;
mod login;
mod url;

pub use error::{InitiatorError, TaskId};
pub use login::DiscoveredTarget;
pub use url::{redact_url, IscsiUrl, UrlError, DEFAULT_PORT};

use crate::login::{Negotiated, OperationalParams};
use crate::pdu::{Lun, TaskAttribute, TmfFunction, TmfResponse};
use bytes::Bytes;
use connection::{Connection, Submitted};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// The initiator name used when the caller gives none.
pub const DEFAULT_INITIATOR_IQN: &str = "iqn.2026-11.dev.scuzz:initiator";

/// One-way CHAP credentials (RFC 7143 §12.1.3).
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    /// CHAP_N.
    pub user: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// What a login asks for.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// InitiatorName.
    pub initiator_iqn: String,
    /// TargetName (ignored by [`discover`]).
    pub target_iqn: String,
    /// Credentials if the target requires CHAP.
    pub chap: Option<Chap>,
    /// Operational keys offered: the target may lower them.
    pub params: OperationalParams,
    /// MaxRecvDataSegmentLength this side declares: the largest Data-In
    /// segment the target may send.
    pub max_recv_data_segment: u32,
    /// How long connect plus login may take.
    pub login_timeout: Duration,
    /// How long [`Session::command`] waits for a response before it aborts
    /// the task (ABORT TASK, then dropping the connection if the target
    /// does not confirm) and fails with [`InitiatorError::CommandTimeout`].
    /// `None` waits for ever, as SCSI itself does.
    pub command_timeout: Option<Duration>,
}

impl LoginOptions {
    /// Options for a throughput-minded session: no digests, immediate and
    /// unsolicited data, the largest bursts the RFC allows (the target
    /// lowers them to its own limits).
    pub fn new(initiator_iqn: impl Into<String>, target_iqn: impl Into<String>) -> LoginOptions {
        LoginOptions {
            initiator_iqn: initiator_iqn.into(),
            target_iqn: target_iqn.into(),
            chap: None,
            params: OperationalParams {
                initial_r2t: false,
                immediate_data: true,
                max_burst_length: 16_776_192,
                first_burst_length: 262_144,
                max_outstanding_r2t: 8,
                ..OperationalParams::default()
            },
            max_recv_data_segment: 262_144,
            login_timeout: Duration::from_secs(15),
            command_timeout: None,
        }
    }

    /// Options for the target, LUN-independent parts and CHAP of a URL,
    /// with [`DEFAULT_INITIATOR_IQN`].
    pub fn from_url(url: &IscsiUrl) -> LoginOptions {
        let mut o = LoginOptions::new(DEFAULT_INITIATOR_IQN, url.target_iqn.clone());
        o.chap = url.chap.clone();
        o
    }
}

/// A SCSI command to send.
#[derive(Debug, Clone)]
pub struct CommandRequest<'a> {
    /// Flat LUN (0 to 16383).
    pub lun: u16,
    /// The CDB (up to 260 bytes).
    pub cdb: &'a [u8],
    /// Data to the target; empty for none.
    pub data_out: Bytes,
    /// Bytes expected from the target (allocation length); 0 for none.
    pub expected_in: u32,
    /// Task attribute.
    pub attr: TaskAttribute,
}

impl<'a> CommandRequest<'a> {
    /// A command reading up to `expected_in` bytes.
    pub fn read(lun: u16, cdb: &'a [u8], expected_in: u32) -> CommandRequest<'a> {
        CommandRequest {
            lun,
            cdb,
            data_out: Bytes::new(),
            expected_in,
            attr: TaskAttribute::Simple,
        }
    }

    /// A command writing `data`.
    pub fn write(lun: u16, cdb: &'a [u8], data: impl Into<Bytes>) -> CommandRequest<'a> {
        CommandRequest {
            lun,
            cdb,
            data_out: data.into(),
            expected_in: 0,
            attr: TaskAttribute::Simple,
        }
    }

    /// A command without data (TEST UNIT READY, SYNCHRONIZE CACHE).
    pub fn no_data(lun: u16, cdb: &'a [u8]) -> CommandRequest<'a> {
        CommandRequest::read(lun, cdb, 0)
    }
}

/// A residual count as the target reported it (RFC 7143 §11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    /// The whole expected length moved.
    #[default]
    None,
    /// Fewer bytes than expected moved (U bit).
    Underflow(u32),
    /// The command wanted more than expected (O bit).
    Overflow(u32),
}

impl Residual {
    /// Positive for underflow, negative for overflow: the trace's convention.
    pub fn signed(self) -> i64 {
        match self {
            Residual::None => 0,
            Residual::Underflow(n) => i64::from(n),
            Residual::Overflow(n) => -i64::from(n),
        }
    }
}

/// A completed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResponse {
    /// iSCSI Response: 0x00 completed at target, 0x01 target failure
    /// (then `status` is not valid, §11.4.3).
    pub response: u8,
    /// SCSI status (SAM-5 §5.3).
    pub status: u8,
    /// Sense data (without the SenseLength prefix), empty if none.
    pub sense: Bytes,
    /// Data from the target, as many bytes as it sent.
    pub data_in: Bytes,
    /// Residual of the (write or read) transfer.
    pub residual: Residual,
    /// Residual of the read part of a bidirectional command.
    pub bidi_read_residual: Residual,
}

struct Inner {
    addr: String,
    opts: LoginOptions,
    isid: [u8; 6],
    conn: Mutex<Arc<Connection>>,
    reconnect: tokio::sync::Mutex<()>,
    logged_out: AtomicBool,
    reconnects: AtomicU64,
}

/// A logged-in session; clone it to share between tasks.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("addr", &self.inner.addr)
            .field("target", &self.inner.opts.target_iqn)
            .finish()
    }
}

static ISID_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A random-format ISID (RFC 7143 §11.12.5: T=10b, then 22 bits of
/// qualifier and a 16-bit qualifier), unique per session in this process.
fn new_isid() -> [u8; 6] {
    let n = ISID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let a = pid ^ t.rotate_left(7);
    [
        0x80 | ((a >> 16) & 0x3f) as u8,
        (a >> 8) as u8,
        a as u8,
        (t >> 3) as u8,
        (n >> 8) as u8,
        n as u8,
    ]
}

/// Redirections (Status-Class 1) a login follows before giving up.
pub const MAX_REDIRECTS: usize = 4;

async fn open(
    addr: &str,
    opts: &LoginOptions,
    isid: [u8; 6],
) -> Result<Arc<Connection>, InitiatorError> {
    let mut portal = addr.to_string();
    let mut hops = 0;
    loop {
        let r = tokio::time::timeout(
            opts.login_timeout,
            login::login(&portal, opts, login::SessionKind::Normal, isid),
        )
        .await
        .map_err(|_| InitiatorError::Timeout("login"))?;
        match r {
            Ok(li) => return Ok(Connection::start(li, &portal)),
            // §11.13.5: "the initiator ... should retry the login at the
            // TargetAddress given".
            Err(InitiatorError::Redirected { address, .. })
                if hops < MAX_REDIRECTS && login::portal_of(&address).is_some() =>
            {
                hops += 1;
                portal = login::portal_of(&address).unwrap_or_default();
            }
            Err(e) => return Err(e),
        }
    }
}

impl Session {
    /// Connects to `addr` (`host:port`) and logs in to `opts.target_iqn`.
    pub async fn login(addr: &str, opts: &LoginOptions) -> Result<Session, InitiatorError> {
        let isid = new_isid();
        let conn = open(addr, opts, isid).await?;
        Ok(Session {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                opts: opts.clone(),
                isid,
                conn: Mutex::new(conn),
                reconnect: tokio::sync::Mutex::new(()),
                logged_out: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        })
    }

    /// Logs in to the target a URL names, with its CHAP credentials.
    pub async fn login_url(url: &IscsiUrl) -> Result<Session, InitiatorError> {
        Session::login(&url.addr(), &LoginOptions::from_url(url)).await
    }

    /// What login settled (digests, bursts, both sides' segment limits) on
    /// the current connection.
    pub fn negotiated(&self) -> Negotiated {
        self.current().negotiated()
    }

    /// How many times the session has logged in again after losing its
    /// connection.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The live connection, logging in again if the last one died.
    async fn connection(inner: &Inner) -> Result<Arc<Connection>, InitiatorError> {
        let get = || inner.conn.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let c = get();
        if !c.is_dead() {
            return Ok(c);
        }
        if inner.logged_out.load(Ordering::Acquire) {
            return Err(InitiatorError::Closed("session logged out".into()));
        }
        let _guard = inner.reconnect.lock().await;
        let c = get();
        if !c.is_dead() {
            return Ok(c);
        }
        let fresh = open(&inner.addr, &inner.opts, inner.isid).await?;
        *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        inner.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(fresh)
    }

    /// Sends a command once the window has room and returns it in flight:
    /// [`InFlight::id`] names it (for ABORT TASK), awaiting it gives the
    /// response. The returned future owns what it needs (`'static`), so it
    /// can be spawned or collected in a `FuturesUnordered`.
    pub fn start(
        &self,
        req: &CommandRequest<'_>,
    ) -> impl Future<Output = Result<InFlight, InitiatorError>> + Send + 'static {
        let inner = self.inner.clone();
        let cdb_ok = !req.cdb.is_empty() && req.cdb.len() <= connection::MAX_CDB_LEN;
        // SAM-5 §4.7.7: flat space addressing reaches LUN 16383.
        let lun_ok = req.lun < 16384;
        let cdb = req.cdb.to_vec();
        let data_out = req.data_out.clone();
        let (lun, expected_in, attr) = (Lun::from_flat(req.lun), req.expected_in, req.attr);
        async move {
            if !cdb_ok {
                return Err(InitiatorError::InvalidRequest("CDB must be 1 to 260 bytes"));
            }
            if !lun_ok {
                return Err(InitiatorError::InvalidRequest(
                    "LUN beyond 16383 has no flat LUN encoding",
                ));
            }
            // A connection found dead before anything was sent is replaced
            // and the command tried once more: nothing reached the target.
            for attempt in 0..2 {
                let conn = Session::connection(&inner).await?;
                match conn
                    .submit(lun, &cdb, data_out.clone(), expected_in, attr)
                    .await
                {
                    Ok(Submitted { id, rx }) => {
                        return Ok(InFlight {
                            id,
                            rx,
                            _conn: conn,
                        })
                    }
                    Err(InitiatorError::Closed(_))
                        if attempt == 0 && !inner.logged_out.load(Ordering::Acquire) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(InitiatorError::Closed(
                "connection lost twice while submitting".into(),
            ))
        }
    }

    /// Sends a command and waits for its response (at most
    /// [`LoginOptions::command_timeout`], if set).
    pub fn command(
        &self,
        req: &CommandRequest<'_>,
    ) -> impl Future<Output = Result<CommandResponse, InitiatorError>> + Send + 'static {
        let started = self.start(req);
        let limit = self.inner.opts.command_timeout;
        async move {
            let inflight = started.await?;
            let Some(limit) = limit else {
                return inflight.await;
            };
            let id = inflight.id.clone();
            let conn = inflight._conn.clone();
            match tokio::time::timeout(limit, inflight).await {
                Ok(r) => r,
                Err(_) => {
                    // SAM-5 §7.2: ABORT TASK makes the target forget the
                    // task; if it cannot confirm, ErrorRecoveryLevel 0
                    // leaves only closing the connection (RFC 7143 §6.1.5).
                    let lun = Lun::from_flat(id.lun);
                    let abort = conn.task_mgmt(TmfFunction::ABORT_TASK, lun, Some(&id));
                    let confirmed = matches!(
                        tokio::time::timeout(limit, abort).await,
                        Ok(Ok(TmfResponse::COMPLETE | TmfResponse::NO_TASK))
                    );
                    if confirmed {
                        conn.forget(id.itt);
                    } else {
                        conn.abort("a command timed out and ABORT TASK was not confirmed");
                    }
                    Err(InitiatorError::CommandTimeout {
                        task: id,
                        after: limit,
                        aborted: confirmed,
                    })
                }
            }
        }
    }

    /// Sends a task-management function (RFC 7143 §11.5) on `lun`;
    /// `referenced` names the task for ABORT TASK. Returns the target's
    /// response code; commands it terminated fail with
    /// [`InitiatorError::Aborted`].
    pub async fn task_mgmt(
        &self,
        function: TmfFunction,
        lun: u16,
        referenced: Option<&TaskId>,
    ) -> Result<TmfResponse, InitiatorError> {
        if lun >= 16384 {
            return Err(InitiatorError::InvalidRequest(
                "LUN beyond 16383 has no flat LUN encoding",
            ));
        }
        let conn = Session::connection(&self.inner).await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            conn.task_mgmt(function, Lun::from_flat(lun), referenced),
        )
        .await
        .map_err(|_| InitiatorError::Timeout("task management response"))?
    }

    /// ABORT TASK for a command in flight.
    pub async fn abort_task(&self, task: &TaskId) -> Result<TmfResponse, InitiatorError> {
        self.task_mgmt(TmfFunction::ABORT_TASK, task.lun, Some(task))
            .await
    }

    /// LOGICAL UNIT RESET.
    pub async fn lun_reset(&self, lun: u16) -> Result<TmfResponse, InitiatorError> {
        self.task_mgmt(TmfFunction::LOGICAL_UNIT_RESET, lun, None)
            .await
    }

    /// TARGET WARM RESET.
    pub async fn target_warm_reset(&self) -> Result<TmfResponse, InitiatorError> {
        self.task_mgmt(TmfFunction::TARGET_WARM_RESET, 0, None)
            .await
    }

    /// NOP-Out ping; returns when the target's NOP-In arrives.
    pub async fn ping(&self) -> Result<(), InitiatorError> {
        let conn = Session::connection(&self.inner).await?;
        tokio::time::timeout(Duration::from_secs(30), conn.ping())
            .await
            .map_err(|_| InitiatorError::Timeout("NOP-In"))?
    }

    /// Logs out (close the session) and closes the connection; the session
    /// does not reconnect afterwards. Commands still in flight fail.
    pub async fn logout(&self) -> Result<(), InitiatorError> {
        self.inner.logged_out.store(true, Ordering::Release);
        let conn = self.current();
        let r = tokio::time::timeout(Duration::from_secs(10), conn.logout()).await;
        conn.abort("logged out");
        let r = r.map_err(|_| InitiatorError::Timeout("Logout Response"))??;
        // §11.15.1: 0 = closed successfully.
        if r.response != 0 {
            return Err(InitiatorError::Protocol(format!(
                "Logout Response code {}",
                r.response
            )));
        }
        Ok(())
    }

    /// Makes the target go through what stands in for a power loss (see
    /// [`PowerCycle`]) and returns once it answers again, or fails after
    /// [`POWER_CYCLE_WINDOW`] of refused logins.
    pub async fn power_cycle(&self, lun: u16, how: &PowerCycle) -> Result<(), InitiatorError> {
        match how {
            PowerCycle::LunReset => match self.lun_reset(lun).await? {
                TmfResponse::COMPLETE => return Ok(()),
                r => {
                    return Err(InitiatorError::PowerCycle(format!(
                        "LOGICAL UNIT RESET answered {} (RFC 7143 §11.6.1)",
                        r.0
                    )))
                }
            },
            PowerCycle::ColdReset => {
                // §11.5.1: the target ends every session after answering,
                // so the response may be lost with the connection.
                let _ = self
                    .task_mgmt(TmfFunction::TARGET_COLD_RESET, 0, None)
                    .await;
                // Log in again only once the target has closed this
                // connection: a login racing the reset would be ended with
                // the sessions it is still tearing down.
                let started = std::time::Instant::now();
                while !self.current().is_dead() && started.elapsed() < COLD_RESET_CLOSE {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            PowerCycle::Command(cmd) => {
                let cmd = cmd.clone();
                let status = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(&cmd)
                        .status()
                        .map(|s| (cmd, s))
                })
                .await
                .map_err(|e| InitiatorError::PowerCycle(e.to_string()))?
                .map_err(|e| InitiatorError::PowerCycle(format!("running the command: {e}")))?;
                if !status.1.success() {
                    return Err(InitiatorError::PowerCycle(format!(
                        "`{}` exited with {}",
                        status.0, status.1
                    )));
                }
            }
        }
        // Whatever the target did to the old connection, start afresh.
        self.drop_connection();
        let started = std::time::Instant::now();
        loop {
            match Session::connection(&self.inner).await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() >= POWER_CYCLE_WINDOW => {
                    return Err(InitiatorError::PowerCycle(format!(
                        "the target did not accept a login within {} s: {e}",
                        POWER_CYCLE_WINDOW.as_secs()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Cuts the connection without a logout, as a network failure would:
    /// commands in flight fail with [`InitiatorError::ConnectionLost`] and
    /// the next command logs in again.
    pub fn drop_connection(&self) {
        self.current().abort("connection dropped by the initiator");
    }
}

/// What an initiator can do to make a target lose power: storage under
/// test rarely has a switch the tester can reach, so crash-consistency runs
/// (`scuzz fuzz --to iscsi://`, `scuzz replay` of a trace with power
/// losses) use what the user offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PowerCycle {
    /// LOGICAL UNIT RESET (SAM-5 §6.3.3): a unit attention, nothing need
    /// be lost. The weakest stand-in, and the default.
    #[default]
    LunReset,
    /// TARGET COLD RESET (RFC 7143 §11.5.1): every session ends; a target
    /// that models power (`scuzz serve`) loses its volatile cache.
    ColdReset,
    /// A shell command that power-cycles the target (a switched PDU,
    /// `virsh reset`, a script restarting a target daemon).
    Command(String),
}

/// How long [`Session::power_cycle`] keeps logging in while the target
/// comes back up.
pub const POWER_CYCLE_WINDOW: Duration = Duration::from_secs(60);

/// How long [`Session::power_cycle`] waits for a target to close the
/// connection after a TARGET COLD RESET before logging in anyway.
const COLD_RESET_CLOSE: Duration = Duration::from_secs(5);

/// A command accepted by the session, not yet completed.
#[must_use = "a command's outcome is only known by awaiting it"]
pub struct InFlight {
    id: TaskId,
    rx: oneshot::Receiver<Result<CommandResponse, InitiatorError>>,
    _conn: Arc<Connection>,
}

impl InFlight {
    /// The command's tags (for [`Session::abort_task`]).
    pub fn id(&self) -> &TaskId {
        &self.id
    }
}

impl Future for InFlight {
    type Output = Result<CommandResponse, InitiatorError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(InitiatorError::ConnectionLost {
                task: self.id.clone(),
                reason: "connection dropped".into(),
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs a discovery session on `addr` and returns what `SendTargets=All`
/// reports (RFC 7143 §11.10.1, Appendix C).
pub async fn discover(
    addr: &str,
    opts: &LoginOptions,
) -> Result<Vec<DiscoveredTarget>, InitiatorError> {
    tokio::time::timeout(
        opts.login_timeout,
        login::send_targets(addr, opts, new_isid()),
    )
    .await
    .map_err(|_| InitiatorError::Timeout("discovery"))?
}
