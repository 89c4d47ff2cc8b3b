//! `__consumer_offsets` as the coordinator sees it: the hosted partitions of that topic,
//! written as record batches and replayed whole when a partition is loaded (through the
//! shared [`internal_topics`] code).

use sluice_protocol::ResponseError;

use super::offsets_topic::OFFSETS_TOPIC;
use super::{KeyValue, OffsetsLog, Replayed};
use crate::internal_topics;
use crate::replica_manager::ReplicaManager;

impl OffsetsLog for ReplicaManager {
    fn append(&self, partition: i32, records: &[KeyValue]) -> Result<(), ResponseError> {
        internal_topics::append(self, OFFSETS_TOPIC, partition, records, None)
    }

    fn append_transactional(
        &self,
        partition: i32,
        producer: (i64, i16),
        records: &[KeyValue],
    ) -> Result<(), ResponseError> {
        internal_topics::append(self, OFFSETS_TOPIC, partition, records, Some(producer))
    }

    fn read_all(&self, partition: i32) -> Result<Vec<Replayed>, ResponseError> {
        internal_topics::replay(self, OFFSETS_TOPIC, partition)
    }

    fn is_leader(&self, partition: i32) -> bool {
        self.get(OFFSETS_TOPIC, partition)
            .is_some_and(|p| p.is_leader())
    }
}
