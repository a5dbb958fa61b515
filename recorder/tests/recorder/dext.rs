//! The capture shim compiled from C, driven like a DEXT drives it, and its
//! ring converted into a trace.

use recorder::dext::import_ring;
use std::path::{Path, PathBuf};
use std::process::Command;
use trace::{Direction, Event, ScsiStatus, Segment, ServiceResponse, TaskAttr};

fn dext_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dext")
}

/// The C compiler `cc` would use for this target, with the shim's warning
/// flags.
fn c_compiler() -> Command {
    let tool = cc::Build::new()
        .target(env!("SCUZZ_BUILD_TARGET"))
        .host(env!("SCUZZ_BUILD_HOST"))
        .opt_level(1)
        .cargo_metadata(false)
        .get_compiler();
    let mut cmd = tool.to_command();
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]);
    cmd
}

fn run(mut cmd: Command) {
    let out = cmd.output().expect("compiler runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles and runs the driver once per test binary (tests run in
/// parallel; one executable, one pair of dumps).
fn build_and_run_driver() -> (Vec<u8>, Vec<u8>) {
    static DUMPS: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    DUMPS.get_or_init(compile_and_run).clone()
}

fn compile_and_run() -> (Vec<u8>, Vec<u8>) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dext-shim");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("dext_driver");
    let mut cc = c_compiler();
    cc.arg("-I")
        .arg(dext_dir())
        .arg(dext_dir().join("scuzz_capture.c"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recorder/dext_driver.c"))
        .arg("-o")
        .arg(&exe);
    run(cc);
    let (a, b) = (dir.join("ring_a.bin"), dir.join("ring_b.bin"));
    let mut drv = Command::new(&exe);
    drv.arg(&a).arg(&b);
    run(drv);
    (std::fs::read(a).unwrap(), std::fs::read(b).unwrap())
}

#[test]
fn header_compiles_cleanly_under_strict_c99_with_gcc() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dext-shim");
    std::fs::create_dir_all(&dir).unwrap();
    let tu = dir.join("include_only.c");
    // Written per process so a parallel run of this test cannot race.
    let tu = tu.with_file_name(format!("include_only_{}.c", std::process::id()));
    std::fs::write(
        &tu,
        "#include \"scuzz_capture.h\"\nint main(void) { return SCUZZ_KIND_SUBMIT == 1 ? 0 : 1; }\n",
    )
    .unwrap();
    for src in [tu, dext_dir().join("scuzz_capture.c")] {
        let mut gcc = Command::new("gcc");
        gcc.args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-std=c99",
            "-pedantic",
            "-fsyntax-only",
            "-I",
        ])
        .arg(dext_dir())
        .arg(&src);
        run(gcc);
    }
}

#[test]
fn single_and_bundled_paths_with_dext_built_sg_lists_convert() {
    let (a, _) = build_and_run_driver();
    let imp = import_ring(&a).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    assert_eq!(imp.header.slot_count, 64);
    let submits: Vec<_> = imp
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Submit(s) => Some(s),
            _ => None,
        })
        .collect();
    let completes: Vec<_> = imp
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Complete(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(submits.len(), 6);
    assert_eq!(completes.len(), 6);

    // Single task: the CDB, fields and the SG list the DEXT built.
    let w = submits[0];
    assert_eq!(w.cdb, vec![0x2a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]);
    assert_eq!(
        (w.dir, w.xfer_len, w.tag, w.attr),
        (Direction::ToDevice, 4096, 7, TaskAttr::Simple)
    );
    assert_eq!(w.time_ns, 1000);
    assert_eq!(
        w.sg,
        vec![
            Segment::new(0x1000_0000, 1024),
            Segment::new(0x1000_2000, 2048),
            Segment::new(0x1_ffff_f000, 1024)
        ]
    );
    assert_eq!(
        (completes[0].seq, completes[0].status, completes[0].residual),
        (0, ScsiStatus::GOOD, 0)
    );

    // 20 segments span two SG records; CHECK CONDITION keeps its sense.
    let r = submits[1];
    assert_eq!(
        (r.nexus.lun, r.attr, r.dir),
        (3, TaskAttr::Ordered, Direction::FromDevice)
    );
    assert_eq!(r.sg.len(), 20);
    assert_eq!(r.sg[19], Segment::new(0x2000_0000 + 19 * 0x2000, 1024));
    let c = completes[1];
    assert_eq!(
        (c.status, c.bytes_transferred, c.residual),
        (ScsiStatus::CHECK_CONDITION, 0, 20480)
    );
    assert_eq!(c.sense.len(), 18);
    assert_eq!(c.sense[12], 0x11);

    // Bundled: three tasks with their SG lists, bundle markers as notes.
    for (i, s) in submits[2..5].iter().enumerate() {
        assert_eq!(s.tag, 20 + i as u64);
        assert_eq!(s.sg.len(), 2);
        assert_eq!(s.sg[0].addr.0, 0x3000_0000 + i as u64 * 0x10000);
    }
    let notes: Vec<&str> = imp
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Note { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("UserProcessBundledParallelTasks with 3 tasks, slots [4, 5, 9]")),
        "{notes:?}"
    );
    assert!(notes
        .iter()
        .any(|n| n.contains("BundledParallelTaskCompletion")));
    assert!(notes
        .iter()
        .any(|n| n.contains("seq 4 arrived bundled, slot 9")));

    // The flush still in flight at the dump: no SG list (no data), incomplete.
    assert_eq!(submits[5].cdb[0], 0x35);
    assert!(submits[5].sg.is_empty());
    assert_eq!(completes[5].response, ServiceResponse::Incomplete);
    assert_eq!(completes[5].seq, 5);
}

#[test]
fn wrapped_ring_keeps_what_survived_and_reports_the_orphan() {
    let (_, b) = build_and_run_driver();
    let imp = import_ring(&b).unwrap();
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    // 1 + 20 * 2 + 1 = 42 records through 16 slots.
    assert_eq!(imp.header.write_index, 42);
    assert_eq!(imp.header.wrap_count, 2);
    assert_eq!(imp.header.lost_records(), 26);
    let mut open = std::collections::HashSet::new();
    let mut orphan = None;
    let mut first_note = None;
    for e in &imp.events {
        match e {
            Event::Submit(s) => assert!(open.insert(s.seq)),
            Event::Complete(c) => {
                // Every completion in the trace closes a submit the trace has.
                assert!(open.remove(&c.seq), "completion of unknown seq {}", c.seq);
                assert_eq!(c.response, ServiceResponse::TaskComplete);
            }
            Event::Note { text, .. } if text.contains("orphan") => orphan = Some(text.clone()),
            Event::Note { text, .. } => first_note = first_note.or(Some(text.clone())),
            _ => {}
        }
    }
    assert!(open.is_empty());
    let orphan = orphan.expect("orphan completion kept as a note");
    assert!(
        orphan.contains("0x999") && orphan.contains("512 bytes"),
        "{orphan}"
    );
    assert!(first_note.unwrap().contains("26 records were overwritten"));
}

#[test]
fn a_slot_torn_during_the_dump_is_skipped_not_misread() {
    let (a, _) = build_and_run_driver();
    let mut torn = a.clone();
    // Zero the stamp of slot 0 (the first WRITE's submit), as if the DEXT
    // were rewriting it while the ring was copied out.
    torn[64..72].fill(0);
    let imp = import_ring(&torn).unwrap();
    assert_eq!(imp.warnings.len(), 1);
    assert!(imp.warnings[0].contains("slot 0"));
    // Its SG list and completion now belong to an unknown task: notes.
    let notes = imp
        .events
        .iter()
        .filter(|e| matches!(e, Event::Note { text, .. } if text.contains("0x101")))
        .count();
    assert_eq!(notes, 2);
}
