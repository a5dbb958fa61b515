//! fio iolog v2/v3 ↔ trace.
//!
//! The format is fio's (`--write_iolog`/`--read_iolog`, fio's HOWTO "Trace
//! file format"): a first line `fio version 2 iolog` or `fio version 3
//! iolog`, then one action per line. v2: `FILE ACTION` (add, open, close)
//! or `FILE ACTION OFFSET LENGTH` (read, write, sync, datasync, trim, wait);
//! v3 puts a timestamp first, in microseconds since the run started
//! (fio writes `utime_since_now`), and has no `wait`.
//!
//! Import maps each file to a LUN in the order it is added, reads and
//! writes to READ/WRITE(10/16), sync and datasync to SYNCHRONIZE CACHE(10)
//! over the whole medium, trim to UNMAP with its parameter list. An iolog
//! carries no data and no completions: writes have no payload, and the
//! trace has submissions only. Export writes v3, which `fio --read_iolog`
//! replays.

use crate::cdbs;
use crate::import::{ImportError, ImportSummary};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use trace::{Cdb, Direction, Event, Nexus, Payload, Submit, TaskAttr};

/// First line of a v2 iolog.
pub const HEADER_V2: &str = "fio version 2 iolog";
/// First line of a v3 iolog.
pub const HEADER_V3: &str = "fio version 3 iolog";

/// Imports an iolog, streaming events into `sink`. `block_size` converts
/// byte offsets to LBAs; offsets and lengths must be multiples of it.
pub fn import_fio_iolog(
    input: impl BufRead,
    block_size: u32,
    sink: &mut impl FnMut(Event) -> Result<(), ImportError>,
) -> Result<ImportSummary, ImportError> {
    let bs = u64::from(block_size);
    if bs == 0 {
        return Err(ImportError::NotThisFormat {
            line: 0,
            reason: "block size 0".into(),
        });
    }
    let mut sum = ImportSummary::default();
    let mut version = 0u8;
    let mut files: HashMap<String, u64> = HashMap::new();
    let mut clock_ns = 0u64;
    let mut next_seq = 0u64;
    for (i, line) in input.lines().enumerate() {
        let n = i as u64 + 1;
        sum.lines = n;
        let line = line.map_err(|source| ImportError::Io { line: n, source })?;
        if n == 1 {
            version = if line.starts_with(HEADER_V2) {
                2
            } else if line.starts_with(HEADER_V3) {
                3
            } else {
                return Err(ImportError::NotThisFormat {
                    line: 1,
                    reason: format!("`{}` is not `{HEADER_V2}` or `{HEADER_V3}` (v1 iologs are not supported, as in fio)", line.trim()),
                });
            };
            continue;
        }
        let mut words = line.split_whitespace();
        if version == 3 {
            match words.next() {
                None => continue,
                Some(t) => match t.parse::<u64>().ok().and_then(|us| us.checked_mul(1000)) {
                    Some(ns) => clock_ns = ns,
                    None => {
                        sum.warn(n, format!("timestamp `{t}` is not microseconds"));
                        continue;
                    }
                },
            }
        }
        let words: Vec<&str> = words.collect();
        let (file, action, rest) = match words.as_slice() {
            [] if version == 2 => continue,
            [file, action, rest @ ..] => (*file, *action, rest),
            _ => {
                sum.warn(n, "expected FILE ACTION [OFFSET LENGTH]");
                continue;
            }
        };
        let lun = match files.get(file) {
            Some(l) => *l,
            None if action == "add" => {
                let l = files.len() as u64;
                files.insert(file.to_string(), l);
                continue;
            }
            None => {
                sum.warn(n, format!("file `{file}` used before `add`; added now"));
                let l = files.len() as u64;
                files.insert(file.to_string(), l);
                l
            }
        };
        match (action, rest) {
            ("add" | "open" | "close", []) => continue,
            ("add" | "open" | "close", _) => {
                sum.warn(n, format!("`{action}` takes no offset or length"));
                continue;
            }
            (_, [off, len]) => {
                let (Ok(off), Ok(len)) = (off.parse::<u64>(), len.parse::<u32>()) else {
                    sum.warn(
                        n,
                        format!(
                            "offset `{off}` or length `{len}` is not a number (length is 32-bit)"
                        ),
                    );
                    continue;
                };
                let submit =
                    |cdb: Vec<u8>, dir: Direction, xfer: u32, payload: Payload, seq: u64| {
                        Event::Submit(Submit {
                            seq,
                            time_ns: clock_ns,
                            nexus: Nexus { target: 0, lun },
                            tag: seq,
                            attr: TaskAttr::Simple,
                            cdb,
                            dir,
                            xfer_len: xfer,
                            sg: Vec::new(),
                            payload,
                        })
                    };
                let cdb_err = |source| ImportError::Cdb { line: n, source };
                let ev = match action {
                    "wait" if version == 2 => {
                        clock_ns = clock_ns.saturating_add(off.saturating_mul(1000));
                        continue;
                    }
                    "sync" | "datasync" => submit(
                        cdbs::sync_cache(0, 0).map_err(cdb_err)?,
                        Direction::None,
                        0,
                        Payload::None,
                        next_seq,
                    ),
                    "read" | "write" | "trim" => {
                        if off % bs != 0 || u64::from(len) % bs != 0 || len == 0 {
                            sum.warn(n, format!("{action} of {len} bytes at {off} is not a whole number of {bs}-byte blocks"));
                            continue;
                        }
                        let lba = off / bs;
                        let blocks = (u64::from(len) / bs) as u32;
                        if lba.checked_add(u64::from(blocks)).is_none() {
                            sum.warn(n, format!("{action} at {off} runs past the last LBA"));
                            continue;
                        }
                        match action {
                            "read" => submit(
                                cdbs::read_write(false, lba, blocks, false).map_err(cdb_err)?,
                                Direction::FromDevice,
                                len,
                                Payload::None,
                                next_seq,
                            ),
                            "write" => submit(
                                cdbs::read_write(true, lba, blocks, false).map_err(cdb_err)?,
                                Direction::ToDevice,
                                len,
                                Payload::None,
                                next_seq,
                            ),
                            _ => {
                                let (cdb, param) = cdbs::unmap(lba, blocks).map_err(cdb_err)?;
                                let l = param.len() as u32;
                                submit(cdb, Direction::ToDevice, l, Payload::Full(param), next_seq)
                            }
                        }
                    }
                    other => {
                        sum.warn(
                            n,
                            format!(
                                "action `{other}` is not read, write, sync, datasync or trim{}",
                                if version == 2 { " or wait" } else { "" }
                            ),
                        );
                        continue;
                    }
                };
                next_seq += 1;
                sum.commands += 1;
                sum.events += 1;
                sink(ev)?;
            }
            _ => sum.warn(n, format!("`{action}` needs OFFSET and LENGTH")),
        }
    }
    if version == 0 {
        return Err(ImportError::NotThisFormat {
            line: 1,
            reason: "empty file".into(),
        });
    }
    Ok(sum)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the trace failed.
    #[error("reading the trace: {0}")]
    Trace(Box<dyn std::error::Error + Send + Sync>),
    /// Writing the iolog failed.
    #[error("writing the iolog: {0}")]
    Io(#[from] std::io::Error),
    /// The block size is unknown (trace header says 0 and none was given).
    #[error("block size unknown: the trace header has none; pass --block-size")]
    NoBlockSize,
}

/// What an export wrote and what it could not express.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// I/O lines written.
    pub actions: u64,
    /// Commands with no iolog equivalent, by name, with their count.
    pub skipped: Vec<(String, u64)>,
}

/// Writes `events` as a fio v3 iolog. LUN 0 is the file `file`, LUN n
/// `file.lunN`; the files are added and opened before their first use
/// (every lower LUN first, so a re-import numbers them the same) and closed
/// at the end.
pub fn export_fio_iolog<E: std::error::Error + Send + Sync + 'static>(
    events: impl IntoIterator<Item = Result<Event, E>>,
    block_size: u32,
    file: &str,
    out: &mut impl Write,
) -> Result<ExportSummary, ExportError> {
    if block_size == 0 {
        return Err(ExportError::NoBlockSize);
    }
    let bs = u64::from(block_size);
    let name = |lun: u64| {
        if lun == 0 {
            file.to_string()
        } else {
            format!("{file}.lun{lun}")
        }
    };
    let mut sum = ExportSummary::default();
    let mut skipped: std::collections::BTreeMap<String, u64> = Default::default();
    let mut opened = 0u64;
    let mut last_us = 0u64;
    writeln!(out, "{HEADER_V3}")?;
    for ev in events {
        let ev = ev.map_err(|e| ExportError::Trace(Box::new(e)))?;
        let Event::Submit(s) = ev else { continue };
        let us = s.time_ns / 1000;
        last_us = last_us.max(us);
        let lun = s.nexus.lun;
        // fio adds and opens its files when the run starts (time 0); a
        // LUN first seen later is opened then.
        let at = if opened == 0 { 0 } else { us };
        while opened <= lun {
            writeln!(out, "{at} {} add", name(opened))?;
            writeln!(out, "{at} {} open", name(opened))?;
            opened += 1;
        }
        let f = name(lun);
        let mut skip = |what: String| *skipped.entry(what).or_insert(0) += 1;
        let cdb = match Cdb::parse(&s.cdb) {
            Ok(c) => c,
            Err(_) => {
                skip(format!("undecodable CDB {:02x?}", s.cdb.first()));
                continue;
            }
        };
        // `lba` and `blocks` in blocks; a range whose byte offset overflows
        // or whose length exceeds fio's 32-bit length is skipped, not wrapped.
        let mut line = |act: &str, lba: u64, blocks: u64| -> Result<bool, std::io::Error> {
            let (Some(off), Some(len)) = (lba.checked_mul(bs), blocks.checked_mul(bs)) else {
                return Ok(false);
            };
            if len > u64::from(u32::MAX) {
                return Ok(false);
            }
            writeln!(out, "{us} {f} {act} {off} {len}")?;
            Ok(true)
        };
        let wrote = match &cdb {
            Cdb::Read(rw) => line("read", rw.lba, u64::from(rw.blocks))?,
            Cdb::Write(rw) => line("write", rw.lba, u64::from(rw.blocks))?,
            Cdb::SyncCache { .. } => line("sync", 0, 0)?,
            Cdb::WriteSame {
                unmap: true,
                lba,
                blocks,
                ..
            } if *blocks > 0 => line("trim", *lba, u64::from(*blocks))?,
            Cdb::Unmap { .. } => match &s.payload {
                Payload::Full(p) => match unmap_ranges(p) {
                    Some(r) if !r.is_empty() => {
                        let mut all = true;
                        for (lba, blocks) in r {
                            all &= line("trim", lba, u64::from(blocks))?;
                            sum.actions += 1;
                        }
                        sum.actions -= 1;
                        all
                    }
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        };
        if wrote {
            sum.actions += 1;
        } else {
            skip(cdb.name().to_string());
        }
    }
    for lun in 0..opened {
        writeln!(out, "{last_us} {} close", name(lun))?;
    }
    out.flush()?;
    sum.skipped = skipped.into_iter().collect();
    Ok(sum)
}

/// Every (LBA, blocks) descriptor of an UNMAP parameter list (SBC-3 5.28).
fn unmap_ranges(p: &[u8]) -> Option<Vec<(u64, u32)>> {
    let desc_len = usize::from(u16::from_be_bytes(p.get(2..4)?.try_into().ok()?));
    let descs = p.get(8..8 + desc_len)?;
    Some(
        descs
            .chunks_exact(16)
            .map(|d| {
                let lba = u64::from_be_bytes(d[0..8].try_into().unwrap_or([0; 8]));
                let n = u32::from_be_bytes(d[8..12].try_into().unwrap_or([0; 4]));
                (lba, n)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(text: &str) -> (Vec<Event>, ImportSummary) {
        let mut v = Vec::new();
        let s = import_fio_iolog(text.as_bytes(), 512, &mut |e| {
            v.push(e);
            Ok(())
        })
        .unwrap();
        (v, s)
    }

    #[test]
    fn v2_with_waits_and_every_action() {
        let (ev, s) = import(
            "fio version 2 iolog\n/dev/sdb add\n/dev/sdb open\n/dev/sdb write 0 4096\n/dev/sdb wait 500 0\n\
             /dev/sdb read 4096 8192\n/dev/sdb sync 0 0\n/dev/sdb trim 1048576 65536\n/dev/sdb close\n",
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(ev.len(), 4);
        let Event::Submit(r) = &ev[1] else { panic!() };
        assert_eq!((r.cdb[0], r.time_ns, r.xfer_len), (0x28, 500_000, 8192));
        let Event::Submit(t) = &ev[3] else { panic!() };
        assert_eq!(t.cdb[0], 0x42);
        let Payload::Full(p) = &t.payload else {
            panic!()
        };
        assert_eq!(unmap_ranges(p), Some(vec![(2048, 128)]));
    }

    #[test]
    fn malformed_lines_are_reported_by_number_and_skipped() {
        let (ev, s) = import(
            "fio version 3 iolog\n0 f add\n1 f write 0 4096\nbogus\n3 f write 100 4096\n4 f frob 0 0\n5 f read 4096\n6 f read 0 512\n",
        );
        assert_eq!(ev.len(), 2);
        let lines: Vec<u64> = s.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![4, 5, 6, 7]);
        assert!(s.warnings[1].message.contains("whole number"));
    }

    #[test]
    fn export_skips_ranges_whose_byte_offset_overflows() {
        let huge = Event::Submit(Submit {
            seq: 0,
            time_ns: 0,
            nexus: Nexus::default(),
            tag: 0,
            attr: TaskAttr::Simple,
            cdb: cdbs::read_write(false, u64::MAX - 8, 8, false).unwrap(),
            dir: Direction::FromDevice,
            xfer_len: 4096,
            sg: Vec::new(),
            payload: Payload::None,
        });
        let mut out = Vec::new();
        let s = export_fio_iolog(
            [Ok::<_, std::convert::Infallible>(huge)],
            512,
            "f",
            &mut out,
        )
        .unwrap();
        assert_eq!(s.actions, 0);
        assert_eq!(s.skipped, vec![("READ(16)".to_string(), 1)]);
    }

    #[test]
    fn not_an_iolog_is_an_error_naming_line_1() {
        let e = import_fio_iolog("hello\n".as_bytes(), 512, &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().starts_with("line 1:"), "{e}");
    }
}
