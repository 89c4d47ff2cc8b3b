//! Produce: append each partition's record batch on its leader and answer with the assigned
//! base offset. acks=0 gets no response (and a closed connection on failure, as Kafka); acks=1 and acks=all are answered once the batch is
//! in the log and, for acks=all, committed by the ISR (the leader alone today).

use std::sync::Arc;

use sluice_protocol::kafka::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::kafka::messages::{ProduceRequest, ProduceResponse, TopicName};
use sluice_protocol::ResponseError;

use super::{partition_for, str_bytes, topic_name_for_id};
use crate::broker::{now_ms, Broker};
use crate::partition::AppendError;
use sluice_storage::RecordBatch;

pub fn handle(broker: &Arc<Broker>, version: i16, request: ProduceRequest) -> ProduceResponse {
    let acks = request.acks;
    let transactional_id = request.transactional_id.as_ref().map(|t| t.to_string());
    let image = broker.image();
    let now = now_ms();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        // v13+ names topics by id (KIP-516).
        let name = if version >= 13 {
            topic_name_for_id(&image, &topic.topic_id)
        } else {
            Some(topic.name.0.to_string())
        };
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|data| {
                let index = data.index;
                let result = match &name {
                    _ if !matches!(acks, -1..=1) => Err(ResponseError::InvalidRequiredAcks.into()),
                    None => Err(ResponseError::UnknownTopicId.into()),
                    Some(name) => append(
                        broker,
                        &image,
                        (name, index),
                        data.records.as_deref().unwrap_or_default(),
                        acks,
                        transactional_id.as_deref(),
                        now,
                    ),
                };
                let response = PartitionProduceResponse::default().with_index(index);
                match result {
                    Ok(info) => response
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(info.log_append_time_ms)
                        .with_log_start_offset(info.log_start_offset),
                    Err(e) => response
                        .with_error_code(e.code.code())
                        .with_base_offset(-1)
                        .with_error_message(e.message.map(str_bytes)),
                }
            })
            .collect();
        let response = TopicProduceResponse::default().with_partition_responses(partitions);
        responses.push(if version >= 13 {
            response.with_topic_id(topic.topic_id)
        } else {
            response.with_name(TopicName(topic.name.0))
        });
    }
    ProduceResponse::default().with_responses(responses)
}

/// The first partition error in a response, if any.
pub fn first_error(response: &ProduceResponse) -> Option<ResponseError> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.error_code != 0)
        .map(|p| {
            ResponseError::try_from_code(p.error_code)
                .unwrap_or(ResponseError::Unknown(p.error_code))
        })
}

fn append(
    broker: &Broker,
    image: &sluice_raft::MetadataImage,
    (topic, index): (&str, i32),
    records: &[u8],
    acks: i16,
    transactional_id: Option<&str>,
    now: i64,
) -> Result<sluice_storage::AppendInfo, AppendError> {
    let partition = partition_for(broker, image, topic, index)?;
    let transactional = RecordBatch::new(records)
        .ok()
        .filter(|b| b.is_transactional())
        .map(|b| (b.producer_id(), b.producer_epoch()));
    let info = match (transactional, transactional_id) {
        // The coordinator holds the transaction while the batch is appended, so it cannot
        // end between its check and the write.
        (Some((producer_id, epoch)), Some(id)) => broker.txns.with_partition_in_txn(
            broker,
            id,
            (producer_id, epoch),
            (topic, index),
            || partition.append_as_leader(records, acks, now, true),
        )??,
        _ => partition.append_as_leader(records, acks, now, false)?,
    };
    partition.traffic.bytes_in.increment(records.len() as u64);
    partition.traffic.messages_in.increment(info.record_count);
    Ok(info)
}
