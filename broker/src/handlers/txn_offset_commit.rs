//! TxnOffsetCommit: offsets a transactional producer commits for a consumer group; they
//! become the group's committed offsets only when the transaction commits. The group's
//! partition must have joined the transaction (AddOffsetsToTxn) first.

use std::sync::Arc;

use sluice_protocol::kafka::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use sluice_protocol::kafka::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use sluice_protocol::ResponseError;

use crate::broker::{now_ms, Broker};
use crate::group::offsets_topic::{OffsetValue, OFFSETS_TOPIC};

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let code = match commit(broker, &request) {
        Ok(()) => 0,
        Err(ResponseError::ProducerFenced) if version < 3 => {
            ResponseError::InvalidProducerEpoch.code()
        }
        Err(e) => e.code(),
    };
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

fn commit(broker: &Arc<Broker>, request: &TxnOffsetCommitRequest) -> Result<(), ResponseError> {
    let group_id = request.group_id.as_str();
    broker
        .groups
        .check_coordinator(&broker.replicas, group_id)?;
    let max_metadata = broker.groups.config().offset_metadata_max_bytes;
    let now = now_ms();
    let mut offsets = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or_default();
            if metadata.len() > max_metadata {
                return Err(ResponseError::OffsetMetadataTooLarge);
            }
            offsets.push((
                t.name.0.to_string(),
                p.partition_index,
                OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: metadata.to_string(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let producer = (request.producer_id.0, request.producer_epoch);
    let result = broker.txns.with_partition_in_txn(
        broker,
        &request.transactional_id,
        producer,
        (OFFSETS_TOPIC, broker.groups.partition_for(group_id)),
        || {
            broker.groups.commit_txn_offsets(
                &broker.replicas,
                group_id,
                producer,
                request.generation_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
                offsets,
            )
        },
    );
    result?
}
