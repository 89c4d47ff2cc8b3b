//! The internal topics coordinators keep their state in (`__consumer_offsets` for groups,
//! `__transaction_state` for transactions): creating one on first use with Kafka's settings,
//! which partition a key lives in (the leader of that partition is the key's coordinator),
//! and writing and replaying their records.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::ResponseError;
use sluice_raft::{MetadataImage, NewTopic};
use sluice_storage::{BatchBuilder, BatchIter, ControlType};

use crate::broker::{now_ms, Broker};
use crate::errors::storage_error_code;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::replica_manager::ReplicaManager;
use crate::txn::state_topic::TXN_STATE_TOPIC;

/// A record's key and value (None: a tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Bytes read per step while replaying a partition.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// The partition a coordinator key (group id, transactional id) lives in: Java's
/// `String.hashCode` of the key, made non-negative, modulo the partition count (Kafka's
/// `Utils.abs(hashCode) % n`), so keys land where Kafka would put them.
pub fn partition_for_key(key: &str, partitions: i32) -> i32 {
    // Java's String.hashCode over UTF-16 code units.
    let mut h: i32 = 0;
    for unit in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: Integer.MIN_VALUE maps to 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// How an internal topic is created.
pub struct InternalTopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    /// As configured; capped at the live brokers and what this broker can replicate.
    pub replication_factor: i16,
    pub configs: Vec<(&'static str, String)>,
}

/// Creates `__consumer_offsets` if it does not exist yet, with Kafka's settings for it.
pub async fn ensure_offsets_topic(
    broker: &Arc<Broker>,
) -> Result<Arc<MetadataImage>, (ResponseError, String)> {
    let cfg = broker.groups.config();
    let spec = InternalTopicSpec {
        name: OFFSETS_TOPIC,
        partitions: cfg.offsets_topic_partitions,
        replication_factor: cfg.offsets_topic_replication_factor,
        configs: vec![
            ("cleanup.policy", "compact".into()),
            ("segment.bytes", "104857600".into()),
            ("compression.type", "producer".into()),
        ],
    };
    ensure_exists(broker, spec).await
}

/// Creates `__transaction_state` if it does not exist yet, with Kafka's settings for it.
pub async fn ensure_transaction_state_topic(
    broker: &Arc<Broker>,
) -> Result<Arc<MetadataImage>, (ResponseError, String)> {
    let cfg = broker.txns.config();
    let spec = InternalTopicSpec {
        name: TXN_STATE_TOPIC,
        partitions: cfg.state_log_partitions,
        replication_factor: cfg.state_log_replication_factor,
        configs: vec![
            ("cleanup.policy", "compact".into()),
            ("segment.bytes", "104857600".into()),
            ("compression.type", "uncompressed".into()),
            // Kafka's transaction.state.log.min.isr is 2, but the replication factor is
            // capped at what this broker can replicate.
            ("min.insync.replicas", "1".into()),
        ],
    };
    ensure_exists(broker, spec).await
}

/// Creates the internal topic if it does not exist yet, and returns an image that has it.
pub async fn ensure_exists(
    broker: &Arc<Broker>,
    spec: InternalTopicSpec,
) -> Result<Arc<MetadataImage>, (ResponseError, String)> {
    let image = broker.image();
    if image.topics.contains_key(spec.name) {
        return Ok(image);
    }
    let live = image.brokers.values().filter(|b| !b.fenced).count().max(1);
    let name = spec.name;
    let topic = NewTopic {
        name: name.to_string(),
        num_partitions: spec.partitions,
        // Kafka refuses until enough brokers exist; a single-node cluster uses what it has,
        // and until partitions are replicated no more than one replica is kept.
        replication_factor: (spec.replication_factor.max(1) as usize)
            .min(live)
            .min(crate::partition::MAX_REPLICATION_FACTOR) as i16,
        assignments: BTreeMap::new(),
        configs: spec
            .configs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    match broker
        .metadata
        .create_topics(vec![topic], false)
        .await
        .pop()
    {
        Some(Ok(_)) | Some(Err(sluice_raft::ControllerError::TopicAlreadyExists(_))) => {}
        Some(Err(e)) => {
            return Err((
                ResponseError::CoordinatorNotAvailable,
                format!("cannot create {name}: {e}"),
            ))
        }
        None => {
            return Err((
                ResponseError::CoordinatorNotAvailable,
                "no answer from the controller".into(),
            ))
        }
    }
    tracing::info!("created the internal topic {name}");
    Ok(broker
        .wait_for_image(|image| image.topics.contains_key(name))
        .await)
}

/// (node id, host, port) of the leader of `topic`/`partition`: a coordinator's address.
pub fn coordinator_address(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<(i32, String, i32), (ResponseError, String)> {
    let unavailable = |why: String| Err((ResponseError::CoordinatorNotAvailable, why));
    let Some(leader) = image
        .topics
        .get(topic)
        .and_then(|t| t.partitions.iter().find(|q| q.partition == partition))
        .map(|q| q.leader)
    else {
        return unavailable(format!("partition {partition} of {topic} does not exist"));
    };
    match image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .and_then(|b| b.listeners.first())
    {
        Some(e) => Ok((leader, e.host.clone(), i32::from(e.port))),
        None => unavailable(format!(
            "partition {partition} of {topic} has no live leader"
        )),
    }
}

/// Appends records to one partition of an internal topic and returns once they are
/// committed. With `producer`, they are written as a transactional batch of that producer
/// (offsets committed inside a transaction), visible only after its commit marker.
pub fn append(
    replicas: &ReplicaManager,
    topic: &str,
    partition: i32,
    records: &[KeyValue],
    producer: Option<(i64, i16)>,
) -> Result<(), ResponseError> {
    let p = replicas
        .get(topic, partition)
        .ok_or(ResponseError::NotCoordinator)?;
    let now = now_ms();
    let mut batch = BatchBuilder::new(0, now);
    if let Some((id, epoch)) = producer {
        // A coordinator's batch has no sequence (base sequence stays -1).
        batch.transactional = true;
        batch.producer_id = id;
        batch.producer_epoch = epoch;
    }
    for (i, (key, value)) in records.iter().enumerate() {
        batch.push(i as i32, now, Some(key), value.as_deref(), &[]);
    }
    let batch = batch.build().map_err(|e| storage_error_code(&e))?;
    match p.append_from_coordinator(&batch, now) {
        Ok(_) => Ok(()),
        Err(e) if e.code == ResponseError::NotLeaderOrFollower => {
            Err(ResponseError::NotCoordinator)
        }
        Err(e) => Err(e.code),
    }
}

/// One entry of a replayed internal-topic partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Replayed {
    /// A record; `producer_id` is set when it was written inside a transaction.
    Record {
        key: Bytes,
        value: Option<Bytes>,
        producer_id: Option<i64>,
    },
    /// The end of a producer's transaction.
    Marker { producer_id: i64, commit: bool },
}

/// Every committed record and transaction marker of one partition, in offset order.
pub fn replay(
    replicas: &ReplicaManager,
    topic: &str,
    partition: i32,
) -> Result<Vec<Replayed>, ResponseError> {
    let p = replicas
        .get(topic, partition)
        .ok_or(ResponseError::NotCoordinator)?;
    let mut out = Vec::new();
    let mut offset = p.log().log_start_offset();
    while offset < p.high_watermark() {
        let read = p
            .read(
                offset,
                REPLAY_READ_BYTES,
                true,
                crate::partition::Isolation::ReadUncommitted,
            )
            .map_err(|e| storage_error_code(&e))?;
        if read.records.is_empty() {
            break;
        }
        for batch in BatchIter::new(&read.records) {
            let batch = batch.map_err(|e| storage_error_code(&e))?;
            if batch.is_control() {
                if let Some(control) = batch.control_type() {
                    out.push(Replayed::Marker {
                        producer_id: batch.producer_id(),
                        commit: control == ControlType::Commit,
                    });
                }
            } else {
                let producer_id = batch.is_transactional().then(|| batch.producer_id());
                for r in batch.records().map_err(|e| storage_error_code(&e))? {
                    if r.offset >= offset {
                        out.push(Replayed::Record {
                            key: r.key.unwrap_or_default(),
                            value: r.value,
                            producer_id,
                        });
                    }
                }
            }
            offset = offset.max(batch.next_offset());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafkas_hash() {
        // Values from Java: Math.abs(s.hashCode()) % 50.
        assert_eq!(partition_for_key("my-group", 50), 12);
        assert_eq!(partition_for_key("console-consumer-12345", 50), 6);
        assert_eq!(partition_for_key("ünïcode", 50), 16);
        assert_eq!(partition_for_key("", 50), 0);
    }
}
