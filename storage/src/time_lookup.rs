//! ListOffsets by timestamp: the first record with timestamp >= T (record-exact: the
//! candidate batch is decoded, decompressing if needed) and the record with the largest
//! timestamp.

use std::sync::Arc;

use crate::batch::RecordBatch;
use crate::error::StorageError;
use crate::log::{Log, TimestampOffset};
use crate::segment::{read, Segment};

impl Log {
    /// First record with timestamp >= `timestamp_ms` (record-exact, as Kafka's ListOffsets).
    pub fn find_offset_by_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        self.check_open()?;
        let start = self.log_start_offset();
        let end = self.log_end();
        for seg in self.segment_list() {
            let (max_ts, _) = seg.max_timestamp()?;
            if max_ts < timestamp_ms {
                continue;
            }
            let from_pos = {
                let h = seg.handles()?;
                let from_offset = read(&h.time_index)
                    .lookup(timestamp_ms)
                    .unwrap_or(seg.base_offset)
                    .max(start);
                let pos = read(&h.index).lookup(from_offset) as u64;
                pos
            };
            if let Some(found) =
                find_in_segment(&seg, from_pos, start, end, |ts| ts >= timestamp_ms)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP, -3).
    pub fn max_timestamp(&self) -> Result<Option<TimestampOffset>, StorageError> {
        self.check_open()?;
        let start = self.log_start_offset();
        let end = self.log_end();
        let mut best: Option<(i64, Arc<Segment>)> = None;
        for seg in self.segment_list() {
            if seg.size() == 0 {
                continue;
            }
            let (ts, _) = seg.max_timestamp()?;
            if best.as_ref().is_none_or(|(b, _)| ts > *b) {
                best = Some((ts, seg));
            }
        }
        let Some((ts, seg)) = best else {
            return Ok(None);
        };
        find_in_segment(&seg, 0, start, end, |t| t >= ts)
    }
}

/// Scans the segment from `from_pos` for the first batch whose max timestamp matches, then
/// decodes it for the first matching record at or above `log_start` and below `log_end`.
fn find_in_segment(
    seg: &Arc<Segment>,
    from_pos: u64,
    log_start: i64,
    log_end: i64,
    matches: impl Fn(i64) -> bool,
) -> Result<Option<TimestampOffset>, StorageError> {
    let mut candidates = Vec::new();
    let mut result = None;
    seg.for_each_header(from_pos, |pos, b| {
        if b.base_offset() >= log_end {
            return Ok(false);
        }
        if b.last_offset() >= log_start && matches(b.max_timestamp()) {
            candidates.push((pos, b.size_in_bytes()));
            // Decode lazily: the first candidate usually holds the answer.
            return Ok(false);
        }
        Ok(true)
    })?;
    // A candidate batch may hold no matching record at or above the log start (e.g. the
    // match is below it); then the scan resumes after it.
    while let Some((pos, size)) = candidates.pop() {
        let bytes = seg.read_batch_at(pos, size)?;
        let batch = RecordBatch::new(&bytes)?;
        for r in batch.records()? {
            if r.offset >= log_start && r.offset < log_end && matches(r.timestamp) {
                result = Some(TimestampOffset {
                    offset: r.offset,
                    timestamp_ms: r.timestamp,
                    leader_epoch: batch.partition_leader_epoch(),
                });
                break;
            }
        }
        if result.is_some() {
            break;
        }
        let next = pos + size as u64;
        seg.for_each_header(next, |p, b| {
            if b.base_offset() >= log_end {
                return Ok(false);
            }
            if b.last_offset() >= log_start && matches(b.max_timestamp()) {
                candidates.push((p, b.size_in_bytes()));
                return Ok(false);
            }
            Ok(true)
        })?;
    }
    Ok(result)
}
