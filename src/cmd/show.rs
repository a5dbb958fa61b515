//! `scuzz show`: one line per command of a trace.
//!
//! Lines follow the order of submissions (and of markers between them). A
//! command's completion comes later in the stream than its submission, so its
//! line waits in a window until the completion arrives and every earlier line
//! has been printed. The window holds at most [`MAX_PENDING`] lines: beyond
//! that the oldest is printed as `(no completion yet)`, which keeps memory
//! bounded on traces that never complete anything. Commands still waiting
//! when the trace ends are printed `(incomplete)`. Markers (power loss,
//! reset, notes) get their own lines, whatever the filters.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use trace::sense::describe_status;
use trace::{Cdb, Complete, Event, ServiceResponse, Submit, TraceReader};

/// Lines waiting for a completion (or for an earlier line), at most.
const MAX_PENDING: usize = 1 << 16;

/// Arguments of `scuzz show`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace file (.sczt).
    pub trace: PathBuf,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show only matching commands; repeat to require several. KEY=V1,V2
    /// matches any of the values. Keys: opcode=0x2a (hex or decimal),
    /// name=WRITE(10) (or a family: name=write), lba=A..B (overlapping the
    /// range; A..=B, A.., A also work), status=good|check|busy|0x02|incomplete,
    /// seq=A..B, target=N, lun=N. Markers (power loss, reset, notes) are always
    /// shown.
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

/// Runs `scuzz show`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filters = args
        .filter
        .iter()
        .map(|f| Filter::parse(f).with_context(|| format!("--filter {f}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = BufWriter::new(io::stdout().lock());
    match show(&args, &filters, &mut out) {
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn show(args: &Args, filters: &[Filter], out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut reader = TraceReader::open(&args.trace)?;
    let printer = Printer {
        json: args.json,
        filters,
    };
    let mut window = Window::default();
    let mut failure = None;
    for item in &mut reader {
        match item {
            Ok(ev) => window.push(ev),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        while let Some(line) = window.pop_ready() {
            printer.print(out, &line)?;
        }
    }
    for line in window.drain() {
        printer.print(out, &line)?;
    }
    out.flush()?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if !reader.is_complete() {
        eprintln!(
            "scuzz: note: {} has no end frame (recording still running, or cut at a frame boundary)",
            args.trace.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of output, waiting in the [`Window`] until it may be printed.
enum Line {
    Command {
        submit: Option<Submit>,
        complete: Option<Complete>,
        note: &'static str,
    },
    Marker(Event),
}

/// Keeps output in stream order of submissions and markers while each
/// command waits for its completion: a line leaves once every line before
/// it has. At most [`MAX_PENDING`] lines wait; beyond that the oldest is
/// printed without its completion.
#[derive(Default)]
struct Window {
    lines: VecDeque<Line>,
    /// Absolute index of `lines[0]`.
    base: u64,
    /// Submissions still waiting, by seq: absolute index into `lines`.
    waiting: HashMap<u64, u64>,
}

impl Window {
    fn push(&mut self, ev: Event) {
        match ev {
            Event::Submit(s) => {
                let idx = self.base + self.lines.len() as u64;
                if let Some(old) = self.waiting.insert(s.seq, idx) {
                    if let Some(Line::Command { note, .. }) = self.line_mut(old) {
                        *note = "(superseded by a later submission with the same seq)";
                    }
                }
                self.lines.push_back(Line::Command {
                    submit: Some(s),
                    complete: None,
                    note: "",
                });
            }
            Event::Complete(c) => match self.waiting.remove(&c.seq) {
                Some(idx) => {
                    if let Some(Line::Command { complete, .. }) = self.line_mut(idx) {
                        *complete = Some(c);
                    }
                }
                None => self.lines.push_back(Line::Command {
                    submit: None,
                    complete: Some(c),
                    note: "",
                }),
            },
            marker => self.lines.push_back(Line::Marker(marker)),
        }
    }

    fn line_mut(&mut self, idx: u64) -> Option<&mut Line> {
        let pos = usize::try_from(idx.checked_sub(self.base)?).ok()?;
        self.lines.get_mut(pos)
    }

    fn ready(line: &Line) -> bool {
        match line {
            Line::Command { complete, note, .. } => complete.is_some() || !note.is_empty(),
            Line::Marker(_) => true,
        }
    }

    /// The next line, if it may be printed now.
    fn pop_ready(&mut self) -> Option<Line> {
        let front = self.lines.front()?;
        if Self::ready(front) || self.lines.len() > MAX_PENDING {
            self.pop_front("(no completion yet)")
        } else {
            None
        }
    }

    fn pop_front(&mut self, unfinished: &'static str) -> Option<Line> {
        let mut line = self.lines.pop_front()?;
        self.base += 1;
        if let Line::Command {
            submit: Some(s),
            complete: None,
            note,
        } = &mut line
        {
            if note.is_empty() {
                *note = unfinished;
            }
            if self.waiting.get(&s.seq) == Some(&(self.base - 1)) {
                self.waiting.remove(&s.seq);
            }
        }
        Some(line)
    }

    /// Everything left, at the end of the trace.
    fn drain(&mut self) -> Vec<Line> {
        std::iter::from_fn(|| self.pop_front("(incomplete)")).collect()
    }
}

struct Printer<'a> {
    json: bool,
    filters: &'a [Filter],
}

impl Printer<'_> {
    fn print(&self, out: &mut impl Write, line: &Line) -> anyhow::Result<()> {
        match line {
            Line::Command {
                submit,
                complete,
                note,
            } => self.command(out, submit.as_ref(), complete.as_ref(), note),
            Line::Marker(ev) => self.marker(out, ev),
        }
    }

    fn command(
        &self,
        out: &mut impl Write,
        s: Option<&Submit>,
        c: Option<&Complete>,
        why_no_completion: &str,
    ) -> anyhow::Result<()> {
        let cdb = s.map(|s| Cdb::parse(&s.cdb));
        let cdb = cdb.as_ref().and_then(|r| r.as_ref().ok());
        if !self.filters.iter().all(|f| f.matches(s, cdb, c)) {
            return Ok(());
        }
        if self.json {
            writeln!(out, "{}", command_json(s, cdb, c))?;
        } else {
            writeln!(out, "{}", command_line(s, cdb, c, why_no_completion))?;
        }
        Ok(())
    }

    fn marker(&self, out: &mut impl Write, ev: &Event) -> anyhow::Result<()> {
        if self.json {
            let v = match ev {
                Event::PowerLoss { time_ns } => json!({"type": "power_loss", "time_ns": time_ns}),
                Event::Reset { time_ns } => json!({"type": "reset", "time_ns": time_ns}),
                Event::Note { time_ns, text } => {
                    json!({"type": "note", "time_ns": time_ns, "text": text})
                }
                _ => return Ok(()),
            };
            writeln!(out, "{v}")?;
        } else {
            let t = seconds(ev.time_ns());
            match ev {
                Event::PowerLoss { .. } => writeln!(out, "--  {t}  POWER LOSS")?,
                Event::Reset { .. } => writeln!(out, "--  {t}  RESET")?,
                Event::Note { text, .. } => writeln!(out, "--  {t}  NOTE {text:?}")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `+1.234567`: seconds since the trace started.
fn seconds(ns: u64) -> String {
    format!(
        "+{}.{:06}",
        ns / 1_000_000_000,
        (ns % 1_000_000_000) / 1_000
    )
}

/// `850ns`, `25.3us`, `1.25ms`, `2.000s`.
pub(crate) fn duration(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}us", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.3}s", f / 1e9)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cdb_text(s: &Submit, cdb: Option<&Cdb>) -> String {
    match cdb {
        Some(c) => c.to_string(),
        None => match Cdb::parse(&s.cdb) {
            Ok(c) => c.to_string(),
            Err(e) => format!("cdb={} ({e})", hex(&s.cdb)),
        },
    }
}

/// Highest byte address of the SG list.
fn sg_max(s: &Submit) -> Option<u64> {
    s.sg.iter().filter(|g| g.len > 0).map(|g| g.end() - 1).max()
}

fn outcome(c: &Complete) -> String {
    match c.response {
        ServiceResponse::TaskComplete => describe_status(c.status, &c.sense),
        ServiceResponse::DeliveryFailure => "SERVICE DELIVERY FAILURE".into(),
        ServiceResponse::Incomplete => "INCOMPLETE (capture ended)".into(),
    }
}

fn command_line(
    s: Option<&Submit>,
    cdb: Option<&Cdb>,
    c: Option<&Complete>,
    why_no_completion: &str,
) -> String {
    let mut line = String::new();
    match s {
        Some(s) => {
            line.push_str(&format!(
                "#{}  {}  {}:{}  {}",
                s.seq,
                seconds(s.time_ns),
                s.nexus.target,
                s.nexus.lun,
                cdb_text(s, cdb)
            ));
            match sg_max(s) {
                Some(max) => line.push_str(&format!(
                    "  sg={} max_addr={}",
                    s.sg.len(),
                    trace::PhysAddr(max)
                )),
                None => line.push_str(&format!("  sg={}", s.sg.len())),
            }
        }
        None => {
            let c = c.expect("a line has a submission or a completion");
            line.push_str(&format!(
                "#{}  {}  (completion without submission)",
                c.seq,
                seconds(c.time_ns)
            ));
        }
    }
    match c {
        Some(c) => {
            line.push_str("  ");
            line.push_str(&outcome(c));
            if c.residual != 0 {
                line.push_str(&format!("  resid={}", c.residual));
            }
            if let Some(s) = s {
                line.push_str("  lat=");
                line.push_str(&duration(c.time_ns.saturating_sub(s.time_ns)));
            }
        }
        None => {
            line.push_str("  ");
            line.push_str(why_no_completion);
        }
    }
    line
}

fn command_json(s: Option<&Submit>, cdb: Option<&Cdb>, c: Option<&Complete>) -> Value {
    let mut v = json!({"type": "command"});
    let m = v.as_object_mut().expect("object");
    if let Some(s) = s {
        m.insert("seq".into(), json!(s.seq));
        m.insert("time_ns".into(), json!(s.time_ns));
        m.insert("target".into(), json!(s.nexus.target));
        m.insert("lun".into(), json!(s.nexus.lun));
        m.insert("tag".into(), json!(s.tag));
        m.insert("cdb".into(), json!(hex(&s.cdb)));
        m.insert("opcode".into(), json!(s.cdb.first()));
        m.insert("command".into(), json!(cdb_text(s, cdb)));
        if let Some(cdb) = cdb {
            m.insert("name".into(), json!(cdb.name()));
            if let Some((lba, blocks)) = cdb.lba_range() {
                m.insert("lba".into(), json!(lba));
                m.insert("blocks".into(), json!(blocks));
            }
        }
        m.insert("xfer_len".into(), json!(s.xfer_len));
        m.insert("sg_segments".into(), json!(s.sg.len()));
        m.insert("sg_max_addr".into(), json!(sg_max(s)));
    }
    match c {
        Some(c) => {
            m.insert("seq".into(), json!(c.seq));
            m.insert("complete_time_ns".into(), json!(c.time_ns));
            m.insert("status".into(), json!(outcome(c)));
            m.insert("status_code".into(), json!(c.status.0));
            m.insert("sense".into(), json!(hex(&c.sense)));
            m.insert("bytes_transferred".into(), json!(c.bytes_transferred));
            m.insert("residual".into(), json!(c.residual));
            if let Some(s) = s {
                m.insert(
                    "latency_ns".into(),
                    json!(c.time_ns.saturating_sub(s.time_ns)),
                );
            }
        }
        None => {
            m.insert("status".into(), json!("incomplete"));
        }
    }
    v
}

/// One `--filter KEY=V1,V2`: matches when any value does.
#[derive(Debug)]
enum Filter {
    Opcode(Vec<u8>),
    Name(Vec<String>),
    Lba(Vec<(u64, u64)>),
    Seq(Vec<(u64, u64)>),
    Status(Vec<String>),
    Target(Vec<u64>),
    Lun(Vec<u64>),
}

fn number(v: &str) -> anyhow::Result<u64> {
    let v = v.trim();
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => v.replace('_', "").parse(),
    };
    n.with_context(|| format!("`{v}` is not a number"))
}

/// `A..B` (end exclusive), `A..=B`, `A..`, `..B`, `A`: an inclusive range.
fn range(v: &str) -> anyhow::Result<(u64, u64)> {
    if let Some((a, b)) = v.split_once("..") {
        let lo = if a.is_empty() { 0 } else { number(a)? };
        let hi = if let Some(b) = b.strip_prefix('=') {
            number(b)?
        } else if b.is_empty() {
            u64::MAX
        } else {
            match number(b)?.checked_sub(1) {
                Some(hi) => hi,
                None => bail!("empty range `{v}`"),
            }
        };
        if hi < lo {
            bail!("empty range `{v}`");
        }
        Ok((lo, hi))
    } else {
        let n = number(v)?;
        Ok((n, n))
    }
}

/// Upper case with `-`/`_` as spaces: `check-condition` = `CHECK CONDITION`.
fn normalise(v: &str) -> String {
    v.trim().to_ascii_uppercase().replace(['-', '_'], " ")
}

impl Filter {
    fn parse(f: &str) -> anyhow::Result<Filter> {
        let Some((key, values)) = f.split_once('=') else {
            bail!("expected KEY=VALUE (keys: opcode, name, lba, seq, status, target, lun)");
        };
        let values: Vec<&str> = values.split(',').filter(|v| !v.trim().is_empty()).collect();
        if values.is_empty() {
            bail!("no value given for `{key}`");
        }
        let nums = || -> anyhow::Result<Vec<u64>> { values.iter().map(|v| number(v)).collect() };
        let ranges =
            || -> anyhow::Result<Vec<(u64, u64)>> { values.iter().map(|v| range(v)).collect() };
        Ok(match key.trim() {
            "opcode" => Filter::Opcode(
                nums()?
                    .into_iter()
                    .map(|n| u8::try_from(n).context("an opcode is one byte"))
                    .collect::<anyhow::Result<_>>()?,
            ),
            "name" => Filter::Name(values.iter().map(|v| normalise(v)).collect()),
            "lba" => Filter::Lba(ranges()?),
            "seq" => Filter::Seq(ranges()?),
            "status" => Filter::Status(values.iter().map(|v| normalise(v)).collect()),
            "target" => Filter::Target(nums()?),
            "lun" => Filter::Lun(nums()?),
            other => bail!(
                "unknown filter key `{other}` (keys: opcode, name, lba, seq, status, target, lun)"
            ),
        })
    }

    fn matches(&self, s: Option<&Submit>, cdb: Option<&Cdb>, c: Option<&Complete>) -> bool {
        match self {
            Filter::Opcode(ops) => s
                .and_then(|s| s.cdb.first())
                .is_some_and(|op| ops.contains(op)),
            Filter::Name(names) => cdb.is_some_and(|cdb| {
                let name = cdb.name();
                let family = name.split('(').next().unwrap_or(name).trim_end();
                names.iter().any(|n| n == name || n == family)
            }),
            Filter::Lba(ranges) => cdb.and_then(Cdb::lba_range).is_some_and(|(lba, blocks)| {
                let last = lba.saturating_add(u64::from(blocks.max(1)) - 1);
                ranges.iter().any(|&(lo, hi)| lba <= hi && last >= lo)
            }),
            Filter::Seq(ranges) => {
                let seq = s.map(|s| s.seq).or(c.map(|c| c.seq));
                seq.is_some_and(|q| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&q)))
            }
            Filter::Status(wanted) => wanted.iter().any(|w| match c {
                None => w == "INCOMPLETE",
                Some(c) => {
                    if let Ok(code) = number(w) {
                        return u64::from(c.status.0) == code;
                    }
                    match c.response {
                        ServiceResponse::TaskComplete => c.status.name().starts_with(w.as_str()),
                        ServiceResponse::DeliveryFailure => {
                            "SERVICE DELIVERY FAILURE".starts_with(w.as_str())
                        }
                        ServiceResponse::Incomplete => w == "INCOMPLETE",
                    }
                }
            }),
            Filter::Target(ts) => s.is_some_and(|s| ts.contains(&u64::from(s.nexus.target))),
            Filter::Lun(ls) => s.is_some_and(|s| ls.contains(&s.nexus.lun)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rust_syntax() {
        assert_eq!(range("10..20").unwrap(), (10, 19));
        assert_eq!(range("10..=20").unwrap(), (10, 20));
        assert_eq!(range("0x10..").unwrap(), (16, u64::MAX));
        assert_eq!(range("7").unwrap(), (7, 7));
        assert!(range("5..5").is_err());
        assert!(range("x..5").is_err());
    }

    #[test]
    fn filters_parse_or_say_why_not() {
        assert!(
            matches!(Filter::parse("opcode=0x2a,0x8a").unwrap(), Filter::Opcode(v) if v == [0x2a, 0x8a])
        );
        assert!(Filter::parse("opcode=0x1ff").is_err());
        assert!(Filter::parse("colour=red")
            .unwrap_err()
            .to_string()
            .contains("unknown filter key"));
        assert!(Filter::parse("opcode").is_err());
    }

    fn submit(seq: u64) -> Event {
        Event::Submit(Submit {
            seq,
            time_ns: seq,
            nexus: Default::default(),
            tag: seq,
            attr: Default::default(),
            cdb: vec![0; 6],
            dir: Default::default(),
            xfer_len: 0,
            sg: vec![],
            payload: Default::default(),
        })
    }

    fn complete(seq: u64) -> Event {
        Event::Complete(Complete {
            seq,
            time_ns: seq + 10,
            response: ServiceResponse::TaskComplete,
            status: trace::ScsiStatus::GOOD,
            sense: vec![],
            bytes_transferred: 0,
            residual: 0,
            payload: Default::default(),
        })
    }

    fn seq_of(l: &Line) -> Option<u64> {
        match l {
            Line::Command {
                submit, complete, ..
            } => submit
                .as_ref()
                .map(|s| s.seq)
                .or(complete.as_ref().map(|c| c.seq)),
            Line::Marker(_) => None,
        }
    }

    #[test]
    fn window_prints_in_submission_order_as_completions_arrive() {
        let mut w = Window::default();
        let mut out = Vec::new();
        for ev in [
            submit(0),
            submit(1),
            Event::Reset { time_ns: 1 },
            submit(2),
            complete(1),
        ] {
            w.push(ev);
        }
        assert!(w.pop_ready().is_none(), "seq 0 still waits");
        w.push(complete(0));
        while let Some(l) = w.pop_ready() {
            out.push(seq_of(&l));
        }
        assert_eq!(out, [Some(0), Some(1), None]);
        w.push(complete(7));
        let rest: Vec<_> = w
            .drain()
            .into_iter()
            .map(|l| {
                (
                    seq_of(&l),
                    matches!(
                        l,
                        Line::Command {
                            note: "(incomplete)",
                            ..
                        }
                    ),
                )
            })
            .collect();
        assert_eq!(rest, [(Some(2), true), (Some(7), false)]);
    }

    #[test]
    fn window_is_bounded_when_nothing_completes() {
        let mut w = Window::default();
        for seq in 0..=MAX_PENDING as u64 {
            w.push(submit(seq));
        }
        let first = w.pop_ready().expect("the oldest is forced out");
        assert!(matches!(
            first,
            Line::Command {
                note: "(no completion yet)",
                ..
            }
        ));
        assert!(w.pop_ready().is_none());
        assert_eq!(w.waiting.len(), MAX_PENDING);
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(25_300), "25.3us");
        assert_eq!(duration(1_250_000), "1.25ms");
        assert_eq!(seconds(1_234_567_890), "+1.234567");
    }
}
