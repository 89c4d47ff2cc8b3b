//! CreateTopics: validates names, counts and configs, creates the topics through the
//! metadata quorum, and answers once this broker's image has them (v5+ with the resulting
//! configs, v7+ with topic ids).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sluice_protocol::kafka::messages::create_topics_request::CreatableTopic;
use sluice_protocol::kafka::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use sluice_protocol::kafka::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sluice_protocol::ResponseError;
use sluice_raft::NewTopic;

use super::{message, str_bytes};
use crate::broker::Broker;
use crate::errors::controller_error_code;
use crate::partition::check_replication_factor;
use crate::topic_config;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();

    // Each topic is either refused up front or sent to the controller.
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::with_capacity(request.topics.len());
    let mut to_create = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let refused = if duplicates.contains(&name) {
            Some((
                ResponseError::InvalidRequest,
                format!("topic '{name}' appears more than once in the request"),
            ))
        } else {
            new_topic(topic).err()
        };
        match refused {
            Some((code, why)) => results.push(Some(failed(topic, code, why))),
            None => {
                results.push(None);
                if let Ok(t) = new_topic(topic) {
                    to_create.push(t);
                }
            }
        }
    }

    let created = broker
        .metadata
        .create_topics(to_create.clone(), request.validate_only)
        .await;
    let created_names: Vec<String> = created
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|c| c.name.clone()))
        .collect();
    let image = if request.validate_only || created_names.is_empty() {
        broker.image()
    } else {
        broker
            .wait_for_image(|image| created_names.iter().all(|n| image.topics.contains_key(n)))
            .await
    };
    let layers = broker.replicas.config_layers(&image);

    let mut outcomes = to_create.into_iter().zip(created);
    let topics = results
        .into_iter()
        .zip(&request.topics)
        .map(|(refused, topic)| {
            if let Some(r) = refused {
                return r;
            }
            let Some((new, outcome)) = outcomes.next() else {
                return failed(
                    topic,
                    ResponseError::UnknownServerError,
                    "no result from the controller".into(),
                );
            };
            match outcome {
                Ok(c) => {
                    let mut r = CreatableTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_topic_id(c.topic_id)
                        .with_num_partitions(c.num_partitions)
                        .with_replication_factor(c.replication_factor);
                    if version >= 5 {
                        let configs = layers
                            .resolve_all(&new.configs)
                            .into_iter()
                            .map(|rc| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(rc.def.name))
                                    .with_value(Some(str_bytes(rc.value)))
                                    .with_config_source(rc.source as i8)
                            })
                            .collect();
                        r = r.with_configs(Some(configs));
                    }
                    r
                }
                Err(e) => failed(topic, controller_error_code(&e), e.to_string()),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The controller's view of a requested topic, or why it is refused before reaching it.
fn new_topic(topic: &CreatableTopic) -> Result<NewTopic, (ResponseError, String)> {
    let name = topic.name.0.to_string();
    let mut assignments = BTreeMap::new();
    if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "give either num_partitions and replication_factor or a replica assignment, not both".into(),
            ));
        }
        for a in &topic.assignments {
            let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            if assignments.insert(a.partition_index, replicas).is_some() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("partition {} assigned twice", a.partition_index),
                ));
            }
        }
    }
    let mut configs = BTreeMap::new();
    for c in &topic.configs {
        let key = c.name.to_string();
        let Some(value) = c.value.as_ref().map(|v| v.to_string()) else {
            return Err((
                ResponseError::InvalidConfig,
                format!("config '{key}' has a null value"),
            ));
        };
        topic_config::validate(&key, &value).map_err(|why| (ResponseError::InvalidConfig, why))?;
        configs.insert(key, value);
    }
    let (num_partitions, replication_factor) = if assignments.is_empty() {
        if topic.replication_factor > 0 {
            check_replication_factor(topic.replication_factor as usize)?;
        }
        (topic.num_partitions, topic.replication_factor)
    } else {
        for replicas in assignments.values() {
            check_replication_factor(replicas.len())?;
        }
        let rf = assignments
            .values()
            .next()
            .map_or(0, |r: &Vec<i32>| r.len());
        (assignments.len() as i32, rf as i16)
    };
    Ok(NewTopic {
        name,
        num_partitions,
        replication_factor,
        assignments,
        configs,
    })
}

fn failed(topic: &CreatableTopic, code: ResponseError, why: String) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(topic.name.clone())
        .with_error_code(code.code())
        .with_error_message(message(why))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}
