//! Per-log settings, named after Kafka's topic configs.

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
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

impl LogConfig {
    /// Index capacity in bytes, at least one entry of either index and a whole number of
    /// entries (Kafka rounds `segment.index.bytes` down the same way).
    pub(crate) fn index_max_bytes(&self) -> u64 {
        (self.segment_index_bytes as u64).max(crate::index::TIME_ENTRY_SIZE as u64 * 2)
    }
}
