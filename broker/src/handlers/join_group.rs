//! JoinGroup: a member (re)joins; the response comes when the rebalance completes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::kafka::messages::join_group_response::JoinGroupResponseMember;
use sluice_protocol::kafka::messages::{JoinGroupRequest, JoinGroupResponse};
use sluice_protocol::{RequestHeader, ResponseError};

use super::str_bytes;
use crate::broker::Broker;
use crate::group::{JoinArgs, JoinResult, Reply};

pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    peer: SocketAddr,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = header.api_version;
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let fail = |e: ResponseError| to_response(version, JoinResult::error(e, &member_id));
    if group_id.is_empty() {
        return fail(ResponseError::InvalidGroupId);
    }
    if let Err(e) = broker.groups.check_coordinator(&broker.replicas, &group_id) {
        return fail(e);
    }
    let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout serves as both.
    let rebalance_timeout = if version >= 1 {
        Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
    } else {
        session_timeout
    };
    let args = JoinArgs {
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let result = match broker.groups.join(&broker.replicas, &group_id, args) {
        Reply::Now(r) => r,
        // The rebalance ends by its deadline at the latest; the margin covers the tick.
        Reply::Later(rx) => {
            match tokio::time::timeout(rebalance_timeout + Duration::from_secs(5), rx).await {
                Ok(Ok(r)) => r,
                _ => JoinResult::error(ResponseError::RebalanceInProgress, &member_id),
            }
        }
    };
    to_response(version, result)
}

fn to_response(version: i16, r: JoinResult) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(id))
                .with_group_instance_id(if version >= 5 {
                    instance.map(str_bytes)
                } else {
                    None
                })
                .with_metadata(metadata)
        })
        .collect();
    // protocol_name is nullable from v7; before, an empty string.
    let protocol_name = if version >= 7 {
        r.protocol_name.map(str_bytes)
    } else {
        Some(str_bytes(r.protocol_name.unwrap_or_default()))
    };
    JoinGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation)
        .with_protocol_type(if version >= 7 {
            r.protocol_type.map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(r.leader))
        .with_member_id(str_bytes(r.member_id))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_members(members)
}
