//! InitProducerId: a producer id and epoch for an idempotent producer.
//!
//! Like Kafka, a producer without a transactional id always gets a new producer id with
//! epoch 0 (also when it sends its old id to recover, KIP-360). Transactional producers
//! are not served yet: their transaction coordinator lookup fails first, and a request
//! here with a transactional id is refused with NOT_COORDINATOR.

use std::sync::Arc;

use sluice_protocol::kafka::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors::controller_error_code;

pub async fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return fail(ResponseError::NotCoordinator);
    }
    match broker.next_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = %e, "could not allocate a producer id");
            fail(match controller_error_code(&e) {
                ResponseError::RequestTimedOut | ResponseError::NotController => {
                    ResponseError::CoordinatorNotAvailable
                }
                other => other,
            })
        }
    }
}
