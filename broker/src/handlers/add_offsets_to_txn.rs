//! AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the producer's
//! transaction, so offsets it commits there (TxnOffsetCommit) end with the transaction.

use std::sync::Arc;

use sluice_protocol::kafka::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use sluice_protocol::ResponseError;

use super::add_partitions_to_txn::fenced_for_version;
use crate::broker::Broker;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::internal_topics;
use crate::txn::AddPartitionsError;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    // Clients may send this before they look up the group's coordinator (kafka-python
    // does), so the offsets topic may not exist yet: Kafka's coordinator does not need it
    // to, ours needs its partition to add it.
    if let Err((code, why)) = internal_topics::ensure_offsets_topic(broker).await {
        tracing::warn!(error = %why, "AddOffsetsToTxn: no {OFFSETS_TOPIC}");
        return AddOffsetsToTxnResponse::default().with_error_code(code.code());
    }
    let partition = (
        OFFSETS_TOPIC.to_string(),
        broker.groups.partition_for(&request.group_id),
    );
    let code = match broker.txns.add_partitions(
        broker,
        &request.transactional_id,
        request.producer_id.0,
        request.producer_epoch,
        &[partition],
    ) {
        Ok(()) => 0,
        Err(AddPartitionsError::Request(e)) => fenced_for_version(e, version).code(),
        // The group's partition is not there or not ours: its coordinator is unknown.
        Err(AddPartitionsError::Partitions(_)) => ResponseError::CoordinatorNotAvailable.code(),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
