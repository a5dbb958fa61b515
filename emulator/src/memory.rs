//! Host memory: the sparse 64-bit physical address space an initiator's
//! buffers live in, and the only way data reaches or leaves the emulated HBA.
//!
//! Address bugs (a DMA address truncated to 32 bits, a dropped SG entry) must
//! have real consequences: data read from the wrong page, a buffer that is
//! never filled. So the HBA never sees a byte slice, only `(address, length)`
//! segments it resolves here. Pages are allocated on first write and read as
//! zeros before that, so a 2^40 address costs one page, not a terabyte.
//!
//! A page holds either bytes or pieces of self-describing blocks
//! ([`TagPiece`], see [`crate::runs`]) with zeros between them: a fuzzer's
//! buffers hold nothing but such blocks, so its writes and reads move tags,
//! not kilobytes. Whoever reads or writes bytes gets exactly the bytes the
//! tags generate (a byte write into a tagged page renders the page first),
//! so the byte interface behaves as if every page were bytes.

use crate::content::Tag;
use crate::runs::{DataRuns, Part, TagPiece};
use std::collections::HashMap;

/// Bytes per host page. Matches the 4 KiB page of x86-64 and the granule
/// macOS' IOMMU maps; segment layouts in traces are built from it.
pub const PAGE_SIZE: u64 = 4096;

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

/// Released pages kept per thread for reuse (4 MiB): a fuzzer builds an
/// emulator per execution and frees its read buffers before every read, so
/// the same few dozen pages were allocated and freed over and over.
const POOL_PAGES: usize = 1024;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Bytes>> = const { std::cell::RefCell::new(Vec::new()) };
    static PIECES: std::cell::RefCell<Vec<Pieces>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keep released pages for [`new_page`] and [`new_pieces`] (their content
/// is overwritten there). Consumes `pages` to the end whatever the pools
/// hold: a caller that removes pages lazily (`free`) relies on it.
fn recycle(pages: impl Iterator<Item = Page>) {
    // `try_with`: during thread teardown the pools may be gone.
    let _ = POOL.try_with(|pool| {
        PIECES.try_with(|lists| {
            let mut pool = pool.borrow_mut();
            let mut lists = lists.borrow_mut();
            for p in pages {
                match p {
                    Page::Bytes(b) if pool.len() < POOL_PAGES => pool.push(b),
                    Page::Tagged(mut v) if lists.len() < POOL_PAGES => {
                        v.clear();
                        lists.push(v);
                    }
                    _ => {}
                }
            }
        })
    });
}

/// An empty piece list for a new tagged page: a pooled one, or a new one
/// with room for the eight blocks of 512 bytes a page holds.
fn new_pieces() -> Pieces {
    PIECES
        .try_with(|l| l.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(8))
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
#[derive(Default)]
pub struct HostMemory {
    pages: HashMap<u64, Page, trace::hash::BuildFastHasher>,
}

impl std::fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemory")
            .field("resident_pages", &self.pages.len())
            .finish()
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        recycle(self.pages.drain().map(|(_, p)| p));
    }
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
fn tagged_parts(pieces: &[(u32, TagPiece)], off: usize, n: usize, mut f: impl FnMut(Part<'_>)) {
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

impl HostMemory {
    /// An empty address space: every byte reads as zero.
    pub fn new() -> Self {
        Self::default()
    }

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
    /// past 2^64 are dropped as in [`HostMemory::write`]).
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
                            Some((o, p)) if *o + p.len == off && p.joined(&sub).is_some() => {
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
                            let old =
                                std::mem::replace(p.get_mut(), Page::Tagged(vec![(off, sub)]));
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

    /// Place bytes `[at, at + len)` of the Data-Out that
    /// [`trace::pattern::fill_blocks`] would generate for `(seed,
    /// generation, first_lba, block_len)` at `addr`, as tags: one run piece
    /// per page the range covers, however many blocks that is, so a transfer
    /// spread over SG entries is placed one entry at a time. Bytes past 2^64
    /// are dropped.
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
        // range past that goes in several); `write_piece` cuts it at pages.
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
                Some(Page::Tagged(pieces)) => tagged_parts(pieces, off, n, |p| out.push_part(p)),
                None => out.push_zero(n),
            }
            done += n;
        }
    }

    /// Fill `buf` from memory at `addr`; unallocated bytes read as zero.
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        let mut done = 0usize;
        while done < buf.len() {
            let Some(a) = addr.checked_add(done as u64) else {
                buf[done..].fill(0);
                return;
            };
            let page = a / PAGE_SIZE;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match self.pages.get(&page) {
                Some(Page::Bytes(p)) => dst.copy_from_slice(&p[off..off + n]),
                Some(Page::Tagged(pieces)) => render_tagged(pieces, off, dst),
                None => dst.fill(0),
            }
            done += n;
        }
    }

    /// Append `len` bytes from memory at `addr` to `out`, as
    /// [`HostMemory::read`] would fill them, without zeroing them first.
    pub fn read_append(&self, addr: u64, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        let mut done = 0usize;
        while done < len {
            let Some(a) = addr.checked_add(done as u64) else {
                out.resize(out.len() + (len - done), 0);
                return;
            };
            let page = a / PAGE_SIZE;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(len - done);
            match self.pages.get(&page) {
                Some(Page::Bytes(p)) => out.extend_from_slice(&p[off..off + n]),
                Some(Page::Tagged(pieces)) => {
                    let at = out.len();
                    out.resize(at + n, 0);
                    render_tagged(pieces, off, &mut out[at..]);
                }
                None => out.resize(out.len() + n, 0),
            }
            done += n;
        }
    }

    /// The `len` bytes at `addr` when they lie in one resident page of
    /// bytes: what [`HostMemory::read`] would copy out, borrowed instead.
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

    /// Pages currently backed by real memory.
    pub fn resident_pages(&self) -> usize {
        self.pages.len()
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

/// Render bytes `[off, off + dst.len())` of a tagged page into `dst`.
fn render_tagged(pieces: &[(u32, TagPiece)], off: usize, dst: &mut [u8]) {
    let mut at = 0usize;
    tagged_parts(pieces, off, dst.len(), |part| {
        let n = part.len();
        match part {
            Part::Piece(p) => p.render(&mut dst[at..at + n]),
            _ => dst[at..at + n].fill(0),
        }
        at += n;
    });
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
    fn consecutive_blocks_of_one_stream_are_one_piece_per_page() {
        let mut m = HostMemory::new();
        // 20 blocks of 512 bytes from LBA 100, 300 bytes into a page: the
        // pages hold one piece each, and reading them back gives one run.
        let addr = 5 * PAGE_SIZE + 300;
        m.write_pattern(addr, 0, 20 * 512, 0x5eed, 4, 100, 512);
        assert_eq!(m.resident_pages(), 3);
        for page in 5..8 {
            match m.pages.get(&page) {
                Some(Page::Tagged(p)) => assert_eq!(p.len(), 1, "page {page}"),
                _ => panic!("page {page} not tagged"),
            }
        }
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

    /// One step of the model check.
    #[derive(Debug, Clone)]
    enum Step {
        Bytes(u64, Vec<u8>),
        Piece(u64, u64, u32, u32),
        Pattern(u64, usize, usize, u64, u32),
        Pair(u64, usize, usize, usize, u64),
        Runs(u64, Vec<(u8, u32)>),
        Free(u64, u64),
        Read(u64, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Addresses in a small window (so steps overlap), some near 2^64.
        let addr = prop_oneof![
            4 => 0u64..5 * PAGE_SIZE,
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

    fn model_read(model: &std::collections::BTreeMap<u64, u8>, addr: u64, n: usize) -> Vec<u8> {
        (0..n as u64)
            .map(|i| {
                addr.checked_add(i)
                    .and_then(|a| model.get(&a).copied())
                    .unwrap_or(0)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn tagged_memory_reads_back_what_a_byte_memory_would(
            steps in proptest::collection::vec(step(), 1..24)
        ) {
            let mut m = HostMemory::new();
            let mut model = std::collections::BTreeMap::new();
            for s in steps {
                match s {
                    Step::Bytes(a, b) => {
                        m.write(a, &b);
                        model_write(&mut model, a, &b);
                    }
                    Step::Piece(a, lba, start, n) => {
                        let p = TagPiece::of_run(tag(lba), 512, u64::from(start), n);
                        m.write_piece(a, p);
                        model_write(&mut model, a, &bytes_of(p));
                    }
                    Step::Pattern(a, at, n, lba, g) => {
                        m.write_pattern(a, at, n, 0x5eed, g, lba, 512);
                        model_pattern(&mut model, a, at, n, lba, g);
                    }
                    Step::Pair(a, at, n, n2, lba) => {
                        m.write_pattern(a, at, n, 0x5eed, 4, lba, 512);
                        model_pattern(&mut model, a, at, n, lba, 4);
                        if let Some(b) = a.checked_add(n as u64) {
                            m.write_pattern(b, at + n, n2, 0x5eed, 5, lba, 512);
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
                        model_write(&mut model, a, &runs.to_bytes());
                    }
                    Step::Free(a, n) => {
                        m.free(a, n);
                        let zeros = vec![0u8; n as usize];
                        model_write(&mut model, a, &zeros);
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
                        if let Some(sl) = m.slice(a, n) {
                            prop_assert_eq!(first_diff(sl, &want), None);
                        }
                    }
                }
            }
            let want = model_read(&model, 0, 5 * PAGE_SIZE as usize);
            prop_assert_eq!(first_diff(&read_vec(&m, 0, 5 * PAGE_SIZE as usize), &want), None);
        }
    }
}
