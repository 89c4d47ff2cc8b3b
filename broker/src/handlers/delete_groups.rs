//! DeleteGroups: removes empty groups and their committed offsets.

use std::sync::Arc;

use sluice_protocol::kafka::messages::delete_groups_response::DeletableGroupResult;
use sluice_protocol::kafka::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .into_iter()
        .map(|id| {
            let group_id = id.0.to_string();
            let result = broker
                .groups
                .check_coordinator(&broker.replicas, &group_id)
                .and_then(|()| broker.groups.delete_group(&broker.replicas, &group_id));
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(result.err().map_or(0, |e| e.code()))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
