//! The page-cache budget: how much of what the logs write stays in the kernel's page cache.
//!
//! Left alone, the kernel keeps every page an append fills until memory runs out, so the
//! cache grows with everything written, and every append needs a page the kernel has never
//! handed out before. That is not free: on virtual machines whose host backs guest memory on
//! first touch, and takes back free memory within seconds (the 2-core machines this project
//! is measured on: virtio-balloon free page reporting), writing a GiB into untouched memory
//! costs 2.8 s of kernel time against 0.3 s into memory used before, and it was most of the
//! broker's CPU per GiB produced once a few GiB had been written. Redpanda bounds its cache
//! for the same reason; Kafka does not (with no budget Sluice behaves like Kafka).
//!
//! So the log manager's page-cache thread applies a [`PageCacheBudget`] every [`INTERVAL`]
//! while logs grow ([`IDLE_INTERVAL`] otherwise)
//! (`log.page.cache.max.bytes`, default 1 GiB): when the bytes written and not yet released
//! over all logs exceed it, the least recently written logs' oldest data is written back
//! (`sync_file_range`, waiting for that range's I/O, in that thread) and then advised out of
//! the cache (`posix_fadvise(DONTNEED)`). The advice never discards a dirty page, so no
//! data is at risk. The freed pages go straight back to the appends that needed them, so
//! past the budget the cache recycles its own pages; consumers reading recent data (the
//! tail, or a topic just written) still read from memory.
//!
//! A Fetch of released data reads from disk and drops what it read, so a consumer catching
//! up on old data does not grow the cache again, and a prefetch thread reads ahead of it so
//! the disk works while the response travels.
//!
//! Everything here is advice: a failing call is ignored (the cache just stays bigger).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::segment::{read, Handles, Segment};

/// The page size the active segment's release stops short of (its last, partial page is
/// still being appended to; dropping it would make the next append read it back).
const PAGE: u64 = 4096;

/// Per segment: how far its pages were released from the page cache.
#[derive(Default)]
pub(crate) struct CacheMarks {
    /// Pages below this position were written back and advised out (a read below it drops
    /// what it read).
    released: AtomicU64,
    /// The furthest end of a read of released data: a prefetch that starts below it is
    /// late (the reader passed it) and skipped.
    read_end: AtomicU64,
}

impl CacheMarks {
    /// Whether everything below `end` lies in the part of the segment kept out of the cache.
    pub(crate) fn is_released(&self, end: u64) -> bool {
        end <= self.released.load(Ordering::Acquire)
    }
}

/// Writes `[from, to)` of `file` back to disk and waits for that I/O (not a durability
/// point: no metadata, no device flush; it only makes the pages clean).
fn write_back(file: &File, from: u64, to: u64) {
    if to <= from {
        return;
    }
    // SAFETY: plain system call on a descriptor `file` owns; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
}

/// The largest page-cache folio (2 MiB on x86-64).
const MAX_FOLIO: u64 = 2 << 20;

/// Advises the kernel to drop the clean cached pages of `[from, to)` of `file`. The kernel
/// only drops folios wholly inside the range, and a large folio (ext4 has them since Linux
/// 6.16) can straddle `from`, where the previous range ended; so the advice starts up to
/// [`MAX_FOLIO`] earlier. Callers only drop ranges whose data before `from` was released
/// as well. (Advice for pages already gone costs a lookup.)
fn drop_pages(file: &File, from: u64, to: u64) {
    if to <= from {
        return;
    }
    let from = from.saturating_sub(MAX_FOLIO);
    advise(file, from, to - from, libc::POSIX_FADV_DONTNEED);
}

fn advise(file: &File, from: u64, len: u64, advice: libc::c_int) {
    // SAFETY: plain system call on a descriptor `file` owns; no memory is passed.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            len as libc::off_t,
            advice,
        );
    }
}

/// How far ahead of a read of released data the prefetch thread reads.
const PREFETCH: u64 = 8 << 20;

/// One prefetch request: read `[from, from + PREFETCH)` of `segment` into the cache.
struct Prefetch {
    segment: Arc<Segment>,
    handles: Arc<Handles>,
    from: u64,
}

/// The prefetch thread's queue, started on first use. Requests beyond its capacity are
/// dropped (a prefetch is an optimisation; the read itself does not wait for it).
fn prefetcher() -> Option<&'static SyncSender<Prefetch>> {
    static QUEUE: OnceLock<Option<SyncSender<Prefetch>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Prefetch>(64);
            let spawned = std::thread::Builder::new()
                .name("sluice-prefetch".into())
                .spawn(move || {
                    for p in rx {
                        let marks = &p.segment.page_cache;
                        if marks.read_end.load(Ordering::Acquire) > p.from {
                            continue;
                        }
                        advise(&p.handles.file, p.from, PREFETCH, libc::POSIX_FADV_WILLNEED);
                        // The reader may have passed `from` meanwhile and dropped pages this
                        // brought back: drop them again.
                        let read_end = marks.read_end.load(Ordering::Acquire);
                        if read_end > p.from {
                            drop_pages(&p.handles.file, p.from, read_end);
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "no prefetch thread; reads of released data wait for the disk");
                    None
                }
            }
        })
        .as_ref()
}

impl Segment {
    /// After a read of `[pos, end)` of released data: drops what was read (a consumer
    /// catching up does not refill the cache) and has the prefetch thread read the next
    /// [`PREFETCH`] bytes into the cache meanwhile, so the consumer's next fetch finds them
    /// there while this one travels (the reading thread does not wait for that work).
    pub(crate) fn after_read_of_released(self: &Arc<Self>, h: &Arc<Handles>, pos: u64, end: u64) {
        self.page_cache.read_end.fetch_max(end, Ordering::AcqRel);
        drop_pages(&h.file, pos, end);
        if let Some(queue) = prefetcher() {
            let _ = queue.try_send(Prefetch {
                segment: self.clone(),
                handles: h.clone(),
                from: end,
            });
        }
    }

    /// Releases this segment's pages below `target`; returns how many bytes that was.
    /// `whole` says the segment will not grow (it is not the active one); the active one
    /// keeps its last partial page.
    fn release_cache(self: &Arc<Self>, target: u64, whole: bool) -> u64 {
        let marks = &self.page_cache;
        let released = self.released();
        let size = self.size();
        let target = if whole {
            target.min(size)
        } else {
            target.min(size / PAGE * PAGE)
        };
        // Files of an old segment are not opened for advice: not open means nobody wrote
        // or read it lately (a read of released data drops what it read itself).
        let Some(h) = self.open_handles() else {
            marks.released.store(size, Ordering::Release);
            return size.saturating_sub(released);
        };
        if target > released {
            write_back(&h.file, released, target);
            drop_pages(&h.file, released, target);
            marks.released.store(target, Ordering::Release);
            target - released
        } else {
            marks.released.store(released, Ordering::Release);
            0
        }
    }

    /// The released mark, following a truncation down to the end.
    fn released(&self) -> u64 {
        self.page_cache
            .released
            .load(Ordering::Acquire)
            .min(self.size())
    }

    /// Whether this segment has nothing left to release.
    fn fully_released(&self) -> bool {
        self.page_cache.released.load(Ordering::Acquire) >= self.size()
    }
}

impl Log {
    /// Bytes written to this log since its pages were last released: what the page cache
    /// may hold of its appends (what readers bring back of released data they drop again).
    pub fn unreleased_bytes(&self) -> u64 {
        if self.is_closed() {
            return 0;
        }
        let segs = read(&self.segments);
        let mut total = 0u64;
        // Newest first; the older segments before a fully released one were released by
        // earlier passes.
        for (i, seg) in segs.values().rev().enumerate() {
            if i > 0 && seg.fully_released() {
                break;
            }
            total += seg.size().saturating_sub(seg.released());
        }
        total
    }

    /// Releases about `bytes` of this log's oldest unreleased data: written back, then
    /// dropped from the page cache. Returns how many bytes it released.
    pub fn release_oldest_page_cache(&self, bytes: u64) -> u64 {
        if self.is_closed() {
            return 0;
        }
        let pending: Vec<(Arc<Segment>, bool)> = {
            let segs = read(&self.segments);
            let last = segs.len().saturating_sub(1);
            segs.values()
                .enumerate()
                .filter(|(_, seg)| !seg.fully_released())
                .map(|(i, seg)| (seg.clone(), i < last))
                .collect()
        };
        let mut left = bytes;
        for (seg, whole) in pending {
            if left == 0 {
                break;
            }
            let target = seg.released().saturating_add(left).min(seg.size());
            left = left.saturating_sub(seg.release_cache(target, whole));
        }
        bytes - left
    }
}

/// The page-cache budget (module docs), applied by the log manager's page-cache thread
/// every [`INTERVAL`]: when the logs' unreleased bytes exceed `max_bytes`, the least
/// recently written logs' oldest data is released until they are 1/8 below it (so a
/// release is a large range, not a sliver every pass).
pub struct PageCacheBudget {
    max_bytes: u64,
    /// Per log (by address): its end offset at the last pass, when it last grew, and its
    /// unreleased bytes then (recounted only when it grew or was released from).
    seen: HashMap<usize, Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    end: i64,
    grew_at: Instant,
    unreleased: Option<u64>,
}

/// How often the budget is applied while logs grow: what is written in this time beyond
/// the budget is what the page cache takes from untouched memory before pages are recycled.
pub const INTERVAL: Duration = Duration::from_millis(20);
/// How often it is applied after a pass in which no log grew (a pass costs ~250 ns per
/// log: 2.5% of a core with 2,000 idle partitions at [`INTERVAL`]).
pub const IDLE_INTERVAL: Duration = Duration::from_millis(250);

impl PageCacheBudget {
    pub fn new(max_bytes: u64) -> PageCacheBudget {
        PageCacheBudget {
            max_bytes,
            seen: HashMap::new(),
        }
    }

    /// One pass over `logs` (every open log). Waits for the writeback of what it releases.
    /// Returns whether any log grew since the previous pass.
    pub fn pass(&mut self, logs: &[Arc<Log>]) -> bool {
        let now = Instant::now();
        let mut grew = false;
        let mut seen = HashMap::with_capacity(logs.len());
        let mut entries: Vec<(Instant, u64, &Arc<Log>)> = Vec::new();
        let mut total = 0u64;
        for log in logs {
            let key = Arc::as_ptr(log) as usize;
            let end = log.log_end_offset();
            let mut s = match self.seen.get(&key) {
                Some(s) if s.end == end => *s,
                _ => {
                    grew = true;
                    Seen {
                        end,
                        grew_at: now,
                        unreleased: None,
                    }
                }
            };
            let unreleased = *s.unreleased.get_or_insert_with(|| log.unreleased_bytes());
            seen.insert(key, s);
            total += unreleased;
            if unreleased > 0 {
                entries.push((s.grew_at, unreleased, log));
            }
        }
        self.seen = seen;
        if total <= self.max_bytes {
            return grew;
        }
        let mut excess = total - (self.max_bytes - self.max_bytes / 8);
        entries.sort_by_key(|e| e.0);
        for (_, unreleased, log) in entries {
            if excess == 0 {
                break;
            }
            let released = log.release_oldest_page_cache(excess.min(unreleased));
            excess = excess.saturating_sub(released);
            if let Some(s) = self.seen.get_mut(&(Arc::as_ptr(log) as usize)) {
                s.unreleased = None;
            }
        }
        grew
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::segment::LOG_SUFFIX;
    use crate::tests::{client_batch, open, read_all, small_config};
    use crate::{BatchIter, LogConfig};

    /// A temporary directory on a file system with a real page cache: tmpfs pages cannot be
    /// dropped, so a tmpfs TMPDIR falls back to a directory beside the crate.
    fn disk_tempdir() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid C string and `fs` a valid out-parameter. (The casts are
        // for targets where f_type is not i64.)
        #[allow(clippy::unnecessary_cast)]
        let on_tmpfs = unsafe { libc::statfs(c.as_ptr(), &mut fs) } == 0
            && fs.f_type as i64 == libc::TMPFS_MAGIC as i64;
        if on_tmpfs {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    }

    /// Which 4 KiB pages of `path` are in the page cache (mincore on a read-only map, which
    /// faults nothing in).
    fn resident_pages(path: &Path) -> Vec<bool> {
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a read-only shared map of a file nobody truncates during the test.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `map` covers `len` bytes from a page-aligned address; `vec` has one byte
        // per page.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore failed");
        vec.into_iter().map(|b| b & 1 == 1).collect()
    }

    fn log_with_8_mib(dir: &Path) -> Arc<Log> {
        let log = open(
            dir,
            LogConfig {
                segment_bytes: 64 << 20,
                ..small_config()
            },
        );
        // 8 MiB in 64 KiB batches, not fsynced: a release writes back what it drops.
        for i in 0..128 {
            log.append_as_leader(&client_batch(63, i, 1000), 0, i)
                .unwrap();
        }
        Arc::new(log)
    }

    #[test]
    fn past_the_budget_the_least_recently_written_data_leaves_the_cache() {
        let (dir_a, dir_b) = (disk_tempdir(), disk_tempdir());
        let mut budget = PageCacheBudget::new(8 << 20);
        let a = log_with_8_mib(dir_a.path());
        budget.pass(std::slice::from_ref(&a));
        let path_a = a.segment_list()[0].path(LOG_SUFFIX);
        assert!(
            resident_pages(&path_a).iter().all(|&r| r),
            "within the budget nothing is released"
        );
        let b = log_with_8_mib(dir_b.path());
        budget.pass(&[a.clone(), b.clone()]);

        // 16 MiB against 8: down to 7 MiB, A (written before B) first, then B's oldest
        // 0.8 MiB. A large folio across a boundary stays whole (2 MiB at most).
        let folio_pages = 512;
        let pages_a = resident_pages(&path_a);
        assert!(
            pages_a[..pages_a.len() - folio_pages].iter().all(|&r| !r),
            "the least recently written log was released"
        );
        let pages_b = resident_pages(&b.segment_list()[0].path(LOG_SUFFIX));
        assert!(
            pages_b[(1 << 20) / 4096 + folio_pages..].iter().all(|&r| r),
            "the newest data stays cached"
        );
        assert!(a.unreleased_bytes() < PAGE, "all but the partial last page");
        assert!(b.unreleased_bytes() < 8 << 20 && b.unreleased_bytes() >= 6 << 20);

        // Released data is served (from disk) and a read drops what it read. The prefetch
        // thread may still be undoing a late prefetch: bounded wait.
        let all = read_all(&a);
        assert_eq!(BatchIter::new(&all).count(), 128);
        let dropped = || {
            let pages = resident_pages(&path_a);
            pages[..pages.len() - folio_pages - 256].iter().all(|&r| !r)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !dropped() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(dropped(), "a read of released data drops the pages it read");
    }

    #[test]
    fn a_log_that_did_not_move_is_not_counted_again() {
        let dir = disk_tempdir();
        let log = log_with_8_mib(dir.path());
        let mut budget = PageCacheBudget::new(4 << 20);
        budget.pass(std::slice::from_ref(&log));
        // Released down to 7/8 of the budget: 3.5 MiB of the newest data stay.
        let left = log.unreleased_bytes();
        assert!((3 << 20..=(7 << 20) / 2).contains(&left), "{left}");
        budget.pass(std::slice::from_ref(&log));
        assert_eq!(
            log.unreleased_bytes(),
            left,
            "no growth, nothing more released"
        );
    }
}
