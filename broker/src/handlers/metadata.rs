//! Metadata: brokers, the cluster id, and topics with their partitions' leaders, epochs and
//! replicas; creates missing topics when auto-creation is allowed.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_protocol::kafka::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_protocol::kafka::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use sluice_protocol::ResponseError;
use sluice_raft::{MetadataImage, NewTopic, TopicImage};
use uuid::Uuid;

use super::{is_internal_topic, str_bytes, topic_name_for_id};
use crate::broker::Broker;
use crate::errors::controller_error_code;

/// What a requested topic resolved to.
enum Wanted {
    Name(String),
    UnknownId(Uuid),
}

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    let mut image = broker.image();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all_topics = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let wanted: Vec<Wanted> = if all_topics {
        image.topics.keys().cloned().map(Wanted::Name).collect()
    } else {
        request
            .topics
            .iter()
            .flatten()
            .map(|t| match &t.name {
                Some(name) => Wanted::Name(name.0.to_string()),
                None => match topic_name_for_id(&image, &t.topic_id) {
                    Some(name) => Wanted::Name(name),
                    None => Wanted::UnknownId(t.topic_id),
                },
            })
            .collect()
    };

    let allow_auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let mut create_errors = BTreeMap::new();
    if allow_auto_create && !all_topics {
        let missing: Vec<String> = wanted
            .iter()
            .filter_map(|w| match w {
                // Internal topics are created by their coordinators with their own settings,
                // never by a metadata request.
                Wanted::Name(n) if !image.topics.contains_key(n) && !is_internal_topic(n) => {
                    Some(n.clone())
                }
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let (new_image, errors) = auto_create(broker, &missing).await;
            image = new_image;
            create_errors = errors;
        }
    }

    let topics = wanted
        .iter()
        .map(|w| match w {
            Wanted::UnknownId(id) => MetadataResponseTopic::default()
                .with_error_code(ResponseError::UnknownTopicId.code())
                .with_topic_id(*id),
            Wanted::Name(name) => match image.topics.get(name) {
                Some(topic) => topic_response(&image, topic),
                None => {
                    let code = create_errors
                        .get(name)
                        .copied()
                        .unwrap_or(ResponseError::UnknownTopicOrPartition);
                    MetadataResponseTopic::default()
                        .with_error_code(code.code())
                        .with_name(Some(TopicName(str_bytes(name.clone()))))
                        .with_is_internal(is_internal_topic(name))
                }
            },
        })
        .collect();

    MetadataResponse::default()
        .with_brokers(brokers(&image))
        .with_cluster_id(Some(str_bytes(image.cluster_id.clone())))
        // Clients send admin requests to the "controller"; any broker forwards them to the
        // metadata quorum, so this broker is as good as any (Kafka in KRaft mode does the same).
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_topics(topics)
}

/// Creates the missing topics with the broker's defaults; returns the image that has them
/// and the error for each one that could not be created.
async fn auto_create(
    broker: &Arc<Broker>,
    names: &[String],
) -> (Arc<MetadataImage>, BTreeMap<String, ResponseError>) {
    let new_topics = names
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            num_partitions: broker.config.num_partitions,
            replication_factor: broker.config.default_replication_factor,
            assignments: BTreeMap::new(),
            configs: BTreeMap::new(),
        })
        .collect();
    let results = broker.metadata.create_topics(new_topics, false).await;
    let mut errors = BTreeMap::new();
    for (name, result) in names.iter().zip(results) {
        match result {
            Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
            // Created concurrently by someone else: fine.
            Err(sluice_raft::ControllerError::TopicAlreadyExists(_)) => {}
            Err(e) => {
                // An invalid name is the client's fault; anything else is retriable.
                let code = match controller_error_code(&e) {
                    ResponseError::InvalidTopicException => ResponseError::InvalidTopicException,
                    ResponseError::InvalidReplicationFactor => {
                        ResponseError::InvalidReplicationFactor
                    }
                    _ => ResponseError::LeaderNotAvailable,
                };
                errors.insert(name.clone(), code);
            }
        }
    }
    let image = broker
        .wait_for_image(|image| {
            names
                .iter()
                .all(|n| image.topics.contains_key(n) || errors.contains_key(n))
        })
        .await;
    (image, errors)
}

fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let endpoint = b.listeners.first()?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(str_bytes(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
                    .with_rack(b.rack.clone().map(str_bytes)),
            )
        })
        .collect()
}

fn topic_response(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let error = if p.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
                .with_offline_replicas(
                    p.replicas
                        .iter()
                        .filter(|r| !live(r))
                        .copied()
                        .map(BrokerId)
                        .collect(),
                )
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions)
}
