//! One partition replica hosted by this broker: its log, its leader state from the metadata
//! image, its high watermark and last stable offset, and the fetches waiting for new data.
//!
//! Transactions reach a partition in three ways: transactional batches a producer appends
//! (only once the coordinator has verified that the partition is in the producer's
//! transaction), transactional batches a coordinator appends (offset commits), and the
//! commit or abort markers the transaction coordinator writes. The oldest open transaction
//! bounds the last stable offset; an abort is also recorded in the log's aborted-transaction
//! index, which `read_committed` fetches return.
//!
//! Today every replica set this broker hosts is led by it and the high watermark follows the
//! log end of the ISR; the follower side of ISR replication comes with the cluster issue.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use sluice_protocol::ResponseError;
use sluice_storage::{
    control_batch, AbortedTxn, AppendInfo, BatchIter, CleanupPolicy, ControlType, FlushPolicy, Log,
    ReadInfo, RecordBatch, StorageError, TimestampOffset,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::errors::storage_error_code;
use crate::producer_state::{Decision, ProducerBatch, ProducerState, ProducerSummary};

/// Which records a consumer may see (the `isolation_level` of Fetch and ListOffsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Only below the last stable offset: no record of a transaction still open.
    ReadCommitted,
}

impl Isolation {
    pub fn from_level(level: i8) -> Isolation {
        if level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        }
    }
}

/// A refused append: the error code and, where it helps the client, a message.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendError {
    pub code: ResponseError,
    pub message: Option<String>,
}

impl From<ResponseError> for AppendError {
    fn from(code: ResponseError) -> Self {
        AppendError {
            code,
            message: None,
        }
    }
}

/// Until followers replicate partitions (ISR replication), a replica set of more than one
/// would acknowledge acks=all writes that only the leader holds. Topics are refused instead.
pub const MAX_REPLICATION_FACTOR: usize = 1;

/// The refusal for a replica set larger than this broker can keep in sync.
pub fn check_replication_factor(replicas: usize) -> Result<(), (ResponseError, String)> {
    if replicas > MAX_REPLICATION_FACTOR {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replicas} is not supported yet: partitions are not replicated between brokers, \
                 so acks=all could not be honoured; use replication factor 1"
            ),
        ));
    }
    Ok(())
}

/// Bytes read per step when rebuilding producer state from the log.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// What the metadata image says about this partition, as this broker last applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub min_insync_replicas: i64,
}

/// Per-topic traffic counters, registered once per partition instead of per request.
pub struct TrafficCounters {
    pub bytes_in: metrics::Counter,
    pub messages_in: metrics::Counter,
    pub bytes_out: metrics::Counter,
}

impl TrafficCounters {
    fn for_topic(topic: &str) -> TrafficCounters {
        let labels = [("topic", topic.to_string())];
        TrafficCounters {
            bytes_in: metrics::counter!("sluice_bytes_in_total", &labels),
            messages_in: metrics::counter!("sluice_messages_in_total", &labels),
            bytes_out: metrics::counter!("sluice_bytes_out_total", &labels),
        }
    }
}

pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    node_id: i32,
    pub traffic: TrafficCounters,
    log: Arc<Log>,
    state: RwLock<LeaderState>,
    /// Offsets below it are committed (replicated to the ISR) and visible to consumers.
    high_watermark: AtomicI64,
    /// Idempotent producers' sequences and open transactions; appends hold this lock so a
    /// check and its write are one step.
    producers: Mutex<ProducerState>,
    /// First offset of the oldest open transaction (i64::MAX: none), kept beside the
    /// producer state so fetches need not take its lock.
    first_unstable: AtomicI64,
    /// Fetches parked until new data is committed; each is woken once. Weak, so a fetch
    /// that gave up leaves nothing behind once it is pruned.
    waiters: Mutex<Vec<Weak<Notify>>>,
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        node_id: i32,
        log: Arc<Log>,
        state: LeaderState,
    ) -> Partition {
        let producers = rebuild_producer_state(&log, &topic, index);
        let first_unstable = AtomicI64::new(producers.first_unstable_offset().unwrap_or(i64::MAX));
        let producers = Mutex::new(producers);
        let partition = Partition {
            first_unstable,
            traffic: TrafficCounters::for_topic(&topic),
            topic,
            topic_id,
            index,
            node_id,
            producers,
            high_watermark: AtomicI64::new(log.log_start_offset()),
            log,
            state: RwLock::new(state),
            waiters: Mutex::new(Vec::new()),
        };
        partition.advance_high_watermark();
        partition
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn leader_state(&self) -> LeaderState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a newer leader state from the metadata image. A new leader epoch on this
    /// broker as leader starts at the current log end.
    pub fn update_leader_state(&self, new: LeaderState) -> Result<(), StorageError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if new.leader == self.node_id && new.leader_epoch > self.log.latest_epoch() {
            self.log
                .assign_leader_epoch(new.leader_epoch, self.log.log_end_offset())?;
        }
        debug_assert!(
            new.leader_epoch >= state.leader_epoch,
            "leader epochs only move forward"
        );
        *state = new;
        drop(state);
        self.advance_high_watermark();
        Ok(())
    }

    pub fn is_leader(&self) -> bool {
        self.state.read().unwrap_or_else(|e| e.into_inner()).leader == self.node_id
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Checks a client's `current_leader_epoch` (-1: not given) against ours.
    pub fn check_leader_epoch(&self, current_leader_epoch: i32) -> Result<(), ResponseError> {
        if current_leader_epoch < 0 {
            return Ok(());
        }
        let ours = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leader_epoch;
        match current_leader_epoch.cmp(&ours) {
            std::cmp::Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
            std::cmp::Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// Leader append of one produce request's records for this partition: exactly one
    /// magic-v2 batch (Produce v3+). An idempotent producer's retry of a recent batch is
    /// answered with the offsets it got the first time. A transactional batch is taken only
    /// when `in_txn` says its transaction coordinator verified that this partition is part
    /// of the producer's ongoing transaction (KIP-890's defence against hanging
    /// transactions).
    pub fn append_as_leader(
        &self,
        records: &[u8],
        acks: i16,
        now_ms: i64,
        in_txn: bool,
    ) -> Result<AppendInfo, AppendError> {
        let state = self.leader_state();
        if state.leader != self.node_id {
            return Err(ResponseError::NotLeaderOrFollower.into());
        }
        if acks == -1 && (state.isr.len() as i64) < state.min_insync_replicas {
            return Err(ResponseError::NotEnoughReplicas.into());
        }
        let invalid = |why: String| AppendError {
            code: ResponseError::InvalidRecord,
            message: Some(why),
        };
        let batch = RecordBatch::new(records).map_err(|e| {
            invalid(format!(
                "a produce request must carry exactly one record batch: {e}"
            ))
        })?;
        if batch.magic() != 2 {
            return Err(invalid(format!(
                "record batch magic {} is not supported; only magic 2",
                batch.magic()
            )));
        }
        if batch.is_control() {
            return Err(invalid(
                "clients may not write control batches; only the transaction coordinator does"
                    .into(),
            ));
        }
        if batch.is_transactional() && !in_txn {
            return Err(AppendError {
                code: ResponseError::InvalidTxnState,
                message: Some(
                    "transactional produce to a partition that is not part of the producer's ongoing \
                     transaction: add it with AddPartitionsToTxn first"
                        .into(),
                ),
            });
        }
        if self.log.config().cleanup_policy != CleanupPolicy::Delete {
            check_keys_for_compaction(&batch)?;
        }
        let producer = (batch.producer_id() >= 0).then(|| {
            ProducerBatch::new(
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_sequence(),
                batch.last_offset_delta(),
            )
        });
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = &producer {
            if let Decision::Duplicate(meta) = producers.check(p)? {
                return Ok(AppendInfo {
                    base_offset: meta.base_offset,
                    last_offset: meta.last_offset,
                    log_append_time_ms: -1,
                    log_start_offset: self.log.log_start_offset(),
                    record_count: 0,
                    bytes: 0,
                });
            }
        }
        let info = self.append_to_log(records, state.leader_epoch, now_ms)?;
        if let Some(p) = &producer {
            producers.record(
                p,
                info.base_offset,
                info.last_offset,
                now_ms,
                batch.is_transactional(),
            );
            self.note_open_txns(&producers);
        }
        drop(producers);
        self.advance_high_watermark();
        Ok(info)
    }

    /// Appends a batch a coordinator built (group metadata, offset commits, transaction
    /// state). A transactional one (offsets committed inside a transaction) opens its
    /// producer's transaction here like a produced batch, without sequence checks.
    pub fn append_from_coordinator(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let batch = RecordBatch::new(records).map_err(|e| AppendError {
            code: ResponseError::InvalidRecord,
            message: Some(e.to_string()),
        })?;
        let leader_epoch = self.leader_epoch()?;
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let info = self.append_to_log(records, leader_epoch, now_ms)?;
        if batch.is_transactional() {
            producers.record_coordinator_batch(
                batch.producer_id(),
                batch.producer_epoch(),
                info.base_offset,
                now_ms,
            );
            self.note_open_txns(&producers);
        }
        drop(producers);
        self.advance_high_watermark();
        Ok(info)
    }

    /// Writes the transaction coordinator's commit or abort marker for `producer_id`,
    /// ending its transaction on this partition. An abort is also recorded in the log's
    /// aborted-transaction index, which `read_committed` consumers use to skip its records.
    pub fn write_txn_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        let leader_epoch = self.leader_epoch()?;
        let control = if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let marker = control_batch(producer_id, epoch, control, coordinator_epoch, now_ms);
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        producers.check_marker(producer_id, epoch)?;
        let info = self.append_to_log(&marker, leader_epoch, now_ms)?;
        let first = producers.end_txn(producer_id, epoch, coordinator_epoch, now_ms);
        // The index entry goes in before the stable offset moves past the transaction: a
        // read_committed fetch must never see its records without it.
        if let (Some(first_offset), false) = (first, commit) {
            let txn = AbortedTxn {
                producer_id,
                first_offset,
                last_offset: info.base_offset,
                last_stable_offset: self.last_stable_offset(),
            };
            self.log.append_aborted_txn(txn).map_err(|e| AppendError {
                code: storage_error_code(&e),
                message: Some(e.to_string()),
            })?;
        }
        self.note_open_txns(&producers);
        drop(producers);
        self.advance_high_watermark();
        Ok(())
    }

    /// Our leader epoch, or NOT_LEADER_OR_FOLLOWER (read without cloning the replica lists).
    fn leader_epoch(&self) -> Result<i32, AppendError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if state.leader != self.node_id {
            return Err(ResponseError::NotLeaderOrFollower.into());
        }
        Ok(state.leader_epoch)
    }

    /// One batch into the log, stamped with the leader epoch the caller checked; the caller
    /// holds the producer lock.
    fn append_to_log(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let append = || self.log.append_as_leader(records, leader_epoch, now_ms);
        // An fsync per append would stall every task on this worker thread; tell the
        // runtime first. Page-cache appends take microseconds and run inline.
        let result = if self.log.config().flush == FlushPolicy::Always {
            tokio::task::block_in_place(append)
        } else {
            append()
        };
        result.map_err(|e| AppendError {
            code: storage_error_code(&e),
            message: Some(e.to_string()),
        })
    }

    fn note_open_txns(&self, producers: &ProducerState) {
        self.first_unstable.store(
            producers.first_unstable_offset().unwrap_or(i64::MAX),
            Ordering::Release,
        );
    }

    /// Offsets below it hold no record of an open transaction: the bound for
    /// `read_committed` consumers.
    pub fn last_stable_offset(&self) -> i64 {
        self.high_watermark()
            .min(self.first_unstable.load(Ordering::Acquire))
    }

    /// The bound of what a consumer with this isolation may read.
    pub fn max_readable_offset(&self, isolation: Isolation) -> i64 {
        match isolation {
            Isolation::ReadUncommitted => self.high_watermark(),
            Isolation::ReadCommitted => self.last_stable_offset(),
        }
    }

    /// Aborted transactions overlapping [from, upper): what a `read_committed` fetch lists.
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Result<Vec<AbortedTxn>, StorageError> {
        self.log.aborted_txns(from, upper)
    }

    /// The producers this partition knows, for DescribeProducers.
    pub fn describe_producers(&self) -> Vec<ProducerSummary> {
        self.producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .describe()
    }

    /// Saves the producer state beside the log (clean shutdown), so the next open need not
    /// rebuild it from the log.
    pub fn save_producer_state(&self) -> Result<(), StorageError> {
        let producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        self.log
            .save_producer_snapshot(self.log.log_end_offset(), &producers.encode())
    }

    /// The high watermark is the smallest log end over the ISR. Until followers exist the ISR
    /// is this leader alone, so it is our log end.
    fn advance_high_watermark(&self) {
        let leo = self.log.log_end_offset();
        let previous = self.high_watermark.fetch_max(leo, Ordering::AcqRel);
        if leo > previous {
            // Retention, compaction and DeleteRecords never touch uncommitted data, nor
            // records of a transaction still open (Kafka cleans only below the stable offset).
            self.log
                .set_high_watermark(leo.min(self.first_unstable.load(Ordering::Acquire)));
            self.wake_waiters();
        }
    }

    /// Reads for a consumer: committed data only, and with `read_committed` nothing of a
    /// transaction still open.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: Isolation,
    ) -> Result<ReadInfo, StorageError> {
        self.log.read(
            offset,
            max_bytes,
            self.max_readable_offset(isolation),
            min_one_batch,
        )
    }

    /// Registers `waiter` to be notified on the next committed append.
    pub fn add_waiter(&self, waiter: &Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(waiter));
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify_one();
        }
    }

    /// ListOffsets for a timestamp (or one of Kafka's special values).
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        isolation: Isolation,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        const EARLIEST_LOCAL: i64 = -4;
        const LATEST_TIERED: i64 = -5;
        let epoch = self.leader_state().leader_epoch;
        let end = self.max_readable_offset(isolation);
        let at = |offset: i64| {
            Some(TimestampOffset {
                offset,
                timestamp_ms: -1,
                leader_epoch: epoch,
            })
        };
        match timestamp {
            LATEST => Ok(at(end)),
            EARLIEST | EARLIEST_LOCAL => Ok(at(self.log.log_start_offset())),
            // Nothing is tiered: Kafka answers -1 when no remote storage is in use.
            LATEST_TIERED => Ok(at(-1)),
            MAX_TIMESTAMP => Ok(self.log.max_timestamp()?.filter(|t| t.offset < end)),
            ts if ts >= 0 => Ok(self
                .log
                .find_offset_by_timestamp(ts)?
                .filter(|t| t.offset < end)),
            _ => Ok(None),
        }
    }

    /// DeleteRecords: moves the log start up to `offset` (-1: the high watermark), never
    /// past the high watermark.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, ResponseError> {
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(ResponseError::OffsetOutOfRange);
        }
        self.log
            .delete_records_before(target)
            .map_err(|e| storage_error_code(&e))
    }
}

/// A compacted topic keeps the latest record per key, so a record without a key could never
/// be compacted away: Kafka refuses it.
fn check_keys_for_compaction(batch: &RecordBatch<'_>) -> Result<(), AppendError> {
    let records = batch.records().map_err(|e| AppendError {
        code: storage_error_code(&e),
        message: Some(e.to_string()),
    })?;
    if records.iter().any(|r| r.key.is_none()) {
        return Err(AppendError {
            code: ResponseError::InvalidRecord,
            message: Some("compacted topic cannot accept a record without a key".into()),
        });
    }
    Ok(())
}

/// Producer state as of the log end: the newest snapshot, then every batch after it.
fn rebuild_producer_state(log: &Log, topic: &str, index: i32) -> ProducerState {
    let (mut state, mut offset) = match log.load_producer_snapshot() {
        Ok(Some((at, data))) => match ProducerState::decode(&data) {
            Some(state) => (state, at),
            None => (ProducerState::default(), log.log_start_offset()),
        },
        _ => (ProducerState::default(), log.log_start_offset()),
    };
    offset = offset.max(log.log_start_offset());
    let end = log.log_end_offset();
    let mut scanned = 0u64;
    while offset < end {
        let Ok(read) = log.read(offset, REBUILD_READ_BYTES, end, true) else {
            break;
        };
        if read.records.is_empty() {
            break;
        }
        for batch in BatchIter::new(&read.records) {
            let Ok(batch) = batch else { break };
            if batch.is_control() {
                let first = state.end_txn(
                    batch.producer_id(),
                    batch.producer_epoch(),
                    -1,
                    batch.max_timestamp(),
                );
                if let (Some(first), Some(ControlType::Abort)) = (first, batch.control_type()) {
                    restore_aborted_txn(log, batch.producer_id(), first, batch.base_offset());
                }
                scanned += 1;
            } else if batch.producer_id() >= 0 && batch.base_sequence() < 0 {
                // Written by a coordinator: no sequences.
                state.record_coordinator_batch(
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_offset(),
                    batch.max_timestamp(),
                );
                scanned += 1;
            } else if batch.producer_id() >= 0 {
                let p = ProducerBatch::new(
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence(),
                    batch.last_offset_delta(),
                );
                state.record(
                    &p,
                    batch.base_offset(),
                    batch.last_offset(),
                    batch.max_timestamp(),
                    batch.is_transactional(),
                );
                scanned += 1;
            }
            offset = offset.max(batch.next_offset());
        }
    }
    if scanned > 0 {
        tracing::debug!(
            topic,
            partition = index,
            batches = scanned,
            producers = state.len(),
            "rebuilt producer state from the log"
        );
    }
    state
}

/// An abort marker found while rebuilding: its index entry is written after the marker, so a
/// crash between the two leaves the entry missing. Adds it unless it is there.
fn restore_aborted_txn(log: &Log, producer_id: i64, first_offset: i64, marker_offset: i64) {
    let present = log
        .aborted_txns(marker_offset, marker_offset + 1)
        .map(|txns| {
            txns.iter()
                .any(|t| t.last_offset == marker_offset && t.producer_id == producer_id)
        })
        .unwrap_or(false);
    if present {
        return;
    }
    let txn = AbortedTxn {
        producer_id,
        first_offset,
        last_offset: marker_offset,
        last_stable_offset: first_offset,
    };
    if let Err(e) = log.append_aborted_txn(txn) {
        tracing::warn!(producer_id, marker_offset, error = %e, "could not restore an aborted-transaction index entry");
    }
}
