//! `scuzz replay --to sg:/dev/sgN` and `--to /dev/bsg/H:C:T:L` against a
//! real Linux SCSI stack: a Debian 12 kernel booted in QEMU with nine
//! virtio-scsi disks backed by raw image files (scripts/fetch-sg-vm builds
//! the guest). The guest runs every replay once, in one boot, and prints
//! each one's output and exit code on the serial console; the tests below
//! judge that output and then the image files on the host.
//!
//! The guest loads no `sd_mod`, so nothing touches a disk before scuzz
//! does: its first command meets the power-on UNIT ATTENTION, as it would
//! after a bus reset on real hardware.
//!
//! | disk (SCSI id) | image | what runs on it |
//! |---|---|---|
//! | 0 | blank, trace capacity | `synth cp` trace through sg (v3), `--verify` |
//! | 1 | blank, trace capacity | the same trace through bsg (v4), `--verify` |
//! | 2 | MBR signature | refused through sg; confirmed through bsg, `--verify` |
//! | 3 | GPT header at LBA 1 | refused through bsg |
//! | 4 | blank, 4 MiB | hand-made traces: CHECK CONDITIONs, a short read, a power loss and a reset; through both |
//! | 5 | blank | `synth fio` random 4 KiB writes at `--qd 32`, through both |
//! | 6 | blank | a single 40 MiB WRITE(16), through both: refused by the kernel |
//! | 7 | GPT, 4096-byte logical blocks | a 4 KiB-block `synth cp` trace: refused through sg, confirmed through bsg |
//! | 8 | one block | LBA 0 and 1 unreadable: refused, then confirmed |
//!
//! QEMU runs with KVM when /dev/kvm works and falls back to TCG otherwise
//! (`SCUZZ_SG_VM_ACCEL=tcg|kvm` forces one). Without QEMU or the guest the
//! tests print "skipped: ..." and return.

mod common;

use common::text;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use trace::file::{Compression, PayloadMode, TraceHeader, TraceWriter};
use trace::{
    BlockState, Cdb, Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment,
    ServiceResponse, Submit, TaskAttr, TraceReader,
};

const BLOCK: usize = 512;
/// Disks attached to the guest (the table above).
const DISKS: usize = 9;
/// The one with 4096-byte logical blocks.
const DISK_4K: usize = 7;
/// Blocks of the edge-case disk (4 MiB).
const EDGE_BLOCKS: u64 = 8192;
/// How long KVM gets to reach /init before it counts as unusable (a
/// nested-virtualisation host may offer /dev/kvm and then never run the
/// guest); a working KVM gets there in about a second.
const KVM_PROBE: Duration = Duration::from_secs(10);
/// The whole guest run, TCG on a slow machine included.
const VM_LIMIT: Duration = Duration::from_secs(300);

/// The guest's script: one section per replay on the console.
const GUEST_SCRIPT: &str = r#"#!/bin/sh
i=0
# A slow TCG host may take a while to scan its disks: up to 30 s.
while [ "$(ls /sys/class/scsi_generic | wc -l)" -lt DISKS ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sg() { echo "sg:/dev/$(ls /sys/bus/scsi/devices/*:0:$1:0/scsi_generic/)"; }
bsg() { for d in /dev/bsg/*:0:$1:0; do echo "$d"; done; }
run() {
    name=$1
    shift
    echo "=== begin $name: $*"
    "$@" >/tmp/out 2>&1
    rc=$?
    grep -v '^ *|' /tmp/out
    echo "=== end $name rc=$rc"
}
run cp-sg /scuzz replay /cp.sczt --to "$(sg 0)" --verify
run cp-bsg /scuzz replay /cp.sczt --to "$(bsg 1)" --verify
run mbr-refused /scuzz replay /cp.sczt --to "$(sg 2)" --verify
run mbr-confirmed /scuzz replay /cp.sczt --to "$(bsg 2)" --verify --i-know-this-destroys-data
run gpt-refused /scuzz replay /cp.sczt --to "$(bsg 3)"
run edge-sg /scuzz replay /edge.sczt --to "$(sg 4)" --verify
run edge-bsg /scuzz replay /edge.sczt --to "$(bsg 4)" --verify
run short-sg /scuzz replay /short.sczt --to "$(sg 4)" --verify
run short-bsg /scuzz replay /short.sczt --to "$(bsg 4)" --verify
run reset-sg /scuzz replay /reset.sczt --to "$(sg 4)" --verify
run reset-bsg /scuzz replay /reset.sczt --to "$(bsg 4)" --verify
run gpt4k-refused /scuzz replay /cp4k.sczt --to "$(sg 7)"
run cp4k-confirmed /scuzz replay /cp4k.sczt --to "$(bsg 7)" --verify --i-know-this-destroys-data
run tiny-refused /scuzz replay /edge.sczt --to "$(sg 8)" --limit 1
run tiny-confirmed /scuzz replay /edge.sczt --to "$(sg 8)" --limit 1 --i-know-this-destroys-data
run qd32-sg /scuzz replay /fio.sczt --to "$(sg 5)" --verify --qd 32
run qd32-bsg /scuzz replay /fio.sczt --to "$(bsg 5)" --verify --qd 32
run big-sg /scuzz replay /big.sczt --to "$(sg 6)"
run big-bsg /scuzz replay /big.sczt --to "$(bsg 6)"
"#;

/// What one boot of the guest left behind.
struct VmRun {
    /// Replay name -> (exit code, output).
    sections: HashMap<String, (i32, String)>,
    /// The whole console, for failure messages.
    console: String,
    dir: PathBuf,
    trace: PathBuf,
}

impl VmRun {
    fn section(&self, name: &str) -> (i32, &str) {
        match self.sections.get(name) {
            Some((rc, out)) => (*rc, out),
            None => panic!("no section {name} on the console:\n{}", self.console),
        }
    }

    /// The output of a replay that must have exited 0 with `verify: PASS`.
    fn passed(&self, name: &str) -> &str {
        let (rc, out) = self.section(name);
        assert_eq!(rc, 0, "{name}:\n{out}");
        assert!(out.contains("verify: PASS"), "{name}:\n{out}");
        out
    }

    /// Asserts a replay was refused for a partition table: exit 1, the
    /// documented message and the flag that overrides it.
    fn refused(&self, name: &str, what: &str) {
        let (rc, out) = self.section(name);
        assert_eq!(rc, 1, "{name}:\n{out}");
        assert!(out.contains(what), "{name}:\n{out}");
        assert!(
            out.contains("--i-know-this-destroys-data"),
            "{name}:\n{out}"
        );
    }

    fn image(&self, n: usize) -> Vec<u8> {
        std::fs::read(self.dir.join(format!("disk{n}.img"))).expect("read disk image")
    }
}

/// Why there is no guest run to judge.
enum NoRun {
    /// QEMU or the guest cannot be had here.
    Skipped(String),
    /// The run itself failed: reported by every test, booted only once.
    Failed(String),
}

fn vm() -> Option<&'static VmRun> {
    static RUN: OnceLock<Result<VmRun, NoRun>> = OnceLock::new();
    let run = RUN.get_or_init(|| match std::panic::catch_unwind(boot) {
        Ok(r) => r.map_err(NoRun::Skipped),
        Err(panic) => Err(NoRun::Failed(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        )),
    });
    match run {
        Ok(r) => Some(r),
        Err(NoRun::Skipped(reason)) => {
            println!("skipped: {reason}");
            None
        }
        Err(NoRun::Failed(why)) => panic!("the guest run failed: {why}"),
    }
}

fn scuzz(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scuzz"))
        .args(args)
        .output()
        .expect("run scuzz")
}

fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Boots the guest once; `Err` is the reason the tests cannot run here
/// (never a failure of the code under test, which panics instead).
fn boot() -> Result<VmRun, String> {
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sg-vm");
    let (kernel, base) = (guest.join("vmlinuz"), guest.join("base.cpio"));
    if !kernel.is_file() || !base.is_file() {
        return Err(format!(
            "no guest kernel in {} (run scripts/fetch-sg-vm)",
            guest.display()
        ));
    }
    if !on_path("qemu-system-x86_64") {
        return Err("qemu-system-x86_64 not installed (Debian: qemu-system-x86)".into());
    }
    // A directory per run, so concurrent runs keep apart; those of runs
    // that have ended are removed, so only the last run's images,
    // initramfs and console (console.log) stay for a post-mortem.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("cli-sg-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("cli-sg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let (trace, traces) = prepare(&dir);

    let initrd = dir.join("initrd.cpio");
    let mut archive = std::fs::read(&base).unwrap();
    archive.extend(overlay(&dir, &traces));
    std::fs::write(&initrd, archive).unwrap();

    let forced = std::env::var("SCUZZ_SG_VM_ACCEL").ok();
    let kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let start = Instant::now();
    let (accel, console) = match forced.as_deref() {
        Some("tcg") => ("tcg", run_guest(&dir, &kernel, &initrd, "tcg", None)),
        Some("kvm") => ("kvm", run_guest(&dir, &kernel, &initrd, "kvm", None)),
        Some(other) => panic!("SCUZZ_SG_VM_ACCEL={other}: expected tcg or kvm"),
        None if kvm_usable => match run_guest(&dir, &kernel, &initrd, "kvm", Some(KVM_PROBE)) {
            Some(c) => ("kvm", Some(c)),
            None => {
                println!("KVM did not reach /init in {KVM_PROBE:?}; falling back to TCG");
                ("tcg", run_guest(&dir, &kernel, &initrd, "tcg", None))
            }
        },
        None => ("tcg", run_guest(&dir, &kernel, &initrd, "tcg", None)),
    };
    let console = console.unwrap_or_else(|| panic!("the guest did not start under {accel}"));
    std::fs::write(dir.join("console.log"), &console).unwrap();
    println!(
        "guest ran under {accel} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        console.contains("sg-vm: done"),
        "the guest did not finish its script:\n{console}"
    );
    Ok(VmRun {
        sections: sections(&console),
        console,
        dir,
        trace,
    })
}

/// Writes the traces and the disk images (the table above) into `dir`;
/// returns the `synth cp` trace and every trace under its name in the
/// guest.
fn prepare(dir: &Path) -> (PathBuf, Vec<(&'static str, PathBuf)>) {
    let synth = |name: &str, args: &[&str]| {
        let path = dir.join(name);
        let o = scuzz(
            &[
                &["synth"],
                args,
                &["-o", path.to_str().expect("UTF-8 temporary path")],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", text(&o));
        let blocks = TraceReader::open(&path).unwrap().header().capacity_blocks;
        (path, blocks)
    };
    let (trace, capacity) = synth("cp.sczt", &["cp", "--size", "8M", "--hba", "lsi3108"]);
    let (trace4k, capacity4k) = synth(
        "cp4k.sczt",
        &[
            "cp",
            "--size",
            "8M",
            "--hba",
            "lsi3108",
            "--block-size",
            "4096",
        ],
    );
    // 1024 random 4 KiB writes at iodepth 32, then their read-back.
    let (fio, fio_blocks) = synth(
        "fio.sczt",
        &[
            "fio",
            "--rw",
            "randwrite",
            "--bs",
            "4k",
            "--size",
            "4M",
            "--direct",
            "1",
            "--iodepth",
            "32",
            "--verify",
        ],
    );
    // A 40 MiB file written back in one WRITE(16): more than either
    // driver passes through.
    let (big, big_blocks) = synth(
        "big.sczt",
        &["cp", "--size", "40M", "--dirty-window", "64M"],
    );
    let edge = dir.join("edge.sczt");
    write_edge_trace(&edge);
    let short = dir.join("short.sczt");
    write_short_read_trace(&short);
    let reset = dir.join("reset.sczt");
    write_reset_trace(&reset);
    let disks: [(Vec<u8>, u64); DISKS] = [
        (vec![], capacity),
        (vec![], capacity),
        (mbr(), capacity),
        (gpt(), capacity),
        (vec![], EDGE_BLOCKS),
        (vec![], fio_blocks),
        (vec![], big_blocks),
        (gpt_4k(), capacity4k * 8),
        (vec![], 1),
    ];
    for (n, (first, blocks)) in disks.iter().enumerate() {
        let path = dir.join(format!("disk{n}.img"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(first).unwrap();
        f.set_len(blocks * BLOCK as u64).unwrap();
    }

    let traces = vec![
        ("cp.sczt", trace.clone()),
        ("cp4k.sczt", trace4k),
        ("edge.sczt", edge),
        ("short.sczt", short),
        ("reset.sczt", reset),
        ("fio.sczt", fio),
        ("big.sczt", big),
    ];
    (trace, traces)
}

/// Runs QEMU to completion and returns its console; `None` if `probe` is
/// set and the guest's /init did not speak within it.
fn run_guest(
    dir: &Path,
    kernel: &Path,
    initrd: &Path,
    accel: &str,
    probe: Option<Duration>,
) -> Option<String> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nodefaults", "-display", "none", "-no-reboot", "-m", "512"])
        .args(["-serial", "stdio", "-accel", accel])
        // QEMU logs each task management request virtio-scsi receives.
        .args(["-trace", "virtio_scsi_tmf_req"]);
    if accel == "kvm" {
        cmd.args(["-cpu", "host"]);
    }
    cmd.arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .args(["-device", "virtio-scsi-pci,id=scsi0"]);
    for n in 0..DISKS {
        let img = dir.join(format!("disk{n}.img"));
        cmd.arg("-drive").arg(format!(
            "file={},if=none,id=d{n},format=raw,cache=writeback",
            img.display()
        ));
        let sectors = if n == DISK_4K {
            ",logical_block_size=4096,physical_block_size=4096"
        } else {
            ""
        };
        cmd.args([
            "-device",
            &format!("scsi-hd,bus=scsi0.0,drive=d{n},scsi-id={n},lun=0{sectors}"),
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu-system-x86_64");
    let rx = lines(&mut child);
    let start = Instant::now();
    let mut console = String::new();
    let mut started = false;
    loop {
        let limit = if started {
            VM_LIMIT
        } else {
            probe.unwrap_or(VM_LIMIT)
        };
        let left = limit.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                started |= line.contains("sg-vm: ready");
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                if !started && probe.is_some() {
                    return None;
                }
                panic!("the guest ran past {limit:?} under {accel}:\n{console}");
            }
        }
    }
    let status = child.wait().expect("wait for qemu");
    assert!(status.success(), "qemu exited with {status}:\n{console}");
    Some(console)
}

/// QEMU's stdout and stderr, line by line, until both close.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout piped");
    let err = child.stderr.take().expect("stderr piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            let l = String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx2.send(format!("qemu: {l}")).is_err() {
                break;
            }
        }
    });
    rx
}

/// Splits the console into the guest script's `=== begin NAME` ... `===
/// end NAME rc=N` sections.
fn sections(console: &str) -> HashMap<String, (i32, String)> {
    let mut out = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("=== begin ") {
            let name = rest.split(':').next().unwrap_or(rest).to_string();
            current = Some((name, String::new()));
        } else if let Some(rest) = line.strip_prefix("=== end ") {
            let (name, rc) = rest.split_once(" rc=").expect("end line carries rc=");
            let (n, body) = current.take().expect("end without begin");
            assert_eq!(n, name, "sections interleave:\n{console}");
            out.insert(n, (rc.trim().parse().expect("numeric rc"), body));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// A second cpio (newc) archive the kernel unpacks over the base one: the
/// guest script, scuzz (stripped, so the guest needs little memory) with
/// its shared libraries at the paths `ldd` names, and the traces.
fn overlay(dir: &Path, traces: &[(&str, PathBuf)]) -> Vec<u8> {
    let bin = env!("CARGO_BIN_EXE_scuzz");
    let stripped = dir.join("scuzz");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(bin)
        .status()
        .expect("run strip (binutils)");
    assert!(st.success(), "strip {bin} failed");
    let ldd = Command::new("ldd").arg(bin).output().expect("run ldd");
    assert!(ldd.status.success(), "ldd {bin}: {}", text(&ldd));
    let mut cpio = Cpio::default();
    let script = GUEST_SCRIPT.replace("DISKS", &DISKS.to_string());
    cpio.file("sg-test.sh", script.as_bytes(), 0o755);
    cpio.file("scuzz", &std::fs::read(&stripped).unwrap(), 0o755);
    for (name, path) in traces {
        cpio.file(name, &std::fs::read(path).unwrap(), 0o644);
    }
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in Path::new(rel).parent().into_iter().flat_map(|p| p.iter()) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part.to_str().unwrap());
            cpio.dir(&parent);
        }
        cpio.file(rel, &std::fs::read(path).unwrap(), 0o755);
    }
    cpio.finish()
}

/// The cpio "newc" format (the one the kernel's initramfs unpacker reads):
/// a 110-byte ASCII header, the NUL-terminated name and the data, each
/// padded to 4 bytes.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// LBA 0 of a disk with a DOS partition table (SBC has no say; the boot
/// signature 55h AAh at byte 510 is what every OS looks for).
fn mbr() -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

/// LBA 0 and 1 of a GPT disk: a protective MBR, then the header signature.
fn gpt() -> Vec<u8> {
    gpt_sized(BLOCK)
}

/// The same on a disk with 4096-byte logical blocks: the header is at
/// byte 4096 (UEFI 2.10 5.3.1: LBA 1 whatever the block size).
fn gpt_4k() -> Vec<u8> {
    gpt_sized(4096)
}

fn gpt_sized(block: usize) -> Vec<u8> {
    let mut b = mbr();
    b.resize(2 * block, 0);
    b[block..block + 8].copy_from_slice(b"EFI PART");
    b
}

/// Fixed-format sense data (SPC-5 4.4.3): ILLEGAL REQUEST, LOGICAL BLOCK
/// ADDRESS OUT OF RANGE (21h/00h).
fn lba_out_of_range() -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = 0x05;
    s[7] = 10;
    s[12] = 0x21;
    s
}

/// One recorded command: CDB, direction, buffer length, Data-Out payload,
/// and the completion (status, sense, bytes moved, residual).
type Recorded = (
    Vec<u8>,
    Direction,
    u32,
    Payload,
    (ScsiStatus, Vec<u8>, u32, i64),
);

fn rw10(op: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn good(moved: u32, residual: i64) -> (ScsiStatus, Vec<u8>, u32, i64) {
    (ScsiStatus::GOOD, vec![], moved, residual)
}

const PATTERN: Payload = Payload::Pattern {
    seed: 7,
    generation: 1,
};

/// Writes `commands` as a trace of a disk of `EDGE_BLOCKS` blocks.
/// A step of a hand-made trace.
enum Step {
    Command(Recorded),
    PowerLoss,
    Reset,
}

fn write_trace(path: &Path, producer: &str, commands: Vec<Recorded>) {
    write_steps(path, producer, commands.into_iter().map(Step::Command));
}

fn write_steps(path: &Path, producer: &str, steps: impl IntoIterator<Item = Step>) {
    let mut h = TraceHeader::new(producer);
    h.block_size = BLOCK as u32;
    h.capacity_blocks = EDGE_BLOCKS;
    h.payload_mode = PayloadMode::Pattern;
    let mut w = TraceWriter::create(path, &h, Compression::None).unwrap();
    let mut seq = 0u64;
    for step in steps {
        let (cdb, dir, xfer_len, payload, (status, sense, moved, residual)) = match step {
            Step::Command(c) => c,
            Step::PowerLoss => {
                w.write(&Event::PowerLoss {
                    time_ns: seq * 1000,
                })
                .unwrap();
                continue;
            }
            Step::Reset => {
                w.write(&Event::Reset {
                    time_ns: seq * 1000,
                })
                .unwrap();
                continue;
            }
        };
        w.write(&Event::Submit(Submit {
            seq,
            time_ns: seq * 1000,
            nexus: Nexus { target: 0, lun: 0 },
            tag: seq,
            attr: TaskAttr::Simple,
            cdb,
            dir,
            xfer_len,
            sg: if xfer_len > 0 {
                vec![Segment::new(0x10_0000, xfer_len)]
            } else {
                vec![]
            },
            payload,
        }))
        .unwrap();
        w.write(&Event::Complete(Complete {
            seq,
            time_ns: seq * 1000 + 500,
            response: ServiceResponse::TaskComplete,
            status,
            sense,
            bytes_transferred: moved,
            residual,
            payload: Payload::None,
        }))
        .unwrap();
        seq += 1;
    }
    w.finish().unwrap();
}

/// A write and its flush, a power loss, a read; a reset, a second write
/// and its read: what a fuzzer's reproducer holds.
fn write_reset_trace(path: &Path) {
    let gen2 = Payload::Pattern {
        seed: 7,
        generation: 2,
    };
    let flush = vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let read = || {
        Step::Command((
            rw10(0x28, 64, 8),
            Direction::FromDevice,
            4096,
            Payload::None,
            good(4096, 0),
        ))
    };
    let write = |p| {
        Step::Command((
            rw10(0x2a, 64, 8),
            Direction::ToDevice,
            4096,
            p,
            good(4096, 0),
        ))
    };
    write_steps(
        path,
        "cli_sg power loss and reset",
        [
            write(PATTERN),
            Step::Command((flush, Direction::None, 0, Payload::None, good(0, 0))),
            Step::PowerLoss,
            read(),
            Step::Reset,
            write(gen2),
            read(),
        ],
    );
}

/// What a correct disk of `EDGE_BLOCKS` blocks answers: a write, its flush
/// and its read, then a write and a read past the last LBA, which fail
/// with CHECK CONDITION, LOGICAL BLOCK ADDRESS OUT OF RANGE (SBC-4 4.5).
fn write_edge_trace(path: &Path) {
    let last = EDGE_BLOCKS as u32;
    let check = |len: u32| {
        (
            ScsiStatus::CHECK_CONDITION,
            lba_out_of_range(),
            0,
            i64::from(len),
        )
    };
    let flush = vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    write_trace(
        path,
        "cli_sg edge cases",
        vec![
            (vec![0; 6], Direction::None, 0, Payload::None, good(0, 0)),
            (
                rw10(0x2a, 64, 8),
                Direction::ToDevice,
                4096,
                PATTERN,
                good(4096, 0),
            ),
            (flush, Direction::None, 0, Payload::None, good(0, 0)),
            (
                rw10(0x28, 64, 8),
                Direction::FromDevice,
                4096,
                Payload::None,
                good(4096, 0),
            ),
            (
                rw10(0x2a, last, 8),
                Direction::ToDevice,
                4096,
                PATTERN,
                check(4096),
            ),
            (
                rw10(0x28, last - 2, 4),
                Direction::FromDevice,
                2048,
                Payload::None,
                check(2048),
            ),
        ],
    );
}

/// A READ(10) of one block into a 4 KiB buffer, as a host with a larger
/// buffer than the command needs sends it: SAM-5 5.4.3 makes the residual
/// 3584 (the buffer offered minus the 512 bytes moved).
fn write_short_read_trace(path: &Path) {
    write_trace(
        path,
        "cli_sg short read",
        vec![
            (
                rw10(0x2a, 64, 8),
                Direction::ToDevice,
                4096,
                PATTERN,
                good(4096, 0),
            ),
            (
                rw10(0x28, 64, 1),
                Direction::FromDevice,
                4096,
                Payload::None,
                good(512, 3584),
            ),
        ],
    );
}

/// Every block range the trace writes, as (first LBA, blocks).
fn written(trace: &Path) -> Vec<(u64, u32)> {
    TraceReader::open(trace)
        .unwrap()
        .filter_map(|e| match e.unwrap() {
            Event::Submit(s) if s.dir == Direction::ToDevice => {
                Cdb::parse(&s.cdb).ok().and_then(|c| c.lba_range())
            }
            _ => None,
        })
        .collect()
}

/// Asserts that the image holds, at every block the trace wrote, a valid
/// self-describing block tagged with that very LBA, and zeros elsewhere
/// (from LBA `from` on: a partition table below it is left alone).
fn assert_replayed_image(img: &[u8], trace: &Path, from: u64) {
    let bs = TraceReader::open(trace).unwrap().header().block_size as usize;
    let mut wrote = vec![false; img.len() / bs];
    for (lba, blocks) in written(trace) {
        for l in lba..lba + u64::from(blocks) {
            wrote[l as usize] = true;
        }
    }
    let mut checked = 0;
    for (lba, block) in img.chunks_exact(bs).enumerate().skip(from as usize) {
        let state = trace::pattern::inspect(block);
        if wrote[lba] {
            match state {
                BlockState::Valid { tag } if tag.lba == lba as u64 => checked += 1,
                other => panic!("LBA {lba} was written but holds {other:?}"),
            }
        } else {
            assert_eq!(state, BlockState::Zeros, "LBA {lba} was never written");
        }
    }
    // The cp traces write an 8 MiB file.
    assert!(
        checked * bs >= 8 << 20,
        "only {checked} written blocks checked"
    );
}

#[test]
fn replay_through_sg_v3_verifies_and_lands_every_block_at_its_lba() {
    let Some(vm) = vm() else { return };
    let out = vm.passed("cp-sg");
    assert!(out.contains("-> sg:/dev/sg"), "{out}");
    assert_replayed_image(&vm.image(0), &vm.trace, 0);
}

#[test]
fn replay_through_bsg_v4_verifies_and_matches_the_sg_replay_byte_for_byte() {
    let Some(vm) = vm() else { return };
    let out = vm.passed("cp-bsg");
    assert!(out.contains("-> sg:/dev/bsg/"), "{out}");
    let bsg = vm.image(1);
    assert_replayed_image(&bsg, &vm.trace, 0);
    // Both replays regenerate the trace's pattern payload: same bytes.
    assert!(
        vm.image(0) == bsg,
        "sg and bsg replays left different disks"
    );
}

#[test]
fn a_partition_table_is_refused_without_the_confirmation_flag() {
    let Some(vm) = vm() else { return };
    vm.refused("mbr-refused", "holds an MBR partition table");
    vm.refused("gpt-refused", "holds a GPT partition table");
    // The refused GPT disk is untouched.
    let img = vm.image(3);
    assert_eq!(&img[..2 * BLOCK], &gpt()[..]);
    assert!(img[2 * BLOCK..].iter().all(|&b| b == 0));
}

#[test]
fn the_confirmation_flag_replays_onto_a_partitioned_disk() {
    let Some(vm) = vm() else { return };
    vm.passed("mbr-confirmed");
    let img = vm.image(2);
    // The cp trace starts at LBA 2048, so the MBR itself survives.
    assert_eq!(&img[..BLOCK], &mbr()[..]);
    assert_replayed_image(&img, &vm.trace, 1);
}

#[test]
fn check_conditions_from_the_kernel_match_the_recording() {
    let Some(vm) = vm() else { return };
    for name in ["edge-sg", "edge-bsg"] {
        let out = vm.passed(name);
        assert!(out.contains("0 completion mismatches"), "{name}:\n{out}");
    }
    let img = vm.image(4);
    for lba in 64..72 {
        let block = &img[lba * BLOCK..(lba + 1) * BLOCK];
        match trace::pattern::inspect(block) {
            BlockState::Valid { tag } => assert_eq!(tag.lba, lba as u64),
            other => panic!("LBA {lba} holds {other:?}"),
        }
    }
}

/// QEMU's scsi-disk (7.2, and later releases so far) computes a read's
/// residual as the command's transfer length minus the whole buffer, which
/// wraps when the buffer is the larger; Linux's virtio_scsi clamps the
/// result to the buffer length. So the kernel reports "nothing moved"
/// (residual 4096) for a read that moved 512 bytes, and the replay must
/// say so, through either header: the residual field is read where the
/// kernel wrote it. (A fixed QEMU would make this replay pass: then assert
/// exit 0 here.)
#[test]
fn a_short_read_carries_the_devices_residual_to_the_verifier() {
    let Some(vm) = vm() else { return };
    for name in ["short-sg", "short-bsg"] {
        let (rc, out) = vm.section(name);
        assert_eq!(rc, 2, "{name}:\n{out}");
        assert!(
            out.contains("reported residual 4096, the transfer implies 3584"),
            "{name}:\n{out}"
        );
        assert!(out.contains("bad-residual 1"), "{name}:\n{out}");
    }
}

/// 32 commands in flight: more than the sg driver takes on one open file
/// (SG_MAX_QUEUE, 16), which answered EDOM before the backend spread them
/// over several; bsg has no such limit.
#[test]
fn queue_depth_32_replays_through_both_interfaces() {
    let Some(vm) = vm() else { return };
    for name in ["qd32-sg", "qd32-bsg"] {
        let out = vm.passed(name);
        assert!(out.contains("qd=32"), "{name}:\n{out}");
    }
}

/// A transfer the kernel will not pass through ends the replay with exit 1
/// and a message naming the command and the limit, not a bare errno.
#[test]
fn an_oversized_transfer_names_the_kernel_limit() {
    let Some(vm) = vm() else { return };
    let (rc, out) = vm.section("big-sg");
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("WRITE(16) of 41943040 bytes"), "{out}");
    assert!(out.contains("scatter_elem_sz"), "{out}");
    let (rc, out) = vm.section("big-bsg");
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("WRITE(16) of 41943040 bytes"), "{out}");
    assert!(out.contains("max_hw_sectors_kb"), "{out}");
}

/// A trace's power loss and reset become a LOGICAL UNIT RESET through
/// SG_SCSI_RESET (for bsg, through the sg node of the same H:C:T:L): QEMU
/// logs one task management request for each, and the replay, UNIT
/// ATTENTION cleared, verifies.
#[test]
fn power_loss_and_reset_in_a_trace_reset_the_logical_unit() {
    let Some(vm) = vm() else { return };
    for name in ["reset-sg", "reset-bsg"] {
        vm.passed(name);
    }
    let tmfs = vm
        .console
        .lines()
        // Subtype 5: VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET (virtio 1.2 5.6.6.2).
        .filter(|l| l.contains("virtio_scsi_tmf_req") && l.ends_with("subtype=5"))
        .count();
    assert_eq!(tmfs, 4, "{}", vm.console);
}

/// A disk with 4096-byte logical blocks: its GPT header sits at byte 4096
/// and is found there (refused through sg), and with the flag a 4 KiB-block
/// trace replays through bsg and lands every block at its LBA.
#[test]
fn a_4k_sector_disk_is_judged_in_its_own_blocks() {
    let Some(vm) = vm() else { return };
    vm.refused("gpt4k-refused", "holds a GPT partition table");
    vm.passed("cp4k-confirmed");
    let img = vm.image(DISK_4K);
    assert_eq!(&img[..8192], &gpt_4k()[..]);
    let trace4k = vm.dir.join("cp4k.sczt");
    assert_replayed_image(&img, &trace4k, 2);
}

/// A disk whose LBA 0 and 1 cannot both be read (it has one block) might
/// still hold a partition table: refused, unless confirmed.
#[test]
fn an_unreadable_partition_area_is_refused_unless_confirmed() {
    let Some(vm) = vm() else { return };
    vm.refused("tiny-refused", "READ(10) of LBA 0 and 1 failed");
    let (rc, out) = vm.section("tiny-confirmed");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("1 commands"), "{out}");
}
