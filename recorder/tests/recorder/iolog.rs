//! fio iolog: import → export → import is the identity, and fio itself
//! replays the export.

use recorder::fio_iolog::{export_fio_iolog, import_fio_iolog};
use recorder::synth::fio::{synth_fio, FioParams, FioRw};
use recorder::synth::Machine;
use std::convert::Infallible;
use std::process::Command;
use trace::{Event, HbaPreset};

fn import(text: &str) -> Vec<Event> {
    let mut v = Vec::new();
    let s = import_fio_iolog(text.as_bytes(), 512, &mut |e| {
        v.push(e);
        Ok(())
    })
    .unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    v
}

fn export(ev: &[Event], file: &str) -> String {
    let mut out = Vec::new();
    export_fio_iolog(
        ev.iter().cloned().map(Ok::<_, Infallible>),
        512,
        file,
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

fn workload() -> Vec<Event> {
    let m = Machine {
        hba: HbaPreset::lsi3108(),
        ..Machine::default()
    };
    let mut p = FioParams::new(m, FioRw::Rw, 64 << 10, 4 << 20, true);
    p.verify = true;
    p.iodepth = 4;
    let mut v = Vec::new();
    synth_fio(&p, &mut |e| {
        v.push(e);
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn import_export_import_round_trips() {
    let text = export(&workload(), "/dev/shm/scuzz-roundtrip");
    assert!(text.starts_with("fio version 3 iolog\n"));
    let first = import(&text);
    let again = export(&first, "/dev/shm/scuzz-roundtrip");
    assert_eq!(text, again);
    assert_eq!(first, import(&again));
    // Reads, writes and the end_fsync all made it.
    assert!(text.contains(" read ") && text.contains(" write ") && text.contains(" sync 0 0"));
    // Two files (LUNs) keep their numbering through the round trip.
    let two = "fio version 3 iolog\n0 a add\n0 b add\n0 a open\n0 b open\n5 b write 0 4096\n9 a read 512 512\n12 a close\n12 b close\n";
    let ev = import(two);
    assert_eq!(ev, import(&export(&ev, "x")));
}

#[test]
fn fio_replays_the_export() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("iolog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("replay.dat");
    // The synthesized fio job's file spans 1 MiB + 4 MiB; fio reads there.
    std::fs::File::create(&target)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let log = dir.join("replay.iolog");
    let text = export(&workload(), target.to_str().unwrap());
    std::fs::write(&log, &text).unwrap();
    let out = Command::new("fio")
        .arg("--name=scuzz-replay")
        .arg(format!("--read_iolog={}", log.display()))
        .args(["--ioengine=psync", "--output-format=json"])
        .output()
        .expect("fio is installed (scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fio failed: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("bad iolog"), "{stderr}");
    let json = String::from_utf8_lossy(&out.stdout);
    // fio's JSON: the job read and wrote what the log says.
    let reads = text.lines().filter(|l| l.contains(" read ")).count() as u64;
    let writes = text.lines().filter(|l| l.contains(" write ")).count() as u64;
    let total_ios = |dir: &str| -> u64 {
        let at = json.find(&format!("\"{dir}\" : {{")).unwrap();
        let tail = &json[at..];
        let k = tail.find("\"total_ios\" : ").unwrap() + "\"total_ios\" : ".len();
        tail[k..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(total_ios("read"), reads);
    assert_eq!(total_ios("write"), writes);
    std::fs::remove_dir_all(&dir).ok();
}
