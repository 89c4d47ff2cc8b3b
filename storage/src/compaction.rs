//! Log compaction (`cleanup.policy=compact` / `compact,delete`), after Kafka's LogCleaner:
//!
//! 1. The cleanable part of the log ends at the first segment that is active, reaches the
//!    high watermark, or is younger than `min.compaction.lag.ms`.
//! 2. A key → latest-offset map is built over the dirty part (from the first dirty offset),
//!    keys held as 128-bit hashes, with a cap on entries: when the cap is hit the round ends
//!    at that batch and the next round continues from there (bounded memory).
//! 3. Every segment from the log start up to the end of the map is re-written, grouped so a
//!    group fits in `segment.bytes`: a record is dropped when the map holds a later offset
//!    for its key, or when it is a tombstone older than `delete.retention.ms`. Batches whose
//!    records all stay are copied byte for byte; others are re-encoded with the same base
//!    offset, last offset delta, producer fields and codec, so offsets never change. An
//!    emptied batch is kept as a header when it is its producer's last batch, so producer
//!    state survives (Kafka does the same).
//! 4. The new file is swapped in under the writer lock for a moment: `.cleaned` is renamed
//!    `.swap` (from then on recovery completes the swap), the map entry is replaced, the old
//!    files are deleted and the new ones renamed to their final names. The replaced
//!    segments' aborted transactions are written, as one `.txnindex.cleaned`, before the
//!    `.swap` rename (under the writer lock, so no abort recorded meanwhile is missed): a
//!    crash after that point finishes the swap with them, one before it keeps the old files.
//!
//! Records without a key are kept (Kafka refuses them at produce time on compacted topics;
//! here they are never silently dropped). Control batches are kept: read_committed
//! consumers need the markers. Records of aborted transactions (known from the `.txnindex`)
//! never supersede an earlier value; they are kept, and consumers skip them.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::hash::Hasher;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::batch::{Compression, RecordBatch};
use crate::checkpoint::sync_dir;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::log::Log;
use crate::records::{BatchBuilder, Record};
use crate::segment::{
    file_path, lock, read, rebuild_indexes, write, Handles, Segment, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use crate::txn_index::{self, AbortedTxn, TXN_INDEX_SUFFIX};

/// Default cap on the key map: about 48 bytes an entry in a HashMap, so ~24 MiB.
pub const DEFAULT_MAX_MAP_ENTRIES: usize = 500_000;

pub(crate) struct CleanerState {
    /// One compaction at a time per log.
    running: Mutex<()>,
    /// Offsets below this were compacted at least once.
    first_dirty: AtomicI64,
    pub max_map_entries: AtomicUsize,
}

impl Default for CleanerState {
    fn default() -> Self {
        CleanerState {
            running: Mutex::new(()),
            first_dirty: AtomicI64::new(0),
            max_map_entries: AtomicUsize::new(DEFAULT_MAX_MAP_ENTRIES),
        }
    }
}

impl CleanerState {
    pub fn starting_at(first_dirty: i64) -> CleanerState {
        let s = CleanerState::default();
        s.first_dirty.store(first_dirty, Ordering::Release);
        s
    }

    pub fn first_dirty(&self) -> i64 {
        self.first_dirty.load(Ordering::Acquire)
    }

    /// The log was truncated to `end`: nothing above it counts as cleaned.
    pub fn clamp(&self, end: i64) {
        self.first_dirty.fetch_min(end, Ordering::AcqRel);
    }
}

/// What one compaction round did (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_read: usize,
    pub segments_written: usize,
    pub records_dropped: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn key_hash(key: &[u8]) -> u128 {
    // Two SipHash passes with different prefixes: 128 bits make a collision (which would
    // drop a record) as unlikely as with Kafka's MD5-based map.
    let mut a = std::hash::DefaultHasher::new();
    a.write(key);
    let mut b = std::hash::DefaultHasher::new();
    b.write_u8(0x5a);
    b.write(key);
    ((a.finish() as u128) << 64) | b.finish() as u128
}

/// Reads each batch of `seg` in order (whole batch bytes), stopping when `f` says so.
fn for_each_batch(
    seg: &Arc<Segment>,
    mut f: impl FnMut(RecordBatch<'_>) -> Result<bool, StorageError>,
) -> Result<(), StorageError> {
    let mut pos_list = Vec::new();
    seg.for_each_header(0, |pos, b| {
        pos_list.push((pos, b.size_in_bytes()));
        Ok(true)
    })?;
    for (pos, size) in pos_list {
        let bytes = seg.read_batch_at(pos, size)?;
        if !f(RecordBatch::new(&bytes)?)? {
            break;
        }
    }
    Ok(())
}

impl Log {
    /// Runs one compaction round if there is a dirty cleanable part.
    pub(crate) fn compact(
        &self,
        now_ms: i64,
        cfg: &LogConfig,
    ) -> Result<Option<CompactionStats>, StorageError> {
        let Ok(_running) = self.cleaner.running.try_lock() else {
            return Ok(None);
        };
        let segs = self.segment_list();
        let Some(active) = segs.last() else {
            return Ok(None);
        };
        let bound = self.upper_bound();
        // First offset that may not be cleaned.
        let mut clean_end = active.base_offset;
        for (i, s) in segs.iter().enumerate() {
            let next = segs.get(i + 1).map_or(i64::MAX, |n| n.base_offset);
            let (ts, _) = s.max_timestamp()?;
            let too_young = cfg.min_compaction_lag_ms > 0
                && ts >= 0
                && now_ms.saturating_sub(ts) < cfg.min_compaction_lag_ms;
            if next > bound || too_young || Arc::ptr_eq(s, active) {
                clean_end = clean_end.min(s.base_offset);
                break;
            }
        }
        let log_start = self.log_start_offset();
        let first_dirty = self
            .cleaner
            .first_dirty
            .load(Ordering::Acquire)
            .max(log_start);
        if first_dirty >= clean_end {
            return Ok(None);
        }

        // 1. The key map over [first_dirty, map_end). Records of aborted transactions do
        // not count as a key's latest value: a read_committed consumer never sees them, so
        // they must not make the committed value before them go.
        let aborted = AbortedRanges::new(self.aborted_txns(first_dirty, clean_end)?);
        let max_entries = self.cleaner.max_map_entries.load(Ordering::Relaxed).max(1);
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut map_end = first_dirty;
        let mut full = false;
        for s in segs.iter().filter(|s| s.base_offset < clean_end) {
            let next = segs
                .iter()
                .find(|n| n.base_offset > s.base_offset)
                .map_or(i64::MAX, |n| n.base_offset);
            if next <= first_dirty {
                continue;
            }
            for_each_batch(s, |b| {
                if b.next_offset() <= first_dirty {
                    return Ok(true);
                }
                if b.base_offset() >= clean_end {
                    return Ok(false);
                }
                if !b.is_control() && !aborted.covers(&b) {
                    let records = b.records()?;
                    let new_keys = records
                        .iter()
                        .filter(|r| {
                            r.key
                                .as_ref()
                                .is_some_and(|k| !map.contains_key(&key_hash(k)))
                        })
                        .count();
                    if map.len() + new_keys > max_entries && map_end > first_dirty {
                        full = true;
                        return Ok(false);
                    }
                    for r in &records {
                        if let Some(k) = &r.key {
                            map.insert(key_hash(k), r.offset);
                        }
                    }
                }
                map_end = b.next_offset();
                Ok(true)
            })?;
            if full {
                break;
            }
            map_end = map_end.max(next.min(clean_end));
        }
        if map_end <= first_dirty {
            return Ok(None);
        }

        // 2. Each producer's last batch, over the whole log (headers only).
        let mut producer_last: HashMap<i64, i64> = HashMap::new();
        for s in &segs {
            s.for_each_header(0, |_, b| {
                if b.producer_id() >= 0 {
                    producer_last.insert(b.producer_id(), b.base_offset());
                }
                Ok(true)
            })?;
        }

        // 3. Groups of segments below map_end, each re-written into one.
        let to_clean: Vec<Arc<Segment>> = segs
            .iter()
            .filter(|s| s.base_offset < map_end)
            .cloned()
            .collect();
        let max_group_bytes = cfg.segment_bytes.clamp(1, i32::MAX as u64);
        let mut stats = CompactionStats::default();
        let mut i = 0;
        while i < to_clean.len() {
            let mut group = vec![to_clean[i].clone()];
            let mut bytes = to_clean[i].size();
            i += 1;
            // The group's offsets must stay within a u32 of its base (index entries are
            // relative); the next segment's base bounds the candidate's offsets.
            let end_of = |j: usize| {
                segs.iter()
                    .find(|n| n.base_offset > to_clean[j].base_offset)
                    .map_or(i64::MAX, |n| n.base_offset)
            };
            while i < to_clean.len()
                && bytes + to_clean[i].size() <= max_group_bytes
                && end_of(i).saturating_sub(group[0].base_offset) <= i32::MAX as i64
            {
                bytes += to_clean[i].size();
                group.push(to_clean[i].clone());
                i += 1;
            }
            let ctx = CleanCtx {
                map: &map,
                map_end,
                producer_last: &producer_last,
                now_ms,
                delete_retention_ms: cfg.delete_retention_ms,
            };
            self.clean_group(&group, &ctx, cfg, &mut stats)?;
        }
        self.cleaner.first_dirty.store(map_end, Ordering::Release);
        // Progress survives a restart, so the next round does not re-read the cleaned part.
        self.write_checkpoint()?;
        tracing::info!(
            dir = %self.dir.display(),
            first_dirty,
            map_end,
            keys = map.len(),
            dropped = stats.records_dropped,
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            "compacted"
        );
        Ok(Some(stats))
    }

    fn clean_group(
        &self,
        group: &[Arc<Segment>],
        ctx: &CleanCtx<'_>,
        cfg: &LogConfig,
        stats: &mut CompactionStats,
    ) -> Result<(), StorageError> {
        let base = group[0].base_offset;
        let cleaned = |suffix: &str| file_path(&self.dir, base, &format!("{suffix}.cleaned"));
        let log_tmp = cleaned(LOG_SUFFIX);
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&log_tmp)?;
            let mut out = BufWriter::with_capacity(1 << 20, &file);
            let mut written = 0u64;
            for seg in group {
                let (seg_ts, _) = seg.max_timestamp()?;
                let tombstones_expire =
                    seg_ts >= 0 && ctx.now_ms.saturating_sub(seg_ts) > ctx.delete_retention_ms;
                stats.bytes_before += seg.size();
                stats.segments_read += 1;
                for_each_batch(seg, |b| {
                    let kept = clean_batch(&b, ctx, tombstones_expire, &mut stats.records_dropped)?;
                    match kept {
                        Kept::Whole => {
                            out.write_all(b.as_bytes())?;
                            written += b.size_in_bytes() as u64;
                        }
                        Kept::Rewritten(bytes) => {
                            out.write_all(&bytes)?;
                            written += bytes.len() as u64;
                        }
                        Kept::Nothing => {}
                    }
                    Ok(true)
                })?;
            }
            out.flush()?;
            drop(out);
            file.sync_data()?;
            let index = OffsetIndex::open(&cleaned(INDEX_SUFFIX), base)?;
            let time_index = TimeIndex::open(&cleaned(TIME_INDEX_SUFFIX), base)?;
            let handles = Handles {
                file,
                index: RwLock::new(index),
                time_index: RwLock::new(time_index),
            };
            rebuild_indexes(&handles, base, written, cfg.index_interval_bytes as u64)?;
            Ok::<_, StorageError>((handles, written))
        })();
        let remove_cleaned = || {
            for s in [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ] {
                let _ = std::fs::remove_file(cleaned(s));
            }
        };
        let (handles, written) = match result {
            Ok(r) => r,
            Err(e) => {
                remove_cleaned();
                return Err(e);
            }
        };
        if !self.swap_in(group, handles, written)? {
            remove_cleaned();
            return Ok(());
        }
        stats.bytes_after += written;
        stats.segments_written += 1;
        Ok(())
    }

    /// Replaces `group` by the cleaned segment. Returns false (and changes nothing) when the
    /// group changed meanwhile (truncation, retention).
    fn swap_in(
        &self,
        group: &[Arc<Segment>],
        handles: Handles,
        size: u64,
    ) -> Result<bool, StorageError> {
        let _w = lock(&self.writer);
        // close() and delete take the writer lock: once they ran, nothing is swapped in.
        if self.is_closed() {
            return Ok(false);
        }
        let base = group[0].base_offset;
        {
            let segs = read(&self.segments);
            let unchanged = group.iter().all(|g| {
                segs.get(&g.base_offset).is_some_and(|s| Arc::ptr_eq(s, g))
                    && !g.is_pinned()
                    && !g.is_deleted()
            });
            if !unchanged {
                return Ok(false);
            }
        }
        let name = |suffix: &str| file_path(&self.dir, base, suffix);
        let cleaned = |suffix: &str| file_path(&self.dir, base, &format!("{suffix}.cleaned"));
        let swap = file_path(
            &self.dir,
            base,
            &format!("{LOG_SUFFIX}{}", crate::recovery::SWAP_SUFFIX),
        );
        // Always written, even empty: after a crash past the `.swap` rename, its presence
        // tells recovery that the final `.txnindex` is not yet the union.
        let aborted: Vec<AbortedTxn> = {
            let mut all: Vec<AbortedTxn> =
                group.iter().flat_map(|g| g.txn_index().entries()).collect();
            all.sort_by_key(|t| t.last_offset);
            all
        };
        txn_index::write_entries(&cleaned(TXN_INDEX_SUFFIX), &aborted)?;
        std::fs::rename(cleaned(LOG_SUFFIX), &swap)?;
        sync_dir(&self.dir)?;
        let fresh = Arc::new(Segment::with_handles(
            &self.dir,
            base,
            size,
            self.cache.clone(),
            handles,
        ));
        // Before readers can see the segment: a read_committed fetch must not miss them.
        let has_aborted = !aborted.is_empty();
        fresh.txn_index().set_entries(aborted);
        {
            let mut segs = write(&self.segments);
            for g in group {
                segs.remove(&g.base_offset);
            }
            segs.insert(base, fresh.clone());
        }
        for g in group {
            g.delete_files()?;
        }
        std::fs::rename(cleaned(INDEX_SUFFIX), name(INDEX_SUFFIX))?;
        std::fs::rename(cleaned(TIME_INDEX_SUFFIX), name(TIME_INDEX_SUFFIX))?;
        if has_aborted {
            std::fs::rename(cleaned(TXN_INDEX_SUFFIX), name(TXN_INDEX_SUFFIX))?;
        } else {
            std::fs::remove_file(cleaned(TXN_INDEX_SUFFIX))?;
        }
        std::fs::rename(&swap, name(LOG_SUFFIX))?;
        sync_dir(&self.dir)?;
        fresh.unpin_fresh();
        Ok(true)
    }

    /// Runs compaction now (whatever `cleanup.policy` says), for tools and tests.
    pub fn compact_now(&self, now_ms: i64) -> Result<Option<CompactionStats>, StorageError> {
        self.check_open()?;
        let cfg = self.config();
        self.compact(now_ms, &cfg)
    }

    /// Caps the compaction key map (entries) of this log.
    pub fn set_compaction_map_entries(&self, entries: usize) {
        self.cleaner
            .max_map_entries
            .store(entries.max(1), Ordering::Relaxed);
    }
}

/// Which transactional batches belong to an aborted transaction: a producer has at most
/// one transaction open, so its batch at offset `o` is aborted when one of its aborts spans
/// `first_offset <= o <= last_offset`.
struct AbortedRanges {
    by_producer: HashMap<i64, Vec<(i64, i64)>>,
}

impl AbortedRanges {
    fn new(aborts: Vec<AbortedTxn>) -> AbortedRanges {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in aborts {
            by_producer
                .entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
        AbortedRanges { by_producer }
    }

    fn covers(&self, b: &RecordBatch<'_>) -> bool {
        b.is_transactional()
            && self
                .by_producer
                .get(&b.producer_id())
                .is_some_and(|ranges| {
                    ranges
                        .iter()
                        .any(|&(first, last)| first <= b.base_offset() && b.base_offset() <= last)
                })
    }
}

struct CleanCtx<'a> {
    map: &'a HashMap<u128, i64>,
    map_end: i64,
    producer_last: &'a HashMap<i64, i64>,
    now_ms: i64,
    delete_retention_ms: i64,
}

enum Kept {
    Whole,
    Rewritten(bytes::Bytes),
    Nothing,
}

fn keep_record(r: &Record, ctx: &CleanCtx<'_>, tombstones_expire: bool) -> bool {
    if r.offset >= ctx.map_end {
        return true;
    }
    let Some(key) = &r.key else { return true };
    if ctx
        .map
        .get(&key_hash(key))
        .is_some_and(|&latest| latest > r.offset)
    {
        return false;
    }
    !(r.value.is_none() && tombstones_expire)
}

fn clean_batch(
    b: &RecordBatch<'_>,
    ctx: &CleanCtx<'_>,
    tombstones_expire: bool,
    dropped: &mut u64,
) -> Result<Kept, StorageError> {
    if b.is_control() || b.base_offset() >= ctx.map_end {
        return Ok(Kept::Whole);
    }
    let records = b.records()?;
    let kept: Vec<&Record> = records
        .iter()
        .filter(|r| keep_record(r, ctx, tombstones_expire))
        .collect();
    *dropped += (records.len() - kept.len()) as u64;
    if kept.len() == records.len() {
        return Ok(Kept::Whole);
    }
    let is_producers_last =
        b.producer_id() >= 0 && ctx.producer_last.get(&b.producer_id()) == Some(&b.base_offset());
    if kept.is_empty() && !is_producers_last {
        return Ok(Kept::Nothing);
    }
    let mut builder = BatchBuilder::new(b.base_offset(), b.base_timestamp());
    builder.partition_leader_epoch = b.partition_leader_epoch();
    builder.compression = if kept.is_empty() {
        Compression::None
    } else {
        b.compression()?
    };
    builder.log_append_time = b.is_log_append_time();
    builder.transactional = b.is_transactional();
    builder.control = b.is_control();
    builder.producer_id = b.producer_id();
    builder.producer_epoch = b.producer_epoch();
    builder.base_sequence = b.base_sequence();
    builder.last_offset_delta_override = Some(b.last_offset_delta());
    if b.is_log_append_time() || kept.is_empty() {
        builder.max_timestamp_override = Some(b.max_timestamp());
    }
    for r in kept {
        builder.push_record(r);
    }
    Ok(Kept::Rewritten(builder.build()?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{BatchIter, CleanupPolicy, LogConfig};

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 256,
            segment_index_bytes: 4096,
            retention_ms: -1,
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        }
    }

    type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

    /// Every record in the log: offset → (key, value).
    fn contents(log: &Log) -> BTreeMap<i64, KeyValue> {
        let mut out = BTreeMap::new();
        let mut off = log.log_start_offset();
        while off < log.log_end_offset() {
            let r = log.read(off, 1 << 20, i64::MAX, true).unwrap();
            if r.records.is_empty() {
                break;
            }
            for b in BatchIter::new(&r.records) {
                let b = b.unwrap();
                b.validate_stored().unwrap();
                for rec in b.records().unwrap() {
                    let prev = out.insert(
                        rec.offset,
                        (rec.key.map(|k| k.to_vec()), rec.value.map(|v| v.to_vec())),
                    );
                    assert!(prev.is_none(), "offset {} twice", rec.offset);
                }
                off = b.next_offset();
            }
        }
        out
    }

    fn append_kv(log: &Log, recs: &[(i32, Option<&str>)], ts: i64, codec: Compression) {
        let mut b = BatchBuilder::new(0, ts).compression(codec);
        for (i, (k, v)) in recs.iter().enumerate() {
            let key = format!("key-{k}");
            b.push(
                i as i32,
                ts,
                Some(key.as_bytes()),
                v.map(|v| v.as_bytes()),
                &[],
            );
        }
        log.append_as_leader(&b.build().unwrap(), 0, ts).unwrap();
    }

    #[test]
    fn keeps_the_latest_value_per_key_at_unchanged_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        let codecs = [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Gzip,
            Compression::Snappy,
        ];
        let now = crate::log::now_ms();
        for i in 0..120 {
            let v1 = format!("v{i}-a");
            let v2 = format!("v{i}-b");
            append_kv(
                &log,
                &[
                    (i % 7, Some(v1.as_str())),
                    ((i * 3) % 11, Some(v2.as_str())),
                ],
                now,
                codecs[i as usize % 5],
            );
        }
        let before = contents(&log);
        assert!(log.segment_count() > 4);
        let size_before = log.size_bytes();
        log.maintain(now).unwrap();
        let after = contents(&log);
        assert!(log.size_bytes() < size_before);
        // Every surviving record is exactly what was written at that offset.
        for (o, kv) in &after {
            assert_eq!(before.get(o), Some(kv), "offset {o} changed");
        }
        // The latest record of every key survives.
        let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for (o, (k, _)) in &before {
            latest.insert(k.clone().unwrap(), *o);
        }
        for o in latest.values() {
            assert!(after.contains_key(o), "latest offset {o} lost");
        }
        // Below the active segment at most one record per key remains.
        let active_base = log.segment_list().last().unwrap().base_offset;
        let mut seen = std::collections::HashSet::new();
        for (o, (k, _)) in after.range(..active_base) {
            assert!(
                seen.insert(k.clone()),
                "key {k:?} twice below the active segment (offset {o})"
            );
        }
        assert_eq!(log.log_end_offset(), 240);
        // The log still takes appends, reopens cleanly and after a crash.
        append_kv(&log, &[(1, Some("last"))], now, Compression::None);
        let after2 = contents(&log);
        drop(log);
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert_eq!(contents(&log), after2);
        log.close().unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert_eq!(contents(&log), after2);
        // Offset lookups still work in compacted segments.
        let r = log.read(1, 10, i64::MAX, true).unwrap();
        assert!(
            RecordBatch::new(
                &r.records[..RecordBatch::header(&r.records).unwrap().size_in_bytes()]
            )
            .unwrap()
            .last_offset()
                >= 1
        );
    }

    #[test]
    fn compaction_progress_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::log::now_ms();
        {
            let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
            for i in 0..60 {
                append_kv(
                    &log,
                    &[(i % 5, Some("value-value-value"))],
                    now,
                    Compression::None,
                );
            }
            assert!(log.compact_now(now).unwrap().is_some());
            assert!(
                log.compact_now(now).unwrap().is_none(),
                "nothing dirty left"
            );
            log.close().unwrap();
        }
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert!(
            log.compact_now(now).unwrap().is_none(),
            "the cleaned part is not cleaned again"
        );
        // A truncation below the progress makes that part dirty again.
        log.truncate_to(10).unwrap();
        assert!(log.cleaner.first_dirty() <= 10);
    }

    #[test]
    fn tombstones_stay_for_delete_retention_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let c = LogConfig {
            delete_retention_ms: 1000,
            ..cfg()
        };
        let log = Log::open(dir.path().to_path_buf(), c).unwrap();
        let t0 = 1_000_000;
        append_kv(
            &log,
            &[(1, Some("a")), (2, Some("b"))],
            t0,
            Compression::None,
        );
        append_kv(&log, &[(1, None)], t0, Compression::None); // tombstone for key 1
        for i in 0..40 {
            append_kv(
                &log,
                &[(100 + i, Some("filler-filler-filler-filler-filler"))],
                t0,
                Compression::None,
            );
        }
        log.compact_now(t0 + 10).unwrap();
        let c1 = contents(&log);
        assert!(!c1.contains_key(&0), "superseded value of key 1 dropped");
        assert_eq!(
            c1.get(&2),
            Some(&(Some(b"key-1".to_vec()), None)),
            "young tombstone kept"
        );
        assert!(c1.contains_key(&1));
        // Much later the tombstone goes (a new dirty section makes the cleaner run again).
        log.cleaner.first_dirty.store(0, Ordering::Release);
        log.compact_now(t0 + 10_000).unwrap();
        let c2 = contents(&log);
        assert!(!c2.contains_key(&2), "old tombstone dropped");
        assert!(c2.contains_key(&1));
    }

    #[test]
    fn bounded_key_map_compacts_in_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        log.set_compaction_map_entries(5);
        let now = crate::log::now_ms();
        for round in 0..4 {
            for k in 0..20 {
                let v = format!("r{round}");
                append_kv(&log, &[(k, Some(v.as_str()))], now, Compression::None);
            }
        }
        let before = contents(&log);
        let mut rounds = 0;
        while log.compact_now(now).unwrap().is_some() {
            rounds += 1;
            assert!(rounds < 100, "compaction must finish");
        }
        assert!(
            rounds > 1,
            "a 5-key map needs several rounds, took {rounds}"
        );
        let after = contents(&log);
        for (o, kv) in &after {
            assert_eq!(before.get(o), Some(kv));
        }
        let active_base = log.segment_list().last().unwrap().base_offset;
        let below: Vec<_> = after
            .range(..active_base)
            .map(|(_, (k, _))| k.clone())
            .collect();
        let unique: std::collections::HashSet<_> = below.iter().collect();
        assert_eq!(below.len(), unique.len());
    }

    #[test]
    fn an_emptied_batch_is_kept_as_a_header_when_it_is_the_producers_last() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        let now = crate::log::now_ms();
        // Producer 42's only batch: key 1, later superseded by a non-idempotent write.
        let mut b = BatchBuilder::new(0, now);
        b.producer_id = 42;
        b.producer_epoch = 3;
        b.base_sequence = 7;
        b.push(0, now, Some(b"key-1"), Some(b"old"), &[]);
        b.push(1, now, Some(b"key-1"), Some(b"older"), &[]);
        log.append_as_leader(&b.build().unwrap(), 0, now).unwrap();
        for i in 0..30 {
            append_kv(
                &log,
                &[
                    (1, Some("new")),
                    (200 + i, Some("filler-filler-filler-filler")),
                ],
                now,
                Compression::None,
            );
        }
        log.compact_now(now).unwrap();
        let r = log.read(0, 100, i64::MAX, true).unwrap();
        let first = RecordBatch::new(
            &r.records[..RecordBatch::header(&r.records).unwrap().size_in_bytes()],
        )
        .unwrap();
        first.validate_stored().unwrap();
        assert_eq!(first.base_offset(), 0);
        assert_eq!(first.last_offset(), 1);
        assert_eq!(first.record_count(), 0);
        assert_eq!(
            (
                first.producer_id(),
                first.producer_epoch(),
                first.base_sequence()
            ),
            (42, 3, 7)
        );
    }

    #[test]
    fn interrupted_swap_is_completed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::log::now_ms();
        let expected;
        {
            let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
            for i in 0..60 {
                append_kv(
                    &log,
                    &[(i % 5, Some("value-value-value"))],
                    now,
                    Compression::None,
                );
            }
            expected = contents(&log);
            log.close().unwrap();
        }
        // Fake a crash between ".cleaned → .swap" and deleting the old segments: the swap
        // holds a copy of the first two segments, and both old segments are still there.
        let mut logs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        let mut joined = std::fs::read(&logs[0]).unwrap();
        joined.extend(std::fs::read(&logs[1]).unwrap());
        std::fs::write(logs[0].with_extension("log.swap"), &joined).unwrap();
        std::fs::write(logs[0].with_extension("index.cleaned"), b"junk").unwrap();
        std::fs::remove_file(dir.path().join(crate::checkpoint::CLEAN_SHUTDOWN_FILE)).unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert!(!logs[1].exists(), "the replaced segment is gone");
        assert!(!logs[0].with_extension("index.cleaned").exists());
        assert_eq!(contents(&log), expected);
    }

    /// Appends a transaction of producer `pid` (keyed records, like `append_kv`) and its
    /// ABORT marker; records the abort. Returns it.
    fn append_aborted(log: &Log, pid: i64, keys: &[i32], now: i64) -> crate::AbortedTxn {
        let mut b = BatchBuilder::new(0, now);
        b.transactional = true;
        b.producer_id = pid;
        b.producer_epoch = 0;
        b.base_sequence = 0;
        for (i, k) in keys.iter().enumerate() {
            let key = format!("key-{k}");
            b.push(i as i32, now, Some(key.as_bytes()), Some(b"aborted"), &[]);
        }
        let data = log.append_as_leader(&b.build().unwrap(), 0, now).unwrap();
        let marker = crate::control_batch(pid, 0, crate::ControlType::Abort, 1, now);
        let at = log.append_as_leader(&marker, 0, now).unwrap();
        let txn = crate::AbortedTxn {
            producer_id: pid,
            first_offset: data.base_offset,
            last_offset: at.base_offset,
            last_stable_offset: data.base_offset,
        };
        log.append_aborted_txn(txn).unwrap();
        txn
    }

    /// Offsets and types of every control batch in the log.
    fn markers(log: &Log) -> Vec<(i64, Option<crate::ControlType>)> {
        let mut out = Vec::new();
        let mut off = log.log_start_offset();
        while off < log.log_end_offset() {
            let r = log.read(off, 1 << 20, i64::MAX, true).unwrap();
            if r.records.is_empty() {
                break;
            }
            for b in BatchIter::new(&r.records) {
                let b = b.unwrap();
                if b.is_control() {
                    out.push((b.base_offset(), b.control_type()));
                }
                off = b.next_offset();
            }
        }
        out
    }

    fn txn_index_bases(dir: &std::path::Path) -> Vec<i64> {
        let mut out: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".txnindex")?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn compaction_keeps_control_batches_and_every_abort() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        let now = crate::log::now_ms();
        let mut aborts = Vec::new();
        for round in 0..10 {
            for i in 0..8 {
                append_kv(
                    &log,
                    &[(i % 3, Some("value-value-value-value"))],
                    now,
                    Compression::None,
                );
            }
            aborts.push(append_aborted(&log, 100 + round, &[1, 2], now));
            let commit = crate::control_batch(200 + round, 0, crate::ControlType::Commit, 1, now);
            log.append_as_leader(&commit, 0, now).unwrap();
        }
        // Other keys push the last aborted writes of key-1 and key-2 out of the active
        // segment, into the cleanable part.
        for i in 0..40 {
            append_kv(
                &log,
                &[(100 + i, Some("filler-filler-filler"))],
                now,
                Compression::None,
            );
        }
        assert!(log.segment_count() > 3);
        let markers_before = markers(&log);
        assert_eq!(markers_before.len(), 20);
        let files_before = txn_index_bases(dir.path());
        assert!(files_before.len() > 1, "aborts in several segments");

        let first = log.compact_now(now).unwrap().unwrap();
        assert!(first.records_dropped > 0);
        assert_eq!(markers(&log), markers_before, "no control batch dropped");
        assert_eq!(log.aborted_txns(0, i64::MAX).unwrap(), aborts);
        // A second pass over the now small segments merges them.
        log.cleaner.first_dirty.store(0, Ordering::Release);
        let second = log.compact_now(now).unwrap().unwrap();
        assert!(
            second.segments_read > second.segments_written,
            "segments were merged"
        );
        assert_eq!(markers(&log), markers_before, "no control batch dropped");
        // The aborted writes of key-1 and key-2 did not push out their committed values.
        let kept = contents(&log);
        for key in [b"key-1".to_vec(), b"key-2".to_vec()] {
            assert!(
                kept.values()
                    .any(|(k, v)| k.as_ref() == Some(&key) && v.as_deref() != Some(b"aborted")),
                "a committed value of {key:?} survives"
            );
        }
        let end = log.log_end_offset();
        assert_eq!(log.aborted_txns(0, end).unwrap(), aborts);
        // Every index file belongs to a segment, and the merged ones hold the union.
        let bases: Vec<i64> = log.segment_list().iter().map(|s| s.base_offset).collect();
        let files_after = txn_index_bases(dir.path());
        assert!(files_after.len() < files_before.len());
        assert!(files_after.iter().all(|b| bases.contains(b)));
        assert!(!dir.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".cleaned")));

        // The same after a clean reopen and after a crash.
        log.close().unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert_eq!(log.aborted_txns(0, end).unwrap(), aborts);
        drop(log);
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert_eq!(log.aborted_txns(0, end).unwrap(), aborts);
        assert_eq!(markers(&log), markers_before);
    }

    #[test]
    fn a_crash_on_either_side_of_the_swap_keeps_every_abort() {
        let now = crate::log::now_ms();
        // Two segments' worth of data with an abort in each, closed cleanly.
        let setup = |dir: &std::path::Path| {
            let log = Log::open(dir.to_path_buf(), cfg()).unwrap();
            let mut aborts = Vec::new();
            while aborts.len() < 2 || log.segment_count() < 3 {
                for i in 0..4 {
                    append_kv(
                        &log,
                        &[(i, Some("value-value-value"))],
                        now,
                        Compression::None,
                    );
                }
                if aborts.len() < 2 && log.segment_count() > aborts.len() {
                    aborts.push(append_aborted(&log, 7 + aborts.len() as i64, &[1], now));
                }
            }
            let bases: Vec<i64> = log.segment_list().iter().map(|s| s.base_offset).collect();
            assert!(aborts[0].last_offset < bases[1] && aborts[1].last_offset >= bases[1]);
            assert!(aborts[1].last_offset < bases[2]);
            log.close().unwrap();
            (aborts, bases)
        };
        let path = |dir: &std::path::Path, base: i64, suffix: &str| {
            dir.join(format!("{base:020}.{suffix}"))
        };

        // After the commit point: `.swap` holds both segments, the old files of both are
        // deleted, the union is still `.txnindex.cleaned`.
        let dir = tempfile::tempdir().unwrap();
        let (aborts, bases) = setup(dir.path());
        let (b0, b1) = (bases[0], bases[1]);
        let mut joined = std::fs::read(path(dir.path(), b0, "log")).unwrap();
        joined.extend(std::fs::read(path(dir.path(), b1, "log")).unwrap());
        let mut union = std::fs::read(path(dir.path(), b0, "txnindex")).unwrap();
        union.extend(std::fs::read(path(dir.path(), b1, "txnindex")).unwrap());
        std::fs::write(path(dir.path(), b0, "log.swap"), &joined).unwrap();
        std::fs::write(path(dir.path(), b0, "txnindex.cleaned"), &union).unwrap();
        for b in [b0, b1] {
            for s in ["log", "index", "timeindex", "txnindex"] {
                std::fs::remove_file(path(dir.path(), b, s)).unwrap();
            }
        }
        std::fs::remove_file(dir.path().join(crate::checkpoint::CLEAN_SHUTDOWN_FILE)).unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert_eq!(log.aborted_txns(0, i64::MAX).unwrap(), aborts);
        assert_eq!(txn_index_bases(dir.path()), vec![b0]);
        assert!(!path(dir.path(), b0, "txnindex.cleaned").exists());
        assert_eq!(log.segment_list()[1].base_offset, bases[2]);

        // Before the commit point: the cleaned files are dropped, the old ones stay.
        let dir = tempfile::tempdir().unwrap();
        let (aborts, bases) = setup(dir.path());
        let b0 = bases[0];
        std::fs::write(path(dir.path(), b0, "log.cleaned"), b"partial").unwrap();
        std::fs::write(path(dir.path(), b0, "txnindex.cleaned"), [0u8; 34]).unwrap();
        std::fs::remove_file(dir.path().join(crate::checkpoint::CLEAN_SHUTDOWN_FILE)).unwrap();
        let log = Log::open(dir.path().to_path_buf(), cfg()).unwrap();
        assert_eq!(log.aborted_txns(0, i64::MAX).unwrap(), aborts);
        assert_eq!(txn_index_bases(dir.path()), vec![bases[0], bases[1]]);
        assert!(!path(dir.path(), b0, "txnindex.cleaned").exists());
    }
}
