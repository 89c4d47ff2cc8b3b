//! OffsetFetch: committed offsets of one group (v1-v7) or several (v8+); -1 where none.
//! With `require_stable` (v7+, KIP-447), a partition with offsets pending in an open
//! transaction answers UNSTABLE_OFFSET_COMMIT, and the client retries.

use std::sync::Arc;

use sluice_protocol::kafka::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_protocol::kafka::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use sluice_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::group::offsets_topic::OffsetValue;
use crate::group::TopicOffsets;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch(broker, g.group_id.as_str(), wanted) {
                    Ok(fetched) => group.with_topics(
                        fetched
                            .into_iter()
                            .map(|(topic, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str_bytes(topic.clone())))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, v)| {
                                                let (offset, epoch, meta) = fields(v);
                                                let unstable = unstable(
                                                    broker,
                                                    request.require_stable,
                                                    &g.group_id,
                                                    &topic,
                                                    p,
                                                );
                                                OffsetFetchResponsePartitions::default()
                                                    .with_error_code(unstable)
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(meta)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(e) => group.with_error_code(e.code()),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }

    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    let result = fetch(broker, request.group_id.as_str(), wanted.clone());
    let (fetched, error) = match result {
        Ok(f) => (f, None),
        // v1 has no top-level error code: the error goes on every requested partition.
        Err(e) => (
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                .collect(),
            Some(e),
        ),
    };
    let partition_error = if version < 2 { error } else { None };
    let topics = fetched
        .into_iter()
        .map(|(topic, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic.clone())))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, meta) = fields(v);
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(str_bytes(meta)))
                                .with_error_code(partition_error.map_or_else(
                                    || {
                                        unstable(
                                            broker,
                                            request.require_stable,
                                            &request.group_id,
                                            &topic,
                                            p,
                                        )
                                    },
                                    |e| e.code(),
                                ));
                            if version >= 5 {
                                r.with_committed_leader_epoch(epoch)
                            } else {
                                r
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(error.map_or(0, |e| e.code()))
    } else {
        response
    }
}

fn fetch(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<TopicOffsets, ResponseError> {
    broker
        .groups
        .check_coordinator(&broker.replicas, group_id)?;
    Ok(broker.groups.fetch_offsets(group_id, wanted))
}

/// UNSTABLE_OFFSET_COMMIT's code if the caller requires stable offsets and a transaction
/// has offsets pending for this partition, else 0.
fn unstable(
    broker: &Broker,
    require_stable: bool,
    group_id: &str,
    topic: &str,
    partition: i32,
) -> i16 {
    if require_stable
        && broker
            .groups
            .has_pending_offsets(group_id, topic, partition)
    {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

/// Offset, leader epoch and metadata of a commit; Kafka's "none" values without one.
fn fields(v: Option<OffsetValue>) -> (i64, i32, String) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, v.metadata),
        None => (-1, -1, String::new()),
    }
}
