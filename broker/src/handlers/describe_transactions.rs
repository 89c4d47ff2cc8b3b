//! DescribeTransactions (operators): a transactional id's state, producer, timeout and the
//! partitions of its open transaction, from its coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_protocol::kafka::messages::describe_transactions_response::{
    TopicData, TransactionState,
};
use sluice_protocol::kafka::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::str_bytes;
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            match broker.txns.describe(broker, id) {
                Ok(d) => {
                    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                    for (topic, p) in &d.value.partitions {
                        by_topic.entry(topic.clone()).or_default().push(*p);
                    }
                    state
                        .with_transaction_state(str_bytes(d.value.state.name()))
                        .with_transaction_timeout_ms(d.value.timeout_ms)
                        .with_transaction_start_time_ms(d.value.start_ms)
                        .with_producer_id(ProducerId(d.value.producer_id))
                        .with_producer_epoch(d.value.producer_epoch)
                        .with_topics(
                            by_topic
                                .into_iter()
                                .map(|(t, ps)| {
                                    TopicData::default()
                                        .with_topic(TopicName(str_bytes(t)))
                                        .with_partitions(ps)
                                })
                                .collect(),
                        )
                }
                Err(e) => state
                    .with_error_code(e.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_state(str_bytes(""))
                    .with_transaction_start_time_ms(-1),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
