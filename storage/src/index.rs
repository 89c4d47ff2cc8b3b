//! Sparse per-segment indexes, memory-mapped like Kafka's:
//!
//! - the offset index maps a batch's last offset (relative to the segment's base offset,
//!   u32) to the byte position of the batch (u32): 8-byte entries;
//! - the time index maps the largest timestamp seen so far (i64) to the last offset of the
//!   batch that carried it (relative, u32): 12-byte entries, timestamps strictly increasing.
//!
//! An entry is added once more than `index.interval.bytes` were appended since the last one.
//! The active segment's index files are preallocated to `segment.index.bytes` and mapped
//! read-write; they are trimmed to their entries and remapped read-only when the segment is
//! rolled or the log closed. The map lives inside the index, and every access goes through
//! the segment's lock, so a file is never shrunk under a live mapping of it (no SIGBUS).

use std::fs::{File, OpenOptions};
use std::path::Path;

use memmap2::{Mmap, MmapMut};

use crate::error::StorageError;

pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

enum Map {
    Empty,
    Ro(Mmap),
    Rw(MmapMut),
}

impl Map {
    fn bytes(&self) -> &[u8] {
        match self {
            Map::Empty => &[],
            Map::Ro(m) => m,
            Map::Rw(m) => m,
        }
    }
}

/// One index file: a mapping and the number of valid entries in it.
struct IndexFile {
    file: File,
    map: Map,
    entries: usize,
    entry_size: usize,
}

impl IndexFile {
    /// Opens read-only; the file's length says how many entries it holds.
    fn open_readonly(path: &Path, entry_size: usize) -> Result<IndexFile, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len() as usize;
        let mut idx = IndexFile {
            file,
            map: Map::Empty,
            entries: len / entry_size,
            entry_size,
        };
        idx.remap_readonly()?;
        Ok(idx)
    }

    fn remap_readonly(&mut self) -> Result<(), StorageError> {
        self.map = Map::Empty;
        let len = self.file.metadata()?.len() as usize;
        self.entries = self.entries.min(len / self.entry_size);
        if len > 0 {
            // SAFETY: the mapping is private to this struct, which is only reached through the
            // segment lock; the file is only shrunk by `trim`, after the mapping is dropped.
            let map = unsafe { Mmap::map(&self.file)? };
            no_readahead(&map);
            self.map = Map::Ro(map);
        }
        Ok(())
    }

    /// Preallocates the file to `max_bytes` and maps it read-write; keeps `entries`.
    fn make_writable(&mut self, max_bytes: u64) -> Result<(), StorageError> {
        if matches!(self.map, Map::Rw(_)) {
            return Ok(());
        }
        self.map = Map::Empty;
        let cap = (max_bytes / self.entry_size as u64) * self.entry_size as u64;
        let cap = cap.max((self.entries * self.entry_size) as u64);
        self.file.set_len(cap)?;
        if cap > 0 {
            // SAFETY: as in `remap_readonly`; writes go through this struct only.
            let map = unsafe { MmapMut::map_mut(&self.file)? };
            no_readahead(&map);
            self.map = Map::Rw(map);
        }
        Ok(())
    }

    /// Shrinks the file to its valid entries and maps it read-only.
    fn trim(&mut self) -> Result<(), StorageError> {
        if let Map::Rw(m) = &self.map {
            m.flush()?;
        }
        self.map = Map::Empty;
        self.file.set_len((self.entries * self.entry_size) as u64)?;
        self.remap_readonly()
    }

    fn capacity(&self) -> usize {
        self.map.bytes().len() / self.entry_size
    }

    fn entry(&self, i: usize) -> &[u8] {
        let at = i * self.entry_size;
        &self.map.bytes()[at..at + self.entry_size]
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        let at = self.entries * self.entry_size;
        match &mut self.map {
            Map::Rw(m) if at + self.entry_size <= m.len() => {
                m[at..at + self.entry_size].copy_from_slice(bytes);
                self.entries += 1;
                true
            }
            _ => false,
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        match &self.map {
            Map::Rw(m) => m.flush()?,
            _ => self.file.sync_data()?,
        }
        Ok(())
    }
}

/// Index pages are read one at a time (a binary search, an append at the end), so page
/// faults on a map must not read ahead: the file is preallocated sparse to
/// `segment.index.bytes` (10 MiB), and the kernel's readahead (up to `read_ahead_kb`, 8 MiB
/// on the CI machines) fills large folios with zeros for the holes. With 64 new partitions
/// that zeroing was 42% of the broker's CPU. Advice only: an error changes nothing else.
fn no_readahead(map: &[u8]) {
    // SAFETY: madvise(MADV_RANDOM) on a live mapping's own range only changes readahead.
    unsafe {
        libc::madvise(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            libc::MADV_RANDOM,
        );
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Offset → byte position, sparse.
pub(crate) struct OffsetIndex {
    base_offset: i64,
    f: IndexFile,
}

impl OffsetIndex {
    pub fn open(path: &Path, base_offset: i64) -> Result<OffsetIndex, StorageError> {
        Ok(OffsetIndex {
            base_offset,
            f: IndexFile::open_readonly(path, OFFSET_ENTRY_SIZE)?,
        })
    }

    pub fn make_writable(&mut self, max_bytes: u64) -> Result<(), StorageError> {
        self.f.make_writable(max_bytes)
    }

    pub fn trim(&mut self) -> Result<(), StorageError> {
        self.f.trim()
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.f.flush()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.f.entries
    }

    pub fn is_full(&self) -> bool {
        self.f.entries >= self.f.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.f.entries == 0
    }

    pub fn clear(&mut self) {
        self.f.entries = 0;
    }

    fn get(&self, i: usize) -> (i64, u32) {
        let e = self.f.entry(i);
        (self.base_offset + u32_at(e, 0) as i64, u32_at(e, 4))
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        (self.f.entries > 0).then(|| self.get(self.f.entries - 1))
    }

    /// Adds (batch last offset, batch position). Returns false when full.
    pub fn append(&mut self, offset: i64, position: u32) -> bool {
        debug_assert!(self.last().is_none_or(|(o, p)| o < offset && p < position));
        let rel = (offset - self.base_offset) as u32;
        let mut e = [0u8; OFFSET_ENTRY_SIZE];
        e[..4].copy_from_slice(&rel.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.f.push(&e)
    }

    /// Position from which to scan for the batch holding `target`: that of the entry with the
    /// largest offset `<= target`, or 0.
    pub fn lookup(&self, target: i64) -> u32 {
        let (mut lo, mut hi) = (0usize, self.f.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).0 <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            0
        } else {
            self.get(lo - 1).1
        }
    }

    /// Drops entries for batches at or after byte `position`.
    pub fn truncate_to_position(&mut self, position: u64) {
        while self.f.entries > 0 && self.get(self.f.entries - 1).1 as u64 >= position {
            self.f.entries -= 1;
        }
    }

    /// Checks a trusted index: offsets and positions strictly increase, within the segment.
    pub fn is_sane(&self, segment_size: u64, next_base: Option<i64>) -> bool {
        let mut prev: Option<(i64, u32)> = None;
        for i in 0..self.f.entries {
            let (o, p) = self.get(i);
            if p as u64 >= segment_size || next_base.is_some_and(|n| o >= n) {
                return false;
            }
            if prev.is_some_and(|(po, pp)| po >= o || pp >= p) {
                return false;
            }
            prev = Some((o, p));
        }
        true
    }
}

/// Max timestamp so far → batch last offset, sparse.
pub(crate) struct TimeIndex {
    base_offset: i64,
    f: IndexFile,
}

impl TimeIndex {
    pub fn open(path: &Path, base_offset: i64) -> Result<TimeIndex, StorageError> {
        Ok(TimeIndex {
            base_offset,
            f: IndexFile::open_readonly(path, TIME_ENTRY_SIZE)?,
        })
    }

    pub fn make_writable(&mut self, max_bytes: u64) -> Result<(), StorageError> {
        self.f.make_writable(max_bytes)
    }

    pub fn trim(&mut self) -> Result<(), StorageError> {
        self.f.trim()
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.f.flush()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.f.entries
    }

    /// One slot stays free for the final (max timestamp, offset) entry written at roll.
    pub fn is_full(&self) -> bool {
        self.f.entries + 1 >= self.f.capacity()
    }

    pub fn clear(&mut self) {
        self.f.entries = 0;
    }

    fn get(&self, i: usize) -> (i64, i64) {
        let e = self.f.entry(i);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&e[..8]);
        (
            i64::from_be_bytes(ts),
            self.base_offset + u32_at(e, 8) as i64,
        )
    }

    pub fn last(&self) -> Option<(i64, i64)> {
        (self.f.entries > 0).then(|| self.get(self.f.entries - 1))
    }

    /// Adds an entry when `timestamp` is above the last one (timestamps only increase).
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> bool {
        if let Some((ts, o)) = self.last() {
            if timestamp <= ts || offset < o {
                return true;
            }
        }
        let rel = (offset - self.base_offset) as u32;
        let mut e = [0u8; TIME_ENTRY_SIZE];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&rel.to_be_bytes());
        self.f.push(&e)
    }

    /// The last offset of a batch after which the first record with timestamp >= `target`
    /// must lie (entry with the largest timestamp `< target`), or None: scan from the start.
    pub fn lookup(&self, target: i64) -> Option<i64> {
        let (mut lo, mut hi) = (0usize, self.f.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).0 < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo > 0).then(|| self.get(lo - 1).1)
    }

    /// Drops entries pointing at offsets `>= offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) {
        while self.f.entries > 0 && self.get(self.f.entries - 1).1 >= offset {
            self.f.entries -= 1;
        }
    }

    pub fn is_sane(&self, next_base: Option<i64>) -> bool {
        let mut prev: Option<(i64, i64)> = None;
        for i in 0..self.f.entries {
            let (t, o) = self.get(i);
            if o < self.base_offset || next_base.is_some_and(|n| o >= n) {
                return false;
            }
            if prev.is_some_and(|(pt, po)| pt >= t || po > o) {
                return false;
            }
            prev = Some((t, o));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_trim_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::open(&path, 100).unwrap();
        idx.make_writable(80).unwrap();
        assert!(idx.append(104, 0));
        assert!(idx.append(110, 500));
        assert!(idx.append(120, 900));
        assert_eq!(idx.lookup(99), 0);
        assert_eq!(idx.lookup(104), 0);
        assert_eq!(idx.lookup(111), 500);
        assert_eq!(idx.lookup(1000), 900);
        idx.truncate_to_position(600);
        assert_eq!(idx.len(), 2);
        idx.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        drop(idx);
        let idx = OffsetIndex::open(&path, 100).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.last(), Some((110, 500)));
        assert!(idx.is_sane(501, Some(111)));
        assert!(!idx.is_sane(400, None));
    }

    #[test]
    fn offset_index_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&dir.path().join("i"), 0).unwrap();
        idx.make_writable(16).unwrap();
        assert!(idx.append(1, 1));
        assert!(idx.append(2, 2));
        assert!(idx.is_full());
        assert!(!idx.append(3, 3));
    }

    #[test]
    fn time_index_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TimeIndex::open(&dir.path().join("t"), 10).unwrap();
        idx.make_writable(1200).unwrap();
        idx.maybe_append(100, 12);
        idx.maybe_append(90, 14); // not above: ignored
        idx.maybe_append(200, 20);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.lookup(50), None);
        assert_eq!(idx.lookup(100), None);
        assert_eq!(idx.lookup(101), Some(12));
        assert_eq!(idx.lookup(500), Some(20));
        idx.truncate_to_offset(20);
        assert_eq!(idx.last(), Some((100, 12)));
    }
}
