//! The report's symptoms, each computed from the replays of one candidate.
//!
//! The report (`lsi3108-dext-report.txt`) observed, without any power cut:
//! a 128 MB copy verifies, a 256 MB copy does not, `fio --direct=1`
//! verifies at every size, and buffered fio with `bs=1M` stops at
//! `verify: bad header ... offset 1048576, length 1048576`. A candidate
//! cause reproduces the report when every one of those holds in its runs.

use super::{Row, RunOutcome, Workload};
use serde::Serialize;

/// fio's first bad block in the report: `offset 1048576, length 1048576`.
pub const REPORTED_FIRST_BAD_OFFSET: u64 = 1_048_576;

/// The names of the symptom columns, in table order.
pub const NAMES: [&str; 5] = [
    "small ok",
    "large corrupt",
    "direct ok",
    "no power cut needed",
    "first bad block at 1 MiB",
];

/// What one candidate's runs show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symptoms {
    /// The small `cp` verifies clean (no power cut).
    pub small_ok: bool,
    /// The large `cp` fails verification (no power cut).
    pub large_corrupt: bool,
    /// Direct-I/O fio verifies clean (no power cut).
    pub direct_ok: bool,
    /// A workload the report saw fail (the large `cp`, buffered fio) fails
    /// without a power loss.
    pub no_power_cut_needed: bool,
    /// Buffered fio's first bad block as fio names it: the file offset of
    /// the `bs`-sized block holding the first bad byte (no power cut).
    pub fio_first_bad_block: Option<u64>,
    /// That block is the report's (offset 1048576).
    pub first_bad_matches: bool,
    /// Workloads that fail only when power is cut after the final flush.
    pub power_cut_only: Vec<Workload>,
    /// How many of the five symptoms hold.
    pub matched: u32,
    /// All five hold.
    pub reproduces: bool,
}

fn find(runs: &[RunOutcome], w: Workload, power_cut: bool) -> Option<&RunOutcome> {
    runs.iter()
        .find(|r| r.workload == w && r.power_cut == power_cut)
}

impl Symptoms {
    /// Derives the symptoms from one candidate's runs; `fio_bs` is the fio
    /// job's block size (fio reports bad blocks at its granularity).
    pub fn from_runs(runs: &[RunOutcome], fio_bs: u64) -> Symptoms {
        let passed = |w, pc| find(runs, w, pc).is_some_and(|r| r.passed);
        let failed = |w, pc| find(runs, w, pc).is_some_and(|r| !r.passed);
        let small_ok = passed(Workload::CpSmall, false);
        let large_corrupt = failed(Workload::CpLarge, false);
        let direct_ok = passed(Workload::FioDirect, false);
        let no_power_cut_needed =
            failed(Workload::CpLarge, false) || failed(Workload::FioBuffered, false);
        let fio_first_bad_block = find(runs, Workload::FioBuffered, false)
            .filter(|r| !r.passed)
            .and_then(|r| r.first_bad_offset)
            .map(|off| off / fio_bs.max(1) * fio_bs.max(1));
        let first_bad_matches = fio_first_bad_block == Some(REPORTED_FIRST_BAD_OFFSET);
        let power_cut_only = Workload::ALL
            .into_iter()
            .filter(|w| failed(*w, true) && !failed(*w, false))
            .collect();
        let holds = [
            small_ok,
            large_corrupt,
            direct_ok,
            no_power_cut_needed,
            first_bad_matches,
        ];
        let matched = holds.iter().filter(|h| **h).count() as u32;
        Symptoms {
            small_ok,
            large_corrupt,
            direct_ok,
            no_power_cut_needed,
            fio_first_bad_block,
            first_bad_matches,
            power_cut_only,
            matched,
            reproduces: matched == holds.len() as u32,
        }
    }

    /// Each symptom, in [`NAMES`] order.
    pub fn holds(&self) -> [bool; 5] {
        [
            self.small_ok,
            self.large_corrupt,
            self.direct_ok,
            self.no_power_cut_needed,
            self.first_bad_matches,
        ]
    }
}

/// The row a fuzz campaign should chase: the bug matching the most
/// symptoms (the first in catalogue order on a tie), provided it matches
/// more than a correct driver does.
pub fn leading(rows: &[Row]) -> Option<usize> {
    let control = rows
        .iter()
        .filter(|r| r.candidate.bug.is_none())
        .map(|r| r.symptoms.matched)
        .max()
        .unwrap_or(0);
    let mut best: Option<usize> = None;
    for (i, r) in rows.iter().enumerate() {
        if r.candidate.bug.is_none() || r.symptoms.matched <= control {
            continue;
        }
        if best.is_none_or(|b| r.symptoms.matched > rows[b].symptoms.matched) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(w: Workload, power_cut: bool, passed: bool, first_bad: Option<u64>) -> RunOutcome {
        RunOutcome {
            workload: w,
            power_cut,
            passed,
            blocks_checked: 10,
            data_violations: u64::from(!passed),
            completion_mismatches: 0,
            classes: BTreeMap::new(),
            first_bad_offset: first_bad,
            first_bad_class: None,
            first_finding: None,
        }
    }

    fn runs(fails: &[(Workload, bool)], fio_bad: Option<u64>) -> Vec<RunOutcome> {
        let mut v = Vec::new();
        for w in Workload::ALL {
            for pc in [false, true] {
                let bad = fails.contains(&(w, pc));
                let off = if w == Workload::FioBuffered && !pc {
                    fio_bad
                } else {
                    Some(0)
                };
                v.push(run(w, pc, !bad, if bad { off } else { None }));
            }
        }
        v
    }

    #[test]
    fn the_reports_pattern_matches_all_five() {
        let r = runs(
            &[
                (Workload::CpLarge, false),
                (Workload::CpLarge, true),
                (Workload::FioBuffered, false),
                (Workload::FioBuffered, true),
            ],
            Some(1_048_576 + 4096),
        );
        let s = Symptoms::from_runs(&r, 1 << 20);
        assert_eq!(s.fio_first_bad_block, Some(1 << 20));
        assert!(s.reproduces, "{s:?}");
        assert!(s.power_cut_only.is_empty());
    }

    #[test]
    fn a_lost_flush_needs_the_power_cut() {
        let r = runs(
            &[
                (Workload::CpSmall, true),
                (Workload::CpLarge, true),
                (Workload::FioDirect, true),
                (Workload::FioBuffered, true),
            ],
            None,
        );
        let s = Symptoms::from_runs(&r, 1 << 20);
        assert_eq!(s.holds(), [true, false, true, false, false]);
        assert_eq!(s.matched, 2);
        assert_eq!(s.power_cut_only.len(), 4);
    }

    #[test]
    fn a_first_bad_block_elsewhere_is_not_the_reports() {
        let r = runs(
            &[(Workload::CpLarge, false), (Workload::FioBuffered, false)],
            Some(128 << 20),
        );
        let s = Symptoms::from_runs(&r, 1 << 20);
        assert_eq!(s.fio_first_bad_block, Some(128 << 20));
        assert!(!s.first_bad_matches && !s.reproduces);
        assert_eq!(s.matched, 4);
    }
}
