//! Throughput of `qemu-img convert` into tgtd, direct and through the
//! recording proxy, in the same run (the figures in docs/performance.md,
//! section "recorder").
//!
//! ```text
//! cargo run --release -p scuzz-recorder --example proxy_bench [SIZE_MIB] [ROUNDS] [MODES]
//! ```
//!
//! MODES is a comma-separated subset of `none,digest,full,full-raw`
//! (`full-raw`: full payloads, uncompressed trace); all four by default.
//! One mode at a time is what profiling the proxy wants.
//!
//! Needs tgtd (run as root) and QEMU 7.2's tools from
//! scripts/fetch-qemu-iscsi. Each round copies directly, through a plain
//! byte relay (two threads copying between the sockets, recording nothing:
//! what the extra TCP hop alone costs) and through the proxy, so that drift
//! in the machine's load hits all three alike; the median of each is
//! reported.

use recorder::proxy::session::PayloadCapture;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use trace::file::{Compression, TraceHeader, TraceWriter};

fn convert(src: &Path, port: u16, iqn: &str) -> f64 {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/qemu-iscsi/root");
    let url = format!("iscsi://127.0.0.1:{port}/{iqn}/1");
    let t = Instant::now();
    let out = Command::new(root.join("usr/bin/qemu-img"))
        .args(["convert", "-n", "-t", "writeback", "-f", "raw", "-O", "raw"])
        .arg(src)
        .arg(&url)
        .env(
            "QEMU_MODULE_DIR",
            root.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .output()
        .expect("qemu-img runs (scripts/fetch-qemu-iscsi)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) from a /proc stat line: the process's own
/// (fields 14, 15) or its waited-for children's (16, 17).
fn cpu_of(stat: &str, children: bool) -> f64 {
    // The command name may hold spaces: fields count from after its `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = if children { 13 } else { 11 };
    (f.get(at).unwrap_or(&0.0) + f.get(at + 1).unwrap_or(&0.0)) / 100.0
}

/// CPU seconds used so far by this process (the proxy), its reaped
/// children (qemu-img) and tgtd.
#[derive(Clone, Copy, Default)]
struct Cpu {
    proxy: f64,
    qemu: f64,
    tgtd: f64,
}

fn cpu(tgtd_pid: Option<u32>) -> Cpu {
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let tgtd = tgtd_pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .unwrap_or_default();
    Cpu {
        proxy: cpu_of(&own, false),
        qemu: cpu_of(&own, true),
        tgtd: cpu_of(&tgtd, false),
    }
}

/// The tgtd this process started: a child named tgtd.
fn tgtd_pid() -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
        let ppid = rest.split_whitespace().nth(1)?;
        (name == "tgtd" && ppid == me).then_some(pid)
    })
}

/// A relay that records nothing: per connection, one thread per direction
/// copying what arrives. The floor under any user-space proxy's cost.
fn plain_relay(target: std::net::SocketAddr) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    fn pump(mut from: TcpStream, mut to: TcpStream) {
        let mut buf = vec![0u8; 512 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for i in l.incoming().flatten() {
            let Ok(t) = TcpStream::connect(target) else {
                continue;
            };
            let _ = (i.set_nodelay(true), t.set_nodelay(true));
            let (Ok(i2), Ok(t2)) = (i.try_clone(), t.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || pump(i, t));
            std::thread::spawn(move || pump(t2, i2));
        }
    });
    port
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let modes: Vec<(PayloadCapture, Compression)> = args
        .get(3)
        .map_or("none,digest,full,full-raw", String::as_str)
        .split(',')
        .map(|m| match m {
            "none" => (PayloadCapture::None, Compression::ZSTD_DEFAULT),
            "digest" => (PayloadCapture::Digest, Compression::ZSTD_DEFAULT),
            "full" => (PayloadCapture::Full, Compression::ZSTD_DEFAULT),
            "full-raw" => (PayloadCapture::Full, Compression::None),
            o => panic!("unknown mode `{o}`: none, digest, full or full-raw"),
        })
        .collect();
    let tgtd = iscsi::testing::Tgtd::builder()
        .size(mib << 20)
        .start()
        .expect("tgtd starts (root, package tgt)");
    let dir = std::env::temp_dir().join(format!("scuzz-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src.raw");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..(mib << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&src, &data).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tgtd_pid = tgtd_pid();
    let relay_port = plain_relay(tgtd.addr());
    let mut results = Vec::new();
    for (capture, compression) in modes {
        let trace_path = dir.join("bench.sczt");
        let mut h = TraceHeader::new("proxy bench");
        h.payload_mode = capture.mode();
        let w = TraceWriter::create(&trace_path, &h, compression).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let target = tgtd.addr().to_string();
        let proxy = rt.spawn(async move {
            recorder::proxy::run(listener, target, capture, w, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let (mut direct, mut relayed, mut proxied) = (Vec::new(), Vec::new(), Vec::new());
        // CPU seconds per copy: [direct, plain relay, proxied] × (this
        // process: the relay or the proxy; qemu-img; tgtd).
        let mut spent = [Cpu::default(); 3];
        let add = |to: &mut Cpu, a: Cpu, b: Cpu| {
            to.proxy += b.proxy - a.proxy;
            to.qemu += b.qemu - a.qemu;
            to.tgtd += b.tgtd - a.tgtd;
        };
        for _ in 0..rounds {
            let a = cpu(tgtd_pid);
            direct.push(convert(&src, tgtd.addr().port(), tgtd.iqn()));
            let b = cpu(tgtd_pid);
            relayed.push(convert(&src, relay_port, tgtd.iqn()));
            let c = cpu(tgtd_pid);
            proxied.push(convert(&src, port, tgtd.iqn()));
            let d = cpu(tgtd_pid);
            add(&mut spent[0], a, b);
            add(&mut spent[1], b, c);
            add(&mut spent[2], c, d);
        }
        let _ = stop_tx.send(());
        rt.block_on(proxy).unwrap().unwrap();
        let trace_len = std::fs::metadata(&trace_path).map(|m| m.len()).unwrap_or(0);
        let (d, r, p) = (median(direct), median(relayed), median(proxied));
        results.push((
            mib as f64 / r,
            capture,
            compression,
            mib as f64 / d,
            mib as f64 / p,
            trace_len,
            spent.map(|c| {
                let r = rounds as f64;
                [c.proxy / r, c.qemu / r, c.tgtd / r]
            }),
        ));
    }
    println!("qemu-img convert of {mib} MiB into tgtd, median of {rounds} interleaved rounds");
    println!("| --payload | trace compression | direct MiB/s | plain relay MiB/s (ratio) | through proxy MiB/s | ratio | trace bytes |");
    println!("|---|---|---|---|---|---|---|");
    for (r, c, z, d, p, len, _) in &results {
        println!(
            "| {c:?} | {z:?} | {d:.0} | {r:.0} ({:.2}) | {p:.0} | {:.2} | {len} |",
            r / d,
            p / d
        );
    }
    println!();
    println!("CPU seconds per copy (mean): direct / plain relay / through the proxy");
    println!("| --payload | trace compression | relay or proxy | qemu-img | tgtd | total |");
    println!("|---|---|---|---|---|---|");
    for (_, c, z, _, _, _, spent) in &results {
        let col = |i: usize| {
            let v: Vec<String> = spent.iter().map(|x| format!("{:.3}", x[i])).collect();
            v.join(" / ")
        };
        let total: Vec<String> = spent
            .iter()
            .map(|x| format!("{:.3}", x.iter().sum::<f64>()))
            .collect();
        println!(
            "| {c:?} | {z:?} | {} | {} | {} | {} |",
            col(0),
            col(1),
            col(2),
            total.join(" / ")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
