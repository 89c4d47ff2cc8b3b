//! sluice-raft: the replicated source of truth for cluster metadata (a KRaft-style quorum).
//!
//! What it is for: brokers, topics, partitions (replicas, ISR, leader, epochs), configs and
//! producer-id blocks, replicated by Raft over the voters' controller listeners; the
//! controller logic that decides changes runs on the Raft leader. What it is not for: record
//! data (storage/) or Kafka requests (broker/). Main types: [`MetadataNode`] (start, read
//! [`MetadataImage`]s, send controller requests from any node), [`MetadataConfig`],
//! [`ControllerError`]. Nothing public names openraft types.
//!
//! Local mode (no voters configured) is a single-voter quorum bootstrapped on the first start
//! of an empty data dir. With voters configured, a node bootstraps only when told to
//! (`bootstrap`); otherwise it waits to be contacted by a leader.
//!
//! # Why openraft 0.9.25, pinned exactly
//!
//! 0.9.x is openraft's stable, documented line; 0.9.25 is its latest release. It needs the
//! `storage-v2` feature for the split log store / state machine API used here and has no
//! leader-lease reads (we do not need them: reads are served from the applied image, and the
//! controller checks leadership through Raft before deciding). 0.10 is where new work
//! happens, but it is an alpha whose APIs still change, and its "commit without a real
//! quorum" bug (#1802) is fixed only with `quorum-set` >= 0.2.3 in the lock file. The exact
//! pin keeps a `cargo update` from changing consensus code under us; moving to 0.10 is a
//! deliberate change with the storage conformance suite re-run.
//!
//! # Layout (as in openraft's raft-kv examples)
//!
//! - `types.rs`: the openraft type configuration.
//! - `records.rs`: metadata records; one Raft entry is a batch applied atomically.
//! - `state.rs`: the replicated state and how records change it.
//! - `log_store.rs`: the durable Raft log and vote (fsync before acknowledging).
//! - `state_machine.rs`: applying entries, publishing images, snapshots.
//! - `network.rs`: the TCP controller transport (Raft RPCs and forwarded requests).
//! - `controller.rs`: validation and decisions (placement, elections, fencing, CAS).
//! - `identity.rs`: node id and cluster id under `<data_dir>/metadata/`.
//! - `node.rs`: the running node: startup, leader-side execution, forwarding, sessions.
//!
//! # Observers
//!
//! A node started with `voters` configured but whose `node_id` is not among them is an
//! observer (KRaft's broker-only role): it asks the voters to add it as a Raft learner,
//! receives committed entries (or a snapshot when it is far behind), builds the same images,
//! never votes, and forwards its controller requests to the leader. Its `controller_listen`
//! must be an address the voters can reach (it is what they dial).
//!
//! # Membership
//!
//! Start every voter with the same static voter list (`voters`) and exactly one of them with
//! `bootstrap` on its first start; the others wait to be contacted. To add a voter, start it
//! with the new voter list and without `bootstrap`, then call [`MetadataNode::add_voter`] on
//! any node (it catches up as a learner, then votes). To retire one, call
//! [`MetadataNode::remove_voter`] (one at a time, keeping a majority) before stopping it. A
//! node that has a node identity but lost its log refuses to start: a Raft node id is never
//! reused with an empty log; wipe its whole `metadata/` directory and give it a new node id.
//!
//! # Tests
//!
//! - unit tests beside the code: controller decisions (`controller/tests.rs`), log recovery,
//!   identity, and local mode end to end (`tests.rs`);
//! - openraft's storage conformance suite on our stores (`conformance.rs`);
//! - `tests/cluster.rs`: three voters over TCP through fault-injecting proxies (leader kill,
//!   restart, partition, snapshot install, adding and removing voters);
//! - `tests/faults.rs`: a seeded fault schedule on real TCP (`SLUICE_RAFT_SEEDS`);
//! - `tests/sim.rs`: the deterministic turmoil simulation (`--features sim`,
//!   `SLUICE_SIM_SEEDS=1-100`), where a seed replays exactly;
//! - `tests/measure.rs` (ignored): commit rate and election time.
//!
//! # Known limits
//!
//! openraft 0.9 has no pre-vote: a voter cut off for a while raises its term, and when it
//! comes back the leader steps down once (a new election, ~1-2 s). Observers receive the
//! log pushed by the leader (Raft learners), not by a long-poll fetch; an observer that
//! goes away for good stays a learner the leader keeps retrying until it is removed with
//! [`MetadataNode::remove_voter`].

mod controller;
mod identity;
mod log_store;
mod network;
mod node;
mod records;
mod rt;
#[cfg(feature = "sim")]
pub mod sim;
mod state;
mod state_machine;
mod storage_util;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::node::{ControllerRequest, ControllerResponse, NodeInner};

/// Errors from controller operations; each maps to one Kafka error code (see variants).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    /// TOPIC_ALREADY_EXISTS (36)
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION (3) / UNKNOWN_TOPIC_ID (100)
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// INVALID_TOPIC_EXCEPTION (17): illegal name (chars, length, '.'/'..')
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS (37)
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR (38)
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// INVALID_REPLICA_ASSIGNMENT (39)
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_CONFIG (40)
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// NOT_CONTROLLER (41): retriable; the caller may retry after the leader is known.
    #[error("not the controller")]
    NotController,
    /// STALE_BROKER_EPOCH (77)
    #[error("stale broker epoch")]
    StaleBrokerEpoch,
    /// INVALID_UPDATE_VERSION (108): partition-epoch compare-and-set failed.
    #[error("stale partition epoch")]
    StalePartitionEpoch,
    /// BROKER_ID_NOT_REGISTERED (102) / DUPLICATE_BROKER_REGISTRATION (101)
    #[error("broker registration: {0}")]
    BrokerRegistration(String),
    /// REQUEST_TIMED_OUT (7): retriable.
    #[error("metadata quorum timed out")]
    Timeout,
    /// UNKNOWN_SERVER_ERROR (-1) with a log line.
    #[error("internal metadata error: {0}")]
    Internal(String),
}

/// How to run this node's part of the metadata quorum.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    pub node_id: i32,
    /// Raft log, vote, snapshots and the cluster identity live under `data_dir/metadata/`.
    pub data_dir: PathBuf,
    /// Where this node listens for Raft RPCs from other voters (controller listener).
    pub controller_listen: Option<SocketAddr>,
    /// Static voter set (node id → controller address). Empty: local single-voter mode.
    pub voters: BTreeMap<i32, SocketAddr>,
    /// Bootstrap a new cluster on an empty data dir. Local mode always may; with voters
    /// configured only when this is set.
    pub bootstrap: bool,
    /// Controller defaults for CreateTopics with -1 partitions / replication factor.
    pub default_num_partitions: i32,
    pub default_replication_factor: i16,
    /// A broker that misses heartbeats for this long is fenced.
    pub broker_session_timeout: Duration,
}

/// A listener a broker advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 = PLAINTEXT).
    pub security_protocol: i16,
}

/// What a broker sends to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
}

/// The controller's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub is_fenced: bool,
    pub is_caught_up: bool,
    pub should_shut_down: bool,
}

/// A topic to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: controller default.
    pub num_partitions: i32,
    /// -1: controller default.
    pub replication_factor: i16,
    /// Explicit assignment (partition index → replica broker ids); empty: controller places.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    /// Already validated by the broker (names and values).
    pub configs: BTreeMap<String, String>,
}

/// A topic the controller created (or would create, with validate_only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// One incremental config change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

/// A block of producer ids handed to a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first_producer_id: i64,
    pub size: i32,
}

/// A broker as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub id: i32,
    pub incarnation_id: Uuid,
    /// The Raft log index of its registration.
    pub epoch: i64,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

/// One partition's replica state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Only the configs set on the topic (dynamic topic configs); defaults are the broker's.
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

/// An immutable snapshot of committed cluster metadata. Handlers read it; nobody locks the
/// quorum to answer a request.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Raft log index of the last applied entry.
    pub offset: u64,
    pub cluster_id: String,
    /// Current Raft leader (the active controller), if known.
    pub controller_id: Option<i32>,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// Cluster-wide dynamic configs.
    pub cluster_configs: BTreeMap<String, String>,
}

/// This node's view of the quorum, for health checks, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: i32,
    /// The Raft term this node is in.
    pub term: u64,
    /// The leader this node knows of in `term`.
    pub leader_id: Option<i32>,
    /// This node leads `term`.
    pub is_leader: bool,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
    /// Index of the last entry applied to this node's image.
    pub last_applied_index: u64,
}

/// This process's handle on the metadata quorum: a voter (and controller when it leads) or
/// an observer. Cheap to clone.
///
/// Controller methods may be called on any node: a non-leader forwards the request to the
/// leader over the controller transport. They never panic; a request that cannot finish in
/// time (no leader, partitioned away) returns [`ControllerError::Timeout`].
#[derive(Clone)]
pub struct MetadataNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for MetadataNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataNode")
            .field("node_id", &self.inner.node_id())
            .finish()
    }
}

fn unexpected(resp: ControllerResponse) -> ControllerError {
    match resp {
        ControllerResponse::Failed(e) => e,
        other => ControllerError::Internal(format!("unexpected controller response {other:?}")),
    }
}

impl MetadataNode {
    /// Starts (or recovers) this node; returns once the local image is loaded. In local mode
    /// it bootstraps a single-voter cluster on an empty data dir and waits for leadership.
    pub async fn start(config: MetadataConfig) -> Result<MetadataNode, ControllerError> {
        Ok(MetadataNode {
            inner: NodeInner::start(config).await?,
        })
    }

    pub fn node_id(&self) -> i32 {
        self.inner.node_id()
    }

    /// The cluster id committed in the metadata log (before it is known on a joining voter:
    /// the one in `meta.properties`, possibly empty).
    pub fn cluster_id(&self) -> String {
        self.inner.cluster_id()
    }

    /// The latest committed image known to this node.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image()
    }

    /// Changes to the image, newest only.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
        self.inner.watch()
    }

    /// Registers a broker; returns its broker epoch (the registration's log index).
    pub async fn register_broker(
        &self,
        registration: BrokerRegistration,
    ) -> Result<i64, ControllerError> {
        match self
            .inner
            .call(ControllerRequest::RegisterBroker(registration))
            .await
        {
            ControllerResponse::BrokerEpoch(r) => r,
            other => Err(unexpected(other)),
        }
    }

    pub async fn broker_heartbeat(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        want_shut_down: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        let req = ControllerRequest::Heartbeat {
            broker_id,
            broker_epoch,
            want_shut_down,
        };
        match self.inner.call(req).await {
            ControllerResponse::Heartbeat(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Creates topics (one result per input, in order). Validates names, counts, placement.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<CreatedTopic, ControllerError>> {
        let n = topics.len();
        match self
            .inner
            .call(ControllerRequest::CreateTopics {
                topics,
                validate_only,
            })
            .await
        {
            ControllerResponse::CreateTopics(r) if r.len() == n => r,
            other => vec![Err(unexpected(other)); n],
        }
    }

    /// Deletes topics by name (one result per input, in order).
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<Result<Uuid, ControllerError>> {
        let n = names.len();
        match self
            .inner
            .call(ControllerRequest::DeleteTopics { names })
            .await
        {
            ControllerResponse::DeleteTopics(r) if r.len() == n => r,
            other => vec![Err(unexpected(other)); n],
        }
    }

    /// Raises a topic's partition count to `total_count`, optionally with explicit
    /// assignments for the new partitions.
    pub async fn create_partitions(
        &self,
        topic: String,
        total_count: i32,
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let req = ControllerRequest::CreatePartitions {
            topic,
            total_count,
            assignments,
            validate_only,
        };
        match self.inner.call(req).await {
            ControllerResponse::Done(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Applies config changes to a topic atomically (values already validated by the broker).
    pub async fn alter_topic_configs(
        &self,
        topic: String,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        match self
            .inner
            .call(ControllerRequest::AlterTopicConfigs {
                topic,
                ops,
                validate_only,
            })
            .await
        {
            ControllerResponse::Done(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Applies config changes to the cluster-wide dynamic configs.
    pub async fn alter_cluster_configs(
        &self,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        match self
            .inner
            .call(ControllerRequest::AlterClusterConfigs { ops, validate_only })
            .await
        {
            ControllerResponse::Done(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// ISR change with a partition-epoch compare-and-set (replication, later issue).
    #[allow(clippy::too_many_arguments)]
    pub async fn alter_partition_isr(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    ) -> Result<PartitionImage, ControllerError> {
        let req = ControllerRequest::AlterPartitionIsr {
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
        };
        match self.inner.call(req).await {
            ControllerResponse::Partition(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Hands the broker a block of 1000 producer ids.
    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<ProducerIdBlock, ControllerError> {
        match self
            .inner
            .call(ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            })
            .await
        {
            ControllerResponse::ProducerIds(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Adds a voter to the quorum. Start the new node first with the full new voter list
    /// and without `bootstrap` (it waits for a leader); this call makes it a learner, waits
    /// until it has caught up, then makes it a voter. Callable on any node.
    pub async fn add_voter(
        &self,
        node_id: i32,
        controller_addr: SocketAddr,
    ) -> Result<(), ControllerError> {
        let req = ControllerRequest::AddVoter {
            node_id,
            controller_addr: controller_addr.to_string(),
        };
        match self.inner.call(req).await {
            ControllerResponse::Done(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Removes a voter from the quorum (for a node being retired or replaced), or an observer
    /// that is gone for good (the leader stops replicating to it). Remove one voter at a time,
    /// and only while the remaining voters can still form a majority. Unknown ids: no-op.
    pub async fn remove_voter(&self, node_id: i32) -> Result<(), ControllerError> {
        match self
            .inner
            .call(ControllerRequest::RemoveVoter { node_id })
            .await
        {
            ControllerResponse::Done(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// This node's current view of the quorum (term, leader, log and apply positions).
    pub fn quorum_status(&self) -> QuorumStatus {
        self.inner.quorum_status()
    }

    /// Snapshots this node's applied metadata now and purges its Raft log up to the snapshot;
    /// returns the snapshot's log index. For operators and tests: snapshots are otherwise
    /// taken every 1024 entries. A voter that lags behind the purged log is sent the snapshot.
    pub async fn snapshot_now(&self) -> Result<u64, ControllerError> {
        self.inner.snapshot_now().await
    }

    /// Stops Raft and closes storage cleanly.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.inner.shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod conformance;
// Real TCP listeners and the blocking pool: not under the simulation build.
#[cfg(all(test, not(feature = "sim")))]
mod tests;
