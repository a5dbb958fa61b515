//! A campaign's queue on disk as packs: one append-only file per client
//! and session, one record per corpus entry, instead of one file per entry.
//!
//! A campaign keeps an entry every ten executions or so, thousands a
//! minute. As a file each, every entry cost an inode, a directory entry and
//! a rename (LibAFL's `OnDiskCorpus` writes a temporary file and renames
//! it): on ext4 that was a tenth of a one-core campaign's time, and an
//! overnight campaign left hundreds of thousands of files in one
//! directory. A pack takes one `write` per entry.
//!
//! A pack is a valid multi-frame zstd stream. Each record is a zstd
//! *skippable frame* carrying the length and CRC32C of the frame after it,
//! then the entry: a zstd frame of the program's compact JSON (what
//! [`ScsiProgram::to_queue_bytes`] makes). So `zstdcat PACK | jq -c .`
//! prints every entry, and a reader finds a record torn by a kill
//! mid-append by its length or CRC and stops there, keeping every entry
//! before it. A pack is never appended to by a later session: a resumed
//! campaign starts a new one, so a torn tail is never followed by good
//! records.

use crate::program::ScsiProgram;
use libafl::corpus::{
    Corpus, CorpusId, EnableDisableCorpus, HasTestcase, InMemoryCorpus, Testcase,
};
use libafl::Error;
use serde::{Deserialize, Serialize};
use std::cell::{Ref, RefCell, RefMut};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file extension of a pack.
pub const PACK_EXT: &str = "pack";

/// The zstd skippable-frame magic our record headers use (RFC 8878 3.1.2:
/// 0x184D2A50 to 0x184D2A5F, skipped by every zstd decoder).
const HEADER_MAGIC: u32 = 0x184D_2A5C;
/// Bytes of user data in a record header: the entry's length and CRC32C.
const HEADER_DATA: u32 = 8;
/// Bytes of a record header: magic, data size, data.
const HEADER: u64 = 8 + HEADER_DATA as u64;
/// Largest entry a reader accepts: a damaged length must not ask for all
/// memory (the largest real entries are a few hundred kilobytes).
const MAX_ENTRY: u32 = 64 << 20;

/// Why a pack could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A pack or its directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The pack or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record is torn (a campaign killed mid-append) or overwritten.
    #[error("{path}: record at offset {offset}: {what}")]
    Damaged {
        /// The pack.
        path: PathBuf,
        /// Where the record's header starts.
        offset: u64,
        /// What is wrong with it.
        what: String,
    },
    /// An entry does not fit a record (over 4 GiB).
    #[error("{path}: an entry of {len} bytes does not fit a record")]
    TooLarge {
        /// The pack.
        path: PathBuf,
        /// The entry's length.
        len: usize,
    },
}

impl From<QueueError> for Error {
    fn from(e: QueueError) -> Self {
        Error::illegal_state(e.to_string())
    }
}

/// Where one entry lies in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The entry's first byte (after its record header).
    pub offset: u64,
    /// Its length.
    pub len: u32,
    /// CRC32C of its bytes.
    pub crc: u32,
}

/// Where a program is stored already: the index of the pack (as
/// [`PackedCorpus::adopt_pack`] numbers them) and its record.
pub type StoredAt = (usize, Slot);

/// A pack open for appending: the one this session writes.
#[derive(Debug)]
pub struct Pack {
    path: PathBuf,
    file: File,
    end: u64,
}

impl Pack {
    /// A new, empty pack in `dir` (made if missing), named after the time
    /// and process, so no other session's pack is ever appended to.
    pub fn create(dir: &Path) -> Result<Pack, QueueError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| QueueError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let pid = std::process::id();
        for n in 0u32.. {
            let path = dir.join(format!("{ms}-{pid}-{n}.{PACK_EXT}"));
            match OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok(Pack { path, file, end: 0 }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e)),
            }
        }
        unreachable!("some name is free")
    }

    /// The pack's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry as one record, in one `write`, so a kill leaves at
    /// most this record torn.
    pub fn append(&mut self, entry: &[u8]) -> Result<Slot, QueueError> {
        let len = u32::try_from(entry.len()).map_err(|_| QueueError::TooLarge {
            path: self.path.clone(),
            len: entry.len(),
        })?;
        let crc = crc32c::crc32c(entry);
        let mut record = Vec::with_capacity(HEADER as usize + entry.len());
        for word in [HEADER_MAGIC, HEADER_DATA, len, crc] {
            record.extend_from_slice(&word.to_le_bytes());
        }
        record.extend_from_slice(entry);
        self.file
            .write_all(&record)
            .map_err(|source| QueueError::Io {
                path: self.path.clone(),
                source,
            })?;
        let slot = Slot {
            offset: self.end + HEADER,
            len,
            crc,
        };
        self.end += record.len() as u64;
        Ok(slot)
    }
}

/// Read the entry at `slot` of the pack open as `file` at `path`,
/// checking its CRC.
fn read_slot(file: &File, path: &Path, slot: Slot) -> Result<Vec<u8>, QueueError> {
    let mut buf = vec![0u8; slot.len as usize];
    file.read_exact_at(&mut buf, slot.offset)
        .map_err(|source| QueueError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if crc32c::crc32c(&buf) != slot.crc {
        return Err(QueueError::Damaged {
            path: path.to_path_buf(),
            offset: slot.offset - HEADER,
            what: "CRC32C mismatch".into(),
        });
    }
    Ok(buf)
}

/// What reading a pack gave.
#[derive(Debug, Default)]
pub struct PackRead {
    /// Every whole entry, in the order written.
    pub entries: Vec<Vec<u8>>,
    /// Where each of them lies, in the same order.
    pub slots: Vec<Slot>,
    /// The damage that stopped the reading, if any (a record torn by a
    /// kill is the expected case); the entries before it are all above.
    pub damage: Option<QueueError>,
}

/// Every entry of the pack at `path`, up to the first damaged record.
pub fn read_pack(path: &Path) -> Result<PackRead, QueueError> {
    let bytes = std::fs::read(path).map_err(|source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = PackRead::default();
    let mut at = 0usize;
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    while at < bytes.len() {
        let damaged = |what: &str| QueueError::Damaged {
            path: path.to_path_buf(),
            offset: at as u64,
            what: what.to_string(),
        };
        if bytes.len() - at < HEADER as usize {
            out.damage = Some(damaged("torn header (the campaign was killed mid-write?)"));
            break;
        }
        if word(at) != HEADER_MAGIC || word(at + 4) != HEADER_DATA {
            out.damage = Some(damaged("not a Scuzz queue record header"));
            break;
        }
        let (len, crc) = (word(at + 8), word(at + 12));
        if len > MAX_ENTRY {
            out.damage = Some(damaged(&format!("entry length {len} is implausible")));
            break;
        }
        let start = at + HEADER as usize;
        let Some(entry) = bytes.get(start..start + len as usize) else {
            out.damage = Some(damaged("torn entry (the campaign was killed mid-write?)"));
            break;
        };
        if crc32c::crc32c(entry) != crc {
            out.damage = Some(damaged("CRC32C mismatch"));
            break;
        }
        out.entries.push(entry.to_vec());
        out.slots.push(Slot {
            offset: start as u64,
            len,
            crc,
        });
        at = start + len as usize;
    }
    Ok(out)
}

/// Is `path` a pack (by its extension)?
pub fn is_pack(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == PACK_EXT)
}

/// Entries whose programs a client keeps in memory; the rest are read
/// back from their pack when the scheduler picks them.
pub const CACHED_ENTRIES: usize = 4096;

/// LibAFL's corpus of one client, kept in packs ([`Pack`]): entries in
/// memory as LibAFL's [`InMemoryCorpus`] holds them, their programs
/// appended to this session's pack as they are added and dropped from
/// memory first in, first out beyond [`CACHED_ENTRIES`], then read back by
/// their [`Slot`] when picked (what LibAFL's `CachedOnDiskCorpus` does with
/// a file per entry).
#[derive(Debug, Serialize, Deserialize)]
pub struct PackedCorpus {
    inner: InMemoryCorpus<ScsiProgram>,
    dir: PathBuf,
    /// Every pack this corpus wrote or took entries over from, by index.
    packs: Vec<PathBuf>,
    /// Where each entry's program lies: (index into `packs`, slot).
    slots: HashMap<CorpusId, (usize, Slot)>,
    /// Entries whose program is in memory, oldest first.
    cached: RefCell<VecDeque<CorpusId>>,
    cache_max: usize,
    /// The pack being appended to and its index in `packs` (made at the
    /// first add, and anew after a failed append or a restart from a saved
    /// state).
    #[serde(skip)]
    writer: Option<(usize, Pack)>,
    /// Packs open for reading, by index.
    #[serde(skip)]
    readers: RefCell<HashMap<usize, File>>,
    /// Where an earlier session stored the program the next add is of
    /// (see [`PackedCorpus::expect_stored`]).
    #[serde(skip)]
    expected: Option<StoredAt>,
}

impl PackedCorpus {
    /// An empty corpus writing its packs into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> PackedCorpus {
        PackedCorpus::with_cache(dir, CACHED_ENTRIES)
    }

    /// [`PackedCorpus::new`] keeping at most `cache_max` programs in memory
    /// (at least one).
    pub fn with_cache(dir: impl Into<PathBuf>, cache_max: usize) -> PackedCorpus {
        PackedCorpus {
            inner: InMemoryCorpus::new(),
            dir: dir.into(),
            packs: Vec::new(),
            slots: HashMap::new(),
            cached: RefCell::new(VecDeque::new()),
            cache_max: cache_max.max(1),
            writer: None,
            readers: RefCell::new(HashMap::new()),
            expected: None,
        }
    }

    /// The packs its entries lie in: those it wrote, and those of earlier
    /// sessions it took entries over from.
    pub fn packs(&self) -> &[PathBuf] {
        &self.packs
    }

    /// Take over the pack at `path`, which an earlier session of the
    /// campaign wrote, for reading; returns its index for
    /// [`PackedCorpus::expect_stored`].
    pub fn adopt_pack(&mut self, path: PathBuf) -> usize {
        self.packs.push(path);
        self.packs.len() - 1
    }

    /// The next entry added (if any, and only it) is the program stored
    /// at `slot` of adopted pack `index`: it points there instead of being
    /// written again. A resumed campaign re-runs its queue and keeps what
    /// it keeps again; before, every kept entry was appended anew, so each
    /// resume wrote the whole queue out once more per client, and the next
    /// resume read every copy. `None` ends the expectation.
    pub fn expect_stored(&mut self, at: Option<StoredAt>) {
        self.expected = at;
    }

    /// Append `tc`'s program to the pack and remember where it went.
    fn save(&mut self, id: CorpusId) -> Result<(), Error> {
        if let Some(at) = self.expected.take() {
            self.slots.insert(id, at);
            self.cache(id);
            return Ok(());
        }
        let bytes = {
            let tc = self.inner.get_from_all(id)?.borrow();
            let Some(p) = tc.input() else {
                return Err(Error::illegal_argument(
                    "a corpus entry was added without its program",
                ));
            };
            p.to_queue_bytes().map_err(Error::serialize)?
        };
        if self.writer.is_none() {
            let pack = Pack::create(&self.dir)?;
            self.packs.push(pack.path().to_path_buf());
            self.writer = Some((self.packs.len() - 1, pack));
        }
        let (index, writer) = self.writer.as_mut().expect("made above");
        let index = *index;
        match writer.append(&bytes) {
            Ok(slot) => {
                self.slots.insert(id, (index, slot));
                self.cache(id);
                Ok(())
            }
            Err(e) => {
                // The pack may end in a torn record now: later records go
                // to a new pack, so readers of this one lose only this.
                self.writer = None;
                Err(e.into())
            }
        }
    }

    /// `id`'s program is in memory now: queue it for eviction, dropping
    /// the oldest programs beyond the cache (skipping any borrowed now,
    /// such as the entry being loaded). `id` is not queued already: a new
    /// entry never was, a loaded one was evicted (which unqueues it), and
    /// [`Corpus::replace`] unqueues the entry it replaces.
    fn cache(&self, id: CorpusId) {
        let mut cached = self.cached.borrow_mut();
        let mut busy = 0;
        while cached.len() >= self.cache_max && busy < cached.len() {
            let Some(old) = cached.pop_front() else { break };
            match self.inner.get_from_all(old).map(|c| c.try_borrow_mut()) {
                Ok(Ok(mut tc)) => *tc.input_mut() = None,
                Ok(Err(_)) => {
                    cached.push_back(old);
                    busy += 1;
                }
                Err(_) => {}
            }
        }
        cached.push_back(id);
    }

    /// The program of the entry at `slot` of pack `index`.
    fn read(&self, index: usize, slot: Slot) -> Result<ScsiProgram, Error> {
        let path = self.packs.get(index).ok_or_else(|| {
            Error::illegal_state(format!("no pack {index} in {}", self.dir.display()))
        })?;
        let mut readers = self.readers.borrow_mut();
        let file = match readers.entry(index) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(File::open(path).map_err(|source| QueueError::Io {
                    path: path.clone(),
                    source,
                })?)
            }
        };
        let bytes = read_slot(file, path, slot)?;
        ScsiProgram::from_saved(&bytes).map_err(|e| {
            Error::serialize(format!(
                "{}: entry at offset {}: {e}",
                path.display(),
                slot.offset
            ))
        })
    }
}

impl Corpus<ScsiProgram> for PackedCorpus {
    fn count(&self) -> usize {
        self.inner.count()
    }

    fn count_disabled(&self) -> usize {
        self.inner.count_disabled()
    }

    fn count_all(&self) -> usize {
        self.inner.count_all()
    }

    fn add(&mut self, testcase: Testcase<ScsiProgram>) -> Result<CorpusId, Error> {
        let id = self.inner.add(testcase)?;
        self.save(id)?;
        Ok(id)
    }

    fn add_disabled(&mut self, testcase: Testcase<ScsiProgram>) -> Result<CorpusId, Error> {
        let id = self.inner.add_disabled(testcase)?;
        self.save(id)?;
        Ok(id)
    }

    fn replace(
        &mut self,
        id: CorpusId,
        testcase: Testcase<ScsiProgram>,
    ) -> Result<Testcase<ScsiProgram>, Error> {
        let old = self.inner.replace(id, testcase)?;
        self.cached.borrow_mut().retain(|c| *c != id);
        self.save(id)?;
        Ok(old)
    }

    fn remove(&mut self, id: CorpusId) -> Result<Testcase<ScsiProgram>, Error> {
        let tc = self.inner.remove(id)?;
        self.slots.remove(&id);
        self.cached.borrow_mut().retain(|c| *c != id);
        Ok(tc)
    }

    fn get(&self, id: CorpusId) -> Result<&RefCell<Testcase<ScsiProgram>>, Error> {
        self.inner.get(id)
    }

    fn get_from_all(&self, id: CorpusId) -> Result<&RefCell<Testcase<ScsiProgram>>, Error> {
        self.inner.get_from_all(id)
    }

    fn current(&self) -> &Option<CorpusId> {
        self.inner.current()
    }

    fn current_mut(&mut self) -> &mut Option<CorpusId> {
        self.inner.current_mut()
    }

    fn next(&self, id: CorpusId) -> Option<CorpusId> {
        self.inner.next(id)
    }

    fn peek_free_id(&self) -> CorpusId {
        self.inner.peek_free_id()
    }

    fn prev(&self, id: CorpusId) -> Option<CorpusId> {
        self.inner.prev(id)
    }

    fn first(&self) -> Option<CorpusId> {
        self.inner.first()
    }

    fn last(&self) -> Option<CorpusId> {
        self.inner.last()
    }

    fn nth(&self, nth: usize) -> CorpusId {
        // The trait's default walks the ids one by one.
        self.inner.nth(nth)
    }

    fn nth_from_all(&self, nth: usize) -> CorpusId {
        self.inner.nth_from_all(nth)
    }

    fn load_input_into(&self, testcase: &mut Testcase<ScsiProgram>) -> Result<(), Error> {
        if testcase.input().is_some() {
            return Ok(());
        }
        let id = testcase
            .corpus_id()
            .ok_or_else(|| Error::illegal_argument("a testcase outside the corpus"))?;
        let (index, slot) = *self
            .slots
            .get(&id)
            .ok_or_else(|| Error::key_not_found(format!("no pack slot for entry {id}")))?;
        testcase.set_input(self.read(index, slot)?);
        self.cache(id);
        Ok(())
    }

    fn store_input_from(&self, _testcase: &Testcase<ScsiProgram>) -> Result<(), Error> {
        // Every program is appended to the pack when its entry is added or
        // replaced, and entries' programs never change in place.
        Ok(())
    }
}

impl HasTestcase<ScsiProgram> for PackedCorpus {
    fn testcase(&self, id: CorpusId) -> Result<Ref<'_, Testcase<ScsiProgram>>, Error> {
        Ok(self.get(id)?.borrow())
    }

    fn testcase_mut(&self, id: CorpusId) -> Result<RefMut<'_, Testcase<ScsiProgram>>, Error> {
        Ok(self.get(id)?.borrow_mut())
    }
}

impl EnableDisableCorpus for PackedCorpus {
    fn disable(&mut self, id: CorpusId) -> Result<(), Error> {
        self.inner.disable(id)
    }

    fn enable(&mut self, id: CorpusId) -> Result<(), Error> {
        self.inner.enable(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Op, Transfer};
    use trace::{Lba, Segment};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("scuzz-pack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn program(lba: u64) -> ScsiProgram {
        ScsiProgram::new(vec![Op::Write(Transfer {
            lba: Lba(lba),
            blocks: 8,
            fua: false,
            sg: vec![Segment::new(0x10_0000, 8 * 512)],
            extra: 0,
        })])
    }

    #[test]
    fn a_pack_reads_back_every_entry_and_stops_at_a_torn_tail() {
        let d = dir("torn");
        let mut pack = Pack::create(&d).unwrap();
        let entries: Vec<Vec<u8>> = (0..5)
            .map(|i| program(i).to_queue_bytes().unwrap())
            .collect();
        for e in &entries {
            pack.append(e).unwrap();
        }
        let path = pack.path().to_path_buf();
        drop(pack);
        let read = read_pack(&path).unwrap();
        assert_eq!(read.entries, entries);
        assert!(read.damage.is_none());

        // A kill mid-append: the file ends inside the last record.
        let full = std::fs::read(&path).unwrap();
        for cut in [
            full.len() - 1,
            full.len() - entries[4].len(),
            full.len() - entries[4].len() - 9,
        ] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let read = read_pack(&path).unwrap();
            assert_eq!(read.entries, entries[..4], "cut at {cut}");
            let damage = read
                .damage
                .expect("the torn record is reported")
                .to_string();
            assert!(damage.contains("torn"), "{damage}");
            let offset = full.len() - entries[4].len() - HEADER as usize;
            assert!(damage.contains(&format!("offset {offset}")), "{damage}");
        }

        // A flipped byte in the second entry: the first is kept.
        let mut bad = full.clone();
        let second = HEADER as usize + entries[0].len() + HEADER as usize + 3;
        bad[second] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let read = read_pack(&path).unwrap();
        assert_eq!(read.entries, entries[..1]);
        assert!(read.damage.unwrap().to_string().contains("CRC32C"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_pack_is_a_zstd_stream_of_the_entries_json() {
        let d = dir("zstd");
        let mut pack = Pack::create(&d).unwrap();
        for i in 0..3 {
            pack.append(&program(i).to_queue_bytes().unwrap()).unwrap();
        }
        let bytes = std::fs::read(pack.path()).unwrap();
        // What `zstdcat PACK` prints: the entries' JSON, one after another
        // (the record headers are skippable frames).
        let json = zstd::stream::decode_all(&bytes[..]).unwrap();
        let programs: Vec<ScsiProgram> = serde_json::Deserializer::from_slice(&json)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(programs, (0..3).map(program).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn evicted_programs_are_read_back_from_the_pack() {
        let d = dir("corpus");
        let mut c = PackedCorpus::with_cache(&d, 2);
        let ids: Vec<CorpusId> = (0..5)
            .map(|i| c.add(Testcase::new(program(i))).unwrap())
            .collect();
        let in_memory = ids
            .iter()
            .filter(|id| c.get(**id).unwrap().borrow().input().is_some())
            .count();
        assert_eq!(in_memory, 2, "only the cache's worth stays in memory");
        for (i, id) in ids.iter().enumerate() {
            let mut tc = c.get(*id).unwrap().borrow_mut();
            c.load_input_into(&mut tc).unwrap();
            assert_eq!(tc.input().as_ref(), Some(&program(i as u64)));
        }
        assert_eq!(c.packs().len(), 1);
        let read = read_pack(&c.packs()[0]).unwrap();
        assert_eq!(read.entries.len(), 5);
        let _ = std::fs::remove_dir_all(&d);
    }
    #[test]
    fn a_resumed_corpus_points_at_old_records_instead_of_writing_them_again() {
        let d = dir("adopt");
        // An earlier session's pack of programs 0..4.
        let old = {
            let mut c = PackedCorpus::new(&d);
            for i in 0..4 {
                c.add(Testcase::new(program(i))).unwrap();
            }
            c.packs()[0].clone()
        };
        let old_bytes = std::fs::read(&old).unwrap();
        let slots = read_pack(&old).unwrap().slots;

        // The resumed session keeps 1 and 3 again, and finds 9.
        let mut c = PackedCorpus::with_cache(&d, 1);
        let pack = c.adopt_pack(old.clone());
        let mut ids = Vec::new();
        for (i, stored) in [(1, Some(slots[1])), (3, Some(slots[3])), (9, None)] {
            c.expect_stored(stored.map(|s| (pack, s)));
            ids.push(c.add(Testcase::new(program(i))).unwrap());
        }
        // Only 9 went to a new pack; the old one is untouched.
        assert_eq!(std::fs::read(&old).unwrap(), old_bytes);
        let new: Vec<PathBuf> = c.packs().iter().filter(|p| **p != old).cloned().collect();
        assert_eq!(new.len(), 1);
        let written = read_pack(&new[0]).unwrap().entries;
        assert_eq!(written, vec![program(9).to_queue_bytes().unwrap()]);
        // Every entry reads back (from the old pack or the new one) once
        // evicted from a cache of one.
        for (id, i) in ids.iter().zip([1, 3, 9]) {
            let mut tc = c.get(*id).unwrap().borrow_mut();
            c.load_input_into(&mut tc).unwrap();
            assert_eq!(tc.input().as_ref(), Some(&program(i)));
        }
        // An expectation covers one add only.
        c.expect_stored(Some((pack, slots[0])));
        c.add(Testcase::new(program(0))).unwrap();
        c.add(Testcase::new(program(2))).unwrap();
        assert_eq!(read_pack(&new[0]).unwrap().entries.len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}
