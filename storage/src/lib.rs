//! sluice-storage: the durable log under every partition replica.
//!
//! CONTRACT SKELETON (to be implemented in issue 2). The public API below is what the broker
//! codes against; implementations may add to it but must not change these signatures without
//! updating the broker in the same commit.
//!
//! Not for: networking or Kafka request types. Storage is synchronous and `Send + Sync`;
//! the broker decides which thread calls it.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

/// Errors a caller must map to Kafka error codes (see each variant).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// CRC mismatch, impossible length, truncated batch → CORRUPT_MESSAGE (2).
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// Magic other than 2 or otherwise invalid batch → INVALID_RECORD (87).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A batch larger than `max.message.bytes` → MESSAGE_TOO_LARGE (10).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    /// Read outside [log start, log end] → OFFSET_OUT_OF_RANGE (1).
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { requested: i64, log_start: i64, log_end: i64 },
    /// Follower append whose offsets do not continue the log.
    #[error("non-monotonic offsets: {0}")]
    NonMonotonicOffset(String),
    /// Disk failure → KAFKA_STORAGE_ERROR (56).
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
}

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Page cache only (Kafka's default; durability comes from replication).
    None,
    /// `flush.messages` / `flush.ms`: whichever comes first.
    Every { messages: u64, interval_ms: u64 },
    /// fsync before `append_*` returns.
    Always,
}

/// Per-log settings, named after Kafka's topic configs. `Default` is Kafka's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: unlimited.
    pub retention_bytes: i64,
    pub cleanup_policy: CleanupPolicy,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub index_interval_bytes: u32,
    pub segment_index_bytes: u32,
    pub max_message_bytes: u32,
    pub timestamp_type: TimestampType,
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            flush: FlushPolicy::None,
        }
    }
}

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

/// One partition replica's log in its own directory.
pub struct Log {
    _private: (),
}

impl Log {
    /// Opens (creating if missing) the log in `dir`, recovering after a crash.
    pub fn open(dir: PathBuf, config: LogConfig) -> Result<Log, StorageError> {
        let _ = (dir, config);
        todo!("issue 2")
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
        let _ = (batches, leader_epoch, now_ms);
        todo!("issue 2")
    }

    /// Follower path: batches keep their offsets, which must continue the log end.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        let _ = batches;
        todo!("issue 2")
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
        let _ = (offset, max_bytes, max_offset, min_one_batch);
        todo!("issue 2")
    }

    pub fn log_start_offset(&self) -> i64 {
        todo!("issue 2")
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        todo!("issue 2")
    }

    /// First record with timestamp >= `timestamp_ms` (record-exact, as Kafka's ListOffsets).
    pub fn find_offset_by_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        let _ = timestamp_ms;
        todo!("issue 2")
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP, -3).
    pub fn max_timestamp(&self) -> Result<Option<TimestampOffset>, StorageError> {
        todo!("issue 2")
    }

    /// DeleteRecords: moves the log start offset up to `offset` (never down), deleting whole
    /// segments below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let _ = offset;
        todo!("issue 2")
    }

    /// Removes every record at or above `offset` (follower truncation).
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let _ = offset;
        todo!("issue 2")
    }

    /// Records that `epoch` starts at `start_offset` in the leader-epoch checkpoint.
    pub fn assign_leader_epoch(&self, epoch: i32, start_offset: i64) -> Result<(), StorageError> {
        let _ = (epoch, start_offset);
        todo!("issue 2")
    }

    /// OffsetForLeaderEpoch: the largest epoch <= `epoch` and the end offset of that epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let _ = epoch;
        todo!("issue 2")
    }

    /// The latest leader epoch in the checkpoint, -1 when none.
    pub fn latest_epoch(&self) -> i32 {
        todo!("issue 2")
    }

    /// Rolls by `segment.ms`, applies retention by time and size, and compacts when the
    /// policy says so. Called periodically by the log manager.
    pub fn maintain(&self, now_ms: i64) -> Result<(), StorageError> {
        let _ = now_ms;
        todo!("issue 2")
    }

    pub fn flush(&self) -> Result<(), StorageError> {
        todo!("issue 2")
    }

    /// Flushes and writes the clean-shutdown marker; later calls fail with `Closed`.
    pub fn close(&self) -> Result<(), StorageError> {
        todo!("issue 2")
    }

    /// Bytes on disk over all segments.
    pub fn size_bytes(&self) -> u64 {
        todo!("issue 2")
    }

    pub fn config(&self) -> LogConfig {
        todo!("issue 2")
    }

    pub fn update_config(&self, config: LogConfig) {
        let _ = config;
        todo!("issue 2")
    }

    /// Stores an opaque producer-state snapshot taken at `offset`.
    pub fn save_producer_snapshot(&self, offset: i64, data: &[u8]) -> Result<(), StorageError> {
        let _ = (offset, data);
        todo!("issue 2")
    }

    /// The newest producer-state snapshot at or below the log end, if any.
    pub fn load_producer_snapshot(&self) -> Result<Option<(i64, Vec<u8>)>, StorageError> {
        todo!("issue 2")
    }
}

/// All logs under one data directory, with bounded open files and a background thread for
/// flush-by-interval, retention and compaction.
pub struct LogManager {
    _private: (),
}

impl LogManager {
    /// `data_dir/<topic>-<partition>/` per log, as Kafka lays it out.
    pub fn new(data_dir: PathBuf) -> Result<LogManager, StorageError> {
        let _ = data_dir;
        todo!("issue 2")
    }

    /// Opens or creates the log named `<topic>-<partition>`.
    pub fn open_log(&self, topic: &str, partition: i32, config: LogConfig) -> Result<Arc<Log>, StorageError> {
        let _ = (topic, partition, config);
        todo!("issue 2")
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Log>> {
        let _ = (topic, partition);
        todo!("issue 2")
    }

    /// Closes the log and removes its directory (topic deletion).
    pub fn delete_log(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        let _ = (topic, partition);
        todo!("issue 2")
    }

    /// `(topic, partition)` of every log directory present on disk (opened or not).
    pub fn logs_on_disk(&self) -> Result<Vec<(String, i32)>, StorageError> {
        todo!("issue 2")
    }

    /// Starts the background maintenance thread (flush interval, retention, compaction).
    pub fn start_background(&self) {
        todo!("issue 2")
    }

    /// Stops background work and closes every open log cleanly.
    pub fn close_all(&self) -> Result<(), StorageError> {
        todo!("issue 2")
    }
}
