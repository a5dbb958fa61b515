//! The trace file: round trips, torn tails, bit flips, versioning.

use arbitrary::{Arbitrary, Unstructured};
use trace::file::{
    Compression, PayloadMode, TraceError, TraceHeader, TraceReader, TraceWriter, PREAMBLE_LEN,
};
use trace::{
    Complete, Direction, Event, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
    TaskAttr,
};

const MODES: [Compression; 2] = [Compression::None, Compression::Zstd { level: 3 }];

/// Deterministic pseudo-random bytes (splitmix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn random_events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; 192];
    (0..n)
        .map(|_| {
            rng.fill(&mut buf);
            Event::arbitrary(&mut Unstructured::new(&buf)).expect("arbitrary event")
        })
        .collect()
}

fn header(mode: PayloadMode) -> TraceHeader {
    let mut h = TraceHeader::new("scuzz-trace tests");
    // Fixed, so headers written a second apart compare equal.
    h.created_unix_s = 1_764_028_800;
    h.block_size = 4096;
    h.capacity_blocks = 1 << 20;
    h.hba = Some(trace::HbaPreset::lsi3108());
    h.payload_mode = mode;
    h.labels.insert("test".into(), "file".into());
    h
}

/// A sequential-write workload: Submit with digests, then Complete.
fn write_stream(n: u64) -> Vec<Event> {
    let mut v = Vec::new();
    for i in 0..n {
        let lba = (i * 8) as u32;
        let mut cdb = vec![0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        v.push(Event::Submit(Submit {
            seq: i,
            time_ns: i * 10_000,
            nexus: Nexus { target: 0, lun: 0 },
            tag: i,
            attr: TaskAttr::Simple,
            cdb,
            dir: Direction::ToDevice,
            xfer_len: 4096,
            sg: vec![Segment::new(0x1_0000_0000 + i * 4096, 4096)],
            payload: Payload::Digests {
                granularity: 4096,
                crcs: vec![(i as u32).wrapping_mul(0x9e37_79b9)],
            },
        }));
        v.push(Event::Complete(Complete {
            seq: i,
            time_ns: i * 10_000 + 4_000,
            response: ServiceResponse::TaskComplete,
            status: ScsiStatus::GOOD,
            sense: vec![],
            bytes_transferred: 4096,
            residual: 0,
            payload: Payload::None,
        }));
    }
    v
}

/// Writes `events`, flushing every `flush_every` events, and returns the
/// bytes and the file offset at which each flush group ends.
fn write_trace(
    events: &[Event],
    compression: Compression,
    flush_every: usize,
    finish: bool,
) -> (Vec<u8>, Vec<(usize, u64)>) {
    let mut w = TraceWriter::new(Vec::new(), &header(PayloadMode::Mixed), compression).unwrap();
    let mut bounds = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        w.write(ev).unwrap();
        if (i + 1) % flush_every == 0 {
            w.flush().unwrap();
            bounds.push((i + 1, w.bytes_written()));
        }
    }
    w.flush().unwrap();
    if bounds.last().map(|b| b.0) != Some(events.len()) {
        bounds.push((events.len(), w.bytes_written()));
    }
    let bytes = if finish {
        w.finish().unwrap()
    } else {
        let bytes = w.get_ref().clone();
        drop(w);
        bytes
    };
    (bytes, bounds)
}

/// Reads everything: the events before the first error, and that error.
fn read_all(bytes: &[u8]) -> (Vec<Event>, Option<TraceError>) {
    let r = match TraceReader::new(bytes) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut events = Vec::new();
    let mut error = None;
    for item in r {
        match item {
            Ok(ev) => {
                assert!(error.is_none(), "iteration continued after an error");
                events.push(ev)
            }
            Err(e) => {
                assert!(error.is_none(), "two errors from one reader");
                error = Some(e);
            }
        }
    }
    (events, error)
}

#[test]
fn hundred_thousand_random_events_round_trip_in_both_modes() {
    let events = random_events(100_000, 0x5c22);
    for mode in MODES {
        let (bytes, _) = write_trace(&events, mode, usize::MAX, true);
        let mut r = TraceReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header(PayloadMode::Mixed));
        assert_eq!(
            r.compression() == Compression::None,
            mode == Compression::None
        );
        let mut n = 0;
        for (got, want) in (&mut r).zip(&events) {
            assert_eq!(&got.unwrap(), want, "event {n} in {mode:?}");
            n += 1;
        }
        assert_eq!(n, events.len());
        assert!(r.next().is_none());
        assert!(r.is_complete());
    }
}

#[test]
fn a_cut_anywhere_inside_the_last_frame_keeps_every_earlier_event() {
    let events = write_stream(40);
    for mode in MODES {
        // Unfinished (a crash while recording): the last frame holds events.
        let (bytes, bounds) = write_trace(&events, mode, 10, false);
        let (last_start, kept) = match bounds.len() {
            n if n >= 2 => (bounds[n - 2].1, bounds[n - 2].0),
            _ => unreachable!("four flush groups"),
        };
        let per_event = mode == Compression::None;
        // Uncompressed, every event is its own frame: the last frame is the
        // last event. Compressed, it is the last chunk.
        let (last_start, kept) = if per_event {
            let (b, _) = write_trace(&events[..events.len() - 1], mode, usize::MAX, false);
            (b.len() as u64, events.len() - 1)
        } else {
            (last_start, kept)
        };
        assert_eq!(bytes.len() as u64, bounds.last().unwrap().1);
        for cut in last_start + 1..bytes.len() as u64 {
            let (got, err) = read_all(&bytes[..cut as usize]);
            assert_eq!(got, events[..kept], "{mode:?} cut at {cut}");
            match err {
                Some(TraceError::TornTail { offset }) => assert_eq!(offset, last_start),
                other => panic!("{mode:?} cut at {cut}: expected torn tail, got {other:?}"),
            }
        }
        // Cut exactly at a frame boundary: a clean, unfinished trace.
        let mut r = TraceReader::new(&bytes[..last_start as usize]).unwrap();
        assert_eq!((&mut r).count(), kept);
        assert!(!r.is_complete());

        // Finished: the last frame is the end frame; a cut inside it keeps
        // every event.
        let (bytes, _) = write_trace(&events, mode, 10, true);
        let end_start = bytes.len() - 12;
        for cut in end_start + 1..bytes.len() {
            let (got, err) = read_all(&bytes[..cut]);
            assert_eq!(got, events, "{mode:?} cut at {cut}");
            assert!(
                matches!(err, Some(TraceError::TornTail { offset }) if offset == end_start as u64)
            );
        }
    }
}

#[test]
fn a_cut_anywhere_in_the_file_yields_a_prefix_then_at_most_one_error() {
    let events = write_stream(6);
    for mode in MODES {
        let (bytes, _) = write_trace(&events, mode, 4, true);
        for cut in 0..bytes.len() {
            let (got, err) = read_all(&bytes[..cut]);
            assert_eq!(got, events[..got.len()], "{mode:?} cut at {cut}");
            assert!(
                matches!(err, Some(TraceError::TornTail { .. }) | None),
                "{mode:?} cut at {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn a_single_flipped_bit_anywhere_is_detected_and_earlier_frames_survive() {
    let mut events = write_stream(5);
    events.push(Event::Note {
        time_ns: 1,
        text: "a note".into(),
    });
    events.push(Event::PowerLoss { time_ns: 2 });
    for mode in MODES {
        // Uncompressed, a flush group of one event is one frame; compressed,
        // one chunk.
        let group = if mode == Compression::None { 1 } else { 3 };
        let (bytes, bounds) = write_trace(&events, mode, group, true);
        let first_frame = {
            let (b, _) = write_trace(&[], mode, 1, false);
            b.len() as u64
        };
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let at = (bit / 8) as u64;
            let (got, err) = read_all(&bad);
            let err = err.unwrap_or_else(|| panic!("{mode:?}: flip of bit {bit} went unnoticed"));
            if at < PREAMBLE_LEN as u64 {
                assert!(
                    matches!(
                        err,
                        TraceError::BadMagic { .. }
                            | TraceError::UnsupportedVersion { .. }
                            | TraceError::Corrupt { offset: 0, .. }
                    ),
                    "{mode:?} bit {bit}: {err:?}"
                );
                continue;
            }
            let TraceError::Corrupt { offset, .. } = err else {
                panic!("{mode:?} bit {bit}: expected Corrupt, got {err:?}");
            };
            assert!(
                offset <= at,
                "{mode:?} bit {bit}: offset {offset} after the flip"
            );
            if at < first_frame {
                assert_eq!(offset, PREAMBLE_LEN as u64, "header frame");
                continue;
            }
            // Every group that ends at or before the damaged frame is intact.
            let intact = bounds
                .iter()
                .filter(|(_, end)| *end <= at)
                .map(|(n, _)| *n)
                .max();
            let intact = intact.unwrap_or(0);
            assert_eq!(got, events[..intact], "{mode:?} bit {bit}");
            let frame_start = bounds.iter().map(|b| b.1).filter(|&e| e <= at).max();
            assert_eq!(
                offset,
                frame_start.unwrap_or(first_frame),
                "{mode:?} bit {bit}"
            );
        }
    }
}

fn crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_le_bytes();
    let mut f = len.to_vec();
    f.extend_from_slice(&crc(&len).to_le_bytes());
    f.extend_from_slice(&crc(body).to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn set_version(bytes: &mut [u8], major: u16, minor: u16) {
    bytes[4..6].copy_from_slice(&major.to_le_bytes());
    bytes[6..8].copy_from_slice(&minor.to_le_bytes());
    let c = crc(&bytes[..12]);
    bytes[12..16].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn a_newer_major_version_is_refused_with_a_clear_message() {
    let (mut bytes, _) = write_trace(&write_stream(1), Compression::None, 1, true);
    set_version(&mut bytes, 2, 7);
    let e = TraceReader::new(&bytes[..]).err().expect("refused");
    assert!(
        matches!(
            e,
            TraceError::UnsupportedVersion {
                found_major: 2,
                found_minor: 7,
                supported: 1
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "trace format version 2.7 is newer than this scuzz supports (major version 1); \
         upgrade scuzz to read it"
    );
}

#[test]
fn a_newer_minor_version_is_read_and_unknown_event_kinds_skipped() {
    let (bytes, _) = write_trace(&[], Compression::None, 1, false);
    let mut bytes = bytes;
    set_version(&mut bytes, 1, 1);
    // An event kind from the future (variant 9), then a known one with a
    // trailing field appended.
    bytes.extend(frame(&[9, 1, 2, 3]));
    bytes.extend(frame(&[2, 5, 0xaa]));
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    assert_eq!(r.version(), (1, 1));
    assert_eq!(r.next().unwrap().unwrap(), Event::PowerLoss { time_ns: 5 });
    assert!(r.next().is_none());
    assert_eq!(r.skipped_unknown(), 1);
    assert!(!r.is_complete());

    // The same frames in a current-version file are corruption.
    set_version(&mut bytes, 1, 0);
    let (_, err) = read_all(&bytes);
    assert!(matches!(err, Some(TraceError::Corrupt { .. })), "{err:?}");
}

#[test]
fn a_hostile_frame_length_is_refused_before_any_allocation() {
    let (mut bytes, _) = write_trace(&[], Compression::None, 1, false);
    let at = bytes.len() as u64;
    let len = u32::MAX.to_le_bytes();
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&crc(&len).to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let (_, err) = read_all(&bytes);
    match err {
        Some(TraceError::Corrupt { offset, reason }) => {
            assert_eq!(offset, at);
            assert!(reason.contains("exceeds"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn data_after_the_end_frame_is_corruption() {
    let (mut bytes, _) = write_trace(&write_stream(1), Compression::None, 1, true);
    let end = bytes.len() as u64;
    bytes.push(0);
    let (got, err) = read_all(&bytes);
    assert_eq!(got.len(), 2);
    assert!(
        matches!(err, Some(TraceError::Corrupt { offset, .. }) if offset == end),
        "{err:?}"
    );
}

#[test]
fn not_a_trace_is_bad_magic_even_when_short() {
    for bytes in [&b"hello world, not a trace"[..], b"hi", b"SCZX"] {
        let e = TraceReader::new(bytes).err().expect("refused");
        assert!(matches!(e, TraceError::BadMagic { .. }), "{e:?}");
    }
    let e = TraceReader::new(&b"SC"[..]).err().expect("refused");
    assert!(matches!(e, TraceError::TornTail { offset: 0 }), "{e:?}");
}

#[test]
fn payloads_must_keep_the_headers_promise() {
    let mut w = TraceWriter::new(Vec::new(), &header(PayloadMode::Digest), MODES[0]).unwrap();
    let mut events = write_stream(1);
    w.write(&events[0]).unwrap();
    if let Event::Submit(s) = &mut events[0] {
        s.payload = Payload::Full(vec![0; 4096]);
    }
    let e = w.write(&events[0]).unwrap_err();
    assert!(e.to_string().contains("promises Digest"), "{e}");
    // The refused event left no trace; the writer carries on.
    w.write(&events[1]).unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(read_all(&bytes).0.len(), 2);
}

#[test]
fn files_are_named_in_errors() {
    let dir = std::env::temp_dir().join(format!("scuzz-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.sczt");
    let e = TraceReader::open(&missing).err().expect("missing file");
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );

    let path = dir.join("torn.sczt");
    let mut w = TraceWriter::create(&path, &header(PayloadMode::Digest), MODES[1]).unwrap();
    for ev in write_stream(100) {
        w.write(&ev).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 3]).unwrap();
    let r = TraceReader::open(&path).unwrap();
    let last = r.last().unwrap().unwrap_err();
    assert_eq!(last.path(), Some(path.as_path()));
    assert!(
        matches!(last.inner(), TraceError::TornTail { offset: 16.. }),
        "{last}"
    );
    assert!(last.to_string().contains("torn tail"), "{last}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[allow(dead_code)]
#[path = "../examples/quickstart_corpus.rs"]
mod quickstart_corpus;

/// The corpus sample must stay what its documented generator writes. Set
/// `SCUZZ_REGENERATE_CORPUS=1` to rewrite it after changing the generator.
#[test]
fn the_checked_in_quickstart_sample_is_what_its_generator_writes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../corpus/samples/quickstart.sczt"
    );
    let fresh = quickstart_corpus::build();
    if std::env::var_os("SCUZZ_REGENERATE_CORPUS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &fresh).unwrap();
    }
    let stored = std::fs::read(path).expect("corpus/samples/quickstart.sczt is checked in");
    // Compare content, not bytes: another zstd version may compress the
    // same events differently.
    let decode = |b: &[u8]| {
        let r = TraceReader::new(b).unwrap();
        let h = r.header().clone();
        let events: Vec<Event> = r.collect::<Result<_, _>>().unwrap();
        (h, events)
    };
    let (h, events) = decode(&stored);
    assert_eq!(
        (h, events),
        decode(&fresh),
        "regenerate: SCUZZ_REGENERATE_CORPUS=1 cargo test -p scuzz-trace --test file"
    );
}

/// The worked example of `docs/trace-format.md` ("A complete file"): a
/// header, one Submit, the end frame. If this test fails, the document (and
/// every C writer built from it) is wrong.
#[test]
fn the_format_documents_worked_example_is_what_the_writer_writes() {
    let mut h = TraceHeader::new("c");
    h.created_unix_s = 1;
    h.block_size = 512;
    h.capacity_blocks = 2048;
    h.payload_mode = PayloadMode::Digest;
    h.labels.insert("k".into(), "v".into());
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
    let mut w = TraceWriter::new(Vec::new(), &h, Compression::None).unwrap();
    w.write(&ev).unwrap();
    let bytes = w.finish().unwrap();
    #[rustfmt::skip]
    let want: &[u8] = &[
        // preamble: "SCZT", major 1, minor 0, compression 0, reserved, crc32c
        0x53, 0x43, 0x5a, 0x54, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x80, 0xb6, 0x9c,
        // header frame: len 16, crc32c(len), crc32c(body), body
        0x10, 0x00, 0x00, 0x00, 0xfa, 0xfa, 0x03, 0xa1, 0x57, 0x37, 0x03, 0xfc,
        0x01, 0x63, 0x01, 0xfb, 0x00, 0x02, 0xfb, 0x00, 0x08, 0x00, 0x02, 0x01, 0x01, 0x6b, 0x01, 0x76,
        // event frame: len 51, crc32c(len), crc32c(body), body
        0x33, 0x00, 0x00, 0x00, 0x48, 0x67, 0x04, 0x14, 0x5e, 0xd5, 0x00, 0x7a,
        0x00, 0xfb, 0x2c, 0x01, 0xfc, 0x70, 0x11, 0x01, 0x00, 0x00, 0x01, 0x07, 0x00, 0x0a, 0x2a, 0x00,
        0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0xfb, 0x00, 0x10, 0x01, 0xfd, 0x00, 0x00,
        0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0xfb, 0x00, 0x10, 0x02, 0xfb, 0x00, 0x10, 0x01, 0xfc, 0xef,
        0xbe, 0xad, 0xde,
        // end frame: len 0, crc32c(len), crc32c of nothing
        0x00, 0x00, 0x00, 0x00, 0xc7, 0x4b, 0x67, 0x48, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(bytes, want);
    let (events, err) = read_all(want);
    assert!(err.is_none());
    assert_eq!(events, vec![ev]);
}

/// `docs/examples/sczt_writer.c`, a C99 writer built from the format
/// document alone, writes a trace this crate reads back event for event.
#[test]
fn a_c99_writer_built_from_the_format_document_is_read_back_exactly() {
    use std::process::Command;
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/sczt_writer.c"
    );
    let dir = std::env::temp_dir().join(format!("scuzz-c-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("sczt_writer");
    let out = dir.join("c.sczt");
    // Building zstd-sys already needs a C compiler, so one is always here.
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
            "-o",
        ])
        .arg(&exe)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(built.success(), "{cc} failed on {src}");
    let ran = Command::new(&exe).arg(&out).status().unwrap();
    assert!(ran.success());

    let r = TraceReader::open(&out).unwrap();
    let h = r.header().clone();
    assert_eq!(h.producer, "sczt_writer.c");
    assert_eq!(
        (h.created_unix_s, h.block_size, h.capacity_blocks),
        (1_764_028_800, 4096, 262_144)
    );
    assert_eq!(
        (h.hba.as_ref(), h.payload_mode),
        (None, PayloadMode::Digest)
    );
    assert_eq!(h.labels.get("host").map(String::as_str), Some("mac-pro"));
    assert_eq!(h.labels.get("shim").map(String::as_str), Some("example"));
    let mut r = r;
    let events: Vec<Event> = (&mut r).collect::<Result<_, _>>().unwrap();
    assert!(r.is_complete());
    let mut sense = vec![0u8; 18];
    sense[..14].copy_from_slice(&[0x70, 0, 0x03, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0c, 0]);
    let submit = |seq, time_ns, tag, cdb: Vec<u8>, dir, xfer_len, sg, payload| {
        Event::Submit(Submit {
            seq,
            time_ns,
            nexus: Nexus { target: 0, lun: 0 },
            tag,
            attr: TaskAttr::Simple,
            cdb,
            dir,
            xfer_len,
            sg,
            payload,
        })
    };
    let want = vec![
        submit(
            0,
            1000,
            1,
            vec![0x2a, 0, 0, 0, 0x08, 0, 0, 0, 2, 0],
            Direction::ToDevice,
            8192,
            vec![
                Segment::new(0xffff_f000, 4096),
                Segment::new(0x1_2000_0000, 4096),
            ],
            Payload::Digests {
                granularity: 4096,
                crcs: vec![0x1234_5678, 0x9abc_def0],
            },
        ),
        submit(
            1,
            2000,
            2,
            vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Direction::None,
            0,
            vec![],
            Payload::None,
        ),
        Event::Complete(Complete {
            seq: 0,
            time_ns: 80_000,
            response: ServiceResponse::TaskComplete,
            status: ScsiStatus::GOOD,
            sense: vec![],
            bytes_transferred: 8192,
            residual: 0,
            payload: Payload::None,
        }),
        Event::Complete(Complete {
            seq: 1,
            time_ns: 300_000,
            response: ServiceResponse::TaskComplete,
            status: ScsiStatus::CHECK_CONDITION,
            sense,
            bytes_transferred: 0,
            residual: -1,
            payload: Payload::None,
        }),
        Event::Note {
            time_ns: 400_000,
            text: "cut the power".into(),
        },
        Event::PowerLoss { time_ns: 500_000 },
    ];
    assert_eq!(events, want);
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Arbitrary damage (several bytes overwritten, the file cut anywhere)
    /// never panics, never yields an event that was not written, and ends in
    /// at most one error.
    #[test]
    fn damaged_traces_yield_a_prefix_and_never_panic(
        zstd in proptest::bool::ANY,
        edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..6),
        cut in proptest::num::usize::ANY,
    ) {
        let events = write_stream(12);
        let mode = if zstd { MODES[1] } else { MODES[0] };
        let (mut bytes, _) = write_trace(&events, mode, 5, true);
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        let keep = cut % (bytes.len() + 1);
        let (got, _) = read_all(&bytes[..keep]);
        proptest::prop_assert_eq!(&got[..], &events[..got.len()]);
    }
}

/// `flush` is what a live recording relies on: everything written before it
/// is readable by another reader, before the writer finishes.
#[test]
fn flushed_events_are_readable_before_finish() {
    let events = write_stream(50);
    for mode in MODES {
        let mut w = TraceWriter::new(Vec::new(), &header(PayloadMode::Digest), mode).unwrap();
        for ev in &events[..60] {
            w.write(ev).unwrap();
        }
        w.flush().unwrap();
        for ev in &events[60..] {
            w.write(ev).unwrap();
        }
        let snapshot = w.get_ref().clone();
        let mut r = TraceReader::new(&snapshot[..]).unwrap();
        let got: Vec<Event> = (&mut r).collect::<Result<_, _>>().unwrap();
        // Compressed, the events after the flush are still in the open chunk.
        let want = if mode == Compression::None {
            &events[..]
        } else {
            &events[..60]
        };
        assert_eq!(got, want, "{mode:?}");
        assert!(!r.is_complete());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any header survives a trace file, with or without an HBA preset.
    #[test]
    fn headers_round_trip(
        producer in ".{0,40}",
        created in proptest::num::u64::ANY,
        block_size in proptest::num::u32::ANY,
        capacity in proptest::num::u64::ANY,
        hba in proptest::option::of(proptest::sample::select(trace::HbaPreset::NAMES)),
        mode in 0usize..5,
        labels in proptest::collection::btree_map(".{0,12}", ".{0,24}", 0..6),
        zstd in proptest::bool::ANY,
    ) {
        let h = TraceHeader {
            producer,
            created_unix_s: created,
            block_size,
            capacity_blocks: capacity,
            hba: hba.map(|n| trace::HbaPreset::by_name(n).unwrap().with_os_max_transfer(block_size)),
            payload_mode: [PayloadMode::None, PayloadMode::Full, PayloadMode::Digest, PayloadMode::Pattern, PayloadMode::Mixed][mode],
            labels,
        };
        let mode = if zstd { MODES[1] } else { MODES[0] };
        let bytes = TraceWriter::new(Vec::new(), &h, mode).unwrap().finish().unwrap();
        let mut r = TraceReader::new(&bytes[..]).unwrap();
        proptest::prop_assert_eq!(r.header(), &h);
        proptest::prop_assert!(r.next().is_none());
        proptest::prop_assert!(r.is_complete());
    }
}
