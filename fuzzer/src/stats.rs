//! The campaign's time series (`OUT/stats.jsonl`) and its plot
//! (`coverage.svg`): coverage and findings over time.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// One line of `stats.jsonl`: the whole campaign (every client) at one
/// moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsLine {
    /// Wall clock, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Seconds of fuzzing so far, across resumes.
    pub elapsed_s: f64,
    /// Programs executed, all clients.
    pub execs: u64,
    /// Current executions per second, all clients.
    pub execs_per_sec: f64,
    /// Corpus entries, all clients.
    pub corpus: u64,
    /// Coverage-map entries hit (the best client).
    pub coverage: usize,
    /// Coverage-map size.
    pub coverage_total: usize,
    /// Distinct findings on disk.
    pub findings: u64,
    /// Clients reporting.
    pub clients: u64,
}

impl fmt::Display for StatsLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.elapsed_s as u64;
        write!(
            f,
            "[{:02}:{:02}:{:02}] execs {} ({:.0}/s, {} client{})  corpus {}  coverage {}/{}  findings {}",
            t / 3600,
            t / 60 % 60,
            t % 60,
            self.execs,
            self.execs_per_sec,
            self.clients,
            if self.clients == 1 { "" } else { "s" },
            self.corpus,
            self.coverage,
            self.coverage_total,
            self.findings
        )
    }
}

/// Reads a `stats.jsonl`, skipping lines that do not parse (a campaign
/// killed mid-write leaves a torn last line). A missing file is an empty
/// series.
pub fn read_series(path: &Path) -> Vec<StatsLine> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Seconds the series in `path` already covers (0 for none): a resumed
/// campaign continues its clock from there.
pub fn last_elapsed(path: &Path) -> f64 {
    read_series(path).last().map_or(0.0, |l| l.elapsed_s)
}

/// Draws coverage (top) and findings (bottom) against time into an SVG.
/// Time is in seconds, minutes or hours, whichever an overnight campaign
/// and a one-minute smoke run can both be read in; counts are integers.
pub fn render_svg(series: &[StatsLine], out: &Path, title: &str) -> Result<(), String> {
    let root = SVGBackend::new(out, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(340);
    let span_s = series.last().map_or(0.0, |l| l.elapsed_s);
    let (unit, per_unit) = time_unit(span_s);
    let t_max = (span_s / per_unit).max(1.0);
    let cov_max = series
        .iter()
        .map(|l| l.coverage as u64)
        .max()
        .unwrap_or(0)
        .max(1);
    let find_max = series.iter().map(|l| l.findings).max().unwrap_or(0).max(1);

    let panels: [(_, &str, u64, Count, &RGBColor); 2] = [
        (
            &top,
            "coverage entries",
            cov_max + cov_max / 10,
            |l| l.coverage as u64,
            &BLUE,
        ),
        (&bottom, "findings", find_max + 1, |l| l.findings, &RED),
    ];
    for (area, what, y_max, value, colour) in panels {
        let mut c = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0..y_max)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(unit)
            .y_desc(what)
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(LineSeries::new(
            series.iter().map(|l| (l.elapsed_s / per_unit, value(l))),
            colour,
        ))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// What a panel of the plot counts at one line of the series.
type Count = fn(&StatsLine) -> u64;

/// The unit a time axis spanning `span_s` seconds reads best in, and its
/// length in seconds.
fn time_unit(span_s: f64) -> (&'static str, f64) {
    if span_s > 2.0 * 3600.0 {
        ("hours", 3600.0)
    } else if span_s > 2.0 * 60.0 {
        ("minutes", 60.0)
    } else {
        ("seconds", 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_skipped_and_the_plot_is_drawn() {
        let dir = std::env::temp_dir().join(format!("scuzz-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.jsonl");
        let mut text = String::new();
        for i in 0..5u64 {
            let l = StatsLine {
                unix_ms: 1000 * i,
                elapsed_s: i as f64,
                execs: 100 * i,
                execs_per_sec: 100.0,
                corpus: i,
                coverage: 10 * i as usize,
                coverage_total: 65536,
                findings: i / 2,
                clients: 1,
            };
            text.push_str(&serde_json::to_string(&l).unwrap());
            text.push('\n');
        }
        text.push_str("{\"unix_ms\": 12");
        std::fs::write(&path, text).unwrap();
        let s = read_series(&path);
        assert_eq!(s.len(), 5);
        assert_eq!(last_elapsed(&path), 4.0);
        let svg = dir.join("coverage.svg");
        render_svg(&s, &svg, "test").unwrap();
        let body = std::fs::read_to_string(&svg).unwrap();
        assert!(body.contains("<svg") && body.contains("findings"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_overnight_plot_reads_in_hours_and_counts_in_integers() {
        let dir = std::env::temp_dir().join(format!("scuzz-stats-8h-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let series: Vec<StatsLine> = (0..=8u64)
            .map(|h| StatsLine {
                unix_ms: 3_600_000 * h,
                elapsed_s: 3600.0 * h as f64,
                execs: 0,
                execs_per_sec: 0.0,
                corpus: 0,
                coverage: 1000 * h as usize,
                coverage_total: 65536,
                findings: h.min(3),
                clients: 2,
            })
            .collect();
        let svg = dir.join("coverage.svg");
        render_svg(&series, &svg, "overnight").unwrap();
        let body = std::fs::read_to_string(&svg).unwrap();
        // The SVG's text nodes: axis descriptions and tick labels.
        let texts: Vec<&str> = body
            .split('>')
            .filter_map(|t| t.split('<').next())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        assert!(
            texts.contains(&"hours"),
            "the time axis is in hours: {texts:?}"
        );
        assert!(!texts.iter().any(|t| t.starts_with("28800")), "{texts:?}");
        assert!(
            texts.contains(&"8000") && !texts.contains(&"8000.0"),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"3"),
            "findings count in integers: {texts:?}"
        );
        assert_eq!(time_unit(90.0).0, "seconds");
        assert_eq!(time_unit(600.0).0, "minutes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
