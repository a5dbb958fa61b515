//! `iscsi-perf`'s workload with Scuzz's initiator: READ(10)s of a fixed
//! size at a fixed queue depth, sequential over the LUN, for a fixed time;
//! prints IOPS. `scripts/bench-initiator` runs it beside `iscsi-perf`.
//!
//! `cargo run --release -p scuzz-iscsi --example initiator_perf -- \
//!     iscsi://127.0.0.1:3260/iqn.../1 --qd 32 --blocks 8 --seconds 10`

use iscsi::initiator::{CommandRequest, IscsiUrl, Session};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: initiator_perf URL [--qd N] [--blocks N] [--seconds S] [--threads N]");
    std::process::exit(1)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let (mut qd, mut blocks, mut seconds, mut threads) = (1usize, 8u16, 10u64, 1usize);
    while let Some(a) = args.next() {
        let mut num = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--qd" => qd = num() as usize,
            "--blocks" => blocks = num() as u16,
            "--seconds" => seconds = num(),
            "--threads" => threads = num() as usize,
            _ if url.is_none() => url = Some(a),
            _ => usage(),
        }
    }
    let url: IscsiUrl = url.unwrap_or_else(|| usage()).parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let s = Session::login_url(&url).await.unwrap_or_else(|e| {
            eprintln!("login: {e}");
            std::process::exit(1)
        });
        // READ CAPACITY(10) for the LUN's size; TEST UNIT READY first takes
        // the unit attention a new nexus reports.
        let _ = s.command(&CommandRequest::no_data(url.lun, &[0; 6])).await;
        let cap = s
            .command(&CommandRequest::read(
                url.lun,
                &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                8,
            ))
            .await
            .expect("READ CAPACITY");
        let last = u32::from_be_bytes(cap.data_in[0..4].try_into().expect("8 bytes"));
        let bs = u32::from_be_bytes(cap.data_in[4..8].try_into().expect("8 bytes"));
        let span = (u64::from(last) + 1) / u64::from(blocks) * u64::from(blocks);
        let done = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..qd {
            let (s, done, next, stop) = (s.clone(), done.clone(), next.clone(), stop.clone());
            let lun = url.lun;
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let lba = ((i * u64::from(blocks)) % span) as u32;
                    let l = lba.to_be_bytes();
                    let b = blocks.to_be_bytes();
                    let cdb = [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0];
                    let r = s
                        .command(&CommandRequest::read(lun, &cdb, u32::from(blocks) * bs))
                        .await
                        .expect("READ(10)");
                    assert_eq!(r.status, 0, "READ(10) status");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.expect("worker");
        }
        let secs = start.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "scuzz-initiator qd={qd} bs={} iops={:.0} MB/s={:.1}",
            u32::from(blocks) * bs,
            n as f64 / secs,
            n as f64 * f64::from(u32::from(blocks) * bs) / secs / 1e6
        );
        let _ = s.logout().await;
    });
}
