//! ListTransactions (operators): the transactional ids this broker coordinates, filtered by
//! state, producer id and (v1+) how long their transaction has been running.

use std::sync::Arc;

use sluice_protocol::kafka::messages::list_transactions_response::TransactionState;
use sluice_protocol::kafka::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::str_bytes;
use crate::broker::{now_ms, Broker};
use crate::txn::state_topic::TxnState;

pub fn handle(broker: &Arc<Broker>, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name) {
            Some(s) => states.push(s),
            None => unknown.push(name.clone()),
        }
    }
    let now = now_ms();
    let listed = broker
        .txns
        .list(broker)
        .into_iter()
        .filter(|d| request.state_filters.is_empty() || states.contains(&d.value.state))
        .filter(|d| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == d.value.producer_id)
        })
        // Running at least this long (-1: no filter); only open transactions qualify.
        .filter(|d| {
            request.duration_filter < 0
                || (d.value.state == TxnState::Ongoing
                    && now - d.value.start_ms >= request.duration_filter)
        })
        .map(|d| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(d.transactional_id)))
                .with_producer_id(ProducerId(d.value.producer_id))
                .with_transaction_state(str_bytes(d.value.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
