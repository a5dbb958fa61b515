//! Arbitrary events (garbage CDBs, wild lengths and LBAs, completions for
//! commands never submitted) end a replay with a result, never a panic.

use arbitrary::{Arbitrary, Unstructured};
use replayer::backend::emulator::{EmulatorBackend, EmulatorSpec};
use replayer::options::{Order, ReplayOptions};
use replayer::{Engine, MemoryTrace};
use trace::file::TraceHeader;
use trace::Event;

#[test]
fn arbitrary_events_never_panic_the_engine() {
    let mut seed = 0x5eed_u64;
    let (mut submits, mut ran) = (0usize, 0u64);
    for case in 0..300 {
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut u = Unstructured::new(&bytes);
        let mut events: Vec<Event> = (0..24)
            .filter_map(|_| Event::arbitrary(&mut u).ok())
            .collect();
        // Half of the cases keep transfer lengths and LUNs within what the
        // engine accepts, so commands reach the emulator and the oracle, not
        // only the input checks (a LUN the device lacks ends the run).
        for e in events.iter_mut() {
            if let Event::Submit(s) = e {
                if case % 2 == 0 {
                    s.xfer_len %= 1 << 16;
                    s.nexus.lun = 0;
                }
                submits += 1;
            }
        }
        let mut h = TraceHeader::new("hostile");
        h.block_size = 512;
        h.capacity_blocks = 4096;
        let t = MemoryTrace {
            name: format!("case {case}"),
            header: Some(h),
            events,
        };
        let backend = EmulatorBackend::new(&EmulatorSpec::default(), t.header.as_ref()).unwrap();
        let order = [Order::Strict, Order::Overlap, Order::Free][case % 3];
        let opts = ReplayOptions {
            qd: Some(4),
            order,
            verify: true,
            ..ReplayOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Ok or a typed error: both are fine, a panic fails the test.
        let r = rt.block_on(async {
            let engine = Engine::new(&backend, &t, opts, None)?;
            engine.run(&t).await
        });
        if let Ok(r) = r {
            ran += r.summary.commands;
        }
    }
    // The cases exercised the engine, not only its input checks.
    assert!(
        submits > 300 && ran > 100,
        "{submits} submits, {ran} commands ran"
    );
}
