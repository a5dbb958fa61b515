//! Frame bodies: bincode 2 (serde, standard configuration: little-endian,
//! variable-length integers).
//!
//! This is the only module of the project that names bincode. bincode 2.0.1
//! is pinned and frozen upstream; should it ever need replacing, the wire
//! encoding documented in `docs/trace-format.md` ("Body encoding") is what a
//! replacement must reproduce, and the golden vectors below pin it.

use super::header::TraceHeader;
use super::MAX_FRAME_BODY;
use crate::command::Event;
use bincode::config::{self, Configuration, LittleEndian, Varint};

/// Standard configuration with a decode limit of one frame, so no length
/// inside a body can claim more than the body could hold.
type Config = Configuration<LittleEndian, Varint, config::Limit<{ MAX_FRAME_BODY as usize }>>;

const CONFIG: Config = config::standard().with_limit::<{ MAX_FRAME_BODY as usize }>();

/// How many `Event` variants this version knows; a body whose leading variant
/// index is at or above this comes from a newer minor version.
pub(crate) const KNOWN_EVENT_VARIANTS: u32 = 5;

/// Appends the encoding of `ev` to `out`.
pub(crate) fn encode_event(ev: &Event, out: &mut Vec<u8>) -> Result<(), String> {
    bincode::serde::encode_into_std_write(ev, out, CONFIG)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Appends the encoding of `h` to `out`.
pub(crate) fn encode_header(h: &TraceHeader, out: &mut Vec<u8>) -> Result<(), String> {
    bincode::serde::encode_into_std_write(h, out, CONFIG)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Decodes one event body. With `allow_trailing` (the file is of a newer
/// minor version), bytes after the event are ignored; otherwise they are an
/// error, because a writer of this version never produces them.
pub(crate) fn decode_event(body: &[u8], allow_trailing: bool) -> Result<Event, String> {
    decode(body, allow_trailing)
}

/// Decodes the header frame's body (trailing bytes: see [`decode_event`]).
pub(crate) fn decode_header(body: &[u8], allow_trailing: bool) -> Result<TraceHeader, String> {
    decode(body, allow_trailing)
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], allow_trailing: bool) -> Result<T, String> {
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, CONFIG).map_err(|e| e.to_string())?;
    if used != body.len() && !allow_trailing {
        return Err(format!(
            "{} bytes left over after the value",
            body.len() - used
        ));
    }
    Ok(value)
}

/// The variant index an event body starts with (a varint u32), or `None` if
/// the body is too short to hold one.
pub(crate) fn event_variant(body: &[u8]) -> Option<u32> {
    let (&first, rest) = body.split_first()?;
    match first {
        0..=250 => Some(u32::from(first)),
        251 => rest
            .get(..2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))),
        252 => rest
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{
        Complete, Direction, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit, TaskAttr,
    };
    use crate::file::PayloadMode;
    use std::collections::BTreeMap;

    fn enc(ev: &Event) -> Vec<u8> {
        let mut v = Vec::new();
        encode_event(ev, &mut v).unwrap();
        v
    }

    /// The worked example of `docs/trace-format.md`: if this changes, the
    /// document (and every C writer) is wrong.
    #[test]
    fn submit_golden_vector_matches_the_format_document() {
        let ev = Event::Submit(Submit {
            seq: 300,
            time_ns: 70_000,
            nexus: Nexus { target: 0, lun: 1 },
            tag: 7,
            attr: TaskAttr::Simple,
            cdb: vec![0x2a, 0, 0, 0, 0x08, 0, 0, 0, 0x08, 0],
            dir: Direction::ToDevice,
            xfer_len: 4096,
            sg: vec![Segment::new(0x1_2000_0000, 4096)],
            payload: Payload::Digests {
                granularity: 4096,
                crcs: vec![0xdead_beef],
            },
        });
        let want: Vec<u8> = vec![
            0x00, // Event::Submit
            0xfb, 0x2c, 0x01, // seq 300
            0xfc, 0x70, 0x11, 0x01, 0x00, // time_ns 70000
            0x00, // nexus.target 0
            0x01, // nexus.lun 1
            0x07, // tag 7
            0x00, // attr Simple
            0x0a, 0x2a, 0, 0, 0, 0x08, 0, 0, 0, 0x08, 0,    // cdb: len 10, bytes
            0x01, // dir ToDevice
            0xfb, 0x00, 0x10, // xfer_len 4096
            0x01, // sg: 1 segment
            0xfd, 0x00, 0x00, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, // addr 0x1_2000_0000
            0xfb, 0x00, 0x10, // len 4096
            0x02, // Payload::Digests
            0xfb, 0x00, 0x10, // granularity 4096
            0x01, 0xfc, 0xef, 0xbe, 0xad, 0xde, // crcs: [0xdeadbeef]
        ];
        assert_eq!(enc(&ev), want);
        assert_eq!(decode_event(&want, false).unwrap(), ev);
    }

    /// Full payloads go through serde as a byte string (one copy, not a
    /// call per byte): the encoding must stay what a `Vec<u8>` sequence
    /// gave, a length and the bytes, here and in JSON.
    #[test]
    fn a_full_payload_encodes_as_its_length_and_bytes() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let p = Payload::Full(bytes.clone());
        let mut want = vec![0x01, 0xfb, 0x2c, 0x01]; // Full, length 300
        want.extend_from_slice(&bytes);
        let got = bincode::serde::encode_to_vec(&p, CONFIG).unwrap();
        assert_eq!(got, want);
        let (back, _): (Payload, usize) = bincode::serde::decode_from_slice(&got, CONFIG).unwrap();
        assert_eq!(back, p);
        let json = serde_json::to_string(&Payload::Full(vec![1, 2, 255])).unwrap();
        assert_eq!(json, r#"{"Full":[1,2,255]}"#);
        assert_eq!(
            serde_json::from_str::<Payload>(&json).unwrap(),
            Payload::Full(vec![1, 2, 255])
        );
    }

    #[test]
    fn complete_and_marker_golden_vectors() {
        let ev = Event::Complete(Complete {
            seq: 1,
            time_ns: 2,
            response: ServiceResponse::TaskComplete,
            status: ScsiStatus::CHECK_CONDITION,
            sense: vec![0x70, 0, 5],
            bytes_transferred: 0,
            residual: -1,
            payload: Payload::None,
        });
        assert_eq!(enc(&ev), vec![1, 1, 2, 0, 2, 3, 0x70, 0, 5, 0, 1, 0]);
        assert_eq!(enc(&Event::PowerLoss { time_ns: 9 }), vec![2, 9]);
        assert_eq!(
            enc(&Event::Reset { time_ns: 251 }),
            vec![3, 0xfb, 0xfb, 0x00]
        );
        assert_eq!(
            enc(&Event::Note {
                time_ns: 0,
                text: "hi".into()
            }),
            vec![4, 0, 2, b'h', b'i']
        );
        let pat = Event::Complete(Complete {
            seq: 0,
            time_ns: 0,
            response: ServiceResponse::Incomplete,
            status: ScsiStatus::GOOD,
            sense: vec![],
            bytes_transferred: 0,
            residual: 3,
            payload: Payload::Pattern {
                seed: 5,
                generation: 6,
            },
        });
        assert_eq!(enc(&pat), vec![1, 0, 0, 2, 0, 0, 0, 6, 3, 5, 6]);
    }

    #[test]
    fn header_golden_vector() {
        let mut labels = BTreeMap::new();
        labels.insert("k".to_string(), "v".to_string());
        let h = TraceHeader {
            producer: "c".into(),
            created_unix_s: 1,
            block_size: 512,
            capacity_blocks: 2048,
            hba: None,
            payload_mode: PayloadMode::Digest,
            labels,
        };
        let mut v = Vec::new();
        encode_header(&h, &mut v).unwrap();
        assert_eq!(
            v,
            vec![1, b'c', 1, 0xfb, 0x00, 0x02, 0xfb, 0x00, 0x08, 0, 2, 1, 1, b'k', 1, b'v']
        );
        assert_eq!(decode_header(&v, false).unwrap(), h);
    }

    #[test]
    fn trailing_bytes_are_refused_unless_allowed() {
        let mut v = enc(&Event::PowerLoss { time_ns: 1 });
        v.push(0);
        assert!(decode_event(&v, false).is_err());
        assert_eq!(
            decode_event(&v, true).unwrap(),
            Event::PowerLoss { time_ns: 1 }
        );
    }

    #[test]
    fn event_variant_reads_the_leading_varint() {
        assert_eq!(event_variant(&[4, 0]), Some(4));
        assert_eq!(event_variant(&[0xfb, 0x00, 0x01]), Some(256));
        assert_eq!(event_variant(&[0xfb, 0x00]), None);
        assert_eq!(event_variant(&[]), None);
    }

    #[test]
    fn hostile_vec_length_is_an_error_not_an_allocation() {
        // Note with a text length of 2^60.
        let body = [4, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(decode_event(&body, false).is_err());
    }
}
