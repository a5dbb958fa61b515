//! Trace builders shared by the test modules.

use recorder::synth::cp::{synth_cp, CpParams};
use recorder::synth::payload::PayloadKind;
use recorder::synth::Machine;
use replayer::backend::emulator::EmulatorSpec;
use replayer::options::ReplayOptions;
use replayer::runner::{RunSpec, Target};
use replayer::MemoryTrace;
use trace::{Event, HbaPreset};

/// The report's machine: 16 GiB, 128 MiB free below 4 GiB, 16 KiB pages.
pub fn machine(hba: HbaPreset, payload: PayloadKind) -> Machine {
    Machine {
        hba,
        mem: 16 << 30,
        low_free: 128 << 20,
        seed: 7,
        payload,
        ..Machine::default()
    }
}

/// A synthesized `cp` of `size` bytes, in memory.
pub fn cp(hba: HbaPreset, payload: PayloadKind, size: u64) -> MemoryTrace {
    let m = machine(hba, payload);
    let p = CpParams::new(m.clone(), size);
    let mut events = Vec::new();
    let summary = synth_cp(&p, &mut |e| {
        events.push(e);
        Ok(())
    })
    .unwrap();
    MemoryTrace {
        name: format!("cp-{size}"),
        header: Some(m.header("cp", summary.capacity_blocks)),
        events,
    }
}

/// Sequence number of the last SYNCHRONIZE CACHE.
pub fn last_flush(t: &MemoryTrace) -> u64 {
    t.events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Submit(s) if matches!(s.cdb.first(), Some(0x35 | 0x91)) => Some(s.seq),
            _ => None,
        })
        .expect("cp ends with a flush")
}

/// A run to the emulator with `bugs`, verifying.
pub fn emulator_run(bugs: &[&str], power_loss_at: Vec<u64>) -> RunSpec {
    RunSpec {
        trace: "unused.sczt".into(),
        target: Target::Emulator(EmulatorSpec {
            bugs: bugs.iter().map(|b| b.to_string()).collect(),
            seed: 1,
            ..EmulatorSpec::default()
        }),
        options: ReplayOptions {
            verify: true,
            power_loss_at,
            ..ReplayOptions::default()
        },
        report: None,
        baseline: None,
        limits: Vec::new(),
        regression_floor_ns: 0,
    }
}

/// Runs `spec` on `source` on a fresh current-thread runtime.
pub fn run(spec: &RunSpec, source: &MemoryTrace) -> replayer::runner::RunReport {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(replayer::runner::run_source(spec, source))
        .unwrap()
}
