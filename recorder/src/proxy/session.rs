//! What the recording proxy learns from one iSCSI connection's PDUs: a
//! state machine fed every PDU in each direction (after it was forwarded),
//! producing trace events. No I/O here, so every rule is unit-tested.
//!
//! A PDU arrives in three steps so that the relay never has to hold a whole
//! PDU: [`Session::header`] once its header is in, [`Session::data`] for each
//! piece of its data segment as the bytes pass (Data-Out, Data-In and
//! immediate data are placed straight from the relay's buffer), and
//! [`Session::end`] once the segment is complete. [`Session::from_initiator`]
//! and [`Session::from_target`] take a whole PDU in one call.
//!
//! Commands are reassembled from the PDUs RFC 7143 spreads them over: the
//! SCSI Command (CDB, attributes, immediate data), Data-Out PDUs answering
//! R2Ts or sent unsolicited (placed by Buffer Offset, §11.7.5), Data-In PDUs
//! (also by Buffer Offset, possibly carrying the status, §11.7.4), and the
//! SCSI Response (status, sense in the data segment behind a 2-byte
//! SenseLength, §11.4.7, residuals §11.4.5). A Submit is written once its
//! Data-Out is complete (or the command completes), in command order, so
//! the trace's submission order is the initiator's.

use iscsi::pdu::{Header, Stage, TaskAttribute};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use trace::{
    Complete, Direction, Event, Nexus, Payload, ScsiStatus, ServiceResponse, Submit, TaskAttr,
};

/// What the proxy keeps of each command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadCapture {
    /// Every byte of Data-Out and Data-In.
    #[default]
    Full,
    /// CRC32C per logical block (the block size READ CAPACITY reported,
    /// 512 until one is seen).
    Digest,
    /// Nothing: command shapes and timing only.
    None,
}

impl std::str::FromStr for PayloadCapture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(PayloadCapture::Full),
            "digest" => Ok(PayloadCapture::Digest),
            "none" => Ok(PayloadCapture::None),
            o => Err(format!("`{o}` is not full, digest or none")),
        }
    }
}

impl PayloadCapture {
    /// The trace header's payload mode.
    pub fn mode(self) -> trace::file::PayloadMode {
        match self {
            PayloadCapture::Full => trace::file::PayloadMode::Full,
            PayloadCapture::Digest => trace::file::PayloadMode::Digest,
            PayloadCapture::None => trace::file::PayloadMode::None,
        }
    }
}

/// How far past the bytes received so far a Buffer Offset may place data
/// (out-of-order bursts, DataSequenceInOrder=No).
const MAX_AHEAD: u64 = 16 << 20;

/// Reassembled data of one direction, placed by Buffer Offset.
#[derive(Debug, Default)]
struct Buf {
    bytes: Vec<u8>,
    received: u64,
}

impl Buf {
    /// Places `data` at `offset`, never beyond `limit` (the expected
    /// length: a target or initiator sending more is recorded as sent up to
    /// the limit, and counted).
    fn put(&mut self, offset: u64, data: &[u8], limit: u32, keep: bool) {
        self.received += data.len() as u64;
        if !keep {
            return;
        }
        let end = offset
            .saturating_add(data.len() as u64)
            .min(u64::from(limit));
        if offset >= end {
            return;
        }
        // Memory follows the data actually received: an offset far past it
        // (a hostile Buffer Offset under a 4 GiB expected length) is
        // counted but not stored.
        if end > self.received.saturating_add(MAX_AHEAD) {
            return;
        }
        // Both fit: end <= limit, a u32.
        let (start, end) = (offset as usize, end as usize);
        let piece = &data[..end - start];
        if self.bytes.capacity() == 0 {
            // One allocation for the usual command, sized by its expected
            // length (capped like the look-ahead).
            self.bytes
                .reserve_exact((limit as usize).min(MAX_AHEAD as usize));
        }
        if start == self.bytes.len() {
            // In order (the usual case): appended, no zero fill first.
            self.bytes.extend_from_slice(piece);
        } else {
            if self.bytes.len() < end {
                self.bytes.resize(end, 0);
            }
            self.bytes[start..end].copy_from_slice(piece);
        }
    }
}

#[derive(Debug)]
struct Cmd {
    submit: Submit,
    emitted: bool,
    data_out: Buf,
    data_in: Buf,
    done: Option<Complete>,
    read_len: u32,
}

/// What the relay does with the data segment of a PDU whose header
/// [`Session::header`] has just taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataUse {
    /// Hand each piece to [`Session::data`] as it passes: command data,
    /// which is never held whole.
    Pieces,
    /// Collect the segment and hand it whole to [`Session::end`]: login
    /// keys and sense data, a few bytes.
    Whole,
    /// Not needed: the relay only counts past it.
    Skip,
}

/// Per-connection recording state.
#[derive(Debug)]
pub struct Session {
    seq: Arc<AtomicU64>,
    capture: PayloadCapture,
    block_size: u32,
    /// Commands by Initiator Task Tag.
    cmds: HashMap<u32, Cmd>,
    /// ITTs in command order, for in-order Submit emission.
    order: VecDeque<u32>,
    digests: (bool, bool),
    negotiated: (bool, bool),
    full_feature: bool,
    /// With [`Session::defer_digests`]: the block size each digest-mode
    /// payload left as bytes is to be digested at, in emission order.
    deferred: Option<VecDeque<u32>>,
    /// Commands recorded.
    pub commands: u64,
}

impl Session {
    /// A session numbering commands from the shared counter `seq`.
    pub fn new(seq: Arc<AtomicU64>, capture: PayloadCapture) -> Self {
        Session {
            seq,
            capture,
            block_size: 512,
            cmds: HashMap::new(),
            order: VecDeque::new(),
            digests: (false, false),
            negotiated: (false, false),
            full_feature: false,
            deferred: None,
            commands: 0,
        }
    }

    /// Header and data digests in force (they start after the final Login
    /// Response, RFC 7143 §13.1).
    pub fn digests(&self) -> (bool, bool) {
        self.digests
    }

    /// Commands still open.
    pub fn open_commands(&self) -> usize {
        self.cmds.len()
    }

    /// Digest-mode payloads leave as [`Payload::Full`] bytes instead of
    /// CRCs, and [`Session::take_deferred_digest`] says at what block size
    /// each is to be digested: the proxy digests on its writer thread, off
    /// the relay's path. Other modes are unaffected.
    pub fn defer_digests(&mut self) {
        self.deferred.get_or_insert_with(VecDeque::new);
    }

    /// The block size the oldest deferred digest-mode payload (in emission
    /// order) is to be digested at; `None` if none is waiting.
    pub fn take_deferred_digest(&mut self) -> Option<u32> {
        self.deferred.as_mut()?.pop_front()
    }

    /// The payload of a command's data, which is consumed: each direction's
    /// data is written once, and Full mode moves it instead of copying.
    fn payload(&mut self, bytes: Vec<u8>) -> Payload {
        match (self.capture, self.deferred.as_mut()) {
            (PayloadCapture::Digest, Some(q)) => {
                q.push_back(self.block_size);
                Payload::Full(bytes)
            }
            (capture, _) => payload_of(capture, self.block_size, bytes),
        }
    }

    /// A whole PDU the initiator sent.
    pub fn from_initiator(&mut self, h: &Header, data: &[u8], now: u64, out: &mut Vec<Event>) {
        self.pdu(true, h, data, now, out);
    }

    /// A whole PDU the target sent.
    pub fn from_target(&mut self, h: &Header, data: &[u8], now: u64, out: &mut Vec<Event>) {
        self.pdu(false, h, data, now, out);
    }

    fn pdu(
        &mut self,
        from_initiator: bool,
        h: &Header,
        data: &[u8],
        now: u64,
        out: &mut Vec<Event>,
    ) {
        let whole = match self.header(from_initiator, h, now, out) {
            DataUse::Pieces => {
                self.data(h, 0, data);
                &[][..]
            }
            DataUse::Whole => data,
            DataUse::Skip => &[][..],
        };
        self.end(from_initiator, h, whole, now, out);
    }

    /// A PDU's header is in (sent by the initiator if `from_initiator`):
    /// says what to do with its data segment.
    pub fn header(
        &mut self,
        from_initiator: bool,
        h: &Header,
        now: u64,
        out: &mut Vec<Event>,
    ) -> DataUse {
        match (from_initiator, h) {
            (true, Header::ScsiCommand(c)) => {
                self.command(c, now, out);
                // Immediate data: the first bytes of the Data-Out (§11.3.4).
                if c.write {
                    DataUse::Pieces
                } else {
                    DataUse::Skip
                }
            }
            (true, Header::DataOut(_)) | (false, Header::DataIn(_)) => DataUse::Pieces,
            (false, Header::LoginResponse(_) | Header::ScsiResponse(_)) => DataUse::Whole,
            _ => DataUse::Skip,
        }
    }

    /// `piece` of the data segment of `h` (whose header said
    /// [`DataUse::Pieces`]), starting `at` bytes into the segment.
    pub fn data(&mut self, h: &Header, at: u32, piece: &[u8]) {
        let at = u64::from(at);
        match h {
            Header::ScsiCommand(c) => self.place(c.itt, true, at, piece),
            Header::DataOut(d) => self.place(d.itt, true, u64::from(d.buffer_offset) + at, piece),
            Header::DataIn(d) => self.place(d.itt, false, u64::from(d.buffer_offset) + at, piece),
            _ => {}
        }
    }

    /// Places command data, Data-Out (`to_device`) or Data-In, at `offset`
    /// in its command's buffer: the one reassembly step of both directions
    /// (Buffer Offset placement, §11.7.5 and §11.7.4).
    fn place(&mut self, itt: u32, to_device: bool, offset: u64, piece: &[u8]) {
        let keep = self.capture != PayloadCapture::None;
        if let Some(cmd) = self.cmds.get_mut(&itt) {
            let (buf, limit) = if to_device {
                (&mut cmd.data_out, cmd.submit.xfer_len)
            } else {
                (&mut cmd.data_in, cmd.read_len)
            };
            buf.put(offset, piece, limit, keep);
        }
    }

    /// The PDU `h` is complete; `whole` is its data segment if its header
    /// said [`DataUse::Whole`] (empty otherwise).
    pub fn end(
        &mut self,
        from_initiator: bool,
        h: &Header,
        whole: &[u8],
        now: u64,
        out: &mut Vec<Event>,
    ) {
        if !from_initiator {
            self.target_pdu_end(h, whole, now);
        }
        self.flush(out);
    }

    fn command(&mut self, c: &iscsi::pdu::ScsiCommand, now: u64, out: &mut Vec<Event>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.commands += 1;
        let opcode = c.cdb.first().copied().unwrap_or(0);
        let cdb_len = trace::cdb::group_len(opcode)
            .filter(|&n| n <= c.cdb.len())
            .unwrap_or(c.cdb.len());
        let dir = match (c.write, c.read) {
            (true, _) => Direction::ToDevice,
            (false, true) => Direction::FromDevice,
            _ => Direction::None,
        };
        let attr = match c.attr {
            TaskAttribute::Untagged | TaskAttribute::Simple => TaskAttr::Simple,
            TaskAttribute::Ordered => TaskAttr::Ordered,
            TaskAttribute::HeadOfQueue => TaskAttr::HeadOfQueue,
            TaskAttribute::Aca => TaskAttr::Aca,
        };
        let read_len = if c.write {
            c.bidi_read_length.unwrap_or(0)
        } else {
            c.expected_length
        };
        let cmd = Cmd {
            submit: Submit {
                seq,
                time_ns: now,
                nexus: Nexus {
                    target: 0,
                    lun: c.lun.flat().map_or(c.lun.0, u64::from),
                },
                tag: u64::from(c.itt),
                attr,
                cdb: c.cdb[..cdb_len].to_vec(),
                dir,
                xfer_len: c.expected_length,
                sg: Vec::new(),
                payload: Payload::None,
            },
            emitted: false,
            data_out: Buf::default(),
            data_in: Buf::default(),
            done: None,
            read_len,
        };
        if let Some(mut old) = self.cmds.insert(c.itt, cmd) {
            // An ITT reused while open: the old command never got its
            // status (§11.2.1.8 forbids reuse until then).
            self.finish_incomplete(&mut old, now, out);
        }
        self.order.push_back(c.itt);
    }

    /// A target PDU is complete: login keys, collapsed status, responses.
    fn target_pdu_end(&mut self, h: &Header, data: &[u8], now: u64) {
        match h {
            Header::LoginResponse(l) => {
                for kv in data.split(|&b| b == 0) {
                    let kv = String::from_utf8_lossy(kv);
                    if let Some((k, v)) = kv.split_once('=') {
                        match k {
                            "HeaderDigest" => self.negotiated.0 = v == "CRC32C",
                            "DataDigest" => self.negotiated.1 = v == "CRC32C",
                            _ => {}
                        }
                    }
                }
                if l.transit
                    && l.nsg == Stage::FullFeature
                    && l.status_class == 0
                    && !self.full_feature
                {
                    self.full_feature = true;
                    self.digests = self.negotiated;
                }
            }
            Header::DataIn(d) => {
                if let Some(status) = d.status {
                    let residual = if d.underflow {
                        i64::from(d.residual)
                    } else if d.overflow {
                        -i64::from(d.residual)
                    } else {
                        0
                    };
                    self.complete(
                        d.itt,
                        now,
                        ServiceResponse::TaskComplete,
                        status,
                        Vec::new(),
                        residual,
                    );
                }
            }
            Header::ScsiResponse(r) => {
                // §11.4.7: SenseLength (2 bytes), then the sense data.
                let sense = match data {
                    [hi, lo, rest @ ..] => {
                        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
                        rest[..n].to_vec()
                    }
                    _ => Vec::new(),
                };
                let residual = if r.underflow {
                    i64::from(r.residual)
                } else if r.overflow {
                    -i64::from(r.residual)
                } else {
                    0
                };
                let response = if r.response == 0 {
                    ServiceResponse::TaskComplete
                } else {
                    ServiceResponse::DeliveryFailure
                };
                self.complete(r.itt, now, response, r.status, sense, residual);
            }
            _ => {}
        }
    }

    fn complete(
        &mut self,
        itt: u32,
        now: u64,
        response: ServiceResponse,
        status: u8,
        sense: Vec<u8>,
        residual: i64,
    ) {
        let Some(cmd) = self.cmds.get_mut(&itt) else {
            return;
        };
        // READ CAPACITY tells the block size digests use from now on.
        if status == 0 {
            let cdb = &cmd.submit.cdb;
            let bs = match (cdb.first(), cdb.get(1)) {
                (Some(0x25), _) => cmd.data_in.bytes.get(4..8),
                (Some(0x9e), Some(sa)) if sa & 0x1f == 0x10 => cmd.data_in.bytes.get(8..12),
                _ => None,
            };
            if let Some(b) = bs.and_then(|b| <[u8; 4]>::try_from(b).ok()) {
                let v = u32::from_be_bytes(b);
                if (512..=1 << 20).contains(&v) {
                    self.block_size = v;
                }
            }
        }
        let moved = match cmd.submit.dir {
            Direction::ToDevice => cmd.data_out.received,
            _ => cmd.data_in.received,
        };
        cmd.done = Some(Complete {
            seq: cmd.submit.seq,
            time_ns: now,
            response,
            status: ScsiStatus(status),
            sense,
            bytes_transferred: u32::try_from(moved).unwrap_or(u32::MAX),
            residual,
            payload: Payload::None,
        });
    }

    /// Writes what is ready: Submits in command order once their Data-Out
    /// is in (or they completed), Completions after their Submit.
    fn flush(&mut self, out: &mut Vec<Event>) {
        while let Some(&itt) = self.order.front() {
            let Some(cmd) = self.cmds.get(&itt) else {
                self.order.pop_front();
                continue;
            };
            let data_out_done = cmd.submit.dir != Direction::ToDevice
                || cmd.data_out.received >= u64::from(cmd.submit.xfer_len);
            if !(data_out_done || cmd.done.is_some()) {
                break;
            }
            self.order.pop_front();
            if let Some(cmd) = self.cmds.get_mut(&itt) {
                let mut s = cmd.submit.clone();
                let bytes = std::mem::take(&mut cmd.data_out.bytes);
                cmd.emitted = true;
                if s.dir == Direction::ToDevice {
                    s.payload = self.payload(bytes);
                }
                out.push(Event::Submit(s));
            }
        }
        let done: Vec<u32> = self
            .cmds
            .iter()
            .filter(|(_, c)| c.emitted && c.done.is_some())
            .map(|(i, _)| *i)
            .collect();
        let mut ready: Vec<Complete> = Vec::new();
        for itt in done {
            if let Some(mut cmd) = self.cmds.remove(&itt) {
                let mut c = cmd
                    .done
                    .take()
                    .unwrap_or_else(|| unreachable_complete(cmd.submit.seq));
                if cmd.submit.dir == Direction::FromDevice || cmd.read_len > 0 {
                    c.payload = self.payload(std::mem::take(&mut cmd.data_in.bytes));
                }
                ready.push(c);
            }
        }
        ready.sort_by_key(|c| (c.time_ns, c.seq));
        out.extend(ready.into_iter().map(Event::Complete));
    }

    fn finish_incomplete(&mut self, cmd: &mut Cmd, now: u64, out: &mut Vec<Event>) {
        if !cmd.emitted {
            let mut s = cmd.submit.clone();
            if s.dir == Direction::ToDevice {
                s.payload = self.payload(std::mem::take(&mut cmd.data_out.bytes));
            }
            out.push(Event::Submit(s));
            cmd.emitted = true;
        }
        out.push(Event::Complete(cmd.done.take().unwrap_or(Complete {
            seq: cmd.submit.seq,
            time_ns: now,
            response: ServiceResponse::Incomplete,
            status: ScsiStatus::GOOD,
            sense: Vec::new(),
            bytes_transferred: 0,
            residual: 0,
            payload: Payload::None,
        })));
    }

    /// The connection ended: every command still open is written, marked
    /// [`ServiceResponse::Incomplete`] (completed ones keep their status).
    pub fn close(&mut self, now: u64, out: &mut Vec<Event>) {
        self.flush(out);
        let mut open: Vec<(u64, u32)> = self
            .cmds
            .iter()
            .map(|(itt, c)| (c.submit.seq, *itt))
            .collect();
        open.sort_unstable();
        for (_, itt) in open {
            if let Some(mut cmd) = self.cmds.remove(&itt) {
                self.finish_incomplete(&mut cmd, now, out);
            }
        }
        self.order.clear();
    }
}

fn payload_of(capture: PayloadCapture, block_size: u32, bytes: Vec<u8>) -> Payload {
    match capture {
        PayloadCapture::None => Payload::None,
        PayloadCapture::Full => Payload::Full(bytes),
        PayloadCapture::Digest => digests(block_size, &bytes),
    }
}

/// CRC32C of each `granularity`-byte block of `bytes` (the last may be
/// short): a digest-mode payload.
pub fn digests(granularity: u32, bytes: &[u8]) -> Payload {
    Payload::Digests {
        granularity,
        crcs: bytes
            .chunks(granularity.max(1) as usize)
            .map(crc32c::crc32c)
            .collect(),
    }
}

fn unreachable_complete(seq: u64) -> Complete {
    // Only reached if a command marked done lost its completion: record it
    // as incomplete rather than panic.
    Complete {
        seq,
        time_ns: 0,
        response: ServiceResponse::Incomplete,
        status: ScsiStatus::GOOD,
        sense: Vec::new(),
        bytes_transferred: 0,
        residual: 0,
        payload: Payload::None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A successful Login Response leaving the operational stage.
    pub(in crate::proxy) fn login_response(transit: bool, nsg: Stage) -> Header {
        Header::LoginResponse(iscsi::pdu::LoginResponse {
            transit,
            cont: false,
            csg: Stage::Operational,
            nsg,
            version_max: 0,
            version_active: 0,
            isid: [0; 6],
            tsih: 1,
            itt: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            status_class: 0,
            status_detail: 0,
        })
    }
    use iscsi::pdu::{DataIn, DataOut, Lun, R2t, ScsiCommand, ScsiResponse};

    fn session() -> Session {
        Session::new(Arc::new(AtomicU64::new(0)), PayloadCapture::Full)
    }

    fn write10(itt: u32, len: u32) -> Header {
        let mut cdb = vec![0x2a, 0, 0, 0, 0, 0x10, 0, 0, (len / 512) as u8, 0];
        cdb.resize(16, 0);
        Header::ScsiCommand(ScsiCommand {
            final_: false,
            write: true,
            itt,
            expected_length: len,
            lun: Lun::from_flat(1),
            cdb,
            ..Default::default()
        })
    }

    #[test]
    fn write_reassembled_across_immediate_data_and_r2t_bursts() {
        let mut s = session();
        let mut out = Vec::new();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        s.from_initiator(&write10(5, 8192), &data[..1024], 10, &mut out);
        assert!(out.is_empty(), "Submit waits for its Data-Out");
        s.from_target(
            &Header::R2t(R2t {
                itt: 5,
                buffer_offset: 1024,
                desired_length: 7168,
                ..Default::default()
            }),
            &[],
            11,
            &mut out,
        );
        // Bursts out of order: offsets place them.
        s.from_initiator(
            &Header::DataOut(DataOut {
                itt: 5,
                buffer_offset: 4096,
                ..Default::default()
            }),
            &data[4096..],
            12,
            &mut out,
        );
        s.from_initiator(
            &Header::DataOut(DataOut {
                itt: 5,
                buffer_offset: 1024,
                final_: true,
                ..Default::default()
            }),
            &data[1024..4096],
            13,
            &mut out,
        );
        let Some(Event::Submit(sub)) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(
            (sub.seq, sub.time_ns, sub.tag, sub.nexus.lun, sub.cdb.len()),
            (0, 10, 5, 1, 10)
        );
        assert_eq!(sub.payload, Payload::Full(data.clone()));
        s.from_target(
            &Header::ScsiResponse(ScsiResponse {
                itt: 5,
                ..Default::default()
            }),
            &[],
            20,
            &mut out,
        );
        let Some(Event::Complete(c)) = out.get(1) else {
            panic!("{out:?}")
        };
        assert_eq!(
            (c.seq, c.time_ns, c.status, c.bytes_transferred),
            (0, 20, ScsiStatus::GOOD, 8192)
        );
        assert_eq!(s.open_commands(), 0);
    }

    #[test]
    fn read_with_status_in_the_last_data_in_and_a_check_condition_with_sense() {
        let mut s = session();
        let mut out = Vec::new();
        let mut cdb = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 4, 0];
        cdb.resize(16, 0);
        s.from_initiator(
            &Header::ScsiCommand(ScsiCommand {
                read: true,
                final_: true,
                itt: 1,
                expected_length: 2048,
                cdb,
                ..Default::default()
            }),
            &[],
            1,
            &mut out,
        );
        assert!(matches!(out[0], Event::Submit(_)));
        s.from_target(
            &Header::DataIn(DataIn {
                itt: 1,
                buffer_offset: 1024,
                ..Default::default()
            }),
            &[2; 1024],
            2,
            &mut out,
        );
        s.from_target(
            &Header::DataIn(DataIn {
                itt: 1,
                buffer_offset: 0,
                status: Some(0),
                final_: true,
                ..Default::default()
            }),
            &[1; 1024],
            3,
            &mut out,
        );
        let Event::Complete(c) = &out[1] else {
            panic!()
        };
        let Payload::Full(d) = &c.payload else {
            panic!()
        };
        assert_eq!((d[0], d[1024], d.len()), (1, 2, 2048));

        // CHECK CONDITION: sense behind SenseLength.
        let mut cdb = vec![0x28, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0];
        cdb.resize(16, 0);
        s.from_initiator(
            &Header::ScsiCommand(ScsiCommand {
                read: true,
                itt: 2,
                expected_length: 512,
                cdb,
                ..Default::default()
            }),
            &[],
            4,
            &mut out,
        );
        let mut sense = vec![0, 18, 0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0];
        sense.resize(20, 0);
        s.from_target(
            &Header::ScsiResponse(ScsiResponse {
                itt: 2,
                status: 2,
                underflow: true,
                residual: 512,
                ..Default::default()
            }),
            &sense,
            5,
            &mut out,
        );
        let Event::Complete(c) = &out[3] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (c.status, c.residual, c.sense.len(), c.sense[12]),
            (ScsiStatus::CHECK_CONDITION, 512, 18, 0x21)
        );
    }

    #[test]
    fn a_hostile_buffer_offset_is_counted_not_allocated() {
        let mut b = Buf::default();
        b.put(u64::from(u32::MAX - 16), &[1; 8], u32::MAX, true);
        assert_eq!((b.received, b.bytes.len()), (8, 0));
        b.put(100, &[2; 8], u32::MAX, true);
        assert_eq!(b.bytes.len(), 108);
    }

    #[test]
    fn a_dropped_connection_marks_open_commands_incomplete_and_keeps_completed_ones() {
        let mut s = session();
        let mut out = Vec::new();
        s.from_initiator(&write10(1, 1024), &[9; 1024], 1, &mut out);
        s.from_target(
            &Header::ScsiResponse(ScsiResponse {
                itt: 1,
                ..Default::default()
            }),
            &[],
            2,
            &mut out,
        );
        s.from_initiator(&write10(2, 4096), &[9; 512], 3, &mut out);
        s.close(4, &mut out);
        let kinds: Vec<String> = out
            .iter()
            .map(|e| match e {
                Event::Submit(s) => format!("S{}", s.seq),
                Event::Complete(c) => format!("C{}{:?}", c.seq, c.response),
                _ => "?".into(),
            })
            .collect();
        assert_eq!(kinds, ["S0", "C0TaskComplete", "S1", "C1Incomplete"]);
        // The partial Data-Out of the interrupted write is kept as received.
        let Event::Submit(sub) = &out[2] else {
            panic!()
        };
        assert_eq!(sub.payload, Payload::Full(vec![9; 512]));
    }

    #[test]
    fn digests_start_after_the_final_login_response_and_read_capacity_sets_the_digest_block() {
        let mut s = Session::new(Arc::new(AtomicU64::new(0)), PayloadCapture::Digest);
        let mut out = Vec::new();
        let lr = login_response;
        s.from_target(
            &lr(false, Stage::Operational),
            b"HeaderDigest=CRC32C\0DataDigest=None\0",
            0,
            &mut out,
        );
        assert_eq!(s.digests(), (false, false));
        s.from_target(&lr(true, Stage::FullFeature), b"", 0, &mut out);
        assert_eq!(s.digests(), (true, false));

        let mut cdb = vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb.resize(16, 0);
        s.from_initiator(
            &Header::ScsiCommand(ScsiCommand {
                read: true,
                itt: 3,
                expected_length: 8,
                cdb,
                ..Default::default()
            }),
            &[],
            1,
            &mut out,
        );
        s.from_target(
            &Header::DataIn(DataIn {
                itt: 3,
                status: Some(0),
                ..Default::default()
            }),
            &[0, 0, 0xff, 0xff, 0, 0, 0x10, 0],
            2,
            &mut out,
        );
        let mut cdb = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0];
        cdb.resize(16, 0);
        s.from_initiator(
            &Header::ScsiCommand(ScsiCommand {
                read: true,
                itt: 4,
                expected_length: 8192,
                cdb,
                ..Default::default()
            }),
            &[],
            3,
            &mut out,
        );
        s.from_target(
            &Header::DataIn(DataIn {
                itt: 4,
                status: Some(0),
                ..Default::default()
            }),
            &[7; 8192],
            4,
            &mut out,
        );
        let Some(Event::Complete(c)) = out.last() else {
            panic!()
        };
        assert!(
            matches!(&c.payload, Payload::Digests { granularity: 4096, crcs } if crcs.len() == 2)
        );
    }
}
