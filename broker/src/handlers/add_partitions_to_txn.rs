//! AddPartitionsToTxn (client versions 0-3): partitions join the producer's ongoing
//! transaction. Versions 4+ are Kafka's broker-to-broker verification and are not served.

use std::sync::Arc;

use sluice_protocol::kafka::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use sluice_protocol::kafka::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use sluice_protocol::ResponseError;

use crate::broker::Broker;
use crate::txn::AddPartitionsError;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let wanted: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let result = broker.txns.add_partitions(
        broker,
        &request.v3_and_below_transactional_id,
        request.v3_and_below_producer_id.0,
        request.v3_and_below_producer_epoch,
        &wanted,
    );
    let code_for = |tp: &(String, i32)| -> i16 {
        match &result {
            Ok(()) => 0,
            Err(AddPartitionsError::Request(e)) => fenced_for_version(*e, version).code(),
            Err(AddPartitionsError::Partitions(refused)) => refused
                .iter()
                .find(|(r, _)| r == tp)
                .map_or(ResponseError::OperationNotAttempted, |(_, e)| *e)
                .code(),
        }
    };
    let topics = request
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(code_for(&(t.name.0.to_string(), *p)))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

/// PRODUCER_FENCED (KIP-588) is answered as INVALID_PRODUCER_EPOCH to versions older than
/// the one that introduced it, as Kafka does.
pub(crate) fn fenced_for_version(e: ResponseError, version: i16) -> ResponseError {
    match e {
        ResponseError::ProducerFenced if version < 2 => ResponseError::InvalidProducerEpoch,
        other => other,
    }
}
