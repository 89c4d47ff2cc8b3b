//! The aborted-transaction index (`.txnindex`), one per segment, as Kafka's
//! `TransactionIndex`.
//!
//! Why: a Fetch with `isolation_level=read_committed` returns the records up to the last
//! stable offset together with the list of transactions aborted in that range; the consumer
//! drops a transactional batch when its producer has an aborted transaction covering it.
//! Finding those transactions by scanning the log for ABORT markers would cost a read of
//! every fetched range, so the broker records each abort here when it writes the marker.
//!
//! An entry lives in the index of the segment that holds its ABORT marker (`last_offset`),
//! so it goes away with that segment (retention, DeleteRecords, truncation) and moves with it
//! (compaction gives the cleaned segment the union of the entries it replaces).
//!
//! File: Kafka's format, so a Kafka tool can read it. Entries of 34 bytes, big endian:
//! `i16 version (0), i64 producer_id, i64 first_offset, i64 last_offset,
//! i64 last_stable_offset`, appended in the order the broker reports aborts. No file exists
//! for a segment without aborts.
//!
//! Memory: every segment's entries are held in memory from open on (aborts are rare and an
//! entry is 32 bytes), so a read_committed fetch never reads a file, and costs next to
//! nothing when there are none.
//!
//! Durability follows the log's flush policy: an appended entry is fsynced when its segment
//! is (or at once under `FlushPolicy::Always`). A crash can tear the last entry; loading drops
//! it, and entries whose marker did not survive the crash are dropped against the recovered
//! log end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::FlushPolicy;
use crate::error::StorageError;
use crate::log::Log;
use crate::segment::{lock, read, write, Segment};

pub(crate) const TXN_INDEX_SUFFIX: &str = "txnindex";
/// Bytes of one entry on disk.
const ENTRY_SIZE: usize = 34;
/// The only entry version Kafka has written.
const ENTRY_VERSION: i16 = 0;

/// One aborted transaction of a partition, as Kafka's `.txnindex` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// Offset of the transaction's first batch in this partition.
    pub first_offset: i64,
    /// Offset of its ABORT control batch.
    pub last_offset: i64,
    /// The partition's last stable offset when the abort was written (Kafka keeps it; informational).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut out = [0u8; ENTRY_SIZE];
        out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    /// None for an entry of an unknown version.
    fn decode(b: &[u8; ENTRY_SIZE]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            i64::from_be_bytes(a)
        };
        if i16::from_be_bytes([b[0], b[1]]) != ENTRY_VERSION {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        })
    }

    /// Whether the transaction has records in `[from_offset, upper_bound_offset)`.
    fn overlaps(&self, from_offset: i64, upper_bound_offset: i64) -> bool {
        self.last_offset >= from_offset && self.first_offset < upper_bound_offset
    }
}

/// One segment's aborted transactions: the file and its contents in memory.
pub(crate) struct TxnIndex {
    path: PathBuf,
    /// Sorted by `last_offset`; empty when there is no file.
    entries: RwLock<Vec<AbortedTxn>>,
    /// Entries were written since the last fsync of the file.
    unflushed: AtomicBool,
}

impl TxnIndex {
    /// An index with no entries (and no file until the first append).
    pub fn empty(path: PathBuf) -> TxnIndex {
        TxnIndex {
            path,
            entries: RwLock::new(Vec::new()),
            unflushed: AtomicBool::new(false),
        }
    }

    /// Reads the file of a segment starting at `base_offset`. A torn last entry (a crash
    /// mid-write) is cut off the file; an entry that cannot belong to this segment (unknown
    /// version, or offsets that make no sense — say zeros a crash left behind) is dropped
    /// with a warning rather than failing the open, and the file is rewritten without it.
    pub fn load(&self, base_offset: i64) -> Result<(), StorageError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let whole = bytes.len() / ENTRY_SIZE * ENTRY_SIZE;
        if whole != bytes.len() {
            tracing::warn!(
                file = %self.path.display(),
                torn_bytes = bytes.len() - whole,
                "dropping a torn last entry of the transaction index"
            );
            OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(whole as u64)?;
        }
        let mut entries = Vec::with_capacity(whole / ENTRY_SIZE);
        let mut bad = 0usize;
        for chunk in bytes[..whole].chunks_exact(ENTRY_SIZE) {
            let mut raw = [0u8; ENTRY_SIZE];
            raw.copy_from_slice(chunk);
            match AbortedTxn::decode(&raw) {
                Some(t)
                    if t.last_offset >= base_offset
                        && t.first_offset >= 0
                        && t.first_offset <= t.last_offset =>
                {
                    entries.push(t)
                }
                _ => bad += 1,
            }
        }
        entries.sort_by_key(|t| t.last_offset);
        entries.dedup();
        if bad > 0 {
            tracing::warn!(
                file = %self.path.display(),
                dropped = bad,
                "dropping transaction index entries that do not belong to the segment"
            );
            self.rewrite(&entries)?;
        }
        *write(&self.entries) = entries;
        Ok(())
    }

    /// A copy of the entries, ordered by `last_offset`.
    pub fn entries(&self) -> Vec<AbortedTxn> {
        read(&self.entries).clone()
    }

    /// Adds `txn` to the file and to memory. Appending an entry already present does nothing,
    /// so a broker that replays aborts after a restart cannot double them.
    pub fn append(&self, txn: AbortedTxn, sync_now: bool) -> Result<(), StorageError> {
        let mut entries = write(&self.entries);
        if entries.contains(&txn) {
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&txn.encode()) {
            // Leave no partial entry behind (loading would drop it anyway).
            let _ = file.set_len(before);
            return Err(e.into());
        }
        if sync_now {
            file.sync_data()?;
        } else {
            self.unflushed.store(true, Ordering::Release);
        }
        let at = entries.partition_point(|t| t.last_offset <= txn.last_offset);
        entries.insert(at, txn);
        Ok(())
    }

    /// Adds to `out` the entries overlapping `[from_offset, upper_bound_offset)`.
    pub fn collect(&self, from_offset: i64, upper_bound_offset: i64, out: &mut Vec<AbortedTxn>) {
        let entries = read(&self.entries);
        let start = entries.partition_point(|t| t.last_offset < from_offset);
        out.extend(
            entries[start..]
                .iter()
                .filter(|t| t.overlaps(from_offset, upper_bound_offset)),
        );
    }

    /// Drops the entries whose ABORT marker is at or above `end` (the log was cut there).
    pub fn truncate_from(&self, end: i64) -> Result<(), StorageError> {
        let mut entries = write(&self.entries);
        let keep = entries.partition_point(|t| t.last_offset < end);
        if keep == entries.len() {
            return Ok(());
        }
        entries.truncate(keep);
        self.rewrite(&entries)
    }

    /// fsyncs the file if entries were appended since the last time.
    pub fn sync(&self) -> Result<(), StorageError> {
        if !self.unflushed.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let result = match File::open(&self.path) {
            Ok(f) => f.sync_data(),
            // Deleted with its segment meanwhile: nothing left to make durable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.unflushed.store(true, Ordering::Release);
        }
        Ok(result?)
    }

    /// Replaces the file's contents by `entries` (removes it when there are none) so that a
    /// crash leaves either the old or the new file.
    fn rewrite(&self, entries: &[AbortedTxn]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return remove_if_exists(&self.path);
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        write_entries(&tmp, entries)?;
        std::fs::rename(&tmp, &self.path)?;
        self.unflushed.store(false, Ordering::Release);
        Ok(())
    }

    /// Replaces the in-memory entries (a compaction result whose file was written under its
    /// temporary name).
    pub fn set_entries(&self, entries: Vec<AbortedTxn>) {
        *write(&self.entries) = entries;
    }
}

/// Writes `entries` to a new file at `path` and fsyncs it.
pub(crate) fn write_entries(path: &Path, entries: &[AbortedTxn]) -> Result<(), StorageError> {
    let mut buf = Vec::with_capacity(entries.len() * ENTRY_SIZE);
    for t in entries {
        buf.extend_from_slice(&t.encode());
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(&buf)?;
    f.sync_data()?;
    Ok(())
}

fn remove_if_exists(p: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Log {
    /// Records an aborted transaction. `txn.last_offset` is the offset of its abort marker, already appended
    /// (so < log end). Appended to the `.txnindex` file of the segment that holds `last_offset`
    /// (Kafka's file name: same 20-digit base offset as the segment, suffix `.txnindex`; Kafka's entry format:
    /// i16 version 0, i64 producer_id, i64 first_offset, i64 last_offset, i64 last_stable_offset = 34 bytes, big endian).
    /// Durability follows the log's flush policy (flushed with the segment); recovery must cope with a torn last entry.
    ///
    /// Errors: `InvalidRecord` when `first_offset > last_offset`; `OffsetOutOfRange` when the
    /// marker is not in the log (at or above the log end, or below the log start). Appending
    /// an entry already recorded is a no-op.
    pub fn append_aborted_txn(&self, txn: AbortedTxn) -> Result<(), StorageError> {
        self.check_open()?;
        if txn.first_offset > txn.last_offset || txn.first_offset < 0 {
            return Err(StorageError::invalid(format!(
                "aborted transaction of producer {} has first offset {} after its marker at {}",
                txn.producer_id, txn.first_offset, txn.last_offset
            )));
        }
        // The writer lock orders this with truncation, retention and the compaction swap, so
        // the segment found here is the one holding the marker until the entry is in it.
        let _w = lock(&self.writer);
        self.check_open()?;
        let (start, end) = (self.log_start_offset(), self.log_end());
        if txn.last_offset < start || txn.last_offset >= end {
            return Err(StorageError::OffsetOutOfRange {
                requested: txn.last_offset,
                log_start: start,
                log_end: end,
            });
        }
        let seg = read(&self.segments)
            .range(..=txn.last_offset)
            .next_back()
            .map(|(_, s)| s.clone())
            .ok_or(StorageError::OffsetOutOfRange {
                requested: txn.last_offset,
                log_start: start,
                log_end: end,
            })?;
        let sync_now = self.config().flush == FlushPolicy::Always;
        seg.txn_index().append(txn, sync_now)
    }

    /// The aborted transactions that overlap the offset range [from_offset, upper_bound_offset):
    /// every entry with last_offset >= from_offset and first_offset < upper_bound_offset, ordered by last_offset.
    /// Used by Fetch with isolation_level=read_committed. Must be cheap when there are none (no file reads for
    /// segments whose index is empty — keep per-segment entries in memory or remember emptiness).
    pub fn aborted_txns(
        &self,
        from_offset: i64,
        upper_bound_offset: i64,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        self.check_open()?;
        let mut out = Vec::new();
        if upper_bound_offset <= from_offset {
            return Ok(out);
        }
        // Segments before the one holding `from_offset` only hold markers below it. Later
        // ones are all looked at: a transaction begun before the upper bound may be aborted
        // in any later segment.
        let segs: Vec<Arc<Segment>> = {
            let segs = read(&self.segments);
            let floor = segs
                .range(..=from_offset)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b);
            segs.range(floor..).map(|(_, s)| s.clone()).collect()
        };
        for s in segs {
            s.txn_index()
                .collect(from_offset, upper_bound_offset, &mut out);
        }
        Ok(out)
    }

    /// fsyncs the transaction indexes with unflushed entries, wherever their segment is (an
    /// abort can be recorded in a segment below the recovery point).
    pub(crate) fn sync_txn_indexes(&self) -> Result<(), StorageError> {
        for s in self.segment_list() {
            s.txn_index().sync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        }
    }

    #[test]
    fn entries_use_kafkas_34_byte_format() {
        let t = AbortedTxn {
            producer_id: 0x0102030405060708,
            first_offset: 9,
            last_offset: 10,
            last_stable_offset: 11,
        };
        let b = t.encode();
        assert_eq!(&b[..2], &[0, 0]);
        assert_eq!(&b[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[10..18], &9i64.to_be_bytes());
        assert_eq!(&b[18..26], &10i64.to_be_bytes());
        assert_eq!(&b[26..34], &11i64.to_be_bytes());
        assert_eq!(AbortedTxn::decode(&b), Some(t));
    }

    #[test]
    fn load_keeps_good_entries_and_drops_torn_and_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.txnindex");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&txn(1, 100, 120).encode());
        bytes.extend_from_slice(&[0u8; ENTRY_SIZE]); // zeros: marker below the segment
        let mut v1 = txn(2, 101, 130).encode();
        v1[1] = 1; // unknown version
        bytes.extend_from_slice(&v1);
        bytes.extend_from_slice(&txn(3, 90, 110).encode());
        bytes.extend_from_slice(&txn(4, 100, 140).encode()[..20]); // torn
        std::fs::write(&path, &bytes).unwrap();

        let idx = TxnIndex::empty(path.clone());
        idx.load(100).unwrap();
        assert_eq!(idx.entries(), vec![txn(3, 90, 110), txn(1, 100, 120)]);
        // The file now holds exactly the kept entries.
        let again = TxnIndex::empty(path.clone());
        again.load(100).unwrap();
        assert_eq!(again.entries(), idx.entries());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * ENTRY_SIZE as u64
        );
    }

    #[test]
    fn append_is_idempotent_and_truncation_rewrites_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let idx = TxnIndex::empty(path.clone());
        assert!(!path.exists());
        idx.append(txn(1, 0, 5), false).unwrap();
        idx.append(txn(2, 3, 9), true).unwrap();
        idx.append(txn(1, 0, 5), false).unwrap();
        assert_eq!(idx.entries().len(), 2);
        idx.sync().unwrap();
        idx.truncate_from(9).unwrap();
        assert_eq!(idx.entries(), vec![txn(1, 0, 5)]);
        let again = TxnIndex::empty(path.clone());
        again.load(0).unwrap();
        assert_eq!(again.entries(), vec![txn(1, 0, 5)]);
        idx.truncate_from(0).unwrap();
        assert!(idx.entries().is_empty());
        assert!(!path.exists(), "an empty index leaves no file");
    }
}
