//! DescribeProducers (operators): the producers a partition knows, with their last sequence
//! and the start offset of their open transaction, from the partition leader.

use std::sync::Arc;

use sluice_protocol::kafka::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use sluice_protocol::kafka::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};

use super::{leader_for, message};
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let image = broker.image();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|index| {
                    let response = PartitionResponse::default().with_partition_index(*index);
                    match leader_for(broker, &image, &t.name, *index, -1) {
                        Ok(p) => response.with_active_producers(
                            p.describe_producers()
                                .into_iter()
                                .map(|s| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(s.producer_id))
                                        .with_producer_epoch(i32::from(s.epoch))
                                        .with_last_sequence(s.last_sequence)
                                        .with_last_timestamp(s.last_timestamp_ms)
                                        .with_coordinator_epoch(s.coordinator_epoch)
                                        .with_current_txn_start_offset(s.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                        Err(e) => response
                            .with_error_code(e.code())
                            .with_error_message(message(format!("{e:?}"))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
