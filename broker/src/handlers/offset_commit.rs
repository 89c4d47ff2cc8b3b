//! OffsetCommit: a consumer's positions, stored in `__consumer_offsets`.

use std::sync::Arc;

use sluice_protocol::kafka::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_protocol::kafka::messages::{OffsetCommitRequest, OffsetCommitResponse};
use sluice_protocol::ResponseError;

use crate::broker::{now_ms, Broker};
use crate::group::offsets_topic::OffsetValue;

pub fn handle(broker: &Arc<Broker>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let image = broker.image();
    let max_metadata = broker.groups.config().offset_metadata_max_bytes;
    let now = now_ms();
    // Per partition: refused up front, or part of the commit.
    let mut results: Vec<(usize, i32, Option<ResponseError>)> = Vec::new();
    let mut offsets = Vec::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.to_string();
        let known = image.topics.get(&name);
        for p in &topic.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let refused = if known.is_none_or(|t| {
                p.partition_index < 0 || p.partition_index as usize >= t.partitions.len()
            }) {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                None
            };
            if refused.is_none() {
                let value = OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                };
                offsets.push((name.clone(), p.partition_index, value));
            }
            results.push((ti, p.partition_index, refused));
        }
    }
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let group_error = if group_id.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else {
        broker
            .groups
            .check_coordinator(&broker.replicas, &group_id)
            .and_then(|()| {
                broker.groups.commit_offsets(
                    &broker.replicas,
                    &group_id,
                    request.generation_id_or_member_epoch,
                    request.member_id.as_str(),
                    instance_id.as_deref(),
                    offsets,
                )
            })
            .err()
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (ti, partition, refused) in results {
        let code = refused.or(group_error).map_or(0, |e| e.code());
        topics[ti].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}
