//! The DEXT capture ring: its layout (as `recorder/dext/scuzz_capture.h`
//! writes it) and the importer behind `scuzz import dext`.
//!
//! The ring is a dump of memory a DriverKit driver filled through the shim:
//! a 64-byte header, then fixed 256-byte slots, each stamped with the index
//! of the record in it. The importer walks the last `slot_count` indices
//! (older ones were overwritten), skips slots whose stamp does not match
//! (being written when the ring was dumped), and rebuilds commands:
//! a submit record opens a command, SG records attach the scatter-gather
//! list the DEXT built for the controller, a complete record closes it.
//!
//! What a ring cannot hold is reported, never guessed: a completion (or SG
//! list) whose submit was overwritten becomes a [`Event::Note`] with what is
//! known; commands still open when the ring was dumped end with
//! [`ServiceResponse::Incomplete`].

use std::collections::HashMap;
use trace::{
    Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
    TaskAttr,
};

/// `"SZCR"`: the ring's first four bytes.
pub const MAGIC: [u8; 4] = *b"SZCR";
/// Layout version this importer reads.
pub const VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Slot size in bytes.
pub const SLOT_SIZE: usize = 256;
/// Largest ring accepted: 1 GiB is far beyond any DEXT's capture buffer, and
/// bounds what a hostile header can make the importer walk.
pub const MAX_RING_BYTES: usize = 1 << 30;

const KIND_SUBMIT: u8 = 1;
const KIND_SG: u8 = 2;
const KIND_COMPLETE: u8 = 3;
const KIND_BUNDLE: u8 = 4;
const SG_PER_RECORD: u32 = 13;
const SENSE_STORED_MAX: usize = 208;
const BUNDLE_MAX: usize = 32;

/// Why a ring dump could not be read at all. Problems with single records
/// are warnings in [`DextImport::warnings`], not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DextError {
    /// Shorter than the header.
    #[error("ring dump of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Bytes in the dump.
        len: usize,
    },
    /// Not a capture ring.
    #[error("not a scuzz capture ring: starts with {found:02x?}, expected \"SZCR\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A layout version this importer does not know.
    #[error(
        "ring layout version {found} (header offset 4); this importer reads version {VERSION}"
    )]
    UnsupportedVersion {
        /// Version in the header.
        found: u16,
    },
    /// Header fields that contradict the layout or the dump's length.
    #[error("ring header offset {offset}: {reason}")]
    BadHeader {
        /// Byte offset of the field.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The ring header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingHeader {
    /// Layout version.
    pub version: u16,
    /// Slots in the ring.
    pub slot_count: u32,
    /// Records ever reserved.
    pub write_index: u64,
    /// Times the index passed the end of the ring.
    pub wrap_count: u64,
    /// The DEXT's clock when the ring was initialised (ns).
    pub init_time_ns: u64,
}

impl RingHeader {
    /// Records overwritten before the dump.
    pub fn lost_records(&self) -> u64 {
        self.write_index.saturating_sub(u64::from(self.slot_count))
    }
}

/// A converted ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DextImport {
    /// The header.
    pub header: RingHeader,
    /// The trace events, in record order.
    pub events: Vec<Event>,
    /// Records skipped or only partly understood, each naming its slot.
    pub warnings: Vec<String>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Reads and checks the header.
pub fn parse_header(dump: &[u8]) -> Result<RingHeader, DextError> {
    let h = dump
        .get(..HEADER_LEN)
        .ok_or(DextError::TooShort { len: dump.len() })?;
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(DextError::BadMagic { found: magic });
    }
    let version = u16_at(h, 4);
    if version != VERSION {
        return Err(DextError::UnsupportedVersion { found: version });
    }
    let bad = |offset, reason: String| Err(DextError::BadHeader { offset, reason });
    if usize::from(u16_at(h, 6)) != HEADER_LEN {
        return bad(
            6,
            format!("header length {} is not {HEADER_LEN}", u16_at(h, 6)),
        );
    }
    if u32_at(h, 8) as usize != SLOT_SIZE {
        return bad(8, format!("slot size {} is not {SLOT_SIZE}", u32_at(h, 8)));
    }
    let slot_count = u32_at(h, 12);
    let need = (slot_count as usize)
        .checked_mul(SLOT_SIZE)
        .and_then(|n| n.checked_add(HEADER_LEN));
    match need {
        Some(n) if slot_count > 0 && n <= MAX_RING_BYTES && n <= dump.len() => {}
        _ => {
            return bad(
                12,
                format!(
                    "{slot_count} slots do not fit the {}-byte dump (limit {MAX_RING_BYTES})",
                    dump.len()
                ),
            )
        }
    }
    Ok(RingHeader {
        version,
        slot_count,
        write_index: u64_at(h, 16),
        wrap_count: u64_at(h, 24),
        init_time_ns: u64_at(h, 32),
    })
}

/// A flat LUN from SAM's 8-byte LUN structure: single-level peripheral
/// (method 00b) and flat (01b) addressing give the number REPORT LUNS
/// shows; anything else keeps all 64 bits.
pub fn flat_lun(b: [u8; 8]) -> u64 {
    if b[2..].iter().all(|&x| x == 0) && b[0] >> 6 <= 1 {
        (u64::from(b[0] & 0x3f) << 8) | u64::from(b[1])
    } else {
        u64::from_be_bytes(b)
    }
}

struct Open {
    event: usize,
    seq: u64,
    xfer: u32,
    sg_replaced: bool,
}

/// Converts a ring dump into trace events.
pub fn import_ring(dump: &[u8]) -> Result<DextImport, DextError> {
    let header = parse_header(dump)?;
    let count = u64::from(header.slot_count);
    let first = header.write_index.saturating_sub(count);
    let mut events: Vec<Event> = Vec::new();
    let mut warnings = Vec::new();
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut next_seq = 0u64;
    let mut last_time = 0u64;
    let base = header.init_time_ns;
    if header.lost_records() > 0 {
        events.push(Event::Note {
            time_ns: 0,
            text: format!(
                "dext ring wrapped {} times: the oldest {} records were overwritten",
                header.wrap_count,
                header.lost_records()
            ),
        });
    }
    for idx in first..header.write_index {
        let pos = (idx % count) as usize;
        let off = HEADER_LEN + pos * SLOT_SIZE;
        let s = &dump[off..off + SLOT_SIZE];
        let stamp = u64_at(s, 0);
        if stamp != idx.wrapping_add(1) {
            warnings.push(format!(
                "slot {pos} (record {idx}): stamp {stamp} does not match, the slot was being written; skipped"
            ));
            continue;
        }
        let kind = s[8];
        let path = s[9];
        let bundle_slot = u16_at(s, 10);
        let task = u64_at(s, 16);
        let time_ns = u64_at(s, 24).saturating_sub(base);
        last_time = last_time.max(time_ns);
        match kind {
            KIND_SUBMIT => {
                let cdb_len = usize::from(s[76]);
                if cdb_len == 0 || cdb_len > 16 {
                    warnings.push(format!(
                        "slot {pos} (record {idx}): CDB length {cdb_len}; skipped"
                    ));
                    continue;
                }
                let dir = match s[77] {
                    0 => Direction::None,
                    1 => Direction::ToDevice,
                    2 => Direction::FromDevice,
                    d => {
                        warnings.push(format!("slot {pos} (record {idx}): transfer direction {d} unknown, kept as none"));
                        Direction::None
                    }
                };
                let attr = match s[78] {
                    0 => TaskAttr::Simple,
                    1 => TaskAttr::Ordered,
                    2 => TaskAttr::HeadOfQueue,
                    3 => TaskAttr::Aca,
                    a => {
                        warnings.push(format!(
                            "slot {pos} (record {idx}): task attribute {a} unknown, kept as simple"
                        ));
                        TaskAttr::Simple
                    }
                };
                let target = u64_at(s, 32);
                let target = u32::try_from(target).unwrap_or_else(|_| {
                    warnings.push(format!(
                        "slot {pos} (record {idx}): target {target} exceeds 32 bits, clipped"
                    ));
                    u32::MAX
                });
                let mut lun = [0u8; 8];
                lun.copy_from_slice(&s[40..48]);
                let req = u64_at(s, 56);
                let xfer = u32::try_from(req).unwrap_or_else(|_| {
                    warnings.push(format!(
                        "slot {pos} (record {idx}): transfer count {req} exceeds 32 bits, clipped"
                    ));
                    u32::MAX
                });
                let iovm = u64_at(s, 64);
                if let Some(prev) = open.remove(&task) {
                    warnings.push(format!(
                        "slot {pos} (record {idx}): task {task:#x} submitted again before completing (seq {} left incomplete)",
                        prev.seq
                    ));
                    events.push(incomplete(prev.seq, time_ns));
                }
                let seq = next_seq;
                next_seq += 1;
                if path == 1 {
                    events.push(Event::Note {
                        time_ns,
                        text: format!("dext: seq {seq} arrived bundled, slot {bundle_slot}"),
                    });
                }
                let sg = if xfer > 0 {
                    vec![Segment::new(iovm, xfer)]
                } else {
                    Vec::new()
                };
                open.insert(
                    task,
                    Open {
                        event: events.len(),
                        seq,
                        xfer,
                        sg_replaced: false,
                    },
                );
                events.push(Event::Submit(Submit {
                    seq,
                    time_ns,
                    nexus: Nexus {
                        target,
                        lun: flat_lun(lun),
                    },
                    tag: u64_at(s, 48),
                    attr,
                    cdb: s[80..80 + cdb_len].to_vec(),
                    dir,
                    xfer_len: xfer,
                    sg,
                    payload: Payload::None,
                }));
            }
            KIND_SG => {
                let total = u32_at(s, 32);
                let first_index = u32_at(s, 36);
                let n = u32_at(s, 40);
                if n > SG_PER_RECORD {
                    warnings.push(format!("slot {pos} (record {idx}): {n} segments in one record (max {SG_PER_RECORD}); skipped"));
                    continue;
                }
                let segs: Vec<Segment> = (0..n as usize)
                    .map(|i| Segment::new(u64_at(s, 48 + 16 * i), u32_at(s, 56 + 16 * i)))
                    .collect();
                let Some(o) = open.get_mut(&task) else {
                    events.push(Event::Note {
                        time_ns,
                        text: format!(
                            "dext: SG list part ({} of {total} segments from {first_index}) for task {task:#x} whose submit was overwritten: {}",
                            segs.len(),
                            segs.iter().map(|g| format!("{}+{}", g.addr, g.len)).collect::<Vec<_>>().join(" ")
                        ),
                    });
                    continue;
                };
                if let Some(Event::Submit(sub)) = events.get_mut(o.event) {
                    if !o.sg_replaced || first_index == 0 {
                        sub.sg.clear();
                        o.sg_replaced = true;
                    }
                    if sub.sg.len() as u32 != first_index {
                        warnings.push(format!(
                            "slot {pos} (record {idx}): SG part starts at segment {first_index}, {} recorded so far for seq {}",
                            sub.sg.len(),
                            o.seq
                        ));
                    }
                    sub.sg.extend(segs);
                }
            }
            KIND_COMPLETE => {
                let bytes = u64_at(s, 32);
                let status = ScsiStatus(s[40]);
                let response = match s[41] {
                    2 => ServiceResponse::TaskComplete,
                    1 => ServiceResponse::DeliveryFailure,
                    0 => ServiceResponse::Incomplete,
                    r => {
                        warnings.push(format!("slot {pos} (record {idx}): service response {r} unknown, kept as delivery failure"));
                        ServiceResponse::DeliveryFailure
                    }
                };
                let stored = usize::from(s[43]).min(SENSE_STORED_MAX);
                let sense = s[48..48 + stored].to_vec();
                if usize::from(s[42]) > stored {
                    warnings.push(format!(
                        "slot {pos} (record {idx}): sense of {} bytes, {stored} kept",
                        s[42]
                    ));
                }
                let Some(o) = open.remove(&task) else {
                    events.push(Event::Note {
                        time_ns,
                        text: format!(
                            "dext: orphan completion of task {task:#x} (its submit was overwritten in the ring): {} ({:#04x}), service response {:?}, {bytes} bytes transferred, sense [{}]",
                            status.name(),
                            status.0,
                            response,
                            hex(&sense)
                        ),
                    });
                    continue;
                };
                let moved = u32::try_from(bytes).unwrap_or(u32::MAX);
                events.push(Event::Complete(Complete {
                    seq: o.seq,
                    time_ns,
                    response,
                    status,
                    sense,
                    bytes_transferred: moved,
                    residual: i64::from(o.xfer) - i64::from(moved),
                    payload: Payload::None,
                }));
            }
            KIND_BUNDLE => {
                let phase = s[32];
                let n = usize::from(u16_at(s, 34));
                let slots: Vec<String> = (0..n.min(BUNDLE_MAX))
                    .map(|i| u16_at(s, 36 + 2 * i).to_string())
                    .collect();
                let what = match phase {
                    1 => "UserProcessBundledParallelTasks",
                    2 => "BundledParallelTaskCompletion",
                    _ => "bundle (unknown phase)",
                };
                events.push(Event::Note {
                    time_ns,
                    text: format!(
                        "dext: {what} with {n} tasks, slots [{}]{}",
                        slots.join(", "),
                        if n > BUNDLE_MAX {
                            " (first 32 recorded)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            k => warnings.push(format!(
                "slot {pos} (record {idx}): unknown record kind {k}; skipped"
            )),
        }
    }
    let mut still: Vec<u64> = open.values().map(|o| o.seq).collect();
    still.sort_unstable();
    for seq in still {
        events.push(incomplete(seq, last_time));
    }
    Ok(DextImport {
        header,
        events,
        warnings,
    })
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

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(slots: u32) -> Vec<u8> {
        let mut r = vec![0u8; HEADER_LEN + slots as usize * SLOT_SIZE];
        r[..4].copy_from_slice(&MAGIC);
        r[4..6].copy_from_slice(&VERSION.to_le_bytes());
        r[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        r[8..12].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        r[12..16].copy_from_slice(&slots.to_le_bytes());
        r
    }

    #[test]
    fn header_errors_name_the_field() {
        assert_eq!(parse_header(&[0; 10]), Err(DextError::TooShort { len: 10 }));
        let mut r = ring(4);
        r[0] = b'X';
        assert!(matches!(parse_header(&r), Err(DextError::BadMagic { .. })));
        let mut r = ring(4);
        r[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            parse_header(&r),
            Err(DextError::BadHeader { offset: 12, .. })
        ));
        let mut r = ring(4);
        r[4] = 9;
        assert_eq!(
            parse_header(&r),
            Err(DextError::UnsupportedVersion { found: 9 })
        );
    }

    #[test]
    fn empty_ring_imports_to_nothing_and_garbage_slots_are_skipped() {
        let r = ring(4);
        let imp = import_ring(&r).unwrap();
        assert!(imp.events.is_empty() && imp.warnings.is_empty());
        let mut r = ring(4);
        r[16..24].copy_from_slice(&3u64.to_le_bytes());
        // Stamps never written: every slot is reported, nothing is invented.
        let imp = import_ring(&r).unwrap();
        assert!(imp.events.is_empty());
        assert_eq!(imp.warnings.len(), 3);
    }

    #[test]
    fn luns_flatten_like_report_luns() {
        assert_eq!(flat_lun([0, 5, 0, 0, 0, 0, 0, 0]), 5);
        assert_eq!(flat_lun([0x41, 0x02, 0, 0, 0, 0, 0, 0]), 0x102);
        assert_eq!(flat_lun([0xc0, 0, 0, 0, 0, 0, 0, 1]), 0xc000_0000_0000_0001);
    }
}
