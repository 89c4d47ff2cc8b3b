//! The group coordinator (classic protocol): consumer groups, their rebalances, and
//! committed offsets, persisted in the compacted internal topic `__consumer_offsets`.
//!
//! A group lives in partition `hash(group) % offsets.topic.num.partitions` of that topic, and
//! the leader of that partition is its coordinator, so coordinators move with partition
//! leadership. On startup (or when a partition first becomes ours) the coordinator replays
//! the partition to rebuild groups and offsets.
//!
//! Offsets committed inside a transaction (TxnOffsetCommit) are written to the log as the
//! producer's transactional records and held aside as pending until the transaction
//! coordinator's marker commits them (then they become the group's offsets) or aborts them.
//!
//! The state machine of one group is in [`state`]; the record formats in [`offsets_topic`];
//! the coordinator reaches the log only through [`OffsetsLog`].

pub mod offsets_log;
pub mod offsets_topic;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::ResponseError;

use self::offsets_topic::{GroupValue, OffsetValue, OffsetsRecord, StoredMember};
use self::state::Group;
pub use self::state::{GroupConfig, GroupState, JoinArgs, JoinResult, Reply, SyncResult};
use crate::broker::now_ms;

/// How the coordinator reads and writes `__consumer_offsets`.
pub trait OffsetsLog: Send + Sync {
    /// Appends (key, value) records to one partition and returns once they are committed.
    fn append(&self, partition: i32, records: &[KeyValue]) -> Result<(), ResponseError>;
    /// Appends records as a transactional batch of `producer` (id, epoch).
    fn append_transactional(
        &self,
        partition: i32,
        producer: (i64, i16),
        records: &[KeyValue],
    ) -> Result<(), ResponseError>;
    /// Every committed record and transaction marker of one partition, in offset order.
    fn read_all(&self, partition: i32) -> Result<Vec<Replayed>, ResponseError>;
    /// Whether this broker leads the partition (and so coordinates its groups).
    fn is_leader(&self, partition: i32) -> bool;
}

/// Coordinator settings beyond the group state machine's.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`
    pub offsets_topic_replication_factor: i16,
    /// `offsets.retention.minutes`: how long an empty group's offsets are kept.
    pub offsets_retention: Duration,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            group: GroupConfig::default(),
            offsets_topic_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

type OffsetKey = (String, i32);

pub use crate::internal_topics::{KeyValue, Replayed};

/// Offsets a transaction committed that its marker has not made visible yet.
type PendingOffsets = Vec<(String, i32, OffsetValue)>;

/// Committed offsets by topic: (topic, [(partition, offset if any)]).
pub type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

pub struct GroupCoordinator {
    cfg: CoordinatorConfig,
    /// Partitions of `__consumer_offsets` as it exists (the config's count until it does).
    partitions: std::sync::atomic::AtomicI32,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    offsets: Mutex<HashMap<String, BTreeMap<OffsetKey, OffsetValue>>>,
    /// By producer id, then group: offsets of open transactions.
    pending_txn_offsets: Mutex<HashMap<i64, HashMap<String, PendingOffsets>>>,
    loaded: Mutex<HashSet<i32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCoordinator {
    pub fn new(cfg: CoordinatorConfig) -> GroupCoordinator {
        GroupCoordinator {
            partitions: std::sync::atomic::AtomicI32::new(cfg.offsets_topic_partitions),
            cfg,
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            pending_txn_offsets: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.cfg
    }

    pub fn partition_for(&self, group_id: &str) -> i32 {
        crate::internal_topics::partition_for_key(
            group_id,
            self.partitions.load(std::sync::atomic::Ordering::Acquire),
        )
    }

    /// Groups hash over the partitions `__consumer_offsets` really has, as Kafka does once
    /// the topic exists (it may predate a change of `offsets.topic.num.partitions`).
    pub fn set_partition_count(&self, partitions: i32) {
        if partitions > 0 {
            self.partitions
                .store(partitions, std::sync::atomic::Ordering::Release);
        }
    }

    /// NOT_COORDINATOR unless this broker coordinates the group; loads its partition first.
    pub fn check_coordinator(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
    ) -> Result<(), ResponseError> {
        let p = self.partition_for(group_id);
        if !log.is_leader(p) {
            return Err(ResponseError::NotCoordinator);
        }
        if !lock(&self.loaded).contains(&p) {
            self.load_partition(log, p)
                .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
        }
        Ok(())
    }

    /// Replays one `__consumer_offsets` partition into memory.
    pub fn load_partition(
        &self,
        log: &dyn OffsetsLog,
        partition: i32,
    ) -> Result<(), ResponseError> {
        // Records in effect, in order: plain ones where they are, a transaction's at its
        // commit marker; an aborted transaction's never. Those still open stay pending.
        let mut records: Vec<KeyValue> = Vec::new();
        let mut open: HashMap<i64, Vec<KeyValue>> = HashMap::new();
        for entry in log.read_all(partition)? {
            match entry {
                Replayed::Record {
                    key,
                    value,
                    producer_id: None,
                } => records.push((key, value)),
                Replayed::Record {
                    key,
                    value,
                    producer_id: Some(pid),
                } => open.entry(pid).or_default().push((key, value)),
                Replayed::Marker {
                    producer_id,
                    commit,
                } => {
                    if let Some(kvs) = open.remove(&producer_id) {
                        if commit {
                            records.extend(kvs);
                        }
                    }
                }
            }
        }
        self.restore_pending(open);
        let mut group_values: HashMap<String, Option<GroupValue>> = HashMap::new();
        let mut offsets = lock(&self.offsets);
        let mut skipped = 0usize;
        for (key, value) in &records {
            match offsets_topic::decode(key, value.as_deref()) {
                Ok(Some(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition: p,
                    value,
                })) => {
                    let entry = offsets.entry(group).or_default();
                    match value {
                        Some(v) => {
                            entry.insert((topic, p), v);
                        }
                        None => {
                            entry.remove(&(topic, p));
                        }
                    }
                }
                Ok(Some(OffsetsRecord::Group { group, value })) => {
                    group_values.insert(group, value);
                }
                Ok(None) => skipped += 1,
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(partition, error = %e, "skipping an unreadable __consumer_offsets record");
                }
            }
        }
        offsets.retain(|_, v| !v.is_empty());
        drop(offsets);
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        let mut restored = 0usize;
        for (id, value) in group_values {
            match value {
                None => {
                    groups.remove(&id);
                }
                Some(v) => {
                    groups.insert(id.clone(), Arc::new(Mutex::new(restore_group(id, v, now))));
                    restored += 1;
                }
            }
        }
        drop(groups);
        lock(&self.loaded).insert(partition);
        if !records.is_empty() {
            tracing::info!(
                partition,
                records = records.len(),
                groups = restored,
                skipped,
                "loaded consumer groups"
            );
        }
        Ok(())
    }

    /// Offsets of transactions still open when a partition was loaded.
    fn restore_pending(&self, open: HashMap<i64, Vec<KeyValue>>) {
        let mut pending = lock(&self.pending_txn_offsets);
        for (pid, kvs) in open {
            for (key, value) in kvs {
                if let Ok(Some(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value: Some(v),
                })) = offsets_topic::decode(&key, value.as_deref())
                {
                    pending
                        .entry(pid)
                        .or_default()
                        .entry(group)
                        .or_default()
                        .push((topic, partition, v));
                }
            }
        }
    }

    /// TxnOffsetCommit: offsets written as part of a producer's transaction. The transaction
    /// coordinator has already checked that this group's partition is in the transaction;
    /// here the member is checked like a plain commit when a generation is given (KIP-447).
    #[allow(clippy::too_many_arguments)]
    pub fn commit_txn_offsets(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        producer: (i64, i16),
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: PendingOffsets,
    ) -> Result<(), ResponseError> {
        if generation >= 0 {
            let group = self
                .group(group_id)
                .ok_or(ResponseError::IllegalGeneration)?;
            let g = lock(&group);
            g.check_member(member_id, instance_id)?;
            if generation != g.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let records = offset_records(group_id, &offsets);
        log.append_transactional(self.partition_for(group_id), producer, &records)?;
        lock(&self.pending_txn_offsets)
            .entry(producer.0)
            .or_default()
            .entry(group_id.to_string())
            .or_default()
            .extend(offsets);
        Ok(())
    }

    /// The transaction coordinator wrote `producer_id`'s marker to `offsets_partition`:
    /// its pending offsets for the groups there become committed (or are dropped).
    pub fn complete_txn(&self, producer_id: i64, commit: bool, offsets_partition: i32) {
        let mut pending = lock(&self.pending_txn_offsets);
        let Some(by_group) = pending.get_mut(&producer_id) else {
            return;
        };
        let groups: Vec<String> = by_group
            .keys()
            .filter(|g| self.partition_for(g) == offsets_partition)
            .cloned()
            .collect();
        let mut all = lock(&self.offsets);
        for group in groups {
            let Some(offsets) = by_group.remove(&group) else {
                continue;
            };
            if commit {
                let entry = all.entry(group).or_default();
                for (t, p, v) in offsets {
                    entry.insert((t, p), v);
                }
            }
        }
        if by_group.is_empty() {
            pending.remove(&producer_id);
        }
    }

    /// Whether an open transaction has offsets pending for this group's partition
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then, KIP-447).
    pub fn has_pending_offsets(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        lock(&self.pending_txn_offsets).values().any(|by_group| {
            by_group.get(group_id).is_some_and(|offsets| {
                offsets
                    .iter()
                    .any(|(t, p, _)| t == topic && *p == partition)
            })
        })
    }

    fn group(&self, group_id: &str) -> Option<Arc<Mutex<Group>>> {
        lock(&self.groups).get(group_id).cloned()
    }

    fn group_or_create(&self, group_id: &str) -> Arc<Mutex<Group>> {
        lock(&self.groups)
            .entry(group_id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(group_id.to_string(), now_ms()))))
            .clone()
    }

    pub fn join(&self, log: &dyn OffsetsLog, group_id: &str, args: JoinArgs) -> Reply<JoinResult> {
        let group = self.group_or_create(group_id);
        let mut g = lock(&group);
        let before = (g.generation, g.state);
        let reply = g.join(args, &self.cfg.group, Instant::now(), now_ms());
        if (g.generation, g.state) != before && g.state == GroupState::Empty {
            self.persist_group(log, &g);
        }
        reply
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        let Some(group) = self.group(group_id) else {
            return Reply::Now(SyncResult {
                error: Some(ResponseError::UnknownMemberId),
                protocol_type: None,
                protocol_name: None,
                assignment: Bytes::new(),
            });
        };
        let mut g = lock(&group);
        let (reply, settled) = g.sync(
            member_id,
            instance_id,
            generation,
            protocol,
            assignments,
            Instant::now(),
            now_ms(),
        );
        if settled {
            self.persist_group(log, &g);
        }
        reply
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let group = self.group(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let mut g = lock(&group);
        g.heartbeat(member_id, instance_id, generation, Instant::now())
    }

    /// LeaveGroup for each (member id, instance id); one result per member.
    pub fn leave(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<String, ResponseError>>, ResponseError> {
        let group = self.group(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let mut g = lock(&group);
        let results = members
            .iter()
            .map(|(m, i)| g.leave(m, i.as_deref(), &self.cfg.group, Instant::now(), now_ms()))
            .collect();
        if g.state == GroupState::Empty {
            self.persist_group(log, &g);
        }
        Ok(results)
    }

    /// Validates an OffsetCommit against the group (Kafka's rules for simple consumers with
    /// generation -1, members of the current generation, and rebalances), then persists.
    pub fn commit_offsets(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<(String, i32, OffsetValue)>,
    ) -> Result<(), ResponseError> {
        let group = match self.group(group_id) {
            Some(g) => g,
            // A consumer not using group management (assign + commit).
            None if generation < 0 => self.group_or_create(group_id),
            None => return Err(ResponseError::IllegalGeneration),
        };
        let mut g = lock(&group);
        let simple = generation < 0 && g.state == GroupState::Empty;
        if !simple {
            g.check_member(member_id, instance_id)?;
            if generation != g.generation {
                return Err(ResponseError::IllegalGeneration);
            }
            if g.state == GroupState::CompletingRebalance {
                return Err(ResponseError::RebalanceInProgress);
            }
            g.touch(member_id, Instant::now());
        }
        drop(g);
        self.store_offsets(log, group_id, offsets)
    }

    fn store_offsets(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        offsets: Vec<(String, i32, OffsetValue)>,
    ) -> Result<(), ResponseError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let records = offset_records(group_id, &offsets);
        log.append(self.partition_for(group_id), &records)?;
        let mut all = lock(&self.offsets);
        let entry = all.entry(group_id.to_string()).or_default();
        for (t, p, v) in offsets {
            entry.insert((t, p), v);
        }
        Ok(())
    }

    /// Committed offsets of a group: for the given (topic, partitions), or all when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> TopicOffsets {
        let all = lock(&self.offsets);
        let committed = all.get(group_id);
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let ps = partitions
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                committed.and_then(|c| c.get(&(topic.clone(), p))).cloned(),
                            )
                        })
                        .collect();
                    (topic, ps)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>)>> =
                    BTreeMap::new();
                for ((t, p), v) in committed.into_iter().flatten() {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push((*p, Some(v.clone())));
                }
                by_topic.into_iter().collect()
            }
        }
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.group(group_id)?;
        let g = lock(&group);
        let protocol = g.protocol_name.clone().unwrap_or_default();
        // Kafka shows member metadata and assignments only once the group is Stable.
        let stable = g.state == GroupState::Stable;
        let members = g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default()
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable { protocol } else { String::new() },
            members,
        })
    }

    /// (group id, protocol type, state) of every group this broker coordinates.
    pub fn list(&self, log: &dyn OffsetsLog) -> Vec<(String, String, GroupState)> {
        let groups: Vec<(String, Arc<Mutex<Group>>)> = lock(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<_> = groups
            .into_iter()
            .filter(|(id, _)| log.is_leader(self.partition_for(id)))
            .map(|(id, g)| {
                let g = lock(&g);
                (id, g.protocol_type.clone().unwrap_or_default(), g.state)
            })
            .filter(|(_, _, s)| *s != GroupState::Dead)
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// DeleteGroups for one group: only when it has no members.
    pub fn delete_group(&self, log: &dyn OffsetsLog, group_id: &str) -> Result<(), ResponseError> {
        let group = self.group(group_id);
        let has_offsets = lock(&self.offsets).contains_key(group_id);
        let Some(group) = group else {
            if !has_offsets {
                return Err(ResponseError::GroupIdNotFound);
            }
            return self.tombstone_group(log, group_id);
        };
        let mut g = lock(&group);
        match g.state {
            GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => {}
            _ => return Err(ResponseError::NonEmptyGroup),
        }
        self.tombstone_group(log, group_id)?;
        g.mark_dead(now_ms());
        drop(g);
        lock(&self.groups).remove(group_id);
        Ok(())
    }

    fn tombstone_group(&self, log: &dyn OffsetsLog, group_id: &str) -> Result<(), ResponseError> {
        let mut records: Vec<KeyValue> = vec![(offsets_topic::group_key(group_id), None)];
        if let Some(committed) = lock(&self.offsets).get(group_id) {
            records.extend(
                committed
                    .keys()
                    .map(|(t, p)| (offsets_topic::offset_key(group_id, t, *p), None)),
            );
        }
        log.append(self.partition_for(group_id), &records)?;
        lock(&self.offsets).remove(group_id);
        Ok(())
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    /// Returns a per-partition result.
    pub fn delete_offsets(
        &self,
        log: &dyn OffsetsLog,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, Option<ResponseError>)>, ResponseError> {
        let group = self.group(group_id);
        let has_offsets = lock(&self.offsets).contains_key(group_id);
        let subscribed: HashSet<String> = match &group {
            None if !has_offsets => return Err(ResponseError::GroupIdNotFound),
            None => HashSet::new(),
            Some(g) => {
                let g = lock(g);
                match g.state {
                    GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
                    GroupState::Empty => HashSet::new(),
                    _ => match g.subscribed_topics() {
                        Some(topics) => topics.into_iter().collect(),
                        // Not a consumer group: Kafka refuses while it has members.
                        None => return Err(ResponseError::NonEmptyGroup),
                    },
                }
            }
        };
        let mut results = Vec::with_capacity(partitions.len());
        let mut tombstones = Vec::new();
        for (topic, p) in partitions {
            if subscribed.contains(&topic) {
                results.push((topic, p, Some(ResponseError::GroupSubscribedToTopic)));
            } else {
                tombstones.push((offsets_topic::offset_key(group_id, &topic, p), None));
                results.push((topic, p, None));
            }
        }
        if !tombstones.is_empty() {
            log.append(self.partition_for(group_id), &tombstones)?;
            let mut all = lock(&self.offsets);
            if let Some(committed) = all.get_mut(group_id) {
                for (topic, p, e) in &results {
                    if e.is_none() {
                        committed.remove(&(topic.clone(), *p));
                    }
                }
                if committed.is_empty() {
                    all.remove(group_id);
                }
            }
        }
        Ok(results)
    }

    /// Runs every group's deadlines and expires offsets of long-empty groups.
    pub fn tick(&self, log: &dyn OffsetsLog) {
        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.groups).values().cloned().collect();
        let now = Instant::now();
        let now_ms = now_ms();
        for group in groups {
            let mut g = lock(&group);
            if g.tick(&self.cfg.group, now, now_ms) && g.state == GroupState::Empty {
                self.persist_group(log, &g);
            }
        }
        self.expire_offsets(log, now_ms);
    }

    /// Kafka 2.1+ semantics: an empty group's offsets expire `offsets.retention.minutes` after
    /// the group became empty (or after the commit, for groups that never had members).
    fn expire_offsets(&self, log: &dyn OffsetsLog, now_ms: i64) {
        let retention_ms = self.cfg.offsets_retention.as_millis() as i64;
        let candidates: Vec<String> = lock(&self.offsets).keys().cloned().collect();
        for group_id in candidates {
            if !log.is_leader(self.partition_for(&group_id)) {
                continue;
            }
            let empty_since = match self.group(&group_id) {
                Some(g) => {
                    let g = lock(&g);
                    if g.state != GroupState::Empty {
                        continue;
                    }
                    g.state_timestamp_ms
                }
                None => i64::MIN,
            };
            let expired: Vec<OffsetKey> = lock(&self.offsets)
                .get(&group_id)
                .into_iter()
                .flatten()
                .filter(|(_, v)| now_ms - v.commit_timestamp_ms.max(empty_since) > retention_ms)
                .map(|(k, _)| k.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            let tombstones: Vec<_> = expired
                .iter()
                .map(|(t, p)| (offsets_topic::offset_key(&group_id, t, *p), None))
                .collect();
            if log
                .append(self.partition_for(&group_id), &tombstones)
                .is_ok()
            {
                let mut all = lock(&self.offsets);
                if let Some(c) = all.get_mut(&group_id) {
                    for k in &expired {
                        c.remove(k);
                    }
                    if c.is_empty() {
                        all.remove(&group_id);
                    }
                }
                tracing::info!(group = %group_id, partitions = expired.len(), "expired committed offsets");
            }
        }
    }

    fn persist_group(&self, log: &dyn OffsetsLog, g: &Group) {
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let value = GroupValue {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation: g.generation,
            protocol: g.protocol_name.clone(),
            leader: g.leader.clone(),
            state_timestamp_ms: g.state_timestamp_ms,
            members: g
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        let record = (
            offsets_topic::group_key(&g.id),
            Some(offsets_topic::group_value(&value)),
        );
        if let Err(e) = log.append(self.partition_for(&g.id), &[record]) {
            tracing::warn!(group = %g.id, error = ?e, "could not persist group metadata");
        }
    }

    /// Shutting down: parked JoinGroup and SyncGroup requests are answered NOT_COORDINATOR
    /// now (as Kafka does when a coordinator unloads) instead of holding their connections
    /// open until the rebalance times out.
    pub fn shutdown(&self) {
        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.groups).values().cloned().collect();
        for group in groups {
            lock(&group).fail_waiters(ResponseError::NotCoordinator);
        }
    }

    /// (group, topic, partition, committed offset) of every commit, for lag metrics.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        lock(&self.offsets)
            .iter()
            .flat_map(|(g, c)| {
                c.iter()
                    .map(move |((t, p), v)| (g.clone(), t.clone(), *p, v.offset))
            })
            .collect()
    }
}

/// The `__consumer_offsets` records of a group's offset commits.
fn offset_records(group_id: &str, offsets: &[(String, i32, OffsetValue)]) -> Vec<KeyValue> {
    offsets
        .iter()
        .map(|(t, p, v)| {
            (
                offsets_topic::offset_key(group_id, t, *p),
                Some(offsets_topic::offset_value(v)),
            )
        })
        .collect()
}

fn restore_group(id: String, v: GroupValue, now: Instant) -> Group {
    let mut g = Group::new(id, v.state_timestamp_ms);
    g.generation = v.generation;
    g.protocol_type = Some(v.protocol_type).filter(|t| !t.is_empty());
    g.protocol_name = v.protocol.clone();
    g.leader = v.leader;
    let protocol = v.protocol.unwrap_or_default();
    for m in v.members {
        g.restore_member(
            m.member_id,
            m.instance_id,
            m.client_id,
            m.client_host,
            Duration::from_millis(m.session_timeout_ms.max(0) as u64),
            Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
            (protocol.clone(), m.subscription),
            m.assignment,
            now,
        );
    }
    g.state = if g.members.is_empty() {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory `__consumer_offsets`.
    #[derive(Default)]
    struct MemLog {
        records: Mutex<HashMap<i32, Vec<Replayed>>>,
    }

    impl MemLog {
        fn push(&self, partition: i32, records: &[KeyValue], producer_id: Option<i64>) {
            lock(&self.records)
                .entry(partition)
                .or_default()
                .extend(records.iter().map(|(key, value)| Replayed::Record {
                    key: key.clone(),
                    value: value.clone(),
                    producer_id,
                }));
        }
    }

    impl OffsetsLog for MemLog {
        fn append(&self, partition: i32, records: &[KeyValue]) -> Result<(), ResponseError> {
            self.push(partition, records, None);
            Ok(())
        }
        fn append_transactional(
            &self,
            partition: i32,
            producer: (i64, i16),
            records: &[KeyValue],
        ) -> Result<(), ResponseError> {
            self.push(partition, records, Some(producer.0));
            Ok(())
        }
        fn read_all(&self, partition: i32) -> Result<Vec<Replayed>, ResponseError> {
            Ok(lock(&self.records)
                .get(&partition)
                .cloned()
                .unwrap_or_default())
        }
        fn is_leader(&self, _: i32) -> bool {
            true
        }
    }

    fn offset(o: i64) -> OffsetValue {
        OffsetValue {
            offset: o,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: now_ms(),
        }
    }

    fn committed(c: &GroupCoordinator, group: &str, partition: i32) -> Option<i64> {
        c.fetch_offsets(group, Some(vec![("t".into(), vec![partition])]))[0].1[0]
            .1
            .as_ref()
            .map(|v| v.offset)
    }

    #[test]
    fn transactional_offsets_count_only_once_committed_also_after_a_reload() {
        let log = MemLog::default();
        let c = GroupCoordinator::new(CoordinatorConfig::default());
        let p = c.partition_for("g");
        c.commit_offsets(&log, "g", -1, "", None, vec![("t".into(), 0, offset(1))])
            .unwrap();
        for (pid, o) in [(10, 5), (11, 6), (12, 7)] {
            c.commit_txn_offsets(
                &log,
                "g",
                (pid, 0),
                -1,
                "",
                None,
                vec![("t".into(), 0, offset(o))],
            )
            .unwrap();
        }
        assert_eq!(
            committed(&c, "g", 0),
            Some(1),
            "pending offsets are not committed"
        );
        assert!(c.has_pending_offsets("g", "t", 0));
        assert!(!c.has_pending_offsets("g", "t", 1));

        // Producer 10 commits, 11 aborts, 12 stays open.
        let marker = |pid, commit| {
            lock(&log.records)
                .entry(p)
                .or_default()
                .push(Replayed::Marker {
                    producer_id: pid,
                    commit,
                })
        };
        marker(10, true);
        c.complete_txn(10, true, p);
        marker(11, false);
        c.complete_txn(11, false, p);
        assert_eq!(committed(&c, "g", 0), Some(5));
        assert!(
            c.has_pending_offsets("g", "t", 0),
            "producer 12 is still open"
        );

        let reloaded = GroupCoordinator::new(CoordinatorConfig::default());
        reloaded.load_partition(&log, p).unwrap();
        assert_eq!(committed(&reloaded, "g", 0), Some(5));
        assert!(reloaded.has_pending_offsets("g", "t", 0));
        marker(12, true);
        reloaded.complete_txn(12, true, p);
        assert_eq!(committed(&reloaded, "g", 0), Some(7));
        assert!(!reloaded.has_pending_offsets("g", "t", 0));
    }

    #[test]
    fn simple_commits_survive_a_reload_and_deletes_are_tombstoned() {
        let log = MemLog::default();
        let c = GroupCoordinator::new(CoordinatorConfig::default());
        c.commit_offsets(
            &log,
            "g",
            -1,
            "",
            None,
            vec![("t".into(), 0, offset(5)), ("t".into(), 1, offset(7))],
        )
        .unwrap();
        c.commit_offsets(&log, "g", -1, "", None, vec![("t".into(), 0, offset(9))])
            .unwrap();

        let reloaded = GroupCoordinator::new(CoordinatorConfig::default());
        reloaded.load_partition(&log, c.partition_for("g")).unwrap();
        let got = reloaded.fetch_offsets("g", Some(vec![("t".into(), vec![0, 1, 2])]));
        let offsets: Vec<Option<i64>> = got[0]
            .1
            .iter()
            .map(|(_, v)| v.as_ref().map(|v| v.offset))
            .collect();
        assert_eq!(offsets, [Some(9), Some(7), None]);

        reloaded.delete_group(&log, "g").unwrap();
        let again = GroupCoordinator::new(CoordinatorConfig::default());
        again.load_partition(&log, c.partition_for("g")).unwrap();
        assert!(again.fetch_offsets("g", None).is_empty());
        assert_eq!(
            again.delete_group(&log, "g"),
            Err(ResponseError::GroupIdNotFound)
        );
    }

    #[test]
    fn offsets_of_empty_groups_expire_after_the_retention_and_stay_expired_after_reload() {
        let log = MemLog::default();
        let cfg = CoordinatorConfig {
            offsets_retention: Duration::from_secs(60),
            ..CoordinatorConfig::default()
        };
        let c = GroupCoordinator::new(cfg.clone());
        let old = OffsetValue {
            commit_timestamp_ms: now_ms() - 120_000,
            ..offset(5)
        };
        c.commit_offsets(&log, "stale", -1, "", None, vec![("t".into(), 0, old)])
            .unwrap();
        c.commit_offsets(
            &log,
            "fresh",
            -1,
            "",
            None,
            vec![("t".into(), 0, offset(6))],
        )
        .unwrap();
        // The simple-commit groups were created Empty "now": expiry counts from the later of
        // the commit and the group becoming empty, so age the stale group's state too.
        lock(&c.group("stale").unwrap()).state_timestamp_ms = now_ms() - 120_000;
        c.tick(&log);
        assert!(
            c.fetch_offsets("stale", None).is_empty(),
            "older than offsets.retention.minutes"
        );
        assert_eq!(
            c.fetch_offsets("fresh", None)[0].1[0]
                .1
                .as_ref()
                .map(|v| v.offset),
            Some(6)
        );

        let reloaded = GroupCoordinator::new(cfg);
        reloaded
            .load_partition(&log, c.partition_for("stale"))
            .unwrap();
        reloaded
            .load_partition(&log, c.partition_for("fresh"))
            .unwrap();
        assert!(
            reloaded.fetch_offsets("stale", None).is_empty(),
            "the expiry was written as tombstones"
        );
        assert_eq!(reloaded.fetch_offsets("fresh", None).len(), 1);
    }

    #[test]
    fn commits_from_unknown_generations_are_refused() {
        let log = MemLog::default();
        let c = GroupCoordinator::new(CoordinatorConfig::default());
        assert_eq!(
            c.commit_offsets(&log, "g", 3, "m", None, vec![("t".into(), 0, offset(1))]),
            Err(ResponseError::IllegalGeneration)
        );
    }
}
