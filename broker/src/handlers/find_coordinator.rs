//! FindCoordinator: which broker coordinates a consumer group. Creates the internal topic
//! `__consumer_offsets` on first use, as Kafka does.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_protocol::kafka::messages::find_coordinator_response::Coordinator;
use sluice_protocol::kafka::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use sluice_protocol::ResponseError;
use sluice_raft::{MetadataImage, NewTopic};

use super::{message, str_bytes};
use crate::broker::Broker;
use crate::group::offsets_topic::OFFSETS_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// (node id, host, port) of a coordinator, or why there is none.
type Found = Result<(i32, String, i32), (ResponseError, String)>;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let found: Vec<Found> = match request.key_type {
        KEY_TYPE_GROUP => match ensure_offsets_topic(broker).await {
            Ok(image) => keys
                .iter()
                .map(|k| coordinator_for(broker, &image, k))
                .collect(),
            Err(e) => keys.iter().map(|_| Err(e.clone())).collect(),
        },
        KEY_TYPE_TRANSACTION => keys
            .iter()
            .map(|_| {
                Err((
                    ResponseError::CoordinatorNotAvailable,
                    "transactions are not supported yet".to_string(),
                ))
            })
            .collect(),
        other => keys
            .iter()
            .map(|_| {
                Err((
                    ResponseError::InvalidRequest,
                    format!("unknown coordinator key type {other}"),
                ))
            })
            .collect(),
    };
    if version >= 4 {
        let coordinators = keys
            .into_iter()
            .zip(found)
            .map(|(key, f)| {
                let c = Coordinator::default().with_key(str_bytes(key));
                match f {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err((code, why)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code.code())
                        .with_error_message(message(why)),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default();
    match found.into_iter().next() {
        Some(Ok((id, host, port))) => response
            .with_node_id(BrokerId(id))
            .with_host(str_bytes(host))
            .with_port(port),
        Some(Err((code, why))) => {
            let r = response
                .with_error_code(code.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                r.with_error_message(message(why))
            } else {
                r
            }
        }
        None => response.with_error_code(ResponseError::InvalidRequest.code()),
    }
}

fn coordinator_for(broker: &Broker, image: &MetadataImage, group_id: &str) -> Found {
    let p = broker.groups.partition_for(group_id);
    let unavailable = |why: &str| Err((ResponseError::CoordinatorNotAvailable, why.to_string()));
    let Some(leader) = image
        .topics
        .get(OFFSETS_TOPIC)
        .and_then(|t| t.partitions.iter().find(|q| q.partition == p))
        .map(|q| q.leader)
    else {
        return unavailable("the __consumer_offsets partition of this group does not exist");
    };
    match image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .and_then(|b| b.listeners.first())
    {
        Some(e) => Ok((leader, e.host.clone(), i32::from(e.port))),
        None => unavailable("the coordinator's partition has no live leader"),
    }
}

/// Creates `__consumer_offsets` if it does not exist yet, with Kafka's settings for it.
async fn ensure_offsets_topic(
    broker: &Arc<Broker>,
) -> Result<Arc<MetadataImage>, (ResponseError, String)> {
    let image = broker.image();
    if image.topics.contains_key(OFFSETS_TOPIC) {
        return Ok(image);
    }
    let cfg = broker.groups.config();
    let live = image.brokers.values().filter(|b| !b.fenced).count().max(1);
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: cfg.offsets_topic_partitions,
        // Kafka refuses until enough brokers exist; a single-node cluster uses what it has,
        // and until partitions are replicated no more than one replica is kept.
        replication_factor: (cfg.offsets_topic_replication_factor as usize)
            .min(live)
            .min(crate::partition::MAX_REPLICATION_FACTOR) as i16,
        assignments: BTreeMap::new(),
        configs: BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), "104857600".to_string()),
            ("compression.type".to_string(), "producer".to_string()),
        ]),
    };
    match broker
        .metadata
        .create_topics(vec![topic], false)
        .await
        .pop()
    {
        Some(Ok(_)) | Some(Err(sluice_raft::ControllerError::TopicAlreadyExists(_))) => {}
        Some(Err(e)) => {
            return Err((
                ResponseError::CoordinatorNotAvailable,
                format!("cannot create {OFFSETS_TOPIC}: {e}"),
            ))
        }
        None => {
            return Err((
                ResponseError::CoordinatorNotAvailable,
                "no answer from the controller".into(),
            ))
        }
    }
    tracing::info!("created the internal topic {OFFSETS_TOPIC}");
    Ok(broker
        .wait_for_image(|image| image.topics.contains_key(OFFSETS_TOPIC))
        .await)
}
