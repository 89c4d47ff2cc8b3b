//! ListGroups: the groups this broker coordinates, filtered by state (v4+) and type (v5+).

use std::sync::Arc;

use sluice_protocol::kafka::messages::list_groups_response::ListedGroup;
use sluice_protocol::kafka::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::broker::Broker;

/// Every group here speaks the classic protocol.
const GROUP_TYPE: &str = "classic";

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = broker
        .groups
        .list(&broker.replicas)
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.name().to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == GROUP_TYPE))
        .map(|(id, protocol_type, state)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            let g = if version >= 4 {
                g.with_group_state(str_bytes(state.name()))
            } else {
                g
            };
            if version >= 5 {
                g.with_group_type(str_bytes(GROUP_TYPE))
            } else {
                g
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
