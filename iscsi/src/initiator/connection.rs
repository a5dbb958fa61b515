//! One full-feature-phase connection: the command window, the task table,
//! and the two tasks that own the socket.
//!
//! * Submitters take a CmdSN and an ITT under one lock and encode their
//!   PDUs into the connection's outgoing buffer in that same critical
//!   section, so commands reach the wire in CmdSN order (RFC 7143 §4.2.2.1
//!   lets a target hold out-of-order commands, but nothing gains from
//!   making it).
//! * A command submitted while nothing else is in flight is written at
//!   once with a non-blocking `write` (no task switch on the path of a QD1
//!   command). With other commands in flight the writer task is woken
//!   instead: it runs after the tasks already runnable, which are typically
//!   the submitters woken by the same batch of responses, so at queue depth
//!   32 many commands share one system call. The writer task also finishes
//!   any write the socket could not take at once.
//! * The reader task decodes every PDU from the target, advances
//!   ExpStatSN and the window, reassembles Data-In, answers R2T with
//!   Data-Out and NOP-In pings with NOP-Out, and completes tasks. It never
//!   waits on the socket's write side, so a target that stops reading until
//!   we read cannot deadlock us.
//!
//! When the connection ends for any reason, every task still in the table
//! fails with a typed error naming it ([`InitiatorError::ConnectionLost`]).

use super::error::{InitiatorError, TaskId};
use super::login::LoggedIn;
use super::{CommandResponse, Residual};
use crate::codec::PduCodec;
use crate::login::{Negotiated, OperationalParams};
use crate::pdu::{
    opcode, DataOut, Digests, Frame, Header, LogoutRequest, LogoutResponse, Lun, NopOut, Pdu,
    RejectReason, ScsiCommand, TaskAttribute, TaskMgmtRequest, TmfFunction, TmfResponse,
    RESERVED_TAG,
};
use crate::sn;
use bytes::Buf;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// Largest CDB a SCSI Command can carry: 16 bytes in the BHS plus an
/// Extended CDB AHS (RFC 7143 §11.3.4); SPC's variable-length CDBs stay
/// far below this.
pub(crate) const MAX_CDB_LEN: usize = 260;

/// Read buffer growth: one `read` takes many small responses at once.
const READ_CHUNK: usize = 256 * 1024;

/// Data-In collected for one command.
#[derive(Debug, Default)]
enum DataInBuf {
    #[default]
    Empty,
    /// One PDU's segment so far, at offset 0: kept without copying (the
    /// common case of a read that fits in MaxRecvDataSegmentLength).
    Single(Bytes),
    /// Reassembled from several PDUs by Buffer Offset.
    Assembled(Vec<u8>),
}

impl DataInBuf {
    fn put(&mut self, offset: usize, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len();
        match self {
            DataInBuf::Empty if offset == 0 => *self = DataInBuf::Single(data),
            DataInBuf::Empty => {
                let mut v = vec![0u8; end];
                v[offset..].copy_from_slice(&data);
                *self = DataInBuf::Assembled(v);
            }
            DataInBuf::Single(first) => {
                let mut v = Vec::with_capacity(end.max(first.len()));
                v.extend_from_slice(first);
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[offset..end].copy_from_slice(&data);
                *self = DataInBuf::Assembled(v);
            }
            DataInBuf::Assembled(v) => {
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[offset..end].copy_from_slice(&data);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            DataInBuf::Empty => Bytes::new(),
            DataInBuf::Single(b) => b,
            DataInBuf::Assembled(v) => Bytes::from(v),
        }
    }
}

struct CommandTask {
    id: TaskId,
    lun: Lun,
    reply: oneshot::Sender<Result<CommandResponse, InitiatorError>>,
    data_out: Bytes,
    expected_in: u32,
    data_in: DataInBuf,
}

enum Task {
    Command(CommandTask),
    Tmf {
        reply: oneshot::Sender<Result<TmfResponse, InitiatorError>>,
        function: TmfFunction,
        lun: Lun,
        referenced: u32,
        cmd_sn: u32,
    },
    Logout(oneshot::Sender<Result<LogoutResponse, InitiatorError>>),
    Ping(oneshot::Sender<Result<(), InitiatorError>>),
}

impl Task {
    fn fail(self, reason: &str) {
        let reason = reason.to_string();
        match self {
            Task::Command(t) => {
                let _ = t
                    .reply
                    .send(Err(InitiatorError::ConnectionLost { task: t.id, reason }));
            }
            Task::Tmf { reply, .. } => {
                let _ = reply.send(Err(InitiatorError::ConnectionLostDuring {
                    what: "task management",
                    reason,
                }));
            }
            Task::Logout(reply) => {
                let _ = reply.send(Err(InitiatorError::ConnectionLostDuring {
                    what: "logout",
                    reason,
                }));
            }
            Task::Ping(reply) => {
                let _ = reply.send(Err(InitiatorError::ConnectionLostDuring {
                    what: "NOP-Out ping",
                    reason,
                }));
            }
        }
    }
}

struct State {
    /// CmdSN the next non-immediate request takes.
    cmd_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    exp_stat_sn: u32,
    next_itt: u32,
    tasks: HashMap<u32, Task>,
    /// Why the connection ended; set once.
    dead: Option<String>,
    /// Encoded PDUs not yet handed to the socket.
    out: BytesMut,
    /// Someone (a submitter or the writer task) is writing; others only
    /// append to `out`.
    flushing: bool,
    /// Bytes a non-blocking write could not place, for the writer task.
    stalled: Option<Bytes>,
    /// The socket's write side; `None` once the connection ended.
    wr: Option<Arc<OwnedWriteHalf>>,
    digests: Digests,
}

impl State {
    /// Appends a PDU to the outgoing buffer.
    fn push(&mut self, pdu: &Pdu) {
        if self.wr.is_some() {
            pdu.encode(self.digests, &mut self.out);
        }
    }

    /// A tag not in use and not the reserved 0xffffffff (§11.2.1.8).
    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    /// §4.2.2.1: "If MaxCmdSN is less than ExpCmdSN - 1 (in serial
    /// arithmetic), both values MUST be ignored"; otherwise each only moves
    /// forward. Returns whether the window grew.
    fn update_window(&mut self, exp: u32, max: u32) -> bool {
        if sn::lt(max, exp.wrapping_sub(1)) {
            return false;
        }
        if sn::gt(exp, self.exp_cmd_sn) {
            self.exp_cmd_sn = exp;
        }
        if sn::gt(max, self.max_cmd_sn) {
            self.max_cmd_sn = max;
            return true;
        }
        false
    }

    /// StatSN of a status-bearing PDU acknowledges everything up to it.
    fn saw_stat_sn(&mut self, stat_sn: u32) {
        let next = stat_sn.wrapping_add(1);
        if sn::gt(next, self.exp_stat_sn) {
            self.exp_stat_sn = next;
        }
    }

    fn window_open(&self) -> bool {
        !sn::gt(self.cmd_sn, self.max_cmd_sn)
    }
}

struct Shared {
    addr: String,
    state: Mutex<State>,
    /// Woken when MaxCmdSN grows or the connection ends.
    window: Notify,
    /// Tells the writer to close the socket.
    stop_writer: Notify,
    /// Tells the reader to stop reading.
    stop_reader: Notify,
    /// Hands a stalled write to the writer task.
    writer_wake: Notify,
    negotiated: Negotiated,
    /// Mirrors `State::dead.is_some()` for readers that need no lock.
    ended: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the table half
        // updated in a way later users could misread; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the connection: every task still waiting fails with `reason`.
    fn fail_all(&self, reason: String) {
        let tasks: Vec<Task> = {
            let mut st = self.lock();
            if st.dead.is_none() {
                st.dead = Some(reason.clone());
            }
            st.wr = None;
            st.out = BytesMut::new();
            st.stalled = None;
            self.ended.store(true, Ordering::Release);
            st.tasks.drain().map(|(_, t)| t).collect()
        };
        let reason = self.lock().dead.clone().unwrap_or(reason);
        for t in tasks {
            t.fail(&reason);
        }
        self.window.notify_waiters();
        self.stop_writer.notify_one();
        self.stop_reader.notify_one();
    }

    fn params(&self) -> &OperationalParams {
        &self.negotiated.params
    }

    /// Gets the outgoing buffer written: now (`direct`, non-blocking, so it
    /// may run under any task) if nobody else is writing, else by the writer
    /// task; what the socket cannot take at once goes to the writer task.
    fn kick(&self, direct: bool) {
        if !direct {
            self.writer_wake.notify_one();
            return;
        }
        let (mut chunk, wr) = {
            let mut st = self.lock();
            if st.flushing || st.out.is_empty() {
                return;
            }
            let Some(wr) = st.wr.clone() else {
                return;
            };
            st.flushing = true;
            (st.out.split().freeze(), wr)
        };
        loop {
            match wr.try_write(&chunk) {
                Ok(n) if n > 0 => {
                    chunk.advance(n);
                    if !chunk.is_empty() {
                        continue;
                    }
                    let mut st = self.lock();
                    if st.out.is_empty() || st.wr.is_none() {
                        st.flushing = false;
                        return;
                    }
                    chunk = st.out.split().freeze();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.lock().stalled = Some(chunk);
                    self.writer_wake.notify_one();
                    return;
                }
                Ok(_) => {
                    self.fail_all(format!("write to {}: socket accepts nothing", self.addr));
                    return;
                }
                Err(e) => {
                    self.fail_all(format!("write to {}: {e}", self.addr));
                    return;
                }
            }
        }
    }
}

/// A logged-in connection (MaxConnections=1, so also the session).
pub(crate) struct Connection {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A command accepted into the window: its identity and the receiver of
/// its outcome.
pub(crate) struct Submitted {
    pub id: TaskId,
    pub rx: oneshot::Receiver<Result<CommandResponse, InitiatorError>>,
}

impl Connection {
    /// Takes over a logged-in socket and starts the reader and writer.
    pub(crate) fn start(li: LoggedIn, addr: &str) -> Arc<Connection> {
        let params = li.negotiated.params;
        let digests = Digests {
            header: params.header_digest,
            data: params.data_digest,
        };
        let (rd, wr) = li.stream.into_split();
        let wr = Arc::new(wr);
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            state: Mutex::new(State {
                cmd_sn: li.cmd_sn,
                exp_cmd_sn: li.exp_cmd_sn,
                max_cmd_sn: li.max_cmd_sn,
                exp_stat_sn: li.exp_stat_sn,
                next_itt: 0x10,
                tasks: HashMap::new(),
                dead: None,
                out: BytesMut::with_capacity(64 * 1024),
                flushing: false,
                stalled: None,
                wr: Some(wr.clone()),
                digests,
            }),
            window: Notify::new(),
            stop_writer: Notify::new(),
            stop_reader: Notify::new(),
            writer_wake: Notify::new(),
            negotiated: li.negotiated,
            ended: AtomicBool::new(false),
        });
        let codec = PduCodec {
            digests,
            max_recv_data_segment: li.our_max_recv,
        };
        let reader = tokio::spawn(read_loop(shared.clone(), rd, li.buf, codec));
        let writer = tokio::spawn(write_loop(shared.clone(), wr));
        Arc::new(Connection {
            shared,
            reader,
            writer,
        })
    }

    pub(crate) fn negotiated(&self) -> Negotiated {
        self.shared.negotiated
    }

    /// Whether the connection has ended (lock-free: checked per command).
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.ended.load(Ordering::Acquire)
    }

    /// Queues a SCSI Command (with its immediate and unsolicited data) once
    /// the window has room. Fails with [`InitiatorError::Closed`] without
    /// sending anything if the connection has ended.
    pub(crate) async fn submit(
        &self,
        lun: Lun,
        cdb: &[u8],
        data_out: Bytes,
        expected_in: u32,
        attr: TaskAttribute,
    ) -> Result<Submitted, InitiatorError> {
        let sh = &self.shared;
        let out_len = data_out.len();
        let out_len32 = u32::try_from(out_len)
            .map_err(|_| InitiatorError::InvalidRequest("Data-Out longer than 4 GiB"))?;
        let params = *sh.params();
        let mrds = sh.negotiated.target_max_recv as usize;
        // §13.5/§13.6/§13.14: immediate data up to FirstBurstLength (and one
        // PDU's MaxRecvDataSegmentLength); with InitialR2T=No, unsolicited
        // Data-Out PDUs continue up to FirstBurstLength.
        let first_burst = params.first_burst_length as usize;
        let immediate = if params.immediate_data {
            out_len.min(first_burst).min(mrds)
        } else {
            0
        };
        let unsolicited_end = if params.initial_r2t {
            immediate
        } else {
            out_len.min(first_burst)
        };
        loop {
            let notified = {
                let mut st = sh.lock();
                if let Some(reason) = &st.dead {
                    return Err(InitiatorError::Closed(reason.clone()));
                }
                if st.window_open() {
                    let itt = st.alloc_itt();
                    let cmd_sn = st.cmd_sn;
                    st.cmd_sn = cmd_sn.wrapping_add(1);
                    let exp_stat_sn = st.exp_stat_sn;
                    let id = TaskId {
                        itt,
                        cmd_sn,
                        lun: lun.flat().unwrap_or((lun.0 >> 48) as u16),
                        cdb: cdb[..cdb.len().min(16)].to_vec(),
                    };
                    let write = out_len > 0;
                    let read = expected_in > 0;
                    let cmd = ScsiCommand {
                        immediate: false,
                        // §11.3.1: F=1 when no unsolicited Data-Out follows.
                        final_: unsolicited_end == immediate,
                        read,
                        write,
                        attr,
                        lun,
                        itt,
                        expected_length: if write { out_len32 } else { expected_in },
                        cmd_sn,
                        exp_stat_sn,
                        cdb: cdb.to_vec(),
                        // §11.3.5: a bidirectional command states its read
                        // length in an AHS.
                        bidi_read_length: (write && read).then_some(expected_in),
                    };
                    st.push(&Pdu::new(
                        Header::ScsiCommand(cmd),
                        data_out.slice(..immediate),
                    ));
                    queue_data_out(
                        &mut st,
                        &data_out,
                        lun,
                        itt,
                        RESERVED_TAG,
                        exp_stat_sn,
                        immediate,
                        unsolicited_end,
                        mrds,
                    );
                    let (reply, rx) = oneshot::channel();
                    st.tasks.insert(
                        itt,
                        Task::Command(CommandTask {
                            id: id.clone(),
                            lun,
                            reply,
                            data_out,
                            expected_in,
                            data_in: DataInBuf::Empty,
                        }),
                    );
                    // Alone in flight: nothing to batch with, write now.
                    let direct = st.tasks.len() == 1;
                    drop(st);
                    sh.kick(direct);
                    return Ok(Submitted { id, rx });
                }
                // Registered while the lock keeps the reader from moving
                // the window, so its wake-up cannot be missed.
                let notified = sh.window.notified();
                drop(st);
                notified
            };
            notified.await;
        }
    }

    /// Sends a Task Management Function Request (immediate, §11.5) and
    /// waits for its response. On "function complete", the commands the
    /// function terminated fail with [`InitiatorError::Aborted`].
    pub(crate) async fn task_mgmt(
        &self,
        function: TmfFunction,
        lun: Lun,
        referenced: Option<&TaskId>,
    ) -> Result<TmfResponse, InitiatorError> {
        let sh = &self.shared;
        let rx = {
            let mut st = sh.lock();
            if let Some(reason) = &st.dead {
                return Err(InitiatorError::Closed(reason.clone()));
            }
            let itt = st.alloc_itt();
            let cmd_sn = st.cmd_sn;
            let req = TaskMgmtRequest {
                immediate: true,
                function,
                lun,
                itt,
                referenced_tt: referenced.map_or(RESERVED_TAG, |t| t.itt),
                cmd_sn,
                exp_stat_sn: st.exp_stat_sn,
                // §11.5.4: RefCmdSN is the referenced task's CmdSN for ABORT
                // TASK; otherwise it must be the TMF's own CmdSN.
                ref_cmd_sn: referenced.map_or(cmd_sn, |t| t.cmd_sn),
                exp_data_sn: 0,
            };
            st.push(&Pdu::header_only(Header::TaskMgmtRequest(req)));
            let (reply, rx) = oneshot::channel();
            st.tasks.insert(
                itt,
                Task::Tmf {
                    reply,
                    function,
                    lun,
                    referenced: referenced.map_or(RESERVED_TAG, |t| t.itt),
                    cmd_sn,
                },
            );
            rx
        };
        sh.kick(true);
        rx.await
            .unwrap_or_else(|_| Err(InitiatorError::Closed("connection dropped".into())))
    }

    /// NOP-Out ping with a tag (§11.18): the target must answer with a
    /// NOP-In, proving the connection and the target's loop are alive.
    pub(crate) async fn ping(&self) -> Result<(), InitiatorError> {
        let sh = &self.shared;
        let rx = {
            let mut st = sh.lock();
            if let Some(reason) = &st.dead {
                return Err(InitiatorError::Closed(reason.clone()));
            }
            let itt = st.alloc_itt();
            let req = NopOut {
                immediate: true,
                lun: Lun::default(),
                itt,
                ttt: RESERVED_TAG,
                cmd_sn: st.cmd_sn,
                exp_stat_sn: st.exp_stat_sn,
            };
            st.push(&Pdu::header_only(Header::NopOut(req)));
            let (reply, rx) = oneshot::channel();
            st.tasks.insert(itt, Task::Ping(reply));
            rx
        };
        sh.kick(true);
        rx.await
            .unwrap_or_else(|_| Err(InitiatorError::Closed("connection dropped".into())))
    }

    /// Logout "close the session" (§11.14, reason 0), then closes the
    /// socket. Commands still in flight fail.
    pub(crate) async fn logout(&self) -> Result<LogoutResponse, InitiatorError> {
        let sh = &self.shared;
        let rx = {
            let mut st = sh.lock();
            if let Some(reason) = &st.dead {
                return Err(InitiatorError::Closed(reason.clone()));
            }
            let itt = st.alloc_itt();
            let req = LogoutRequest {
                immediate: true,
                reason: 0,
                itt,
                cid: 0,
                cmd_sn: st.cmd_sn,
                exp_stat_sn: st.exp_stat_sn,
            };
            st.push(&Pdu::header_only(Header::LogoutRequest(req)));
            let (reply, rx) = oneshot::channel();
            st.tasks.insert(itt, Task::Logout(reply));
            rx
        };
        sh.kick(true);
        let r = rx
            .await
            .unwrap_or_else(|_| Err(InitiatorError::Closed("connection dropped".into())));
        sh.fail_all("logged out".into());
        r
    }

    /// Removes a task from the table without an answer (after a timed-out
    /// command's ABORT TASK): a late response for it is then ignored.
    pub(crate) fn forget(&self, itt: u32) {
        self.shared.lock().tasks.remove(&itt);
    }

    /// Drops the connection as if the network failed (tests and the
    /// reconnect path use it).
    pub(crate) fn abort(&self, reason: &str) {
        self.shared.fail_all(reason.to_string());
    }
}

/// Queues Data-Out PDUs for `data[from..to]`, each at most `mrds` bytes,
/// DataSN from 0, F on the last (§11.7: one sequence per R2T or per
/// unsolicited burst).
#[allow(clippy::too_many_arguments)]
fn queue_data_out(
    st: &mut State,
    data: &Bytes,
    lun: Lun,
    itt: u32,
    ttt: u32,
    exp_stat_sn: u32,
    from: usize,
    to: usize,
    mrds: usize,
) {
    let mut off = from;
    let mut data_sn = 0u32;
    while off < to {
        let n = (to - off).min(mrds.max(1));
        let h = DataOut {
            final_: off + n == to,
            lun,
            itt,
            ttt,
            exp_stat_sn,
            data_sn,
            buffer_offset: off as u32,
        };
        st.push(&Pdu::new(Header::DataOut(h), data.slice(off..off + n)));
        off += n;
        data_sn = data_sn.wrapping_add(1);
    }
}

/// Finishes writes the socket could not take at once, then hands the
/// socket back to non-blocking writers.
async fn write_loop(sh: Arc<Shared>, wr: Arc<OwnedWriteHalf>) {
    let stop = sh.stop_writer.notified();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = sh.writer_wake.notified() => {}
            _ = &mut stop => return,
        }
        // Become the writer: a stalled direct write hands over ownership;
        // otherwise only if nobody is writing (that writer drains `out`).
        let mut owner = false;
        loop {
            let mut chunk = {
                let mut st = sh.lock();
                if st.wr.is_none() {
                    return;
                }
                if let Some(c) = st.stalled.take() {
                    owner = true;
                    c
                } else if !owner && st.flushing {
                    break;
                } else if !st.out.is_empty() {
                    owner = true;
                    st.flushing = true;
                    st.out.split().freeze()
                } else {
                    if owner {
                        st.flushing = false;
                    }
                    break;
                }
            };
            while !chunk.is_empty() {
                let ready = tokio::select! {
                    r = wr.writable() => r,
                    _ = &mut stop => return,
                };
                let r = ready.and_then(|()| wr.try_write(&chunk));
                match r {
                    Ok(n) if n > 0 => chunk.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Ok(_) => {
                        sh.fail_all(format!("write to {}: socket accepts nothing", sh.addr));
                        return;
                    }
                    Err(e) => {
                        sh.fail_all(format!("write to {}: {e}", sh.addr));
                        return;
                    }
                }
            }
        }
    }
}

async fn read_loop(
    shared: Arc<Shared>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: BytesMut,
    codec: PduCodec,
) {
    let stop = shared.stop_reader.notified();
    tokio::pin!(stop);
    let reason = 'conn: loop {
        // Every whole PDU already buffered, then one write for whatever
        // they queued (Data-Out for R2Ts, NOP-Out answers).
        loop {
            match Frame::decode(&mut buf, codec.digests, codec.max_recv_data_segment) {
                Ok(Some(frame)) => {
                    if let Err(why) = handle(&shared, frame) {
                        break 'conn format!(
                            "{why}; closing the connection (ErrorRecoveryLevel 0)"
                        );
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn format!("read from {}: {e}", shared.addr),
            }
        }
        shared.kick(true);
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(READ_CHUNK);
        }
        let n = tokio::select! {
            n = rd.read_buf(&mut buf) => n,
            _ = &mut stop => break String::new(),
        };
        match n {
            Ok(0) if buf.is_empty() => break format!("{} closed the connection", shared.addr),
            Ok(0) => {
                break format!(
                    "{} closed the connection inside a PDU ({} bytes buffered)",
                    shared.addr,
                    buf.len()
                )
            }
            Ok(_) => {}
            Err(e) => break format!("read from {}: {e}", shared.addr),
        }
    };
    shared.fail_all(reason);
}

fn residual(overflow: bool, underflow: bool, count: u32) -> Residual {
    if underflow {
        Residual::Underflow(count)
    } else if overflow {
        Residual::Overflow(count)
    } else {
        Residual::None
    }
}

fn tmf_name(f: TmfFunction) -> &'static str {
    match f {
        TmfFunction::ABORT_TASK => "ABORT TASK",
        TmfFunction::ABORT_TASK_SET => "ABORT TASK SET",
        TmfFunction::CLEAR_TASK_SET => "CLEAR TASK SET",
        TmfFunction::LOGICAL_UNIT_RESET => "LOGICAL UNIT RESET",
        TmfFunction::TARGET_WARM_RESET => "TARGET WARM RESET",
        TmfFunction::TARGET_COLD_RESET => "TARGET COLD RESET",
        _ => "task management function",
    }
}

/// Processes one PDU from the target. An `Err` is a protocol violation
/// that ends the connection.
fn handle(sh: &Shared, frame: Frame) -> Result<(), String> {
    let pdu = frame.parse().map_err(|e| {
        format!(
            "undecodable {}: {e}",
            crate::pdu::opcode_name(frame.opcode())
        )
    })?;
    let data = pdu.data;
    let mut st = sh.lock();
    match pdu.header {
        Header::DataIn(d) => {
            if st.update_window(d.exp_cmd_sn, d.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            if d.status.is_some() {
                st.saw_stat_sn(d.stat_sn);
            }
            // A task the initiator already gave up on (aborted) may still
            // see its data; drop it.
            let Some(Task::Command(t)) = st.tasks.get_mut(&d.itt) else {
                return Ok(());
            };
            let end = u64::from(d.buffer_offset) + data.len() as u64;
            if end > u64::from(t.expected_in) {
                // §11.7.5: data beyond the expected length is the target's
                // residual to report, never to send.
                return Err(format!(
                    "Data-In for {} runs to byte {end}, past its expected length {}",
                    t.id, t.expected_in
                ));
            }
            t.data_in.put(d.buffer_offset as usize, data);
            if let Some(status) = d.status {
                let Some(Task::Command(t)) = st.tasks.remove(&d.itt) else {
                    return Ok(());
                };
                drop(st);
                // §11.7.4: status collapsed into the last Data-In.
                let _ = t.reply.send(Ok(CommandResponse {
                    response: 0,
                    status,
                    sense: Bytes::new(),
                    data_in: t.data_in.into_bytes(),
                    residual: residual(d.overflow, d.underflow, d.residual),
                    bidi_read_residual: Residual::None,
                }));
            }
        }
        Header::ScsiResponse(r) => {
            if st.update_window(r.exp_cmd_sn, r.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            st.saw_stat_sn(r.stat_sn);
            let t = match st.tasks.remove(&r.itt) {
                Some(Task::Command(t)) => t,
                Some(other) => {
                    st.tasks.insert(r.itt, other);
                    return Err(format!("SCSI Response for non-command ITT {:#x}", r.itt));
                }
                None => return Ok(()),
            };
            drop(st);
            // §11.4.7.2: the data segment is SenseLength (2 bytes) followed
            // by the sense data.
            let sense = if data.len() >= 2 {
                let sl = usize::from(u16::from_be_bytes([data[0], data[1]]));
                data.slice(2..(2 + sl).min(data.len()))
            } else {
                Bytes::new()
            };
            let _ = t.reply.send(Ok(CommandResponse {
                response: r.response,
                status: r.status,
                sense,
                data_in: t.data_in.into_bytes(),
                residual: residual(r.overflow, r.underflow, r.residual),
                bidi_read_residual: residual(
                    r.bidi_overflow,
                    r.bidi_underflow,
                    r.bidi_read_residual,
                ),
            }));
        }
        Header::R2t(r) => {
            if st.update_window(r.exp_cmd_sn, r.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            let exp_stat_sn = st.exp_stat_sn;
            let Some(Task::Command(t)) = st.tasks.get(&r.itt) else {
                return Ok(());
            };
            let from = r.buffer_offset as usize;
            let to = from
                .checked_add(r.desired_length as usize)
                .filter(|&e| e <= t.data_out.len())
                .ok_or_else(|| {
                    format!(
                        "R2T for {} asks bytes {}+{} of a {}-byte write",
                        t.id,
                        r.buffer_offset,
                        r.desired_length,
                        t.data_out.len()
                    )
                })?;
            // §11.8.3: DesiredDataTransferLength never exceeds
            // MaxBurstLength; a target asking more is answered anyway,
            // split into PDUs it can receive.
            let (data, lun) = (t.data_out.clone(), t.lun);
            queue_data_out(
                &mut st,
                &data,
                lun,
                r.itt,
                r.ttt,
                exp_stat_sn,
                from,
                to,
                sh.negotiated.target_max_recv as usize,
            );
        }
        Header::NopIn(n) => {
            if st.update_window(n.exp_cmd_sn, n.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            if n.itt != RESERVED_TAG {
                // The answer to our ping; its StatSN advances (§11.19.2).
                st.saw_stat_sn(n.stat_sn);
                if let Some(Task::Ping(reply)) = st.tasks.remove(&n.itt) {
                    let _ = reply.send(Ok(()));
                }
            }
            if n.ttt != RESERVED_TAG {
                // §11.19.1: a target ping with a TTT must be answered with
                // a NOP-Out carrying it, ITT reserved, echoing the data.
                let out = NopOut {
                    immediate: true,
                    lun: n.lun,
                    itt: RESERVED_TAG,
                    ttt: n.ttt,
                    cmd_sn: st.cmd_sn,
                    exp_stat_sn: st.exp_stat_sn,
                };
                let echo = data.slice(..data.len().min(sh.negotiated.target_max_recv as usize));
                st.push(&Pdu::new(Header::NopOut(out), echo));
            }
        }
        Header::TaskMgmtResponse(r) => {
            if st.update_window(r.exp_cmd_sn, r.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            st.saw_stat_sn(r.stat_sn);
            let Some(Task::Tmf {
                reply,
                function,
                lun,
                referenced,
                cmd_sn,
            }) = st.tasks.remove(&r.itt)
            else {
                return Err(format!(
                    "Task Management Response for unknown ITT {:#x}",
                    r.itt
                ));
            };
            let mut terminated = Vec::new();
            if TmfResponse(r.response) == TmfResponse::COMPLETE {
                // SAM-5 §7: the function ends the tasks it names; with
                // ErrorRecoveryLevel 0 the target sends no response for
                // them (RFC 7143 §4.2.3.3), so they fail here.
                let hit: Vec<u32> = st
                    .tasks
                    .iter()
                    .filter(|(&itt, task)| {
                        let Task::Command(c) = task else { return false };
                        match function {
                            TmfFunction::ABORT_TASK => itt == referenced,
                            TmfFunction::ABORT_TASK_SET
                            | TmfFunction::CLEAR_TASK_SET
                            | TmfFunction::LOGICAL_UNIT_RESET => {
                                c.lun == lun && sn::lt(c.id.cmd_sn, cmd_sn)
                            }
                            TmfFunction::TARGET_WARM_RESET | TmfFunction::TARGET_COLD_RESET => {
                                sn::lt(c.id.cmd_sn, cmd_sn)
                            }
                            _ => false,
                        }
                    })
                    .map(|(&itt, _)| itt)
                    .collect();
                for itt in hit {
                    if let Some(Task::Command(c)) = st.tasks.remove(&itt) {
                        terminated.push(c);
                    }
                }
            }
            drop(st);
            for c in terminated {
                let _ = c.reply.send(Err(InitiatorError::Aborted {
                    task: c.id,
                    function: tmf_name(function),
                }));
            }
            let _ = reply.send(Ok(TmfResponse(r.response)));
        }
        Header::LogoutResponse(r) => {
            st.saw_stat_sn(r.stat_sn);
            if let Some(Task::Logout(reply)) = st.tasks.remove(&r.itt) {
                let _ = reply.send(Ok(r));
            }
        }
        Header::Reject(r) => {
            if st.update_window(r.exp_cmd_sn, r.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            st.saw_stat_sn(r.stat_sn);
            // §11.17.1: the data segment is the rejected PDU's header.
            let itt = (data.len() >= 48)
                .then(|| u32::from_be_bytes([data[16], data[17], data[18], data[19]]));
            let rejected_op = data.first().map(|b| b & 0x3f);
            match itt.and_then(|itt| st.tasks.remove(&itt).map(|t| (itt, t))) {
                Some((_, Task::Command(c))) if rejected_op == Some(opcode::SCSI_COMMAND) => {
                    drop(st);
                    let _ = c.reply.send(Err(InitiatorError::Rejected {
                        task: c.id,
                        reason: RejectReason(r.reason),
                    }));
                }
                Some((itt, other)) => {
                    st.tasks.insert(itt, other);
                    return Err(format!(
                        "target rejected a {} PDU with reason {:#04x}",
                        rejected_op.map_or("?", crate::pdu::opcode_name),
                        r.reason
                    ));
                }
                None => {
                    return Err(format!(
                        "target rejected a {} PDU with reason {:#04x}",
                        rejected_op.map_or("?", crate::pdu::opcode_name),
                        r.reason
                    ))
                }
            }
        }
        Header::AsyncMessage(a) => {
            if st.update_window(a.exp_cmd_sn, a.max_cmd_sn) {
                sh.window.notify_waiters();
            }
            st.saw_stat_sn(a.stat_sn);
            // §11.9.1 events 2 and 3: the target drops the connection or
            // session; the read loop sees it go. Event 1 (logout request)
            // is left to the user; SCSI asynchronous events carry sense
            // nobody here consumes.
        }
        Header::TextResponse(_) => {
            return Err("unsolicited Text Response".into());
        }
        other => {
            return Err(format!("{} sent by a target", other.name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            cmd_sn: 10,
            exp_cmd_sn: 10,
            max_cmd_sn: 12,
            exp_stat_sn: 0,
            next_itt: RESERVED_TAG - 1,
            tasks: HashMap::new(),
            dead: None,
            out: BytesMut::new(),
            flushing: false,
            stalled: None,
            wr: None,
            digests: Digests::NONE,
        }
    }

    #[test]
    fn data_in_reassembles_by_offset_in_any_order() {
        let mut d = DataInBuf::Empty;
        d.put(0, Bytes::from_static(b"abcd"));
        assert!(
            matches!(d, DataInBuf::Single(_)),
            "first PDU kept without a copy"
        );
        d.put(8, Bytes::from_static(b"ijkl"));
        d.put(4, Bytes::from_static(b"efgh"));
        assert_eq!(&d.into_bytes()[..], b"abcdefghijkl");

        let mut d = DataInBuf::Empty;
        d.put(4, Bytes::from_static(b"efgh"));
        d.put(0, Bytes::from_static(b"abcd"));
        assert_eq!(&d.into_bytes()[..], b"abcdefgh");
        assert!(DataInBuf::Empty.into_bytes().is_empty());
    }

    #[test]
    fn window_follows_serial_arithmetic() {
        let mut st = state();
        assert!(st.window_open());
        st.cmd_sn = 13;
        assert!(!st.window_open(), "CmdSN 13 beyond MaxCmdSN 12");
        assert!(st.update_window(11, 20));
        assert!(st.window_open());
        // §4.2.2.1: MaxCmdSN < ExpCmdSN - 1 is ignored entirely.
        assert!(!st.update_window(30, 5));
        assert_eq!((st.exp_cmd_sn, st.max_cmd_sn), (11, 20));
        // Stale (older) values never move the window back.
        assert!(!st.update_window(10, 15));
        assert_eq!((st.exp_cmd_sn, st.max_cmd_sn), (11, 20));
        // A zero-size window (MaxCmdSN = ExpCmdSN - 1) is legal.
        st.cmd_sn = 21;
        assert!(!st.update_window(21, 20));
        assert!(!st.window_open());
        // Across the 2^32 wrap.
        let mut st = state();
        st.cmd_sn = u32::MAX;
        st.exp_cmd_sn = u32::MAX;
        st.max_cmd_sn = u32::MAX - 1;
        assert!(!st.window_open());
        assert!(st.update_window(u32::MAX, 3));
        assert!(st.window_open());
    }

    #[test]
    fn itt_skips_the_reserved_tag_and_tags_in_use() {
        let mut st = state();
        let a = st.alloc_itt();
        assert_eq!(a, RESERVED_TAG - 1);
        let (reply, _rx) = oneshot::channel();
        st.tasks.insert(0, Task::Ping(reply));
        let b = st.alloc_itt();
        assert_eq!(b, 1, "0xffffffff is reserved and 0 is in use");
    }

    #[test]
    fn stat_sn_only_moves_forward() {
        let mut st = state();
        st.saw_stat_sn(5);
        assert_eq!(st.exp_stat_sn, 6);
        st.saw_stat_sn(3);
        assert_eq!(st.exp_stat_sn, 6);
    }
}
