//! DeleteTopics: by name (v0-v5) or by name or topic id (v6); partitions' logs are removed
//! once the deletion is in this broker's image.

use std::sync::Arc;

use sluice_protocol::kafka::messages::delete_topics_response::DeletableTopicResult;
use sluice_protocol::kafka::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use sluice_protocol::ResponseError;
use uuid::Uuid;

use super::{message, str_bytes, topic_name_for_id};
use crate::broker::Broker;
use crate::errors::controller_error_code;

pub async fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let image = broker.image();
    // (name if known, id if given) per requested topic, in request order.
    let requested: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => (Some(name.0.to_string()), Uuid::nil()),
                None => (topic_name_for_id(&image, &t.topic_id), t.topic_id),
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };

    let names: Vec<String> = requested.iter().filter_map(|(n, _)| n.clone()).collect();
    let mut outcomes = broker.metadata.delete_topics(names).await.into_iter();
    let responses: Vec<DeletableTopicResult> = requested
        .into_iter()
        .map(|(name, id)| {
            let Some(name) = name else {
                return DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_error_message(message(format!("no topic has id {id}")));
            };
            let result =
                DeletableTopicResult::default().with_name(Some(TopicName(str_bytes(name.clone()))));
            match outcomes.next() {
                Some(Ok(topic_id)) => result.with_topic_id(topic_id),
                Some(Err(e)) => result
                    .with_topic_id(id)
                    .with_error_code(controller_error_code(&e).code())
                    .with_error_message(message(&e)),
                None => result.with_error_code(ResponseError::UnknownServerError.code()),
            }
        })
        .collect();
    let gone: Vec<String> = responses
        .iter()
        .filter(|r| r.error_code == 0)
        .filter_map(|r| r.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    if !gone.is_empty() {
        broker
            .wait_for_image(|image| gone.iter().all(|n| !image.topics.contains_key(n)))
            .await;
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
