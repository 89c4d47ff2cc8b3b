//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::sync::Arc;

use sluice_protocol::kafka::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let result = broker
        .groups
        .check_coordinator(&broker.replicas, &group_id)
        .and_then(|()| {
            broker.groups.heartbeat(
                &group_id,
                request.member_id.as_str(),
                instance_id.as_deref(),
                request.generation_id,
            )
        });
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
