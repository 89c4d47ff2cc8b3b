//! The one error type of the crate and what each variant means to a Kafka client.

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
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
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

impl StorageError {
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        StorageError::CorruptMessage(msg.into())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        StorageError::InvalidRecord(msg.into())
    }
}
