//! FindCoordinator: which broker coordinates a consumer group or a transactional id: the
//! leader of the key's partition of `__consumer_offsets` or `__transaction_state`. Creates
//! that internal topic on first use, as Kafka does.

use std::sync::Arc;

use sluice_protocol::kafka::messages::find_coordinator_response::Coordinator;
use sluice_protocol::kafka::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use sluice_protocol::ResponseError;

use super::{message, str_bytes};
use crate::broker::Broker;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::internal_topics::{self, coordinator_address};
use crate::txn::state_topic::TXN_STATE_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// (node id, host, port) of a coordinator, or why there is none.
type Found = Result<(i32, String, i32), (ResponseError, String)>;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let found: Vec<Found> = match request.key_type {
        KEY_TYPE_GROUP => match internal_topics::ensure_offsets_topic(broker).await {
            Ok(image) => keys
                .iter()
                .map(|k| coordinator_address(&image, OFFSETS_TOPIC, broker.groups.partition_for(k)))
                .collect(),
            Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
        },
        KEY_TYPE_TRANSACTION => {
            match internal_topics::ensure_transaction_state_topic(broker).await {
                Ok(image) => keys
                    .iter()
                    .map(|k| {
                        coordinator_address(&image, TXN_STATE_TOPIC, broker.txns.partition_for(k))
                    })
                    .collect(),
                Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
            }
        }
        other => keys
            .iter()
            .map(|_| {
                Err((
                    ResponseError::InvalidRequest,
                    format!("unknown coordinator key type {other}"),
                ))
            })
            .collect(),
    };
    if version >= 4 {
        let coordinators = keys
            .into_iter()
            .zip(found)
            .map(|(key, f)| {
                let c = Coordinator::default().with_key(str_bytes(key));
                match f {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err((code, why)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code.code())
                        .with_error_message(message(why)),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default();
    match found.into_iter().next() {
        Some(Ok((id, host, port))) => response
            .with_node_id(BrokerId(id))
            .with_host(str_bytes(host))
            .with_port(port),
        Some(Err((code, why))) => {
            let r = response
                .with_error_code(code.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                r.with_error_message(message(why))
            } else {
                r
            }
        }
        None => response.with_error_code(ResponseError::InvalidRequest.code()),
    }
}
