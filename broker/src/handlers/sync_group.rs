//! SyncGroup: the leader hands in the assignment; every member gets its own share.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::kafka::messages::{SyncGroupRequest, SyncGroupResponse};
use sluice_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::group::{Reply, SyncResult};

/// A follower waits for the leader's assignment at most this long (a leader that died is
/// noticed by its session timeout, which fails the wait with REBALANCE_IN_PROGRESS sooner).
const MAX_SYNC_WAIT: Duration = Duration::from_secs(300);

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let fail = |e: ResponseError| SyncGroupResponse::default().with_error_code(e.code());
    if let Err(e) = broker.groups.check_coordinator(&broker.replicas, &group_id) {
        return fail(e);
    }
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let protocol_type = request.protocol_type.as_ref().map(|s| s.to_string());
    let protocol_name = request.protocol_name.as_ref().map(|s| s.to_string());
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let reply = broker.groups.sync(
        &broker.replicas,
        &group_id,
        request.member_id.as_str(),
        instance_id.as_deref(),
        request.generation_id,
        (protocol_type.as_deref(), protocol_name.as_deref()),
        assignments,
    );
    let result: SyncResult = match reply {
        Reply::Now(r) => r,
        Reply::Later(rx) => match tokio::time::timeout(MAX_SYNC_WAIT, rx).await {
            Ok(Ok(r)) => r,
            _ => return fail(ResponseError::RebalanceInProgress),
        },
    };
    let response = SyncGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(str_bytes))
            .with_protocol_name(result.protocol_name.map(str_bytes))
    } else {
        response
    }
}
