//! One segment: a `.log` file of whole batches plus its `.index` and `.timeindex` (and a
//! `.txnindex` once a transaction is aborted in it), named by the base offset (20 digits, as
//! Kafka). Old segments open their files lazily and a shared
//! [`HandleCache`] closes the least recently used ones above a cap; the active segment is
//! pinned open.
//!
//! Data is read with `pread` into owned buffers handed out as `Bytes`: a concurrent
//! truncation can only make a read short, never fault.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use bytes::Bytes;

use crate::batch::{peek_batch_size, RecordBatch, HEADER_SIZE};
use crate::error::StorageError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::page_cache::CacheMarks;
use crate::txn_index::{TxnIndex, TXN_INDEX_SUFFIX};

pub(crate) const LOG_SUFFIX: &str = "log";
/// Entry spacing when an old segment's index is rebuilt on first use (Kafka's default
/// `index.interval.bytes`; the segment's own config is not at hand there).
const REBUILD_INDEX_INTERVAL_BYTES: u64 = 4096;
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<dir>/<20-digit base offset>.<suffix>`.
pub(crate) fn file_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Locks that survive a panicking holder: the data they guard stays consistent because every
/// mutation is completed or rolled back before anything can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Open files of one segment.
pub(crate) struct Handles {
    pub file: File,
    pub index: RwLock<OffsetIndex>,
    pub time_index: RwLock<TimeIndex>,
}

/// Bounds the number of segments whose files are open (the active segments do not count).
pub struct HandleCache {
    max_open: usize,
    inner: Mutex<LruInner>,
}

struct LruInner {
    tick: u64,
    by_tick: BTreeMap<u64, Weak<Segment>>,
}

impl HandleCache {
    pub fn new(max_open: usize) -> Arc<HandleCache> {
        Arc::new(HandleCache {
            max_open: max_open.max(1),
            inner: Mutex::new(LruInner {
                tick: 0,
                by_tick: BTreeMap::new(),
            }),
        })
    }

    /// Marks `seg` as just used; closes the least recently used segments above the cap.
    fn touch(&self, seg: &Arc<Segment>) {
        let mut victims = Vec::new();
        {
            let mut inner = lock(&self.inner);
            inner.tick += 1;
            let tick = inner.tick;
            let old = seg.lru_tick.swap(tick, Ordering::Relaxed);
            if old != 0 {
                inner.by_tick.remove(&old);
            }
            inner.by_tick.insert(tick, Arc::downgrade(seg));
            while inner.by_tick.len() > self.max_open {
                let Some((t, weak)) = inner.by_tick.pop_first() else {
                    break;
                };
                if let Some(v) = weak.upgrade() {
                    // Only forget it if nobody re-touched it since.
                    if v.lru_tick
                        .compare_exchange(t, 0, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        victims.push(v);
                    }
                }
            }
        }
        // Closed outside the cache lock: lock order is segment → cache, never the reverse.
        for v in victims {
            v.close_handles_if_unpinned();
        }
    }

    fn forget(&self, seg: &Segment) {
        let t = seg.lru_tick.swap(0, Ordering::Relaxed);
        if t != 0 {
            lock(&self.inner).by_tick.remove(&t);
        }
    }

    /// Segments with open files, for tests and metrics.
    pub fn open_count(&self) -> usize {
        lock(&self.inner).by_tick.len()
    }
}

/// Where a read found (or did not find) data in one segment.
pub(crate) enum SegmentRead {
    /// Batches (possibly empty when stopped by `max_offset` or `max_bytes`).
    Data(Bytes),
    /// No batch at or after the offset in this segment: try the next one.
    NotHere,
}

pub(crate) struct Segment {
    pub base_offset: i64,
    dir: PathBuf,
    /// Bytes visible to readers; published after data and indexes are written.
    size: AtomicU64,
    max_timestamp: AtomicI64,
    /// Last offset of the batch holding `max_timestamp`.
    max_timestamp_offset: AtomicI64,
    max_timestamp_known: AtomicBool,
    handles: Mutex<Option<Arc<Handles>>>,
    pinned: AtomicBool,
    deleted: AtomicBool,
    lru_tick: AtomicU64,
    cache: Arc<HandleCache>,
    /// The index sanity check ran (once per process for an old segment).
    index_checked: AtomicBool,
    /// Aborted transactions whose ABORT marker is in this segment (held in memory).
    txn_index: TxnIndex,
    /// How much of the file was released from the page cache (`page_cache`).
    pub(crate) page_cache: CacheMarks,
}

impl Segment {
    pub fn new(dir: &Path, base_offset: i64, size: u64, cache: Arc<HandleCache>) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            size: AtomicU64::new(size),
            max_timestamp: AtomicI64::new(-1),
            max_timestamp_offset: AtomicI64::new(base_offset),
            max_timestamp_known: AtomicBool::new(false),
            handles: Mutex::new(None),
            pinned: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            lru_tick: AtomicU64::new(0),
            cache,
            index_checked: AtomicBool::new(false),
            txn_index: TxnIndex::empty(file_path(dir, base_offset, TXN_INDEX_SUFFIX)),
            page_cache: CacheMarks::default(),
        }
    }

    /// A segment whose files are already open (a compaction result still under its
    /// temporary names). It stays pinned until [`Segment::unpin_fresh`].
    pub fn with_handles(
        dir: &Path,
        base_offset: i64,
        size: u64,
        cache: Arc<HandleCache>,
        handles: Handles,
    ) -> Segment {
        let seg = Segment::new(dir, base_offset, size, cache);
        seg.pinned.store(true, Ordering::Release);
        *lock(&seg.handles) = Some(Arc::new(handles));
        seg
    }

    /// Lets the cache close the files of a segment made by [`Segment::with_handles`] once
    /// its files carry their final names.
    pub fn unpin_fresh(self: &Arc<Self>) {
        self.pinned.store(false, Ordering::Release);
        self.cache.touch(self);
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }

    pub fn path(&self, suffix: &str) -> PathBuf {
        file_path(&self.dir, self.base_offset, suffix)
    }

    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn publish_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn set_max_timestamp(&self, ts: i64, offset: i64) {
        self.max_timestamp.store(ts, Ordering::Relaxed);
        self.max_timestamp_offset.store(offset, Ordering::Relaxed);
        self.max_timestamp_known.store(true, Ordering::Release);
    }

    /// The segment's largest batch max timestamp (-1 when none) and the last offset of the
    /// batch carrying it. For an old segment it is the time index's final entry.
    pub fn max_timestamp(self: &Arc<Self>) -> Result<(i64, i64), StorageError> {
        if !self.max_timestamp_known.load(Ordering::Acquire) {
            let h = self.handles()?;
            let last = read(&h.time_index).last();
            match last {
                Some((ts, off)) => self.set_max_timestamp(ts, off),
                None => self.set_max_timestamp(-1, self.base_offset),
            }
        }
        Ok((
            self.max_timestamp.load(Ordering::Relaxed),
            self.max_timestamp_offset.load(Ordering::Relaxed),
        ))
    }

    /// Open files, opening them if needed (old segments count against the cache cap).
    pub fn handles(self: &Arc<Self>) -> Result<Arc<Handles>, StorageError> {
        let pinned = self.pinned.load(Ordering::Acquire);
        let h = {
            let mut slot = lock(&self.handles);
            match &*slot {
                Some(h) => h.clone(),
                None => {
                    if self.is_deleted() {
                        return Err(StorageError::Closed);
                    }
                    let h = Arc::new(self.open_files()?);
                    *slot = Some(h.clone());
                    h
                }
            }
        };
        if !pinned {
            self.cache.touch(self);
        }
        Ok(h)
    }

    /// The open files, without opening them.
    pub(crate) fn open_handles(&self) -> Option<Arc<Handles>> {
        lock(&self.handles).clone()
    }

    fn open_files(&self) -> Result<Handles, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(LOG_SUFFIX))?;
        let index = OffsetIndex::open(&self.path(INDEX_SUFFIX), self.base_offset)?;
        let time_index = TimeIndex::open(&self.path(TIME_INDEX_SUFFIX), self.base_offset)?;
        let h = Handles {
            file,
            index: RwLock::new(index),
            time_index: RwLock::new(time_index),
        };
        // Indexes of old segments are trusted but checked once per process; a bad one is
        // rebuilt. Later opens (after the cache closed the files) skip the check.
        if !self.pinned.load(Ordering::Acquire) && !self.index_checked.swap(true, Ordering::AcqRel)
        {
            let size = self.size();
            // An empty index on a big segment (lost in a crash) is rebuilt too.
            let sane = read(&h.index).is_sane(size, None)
                && read(&h.time_index).is_sane(None)
                && (size <= 16 * 1024 || !read(&h.index).is_empty());
            if !sane {
                tracing::warn!(segment = %self.path(LOG_SUFFIX).display(), "index failed its sanity check; rebuilding");
                rebuild_indexes(&h, self.base_offset, size, REBUILD_INDEX_INTERVAL_BYTES)?;
            }
        }
        Ok(h)
    }

    fn close_handles_if_unpinned(&self) {
        let mut slot = lock(&self.handles);
        if !self.pinned.load(Ordering::Acquire) {
            *slot = None;
        }
    }

    /// Makes this the active segment: files stay open and the indexes become writable.
    pub fn pin_as_active(
        self: &Arc<Self>,
        index_max_bytes: u64,
    ) -> Result<Arc<Handles>, StorageError> {
        self.pinned.store(true, Ordering::Release);
        self.cache.forget(self);
        let h = self.handles()?;
        write(&h.index).make_writable(index_max_bytes)?;
        write(&h.time_index).make_writable(index_max_bytes)?;
        Ok(h)
    }

    /// The segment stops being active: final time-index entry, indexes trimmed and read-only,
    /// files closable by the cache.
    pub fn unpin(self: &Arc<Self>) -> Result<(), StorageError> {
        // Bound first: the guard must not live through the block (max_timestamp may lock).
        let open = lock(&self.handles).clone();
        if let Some(h) = open {
            let (ts, off) = self.max_timestamp()?;
            {
                let mut ti = write(&h.time_index);
                if ts >= 0 {
                    ti.maybe_append(ts, off);
                }
                ti.trim()?;
            }
            write(&h.index).trim()?;
        }
        self.pinned.store(false, Ordering::Release);
        self.cache.touch(self);
        Ok(())
    }

    /// Trims the indexes without unpinning (clean close of the active segment).
    pub fn trim_indexes_for_close(self: &Arc<Self>) -> Result<(), StorageError> {
        // Bound first: the guard must not live through the block (max_timestamp may lock).
        let open = lock(&self.handles).clone();
        if let Some(h) = open {
            let (ts, off) = self.max_timestamp()?;
            let mut ti = write(&h.time_index);
            if ts >= 0 {
                ti.maybe_append(ts, off);
            }
            ti.flush()?;
            ti.trim()?;
            drop(ti);
            let mut oi = write(&h.index);
            oi.flush()?;
            oi.trim()?;
        }
        Ok(())
    }

    /// Marks deleted, drops open files and removes them from disk.
    pub fn delete_files(&self) -> Result<(), StorageError> {
        self.deleted.store(true, Ordering::Release);
        self.pinned.store(false, Ordering::Release);
        self.cache.forget(self);
        *lock(&self.handles) = None;
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            match std::fs::remove_file(self.path(suffix)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Drops open files without deleting (log close).
    pub fn close(&self) {
        self.pinned.store(false, Ordering::Release);
        self.cache.forget(self);
        *lock(&self.handles) = None;
    }

    /// fsyncs data and indexes.
    pub fn sync(self: &Arc<Self>) -> Result<(), StorageError> {
        let h = self.handles()?;
        h.file.sync_data()?;
        read(&h.index).flush()?;
        read(&h.time_index).flush()?;
        self.txn_index.sync()?;
        Ok(())
    }

    /// Finds the first batch whose last offset is `>= offset`, scanning from the index hint.
    /// Returns its position and header.
    pub fn find_batch(
        self: &Arc<Self>,
        h: &Handles,
        offset: i64,
        size: u64,
    ) -> Result<Option<(u64, [u8; HEADER_SIZE])>, StorageError> {
        let mut pos = read(&h.index).lookup(offset) as u64;
        while pos + HEADER_SIZE as u64 <= size {
            let Some(hdr) = read_header(&h.file, pos)? else {
                return Ok(None);
            };
            let b = RecordBatch::header(&hdr)?;
            if b.last_offset() >= offset {
                return Ok(Some((pos, hdr)));
            }
            pos += b.size_in_bytes() as u64;
        }
        Ok(None)
    }

    /// Kafka Fetch read within this segment (see `Log::read`).
    pub fn read(
        self: &Arc<Self>,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
        bounded_by_max_offset: bool,
    ) -> Result<SegmentRead, StorageError> {
        let h = self.handles()?;
        let size = self.size();
        let Some((pos, hdr)) = self.find_batch(&h, offset, size)? else {
            return Ok(SegmentRead::NotHere);
        };
        let first = RecordBatch::header(&hdr)?;
        if first.base_offset() >= max_offset {
            return Ok(SegmentRead::Data(Bytes::new()));
        }
        let mut available = (size - pos) as usize;
        if bounded_by_max_offset {
            // A high watermark well below the log end: do not read bytes past it.
            if let Some((limit_pos, limit_hdr)) = self.find_batch(&h, max_offset, size)? {
                let b = RecordBatch::header(&limit_hdr)?;
                let limit = if b.base_offset() >= max_offset {
                    limit_pos
                } else {
                    limit_pos + b.size_in_bytes() as u64
                };
                available = available.min(limit.saturating_sub(pos) as usize);
            }
        }
        let want = max_bytes.min(available);
        let mut buf = self.pread_uncached(&h, pos, want)?;
        let end = whole_batches_len(&buf, max_offset);
        if end == 0 {
            if !min_one_batch {
                return Ok(SegmentRead::Data(Bytes::new()));
            }
            let first_size = first.size_in_bytes().min(available);
            buf = self.pread_uncached(&h, pos, first_size)?;
            if buf.len() < first.size_in_bytes() {
                // Truncated under us: serve nothing rather than a partial batch.
                return Ok(SegmentRead::Data(Bytes::new()));
            }
            return Ok(SegmentRead::Data(Bytes::from(buf)));
        }
        buf.truncate(end);
        Ok(SegmentRead::Data(Bytes::from(buf)))
    }

    /// `pread`, and where the range was released from the page cache, what
    /// [`Segment::after_read_of_released`] does (`page_cache`).
    fn pread_uncached(
        self: &Arc<Self>,
        h: &Arc<Handles>,
        pos: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        let buf = pread(&h.file, pos, len)?;
        let end = pos + buf.len() as u64;
        if self.page_cache.is_released(end) {
            self.after_read_of_released(h, pos, end);
        }
        Ok(buf)
    }

    /// Calls `f(position, header)` for each batch header from `from_pos` to the end.
    pub fn for_each_header(
        self: &Arc<Self>,
        from_pos: u64,
        mut f: impl FnMut(u64, &RecordBatch<'_>) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let h = self.handles()?;
        let size = self.size();
        let mut pos = from_pos;
        while pos + HEADER_SIZE as u64 <= size {
            let Some(hdr) = read_header(&h.file, pos)? else {
                break;
            };
            let b = RecordBatch::header(&hdr)?;
            if !f(pos, &b)? {
                break;
            }
            pos += b.size_in_bytes() as u64;
        }
        Ok(())
    }

    /// Reads the whole batch at `pos` whose header says `size` bytes.
    pub fn read_batch_at(self: &Arc<Self>, pos: u64, size: usize) -> Result<Vec<u8>, StorageError> {
        let h = self.handles()?;
        let buf = pread(&h.file, pos, size)?;
        if buf.len() != size {
            return Err(StorageError::corrupt("batch truncated while reading"));
        }
        Ok(buf)
    }
}

/// Total length of the whole batches at the start of `buf` whose base offset is below
/// `max_offset`.
pub(crate) fn whole_batches_len(buf: &[u8], max_offset: i64) -> usize {
    let mut pos = 0usize;
    while let Ok(Some(size)) = peek_batch_size(&buf[pos..]) {
        if pos + size > buf.len() || pos + HEADER_SIZE > buf.len() {
            break;
        }
        let base = i64::from_be_bytes(buf[pos..pos + 8].try_into().unwrap_or([0xff; 8]));
        if base >= max_offset {
            break;
        }
        pos += size;
    }
    pos
}

/// Reads up to `len` bytes at `pos`; shorter if the file is shorter. The buffer is not
/// zeroed first (a Fetch reads a MiB at a time; the memset showed in profiles).
pub(crate) fn pread(file: &File, pos: u64, len: usize) -> Result<Vec<u8>, StorageError> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = libc::off_t::try_from(pos + buf.len() as u64)
            .map_err(|_| std::io::Error::other("segment position beyond off_t"))?;
        let left = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..left];
        // SAFETY: pread writes at most `spare.len()` bytes into the Vec's own spare capacity,
        // through a descriptor `file` owns; `set_len` below covers only the bytes it wrote.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                at,
            )
        };
        match n {
            0 => break,
            // SAFETY: the kernel initialised these `n` bytes (n <= spare.len()).
            n if n > 0 => unsafe { buf.set_len(buf.len() + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(buf)
}

pub(crate) fn read_header(
    file: &File,
    pos: u64,
) -> Result<Option<[u8; HEADER_SIZE]>, StorageError> {
    let buf = pread(file, pos, HEADER_SIZE)?;
    if buf.len() < HEADER_SIZE {
        return Ok(None);
    }
    let mut hdr = [0u8; HEADER_SIZE];
    hdr.copy_from_slice(&buf);
    Ok(Some(hdr))
}

/// Rebuilds both indexes of a segment from its batch headers (no CRC check: used for
/// segments below the recovery point whose index looked wrong).
pub(crate) fn rebuild_indexes(
    h: &Handles,
    base_offset: i64,
    size: u64,
    interval: u64,
) -> Result<(), StorageError> {
    let mut oi = write(&h.index);
    let mut ti = write(&h.time_index);
    oi.clear();
    ti.clear();
    let cap = ((size / interval.max(1)) + 2) * crate::index::TIME_ENTRY_SIZE as u64;
    oi.make_writable(cap)?;
    ti.make_writable(cap)?;
    let mut pos = 0u64;
    let mut since = 0u64;
    let mut max_ts = -1i64;
    let mut max_off = base_offset;
    while pos + HEADER_SIZE as u64 <= size {
        let Some(hdr) = read_header(&h.file, pos)? else {
            break;
        };
        let b = RecordBatch::header(&hdr)?;
        if b.max_timestamp() > max_ts {
            max_ts = b.max_timestamp();
            max_off = b.last_offset();
        }
        if since > interval {
            oi.append(b.last_offset(), pos as u32);
            ti.maybe_append(max_ts, max_off);
            since = 0;
        }
        since += b.size_in_bytes() as u64;
        pos += b.size_in_bytes() as u64;
    }
    if max_ts >= 0 {
        ti.maybe_append(max_ts, max_off);
    }
    oi.trim()?;
    ti.trim()?;
    Ok(())
}
