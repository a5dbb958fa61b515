//! Helpers shared by the root package's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
