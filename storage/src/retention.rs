//! Time and size retention (`retention.ms`, `retention.bytes`), DeleteRecords and the
//! periodic maintenance entry point. Retention deletes whole segments from the oldest on and
//! moves the log start offset; it never deletes data at or above the high watermark.

use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::log::Log;
use crate::segment::{lock, read, write, Segment, LOG_SUFFIX};

impl Log {
    /// Rolls by `segment.ms`, applies retention by time and size, and compacts when the
    /// policy says so. Called periodically by the log manager.
    pub fn maintain(&self, now_ms: i64) -> Result<(), StorageError> {
        self.check_open()?;
        let cfg = self.config();
        {
            let mut w = lock(&self.writer);
            self.check_open()?;
            if w.position > 0 && now_ms.saturating_sub(w.rolling_ts_ms) > cfg.segment_ms {
                let leo = self.log_end();
                self.roll(&mut w, leo, now_ms)?;
            }
        }
        self.flush_if_due(now_ms)?;
        self.flush_sealed_segments()?;
        if cfg.cleanup_policy.deletes() {
            self.apply_retention(now_ms, &cfg)?;
        }
        self.delete_segments_below_log_start()?;
        if cfg.cleanup_policy.compacts() {
            self.compact(now_ms, &cfg)?;
        }
        Ok(())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (never down), deleting whole
    /// segments below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        self.check_open()?;
        let bound = self.upper_bound();
        if offset < 0 || offset > bound {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start_offset(),
                log_end: bound,
            });
        }
        if offset > self.log_start_offset() {
            let _w = lock(&self.writer);
            self.check_open()?;
            self.set_log_start(offset)?;
        }
        self.delete_segments_below_log_start()?;
        Ok(self.log_start_offset())
    }

    /// Sealed segments are fsynced once (in the background) so that crash recovery only has
    /// to scan the active segment, whatever the flush policy.
    fn flush_sealed_segments(&self) -> Result<(), StorageError> {
        let active_base = lock(&self.writer).active.base_offset;
        let rp = self.recovery_point_offset();
        if rp >= active_base {
            return Ok(());
        }
        let segs: Vec<Arc<Segment>> = {
            let segs = read(&self.segments);
            let floor = segs.range(..=rp).next_back().map_or(i64::MIN, |(b, _)| *b);
            segs.range(floor..active_base)
                .map(|(_, s)| s.clone())
                .collect()
        };
        for s in segs {
            match s.sync() {
                Ok(()) => {}
                Err(_) if s.is_deleted() => {}
                Err(e) => return Err(e),
            }
        }
        self.advance_recovery_point_to(active_base)
    }

    fn apply_retention(&self, now_ms: i64, cfg: &LogConfig) -> Result<(), StorageError> {
        let bound = self.upper_bound();
        let segs = self.segment_list();
        let leo = self.log_end();
        let next_base = |i: usize| segs.get(i + 1).map_or(leo, |s| s.base_offset);
        let mut count = 0usize;
        if cfg.retention_ms >= 0 {
            while count < segs.len() {
                let seg = &segs[count];
                if next_base(count) > bound || seg.size() == 0 {
                    break;
                }
                let (mut ts, _) = seg.max_timestamp()?;
                if ts < 0 {
                    ts = file_mtime_ms(seg).unwrap_or(now_ms);
                }
                if now_ms.saturating_sub(ts) <= cfg.retention_ms {
                    break;
                }
                count += 1;
            }
        }
        if cfg.retention_bytes >= 0 {
            let total: u64 = segs.iter().map(|s| s.size()).sum();
            let mut diff = total as i64 - cfg.retention_bytes;
            for (i, seg) in segs.iter().enumerate() {
                if i < count {
                    diff -= seg.size() as i64;
                    continue;
                }
                if diff - (seg.size() as i64) < 0 || next_base(i) > bound || seg.size() == 0 {
                    break;
                }
                diff -= seg.size() as i64;
                count = i + 1;
            }
        }
        if count > 0 {
            let reason = "retention";
            self.delete_oldest_segments(&segs[..count], now_ms, reason)?;
        }
        Ok(())
    }

    /// Deletes `victims` (a prefix of the segment list), rolling first if the active segment
    /// is among them, and moves the log start offset past them.
    fn delete_oldest_segments(
        &self,
        victims: &[Arc<Segment>],
        now_ms: i64,
        reason: &str,
    ) -> Result<(), StorageError> {
        let mut w = lock(&self.writer);
        self.check_open()?;
        if victims.iter().any(|v| Arc::ptr_eq(v, &w.active)) {
            let leo = self.log_end();
            self.roll(&mut w, leo, now_ms)?;
        }
        let live: Vec<Arc<Segment>> = {
            let segs = read(&self.segments);
            victims
                .iter()
                .filter(|v| segs.get(&v.base_offset).is_some_and(|s| Arc::ptr_eq(s, v)))
                .cloned()
                .collect()
        };
        let Some(last) = live.last() else {
            return Ok(());
        };
        let new_start = read(&self.segments)
            .range(last.base_offset + 1..)
            .next()
            .map_or(self.log_end(), |(b, _)| *b);
        self.set_log_start(new_start)?;
        {
            let mut segs = write(&self.segments);
            for v in &live {
                segs.remove(&v.base_offset);
            }
        }
        for v in &live {
            tracing::info!(dir = %self.dir.display(), segment = v.base_offset, size = v.size(), reason, "deleting segment");
            v.delete_files()?;
        }
        Ok(())
    }

    /// Deletes segments wholly below the log start offset (after DeleteRecords). The active
    /// segment is never deleted here.
    pub(crate) fn delete_segments_below_log_start(&self) -> Result<(), StorageError> {
        let _w = lock(&self.writer);
        self.check_open()?;
        let start = self.log_start_offset();
        let victims: Vec<Arc<Segment>> = {
            let segs = read(&self.segments);
            let list: Vec<&Arc<Segment>> = segs.values().collect();
            list.windows(2)
                .take_while(|p| p[1].base_offset <= start)
                .map(|p| p[0].clone())
                .collect()
        };
        if victims.is_empty() {
            return Ok(());
        }
        {
            let mut segs = write(&self.segments);
            for v in &victims {
                segs.remove(&v.base_offset);
            }
        }
        for v in &victims {
            tracing::info!(dir = %self.dir.display(), segment = v.base_offset, log_start = start, "deleting segment below the log start offset");
            v.delete_files()?;
        }
        Ok(())
    }
}

fn file_mtime_ms(seg: &Segment) -> Option<i64> {
    let m = std::fs::metadata(seg.path(LOG_SUFFIX))
        .ok()?
        .modified()
        .ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}
