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
//! scripts/fetch-qemu-iscsi. Rounds alternate direct and proxied copies so
//! that drift in the machine's load hits both alike; the median of each is
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
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        // CPU seconds per copy: [direct, proxied] × (proxy, qemu-img, tgtd).
        let mut spent = [Cpu::default(); 2];
        let add = |to: &mut Cpu, a: Cpu, b: Cpu| {
            to.proxy += b.proxy - a.proxy;
            to.qemu += b.qemu - a.qemu;
            to.tgtd += b.tgtd - a.tgtd;
        };
        for _ in 0..rounds {
            let a = cpu(tgtd_pid);
            direct.push(convert(&src, tgtd.addr().port(), tgtd.iqn()));
            let b = cpu(tgtd_pid);
            proxied.push(convert(&src, port, tgtd.iqn()));
            let c = cpu(tgtd_pid);
            add(&mut spent[0], a, b);
            add(&mut spent[1], b, c);
        }
        let _ = stop_tx.send(());
        rt.block_on(proxy).unwrap().unwrap();
        let trace_len = std::fs::metadata(&trace_path).map(|m| m.len()).unwrap_or(0);
        let (d, p) = (median(direct), median(proxied));
        results.push((
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
    println!("qemu-img convert of {mib} MiB into tgtd, median of {rounds} alternating rounds");
    println!("| --payload | trace compression | direct MiB/s | through proxy MiB/s | ratio | trace bytes |");
    println!("|---|---|---|---|---|---|");
    for (c, z, d, p, len, _) in &results {
        println!("| {c:?} | {z:?} | {d:.0} | {p:.0} | {:.2} | {len} |", p / d);
    }
    println!();
    println!("CPU seconds per copy (mean), direct / through the proxy");
    println!("| --payload | trace compression | proxy | qemu-img | tgtd | total |");
    println!("|---|---|---|---|---|---|");
    for (c, z, _, _, _, [d, p]) in &results {
        println!(
            "| {c:?} | {z:?} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |",
            d[0],
            p[0],
            d[1],
            p[1],
            d[2],
            p[2],
            d.iter().sum::<f64>(),
            p.iter().sum::<f64>()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
