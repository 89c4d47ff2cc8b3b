//! [`Log`]: one partition replica's segmented log — appends, Fetch reads, truncation,
//! flushing, the leader-epoch checkpoint and producer snapshots. Retention, compaction and
//! timestamp lookups live in their own modules as further `impl Log` blocks.
//!
//! Concurrency: appends and structural changes (roll, truncate, retention, compaction swap)
//! serialize on `writer`; readers never take it. A reader snapshots the log end offset, picks
//! its segment under a short read lock of the segment map and then reads with `pread`. The
//! writer publishes a segment's new size before the new log end offset, so whatever a reader
//! sees below the log end is complete. fsync runs without the segment map lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;

use crate::batch::{validate_client_batch, BatchIter, PatchedHeader, RecordBatch};
use crate::checkpoint::{self, LogOffsets, CLEAN_SHUTDOWN_FILE};
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::epoch_cache::EpochCache;
use crate::error::StorageError;
use crate::producer_snapshot;
use crate::recovery;
use crate::segment::{lock, read, write, HandleCache, Handles, Segment, SegmentRead, LOG_SUFFIX};

/// Old segments with open files per process when a log is opened without a `LogManager`.
pub const DEFAULT_MAX_OPEN_SEGMENTS: usize = 1024;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The time stamped into the batches for LogAppendTime logs, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    pub record_count: u64,
    pub bytes: usize,
}

/// What a read returned.
#[derive(Debug, Clone)]
pub struct ReadInfo {
    /// Whole record batches, possibly empty; never a partial batch.
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// An (offset, timestamp) pair for ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp_ms: i64,
    /// Leader epoch of the batch holding `offset` (-1 if unknown).
    pub leader_epoch: i32,
}

/// State owned by the single appender.
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    pub handles: Arc<Handles>,
    /// Bytes written to the active segment (== its published size between appends).
    pub position: u64,
    pub bytes_since_index: u64,
    /// When the active segment started, for `segment.ms`.
    pub rolling_ts_ms: i64,
    pub max_ts: i64,
    pub max_ts_offset: i64,
}

/// Flush work an append leaves for after the writer lock.
enum AfterCommit {
    Nothing,
    SyncThrough(i64),
    Flush,
}

/// Per-batch facts the writer needs for indexes.
struct BatchMeta {
    size: usize,
    last_offset: i64,
    max_ts: i64,
}

/// One partition replica's log in its own directory.
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) segments: RwLock<BTreeMap<i64, Arc<Segment>>>,
    log_start: AtomicI64,
    log_end: AtomicI64,
    recovery_point: AtomicI64,
    closed: AtomicBool,
    config: RwLock<LogConfig>,
    epochs: Mutex<EpochCache>,
    checkpoint_lock: Mutex<()>,
    last_flush_ms: AtomicI64,
    unflushed_messages: AtomicU64,
    /// Everything below this offset is known fsynced (group commit for `Always`).
    durable_end: Mutex<i64>,
    /// Upper bound for retention and compaction (the broker's high watermark); i64::MAX
    /// until the broker sets it.
    high_watermark: AtomicI64,
    pub(crate) cache: Arc<HandleCache>,
    /// One compaction at a time; also its progress (first dirty offset).
    pub(crate) cleaner: crate::compaction::CleanerState,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn default_cache() -> Arc<HandleCache> {
    static CACHE: OnceLock<Arc<HandleCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| HandleCache::new(DEFAULT_MAX_OPEN_SEGMENTS))
        .clone()
}

/// Writes all of `bufs` at `pos` with positioned vectored writes (pwritev): one system call
/// per append, where a seek and a write took two.
fn write_all_at(file: &File, mut pos: u64, bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// Linux's IOV_MAX.
    const MAX_SLICES: usize = 1024;
    let mut bufs = bufs;
    while !bufs.is_empty() {
        let count = bufs.len().min(MAX_SLICES) as libc::c_int;
        let offset = libc::off_t::try_from(pos)
            .map_err(|_| std::io::Error::other("segment position beyond off_t"))?;
        // SAFETY: std guarantees IoSlice is ABI-compatible with iovec on Unix; the slices
        // and the descriptor (owned by `file`) outlive the call, which only reads them.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                count,
                offset,
            )
        };
        match n {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "short write to segment",
                ))
            }
            n if n > 0 => {
                pos += n as u64;
                IoSlice::advance_slices(&mut bufs, n as usize);
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

impl Log {
    /// Opens (creating if missing) the log in `dir`, recovering after a crash.
    pub fn open(dir: PathBuf, config: LogConfig) -> Result<Log, StorageError> {
        Log::open_with_cache(dir, config, default_cache())
    }

    pub(crate) fn open_with_cache(
        dir: PathBuf,
        config: LogConfig,
        cache: Arc<HandleCache>,
    ) -> Result<Log, StorageError> {
        let loaded = recovery::load(&dir, &config, &cache)?;
        let mut epochs = EpochCache::load(&dir)?;
        epochs.truncate_from_end(loaded.log_end + 1)?;
        epochs.truncate_from_start(loaded.log_start)?;
        producer_snapshot::remove_above(&dir, loaded.log_end)?;
        let scan = loaded.active_scan;
        let now = now_ms();
        let rolling = match scan.first_batch_max_timestamp {
            Some(ts) if ts >= 0 => ts.min(now),
            _ => now,
        };
        let writer = Writer {
            active: loaded.active.clone(),
            handles: loaded.active_handles,
            position: loaded.active.size(),
            bytes_since_index: loaded
                .active
                .size()
                .saturating_sub(scan.last_index_position),
            rolling_ts_ms: rolling,
            max_ts: scan.max_timestamp,
            max_ts_offset: scan.max_timestamp_offset,
        };
        Ok(Log {
            dir,
            writer: Mutex::new(writer),
            segments: RwLock::new(loaded.segments),
            log_start: AtomicI64::new(loaded.log_start),
            log_end: AtomicI64::new(loaded.log_end),
            recovery_point: AtomicI64::new(loaded.recovery_point),
            closed: AtomicBool::new(false),
            config: RwLock::new(config),
            epochs: Mutex::new(epochs),
            checkpoint_lock: Mutex::new(()),
            last_flush_ms: AtomicI64::new(now),
            unflushed_messages: AtomicU64::new(0),
            durable_end: Mutex::new(loaded.recovery_point),
            high_watermark: AtomicI64::new(i64::MAX),
            cache,
            cleaner: crate::compaction::CleanerState::starting_at(loaded.first_dirty),
        })
    }

    /// The directory holding this log's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn check_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Leader path: validates (magic 2, length, CRC-32C, size vs max.message.bytes) the one or
    /// more batches in `batches`, assigns offsets from the log end by rewriting each batch's
    /// base offset and partition leader epoch, and writes them. For LogAppendTime logs it
    /// stamps `now_ms` (and fixes the CRC).
    pub fn append_as_leader(
        &self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.check_open()?;
        let cfg = self.config();
        let mut parsed = Vec::new();
        for b in BatchIter::new(batches) {
            let b = b?;
            validate_client_batch(&b, cfg.max_message_bytes as usize)?;
            parsed.push(b);
        }
        let log_append = cfg.timestamp_type == TimestampType::LogAppendTime;
        let mut w = lock(&self.writer);
        self.check_open()?;
        let base = self.log_end();
        if parsed.is_empty() {
            return Ok(self.empty_append_info());
        }
        let offsets: i64 = parsed
            .iter()
            .map(|b| b.last_offset_delta() as i64 + 1)
            .sum();
        let last = base + offsets - 1;
        self.maybe_roll(&mut w, &cfg, batches.len() as u64, base, last, now_ms)?;

        let mut headers = Vec::with_capacity(parsed.len());
        let mut metas = Vec::with_capacity(parsed.len());
        let mut next = base;
        let mut records = 0u64;
        for b in &parsed {
            let mut h = PatchedHeader::new(b);
            h.set_base_offset(next);
            h.set_partition_leader_epoch(leader_epoch);
            let max_ts = if log_append {
                h.set_log_append_time(now_ms, b.records_bytes());
                now_ms
            } else {
                b.max_timestamp()
            };
            next += b.last_offset_delta() as i64 + 1;
            metas.push(BatchMeta {
                size: b.size_in_bytes(),
                last_offset: next - 1,
                max_ts,
            });
            records += b.record_count() as u64;
            headers.push(h);
        }
        let mut slices = Vec::with_capacity(parsed.len() * 2);
        for (b, h) in parsed.iter().zip(&headers) {
            slices.push(IoSlice::new(&h.bytes));
            slices.push(IoSlice::new(b.records_bytes()));
        }
        if leader_epoch >= 0 && leader_epoch > self.latest_epoch() {
            lock(&self.epochs).assign(leader_epoch, base)?;
        }
        let after = self.commit(&mut w, &cfg, &mut slices, &metas, next, records)?;
        drop(w);
        self.after_commit(after)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: last,
            log_append_time_ms: if log_append { now_ms } else { -1 },
            log_start_offset: self.log_start_offset(),
            record_count: records,
            bytes: batches.len(),
        })
    }

    fn empty_append_info(&self) -> AppendInfo {
        AppendInfo {
            base_offset: -1,
            last_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset(),
            record_count: 0,
            bytes: 0,
        }
    }

    /// Follower path: batches keep their offsets, which must continue the log end.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        self.check_open()?;
        let cfg = self.config();
        // CRCs are checked before taking the writer lock; offsets after.
        let mut parsed = Vec::new();
        for b in BatchIter::new(batches) {
            let b = b?;
            b.validate_stored()?;
            parsed.push(b);
        }
        let mut w = lock(&self.writer);
        self.check_open()?;
        let leo = self.log_end();
        let mut metas = Vec::new();
        let mut epochs_seen = Vec::new();
        let mut next = leo;
        let mut records = 0u64;
        let mut first = None;
        for b in parsed {
            if b.base_offset() < next {
                return Err(StorageError::NonMonotonicOffset(format!(
                    "batch base offset {} below the expected {next}",
                    b.base_offset()
                )));
            }
            first.get_or_insert(b.base_offset());
            epochs_seen.push((b.partition_leader_epoch(), b.base_offset()));
            next = b.next_offset();
            records += b.record_count() as u64;
            metas.push(BatchMeta {
                size: b.size_in_bytes(),
                last_offset: b.last_offset(),
                max_ts: b.max_timestamp(),
            });
        }
        let Some(first) = first else {
            return Ok(self.empty_append_info());
        };
        self.maybe_roll(
            &mut w,
            &cfg,
            batches.len() as u64,
            first,
            next - 1,
            now_ms(),
        )?;
        {
            let mut epochs = lock(&self.epochs);
            for (epoch, base) in epochs_seen {
                if epoch >= 0 && epoch > epochs.latest_epoch() {
                    epochs.assign(epoch, base)?;
                }
            }
        }
        let mut slices = [IoSlice::new(batches)];
        let after = self.commit(&mut w, &cfg, &mut slices, &metas, next, records)?;
        drop(w);
        self.after_commit(after)?;
        Ok(AppendInfo {
            base_offset: first,
            last_offset: next - 1,
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset(),
            record_count: records,
            bytes: batches.len(),
        })
    }

    /// Rolls to a new segment at `first` when the next append would not fit the active one.
    fn maybe_roll(
        &self,
        w: &mut Writer,
        cfg: &LogConfig,
        add_bytes: u64,
        first: i64,
        last: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let max_segment = cfg.segment_bytes.clamp(1, i32::MAX as u64);
        let offset_overflow = last - w.active.base_offset > i32::MAX as i64;
        if w.position == 0 {
            if offset_overflow {
                self.roll(w, first, now_ms)?;
            }
            return Ok(());
        }
        let full = w.position + add_bytes > max_segment
            || now_ms.saturating_sub(w.rolling_ts_ms) > cfg.segment_ms
            || read(&w.handles.index).is_full()
            || read(&w.handles.time_index).is_full()
            || offset_overflow;
        if full {
            self.roll(w, first, now_ms)?;
        }
        Ok(())
    }

    /// Starts a new active segment at `new_base`; the old one is sealed (indexes trimmed).
    pub(crate) fn roll(
        &self,
        w: &mut Writer,
        new_base: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let idx_max = self.config().index_max_bytes();
        let old = w.active.clone();
        if old.base_offset == new_base && w.position == 0 {
            return Ok(());
        }
        let log_path = crate::segment::file_path(&self.dir, new_base, LOG_SUFFIX);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        let seg = Arc::new(Segment::new(&self.dir, new_base, 0, self.cache.clone()));
        let handles = seg.pin_as_active(idx_max)?;
        if w.position == 0 {
            // An empty active segment is replaced, not kept.
            write(&self.segments).remove(&old.base_offset);
            old.delete_files()?;
        } else {
            old.set_max_timestamp(w.max_ts, w.max_ts_offset);
            old.unpin()?;
        }
        write(&self.segments).insert(new_base, seg.clone());
        tracing::debug!(dir = %self.dir.display(), new_base, "rolled segment");
        *w = Writer {
            active: seg,
            handles,
            position: 0,
            bytes_since_index: 0,
            rolling_ts_ms: now_ms,
            max_ts: -1,
            max_ts_offset: new_base,
        };
        Ok(())
    }

    /// Writes prepared batches to the active segment, indexes them, applies the flush
    /// policy and publishes them to readers.
    fn commit(
        &self,
        w: &mut Writer,
        cfg: &LogConfig,
        slices: &mut [IoSlice<'_>],
        metas: &[BatchMeta],
        new_end: i64,
        records: u64,
    ) -> Result<AfterCommit, StorageError> {
        let start = w.position;
        if let Err(e) = write_all_at(&w.handles.file, start, slices) {
            // Leave no partial batch behind for readers or recovery.
            let _ = w.handles.file.set_len(start);
            return Err(e.into());
        }
        {
            let mut oi = write(&w.handles.index);
            let mut ti = write(&w.handles.time_index);
            let mut pos = start;
            for m in metas {
                if m.max_ts > w.max_ts {
                    w.max_ts = m.max_ts;
                    w.max_ts_offset = m.last_offset;
                }
                if w.bytes_since_index > cfg.index_interval_bytes as u64 {
                    oi.append(m.last_offset, pos as u32);
                    ti.maybe_append(w.max_ts, w.max_ts_offset);
                    w.bytes_since_index = 0;
                }
                w.bytes_since_index += m.size as u64;
                pos += m.size as u64;
            }
            w.position = pos;
        }
        w.active.set_max_timestamp(w.max_ts, w.max_ts_offset);
        debug_assert!(new_end > self.log_end());
        w.active.publish_size(w.position);
        self.log_end.store(new_end, Ordering::Release);
        Ok(match cfg.flush {
            FlushPolicy::Always => AfterCommit::SyncThrough(new_end),
            FlushPolicy::Every { messages, .. } => {
                let n = self
                    .unflushed_messages
                    .fetch_add(records, Ordering::Relaxed)
                    + records;
                if messages > 0 && n >= messages {
                    AfterCommit::Flush
                } else {
                    AfterCommit::Nothing
                }
            }
            FlushPolicy::None => AfterCommit::Nothing,
        })
    }

    /// Runs the flush an append asked for, after the writer lock is released so that other
    /// appends and reads go on meanwhile.
    fn after_commit(&self, after: AfterCommit) -> Result<(), StorageError> {
        match after {
            AfterCommit::SyncThrough(end) => self.sync_through(end),
            AfterCommit::Flush => self.flush_inner(),
            AfterCommit::Nothing => Ok(()),
        }
    }

    /// Group commit for `FlushPolicy::Always`: makes everything below `end` durable. Appends
    /// that wait here together share one fsync: whoever gets the lock syncs all that was
    /// written by then. The recovery-point checkpoint is not rewritten (three fsyncs);
    /// recovery re-checks the unflushed tail anyway.
    fn sync_through(&self, end: i64) -> Result<(), StorageError> {
        let mut durable = lock(&self.durable_end);
        if *durable >= end {
            return Ok(());
        }
        let target = self.log_end();
        let segs: Vec<Arc<Segment>> = {
            let segs = read(&self.segments);
            let floor = segs
                .range(..=*durable)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b);
            segs.range(floor..).map(|(_, s)| s.clone()).collect()
        };
        for s in segs {
            let h = match s.handles() {
                Ok(h) => h,
                Err(_) if s.is_deleted() => continue,
                Err(e) => return Err(e),
            };
            h.file.sync_data()?;
        }
        *durable = (*durable).max(target);
        Ok(())
    }

    /// Kafka Fetch read: whole batches from the one containing `offset`, at most `max_bytes`
    /// (but at least one batch when `min_one_batch`), none whose base offset is
    /// `>= max_offset` (the high watermark), within one segment. `offset == log end` → empty.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadInfo, StorageError> {
        self.check_open()?;
        // A segment deleted under us by retention is retried; bounded.
        for _ in 0..4 {
            let leo = self.log_end();
            let start = self.log_start_offset();
            if offset < start || offset > leo {
                return Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    log_start: start,
                    log_end: leo,
                });
            }
            let info = |records: Bytes| ReadInfo {
                records,
                log_start_offset: start,
                log_end_offset: leo,
            };
            if offset == leo {
                return Ok(info(Bytes::new()));
            }
            let max_offset = max_offset.min(leo);
            let mut seg = {
                let segs = read(&self.segments);
                segs.range(..=offset)
                    .next_back()
                    .or_else(|| segs.range(offset..).next())
                    .map(|(_, s)| s.clone())
            };
            let mut raced = false;
            while let Some(s) = seg {
                match s.read(
                    offset,
                    max_bytes,
                    max_offset,
                    min_one_batch,
                    max_offset < leo,
                ) {
                    Ok(SegmentRead::Data(b)) => return Ok(info(b)),
                    Ok(SegmentRead::NotHere) => {
                        seg = read(&self.segments)
                            .range(s.base_offset + 1..)
                            .next()
                            .map(|(_, s)| s.clone());
                    }
                    Err(_) if s.is_deleted() => {
                        raced = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !raced {
                return Ok(info(Bytes::new()));
            }
        }
        Err(StorageError::OffsetOutOfRange {
            requested: offset,
            log_start: self.log_start_offset(),
            log_end: self.log_end(),
        })
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end()
    }

    pub(crate) fn log_end(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    pub(crate) fn set_log_start(&self, start: i64) -> Result<(), StorageError> {
        self.log_start.fetch_max(start, Ordering::AcqRel);
        lock(&self.epochs).truncate_from_start(self.log_start_offset())?;
        self.write_checkpoint()
    }

    /// The broker's high watermark: retention and compaction never touch data at or above
    /// it. Until set, the log end bounds them.
    pub fn set_high_watermark(&self, offset: i64) {
        self.high_watermark.store(offset, Ordering::Release);
    }

    pub(crate) fn upper_bound(&self) -> i64 {
        self.high_watermark
            .load(Ordering::Acquire)
            .min(self.log_end())
    }

    /// Removes every record at or above `offset` (follower truncation). A batch that holds
    /// `offset` is removed whole, so the log end can end up below `offset`; it never ends in
    /// the middle of a batch.
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        self.check_open()?;
        let mut w = lock(&self.writer);
        self.check_open()?;
        let leo = self.log_end();
        if offset >= leo {
            return Ok(());
        }
        let now = now_ms();
        if offset < self.log_start_offset() {
            return self.truncate_fully_and_start_at(&mut w, offset.max(0), now);
        }
        let (floor, victims) = {
            let segs = read(&self.segments);
            let floor = segs.range(..=offset).next_back().map(|(_, s)| s.clone());
            let victims: Vec<Arc<Segment>> =
                segs.range(offset + 1..).map(|(_, s)| s.clone()).collect();
            (floor, victims)
        };
        let Some(floor) = floor else {
            return self.truncate_fully_and_start_at(&mut w, offset.max(0), now);
        };
        // Position of the first batch with last offset >= offset, and the end of data before it.
        let h = floor.handles()?;
        let size = floor.size();
        let found = floor.find_batch(&h, offset, size)?;
        let cut = found.map_or(size, |(pos, _)| pos);
        let new_end = match found {
            Some((_, hdr)) => RecordBatch::header(&hdr)?.base_offset().min(offset),
            None => offset,
        };
        // Readers first lose sight of the data, then it goes.
        self.log_end
            .store(new_end.max(self.log_start_offset()), Ordering::Release);
        {
            let mut segs = write(&self.segments);
            for v in &victims {
                segs.remove(&v.base_offset);
            }
        }
        for v in &victims {
            v.delete_files()?;
        }
        let is_active = Arc::ptr_eq(&floor, &w.active);
        let handles = if is_active {
            w.handles.clone()
        } else {
            floor.pin_as_active(self.config().index_max_bytes())?
        };
        h.file.set_len(cut)?;
        floor.publish_size(cut);
        let (max_ts, max_off, last_index_pos) = {
            let mut oi = write(&handles.index);
            let mut ti = write(&handles.time_index);
            oi.truncate_to_position(cut);
            ti.truncate_to_offset(new_end);
            let (mut ts, mut off) = ti.last().unwrap_or((-1, floor.base_offset));
            let from = oi.last().map_or(0, |(_, p)| p as u64);
            drop((oi, ti));
            floor.for_each_header(from, |_, b| {
                if b.max_timestamp() > ts {
                    ts = b.max_timestamp();
                    off = b.last_offset();
                }
                Ok(true)
            })?;
            (ts, off, from)
        };
        floor.set_max_timestamp(max_ts, max_off);
        let rolling = if is_active { w.rolling_ts_ms } else { now };
        *w = Writer {
            active: floor.clone(),
            handles,
            position: cut,
            bytes_since_index: cut.saturating_sub(last_index_pos),
            rolling_ts_ms: rolling,
            max_ts,
            max_ts_offset: max_off,
        };
        self.after_truncation(new_end.max(self.log_start_offset()))
    }

    fn truncate_fully_and_start_at(
        &self,
        w: &mut Writer,
        offset: i64,
        now: i64,
    ) -> Result<(), StorageError> {
        let idx_max = self.config().index_max_bytes();
        let victims: Vec<Arc<Segment>> = {
            let mut segs = write(&self.segments);
            std::mem::take(&mut *segs).into_values().collect()
        };
        self.log_end.store(offset, Ordering::Release);
        self.log_start.store(offset, Ordering::Release);
        for v in &victims {
            v.delete_files()?;
        }
        let log_path = crate::segment::file_path(&self.dir, offset, LOG_SUFFIX);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        let seg = Arc::new(Segment::new(&self.dir, offset, 0, self.cache.clone()));
        let handles = seg.pin_as_active(idx_max)?;
        write(&self.segments).insert(offset, seg.clone());
        *w = Writer {
            active: seg,
            handles,
            position: 0,
            bytes_since_index: 0,
            rolling_ts_ms: now,
            max_ts: -1,
            max_ts_offset: offset,
        };
        lock(&self.epochs).clear()?;
        self.after_truncation(offset)
    }

    fn after_truncation(&self, new_end: i64) -> Result<(), StorageError> {
        // Aborts whose marker was cut off did not happen as far as this replica knows.
        for s in self.segment_list() {
            s.txn_index().truncate_from(new_end)?;
        }
        lock(&self.epochs).truncate_from_end(new_end)?;
        producer_snapshot::remove_above(&self.dir, new_end)?;
        self.recovery_point.fetch_min(new_end, Ordering::AcqRel);
        {
            // Waits for a group-commit fsync under way (it holds this lock throughout), so
            // that it cannot raise the mark above the new end afterwards.
            let mut durable = lock(&self.durable_end);
            *durable = (*durable).min(new_end);
        }
        self.cleaner.clamp(new_end);
        self.write_checkpoint()
    }

    /// Records that `epoch` starts at `start_offset` in the leader-epoch checkpoint.
    pub fn assign_leader_epoch(&self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        self.check_open()?;
        lock(&self.epochs).assign(epoch, start_offset)
    }

    /// OffsetForLeaderEpoch: the largest epoch <= `epoch` and the end offset of that epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        lock(&self.epochs).end_offset_for(epoch, self.log_end())
    }

    /// The latest leader epoch in the checkpoint, -1 when none.
    pub fn latest_epoch(&self) -> i32 {
        lock(&self.epochs).latest_epoch()
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        self.check_open()?;
        self.flush_inner()
    }

    /// fsyncs every segment from the recovery point on, then moves the recovery point to the
    /// log end seen before syncing. Holds no lock that readers or the appender need.
    pub(crate) fn flush_inner(&self) -> Result<(), StorageError> {
        let target = self.log_end();
        let rp = self.recovery_point.load(Ordering::Acquire);
        let segs: Vec<Arc<Segment>> = {
            let segs = read(&self.segments);
            let floor = segs.range(..=rp).next_back().map_or(i64::MIN, |(b, _)| *b);
            segs.range(floor..).map(|(_, s)| s.clone()).collect()
        };
        self.unflushed_messages.store(0, Ordering::Relaxed);
        self.last_flush_ms.store(now_ms(), Ordering::Relaxed);
        for s in segs {
            match s.sync() {
                Ok(()) => {}
                Err(_) if s.is_deleted() => {}
                Err(e) => return Err(e),
            }
        }
        self.sync_txn_indexes()?;
        self.advance_recovery_point(target)
    }

    pub(crate) fn recovery_point_offset(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    pub(crate) fn advance_recovery_point_to(&self, target: i64) -> Result<(), StorageError> {
        self.advance_recovery_point(target)
    }

    fn advance_recovery_point(&self, target: i64) -> Result<(), StorageError> {
        let _g = lock(&self.checkpoint_lock);
        let target = target.min(self.log_end());
        if target > self.recovery_point.load(Ordering::Acquire) {
            self.recovery_point.store(target, Ordering::Release);
            self.write_checkpoint_locked()?;
        }
        Ok(())
    }

    pub(crate) fn write_checkpoint(&self) -> Result<(), StorageError> {
        let _g = lock(&self.checkpoint_lock);
        self.write_checkpoint_locked()
    }

    fn write_checkpoint_locked(&self) -> Result<(), StorageError> {
        checkpoint::write_offsets(
            &self.dir,
            LogOffsets {
                recovery_point: self.recovery_point.load(Ordering::Acquire),
                log_start: self.log_start_offset(),
                first_dirty: self.cleaner.first_dirty(),
            },
        )
    }

    /// Flushes when `flush.ms` has passed (called by the log manager's background thread).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), StorageError> {
        if let FlushPolicy::Every { interval_ms, .. } = self.config().flush {
            let last = self.last_flush_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) >= interval_ms as i64
                && self.recovery_point.load(Ordering::Acquire) < self.log_end()
            {
                self.check_open()?;
                self.flush_inner()?;
            }
        }
        Ok(())
    }

    /// Flushes and writes the clean-shutdown marker; later calls fail with `Closed`.
    pub fn close(&self) -> Result<(), StorageError> {
        let w = lock(&self.writer);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(StorageError::Closed);
        }
        self.flush_inner()?;
        w.active.set_max_timestamp(w.max_ts, w.max_ts_offset);
        w.active.trim_indexes_for_close()?;
        w.active.sync()?;
        {
            let f = File::create(self.dir.join(CLEAN_SHUTDOWN_FILE))?;
            f.sync_all()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        for s in read(&self.segments).values() {
            s.close();
        }
        Ok(())
    }

    /// Closes without the clean-shutdown marker and removes the directory (topic deletion).
    pub(crate) fn close_and_delete(&self) -> Result<(), StorageError> {
        let _w = lock(&self.writer);
        self.closed.store(true, Ordering::Release);
        for s in read(&self.segments).values() {
            s.close();
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Bytes on disk over all segments.
    pub fn size_bytes(&self) -> u64 {
        read(&self.segments).values().map(|s| s.size()).sum()
    }

    /// Number of segments (for metrics and tests).
    pub fn segment_count(&self) -> usize {
        read(&self.segments).len()
    }

    pub fn config(&self) -> LogConfig {
        read(&self.config).clone()
    }

    pub fn update_config(&self, config: LogConfig) {
        *write(&self.config) = config;
    }

    /// Stores an opaque producer-state snapshot taken at `offset`.
    pub fn save_producer_snapshot(&self, offset: i64, data: &[u8]) -> Result<(), StorageError> {
        self.check_open()?;
        producer_snapshot::save(&self.dir, offset, data)
    }

    /// The newest producer-state snapshot at or below the log end, if any.
    pub fn load_producer_snapshot(&self) -> Result<Option<(i64, Vec<u8>)>, StorageError> {
        self.check_open()?;
        producer_snapshot::load(&self.dir, self.log_end())
    }

    #[cfg(test)]
    pub(crate) fn durable_end_for_tests(&self) -> &Mutex<i64> {
        &self.durable_end
    }

    /// Segments in offset order (a snapshot of the map).
    pub(crate) fn segment_list(&self) -> Vec<Arc<Segment>> {
        read(&self.segments).values().cloned().collect()
    }
}
