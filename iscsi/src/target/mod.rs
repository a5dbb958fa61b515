//! An iSCSI target (RFC 7143) serving a [`ScsiDevice`] over TCP.
//!
//! One tokio task per connection; with MaxConnections=1 a connection is a
//! session. Login ([`login`]) authenticates (None or CHAP) and negotiates;
//! the full-feature phase ([`session`]) runs the command window, Data-In,
//! R2T/Data-Out, task management and logout. Every session shares one
//! device, so all initiators see the same disk.
//!
//! ```no_run
//! # async fn f(device: iscsi::target::SharedDevice) -> std::io::Result<()> {
//! use iscsi::target::{Target, TargetConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3260").await?;
//! let target = Target::new(TargetConfig::new("iqn.2026-11.dev.scuzz:disk"), device);
//! target.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod device;
pub mod emulator;
pub mod login;
pub mod session;

pub use device::{ResetScope, ScsiDevice, ScsiOutcome, ScsiRequest, SharedDevice};

use crate::login::OperationalParams;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// CHAP credentials an initiator must present (one-way CHAP).
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    /// CHAP_N the initiator must send.
    pub user: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("user", &self.user)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// A target's identity, security and limits.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The target's iSCSI name.
    pub iqn: String,
    /// TargetAlias, if any.
    pub alias: Option<String>,
    /// Require CHAP with these credentials; `None` allows AuthMethod=None.
    pub chap: Option<ChapCredentials>,
    /// Limits and preferences the target negotiates with.
    pub params: OperationalParams,
    /// MaxRecvDataSegmentLength the target declares.
    pub max_recv_data_segment: u32,
    /// Commands the target accepts ahead of ExpCmdSN (MaxCmdSN - ExpCmdSN + 1).
    pub cmd_window: u32,
    /// Largest ExpectedDataTransferLength accepted for one command; larger
    /// ones fail with INVALID FIELD IN CDB rather than make the target
    /// buffer what a length field asks for.
    pub max_command_bytes: u32,
    /// Largest total ExpectedDataTransferLength of the writes one session
    /// may have waiting for Data-Out; beyond it new writes get TASK SET FULL.
    pub max_pending_write_bytes: u64,
    /// How long a connection may take to complete login.
    pub login_timeout: Duration,
}

impl TargetConfig {
    /// Defaults tuned for loopback speed: large bursts, immediate and
    /// unsolicited data allowed, digests allowed if the initiator asks.
    pub fn new(iqn: impl Into<String>) -> TargetConfig {
        TargetConfig {
            iqn: iqn.into(),
            alias: None,
            chap: None,
            params: OperationalParams {
                header_digest: true,
                data_digest: true,
                max_connections: 1,
                initial_r2t: false,
                immediate_data: true,
                max_burst_length: 16_776_192,
                first_burst_length: 262_144,
                default_time2wait: 2,
                default_time2retain: 0,
                max_outstanding_r2t: 16,
                data_pdu_in_order: true,
                data_sequence_in_order: true,
                error_recovery_level: 0,
            },
            max_recv_data_segment: 262_144,
            cmd_window: 128,
            max_command_bytes: 256 << 20,
            max_pending_write_bytes: 512 << 20,
            login_timeout: Duration::from_secs(30),
        }
    }
}

/// Something worth a log line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TargetEvent {
    /// A session entered the full-feature phase.
    SessionStarted {
        /// Peer address.
        peer: SocketAddr,
        /// InitiatorName.
        initiator: String,
        /// TSIH assigned.
        tsih: u16,
        /// Whether this is a discovery session.
        discovery: bool,
        /// Digests negotiated (RFC 7143 §13.1).
        digests: crate::pdu::Digests,
    },
    /// A session ended.
    SessionEnded {
        /// Peer address.
        peer: SocketAddr,
        /// TSIH.
        tsih: u16,
        /// Why (logout, connection closed, protocol error, ...).
        reason: String,
    },
    /// A login failed.
    LoginFailed {
        /// Peer address.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for TargetEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetEvent::SessionStarted {
                peer,
                initiator,
                tsih,
                discovery,
                digests,
            } => {
                write!(
                    f,
                    "{peer}: {} session {tsih:#06x} for {initiator}",
                    if *discovery { "discovery" } else { "normal" }
                )?;
                let name = |on: bool| if on { "CRC32C" } else { "None" };
                if digests.header || digests.data {
                    write!(
                        f,
                        " (HeaderDigest={}, DataDigest={})",
                        name(digests.header),
                        name(digests.data)
                    )?;
                }
                Ok(())
            }
            TargetEvent::SessionEnded { peer, tsih, reason } => {
                write!(f, "{peer}: session {tsih:#06x} ended: {reason}")
            }
            TargetEvent::LoginFailed { peer, reason } => {
                write!(f, "{peer}: login failed: {reason}")
            }
        }
    }
}

/// Receives [`TargetEvent`]s.
pub type EventSink = Arc<dyn Fn(TargetEvent) + Send + Sync>;

/// (InitiatorName, ISID): what identifies a session for reinstatement.
type SessionKey = (String, [u8; 6]);

/// Live sessions, for TSIH allocation and session reinstatement (RFC 7143
/// §6.3.5: a login with the ISID and InitiatorName of a live session and
/// TSIH 0 replaces it).
#[derive(Default)]
pub(crate) struct Registry {
    next_tsih: AtomicU16,
    live: Mutex<HashMap<SessionKey, (u16, Arc<Notify>)>>,
}

impl Registry {
    /// A fresh TSIH (never 0, which on the wire means "new session").
    pub(crate) fn tsih(&self) -> u16 {
        loop {
            let t = self
                .next_tsih
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if t != 0 {
                return t;
            }
        }
    }

    /// Registers a new session, closing any session it reinstates.
    pub(crate) fn register(&self, initiator: &str, isid: [u8; 6]) -> (u16, Arc<Notify>) {
        let tsih = self.tsih();
        let kill = Arc::new(Notify::new());
        let old = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((initiator.to_string(), isid), (tsih, kill.clone()));
        if let Some((_, old_kill)) = old {
            old_kill.notify_one();
        }
        (tsih, kill)
    }

    /// Closes every registered session.
    pub(crate) fn kill_all(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for (_, kill) in live.values() {
            kill.notify_one();
        }
    }

    pub(crate) fn unregister(&self, initiator: &str, isid: [u8; 6], tsih: u16) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let key = (initiator.to_string(), isid);
        if live.get(&key).is_some_and(|(t, _)| *t == tsih) {
            live.remove(&key);
        }
    }
}

/// An iSCSI target.
#[derive(Clone)]
pub struct Target {
    config: Arc<TargetConfig>,
    device: SharedDevice,
    registry: Arc<Registry>,
    events: Option<EventSink>,
}

impl Target {
    /// A target serving `device`.
    pub fn new(config: TargetConfig, device: SharedDevice) -> Target {
        Target {
            config: Arc::new(config),
            device,
            registry: Arc::new(Registry::default()),
            events: None,
        }
    }

    /// Sends session events to `sink` (e.g. a logger).
    pub fn with_events(mut self, sink: EventSink) -> Target {
        self.events = Some(sink);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// Accepts connections until `shutdown` completes, then closes every
    /// connection and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        // Out of file descriptors and the like: keep serving
                        // the connections we have.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let me = self.clone();
                    tasks.spawn(async move { me.handle(stream, peer).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        Ok(())
    }

    /// Serves one connection to its end.
    pub async fn handle(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let mut conn = session::Connection::new(stream);
        let outcome = tokio::time::timeout(
            self.config.login_timeout,
            login::run(&mut conn, &self.config, &self.registry),
        )
        .await;
        let established = match outcome {
            Ok(Ok(est)) => est,
            Ok(Err(e)) => {
                self.emit(TargetEvent::LoginFailed {
                    peer,
                    reason: e.to_string(),
                });
                return;
            }
            Err(_) => {
                self.emit(TargetEvent::LoginFailed {
                    peer,
                    reason: "login timed out".into(),
                });
                return;
            }
        };
        self.emit(TargetEvent::SessionStarted {
            peer,
            initiator: established.initiator_name.clone(),
            tsih: established.tsih,
            discovery: established.discovery,
            digests: crate::pdu::Digests {
                header: established.negotiated.params.header_digest,
                data: established.negotiated.params.data_digest,
            },
        });
        let (initiator_name, isid, tsih, discovery) = (
            established.initiator_name.clone(),
            established.isid,
            established.tsih,
            established.discovery,
        );
        let port_name = established.port_name.clone();
        let kill = established.kill.clone();
        let mut s = session::Session::new(
            conn,
            established,
            self.config.clone(),
            self.device.clone(),
            local,
        );
        let reason = tokio::select! {
            r = s.run() => match r {
                Ok(session::EndReason::ColdReset) => {
                    // RFC 7143 §11.5.1: after a TARGET COLD RESET the target
                    // terminates all of its sessions.
                    self.registry.kill_all();
                    session::EndReason::ColdReset.to_string()
                }
                Ok(why) => why.to_string(),
                Err(e) => e.to_string(),
            },
            _ = kill.notified() => "closed by a reinstating login or a target cold reset".to_string(),
        };
        drop(s);
        if let Ok(mut d) = self.device.lock() {
            d.nexus_lost(&port_name);
        }
        if !discovery {
            self.registry.unregister(&initiator_name, isid, tsih);
        }
        self.emit(TargetEvent::SessionEnded { peer, tsih, reason });
    }

    fn emit(&self, e: TargetEvent) {
        if let Some(sink) = &self.events {
            sink(e);
        }
    }
}
