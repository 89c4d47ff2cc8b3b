//! DescribeCluster: the cluster id, a controller id clients can reach, and the brokers.

use std::sync::Arc;

use sluice_protocol::kafka::messages::describe_cluster_response::DescribeClusterBroker;
use sluice_protocol::kafka::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use sluice_protocol::ResponseError;

use super::{message, str_bytes};
use crate::broker::Broker;

/// `endpoint_type` 1: brokers (the only kind of endpoint clients reach here).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    if version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(message(
                "only broker endpoints (endpoint_type 1) are served",
            ))
            .with_endpoint_type(request.endpoint_type);
    }
    let image = broker.image();
    let brokers = image
        .brokers
        .values()
        .filter(|b| request.include_fenced_brokers || !b.fenced)
        .filter_map(|b| {
            let endpoint = b.listeners.first()?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(str_bytes(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(b.rack.clone().map(str_bytes))
                    .with_is_fenced(b.fenced),
            )
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(image.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_brokers(brokers)
}
