//! The recorder's subcommands run as a user runs them: `scuzz synth`,
//! `scuzz import`, `scuzz export`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use trace::file::TraceReader;
use trace::{Cdb, Event};

fn scuzz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args(args)
        .output()
        .expect("scuzz runs")
}

fn ok(args: &[&str]) -> String {
    let out = scuzz(args);
    assert!(
        out.status.success(),
        "scuzz {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-recorder-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn events(path: &Path) -> Vec<Event> {
    TraceReader::open(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synth_cp_writes_a_trace_within_the_presets_splitter() {
    let out = tmp("cp.sczt");
    let summary = ok(&[
        "synth",
        "cp",
        "--size",
        "64M",
        "--hba",
        "lsi3108",
        "--page-size",
        "16K",
        "--mem",
        "16G",
        "--low-free",
        "32M",
        "--seed",
        "3",
        "-o",
        s(&out),
    ]);
    assert!(summary.contains("1 flushes"), "{summary}");
    let r = TraceReader::open(&out).unwrap();
    assert_eq!(
        r.header().labels.get("completions").map(String::as_str),
        Some("synthesized")
    );
    assert_eq!(r.header().hba.as_ref().unwrap().name, "lsi3108");
    let mut high = false;
    for e in r {
        if let Event::Submit(sub) = e.unwrap() {
            if let Ok(Cdb::Write(_)) = Cdb::parse(&sub.cdb) {
                assert!(sub.xfer_len <= 512 << 10 && sub.sg.len() <= 129);
                high |= sub.sg.iter().any(|g| g.addr.0 >= 1 << 32);
            }
        }
    }
    assert!(
        high,
        "past 32 MiB of low memory, pages come from above 4 GiB"
    );

    let unsplit = tmp("cp-unsplit.sczt");
    ok(&[
        "synth",
        "cp",
        "--size",
        "16M",
        "--hba",
        "lsi3108",
        "--os-max-transfer",
        "1M",
        "-o",
        s(&unsplit),
    ]);
    let big = events(&unsplit)
        .iter()
        .any(|e| matches!(e, Event::Submit(s) if s.xfer_len > 512 << 10));
    assert!(big);
}

#[test]
fn synth_fio_direct_and_buffered() {
    for direct in ["0", "1"] {
        let out = tmp(&format!("fio{direct}.sczt"));
        ok(&[
            "synth",
            "fio",
            "--rw",
            "write",
            "--bs",
            "1M",
            "--size",
            "16M",
            "--direct",
            direct,
            "--verify",
            "--iodepth",
            "4",
            "--hba",
            "lsi3108",
            "-o",
            s(&out),
        ]);
        let ev = events(&out);
        let reads = ev
            .iter()
            .filter(|e| matches!(e, Event::Submit(s) if s.cdb[0] == 0x28))
            .count();
        assert_eq!(
            reads, 32,
            "direct={direct}: 16 MiB verified in 512 KiB reads"
        );
    }
}

#[test]
fn bad_synth_flags_fail_naming_the_flag_and_leave_no_trace() {
    let out = tmp("bad.sczt");
    let r = scuzz(&["synth", "cp", "--size", "1000", "-o", s(&out)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--size"));
    assert!(!out.exists());
    let r = scuzz(&[
        "synth",
        "cp",
        "--size",
        "1M",
        "--hba",
        "lsi9999",
        "-o",
        s(&out),
    ]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("lsi3108"));
}

#[test]
fn import_ftrace_sample() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/samples/ftrace-sample.txt");
    let out = tmp("ftrace.sczt");
    let msg = ok(&["import", "ftrace", s(&sample), "-o", s(&out)]);
    assert!(msg.contains("8 commands"), "{msg}");
    assert_eq!(
        events(&out)
            .iter()
            .filter(|e| matches!(e, Event::Complete(_)))
            .count(),
        8
    );
}

#[test]
fn fio_iolog_import_export_round_trip_with_a_malformed_line() {
    let log = tmp("in.iolog");
    std::fs::write(
        &log,
        "fio version 3 iolog\n0 /dev/sdb add\n0 /dev/sdb open\n10 /dev/sdb write 0 65536\n\
         20 /dev/sdb write 65536 oops\n30 /dev/sdb read 0 65536\n40 /dev/sdb sync 0 0\n50 /dev/sdb trim 1048576 4096\n60 /dev/sdb close\n",
    )
    .unwrap();
    let t1 = tmp("a.sczt");
    let r = scuzz(&["import", "fio-iolog", s(&log), "-o", s(&t1)]);
    assert!(r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("line 5:"), "{err}");
    let back = tmp("back.iolog");
    ok(&[
        "export",
        "fio-iolog",
        s(&t1),
        "--file",
        "/dev/sdb",
        "-o",
        s(&back),
    ]);
    let text = std::fs::read_to_string(&back).unwrap();
    assert_eq!(
        text,
        "fio version 3 iolog\n0 /dev/sdb add\n0 /dev/sdb open\n10 /dev/sdb write 0 65536\n30 /dev/sdb read 0 65536\n\
         40 /dev/sdb sync 0 0\n50 /dev/sdb trim 1048576 4096\n50 /dev/sdb close\n"
    );
    let t2 = tmp("b.sczt");
    ok(&["import", "fio-iolog", s(&back), "-o", s(&t2)]);
    assert_eq!(events(&t1), events(&t2));
}

/// A ring written by hand from the layout in scuzz_capture.h: one READ(10)
/// submit with a two-entry SG list and its completion.
fn hand_made_ring() -> Vec<u8> {
    let slots = 4usize;
    let mut r = vec![0u8; 64 + slots * 256];
    r[..4].copy_from_slice(b"SZCR");
    r[4..6].copy_from_slice(&1u16.to_le_bytes());
    r[6..8].copy_from_slice(&64u16.to_le_bytes());
    r[8..12].copy_from_slice(&256u32.to_le_bytes());
    r[12..16].copy_from_slice(&(slots as u32).to_le_bytes());
    r[16..24].copy_from_slice(&3u64.to_le_bytes());
    let slot = |r: &mut Vec<u8>, i: usize, kind: u8, time: u64| -> usize {
        let o = 64 + i * 256;
        r[o..o + 8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        r[o + 8] = kind;
        r[o + 16..o + 24].copy_from_slice(&0x55u64.to_le_bytes());
        r[o + 24..o + 32].copy_from_slice(&time.to_le_bytes());
        o
    };
    let o = slot(&mut r, 0, 1, 1000);
    r[o + 56..o + 64].copy_from_slice(&4096u64.to_le_bytes());
    r[o + 76] = 10;
    r[o + 77] = 2;
    r[o + 80..o + 90].copy_from_slice(&[0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0]);
    let o = slot(&mut r, 1, 2, 1100);
    r[o + 32..o + 36].copy_from_slice(&2u32.to_le_bytes());
    r[o + 40..o + 44].copy_from_slice(&2u32.to_le_bytes());
    for (k, addr) in [0x1_0000_0000u64, 0x2000].iter().enumerate() {
        r[o + 48 + 16 * k..o + 56 + 16 * k].copy_from_slice(&addr.to_le_bytes());
        r[o + 56 + 16 * k..o + 60 + 16 * k].copy_from_slice(&2048u32.to_le_bytes());
    }
    let o = slot(&mut r, 2, 3, 9000);
    r[o + 32..o + 40].copy_from_slice(&4096u64.to_le_bytes());
    r[o + 41] = 2;
    r
}

#[test]
fn import_dext_ring_dump() {
    let ring = tmp("ring.bin");
    std::fs::write(&ring, hand_made_ring()).unwrap();
    let out = tmp("dext.sczt");
    let msg = ok(&["import", "dext", s(&ring), "-o", s(&out)]);
    assert!(msg.contains("1 commands"), "{msg}");
    let ev = events(&out);
    let Event::Submit(sub) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(sub.sg.len(), 2);
    assert_eq!(sub.sg[0].addr.0, 0x1_0000_0000);
    assert!(
        matches!(&ev[1], Event::Complete(c) if c.bytes_transferred == 4096 && c.time_ns == 9000)
    );
    // Not a ring: a clear error, exit code 1.
    std::fs::write(&ring, b"nope").unwrap();
    let r = scuzz(&["import", "dext", s(&ring), "-o", s(&out)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("shorter than the 64-byte header"));
}

#[test]
fn corpus_seeds_regenerate_from_their_commands() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/seeds/README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let mut checked = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("scuzz synth"))
    {
        let cols: Vec<&str> = line
            .split('|')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        let (file, cmd) = (cols[1], cols[2]);
        let seed = readme.with_file_name(file);
        let fresh = tmp(file);
        let mut args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        args.extend(["-o", s(&fresh)]);
        ok(&args);
        assert_eq!(
            events(&seed),
            events(&fresh),
            "{file} differs from `{cmd}`: regenerate it"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// `scuzz record` between QEMU and tgtd, stopped with SIGINT as a user's
/// Ctrl-C would: the trace is finished and holds QEMU's commands. Needs tgtd
/// and QEMU 7.2's tools (scripts/test provides them).
#[test]
fn record_proxies_qemu_into_tgtd_and_ctrl_c_finishes_the_trace() {
    assert!(
        iscsi::testing::Tgtd::available(),
        "tgtd is not usable: install `tgt` and run as root"
    );
    common::qemu_root();
    let t = iscsi::testing::Tgtd::builder()
        .size(8 << 20)
        .start()
        .unwrap();
    let out = tmp("record.sczt");
    let rec = common::Record::start(&t.addr().to_string(), "digest", &out);
    let src = tmp("record-src.raw");
    std::fs::write(&src, vec![0x5a; 4 << 20]).unwrap();
    common::qemu_copy_in(
        &src,
        &format!("iscsi://127.0.0.1:{}/{}/1", rec.port, t.iqn()),
    );
    let rest = rec.interrupt();
    assert!(rest.iter().any(|l| l.contains("commands")), "{rest:?}");
    let r = TraceReader::open(&out).unwrap();
    let ev: Vec<Event> = r.collect::<Result<_, _>>().unwrap();
    let writes = ev
        .iter()
        .filter(|e| matches!(e, Event::Submit(s) if s.cdb[0] == 0x2a || s.cdb[0] == 0x8a))
        .count();
    assert!(writes > 0);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Submit(s) if s.cdb[0] == 0x35 || s.cdb[0] == 0x91)));
    // `scuzz stats` reads it and sees every command completed.
    let stats = ok(&["stats", s(&out)]);
    assert!(stats.contains("incomplete commands: 0"), "{stats}");
    assert!(stats.contains("SYNCHRONIZE CACHE"), "{stats}");
}
