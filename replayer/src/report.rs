//! Run reports: `summary.txt` (fio-style percentile tables), `summary.json`,
//! `latency.svg` (percentile distribution per opcode, log-scale x as in
//! HdrHistogram's plotter) and the comparison against a baseline run.

use crate::error::ReplayError;
use crate::latency::{size_label, Latency};
use crate::verify::VerifySummary;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The percentiles fio prints in its `clat percentiles` table.
pub const PERCENTILES: &[f64] = &[
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// `99.5` as `p99.5`: the key of a percentile in [`OpStats::percentiles`].
pub fn percentile_key(p: f64) -> String {
    format!("p{}", p)
}

/// Latency statistics of one opcode class (or of one size class of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// Opcode class (`read`, `write`, `sync-cache`, `all`).
    pub op: String,
    /// Size class (`4k`, `1m`), absent for the whole opcode.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<String>,
    /// Commands.
    pub count: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Smallest latency, ns.
    pub min_ns: u64,
    /// Mean latency, ns.
    pub mean_ns: f64,
    /// Largest latency, ns.
    pub max_ns: u64,
    /// Latency at each of [`PERCENTILES`], ns, keyed by [`percentile_key`].
    pub percentiles: BTreeMap<String, u64>,
}

impl OpStats {
    fn from_histogram(op: &str, size: Option<String>, bytes: u64, h: &Histogram<u64>) -> OpStats {
        OpStats {
            op: op.to_string(),
            size,
            count: h.len(),
            bytes,
            min_ns: h.min(),
            mean_ns: h.mean(),
            max_ns: h.max(),
            percentiles: PERCENTILES
                .iter()
                .map(|p| (percentile_key(*p), h.value_at_percentile(*p)))
                .collect(),
        }
    }
}

/// Everything a run reports, as written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The trace replayed.
    pub trace: String,
    /// The backend it went to.
    pub backend: String,
    /// Queue depth used.
    pub qd: u32,
    /// Timing mode.
    pub timing: String,
    /// Order mode.
    pub order: String,
    /// Commands completed.
    pub commands: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Commands per second.
    pub iops: f64,
    /// MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Per opcode class, then `all`.
    pub ops: Vec<OpStats>,
    /// Per opcode class and size class.
    pub sizes: Vec<OpStats>,
    /// Verification results, when `--verify` ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verify: Option<VerifySummary>,
}

impl Summary {
    /// Builds the summary of a finished run.
    pub fn new(
        trace: &str,
        backend: &str,
        qd: u32,
        timing: String,
        order: String,
        lat: &Latency,
    ) -> Summary {
        let elapsed = lat.elapsed().as_secs_f64().max(1e-9);
        let mut ops: Vec<OpStats> = lat
            .per_op
            .iter()
            .map(|(op, h)| OpStats::from_histogram(op, None, h.bytes, &h.all))
            .collect();
        ops.push(OpStats::from_histogram(
            "all",
            None,
            lat.total_bytes(),
            &lat.all,
        ));
        let sizes = lat
            .per_op
            .iter()
            .flat_map(|(op, h)| {
                h.sizes.iter().map(move |(size, sh)| {
                    OpStats::from_histogram(op, Some(size_label(*size)), 0, sh)
                })
            })
            .collect();
        Summary {
            trace: trace.to_string(),
            backend: backend.to_string(),
            qd,
            timing,
            order,
            commands: lat.commands(),
            bytes: lat.total_bytes(),
            elapsed_s: elapsed,
            iops: lat.commands() as f64 / elapsed,
            mb_per_s: lat.total_bytes() as f64 / elapsed / 1e6,
            ops,
            sizes,
            verify: None,
        }
    }

    /// The stats of one opcode class (`all` for every command).
    pub fn op(&self, op: &str) -> Option<&OpStats> {
        self.ops.iter().find(|o| o.op == op)
    }

    /// The human report: fio's layout, one block per opcode class.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scuzz replay: {} -> {}", self.trace, self.backend);
        let _ = writeln!(
            s,
            "  qd={} timing={} order={}: {} commands, {}, {:.3}s, IOPS={:.0}, BW={:.1}MB/s",
            self.qd,
            self.timing,
            self.order,
            self.commands,
            human_bytes(self.bytes),
            self.elapsed_s,
            self.iops,
            self.mb_per_s
        );
        for o in &self.ops {
            let _ = writeln!(
                s,
                "\n{}: {} commands, {}",
                o.op,
                o.count,
                human_bytes(o.bytes)
            );
            write_clat(&mut s, o);
            for z in self.sizes.iter().filter(|z| z.op == o.op) {
                if let Some(size) = &z.size {
                    let _ = writeln!(
                        s,
                        "  bs={size}: {} commands, p50={}, p99={}, max={}",
                        z.count,
                        human_ns(z.percentiles.get("p50").copied().unwrap_or(0)),
                        human_ns(z.percentiles.get("p99").copied().unwrap_or(0)),
                        human_ns(z.max_ns)
                    );
                }
            }
        }
        if let Some(v) = &self.verify {
            s.push('\n');
            s.push_str(&v.to_text());
        }
        s
    }
}

/// fio's `clat percentiles` block: the unit chosen from the largest value.
fn write_clat(s: &mut String, o: &OpStats) {
    let (unit, div) = if o.max_ns < 10_000 {
        ("nsec", 1.0)
    } else if o.max_ns < 10_000_000 {
        ("usec", 1e3)
    } else {
        ("msec", 1e6)
    };
    let _ = writeln!(
        s,
        "    clat ({unit}): min={:.0}, max={:.0}, avg={:.2}",
        o.min_ns as f64 / div,
        o.max_ns as f64 / div,
        o.mean_ns / div
    );
    let _ = writeln!(s, "    clat percentiles ({unit}):");
    for row in PERCENTILES.chunks(4) {
        let cells: Vec<String> = row
            .iter()
            .map(|p| {
                let v = o.percentiles.get(&percentile_key(*p)).copied().unwrap_or(0);
                format!("{:>5.2}th=[{:>5.0}]", p, v as f64 / div)
            })
            .collect();
        let _ = writeln!(s, "     | {}", cells.join(", "));
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Nanoseconds in the largest unit that keeps three digits.
pub fn human_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns}ns")
    } else if ns < 10_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else {
        format!("{:.1}ms", ns as f64 / 1e6)
    }
}

/// Writes `summary.txt`, `summary.json` and `latency.svg` into `dir`
/// (`latency.hlog` is streamed there during the run).
pub fn write_report(dir: &Path, summary: &Summary, lat: &Latency) -> Result<(), ReplayError> {
    std::fs::create_dir_all(dir).map_err(|e| ReplayError::io(dir, e))?;
    let txt = dir.join("summary.txt");
    std::fs::write(&txt, summary.to_text()).map_err(|e| ReplayError::io(&txt, e))?;
    let json = dir.join("summary.json");
    let body =
        serde_json::to_string_pretty(summary).map_err(|e| ReplayError::io(&json, e.into()))?;
    std::fs::write(&json, body).map_err(|e| ReplayError::io(&json, e))?;
    let svg = dir.join("latency.svg");
    std::fs::write(&svg, percentile_plot(lat)).map_err(|e| ReplayError::io(&svg, e))?;
    Ok(())
}

/// The percentile-distribution plot as an SVG document: one line per opcode
/// class, latency (µs) against percentile, x as 1/(1-p) on a log scale so
/// the tail (99%, 99.9%, ...) gets as much room as the body.
pub fn percentile_plot(lat: &Latency) -> String {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        let _ = draw_plot(&root, lat);
        let _ = root.present();
    }
    svg
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn draw_plot<DB: plotters::prelude::DrawingBackend>(
    root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    lat: &Latency,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    root.fill(&WHITE)?;
    // Points of each series: (1/(1-p), latency µs), up to the last sample.
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    let mut max_x: f64 = 100.0;
    let mut max_y: f64 = 1.0;
    for (op, h) in lat.per_op.iter().map(|(op, h)| (op, &h.all)) {
        let mut pts = Vec::new();
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            if q >= 1.0 {
                break;
            }
            let x = 1.0 / (1.0 - q);
            let y = v.value_iterated_to() as f64 / 1e3;
            max_x = max_x.max(x);
            max_y = max_y.max(y);
            pts.push((x, y));
        }
        pts.push((max_x.max(10.0), h.max() as f64 / 1e3));
        max_y = max_y.max(h.max() as f64 / 1e3);
        series.push((op.as_str(), pts));
    }
    let decades = max_x.log10().ceil().max(2.0);
    let x_hi = 10f64.powf(decades);
    let mut chart = ChartBuilder::on(root)
        .caption("Latency by percentile distribution", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_hi).log_scale(), 0f64..max_y * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (microseconds)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            if p <= 0.0 {
                "0%".to_string()
            } else {
                format!("{}%", (p * 1e4).round() / 1e4)
            }
        })
        .draw()?;
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (i, (op, pts)) in series.into_iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(
                pts.into_iter().map(|(x, y)| (x.min(x_hi), y)),
                color,
            ))?
            .label(op.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One `--max-regression` limit: a percentile may grow by at most this
/// fraction over the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegressionLimit {
    /// The percentile (50, 99, 99.9).
    pub percentile: f64,
    /// Allowed growth (0.10 for 10%).
    pub fraction: f64,
}

/// Parses `p99=10%,p50=5%`.
pub fn parse_limits(spec: &str) -> Result<Vec<RegressionLimit>, ReplayError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || ReplayError::usage("--max-regression", format!("`{part}`: expected pNN=X%"));
        let (p, f) = part.split_once('=').ok_or_else(bad)?;
        let p: f64 = p
            .strip_prefix('p')
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        let f: f64 = f
            .strip_suffix('%')
            .unwrap_or(f)
            .parse()
            .map_err(|_| bad())?;
        if !PERCENTILES.contains(&p) {
            return Err(ReplayError::usage(
                "--max-regression",
                format!(
                    "p{p} is not reported; use one of {}",
                    PERCENTILES.map_join()
                ),
            ));
        }
        if !(f.is_finite() && f >= 0.0) {
            return Err(bad());
        }
        out.push(RegressionLimit {
            percentile: p,
            fraction: f / 100.0,
        });
    }
    if out.is_empty() {
        return Err(ReplayError::usage("--max-regression", "no limits given"));
    }
    Ok(out)
}

trait MapJoin {
    fn map_join(&self) -> String;
}
impl MapJoin for &[f64] {
    fn map_join(&self) -> String {
        self.iter()
            .map(|p| percentile_key(*p))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A percentile that grew past its limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    /// Opcode class.
    pub op: String,
    /// Which percentile.
    pub percentile: f64,
    /// Baseline value, ns.
    pub baseline_ns: u64,
    /// This run's value, ns.
    pub current_ns: u64,
    /// The limit that was passed (fraction).
    pub limit: f64,
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let growth = if self.baseline_ns == 0 {
            f64::INFINITY
        } else {
            (self.current_ns as f64 / self.baseline_ns as f64 - 1.0) * 100.0
        };
        write!(
            f,
            "{} p{}: {} -> {} (+{:.1}%, limit {:.1}%)",
            self.op,
            self.percentile,
            human_ns(self.baseline_ns),
            human_ns(self.current_ns),
            growth,
            self.limit * 100.0
        )
    }
}

/// Reads a baseline run's `summary.json` from its report directory.
pub fn load_baseline(dir: &Path) -> Result<Summary, ReplayError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ReplayError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| ReplayError::Parse {
        path,
        message: e.to_string(),
    })
}

/// Compares every opcode class present in both runs. A percentile counts as
/// regressed only when it grew by more than its fraction *and* by more than
/// `floor_ns`: sub-microsecond jitter on an idle emulator is not a regression.
pub fn compare(
    baseline: &Summary,
    current: &Summary,
    limits: &[RegressionLimit],
    floor_ns: u64,
) -> Vec<Regression> {
    let mut out = Vec::new();
    for cur in &current.ops {
        let Some(base) = baseline.op(&cur.op) else {
            continue;
        };
        for l in limits {
            let key = percentile_key(l.percentile);
            let (Some(&b), Some(&c)) = (base.percentiles.get(&key), cur.percentiles.get(&key))
            else {
                continue;
            };
            let allowed = b as f64 * (1.0 + l.fraction);
            if c as f64 > allowed && c.saturating_sub(b) > floor_ns {
                out.push(Regression {
                    op: cur.op.clone(),
                    percentile: l.percentile,
                    baseline_ns: b,
                    current_ns: c,
                    limit: l.fraction,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_with(p50: u64, p99: u64) -> Summary {
        let mut l = Latency::new(None);
        for _ in 0..98 {
            l.record("write", 4096, 4096, p50).unwrap();
        }
        l.record("write", 4096, 4096, p99).unwrap();
        l.record("write", 4096, 4096, p99).unwrap();
        Summary::new("t", "b", 1, "afap".into(), "strict".into(), &l)
    }

    #[test]
    fn limits_parse_and_reject() {
        let l = parse_limits("p99=10%,p50=5%").unwrap();
        assert_eq!(
            l,
            vec![
                RegressionLimit {
                    percentile: 99.0,
                    fraction: 0.10
                },
                RegressionLimit {
                    percentile: 50.0,
                    fraction: 0.05
                }
            ]
        );
        assert!(parse_limits("p97=1%").is_err());
        assert!(parse_limits("99=1%").is_err());
        assert!(parse_limits("").is_err());
    }

    #[test]
    fn compare_flags_growth_past_limit_and_floor() {
        let base = summary_with(10_000, 100_000);
        let same = summary_with(10_000, 100_000);
        let worse = summary_with(10_000, 5_000_000);
        let limits = parse_limits("p99=10%,p50=5%").unwrap();
        assert!(compare(&base, &same, &limits, 0).is_empty());
        let r = compare(&base, &worse, &limits, 0);
        assert!(
            r.iter().any(|r| r.op == "write" && r.percentile == 99.0),
            "{r:?}"
        );
        assert!(!r.iter().any(|r| r.percentile == 50.0));
        // Under the floor, growth does not count.
        assert!(compare(&base, &worse, &limits, 10_000_000).is_empty());
    }

    #[test]
    fn text_report_has_fio_percentile_rows() {
        let t = summary_with(10_000, 100_000).to_text();
        assert!(t.contains("clat percentiles (usec):"), "{t}");
        assert!(t.contains("99.00th=["), "{t}");
        assert!(t.contains("bs=4k"), "{t}");
    }
}
