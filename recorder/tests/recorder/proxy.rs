//! The recording proxy between QEMU's iSCSI block driver and tgtd: the copy
//! arrives intact, and the trace holds exactly what QEMU sent.
//!
//! Needs `tgtd` (package `tgt`, run as root) and QEMU 7.2's tools unpacked
//! by `scripts/fetch-qemu-iscsi`; `scripts/test` provides both. A missing
//! tool fails the test with the command that provides it.

use recorder::proxy::session::PayloadCapture;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trace::file::{Compression, TraceHeader, TraceReader, TraceWriter};
use trace::{Cdb, Event, Payload, ServiceResponse};

fn qemu_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/qemu-iscsi/root");
    assert!(
        root.join("usr/bin/qemu-img").is_file(),
        "QEMU 7.2 with the iSCSI block driver is not unpacked: run scripts/fetch-qemu-iscsi"
    );
    root
}

fn qemu_img(args: &[&str]) -> Command {
    let root = qemu_root();
    let mut c = Command::new(root.join("usr/bin/qemu-img"));
    c.args(args)
        .env(
            "QEMU_MODULE_DIR",
            root.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .stdin(Stdio::null());
    c
}

fn tgtd(size: u64) -> iscsi::testing::Tgtd {
    assert!(
        iscsi::testing::Tgtd::available(),
        "tgtd is not usable: install `tgt` and run as root (scripts/test does both)"
    );
    iscsi::testing::Tgtd::builder()
        .size(size)
        .start()
        .expect("tgtd starts")
}

/// The proxy on its own runtime thread, stopped (and its trace finished)
/// by `stop`.
struct Proxy {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<recorder::proxy::ProxySummary>>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr, capture: PayloadCapture, out: &Path) -> Proxy {
        let mut h = TraceHeader::new("proxy test");
        h.payload_mode = capture.mode();
        let w = TraceWriter::create(out, &h, Compression::ZSTD_DEFAULT).unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        std_listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let (_, s) = recorder::proxy::run(l, target.to_string(), capture, w, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
                s
            })
        });
        Proxy {
            port,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> recorder::proxy::ProxySummary {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("proxy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn qemu_img_convert_through_the_proxy_is_byte_identical_and_recorded_exactly() {
    let t = tgtd(64 << 20);
    let dir = scratch("convert");
    let src = dir.join("src.raw");
    let data = random_file(&src, 64 << 20);
    let trace_path = dir.join("run.sczt");
    let proxy = Proxy::start(t.addr(), PayloadCapture::Full, &trace_path);
    let url = format!("iscsi://127.0.0.1:{}/{}/1", proxy.port, t.iqn());
    let out = qemu_img(&[
        "convert",
        "-n",
        "-t",
        "writeback",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        &url,
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = proxy.finish();
    assert!(summary.commands > 0);

    // The copy arrived intact.
    let disk = std::fs::read(t.backing_path()).unwrap();
    assert!(
        disk[..data.len()] == data[..],
        "tgtd's backing file differs from the source"
    );

    // The trace: every WRITE with its exact data; replaying them rebuilds
    // the image; the last medium command is QEMU's SYNCHRONIZE CACHE.
    let r = TraceReader::open(&trace_path).unwrap();
    let mut image = vec![0u8; data.len()];
    let mut submits = HashMap::new();
    let mut completes = 0;
    let mut last_op = None;
    let mut writes = 0;
    for e in r {
        match e.unwrap() {
            Event::Submit(s) => {
                let cdb = Cdb::parse(&s.cdb).unwrap();
                if let Cdb::Write(rw) = &cdb {
                    let Payload::Full(bytes) = &s.payload else {
                        panic!("write without data: {s:?}")
                    };
                    assert_eq!(bytes.len(), rw.blocks as usize * 512);
                    let at = rw.lba as usize * 512;
                    image[at..at + bytes.len()].copy_from_slice(bytes);
                    writes += 1;
                }
                if matches!(cdb, Cdb::Write(_) | Cdb::SyncCache { .. }) {
                    last_op = Some(cdb.clone());
                }
                submits.insert(s.seq, s);
            }
            Event::Complete(c) => {
                assert!(submits.contains_key(&c.seq));
                assert_eq!(c.response, ServiceResponse::TaskComplete);
                completes += 1;
            }
            _ => {}
        }
    }
    assert_eq!(completes, submits.len());
    assert!(writes > 0);
    assert!(
        image == data,
        "WRITE payloads in the trace do not rebuild the image"
    );
    assert!(
        matches!(last_op, Some(Cdb::SyncCache { .. })),
        "last medium command: {last_op:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killing_the_initiator_mid_transfer_leaves_a_readable_trace_with_every_completed_command() {
    let t = tgtd(64 << 20);
    let dir = scratch("kill");
    let src = dir.join("src.raw");
    random_file(&src, 64 << 20);
    let trace_path = dir.join("run.sczt");
    let proxy = Proxy::start(t.addr(), PayloadCapture::Digest, &trace_path);
    let url = format!("iscsi://127.0.0.1:{}/{}/1", proxy.port, t.iqn());
    // Rate-limited so it is still copying when killed: 8 MiB/s for 64 MiB.
    let mut child: Child = qemu_img(&[
        "convert",
        "-n",
        "-r",
        "8M",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        &url,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Wait until the proxy's periodic flush shows written commands.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let writes_seen = TraceReader::open(&trace_path)
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter(|e| matches!(e, Event::Complete(_)))
                    .count()
            })
            .unwrap_or(0);
        if writes_seen >= 4 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "qemu-img finished before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "no completed command reached the trace"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The proxy notices the drop; give it a moment, then stop it.
    std::thread::sleep(Duration::from_millis(300));
    proxy.finish();

    let r = TraceReader::open(&trace_path).unwrap();
    let events: Vec<Event> = r
        .collect::<Result<_, _>>()
        .expect("the trace reads to its end");
    let mut open = HashMap::new();
    let (mut done, mut incomplete) = (0, 0);
    for e in &events {
        match e {
            Event::Submit(s) => {
                open.insert(s.seq, ());
            }
            Event::Complete(c) => {
                assert!(
                    open.remove(&c.seq).is_some(),
                    "completion without its command"
                );
                if c.response == ServiceResponse::Incomplete {
                    incomplete += 1;
                } else {
                    done += 1;
                }
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "commands without any completion: {open:?}");
    assert!(done >= 4);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Note { text, .. } if text.contains("initiator"))));
    let _ = incomplete;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One PDU without AHS, digests or data: what both ends of the ITT-reuse
/// test exchange.
fn bare_pdu(h: &iscsi::pdu::Header) -> Vec<u8> {
    let mut ahs = Vec::new();
    let bhs = h.encode(0, &mut ahs);
    assert!(ahs.is_empty());
    bhs.to_vec()
}

/// An initiator that reuses one Initiator Task Tag the moment the status of
/// its previous command arrives (open-iscsi reuses task tags), against a
/// target that answers each command at once: every command is recorded as
/// completed with its own status, none as incomplete. If the proxy forwarded
/// a status before parsing it, the next command with the same ITT could
/// reach the session first and retire the old one as incomplete.
#[test]
fn an_itt_reused_right_after_its_status_is_recorded_as_a_new_command() {
    use iscsi::pdu::{Header, ScsiCommand, ScsiResponse};
    use std::io::{Read, Write};
    const COMMANDS: usize = 2000;
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    let answering = std::thread::spawn(move || {
        let (mut s, _) = target.accept().unwrap();
        let _ = s.set_nodelay(true);
        let mut bhs = [0u8; 48];
        let mut n = 0u8;
        while s.read_exact(&mut bhs).is_ok() {
            n = n.wrapping_add(1);
            let itt = u32::from_be_bytes([bhs[16], bhs[17], bhs[18], bhs[19]]);
            // Alternate GOOD and BUSY, so a status given to the wrong
            // command would show.
            let status = if n & 1 == 0 { 0x08 } else { 0x00 };
            let r = Header::ScsiResponse(ScsiResponse {
                itt,
                status,
                ..Default::default()
            });
            if s.write_all(&bare_pdu(&r)).is_err() {
                break;
            }
        }
    });
    let dir = scratch("itt-reuse");
    let trace_path = dir.join("run.sczt");
    let proxy = Proxy::start(target_addr, PayloadCapture::None, &trace_path);
    let mut i = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let _ = i.set_nodelay(true);
    let cdb = vec![0u8; 16]; // TEST UNIT READY
    let mut status = [0u8; 48];
    for _ in 0..COMMANDS {
        let c = Header::ScsiCommand(ScsiCommand {
            final_: true,
            itt: 7,
            cdb: cdb.clone(),
            ..Default::default()
        });
        i.write_all(&bare_pdu(&c)).unwrap();
        i.read_exact(&mut status).unwrap();
    }
    drop(i);
    answering.join().unwrap();
    let summary = proxy.finish();
    assert_eq!(summary.commands, COMMANDS as u64);
    let mut completes = Vec::new();
    for e in TraceReader::open(&trace_path).unwrap() {
        if let Event::Complete(c) = e.unwrap() {
            completes.push(c);
        }
    }
    assert_eq!(completes.len(), COMMANDS);
    for (k, c) in completes.iter().enumerate() {
        assert_eq!(c.response, ServiceResponse::TaskComplete, "command {k}");
        let want = if k % 2 == 1 { 0x08 } else { 0x00 };
        assert_eq!((c.seq, c.status.0), (k as u64, want), "command {k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
