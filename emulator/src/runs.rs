//! Data in flight as runs of bytes, zeros and pieces of self-describing
//! blocks, so a block that is only ever described by its tag never becomes
//! 512 or 4096 bytes on its way between host memory and the device.
//!
//! A fuzz campaign moves megabytes per program, nearly all of it
//! self-describing ([`trace::pattern`]): the host generated it from a tag,
//! the device stores it as that tag, and the oracle only wants the tag back.
//! Carrying bytes meant generating every block, copying it through host
//! memory, the controller's gather and scatter and the bounce buffer, and
//! checking its two CRC32Cs twice. Here a block travels as a [`TagPiece`]
//! (which part of which tagged block) and is rendered only where someone
//! asks for bytes: a byte read of host memory, a block stitched from two
//! pieces by a faulty DMA, a partial block. Rendering gives exactly the
//! bytes the tag generates, so every byte-level observer sees what it did
//! before.

use crate::content::{BlockData, Tag};
use std::cell::RefCell;
use trace::pattern::{self, BlockTag};

/// Bytes `[start, start + len)` of a run of consecutive self-describing
/// blocks of one stream: block `k` of the run is the block `tag` names with
/// its LBA advanced by `k` (what one WRITE of `n` blocks from `tag.lba`
/// with one seed and generation carries), each `block_len` bytes. A piece
/// of one block is the run's simplest case; a whole transfer, or the part
/// of it one host page holds, is one piece however many blocks it spans.
///
/// Kept canonical: `start < block_len`, so `tag` is the block holding the
/// piece's first byte and two pieces of the same bytes compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPiece {
    /// Identity of the block holding the piece's first byte (the run's
    /// later blocks follow it LBA by LBA).
    pub tag: Tag,
    /// Length of each block (its header records it, so the same tag at
    /// another block size is other bytes).
    pub block_len: u32,
    /// First byte of block `tag` this piece holds (below `block_len`).
    pub start: u32,
    /// Bytes held (they may run on into the following blocks).
    pub len: u32,
}

impl TagPiece {
    /// The whole block `tag` generates at `block_len` bytes.
    pub fn whole(tag: Tag, block_len: u32) -> TagPiece {
        TagPiece {
            tag,
            block_len,
            start: 0,
            len: block_len,
        }
    }

    /// Bytes `[start, start + len)` of the run of blocks from `first`
    /// (`start` may lie past the first block).
    pub fn of_run(first: Tag, block_len: u32, start: u64, len: u32) -> TagPiece {
        let bl = u64::from(block_len.max(1));
        TagPiece {
            tag: Tag {
                lba: first.lba.wrapping_add(start / bl),
                ..first
            },
            block_len,
            start: (start % bl) as u32,
            len,
        }
    }

    /// Whether the piece is a whole block of `block_len` bytes: what a
    /// device can store as the tag without looking at a byte.
    pub fn is_whole_block(&self, block_len: u32) -> bool {
        self.start == 0 && self.len == block_len && self.block_len == block_len
    }

    /// When the piece starts a block of `block_len` bytes and holds at
    /// least that whole block: its tag and how many whole blocks the piece
    /// holds from there (what a device can store as tags, run by run).
    pub fn whole_blocks(&self, block_len: u32) -> Option<(Tag, u32)> {
        let n = self.len.checked_div(block_len)?;
        (self.start == 0 && self.block_len == block_len && n > 0).then_some((self.tag, n))
    }

    /// `len` bytes of this piece from `off` (within the piece).
    pub fn sub(&self, off: u32, len: u32) -> TagPiece {
        debug_assert!(u64::from(off) + u64::from(len) <= u64::from(self.len));
        TagPiece::of_run(
            self.tag,
            self.block_len,
            u64::from(self.start) + u64::from(off),
            len,
        )
    }

    /// Whether `next` continues this piece in the same run of blocks:
    /// the piece ends where `next` starts, `d` blocks and `next.start`
    /// bytes past the start of block `tag` (compared by multiplying, since
    /// this runs once per block a read returns, and a division costs tens
    /// of cycles).
    fn continued_by(&self, next: &TagPiece) -> bool {
        let bl = u64::from(self.block_len.max(1));
        let end = u64::from(self.start) + u64::from(self.len);
        let d = next.tag.lba.wrapping_sub(self.tag.lba);
        next.tag.seed == self.tag.seed
            && next.tag.generation == self.tag.generation
            && next.block_len == self.block_len
            && u64::from(next.start) < bl
            && d.checked_mul(bl)
                .and_then(|b| b.checked_add(u64::from(next.start)))
                == Some(end)
    }

    /// `next` appended to this piece, when it continues it and the sum
    /// still fits a piece.
    pub fn joined(&self, next: &TagPiece) -> Option<TagPiece> {
        if !self.continued_by(next) {
            return None;
        }
        Some(TagPiece {
            len: self.len.checked_add(next.len)?,
            ..*self
        })
    }

    /// Write the piece's bytes into `out` (`self.len` bytes).
    pub fn render(&self, out: &mut [u8]) {
        let bl = self.block_len as usize;
        let mut done = 0usize;
        let mut s = self.start as usize;
        let mut tag = self.tag;
        while done < self.len as usize {
            let rest = self.len as usize - done;
            // A block size of 0 cannot occur (see `render_block_part`);
            // take the rest in one go rather than loop forever.
            let n = if bl > s { (bl - s).min(rest) } else { rest };
            render_block_part(tag, bl, s, &mut out[done..done + n]);
            done += n;
            s = 0;
            tag.lba = tag.lba.wrapping_add(1);
        }
    }
}

/// Bytes `[s, s + out.len())` of the block `tag` generates at `bl` bytes.
fn render_block_part(tag: Tag, bl: usize, s: usize, out: &mut [u8]) {
    let n = out.len();
    if s == 0 && n == bl && bl >= pattern::HEADER_LEN {
        pattern::fill_block(&BlockTag::from(tag), out);
        return;
    }
    BLOCK.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.resize(bl.max(pattern::HEADER_LEN), 0);
        // A block shorter than its header cannot exist (a TagPiece is
        // only made for real block sizes); render the header's bytes
        // anyway rather than panic.
        pattern::fill_block(&BlockTag::from(tag), &mut b[..]);
        out.copy_from_slice(&b[s..s + n]);
    });
}

thread_local! {
    /// A block to render a partial piece in.
    static BLOCK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Runs given back for reuse ([`DataRuns::give_back`]).
    static SPARE: RefCell<Vec<DataRuns>> = const { RefCell::new(Vec::new()) };
}

/// Runs kept per thread for [`DataRuns::reused`]: an emulator's two.
const SPARE_RUNS: usize = 2;

/// The byte store a kept [`DataRuns`] may hold on to (a read of bytes
/// may have grown it to a whole transfer).
const SPARE_BYTES: usize = 1 << 20;

/// One stretch of a [`DataRuns`], as [`DataRuns::for_each`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// Arbitrary bytes.
    Bytes(&'a [u8]),
    /// This many zero bytes.
    Zero(usize),
    /// A piece of a self-describing block.
    Piece(TagPiece),
}

impl Part<'_> {
    /// Bytes this part stands for.
    pub fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::Zero(n) => *n,
            Part::Piece(p) => p.len as usize,
        }
    }

    /// Whether the part is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// `len` bytes of the byte store from `at`.
    Bytes {
        at: usize,
        len: usize,
    },
    Zero(usize),
    Piece(TagPiece),
}

impl Run {
    fn len(&self) -> usize {
        match self {
            Run::Bytes { len, .. } => *len,
            Run::Zero(n) => *n,
            Run::Piece(p) => p.len as usize,
        }
    }
}

/// A transfer's data as a sequence of runs. Adjacent runs of the same kind
/// merge (two pieces merge when the second continues the first in the same
/// block), so a block cut in two by a page boundary comes back whole.
#[derive(Debug, Clone, Default)]
pub struct DataRuns {
    runs: Vec<Run>,
    /// Offset of each run in the transfer.
    starts: Vec<usize>,
    bytes: Vec<u8>,
    len: usize,
}

impl DataRuns {
    /// No data.
    pub fn new() -> Self {
        Self::default()
    }

    /// No data, in the allocations of runs given back on this thread
    /// ([`DataRuns::give_back`]) if there are any: a fuzzer builds an
    /// emulator per execution, and its runs grew to the same sizes, a
    /// copy of a thousand runs at a time, in every one.
    pub fn reused() -> Self {
        SPARE
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keep these runs' allocations for [`DataRuns::reused`] (dropped
    /// instead when enough are kept).
    pub fn give_back(mut self) {
        self.clear();
        if self.bytes.capacity() > SPARE_BYTES {
            self.bytes = Vec::new();
        }
        // `try_with`: during thread teardown the store may be gone.
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_RUNS {
                s.push(self);
            }
        });
    }

    /// Forget all runs, keeping the allocations.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.starts.clear();
        self.bytes.clear();
        self.len = 0;
    }

    /// Bytes the runs stand for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, r: Run) {
        self.starts.push(self.len);
        self.len += r.len();
        self.runs.push(r);
    }

    /// Append arbitrary bytes.
    pub fn push_bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let at = self.bytes.len();
        self.bytes.extend_from_slice(b);
        if let Some(Run::Bytes { at: a, len }) = self.runs.last_mut() {
            if *a + *len == at {
                *len += b.len();
                self.len += b.len();
                return;
            }
        }
        self.push(Run::Bytes { at, len: b.len() });
    }

    /// Append `n` zero bytes.
    pub fn push_zero(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(Run::Zero(z)) = self.runs.last_mut() {
            *z += n;
            self.len += n;
            return;
        }
        self.push(Run::Zero(n));
    }

    /// Append a piece of a self-describing block.
    pub fn push_piece(&mut self, p: TagPiece) {
        if p.len == 0 || self.extend_last(&p) {
            return;
        }
        self.push(Run::Piece(p));
    }

    /// Extend the last run by `p` when `p` continues it; whether it did.
    #[inline(always)]
    fn extend_last(&mut self, p: &TagPiece) -> bool {
        if let Some(Run::Piece(last)) = self.runs.last_mut() {
            if let Some(j) = last.joined(p) {
                *last = j;
                self.len += p.len as usize;
                return true;
            }
        }
        false
    }

    /// Append a part (inlined, so a caller that knows the kind calls
    /// the push for it directly).
    #[inline]
    pub fn push_part(&mut self, part: Part<'_>) {
        match part {
            Part::Bytes(b) => self.push_bytes(b),
            Part::Zero(n) => self.push_zero(n),
            Part::Piece(p) => self.push_piece(p),
        }
    }

    /// Append one stored block as the device returns it: zeros, its tag,
    /// or its bytes.
    pub fn push_block(&mut self, d: &BlockData, block_size: usize) {
        match d {
            BlockData::Zero => self.push_zero(block_size),
            BlockData::Pattern(t) => {
                let p = TagPiece::whole(*t, block_size as u32);
                // Blocks of one write come back in LBA order, each
                // continuing the run before: extended here, without a call
                // per block (an empty block extends nothing either way).
                if !self.extend_last(&p) {
                    self.push_piece(p);
                }
            }
            BlockData::Raw(b) if b.len() == block_size => self.push_bytes(b),
            // A raw block of another size cannot be stored; render as the
            // byte path would.
            BlockData::Raw(_) => {
                let mut tmp = Vec::with_capacity(block_size);
                d.render_append(&mut tmp, block_size);
                self.push_bytes(&tmp);
            }
        }
    }

    /// Append `n` stored blocks continuing `first` (one stream's
    /// consecutive tags, or zeros; a raw block stands alone), as `n`
    /// [`DataRuns::push_block`]s would leave them but in one step per
    /// piece: a read of a long extent costs one push, not one per block.
    pub fn push_blocks(&mut self, first: &BlockData, n: u64, block_size: usize) {
        match first {
            BlockData::Pattern(t) => {
                let bl = block_size as u32;
                // A piece holds at most u32::MAX bytes: whole blocks up
                // to that, where pushing block by block would cut too.
                let per_piece = u64::from(u32::MAX / bl.max(1)).max(1);
                let mut done = 0u64;
                if let Some(Run::Piece(last)) = self.runs.last_mut() {
                    let next = TagPiece::whole(*t, bl);
                    if last.joined(&next).is_some() {
                        let fits = u64::from((u32::MAX - last.len) / bl.max(1)).min(n);
                        last.len += fits as u32 * bl;
                        self.len += fits as usize * block_size;
                        done = fits;
                    }
                }
                while done < n {
                    let k = (n - done).min(per_piece);
                    self.push(Run::Piece(TagPiece::of_run(
                        *t,
                        bl,
                        done * u64::from(bl),
                        k as u32 * bl,
                    )));
                    done += k;
                }
            }
            BlockData::Zero => self.push_zero(block_size.saturating_mul(n as usize)),
            BlockData::Raw(_) => {
                for _ in 0..n {
                    self.push_block(first, block_size);
                }
            }
        }
    }

    /// Replace the runs by `bytes` (no copy); [`DataRuns::take_bytes`]
    /// gives the buffer back.
    pub fn adopt_bytes(&mut self, bytes: Vec<u8>) {
        self.clear();
        self.bytes = bytes;
        let n = self.bytes.len();
        if n > 0 {
            self.push(Run::Bytes { at: 0, len: n });
        }
    }

    /// The byte store, emptied of runs (pairs with [`DataRuns::adopt_bytes`]).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let b = std::mem::take(&mut self.bytes);
        self.clear();
        b
    }

    /// Call `f` with the parts covering `[start, start + len)` (clipped to
    /// the data), in order.
    pub fn for_each<'s>(&'s self, start: usize, len: usize, mut f: impl FnMut(Part<'s>)) {
        let end = start.saturating_add(len).min(self.len);
        if start >= end {
            return;
        }
        // The last run starting at or before `start`.
        let mut i = self.starts.partition_point(|s| *s <= start) - 1;
        let mut at = start;
        while at < end {
            let r = self.runs[i];
            let off = at - self.starts[i];
            let n = (r.len() - off).min(end - at);
            f(match r {
                Run::Bytes { at: b, .. } => Part::Bytes(&self.bytes[b + off..b + off + n]),
                Run::Zero(_) => Part::Zero(n),
                Run::Piece(p) => Part::Piece(p.sub(off as u32, n as u32)),
            });
            at += n;
            i += 1;
        }
    }

    /// The whole runs' parts, in order.
    pub fn parts(&self) -> impl Iterator<Item = Part<'_>> + '_ {
        self.runs.iter().map(|r| match *r {
            Run::Bytes { at, len } => Part::Bytes(&self.bytes[at..at + len]),
            Run::Zero(n) => Part::Zero(n),
            Run::Piece(p) => Part::Piece(p),
        })
    }

    /// When `[start, start + len)` lies in one run, that run's part.
    pub fn single(&self, start: usize, len: usize) -> Option<Part<'_>> {
        if len == 0 || start.checked_add(len)? > self.len {
            return None;
        }
        let i = self.starts.partition_point(|s| *s <= start) - 1;
        self.part_of(i, start - self.starts[i], len)
    }

    /// The part from byte `start` to the end of the run holding it (a
    /// reader walking whole runs of blocks rather than block by block).
    pub fn run_from(&self, start: usize) -> Option<Part<'_>> {
        self.run_from_near(start, &mut 0)
    }

    /// [`DataRuns::run_from`] for a reader walking forward: `cursor` is the
    /// run the last call found (0 to start), tried first with the run after
    /// it before any search, and left at the run this call finds. A read
    /// back after a power loss is a thousand short runs walked in order.
    pub fn run_from_near(&self, start: usize, cursor: &mut usize) -> Option<Part<'_>> {
        if start >= self.len {
            return None;
        }
        let holds = |i: usize| {
            i < self.runs.len()
                && self.starts[i] <= start
                && start < self.starts[i] + self.runs[i].len()
        };
        let i = if holds(*cursor) {
            *cursor
        } else if holds(*cursor + 1) {
            *cursor + 1
        } else {
            self.starts.partition_point(|s| *s <= start) - 1
        };
        *cursor = i;
        let off = start - self.starts[i];
        self.part_of(i, off, self.runs[i].len() - off)
    }

    /// `len` bytes of run `i` from `off`, if the run holds them all.
    fn part_of(&self, i: usize, off: usize, len: usize) -> Option<Part<'_>> {
        let r = self.runs[i];
        if off + len > r.len() {
            return None;
        }
        Some(match r {
            Run::Bytes { at, .. } => Part::Bytes(&self.bytes[at + off..at + off + len]),
            Run::Zero(_) => Part::Zero(len),
            Run::Piece(p) => Part::Piece(p.sub(off as u32, len as u32)),
        })
    }

    /// Each whole `block_size`-byte block in order: the part it is when it
    /// lies in one run ([`DataRuns::single`]), `None` when it spans runs.
    /// Walks the runs once, so a transfer of many blocks costs no search.
    pub fn blocks(&self, block_size: usize) -> impl Iterator<Item = Option<Part<'_>>> + '_ {
        let mut i = 0usize;
        let n = self.len.checked_div(block_size).unwrap_or(0);
        (0..n).map(move |k| {
            let start = k * block_size;
            while self.starts[i] + self.runs[i].len() <= start {
                i += 1;
            }
            self.part_of(i, start - self.starts[i], block_size)
        })
    }

    /// Append the bytes of `[start, start + len)` to `out` (only what the
    /// runs cover; a range past the end appends less).
    pub fn render_append(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        self.for_each(start, len, |p| render_part_append(p, out));
    }

    /// All the bytes, rendered.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        self.render_append(0, self.len, &mut v);
        v
    }
}

/// A controller command's Data-Out as the device server receives it.
#[derive(Debug, Clone, Copy)]
pub enum DataOut<'a> {
    /// Bytes (the iSCSI target's and the replayer's buffers, or runs that
    /// happened to be one run of bytes).
    Bytes(&'a [u8]),
    /// Runs gathered from host memory.
    Runs(&'a DataRuns),
}

/// Append a part's bytes to `out`.
pub fn render_part_append(p: Part<'_>, out: &mut Vec<u8>) {
    match p {
        Part::Bytes(b) => out.extend_from_slice(b),
        Part::Zero(n) => out.resize(out.len() + n, 0),
        Part::Piece(t) => {
            let at = out.len();
            out.resize(at + t.len as usize, 0);
            t.render(&mut out[at..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(lba: u64) -> Tag {
        Tag {
            lba,
            seed: 9,
            generation: 2,
        }
    }

    fn block(lba: u64, bs: usize) -> Vec<u8> {
        let mut b = vec![0u8; bs];
        pattern::fill_block(&BlockTag::from(tag(lba)), &mut b);
        b
    }

    #[test]
    fn pieces_of_one_block_merge_back_into_the_whole_block() {
        let mut r = DataRuns::new();
        let w = TagPiece::whole(tag(4), 512);
        r.push_piece(w.sub(0, 100));
        r.push_piece(w.sub(100, 412));
        assert_eq!(r.single(0, 512), Some(Part::Piece(w)));
        // The next LBA of the stream continues the run; a gap does not.
        r.push_piece(TagPiece::whole(tag(5), 512).sub(0, 10));
        r.push_zero(5);
        r.push_zero(5);
        r.push_bytes(&[1, 2]);
        r.push_bytes(&[3]);
        assert_eq!(r.parts().count(), 3);
        assert_eq!(
            r.parts().next(),
            Some(Part::Piece(TagPiece::of_run(tag(4), 512, 0, 522)))
        );
        let mut want = block(4, 512);
        want.extend_from_slice(&block(5, 512)[..10]);
        want.extend_from_slice(&[0; 10]);
        want.extend_from_slice(&[1, 2, 3]);
        assert_eq!(r.to_bytes(), want);
        let mut mid = Vec::new();
        r.render_append(500, 40, &mut mid);
        assert_eq!(mid, want[500..], "clipped to the data");
        assert_eq!(r.single(524, 4), Some(Part::Zero(4)));
        assert_eq!(r.single(532, 3), Some(Part::Bytes(&[1, 2, 3])));
        assert_eq!(r.single(520, 4), None, "spans two runs");
        let by_block: Vec<_> = r.blocks(512).collect();
        assert_eq!(by_block, [Some(Part::Piece(w))]);
        let by_5: Vec<_> = r.blocks(5).collect();
        assert_eq!(by_5.len(), 107);
        for (k, b) in by_5.iter().enumerate() {
            assert_eq!(*b, r.single(k * 5, 5), "block {k}");
        }
    }

    /// Where a piece ends, by division: the block and offset its next
    /// byte would be (what `continued_by` compares without dividing).
    fn end_by_division(p: &TagPiece) -> (u64, u32) {
        let bl = u64::from(p.block_len.max(1));
        let e = u64::from(p.start) + u64::from(p.len);
        (p.tag.lba.wrapping_add(e / bl), (e % bl) as u32)
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = TagPiece> {
        use proptest::prelude::*;
        // LBAs near 0 and near the top (where `lba + blocks` wraps), block
        // sizes from none to 4 KiB, starts in and past the first block,
        // lengths up to the 32-bit limit.
        let lba = prop_oneof![0u64..8, (u64::MAX - 8)..=u64::MAX];
        let bl = prop_oneof![Just(0u32), Just(1), Just(512), Just(4096), 0u32..5000];
        let len = prop_oneof![0u32..10_000, (u32::MAX - 5000)..=u32::MAX];
        (lba, 0u64..2, 0u32..2, bl, 0u32..9000, len).prop_map(|(lba, seed, g, bl, start, len)| {
            TagPiece {
                tag: Tag {
                    lba,
                    seed,
                    generation: g,
                },
                block_len: bl,
                start,
                len,
            }
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Two pieces join exactly when the first ends, by division, where
        /// the second starts, for canonical pieces and for any other.
        #[test]
        fn continued_by_agrees_with_the_division(a in piece(), b in piece(), aim in 0u8..5) {
            let (lba, start) = end_by_division(&a);
            let bl = a.block_len.max(1);
            let at = |lba: u64, start: u32| TagPiece { tag: Tag { lba, ..a.tag }, block_len: a.block_len, start, ..b };
            let b = match aim {
                // Where `a` ends, and one byte past it.
                0 => at(lba, start),
                1 => at(lba, start + 1),
                // The same byte named from the block before (not canonical).
                2 => at(lba.wrapping_sub(1), start.saturating_add(bl)),
                // Blocks away by as many as make `d * block_len` wrap to
                // where `a` ends.
                3 => at(lba.wrapping_add(((1u64 << 63) / u64::from(bl)).wrapping_mul(2)), start),
                _ => b,
            };
            let want = b.tag.seed == a.tag.seed
                && b.tag.generation == a.tag.generation
                && b.block_len == a.block_len
                && end_by_division(&a) == (b.tag.lba, b.start);
            proptest::prop_assert_eq!(a.continued_by(&b), want);
        }
    }

    #[test]
    fn runs_given_back_come_back_empty_with_their_room() {
        let mut r = DataRuns::new();
        for k in 0..100 {
            r.push_piece(TagPiece::whole(tag(2 * k), 512));
            r.push_bytes(&[1, 2, 3]);
        }
        let room = (r.runs.capacity(), r.starts.capacity(), r.bytes.capacity());
        r.give_back();
        let again = DataRuns::reused();
        assert_eq!((again.len(), again.parts().count()), (0, 0));
        assert_eq!(again.to_bytes(), Vec::<u8>::new());
        let kept = (
            again.runs.capacity(),
            again.starts.capacity(),
            again.bytes.capacity(),
        );
        assert_eq!(kept, room);
        // A byte store grown past the bound is not kept.
        let mut big = DataRuns::new();
        big.push_bytes(&vec![7u8; SPARE_BYTES + 1]);
        big.give_back();
        assert_eq!(DataRuns::reused().bytes.capacity(), 0);
    }

    #[test]
    fn a_cursor_finds_what_a_search_finds_whichever_way_the_reader_goes() {
        let mut r = DataRuns::new();
        for k in 0..40 {
            r.push_piece(TagPiece::whole(tag(3 * k), 512));
            r.push_zero(100 + k as usize);
            if k % 3 == 0 {
                r.push_bytes(&[k as u8; 7]);
            }
        }
        let mut cursor = 0;
        // Forward in steps of every size, then backward, then past the end.
        let starts = (0..r.len())
            .step_by(37)
            .chain((0..r.len()).rev().step_by(501));
        for start in starts.chain([r.len(), r.len() + 9]) {
            assert_eq!(
                r.run_from_near(start, &mut cursor),
                r.run_from(start),
                "{start}"
            );
        }
    }

    #[test]
    fn adopted_bytes_come_back_uncopied() {
        let mut r = DataRuns::new();
        let v = vec![7u8; 1000];
        let ptr = v.as_ptr();
        r.adopt_bytes(v);
        assert_eq!(r.single(0, 1000), Some(Part::Bytes(&[7u8; 1000][..])));
        let back = r.take_bytes();
        assert_eq!((back.as_ptr(), back.len(), r.len()), (ptr, 1000, 0));
    }

    #[test]
    fn stored_blocks_become_runs_that_render_as_the_device_would() {
        let mut r = DataRuns::new();
        let raw: std::sync::Arc<[u8]> = vec![3u8; 512].into();
        for d in [
            BlockData::Zero,
            BlockData::Pattern(tag(8)),
            BlockData::Raw(raw),
        ] {
            r.push_block(&d, 512);
        }
        let mut want = Vec::new();
        for d in [
            BlockData::Zero,
            BlockData::Pattern(tag(8)),
            BlockData::Raw(vec![3u8; 512].into()),
        ] {
            d.render_append(&mut want, 512);
        }
        assert_eq!(r.to_bytes(), want);
        assert_eq!(
            r.single(512, 512),
            Some(Part::Piece(TagPiece::whole(tag(8), 512)))
        );
    }
}
