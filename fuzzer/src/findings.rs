//! Findings: each new solution minimised, attributed to a catalogued bug,
//! and written as a reproducer a user can replay.
//!
//! `OUT/findings/<signature>/` holds:
//! - `repro.sczt`: the minimised program as the trace it executes (Submit
//!   events with SG lists and `Pattern` payloads, `PowerLoss` and `Reset`
//!   markers, completions), which `scuzz replay --to emulator --verify` runs;
//! - `report.md`: the decoded program, the violations, the classification,
//!   the catalogued bug it matches and the exact replay command;
//! - `program.json`: the minimised program (a corpus entry);
//! - `finding.json`: the signature and key, for `scuzz triage` and for
//!   deduplication across clients and resumed sessions.
//!
//! A signature is violation class × bug path × minimal op shape
//! (`stale--sync-cache-noop--WSP`): two solutions that minimise to the same
//! shape of the same class through the same bug are one finding.

use crate::harness::{Harness, Target};
use crate::program::{Op, ScsiProgram};
use crate::queue::StoredAt;
use crate::verdict::Verdict;
use emulator::{Bug, BugSet};
use libafl::inputs::Input;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use trace::file::{Compression, PayloadMode, TraceHeader, TraceWriter};
use trace::PhysAddr;

/// Why a finding could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FindingError {
    /// A file of the finding could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reproducer trace could not be written.
    #[error(transparent)]
    Trace(#[from] trace::file::TraceError),
    /// The program could not be serialised.
    #[error("{0}")]
    Serialize(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FindingError + '_ {
    move |source| FindingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Longest shape kept verbatim in a directory name; longer ones are cut and
/// suffixed with a hash so names stay short and distinct.
const SHAPE_IN_NAME: usize = 24;

/// A finding's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature {
    /// Violation class of the first violation.
    pub class: String,
    /// Catalogued bugs the violation depends on (`none` if it happens with
    /// every bug off).
    pub bug: String,
    /// Op shape of the minimised program.
    pub shape: String,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = if self.shape.len() <= SHAPE_IN_NAME {
            self.shape.clone()
        } else {
            let h = self.shape.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            format!("{}~{:08x}", &self.shape[..SHAPE_IN_NAME], h as u32)
        };
        write!(f, "{}--{}--{}", self.class, self.bug, shape)
    }
}

/// Does `sig` answer `want`: `BUG` (any class), `BUG/data` (a class about
/// stored data) or `BUG/CLASS`?
pub fn matches(sig: &Signature, want: &str) -> bool {
    let (bug, class) = want.split_once('/').unwrap_or((want, ""));
    let bug_ok = sig.bug.split('+').any(|b| b == bug);
    let class_ok = match class {
        "" => true,
        "data" => is_data_class(&sig.class),
        c => sig.class == c,
    };
    bug_ok && class_ok
}

/// Classes about what the medium holds (the oracle's block classes), as
/// opposed to status, sense and residual.
pub fn is_data_class(class: &str) -> bool {
    matches!(
        class,
        "stale" | "misdirected" | "dropped" | "torn" | "garbage" | "unexpected"
    )
}

/// `finding.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingRecord {
    /// The signature.
    pub signature: Signature,
    /// The campaign key (class × bug path) that first found it.
    pub key: String,
    /// Bugs switched on in the campaign.
    pub campaign_bugs: Vec<String>,
    /// The verdict of the minimised program.
    pub verdict: Verdict,
    /// Ops before and after minimisation.
    pub ops_before: usize,
    /// Ops after minimisation.
    pub ops_after: usize,
    /// When it was written (Unix ms).
    pub unix_ms: u64,
}

/// The keys of every finding under `root` (`OUT/findings`).
pub fn keys_on_disk(root: &Path) -> Vec<String> {
    records_on_disk(root)
        .into_iter()
        .map(|(_, r)| r.key)
        .collect()
}

/// Every finding under `root` with its directory, in name order.
pub fn records_on_disk(root: &Path) -> Vec<(PathBuf, FindingRecord)> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, FindingRecord)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let text = fs::read_to_string(e.path().join("finding.json")).ok()?;
            Some((e.path(), serde_json::from_str(&text).ok()?))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Number of complete findings under `root`.
pub fn count_on_disk(root: &Path) -> usize {
    let Ok(rd) = fs::read_dir(root) else { return 0 };
    rd.filter_map(Result::ok)
        .filter(|e| e.path().join("finding.json").is_file())
        .count()
}

/// Every program stored in `dir` (a corpus directory) and in its
/// subdirectories one level down (a campaign's queue holds one per client),
/// each once: the entries of queue packs ([`crate::queue`]) and program
/// files (seeds, and queues of campaigns from before packs), skipping
/// hidden files (LibAFL's lock and metadata files) and what does not
/// parse.
pub fn load_programs(dir: &Path) -> Vec<ScsiProgram> {
    load_queue(dir).programs
}

/// What [`load_queue`] found.
#[derive(Debug, Default)]
pub struct QueueLoad {
    /// Every program, each once, in file order.
    pub programs: Vec<ScsiProgram>,
    /// What could not be read, naming the file (and the record's offset
    /// in a pack): a record torn by a kill mid-write is the usual one.
    pub damage: Vec<String>,
    /// Every pack read.
    pub packs: Vec<PathBuf>,
    /// Where each program lies, beside `programs`: its pack (an index into
    /// `packs`) and record, for a resumed campaign's corpus to point at
    /// ([`crate::queue::PackedCorpus::expect_stored`]); `None` for a
    /// program of its own file.
    pub origins: Vec<Option<StoredAt>>,
}

/// [`load_programs`], also reporting what it had to skip.
pub fn load_queue(dir: &Path) -> QueueLoad {
    fn visible(dir: &Path) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        v.sort();
        v
    }
    let mut paths = Vec::new();
    for p in visible(dir) {
        if p.is_dir() {
            paths.extend(visible(&p).into_iter().filter(|q| q.is_file()));
        } else if p.is_file() {
            paths.push(p);
        }
    }
    let mut out = QueueLoad::default();
    // Each program with where it is stored (in a pack).
    let mut progs: Vec<(ScsiProgram, Option<StoredAt>)> = Vec::new();
    for p in &paths {
        if !crate::queue::is_pack(p) {
            match ScsiProgram::from_file(p) {
                Ok(prog) => progs.push((prog, None)),
                Err(e) => out.damage.push(e.to_string()),
            }
            continue;
        }
        match crate::queue::read_pack(p) {
            Ok(read) => {
                let pack = out.packs.len();
                out.packs.push(p.clone());
                for (k, (bytes, slot)) in read.entries.iter().zip(&read.slots).enumerate() {
                    match ScsiProgram::from_saved(bytes) {
                        Ok(prog) => progs.push((prog, Some((pack, *slot)))),
                        Err(e) => out.damage.push(format!("{}: entry {k}: {e}", p.display())),
                    }
                }
                out.damage.extend(read.damage.map(|d| d.to_string()));
            }
            Err(e) => out.damage.push(e.to_string()),
        }
    }
    // A program hashes field by field: under std's SipHash that, and the
    // set's regrowth, were a quarter of loading a grown queue. Queue files
    // are the campaign's own, not an adversary's, so the fast hasher does.
    let mut seen = std::collections::HashSet::with_capacity_and_hasher(
        progs.len(),
        trace::hash::BuildFastHasher::default(),
    );
    let first: Vec<bool> = progs.iter().map(|(p, _)| seen.insert(p)).collect();
    drop(seen);
    for ((p, origin), first) in progs.into_iter().zip(first) {
        if first {
            out.programs.push(p);
            out.origins.push(origin);
        }
    }
    out
}

/// Does `v` still show the violation class `class`?
fn shows(v: &Verdict, class: &str) -> bool {
    v.violations.iter().any(|x| x.class == class)
}

/// Most runs one minimisation may spend: enough to reduce a 256-op program
/// to its core, bounded so a campaign never stalls on one finding.
pub const MINIMIZE_BUDGET: usize = 4000;

/// Shrinks `program` while it still shows a violation of `class`: drops
/// ops (halves, quarters, ... single ops), merges SG entries, shrinks
/// transfer lengths, then lowers addresses and LBAs. Every candidate is
/// fitted and run; the result is the smallest program that still violates.
pub fn minimize(h: &mut Harness, program: &ScsiProgram, class: &str) -> ScsiProgram {
    let limits = h.limits();
    let mut best = program.clone();
    best.fit(&limits);
    let mut budget = MINIMIZE_BUDGET;
    let check = |h: &mut Harness, p: &mut ScsiProgram, budget: &mut usize| -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        p.fit(&limits);
        shows(&h.run(p), class)
    };
    loop {
        let before = best.clone();
        // Drop chunks of ops, largest first.
        let mut chunk = best.ops.len().div_ceil(2).max(1);
        loop {
            let mut i = 0;
            while i < best.ops.len() {
                let mut cand = best.clone();
                let end = (i + chunk).min(cand.ops.len());
                cand.ops.drain(i..end);
                if check(h, &mut cand, &mut budget) {
                    best = cand;
                } else {
                    i += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
        // Merge SG lists into one entry, else neighbouring pairs.
        for i in 0..best.ops.len() {
            let Some(sg) = best.ops[i].sg() else { continue };
            if sg.len() < 2 {
                continue;
            }
            let mut cand = best.clone();
            let sg = cand.ops[i].sg_mut().expect("has an SG list");
            let total: u64 = sg.iter().map(|s| u64::from(s.len)).sum();
            if let Ok(total) = u32::try_from(total) {
                sg.truncate(1);
                sg[0].len = total;
                if check(h, &mut cand, &mut budget) {
                    best = cand;
                    continue;
                }
            }
            let mut k = 0;
            while k + 1 < best.ops[i].sg().map_or(0, <[_]>::len) {
                let mut cand = best.clone();
                let sg = cand.ops[i].sg_mut().expect("has an SG list");
                if let Some(len) = sg[k].len.checked_add(sg[k + 1].len) {
                    sg[k].len = len;
                    sg.remove(k + 1);
                    if check(h, &mut cand, &mut budget) {
                        best = cand;
                        continue;
                    }
                }
                k += 1;
            }
        }
        // Shrink lengths.
        for i in 0..best.ops.len() {
            loop {
                let mut cand = best.clone();
                let shrunk = match &mut cand.ops[i] {
                    Op::Write(t) | Op::Read(t) if t.blocks > 1 => {
                        t.blocks /= 2;
                        true
                    }
                    Op::SyncCache { blocks, .. }
                    | Op::WriteSame { blocks, .. }
                    | Op::Unmap { blocks, .. }
                        if *blocks > 1 =>
                    {
                        *blocks /= 2;
                        true
                    }
                    _ => false,
                };
                if !shrunk || !check(h, &mut cand, &mut budget) {
                    break;
                }
                best = cand;
            }
        }
        // Lower addresses: the lowest above 4 GiB if above, else low memory.
        for i in 0..best.ops.len() {
            let n = best.ops[i].sg().map_or(0, <[_]>::len);
            for k in 0..n {
                let addr = best.ops[i].sg().expect("has an SG list")[k].addr.0;
                let lower = if addr >= 1 << 32 {
                    1 << 32
                } else {
                    crate::program::DEFAULT_BUFFER
                };
                if addr <= lower {
                    continue;
                }
                let mut cand = best.clone();
                cand.ops[i].sg_mut().expect("has an SG list")[k].addr =
                    PhysAddr(lower + (k as u64) * 0x10_0000);
                if check(h, &mut cand, &mut budget) {
                    best = cand;
                }
            }
        }
        if best == before || budget == 0 {
            break;
        }
    }
    best
}

/// The catalogued bugs the violation of `class` depends on: those among
/// `target.bugs` whose removal makes it disappear. Empty when it shows
/// with every bug off (a disagreement between device model and oracle).
pub fn attribute(target: &Target, program: &ScsiProgram, class: &str) -> Vec<Bug> {
    if target.device.is_external() {
        // A real target's bugs are its own: nothing to switch off.
        return Vec::new();
    }
    let on: Vec<Bug> = target.bugs.iter().collect();
    let mut none = target.clone();
    none.bugs = BugSet::NONE;
    if shows(&Harness::new(none).run(program), class) {
        return Vec::new();
    }
    let culprits: Vec<Bug> = on
        .iter()
        .copied()
        .filter(|b| {
            let mut t = target.clone();
            t.bugs = on.iter().copied().filter(|x| x != b).collect();
            !shows(&Harness::new(t).run(program), class)
        })
        .collect();
    if culprits.is_empty() {
        // Only a combination triggers it: name them all.
        on
    } else {
        culprits
    }
}

/// Where a campaign writes its findings.
#[derive(Debug, Clone)]
pub struct FindingsDir {
    root: PathBuf,
    target: Target,
}

impl FindingsDir {
    /// Findings under `root` (`OUT/findings`) of a campaign on `target`.
    pub fn new(root: PathBuf, target: Target) -> FindingsDir {
        FindingsDir { root, target }
    }

    /// Minimises `program`, attributes it, and writes it unless a finding
    /// with the same signature exists. Returns the new directory, or `None`
    /// if the program no longer violates or the signature is known.
    pub fn record(
        &self,
        h: &mut Harness,
        program: &ScsiProgram,
        key: Option<&str>,
    ) -> Result<Option<PathBuf>, FindingError> {
        let verdict = h.run(program);
        let Some(class) = verdict.class().map(str::to_string) else {
            return Ok(None);
        };
        let key = key.map_or_else(|| verdict.key().unwrap_or_default(), str::to_string);
        let min = minimize(h, program, &class);
        let culprits = attribute(&self.target, &min, &class);
        let bug = if culprits.is_empty() {
            "none".to_string()
        } else {
            culprits
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join("+")
        };
        let sig = Signature {
            class: class.clone(),
            bug,
            shape: min.shape(),
        };
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let dir = self.root.join(sig.to_string());
        let tmp = self.root.join(format!(".{}.{}", sig, std::process::id()));
        if dir.exists() {
            return Ok(None);
        }
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let (mut final_verdict, mut events) = h.record(&min);
        // A real target is stateful: what survives a power cycle may differ
        // run to run, so give the reproducer a few chances to show it.
        let mut tries = 1;
        while self.target.device.is_external()
            && final_verdict.class() != Some(class.as_str())
            && tries < 5
        {
            (final_verdict, events) = h.record(&min);
            tries += 1;
        }
        let events = reference_completions(&self.target, &min, events);
        write_repro(&tmp.join("repro.sczt"), &self.target, &sig, &events)?;
        // Pretty here: a finding's program is read by people.
        let json =
            serde_json::to_vec_pretty(&min).map_err(|e| FindingError::Serialize(e.to_string()))?;
        let pj = tmp.join("program.json");
        fs::write(&pj, json).map_err(io(&pj))?;
        let record = FindingRecord {
            signature: sig.clone(),
            key,
            campaign_bugs: self
                .target
                .bugs
                .iter()
                .map(|b| b.name().to_string())
                .collect(),
            verdict: final_verdict.clone(),
            ops_before: program.ops.len(),
            ops_after: min.ops.len(),
            unix_ms: crate::campaign::unix_ms(),
        };
        let report = report_md(
            &self.target,
            &record,
            &min,
            &culprits,
            &dir.join("repro.sczt"),
        );
        let rp = tmp.join("report.md");
        fs::write(&rp, report).map_err(io(&rp))?;
        let fp = tmp.join("finding.json");
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| FindingError::Serialize(e.to_string()))?;
        fs::write(&fp, json).map_err(io(&fp))?;
        // Rename is atomic: a finding is either complete or absent, and of
        // two clients racing on one signature only one wins.
        match fs::rename(&tmp, &dir) {
            Ok(()) => Ok(Some(dir)),
            Err(_) if dir.exists() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(None)
            }
            Err(e) => Err(io(&dir)(e)),
        }
    }
}

/// The reproducer's events with the completions a correct driver gives:
/// a replay then flags a wrong status or sense as a completion mismatch,
/// and a replay with the bug off matches the recording exactly. Kept as
/// recorded if the bug changes which commands the harness sends.
pub fn reference_completions(
    target: &Target,
    program: &ScsiProgram,
    events: Vec<trace::Event>,
) -> Vec<trace::Event> {
    use trace::Event;
    if target.device.is_external() {
        // No correct twin of a real target to ask.
        return events;
    }
    let mut clean = target.clone();
    clean.bugs = BugSet::NONE;
    let (_, reference) = Harness::new(clean).record(program);
    let submits = |ev: &[Event]| -> Vec<trace::Submit> {
        ev.iter()
            .filter_map(|e| {
                if let Event::Submit(s) = e {
                    Some(s.clone())
                } else {
                    None
                }
            })
            .collect()
    };
    if reference.len() != events.len() || submits(&reference) != submits(&events) {
        return events;
    }
    reference
}

/// Writes `events` as a reproducer trace for `target`.
pub fn write_repro(
    path: &Path,
    target: &Target,
    sig: &Signature,
    events: &[trace::Event],
) -> Result<(), FindingError> {
    let mut header = TraceHeader::new(format!("scuzz-fuzzer {}", env!("CARGO_PKG_VERSION")));
    header.block_size = target.block_size;
    header.capacity_blocks = target.capacity_blocks;
    header.hba = Some(target.preset.clone());
    // Writes carry self-describing blocks; MODE SELECT, WRITE SAME and
    // UNMAP carry their parameter data or block as bytes. A reproducer
    // that has any of those is a mixed trace (a Pattern header would refuse
    // them, and the finding would be lost).
    let pattern_only = events.iter().all(|ev| match ev {
        trace::Event::Submit(s) => PayloadMode::Pattern.permits(&s.payload),
        trace::Event::Complete(c) => PayloadMode::Pattern.permits(&c.payload),
        _ => true,
    });
    header.payload_mode = if pattern_only {
        PayloadMode::Pattern
    } else {
        PayloadMode::Mixed
    };
    header
        .labels
        .insert("workload".into(), "fuzz-reproducer".into());
    header.labels.insert("signature".into(), sig.to_string());
    header.labels.insert("bug".into(), sig.bug.clone());
    header
        .labels
        .insert("emulator.seed".into(), target.device_seed.to_string());
    header
        .labels
        .insert("device".into(), target.device.describe());
    let mut w = TraceWriter::create(path, &header, Compression::None)?;
    // The harness's TEST UNIT READY probes are left out: a replayer clears
    // the unit attention of a power loss or reset itself, so recorded UA
    // completions would only read as mismatches.
    let mut probes = std::collections::HashSet::new();
    for ev in events {
        match ev {
            trace::Event::Submit(s) if s.cdb.first() == Some(&0x00) => {
                probes.insert(s.seq);
            }
            trace::Event::Complete(c) if probes.contains(&c.seq) => {}
            ev => w.write(ev)?,
        }
    }
    w.sync()?;
    w.finish()?;
    Ok(())
}

/// The replay command for a finding.
pub fn replay_command(target: &Target, repro: &Path, bugs: &[Bug]) -> String {
    if let crate::device::DeviceSpec::Iscsi(t) = &target.device {
        let power = match &t.power_cycle {
            crate::device::PowerCycle::LunReset => String::new(),
            crate::device::PowerCycle::ColdReset => " --cold-reset".to_string(),
            crate::device::PowerCycle::Command(c) => {
                format!(" --power-cycle-cmd '{}'", c.replace('\'', r"'\''"))
            }
        };
        return format!(
            "scuzz replay --to {}{power} --fresh-data --verify {}",
            target.device.describe(),
            repro.display()
        );
    }
    let mut cmd = format!(
        "scuzz replay --to emulator --hba {} --block-size {} --capacity {} --seed {}",
        target.preset.name,
        target.block_size,
        target
            .capacity_blocks
            .saturating_mul(u64::from(target.block_size)),
        target.device_seed
    );
    for b in bugs {
        cmd.push_str(&format!(" --bug {}", b.name()));
    }
    cmd.push_str(&format!(" --verify {}", repro.display()));
    cmd
}

fn report_md(
    target: &Target,
    r: &FindingRecord,
    min: &ScsiProgram,
    culprits: &[Bug],
    repro: &Path,
) -> String {
    let mut s = String::new();
    let sig = &r.signature;
    s.push_str(&format!("# Finding `{sig}`\n\n"));
    s.push_str(&format!(
        "- **Classification:** {}\n- **Catalogued bug:** {}\n- **Device:** {}\n- **Campaign bugs:** {}\n- **Minimised:** {} ops to {} (shape `{}`)\n\n",
        sig.class,
        if target.device.is_external() {
            "not applicable: found on a real target".to_string()
        } else if culprits.is_empty() {
            "none: the violation shows with every bug off, so the device model and the oracle disagree".to_string()
        } else {
            culprits.iter().map(|b| format!("`{}`", b.name())).collect::<Vec<_>>().join(" + ")
        },
        if target.device.is_external() {
            format!(
                "`{}`, {} blocks of {} bytes (stateful: a replay starts from whatever the medium holds)",
                target.device.describe(),
                target.capacity_blocks,
                target.block_size
            )
        } else {
            format!(
                "{} blocks of {} bytes behind `{}` ({}), emulator seed {}",
                target.capacity_blocks,
                target.block_size,
                target.preset.name,
                target.preset.controller,
                target.device_seed
            )
        },
        if r.campaign_bugs.is_empty() { "none".to_string() } else { r.campaign_bugs.join(", ") },
        r.ops_before,
        r.ops_after,
        sig.shape,
    ));
    s.push_str("## Program\n\n```text\n");
    s.push_str(&min.to_string());
    if min.ops.iter().any(|o| matches!(o, Op::Write(_))) {
        s.push_str(
            "   +  POWER LOSS, then READ of every block written (crash-consistency check)\n",
        );
    }
    s.push_str("```\n\n");
    s.push_str("## Violations\n\n");
    for v in r.verdict.violations.iter().take(20) {
        s.push_str(&format!("- {v}\n"));
    }
    if r.verdict.violations.len() > 20 {
        s.push_str(&format!("- ... {} more\n", r.verdict.violations.len() - 20));
    }
    s.push_str("\n## Replay\n\n```sh\n");
    s.push_str(&replay_command(target, repro, culprits));
    if target.device.is_external() {
        s.push_str("\n```\n\nThe target keeps its medium between runs, so a replay may need a few tries to show the violation again.\n");
        return s;
    }
    s.push_str("\n```\n\nWith the bug switched off the same trace passes:\n\n```sh\n");
    s.push_str(&replay_command(target, repro, &[]));
    s.push_str("\n```\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use libafl::inputs::Input;

    /// A minimal program can keep a MODE SELECT (its parameter list is
    /// bytes) beside pattern writes: its reproducer is written as a mixed
    /// trace, not refused (which lost the finding).
    #[test]
    fn a_reproducer_with_parameter_data_is_written_as_a_mixed_trace() {
        use crate::program::{Op, Transfer};
        let mut target = Target::new(trace::HbaPreset::lsi3108());
        target.bugs = emulator::BugSet::of(&[emulator::Bug::SyncCacheNoop]);
        let program = ScsiProgram::new(vec![
            Op::SetWce(true),
            Op::Write(Transfer {
                lba: trace::Lba(0),
                blocks: 8,
                fua: false,
                sg: vec![trace::Segment::new(0x10_0000, 4096)],
                extra: 0,
            }),
            Op::SyncCache {
                lba: trace::Lba(0),
                blocks: 0,
                immed: false,
            },
        ]);
        let (verdict, events) = crate::harness::Harness::new(target.clone()).record(&program);
        assert!(!verdict.passed(), "sync-cache-noop loses the write");
        assert!(events.iter().any(|e| matches!(e,
            trace::Event::Submit(s) if matches!(s.payload, trace::Payload::Full(_)))));
        let dir = std::env::temp_dir().join(format!("scuzz-repro-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("repro.sczt");
        let sig = Signature {
            class: "dropped".into(),
            bug: "sync-cache-noop".into(),
            shape: program.shape(),
        };
        write_repro(&path, &target, &sig, &events).unwrap();
        let r = trace::file::TraceReader::open(&path).unwrap();
        assert_eq!(r.header().payload_mode, PayloadMode::Mixed);
        let read: Vec<_> = r.map(Result::unwrap).collect();
        assert!(read.iter().any(|e| matches!(e, trace::Event::Submit(s)
            if matches!(s.payload, trace::Payload::Pattern { .. }))));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A queue of client directories (and, from campaigns before them,
    /// entries at the top) loads every program once, from packs and
    /// program files; lock files and damaged entries are skipped and
    /// reported.
    #[test]
    fn a_queue_loads_each_clients_entries_once() {
        let dir = std::env::temp_dir().join(format!("scuzz-queue-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let prog = |n: u32| {
            ScsiProgram::new(vec![crate::program::Op::SyncCache {
                lba: trace::Lba(u64::from(n)),
                blocks: 0,
                immed: false,
            }])
        };
        for c in ["c0", "c1"] {
            fs::create_dir_all(dir.join(c)).unwrap();
        }
        prog(1).to_file(dir.join("c0/a")).unwrap();
        prog(2).to_file(dir.join("c0/b")).unwrap();
        prog(2).to_file(dir.join("c1/b")).unwrap(); // imported by c1
        prog(3).to_file(dir.join("c1/c")).unwrap();
        prog(4).to_file(dir.join("legacy")).unwrap();
        fs::write(dir.join("c1/.c"), b"1").unwrap();
        fs::write(dir.join("c1/torn"), b"{\"ops\":[").unwrap();
        // A pack whose last record a kill tore.
        let mut pack = crate::queue::Pack::create(&dir.join("c2")).unwrap();
        for n in [3, 5, 6] {
            pack.append(&prog(n).to_queue_bytes().unwrap()).unwrap();
        }
        let bytes = fs::read(pack.path()).unwrap();
        fs::write(pack.path(), &bytes[..bytes.len() - 2]).unwrap();
        let got = load_queue(&dir);
        assert_eq!(
            got.programs,
            vec![prog(1), prog(2), prog(3), prog(5), prog(4)]
        );
        assert_eq!(got.damage.len(), 2, "{:?}", got.damage);
        assert!(got.damage[0].contains("c1/torn"), "{:?}", got.damage);
        assert!(got.damage[1].contains("torn entry"), "{:?}", got.damage);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_shapes_are_cut_and_hashed() {
        let a = Signature {
            class: "stale".into(),
            bug: "sync-cache-noop".into(),
            shape: "WSP".into(),
        };
        assert_eq!(a.to_string(), "stale--sync-cache-noop--WSP");
        let long = "W".repeat(40);
        let b = Signature {
            shape: long.clone(),
            ..a.clone()
        };
        let c = Signature {
            shape: format!("{long}R"),
            ..a
        };
        assert_ne!(b.to_string(), c.to_string());
        assert!(b.to_string().len() < 80);
    }
}
