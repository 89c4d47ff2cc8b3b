//! CreatePartitions: raises a topic's partition count (never lowers it).

use std::collections::HashSet;
use std::sync::Arc;

use sluice_protocol::kafka::messages::create_partitions_response::CreatePartitionsTopicResult;
use sluice_protocol::kafka::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use sluice_protocol::ResponseError;

use super::message;
use crate::broker::Broker;
use crate::errors::controller_error_code;
use crate::partition::check_replication_factor;

pub async fn handle(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if duplicates.contains(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(format!(
                        "topic '{name}' appears more than once in the request"
                    ))),
            );
            continue;
        }
        let assignments: Vec<Vec<i32>> = topic
            .assignments
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
            .collect();
        if let Some(Err((code, why))) = assignments
            .iter()
            .map(|r| check_replication_factor(r.len()))
            .find(Result::is_err)
        {
            results.push(
                result
                    .with_error_code(code.code())
                    .with_error_message(message(why)),
            );
            continue;
        }
        let outcome = broker
            .metadata
            .create_partitions(
                name.clone(),
                topic.count,
                assignments,
                request.validate_only,
            )
            .await;
        results.push(match outcome {
            Ok(()) => {
                if !request.validate_only {
                    let count = topic.count as usize;
                    broker
                        .wait_for_image(|image| {
                            image
                                .topics
                                .get(&name)
                                .is_some_and(|t| t.partitions.len() >= count)
                        })
                        .await;
                }
                result
            }
            Err(e) => result
                .with_error_code(controller_error_code(&e).code())
                .with_error_message(message(&e)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
