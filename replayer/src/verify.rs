//! `--verify`: every block read back is judged by the consistency oracle
//! (design §6) and classified by its self-description (design §4); every
//! completion is compared with the recording's. The result names the first
//! offending commands in fio's words where fio has them (`verify: bad
//! header ... at offset N, length L`) followed by Scuzz's diagnosis
//! (`misdirected: block holds data written for LBA ...`), and counts each
//! class across the run.

use crate::backend::Outcome;
use crate::extents::Extents;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use trace::oracle::{InitialContent, Oracle, WriteData};
use trace::sense::describe_status;
use trace::Complete;

/// How many offending commands a report names.
pub const FIRST_FINDINGS: usize = 10;

/// Which command a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRef {
    /// The trace's sequence number; `None` for the closing read-back.
    pub seq: Option<u64>,
    /// Pass of `--repeat` (0-based).
    pub pass: u32,
    /// The CDB, formatted only when a finding names it.
    pub cdb: CdbText,
}

/// A CDB as a finding shows it: decoded (`WRITE(10) lba=.. blocks=..`), or
/// its bytes when it does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdbText {
    /// Decoded.
    Decoded(trace::Cdb),
    /// Bytes that do not decode.
    Raw(Vec<u8>),
}

impl CdbText {
    /// Decodes `bytes` if it can.
    pub fn new(bytes: &[u8]) -> CdbText {
        trace::Cdb::parse(bytes).map_or_else(|_| CdbText::Raw(bytes.to_vec()), CdbText::Decoded)
    }
}

impl fmt::Display for CdbText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdbText::Decoded(c) => write!(f, "{c}"),
            CdbText::Raw(b) => write!(f, "CDB {b:02x?}"),
        }
    }
}

impl fmt::Display for CommandRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(s) if self.pass > 0 => write!(f, "seq {s} (pass {}) {}", self.pass + 1, self.cdb),
            Some(s) => write!(f, "seq {s} {}", self.cdb),
            None => write!(f, "read-back {}", self.cdb),
        }
    }
}

/// One offending command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The command, as `seq N DECODED-CDB`.
    pub command: String,
    /// What was wrong with it.
    pub message: String,
}

/// What verification found across the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySummary {
    /// Blocks read back and judged.
    pub blocks_checked: u64,
    /// Blocks per classification (`ok`, `stale`, `misdirected`, `dropped`,
    /// `torn`, `garbage`, ...).
    pub classes: BTreeMap<String, u64>,
    /// Blocks the oracle rejected.
    pub data_violations: u64,
    /// Completions whose status or sense differ from the recording.
    pub completion_mismatches: u64,
    /// The first offending commands, in the order found.
    pub first: Vec<Finding>,
    /// The first run of bad blocks, in the order found: where fio would
    /// have stopped (`verify: bad header ... at offset N`), kept as numbers
    /// so a caller can map it to a file offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<BadBlocks>,
}

/// A run of blocks verification rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadBlocks {
    /// Logical unit.
    pub lun: u64,
    /// First LBA of the run.
    pub lba: u64,
    /// Blocks in the run.
    pub blocks: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// Classification (`misdirected`, `dropped`, ...).
    pub class: String,
}

impl VerifySummary {
    /// No data violation and every completion as recorded.
    pub fn passed(&self) -> bool {
        self.data_violations == 0 && self.completion_mismatches == 0
    }

    /// Blocks found in `class`.
    pub fn count(&self, class: &str) -> u64 {
        self.classes.get(class).copied().unwrap_or(0)
    }

    /// The most frequent violation class, for a suite's expectation.
    pub fn dominant_violation(&self) -> Option<&str> {
        self.classes
            .iter()
            .filter(|(k, _)| k.as_str() != "ok")
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| k.as_str())
    }

    /// The verification block of `summary.txt`.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "verify: {} ({} blocks checked, {} data violations, {} completion mismatches)\n",
            if self.passed() { "PASS" } else { "FAIL" },
            self.blocks_checked,
            self.data_violations,
            self.completion_mismatches
        );
        s.push_str("  classification:");
        for class in [
            "ok",
            "stale",
            "misdirected",
            "dropped",
            "torn",
            "garbage",
            "unexpected",
            "bad-residual",
        ] {
            s.push_str(&format!(" {class} {}", self.count(class)));
        }
        s.push('\n');
        if !self.first.is_empty() {
            s.push_str("  first offending commands:\n");
            for f in &self.first {
                s.push_str(&format!("    {}: {}\n", f.command, f.message));
            }
        }
        s
    }
}

/// The verifier's state: one oracle and one written-extent set per LUN.
///
/// Commands are known to the oracle by a verification sequence number the
/// engine assigns ([`oracle_seq`]): the trace's own sequence number on the
/// first pass, so the oracle's messages name the recording's commands.
pub struct Verifier {
    initial: InitialContent,
    oracles: HashMap<u64, Oracle>,
    written: HashMap<u64, Extents>,
    summary: VerifySummary,
}

/// The oracle's name for trace command `seq` on pass `pass`: the trace's
/// own number on the first pass, offset by 2^40 per later pass.
pub fn oracle_seq(pass: u32, seq: u64) -> u64 {
    (u64::from(pass) << 40).wrapping_add(seq)
}

/// Oracle sequence numbers of the closing read-back's commands.
pub const READ_BACK_SEQ: u64 = 1 << 62;

impl Verifier {
    /// A verifier that has seen nothing. `initial`: what a never-written
    /// block reads as on the backend (zeros on a fresh emulator, unknown on
    /// a real disk).
    pub fn new(initial: InitialContent) -> Verifier {
        Verifier {
            initial,
            oracles: HashMap::new(),
            written: HashMap::new(),
            summary: VerifySummary::default(),
        }
    }

    /// A LUN was probed: its block size and whether its write cache is
    /// volatile (WCE=1).
    pub fn lun_ready(&mut self, lun: u64, block_size: u32, wce: bool) {
        let initial = self.initial;
        self.oracles
            .entry(lun)
            .or_insert_with(|| Oracle::new(block_size).with_initial_content(initial))
            .set_wce(wce);
    }

    /// MODE SELECT changed the caching page.
    pub fn set_wce(&mut self, lun: u64, wce: bool) {
        if let Some(o) = self.oracles.get_mut(&lun) {
            o.set_wce(wce);
        }
    }

    /// A WRITE of `blocks` at `lba` was issued with Data-Out `data`.
    pub fn write_submitted(
        &mut self,
        seq: u64,
        lun: u64,
        lba: u64,
        blocks: u32,
        fua: bool,
        data: &[u8],
    ) {
        let Some(o) = self.oracles.get_mut(&lun) else {
            return;
        };
        let wd = WriteData::from_bytes(lba, o.block_size(), data);
        o.submit_write(seq, lba, blocks, wd, fua);
    }

    /// A WRITE of `blocks` at `lba` completed (`good`: with GOOD status).
    /// Only a good write joins the closing read-back: a write the device
    /// rejected (an LBA out of range in a hostile trace) must not make the
    /// sweep read ranges that do not exist.
    pub fn write_completed(&mut self, seq: u64, lun: u64, lba: u64, blocks: u32, good: bool) {
        if let Some(o) = self.oracles.get_mut(&lun) {
            o.complete_write(seq, good);
            if good {
                self.written
                    .entry(lun)
                    .or_default()
                    .insert(lba, u64::from(blocks));
            }
        }
    }

    /// A SYNCHRONIZE CACHE of `blocks` (0: to the end) at `lba` was issued.
    pub fn flush_submitted(&mut self, seq: u64, lun: u64, lba: u64, blocks: u32, immed: bool) {
        if let Some(o) = self.oracles.get_mut(&lun) {
            o.submit_flush(seq, lba, blocks, immed);
        }
    }

    /// A SYNCHRONIZE CACHE completed.
    pub fn flush_completed(&mut self, seq: u64, lun: u64, good: bool) {
        if let Some(o) = self.oracles.get_mut(&lun) {
            o.complete_flush(seq, good);
        }
    }

    /// A READ was issued: writes completing from now on may or may not be
    /// visible to it.
    pub fn read_submitted(&mut self, seq: u64, lun: u64) {
        if let Some(o) = self.oracles.get_mut(&lun) {
            o.submit_read(seq);
        }
    }

    /// Power was cut on every LUN.
    pub fn power_loss(&mut self) {
        for o in self.oracles.values_mut() {
            o.power_loss();
        }
    }

    /// LBA ranges this run wrote, per LUN, for the closing read-back.
    pub fn written(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.written
            .iter()
            .flat_map(|(lun, x)| x.iter().map(move |(s, l)| (*lun, s, l)))
    }

    fn note(&mut self, cmd: &CommandRef, message: String) {
        if self.summary.first.len() < FIRST_FINDINGS {
            self.summary.first.push(Finding {
                command: cmd.to_string(),
                message,
            });
        }
    }

    /// Judges a completed READ at `lba`: `data` is what it returned (whole
    /// blocks; empty for a read that failed, which only closes it).
    pub fn read_completed(&mut self, cmd: &CommandRef, seq: u64, lun: u64, lba: u64, data: &[u8]) {
        let Some(o) = self.oracles.get_mut(&lun) else {
            return;
        };
        let bs = o.block_size() as usize;
        let whole = data.len() / bs * bs;
        let violations = o.check_read(seq, lba, &data[..whole]);
        let checked = (whole / bs) as u64;
        let mut bad = 0u64;
        for v in &violations {
            let n = u64::from(v.blocks);
            bad += n;
            *self
                .summary
                .classes
                .entry(v.class.name().into())
                .or_default() += n;
        }
        self.summary.blocks_checked += checked;
        self.summary.data_violations += bad;
        *self.summary.classes.entry("ok".into()).or_default() += checked.saturating_sub(bad);
        if let Some(v) = violations.first() {
            if self.summary.first_bad.is_none() {
                self.summary.first_bad = Some(BadBlocks {
                    lun,
                    lba: v.lba,
                    blocks: v.blocks,
                    block_size: v.block_size,
                    class: v.class.name().into(),
                });
            }
            let more = if violations.len() > 1 {
                format!(" (and {} more bad runs in this read)", violations.len() - 1)
            } else {
                String::new()
            };
            self.note(cmd, format!("{v}{more}"));
        }
    }

    /// Checks a completed READ or WRITE's residual against what its CDB
    /// asked for (SAM-5 5.4.3: residual = requested - moved).
    pub fn residual(
        &mut self,
        cmd: &CommandRef,
        seq: u64,
        lun: u64,
        xfer_len: u32,
        command_len: u64,
        reported: i64,
    ) {
        let Some(o) = self.oracles.get(&lun) else {
            return;
        };
        if let Some(v) = o.check_residual(seq, xfer_len, command_len, reported) {
            self.summary.data_violations += 1;
            *self
                .summary
                .classes
                .entry(v.class.name().into())
                .or_default() += 1;
            self.note(cmd, v.to_string());
        }
    }

    /// A closing read-back command itself failed.
    pub fn read_back_failed(&mut self, cmd: &CommandRef, o: &Outcome) {
        self.summary.completion_mismatches += 1;
        self.note(
            cmd,
            format!("read-back failed: {}", describe_status(o.status, &o.sense)),
        );
    }

    /// Compares a replayed completion with the recorded one: status, and
    /// for CHECK CONDITION the sense key and additional sense code.
    pub fn compare_completion(&mut self, cmd: &CommandRef, rec: &Complete, got: &Outcome) {
        if rec.response != trace::ServiceResponse::TaskComplete {
            return;
        }
        let same_status = rec.status == got.status;
        let same_sense = !same_status
            || rec.status != trace::ScsiStatus::CHECK_CONDITION
            || sense_key_asc(&rec.sense) == sense_key_asc(&got.sense);
        if same_status && same_sense && got.response == rec.response {
            return;
        }
        self.summary.completion_mismatches += 1;
        self.note(
            cmd,
            format!(
                "completion differs from the recording: recorded {}, replayed {}",
                describe_status(rec.status, &rec.sense),
                describe_status(got.status, &got.sense)
            ),
        );
    }

    /// The findings.
    pub fn into_summary(self) -> VerifySummary {
        self.summary
    }
}

/// Sense key, ASC and ASCQ, for comparing sense data across formats.
fn sense_key_asc(sense: &[u8]) -> Option<(u8, u8, u8)> {
    trace::sense::SenseData::parse(sense)
        .ok()
        .map(|s| (s.key.code(), s.asc_pair().asc, s.asc_pair().ascq))
}
