//! The `scuzz` binary, run as a user runs it.
//!
//! One integration-test binary for the CLI; each subcommand's tests are a
//! module here.

mod show_stats {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use trace::file::{Compression, PayloadMode, TraceHeader, TraceWriter};
    use trace::{
        Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
        TaskAttr,
    };

    const QUICKSTART: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/corpus/samples/quickstart.sczt"
    );

    fn scuzz(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_scuzz"))
            .args(args)
            .output()
            .expect("run scuzz")
    }

    fn stdout(o: &Output) -> String {
        String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
    }

    /// A scratch directory unique to this test process and test, removed
    /// when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("scuzz-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    #[test]
    fn stats_summarises_the_quickstart_sample() {
        let o = scuzz(&["stats", QUICKSTART]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        for want in [
            "events: 625 (312 submits, 312 completes",
            "WRITE(10)",
            "SYNCHRONIZE CACHE(16)",
            "flushes: 2 SYNCHRONIZE CACHE",
            "status: CHECK CONDITION 2, GOOD 310",
            "queue depth: max",
            "highest DMA address: 0x1_",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn stats_json_parses_and_agrees_with_the_sample() {
        let o = scuzz(&["stats", "--json", QUICKSTART]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
        assert_eq!(v["complete"], true);
        assert_eq!(v["header"]["block_size"], 4096);
        let s = &v["stats"];
        assert_eq!(s["events"]["submits"], 312);
        assert_eq!(s["flushes"]["count"], 2);
        assert_eq!(s["incomplete"], 0);
        assert!(s["sg"]["segments_above_4g"].as_u64().unwrap() > 0);
        assert!(
            s["latency"]["p99_ns"].as_u64().unwrap() >= s["latency"]["p50_ns"].as_u64().unwrap()
        );
        let writes = s["opcodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "WRITE(10)")
            .unwrap();
        assert_eq!(writes["opcode"], 0x2a);
    }

    #[test]
    fn show_prints_one_line_per_command_and_the_markers() {
        let o = scuzz(&["show", QUICKSTART]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let commands: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(commands.len(), 312);
        // Submission order, although completions arrive out of order.
        for (i, l) in commands.iter().enumerate() {
            assert!(l.starts_with(&format!("#{i} ")), "line {i}: {l}");
        }
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with("--") && l.contains("NOTE"))
                .count(),
            1
        );
        let first = commands[0];
        assert!(
            first.starts_with("#0  +0.000001  0:0  TEST UNIT READY"),
            "{first}"
        );
        assert!(
            first.contains("CHECK CONDITION UNIT ATTENTION 29/00"),
            "{first}"
        );
        assert!(first.contains("lat="), "{first}");
        assert!(
            commands
                .iter()
                .any(|l| l.contains("WRITE(16)") && l.contains(" FUA") && l.contains("sg=")),
            "no FUA write line"
        );
    }

    #[test]
    fn show_json_is_one_object_per_line() {
        let o = scuzz(&["show", "--json", QUICKSTART]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut commands = 0;
        for line in stdout(&o).lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect(line);
            if v["type"] == "command" {
                commands += 1;
                assert!(v["latency_ns"].is_u64(), "{line}");
                assert!(v["cdb"].is_string(), "{line}");
            }
        }
        assert_eq!(commands, 312);
    }

    #[test]
    fn show_filters_by_opcode_name_lba_and_status() {
        let lines = |args: &[&str]| -> Vec<String> {
            let mut a = vec!["show", QUICKSTART];
            a.extend_from_slice(args);
            let o = scuzz(&a);
            assert!(o.status.success(), "{}", stderr(&o));
            stdout(&o)
                .lines()
                .filter(|l| l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        let syncs = lines(&["--filter", "opcode=0x35,0x91"]);
        assert_eq!(syncs.len(), 2);
        assert!(syncs.iter().all(|l| l.contains("SYNCHRONIZE CACHE")));
        let w = lines(&["--filter", "name=WRITE(10)", "--filter", "lba=2048..2112"]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("lba=2048") && w[1].contains("lba=2080"),
            "{w:?}"
        );
        let checks = lines(&["--filter", "status=check"]);
        assert_eq!(checks.len(), 2);
        let o = scuzz(&["show", QUICKSTART, "--filter", "colour=red"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("unknown filter key"), "{}", stderr(&o));
    }

    #[test]
    fn a_missing_file_fails_naming_it() {
        let dir = scratch("missing");
        let missing = dir.join("nope.sczt");
        for cmd in ["show", "stats"] {
            let o = scuzz(&[cmd, missing.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(1), "{cmd}");
            let err = stderr(&o);
            assert!(
                err.contains(&*missing.to_string_lossy()) && err.contains("cannot open"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_file_that_is_not_a_trace_fails_naming_it() {
        let dir = scratch("garbage");
        let path = dir.join("notes.sczt");
        std::fs::write(&path, "these are not the bytes you are looking for").unwrap();
        let o = scuzz(&["stats", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains("not a Scuzz trace"),
            "{err}"
        );
    }

    /// Ten commands, uncompressed so each event is its own frame; returns the
    /// file and the offset of its last frame.
    fn ten_commands(path: &Path) -> u64 {
        let mut h = TraceHeader::new("cli test");
        h.block_size = 512;
        h.payload_mode = PayloadMode::None;
        let mut w = TraceWriter::create(path, &h, Compression::None).unwrap();
        let mut last = 0;
        for seq in 0..10u64 {
            w.write(&Event::Submit(Submit {
                seq,
                time_ns: seq * 1000,
                nexus: Nexus { target: 0, lun: 0 },
                tag: seq,
                attr: TaskAttr::Simple,
                cdb: vec![0x28, 0, 0, 0, seq as u8, 0, 0, 0, 1, 0],
                dir: Direction::FromDevice,
                xfer_len: 512,
                sg: vec![Segment::new(0x1000, 512)],
                payload: Payload::None,
            }))
            .unwrap();
            last = w.bytes_written();
            w.write(&Event::Complete(Complete {
                seq,
                time_ns: seq * 1000 + 500,
                response: ServiceResponse::TaskComplete,
                status: ScsiStatus::GOOD,
                sense: vec![],
                bytes_transferred: 512,
                residual: 0,
                payload: Payload::None,
            }))
            .unwrap();
        }
        w.flush().unwrap();
        last
    }

    #[test]
    fn a_torn_trace_shows_everything_readable_then_fails_naming_file_and_offset() {
        let dir = scratch("torn");
        let path = dir.join("torn.sczt");
        let last = ten_commands(&path);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);

        let o = scuzz(&["show", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let out = stdout(&o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 10, "{out}");
        assert!(lines[..9].iter().all(|l| l.contains("GOOD")), "{out}");
        assert!(
            lines[9].starts_with("#9 ") && lines[9].ends_with("(incomplete)"),
            "{out}"
        );
        let err = stderr(&o);
        assert!(err.contains(&*path.to_string_lossy()), "{err}");
        assert!(
            err.contains(&format!("byte {last}")) && err.contains("torn tail"),
            "{err}"
        );

        let o = scuzz(&["stats", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stdout(&o).contains("events: 19 "), "{}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("byte {last}")) && err.contains(&*path.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_frame_is_reported_at_its_offset() {
        let dir = scratch("corrupt");
        let path = dir.join("flipped.sczt");
        let last = ten_commands(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        let i = last as usize + 14;
        bytes[i] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let o = scuzz(&["show", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("corrupt trace at byte {last}")),
            "{err}"
        );
    }
}

/// Exit codes are the contract scripts rely on: 2 means a violation was
/// found, so a mistyped flag must exit 1 (usage) and `--help` 0.
mod usage {
    use std::process::{Command, Output};

    fn scuzz(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_scuzz"))
            .args(args)
            .output()
            .expect("run scuzz")
    }

    #[test]
    fn a_usage_error_exits_1_naming_the_flag() {
        let cases: [(&[&str], &str); 3] = [
            (&["replay", "--verfy"], "--verfy"),
            (
                &["fuzz", "--out", "/nonexistent", "--max-ops", "0"],
                "--max-ops",
            ),
            (&["no-such-command"], "no-such-command"),
        ];
        for (args, names) in cases {
            let o = scuzz(args);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(names), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_exits_0_on_stdout() {
        let o = scuzz(&["fuzz", "--help"]);
        assert_eq!(o.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&o.stdout).contains("--max-ops"));
    }
}
