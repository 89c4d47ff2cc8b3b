//! DescribeGroups: state, protocol, members and their assignments.

use std::sync::Arc;

use sluice_protocol::kafka::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use sluice_protocol::kafka::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use sluice_protocol::ResponseError;

use super::{message, str_bytes};
use crate::broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let group_id = id.0.to_string();
            let described = DescribedGroup::default().with_group_id(id);
            if let Err(e) = broker.groups.check_coordinator(&broker.replicas, &group_id) {
                return described
                    .with_error_code(e.code())
                    .with_group_state(str_bytes("Dead"));
            }
            let Some(d) = broker.groups.describe(&group_id) else {
                // Kafka reports an unknown group as Dead; v6 adds GROUP_ID_NOT_FOUND.
                let dead = described.with_group_state(str_bytes("Dead"));
                return if version >= 6 {
                    dead.with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(message(format!("group '{group_id}' not found")))
                } else {
                    dead
                };
            };
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(if version >= 4 {
                            m.instance_id.map(str_bytes)
                        } else {
                            None
                        })
                        .with_client_id(str_bytes(m.client_id))
                        .with_client_host(str_bytes(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            described
                .with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol_name))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
