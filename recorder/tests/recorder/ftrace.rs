//! ftrace import on the checked-in sample in the kernel's exact format.

use recorder::ftrace::import_ftrace;
use std::io::BufReader;
use trace::{Direction, Event, ScsiStatus, ServiceResponse};

fn sample() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/samples/ftrace-sample.txt");
    std::fs::read(p).expect("corpus/samples/ftrace-sample.txt")
}

#[test]
fn the_sample_imports_every_command_with_its_outcome() {
    let mut ev = Vec::new();
    let s = import_ftrace(BufReader::new(&sample()[..]), 512, &mut |e| {
        ev.push(e);
        Ok(())
    })
    .unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.commands, 8);
    let submits: Vec<_> = ev
        .iter()
        .filter_map(|e| {
            if let Event::Submit(s) = e {
                Some(s)
            } else {
                None
            }
        })
        .collect();
    let done = |seq: u64| {
        ev.iter()
            .find_map(|e| match e {
                Event::Complete(c) if c.seq == seq => Some(c.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no completion for seq {seq}"))
    };
    let ops: Vec<u8> = submits.iter().map(|s| s.cdb[0]).collect();
    assert_eq!(ops, vec![0x12, 0x2a, 0x2a, 0x35, 0x35, 0x88, 0x28, 0x28]);
    // Times are relative to the first event, in ns.
    assert_eq!(submits[0].time_ns, 0);
    assert_eq!(submits[1].time_ns, 9_462_000);
    // Transfer lengths come from the CDB and the block size.
    assert_eq!(
        (submits[0].dir, submits[0].xfer_len),
        (Direction::FromDevice, 36)
    );
    assert_eq!(
        (submits[2].dir, submits[2].xfer_len, submits[2].tag),
        (Direction::ToDevice, 1024 * 512, 18)
    );
    // The two WRITEs complete out of order and still match by driver_tag.
    assert_eq!(done(2).time_ns, 11_336_000);
    assert_eq!(done(1).bytes_transferred, 4096);
    // The first SYNCHRONIZE CACHE was refused by queuecommand and retried.
    assert_eq!(done(3).response, ServiceResponse::DeliveryFailure);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Note { text, .. } if text.contains("rtn=4182"))));
    assert_eq!(
        (done(4).response, done(4).status),
        (ServiceResponse::TaskComplete, ScsiStatus::GOOD)
    );
    // CHECK CONDITION: LBA OUT OF RANGE, sense rebuilt from key/asc/ascq.
    let c = done(6);
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    assert_eq!((c.sense[2], c.sense[12], c.sense[13]), (0x05, 0x21, 0x00));
    assert_eq!(c.residual, 4096);
    // Still in flight when tracing stopped.
    assert_eq!(done(7).response, ServiceResponse::Incomplete);
}

#[test]
fn malformed_lines_are_reported_with_their_number_and_the_rest_imports() {
    let text = String::from_utf8(sample()).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Line 14 (the INQUIRY's completion): cut mid-field, as a torn copy would.
    lines[13].truncate(90);
    // Line 16: a raw CDB that is not hex.
    lines[15] = lines[15].replace("raw=2a 00", "raw=zz 00");
    let mut n = 0;
    let s = import_ftrace(lines.join("\n").as_bytes(), 512, &mut |e| {
        n += matches!(e, Event::Submit(_)) as u32;
        Ok(())
    })
    .unwrap();
    let at: Vec<u64> = s.warnings.iter().map(|w| w.line).collect();
    assert_eq!(at, vec![14, 16], "{:?}", s.warnings);
    assert_eq!(n, 7);
}
