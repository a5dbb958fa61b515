//! The initiator against a real tgtd (the `tgt` package): login with and
//! without CHAP, discovery, INQUIRY/READ CAPACITY, 64 MiB of pipelined
//! writes checked against tgtd's backing file, task management, logout,
//! and connection loss with commands in flight.

use bytes::Bytes;
use iscsi::initiator::{discover, CommandRequest, InitiatorError, IscsiUrl, LoginOptions, Session};
use iscsi::login::LoginStatus;
use iscsi::pdu::TmfResponse;
use iscsi::testing::Tgtd;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GOOD: u8 = 0;

/// The target under test: tgtd, or Scuzz's own target serving the emulator
/// in-process (what `scuzz serve` runs).
enum Peer {
    Tgtd(Tgtd),
    Scuzz {
        addr: SocketAddr,
        iqn: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        served: Option<tokio::task::JoinHandle<()>>,
    },
}

impl Peer {
    fn tgtd(size: u64) -> Peer {
        Peer::Tgtd(
            Tgtd::builder()
                .size(size)
                .start()
                .expect("start tgtd (needs the tgt package and root)"),
        )
    }

    fn tgtd_chap(size: u64, user: &str, secret: &str) -> Peer {
        Peer::Tgtd(
            Tgtd::builder()
                .size(size)
                .chap(user, secret)
                .start()
                .unwrap(),
        )
    }

    async fn scuzz(size: u64, chap: Option<(&str, &str)>) -> Peer {
        use iscsi::target::emulator::EmulatorDevice;
        use iscsi::target::{ChapCredentials, SharedDevice, Target, TargetConfig};
        let emu = emulator::Emulator::new(emulator::EmulatorConfig {
            block_size: 512,
            capacity_blocks: size / 512,
            ..Default::default()
        })
        .unwrap();
        let device: SharedDevice = Arc::new(Mutex::new(EmulatorDevice::new(emu)));
        let iqn = "iqn.2026-11.dev.scuzz.test:emulator".to_string();
        let mut cfg = TargetConfig::new(iqn.clone());
        cfg.chap = chap.map(|(u, s)| ChapCredentials {
            user: u.into(),
            secret: s.as_bytes().to_vec(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let target = Target::new(cfg, device);
        let served = tokio::spawn(async move {
            let _ = target
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Peer::Scuzz {
            addr,
            iqn,
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Peer::Tgtd(t) => t.addr(),
            Peer::Scuzz { addr, .. } => *addr,
        }
    }

    fn iqn(&self) -> &str {
        match self {
            Peer::Tgtd(t) => t.iqn(),
            Peer::Scuzz { iqn, .. } => iqn,
        }
    }

    /// tgtd's LUN 0 is its controller; the disk is LUN 1. The emulator's
    /// first disk is LUN 0.
    fn lun(&self) -> u16 {
        match self {
            Peer::Tgtd(_) => 1,
            Peer::Scuzz { .. } => 0,
        }
    }

    fn url(&self) -> String {
        format!("iscsi://{}/{}/{}", self.addr(), self.iqn(), self.lun())
    }

    /// Stops the target abruptly: connections are reset.
    fn kill(&mut self) {
        match self {
            Peer::Tgtd(t) => t.kill(),
            Peer::Scuzz { stop, .. } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
            }
        }
    }

    /// [`Peer::kill`], returning once every connection is closed.
    async fn kill_and_wait(&mut self) {
        self.kill();
        if let Peer::Scuzz { served, .. } = self {
            if let Some(h) = served.take() {
                let _ = h.await;
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn session(p: &Peer) -> Session {
    let url: IscsiUrl = p.url().parse().unwrap();
    let s = Session::login(&url.addr(), &LoginOptions::from_url(&url))
        .await
        .expect("login");
    clear_unit_attention(&s, p.lun()).await;
    s
}

/// A new I_T nexus first sees UNIT ATTENTION (SPC-5 §5.14: POWER ON, RESET,
/// OR BUS DEVICE RESET OCCURRED); TEST UNIT READY consumes it.
async fn clear_unit_attention(s: &Session, lun: u16) {
    for _ in 0..4 {
        let r = s
            .command(&CommandRequest::no_data(lun, &[0; 6]))
            .await
            .unwrap();
        if r.status == GOOD {
            return;
        }
        assert_eq!(
            r.sense.get(2).map(|k| k & 0x0f),
            Some(0x06),
            "UNIT ATTENTION expected"
        );
    }
    panic!("TEST UNIT READY never returned GOOD");
}

/// One test body run against both targets.
macro_rules! both_targets {
    ($body:ident, $tgtd:ident, $scuzz:ident, $make_tgtd:expr, $make_scuzz:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $tgtd() {
            $body($make_tgtd).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scuzz() {
            $body($make_scuzz.await).await;
        }
    };
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure reproduces.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

both_targets!(
    inquiry_read_capacity_ping_and_logout,
    tgtd_inquiry_read_capacity_ping_and_logout,
    scuzz_inquiry_read_capacity_ping_and_logout,
    Peer::tgtd(32 << 20),
    Peer::scuzz(32 << 20, None)
);

async fn inquiry_read_capacity_ping_and_logout(t: Peer) {
    let lun = t.lun();
    let s = session(&t).await;
    let n = s.negotiated();
    assert!(n.target_max_recv >= 512, "{n:?}");

    let r = s
        .command(&CommandRequest::read(lun, &[0x12, 0, 0, 0, 96, 0], 96))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);
    assert!(
        r.data_in.len() >= 36,
        "standard INQUIRY data is at least 36 bytes"
    );
    assert_eq!(r.data_in[0] & 0x1f, 0, "direct-access block device");
    if let Peer::Tgtd(_) = t {
        assert_eq!(&r.data_in[8..11], b"IET", "tgtd's vendor identification");
    }

    // READ CAPACITY(10): last LBA and block length (SBC-4 §5.20.2).
    let r = s
        .command(&CommandRequest::read(
            lun,
            &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            8,
        ))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);
    let last = u32::from_be_bytes(r.data_in[0..4].try_into().unwrap());
    let bs = u32::from_be_bytes(r.data_in[4..8].try_into().unwrap());
    assert_eq!(bs, 512);
    assert_eq!((u64::from(last) + 1) * u64::from(bs), 32 << 20);

    // READ CAPACITY(16) with an allocation length beyond what tgtd returns:
    // an underflow residual.
    let mut rc16 = [0u8; 16];
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[13] = 64;
    let r = s
        .command(&CommandRequest::read(lun, &rc16, 64))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);
    assert_eq!(
        u64::from_be_bytes(r.data_in[0..8].try_into().unwrap()) + 1,
        (32 << 20) / 512
    );
    assert_eq!(r.residual.signed(), 64 - r.data_in.len() as i64);

    // An unsupported opcode: CHECK CONDITION with ILLEGAL REQUEST sense.
    let r = s
        .command(&CommandRequest::no_data(lun, &[0xe7, 0, 0, 0, 0, 0]))
        .await
        .unwrap();
    assert_eq!(r.status, 0x02, "CHECK CONDITION");
    assert!(r.sense.len() >= 14, "fixed-format sense: {:?}", r.sense);
    assert_eq!(r.sense[2] & 0x0f, 0x05, "ILLEGAL REQUEST");

    // Requests that cannot be encoded fail before anything is sent.
    let bad = s.command(&CommandRequest::no_data(16384, &[0; 6])).await;
    assert!(
        matches!(bad, Err(InitiatorError::InvalidRequest(_))),
        "{bad:?}"
    );
    let bad = s.command(&CommandRequest::no_data(lun, &[])).await;
    assert!(
        matches!(bad, Err(InitiatorError::InvalidRequest(_))),
        "{bad:?}"
    );

    s.ping().await.unwrap();
    s.logout().await.unwrap();
    let after = s
        .command(&CommandRequest::no_data(lun, &[0, 0, 0, 0, 0, 0]))
        .await;
    assert!(matches!(after, Err(InitiatorError::Closed(_))), "{after:?}");
}

// 64 MiB of WRITE(10)s of mixed sizes (immediate data only, immediate plus
// R2T, several R2T bursts) at queue depth 32, SYNCHRONIZE CACHE, then the
// same back with READ(10) at queue depth 32: both the data read and tgtd's
// backing file equal what was written.
both_targets!(
    writes_64mib_at_qd32_then_sync_and_read_back,
    tgtd_writes_64mib_at_qd32_then_sync_and_read_back,
    scuzz_writes_64mib_at_qd32_then_sync_and_read_back,
    Peer::tgtd(64 << 20),
    Peer::scuzz(64 << 20, None)
);

async fn writes_64mib_at_qd32_then_sync_and_read_back(t: Peer) {
    const SIZE: usize = 64 << 20;
    let lun = t.lun();
    let s = session(&t).await;
    let data = Bytes::from(random_bytes(SIZE, 0x5eed_1234));
    // Chunk sizes cycle so every transfer path is taken.
    let sizes = [4096usize, 69632, 1 << 20, 266240, 8192, 524288];
    let mut chunks = Vec::new();
    let mut off = 0;
    let mut i = 0;
    while off < SIZE {
        let len = sizes[i % sizes.len()].min(SIZE - off);
        chunks.push((off, len));
        off += len;
        i += 1;
    }
    let chunks = Arc::new(chunks);

    let run = |write: bool| {
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..32 {
            let (s, data, chunks, next) = (s.clone(), data.clone(), chunks.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut read_back = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(off, len)) = chunks.get(i) else {
                        break;
                    };
                    let lba = (off / 512) as u32;
                    let blocks = (len / 512) as u16;
                    let r = if write {
                        let cdb = write10(lba, blocks);
                        s.command(&CommandRequest::write(
                            lun,
                            &cdb,
                            data.slice(off..off + len),
                        ))
                        .await
                    } else {
                        let cdb = read10(lba, blocks);
                        s.command(&CommandRequest::read(lun, &cdb, len as u32))
                            .await
                    };
                    let r = r.unwrap_or_else(|e| panic!("chunk at {off}: {e}"));
                    assert_eq!(r.status, GOOD, "chunk at {off}: sense {:?}", r.sense);
                    assert_eq!(r.residual.signed(), 0, "chunk at {off}");
                    if !write {
                        read_back.push((off, r.data_in));
                    }
                }
                read_back
            }));
        }
        workers
    };

    for w in run(true) {
        w.await.unwrap();
    }
    let r = s
        .command(&CommandRequest::no_data(
            lun,
            &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD, "SYNCHRONIZE CACHE(10)");
    if let Peer::Tgtd(t) = &t {
        let backing = std::fs::read(t.backing_path()).unwrap();
        assert_eq!(backing.len(), SIZE);
        if let Some(at) = backing.iter().zip(data.iter()).position(|(a, b)| a != b) {
            panic!("tgtd's backing file differs from the data written at byte {at}");
        }
    }

    let mut seen = 0;
    for w in run(false) {
        for (off, got) in w.await.unwrap() {
            assert!(
                got[..] == data[off..off + got.len()],
                "READ at byte {off} differs"
            );
            seen += got.len();
        }
    }
    assert_eq!(seen, SIZE);
    s.logout().await.unwrap();
}

both_targets!(
    discovery_lists_the_target,
    tgtd_discovery_lists_the_target,
    scuzz_discovery_lists_the_target,
    Peer::tgtd(1 << 20),
    Peer::scuzz(1 << 20, None)
);

async fn discovery_lists_the_target(t: Peer) {
    let opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, "");
    let found = discover(&t.addr().to_string(), &opts).await.unwrap();
    let ours = found
        .iter()
        .find(|d| d.name == t.iqn())
        .unwrap_or_else(|| panic!("{} not in {found:?}", t.iqn()));
    assert!(
        ours.addresses
            .iter()
            .any(|a| a.contains(&t.addr().port().to_string())),
        "{ours:?}"
    );
}

both_targets!(
    digests_protect_every_pdu,
    tgtd_digests_protect_every_pdu,
    scuzz_digests_protect_every_pdu,
    Peer::tgtd(8 << 20),
    Peer::scuzz(8 << 20, None)
);

/// HeaderDigest and DataDigest CRC32C negotiated (RFC 7143 §13.1): writes
/// and reads of several PDUs each still round-trip.
async fn digests_protect_every_pdu(t: Peer) {
    let lun = t.lun();
    if let Peer::Tgtd(t) = &t {
        // tgtd offers no digests unless configured to.
        for key in ["HeaderDigest", "DataDigest"] {
            t.tgtadm(&[
                "--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", "1", "--name",
                key, "--value", "CRC32C",
            ])
            .unwrap();
        }
    }
    let url: IscsiUrl = t.url().parse().unwrap();
    let mut opts = LoginOptions::from_url(&url);
    opts.params.header_digest = true;
    opts.params.data_digest = true;
    let s = Session::login(&url.addr(), &opts).await.unwrap();
    let n = s.negotiated();
    assert!(n.params.header_digest && n.params.data_digest, "{n:?}");
    clear_unit_attention(&s, lun).await;
    let data = Bytes::from(random_bytes(1 << 20, 99));
    for i in 0..4u32 {
        let r = s
            .command(&CommandRequest::write(
                lun,
                &write10(i * 2048, 2048),
                data.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, GOOD);
    }
    for i in 0..4u32 {
        let r = s
            .command(&CommandRequest::read(lun, &read10(i * 2048, 2048), 1 << 20))
            .await
            .unwrap();
        assert_eq!(r.status, GOOD);
        assert!(r.data_in == data, "read {i} differs");
    }
    s.logout().await.unwrap();
}

both_targets!(
    chap_login_accepts_the_secret_and_refuses_others,
    tgtd_chap_login_accepts_the_secret_and_refuses_others,
    scuzz_chap_login_accepts_the_secret_and_refuses_others,
    Peer::tgtd_chap(1 << 20, "scuzzuser", "scuzz-secret-12"),
    Peer::scuzz(1 << 20, Some(("scuzzuser", "scuzz-secret-12")))
);

async fn chap_login_accepts_the_secret_and_refuses_others(t: Peer) {
    let good: IscsiUrl = format!(
        "iscsi://scuzzuser%scuzz-secret-12@{}/{}/{}",
        t.addr(),
        t.iqn(),
        t.lun()
    )
    .parse()
    .unwrap();
    let s = Session::login_url(&good).await.unwrap();
    clear_unit_attention(&s, t.lun()).await;
    s.logout().await.unwrap();

    let bad: IscsiUrl = format!(
        "iscsi://scuzzuser%wrong-secret@{}/{}/{}",
        t.addr(),
        t.iqn(),
        t.lun()
    )
    .parse()
    .unwrap();
    match Session::login_url(&bad).await {
        Err(InitiatorError::LoginRejected { status, .. }) => {
            assert_eq!(status, LoginStatus::AUTHENTICATION_FAILURE)
        }
        other => panic!("wrong secret: {other:?}"),
    }
    let none: IscsiUrl = t.url().parse().unwrap();
    match Session::login_url(&none).await {
        Err(InitiatorError::LoginRejected { .. }) | Err(InitiatorError::Chap(_)) => {}
        other => panic!("no credentials: {other:?}"),
    }
}

both_targets!(
    task_management_functions,
    tgtd_task_management_functions,
    scuzz_task_management_functions,
    Peer::tgtd(16 << 20),
    Peer::scuzz(16 << 20, None)
);

async fn task_management_functions(t: Peer) {
    let lun = t.lun();
    let s = session(&t).await;
    // ABORT TASK on a read in flight: either the target aborted it (the
    // command then fails as Aborted, naming it) or it had already
    // completed (NO TASK / complete with data).
    let mut flights = Vec::new();
    for i in 0..16u32 {
        let cdb = read10(i * 2048, 2048);
        flights.push(
            s.start(&CommandRequest::read(lun, &cdb, 1 << 20))
                .await
                .unwrap(),
        );
    }
    let victim = flights.last().unwrap().id().clone();
    let resp = s.abort_task(&victim).await.unwrap();
    assert!(
        [TmfResponse::COMPLETE, TmfResponse::NO_TASK].contains(&resp),
        "ABORT TASK answered {resp:?}"
    );
    for f in flights {
        let id = f.id().clone();
        match f.await {
            Ok(r) => assert_eq!(r.status, GOOD),
            Err(InitiatorError::Aborted { task, function }) => {
                assert_eq!(task, victim, "only the referenced task is aborted");
                assert_eq!(function, "ABORT TASK");
                assert_eq!(resp, TmfResponse::COMPLETE);
                assert_eq!(task, id);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(s.lun_reset(lun).await.unwrap(), TmfResponse::COMPLETE);
    // After a LUN reset the first command reports the unit attention
    // (SPC-5 §6.2: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED).
    let r = s
        .command(&CommandRequest::no_data(lun, &[0; 6]))
        .await
        .unwrap();
    if r.status == 0x02 {
        assert_eq!(r.sense[2] & 0x0f, 0x06, "UNIT ATTENTION");
    }
    let warm = s.target_warm_reset().await.unwrap();
    assert!(
        [
            TmfResponse::COMPLETE,
            TmfResponse::NOT_SUPPORTED,
            TmfResponse::REJECTED
        ]
        .contains(&warm),
        "TARGET WARM RESET answered {warm:?}"
    );
    // The session still works whatever the reset did.
    let r = s
        .command(&CommandRequest::read(lun, &read10(0, 8), 4096))
        .await;
    let r = match r {
        Ok(r) => r,
        // tgtd may drop the connection on a target reset; the session
        // logs in again.
        Err(_) => s
            .command(&CommandRequest::read(lun, &read10(0, 8), 4096))
            .await
            .unwrap(),
    };
    assert!(r.status == GOOD || r.status == 0x02);
    s.logout().await.unwrap();
}

/// A TCP relay between the initiator and tgtd that can hold the target's
/// answers and then cut every connection, as a failing network would.
struct Relay {
    addr: SocketAddr,
    hold: Arc<AtomicBool>,
    /// Cuts so far: a connection forwards held answers only if none came
    /// since it was accepted. Aborting its tasks is not enough, as a task
    /// already running on another worker thread finishes its step: it
    /// would see `hold` cleared and forward what it held.
    cuts: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    forwarded_up: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let forwarded_up = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (h, c, f, k) = (
            hold.clone(),
            conns.clone(),
            forwarded_up.clone(),
            cuts.clone(),
        );
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let born = k.load(Ordering::SeqCst);
                let k = k.clone();
                let up = TcpStream::connect(upstream).await.unwrap();
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let f = f.clone();
                let a = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = dr.read(&mut buf).await {
                        if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        f.fetch_add(n, Ordering::SeqCst);
                    }
                });
                let h = h.clone();
                let b = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    // Whatever is read while holding is kept back until
                    // the cut discards it.
                    while let Ok(n) = ur.read(&mut buf).await {
                        while h.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        // `cut` counts before it clears `hold`: seeing
                        // `hold` clear, this sees the count too.
                        if k.load(Ordering::SeqCst) != born {
                            break;
                        }
                        if n == 0 || dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                c.lock()
                    .unwrap()
                    .extend([a.abort_handle(), b.abort_handle()]);
            }
        });
        Relay {
            addr,
            hold,
            cuts,
            conns,
            forwarded_up,
        }
    }

    fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
        self.hold.store(false, Ordering::SeqCst);
    }
}

// Commands in flight when the connection dies each fail with
// `ConnectionLost` naming their ITT and CDB; the next command logs in
// again and succeeds.
both_targets!(
    connection_loss_fails_in_flight_commands_then_reconnects,
    tgtd_connection_loss_fails_in_flight_commands_then_reconnects,
    scuzz_connection_loss_fails_in_flight_commands_then_reconnects,
    Peer::tgtd(8 << 20),
    Peer::scuzz(8 << 20, None)
);

async fn connection_loss_fails_in_flight_commands_then_reconnects(t: Peer) {
    let lun = t.lun();
    let relay = Relay::start(t.addr()).await;
    let opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, t.iqn());
    let s = Session::login(&relay.addr.to_string(), &opts)
        .await
        .unwrap();
    clear_unit_attention(&s, lun).await;
    let r = s
        .command(&CommandRequest::read(lun, &read10(0, 8), 4096))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);

    relay.hold.store(true, Ordering::SeqCst);
    let before = relay.forwarded_up.load(Ordering::SeqCst);
    let mut flights = Vec::new();
    for i in 0..8u32 {
        let cdb = read10(i * 16, 16);
        flights.push(
            s.start(&CommandRequest::read(lun, &cdb, 8192))
                .await
                .unwrap(),
        );
    }
    // All eight SCSI Command PDUs (48 bytes each) reach tgtd before the cut.
    while relay.forwarded_up.load(Ordering::SeqCst) < before + 8 * 48 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    relay.cut();
    for f in flights {
        let id = f.id().clone();
        match f.await {
            Err(InitiatorError::ConnectionLost { task, reason }) => {
                assert_eq!(task, id);
                assert_eq!(task.cdb[0], 0x28);
                assert!(!reason.is_empty());
                let msg = InitiatorError::ConnectionLost { task, reason }.to_string();
                assert!(msg.contains(&format!("{:#010x}", id.itt)), "{msg}");
            }
            Ok(r) => panic!(
                "in-flight READ completed (status {}) despite the cut",
                r.status
            ),
            Err(e) => panic!("in-flight READ after the cut: {e}"),
        }
    }
    // The new nexus starts with a unit attention, then works.
    clear_unit_attention(&s, lun).await;
    let r = s
        .command(&CommandRequest::read(lun, &read10(0, 8), 4096))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);
    assert_eq!(s.reconnects(), 1);

    // Dropping the connection from our side behaves the same way.
    s.drop_connection();
    clear_unit_attention(&s, lun).await;
    let r = s
        .command(&CommandRequest::read(lun, &read10(0, 8), 4096))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);
    assert_eq!(s.reconnects(), 2);
    s.logout().await.unwrap();
}

both_targets!(
    target_killed_mid_write,
    tgtd_killed_mid_write,
    scuzz_killed_mid_write,
    Peer::tgtd(16 << 20),
    Peer::scuzz(16 << 20, None)
);

/// The target dying under a queue of writes: every write either completed
/// or failed as ConnectionLost (none hangs, none reports another error),
/// and reconnecting to the dead portal fails.
async fn target_killed_mid_write(mut t: Peer) {
    let lun = t.lun();
    let s = session(&t).await;
    let data = Bytes::from(random_bytes(1 << 20, 7));
    let mut flights = Vec::new();
    for i in 0..16u32 {
        let cdb = write10(i * 2048, 2048);
        flights.push(
            s.start(&CommandRequest::write(lun, &cdb, data.clone()))
                .await
                .unwrap(),
        );
    }
    t.kill_and_wait().await;
    for f in flights {
        match f.await {
            Ok(r) => assert_eq!(r.status, GOOD),
            Err(InitiatorError::ConnectionLost { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let again = s.command(&CommandRequest::no_data(lun, &[0; 6])).await;
    assert!(
        matches!(
            again,
            Err(InitiatorError::Connect { .. })
                | Err(InitiatorError::ConnectionLost { .. })
                | Err(InitiatorError::Closed(_))
        ),
        "{again:?}"
    );
}

/// Targets that break RFC 7143 on purpose: the initiator must fail the
/// command in flight with a typed error naming the violation, never panic,
/// and never allocate what a hostile length asks for.
mod hostile {
    use super::*;
    use bytes::BytesMut;
    use iscsi::codec::{read_frame, PduCodec};
    use iscsi::initiator::{CommandResponse, TaskId};
    use iscsi::pdu::{DataIn, Digests, Header, LoginResponse, Pdu, R2t, ScsiCommand, ScsiResponse};

    /// What the fake target sends in answer to a SCSI Command.
    type Answer = fn(&ScsiCommand) -> Vec<u8>;

    /// A command's identity with its outcome.
    type Outcome = Result<(TaskId, CommandResponse), (TaskId, InitiatorError)>;

    fn encode(h: Header, data: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        Pdu::new(h, Bytes::copy_from_slice(data)).encode(Digests::NONE, &mut b);
        b.to_vec()
    }

    /// Logs any initiator in (no keys, RFC defaults), then answers each
    /// command with `answer` and keeps the socket open until the initiator
    /// closes it (or hangs up after an answer shorter than a BHS).
    async fn target(answer: Answer) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let codec = PduCodec::default();
            while let Ok(Some(frame)) = read_frame(&mut sock, &mut buf, &codec).await {
                let Ok(pdu) = frame.parse() else { break };
                let reply = match pdu.header {
                    Header::LoginRequest(r) => encode(
                        Header::LoginResponse(LoginResponse {
                            transit: true,
                            cont: false,
                            csg: r.csg,
                            nsg: r.nsg,
                            version_max: 0,
                            version_active: 0,
                            isid: r.isid,
                            tsih: 1,
                            itt: r.itt,
                            stat_sn: 0,
                            exp_cmd_sn: r.cmd_sn,
                            max_cmd_sn: r.cmd_sn.wrapping_add(31),
                            status_class: 0,
                            status_detail: 0,
                        }),
                        &[],
                    ),
                    Header::ScsiCommand(c) => answer(&c),
                    _ => continue,
                };
                if sock.write_all(&reply).await.is_err() {
                    break;
                }
                if reply.len() < 48 {
                    // A truncated header: hang up, as a crashing peer would.
                    break;
                }
            }
        });
        addr
    }

    async fn run(answer: Answer, req: CommandRequest<'_>) -> Outcome {
        let addr = target(answer).await;
        let opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, "iqn.x:hostile");
        let s = Session::login(&addr.to_string(), &opts).await.unwrap();
        let f = s.start(&req).await.unwrap();
        let id = f.id().clone();
        match tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("no hang")
        {
            Ok(r) => Ok((id, r)),
            Err(e) => Err((id, e)),
        }
    }

    fn expect_lost(r: Outcome, needle: &str) {
        match r {
            Err((id, InitiatorError::ConnectionLost { task, reason })) => {
                assert_eq!(task, id, "the error names the command in flight");
                assert!(
                    reason.contains(needle),
                    "reason {reason:?} lacks {needle:?}"
                );
            }
            Err((_, e)) => panic!("expected ConnectionLost mentioning {needle:?}, got {e}"),
            Ok(_) => panic!("expected ConnectionLost mentioning {needle:?}, got a response"),
        }
    }

    fn read_req() -> CommandRequest<'static> {
        CommandRequest::read(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096)
    }

    #[tokio::test]
    async fn data_in_beyond_the_expected_length() {
        let r = run(
            |c| {
                encode(
                    Header::DataIn(DataIn {
                        final_: true,
                        status: Some(0),
                        itt: c.itt,
                        ttt: u32::MAX,
                        exp_cmd_sn: c.cmd_sn + 1,
                        max_cmd_sn: c.cmd_sn + 32,
                        ..Default::default()
                    }),
                    &[0u8; 4100],
                )
            },
            read_req(),
        )
        .await;
        expect_lost(r, "past its expected length");
    }

    #[tokio::test]
    async fn unknown_opcode() {
        let r = run(
            |_| {
                let mut b = vec![0u8; 48];
                b[0] = 0x3e;
                b
            },
            read_req(),
        )
        .await;
        expect_lost(r, "unknown opcode");
    }

    #[tokio::test]
    async fn data_segment_longer_than_declared_is_refused_before_allocation() {
        let r = run(
            |c| {
                let mut b = encode(
                    Header::DataIn(DataIn {
                        itt: c.itt,
                        ..Default::default()
                    }),
                    &[],
                );
                // DataSegmentLength 16 MiB - 1, far beyond the 256 KiB the
                // initiator declared; no data follows.
                b[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
                b
            },
            read_req(),
        )
        .await;
        expect_lost(r, "exceeds MaxRecvDataSegmentLength");
    }

    #[tokio::test]
    async fn r2t_beyond_the_write() {
        let r = run(
            |c| {
                encode(
                    Header::R2t(R2t {
                        itt: c.itt,
                        ttt: 7,
                        exp_cmd_sn: c.cmd_sn + 1,
                        max_cmd_sn: c.cmd_sn + 32,
                        buffer_offset: 4096,
                        desired_length: 1 << 20,
                        ..Default::default()
                    }),
                    &[],
                )
            },
            CommandRequest::write(0, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0], vec![0u8; 4096]),
        )
        .await;
        expect_lost(r, "R2T");
    }

    #[tokio::test]
    async fn garbage_stream() {
        let r = run(|_| random_bytes(4096, 42), read_req()).await;
        match r {
            Err((id, InitiatorError::ConnectionLost { task, .. })) => assert_eq!(task, id),
            Err((_, e)) => panic!("{e}"),
            Ok(_) => panic!("garbage produced a response"),
        }
    }

    #[tokio::test]
    async fn oversized_sense_length_is_clamped() {
        // SenseLength claims 1000 bytes, 4 follow: the sense returned is
        // what arrived, nothing is read past the segment.
        let r = run(
            |c| {
                let mut data = vec![0x03, 0xe8];
                data.extend_from_slice(&[0x70, 0, 5, 0]);
                encode(
                    Header::ScsiResponse(ScsiResponse {
                        status: 2,
                        itt: c.itt,
                        exp_cmd_sn: c.cmd_sn + 1,
                        max_cmd_sn: c.cmd_sn + 32,
                        ..Default::default()
                    }),
                    &data,
                )
            },
            read_req(),
        )
        .await;
        let (_, resp) = r.map_err(|(_, e)| e.to_string()).unwrap();
        assert_eq!(resp.status, 2);
        assert_eq!(&resp.sense[..], &[0x70, 0, 5, 0]);
    }

    #[tokio::test]
    async fn truncated_pdu_then_close() {
        let r = run(|_| vec![0x25, 0x80, 0, 0], read_req()).await;
        expect_lost(r, "inside a PDU");
    }

    /// A target that answers our offer and offers a key of its own in the
    /// operational stage (RFC 7143 §6.2) gets that key answered, and only
    /// that key, before it lets the login finish; it refuses the login
    /// (status 0x0207) otherwise. Its answer DefaultTime2Wait=5 (the larger
    /// of both, §13.15) is taken.
    #[tokio::test]
    async fn target_offered_keys_are_answered() {
        use iscsi::pdu::Stage;
        use iscsi::text::TextKeys;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let codec = PduCodec::default();
            let mut offered = false;
            while let Ok(Some(frame)) = read_frame(&mut sock, &mut buf, &codec).await {
                let Ok(pdu) = frame.parse() else { break };
                let Header::LoginRequest(r) = pdu.header else {
                    break;
                };
                let keys = TextKeys::parse(&pdu.data).unwrap();
                let mut resp = LoginResponse {
                    transit: true,
                    cont: false,
                    csg: r.csg,
                    nsg: r.nsg,
                    version_max: 0,
                    version_active: 0,
                    isid: r.isid,
                    tsih: 1,
                    itt: r.itt,
                    stat_sn: 0,
                    exp_cmd_sn: r.cmd_sn,
                    max_cmd_sn: r.cmd_sn.wrapping_add(31),
                    status_class: 0,
                    status_detail: 0,
                };
                let mut data = Vec::new();
                if r.csg == Stage::Operational && !offered {
                    offered = true;
                    resp.transit = false;
                    data = b"DefaultTime2Wait=5\0X-org.example.Frob=1\0".to_vec();
                } else if r.csg == Stage::Operational
                    && (keys.get("DefaultTime2Wait").is_some()
                        || keys.get("X-org.example.Frob") != Some("NotUnderstood"))
                {
                    resp.status_class = 2;
                    resp.status_detail = 7;
                }
                let reply = encode(Header::LoginResponse(resp), &data);
                if sock.write_all(&reply).await.is_err() {
                    break;
                }
            }
        });
        let opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, "iqn.x:keys");
        let s = Session::login(&addr.to_string(), &opts).await.unwrap();
        assert_eq!(s.negotiated().params.default_time2wait, 5);
    }

    /// A portal that answers the login with "target moved temporarily"
    /// (Status-Class 1, RFC 7143 §11.13.5) and a TargetAddress: the session
    /// logs in there instead. Also a portal that redirects without saying
    /// where fails with the typed error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn login_follows_a_redirect_to_tgtd() {
        let t = Peer::tgtd(1 << 20);
        async fn redirector(to: Option<SocketAddr>) -> SocketAddr {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = BytesMut::new();
                let codec = PduCodec::default();
                if let Ok(Some(frame)) = read_frame(&mut sock, &mut buf, &codec).await {
                    let Ok(Pdu {
                        header: Header::LoginRequest(r),
                        ..
                    }) = frame.parse()
                    else {
                        return;
                    };
                    let data = to
                        .map(|a| format!("TargetAddress={a},1\0"))
                        .unwrap_or_default();
                    let resp = LoginResponse {
                        transit: false,
                        cont: false,
                        csg: r.csg,
                        nsg: r.nsg,
                        version_max: 0,
                        version_active: 0,
                        isid: r.isid,
                        tsih: 0,
                        itt: r.itt,
                        stat_sn: 0,
                        exp_cmd_sn: r.cmd_sn,
                        max_cmd_sn: r.cmd_sn,
                        status_class: 1,
                        status_detail: 1,
                    };
                    let _ = sock
                        .write_all(&encode(Header::LoginResponse(resp), data.as_bytes()))
                        .await;
                }
            });
            addr
        }
        let opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, t.iqn());
        let portal = redirector(Some(t.addr())).await;
        let s = Session::login(&portal.to_string(), &opts).await.unwrap();
        clear_unit_attention(&s, t.lun()).await;
        s.logout().await.unwrap();

        let nowhere = redirector(None).await;
        match Session::login(&nowhere.to_string(), &opts).await {
            Err(InitiatorError::Redirected {
                status, address, ..
            }) => {
                assert_eq!((status.class, status.detail), (1, 1));
                assert!(address.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    /// A target ping (NOP-In with a Target Transfer Tag, RFC 7143 §11.19)
    /// is answered with a NOP-Out carrying that tag, the reserved ITT and
    /// the ping data; the target only completes the command after a correct
    /// answer.
    #[tokio::test]
    async fn target_pings_are_answered() {
        use iscsi::pdu::NopIn;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let codec = PduCodec::default();
            let mut pending: Option<ScsiCommand> = None;
            while let Ok(Some(frame)) = read_frame(&mut sock, &mut buf, &codec).await {
                let Ok(pdu) = frame.parse() else { break };
                let reply = match pdu.header {
                    Header::LoginRequest(r) => encode(
                        Header::LoginResponse(LoginResponse {
                            transit: true,
                            cont: false,
                            csg: r.csg,
                            nsg: r.nsg,
                            version_max: 0,
                            version_active: 0,
                            isid: r.isid,
                            tsih: 1,
                            itt: r.itt,
                            stat_sn: 0,
                            exp_cmd_sn: r.cmd_sn,
                            max_cmd_sn: r.cmd_sn.wrapping_add(31),
                            status_class: 0,
                            status_detail: 0,
                        }),
                        &[],
                    ),
                    Header::ScsiCommand(c) => {
                        let ping = encode(
                            Header::NopIn(NopIn {
                                itt: u32::MAX,
                                ttt: 0x1234,
                                stat_sn: 1,
                                exp_cmd_sn: c.cmd_sn + 1,
                                max_cmd_sn: c.cmd_sn + 32,
                                ..Default::default()
                            }),
                            b"ping",
                        );
                        pending = Some(c);
                        ping
                    }
                    Header::NopOut(n) => {
                        let Some(c) = pending.take() else { break };
                        let ok = n.ttt == 0x1234 && n.itt == u32::MAX && &pdu.data[..] == b"ping";
                        encode(
                            Header::ScsiResponse(ScsiResponse {
                                status: if ok { 0 } else { 2 },
                                itt: c.itt,
                                stat_sn: 1,
                                exp_cmd_sn: c.cmd_sn + 1,
                                max_cmd_sn: c.cmd_sn + 32,
                                ..Default::default()
                            }),
                            &[],
                        )
                    }
                    _ => continue,
                };
                if sock.write_all(&reply).await.is_err() {
                    break;
                }
            }
        });
        let opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, "iqn.x:nop");
        let s = Session::login(&addr.to_string(), &opts).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), s.command(&read_req()))
            .await
            .expect("the target answers once pinged back")
            .unwrap();
        assert_eq!(r.status, GOOD, "NOP-Out answer was wrong");
    }

    /// A target that swallows commands: with a command timeout the command
    /// fails naming itself, and says whether the target confirmed ABORT
    /// TASK (else the connection was dropped).
    #[tokio::test]
    async fn command_timeout_aborts_the_task() {
        use iscsi::pdu::{TaskMgmtResponse, TmfFunction};
        async fn swallower(confirm: bool) -> SocketAddr {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = BytesMut::new();
                let codec = PduCodec::default();
                while let Ok(Some(frame)) = read_frame(&mut sock, &mut buf, &codec).await {
                    let Ok(pdu) = frame.parse() else { break };
                    let reply = match pdu.header {
                        Header::LoginRequest(r) => encode(
                            Header::LoginResponse(LoginResponse {
                                transit: true,
                                cont: false,
                                csg: r.csg,
                                nsg: r.nsg,
                                version_max: 0,
                                version_active: 0,
                                isid: r.isid,
                                tsih: 1,
                                itt: r.itt,
                                stat_sn: 0,
                                exp_cmd_sn: r.cmd_sn,
                                max_cmd_sn: r.cmd_sn.wrapping_add(31),
                                status_class: 0,
                                status_detail: 0,
                            }),
                            &[],
                        ),
                        Header::TaskMgmtRequest(t)
                            if confirm && t.function == TmfFunction::ABORT_TASK =>
                        {
                            encode(
                                Header::TaskMgmtResponse(TaskMgmtResponse {
                                    response: 0,
                                    itt: t.itt,
                                    stat_sn: 1,
                                    exp_cmd_sn: t.cmd_sn,
                                    max_cmd_sn: t.cmd_sn + 31,
                                }),
                                &[],
                            )
                        }
                        _ => continue,
                    };
                    if sock.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
            addr
        }
        for confirm in [true, false] {
            let addr = swallower(confirm).await;
            let mut opts = LoginOptions::new(iscsi::initiator::DEFAULT_INITIATOR_IQN, "iqn.x:slow");
            opts.command_timeout = Some(Duration::from_millis(200));
            let s = Session::login(&addr.to_string(), &opts).await.unwrap();
            match s.command(&read_req()).await {
                Err(InitiatorError::CommandTimeout { task, aborted, .. }) => {
                    assert_eq!(task.cdb[0], 0x28);
                    assert_eq!(aborted, confirm);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

// tgtd pinging every second and dropping the connection after two
// unanswered pings: an idle session survives four seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgtd_nop_in_pings_keep_an_idle_session() {
    let t = Peer::tgtd(1 << 20);
    let Peer::Tgtd(tg) = &t else { unreachable!() };
    for (k, v) in [("nop_interval", "1"), ("nop_count", "2")] {
        tg.tgtadm(&[
            "--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", "1", "--name", k,
            "--value", v,
        ])
        .unwrap();
    }
    let s = session(&t).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = s
        .command(&CommandRequest::read(t.lun(), &read10(0, 8), 4096))
        .await
        .unwrap();
    assert_eq!(r.status, GOOD);
    assert_eq!(
        s.reconnects(),
        0,
        "tgtd dropped the session: pings unanswered"
    );
    s.logout().await.unwrap();
}
