//! Host memory: the sparse 64-bit physical address space an initiator's
//! buffers live in, and the only way data reaches or leaves the emulated HBA.
//!
//! Address bugs (a DMA address truncated to 32 bits, a dropped SG entry) must
//! have real consequences: data read from the wrong page, a buffer that is
//! never filled. So the HBA never sees a byte slice, only `(address, length)`
//! segments it resolves here. Pages are allocated on first write and read as
//! zeros before that, so a 2^40 address costs one page, not a terabyte.

use std::collections::HashMap;

/// Bytes per host page. Matches the 4 KiB page of x86-64 and the granule
/// macOS' IOMMU maps; segment layouts in traces are built from it.
pub const PAGE_SIZE: u64 = 4096;

type Page = Box<[u8; PAGE_SIZE as usize]>;

/// Released pages kept per thread for reuse (4 MiB): a fuzzer builds an
/// emulator per execution and frees its read buffers before every read, so
/// the same few dozen pages were allocated and freed over and over.
const POOL_PAGES: usize = 1024;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Page>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keep released pages for [`new_page`] (their content is overwritten there).
fn recycle(pages: impl Iterator<Item = Page>) {
    // `try_with`: during thread teardown the pool may be gone.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let room = POOL_PAGES.saturating_sub(pool.len());
        pool.extend(pages.take(room));
    });
}

/// A page holding `src` at `off`, zeros elsewhere: a pooled page, or a
/// new one (built from `src` when it covers the page, so not zeroed first).
fn new_page(off: usize, src: &[u8]) -> Page {
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
    let mut p: Page = vec![0u8; PAGE_SIZE as usize]
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
                std::collections::hash_map::Entry::Occupied(mut p) => {
                    p.get_mut()[off..off + n].copy_from_slice(src);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(new_page(off, src));
                }
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
            match self.pages.get(&page) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
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
                Some(p) => out.extend_from_slice(&p[off..off + n]),
                None => out.resize(out.len() + n, 0),
            }
            done += n;
        }
    }

    /// The `len` bytes at `addr` when they lie in one resident page: what
    /// [`HostMemory::read`] would copy out, borrowed instead.
    pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let off = (addr % PAGE_SIZE) as usize;
        if off + len > PAGE_SIZE as usize {
            return None;
        }
        self.pages
            .get(&(addr / PAGE_SIZE))
            .map(|p| &p[off..off + len])
    }

    /// Release the pages wholly inside `[addr, addr + len)` and zero the
    /// partial pages at either end, so a replayer that reuses buffer
    /// addresses keeps its memory bounded.
    pub fn free(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        if end <= addr {
            return;
        }
        let first_full = addr.div_ceil(PAGE_SIZE);
        let last_full = end / PAGE_SIZE; // exclusive
        if first_full >= last_full {
            self.zero(addr, end - addr);
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
        self.zero(last_full * PAGE_SIZE, end - last_full * PAGE_SIZE);
    }

    fn zero(&mut self, addr: u64, len: u64) {
        let mut a = addr;
        let end = addr.saturating_add(len);
        while a < end {
            let page = a / PAGE_SIZE;
            let off = (a % PAGE_SIZE) as usize;
            let n = ((PAGE_SIZE as usize - off) as u64).min(end - a) as usize;
            if let Some(p) = self.pages.get_mut(&page) {
                p[off..off + n].fill(0);
            }
            a += n as u64;
        }
    }

    /// Pages currently backed by real memory.
    pub fn resident_pages(&self) -> usize {
        self.pages.len()
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
    fn writes_past_the_top_of_the_address_space_are_dropped_not_wrapped() {
        let mut m = HostMemory::new();
        m.write(u64::MAX - 1, &[9, 9, 9, 9]);
        let mut b = [0u8; 4];
        m.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
