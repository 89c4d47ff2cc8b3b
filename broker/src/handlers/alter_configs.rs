//! AlterConfigs (legacy): replaces a resource's whole set of dynamic configs; any not named
//! in the request are removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_protocol::kafka::messages::alter_configs_response::AlterConfigsResourceResponse;
use sluice_protocol::kafka::messages::{AlterConfigsRequest, AlterConfigsResponse};
use sluice_protocol::ResponseError;
use sluice_raft::ConfigOp;

use super::message;
use crate::broker::Broker;
use crate::config_resources::{self, Refusal};

pub async fn handle(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let outcome = alter(
            broker,
            r.resource_type,
            r.resource_name.as_str(),
            &r.configs,
            request.validate_only,
        )
        .await;
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, why)) => response
                .with_error_code(code.code())
                .with_error_message(message(why)),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    configs: &[sluice_protocol::kafka::messages::alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> Result<(), Refusal> {
    let resource = config_resources::parse(resource_type, name)?;
    let current = config_resources::current(broker, &resource)?;
    let mut wanted = BTreeMap::new();
    for c in configs {
        let key = c.name.to_string();
        let Some(value) = c.value.as_ref().map(|v| v.to_string()) else {
            return Err((
                ResponseError::InvalidConfig,
                format!("config '{key}' has a null value"),
            ));
        };
        config_resources::validate(&resource, &key, &value)?;
        wanted.insert(key, value);
    }
    let mut ops: Vec<ConfigOp> = current
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .map(ConfigOp::Delete)
        .collect();
    ops.extend(wanted.into_iter().map(|(k, v)| ConfigOp::Set(k, v)));
    config_resources::apply(broker, &resource, ops, validate_only).await
}
