//! The page-cache window: how much of what a log writes stays in the kernel's page cache.
//!
//! Left alone, the kernel keeps every page an append fills until memory runs out. A log is
//! written once and read mostly near its end, so that cache is mostly data nobody reads
//! again, and every append needs a page the kernel has never handed out before. That is
//! not free: on virtual machines whose host backs guest memory on first touch (the 2-core
//! machines this project is measured on), writing a GiB into untouched memory costs 2.8 s of
//! kernel time against 0.3 s into memory used before, and it was most of the broker's CPU
//! per GiB produced once a few GiB had been written. Redpanda bounds its cache for the same
//! reason; Kafka does not (with `window = None` Sluice behaves like Kafka).
//!
//! So a thread of the log manager ([`Log::release_page_cache`], every 20 ms) keeps each
//! log's cached tail to about `window` bytes: a range that falls more than `window` bytes
//! behind the log end is written back (`sync_file_range`, waiting for that range's I/O, in
//! that thread) and then advised out of the cache (`posix_fadvise(DONTNEED)`). The advice
//! never discards a dirty page, so no data is at risk. The freed pages go back to the
//! kernel's free lists and are the next ones appends get; waiting for the writeback (rather
//! than letting the kernel's flusher get to it within 30 s) is what keeps that recycling
//! within tens of MiB of the end (free memory left alone for seconds is handed back to the
//! host here, and is untouched again).
//!
//! A Fetch of data behind the window reads from disk (with the kernel's readahead) and
//! drops what it read, so a consumer catching up on old data does not refill the cache.
//!
//! Everything here is advice: a failing call is ignored (the cache just stays bigger).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};

use crate::log::Log;
use crate::segment::{read, Handles, Segment};

/// Bytes that must fall behind the window before a pass releases them: fewer, larger
/// ranges, and no work at all for a log that barely moves.
pub(crate) const STEP: u64 = 1 << 20;

/// Per segment: how far its pages were released from the page cache.
#[derive(Default)]
pub(crate) struct CacheMarks {
    /// Pages below this position were written back and advised out (a read below it drops
    /// what it read).
    released: AtomicU64,
    /// The furthest end of a read behind the window: a prefetch that starts below it is
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
/// [`MAX_FOLIO`] earlier, which callers only do where everything before `from` is out of
/// the window too. (Advice for pages already gone costs a lookup.)
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

/// How far ahead of a read behind the window the prefetch thread reads.
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
                    tracing::warn!(error = %e, "no prefetch thread; reads behind the page-cache window wait for the disk");
                    None
                }
            }
        })
        .as_ref()
}

impl Segment {
    /// After a read of `[pos, end)` behind the window: drops what was read (a consumer
    /// catching up does not refill the cache) and has the prefetch thread read the next
    /// [`PREFETCH`] bytes into the cache meanwhile, so the consumer's next fetch finds them
    /// there while this one travels (the reading thread does not wait for that work).
    pub(crate) fn after_read_behind_window(self: &Arc<Self>, h: &Arc<Handles>, pos: u64, end: u64) {
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

    /// Releases this segment's pages below `target`. `whole` says the segment will not grow
    /// (it is not the active one), so a last range shorter than [`STEP`] is released too.
    fn release_cache(self: &Arc<Self>, target: u64, whole: bool) {
        let marks = &self.page_cache;
        // Files of an old segment are not opened for advice: not open means nobody wrote
        // or read it lately (a read behind the window drops what it read itself).
        let Some(h) = self.open_handles() else {
            marks.released.store(self.size(), Ordering::Release);
            return;
        };
        // A truncation can leave the mark beyond the end: it follows it down.
        let released = marks.released.load(Ordering::Acquire).min(self.size());
        if target >= released + STEP || (whole && target > released) {
            write_back(&h.file, released, target);
            drop_pages(&h.file, released, target);
            marks.released.store(target, Ordering::Release);
        } else if released < marks.released.load(Ordering::Acquire) {
            marks.released.store(released, Ordering::Release);
        }
    }

    /// Whether this segment has nothing left to release.
    fn fully_released(&self) -> bool {
        self.page_cache.released.load(Ordering::Acquire) >= self.size()
    }
}

impl Log {
    /// One pass of the page-cache window (module docs): keeps about `window` bytes of this
    /// log's end in the page cache. Cheap when the log did not move; waits for writeback
    /// when it did.
    pub fn release_page_cache(&self, window: u64) {
        if self.is_closed() {
            return;
        }
        // Newest segment first: how far behind the end each one lies decides its target.
        // The walk stops at the first older segment with nothing left to release (those
        // before it were released by earlier passes).
        let mut work: Vec<(Arc<Segment>, u64, bool)> = Vec::new();
        {
            let segs = read(&self.segments);
            let mut behind = 0u64;
            for (i, seg) in segs.values().rev().enumerate() {
                let whole = i > 0;
                if whole && seg.fully_released() {
                    break;
                }
                let size = seg.size();
                let keep = window.saturating_sub(behind).min(size);
                if size > keep {
                    work.push((seg.clone(), size - keep, whole));
                }
                behind = behind.saturating_add(size);
            }
        }
        for (seg, target, whole) in work {
            seg.release_cache(target, whole);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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

    #[test]
    fn data_behind_the_window_leaves_the_page_cache_and_reads_do_not_bring_it_back() {
        let dir = disk_tempdir();
        let log = open(
            dir.path(),
            LogConfig {
                segment_bytes: 64 << 20,
                ..small_config()
            },
        );
        // 8 MiB in 64 KiB batches, not fsynced: the pass writes back what it drops.
        for i in 0..128 {
            log.append_as_leader(&client_batch(63, i, 1000), 0, i)
                .unwrap();
        }
        let seg = log.segment_list()[0].clone();
        let path = seg.path(LOG_SUFFIX);
        let size = seg.size();
        assert!(
            resident_pages(&path).iter().all(|&r| r),
            "freshly written pages are cached"
        );

        let window = 1 << 20;
        log.release_page_cache(window);
        let pages = resident_pages(&path);
        let target_page = ((size - window) / 4096) as usize;
        // A large folio across the boundary stays whole (2 MiB at most).
        let folio_pages = 512;
        assert!(
            pages[..target_page - folio_pages].iter().all(|&r| !r),
            "pages more than the window behind the end were dropped"
        );
        assert!(
            pages[target_page + 1..].iter().all(|&r| r),
            "the window stays cached"
        );

        // Reads behind the window are served (from disk) and drop what they read.
        let before = read_all(&log);
        assert_eq!(BatchIter::new(&before).count(), 128);
        // The 1 MiB read that crosses the boundary keeps its pages, as does that folio. The
        // prefetch thread may still be undoing a late prefetch: bounded wait.
        let dropped = || {
            resident_pages(&path)[..target_page - folio_pages - 256]
                .iter()
                .all(|&r| !r)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !dropped() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            dropped(),
            "a read behind the window drops the pages it read"
        );
    }

    #[test]
    fn a_quiet_log_does_no_work_and_none_keeps_everything() {
        let dir = disk_tempdir();
        let log = open(
            dir.path(),
            LogConfig {
                segment_bytes: 64 << 20,
                ..small_config()
            },
        );
        for i in 0..8 {
            log.append_as_leader(&client_batch(63, i, 1000), 0, i)
                .unwrap();
        }
        log.flush().unwrap();
        let seg = log.segment_list()[0].clone();
        // Less than STEP behind a zero window: not worth a system call yet.
        log.release_page_cache(0);
        assert!(resident_pages(&seg.path(LOG_SUFFIX)).iter().all(|&r| r));
    }
}
