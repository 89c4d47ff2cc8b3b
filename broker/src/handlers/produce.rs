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

/// Bytes before the magic byte of a record batch: base offset (8), length (4), leader epoch (4).
const MAGIC_OFFSET: usize = 16;
/// Bytes of a batch not counted by its length field: base offset and length.
const LOG_OVERHEAD: usize = 12;

pub fn handle(broker: &Arc<Broker>, version: i16, request: ProduceRequest) -> ProduceResponse {
    let acks = request.acks;
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
                    _ if !matches!(acks, -1..=1) => Err((ResponseError::InvalidRequiredAcks, None)),
                    None => Err((ResponseError::UnknownTopicId, None)),
                    Some(name) => append(
                        broker,
                        &image,
                        name,
                        index,
                        data.records.as_deref().unwrap_or_default(),
                        acks,
                        now,
                    ),
                };
                let response = PartitionProduceResponse::default().with_index(index);
                match result {
                    Ok(info) => response
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(info.log_append_time_ms)
                        .with_log_start_offset(info.log_start_offset),
                    Err((code, detail)) => response
                        .with_error_code(code.code())
                        .with_base_offset(-1)
                        .with_error_message(detail.map(str_bytes)),
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
    topic: &str,
    index: i32,
    records: &[u8],
    acks: i16,
    now: i64,
) -> Result<sluice_storage::AppendInfo, (ResponseError, Option<String>)> {
    let partition = partition_for(broker, image, topic, index).map_err(|e| (e, None))?;
    check_single_batch(records).map_err(|why| (ResponseError::InvalidRecord, Some(why)))?;
    let info = partition
        .append_as_leader(records, acks, now)
        .map_err(|e| (e, None))?;
    let labels = [("topic", topic.to_string())];
    metrics::counter!("sluice_bytes_in_total", &labels).increment(records.len() as u64);
    metrics::counter!("sluice_messages_in_total", &labels).increment(info.record_count);
    Ok(info)
}

/// Produce v3+ carries exactly one magic-v2 record batch per partition (Kafka rejects
/// anything else with INVALID_RECORD). Storage validates the batch itself.
fn check_single_batch(records: &[u8]) -> Result<(), String> {
    if records.len() < MAGIC_OFFSET + 1 {
        return Err(format!(
            "a produce request must carry exactly one record batch; got {} bytes",
            records.len()
        ));
    }
    if records[MAGIC_OFFSET] != 2 {
        return Err(format!(
            "record batch magic {} is not supported; only magic 2",
            records[MAGIC_OFFSET]
        ));
    }
    let length = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
    let declared = usize::try_from(length).unwrap_or(0) + LOG_OVERHEAD;
    if declared != records.len() {
        return Err(format!(
            "a produce request must carry exactly one record batch; the first declares {declared} of {} bytes",
            records.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(len: usize, magic: u8) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[8..12].copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
        b[MAGIC_OFFSET] = magic;
        b
    }

    #[test]
    fn exactly_one_magic_v2_batch() {
        assert!(check_single_batch(&batch_of(70, 2)).is_ok());
        assert!(check_single_batch(&batch_of(70, 1))
            .unwrap_err()
            .contains("magic 1"));
        let mut two = batch_of(70, 2);
        two.extend(batch_of(70, 2));
        assert!(check_single_batch(&two)
            .unwrap_err()
            .contains("exactly one"));
        assert!(check_single_batch(&[]).is_err());
    }
}
