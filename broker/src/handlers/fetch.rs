//! Fetch (consumers): committed record batches from each requested partition, waiting up to
//! `max_wait_ms` for `min_bytes` to arrive. Every requested partition is listed in the
//! response. With `read_committed`, reads stop at the last stable offset and each partition
//! lists the aborted transactions in the data it returns, so the client can drop their
//! records. Fetch sessions (KIP-227) are declined: session id 0 in every response, so
//! clients keep sending full fetches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::kafka::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use sluice_protocol::kafka::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use sluice_protocol::ResponseError;
use sluice_raft::MetadataImage;
use sluice_storage::StorageError;
use tokio::sync::Notify;

use super::{leader_for, topic_name_for_id};
use crate::broker::Broker;
use crate::errors::storage_error_code;
use crate::partition::{Isolation, Partition};

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// A requested partition, resolved once per request.
struct Target {
    topic: usize,
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, ResponseError>,
}

pub async fn handle(broker: &Arc<Broker>, version: i16, request: FetchRequest) -> FetchResponse {
    // We never hand out a session id, so an incremental fetch names a session we do not have.
    if request.session_id != 0 || request.session_epoch > 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let image = broker.image();
    let (topics, targets) = resolve(broker, &image, version, &request);
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let may_wait = !wait.is_zero() && min_bytes > 0;
    let isolation = Isolation::from_level(request.isolation_level);
    loop {
        // Register before reading, so an append between the read and the wait still wakes us.
        let waiter = Arc::new(Notify::new());
        if may_wait {
            for t in &targets {
                if let Ok(p) = &t.partition {
                    p.add_waiter(&waiter);
                }
            }
        }
        let (partitions, bytes, any_error) = read_all(&targets, max_bytes, isolation);
        if !may_wait || bytes >= min_bytes || any_error {
            return build_response(version, topics, &targets, partitions);
        }
        if tokio::time::timeout_at(deadline, waiter.notified())
            .await
            .is_err()
        {
            // Out of time: answer with whatever is there now.
            let partitions = read_all(&targets, max_bytes, isolation).0;
            return build_response(version, topics, &targets, partitions);
        }
    }
}

fn resolve(
    broker: &Broker,
    image: &MetadataImage,
    version: i16,
    request: &FetchRequest,
) -> (Vec<(TopicName, uuid::Uuid)>, Vec<Target>) {
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut targets = Vec::new();
    for (i, topic) in request.topics.iter().enumerate() {
        let name = if version >= 13 {
            topic_name_for_id(image, &topic.topic_id)
        } else {
            Some(topic.topic.0.to_string())
        };
        topics.push((topic.topic.clone(), topic.topic_id));
        for p in &topic.partitions {
            let partition = match &name {
                None => Err(ResponseError::UnknownTopicId),
                Some(name) => leader_for(broker, image, name, p.partition, p.current_leader_epoch),
            };
            targets.push(Target {
                topic: i,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                partition,
            });
        }
    }
    (topics, targets)
}

/// Reads every target within the response budget. The first partition with data may exceed
/// the budget by one batch, so a consumer can always make progress.
fn read_all(
    targets: &[Target],
    max_bytes: usize,
    isolation: Isolation,
) -> (Vec<PartitionData>, usize, bool) {
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let data = PartitionData::default().with_partition_index(t.index);
        let result = t.partition.clone().and_then(|p| {
            let limit = t.max_bytes.min(remaining);
            let read = p
                .read(t.fetch_offset, limit, total == 0, isolation)
                .map_err(|e| match e {
                    StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                    other => storage_error_code(&other),
                })?;
            // Read after the data: the stable offset only grows, so this bound covers it.
            let lso = p.last_stable_offset();
            let aborted = match isolation {
                Isolation::ReadCommitted if !read.records.is_empty() => {
                    aborted_in(&p, t.fetch_offset, lso).map_err(|e| storage_error_code(&e))?
                }
                _ => None,
            };
            Ok((p, read, lso, aborted))
        });
        match result {
            Ok((p, read, lso, aborted)) => {
                let len = read.records.len();
                total += len;
                remaining = remaining.saturating_sub(len);
                if len > 0 {
                    p.traffic.bytes_out.increment(len as u64);
                }
                out.push(
                    data.with_high_watermark(p.high_watermark())
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(read.log_start_offset)
                        .with_aborted_transactions(aborted)
                        .with_records(Some(read.records)),
                );
            }
            Err(code) => {
                any_error = true;
                out.push(
                    data.with_error_code(code.code())
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                        // Empty record sets are length 0, never null.
                        .with_records(Some(Bytes::new())),
                );
            }
        }
    }
    (out, total, any_error)
}

/// The aborted transactions overlapping the data read from `from`, bounded by the last
/// stable offset (a read_committed read never passes it); None when there are none, as
/// Kafka sends null rather than an empty list.
fn aborted_in(
    p: &Partition,
    from: i64,
    lso: i64,
) -> Result<Option<Vec<AbortedTransaction>>, StorageError> {
    let txns = p.aborted_txns(from, lso)?;
    if txns.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        txns.into_iter()
            .map(|t| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(t.producer_id))
                    .with_first_offset(t.first_offset)
            })
            .collect(),
    ))
}

fn build_response(
    version: i16,
    topics: Vec<(TopicName, uuid::Uuid)>,
    targets: &[Target],
    partitions: Vec<PartitionData>,
) -> FetchResponse {
    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|(name, id)| {
            let r = FetchableTopicResponse::default();
            if version >= 13 {
                r.with_topic_id(id)
            } else {
                r.with_topic(name)
            }
        })
        .collect();
    for (t, data) in targets.iter().zip(partitions) {
        responses[t.topic].partitions.push(data);
    }
    FetchResponse::default().with_responses(responses)
}
