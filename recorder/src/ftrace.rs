//! Linux ftrace SCSI events → trace.
//!
//! Reads the text the kernel prints for `scsi:scsi_dispatch_cmd_start`,
//! `scsi_dispatch_cmd_done`, `scsi_dispatch_cmd_error` and
//! `scsi_dispatch_cmd_timeout` (include/trace/events/scsi.h), from
//! `/sys/kernel/tracing/trace` or `trace-cmd report`:
//!
//! ```text
//! <task>-<pid> [cpu] <flags> <secs>.<usecs>: scsi_dispatch_cmd_start: host_no=%u channel=%u
//!   id=%u lun=%u data_sgl=%u prot_sgl=%u prot_op=%s driver_tag=%d scheduler_tag=%d
//!   cmnd=(%s %s raw=%s)
//! ... scsi_dispatch_cmd_done: <same> result=(driver=%s host=%s message=%s status=%s)
//!   sense=(key=%#x asc=%#x ascq=%#x)
//! ... scsi_dispatch_cmd_error: <same as start> rtn=%d
//! ```
//!
//! Older kernels print no `driver_tag`/`scheduler_tag` and no `sense=`; both
//! forms import. The raw CDB (`raw=` hex bytes) is the command; the event
//! carries no transfer length, so it is derived from the CDB and the block
//! size. A done event is matched to its start by host, channel, id, LUN and
//! `driver_tag` (or, without tags, the oldest start with the same CDB).
//! The nexus is `id` and `lun`; `host_no` and `channel` only separate
//! commands when matching.

use crate::cdbs::transfer_length;
use crate::import::{ImportError, ImportSummary};
use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use trace::{Cdb, Complete, Event, Nexus, Payload, ScsiStatus, ServiceResponse, Submit, TaskAttr};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: u32,
    channel: u32,
    id: u32,
    lun: u64,
    tag: Option<i64>,
    cdb: Vec<u8>,
}

struct Open {
    seq: u64,
    xfer: u32,
}

/// host_no, channel, id, lun, driver_tag (when non-negative), raw CDB.
type CmdHead = (u32, u32, u32, u64, Option<i64>, Vec<u8>);

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    event: String,
    time_ns: u64,
    fields: HashMap<String, String>,
}

/// Splits `k=v k=(a b c) ...` into pairs; parenthesised values keep their
/// spaces and nested parentheses.
fn fields(body: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let k0 = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(format!("`{}` is not key=value", &body[k0..i]));
        }
        let key = &body[k0..i];
        i += 1;
        let v0 = i;
        if i < b.len() && b[i] == b'(' {
            let mut depth = 0;
            while i < b.len() {
                match b[i] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(format!("`{key}=(` is not closed"));
            }
            out.insert(key.to_string(), body[v0 + 1..i].to_string());
            i += 1;
        } else {
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            out.insert(key.to_string(), body[v0..i].to_string());
        }
    }
    Ok(out)
}

/// `2461.391541` → ns.
fn timestamp_ns(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32)
    };
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Parses one line; `Ok(None)` for lines that are not SCSI dispatch events
/// (comments, other tracepoints).
fn parse_line(text: &str) -> Result<Option<Line>, String> {
    if text.trim_start().starts_with('#') {
        return Ok(None);
    }
    let Some(at) = text.find(": scsi_dispatch_cmd_") else {
        return Ok(None);
    };
    let rest = &text[at + 2..];
    let Some((event, body)) = rest.split_once(": ") else {
        return Err("event name without fields".into());
    };
    let prefix = &text[..at];
    let ts = prefix
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("");
    let time_ns =
        timestamp_ns(ts).ok_or_else(|| format!("timestamp `{ts}` is not seconds.fraction"))?;
    Ok(Some(Line {
        event: event.to_string(),
        time_ns,
        fields: fields(body.trim_end())?,
    }))
}

fn num<T: std::str::FromStr>(f: &HashMap<String, String>, k: &str) -> Result<T, String> {
    let v = f.get(k).ok_or_else(|| format!("no `{k}=`"))?;
    v.parse().map_err(|_| format!("`{k}={v}` is not a number"))
}

fn raw_cdb(cmnd: &str) -> Result<Vec<u8>, String> {
    let (_, hex) = cmnd
        .rsplit_once("raw=")
        .ok_or("cmnd=(...) has no raw= bytes")?;
    let bytes: Result<Vec<u8>, _> = hex
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16))
        .collect();
    let bytes = bytes.map_err(|_| format!("raw=`{hex}` is not hex bytes"))?;
    if bytes.is_empty() || bytes.len() > 260 {
        return Err(format!("raw CDB of {} bytes", bytes.len()));
    }
    Ok(bytes)
}

/// SAM status from the kernel's `status=` symbol (or the hex
/// `__print_symbolic` prints for a value it has no name for).
fn status_byte(s: &str) -> Option<u8> {
    Some(match s {
        "SAM_STAT_GOOD" => 0x00,
        "SAM_STAT_CHECK_CONDITION" => 0x02,
        "SAM_STAT_CONDITION_MET" => 0x04,
        "SAM_STAT_BUSY" => 0x08,
        "SAM_STAT_INTERMEDIATE" => 0x10,
        "SAM_STAT_INTERMEDIATE_CONDITION_MET" => 0x14,
        "SAM_STAT_RESERVATION_CONFLICT" => 0x18,
        "SAM_STAT_COMMAND_TERMINATED" => 0x22,
        "SAM_STAT_TASK_SET_FULL" => 0x28,
        "SAM_STAT_ACA_ACTIVE" => 0x30,
        "SAM_STAT_TASK_ABORTED" => 0x40,
        other => return u8::from_str_radix(other.trim_start_matches("0x"), 16).ok(),
    })
}

fn hex_field(f: &HashMap<String, String>, k: &str) -> u8 {
    f.get(k)
        .and_then(|v| u8::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

/// Imports ftrace text from `input`, streaming events into `sink`.
/// `block_size` turns READ/WRITE transfer lengths into bytes.
pub fn import_ftrace(
    input: impl BufRead,
    block_size: u32,
    sink: &mut impl FnMut(Event) -> Result<(), ImportError>,
) -> Result<ImportSummary, ImportError> {
    let mut sum = ImportSummary::default();
    let mut open: HashMap<Key, VecDeque<Open>> = HashMap::new();
    let mut base: Option<u64> = None;
    let mut last = 0u64;
    let mut next_seq = 0u64;
    let mut emit = |e: Event, sum: &mut ImportSummary| -> Result<(), ImportError> {
        sum.events += 1;
        sink(e)
    };
    for (i, line) in input.lines().enumerate() {
        let n = i as u64 + 1;
        sum.lines = n;
        let line = line.map_err(|source| ImportError::Io { line: n, source })?;
        let parsed = match parse_line(&line) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                sum.warn(n, e);
                continue;
            }
        };
        let f = &parsed.fields;
        let head = (|| -> Result<CmdHead, String> {
            let tag: Option<i64> = match f.get("driver_tag") {
                Some(_) => Some(num::<i64>(f, "driver_tag")?).filter(|t| *t >= 0),
                None => None,
            };
            let cmnd = f.get("cmnd").ok_or("no `cmnd=(...)`")?;
            Ok((
                num(f, "host_no")?,
                num(f, "channel")?,
                num(f, "id")?,
                num(f, "lun")?,
                tag,
                raw_cdb(cmnd)?,
            ))
        })();
        let (host, channel, id, lun, tag, cdb) = match head {
            Ok(h) => h,
            Err(e) => {
                sum.warn(n, e);
                continue;
            }
        };
        let b = *base.get_or_insert(parsed.time_ns);
        let time_ns = parsed.time_ns.saturating_sub(b);
        last = last.max(time_ns);
        let key = Key {
            host,
            channel,
            id,
            lun,
            tag,
            cdb: if tag.is_some() {
                Vec::new()
            } else {
                cdb.clone()
            },
        };
        match parsed.event.as_str() {
            "scsi_dispatch_cmd_start" => {
                let typed = Cdb::parse(&cdb);
                let (dir, xfer) = match &typed {
                    Ok(c) => (c.direction(), transfer_length(c, block_size)),
                    Err(e) => {
                        sum.warn(
                            n,
                            format!("CDB does not decode ({e}); kept raw, no data phase"),
                        );
                        (trace::Direction::None, 0)
                    }
                };
                if let Some(q) = open.get_mut(&key) {
                    if tag.is_some() {
                        if let Some(prev) = q.pop_front() {
                            sum.warn(n, format!("driver_tag {} reused before seq {} completed; that command is left incomplete", tag.unwrap_or(-1), prev.seq));
                            emit(incomplete(prev.seq, time_ns), &mut sum)?;
                        }
                    }
                }
                let seq = next_seq;
                next_seq += 1;
                sum.commands += 1;
                open.entry(key).or_default().push_back(Open { seq, xfer });
                emit(
                    Event::Submit(Submit {
                        seq,
                        time_ns,
                        nexus: Nexus { target: id, lun },
                        tag: tag.map_or(seq, |t| t as u64),
                        attr: TaskAttr::Simple,
                        cdb,
                        dir,
                        xfer_len: xfer,
                        sg: Vec::new(),
                        payload: Payload::None,
                    }),
                    &mut sum,
                )?;
            }
            ev @ ("scsi_dispatch_cmd_done"
            | "scsi_dispatch_cmd_error"
            | "scsi_dispatch_cmd_timeout") => {
                let Some(o) = open.get_mut(&key).and_then(|q| q.pop_front()) else {
                    let text = format!("ftrace line {n}: {ev} for a command whose start is not in the trace: {line}", line = line.trim());
                    emit(Event::Note { time_ns, text }, &mut sum)?;
                    continue;
                };
                let c = match ev {
                    "scsi_dispatch_cmd_done" => {
                        let result = match f.get("result").map(|r| fields(r)) {
                            Some(Ok(r)) => r,
                            _ => {
                                sum.warn(n, "no readable `result=(...)`; completion kept as delivery failure");
                                HashMap::new()
                            }
                        };
                        let host_ok = result.get("host").is_some_and(|h| h == "DID_OK");
                        let status = result.get("status").and_then(|s| status_byte(s));
                        if result.contains_key("status") && status.is_none() {
                            sum.warn(n, format!("status `{}` unknown", result["status"]));
                        }
                        let status = ScsiStatus(status.unwrap_or(0));
                        let mut sense = Vec::new();
                        if let Some(Ok(sf)) = f.get("sense").map(|s| fields(s)) {
                            let key = hex_field(&sf, "key");
                            if status == ScsiStatus::CHECK_CONDITION || key != 0 {
                                // Fixed-format sense (SPC-4 4.5.3) from what
                                // the event keeps: key, ASC, ASCQ.
                                sense = vec![0u8; 18];
                                sense[0] = 0x70;
                                sense[2] = key & 0x0f;
                                sense[7] = 10;
                                sense[12] = hex_field(&sf, "asc");
                                sense[13] = hex_field(&sf, "ascq");
                            }
                        }
                        let ok = host_ok && status == ScsiStatus::GOOD;
                        Complete {
                            seq: o.seq,
                            time_ns,
                            response: if host_ok {
                                ServiceResponse::TaskComplete
                            } else {
                                ServiceResponse::DeliveryFailure
                            },
                            status,
                            sense,
                            // The event has no residual: a good command is
                            // taken to have moved everything.
                            bytes_transferred: if ok { o.xfer } else { 0 },
                            residual: if ok { 0 } else { i64::from(o.xfer) },
                            payload: Payload::None,
                        }
                    }
                    _ => {
                        // Not queued (error: the LLD refused it, the
                        // midlayer retries with a new start) or timed out.
                        let what = if ev == "scsi_dispatch_cmd_error" {
                            format!(
                                "queuecommand refused it, rtn={}",
                                f.get("rtn").map_or("?", |s| s.as_str())
                            )
                        } else {
                            "timed out".to_string()
                        };
                        emit(
                            Event::Note {
                                time_ns,
                                text: format!("ftrace: seq {} {what}", o.seq),
                            },
                            &mut sum,
                        )?;
                        Complete {
                            seq: o.seq,
                            time_ns,
                            response: ServiceResponse::DeliveryFailure,
                            status: ScsiStatus::GOOD,
                            sense: Vec::new(),
                            bytes_transferred: 0,
                            residual: i64::from(o.xfer),
                            payload: Payload::None,
                        }
                    }
                };
                emit(Event::Complete(c), &mut sum)?;
            }
            other => sum.warn(n, format!("event `{other}` not imported")),
        }
    }
    let mut left: Vec<u64> = open
        .values()
        .flat_map(|q| q.iter().map(|o| o.seq))
        .collect();
    left.sort_unstable();
    for seq in left {
        emit(incomplete(seq, last), &mut sum)?;
    }
    Ok(sum)
}

fn incomplete(seq: u64, time_ns: u64) -> Event {
    Event::Complete(Complete {
        seq,
        time_ns,
        response: ServiceResponse::Incomplete,
        status: ScsiStatus::GOOD,
        sense: Vec::new(),
        bytes_transferred: 0,
        residual: 0,
        payload: Payload::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_parenthesised_groups() {
        let f = fields("host_no=2 cmnd=(WRITE_10 lba=8 txlen=8 protect=0 raw=2a 00) result=(driver=DRIVER_OK host=DID_OK)").unwrap();
        assert_eq!(f["host_no"], "2");
        assert_eq!(f["cmnd"], "WRITE_10 lba=8 txlen=8 protect=0 raw=2a 00");
        assert_eq!(fields(&f["result"]).unwrap()["host"], "DID_OK");
        assert!(fields("cmnd=(open").is_err());
        assert!(fields("junk").is_err());
    }

    #[test]
    fn timestamps_and_statuses() {
        assert_eq!(timestamp_ns("2461.391541"), Some(2_461_391_541_000));
        assert_eq!(timestamp_ns("5.000000001"), Some(5_000_000_001));
        assert_eq!(timestamp_ns("x.5"), None);
        assert_eq!(status_byte("SAM_STAT_CHECK_CONDITION"), Some(2));
        assert_eq!(status_byte("0x62"), Some(0x62));
    }
}
