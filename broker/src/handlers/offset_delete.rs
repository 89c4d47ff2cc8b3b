//! OffsetDelete: removes a group's committed offsets for partitions it no longer consumes.

use std::sync::Arc;

use sluice_protocol::kafka::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_protocol::kafka::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use sluice_protocol::ResponseError;

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let image = broker.image();
    let mut unknown = Vec::new();
    let mut wanted = Vec::new();
    for t in &request.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let exists = image.topics.get(&name).is_some_and(|topic| {
                p.partition_index >= 0 && (p.partition_index as usize) < topic.partitions.len()
            });
            if exists {
                wanted.push((name.clone(), p.partition_index));
            } else {
                unknown.push((name.clone(), p.partition_index));
            }
        }
    }
    let outcome = broker
        .groups
        .check_coordinator(&broker.replicas, &group_id)
        .and_then(|()| {
            broker
                .groups
                .delete_offsets(&broker.replicas, &group_id, wanted)
        });
    let results = match outcome {
        Ok(r) => r,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let mut topics: Vec<OffsetDeleteResponseTopic> = request
        .topics
        .iter()
        .map(|t| OffsetDeleteResponseTopic::default().with_name(t.name.clone()))
        .collect();
    let all = results.into_iter().chain(
        unknown
            .into_iter()
            .map(|(t, p)| (t, p, Some(ResponseError::UnknownTopicOrPartition))),
    );
    for (topic, partition, error) in all {
        if let Some(t) = topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            t.partitions.push(
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(partition)
                    .with_error_code(error.map_or(0, |e| e.code())),
            );
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
