//! The demo's text output: the setup, the symptom table, what failed in
//! each row, and the verdict, all from a [`DemoReport`].

use super::{size, DemoReport, Row, RunOutcome, Workload};
use std::fmt::Write as _;

/// Short workload names for the evidence lines.
fn short(w: Workload, r: &DemoReport) -> String {
    match w {
        Workload::CpSmall | Workload::CpLarge => {
            r.workloads[Workload::ALL.iter().position(|x| *x == w).unwrap_or(0)].clone()
        }
        Workload::FioDirect => "fio direct".into(),
        Workload::FioBuffered => "fio buffered".into(),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The first-bad-block cell: the offset fio would name, and whether it is
/// the report's.
fn first_bad_cell(row: &Row) -> String {
    match row.symptoms.fio_first_bad_block {
        None => "no (none)".into(),
        Some(off) => format!(
            "{} (at {})",
            yes(row.symptoms.first_bad_matches),
            size_or_bytes(off)
        ),
    }
}

fn size_or_bytes(b: u64) -> String {
    if b == 0 {
        "0".into()
    } else {
        size(b)
    }
}

fn classes(o: &RunOutcome) -> String {
    let mut v: Vec<(&String, &u64)> = o.classes.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut s: Vec<String> = v.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if o.completion_mismatches > 0 {
        s.push(format!("completion mismatches {}", o.completion_mismatches));
    }
    s.join(", ")
}

/// The whole text report.
pub fn render(r: &DemoReport) -> String {
    let mut s = String::new();
    let small = &r.workloads[0];
    let large = &r.workloads[1];
    let _ = writeln!(
        s,
        "host: {} memory, {} free below 4 GiB (the page cache spills above 4 GiB after that)",
        size(r.mem),
        size(r.low_free)
    );
    let _ = writeln!(s, "HBA {}: {}", r.preset.name, r.preset.controller);
    let _ = writeln!(
        s,
        "HBA {}: the same controller; the OS splitter cuts at {} bytes",
        r.unsplit.name, r.unsplit.splitter.max_bytes_write
    );
    let _ = writeln!(
        s,
        "workloads: {}; each without and with a power cut after the final SYNCHRONIZE CACHE",
        r.workloads.join(", ")
    );
    let _ = writeln!(s);

    let headers = [
        "candidate".to_string(),
        format!("{small} ok"),
        format!("{large} corrupt"),
        "direct ok".into(),
        "no power cut needed".into(),
        "first bad block at 1M".into(),
        "reproduces".into(),
    ];
    let cells: Vec<[String; 7]> = r
        .rows
        .iter()
        .map(|row| {
            let y = &row.symptoms;
            [
                row.label.clone(),
                yes(y.small_ok).into(),
                yes(y.large_corrupt).into(),
                yes(y.direct_ok).into(),
                yes(y.no_power_cut_needed).into(),
                first_bad_cell(row),
                if y.reproduces {
                    "YES (5/5)".into()
                } else {
                    format!("no ({}/5)", y.matched)
                },
            ]
        })
        .collect();
    let mut w = headers.each_ref().map(|h| h.len());
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            w[i] = w[i].max(v.len());
        }
    }
    let line = |cols: &[String; 7]| {
        let mut l = String::new();
        for (i, v) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(v);
            } else {
                let _ = write!(l, "{v:<width$}  ", width = w[i]);
            }
        }
        l
    };
    let _ = writeln!(s, "{}", line(&headers));
    for c in &cells {
        let _ = writeln!(s, "{}", line(c));
    }
    let _ = writeln!(s);

    let _ = writeln!(
        s,
        "what failed (bad blocks by class; \"power cut only\": passes without the cut):"
    );
    for row in &r.rows {
        let mut parts = Vec::new();
        for w in Workload::ALL {
            let without = row.runs.iter().find(|o| o.workload == w && !o.power_cut);
            let with = row.runs.iter().find(|o| o.workload == w && o.power_cut);
            match (without, with) {
                (Some(a), _) if !a.passed => parts.push(format!("{}: {}", short(w, r), classes(a))),
                (_, Some(b)) if !b.passed => {
                    parts.push(format!("{} (power cut only): {}", short(w, r), classes(b)))
                }
                _ => {}
            }
        }
        let text = if parts.is_empty() {
            "every run verifies clean".to_string()
        } else {
            parts.join("; ")
        };
        let _ = writeln!(s, "  {}: {text}", row.label);
    }
    let _ = writeln!(s);

    let reproducing: Vec<&str> = r
        .rows
        .iter()
        .filter(|x| x.symptoms.reproduces)
        .map(|x| x.label.as_str())
        .collect();
    if reproducing.is_empty() {
        let _ = writeln!(
            s,
            "verdict: no candidate reproduces every symptom of the report."
        );
    } else {
        let _ = writeln!(
            s,
            "verdict: reproduces every symptom of the report: {}",
            reproducing.join(", ")
        );
    }
    match r.leading_row() {
        Some(row) => {
            let missing: Vec<&str> = super::symptoms::NAMES
                .iter()
                .zip(row.symptoms.holds())
                .filter(|(_, h)| !h)
                .map(|(n, _)| *n)
                .collect();
            let _ = write!(
                s,
                "leading cause: {} ({}/5 symptoms",
                row.label, row.symptoms.matched
            );
            if missing.is_empty() {
                let _ = writeln!(s, ")");
            } else {
                let _ = writeln!(s, "; not: {})", missing.join(", "));
            }
            if let Some(off) = row.symptoms.fio_first_bad_block {
                let _ = writeln!(
                    s,
                    "  fio would stop at: verify: bad header ... at file ... offset {off}, length {} (the report: offset {}, length 1048576)",
                    r.fio_bs,
                    super::symptoms::REPORTED_FIRST_BAD_OFFSET
                );
            }
            if let Some(f) = row
                .runs
                .iter()
                .find(|o| o.workload == Workload::FioBuffered && !o.power_cut)
                .and_then(|o| o.first_finding.as_ref())
            {
                let _ = writeln!(s, "  fio buffered, first offending command: {f}");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "leading cause: none matches more symptoms than a correct driver"
            );
        }
    }
    s
}
