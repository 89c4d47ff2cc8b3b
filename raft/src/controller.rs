//! Controller decisions: validate a request against committed metadata and turn it into the
//! records to propose. Pure functions of the state and the request (randomness comes in as
//! arguments), so they are unit-tested here; node.rs runs them on the Raft leader only, one
//! request at a time, against fully applied state.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use uuid::Uuid;

use crate::records::MetadataRecord;
use crate::state::{MetadataState, PRODUCER_ID_BLOCK_SIZE};
use crate::{
    BrokerImage, BrokerRegistration, ConfigOp, ControllerError, CreatedTopic, NewTopic,
    PartitionImage, ProducerIdBlock, TopicImage,
};

/// Kafka's limit on topic name length.
pub(crate) const MAX_TOPIC_NAME_LEN: usize = 249;
/// Bound on the partitions of one topic (a request asking for more is refused, not obeyed).
pub(crate) const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;
/// Topic (or cluster) config that allows electing a leader from outside the ISR.
pub(crate) const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// Controller defaults for CreateTopics with -1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// Kafka's topic name rule: `[a-zA-Z0-9._-]`, 1..=249 chars, not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::InvalidTopic("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(ControllerError::InvalidTopic(format!(
            "topic name cannot be '{name}'"
        )));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(ControllerError::InvalidTopic(format!(
            "topic name is longer than {MAX_TOPIC_NAME_LEN} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ControllerError::InvalidTopic(format!(
            "topic name '{name}' contains '{c}'; legal characters are ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// A broker can lead and be placed on when it is registered, unfenced and not shutting down.
fn is_eligible(b: &BrokerImage) -> bool {
    !b.fenced && !b.in_controlled_shutdown
}

/// Brokers new replicas may go to, with their racks, by id.
pub(crate) fn placeable_brokers(state: &MetadataState) -> Vec<(i32, Option<String>)> {
    state
        .brokers
        .values()
        .filter(|b| is_eligible(b))
        .map(|b| (b.id, b.rack.clone()))
        .collect()
}

/// Orders brokers so consecutive ones are on different racks (Kafka's rack-alternated list):
/// racks sorted by name, brokers by id, then one from each rack in turn.
fn rack_alternated(brokers: &[(i32, Option<String>)]) -> Vec<(i32, String)> {
    let mut by_rack: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack
            .entry(rack.clone().unwrap_or_default())
            .or_default()
            .push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut i = 0;
    while out.len() < brokers.len() {
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(i) {
                out.push((*id, rack.clone()));
            }
        }
        i += 1;
    }
    out
}

/// Places `count` partitions (numbered from `first_partition`) with `replication_factor`
/// replicas each over `brokers`. Leaders (first replicas) go round-robin from `start` so they
/// spread evenly; the other replicas follow in rack-alternated order and go to racks the
/// partition does not use yet while there are such racks.
pub(crate) fn place_replicas(
    brokers: &[(i32, Option<String>)],
    count: i32,
    replication_factor: i16,
    first_partition: i32,
    start: usize,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    if replication_factor <= 0 {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor must be larger than 0, got {replication_factor}"
        )));
    }
    let rf = replication_factor as usize;
    if rf > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {rf} is larger than the number of available brokers ({})",
            brokers.len()
        )));
    }
    let list = rack_alternated(brokers);
    let n = list.len();
    let rack_count = list.iter().map(|(_, r)| r).collect::<BTreeSet<_>>().len();
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for p in 0..count.max(0) as usize {
        let seq = start.wrapping_add(first_partition as usize).wrapping_add(p);
        let first = seq % n;
        // Kafka's shift: after each full round the followers start further along, so the
        // same pairs of brokers do not always replicate together.
        let shift = (seq / n) % n.max(1);
        let mut replicas = vec![list[first].0];
        let mut racks_used: BTreeSet<&str> = BTreeSet::from([list[first].1.as_str()]);
        for pass in 0..2 {
            for k in 0..n {
                if replicas.len() == rf {
                    break;
                }
                let (id, rack) = &list[(first + 1 + shift + k) % n];
                if replicas.contains(id) {
                    continue;
                }
                if pass == 0 && racks_used.len() < rack_count && racks_used.contains(rack.as_str())
                {
                    continue;
                }
                replicas.push(*id);
                racks_used.insert(rack.as_str());
            }
        }
        debug_assert_eq!(replicas.len(), rf);
        out.push(replicas);
    }
    Ok(out)
}

/// Leader election from the ISR: the first replica (in replica order) that is in the ISR and
/// eligible. With `unclean` allowed and no such replica, the first eligible replica at all.
/// Returns `(leader, isr)`; leader -1 when nobody can lead.
pub(crate) fn elect_leader(
    p: &PartitionImage,
    eligible: &dyn Fn(i32) -> bool,
    unclean: bool,
) -> (i32, Vec<i32>) {
    if let Some(&leader) = p
        .replicas
        .iter()
        .find(|r| p.isr.contains(r) && eligible(**r))
    {
        return (leader, p.isr.clone());
    }
    if unclean {
        if let Some(&leader) = p.replicas.iter().find(|r| eligible(**r)) {
            return (leader, vec![leader]);
        }
    }
    (-1, p.isr.clone())
}

fn unclean_allowed(state: &MetadataState, topic: &TopicImage) -> bool {
    let v = topic
        .configs
        .get(UNCLEAN_LEADER_ELECTION)
        .or_else(|| state.cluster_configs.get(UNCLEAN_LEADER_ELECTION));
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A partition changed to `leader`/`isr`, with the epochs bumped as Kafka does: the leader
/// epoch when the leader changes, the partition epoch on any change.
fn changed(p: &PartitionImage, leader: i32, isr: Vec<i32>) -> Option<PartitionImage> {
    if leader == p.leader && isr == p.isr {
        return None;
    }
    Some(PartitionImage {
        partition: p.partition,
        replicas: p.replicas.clone(),
        isr,
        leader,
        leader_epoch: if leader != p.leader {
            p.leader_epoch + 1
        } else {
            p.leader_epoch
        },
        partition_epoch: p.partition_epoch + 1,
    })
}

/// Moves leadership (and ISR membership, except the last member) away from a broker that is
/// being fenced, re-registered or shut down.
fn move_away_from(state: &MetadataState, broker_id: i32) -> Vec<MetadataRecord> {
    let eligible = |id: i32| id != broker_id && state.brokers.get(&id).is_some_and(is_eligible);
    let mut records = Vec::new();
    for topic in state.topics.values() {
        let unclean = unclean_allowed(state, topic);
        for p in &topic.partitions {
            if !p.isr.contains(&broker_id) && p.leader != broker_id {
                continue;
            }
            let mut shrunk = p.clone();
            if shrunk.isr.len() > 1 {
                shrunk.isr.retain(|r| *r != broker_id);
            }
            let (leader, isr) = if p.leader == broker_id || p.leader == -1 {
                elect_leader(&shrunk, &eligible, unclean)
            } else {
                (p.leader, shrunk.isr.clone())
            };
            if let Some(np) = changed(p, leader, isr) {
                records.push(MetadataRecord::Partition {
                    topic_id: topic.id,
                    partition: np,
                });
            }
        }
    }
    records
}

/// Partitions without a leader that this (now eligible) broker can lead again.
fn elect_leaderless(state: &MetadataState, broker_id: i32) -> Vec<MetadataRecord> {
    let eligible = |id: i32| id == broker_id || state.brokers.get(&id).is_some_and(is_eligible);
    let mut records = Vec::new();
    for topic in state.topics.values() {
        let unclean = unclean_allowed(state, topic);
        for p in topic
            .partitions
            .iter()
            .filter(|p| p.leader == -1 && p.replicas.contains(&broker_id))
        {
            let (leader, isr) = elect_leader(p, &eligible, unclean);
            if leader != -1 {
                if let Some(np) = changed(p, leader, isr) {
                    records.push(MetadataRecord::Partition {
                        topic_id: topic.id,
                        partition: np,
                    });
                }
            }
        }
    }
    records
}

fn registered(
    state: &MetadataState,
    broker_id: i32,
    epoch: i64,
) -> Result<&BrokerImage, ControllerError> {
    match state.brokers.get(&broker_id) {
        None => Err(ControllerError::BrokerRegistration(format!(
            "broker {broker_id} is not registered"
        ))),
        Some(b) if b.epoch != epoch => Err(ControllerError::StaleBrokerEpoch),
        Some(b) => Ok(b),
    }
}

/// A (re-)registration: always a new record, so a new incarnation (or a retry) gets a new
/// epoch. The broker starts fenced; what the old incarnation led moves away.
pub(crate) fn register_broker(
    state: &MetadataState,
    reg: &BrokerRegistration,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    if reg.broker_id < 0 {
        return Err(ControllerError::BrokerRegistration(format!(
            "invalid broker id {}",
            reg.broker_id
        )));
    }
    let mut records = vec![MetadataRecord::RegisterBroker {
        broker_id: reg.broker_id,
        incarnation_id: reg.incarnation_id,
        listeners: reg.listeners.clone(),
        rack: reg.rack.clone(),
    }];
    if state.brokers.contains_key(&reg.broker_id) {
        records.extend(move_away_from(state, reg.broker_id));
    }
    Ok(records)
}

/// What a heartbeat changes. Errors: unknown broker, stale epoch.
pub(crate) fn heartbeat(
    state: &MetadataState,
    broker_id: i32,
    broker_epoch: i64,
    want_shut_down: bool,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let broker = registered(state, broker_id, broker_epoch)?;
    let mut records = Vec::new();
    if want_shut_down {
        if !broker.in_controlled_shutdown {
            records.push(MetadataRecord::BrokerControlledShutdown {
                broker_id,
                epoch: broker_epoch,
            });
            records.extend(move_away_from(state, broker_id));
        }
    } else if broker.fenced {
        records.push(MetadataRecord::BrokerFencing {
            broker_id,
            epoch: broker_epoch,
            fenced: false,
        });
        records.extend(elect_leaderless(state, broker_id));
    }
    Ok(records)
}

/// The heartbeat reply from the state after the heartbeat's records applied.
pub(crate) fn heartbeat_reply(
    state: &MetadataState,
    broker_id: i32,
    want_shut_down: bool,
) -> crate::HeartbeatReply {
    let broker = state.brokers.get(&broker_id);
    let leads_movable = state.topics.values().flat_map(|t| &t.partitions).any(|p| {
        p.leader == broker_id
            && p.isr
                .iter()
                .any(|r| *r != broker_id && state.brokers.get(r).is_some_and(is_eligible))
    });
    crate::HeartbeatReply {
        is_fenced: broker.is_none_or(|b| b.fenced),
        is_caught_up: true,
        should_shut_down: want_shut_down && !leads_movable,
    }
}

/// Fences a broker whose session expired, moving its leaderships away.
pub(crate) fn fence_broker(state: &MetadataState, broker_id: i32) -> Vec<MetadataRecord> {
    let Some(b) = state.brokers.get(&broker_id) else {
        return Vec::new();
    };
    if b.fenced {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::BrokerFencing {
        broker_id,
        epoch: b.epoch,
        fenced: true,
    }];
    records.extend(move_away_from(state, broker_id));
    records
}

fn new_topic_id(state: &MetadataState, taken: &HashSet<Uuid>) -> Uuid {
    loop {
        let id = crate::rt::random_uuid();
        if !id.is_nil() && !state.topic_names_by_id.contains_key(&id) && !taken.contains(&id) {
            return id;
        }
    }
}

/// Kafka refuses topics whose names differ only by '.' vs '_' (metric names collide).
fn collides(state: &MetadataState, name: &str) -> Option<String> {
    let norm = name.replace('.', "_");
    state
        .topics
        .keys()
        .find(|t| t.as_str() != name && t.replace('.', "_") == norm)
        .cloned()
}

fn check_assignment(state: &MetadataState, replicas: &[i32]) -> Result<(), ControllerError> {
    if replicas.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment(
            "empty replica list".into(),
        ));
    }
    let distinct: BTreeSet<_> = replicas.iter().collect();
    if distinct.len() != replicas.len() {
        return Err(ControllerError::InvalidReplicaAssignment(format!(
            "duplicate replicas in {replicas:?}"
        )));
    }
    if let Some(r) = replicas
        .iter()
        .find(|r| !state.brokers.get(r).is_some_and(is_eligible))
    {
        return Err(ControllerError::InvalidReplicaAssignment(format!(
            "broker {r} is not registered and unfenced"
        )));
    }
    Ok(())
}

fn new_partition(partition: i32, replicas: Vec<i32>) -> PartitionImage {
    PartitionImage {
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

/// CreateTopics: one result per input, in order, and the records for all topics that pass.
pub(crate) fn create_topics(
    state: &MetadataState,
    topics: &[NewTopic],
    defaults: Defaults,
    start: usize,
) -> (
    Vec<Result<CreatedTopic, ControllerError>>,
    Vec<MetadataRecord>,
) {
    let brokers = placeable_brokers(state);
    let mut results = Vec::with_capacity(topics.len());
    let mut records = Vec::new();
    let mut names_in_call = HashSet::new();
    let mut ids_in_call = HashSet::new();
    for (i, t) in topics.iter().enumerate() {
        let r = (|| {
            validate_topic_name(&t.name)?;
            if state.topics.contains_key(&t.name) || names_in_call.contains(&t.name) {
                return Err(ControllerError::TopicAlreadyExists(t.name.clone()));
            }
            if let Some(other) = collides(state, &t.name) {
                return Err(ControllerError::InvalidTopic(format!(
                    "topic '{}' collides with existing topic '{other}'",
                    t.name
                )));
            }
            let assignment: Vec<Vec<i32>> = if t.assignments.is_empty() {
                let count = if t.num_partitions == -1 {
                    defaults.num_partitions
                } else {
                    t.num_partitions
                };
                let rf = if t.replication_factor == -1 {
                    defaults.replication_factor
                } else {
                    t.replication_factor
                };
                if count <= 0 || count > MAX_PARTITIONS_PER_TOPIC {
                    return Err(ControllerError::InvalidPartitions(format!(
                        "number of partitions must be in 1..={MAX_PARTITIONS_PER_TOPIC}, got {count}"
                    )));
                }
                place_replicas(&brokers, count, rf, 0, start.wrapping_add(i))?
            } else {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(ControllerError::InvalidReplicaAssignment(
                        "num_partitions and replication_factor must be -1 with an explicit assignment".into(),
                    ));
                }
                let count = t.assignments.len() as i32;
                if t.assignments.keys().copied().ne(0..count) {
                    return Err(ControllerError::InvalidReplicaAssignment(
                        "partition indexes must be 0..count without gaps".into(),
                    ));
                }
                let rf = t.assignments.values().next().map_or(0, Vec::len);
                for replicas in t.assignments.values() {
                    check_assignment(state, replicas)?;
                    if replicas.len() != rf {
                        return Err(ControllerError::InvalidReplicaAssignment(
                            "all partitions must have the same number of replicas".into(),
                        ));
                    }
                }
                t.assignments.values().cloned().collect()
            };
            let topic_id = new_topic_id(state, &ids_in_call);
            let replication_factor = assignment[0].len() as i16;
            let num_partitions = assignment.len() as i32;
            records.push(MetadataRecord::Topic {
                name: t.name.clone(),
                topic_id,
                configs: t.configs.clone(),
            });
            for (p, replicas) in assignment.into_iter().enumerate() {
                records.push(MetadataRecord::Partition {
                    topic_id,
                    partition: new_partition(p as i32, replicas),
                });
            }
            names_in_call.insert(t.name.clone());
            ids_in_call.insert(topic_id);
            Ok(CreatedTopic {
                name: t.name.clone(),
                topic_id,
                num_partitions,
                replication_factor,
            })
        })();
        results.push(r);
    }
    (results, records)
}

pub(crate) fn delete_topics(
    state: &MetadataState,
    names: &[String],
) -> (Vec<Result<Uuid, ControllerError>>, Vec<MetadataRecord>) {
    let mut removed = HashSet::new();
    let mut records = Vec::new();
    let results = names
        .iter()
        .map(|name| match state.topics.get(name) {
            Some(t) if !removed.contains(&t.id) => {
                removed.insert(t.id);
                records.push(MetadataRecord::RemoveTopic { topic_id: t.id });
                Ok(t.id)
            }
            _ => Err(ControllerError::UnknownTopic(name.clone())),
        })
        .collect();
    (results, records)
}

pub(crate) fn create_partitions(
    state: &MetadataState,
    topic: &str,
    total_count: i32,
    assignments: &[Vec<i32>],
    start: usize,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let t = state
        .topics
        .get(topic)
        .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))?;
    let current = t.partitions.len() as i32;
    if total_count <= current {
        return Err(ControllerError::InvalidPartitions(format!(
            "topic '{topic}' has {current} partitions; the count can only increase, got {total_count}"
        )));
    }
    if total_count > MAX_PARTITIONS_PER_TOPIC {
        return Err(ControllerError::InvalidPartitions(format!(
            "at most {MAX_PARTITIONS_PER_TOPIC} partitions"
        )));
    }
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
    let new_count = total_count - current;
    let placed = if assignments.is_empty() {
        place_replicas(&placeable_brokers(state), new_count, rf, current, start)?
    } else {
        if assignments.len() as i32 != new_count {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "{} assignments for {new_count} new partitions",
                assignments.len()
            )));
        }
        for replicas in assignments {
            check_assignment(state, replicas)?;
            if replicas.len() != rf as usize {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "new partitions must have {rf} replicas like the existing ones"
                )));
            }
        }
        assignments.to_vec()
    };
    Ok(placed
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| MetadataRecord::Partition {
            topic_id: t.id,
            partition: new_partition(current + i as i32, replicas),
        })
        .collect())
}

pub(crate) fn alter_topic_configs(
    state: &MetadataState,
    topic: &str,
    ops: &[ConfigOp],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let t = state
        .topics
        .get(topic)
        .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))?;
    check_config_ops(ops)?;
    Ok(vec![MetadataRecord::TopicConfigs {
        topic_id: t.id,
        ops: ops.to_vec(),
    }])
}

pub(crate) fn alter_cluster_configs(
    ops: &[ConfigOp],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    check_config_ops(ops)?;
    Ok(vec![MetadataRecord::ClusterConfigs { ops: ops.to_vec() }])
}

fn check_config_ops(ops: &[ConfigOp]) -> Result<(), ControllerError> {
    for op in ops {
        let (ConfigOp::Set(k, _) | ConfigOp::Delete(k)) = op;
        if k.is_empty() {
            return Err(ControllerError::InvalidConfig("empty config name".into()));
        }
    }
    Ok(())
}

/// AlterPartition: the leader asks to change the ISR, naming the partition epoch it saw.
#[allow(clippy::too_many_arguments)]
pub(crate) fn alter_partition_isr(
    state: &MetadataState,
    broker_id: i32,
    broker_epoch: i64,
    topic_id: Uuid,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: &[i32],
) -> Result<(PartitionImage, Vec<MetadataRecord>), ControllerError> {
    registered(state, broker_id, broker_epoch)?;
    let t = state
        .topic_by_id(&topic_id)
        .ok_or_else(|| ControllerError::UnknownTopic(topic_id.to_string()))?;
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or_else(|| ControllerError::UnknownTopic(format!("{}-{partition}", t.name)))?;
    // Compare-and-set: the request is valid only against the exact state the leader saw.
    if p.leader != broker_id
        || p.leader_epoch != leader_epoch
        || p.partition_epoch != partition_epoch
    {
        return Err(ControllerError::StalePartitionEpoch);
    }
    let mut isr: Vec<i32> = Vec::with_capacity(new_isr.len());
    for r in new_isr {
        if !p.replicas.contains(r) || isr.contains(r) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "ISR member {r} is not a distinct replica"
            )));
        }
        if *r != broker_id && state.brokers.get(r).is_none_or(|b| b.fenced) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "ISR member {r} is fenced or unknown"
            )));
        }
        isr.push(*r);
    }
    if !isr.contains(&broker_id) {
        return Err(ControllerError::InvalidReplicaAssignment(
            "the leader must stay in the ISR".into(),
        ));
    }
    let np = PartitionImage {
        isr,
        partition_epoch: p.partition_epoch + 1,
        ..p.clone()
    };
    Ok((
        np.clone(),
        vec![MetadataRecord::Partition {
            topic_id,
            partition: np,
        }],
    ))
}

pub(crate) fn allocate_producer_ids(
    state: &MetadataState,
    broker_id: i32,
    broker_epoch: i64,
) -> Result<(ProducerIdBlock, Vec<MetadataRecord>), ControllerError> {
    registered(state, broker_id, broker_epoch)?;
    let first = state.next_producer_id;
    let next = first
        .checked_add(i64::from(PRODUCER_ID_BLOCK_SIZE))
        .ok_or_else(|| ControllerError::Internal("producer ids exhausted".into()))?;
    Ok((
        ProducerIdBlock {
            first_producer_id: first,
            size: PRODUCER_ID_BLOCK_SIZE,
        },
        vec![MetadataRecord::ProducerIds {
            broker_id,
            broker_epoch,
            next_producer_id: next,
        }],
    ))
}

#[cfg(test)]
mod tests;
