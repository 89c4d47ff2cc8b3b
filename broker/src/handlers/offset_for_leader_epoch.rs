//! OffsetForLeaderEpoch: the end offset of a leader epoch, so a consumer (KIP-320) or a
//! follower can detect and truncate a diverged log.

use std::sync::Arc;

use sluice_protocol::kafka::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use sluice_protocol::kafka::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::leader_for;
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    // The current epoch ends at the log end; older ones where the next began.
                    let outcome =
                        leader_for(broker, &image, &name, p.partition, p.current_leader_epoch)
                            .map(|part| part.log().end_offset_for_epoch(p.leader_epoch));
                    match outcome {
                        Ok(Some((epoch, end_offset))) => {
                            result.with_leader_epoch(epoch).with_end_offset(end_offset)
                        }
                        Ok(None) => result.with_leader_epoch(-1).with_end_offset(-1),
                        Err(code) => result
                            .with_error_code(code.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
