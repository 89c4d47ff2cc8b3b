//! DeleteRecords: moves partitions' log start offsets forward (records below become
//! unreadable and whole segments below are deleted).

use std::sync::Arc;

use sluice_protocol::kafka::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use sluice_protocol::kafka::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::leader_for;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let image = broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    let outcome = leader_for(broker, &image, &name, p.partition_index, -1)
                        .and_then(|part| part.delete_records_before(p.offset));
                    match outcome {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(code) => result.with_low_watermark(-1).with_error_code(code.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
