//! One partition replica hosted by this broker: its log, its leader state from the metadata
//! image, its high watermark, and the fetches waiting for new data.
//!
//! Today every replica set this broker hosts is led by it and the high watermark follows the
//! log end of the ISR; the follower side of ISR replication comes with the cluster issue.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use sluice_protocol::ResponseError;
use sluice_storage::{
    AppendInfo, BatchIter, CleanupPolicy, FlushPolicy, Log, ReadInfo, RecordBatch, StorageError,
    TimestampOffset,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::errors::storage_error_code;
use crate::producer_state::{Decision, ProducerBatch, ProducerState};

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
    /// Idempotent producers' sequences; appends hold this lock so a check and its write are
    /// one step.
    producers: Mutex<ProducerState>,
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
        let producers = Mutex::new(rebuild_producer_state(&log, &topic, index));
        let partition = Partition {
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
    /// answered with the offsets it got the first time.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        acks: i16,
        now_ms: i64,
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
        if batch.is_transactional() {
            // No transaction can have added this partition: transactions are not served.
            return Err(AppendError {
                code: ResponseError::InvalidTxnState,
                message: Some(
                    "transactional produce to a partition outside any transaction".into(),
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
        let append = || {
            self.log
                .append_as_leader(records, state.leader_epoch, now_ms)
        };
        // An fsync per append would stall every task on this worker thread; tell the
        // runtime first. Page-cache appends take microseconds and run inline.
        let result = if self.log.config().flush == FlushPolicy::Always {
            tokio::task::block_in_place(append)
        } else {
            append()
        };
        let info = result.map_err(|e| AppendError {
            code: storage_error_code(&e),
            message: Some(e.to_string()),
        })?;
        if let Some(p) = &producer {
            producers.record(p, info.base_offset, info.last_offset, now_ms);
        }
        drop(producers);
        self.advance_high_watermark();
        Ok(info)
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
            // Retention, compaction and DeleteRecords never touch uncommitted data.
            self.log.set_high_watermark(leo);
            self.wake_waiters();
        }
    }

    /// Reads for a consumer: committed data only.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadInfo, StorageError> {
        self.log
            .read(offset, max_bytes, self.high_watermark(), min_one_batch)
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
    ) -> Result<Option<TimestampOffset>, StorageError> {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        const EARLIEST_LOCAL: i64 = -4;
        const LATEST_TIERED: i64 = -5;
        let epoch = self.leader_state().leader_epoch;
        let at = |offset: i64| {
            Some(TimestampOffset {
                offset,
                timestamp_ms: -1,
                leader_epoch: epoch,
            })
        };
        match timestamp {
            LATEST => Ok(at(self.high_watermark())),
            EARLIEST | EARLIEST_LOCAL => Ok(at(self.log.log_start_offset())),
            // Nothing is tiered: Kafka answers -1 when no remote storage is in use.
            LATEST_TIERED => Ok(at(-1)),
            MAX_TIMESTAMP => Ok(self
                .log
                .max_timestamp()?
                .filter(|t| t.offset < self.high_watermark())),
            ts if ts >= 0 => Ok(self
                .log
                .find_offset_by_timestamp(ts)?
                .filter(|t| t.offset < self.high_watermark())),
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
            if batch.producer_id() >= 0 && !batch.is_control() {
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
