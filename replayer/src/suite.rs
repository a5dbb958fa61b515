//! Suite mode: a folder of regression cases, each a directory holding an
//! `expect.toml` (which trace, which backend options, which outcome) run
//! in name order, with a JUnit XML report for CI systems.
//!
//! ```toml
//! # corpus/regression/cp-dma-truncate/expect.toml
//! trace = "../traces/cp-8m-lsi3108.sczt"   # relative to this file; default: the one .sczt beside it
//! expect = "misdirected"                    # pass | stale | misdirected | dropped | torn | garbage | completion
//! description = "32-bit DMA truncation sends page-cache pages above 4 GiB to the wrong LBAs"
//!
//! [replay]                                  # optional; verify defaults to true here
//! qd = 32
//! order = "overlap"
//! power_loss_at = [1234]
//!
//! [backend]                                 # optional; to defaults to "emulator"
//! hba = "lsi3108"
//! bugs = ["dma-truncate-32"]
//! ```

use crate::backend::emulator::{EmulatorSpec, HostBuffers};
use crate::error::ReplayError;
use crate::options::ReplayOptions;
use crate::runner::{run, RunSpec, Target, Verdict};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `expect.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    /// Trace path, relative to the case directory.
    pub trace: Option<String>,
    /// `pass`, a violation class, or `completion`.
    pub expect: String,
    /// One line on what the case guards against.
    #[serde(default)]
    pub description: String,
    /// Replay options.
    #[serde(default)]
    pub replay: ReplaySection,
    /// Backend options.
    #[serde(default)]
    pub backend: BackendSection,
}

/// `[replay]` of `expect.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// `--qd`.
    pub qd: Option<u32>,
    /// `--timing`.
    pub timing: Option<String>,
    /// `--order`.
    pub order: Option<String>,
    /// `--repeat`.
    pub repeat: Option<u32>,
    /// `--limit`.
    pub limit: Option<u64>,
    /// `--verify` (default true).
    pub verify: Option<bool>,
    /// `--power-loss-at`.
    #[serde(default)]
    pub power_loss_at: Vec<u64>,
    /// `--lun-map`.
    #[serde(default)]
    pub lun_map: Vec<String>,
}

/// `[backend]` of `expect.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// `--to` (default `emulator`).
    pub to: Option<String>,
    /// `--hba`.
    pub hba: Option<String>,
    /// `--bug`.
    #[serde(default)]
    pub bugs: Vec<String>,
    /// `--capacity` (`1G`, `512M`, bytes).
    pub capacity: Option<String>,
    /// `--block-size`.
    pub block_size: Option<u32>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--latency-add`, ns.
    pub latency_add_ns: Option<u64>,
    /// `--host-memory` (`keep` or `discard`).
    pub host_memory: Option<String>,
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case directory name.
    pub name: String,
    /// What `expect.toml` said.
    pub expected: String,
    /// What happened: `pass`, the violation classes found, or `error`.
    pub actual: String,
    /// Whether `actual` satisfies `expected`.
    pub ok: bool,
    /// The run failed to complete (I/O, bad expectation file).
    pub error: Option<String>,
    /// Summary text of the run.
    pub details: String,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Loads `expect.toml` from `dir` and turns it into a run.
pub fn load_case(dir: &Path) -> Result<(ExpectFile, RunSpec), ReplayError> {
    let path = dir.join("expect.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| ReplayError::io(&path, e))?;
    let exp: ExpectFile = toml::from_str(&text).map_err(|e| ReplayError::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let bad = |message: String| ReplayError::Parse {
        path: path.clone(),
        message,
    };
    let trace = match &exp.trace {
        Some(t) => dir.join(t),
        None => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| ReplayError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::runner::is_trace(p))
                .collect();
            if found.len() != 1 {
                return Err(bad(format!(
                    "no `trace` field and {} .sczt files beside it (need exactly one)",
                    found.len()
                )));
            }
            found.remove(0)
        }
    };
    let r = &exp.replay;
    let mut options = ReplayOptions {
        qd: r.qd,
        verify: r.verify.unwrap_or(true),
        ..ReplayOptions::default()
    };
    if let Some(t) = &r.timing {
        options.timing = t
            .parse()
            .map_err(|e: ReplayError| bad(format!("replay.timing: {e}")))?;
    }
    if let Some(o) = &r.order {
        options.order = o
            .parse()
            .map_err(|e: ReplayError| bad(format!("replay.order: {e}")))?;
    }
    options.repeat = r.repeat.unwrap_or(1);
    options.limit = r.limit;
    options.power_loss_at = r.power_loss_at.clone();
    for m in &r.lun_map {
        options
            .lun_map
            .add(m)
            .map_err(|e| bad(format!("replay.lun_map: {e}")))?;
    }
    let b = &exp.backend;
    let mut target = Target::parse(b.to.as_deref().unwrap_or("emulator"))
        .map_err(|e| bad(format!("backend.to: {e}")))?;
    if let Target::Emulator(spec) = &mut target {
        *spec = EmulatorSpec {
            hba: b.hba.clone(),
            bugs: b.bugs.clone(),
            capacity_bytes: match &b.capacity {
                Some(c) => Some(
                    crate::runner::parse_size(c)
                        .map_err(|e| bad(format!("backend.capacity: {e}")))?,
                ),
                None => None,
            },
            block_size: b.block_size,
            seed: b.seed.unwrap_or(0),
            latency_add_ns: b.latency_add_ns.unwrap_or(0),
            host_buffers: match &b.host_memory {
                Some(h) => HostBuffers::parse(h)
                    .ok_or_else(|| bad(format!("backend.host_memory: `{h}`")))?,
                None => HostBuffers::Auto,
            },
        };
    }
    options.seed = b.seed.unwrap_or(options.seed);
    let spec = RunSpec {
        trace,
        target,
        options,
        report: None,
        baseline: None,
        limits: Vec::new(),
        regression_floor_ns: 0,
    };
    Ok((exp, spec))
}

/// Runs every case directory under `dir` (those holding `expect.toml`), in
/// name order.
pub fn run_suite(dir: &Path) -> Result<Vec<CaseResult>, ReplayError> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ReplayError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expect.toml").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        return Err(ReplayError::usage(
            "--suite",
            format!("{}: no case directories with an expect.toml", dir.display()),
        ));
    }
    Ok(cases.iter().map(|c| run_case(c)).collect())
}

fn run_case(dir: &Path) -> CaseResult {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let start = Instant::now();
    let loaded = load_case(dir);
    let (exp, spec) = match loaded {
        Ok(x) => x,
        Err(e) => {
            return CaseResult {
                name,
                expected: String::new(),
                actual: "error".into(),
                ok: false,
                error: Some(e.to_string()),
                details: String::new(),
                seconds: start.elapsed().as_secs_f64(),
            }
        }
    };
    match run(&spec) {
        Err(e) => CaseResult {
            name,
            expected: exp.expect,
            actual: "error".into(),
            ok: false,
            error: Some(e.to_string()),
            details: String::new(),
            seconds: start.elapsed().as_secs_f64(),
        },
        Ok(report) => {
            let v = report.summary.verify.clone().unwrap_or_default();
            let classes: Vec<String> = v
                .classes
                .iter()
                .filter(|(k, n)| k.as_str() != "ok" && **n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let actual = match report.verdict {
                Verdict::Pass => "pass".to_string(),
                Verdict::DataViolation if classes.is_empty() => "completion".to_string(),
                Verdict::DataViolation => classes.join(","),
                Verdict::LatencyRegression => "regression".to_string(),
            };
            let ok = match exp.expect.as_str() {
                "pass" => report.verdict == Verdict::Pass,
                "completion" => v.completion_mismatches > 0,
                class => v.count(class) > 0,
            };
            CaseResult {
                name,
                expected: exp.expect,
                actual,
                ok,
                error: None,
                details: report.summary.to_text(),
                seconds: start.elapsed().as_secs_f64(),
            }
        }
    }
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// The suite's results as JUnit XML (the schema Jenkins, GitLab and GitHub
/// test reporters read): one `<testcase>` per case, `<failure>` when the
/// outcome differs from `expect.toml`, `<error>` when the case could not run.
pub fn junit_xml(suite: &str, results: &[CaseResult]) -> String {
    let failures = results
        .iter()
        .filter(|r| !r.ok && r.error.is_none())
        .count();
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let time: f64 = results.iter().map(|r| r.seconds).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<testsuites name=\"scuzz replay\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n",
        results.len()
    ));
    s.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n",
        xml_escape(suite),
        results.len()
    ));
    for r in results {
        s.push_str(&format!(
            "    <testcase classname=\"scuzz.replay\" name=\"{}\" time=\"{:.3}\">\n",
            xml_escape(&r.name),
            r.seconds
        ));
        if let Some(e) = &r.error {
            s.push_str(&format!("      <error message=\"{}\"/>\n", xml_escape(e)));
        } else if !r.ok {
            s.push_str(&format!(
                "      <failure message=\"expected {}, got {}\">{}</failure>\n",
                xml_escape(&r.expected),
                xml_escape(&r.actual),
                xml_escape(&r.details)
            ));
        }
        if !r.details.is_empty() {
            s.push_str(&format!(
                "      <system-out>{}</system-out>\n",
                xml_escape(&r.details)
            ));
        }
        s.push_str("    </testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let r = vec![
            CaseResult {
                name: "a<b".into(),
                expected: "pass".into(),
                actual: "pass".into(),
                ok: true,
                error: None,
                details: "x & y\u{1}".into(),
                seconds: 0.5,
            },
            CaseResult {
                name: "c".into(),
                expected: "stale".into(),
                actual: "pass".into(),
                ok: false,
                error: None,
                details: String::new(),
                seconds: 0.25,
            },
        ];
        let x = junit_xml("suite", &r);
        let doc = roxmltree::Document::parse(&x).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("tests"), Some("2"));
        assert_eq!(root.attribute("failures"), Some("1"));
        assert!(x.contains("a&lt;b"));
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("failure"))
                .count(),
            1
        );
    }

    #[test]
    fn expect_file_rejects_unknown_fields() {
        let dir = std::env::temp_dir().join(format!("scuzz-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("expect.toml"), "expect = \"pass\"\nbogus = 1\n").unwrap();
        let e = load_case(&dir).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("expect.toml"), "{e}");
        std::fs::write(dir.join("expect.toml"), "expect = \"pass\"\n").unwrap();
        let e = load_case(&dir).unwrap_err().to_string();
        assert!(e.contains(".sczt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
