//! `__consumer_offsets` as the coordinator sees it: the hosted partitions of that topic,
//! written as record batches and read back whole when a partition is loaded.

use sluice_protocol::ResponseError;
use sluice_storage::{BatchBuilder, BatchIter};

use super::offsets_topic::OFFSETS_TOPIC;
use super::{KeyValue, OffsetsLog};
use crate::broker::now_ms;
use crate::errors::storage_error_code;
use crate::replica_manager::ReplicaManager;

/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;

impl OffsetsLog for ReplicaManager {
    fn append(&self, partition: i32, records: &[KeyValue]) -> Result<(), ResponseError> {
        let p = self
            .get(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::NotCoordinator)?;
        let now = now_ms();
        let mut batch = BatchBuilder::new(0, now);
        for (i, (key, value)) in records.iter().enumerate() {
            batch.push(i as i32, now, Some(key), value.as_deref(), &[]);
        }
        let batch = batch.build().map_err(|e| storage_error_code(&e))?;
        // acks=all: a commit is acknowledged only once it is committed to the ISR.
        match p.append_as_leader(&batch, -1, now) {
            Ok(_) => Ok(()),
            Err(e) if e.code == ResponseError::NotLeaderOrFollower => {
                Err(ResponseError::NotCoordinator)
            }
            Err(e) => Err(e.code),
        }
    }

    fn read_all(&self, partition: i32) -> Result<Vec<KeyValue>, ResponseError> {
        let p = self
            .get(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::NotCoordinator)?;
        let mut out = Vec::new();
        let mut offset = p.log().log_start_offset();
        while offset < p.high_watermark() {
            let read = p
                .read(offset, LOAD_READ_BYTES, true)
                .map_err(|e| storage_error_code(&e))?;
            if read.records.is_empty() {
                break;
            }
            for batch in BatchIter::new(&read.records) {
                let batch = batch.map_err(|e| storage_error_code(&e))?;
                if !batch.is_control() {
                    for r in batch.records().map_err(|e| storage_error_code(&e))? {
                        if r.offset >= offset {
                            out.push((r.key.unwrap_or_default(), r.value));
                        }
                    }
                }
                offset = offset.max(batch.next_offset());
            }
        }
        Ok(out)
    }

    fn is_leader(&self, partition: i32) -> bool {
        self.get(OFFSETS_TOPIC, partition)
            .is_some_and(|p| p.is_leader())
    }
}
