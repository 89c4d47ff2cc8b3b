//! Config resources as DescribeConfigs, AlterConfigs and IncrementalAlterConfigs name them,
//! and applying validated changes to them through the metadata quorum.
//!
//! A TOPIC resource holds the topic's overrides. The BROKER resource with an empty name holds
//! cluster-wide dynamic defaults for topic configs (`log.retention.ms`, ...). Per-broker
//! dynamic configs are not supported yet.

use std::collections::BTreeMap;

use sluice_protocol::ResponseError;
use sluice_raft::ConfigOp;

use crate::broker::Broker;
use crate::errors::controller_error_code;
use crate::topic_config::{self, ConfigKind};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// A config resource a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Topic(String),
    /// The BROKER resource: `None` for the cluster-wide default (empty name), else a broker id.
    Broker(Option<i32>),
}

/// A failure to report on one resource.
pub type Refusal = (ResponseError, String);

pub fn parse(resource_type: i8, name: &str) -> Result<Resource, Refusal> {
    match resource_type {
        RESOURCE_TOPIC => Ok(Resource::Topic(name.to_string())),
        RESOURCE_BROKER if name.is_empty() => Ok(Resource::Broker(None)),
        RESOURCE_BROKER => name
            .parse()
            .map(|id| Resource::Broker(Some(id)))
            .map_err(|_| {
                (
                    ResponseError::InvalidRequest,
                    format!("'{name}' is not a broker id"),
                )
            }),
        other => Err((
            ResponseError::InvalidRequest,
            format!("config resource type {other} is not supported"),
        )),
    }
}

/// The current dynamic values of a resource (topic overrides or cluster defaults).
pub fn current(broker: &Broker, resource: &Resource) -> Result<BTreeMap<String, String>, Refusal> {
    let image = broker.image();
    match resource {
        Resource::Topic(name) => image
            .topics
            .get(name)
            .map(|t| t.configs.clone())
            .ok_or((ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))),
        Resource::Broker(None) => Ok(image.cluster_configs.clone()),
        Resource::Broker(Some(_)) => Err((
            ResponseError::InvalidRequest,
            "per-broker dynamic configs are not supported; alter the cluster-wide default (BROKER resource with an empty name)".into(),
        )),
    }
}

/// The config definition a name refers to on this resource.
pub fn definition(
    resource: &Resource,
    name: &str,
) -> Result<&'static topic_config::TopicConfigDef, Refusal> {
    let def = match resource {
        Resource::Topic(_) => topic_config::topic_config_def(name),
        Resource::Broker(_) => topic_config::def_for_broker_synonym(name),
    };
    def.ok_or_else(|| {
        (
            ResponseError::InvalidConfig,
            format!("'{name}' is not a dynamic config of this resource"),
        )
    })
}

/// Validates `value` for config `name` on `resource`.
pub fn validate(resource: &Resource, name: &str, value: &str) -> Result<(), Refusal> {
    let def = definition(resource, name)?;
    topic_config::validate_value(def, value).map_err(|why| (ResponseError::InvalidConfig, why))
}

/// Whether a config is a list (APPEND and SUBTRACT apply to lists only).
pub fn is_list(resource: &Resource, name: &str) -> bool {
    definition(resource, name).is_ok_and(|d| matches!(d.kind, ConfigKind::List(_)))
}

/// Applies `ops` to `resource` through the metadata quorum and waits until this broker sees it.
pub async fn apply(
    broker: &Broker,
    resource: &Resource,
    ops: Vec<ConfigOp>,
    validate_only: bool,
) -> Result<(), Refusal> {
    let refuse = |e: sluice_raft::ControllerError| (controller_error_code(&e), e.to_string());
    match resource {
        Resource::Topic(name) => {
            broker
                .metadata
                .alter_topic_configs(name.clone(), ops.clone(), validate_only)
                .await
                .map_err(refuse)?;
        }
        Resource::Broker(None) => {
            broker
                .metadata
                .alter_cluster_configs(ops.clone(), validate_only)
                .await
                .map_err(refuse)?;
        }
        Resource::Broker(Some(_)) => return current(broker, resource).map(|_| ()),
    }
    if !validate_only {
        let expected = |configs: &BTreeMap<String, String>| {
            ops.iter().all(|op| match op {
                ConfigOp::Set(k, v) => configs.get(k) == Some(v),
                ConfigOp::Delete(k) => !configs.contains_key(k),
            })
        };
        broker
            .wait_for_image(|image| match resource {
                Resource::Topic(name) => {
                    image.topics.get(name).is_some_and(|t| expected(&t.configs))
                }
                _ => expected(&image.cluster_configs),
            })
            .await;
    }
    Ok(())
}
