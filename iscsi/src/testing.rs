//! A harness for a real `tgtd` (the Linux SCSI target framework's iSCSI
//! target), for interop tests and benchmarks in any crate.
//!
//! Enabled by the `test-utils` feature. [`Tgtd::builder`] starts `tgtd` in the
//! foreground on a free loopback port with its own control port, creates one
//! target with one LUN backed by a file in `/dev/shm`, and returns a guard;
//! dropping the guard (also during a panic's unwinding) deletes the target
//! and stops the daemon, then removes the backing file. tgtd ignores SIGTERM,
//! so the guard stops it through `tgtadm ... --op delete --mode system` and
//! only falls back to SIGKILL if that does not work.
//!
//! ```no_run
//! let tgtd = iscsi::testing::Tgtd::builder().size(16 << 20).start().unwrap();
//! let url = tgtd.url(1); // iscsi://127.0.0.1:PORT/iqn.../1
//! # drop(url);
//! ```
//!
//! Needs the `tgt` package (`tgtd`, `tgtadm`) and root, since tgtd's control
//! socket lives under `/var/run/tgtd`: run as root, or as a user with
//! password-less `sudo` (as on CI runners), which the harness then uses for
//! `tgtd` and `tgtadm`. [`Tgtd::available`] lets a test say why it cannot run
//! instead of failing obscurely.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why tgtd could not be started or configured.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TgtdError {
    /// A process could not be spawned or a file created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `tgtadm` refused a configuration step.
    #[error("`tgtadm {args}` failed: {stderr}")]
    Tgtadm {
        /// The arguments given.
        args: String,
        /// What tgtadm printed.
        stderr: String,
    },
    /// tgtd did not start listening in time.
    #[error("tgtd did not come up within {0:?} (log: {1})")]
    Timeout(Duration, String),
}

/// One-way CHAP credentials the target requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgtdChap {
    /// The user name (CHAP_N).
    pub user: String,
    /// The secret; tgtd wants at least 12 characters for interop with
    /// open-iscsi, though it does not enforce it.
    pub secret: String,
}

/// Options for [`Tgtd`].
#[derive(Debug, Clone)]
pub struct TgtdBuilder {
    size: u64,
    iqn: Option<String>,
    chap: Option<TgtdChap>,
    backing: Option<PathBuf>,
}

/// A running tgtd with one target and LUN 1; stops on drop.
#[derive(Debug)]
pub struct Tgtd {
    child: Option<Child>,
    portal: SocketAddr,
    control_port: u16,
    iqn: String,
    backing: PathBuf,
    remove_backing: bool,
    log: PathBuf,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Whether this process runs with effective user id 0 (from
/// `/proc/self/status`, so no libc call is needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `program` run as root: directly when we are root, else through
/// password-less `sudo -n` (which fails at once, with its own message, if a
/// password would be needed).
fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(program);
        c
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A control port no running tgtd uses. It only names tgtd's unix socket
/// (`/var/run/tgtd/socket.N`), and tgtd accepts at most 32767.
fn control_port(pid: u32, n: u32) -> u16 {
    let mut x = pid.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503);
    loop {
        let port = 10_000 + (x % 22_000) as u16;
        if !Path::new(&format!("/var/run/tgtd/socket.{port}")).exists() {
            return port;
        }
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    }
}

impl TgtdBuilder {
    /// Size of LUN 1 in bytes (default 64 MiB); rounded up to 512.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes.div_ceil(512) * 512;
        self
    }

    /// Target name (default `iqn.2026-11.dev.scuzz.test:tgtd-<pid>-<n>`).
    pub fn iqn(mut self, iqn: impl Into<String>) -> Self {
        self.iqn = Some(iqn.into());
        self
    }

    /// Require one-way CHAP with these credentials.
    pub fn chap(mut self, user: impl Into<String>, secret: impl Into<String>) -> Self {
        self.chap = Some(TgtdChap {
            user: user.into(),
            secret: secret.into(),
        });
        self
    }

    /// Use an existing backing file (not removed on drop) instead of a new
    /// zero-filled one in /dev/shm.
    pub fn backing(mut self, path: impl Into<PathBuf>) -> Self {
        self.backing = Some(path.into());
        self
    }

    /// Starts tgtd and configures the target.
    pub fn start(self) -> Result<Tgtd, TgtdError> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let io = |what: String| move |source| TgtdError::Io { what, source };
        let iqn = self
            .iqn
            .unwrap_or_else(|| format!("iqn.2026-11.dev.scuzz.test:tgtd-{pid}-{n}"));
        let (backing, remove_backing) = match self.backing {
            Some(p) => (p, false),
            None => {
                let p = PathBuf::from(format!("/dev/shm/scuzz-tgtd-{pid}-{n}.img"));
                let f = std::fs::File::create(&p).map_err(io(format!("create {}", p.display())))?;
                f.set_len(self.size)
                    .map_err(io(format!("size {}", p.display())))?;
                (p, true)
            }
        };
        let port = free_port().map_err(io("pick a port".into()))?;
        let control_port = control_port(pid, n);
        let log = std::env::temp_dir().join(format!("scuzz-tgtd-{pid}-{n}.log"));
        let logf = std::fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let logf2 = logf.try_clone().map_err(io("dup log".into()))?;
        let portal: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = privileged("tgtd")
            .arg("-f")
            .arg("--iscsi")
            .arg(format!("portal={portal}"))
            .arg("--control-port")
            .arg(control_port.to_string())
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2)
            .spawn()
            .map_err(io("spawn tgtd (is the tgt package installed?)".into()))?;
        let mut t = Tgtd {
            child: Some(child),
            portal,
            control_port,
            iqn,
            backing,
            remove_backing,
            log,
        };
        if let Err(e) = t.wait_ready(Duration::from_secs(10)) {
            // Leave the log for whoever reads the error.
            t.log = PathBuf::new();
            return Err(e);
        }
        let tid = "1";
        t.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "target",
            "--tid",
            tid,
            "-T",
            &t.iqn.clone(),
        ])?;
        let path = t.backing.display().to_string();
        t.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            tid,
            "--lun",
            "1",
            "-b",
            &path,
        ])?;
        t.tgtadm(&[
            "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL",
        ])?;
        if let Some(chap) = &self.chap {
            t.tgtadm(&[
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "account",
                "--user",
                &chap.user,
                "--password",
                &chap.secret,
            ])?;
            t.tgtadm(&[
                "--lld", "iscsi", "--op", "bind", "--mode", "account", "--tid", tid, "--user",
                &chap.user,
            ])?;
        }
        Ok(t)
    }
}

impl Tgtd {
    /// Options, starting from a 64 MiB LUN without CHAP.
    pub fn builder() -> TgtdBuilder {
        TgtdBuilder {
            size: 64 << 20,
            iqn: None,
            chap: None,
            backing: None,
        }
    }

    /// Whether `tgtd` and `tgtadm` can be run here.
    pub fn available() -> bool {
        ["tgtd", "tgtadm"].iter().all(|p| {
            Command::new(p)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
    }

    /// The portal (loopback address and port).
    pub fn addr(&self) -> SocketAddr {
        self.portal
    }

    /// The target's iSCSI name.
    pub fn iqn(&self) -> &str {
        &self.iqn
    }

    /// The file behind LUN 1.
    pub fn backing_path(&self) -> &Path {
        &self.backing
    }

    /// tgtd's log file (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `iscsi://127.0.0.1:PORT/IQN/LUN`, libiscsi's URL syntax.
    pub fn url(&self, lun: u16) -> String {
        format!("iscsi://{}/{}/{}", self.portal, self.iqn, lun)
    }

    /// Runs `tgtadm -C CONTROL_PORT ARGS`.
    pub fn tgtadm(&self, args: &[&str]) -> Result<(), TgtdError> {
        let out = privileged("tgtadm")
            .arg("-C")
            .arg(self.control_port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TgtdError::Io {
                what: "run tgtadm".into(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TgtdError::Tgtadm {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), TgtdError> {
        let start = Instant::now();
        loop {
            let control = self.tgtadm(&["--op", "show", "--mode", "system"]).is_ok();
            if control
                && TcpStream::connect_timeout(&self.portal, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(TgtdError::Io {
                        what: format!("tgtd exited with {status} (log: {})", self.log.display()),
                        source: std::io::Error::other("tgtd exited during start-up"),
                    });
                }
            }
            if start.elapsed() > limit {
                return Err(TgtdError::Timeout(limit, self.log.display().to_string()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops tgtd (idempotent): deletes the target with `--force` (tgtd
    /// refuses to stop while a target exists), asks the daemon to exit, and
    /// kills it if it has not within two seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.tgtadm(&[
            "--lld", "iscsi", "--op", "delete", "--force", "--mode", "target", "--tid", "1",
        ]);
        let _ = self.tgtadm(&["--op", "delete", "--mode", "system"]);
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        self.remove_control_socket();
    }

    /// Kills tgtd abruptly (SIGKILL), as a crash would: open connections
    /// are reset. The backing file stays until the guard drops.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !is_root() {
                // The child is sudo; tgtd is its child and root's to kill.
                let pid = child.id();
                let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                for k in kids.split_whitespace() {
                    let _ = privileged("kill")
                        .arg("-9")
                        .arg(k)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            self.remove_control_socket();
        }
    }

    /// tgtd leaves `/var/run/tgtd/socket.N` and its lock file behind.
    fn remove_control_socket(&self) {
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!(
                "/var/run/tgtd/socket.{}{suffix}",
                self.control_port
            ));
        }
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.stop();
        if self.remove_backing {
            let _ = std::fs::remove_file(&self.backing);
        }
        if !self.log.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
