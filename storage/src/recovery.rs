//! Opening a log directory: find the segments, finish or undo interrupted file operations,
//! and either trust the files (clean-shutdown marker present) or scan every segment from the
//! recovery point on — verifying each batch's CRC and offsets, truncating at the first bad
//! batch, deleting later segments and rebuilding indexes. Each segment's aborted-transaction
//! index is loaded (a torn last entry dropped) and cut back to the recovered log end.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use crate::batch::{peek_batch_size, RecordBatch};
use crate::checkpoint::{self, LogOffsets, CLEAN_SHUTDOWN_FILE};
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::segment::{
    file_path, pread, read, write, HandleCache, Handles, Segment, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use crate::txn_index::TXN_INDEX_SUFFIX;

/// Suffixes of files that only exist while an operation is under way: a crash leaves them
/// behind and they are deleted on open.
pub(crate) const TEMP_SUFFIXES: &[&str] = &[".tmp", ".cleaned", ".deleted"];
/// A compacted segment renamed to `.swap` is complete: the swap is finished on open.
pub(crate) const SWAP_SUFFIX: &str = ".swap";

const SCAN_CHUNK: usize = 1 << 20;

/// What the scan of one segment's data found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanResult {
    pub valid_bytes: u64,
    /// Offset after the last valid batch (the base offset when empty).
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub max_timestamp_offset: i64,
    pub first_batch_max_timestamp: Option<i64>,
    pub last_index_position: u64,
}

pub(crate) struct Loaded {
    pub segments: BTreeMap<i64, Arc<Segment>>,
    pub active: Arc<Segment>,
    pub active_handles: Arc<Handles>,
    pub active_scan: ScanResult,
    pub log_start: i64,
    pub log_end: i64,
    pub recovery_point: i64,
    pub first_dirty: i64,
}

fn parse_base(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn remove_if_exists(p: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn load(
    dir: &Path,
    cfg: &LogConfig,
    cache: &Arc<HandleCache>,
) -> Result<Loaded, StorageError> {
    std::fs::create_dir_all(dir)?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let idx_max = cfg.index_max_bytes();

    // Leftovers first: finish swaps, then drop temporaries (a swap may still need its
    // cleaned transaction index).
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(n) = entry?.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    for name in &names {
        let path = dir.join(name);
        if let Some(orig) = name.strip_suffix(SWAP_SUFFIX) {
            if let Some(base) = parse_base(orig, LOG_SUFFIX) {
                tracing::info!(dir = %dir.display(), base, "completing an interrupted compaction swap");
                // Old segments the swapped one replaces may still be there: delete those
                // whose base offset falls inside its offset range.
                let last = last_offset_in_file(&path)?;
                for other in &names {
                    if let Some(b) = parse_base(other, LOG_SUFFIX) {
                        if b > base && b <= last {
                            for suffix in [
                                LOG_SUFFIX,
                                INDEX_SUFFIX,
                                TIME_INDEX_SUFFIX,
                                TXN_INDEX_SUFFIX,
                            ] {
                                remove_if_exists(&file_path(dir, b, suffix))?;
                            }
                        }
                    }
                }
                std::fs::rename(&path, dir.join(orig))?;
                remove_if_exists(&file_path(dir, base, INDEX_SUFFIX))?;
                remove_if_exists(&file_path(dir, base, TIME_INDEX_SUFFIX))?;
                // The swap wrote the union of the replaced segments' aborted transactions
                // before its commit point; while that file is still under its temporary
                // name it is the one to keep. Once renamed, `.txnindex` is already it.
                let cleaned_txns = file_path(dir, base, &format!("{TXN_INDEX_SUFFIX}.cleaned"));
                if cleaned_txns.exists() {
                    std::fs::rename(&cleaned_txns, file_path(dir, base, TXN_INDEX_SUFFIX))?;
                }
            } else {
                remove_if_exists(&path)?;
            }
        }
    }
    for name in &names {
        if TEMP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            remove_if_exists(&dir.join(name))?;
        }
    }
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let mut txn_index_bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Some(name) = entry?.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(b) = parse_base(&name, LOG_SUFFIX) {
            bases.push(b);
        } else if let Some(b) = parse_base(&name, TXN_INDEX_SUFFIX) {
            txn_index_bases.push(b);
            index_files.push((b, name));
        } else if let Some(b) =
            parse_base(&name, INDEX_SUFFIX).or_else(|| parse_base(&name, TIME_INDEX_SUFFIX))
        {
            index_files.push((b, name));
        }
    }
    bases.sort_unstable();
    for (b, name) in index_files {
        if bases.binary_search(&b).is_err() {
            remove_if_exists(&dir.join(name))?;
        }
    }

    let offsets = checkpoint::read_offsets(dir)?;
    let ckpt_start = offsets.map(|o| o.log_start);
    let recovery_point = offsets.map_or(0, |o| o.recovery_point);
    if bases.is_empty() {
        let base = ckpt_start.unwrap_or(0).max(0);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(file_path(dir, base, LOG_SUFFIX))?;
        bases.push(base);
    }

    let mut segments = BTreeMap::new();
    for &b in &bases {
        let len = std::fs::metadata(file_path(dir, b, LOG_SUFFIX))?.len();
        segments.insert(b, Arc::new(Segment::new(dir, b, len, cache.clone())));
    }
    // Only segments that have a transaction index file are read (most have none).
    for b in txn_index_bases {
        if let Some(seg) = segments.get(&b) {
            seg.txn_index().load(b)?;
        }
    }

    let mut scans: BTreeMap<i64, ScanResult> = BTreeMap::new();
    if !clean {
        let first = bases[0];
        let floor = segments
            .range(..=recovery_point)
            .next_back()
            .map_or(first, |(b, _)| *b);
        let to_recover: Vec<i64> = segments.range(floor..).map(|(b, _)| *b).collect();
        let last = *bases.last().unwrap_or(&first);
        let mut truncated_at: Option<i64> = None;
        for b in to_recover {
            if let Some(cut) = truncated_at {
                tracing::warn!(dir = %dir.display(), segment = b, after = cut, "deleting segment after a corrupt one");
                if let Some(seg) = segments.remove(&b) {
                    seg.delete_files()?;
                }
                continue;
            }
            let seg = segments[&b].clone();
            // Index files of unflushed segments are not trusted: rebuilt from the data.
            remove_if_exists(&seg.path(INDEX_SUFFIX))?;
            remove_if_exists(&seg.path(TIME_INDEX_SUFFIX))?;
            let h = if b == last {
                seg.pin_as_active(idx_max)?
            } else {
                seg.handles()?
            };
            let (scan, truncated) = recover_segment(&seg, &h, cfg)?;
            if truncated > 0 {
                truncated_at = Some(scan.next_offset);
            }
            if b != last && truncated_at.is_none() {
                finish_sealed(&h, &scan)?;
            }
            scans.insert(b, scan);
        }
    }

    // The last surviving segment is the active one.
    let (&active_base, active) = segments
        .iter()
        .next_back()
        .ok_or_else(|| StorageError::corrupt("no segment"))?;
    let active = active.clone();
    let active_handles = active.pin_as_active(idx_max)?;
    let active_scan = match scans.get(&active_base) {
        Some(s) => *s,
        None => match scan_tail(&active, &active_handles)? {
            Some(s) => s,
            None => {
                tracing::warn!(dir = %dir.display(), "active segment inconsistent after a clean shutdown; recovering it");
                write(&active_handles.index).clear();
                write(&active_handles.time_index).clear();
                recover_segment(&active, &active_handles, cfg)?.0
            }
        },
    };
    active.set_max_timestamp(active_scan.max_timestamp, active_scan.max_timestamp_offset);

    let first_base = *segments.keys().next().unwrap_or(&active_base);
    let data_end = active_scan.next_offset.max(active_base);
    // The log start checkpoint wins over the data: after DeleteRecords or a truncation the
    // data can end below it, and then the log end is the log start.
    let log_start = ckpt_start.unwrap_or(first_base).max(first_base);
    let log_end = data_end.max(log_start);
    // An abort recorded for a marker that did not survive the crash is forgotten with it.
    for seg in segments.values() {
        seg.txn_index().truncate_from(log_end)?;
    }
    let mut recovery_point = recovery_point.min(log_end);
    if !clean {
        // What was recovered is now what is on disk: make it durable and move the point up.
        for seg in segments.values() {
            if seg.base_offset
                >= segments
                    .range(..=recovery_point)
                    .next_back()
                    .map_or(first_base, |(b, _)| *b)
            {
                seg.sync()?;
            }
        }
        recovery_point = log_end;
    }
    let first_dirty = offsets.map_or(0, |o| o.first_dirty).min(log_end);
    let now = LogOffsets {
        recovery_point,
        log_start,
        first_dirty,
    };
    // A clean open with an unchanged checkpoint skips its three fsyncs.
    if offsets != Some(now) {
        checkpoint::write_offsets(dir, now)?;
    }
    if clean {
        std::fs::remove_file(&marker)?;
        checkpoint::sync_dir(dir)?;
    }
    Ok(Loaded {
        segments,
        active,
        active_handles,
        active_scan,
        log_start,
        log_end,
        recovery_point,
        first_dirty,
    })
}

/// Last offset of the last whole batch of a segment file (headers only), or -1.
fn last_offset_in_file(path: &Path) -> Result<i64, StorageError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut pos = 0u64;
    let mut last = -1i64;
    while let Some(hdr) = crate::segment::read_header(&file, pos)? {
        let Ok(b) = RecordBatch::header(&hdr) else {
            break;
        };
        if pos + b.size_in_bytes() as u64 > len {
            break;
        }
        last = b.last_offset();
        pos += b.size_in_bytes() as u64;
    }
    Ok(last)
}

/// Appends the final time-index entry and trims both indexes of a recovered old segment.
fn finish_sealed(h: &Handles, scan: &ScanResult) -> Result<(), StorageError> {
    let mut ti = write(&h.time_index);
    if scan.max_timestamp >= 0 {
        ti.maybe_append(scan.max_timestamp, scan.max_timestamp_offset);
    }
    ti.trim()?;
    write(&h.index).trim()?;
    Ok(())
}

/// Buffered positional reader over a segment file.
struct Chunked<'a> {
    file: &'a std::fs::File,
    file_len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> Chunked<'a> {
    fn get(&mut self, pos: u64, len: usize) -> Result<Option<&[u8]>, StorageError> {
        if pos + len as u64 > self.file_len {
            return Ok(None);
        }
        let in_buf =
            pos >= self.buf_start && pos + len as u64 <= self.buf_start + self.buf.len() as u64;
        if !in_buf {
            let want = len.max(SCAN_CHUNK).min((self.file_len - pos) as usize);
            self.buf = pread(self.file, pos, want)?;
            self.buf_start = pos;
            if self.buf.len() < len {
                return Ok(None);
            }
        }
        let at = (pos - self.buf_start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// Scans a whole segment: CRC and offsets of every batch, rebuilding both indexes, and
/// truncating the file at the first bad batch. Returns the scan and the bytes truncated.
pub(crate) fn recover_segment(
    seg: &Arc<Segment>,
    h: &Handles,
    cfg: &LogConfig,
) -> Result<(ScanResult, u64), StorageError> {
    let file_len = h.file.metadata()?.len();
    let idx_max = cfg.index_max_bytes();
    let interval = cfg.index_interval_bytes as u64;
    let base = seg.base_offset;
    let mut oi = write(&h.index);
    let mut ti = write(&h.time_index);
    oi.clear();
    ti.clear();
    oi.make_writable(idx_max)?;
    ti.make_writable(idx_max)?;
    let mut reader = Chunked {
        file: &h.file,
        file_len,
        buf: Vec::new(),
        buf_start: 0,
    };
    let mut scan = ScanResult {
        valid_bytes: 0,
        next_offset: base,
        max_timestamp: -1,
        max_timestamp_offset: base,
        first_batch_max_timestamp: None,
        last_index_position: 0,
    };
    let mut pos = 0u64;
    let mut since = 0u64;
    let mut problem: Option<String> = None;
    while pos < file_len {
        let size = match reader.get(pos, 12)?.map(peek_batch_size) {
            None => {
                problem = Some("partial batch header at end of file".into());
                break;
            }
            Some(Err(e)) => {
                problem = Some(e.to_string());
                break;
            }
            Some(Ok(None)) => {
                problem = Some("partial batch header".into());
                break;
            }
            Some(Ok(Some(s))) => s,
        };
        let Some(bytes) = reader.get(pos, size)? else {
            problem = Some(format!(
                "batch of {size} bytes runs past the end of the file"
            ));
            break;
        };
        let batch = match RecordBatch::new(bytes).and_then(|b| b.validate_stored().map(|()| b)) {
            Ok(b) => b,
            Err(e) => {
                problem = Some(e.to_string());
                break;
            }
        };
        if batch.base_offset() < scan.next_offset || batch.last_offset() - base > i32::MAX as i64 {
            problem = Some(format!(
                "batch offsets {}..={} do not follow {} in segment {base}",
                batch.base_offset(),
                batch.last_offset(),
                scan.next_offset
            ));
            break;
        }
        if scan.first_batch_max_timestamp.is_none() {
            scan.first_batch_max_timestamp = Some(batch.max_timestamp());
        }
        if batch.max_timestamp() > scan.max_timestamp {
            scan.max_timestamp = batch.max_timestamp();
            scan.max_timestamp_offset = batch.last_offset();
        }
        if since > interval {
            oi.append(batch.last_offset(), pos as u32);
            ti.maybe_append(scan.max_timestamp, scan.max_timestamp_offset);
            scan.last_index_position = pos;
            since = 0;
        }
        since += size as u64;
        scan.next_offset = batch.next_offset();
        pos += size as u64;
    }
    scan.valid_bytes = pos;
    let truncated = file_len - pos;
    if let Some(problem) = problem {
        tracing::warn!(
            segment = %seg.path(LOG_SUFFIX).display(),
            position = pos,
            truncated_bytes = truncated,
            next_offset = scan.next_offset,
            %problem,
            "recovery truncated the log at the first bad batch"
        );
        h.file.set_len(pos)?;
    }
    seg.publish_size(pos);
    seg.set_max_timestamp(scan.max_timestamp, scan.max_timestamp_offset);
    Ok((scan, truncated))
}

/// After a clean shutdown: finds the log end of the active segment from its last index
/// entry without checking CRCs. None when the headers do not add up to the file length.
fn scan_tail(seg: &Arc<Segment>, h: &Handles) -> Result<Option<ScanResult>, StorageError> {
    let file_len = h.file.metadata()?.len();
    let (start_off, start_pos) = read(&h.index)
        .last()
        .map_or((seg.base_offset, 0u64), |(o, p)| (o, p as u64));
    let (ts, ts_off) = read(&h.time_index).last().unwrap_or((-1, seg.base_offset));
    let mut scan = ScanResult {
        valid_bytes: 0,
        next_offset: if start_pos > 0 {
            start_off + 1
        } else {
            seg.base_offset
        },
        max_timestamp: ts,
        max_timestamp_offset: ts_off,
        first_batch_max_timestamp: None,
        last_index_position: start_pos,
    };
    if file_len > 0 {
        let Some(first) = crate::segment::read_header(&h.file, 0)? else {
            return Ok(None);
        };
        scan.first_batch_max_timestamp =
            RecordBatch::header(&first).ok().map(|b| b.max_timestamp());
    }
    let mut pos = start_pos;
    while pos < file_len {
        let Some(hdr) = crate::segment::read_header(&h.file, pos)? else {
            return Ok(None);
        };
        let Ok(b) = RecordBatch::header(&hdr) else {
            return Ok(None);
        };
        let size = b.size_in_bytes() as u64;
        if pos + size > file_len || b.base_offset() < seg.base_offset {
            return Ok(None);
        }
        if b.max_timestamp() > scan.max_timestamp {
            scan.max_timestamp = b.max_timestamp();
            scan.max_timestamp_offset = b.last_offset();
        }
        scan.next_offset = b.next_offset();
        pos += size;
    }
    scan.valid_bytes = pos;
    seg.publish_size(pos);
    Ok(Some(scan))
}
