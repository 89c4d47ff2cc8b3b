//! One partition replica hosted by this broker: its log, its leader state from the metadata
//! image, its high watermark, and the fetches waiting for new data.
//!
//! Today every replica set this broker hosts is led by it and the high watermark follows the
//! log end of the ISR; the follower side of ISR replication comes with the cluster issue.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use sluice_protocol::ResponseError;
use sluice_storage::{AppendInfo, FlushPolicy, Log, ReadInfo, StorageError, TimestampOffset};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::errors::storage_error_code;

/// What the metadata image says about this partition, as this broker last applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub min_insync_replicas: i64,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    node_id: i32,
    log: Arc<Log>,
    state: RwLock<LeaderState>,
    /// Offsets below it are committed (replicated to the ISR) and visible to consumers.
    high_watermark: AtomicI64,
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
        let partition = Partition {
            topic,
            topic_id,
            index,
            node_id,
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

    /// Leader append of one produce request's records for this partition.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, ResponseError> {
        let state = self.leader_state();
        if state.leader != self.node_id {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if acks == -1 && (state.isr.len() as i64) < state.min_insync_replicas {
            return Err(ResponseError::NotEnoughReplicas);
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
        let info = result.map_err(|e| storage_error_code(&e))?;
        self.advance_high_watermark();
        Ok(info)
    }

    /// The high watermark is the smallest log end over the ISR. Until followers exist the ISR
    /// is this leader alone, so it is our log end.
    fn advance_high_watermark(&self) {
        let leo = self.log.log_end_offset();
        let previous = self.high_watermark.fetch_max(leo, Ordering::AcqRel);
        if leo > previous {
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
