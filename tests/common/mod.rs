//! Helpers shared by the root package's integration tests.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The target name `scuzz serve` uses by default.
pub const IQN: &str = "iqn.2026-11.dev.scuzz:disk";

/// Where `scripts/fetch-qemu-iscsi` unpacks QEMU 7.2 (the last Debian
/// release whose tools ship the iSCSI block driver).
pub fn qemu_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/qemu-iscsi/root");
    assert!(
        root.join("usr/bin/qemu-img").is_file(),
        "QEMU 7.2 with the iSCSI block driver is not unpacked: run scripts/fetch-qemu-iscsi"
    );
    root
}

/// Runs one of those QEMU tools (`qemu-img`, `qemu-io`) with its module
/// directory, asserts it succeeded and returns what it printed.
pub fn qemu(tool: &str, args: &[&str]) -> String {
    let root = qemu_root();
    let out = Command::new(root.join("usr/bin").join(tool))
        .args(args)
        .env(
            "QEMU_MODULE_DIR",
            root.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tool} {args:?} failed: {text}");
    text
}

/// The loopback port in the first line `scuzz serve` and `scuzz record`
/// print ("listening on 127.0.0.1:PORT, ...").
pub fn listening_port(line: &str) -> u16 {
    line.split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A finished command's stdout and stderr, together, for assertions and
/// for the message of a failed one.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies a raw image file onto an iSCSI LUN with QEMU 7.2's `qemu-img
/// convert` (write-back cache, so QEMU ends with SYNCHRONIZE CACHE): a
/// real `cp` through iSCSI.
pub fn qemu_copy_in(src: &Path, url: &str) {
    let src = src.to_str().expect("UTF-8 temporary path");
    qemu(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-t",
            "writeback",
            "-f",
            "raw",
            "-O",
            "raw",
            src,
            url,
        ],
    );
}

/// A running `scuzz record` between a test and an iSCSI target.
pub struct Record {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Record {
    /// Starts `scuzz record` on a free loopback port in front of `target`,
    /// capturing `payload` (`full`, `digest`, `none`) into `out`.
    pub fn start(target: &str, payload: &str, out: &Path) -> Record {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scuzz"))
            .args(["record", "--listen", "127.0.0.1:0", "--target", target])
            .args(["--payload", payload, "-o"])
            .arg(out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scuzz record");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let first = lines
            .next()
            .expect("scuzz record printed its address")
            .expect("stderr is text");
        let port = listening_port(&first);
        Record { child, lines, port }
    }

    /// Stops it with SIGINT, as a user's Ctrl-C would; asserts it finished
    /// cleanly and returns what it printed since starting.
    pub fn interrupt(mut self) -> Vec<String> {
        let kill = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
        let status = self.child.wait().expect("wait for scuzz record");
        assert!(status.success(), "scuzz record exited with {status}");
        self.lines.map_while(Result::ok).collect()
    }
}

/// A running `scuzz serve`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Serve {
    /// The server process.
    pub child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its stderr, line by line.
    pub log: mpsc::Receiver<String>,
}

impl Serve {
    /// Starts `scuzz serve` on a free loopback port with `extra` options.
    pub fn start(extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scuzz"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scuzz serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("scuzz serve printed its address");
        let port = listening_port(&first);
        Serve {
            child,
            port,
            log: rx,
        }
    }

    /// The target's URL for `lun`.
    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{IQN}/{lun}", self.port)
    }

    /// Log lines so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
