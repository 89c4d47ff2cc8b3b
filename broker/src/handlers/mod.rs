//! One file per Kafka API, named after it. A handler turns a typed request into a typed
//! response; this module routes a decoded request to its handler.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_protocol::{Request, RequestHeader, Response, ResponseError};
use sluice_raft::MetadataImage;

use crate::broker::Broker;
use crate::partition::Partition;

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_producers;
mod describe_transactions;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod txn_offset_commit;

/// What the connection does after a request.
pub enum Outcome {
    /// Send this response, encoded at this version (which differs from the request's only
    /// for the ApiVersions fallback).
    Respond(Response, i16),
    /// Send nothing (acks=0 produce that succeeded).
    Silent,
    /// Close the connection: the only way to tell an acks=0 producer that its write failed.
    Close(String),
}

/// Handles one request.
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    peer: SocketAddr,
    request: Request,
) -> Outcome {
    let v = header.api_version;
    let response = match request {
        Request::ApiVersions(r) => {
            let (response, version) = api_versions::handle(v, r);
            return Outcome::Respond(Response::ApiVersions(response), version);
        }
        Request::Produce(r) => {
            let acks = r.acks;
            let response = produce::handle(broker, v, r);
            if acks != 0 {
                Response::Produce(response)
            } else if let Some(error) = produce::first_error(&response) {
                return Outcome::Close(format!("acks=0 produce failed with {error:?}"));
            } else {
                return Outcome::Silent;
            }
        }
        Request::Fetch(r) => Response::Fetch(fetch::handle(broker, v, r).await),
        Request::ListOffsets(r) => Response::ListOffsets(list_offsets::handle(broker, v, r)),
        Request::Metadata(r) => Response::Metadata(metadata::handle(broker, v, r).await),
        Request::CreateTopics(r) => {
            Response::CreateTopics(create_topics::handle(broker, v, r).await)
        }
        Request::DeleteTopics(r) => {
            Response::DeleteTopics(delete_topics::handle(broker, v, r).await)
        }
        Request::CreatePartitions(r) => {
            Response::CreatePartitions(create_partitions::handle(broker, r).await)
        }
        Request::DeleteRecords(r) => Response::DeleteRecords(delete_records::handle(broker, r)),
        Request::DescribeConfigs(r) => {
            Response::DescribeConfigs(describe_configs::handle(broker, v, r))
        }
        Request::AlterConfigs(r) => Response::AlterConfigs(alter_configs::handle(broker, r).await),
        Request::IncrementalAlterConfigs(r) => {
            Response::IncrementalAlterConfigs(incremental_alter_configs::handle(broker, r).await)
        }
        Request::DescribeCluster(r) => {
            Response::DescribeCluster(describe_cluster::handle(broker, v, r))
        }
        Request::OffsetForLeaderEpoch(r) => {
            Response::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, r))
        }
        Request::FindCoordinator(r) => {
            Response::FindCoordinator(find_coordinator::handle(broker, v, r).await)
        }
        Request::JoinGroup(r) => {
            Response::JoinGroup(join_group::handle(broker, header, peer, r).await)
        }
        Request::SyncGroup(r) => Response::SyncGroup(sync_group::handle(broker, v, r).await),
        Request::Heartbeat(r) => Response::Heartbeat(heartbeat::handle(broker, r)),
        Request::LeaveGroup(r) => Response::LeaveGroup(leave_group::handle(broker, v, r)),
        Request::OffsetCommit(r) => Response::OffsetCommit(offset_commit::handle(broker, r)),
        Request::OffsetFetch(r) => Response::OffsetFetch(offset_fetch::handle(broker, v, r)),
        Request::DescribeGroups(r) => {
            Response::DescribeGroups(describe_groups::handle(broker, v, r))
        }
        Request::ListGroups(r) => Response::ListGroups(list_groups::handle(broker, v, r)),
        Request::DeleteGroups(r) => Response::DeleteGroups(delete_groups::handle(broker, r)),
        Request::OffsetDelete(r) => Response::OffsetDelete(offset_delete::handle(broker, r)),
        Request::InitProducerId(r) => {
            Response::InitProducerId(init_producer_id::handle(broker, v, r).await)
        }
        Request::AddPartitionsToTxn(r) => {
            Response::AddPartitionsToTxn(add_partitions_to_txn::handle(broker, v, r))
        }
        Request::AddOffsetsToTxn(r) => {
            Response::AddOffsetsToTxn(add_offsets_to_txn::handle(broker, v, r).await)
        }
        Request::EndTxn(r) => Response::EndTxn(end_txn::handle(broker, v, r)),
        Request::TxnOffsetCommit(r) => {
            Response::TxnOffsetCommit(txn_offset_commit::handle(broker, v, r))
        }
        Request::DescribeProducers(r) => {
            Response::DescribeProducers(describe_producers::handle(broker, r))
        }
        Request::DescribeTransactions(r) => {
            Response::DescribeTransactions(describe_transactions::handle(broker, r))
        }
        Request::ListTransactions(r) => {
            Response::ListTransactions(list_transactions::handle(broker, r))
        }
    };
    Outcome::Respond(response, v)
}

/// The hosted partition `topic`/`index`, or the error a client acts on: an unknown topic or
/// partition, or NOT_LEADER_OR_FOLLOWER when this broker does not host it (refresh metadata).
pub(crate) fn partition_for(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    index: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let Some(t) = image.topics.get(topic) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let Some(p) = t.partitions.iter().find(|p| p.partition == index) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    if !p.replicas.contains(&broker.config.node_id) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    if let Some(partition) = broker
        .replicas
        .get(topic, index)
        .filter(|h| h.topic_id == t.id)
    {
        return Ok(partition);
    }
    // The image is newer than what the replica manager applied so far.
    broker.replicas.apply_image(image);
    broker
        .replicas
        .get(topic, index)
        .filter(|h| h.topic_id == t.id)
        .ok_or(ResponseError::NotLeaderOrFollower)
}

/// The hosted partition, if this broker leads it and the client's `current_leader_epoch`
/// (-1: not given) is ours: what requests meant for the leader need.
pub(crate) fn leader_for(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let partition = partition_for(broker, image, topic, index)?;
    if !partition.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    partition.check_leader_epoch(current_leader_epoch)?;
    Ok(partition)
}

/// The topic name for a topic id, as requests v13+ of Produce and Fetch name topics.
pub(crate) fn topic_name_for_id(image: &MetadataImage, id: &uuid::Uuid) -> Option<String> {
    image.topic_names_by_id.get(id).cloned()
}

/// Kafka marks topics whose names start with "__" as internal.
pub(crate) fn is_internal_topic(name: &str) -> bool {
    name.starts_with("__")
}

pub(crate) fn str_bytes(s: impl Into<String>) -> sluice_protocol::kafka::protocol::StrBytes {
    sluice_protocol::kafka::protocol::StrBytes::from_string(s.into())
}

/// An error message for a response, from anything displayable.
pub(crate) fn message(
    s: impl std::fmt::Display,
) -> Option<sluice_protocol::kafka::protocol::StrBytes> {
    Some(str_bytes(s.to_string()))
}
