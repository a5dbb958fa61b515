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
pub fn render_svg(series: &[StatsLine], out: &Path, title: &str) -> Result<(), String> {
    let root = SVGBackend::new(out, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(340);
    let t_max = series.last().map_or(1.0, |l| l.elapsed_s).max(1.0);
    let cov_max = series.iter().map(|l| l.coverage).max().unwrap_or(0).max(1) as f64;
    let find_max = series.iter().map(|l| l.findings).max().unwrap_or(0).max(1) as f64;

    let mut c = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..cov_max * 1.1)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("coverage entries")
        .draw()
        .map_err(|e| e.to_string())?;
    c.draw_series(LineSeries::new(
        series.iter().map(|l| (l.elapsed_s, l.coverage as f64)),
        &BLUE,
    ))
    .map_err(|e| e.to_string())?;

    let mut c = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..find_max * 1.1)
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("findings")
        .draw()
        .map_err(|e| e.to_string())?;
    c.draw_series(LineSeries::new(
        series.iter().map(|l| (l.elapsed_s, l.findings as f64)),
        &RED,
    ))
    .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
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
}
