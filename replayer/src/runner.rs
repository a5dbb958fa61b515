//! One replay from start to verdict: open the trace, build the backend
//! named by `--to`, run the engine, write the report, compare with a
//! baseline, and turn the result into the documented exit code. The CLI and
//! the suite runner both go through [`run`].

use crate::backend::emulator::{EmulatorBackend, EmulatorSpec, HostBuffers};
use crate::backend::iscsi::IscsiBackend;
use crate::backend::sg::SgBackend;
use crate::backend::{Backend, BackendError, Outcome, Request};
use crate::engine::Engine;
use crate::error::ReplayError;
use crate::latency::HlogFile;
use crate::options::ReplayOptions;
use crate::report::{compare, load_baseline, write_report, Regression, RegressionLimit, Summary};
use crate::source::{FileTrace, TraceSource};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where to replay.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The in-process emulator.
    Emulator(EmulatorSpec),
    /// A Linux SG_IO device (`sg:/dev/sgN`, `/dev/bsg/...`).
    Sg {
        /// Device node.
        path: PathBuf,
        /// `--i-know-this-destroys-data`.
        destroy_ok: bool,
    },
    /// An iSCSI target (`iscsi://host:port/iqn/lun`).
    Iscsi {
        /// The URL as given.
        url: String,
        /// CHAP user and secret.
        chap: Option<(String, String)>,
        /// What a power loss in the trace becomes.
        power_cycle: iscsi::initiator::PowerCycle,
    },
}

impl Target {
    /// Parses `--to`: `emulator`, `sg:/dev/sgN`, `/dev/sgN`, `/dev/bsg/...`,
    /// `iscsi://...`. Emulator and CHAP details are filled in by the caller.
    pub fn parse(to: &str) -> Result<Target, ReplayError> {
        if to == "emulator" {
            return Ok(Target::Emulator(EmulatorSpec::default()));
        }
        if to.starts_with("iscsi://") {
            return Ok(Target::Iscsi {
                url: to.to_string(),
                chap: None,
                power_cycle: iscsi::initiator::PowerCycle::default(),
            });
        }
        let dev = to.strip_prefix("sg:").unwrap_or(to);
        if dev.starts_with("/dev/") {
            return Ok(Target::Sg {
                path: PathBuf::from(dev),
                destroy_ok: false,
            });
        }
        Err(ReplayError::usage(
            "--to",
            format!("`{to}`: expected emulator, sg:/dev/sgN, /dev/bsg/H:C:T:L or iscsi://host:port/iqn/lun"),
        ))
    }
}

/// Everything one replay needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The trace file.
    pub trace: PathBuf,
    /// Where to.
    pub target: Target,
    /// How.
    pub options: ReplayOptions,
    /// `--report DIR`.
    pub report: Option<PathBuf>,
    /// `--baseline DIR`.
    pub baseline: Option<PathBuf>,
    /// `--max-regression`.
    pub limits: Vec<RegressionLimit>,
    /// Growth below this many ns never counts as a regression.
    pub regression_floor_ns: u64,
}

/// The documented exit status of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 0: every check passed.
    Pass,
    /// 2: a data violation or a completion unlike the recording.
    DataViolation,
    /// 3: latency regressed against the baseline.
    LatencyRegression,
}

impl Verdict {
    /// The process exit code (1 is left to usage and I/O errors).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::DataViolation => 2,
            Verdict::LatencyRegression => 3,
        }
    }
}

/// What [`run`] returns.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's summary (also in `summary.json`).
    pub summary: Summary,
    /// Percentiles that regressed against the baseline.
    pub regressions: Vec<Regression>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Any backend `--to` can name, behind one type so the engine is built
/// once.
pub enum AnyBackend {
    /// In-process emulator.
    Emulator(Box<EmulatorBackend>),
    /// SG_IO.
    Sg(SgBackend),
    /// iSCSI.
    Iscsi(IscsiBackend),
}

impl Backend for AnyBackend {
    fn describe(&self) -> String {
        match self {
            AnyBackend::Emulator(b) => b.describe(),
            AnyBackend::Sg(b) => b.describe(),
            AnyBackend::Iscsi(b) => b.describe(),
        }
    }

    fn unwritten_reads_zero(&self) -> bool {
        match self {
            AnyBackend::Emulator(b) => b.unwritten_reads_zero(),
            AnyBackend::Sg(b) => b.unwritten_reads_zero(),
            AnyBackend::Iscsi(b) => b.unwritten_reads_zero(),
        }
    }

    async fn execute(&self, req: Request) -> Result<Outcome, BackendError> {
        match self {
            AnyBackend::Emulator(b) => b.execute(req).await,
            AnyBackend::Sg(b) => b.execute(req).await,
            AnyBackend::Iscsi(b) => b.execute(req).await,
        }
    }

    async fn power_loss(&self) -> Result<(), BackendError> {
        match self {
            AnyBackend::Emulator(b) => b.power_loss().await,
            AnyBackend::Sg(b) => b.power_loss().await,
            AnyBackend::Iscsi(b) => b.power_loss().await,
        }
    }

    async fn close(&self) -> Result<(), BackendError> {
        match self {
            AnyBackend::Emulator(b) => b.close().await,
            AnyBackend::Sg(b) => b.close().await,
            AnyBackend::Iscsi(b) => b.close().await,
        }
    }

    async fn reset(&self) -> Result<(), BackendError> {
        match self {
            AnyBackend::Emulator(b) => b.reset().await,
            AnyBackend::Sg(b) => b.reset().await,
            AnyBackend::Iscsi(b) => b.reset().await,
        }
    }
}

/// Builds the backend for `target`, taking defaults (block size, capacity,
/// HBA) from the trace's header.
pub async fn open_backend(
    target: &Target,
    source: &dyn TraceSource,
) -> Result<AnyBackend, ReplayError> {
    let err = |backend: String, source| ReplayError::Backend { backend, source };
    match target {
        Target::Emulator(spec) => {
            let b = EmulatorBackend::new(spec, source.header())?;
            Ok(AnyBackend::Emulator(Box::new(b)))
        }
        Target::Sg { path, destroy_ok } => SgBackend::open(path, *destroy_ok)
            .await
            .map(AnyBackend::Sg)
            .map_err(|e| err(format!("sg:{}", path.display()), e)),
        Target::Iscsi {
            url,
            chap,
            power_cycle,
        } => IscsiBackend::open(url, chap.clone(), power_cycle.clone())
            .await
            .map(AnyBackend::Iscsi)
            .map_err(|e| err(iscsi::initiator::redact_url(url), e)),
    }
}

/// Runs one replay to its verdict.
pub fn run(spec: &RunSpec) -> Result<RunReport, ReplayError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplayError::io("tokio runtime", e))?;
    rt.block_on(run_async(spec))
}

/// [`run`] on the caller's runtime.
pub async fn run_async(spec: &RunSpec) -> Result<RunReport, ReplayError> {
    let source = FileTrace::open(&spec.trace)?;
    run_source(spec, &source).await
}

/// [`run_async`] on events from any source (the trace file in `spec` is
/// not opened).
pub async fn run_source(
    spec: &RunSpec,
    source: &dyn TraceSource,
) -> Result<RunReport, ReplayError> {
    let baseline = match &spec.baseline {
        Some(dir) => Some(load_baseline(dir)?),
        None => None,
    };
    if baseline.is_some() && spec.limits.is_empty() {
        return Err(ReplayError::usage(
            "--baseline",
            "needs --max-regression (for example p99=10%,p50=5%)",
        ));
    }
    let backend = open_backend(&spec.target, source).await?;
    let hlog = match &spec.report {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| ReplayError::io(dir, e))?;
            let p = dir.join("latency.hlog");
            Some(HlogFile::create(&p, SystemTime::now()).map_err(|e| ReplayError::io(&p, e))?)
        }
        None => None,
    };
    let engine = Engine::new(&backend, source, spec.options.clone(), hlog)?;
    let result = engine.run(source).await;
    // Log out even when the run failed: a target keeps a session it was not
    // told about until it times out.
    let closed = backend.close().await;
    let result = result?;
    closed.map_err(|source| ReplayError::Backend {
        backend: backend.describe(),
        source,
    })?;
    if let Some(dir) = &spec.report {
        write_report(dir, &result.summary, &result.latency)?;
    }
    let regressions = match &baseline {
        Some(b) => compare(b, &result.summary, &spec.limits, spec.regression_floor_ns),
        None => Vec::new(),
    };
    let verdict = if result.has_violation() {
        Verdict::DataViolation
    } else if !regressions.is_empty() {
        Verdict::LatencyRegression
    } else {
        Verdict::Pass
    };
    Ok(RunReport {
        summary: result.summary,
        regressions,
        verdict,
    })
}

/// Whether `path` exists and is a trace file name (`.sczt`).
pub fn is_trace(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sczt") && path.is_file()
}

/// Host-buffer policy names for `--host-memory`.
pub fn parse_host_buffers(s: &str) -> Result<HostBuffers, ReplayError> {
    HostBuffers::parse(s).ok_or_else(|| {
        ReplayError::usage("--host-memory", format!("`{s}`: expected keep or discard"))
    })
}

/// Parses a size: `4096`, `4k`, `512M`, `2G`, `1T` (binary multiples;
/// `KiB`/`MB` spellings accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{t}` is not a size (e.g. 4096, 64k, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{t}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn targets_parse() {
        assert!(matches!(Target::parse("emulator"), Ok(Target::Emulator(_))));
        assert!(matches!(
            Target::parse("sg:/dev/sg3"),
            Ok(Target::Sg { .. })
        ));
        assert!(matches!(
            Target::parse("/dev/bsg/0:0:0:0"),
            Ok(Target::Sg { .. })
        ));
        assert!(matches!(
            Target::parse("iscsi://h:3260/iqn.x/0"),
            Ok(Target::Iscsi { .. })
        ));
        assert!(Target::parse("nvme").is_err());
    }
}
