//! The target serving the emulator, driven with hand-built PDUs where the
//! initiator would never misbehave: hostile peers before and after login,
//! the CmdSN window, DataSN checking, Reject. A healthy session, run by
//! Scuzz's own initiator, must keep working throughout.

use bytes::{Bytes, BytesMut};
use iscsi::codec::{read_frame, PduCodec};
use iscsi::initiator::{CommandRequest, LoginOptions, Session};
use iscsi::pdu::{
    opcode, DataOut, Digests, Header, LoginRequest, Lun, NopOut, Pdu, ScsiCommand, Stage,
    TaskMgmtRequest, TmfFunction, RESERVED_TAG,
};
use iscsi::target::emulator::EmulatorDevice;
use iscsi::target::{SharedDevice, Target, TargetConfig};
use iscsi::text::TextKeys;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IQN: &str = "iqn.2026-11.dev.scuzz.test:hostile";

struct Running {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    let emu = emulator::Emulator::new(emulator::EmulatorConfig {
        capacity_blocks: 32 * 1024,
        ..Default::default()
    })
    .unwrap();
    let device: SharedDevice = Arc::new(Mutex::new(EmulatorDevice::new(emu)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let target = Target::new(TargetConfig::new(IQN), device);
    tokio::spawn(async move {
        let _ = target
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running { addr, _stop: stop }
}

async fn healthy(addr: SocketAddr) -> Session {
    let s = Session::login(
        &addr.to_string(),
        &LoginOptions::new("iqn.2026-11.dev.scuzz.test:healthy", IQN),
    )
    .await
    .expect("healthy login");
    // The first command after power-on reports the unit attention.
    let tur = [0u8; 6];
    let _ = s.command(&CommandRequest::no_data(0, &tur)).await;
    s
}

/// One write and read-back on the healthy session, with a per-round
/// pattern so a stale answer cannot pass.
async fn still_works(s: &Session, round: u8) {
    let lba = u32::from(round) * 16;
    let data = vec![round ^ 0x5a; 8192];
    let w = [
        0x2a,
        0,
        (lba >> 24) as u8,
        (lba >> 16) as u8,
        (lba >> 8) as u8,
        lba as u8,
        0,
        0,
        16,
        0,
    ];
    let r = s
        .command(&CommandRequest::write(0, &w, Bytes::from(data.clone())))
        .await
        .expect("write on the healthy session");
    assert_eq!(r.status, 0, "write status after hostile round {round}");
    let rd = [
        0x28,
        0,
        (lba >> 24) as u8,
        (lba >> 16) as u8,
        (lba >> 8) as u8,
        lba as u8,
        0,
        0,
        16,
        0,
    ];
    let r = s
        .command(&CommandRequest::read(0, &rd, 8192))
        .await
        .expect("read on the healthy session");
    assert_eq!(r.status, 0);
    assert_eq!(
        &r.data_in[..],
        &data[..],
        "data after hostile round {round}"
    );
}

/// A raw connection logged in by hand (operational stage straight to full
/// feature, no digests).
struct Raw {
    sock: TcpStream,
    buf: BytesMut,
    codec: PduCodec,
    cmd_sn: u32,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            codec: PduCodec {
                digests: Digests::NONE,
                max_recv_data_segment: 1 << 20,
            },
            cmd_sn: 1,
        }
    }

    async fn send(&mut self, pdu: &Pdu) {
        let mut w = BytesMut::new();
        pdu.encode(Digests::NONE, &mut w);
        self.sock.write_all(&w).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Pdu> {
        match read_frame(&mut self.sock, &mut self.buf, &self.codec).await {
            Ok(Some(f)) => Some(f.parse().expect("target sends well-formed PDUs")),
            _ => None,
        }
    }

    async fn login(addr: SocketAddr) -> Raw {
        Raw::login_isid(addr, 9).await
    }

    /// Logs in with an ISID ending in `n` (distinct ISIDs are distinct
    /// sessions; the same one reinstates).
    async fn login_isid(addr: SocketAddr, n: u8) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let mut keys = TextKeys::new();
        keys.push("InitiatorName", "iqn.2026-11.dev.scuzz.test:raw");
        keys.push("TargetName", IQN);
        keys.push("SessionType", "Normal");
        keys.push("ImmediateData", "No");
        keys.push("InitialR2T", "Yes");
        keys.push("MaxRecvDataSegmentLength", "65536");
        let req = LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 0, 0, n],
            tsih: 0,
            itt: 0,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
        };
        raw.send(&Pdu::new(Header::LoginRequest(req), keys.encode()))
            .await;
        let Some(Pdu {
            header: Header::LoginResponse(r),
            ..
        }) = raw.recv().await
        else {
            panic!("no login response");
        };
        assert_eq!((r.status_class, r.status_detail), (0, 0));
        assert!(r.transit && r.nsg == Stage::FullFeature);
        raw
    }

    fn command(&mut self, itt: u32, cdb: &[u8], write: bool, len: u32) -> ScsiCommand {
        let mut c = cdb.to_vec();
        c.resize(16, 0);
        let cmd = ScsiCommand {
            final_: true,
            read: !write && len > 0,
            write,
            lun: Lun::from_flat(0),
            itt,
            expected_length: len,
            cmd_sn: self.cmd_sn,
            cdb: c,
            ..Default::default()
        };
        self.cmd_sn += 1;
        cmd
    }

    async fn ping(&mut self, itt: u32) -> Vec<Pdu> {
        let nop = NopOut {
            immediate: true,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            ..Default::default()
        };
        self.send(&Pdu::new(Header::NopOut(nop), &b"ping"[..]))
            .await;
        // Everything up to and including the answer to this ping.
        let mut seen = Vec::new();
        while let Some(p) = self.recv().await {
            let done = matches!(&p.header, Header::NopIn(n) if n.itt == itt);
            seen.push(p);
            if done {
                return seen;
            }
        }
        panic!("connection closed before the NOP-In for {itt:#x}");
    }

    /// Whether the target has closed the connection (reads to EOF).
    async fn closed(&mut self) -> bool {
        let mut scratch = [0u8; 4096];
        loop {
            match self.sock.read(&mut scratch).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_lose_only_their_own_connection() {
    let t = start().await;
    let good = healthy(t.addr).await;
    still_works(&good, 0).await;
    let mut round = 1u8;

    // Before login: garbage, a truncated BHS, a header-only PDU claiming a
    // 16 MiB data segment, and a SCSI Command instead of a Login Request.
    let mut oversized = [0u8; 48];
    oversized[0] = 0x43;
    oversized[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    let mut not_login = BytesMut::new();
    Raw::connect(t.addr).await; // a connection that just goes away
    let mut r = Raw::connect(t.addr).await;
    let cmd = r.command(1, &[0x00], false, 0);
    Pdu::header_only(Header::ScsiCommand(cmd)).encode(Digests::NONE, &mut not_login);
    let before: Vec<Vec<u8>> = vec![
        random(4096, 1),
        random(20, 2),
        oversized.to_vec(),
        not_login.to_vec(),
        random(48, 3),
    ];
    for bytes in before {
        let mut h = Raw::connect(t.addr).await;
        h.sock.write_all(&bytes).await.unwrap();
        if bytes.len() < 48 {
            // A truncated PDU followed by a half-close: the target waits for
            // the rest, sees EOF and drops the connection.
            h.sock.shutdown().await.unwrap();
        }
        assert!(
            h.closed().await,
            "target keeps a hostile pre-login connection"
        );
        still_works(&good, round).await;
        round += 1;
    }

    // After login: a data segment beyond MaxRecvDataSegmentLength and
    // random bytes are fatal to that connection only.
    let mut big = [0u8; 48];
    big[0] = opcode::NOP_OUT | 0x40;
    big[1] = 0x80;
    big[5..8].copy_from_slice(&[0x10, 0x00, 0x00]); // 1 MiB > 256 KiB declared
    for bytes in [big.to_vec(), random(8192, 4)] {
        let mut h = Raw::login(t.addr).await;
        h.sock.write_all(&bytes).await.unwrap();
        h.sock.shutdown().await.unwrap();
        assert!(h.closed().await);
        still_works(&good, round).await;
        round += 1;
    }

    // After login: an unknown opcode and a target-only opcode are answered
    // with Reject, and the same connection goes on serving.
    let mut h = Raw::login(t.addr).await;
    let mut unknown = [0u8; 48];
    unknown[0] = 0x1c;
    unknown[1] = 0x80;
    unknown[16..20].copy_from_slice(&7u32.to_be_bytes());
    h.sock.write_all(&unknown).await.unwrap();
    let mut r2t = BytesMut::new();
    Pdu::header_only(Header::R2t(Default::default())).encode(Digests::NONE, &mut r2t);
    h.sock.write_all(&r2t).await.unwrap();
    let seen = h.ping(0x99).await;
    let rejects: Vec<u8> = seen
        .iter()
        .filter_map(|p| match &p.header {
            Header::Reject(r) => Some(r.reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        rejects,
        vec![0x05, 0x04],
        "Command not supported, then Protocol Error"
    );
    let rejected_bhs = &seen[0].data;
    assert_eq!(
        &rejected_bhs[..],
        &unknown[..],
        "a Reject carries the rejected header"
    );
    still_works(&good, round).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_outside_the_cmdsn_window_are_ignored() {
    let t = start().await;
    let mut h = Raw::login(t.addr).await;
    // RFC 7143 §4.2.2.1: CmdSN beyond MaxCmdSN (or below ExpCmdSN) is
    // silently ignored.
    let mut tur = h.command(0x10, &[0x00], false, 0);
    tur.cmd_sn = tur.cmd_sn.wrapping_add(100_000);
    h.send(&Pdu::header_only(Header::ScsiCommand(tur))).await;
    let mut low = h.command(0x11, &[0x00], false, 0);
    low.cmd_sn = low.cmd_sn.wrapping_sub(5);
    h.send(&Pdu::header_only(Header::ScsiCommand(low))).await;
    h.cmd_sn -= 2;
    // Responses go out in order, so anything for 0x10/0x11 would precede
    // the NOP-In.
    let seen = h.ping(0x12).await;
    assert_eq!(seen.len(), 1, "only the NOP-In: {seen:?}");
    // An in-window command still runs.
    let ok = h.command(0x13, &[0x00], false, 0);
    h.send(&Pdu::header_only(Header::ScsiCommand(ok))).await;
    let seen = h.ping(0x14).await;
    assert!(seen
        .iter()
        .any(|p| matches!(&p.header, Header::ScsiResponse(r) if r.itt == 0x13)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_with_a_wrong_datasn_fails_and_the_connection_stays() {
    let t = start().await;
    let mut h = Raw::login(t.addr).await;
    // InitialR2T=Yes, ImmediateData=No: the target solicits the data.
    let w = h.command(0x20, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], true, 1024);
    h.send(&Pdu::header_only(Header::ScsiCommand(w))).await;
    let Some(Pdu {
        header: Header::R2t(r2t),
        ..
    }) = h.recv().await
    else {
        panic!("expected R2T");
    };
    assert_eq!((r2t.buffer_offset, r2t.desired_length), (0, 1024));
    let d = DataOut {
        final_: true,
        lun: Lun::from_flat(0),
        itt: 0x20,
        ttt: r2t.ttt,
        data_sn: 27,
        buffer_offset: 0,
        ..Default::default()
    };
    h.send(&Pdu::new(Header::DataOut(d), vec![0xa6u8; 1024]))
        .await;
    let Some(Pdu {
        header: Header::ScsiResponse(resp),
        data,
    }) = h.recv().await
    else {
        panic!("expected SCSI Response");
    };
    // CHECK CONDITION, ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h).
    assert_eq!(resp.status, 0x02);
    assert_eq!(
        (data[2 + 2] & 0x0f, data[2 + 12], data[2 + 13]),
        (0x0b, 0x4b, 0x00)
    );
    let seen = h.ping(0x21).await;
    assert_eq!(seen.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_fields_cannot_make_the_target_buffer_without_bound() {
    let t = start().await;
    let mut h = Raw::login(t.addr).await;
    // A READ(16) asking for 512 MiB: refused before the device runs it.
    let read = h.command(
        0x30,
        &[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0],
        false,
        512 << 20,
    );
    h.send(&Pdu::header_only(Header::ScsiCommand(read))).await;
    let Some(Pdu {
        header: Header::ScsiResponse(r),
        data,
    }) = h.recv().await
    else {
        panic!("expected SCSI Response");
    };
    assert_eq!((r.itt, r.status), (0x30, 0x02));
    assert_eq!(
        (data[2 + 2] & 0x0f, data[2 + 12]),
        (0x05, 0x24),
        "INVALID FIELD IN CDB"
    );
    // Four 128 MiB writes wait for Data-Out (512 MiB, the session's
    // budget); the fifth is answered TASK SET FULL.
    for i in 0..5u32 {
        let w = h.command(
            0x40 + i,
            &[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0],
            true,
            128 << 20,
        );
        h.send(&Pdu::header_only(Header::ScsiCommand(w))).await;
    }
    let seen = h.ping(0x50).await;
    let r2ts = seen
        .iter()
        .filter(|p| matches!(p.header, Header::R2t(_)))
        .count();
    assert_eq!(r2ts, 4, "one R2T per waiting write (MaxOutstandingR2T=1)");
    assert!(seen.iter().any(
        |p| matches!(&p.header, Header::ScsiResponse(r) if r.itt == 0x44 && r.status == 0x28)
    ));
}

/// One Login Request with `keys`; the (class, detail) of the answer.
async fn login_status(addr: SocketAddr, csg: Stage, keys: &[(&str, &str)]) -> (u8, u8) {
    let mut raw = Raw::connect(addr).await;
    let mut text = TextKeys::new();
    for (k, v) in keys {
        text.push(*k, *v);
    }
    let req = LoginRequest {
        transit: true,
        cont: false,
        csg,
        nsg: if csg == Stage::Security {
            Stage::Operational
        } else {
            Stage::FullFeature
        },
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 0,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
    };
    raw.send(&Pdu::new(Header::LoginRequest(req), text.encode()))
        .await;
    match raw.recv().await {
        Some(Pdu {
            header: Header::LoginResponse(r),
            ..
        }) => (r.status_class, r.status_detail),
        other => panic!("expected a Login Response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_refused_with_the_rfc_status() {
    let t = start().await;
    let me = ("InitiatorName", "iqn.2026-11.dev.scuzz.test:login");
    // RFC 7143 §11.13.5 status classes and details.
    assert_eq!(
        login_status(t.addr, Stage::Operational, &[("TargetName", IQN)]).await,
        (2, 7),
        "missing InitiatorName"
    );
    assert_eq!(
        login_status(t.addr, Stage::Operational, &[me]).await,
        (2, 7),
        "normal session without TargetName"
    );
    assert_eq!(
        login_status(
            t.addr,
            Stage::Operational,
            &[me, ("TargetName", "iqn.nope:x")]
        )
        .await,
        (2, 3),
        "unknown target"
    );
    assert_eq!(
        login_status(t.addr, Stage::Operational, &[me, ("SessionType", "Bogus")]).await,
        (2, 9),
        "unknown session type"
    );
    assert_eq!(
        login_status(t.addr, Stage::Operational, &[me, ("TargetName", IQN)]).await,
        (0, 0)
    );

    // With CHAP required: AuthMethod=None and skipping the security stage
    // are authentication failures.
    let emu = emulator::Emulator::new(emulator::EmulatorConfig {
        capacity_blocks: 2048,
        ..Default::default()
    })
    .unwrap();
    let device: SharedDevice = Arc::new(Mutex::new(EmulatorDevice::new(emu)));
    let mut cfg = TargetConfig::new(IQN);
    cfg.chap = Some(iscsi::target::ChapCredentials {
        user: "u".into(),
        secret: b"0123456789ab".to_vec(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = Target::new(cfg, device)
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let target = ("TargetName", IQN);
    assert_eq!(
        login_status(addr, Stage::Security, &[me, target, ("AuthMethod", "None")]).await,
        (2, 1)
    );
    assert_eq!(
        login_status(addr, Stage::Operational, &[me, target]).await,
        (2, 1)
    );
}

/// RFC 7143 §6.3.5 and §11.5.1: a login with a live session's ISID replaces
/// it, and a TARGET COLD RESET ends every session after its response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinstatement_and_cold_reset_close_sessions() {
    let t = start().await;
    let mut old = Raw::login_isid(t.addr, 1).await;
    let _new = Raw::login_isid(t.addr, 1).await;
    assert!(
        old.closed().await,
        "the reinstated session's connection stays open"
    );

    let mut a = Raw::login_isid(t.addr, 2).await;
    let mut b = Raw::login_isid(t.addr, 3).await;
    let reset = TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::TARGET_COLD_RESET,
        lun: Lun::default(),
        itt: 0x60,
        referenced_tt: RESERVED_TAG,
        cmd_sn: a.cmd_sn,
        exp_stat_sn: 0,
        ref_cmd_sn: 0,
        exp_data_sn: 0,
    };
    a.send(&Pdu::header_only(Header::TaskMgmtRequest(reset)))
        .await;
    match a.recv().await {
        Some(Pdu {
            header: Header::TaskMgmtResponse(r),
            ..
        }) => assert_eq!((r.itt, r.response), (0x60, 0)),
        other => panic!("expected the TMF response, got {other:?}"),
    }
    assert!(a.closed().await);
    assert!(b.closed().await, "another session survived a cold reset");
    // The target itself still serves.
    let good = healthy(t.addr).await;
    still_works(&good, 1).await;
}
