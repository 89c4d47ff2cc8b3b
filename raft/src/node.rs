//! A running metadata node: owns the Raft instance, runs controller requests on the leader
//! (or forwards them to it), tracks broker sessions and fences the expired ones, and keeps
//! the published image's controller id current.
//!
//! Controller requests on the leader run one at a time (the `session` mutex) against state
//! that has applied every committed entry: the leader has applied an entry of its own term
//! (or waited for `ensure_linearizable`), and each write returns only once applied. So a
//! decision never rests on stale metadata, like Kafka's single-threaded controller.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::controller::{self, Defaults};
use crate::identity::{self, Identity};
use crate::log_store::LogStore;
use crate::network::{self, NetworkFactory, PeerBook};
use crate::records::{MetadataBatch, MetadataRecord};
use crate::state::MetadataState;
use crate::state_machine::{ImagePublisher, StateMachineStore};
use crate::storage_util::lock;
use crate::types::{kafka_id, raft_id, NodeId, Raft};
use crate::{
    BrokerRegistration, ConfigOp, ControllerError, CreatedTopic, HeartbeatReply, MetadataConfig,
    MetadataImage, NewTopic, PartitionImage, ProducerIdBlock,
};

/// How long a controller request may take end to end (including finding the leader).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `start` waits for a local-mode node to lead and load its image.
const LOCAL_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `start` waits for a voter to catch up before returning anyway.
const VOTER_READY_TIMEOUT: Duration = Duration::from_secs(3);
/// The leader checks broker sessions this often.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// A controller request as it travels to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ControllerRequest {
    RegisterBroker(BrokerRegistration),
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
        want_shut_down: bool,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topic: String,
        total_count: i32,
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
    },
    AlterTopicConfigs {
        topic: String,
        ops: Vec<ConfigOp>,
        validate_only: bool,
    },
    AlterClusterConfigs {
        ops: Vec<ConfigOp>,
        validate_only: bool,
    },
    AlterPartitionIsr {
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    },
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// An observer asks to receive the metadata log (it becomes a Raft learner).
    AddObserver {
        node_id: i32,
        controller_addr: String,
    },
    /// Membership: add a voter (it catches up as a learner first) or remove one.
    AddVoter {
        node_id: i32,
        controller_addr: String,
    },
    RemoveVoter {
        node_id: i32,
    },
}

/// The leader's answer; `Failed` when the whole request could not run (not the leader,
/// timeout, shut down).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ControllerResponse {
    BrokerEpoch(Result<i64, ControllerError>),
    Heartbeat(Result<HeartbeatReply, ControllerError>),
    CreateTopics(Vec<Result<CreatedTopic, ControllerError>>),
    DeleteTopics(Vec<Result<Uuid, ControllerError>>),
    Done(Result<(), ControllerError>),
    Partition(Result<PartitionImage, ControllerError>),
    ProducerIds(Result<ProducerIdBlock, ControllerError>),
    Failed(ControllerError),
}

/// The leader's in-memory view of broker sessions (not replicated: a new controller gives
/// every broker a fresh session, Kafka's grace period after a controller change).
#[derive(Default)]
struct Session {
    term: u64,
    last_heartbeat: HashMap<i32, Instant>,
}

pub(crate) struct NodeInner {
    node_id: i32,
    raft: Raft,
    sm: StateMachineStore,
    publisher: Arc<ImagePublisher>,
    meta_dir: PathBuf,
    identity: Mutex<Identity>,
    defaults: Defaults,
    session_timeout: Duration,
    session: tokio::sync::Mutex<Session>,
    peers: PeerBook,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
    /// Set until this node's log holds an entry, when it started as a fresh voter.
    fresh_voter: AtomicBool,
}

fn internal(e: impl std::fmt::Display) -> ControllerError {
    ControllerError::Internal(e.to_string())
}

fn raft_config() -> Result<Config, ControllerError> {
    let config = Config {
        cluster_name: "sluice-metadata".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1024),
        max_in_snapshot_log_to_keep: 256,
        ..Default::default()
    };
    config.validate().map_err(internal)
}

impl NodeInner {
    pub async fn start(config: MetadataConfig) -> Result<Arc<NodeInner>, ControllerError> {
        let local = config.voters.is_empty();
        if config.node_id < 0 {
            return Err(ControllerError::Internal(format!(
                "invalid node id {}",
                config.node_id
            )));
        }
        // A node with voters configured but not among them is an observer: a Raft learner
        // that receives committed metadata and forwards controller requests.
        let observer = !local && !config.voters.contains_key(&config.node_id);
        if observer && config.bootstrap {
            return Err(ControllerError::Internal(format!(
                "node {} is not among the voters {:?} and so cannot bootstrap",
                config.node_id,
                config.voters.keys().collect::<Vec<_>>()
            )));
        }
        if !local && config.controller_listen.is_none() {
            return Err(ControllerError::Internal(
                "a voter or observer needs a controller listener".into(),
            ));
        }
        let may_bootstrap = local || config.bootstrap;

        let meta_dir = config.data_dir.join("metadata");
        std::fs::create_dir_all(&meta_dir).map_err(internal)?;
        crate::storage_util::sync_dir(&config.data_dir).map_err(internal)?;
        let log_dir = meta_dir.join("log");
        let loaded = identity::load(&meta_dir).map_err(internal)?;
        // A voter starting on a data dir it has never seen, without bootstrapping: either a
        // new cluster forming or a voter whose disk was wiped. It must not hand out votes it
        // may already have given before the wipe (see `refuses_vote`).
        let fresh_voter = loaded.is_none() && !local && !observer && !config.bootstrap;
        let identity = match loaded {
            Some(id) if id.node_id != config.node_id => {
                return Err(ControllerError::Internal(format!(
                    "{} belongs to node {}, not node {}",
                    meta_dir.display(),
                    id.node_id,
                    config.node_id
                )));
            }
            Some(_) if !log_dir.exists() => {
                // The identity outlived its log: starting would reuse a Raft node id with an
                // empty log, which can elect two leaders or lose committed entries.
                return Err(ControllerError::Internal(format!(
                    "{} has a node identity but no metadata log; refusing to reuse node id {} with an empty log",
                    meta_dir.display(),
                    config.node_id
                )));
            }
            Some(id) => id,
            None => {
                let id = Identity {
                    node_id: config.node_id,
                    cluster_id: if may_bootstrap {
                        identity::new_cluster_id()
                    } else {
                        String::new()
                    },
                };
                identity::store(&meta_dir, &id).map_err(internal)?;
                id
            }
        };

        // Bind before Raft starts so a busy port fails the start without leaving Raft running.
        let listener = match config.controller_listen {
            Some(addr) => Some(crate::rt::TcpListener::bind(addr).await.map_err(|e| {
                ControllerError::Internal(format!("controller listener {addr}: {e}"))
            })?),
            None => None,
        };
        let publisher = ImagePublisher::new();
        let log = LogStore::open(&log_dir).map_err(internal)?;
        let sm = StateMachineStore::open(&meta_dir.join("state"), publisher.clone())
            .map_err(internal)?;
        let last_index_at_start = log.last_index();
        let peers = PeerBook::new(config.voters.clone());
        let me = raft_id(config.node_id);
        let raft = Raft::new(
            me,
            Arc::new(raft_config()?),
            NetworkFactory {
                peers: peers.clone(),
            },
            log,
            sm.clone(),
        )
        .await
        .map_err(internal)?;

        let node = Arc::new(NodeInner {
            node_id: config.node_id,
            raft: raft.clone(),
            sm,
            publisher,
            meta_dir,
            identity: Mutex::new(identity),
            defaults: Defaults {
                num_partitions: config.default_num_partitions,
                replication_factor: config.default_replication_factor,
            },
            session_timeout: config.broker_session_timeout,
            session: tokio::sync::Mutex::new(Session::default()),
            peers,
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            fresh_voter: AtomicBool::new(fresh_voter),
        });

        if let Some(listener) = listener {
            node.spawn(network::serve(listener, node.clone()));
        }
        node.spawn(watch_leader(node.clone()));
        node.spawn(tick_loop(node.clone()));
        if observer {
            if let Some(addr) = config.controller_listen {
                node.spawn(join_as_observer(
                    node.clone(),
                    config.voters.clone(),
                    addr.to_string(),
                ));
            }
        }

        if let Err(e) = node.bootstrap_if_asked(&config).await {
            node.shutdown().await;
            return Err(e);
        }

        let (deadline, must) = if local {
            (Instant::now() + LOCAL_READY_TIMEOUT, true)
        } else {
            (Instant::now() + VOTER_READY_TIMEOUT, false)
        };
        if let Err(e) = node.wait_ready(local, last_index_at_start, deadline).await {
            if must {
                node.shutdown().await;
                return Err(e);
            }
            tracing::info!(
                "metadata voter started before catching up; it catches up in the background"
            );
        }
        Ok(node)
    }

    /// Initializes Raft membership on a pristine node when this node may bootstrap: always
    /// in local mode, with voters only when `bootstrap` is set. Never silently otherwise.
    async fn bootstrap_if_asked(&self, config: &MetadataConfig) -> Result<(), ControllerError> {
        let raft = &self.raft;
        let me = raft_id(config.node_id);
        let local = config.voters.is_empty();
        if raft.is_initialized().await.map_err(internal)? {
            return Ok(());
        }
        if local {
            let addr = config
                .controller_listen
                .map(|a| a.to_string())
                .unwrap_or_default();
            let members = BTreeMap::from([(me, BasicNode { addr })]);
            raft.initialize(members).await.map_err(internal)?;
            tracing::info!(
                node_id = config.node_id,
                "bootstrapped a single-voter metadata quorum"
            );
        } else if config.bootstrap {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| {
                    (
                        raft_id(*id),
                        BasicNode {
                            addr: addr.to_string(),
                        },
                    )
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(voters = ?config.voters.keys(), "bootstrapped the metadata quorum")
                }
                // Another voter bootstrapped first and reached us: nothing to do.
                Err(RaftError::APIError(e)) => {
                    tracing::info!(error = %e, "metadata quorum already initialized")
                }
                Err(e) => return Err(internal(e)),
            }
        } else {
            tracing::info!(
                node_id = config.node_id,
                "empty metadata log and no bootstrap: waiting for a leader of the configured voters"
            );
        }
        Ok(())
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        lock(&self.tasks).push(tokio::spawn(f));
    }

    /// Waits until a leader is known and this node applied its log as of start (local mode:
    /// until it leads and the cluster id is committed).
    async fn wait_ready(
        &self,
        local: bool,
        last_index: u64,
        deadline: Instant,
    ) -> Result<(), ControllerError> {
        let mut metrics = self.raft.metrics();
        loop {
            let (leader, applied) = {
                let m = metrics.borrow();
                (
                    m.current_leader,
                    m.last_applied.map(|l| l.index).unwrap_or(0),
                )
            };
            let ready = if local {
                leader == Some(raft_id(self.node_id))
                    && applied >= last_index
                    && !self.sm.state().cluster_id.is_empty()
            } else {
                leader.is_some() && applied >= last_index && !self.sm.state().cluster_id.is_empty()
            };
            if ready {
                return Ok(());
            }
            if local && leader == Some(raft_id(self.node_id)) {
                self.tick().await;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ControllerError::Timeout);
            }
            let _ = tokio::time::timeout(
                (deadline - now).min(Duration::from_millis(50)),
                metrics.changed(),
            )
            .await;
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn cluster_id(&self) -> String {
        let from_log = self.sm.state().cluster_id.clone();
        if from_log.is_empty() {
            lock(&self.identity).cluster_id.clone()
        } else {
            from_log
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.publisher.current()
    }

    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
        self.publisher.subscribe()
    }

    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata raft shutdown");
        }
    }

    pub fn quorum_status(&self) -> crate::QuorumStatus {
        let m = self.raft.metrics();
        let m = m.borrow();
        crate::QuorumStatus {
            node_id: self.node_id,
            term: m.current_term,
            leader_id: m.current_leader.map(kafka_id),
            is_leader: m.state == openraft::ServerState::Leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        }
    }

    /// Snapshots the applied state now and purges the log up to the snapshot.
    pub async fn snapshot_now(&self) -> Result<u64, ControllerError> {
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        self.raft.trigger().snapshot().await.map_err(internal)?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut metrics = self.raft.metrics();
        let snapshot = loop {
            let taken = metrics
                .borrow_and_update()
                .snapshot
                .map(|l| l.index)
                .unwrap_or(0);
            if taken >= applied {
                break taken;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ControllerError::Timeout);
            }
            let _ = tokio::time::timeout(deadline - now, metrics.changed()).await;
        };
        self.raft
            .trigger()
            .purge_log(snapshot)
            .await
            .map_err(internal)?;
        loop {
            let purged = metrics
                .borrow_and_update()
                .purged
                .map(|l| l.index)
                .unwrap_or(0);
            if purged >= snapshot {
                return Ok(snapshot);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ControllerError::Timeout);
            }
            let _ = tokio::time::timeout(deadline - now, metrics.changed()).await;
        }
    }

    /// A fresh voter (empty log, no identity on disk) only votes for candidates of a cluster
    /// that is still forming (their log holds at most the initial membership, index 0).
    /// A candidate with a longer log belongs to an established cluster, in which this node id
    /// may have voted before its disk was wiped; voting again could elect two leaders in one
    /// term. Such a node counts as lost until a leader has replicated entries to it.
    pub fn refuses_vote(&self, req: &openraft::raft::VoteRequest<NodeId>) -> bool {
        if !self.fresh_voter.load(Ordering::SeqCst) {
            return false;
        }
        if self
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .is_some_and(|i| i > 0)
        {
            self.fresh_voter.store(false, Ordering::SeqCst);
            return false;
        }
        let refuse = req.last_log_id.is_some_and(|l| l.index > 0);
        if refuse {
            tracing::warn!(
                candidate = %req.vote,
                "refusing a vote: this voter's log is empty but the candidate's cluster is established \
                 (was this node's data dir wiped? give it a new node id and use add_voter)"
            );
        }
        refuse
    }

    /// This node's current vote (what a refused vote request is answered with).
    pub fn current_vote(&self) -> openraft::Vote<NodeId> {
        self.raft.metrics().borrow().vote
    }

    /// Runs a controller request wherever the leader is: here, or forwarded to it. Retries
    /// while the leader is unknown or moving, up to [`REQUEST_TIMEOUT`].
    pub async fn call(&self, req: ControllerRequest) -> ControllerResponse {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let me = raft_id(self.node_id);
        let mut metrics = self.raft.metrics();
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return ControllerResponse::Failed(ControllerError::Internal(
                    "metadata node is shut down".into(),
                ));
            }
            let (leader, leader_node) = {
                let m = metrics.borrow_and_update();
                let node = m
                    .current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                (m.current_leader, node)
            };
            match leader {
                Some(l) if l == me => match self.execute(&req).await {
                    Err(ControllerError::NotController) => {}
                    Err(e) => return ControllerResponse::Failed(e),
                    Ok(resp) => return resp,
                },
                Some(l) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match self
                        .peers
                        .forward(l, leader_node.as_ref(), req.clone(), remaining)
                        .await
                    {
                        Ok(ControllerResponse::Failed(ControllerError::NotController)) => {}
                        Ok(resp) => return resp,
                        Err(e) => {
                            tracing::debug!(leader = l, error = %e, "forwarding to the controller failed")
                        }
                    }
                }
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return ControllerResponse::Failed(ControllerError::Timeout);
            }
            let pause = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }

    /// A request forwarded by another node: run it only if this node leads (no second hop).
    pub async fn handle_forwarded(&self, req: ControllerRequest) -> ControllerResponse {
        if self.stopped.load(Ordering::SeqCst) {
            return ControllerResponse::Failed(ControllerError::NotController);
        }
        match self.execute(&req).await {
            Ok(resp) => resp,
            Err(e) => ControllerResponse::Failed(e),
        }
    }

    /// Makes sure this node leads and its state machine has applied every committed entry;
    /// starts a new session table when the term changed.
    async fn ensure_fresh(
        &self,
        session: &mut Session,
    ) -> Result<Arc<MetadataState>, ControllerError> {
        let me = raft_id(self.node_id);
        let (leader, term, applied_term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.current_leader,
                m.current_term,
                m.last_applied.map(|l| l.leader_id.term),
            )
        };
        if leader != Some(me) {
            return Err(ControllerError::NotController);
        }
        if applied_term != Some(term) {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => {}
                Ok(Err(RaftError::APIError(_))) => return Err(ControllerError::NotController),
                Ok(Err(e)) => return Err(internal(e)),
                Err(_) => return Err(ControllerError::Timeout),
            }
        }
        let state = self.sm.state();
        if session.term != term {
            // A new controller: every broker gets a full session from now.
            session.term = term;
            let now = Instant::now();
            session.last_heartbeat = state.brokers.keys().map(|id| (*id, now)).collect();
        }
        Ok(state)
    }

    /// Proposes records and waits until they are committed and applied; returns the entry's
    /// log index.
    async fn write(&self, records: Vec<MetadataRecord>) -> Result<u64, ControllerError> {
        let fut = self.raft.client_write(MetadataBatch { records });
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(resp)) => Ok(resp.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ControllerError::NotController)
            }
            Ok(Err(e)) => Err(internal(e)),
            Err(_) => Err(ControllerError::Timeout),
        }
    }

    async fn execute(
        &self,
        req: &ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        use ControllerRequest as Rq;
        use ControllerResponse as Rs;
        let mut session = self.session.lock().await;
        let state = self.ensure_fresh(&mut session).await?;
        let start = crate::rt::random_u128() as usize;
        Ok(match req {
            Rq::RegisterBroker(reg) => match controller::register_broker(&state, reg) {
                Err(e) => Rs::BrokerEpoch(Err(e)),
                Ok(records) => {
                    let index = self.write(records).await?;
                    session.last_heartbeat.insert(reg.broker_id, Instant::now());
                    Rs::BrokerEpoch(i64::try_from(index).map_err(internal))
                }
            },
            Rq::Heartbeat {
                broker_id,
                broker_epoch,
                want_shut_down,
            } => match controller::heartbeat(&state, *broker_id, *broker_epoch, *want_shut_down) {
                Err(e) => Rs::Heartbeat(Err(e)),
                Ok(records) => {
                    session.last_heartbeat.insert(*broker_id, Instant::now());
                    if !records.is_empty() {
                        self.write(records).await?;
                    }
                    let state = self.sm.state();
                    Rs::Heartbeat(Ok(controller::heartbeat_reply(
                        &state,
                        *broker_id,
                        *want_shut_down,
                    )))
                }
            },
            Rq::CreateTopics {
                topics,
                validate_only,
            } => {
                let (results, records) =
                    controller::create_topics(&state, topics, self.defaults, start);
                if !validate_only && !records.is_empty() {
                    self.write(records).await?;
                }
                Rs::CreateTopics(results)
            }
            Rq::DeleteTopics { names } => {
                let (results, records) = controller::delete_topics(&state, names);
                if !records.is_empty() {
                    self.write(records).await?;
                }
                Rs::DeleteTopics(results)
            }
            Rq::CreatePartitions {
                topic,
                total_count,
                assignments,
                validate_only,
            } => {
                match controller::create_partitions(&state, topic, *total_count, assignments, start)
                {
                    Err(e) => Rs::Done(Err(e)),
                    Ok(records) => {
                        if !validate_only {
                            self.write(records).await?;
                        }
                        Rs::Done(Ok(()))
                    }
                }
            }
            Rq::AlterTopicConfigs {
                topic,
                ops,
                validate_only,
            } => match controller::alter_topic_configs(&state, topic, ops) {
                Err(e) => Rs::Done(Err(e)),
                Ok(records) => {
                    if !validate_only {
                        self.write(records).await?;
                    }
                    Rs::Done(Ok(()))
                }
            },
            Rq::AlterClusterConfigs { ops, validate_only } => {
                match controller::alter_cluster_configs(ops) {
                    Err(e) => Rs::Done(Err(e)),
                    Ok(records) => {
                        if !validate_only {
                            self.write(records).await?;
                        }
                        Rs::Done(Ok(()))
                    }
                }
            }
            Rq::AlterPartitionIsr {
                broker_id,
                broker_epoch,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => {
                match controller::alter_partition_isr(
                    &state,
                    *broker_id,
                    *broker_epoch,
                    *topic_id,
                    *partition,
                    *leader_epoch,
                    *partition_epoch,
                    new_isr,
                ) {
                    Err(e) => Rs::Partition(Err(e)),
                    Ok((p, records)) => {
                        self.write(records).await?;
                        Rs::Partition(Ok(p))
                    }
                }
            }
            Rq::AddObserver {
                node_id,
                controller_addr,
            } => {
                let id = raft_id(*node_id);
                let known = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    m.membership_config.membership().get_node(&id).is_some()
                };
                if known {
                    Rs::Done(Ok(()))
                } else {
                    let node = BasicNode {
                        addr: controller_addr.clone(),
                    };
                    // Not blocking: the learner catches up in the background.
                    let added = self.raft.add_learner(id, node, false);
                    Rs::Done(membership_result(
                        tokio::time::timeout(REQUEST_TIMEOUT, added).await,
                    )?)
                }
            }
            Rq::AddVoter {
                node_id,
                controller_addr,
            } => {
                let id = raft_id(*node_id);
                let node = BasicNode {
                    addr: controller_addr.clone(),
                };
                // Blocking: returns once the learner has caught up with the leader's log.
                let added = self.raft.add_learner(id, node, true);
                match membership_result(tokio::time::timeout(REQUEST_TIMEOUT, added).await)? {
                    Err(e) => Rs::Done(Err(e)),
                    Ok(()) => {
                        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                        let changed = self.raft.change_membership(change, false);
                        Rs::Done(membership_result(
                            tokio::time::timeout(REQUEST_TIMEOUT, changed).await,
                        )?)
                    }
                }
            }
            Rq::RemoveVoter { node_id } => {
                let id = raft_id(*node_id);
                let (is_voter, is_node) = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    let membership = m.membership_config.membership();
                    (
                        membership.voter_ids().any(|v| v == id),
                        membership.get_node(&id).is_some(),
                    )
                };
                let ids = BTreeSet::from([id]);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(ids)
                } else if is_node {
                    // An observer (learner): stop replicating to it.
                    ChangeMembers::RemoveNodes(ids)
                } else {
                    return Ok(Rs::Done(Ok(())));
                };
                let changed = self.raft.change_membership(change, false);
                Rs::Done(membership_result(
                    tokio::time::timeout(REQUEST_TIMEOUT, changed).await,
                )?)
            }
            Rq::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => match controller::allocate_producer_ids(&state, *broker_id, *broker_epoch) {
                Err(e) => Rs::ProducerIds(Err(e)),
                Ok((block, records)) => {
                    self.write(records).await?;
                    Rs::ProducerIds(Ok(block))
                }
            },
        })
    }

    /// Periodic work: on the leader, commit the cluster id if the log has none and fence one
    /// broker whose session expired; on every node, keep the identity file's cluster id in
    /// step with the log.
    async fn tick(&self) {
        self.persist_cluster_id();
        let me = raft_id(self.node_id);
        if self.raft.metrics().borrow().current_leader != Some(me) {
            return;
        }
        let mut session = self.session.lock().await;
        let Ok(state) = self.ensure_fresh(&mut session).await else {
            return;
        };
        if state.cluster_id.is_empty() {
            let cluster_id = {
                let mut id = lock(&self.identity);
                if id.cluster_id.is_empty() {
                    id.cluster_id = identity::new_cluster_id();
                }
                id.cluster_id.clone()
            };
            if let Err(e) = self
                .write(vec![MetadataRecord::ClusterId { cluster_id }])
                .await
            {
                tracing::warn!(error = %e, "committing the cluster id failed; will retry");
            }
            return;
        }
        let now = Instant::now();
        let expired = state.brokers.values().filter(|b| !b.fenced).find(|b| {
            let last = *session.last_heartbeat.entry(b.id).or_insert(now);
            now.duration_since(last) > self.session_timeout
        });
        if let Some(b) = expired {
            tracing::info!(broker_id = b.id, "broker session expired; fencing it");
            let records = controller::fence_broker(&state, b.id);
            if let Err(e) = self.write(records).await {
                tracing::warn!(broker_id = b.id, error = %e, "fencing failed; will retry");
            }
        }
    }

    fn persist_cluster_id(&self) {
        let from_log = self.sm.state().cluster_id.clone();
        if from_log.is_empty() {
            return;
        }
        let mut id = lock(&self.identity);
        if id.cluster_id != from_log {
            if !id.cluster_id.is_empty() {
                tracing::info!(ours = %id.cluster_id, log = %from_log, "adopting the cluster id committed in the metadata log");
            }
            let new = Identity {
                node_id: id.node_id,
                cluster_id: from_log,
            };
            match identity::store(&self.meta_dir, &new) {
                Ok(()) => *id = new,
                Err(e) => tracing::warn!(error = %e, "writing meta.properties failed"),
            }
        }
    }
}

type MembershipWrite = Result<
    Result<
        openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    >,
    tokio::time::error::Elapsed,
>;

/// Splits a membership change's outcome into a whole-request failure (outer error: retry
/// elsewhere or give up) and the answer for the caller (inner error: the change is refused).
fn membership_result(r: MembershipWrite) -> Result<Result<(), ControllerError>, ControllerError> {
    match r {
        Err(_) => Err(ControllerError::Timeout),
        Ok(Ok(_)) => Ok(Ok(())),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err(ControllerError::NotController)
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Ok(Err(
            ControllerError::InvalidConfig(format!("membership change refused: {e}")),
        )),
        Ok(Err(e)) => Err(internal(e)),
    }
}

/// An observer asks the voters, one after another, to add it as a learner until the leader
/// has (or its own log already lists it, after a restart).
async fn join_as_observer(
    node: Arc<NodeInner>,
    voters: BTreeMap<i32, std::net::SocketAddr>,
    addr: String,
) {
    let me = raft_id(node.node_id);
    loop {
        let known = {
            let m = node.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&me).is_some()
        };
        if known {
            return;
        }
        for voter in voters.keys() {
            let req = ControllerRequest::AddObserver {
                node_id: node.node_id,
                controller_addr: addr.clone(),
            };
            match node
                .peers
                .forward(raft_id(*voter), None, req, Duration::from_secs(2))
                .await
            {
                Ok(ControllerResponse::Done(Ok(()))) => {
                    tracing::info!(leader = voter, "joined the metadata quorum as an observer");
                    return;
                }
                Ok(other) => tracing::debug!(voter, response = ?other, "observer join refused"),
                Err(e) => tracing::debug!(voter, error = %e, "observer join failed"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn tick_loop(node: Arc<NodeInner>) {
    let mut interval = tokio::time::interval(TICK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        node.tick().await;
    }
}

/// Publishes who the controller is whenever Raft's view of the leader changes.
async fn watch_leader(node: Arc<NodeInner>) {
    let mut metrics = node.raft.metrics();
    loop {
        let leader = metrics.borrow_and_update().current_leader.map(kafka_id);
        node.publisher.set_controller(leader);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
