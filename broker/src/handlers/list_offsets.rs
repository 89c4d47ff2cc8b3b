//! ListOffsets: the earliest, latest or max-timestamp offset of a partition, or the first
//! offset whose record timestamp is at or after a given time.

use std::sync::Arc;

use sluice_protocol::kafka::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::kafka::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::leader_for;
use crate::broker::Broker;
use crate::errors::storage_error_code;
use crate::partition::Isolation;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let image = broker.image();
    // read_committed consumers see up to the last stable offset.
    let isolation = Isolation::from_level(request.isolation_level);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let found = leader_for(
                        broker,
                        &image,
                        &name,
                        p.partition_index,
                        p.current_leader_epoch,
                    )
                    .and_then(|part| {
                        part.offset_for_timestamp(p.timestamp, isolation)
                            .map_err(|e| storage_error_code(&e))
                    });
                    match found {
                        Ok(Some(t)) => {
                            let r = response
                                .with_offset(t.offset)
                                .with_timestamp(t.timestamp_ms);
                            // The leader epoch is in the response from v4 (KIP-320).
                            if version >= 4 {
                                r.with_leader_epoch(t.leader_epoch)
                            } else {
                                r
                            }
                        }
                        // No record at or after that time: offset and timestamp -1, as Kafka.
                        Ok(None) => response,
                        Err(code) => response.with_error_code(code.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
