//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on single configs, leaving the
//! others as they are.

use std::sync::Arc;

use sluice_protocol::kafka::messages::incremental_alter_configs_request::AlterableConfig;
use sluice_protocol::kafka::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use sluice_protocol::kafka::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use sluice_protocol::ResponseError;
use sluice_raft::ConfigOp;

use super::message;
use crate::broker::Broker;
use crate::config_resources::{self, Refusal, Resource};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    configs: &[AlterableConfig],
    validate_only: bool,
) -> Result<(), Refusal> {
    let resource = config_resources::parse(resource_type, name)?;
    let mut current = config_resources::current(broker, &resource)?;
    let mut ops = Vec::with_capacity(configs.len());
    for c in configs {
        let key = c.name.to_string();
        if ops.iter().any(
            |op: &ConfigOp| matches!(op, ConfigOp::Set(k, _) | ConfigOp::Delete(k) if *k == key),
        ) {
            return Err((
                ResponseError::InvalidRequest,
                format!("config '{key}' appears more than once"),
            ));
        }
        let value = c.value.as_ref().map(|v| v.to_string());
        let op = match (c.config_operation, value) {
            (DELETE, _) => {
                config_resources::definition(&resource, &key)?;
                ConfigOp::Delete(key.clone())
            }
            (SET, Some(v)) => ConfigOp::Set(key.clone(), v),
            (APPEND | SUBTRACT, Some(v)) => {
                if !config_resources::is_list(&resource, &key) {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("'{key}' is not a list; APPEND and SUBTRACT apply to lists"),
                    ));
                }
                let base = current
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| effective_default(broker, &resource, &key));
                ConfigOp::Set(
                    key.clone(),
                    list_op(&base, &v, c.config_operation == APPEND),
                )
            }
            (SET | APPEND | SUBTRACT, None) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("config '{key}' needs a value"),
                ));
            }
            (other, _) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other}"),
                ))
            }
        };
        if let ConfigOp::Set(k, v) = &op {
            config_resources::validate(&resource, k, v)?;
            current.insert(k.clone(), v.clone());
        }
        ops.push(op);
    }
    config_resources::apply(broker, &resource, ops, validate_only).await
}

/// The value a list config has now when the resource does not set it.
fn effective_default(broker: &Broker, resource: &Resource, key: &str) -> String {
    let image = broker.image();
    match config_resources::definition(resource, key) {
        Ok(def) => {
            broker
                .replicas
                .config_layers(&image)
                .resolve(def, &Default::default())
                .value
        }
        Err(_) => String::new(),
    }
}

/// APPEND adds items not yet in the list; SUBTRACT removes them.
fn list_op(base: &str, items: &str, append: bool) -> String {
    let mut list: Vec<String> = base
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if append {
            if !list.iter().any(|x| x == item) {
                list.push(item.to_string());
            }
        } else {
            list.retain(|x| x != item);
        }
    }
    list.join(",")
}

#[cfg(test)]
mod tests {
    use super::list_op;

    #[test]
    fn append_and_subtract_keep_list_semantics() {
        assert_eq!(list_op("delete", "compact", true), "delete,compact");
        assert_eq!(list_op("delete,compact", "compact", true), "delete,compact");
        assert_eq!(list_op("delete,compact", "delete", false), "compact");
        assert_eq!(list_op("", "compact", true), "compact");
    }
}
