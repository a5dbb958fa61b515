//! Generates `corpus/samples/quickstart.sczt`, the small trace that the
//! README's first command summarises:
//!
//! ```text
//! cargo run -p scuzz-trace --example quickstart_corpus -- corpus/samples/quickstart.sczt
//! ```
//!
//! The workload is what a host does on first contact with a 1 GiB disk
//! (4096-byte blocks) behind an LSI 3108: TEST UNIT READY until the power-on
//! unit attention clears, INQUIRY (standard and VPD pages), READ CAPACITY,
//! MODE SENSE for the caching page; then 240 sequential 128 KiB writes of
//! self-describing blocks at queue depth up to 8 (every tenth a FUA
//! WRITE(16); scatter-gather lists of 1, 8 or 32 segments, some above 4 GiB),
//! a SYNCHRONIZE CACHE half-way and at the end, one write past the last LBA
//! (rejected), and 60 reads back. Everything is derived from fixed seeds, so
//! the output is byte-for-byte reproducible; `trace/tests/file.rs` checks
//! that the checked-in file matches this program.

use std::collections::BTreeMap;
use trace::cdb::{Cdb, CdbSize, Rw};
use trace::file::{Compression, PayloadMode, TraceHeader, TraceWriter};
use trace::sense::{SenseData, SenseFormat};
use trace::{
    Complete, Event, HbaPreset, Nexus, Payload, ScsiStatus, Segment, ServiceResponse, Submit,
    TaskAttr,
};

const BLOCK: u32 = 4096;
const CAPACITY_BLOCKS: u64 = 262_144;
const SEED: u64 = 0x5c22;
const WRITES: u64 = 240;
const WRITE_BLOCKS: u32 = 32;
const READS: u64 = 60;

/// The trace, as bytes.
pub fn build() -> Vec<u8> {
    let mut g = Gen {
        events: Vec::new(),
        seq: 0,
        t: 1_000,
        rng: SEED,
    };

    // Power-on: the first command sees the unit attention (SPC-4 6.1.2).
    g.command(
        Cdb::TestUnitReady,
        0,
        vec![],
        Outcome::sense(SenseData::unit_attention_power_on_reset()),
    );
    g.command(Cdb::TestUnitReady, 0, vec![], Outcome::good());
    for (evpd, page, len) in [
        (false, 0, 96u16),
        (true, 0x00, 64),
        (true, 0x80, 64),
        (true, 0xb0, 64),
    ] {
        let cdb = Cdb::Inquiry {
            evpd,
            page_code: page,
            alloc_len: len,
        };
        g.command(cdb, u32::from(len), g.small_buffer(), Outcome::good());
    }
    g.command(Cdb::ReadCapacity10, 8, g.small_buffer(), Outcome::good());
    g.command(
        Cdb::ReadCapacity16 { alloc_len: 32 },
        32,
        g.small_buffer(),
        Outcome::good(),
    );
    let mode_sense = Cdb::ModeSense {
        size: CdbSize::Ten,
        dbd: true,
        llbaa: false,
        pc: 0,
        page_code: 0x08,
        subpage: 0,
        alloc_len: 28,
    };
    g.command(mode_sense, 28, g.small_buffer(), Outcome::good());

    let sync = |size| Cdb::SyncCache {
        size,
        lba: 0,
        blocks: 0,
        immed: false,
        group: 0,
    };
    g.writes(0..WRITES / 2);
    g.command(sync(CdbSize::Ten), 0, vec![], Outcome::good());
    g.writes(WRITES / 2..WRITES);
    // One write past the last LBA: ILLEGAL REQUEST, LBA OUT OF RANGE
    // (SBC-3 4.5: the target checks before transferring).
    let past_end = Rw {
        size: CdbSize::Sixteen,
        lba: CAPACITY_BLOCKS,
        blocks: 8,
        fua: false,
        dpo: false,
        protect: 0,
        group: 0,
    };
    let sg = g.sg_list(8 * BLOCK, 1);
    g.command(
        Cdb::Write(past_end),
        8 * BLOCK,
        sg,
        Outcome::sense(SenseData::lba_out_of_range()),
    );
    g.command(sync(CdbSize::Sixteen), 0, vec![], Outcome::good());
    g.events.push(Event::Note {
        time_ns: g.t,
        text: "quickstart: reading back what was written".into(),
    });
    g.reads();

    let mut header = TraceHeader::new("scuzz-trace examples/quickstart_corpus");
    header.created_unix_s = 1_764_028_800;
    header.block_size = BLOCK;
    header.capacity_blocks = CAPACITY_BLOCKS;
    header.hba = Some(HbaPreset::lsi3108());
    header.payload_mode = PayloadMode::Pattern;
    header.labels = BTreeMap::from([
        ("workload".to_string(), "quickstart".to_string()),
        (
            "generator".to_string(),
            "trace/examples/quickstart_corpus.rs".to_string(),
        ),
    ]);
    let mut w = TraceWriter::new(Vec::new(), &header, Compression::ZSTD_DEFAULT).expect("header");
    for ev in &g.events {
        w.write(ev).expect("event");
    }
    w.finish().expect("finish")
}

struct Outcome {
    status: ScsiStatus,
    sense: Vec<u8>,
}

impl Outcome {
    fn good() -> Outcome {
        Outcome {
            status: ScsiStatus::GOOD,
            sense: vec![],
        }
    }

    fn sense(s: SenseData) -> Outcome {
        Outcome {
            status: ScsiStatus::CHECK_CONDITION,
            sense: s.to_bytes(SenseFormat::FixedCurrent),
        }
    }
}

struct Gen {
    events: Vec<Event>,
    seq: u64,
    t: u64,
    rng: u64,
}

impl Gen {
    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn small_buffer(&self) -> Vec<Segment> {
        vec![Segment::new(0x7f00_0000 + (self.seq % 16) * 0x1000, 4096)]
    }

    /// `segments` equal segments covering `bytes`, on scattered pages; one
    /// list in four lies above 4 GiB, as a 64-bit host's buffers do.
    fn sg_list(&mut self, bytes: u32, segments: u32) -> Vec<Segment> {
        let high = self.next() & 3 == 0;
        let base: u64 = if high { 0x1_2000_0000 } else { 0x8000_0000 };
        let len = bytes / segments;
        (0..segments)
            .map(|_| {
                let page = self.next() % 0x4000;
                Segment::new(base + page * 4096, len)
            })
            .collect()
    }

    fn submit(&mut self, cdb: &Cdb, xfer: u32, sg: Vec<Segment>, payload: Payload) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        self.events.push(Event::Submit(Submit {
            seq,
            time_ns: self.t,
            nexus: Nexus { target: 0, lun: 0 },
            tag: seq % 64,
            attr: TaskAttr::Simple,
            cdb: cdb.encode().expect("valid CDB"),
            dir: cdb.direction(),
            xfer_len: xfer,
            sg,
            payload,
        }));
        seq
    }

    fn complete(&mut self, seq: u64, at: u64, moved: u32, out: Outcome, payload: Payload) -> Event {
        Event::Complete(Complete {
            seq,
            time_ns: at,
            response: ServiceResponse::TaskComplete,
            status: out.status,
            sense: out.sense,
            bytes_transferred: moved,
            residual: 0,
            payload,
        })
    }

    /// One command at queue depth 1.
    fn command(&mut self, cdb: Cdb, xfer: u32, sg: Vec<Segment>, out: Outcome) {
        let seq = self.submit(&cdb, xfer, sg, Payload::None);
        let moved = if out.status == ScsiStatus::GOOD {
            xfer
        } else {
            0
        };
        let at = self.t + 20_000 + self.next() % 30_000;
        let ev = self.complete(seq, at, moved, out, Payload::None);
        self.events.push(ev);
        self.t = at + 5_000;
    }

    /// Sequential writes, issued every 15 us and taking 60-140 us, so up to
    /// about eight are in flight; the batch drains before returning.
    fn writes(&mut self, range: std::ops::Range<u64>) {
        let mut batch = Vec::new();
        let start = self.events.len();
        for i in range {
            let fua = i % 10 == 9;
            let rw = Rw {
                size: if fua { CdbSize::Sixteen } else { CdbSize::Ten },
                lba: i * u64::from(WRITE_BLOCKS),
                blocks: WRITE_BLOCKS,
                fua,
                dpo: false,
                protect: 0,
                group: 0,
            };
            let bytes = WRITE_BLOCKS * BLOCK;
            let segments = [32, 8, 1][(self.next() % 3) as usize];
            let sg = self.sg_list(bytes, segments);
            let payload = Payload::Pattern {
                seed: SEED,
                generation: 1,
            };
            let seq = self.submit(&Cdb::Write(rw), bytes, sg, payload);
            let done = self.t + 60_000 + self.next() % 80_000 + if fua { 100_000 } else { 0 };
            batch.push(self.complete(seq, done, bytes, Outcome::good(), Payload::None));
            self.t += 15_000;
        }
        self.t = batch.iter().map(Event::time_ns).max().unwrap_or(self.t) + 5_000;
        self.events.extend(batch);
        self.events[start..].sort_by_key(Event::time_ns);
    }

    /// Reads of earlier writes, at queue depth up to 4; each returns the
    /// pattern blocks its write left.
    fn reads(&mut self) {
        let mut batch = Vec::new();
        let start = self.events.len();
        for _ in 0..READS {
            let i = self.next() % WRITES;
            let rw = Rw {
                size: CdbSize::Ten,
                lba: i * u64::from(WRITE_BLOCKS),
                blocks: WRITE_BLOCKS,
                fua: false,
                dpo: false,
                protect: 0,
                group: 0,
            };
            let bytes = WRITE_BLOCKS * BLOCK;
            let sg = self.sg_list(bytes, 8);
            let seq = self.submit(&Cdb::Read(rw), bytes, sg, Payload::None);
            let done = self.t + 40_000 + self.next() % 60_000;
            let data = Payload::Pattern {
                seed: SEED,
                generation: 1,
            };
            batch.push(self.complete(seq, done, bytes, Outcome::good(), data));
            self.t += 25_000;
        }
        self.t = batch.iter().map(Event::time_ns).max().unwrap_or(self.t) + 5_000;
        self.events.extend(batch);
        self.events[start..].sort_by_key(Event::time_ns);
    }
}

#[allow(dead_code)]
fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/samples/quickstart.sczt".into());
    let bytes = build();
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    println!("wrote {path} ({} bytes)", bytes.len());
}
