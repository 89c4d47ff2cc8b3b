//! EndTxn: commit or abort the producer's transaction. Answered once the markers are in
//! every partition of the transaction.

use std::sync::Arc;

use sluice_protocol::kafka::messages::{EndTxnRequest, EndTxnResponse};

use super::add_partitions_to_txn::fenced_for_version;
use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, version: i16, request: EndTxnRequest) -> EndTxnResponse {
    let code = match broker.txns.end_txn(
        broker,
        &request.transactional_id,
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
    ) {
        Ok(()) => 0,
        Err(e) => fenced_for_version(e, version).code(),
    };
    EndTxnResponse::default().with_error_code(code)
}
