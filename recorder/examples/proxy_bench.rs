//! Throughput of `qemu-img convert` into tgtd, direct and through the
//! recording proxy, in the same run (the figures in docs/performance.md,
//! section "recorder").
//!
//! ```text
//! cargo run -p scuzz-recorder --example proxy_bench [SIZE_MIB] [ROUNDS]
//! ```
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
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
    let mut results = Vec::new();
    for (capture, compression) in [
        (PayloadCapture::None, Compression::ZSTD_DEFAULT),
        (PayloadCapture::Digest, Compression::ZSTD_DEFAULT),
        (PayloadCapture::Full, Compression::ZSTD_DEFAULT),
        (PayloadCapture::Full, Compression::None),
    ] {
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
        for _ in 0..rounds {
            direct.push(convert(&src, tgtd.addr().port(), tgtd.iqn()));
            proxied.push(convert(&src, port, tgtd.iqn()));
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
        ));
    }
    println!("qemu-img convert of {mib} MiB into tgtd, median of {rounds} alternating rounds");
    println!("| --payload | trace compression | direct MiB/s | through proxy MiB/s | ratio | trace bytes |");
    println!("|---|---|---|---|---|---|");
    for (c, z, d, p, len) in results {
        println!("| {c:?} | {z:?} | {d:.0} | {p:.0} | {:.2} | {len} |", p / d);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
