//! sluice-storage: the durable log under every partition replica.
//!
//! What it is for: keeping Kafka record batches (magic v2) on disk, one [`Log`] per partition
//! replica in `<data_dir>/<topic>-<partition>/`, the way Kafka lays them out: segment files
//! named by their 20-digit base offset (`.log`), a sparse offset index (`.index`) and time
//! index (`.timeindex`) beside each, memory-mapped; an aborted-transaction index
//! (`.txnindex`) beside a segment once a transaction was aborted in it (its entries held in
//! memory, for read_committed fetches); a `leader-epoch-checkpoint`; producer
//! snapshots (`<offset>.snapshot`); `log-offsets-checkpoint` (recovery point and log start
//! offset) and a `.clean-shutdown` marker. A directory of another shape (say `metadata/`) is
//! not a log.
//!
//! Durability: appends go to the page cache through `write`; the flush policy decides when
//! they are fsynced (`Always` shares fsyncs between concurrent appenders). After a crash,
//! only segments from the recovery point on are scanned: each batch's CRC and offsets are
//! checked and the log is cut at the first bad one. After a clean close nothing is scanned.
//!
//! A client's batch is stored as the client sent it: the leader only rewrites the base
//! offset and partition leader epoch in the header (neither is under the CRC) — and for
//! LogAppendTime topics the max timestamp, with a CRC fix-up — and writes the untouched
//! records after it. Records are decoded only for timestamp lookups and compaction.
//!
//! Not for: networking or Kafka request types. Storage is synchronous and `Send + Sync`;
//! the broker decides which thread calls it.
//!
//! Main types:
//! - [`Log`]: append (leader and follower paths), Fetch-style [`Log::read`], ListOffsets
//!   lookups, truncation, DeleteRecords, the leader-epoch cache, flush, close, maintenance
//!   (`segment.ms` rolls, retention, compaction), aborted transactions
//!   ([`Log::append_aborted_txn`], [`Log::aborted_txns`]).
//! - [`LogManager`]: all logs of a data directory, a cap on open segment files, and the
//!   background maintenance thread.
//! - [`LogConfig`] and friends: per-log settings named after Kafka's topic configs.
//! - [`RecordBatch`], [`BatchIter`], [`BatchBuilder`], [`Record`]: the v2 batch format
//!   (a zero-copy header view, CRC-32C, decoding and an encoder).
//! - [`control_batch`], [`ControlType`], [`RecordBatch::control_type`]: COMMIT/ABORT
//!   transaction markers; [`AbortedTxn`]: one entry of the aborted-transaction index.
//! - [`StorageError`]: every error, each variant documenting its Kafka error code.
//!
//! Module map: `batch` (header view, CRC), `records` (record codec, compression),
//! `control` (transaction markers), `segment` (files, lazy open, reads), `index` (offset
//! and time index), `txn_index` (aborted transactions), `log` (append, read, truncate,
//! flush), `page_cache` (how much of what the logs write stays in the kernel's page cache), `recovery` (open, crash recovery), `retention`, `compaction`, `time_lookup`,
//! `epoch_cache`, `producer_snapshot`, `checkpoint`, `manager`, `config`, `error`.

mod batch;
mod checkpoint;
mod compaction;
mod config;
mod control;
mod epoch_cache;
mod error;
mod index;
mod log;
mod manager;
mod page_cache;
mod producer_snapshot;
mod records;
mod recovery;
mod retention;
mod segment;
mod time_lookup;
mod txn_index;

pub use batch::{
    set_base_offset, set_partition_leader_epoch, BatchIter, Compression, RecordBatch, HEADER_SIZE,
    LOG_OVERHEAD, MAGIC_V2,
};
pub use compaction::{CompactionStats, DEFAULT_MAX_MAP_ENTRIES};
pub use config::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
pub use control::{control_batch, ControlType};
pub use error::StorageError;
pub use log::{AppendInfo, Log, ReadInfo, TimestampOffset, DEFAULT_MAX_OPEN_SEGMENTS};
pub use manager::{LogManager, LogManagerOptions, DEFAULT_PAGE_CACHE_MAX_BYTES};
pub use page_cache::PageCacheBudget;
pub use records::{
    compress, decompress, simple_batch, BatchBuilder, Record, RecordHeader, MAX_DECOMPRESSED_BYTES,
};
pub use segment::HandleCache;
pub use txn_index::AbortedTxn;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;
