//! Host memory: the sparse 64-bit physical address space an initiator's
//! buffers live in, and the only way data reaches or leaves the emulated HBA.
//!
//! Address bugs (a DMA address truncated to 32 bits, a dropped SG entry) must
//! have real consequences: data read from the wrong page, a buffer that is
//! never filled. So the HBA never sees a byte slice, only `(address, length)`
//! segments it resolves here. Memory is allocated on first write and reads
//! as zeros before that, so a 2^40 address costs one entry, not a terabyte.
//!
//! Memory holds two kinds of entries, never overlapping: pages of bytes, and
//! runs of self-describing blocks ([`TagPiece`], see [`crate::runs`]) of any
//! length, with zeros wherever neither lies. A fuzzer's buffers hold nothing
//! but such blocks, and a transfer of a thousand blocks placed at one SG
//! entry is one run however many pages it spans, so placing it, DMAing it
//! and reading it back cost per run, not per 4 KiB page. Whoever reads or
//! writes bytes gets exactly the bytes the tags generate (a byte write
//! turns the page it lands in into bytes first), so the byte interface
//! behaves as if every page were bytes.
//!
//! Which bytes read back as tags, bytes or zeros ([`HostMemory::read_runs`])
//! is what a memory of 4 KiB pages, each either bytes or at most
//! [`MAX_PIECES`] pieces, would give: the device stores a block that
//! arrives as a tag as that tag, and one that arrives as bytes as bytes, so
//! the split decides what a campaign observes. Runs therefore keep the
//! boundaries such a page's pieces would have (see
//! [`HostMemory::write_piece`]), and pages stay the unit of bytes.

use crate::content::{is_zero, Tag};
use crate::runs::{render_part_append, DataRuns, Part, TagPiece};
use std::cell::Cell;
use std::collections::BTreeMap;

/// Bytes per host page. Matches the 4 KiB page of x86-64 and the granule
/// macOS' IOMMU maps; segment layouts in traces are built from it.
pub const PAGE_SIZE: u64 = 4096;

type Bytes = Box<[u8; PAGE_SIZE as usize]>;

/// Pieces of runs one page may hold before [`HostMemory::write_piece`]
/// renders the page to bytes, so a page cut into tiny pieces by a hostile
/// SG list costs a bounded walk.
pub const MAX_PIECES: usize = 32;

/// Released pages kept per thread for reuse (4 MiB): a fuzzer builds an
/// emulator per execution and frees its read buffers before every read, so
/// the same few dozen pages were allocated and freed over and over.
const POOL_PAGES: usize = 1024;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Bytes>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keep released pages for [`new_page`] (their content is overwritten
/// there). Consumes `pages` to the end whatever the pool holds, so pages
/// past a full pool are freed, not kept by the caller.
fn recycle(pages: impl Iterator<Item = Bytes>) {
    // `try_with`: during thread teardown the pool may be gone.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        for b in pages {
            if pool.len() < POOL_PAGES {
                pool.push(b);
            }
        }
    });
}

/// A page holding `src` at `off`, zeros elsewhere: a pooled page, or a
/// new one (built from `src` when it covers the page, so not zeroed first).
fn new_page(off: usize, src: &[u8]) -> Bytes {
    if let Some(mut p) = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten() {
        let end = off + src.len();
        p[..off].fill(0);
        p[off..end].copy_from_slice(src);
        p[end..].fill(0);
        return p;
    }
    if off == 0 && src.len() == PAGE_SIZE as usize {
        if let Ok(p) = Box::<[u8]>::from(src).try_into() {
            return p;
        }
    }
    let mut p: Bytes = vec![0u8; PAGE_SIZE as usize]
        .into_boxed_slice()
        .try_into()
        .expect("PAGE_SIZE bytes");
    p[off..off + src.len()].copy_from_slice(src);
    p
}

/// A sparse physical address space.
///
/// Addresses of entries are `u64`; where a range ends is a `u128`, since
/// the last byte of the space, at 2^64 - 1, ends at 2^64.
#[derive(Default)]
pub struct HostMemory {
    /// Pages of bytes, by page number.
    pages: BTreeMap<u64, Bytes>,
    /// Runs of self-describing blocks: never empty, never overlapping each
    /// other or a page of bytes.
    runs: RunMap,
    /// Pages `[lo, hi]` hold every page of bytes (a bound kept through
    /// releases, meaningless while there are none). A fuzzer's memory
    /// holds one page of bytes, its scratch page, away from its buffers, so
    /// most asks for the pages of bytes in a range are answered here, not
    /// by a descent of `pages`.
    bytes_within: (u64, u64),
}

impl std::fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemory")
            .field("resident_pages", &self.resident_pages())
            .field("runs", &self.runs.len())
            .finish()
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        if !self.pages.is_empty() {
            recycle(std::mem::take(&mut self.pages).into_values());
        }
    }
}

/// Where `len` bytes from `addr` end (2^64 at most for ranges clipped by
/// [`below_top`]).
fn end_of(addr: u64, len: u64) -> u128 {
    u128::from(addr) + u128::from(len)
}

/// Where a run ends.
fn run_end(r: &(u64, TagPiece)) -> u128 {
    end_of(r.0, u64::from(r.1.len))
}

/// `len` bytes of `p` from `off`: `p` itself when that is all of it,
/// saving [`TagPiece::sub`]'s division on the common whole-run path.
fn clip(p: TagPiece, off: u32, len: u32) -> TagPiece {
    if off == 0 && len == p.len {
        p
    } else {
        p.sub(off, len)
    }
}

/// A run's last byte (runs are never empty and end by 2^64, so this is an
/// address; comparing it is cheaper than comparing 128-bit ends).
fn run_last(r: &(u64, TagPiece)) -> u64 {
    r.0 + u64::from(r.1.len - 1)
}

/// First address and end of page `p`.
fn page_span(p: u64) -> (u64, u128) {
    let lo = p * PAGE_SIZE;
    (lo, end_of(lo, PAGE_SIZE))
}

/// The pages `[lo, hi)` touches, first and last (`hi > lo`).
fn pages_of(lo: u64, hi: u128) -> (u64, u64) {
    (lo / PAGE_SIZE, ((hi - 1) / u128::from(PAGE_SIZE)) as u64)
}

/// A run of memory: its first address and the piece it holds.
type Run = (u64, TagPiece);

/// Fills the slots of a fixed array of runs that are not used.
const UNUSED: TagPiece = TagPiece {
    tag: Tag {
        lba: 0,
        seed: 0,
        generation: 0,
    },
    block_len: 0,
    start: 0,
    len: 0,
};

/// Runs in address order, in chunks of at most [`CHUNK_MAX`] runs.
///
/// Not a `BTreeMap`: every lookup here is "the first run ending after this
/// address", which its range API answers with two descents at several
/// hundred instructions each. Not one sorted vector either: a transfer's
/// SG entries land in address order below the runs of other buffers, and
/// shifting those on every insert cost more than the pages it replaced.
/// Chunks keep both a lookup (two binary searches) and an edit (a shift
/// within one chunk) small.
#[derive(Default)]
struct RunMap {
    /// Never empty chunks, each sorted, in address order.
    chunks: Vec<Vec<Run>>,
    len: usize,
    /// Where the last walk or edit ended: the place after the last run it
    /// read or wrote. A transfer's SG entries are placed, cut and read in
    /// ascending address order, each after the one before, so the next
    /// lookup is usually answered here without a search
    /// ([`RunMap::locate`] checks the place before trusting it).
    cursor: Cell<Pos>,
}

/// Runs a chunk holds before it is split in two.
const CHUNK_MAX: usize = 16;

/// A chunk holding `runs`, with room for a full chunk and the three runs
/// an edit adds before it is split, so it is allocated once.
fn new_chunk(runs: &[Run]) -> Vec<Run> {
    let mut ch = Vec::with_capacity(CHUNK_MAX + 3);
    ch.extend_from_slice(runs);
    ch
}

/// A place among the runs: run `i` of chunk `c` (`i` below the chunk's
/// length), or the end when `c` is the number of chunks (and `i` is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pos {
    c: usize,
    i: usize,
}

impl RunMap {
    fn len(&self) -> usize {
        self.len
    }

    /// Where the first run ending after `a` is: the runs before it lie
    /// wholly below `a` (runs are sorted and disjoint, so their ends are
    /// sorted too). Where the last walk or edit ended, or the run just
    /// before that (the run just placed, read back), when that is the
    /// place; found by two binary searches otherwise.
    fn locate(&self, a: u64) -> Pos {
        let h = self.cursor.get();
        let reaches = match self.chunks.get(h.c) {
            Some(ch) => ch.get(h.i).is_some_and(|r| run_last(r) >= a),
            None => h.c == self.chunks.len() && h.i == 0,
        };
        if reaches {
            // `h` is a place (checked above), so the one before it is too.
            match self.prev_pos(h) {
                None => return h,
                Some(q) if run_last(&self.chunks[q.c][q.i]) < a => return h,
                Some(q) if self.prev(q).is_none_or(|r| run_last(r) < a) => return q,
                Some(_) => {}
            }
        }
        let c = self
            .chunks
            .partition_point(|ch| ch.last().is_none_or(|r| run_last(r) < a));
        let i = self
            .chunks
            .get(c)
            .map_or(0, |ch| ch.partition_point(|r| run_last(r) < a));
        Pos { c, i }
    }

    /// Remember `p` as where a walk or an edit ended.
    fn leave(&self, p: Pos) {
        self.cursor.set(p);
    }

    /// The place `i` runs into chunk `c`, named as [`Pos`] names places
    /// (`i` at most the chunk's length; its end is the next chunk's start).
    fn pos(&self, c: usize, i: usize) -> Pos {
        match self.chunks.get(c) {
            Some(ch) if i >= ch.len() => Pos { c: c + 1, i: 0 },
            _ => Pos { c, i },
        }
    }

    /// The runs from `p` on, in order.
    fn from(&self, p: Pos) -> impl Iterator<Item = &Run> + '_ {
        let first = self.chunks.get(p.c).map_or(&[][..], |ch| &ch[p.i..]);
        let rest = self.chunks.get(p.c + 1..).unwrap_or(&[]);
        first.iter().chain(rest.iter().flatten())
    }

    /// Where the run just before `p` is.
    fn prev_pos(&self, p: Pos) -> Option<Pos> {
        if p.i > 0 {
            return Some(Pos { c: p.c, i: p.i - 1 });
        }
        let c = p.c.checked_sub(1)?;
        Some(Pos {
            c,
            i: self.chunks[c].len() - 1,
        })
    }

    /// The run at `p`.
    fn get(&self, p: Pos) -> Option<&Run> {
        self.chunks.get(p.c).and_then(|ch| ch.get(p.i))
    }

    /// The place after `p` (which holds a run).
    fn next_pos(&self, p: Pos) -> Pos {
        if p.i + 1 < self.chunks[p.c].len() {
            Pos { c: p.c, i: p.i + 1 }
        } else {
            Pos { c: p.c + 1, i: 0 }
        }
    }

    /// The run just before `p`.
    fn prev(&self, p: Pos) -> Option<&Run> {
        self.prev_pos(p).map(|q| &self.chunks[q.c][q.i])
    }

    fn iter(&self) -> impl Iterator<Item = &Run> + '_ {
        self.chunks.iter().flatten()
    }

    /// Replace the `n` runs from `p` by `new` (sorted, and fitting between
    /// the runs around them). Returns the place after the new runs.
    fn splice(&mut self, p: Pos, n: usize, new: &[Run]) -> Pos {
        if n == 0 && new.is_empty() {
            return p;
        }
        // The usual edits: one run overwritten, or one inserted into a
        // chunk with room (a chunk at `p.c` holds a run at `p.i`).
        if let ([r], Some(ch)) = (new, self.chunks.get_mut(p.c)) {
            if n == 1 {
                ch[p.i] = *r;
                return self.pos(p.c, p.i + 1);
            }
            if n == 0 && ch.len() < CHUNK_MAX {
                ch.insert(p.i, *r);
                self.len += 1;
                return self.pos(p.c, p.i + 1);
            }
        }
        if let ([r], 0, true) = (new, n, p.c == self.chunks.len()) {
            // One run after all others (a buffer placed in address order):
            // onto the last chunk, or a new one when that is full, rather
            // than a full chunk split in half every few runs.
            self.len += 1;
            match self.chunks.last_mut().filter(|ch| ch.len() < CHUNK_MAX) {
                Some(ch) => ch.push(*r),
                None => self.chunks.push(new_chunk(new)),
            }
            return Pos {
                c: self.chunks.len(),
                i: 0,
            };
        }
        self.len = self.len - n + new.len();
        if p.c == self.chunks.len() {
            // At the end: append to the last chunk.
            match self.chunks.last_mut() {
                Some(ch) => ch.extend_from_slice(new),
                None => self.chunks.push(new_chunk(new)),
            }
            let c = self.chunks.len() - 1;
            return self.settle(c, self.chunks[c].len());
        }
        let ch = &mut self.chunks[p.c];
        if p.i + n <= ch.len() {
            // Overwrite what both have, then insert or remove the rest (at
            // most three runs come in).
            let both = n.min(new.len());
            ch[p.i..p.i + both].copy_from_slice(&new[..both]);
            if new.len() > n {
                for (o, r) in new[n..].iter().enumerate() {
                    ch.insert(p.i + n + o, *r);
                }
            } else if n > new.len() {
                ch.drain(p.i + both..p.i + n);
            }
        } else {
            // The runs go on into later chunks: drop the chunks they cover
            // whole and the start of the one they end in.
            let mut left = n - (ch.len() - p.i);
            ch.truncate(p.i);
            ch.extend_from_slice(new);
            let mut whole = 0;
            for later in &self.chunks[p.c + 1..] {
                if later.len() > left {
                    break;
                }
                left -= later.len();
                whole += 1;
            }
            self.chunks.drain(p.c + 1..p.c + 1 + whole);
            if left > 0 {
                self.chunks[p.c + 1].drain(..left);
            }
        }
        self.settle(p.c, p.i + new.len())
    }

    /// Drop chunk `c` if it is empty, split it if it is too long. Returns
    /// where run `i` of the chunk (or its end) is then.
    fn settle(&mut self, c: usize, i: usize) -> Pos {
        let n = self.chunks[c].len();
        if n == 0 {
            self.chunks.remove(c);
        } else if n > CHUNK_MAX {
            let right = new_chunk(&self.chunks[c][n / 2..]);
            self.chunks[c].truncate(n / 2);
            self.chunks.insert(c + 1, right);
            if i >= n / 2 {
                return self.pos(c + 1, i - n / 2);
            }
        }
        self.pos(c, i)
    }
}

impl HostMemory {
    /// An empty address space: every byte reads as zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether pages `[from, last]` may hold a page of bytes.
    fn may_hold_bytes(&self, from: u64, last: u64) -> bool {
        let (lo, hi) = self.bytes_within;
        !self.pages.is_empty() && from <= hi && last >= lo
    }

    /// The first page of bytes among pages `[from, last]` (a fuzzer's
    /// memory has none there, and asking the tree costs a descent).
    fn pages_in(&mut self, from: u64, last: u64) -> Option<(&u64, &mut Bytes)> {
        if !self.may_hold_bytes(from, last) {
            return None;
        }
        self.pages.range_mut(from..=last).next()
    }

    /// Make page `p` a page of bytes `b` (it holds no run).
    fn insert_page(&mut self, p: u64, b: Bytes) {
        let (lo, hi) = self.bytes_within;
        self.bytes_within = if self.pages.is_empty() {
            (p, p)
        } else {
            (lo.min(p), hi.max(p))
        };
        self.pages.insert(p, b);
    }

    /// The runs overlapping `[lo, hi)`, in address order.
    fn runs_over(&self, lo: u64, hi: u128) -> impl Iterator<Item = Run> + '_ {
        self.runs
            .from(self.runs.locate(lo))
            .take_while(move |(k, _)| u128::from(*k) < hi)
            .copied()
    }

    /// Remove bytes `[lo, hi)` from the runs (they read as zeros, unless a
    /// page of bytes holds them), trimming or splitting the runs across
    /// either end, and put `with` (a run of exactly those bytes) in their
    /// place: one splice whatever the range held.
    fn replace_runs(&mut self, lo: u64, hi: u128, with: Option<TagPiece>) {
        if hi <= u128::from(lo) {
            return;
        }
        let p = self.runs.locate(lo);
        let first = match self.runs.get(p) {
            Some(&r) if u128::from(r.0) < hi => r,
            // Nothing there (the usual case for a buffer freed twice).
            _ if with.is_none() => return self.runs.leave(p),
            _ => (0, UNUSED),
        };
        let (mut n, mut last, mut q) = (0usize, None, p);
        while let Some(&r) = self.runs.get(q) {
            if u128::from(r.0) >= hi {
                break;
            }
            last = Some(r);
            n += 1;
            q = self.runs.next_pos(q);
        }
        let first = (n > 0).then_some(first);
        // At most three runs come back: a head, `with` and a tail.
        let mut new = [(0, UNUSED); 3];
        let mut k = 0;
        if let Some((s, r)) = first.filter(|(s, _)| *s < lo) {
            new[k] = (s, r.sub(0, (lo - s) as u32));
            k += 1;
        }
        if let Some(w) = with {
            new[k] = (lo, w);
            k += 1;
        }
        if let Some((s, r)) = last {
            let e = end_of(s, u64::from(r.len));
            if e > hi {
                // `hi < e <= 2^64`, so it is an address.
                let h = hi as u64;
                new[k] = (h, r.sub((h - s) as u32, (e - hi) as u32));
                k += 1;
            }
        }
        let after = self.runs.splice(p, n, &new[..k]);
        self.runs.leave(after);
    }

    /// Remove bytes `[lo, hi)` from the runs.
    fn cut_runs(&mut self, lo: u64, hi: u128) {
        self.replace_runs(lo, hi, None);
    }

    /// Render the runs over `[lo, lo + dst.len())` into `dst`, leaving the
    /// bytes no run covers as they are.
    fn render_runs(&self, lo: u64, dst: &mut [u8]) {
        let hi = end_of(lo, dst.len() as u64);
        for (k, p) in self.runs_over(lo, hi) {
            let s = u128::from(k).max(u128::from(lo));
            let e = end_of(k, u64::from(p.len)).min(hi);
            let piece = p.sub((s - u128::from(k)) as u32, (e - s) as u32);
            let at = (s - u128::from(lo)) as usize;
            piece.render(&mut dst[at..at + piece.len as usize]);
        }
    }

    /// Turn page `p`, which holds no bytes, into a page of the bytes it
    /// reads as.
    fn render_page(&mut self, p: u64) {
        let (lo, hi) = page_span(p);
        let mut b = new_page(0, &[]);
        self.render_runs(lo, &mut b[..]);
        self.cut_runs(lo, hi);
        self.insert_page(p, b);
    }

    /// Copy `data` into memory at `addr`. Bytes that would lie past 2^64
    /// wrap nowhere: they are not written (an address space has no byte
    /// there), which the HBA model treats like any other bad address.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        let len = below_top(addr, data.len() as u64) as usize;
        let mut done = 0usize;
        while done < len {
            // `done < len`, which `below_top` kept within the space.
            let a = addr + done as u64;
            let page = a / PAGE_SIZE;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(len - done);
            let src = &data[done..done + n];
            if let Some(b) = self.pages.get_mut(&page) {
                b[off..off + n].copy_from_slice(src);
            } else {
                // Bytes over runs: the page becomes bytes, rendered first
                // unless the write covers it all.
                let (lo, hi) = page_span(page);
                let b = if n == PAGE_SIZE as usize || self.runs_over(lo, hi).next().is_none() {
                    new_page(off, src)
                } else {
                    let mut b = new_page(0, &[]);
                    self.render_runs(lo, &mut b[..]);
                    b[off..off + n].copy_from_slice(src);
                    b
                };
                self.cut_runs(lo, hi);
                self.insert_page(page, b);
            }
            done += n;
        }
    }

    /// Place a piece of a self-describing block (or of a run of them) at
    /// `addr`: the bytes it stands for, as one run where memory allows
    /// (bytes past 2^64 are dropped as in [`HostMemory::write`]).
    ///
    /// Where the piece meets a page of bytes, that page becomes part of the
    /// run when the piece covers it or its other bytes are all zero (a
    /// buffer just freed), and is rendered into otherwise. The run joins
    /// the run before it when it continues it from the middle of a page
    /// that holds nothing after that point (a buffer filled in address
    /// order), and a page left holding more than [`MAX_PIECES`] pieces of
    /// runs becomes bytes: the pieces a page of 4 KiB would hold.
    pub fn write_piece(&mut self, addr: u64, piece: TagPiece) {
        let len = below_top(addr, u64::from(piece.len)) as u32;
        if len == 0 {
            return;
        }
        let piece = clip(piece, 0, len);
        let lo = u128::from(addr);
        let hi = lo + u128::from(len);
        // The part of the piece that becomes a run: all of it, but for a
        // page of bytes at either end that keeps its bytes.
        let (mut rs, mut re) = (lo, hi);
        let (first, last) = pages_of(addr, hi);
        let mut from = first;
        while let Some((&p, b)) = self.pages_in(from, last) {
            let (ps, pe) = page_span(p);
            let ps = u128::from(ps);
            let (fs, fe) = (ps.max(lo), pe.min(hi));
            let (o, e) = ((fs - ps) as usize, (fe - ps) as usize);
            if e - o == PAGE_SIZE as usize || (is_zero(&b[..o]) && is_zero(&b[e..])) {
                recycle(self.pages.remove(&p).into_iter());
            } else {
                // Only a page at either end is partly covered.
                piece
                    .sub((fs - lo) as u32, (fe - fs) as u32)
                    .render(&mut b[o..e]);
                if p == first {
                    rs = pe;
                } else {
                    re = ps;
                }
            }
            if p == last {
                break;
            }
            from = p + 1;
        }
        if rs >= re {
            return;
        }
        let start = rs as u64;
        self.place_run(start, re, clip(piece, (rs - lo) as u32, (re - rs) as u32));
    }

    /// Put `run` at `[start, re)` in place of the runs there, joined to the
    /// run before it where a page's last piece would have been extended,
    /// and render a page at either end to bytes if it is left holding more
    /// than [`MAX_PIECES`] pieces (pages between hold one). One lookup:
    /// the neighbours that decide both are found from where the run goes.
    fn place_run(&mut self, start: u64, re: u128, run: TagPiece) {
        let lo = u128::from(start);
        let p = self.runs.locate(start);
        // The runs overlapping [start, re), and the first one after them.
        let (mut n, mut first, mut last, mut next) = (0usize, None, None, None);
        let mut q = p;
        while let Some(&r) = self.runs.get(q) {
            if u128::from(r.0) >= re {
                next = Some(r);
                break;
            }
            if n == 0 {
                first = Some(r);
            }
            last = Some(r);
            n += 1;
            q = self.runs.next_pos(q);
        }
        let (p1, p2) = pages_of(start, re);
        let (pb1, pe1) = page_span(p1);
        let pe2 = page_span(p2).1;
        let head = first.filter(|(s, _)| *s < start);
        let tail = last.filter(|&r| run_end(&r) > re);
        // The page model's join: the run before ends where this one starts,
        // inside a page that holds nothing from there on.
        let after = first.or(next).map(|r| u128::from(r.0));
        let joined = self
            .runs
            .prev(p)
            .filter(|&l| {
                !start.is_multiple_of(PAGE_SIZE)
                    && run_end(l) == lo
                    && after.is_none_or(|a| a >= pe1)
            })
            .and_then(|&(k, l)| l.joined(&run).map(|j| (k, j)));
        // Pieces left in the end pages: those of the runs before and after
        // that reach into them, and this run's (unless it extends one).
        let own = usize::from(joined.is_none());
        // At most two runs more than now: no page can hold more pieces
        // than there are runs.
        let (c1, c2) = if self.runs.len() + 2 <= MAX_PIECES {
            (0, 0)
        } else {
            let last2 = p2 * PAGE_SIZE + (PAGE_SIZE - 1);
            let mut before = usize::from(head.is_some() && lo > u128::from(pb1));
            let mut b = self.runs.prev_pos(p);
            while let Some(at) = b.filter(|_| before <= MAX_PIECES) {
                if run_last(&self.runs.chunks[at.c][at.i]) < pb1 {
                    break;
                }
                before += 1;
                b = self.runs.prev_pos(at);
            }
            let mut beyond = usize::from(tail.is_some() && re < pe2);
            while let Some(r) = self.runs.get(q).filter(|_| beyond <= MAX_PIECES) {
                if r.0 > last2 {
                    break;
                }
                beyond += 1;
                q = self.runs.next_pos(q);
            }
            if p1 == p2 {
                (before + own + beyond, 0)
            } else {
                (before + own, 1 + beyond)
            }
        };
        let mut new = [(0, UNUSED); 3];
        let mut k = 0;
        let mut at = p;
        let mut gone = n;
        if let Some((s, r)) = head {
            new[k] = (s, r.sub(0, (start - s) as u32));
            k += 1;
        }
        match joined {
            Some(j) => {
                // The run before goes too, replaced by the joined run.
                at = self.runs.prev_pos(p).expect("a run before");
                gone += 1;
                new[k] = j;
            }
            None => new[k] = (start, run),
        }
        k += 1;
        if let Some((s, r)) = tail {
            // `re < end <= 2^64`, so it is an address.
            let h = re as u64;
            new[k] = (h, r.sub((h - s) as u32, (run_end(&(s, r)) - re) as u32));
            k += 1;
        }
        let after = self.runs.splice(at, gone, &new[..k]);
        self.runs.leave(after);
        if c1 > MAX_PIECES {
            self.render_page(p1);
        }
        if c2 > MAX_PIECES {
            self.render_page(p2);
        }
    }

    /// Place bytes `[at, at + len)` of the Data-Out that
    /// [`trace::pattern::fill_blocks`] would generate for `(seed,
    /// generation, first_lba, block_len)` at `addr`, as tags: one run
    /// however many blocks and pages that is, so a transfer spread over SG
    /// entries is placed one entry at a time. Bytes past 2^64 are dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn write_pattern(
        &mut self,
        addr: u64,
        at: usize,
        len: usize,
        seed: u64,
        generation: u32,
        first_lba: u64,
        block_len: u32,
    ) {
        let first = Tag {
            lba: first_lba,
            seed,
            generation,
        };
        // One piece for the whole range (a piece's length is 32 bits, so a
        // range past that goes in several).
        let mut done = 0usize;
        while done < len {
            let Some(a) = addr.checked_add(done as u64) else {
                return;
            };
            let take = (len - done).min(1 << 30);
            let piece = TagPiece::of_run(first, block_len, (at + done) as u64, take as u32);
            self.write_piece(a, piece);
            done += take;
        }
    }

    /// Place `len` bytes of `runs` from `start` at `addr`: bytes are
    /// written, zeros zeroed, pieces placed as pieces.
    pub fn write_runs(&mut self, addr: u64, runs: &DataRuns, start: usize, len: usize) {
        // Past 2^64 nothing is written (as in `write`).
        let mut next = Some(addr);
        runs.for_each(start, len, |part| {
            let Some(a) = next else { return };
            match part {
                Part::Bytes(b) => self.write(a, b),
                Part::Zero(n) => self.zero(a, n as u64),
                Part::Piece(p) => self.write_piece(a, p),
            }
            next = a.checked_add(part.len() as u64);
        });
    }

    /// Call `f` with the parts the `len` bytes at `addr` read as, in
    /// order: a page of bytes' slice, a run's piece, zeros between them
    /// and past 2^64. One call per entry, however many pages it spans.
    fn for_each_part<'s>(&'s self, addr: u64, len: usize, mut f: impl FnMut(Part<'s>)) {
        let have = below_top(addr, len as u64);
        let lo = u128::from(addr);
        let hi = end_of(addr, have);
        let mut at = lo;
        if have > 0 {
            let (first, last) = pages_of(addr, hi);
            at = if self.may_hold_bytes(first, last) {
                self.mixed_parts(lo, hi, (first, last), &mut f)
            } else {
                self.run_parts(lo, hi, &mut f)
            };
        }
        if hi > at {
            f(Part::Zero((hi - at) as usize));
        }
        if len as u64 > have {
            f(Part::Zero(len - have as usize));
        }
    }

    /// [`HostMemory::for_each_part`] over `[lo, hi)` where no page of bytes
    /// lies (a fuzzer's buffers): the runs, walked by position, and the
    /// zeros before each. Returns where the last run read ended.
    fn run_parts<'s>(&'s self, lo: u128, hi: u128, f: &mut impl FnMut(Part<'s>)) -> u128 {
        let mut at = lo;
        let mut q = self.runs.locate(lo as u64);
        while let Some(&(k, p)) = self.runs.get(q) {
            let r = u128::from(k);
            if r >= hi {
                break;
            }
            let s = r.max(lo);
            let e = (r + u128::from(p.len)).min(hi);
            if s > at {
                f(Part::Zero((s - at) as usize));
            }
            f(Part::Piece(clip(p, (s - r) as u32, (e - s) as u32)));
            at = e;
            q = self.runs.next_pos(q);
        }
        self.runs.leave(q);
        at
    }

    /// [`HostMemory::for_each_part`] over `[lo, hi)`, which pages
    /// `[first, last]` cover and may hold pages of bytes: runs and pages
    /// in address order, and the zeros before each. Returns where the last
    /// of them read ended.
    fn mixed_parts<'s>(
        &'s self,
        lo: u128,
        hi: u128,
        (first, last): (u64, u64),
        f: &mut impl FnMut(Part<'s>),
    ) -> u128 {
        let mut at = lo;
        let mut runs = self.runs_over(lo as u64, hi).peekable();
        let mut pages = self.pages.range(first..=last).peekable();
        loop {
            let run_at = runs.peek().map(|(k, _)| u128::from(*k));
            let page_at = pages.peek().map(|(p, _)| u128::from(**p * PAGE_SIZE));
            let (s, e, part) = match (run_at, page_at) {
                (None, None) => break,
                (Some(r), pg) if pg.is_none_or(|pg| r < pg) => {
                    let (_, p) = runs.next().expect("peeked");
                    let s = r.max(lo);
                    let e = (r + u128::from(p.len)).min(hi);
                    let piece = clip(p, (s - r) as u32, (e - s) as u32);
                    (s, e, Part::Piece(piece))
                }
                (_, pg) => {
                    let pg = pg.expect("a page when no run comes first");
                    let (_, b) = pages.next().expect("peeked");
                    let s = pg.max(lo);
                    let e = (pg + u128::from(PAGE_SIZE)).min(hi);
                    let bytes = &b[(s - pg) as usize..(e - pg) as usize];
                    (s, e, Part::Bytes(bytes))
                }
            };
            if s > at {
                f(Part::Zero((s - at) as usize));
            }
            f(part);
            at = e;
        }
        at
    }

    /// Append the `len` bytes at `addr` to `out` as runs: bytes, zeros
    /// (unallocated or between runs) and pieces as memory holds them, one
    /// push per entry.
    pub fn read_runs(&self, addr: u64, len: usize, out: &mut DataRuns) {
        self.for_each_part(addr, len, |p| out.push_part(p));
    }

    /// Fill `buf` from memory at `addr`; unallocated bytes read as zero.
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        let mut at = 0usize;
        self.for_each_part(addr, buf.len(), |part| {
            let n = part.len();
            let dst = &mut buf[at..at + n];
            match part {
                Part::Bytes(b) => dst.copy_from_slice(b),
                Part::Zero(_) => dst.fill(0),
                Part::Piece(p) => p.render(dst),
            }
            at += n;
        });
    }

    /// Append `len` bytes from memory at `addr` to `out`, as
    /// [`HostMemory::read`] would fill them, without zeroing them first.
    pub fn read_append(&self, addr: u64, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        self.for_each_part(addr, len, |p| render_part_append(p, out));
    }

    /// The `len` bytes at `addr` when they lie in one resident page of
    /// bytes: what [`HostMemory::read`] would copy out, borrowed instead.
    pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let off = (addr % PAGE_SIZE) as usize;
        if off + len > PAGE_SIZE as usize {
            return None;
        }
        self.pages
            .get(&(addr / PAGE_SIZE))
            .map(|p| &p[off..off + len])
    }

    /// Make `[addr, addr + len)` read as zeros (clipped at 2^64), releasing
    /// the pages of bytes and the runs inside it, so a replayer that reuses
    /// buffer addresses keeps its memory bounded. Costs per entry in the
    /// range, not per page.
    pub fn free(&mut self, addr: u64, len: u64) {
        self.zero(addr, len);
    }

    /// Make `[addr, addr + len)` read as zeros (clipped at 2^64): pages of
    /// bytes it covers are released, those it touches zeroed in part, runs
    /// cut.
    fn zero(&mut self, addr: u64, len: u64) {
        let len = below_top(addr, len);
        if len == 0 {
            return;
        }
        let lo = u128::from(addr);
        let hi = end_of(addr, len);
        let (first, last) = pages_of(addr, hi);
        let mut from = first;
        while let Some((&p, b)) = self.pages_in(from, last) {
            let (ps, pe) = page_span(p);
            let ps = u128::from(ps);
            let (fs, fe) = (ps.max(lo), pe.min(hi));
            if fe - fs == u128::from(PAGE_SIZE) {
                recycle(self.pages.remove(&p).into_iter());
            } else {
                b[(fs - ps) as usize..(fe - ps) as usize].fill(0);
            }
            if p == last {
                break;
            }
            from = p + 1;
        }
        self.cut_runs(addr, hi);
    }

    /// Pages currently holding data (bytes, or some of a run).
    pub fn resident_pages(&self) -> usize {
        let mut n = self.pages.len();
        // Runs never share a page with bytes, but may share one another's.
        let mut counted: Option<u64> = None;
        for &(k, p) in self.runs.iter() {
            let (a, b) = pages_of(k, end_of(k, u64::from(p.len)));
            let a = if counted == Some(a) { a + 1 } else { a };
            if b >= a {
                n += (b - a + 1) as usize;
            }
            counted = Some(b);
        }
        n
    }
}

/// How many bytes of `[addr, addr + len)` lie below 2^64.
fn below_top(addr: u64, len: u64) -> u64 {
    let room = u64::MAX - addr; // bytes after `addr`
    if len > room {
        room + 1
    } else {
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_across_page_boundaries_and_far_addresses() {
        let mut m = HostMemory::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let addr = (1u64 << 40) - 100;
        m.write(addr, &data);
        let mut back = vec![0u8; data.len()];
        m.read(addr, &mut back);
        assert_eq!(back, data);
        assert_eq!(m.resident_pages(), 4);
        let mut appended = vec![5u8];
        m.read_append(addr - 10, data.len() + 20, &mut appended);
        assert_eq!(appended[..11], [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(appended[11..11 + data.len()], data[..]);
        assert_eq!(appended[11 + data.len()..], [0; 10]);
        let mut top = Vec::new();
        m.write(u64::MAX - 1, &[3, 3]);
        m.read_append(u64::MAX - 1, 4, &mut top);
        assert_eq!(top, [3, 3, 0, 0], "past 2^64 reads as zeros");
    }

    #[test]
    fn unwritten_memory_is_zero_and_free_releases() {
        let mut m = HostMemory::new();
        let mut b = [1u8; 16];
        m.read(0x1234, &mut b);
        assert_eq!(b, [0; 16]);
        m.write(0, &[7u8; 3 * PAGE_SIZE as usize]);
        m.free(10, 2 * PAGE_SIZE);
        assert_eq!(m.resident_pages(), 2);
        let mut b = [0u8; 12];
        m.read(4, &mut b);
        assert_eq!(b, [7, 7, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn recycled_pages_read_as_zeros_around_new_data() {
        {
            let mut m = HostMemory::new();
            m.write(0, &[0xee; 3 * PAGE_SIZE as usize]);
            m.free(PAGE_SIZE, PAGE_SIZE);
        }
        // Dropped and freed pages went to the pool full of 0xee.
        let mut m = HostMemory::new();
        m.write(PAGE_SIZE + 100, &[1, 2, 3]);
        m.write(8 * PAGE_SIZE, &[4; PAGE_SIZE as usize]);
        let mut b = vec![9u8; PAGE_SIZE as usize];
        m.read(PAGE_SIZE, &mut b);
        assert_eq!(b[100..103], [1, 2, 3]);
        assert_eq!(b.iter().filter(|x| **x != 0).count(), 3);
        m.read(8 * PAGE_SIZE, &mut b);
        assert!(b.iter().all(|x| *x == 4));
    }

    #[test]
    fn free_releases_pages_even_when_the_pool_is_full() {
        {
            let mut m = HostMemory::new();
            m.write(0, &vec![1u8; (POOL_PAGES + 8) * PAGE_SIZE as usize]);
            m.write_piece(1 << 40, TagPiece::whole(tag(1), 512));
        } // dropped: both pools are full now
        let mut m = HostMemory::new();
        m.write(0, &[2u8; 4 * PAGE_SIZE as usize]);
        m.write_piece(8 * PAGE_SIZE, TagPiece::whole(tag(2), 4096));
        m.free(0, 9 * PAGE_SIZE);
        assert_eq!(m.resident_pages(), 0);
        assert!(read_vec(&m, 0, 9 * PAGE_SIZE as usize)
            .iter()
            .all(|b| *b == 0));
    }

    #[test]
    fn writes_past_the_top_of_the_address_space_are_dropped_not_wrapped() {
        let mut m = HostMemory::new();
        m.write(u64::MAX - 1, &[9, 9, 9, 9]);
        let mut b = [0u8; 4];
        m.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }

    use crate::content::Tag;
    use crate::runs::{DataRuns, Part, TagPiece};
    use proptest::prelude::*;

    fn tag(lba: u64) -> Tag {
        Tag {
            lba,
            seed: 0x5eed,
            generation: 4,
        }
    }

    fn bytes_of(p: TagPiece) -> Vec<u8> {
        let mut b = vec![0u8; p.len as usize];
        p.render(&mut b);
        b
    }

    fn read_vec(m: &HostMemory, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0xaa; len];
        m.read(addr, &mut b);
        b
    }

    #[test]
    fn a_page_mixes_pieces_and_zero_gaps_and_reads_back_their_bytes() {
        let mut m = HostMemory::new();
        let a = TagPiece::whole(tag(1), 512);
        let b = TagPiece::whole(tag(2), 512);
        m.write_piece(0x1000, a);
        m.write_piece(0x1000 + 1024, b);
        let got = read_vec(&m, 0x1000, 2048);
        assert_eq!(got[..512], bytes_of(a)[..]);
        assert!(got[512..1024].iter().all(|x| *x == 0));
        assert_eq!(got[1024..1536], bytes_of(b)[..]);
        assert!(m.slice(0x1000, 16).is_none(), "a tagged page is not bytes");
        let mut runs = DataRuns::new();
        m.read_runs(0x1000, 2048, &mut runs);
        let parts: Vec<Part<'_>> = runs.parts().collect();
        assert_eq!(
            parts,
            [
                Part::Piece(a),
                Part::Zero(512),
                Part::Piece(b),
                Part::Zero(512)
            ]
        );
    }

    #[test]
    fn a_block_split_across_pages_comes_back_as_one_piece() {
        let mut m = HostMemory::new();
        let p = TagPiece::whole(tag(7), 4096);
        let addr = 3 * PAGE_SIZE - 100; // misaligned: 100 bytes, then 3996
        m.write_piece(addr, p);
        assert_eq!(m.resident_pages(), 2);
        let mut runs = DataRuns::new();
        m.read_runs(addr, 4096, &mut runs);
        assert_eq!(runs.single(0, 4096), Some(Part::Piece(p)));
        assert_eq!(read_vec(&m, addr, 4096), bytes_of(p));
        let mut app = vec![1u8];
        m.read_append(addr - 3, 4100, &mut app);
        assert_eq!(app[..4], [1, 0, 0, 0]);
        assert_eq!(app[4..4100], bytes_of(p)[..4096]);
    }

    #[test]
    fn a_byte_write_over_a_tagged_page_keeps_the_rest_of_its_bytes() {
        let mut m = HostMemory::new();
        let p = TagPiece::whole(tag(3), 512);
        m.write_piece(0, p);
        m.write(100, &[9, 9, 9]);
        let mut want = bytes_of(p);
        want[100..103].copy_from_slice(&[9, 9, 9]);
        assert_eq!(read_vec(&m, 0, 512), want);
        assert_eq!(m.slice(100, 3), Some(&[9u8, 9, 9][..]), "now bytes");
        // A piece over bytes that are not all zero is rendered into them.
        m.write_piece(512, TagPiece::whole(tag(4), 512));
        assert_eq!(
            read_vec(&m, 512, 512),
            bytes_of(TagPiece::whole(tag(4), 512))
        );
        assert_eq!(read_vec(&m, 0, 512), want);
    }

    #[test]
    fn a_read_stitches_two_tags_and_free_cuts_pieces() {
        let mut m = HostMemory::new();
        // Not consecutive LBAs: two runs, not one.
        let a = TagPiece::whole(tag(10), 512);
        let b = TagPiece::whole(tag(13), 512);
        m.write_piece(0x2000, a);
        m.write_piece(0x2000 + 512, b);
        // Half of one, half of the other: what a misdirected DMA sees.
        let mut runs = DataRuns::new();
        m.read_runs(0x2000 + 256, 512, &mut runs);
        assert_eq!(runs.single(0, 512), None);
        let mut want = bytes_of(a)[256..].to_vec();
        want.extend_from_slice(&bytes_of(b)[..256]);
        assert_eq!(runs.to_bytes(), want);
        // An overlapping piece replaces what it covers.
        m.write_piece(0x2000 + 300, TagPiece::whole(tag(12), 512));
        let got = read_vec(&m, 0x2000, 1024);
        assert_eq!(got[..300], bytes_of(a)[..300]);
        assert_eq!(got[300..812], bytes_of(TagPiece::whole(tag(12), 512))[..]);
        assert_eq!(got[812..], bytes_of(b)[300..]);
        m.free(0x2000 + 100, 50);
        let got2 = read_vec(&m, 0x2000, 1024);
        assert!(got2[100..150].iter().all(|x| *x == 0));
        assert_eq!(got2[..100], got[..100]);
        assert_eq!(got2[150..], got[150..]);
    }

    #[test]
    fn consecutive_blocks_of_one_stream_are_one_run_across_pages() {
        let mut m = HostMemory::new();
        // 20 blocks of 512 bytes from LBA 100, 300 bytes into a page: one
        // run over three pages, and reading them back gives one piece.
        let addr = 5 * PAGE_SIZE + 300;
        m.write_pattern(addr, 0, 20 * 512, 0x5eed, 4, 100, 512);
        assert_eq!(m.resident_pages(), 3);
        assert!(m.pages.is_empty(), "no page of bytes");
        assert_eq!(m.runs.len(), 1, "one run across the three pages");
        let mut runs = DataRuns::new();
        m.read_runs(addr, 20 * 512, &mut runs);
        let run = TagPiece::of_run(tag(100), 512, 0, 20 * 512);
        assert_eq!(runs.parts().collect::<Vec<_>>(), [Part::Piece(run)]);
        assert_eq!(run.whole_blocks(512), Some((tag(100), 20)));
        assert_eq!(run.sub(512, 700).whole_blocks(512), Some((tag(101), 1)));
        assert_eq!(run.sub(512, 500).whole_blocks(512), None, "no whole block");
        assert_eq!(
            run.sub(10, 1024).whole_blocks(512),
            None,
            "not at a block start"
        );
        assert_eq!(run.whole_blocks(4096), None, "another block size");
        let mut want = vec![0u8; 20 * 512];
        trace::pattern::fill_blocks(0x5eed, 4, 100, 512, &mut want);
        assert_eq!(runs.to_bytes(), want);
        // Block 7 alone, and a piece straddling blocks 7 and 8.
        assert_eq!(
            runs.single(7 * 512, 512),
            Some(Part::Piece(TagPiece::whole(tag(107), 512)))
        );
        let straddle = run.sub(7 * 512 + 500, 30);
        assert_eq!((straddle.tag, straddle.start), (tag(107), 500));
        assert_eq!(bytes_of(straddle), want[7 * 512 + 500..7 * 512 + 530]);
        // Overwriting the middle of the run cuts it in three: the two ends
        // still continue their own LBAs.
        m.write(addr + 5 * 512 + 10, &[1, 2, 3]);
        m.write_pattern(addr + 12 * 512, 0, 512, 0x5eed, 5, 112, 512);
        want[5 * 512 + 10..5 * 512 + 13].copy_from_slice(&[1, 2, 3]);
        trace::pattern::fill_blocks(0x5eed, 5, 112, 512, &mut want[12 * 512..13 * 512]);
        assert_eq!(read_vec(&m, addr, 20 * 512), want);
        let mut runs = DataRuns::new();
        m.read_runs(addr, 20 * 512, &mut runs);
        assert_eq!(runs.to_bytes(), want);
        assert_eq!(
            runs.single(13 * 512, 7 * 512),
            Some(Part::Piece(TagPiece::of_run(tag(113), 512, 0, 7 * 512)))
        );
    }

    #[test]
    fn runs_written_then_read_give_the_same_runs() {
        let mut m = HostMemory::new();
        let mut runs = DataRuns::new();
        runs.push_bytes(&[5; 700]);
        runs.push_piece(TagPiece::whole(tag(20), 512));
        runs.push_zero(3000);
        runs.push_piece(TagPiece::whole(tag(21), 512).sub(12, 400));
        let addr = (1 << 33) + 77;
        m.write(addr - 10, &[1; 5000]); // bytes under the zeros must go
        m.write_runs(addr, &runs, 0, runs.len());
        let mut back = DataRuns::new();
        m.read_runs(addr, runs.len(), &mut back);
        assert_eq!(back.to_bytes(), runs.to_bytes());
        assert_eq!(read_vec(&m, addr, runs.len()), runs.to_bytes());
    }

    /// A page's pieces are counted as a page of pieces counted them: a
    /// piece continuing the page's last piece extends it, one continuing
    /// an earlier piece is a piece of its own, so the same 33rd write
    /// renders the page to bytes in one case and not in the other.
    #[test]
    fn a_piece_extends_the_one_before_only_at_the_end_of_its_page() {
        let p = TagPiece::whole(tag(30), 512);
        let mut m = HostMemory::new();
        for i in 0..MAX_PIECES as u64 {
            m.write_piece(i * 64, TagPiece::whole(tag(40 + i), 512).sub(0, 8));
        }
        assert!(m.slice(0, 1).is_none(), "32 pieces: still tagged");
        // Continue the last piece: it grows, the page keeps 32 pieces.
        let last = (MAX_PIECES as u64 - 1) * 64;
        m.write_piece(last + 8, TagPiece::whole(tag(40 + 31), 512).sub(8, 8));
        assert!(m.slice(0, 1).is_none(), "the last piece grew");
        // Continue the first: pieces follow it, so it is a 33rd piece.
        m.write_piece(0, p.sub(0, 8));
        m.write_piece(8, p.sub(8, 8));
        assert!(m.slice(0, 1).is_some(), "33 pieces: rendered to bytes");
        assert_eq!(read_vec(&m, 0, 16), bytes_of(p.sub(0, 16)));
    }

    #[test]
    fn many_small_pieces_fall_back_to_bytes() {
        let mut m = HostMemory::new();
        let p = TagPiece::whole(tag(30), 512);
        let mut want = vec![0u8; 4096];
        for i in 0..60u32 {
            let sub = p.sub(i * 8, 5);
            m.write_piece(u64::from(i) * 64, sub);
            let o = i as usize * 64;
            want[o..o + 5].copy_from_slice(&bytes_of(sub));
        }
        assert!(m.slice(0, 1).is_some(), "rendered to bytes past MAX_PIECES");
        assert_eq!(read_vec(&m, 0, 4096), want);
    }

    /// The page model this memory replaced, kept as the specification of
    /// which bytes read back as tags, bytes or zeros: a page of 4 KiB holds
    /// bytes or at most `MAX_PIECES` pieces. Campaign outcomes depend on
    /// that split (the device stores tags as tags and bytes as bytes), so
    /// the runs must reproduce it exactly, not only the bytes.
    mod paged {
        use super::super::{below_top, PAGE_SIZE};
        use crate::runs::{DataRuns, Part, TagPiece};
        use std::collections::HashMap;

        type Bytes = Box<[u8; PAGE_SIZE as usize]>;

        /// Pieces a tagged page holds before it is rendered to bytes, so a page cut
        /// into tiny pieces by a hostile SG list costs a bounded walk.
        const MAX_PIECES: usize = 32;

        /// One resident page.
        enum Page {
            Bytes(Bytes),
            /// Pieces in address order, `(offset in the page, piece)`, not
            /// overlapping; bytes no piece covers are zero.
            Tagged(Pieces),
        }

        /// A tagged page's pieces.
        type Pieces = Vec<(u32, TagPiece)>;

        /// No pool in the model: pages are allocated and dropped.
        fn recycle(pages: impl Iterator<Item = Page>) {
            pages.for_each(drop);
        }

        fn new_pieces() -> Pieces {
            Vec::new()
        }

        fn new_page(off: usize, src: &[u8]) -> Bytes {
            let mut p: Bytes = Box::new([0u8; PAGE_SIZE as usize]);
            p[off..off + src.len()].copy_from_slice(src);
            p
        }

        /// A sparse physical address space.
        #[derive(Default)]
        pub struct Paged {
            pages: HashMap<u64, Page, std::hash::RandomState>,
        }

        /// Render a tagged page's pieces into bytes.
        fn render_page(pieces: &[(u32, TagPiece)]) -> Bytes {
            let mut p = new_page(0, &[]);
            for (off, piece) in pieces {
                let o = *off as usize;
                piece.render(&mut p[o..o + piece.len as usize]);
            }
            p
        }

        /// The parts (zeros and pieces) of bytes `[off, off + n)` of a tagged
        /// page, in order.
        fn tagged_parts(
            pieces: &[(u32, TagPiece)],
            off: usize,
            n: usize,
            mut f: impl FnMut(Part<'_>),
        ) {
            let end = off + n;
            let mut at = off;
            for (po, piece) in pieces {
                let (ps, pe) = (*po as usize, *po as usize + piece.len as usize);
                if pe <= at {
                    continue;
                }
                if ps >= end {
                    break;
                }
                if ps > at {
                    f(Part::Zero(ps - at));
                    at = ps;
                }
                let take = pe.min(end) - at;
                f(Part::Piece(piece.sub((at - ps) as u32, take as u32)));
                at += take;
            }
            if end > at {
                f(Part::Zero(end - at));
            }
        }

        /// Remove bytes `[off, off + n)` from a tagged page's pieces (they become
        /// zeros), trimming or splitting the pieces that overlap them.
        fn cut(pieces: &mut Vec<(u32, TagPiece)>, off: u32, n: u32) {
            let end = off + n;
            let mut i = 0;
            while i < pieces.len() {
                let (ps, p) = pieces[i];
                let pe = ps + p.len;
                if pe <= off {
                    i += 1;
                    continue;
                }
                if ps >= end {
                    break;
                }
                let head = (ps < off).then(|| (ps, p.sub(0, off - ps)));
                let tail = (pe > end).then(|| (end, p.sub(end - ps, pe - end)));
                match (head, tail) {
                    (Some(h), Some(t)) => {
                        pieces[i] = h;
                        pieces.insert(i + 1, t);
                        i += 2;
                    }
                    (Some(h), None) => {
                        pieces[i] = h;
                        i += 1;
                    }
                    (None, Some(t)) => {
                        pieces[i] = t;
                        i += 1;
                    }
                    (None, None) => {
                        pieces.remove(i);
                    }
                }
            }
        }

        impl Paged {
            /// Copy `data` into memory at `addr`. Bytes that would lie past 2^64
            /// wrap nowhere: they are not written (an address space has no byte
            /// there), which the HBA model treats like any other bad address.
            pub fn write(&mut self, addr: u64, data: &[u8]) {
                let mut done = 0usize;
                while done < data.len() {
                    let Some(a) = addr.checked_add(done as u64) else {
                        return;
                    };
                    let page = a / PAGE_SIZE;
                    let off = (a % PAGE_SIZE) as usize;
                    let n = (PAGE_SIZE as usize - off).min(data.len() - done);
                    let src = &data[done..done + n];
                    match self.pages.entry(page) {
                        std::collections::hash_map::Entry::Occupied(mut p) => match p.get_mut() {
                            Page::Bytes(b) => b[off..off + n].copy_from_slice(src),
                            Page::Tagged(pieces) => {
                                // Bytes over a tagged page: render it first unless
                                // the write covers it all.
                                let b = if n == PAGE_SIZE as usize {
                                    new_page(0, src)
                                } else {
                                    let mut b = render_page(pieces);
                                    b[off..off + n].copy_from_slice(src);
                                    b
                                };
                                *p.get_mut() = Page::Bytes(b);
                            }
                        },
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(Page::Bytes(new_page(off, src)));
                        }
                    }
                    done += n;
                }
            }

            /// Place a piece of a self-describing block at `addr`: the bytes it
            /// stands for, without rendering them where the pages allow (pages
            /// past 2^64 are dropped as in [`Paged::write`]).
            pub fn write_piece(&mut self, addr: u64, piece: TagPiece) {
                let mut done = 0u32;
                while done < piece.len {
                    let Some(a) = addr.checked_add(u64::from(done)) else {
                        return;
                    };
                    let page = a / PAGE_SIZE;
                    let off = (a % PAGE_SIZE) as u32;
                    let n = (PAGE_SIZE as u32 - off).min(piece.len - done);
                    let sub = piece.sub(done, n);
                    match self.pages.entry(page) {
                        std::collections::hash_map::Entry::Occupied(mut p) => match p.get_mut() {
                            Page::Tagged(pieces) => {
                                // A buffer filled in address order appends, and
                                // a piece continuing the last one's run extends it.
                                match pieces.last_mut() {
                                    Some((o, p))
                                        if *o + p.len == off && p.joined(&sub).is_some() =>
                                    {
                                        *p = p.joined(&sub).expect("just checked");
                                    }
                                    Some((o, p)) if *o + p.len > off => {
                                        cut(pieces, off, n);
                                        let at = pieces.partition_point(|(o, _)| *o < off);
                                        pieces.insert(at, (off, sub));
                                    }
                                    _ => pieces.push((off, sub)),
                                }
                                if pieces.len() > MAX_PIECES {
                                    let b = render_page(pieces);
                                    *p.get_mut() = Page::Bytes(b);
                                }
                            }
                            Page::Bytes(b) => {
                                let (o, e) = (off as usize, (off + n) as usize);
                                // A page of bytes that are all zero outside the
                                // piece (a buffer just freed) becomes tagged.
                                if n == PAGE_SIZE as u32
                                    || (crate::content::is_zero(&b[..o])
                                        && crate::content::is_zero(&b[e..]))
                                {
                                    let old = std::mem::replace(
                                        p.get_mut(),
                                        Page::Tagged(vec![(off, sub)]),
                                    );
                                    recycle(std::iter::once(old));
                                } else {
                                    sub.render(&mut b[o..e]);
                                }
                            }
                        },
                        std::collections::hash_map::Entry::Vacant(v) => {
                            let mut pieces = new_pieces();
                            pieces.push((off, sub));
                            v.insert(Page::Tagged(pieces));
                        }
                    }
                    done += n;
                }
            }

            /// Place `len` bytes of `runs` from `start` at `addr`: bytes are
            /// written, zeros zeroed, pieces placed as pieces.
            pub fn write_runs(&mut self, addr: u64, runs: &DataRuns, start: usize, len: usize) {
                // Past 2^64 nothing is written (as in `write`).
                let mut next = Some(addr);
                runs.for_each(start, len, |part| {
                    let Some(a) = next else { return };
                    match part {
                        Part::Bytes(b) => self.write(a, b),
                        Part::Zero(n) => self.zero(a, n as u64),
                        Part::Piece(p) => self.write_piece(a, p),
                    }
                    next = a.checked_add(part.len() as u64);
                });
            }

            /// Append the `len` bytes at `addr` to `out` as runs: bytes, zeros
            /// (unallocated or between pieces) and pieces as the pages hold them.
            pub fn read_runs(&self, addr: u64, len: usize, out: &mut DataRuns) {
                let mut done = 0usize;
                while done < len {
                    let Some(a) = addr.checked_add(done as u64) else {
                        out.push_zero(len - done);
                        return;
                    };
                    let page = a / PAGE_SIZE;
                    let off = (a % PAGE_SIZE) as usize;
                    let n = (PAGE_SIZE as usize - off).min(len - done);
                    match self.pages.get(&page) {
                        Some(Page::Bytes(p)) => out.push_bytes(&p[off..off + n]),
                        Some(Page::Tagged(pieces)) => {
                            tagged_parts(pieces, off, n, |p| out.push_part(p))
                        }
                        None => out.push_zero(n),
                    }
                    done += n;
                }
            }

            /// The `len` bytes at `addr` when they lie in one resident page of
            /// bytes: what [`Paged::read`] would copy out, borrowed instead.
            pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
                let off = (addr % PAGE_SIZE) as usize;
                if off + len > PAGE_SIZE as usize {
                    return None;
                }
                match self.pages.get(&(addr / PAGE_SIZE)) {
                    Some(Page::Bytes(p)) => Some(&p[off..off + len]),
                    _ => None,
                }
            }

            /// Release the pages wholly inside `[addr, addr + len)` and zero the
            /// partial pages at either end, so a replayer that reuses buffer
            /// addresses keeps its memory bounded.
            pub fn free(&mut self, addr: u64, len: u64) {
                // Bytes past 2^64 do not exist; the last one, at 2^64 - 1, does.
                let len = below_top(addr, len);
                if len == 0 {
                    return;
                }
                let end = u128::from(addr) + u128::from(len);
                let first_full = addr.div_ceil(PAGE_SIZE);
                let last_full = (end / u128::from(PAGE_SIZE)) as u64; // exclusive
                if first_full >= last_full {
                    self.zero(addr, len);
                    return;
                }
                if (last_full - first_full) as usize > self.pages.len() {
                    recycle(
                        self.pages
                            .extract_if(|p, _| (first_full..last_full).contains(p))
                            .map(|(_, page)| page),
                    );
                } else {
                    recycle((first_full..last_full).filter_map(|p| self.pages.remove(&p)));
                }
                self.zero(addr, first_full * PAGE_SIZE - addr);
                let tail = (end - u128::from(last_full) * u128::from(PAGE_SIZE)) as u64;
                if tail > 0 {
                    self.zero(last_full * PAGE_SIZE, tail);
                }
            }

            /// Make `[addr, addr + len)` read as zeros (clipped at 2^64).
            fn zero(&mut self, addr: u64, len: u64) {
                // Counted down rather than up to an end address, so a range ending
                // exactly at 2^64 reaches its last byte.
                let mut a = addr;
                let mut left = below_top(addr, len);
                while left > 0 {
                    let page = a / PAGE_SIZE;
                    let off = (a % PAGE_SIZE) as usize;
                    let n = ((PAGE_SIZE as usize - off) as u64).min(left) as usize;
                    if n == PAGE_SIZE as usize {
                        recycle(self.pages.remove(&page).into_iter());
                    } else {
                        match self.pages.get_mut(&page) {
                            Some(Page::Bytes(p)) => p[off..off + n].fill(0),
                            Some(Page::Tagged(pieces)) => cut(pieces, off as u32, n as u32),
                            None => {}
                        }
                    }
                    left -= n as u64;
                    a = a.wrapping_add(n as u64);
                }
            }
        }
    }

    /// One step of the model check.
    #[derive(Debug, Clone)]
    enum Step {
        Bytes(u64, Vec<u8>),
        Piece(u64, u64, u32, u32),
        Pattern(u64, usize, usize, u64, u32),
        Pair(u64, usize, usize, usize, u64),
        Runs(u64, Vec<(u8, u32)>),
        Free(u64, u64),
        Scatter(u64, usize, u64, u32, u64),
        Sg(Sg),
        Read(u64, usize),
    }

    /// A transfer through an SG list of `k` entries of `len` bytes, one
    /// every `stride`, from `addr`, in ascending order as the harness and
    /// the controller walk it (each lookup starting where the last one
    /// ended): its pattern placed entry by entry (a write's buffer), or
    /// the entries freed and Data-In scattered into them (a read), then
    /// gathered back entry by entry.
    #[derive(Debug, Clone)]
    struct Sg {
        addr: u64,
        k: usize,
        len: usize,
        stride: u64,
        lba: u64,
        generation: u32,
        read: bool,
    }

    /// Where the model check's steps land: three windows of a few pages,
    /// so steps overlap, at 0, across 2^32 (where a truncated DMA address
    /// wraps) and at the top of the space (where ranges are clipped).
    const WINDOWS: [(u64, u64); 3] = [
        (0, 5 * PAGE_SIZE),
        ((1 << 32) - 2 * PAGE_SIZE, 4 * PAGE_SIZE),
        (u64::MAX - 3 * PAGE_SIZE + 1, 3 * PAGE_SIZE),
    ];

    fn step() -> impl Strategy<Value = Step> {
        let addr = prop_oneof![
            3 => 0u64..5 * PAGE_SIZE,
            1 => ((1u64 << 32) - 2 * PAGE_SIZE)..(1u64 << 32) + 2 * PAGE_SIZE,
            1 => (u64::MAX - 3 * PAGE_SIZE)..=u64::MAX,
        ];
        prop_oneof![
            (addr.clone(), proptest::collection::vec(any::<u8>(), 0..600))
                .prop_map(|(a, b)| Step::Bytes(a, b)),
            // A piece of one block, or of a run of up to four blocks.
            (addr.clone(), 0u64..4, 0u32..512, 1u32..=512).prop_map(|(a, l, s, n)| {
                let s = s.min(511);
                Step::Piece(a, l, s, n.min(512 - s))
            }),
            (addr.clone(), 0u64..4, 0u32..2048, 1u32..=2048)
                .prop_map(|(a, l, s, n)| Step::Piece(a, l, s, n)),
            // A transfer's pattern from byte `at`, as the harness places
            // one SG entry (two generations, so overwrites differ).
            (addr.clone(), 0usize..1500, 1usize..9000, 0u64..6, 4u32..6)
                .prop_map(|(a, at, n, l, g)| Step::Pattern(a, at, n, l, g)),
            // Two entries of one transfer back to back whose generations
            // differ: the LBAs continue, the run must not.
            (
                addr.clone(),
                0usize..1500,
                1usize..3000,
                1usize..3000,
                0u64..6
            )
                .prop_map(|(a, at, n, m, l)| Step::Pair(a, at, n, m, l)),
            (
                addr.clone(),
                proptest::collection::vec((0u8..4, 1u32..1500), 1..5)
            )
                .prop_map(|(a, r)| Step::Runs(a, r)),
            (addr.clone(), 0u64..9000).prop_map(|(a, n)| Step::Free(a, n)),
            // Many small pieces a stride apart: a page cut into more pieces
            // than it may hold, or fewer.
            (addr.clone(), 1usize..40, 1u64..200, 1u32..60, 0u64..4)
                .prop_map(|(a, k, stride, n, lba)| Step::Scatter(a, k, stride, n, lba)),
            // Entries that abut (stride = len), and with gaps, over more
            // runs than one chunk of the run map holds.
            (
                addr.clone(),
                1usize..48,
                1usize..400,
                0u64..400,
                0u64..6,
                4u32..6,
                any::<bool>()
            )
                .prop_map(|(addr, k, len, gap, lba, generation, read)| {
                    Step::Sg(Sg {
                        addr,
                        k,
                        len,
                        stride: len as u64 + gap,
                        lba,
                        generation,
                        read,
                    })
                }),
            (addr, 0usize..9000).prop_map(|(a, n)| Step::Read(a, n)),
        ]
    }

    /// Where two byte strings first differ (or their lengths, if one is a
    /// prefix of the other), so a failure prints an offset, not kilobytes.
    fn first_diff(a: &[u8], b: &[u8]) -> Option<(usize, usize, usize)> {
        if a == b {
            return None;
        }
        let i = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        Some((i, a.len(), b.len()))
    }

    /// The plain byte model: a map of every byte ever written.
    fn model_write(model: &mut std::collections::BTreeMap<u64, u8>, addr: u64, b: &[u8]) {
        for (i, x) in b.iter().enumerate() {
            let Some(a) = addr.checked_add(i as u64) else {
                return;
            };
            model.insert(a, *x);
        }
    }

    /// Bytes `[at, at + n)` of a transfer's pattern, written at `a`.
    fn model_pattern(
        model: &mut std::collections::BTreeMap<u64, u8>,
        a: u64,
        at: usize,
        n: usize,
        lba: u64,
        g: u32,
    ) {
        let mut all = vec![0u8; (at + n).div_ceil(512) * 512];
        trace::pattern::fill_blocks(0x5eed, g, lba, 512, &mut all);
        model_write(model, a, &all[at..at + n]);
    }

    /// The piece `write_pattern` places for bytes `[at, at + n)` of a
    /// transfer (one piece: `n` stays far below its 1 GiB cut).
    fn pattern_piece(at: usize, n: usize, lba: u64, g: u32) -> TagPiece {
        let first = Tag {
            lba,
            seed: 0x5eed,
            generation: g,
        };
        TagPiece::of_run(first, 512, at as u64, n as u32)
    }

    fn model_read(model: &std::collections::BTreeMap<u64, u8>, addr: u64, n: usize) -> Vec<u8> {
        (0..n as u64)
            .map(|i| {
                addr.checked_add(i)
                    .and_then(|a| model.get(&a).copied())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The parts `read_runs` gives, owned, for comparing two memories.
    fn parts_of(runs: &DataRuns) -> Vec<(u8, Vec<u8>, Option<TagPiece>)> {
        runs.parts()
            .map(|p| match p {
                Part::Bytes(b) => (0, b.to_vec(), None),
                Part::Zero(n) => (1, n.to_le_bytes().to_vec(), None),
                Part::Piece(t) => (2, Vec::new(), Some(t)),
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]
        /// Bytes as a plain byte memory holds them, and the split into
        /// bytes, zeros and pieces exactly as the page model made it.
        #[test]
        fn tagged_memory_reads_back_what_a_byte_memory_would(
            steps in proptest::collection::vec(step(), 1..24)
        ) {
            let mut m = HostMemory::new();
            let mut pg = paged::Paged::default();
            let mut model = std::collections::BTreeMap::new();
            for s in steps {
                match s {
                    Step::Bytes(a, b) => {
                        m.write(a, &b);
                        pg.write(a, &b);
                        model_write(&mut model, a, &b);
                    }
                    Step::Piece(a, lba, start, n) => {
                        let p = TagPiece::of_run(tag(lba), 512, u64::from(start), n);
                        m.write_piece(a, p);
                        pg.write_piece(a, p);
                        model_write(&mut model, a, &bytes_of(p));
                    }
                    Step::Pattern(a, at, n, lba, g) => {
                        m.write_pattern(a, at, n, 0x5eed, g, lba, 512);
                        pg.write_piece(a, pattern_piece(at, n, lba, g));
                        model_pattern(&mut model, a, at, n, lba, g);
                    }
                    Step::Pair(a, at, n, n2, lba) => {
                        m.write_pattern(a, at, n, 0x5eed, 4, lba, 512);
                        pg.write_piece(a, pattern_piece(at, n, lba, 4));
                        model_pattern(&mut model, a, at, n, lba, 4);
                        if let Some(b) = a.checked_add(n as u64) {
                            m.write_pattern(b, at + n, n2, 0x5eed, 5, lba, 512);
                            pg.write_piece(b, pattern_piece(at + n, n2, lba, 5));
                            model_pattern(&mut model, b, at + n, n2, lba, 5);
                        }
                    }
                    Step::Runs(a, spec) => {
                        let mut runs = DataRuns::new();
                        for (i, (kind, n)) in spec.iter().enumerate() {
                            match kind {
                                0 => runs.push_bytes(&vec![i as u8 + 1; *n as usize]),
                                1 => runs.push_zero(*n as usize),
                                2 => {
                                    let w = TagPiece::whole(tag(i as u64), 4096);
                                    runs.push_piece(w.sub(0, (*n).min(4096)));
                                }
                                // A run of 512-byte blocks cut anywhere.
                                _ => runs.push_piece(TagPiece::of_run(
                                    tag(i as u64),
                                    512,
                                    u64::from(*n % 700),
                                    *n,
                                )),
                            }
                        }
                        m.write_runs(a, &runs, 0, runs.len());
                        pg.write_runs(a, &runs, 0, runs.len());
                        model_write(&mut model, a, &runs.to_bytes());
                    }
                    Step::Free(a, n) => {
                        m.free(a, n);
                        pg.free(a, n);
                        let zeros = vec![0u8; n as usize];
                        model_write(&mut model, a, &zeros);
                    }
                    Step::Scatter(a, k, stride, n, lba) => {
                        for i in 0..k as u64 {
                            let Some(at) = a.checked_add(i * stride) else { break };
                            let p = TagPiece::of_run(tag(lba), 512, i * 7, n);
                            m.write_piece(at, p);
                            pg.write_piece(at, p);
                            model_write(&mut model, at, &bytes_of(p));
                        }
                    }
                    Step::Sg(sg) => {
                        let entries: Vec<(u64, usize)> = (0..sg.k as u64)
                            .map_while(|i| Some((sg.addr.checked_add(i * sg.stride)?, sg.len)))
                            .collect();
                        let total = entries.len() * sg.len;
                        let g = sg.generation;
                        if sg.read {
                            // Data-In as a device returns it: whole tags of
                            // the stream, and a zero block every third.
                            let mut data = DataRuns::new();
                            for b in 0..total.div_ceil(512) as u64 {
                                if (sg.lba + b) % 3 == 0 {
                                    data.push_zero(512);
                                } else {
                                    let first = Tag { lba: sg.lba, seed: 0x5eed, generation: g };
                                    data.push_piece(TagPiece::of_run(first, 512, b * 512, 512));
                                }
                            }
                            let bytes = data.to_bytes();
                            for &(a, n) in &entries {
                                m.free(a, n as u64);
                                pg.free(a, n as u64);
                                model_write(&mut model, a, &vec![0u8; n]);
                            }
                            for (i, &(a, n)) in entries.iter().enumerate() {
                                m.write_runs(a, &data, i * n, n);
                                pg.write_runs(a, &data, i * n, n);
                                model_write(&mut model, a, &bytes[i * n..(i + 1) * n]);
                            }
                        } else {
                            for (i, &(a, n)) in entries.iter().enumerate() {
                                m.write_pattern(a, i * n, n, 0x5eed, g, sg.lba, 512);
                                pg.write_piece(a, pattern_piece(i * n, n, sg.lba, g));
                                model_pattern(&mut model, a, i * n, n, sg.lba, g);
                            }
                        }
                        let (mut runs, mut old, mut want) = (DataRuns::new(), DataRuns::new(), Vec::new());
                        for &(a, n) in &entries {
                            m.read_runs(a, n, &mut runs);
                            pg.read_runs(a, n, &mut old);
                            want.extend(model_read(&model, a, n));
                        }
                        prop_assert_eq!(first_diff(&runs.to_bytes(), &want), None);
                        prop_assert_eq!(parts_of(&runs), parts_of(&old));
                    }
                    Step::Read(a, n) => {
                        let want = model_read(&model, a, n);
                        prop_assert_eq!(first_diff(&read_vec(&m, a, n), &want), None);
                        let mut app = Vec::new();
                        m.read_append(a, n, &mut app);
                        prop_assert_eq!(first_diff(&app, &want), None);
                        let mut runs = DataRuns::new();
                        m.read_runs(a, n, &mut runs);
                        prop_assert_eq!(runs.len(), n);
                        prop_assert_eq!(first_diff(&runs.to_bytes(), &want), None);
                        let mut old = DataRuns::new();
                        pg.read_runs(a, n, &mut old);
                        prop_assert_eq!(parts_of(&runs), parts_of(&old));
                        prop_assert_eq!(m.slice(a, n), pg.slice(a, n));
                        if let Some(sl) = m.slice(a, n) {
                            prop_assert_eq!(first_diff(sl, &want), None);
                        }
                    }
                }
            }
            for (base, len) in WINDOWS {
                let len = len as usize;
                let want = model_read(&model, base, len);
                prop_assert_eq!(first_diff(&read_vec(&m, base, len), &want), None);
                let (mut runs, mut old) = (DataRuns::new(), DataRuns::new());
                m.read_runs(base, len, &mut runs);
                pg.read_runs(base, len, &mut old);
                prop_assert_eq!(parts_of(&runs), parts_of(&old));
                for p in 0..len as u64 / PAGE_SIZE {
                    let a = base + p * PAGE_SIZE;
                    prop_assert_eq!(m.slice(a, 1).is_some(), pg.slice(a, 1).is_some());
                }
            }
        }
    }
}
