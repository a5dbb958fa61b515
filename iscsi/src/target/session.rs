//! The full-feature phase of one session on one connection (RFC 7143 §4):
//! the CmdSN window, SCSI commands with Data-In, R2T and Data-Out,
//! immediate and unsolicited data, NOP, task management, text
//! (SendTargets) and logout.
//!
//! Commands run to completion on the device as soon as their data is in, so
//! the only tasks a TMF can find in progress are writes still waiting for
//! Data-Out.

use super::device::{ResetScope, ScsiOutcome, ScsiRequest, SharedDevice};
use super::login::Established;
use super::TargetConfig;
use crate::codec::{CodecError, PduCodec};
use crate::login::Negotiated;
use crate::pdu::{
    DataIn, DataOut, Digests, Frame, Header, Lun, NopIn, NopOut, Pdu, PduError, R2t, Reject,
    RejectReason, ScsiCommand, ScsiResponse, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfFunction, TmfResponse, RESERVED_TAG,
};
use crate::sn;
use crate::text::{TextAssembler, TextKeys};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Non-blocking reads tried before waiting in the reactor (about 10 µs of
/// polling on a loopback socket).
const SPIN_READS: usize = 16;

/// Queued output that is written without waiting for the input to run dry.
const FLUSH_AT: usize = 1 << 20;

/// A TCP connection with its framing state and an output buffer: responses
/// are queued with [`Connection::send`] and written in one go when the
/// input runs dry, so a pipelined burst of commands costs one write.
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    out: BytesMut,
    /// Digests and receive limit in force.
    pub codec: PduCodec,
}

impl Connection {
    /// Wraps an accepted stream (login state: no digests, 8192-byte limit
    /// raised to what the target declares).
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            rbuf: BytesMut::with_capacity(256 * 1024),
            out: BytesMut::with_capacity(256 * 1024),
            codec: PduCodec::default(),
        }
    }

    /// The next whole PDU, reading as needed; `None` at a clean end of stream.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        crate::codec::read_frame(&mut self.stream, &mut self.rbuf, &self.codec).await
    }

    /// A PDU already buffered, without reading.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        Ok(Frame::decode(
            &mut self.rbuf,
            self.codec.digests,
            self.codec.max_recv_data_segment,
        )?)
    }

    /// Reads more bytes; 0 at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
            self.rbuf.reserve(256 * 1024);
        }
        // At queue depth 1 the next command arrives a few microseconds after
        // our response left; polling the socket briefly before parking in
        // the reactor saves the wakeup (an epoll round and a task switch),
        // the largest part of a loopback round trip besides the device.
        for _ in 0..SPIN_READS {
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => return Err(e),
            }
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Queues a PDU.
    pub fn send(&mut self, pdu: &Pdu) {
        pdu.encode(self.codec.digests, &mut self.out);
    }

    /// Queues a PDU whose data segment is borrowed (Data-In straight from
    /// the device's buffer, without an intermediate copy).
    pub fn send_borrowed(&mut self, header: &Header, data: &[u8]) {
        let mut ahs = Vec::new();
        let data = &data[..data.len().min(crate::pdu::MAX_DATA_SEGMENT as usize)];
        let bhs = header.encode(data.len() as u32, &mut ahs);
        crate::pdu::encode_parts(&bhs, &ahs, data, self.codec.digests, &mut self.out);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Why a session ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The initiator logged out.
    Logout,
    /// The initiator closed the connection.
    Closed,
    /// TARGET COLD RESET: the target drops the connection after answering.
    ColdReset,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::Logout => "logout",
            EndReason::Closed => "connection closed by initiator",
            EndReason::ColdReset => "target cold reset",
        })
    }
}

/// Why a session was dropped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// I/O or framing failure.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A protocol violation that error recovery level 0 answers by
    /// dropping the connection (RFC 7143 §7.1.4).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Codec(CodecError::Io(e))
    }
}

/// One outstanding R2T of a write.
#[derive(Debug)]
struct Burst {
    ttt: u32,
    end: u32,
    next_offset: u32,
    next_data_sn: u32,
}

/// A write waiting for its Data-Out.
#[derive(Debug)]
struct PendingWrite {
    cmd: ScsiCommand,
    data: Vec<u8>,
    received: u32,
    /// Unsolicited Data-Out still expected (RFC 7143 §4.2.5.2).
    unsolicited_open: bool,
    unsolicited_end: u32,
    unsolicited_next: u32,
    unsolicited_data_sn: u32,
    next_r2t_offset: u32,
    r2t_sn: u32,
    bursts: Vec<Burst>,
}

/// The full-feature phase of one session.
pub struct Session {
    conn: Connection,
    cfg: Arc<TargetConfig>,
    device: SharedDevice,
    port_name: String,
    discovery: bool,
    neg: Negotiated,
    exp_cmd_sn: u32,
    stat_sn: u32,
    next_ttt: u32,
    writes: HashMap<u32, PendingWrite>,
    text: TextAssembler,
    local: Option<SocketAddr>,
    data_in: Vec<u8>,
}

fn sense_data(sense: &[u8]) -> Bytes {
    if sense.is_empty() {
        return Bytes::new();
    }
    // RFC 7143 §11.4.7.2: SenseLength (2 bytes) then the sense data.
    let n = sense.len().min(usize::from(u16::MAX) - 2);
    let mut v = Vec::with_capacity(2 + n);
    v.extend_from_slice(&(n as u16).to_be_bytes());
    v.extend_from_slice(&sense[..n]);
    Bytes::from(v)
}

/// Fixed-format sense (SPC-5 §4.4.3) for errors the transport itself
/// reports, before a command reaches the device.
fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

impl Session {
    /// A session that has just completed login on `conn`.
    pub fn new(
        mut conn: Connection,
        est: Established,
        cfg: Arc<TargetConfig>,
        device: SharedDevice,
        local: Option<SocketAddr>,
    ) -> Session {
        // RFC 7143 §13.1: digests start with the first PDU after the final
        // Login Response; the receive limit is what we declared.
        conn.codec = PduCodec {
            digests: Digests {
                header: est.negotiated.params.header_digest,
                data: est.negotiated.params.data_digest,
            },
            max_recv_data_segment: cfg.max_recv_data_segment,
        };
        Session {
            conn,
            cfg,
            device,
            port_name: est.port_name,
            discovery: est.discovery,
            neg: est.negotiated,
            exp_cmd_sn: est.exp_cmd_sn,
            stat_sn: est.stat_sn,
            next_ttt: 1,
            writes: HashMap::new(),
            text: TextAssembler::default(),
            local,
            data_in: Vec::new(),
        }
    }

    /// Serves PDUs until logout, close, or a fatal error.
    pub async fn run(&mut self) -> Result<EndReason, SessionError> {
        loop {
            while let Some(frame) = self.conn.try_frame()? {
                match self.handle(frame) {
                    Ok(None) => {
                        // Large reads queue megabytes: send them as they
                        // are produced rather than after the whole batch.
                        if self.conn.out.len() >= FLUSH_AT {
                            self.conn.flush().await?;
                        }
                    }
                    Ok(Some(end)) => {
                        self.conn.flush().await?;
                        return Ok(end);
                    }
                    Err(e) => {
                        // Whatever was queued (a Reject explaining the
                        // failure) goes out before the connection closes.
                        let _ = self.conn.flush().await;
                        return Err(e);
                    }
                }
            }
            self.conn.flush().await?;
            if self.conn.fill().await? == 0 {
                return Ok(EndReason::Closed);
            }
        }
    }

    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(self.cfg.cmd_window.max(1) - 1)
    }

    fn take_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    /// RFC 7143 §4.2.2.1: a non-immediate command outside
    /// [ExpCmdSN, MaxCmdSN] is silently ignored; inside, ExpCmdSN moves past
    /// it. Immediate commands do not advance ExpCmdSN.
    fn accept_cmd_sn(&mut self, immediate: bool, cmd_sn: u32) -> bool {
        if immediate {
            return true;
        }
        if !sn::in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn()) {
            return false;
        }
        self.exp_cmd_sn = cmd_sn.wrapping_add(1);
        true
    }

    fn reject(&mut self, reason: RejectReason, bhs: &[u8]) {
        let r = Reject {
            reason: reason.0,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data_sn: 0,
        };
        let data = Bytes::copy_from_slice(&bhs[..bhs.len().min(48)]);
        self.conn.send(&Pdu::new(Header::Reject(r), data));
    }

    fn handle(&mut self, frame: Frame) -> Result<Option<EndReason>, SessionError> {
        let pdu = match frame.parse() {
            Ok(p) => p,
            Err(e) => return self.handle_bad_pdu(&frame, e),
        };
        if self.discovery
            && !matches!(
                pdu.header,
                Header::TextRequest(_) | Header::NopOut(_) | Header::LogoutRequest(_)
            )
        {
            // RFC 7143 §4.3: a discovery session carries only Text, NOP and
            // Logout.
            self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            return Ok(None);
        }
        match pdu.header {
            Header::ScsiCommand(cmd) => {
                if self.accept_cmd_sn(cmd.immediate, cmd.cmd_sn) {
                    self.scsi_command(cmd, pdu.data)?;
                }
            }
            Header::DataOut(d) => self.data_out(d, pdu.data, &frame.bhs)?,
            Header::NopOut(n) => self.nop_out(n, pdu.data),
            Header::TaskMgmtRequest(t) => {
                if self.accept_cmd_sn(t.immediate, t.cmd_sn) {
                    return Ok(self.task_mgmt(t));
                }
            }
            Header::TextRequest(t) => {
                if self.accept_cmd_sn(t.immediate, t.cmd_sn) {
                    self.text_request(t, &pdu.data, &frame.bhs);
                }
            }
            Header::LogoutRequest(l) => {
                // Logout is normally immediate; either way it ends the session.
                let _ = self.accept_cmd_sn(l.immediate, l.cmd_sn);
                let response = if l.reason <= 1 { 0 } else { 2 };
                let r = crate::pdu::LogoutResponse {
                    response,
                    itt: l.itt,
                    stat_sn: self.take_stat_sn(),
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                    time2wait: self.neg.params.default_time2wait,
                    time2retain: self.neg.params.default_time2retain,
                };
                self.conn.send(&Pdu::header_only(Header::LogoutResponse(r)));
                if response == 0 {
                    return Ok(Some(EndReason::Logout));
                }
            }
            Header::Snack(_) => {
                // SNACK needs ErrorRecoveryLevel > 0 (RFC 7143 §11.16).
                self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            }
            Header::LoginRequest(_) => {
                // RFC 7143 §6.2: login in the full-feature phase is a
                // protocol error.
                self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            }
            _ => {
                // A target-to-initiator opcode sent to the target.
                self.reject(RejectReason::PROTOCOL_ERROR, &frame.bhs);
            }
        }
        Ok(None)
    }

    fn handle_bad_pdu(
        &mut self,
        frame: &Frame,
        e: PduError,
    ) -> Result<Option<EndReason>, SessionError> {
        self.reject(e.reject_reason(), &frame.bhs);
        if let PduError::DataDigest { .. } = e {
            // RFC 7143 §7.8.2 (ERL 0): a command or Data-Out whose data was
            // corrupted ends with CHECK CONDITION, ABORTED COMMAND, PROTOCOL
            // SERVICE CRC ERROR (47h/05h).
            let itt = frame.itt();
            let op = frame.opcode();
            if op == crate::pdu::opcode::DATA_OUT || op == crate::pdu::opcode::SCSI_COMMAND {
                if op == crate::pdu::opcode::SCSI_COMMAND {
                    // The command itself still counts against the window.
                    let cmd_sn = u32::from_be_bytes([
                        frame.bhs[24],
                        frame.bhs[25],
                        frame.bhs[26],
                        frame.bhs[27],
                    ]);
                    let _ = self.accept_cmd_sn(frame.bhs[0] & 0x40 != 0, cmd_sn);
                } else if self.writes.remove(&itt).is_none() {
                    return Ok(None);
                }
                self.respond(
                    itt,
                    &ScsiOutcome {
                        status: 0x02,
                        sense: fixed_sense(0x0b, 0x47, 0x05),
                        residual: 0,
                    },
                    0,
                );
            }
        }
        Ok(None)
    }

    fn scsi_command(&mut self, cmd: ScsiCommand, data: Bytes) -> Result<(), SessionError> {
        let edtl = cmd.expected_length;
        let read_len = cmd
            .bidi_read_length
            .unwrap_or(0)
            .max(if cmd.write { 0 } else { edtl });
        if edtl > self.cfg.max_command_bytes || read_len > self.cfg.max_command_bytes {
            // Answer at once, before buffering anything a length field asks
            // for; any Data-Out that follows finds no task and is dropped.
            let outcome = ScsiOutcome {
                status: 0x02,
                sense: fixed_sense(0x05, 0x24, 0x00),
                residual: i64::from(edtl),
            };
            self.respond(cmd.itt, &outcome, 0);
            return Ok(());
        }
        if !cmd.write || edtl == 0 {
            if !data.is_empty() {
                return Err(SessionError::Protocol(format!(
                    "ITT {:#x}: {} bytes of immediate data on a command without W",
                    cmd.itt,
                    data.len()
                )));
            }
            self.execute(&cmd, &[]);
            return Ok(());
        }
        // Writes waiting for data hold their buffers: bound the session's
        // total so a peer cannot open a window's worth of 256 MiB writes.
        // SAM-5 §5.3: TASK SET FULL tells the initiator to retry later.
        let pending: u64 = self
            .writes
            .values()
            .map(|w| u64::from(w.cmd.expected_length))
            .sum();
        if pending + u64::from(edtl) > self.cfg.max_pending_write_bytes {
            let outcome = ScsiOutcome {
                status: 0x28,
                sense: Vec::new(),
                residual: i64::from(edtl),
            };
            self.respond(cmd.itt, &outcome, 0);
            return Ok(());
        }
        let p = &self.neg.params;
        if data.len() as u64 > u64::from(p.first_burst_length.min(edtl))
            || (!data.is_empty() && !p.immediate_data)
        {
            return Err(SessionError::Protocol(format!(
                "ITT {:#x}: {} bytes of immediate data exceed FirstBurstLength {} / EDTL {edtl} or ImmediateData=No",
                cmd.itt,
                data.len(),
                p.first_burst_length
            )));
        }
        if data.len() as u32 == edtl {
            // All data came with the command: no copy, no R2T.
            self.execute(&cmd, &data);
            return Ok(());
        }
        // Unsolicited Data-Out follows when F is clear (RFC 7143 §11.3.1),
        // which InitialR2T=Yes forbids.
        let unsolicited_open = !cmd.final_;
        if unsolicited_open && p.initial_r2t {
            return Err(SessionError::Protocol(format!(
                "ITT {:#x}: unsolicited data announced with InitialR2T=Yes",
                cmd.itt
            )));
        }
        let imm = data.len() as u32;
        let unsolicited_end = if unsolicited_open {
            p.first_burst_length.min(edtl)
        } else {
            imm
        };
        let mut buf = Vec::with_capacity(edtl.min(1 << 20) as usize);
        buf.extend_from_slice(&data);
        let itt = cmd.itt;
        let w = PendingWrite {
            cmd,
            data: buf,
            received: imm,
            unsolicited_open,
            unsolicited_end,
            unsolicited_next: imm,
            unsolicited_data_sn: 0,
            next_r2t_offset: imm,
            r2t_sn: 0,
            bursts: Vec::new(),
        };
        if self.writes.insert(itt, w).is_some() {
            return Err(SessionError::Protocol(format!(
                "ITT {itt:#x} reused while its write is in progress"
            )));
        }
        self.issue_r2ts(itt);
        Ok(())
    }

    /// Sends R2Ts for the next part of a write, up to MaxOutstandingR2T
    /// (RFC 7143 §13.17) and MaxBurstLength each.
    fn issue_r2ts(&mut self, itt: u32) {
        let max_out = usize::from(self.neg.params.max_outstanding_r2t.max(1));
        let burst = self.neg.params.max_burst_length.max(512);
        let (exp, max) = (self.exp_cmd_sn, self.max_cmd_sn());
        let stat_sn = self.stat_sn;
        let mut out = Vec::new();
        if let Some(w) = self.writes.get_mut(&itt) {
            if w.unsolicited_open {
                return;
            }
            let edtl = w.cmd.expected_length;
            while w.bursts.len() < max_out && w.next_r2t_offset < edtl {
                let len = burst.min(edtl - w.next_r2t_offset);
                let ttt = self.next_ttt;
                self.next_ttt = self.next_ttt.wrapping_add(1);
                if self.next_ttt == RESERVED_TAG {
                    self.next_ttt = 1;
                }
                out.push(R2t {
                    lun: w.cmd.lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                    r2t_sn: w.r2t_sn,
                    buffer_offset: w.next_r2t_offset,
                    desired_length: len,
                });
                w.bursts.push(Burst {
                    ttt,
                    end: w.next_r2t_offset + len,
                    next_offset: w.next_r2t_offset,
                    next_data_sn: 0,
                });
                w.r2t_sn = w.r2t_sn.wrapping_add(1);
                w.next_r2t_offset += len;
            }
        }
        for r in out {
            self.conn.send(&Pdu::header_only(Header::R2t(r)));
        }
    }

    fn data_out(&mut self, d: DataOut, data: Bytes, bhs: &[u8]) -> Result<(), SessionError> {
        let Some(w) = self.writes.get_mut(&d.itt) else {
            // A Data-Out for a task that was aborted, ignored for its CmdSN,
            // or answered early: nothing to deliver it to.
            return Ok(());
        };
        let len = data.len() as u32;
        let protocol =
            |what: String| Err(SessionError::Protocol(format!("ITT {:#x}: {what}", d.itt)));
        let (limit, expected_offset, expected_sn);
        let mut closes_burst = None;
        if d.ttt == RESERVED_TAG {
            if !w.unsolicited_open {
                self.reject(RejectReason::PROTOCOL_ERROR, bhs);
                return protocol("unsolicited Data-Out outside the unsolicited burst".into());
            }
            limit = w.unsolicited_end;
            expected_offset = w.unsolicited_next;
            expected_sn = w.unsolicited_data_sn;
        } else {
            let Some(i) = w.bursts.iter().position(|b| b.ttt == d.ttt) else {
                self.reject(RejectReason::INVALID_PDU_FIELD, bhs);
                return protocol(format!("Data-Out with unknown TTT {:#x}", d.ttt));
            };
            let b = &w.bursts[i];
            limit = b.end;
            expected_offset = b.next_offset;
            expected_sn = b.next_data_sn;
            closes_burst = Some(i);
        }
        // RFC 7143 §11.7.4 (DataSN) and §13.19 (DataPDUInOrder=Yes): each
        // Data-Out of a sequence has the next DataSN and continues at the
        // next offset. ERL 0 cannot ask for the PDU again, so the task ends
        // with ABORTED COMMAND (SPC-5: 4Bh/00h DATA PHASE ERROR, 4Bh/05h
        // DATA OFFSET ERROR) and the connection carries on; libiscsi's
        // iSCSIDataSnInvalid checks that such a write fails.
        let fault = if d.data_sn != expected_sn {
            Some(0x00)
        } else if d.buffer_offset != expected_offset
            || d.buffer_offset.checked_add(len).is_none_or(|e| e > limit)
        {
            Some(0x05)
        } else {
            None
        };
        if let Some(ascq) = fault {
            self.writes.remove(&d.itt);
            let outcome = ScsiOutcome {
                status: 0x02,
                sense: fixed_sense(0x0b, 0x4b, ascq),
                residual: 0,
            };
            self.respond(d.itt, &outcome, 0);
            return Ok(());
        }
        let end = expected_offset + len;
        let at = d.buffer_offset as usize;
        if w.data.len() < end as usize {
            w.data.resize(end as usize, 0);
        }
        w.data[at..end as usize].copy_from_slice(&data);
        w.received += len;
        let mut burst_done = false;
        match closes_burst {
            None => {
                w.unsolicited_next = end;
                w.unsolicited_data_sn += 1;
                if d.final_ || end == w.unsolicited_end {
                    w.unsolicited_open = false;
                    // A short unsolicited burst: solicit the rest from here.
                    w.next_r2t_offset = end;
                    burst_done = true;
                }
            }
            Some(i) => {
                let b = &mut w.bursts[i];
                b.next_offset = end;
                b.next_data_sn += 1;
                if end == b.end {
                    w.bursts.remove(i);
                    burst_done = true;
                } else if d.final_ {
                    self.reject(RejectReason::PROTOCOL_ERROR, bhs);
                    return protocol(format!("F bit at offset {end} before the R2T's end"));
                }
            }
        }
        if w.received == w.cmd.expected_length && w.bursts.is_empty() && !w.unsolicited_open {
            if let Some(w) = self.writes.remove(&d.itt) {
                self.execute(&w.cmd, &w.data);
            }
        } else if burst_done {
            self.issue_r2ts(d.itt);
        }
        Ok(())
    }

    /// Runs a command on the device and sends Data-In and status.
    fn execute(&mut self, cmd: &ScsiCommand, data_out: &[u8]) {
        let lun = cmd.lun.flat().map(u64::from).unwrap_or(u64::MAX);
        let mut data_in = std::mem::take(&mut self.data_in);
        data_in.clear();
        let req = ScsiRequest {
            initiator: &self.port_name,
            lun,
            cdb: &cmd.cdb,
            data_out,
            expected_length: cmd.expected_length,
        };
        let outcome = {
            let mut dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
            dev.execute(&req, &mut data_in)
        };
        let read_len = if cmd.write {
            cmd.bidi_read_length.unwrap_or(0)
        } else if cmd.read {
            cmd.expected_length
        } else {
            0
        };
        data_in.truncate(read_len as usize);
        let data = std::mem::take(&mut data_in);
        let sent = self.send_data_in(cmd, &data, &outcome);
        if !sent {
            self.respond(cmd.itt, &outcome, 0);
        }
        self.data_in = data;
    }

    /// Sends Data-In PDUs; collapses the status into the last one when it
    /// is GOOD (RFC 7143 §11.7.4: S may be set only without sense). Returns
    /// whether the status went out that way.
    fn send_data_in(&mut self, cmd: &ScsiCommand, data: &[u8], outcome: &ScsiOutcome) -> bool {
        if data.is_empty() {
            return false;
        }
        let seg = self.neg.initiator_max_recv.max(512) as usize;
        let burst = self.neg.params.max_burst_length.max(512) as usize;
        let collapse = outcome.status == 0 && outcome.sense.is_empty();
        let total = data.len();
        let mut off = 0usize;
        let mut data_sn = 0u32;
        while off < total {
            // Segments never straddle a MaxBurstLength boundary, whose last
            // PDU carries F (RFC 7143 §11.7.1).
            let burst_end = (off / burst + 1) * burst;
            let end = (off + seg).min(total).min(burst_end);
            let last = end == total;
            let mut h = DataIn {
                final_: last || end == burst_end,
                lun: Lun::default(),
                itt: cmd.itt,
                ttt: RESERVED_TAG,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: off as u32,
                ..Default::default()
            };
            if last && collapse {
                h.status = Some(outcome.status);
                h.stat_sn = self.take_stat_sn();
                h.exp_cmd_sn = self.exp_cmd_sn;
                (h.underflow, h.overflow, h.residual) = residual_fields(outcome.residual);
            }
            self.conn.send(&Pdu::new(
                Header::DataIn(h),
                Bytes::copy_from_slice(&data[off..end]),
            ));
            data_sn += 1;
            off = end;
        }
        if !collapse {
            self.respond(cmd.itt, outcome, data_sn);
        }
        true
    }

    fn respond(&mut self, itt: u32, outcome: &ScsiOutcome, exp_data_sn: u32) {
        let (underflow, overflow, residual) = residual_fields(outcome.residual);
        let r = ScsiResponse {
            underflow,
            overflow,
            residual,
            response: 0,
            status: outcome.status,
            itt,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            exp_data_sn,
            ..Default::default()
        };
        let data = if outcome.status == 0x02 {
            sense_data(&outcome.sense)
        } else {
            Bytes::new()
        };
        self.conn.send(&Pdu::new(Header::ScsiResponse(r), data));
    }

    fn nop_out(&mut self, n: NopOut, data: Bytes) {
        let _ = self.accept_cmd_sn(n.immediate, n.cmd_sn);
        if n.itt == RESERVED_TAG {
            // A reply to our NOP-In, or a bare CmdSN update: no answer.
            return;
        }
        // RFC 7143 §11.19: the ping's data comes back, within what the
        // initiator can receive.
        let max = self.neg.initiator_max_recv as usize;
        let echo = data.slice(..data.len().min(max));
        let r = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.conn.send(&Pdu::new(Header::NopIn(r), echo));
    }

    fn task_mgmt(&mut self, t: TaskMgmtRequest) -> Option<EndReason> {
        let lun = t.lun.flat().map(u64::from).unwrap_or(u64::MAX);
        let has_lun = {
            let dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
            dev.has_lun(lun)
        };
        let mut end = None;
        let response = match t.function {
            TmfFunction::ABORT_TASK => {
                if self.writes.remove(&t.referenced_tt).is_some() {
                    TmfResponse::COMPLETE
                } else if sn::in_window(t.ref_cmd_sn, self.exp_cmd_sn, self.max_cmd_sn())
                    && sn::lt(t.ref_cmd_sn, t.cmd_sn)
                {
                    // RFC 7143 §11.5.1: the task has not arrived yet; it is
                    // considered received and aborted.
                    TmfResponse::COMPLETE
                } else {
                    TmfResponse::NO_TASK
                }
            }
            TmfFunction::ABORT_TASK_SET | TmfFunction::CLEAR_TASK_SET => {
                if has_lun {
                    self.writes.retain(|_, w| w.cmd.lun != t.lun);
                    TmfResponse::COMPLETE
                } else {
                    TmfResponse::NO_LUN
                }
            }
            TmfFunction::CLEAR_ACA => TmfResponse::COMPLETE,
            TmfFunction::LOGICAL_UNIT_RESET => {
                if has_lun {
                    self.writes.retain(|_, w| w.cmd.lun != t.lun);
                    self.reset(ResetScope::Lun(lun));
                    TmfResponse::COMPLETE
                } else {
                    TmfResponse::NO_LUN
                }
            }
            TmfFunction::TARGET_WARM_RESET => {
                self.writes.clear();
                self.reset(ResetScope::Target { cold: false });
                TmfResponse::COMPLETE
            }
            TmfFunction::TARGET_COLD_RESET => {
                self.writes.clear();
                self.reset(ResetScope::Target { cold: true });
                end = Some(EndReason::ColdReset);
                TmfResponse::COMPLETE
            }
            TmfFunction::TASK_REASSIGN => TmfResponse::REASSIGN_NOT_SUPPORTED,
            _ => TmfResponse::REJECTED,
        };
        let r = TaskMgmtResponse {
            response: response.0,
            itt: t.itt,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.conn
            .send(&Pdu::header_only(Header::TaskMgmtResponse(r)));
        end
    }

    fn reset(&mut self, scope: ResetScope) {
        let mut dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
        dev.reset(scope, &self.port_name);
    }

    fn text_request(&mut self, t: TextRequest, data: &[u8], bhs: &[u8]) {
        let whole = match self.text.push(data, t.cont) {
            Ok(Some(w)) => w,
            Ok(None) => {
                // RFC 7143 §11.10.2: acknowledge a continued request with an
                // empty response and a TTT to continue on.
                let r = TextResponse {
                    final_: false,
                    cont: false,
                    lun: t.lun,
                    itt: t.itt,
                    ttt: 1,
                    stat_sn: self.take_stat_sn(),
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                };
                self.conn.send(&Pdu::header_only(Header::TextResponse(r)));
                return;
            }
            Err(e) => {
                self.reject(e.reject_reason(), bhs);
                return;
            }
        };
        let keys = match TextKeys::parse(&whole) {
            Ok(k) => k,
            Err(e) => {
                self.reject(e.reject_reason(), bhs);
                return;
            }
        };
        let mut out = TextKeys::new();
        for (k, v) in &keys.0 {
            if k == "SendTargets" {
                // RFC 7143 §12.3 / Appendix C: "All" in a discovery session;
                // empty or this target's name in a normal session.
                let all = v == "All" && self.discovery;
                if all || v.is_empty() || *v == self.cfg.iqn {
                    out.push("TargetName", self.cfg.iqn.clone());
                    if let Some(a) = self.local {
                        let addr = match a {
                            SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
                            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
                        };
                        out.push("TargetAddress", format!("{addr},1"));
                    }
                }
            } else {
                out.push(k.clone(), "NotUnderstood");
            }
        }
        let mut body = out.encode();
        body.truncate(self.neg.initiator_max_recv as usize);
        let r = TextResponse {
            final_: true,
            cont: false,
            lun: t.lun,
            itt: t.itt,
            ttt: RESERVED_TAG,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.conn.send(&Pdu::new(Header::TextResponse(r), body));
    }
}

/// (U, O, count) from a signed residual.
fn residual_fields(residual: i64) -> (bool, bool, u32) {
    if residual > 0 {
        (true, false, residual.min(i64::from(u32::MAX)) as u32)
    } else if residual < 0 {
        (
            false,
            true,
            residual.unsigned_abs().min(u64::from(u32::MAX)) as u32,
        )
    } else {
        (false, false, 0)
    }
}
