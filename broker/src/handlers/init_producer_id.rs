//! InitProducerId: a producer id and epoch for an idempotent or transactional producer.
//!
//! Without a transactional id, like Kafka, a producer always gets a new producer id with
//! epoch 0 (also when it sends its old id to recover, KIP-360). With one, the transaction
//! coordinator keeps the id's producer id and bumps its epoch, fencing older producers of
//! the same transactional id and aborting a transaction they left open.

use std::sync::Arc;

use sluice_protocol::kafka::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors::controller_error_code;
use crate::txn::InitOutcome;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |e: ResponseError| {
        // PRODUCER_FENCED is newer than v4 clients (KIP-588).
        let e = match e {
            ResponseError::ProducerFenced if version < 4 => ResponseError::InvalidProducerEpoch,
            other => other,
        };
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let Some(transactional_id) = request.transactional_id.as_ref().map(|t| t.to_string()) else {
        return match new_producer_id(broker).await {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => fail(e),
        };
    };
    let expected =
        (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    let mut fresh = None;
    // At most twice: the second time with a fresh producer id if the first asked for one.
    for _ in 0..2 {
        match broker.txns.init_producer_id(
            broker,
            &transactional_id,
            request.transaction_timeout_ms,
            expected,
            fresh,
        ) {
            Ok(InitOutcome::Ready { producer_id, epoch }) => {
                return InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch)
            }
            Ok(InitOutcome::NeedsProducerId) => match new_producer_id(broker).await {
                Ok(id) => fresh = Some(id),
                Err(e) => return fail(e),
            },
            Err(e) => return fail(e),
        }
    }
    fail(ResponseError::ConcurrentTransactions)
}

async fn new_producer_id(broker: &Broker) -> Result<i64, ResponseError> {
    broker.next_producer_id().await.map_err(|e| {
        tracing::warn!(error = %e, "could not allocate a producer id");
        match controller_error_code(&e) {
            ResponseError::RequestTimedOut | ResponseError::NotController => {
                ResponseError::CoordinatorNotAvailable
            }
            other => other,
        }
    })
}
