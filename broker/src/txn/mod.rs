//! The transaction coordinator: per transactional id, its producer id and epoch, its state
//! (Kafka's state machine: Empty → Ongoing → PrepareCommit/PrepareAbort →
//! CompleteCommit/CompleteAbort) and the partitions in its open transaction, persisted in the
//! compacted internal topic `__transaction_state`.
//!
//! A transactional id lives in partition `hash(id) % transaction.state.log.num.partitions`,
//! and the leader of that partition coordinates it. Ending a transaction is: persist the
//! Prepare state, write a commit or abort marker to every partition of the transaction
//! (and make transactional offset commits visible), persist the Complete state. A
//! coordinator that restarts between the two finishes the job when it loads the partition;
//! open transactions past their timeout are aborted by [`TxnCoordinator::tick`] with a
//! bumped epoch, which fences the producer that left them.
//!
//! Markers are written to partitions this broker leads; a transaction may only add
//! partitions led by its coordinator's broker (there is no inter-broker marker path yet).
//! Produce checks through [`TxnCoordinator::with_partition_in_txn`] that a transactional
//! batch's partition was added to the producer's ongoing transaction (KIP-890's defence),
//! holding the transaction's lock so no marker can slip between the check and the append.
//! `transaction.version` 2 (KIP-890 part 2) is not implemented and not advertised.

pub mod state_topic;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_protocol::ResponseError;

use self::state_topic::{TxnState, TxnValue, TXN_STATE_TOPIC};
use crate::broker::{now_ms, Broker};
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::internal_topics::{self, partition_for_key, Replayed};

/// Coordinator settings, with Kafka's names.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`
    pub state_log_partitions: i32,
    /// `transaction.state.log.replication.factor`
    pub state_log_replication_factor: i16,
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_timed_out_interval: Duration,
    /// `transactional.id.expiration.ms`: an id with no transaction open that has not been
    /// used for this long is forgotten (tombstoned).
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            state_log_partitions: 50,
            state_log_replication_factor: 3,
            max_timeout_ms: 900_000,
            abort_timed_out_interval: Duration::from_secs(10),
            id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// One transactional id's metadata: what is persisted, plus the epoch before the last bump
/// (so a retried InitProducerId gets the same answer).
#[derive(Debug, Clone)]
struct TxnMetadata {
    value: TxnValue,
    last_epoch: i16,
}

/// A transaction as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub value: TxnValue,
}

/// What InitProducerId needs from the handler.
pub enum InitOutcome {
    Ready {
        producer_id: i64,
        epoch: i16,
    },
    /// Call again with a fresh producer id from the metadata quorum.
    NeedsProducerId,
}

/// An epoch this high is the last: the next bump takes a new producer id (Kafka's rule).
const MAX_EPOCH: i16 = i16::MAX - 1;

pub struct TxnCoordinator {
    cfg: TxnConfig,
    /// Partitions of `__transaction_state` as it exists (the config's count until it does).
    partitions: AtomicI32,
    txns: Mutex<HashMap<String, Arc<Mutex<TxnMetadata>>>>,
    loaded: Mutex<HashSet<i32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TxnCoordinator {
    pub fn new(cfg: TxnConfig) -> TxnCoordinator {
        TxnCoordinator {
            partitions: AtomicI32::new(cfg.state_log_partitions),
            cfg,
            txns: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.cfg
    }

    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for_key(transactional_id, self.partitions.load(Ordering::Acquire))
    }

    pub fn set_partition_count(&self, partitions: i32) {
        if partitions > 0 {
            self.partitions.store(partitions, Ordering::Release);
        }
    }

    /// NOT_COORDINATOR unless this broker coordinates the id; loads its partition first.
    fn check_coordinator(
        &self,
        broker: &Broker,
        transactional_id: &str,
    ) -> Result<i32, ResponseError> {
        let p = self.partition_for(transactional_id);
        if !broker
            .replicas
            .get(TXN_STATE_TOPIC, p)
            .is_some_and(|q| q.is_leader())
        {
            return Err(ResponseError::NotCoordinator);
        }
        if !lock(&self.loaded).contains(&p) {
            self.load_partition(broker, p)
                .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
        }
        Ok(p)
    }

    /// Replays one `__transaction_state` partition, then finishes every transaction that
    /// was between Prepare and Complete when the last coordinator stopped.
    pub fn load_partition(&self, broker: &Broker, partition: i32) -> Result<(), ResponseError> {
        let mut latest: HashMap<String, Option<TxnValue>> = HashMap::new();
        let mut skipped = 0usize;
        for entry in internal_topics::replay(&broker.replicas, TXN_STATE_TOPIC, partition)? {
            let Replayed::Record { key, value, .. } = entry else {
                continue;
            };
            match state_topic::decode(&key, value.as_deref()) {
                Ok((id, v)) => {
                    latest.insert(id, v);
                }
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(partition, error = %e, "skipping an unreadable __transaction_state record");
                }
            }
        }
        let mut unfinished = Vec::new();
        {
            let mut txns = lock(&self.txns);
            for (id, value) in latest {
                match value {
                    None => {
                        txns.remove(&id);
                    }
                    Some(value) => {
                        if matches!(
                            value.state,
                            TxnState::PrepareCommit | TxnState::PrepareAbort
                        ) {
                            unfinished.push(id.clone());
                        }
                        let last_epoch = value.producer_epoch;
                        txns.insert(id, Arc::new(Mutex::new(TxnMetadata { value, last_epoch })));
                    }
                }
            }
        }
        lock(&self.loaded).insert(partition);
        for id in &unfinished {
            if let Some(txn) = self.txn(id) {
                let mut m = lock(&txn);
                let commit = m.value.state == TxnState::PrepareCommit;
                if let Err(e) = self.complete(broker, id, &mut m, commit) {
                    tracing::warn!(transactional_id = %id, error = ?e, "could not finish a transaction after loading; will retry");
                }
            }
        }
        tracing::info!(
            partition,
            skipped,
            finished = unfinished.len(),
            "loaded transactional ids"
        );
        Ok(())
    }

    fn txn(&self, transactional_id: &str) -> Option<Arc<Mutex<TxnMetadata>>> {
        lock(&self.txns).get(transactional_id).cloned()
    }

    /// Writes `value` as the id's state, then makes it the one in memory.
    fn persist(
        &self,
        broker: &Broker,
        transactional_id: &str,
        m: &mut TxnMetadata,
        value: TxnValue,
    ) -> Result<(), ResponseError> {
        let record = (
            state_topic::key(transactional_id),
            Some(state_topic::value(&value)),
        );
        internal_topics::append(
            &broker.replicas,
            TXN_STATE_TOPIC,
            self.partition_for(transactional_id),
            &[record],
            None,
        )?;
        m.value = value;
        Ok(())
    }

    /// InitProducerId with a transactional id: the producer's id and a bumped epoch, which
    /// fences any older producer with the same id. An open transaction is aborted first.
    /// `expected` is the (id, epoch) a producer sends to recover (KIP-360), or None.
    pub fn init_producer_id(
        &self,
        broker: &Broker,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
    ) -> Result<InitOutcome, ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.cfg.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        self.check_coordinator(broker, transactional_id)?;
        let now = now_ms();
        let txn = {
            let mut txns = lock(&self.txns);
            match txns.get(transactional_id) {
                Some(t) => t.clone(),
                None => {
                    let Some(producer_id) = fresh_producer_id else {
                        return Ok(InitOutcome::NeedsProducerId);
                    };
                    let value = TxnValue {
                        producer_id,
                        producer_epoch: -1,
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        last_update_ms: now,
                        start_ms: -1,
                    };
                    let t = Arc::new(Mutex::new(TxnMetadata {
                        value,
                        last_epoch: -1,
                    }));
                    txns.insert(transactional_id.to_string(), t.clone());
                    t
                }
            }
        };
        let mut m = lock(&txn);
        if let Some((pid, epoch)) = expected {
            let current = m.value.producer_id == pid
                && (m.value.producer_epoch == epoch || m.last_epoch == epoch);
            if !current {
                return Err(ResponseError::ProducerFenced);
            }
            if m.last_epoch == epoch
                && m.value.producer_epoch != epoch
                && m.value.state == TxnState::Empty
            {
                // A retry of a bump we already made.
                return Ok(InitOutcome::Ready {
                    producer_id: m.value.producer_id,
                    epoch: m.value.producer_epoch,
                });
            }
        }
        match m.value.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                // Markers still to write (a failed attempt); try to finish now.
                let commit = m.value.state == TxnState::PrepareCommit;
                self.complete(broker, transactional_id, &mut m, commit)
                    .map_err(|_| ResponseError::ConcurrentTransactions)?;
            }
            TxnState::Ongoing => {
                // Fence the producer that left it open, then abort.
                self.bump_epoch(&mut m);
                self.complete(broker, transactional_id, &mut m, false)
                    .map_err(|_| ResponseError::ConcurrentTransactions)?;
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {}
        }
        let mut value = m.value.clone();
        if value.producer_epoch >= MAX_EPOCH {
            let Some(producer_id) = fresh_producer_id else {
                return Ok(InitOutcome::NeedsProducerId);
            };
            value.producer_id = producer_id;
            value.producer_epoch = 0;
            m.last_epoch = -1;
        } else {
            m.last_epoch = value.producer_epoch;
            value.producer_epoch += 1;
        }
        value.timeout_ms = timeout_ms;
        value.state = TxnState::Empty;
        value.partitions.clear();
        value.start_ms = -1;
        value.last_update_ms = now;
        self.persist(broker, transactional_id, &mut m, value)?;
        Ok(InitOutcome::Ready {
            producer_id: m.value.producer_id,
            epoch: m.value.producer_epoch,
        })
    }

    fn bump_epoch(&self, m: &mut TxnMetadata) {
        if m.value.producer_epoch < MAX_EPOCH {
            m.last_epoch = m.value.producer_epoch;
            m.value.producer_epoch += 1;
        }
    }

    /// The checks every request of an ongoing producer shares: the id is known here, the
    /// producer id is its current one, the epoch is not fenced.
    fn producer_txn(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<Arc<Mutex<TxnMetadata>>, ResponseError> {
        self.check_coordinator(broker, transactional_id)?;
        let txn = self
            .txn(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let m = lock(&txn);
        if m.value.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.value.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        drop(m);
        Ok(txn)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the producer's transaction,
    /// which begins if none is open. Returns an error per refused partition; when any is
    /// refused, nothing is added (the others get OPERATION_NOT_ATTEMPTED from the caller).
    pub fn add_partitions(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), AddPartitionsError> {
        let txn = self.producer_txn(broker, transactional_id, producer_id, epoch)?;
        let mut m = lock(&txn);
        if matches!(
            m.value.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        ) {
            return Err(ResponseError::ConcurrentTransactions.into());
        }
        let image = broker.image();
        let refused: Vec<((String, i32), ResponseError)> = partitions
            .iter()
            .filter_map(|(topic, p)| {
                let exists = image
                    .topics
                    .get(topic)
                    .and_then(|t| t.partitions.iter().find(|q| q.partition == *p));
                match exists {
                    None => Some(((topic.clone(), *p), ResponseError::UnknownTopicOrPartition)),
                    Some(q) if q.leader != broker.config.node_id => {
                        tracing::warn!(
                            transactional_id,
                            topic,
                            partition = p,
                            "refusing to add a partition led by another broker to a transaction: \
                             commit markers are only written to partitions this coordinator's broker leads"
                        );
                        Some(((topic.clone(), *p), ResponseError::InvalidTxnState))
                    }
                    Some(_) => None,
                }
            })
            .collect();
        if !refused.is_empty() {
            return Err(AddPartitionsError::Partitions(refused));
        }
        let mut value = m.value.clone();
        let before = value.partitions.len();
        value.partitions.extend(partitions.iter().cloned());
        if value.state != TxnState::Ongoing {
            value.state = TxnState::Ongoing;
            value.start_ms = now_ms();
        } else if value.partitions.len() == before {
            return Ok(());
        }
        value.last_update_ms = now_ms();
        self.persist(broker, transactional_id, &mut m, value)?;
        Ok(())
    }

    /// Runs `append` only if `topic`/`partition` is in the ongoing transaction of this
    /// producer, holding the transaction so it cannot end in between.
    pub fn with_partition_in_txn<R>(
        &self,
        broker: &Broker,
        transactional_id: &str,
        (producer_id, epoch): (i64, i16),
        (topic, partition): (&str, i32),
        append: impl FnOnce() -> R,
    ) -> Result<R, ResponseError> {
        let txn = self
            .producer_txn(broker, transactional_id, producer_id, epoch)
            .map_err(|e| match e {
                ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
                ResponseError::NotCoordinator | ResponseError::InvalidProducerIdMapping => {
                    ResponseError::InvalidTxnState
                }
                other => other,
            })?;
        let m = lock(&txn);
        if m.value.state != TxnState::Ongoing
            || !m.value.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(append())
    }

    /// EndTxn: commit or abort the producer's transaction. Answered once every marker is
    /// written, or once the decision (Prepare) is persisted if a marker cannot be written
    /// now: the decision stands and the timer finishes it, as Kafka answers after Prepare.
    /// A retry of an end that already happened succeeds.
    pub fn end_txn(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let txn = self.producer_txn(broker, transactional_id, producer_id, epoch)?;
        let mut m = lock(&txn);
        let prepared = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        match (m.value.state, commit) {
            (TxnState::Ongoing, _) => {
                match self.complete(broker, transactional_id, &mut m, commit) {
                    Err(e) if m.value.state == prepared => {
                        tracing::warn!(transactional_id, error = ?e, "transaction decided; its markers will be retried");
                        Ok(())
                    }
                    other => other,
                }
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            // Decided before but not finished: finish now, or tell the client to retry.
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => self
                .complete(broker, transactional_id, &mut m, commit)
                .map_err(|_| ResponseError::ConcurrentTransactions),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Prepare, markers, Complete. On an error the state stays Prepare; the timer retries.
    fn complete(
        &self,
        broker: &Broker,
        transactional_id: &str,
        m: &mut TxnMetadata,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let (prepare, done) = if commit {
            (TxnState::PrepareCommit, TxnState::CompleteCommit)
        } else {
            (TxnState::PrepareAbort, TxnState::CompleteAbort)
        };
        let now = now_ms();
        if m.value.state != prepare {
            let mut value = m.value.clone();
            value.state = prepare;
            value.last_update_ms = now;
            self.persist(broker, transactional_id, m, value)?;
        }
        let coordinator_epoch = broker
            .replicas
            .get(TXN_STATE_TOPIC, self.partition_for(transactional_id))
            .map_or(-1, |p| p.leader_state().leader_epoch);
        let (producer_id, epoch) = (m.value.producer_id, m.value.producer_epoch);
        for (topic, index) in &m.value.partitions {
            let Some(partition) = broker.replicas.get(topic, *index) else {
                // Deleted since it joined: nothing to mark.
                continue;
            };
            partition
                .write_txn_marker(producer_id, epoch, commit, coordinator_epoch, now)
                .map_err(|e| {
                    tracing::warn!(transactional_id, topic, partition = index, error = ?e.code, "could not write a transaction marker");
                    e.code
                })?;
            if topic == OFFSETS_TOPIC {
                broker.groups.complete_txn(producer_id, commit, *index);
            }
        }
        let mut value = m.value.clone();
        value.state = done;
        value.partitions.clear();
        value.last_update_ms = now_ms();
        self.persist(broker, transactional_id, m, value)
    }

    /// Aborts transactions open longer than their timeout (bumping the epoch, which fences
    /// the producer that opened them) and retries ends whose markers failed.
    pub fn tick(&self, broker: &Broker) {
        let now = now_ms();
        let txns: Vec<(String, Arc<Mutex<TxnMetadata>>)> = lock(&self.txns)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, txn) in txns {
            let mut m = lock(&txn);
            let result = match m.value.state {
                TxnState::Ongoing if now - m.value.start_ms > i64::from(m.value.timeout_ms) => {
                    tracing::info!(transactional_id = %id, producer_id = m.value.producer_id, timeout_ms = m.value.timeout_ms, "aborting a transaction past its timeout");
                    self.bump_epoch(&mut m);
                    self.complete(broker, &id, &mut m, false)
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    let commit = m.value.state == TxnState::PrepareCommit;
                    self.complete(broker, &id, &mut m, commit)
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    if now - m.value.last_update_ms > self.cfg.id_expiration_ms =>
                {
                    self.expire(broker, &id, &mut m)
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(transactional_id = %id, error = ?e, "could not end a transaction; will retry");
            }
        }
    }

    /// Forgets an idle transactional id: a tombstone in its partition, then gone from
    /// memory. Marked Dead first: a request that already holds this entry waits on its
    /// lock and then answers CONCURRENT_TRANSACTIONS, so the client retries on a fresh one.
    fn expire(
        &self,
        broker: &Broker,
        transactional_id: &str,
        m: &mut TxnMetadata,
    ) -> Result<(), ResponseError> {
        internal_topics::append(
            &broker.replicas,
            TXN_STATE_TOPIC,
            self.partition_for(transactional_id),
            &[(state_topic::key(transactional_id), None)],
            None,
        )?;
        m.value.state = TxnState::Dead;
        lock(&self.txns).remove(transactional_id);
        tracing::info!(transactional_id, "expired an idle transactional id");
        Ok(())
    }

    /// DescribeTransactions for one id.
    pub fn describe(
        &self,
        broker: &Broker,
        transactional_id: &str,
    ) -> Result<TxnDescription, ResponseError> {
        self.check_coordinator(broker, transactional_id)?;
        let txn = self
            .txn(transactional_id)
            .ok_or(ResponseError::TransactionalIdNotFound)?;
        let value = lock(&txn).value.clone();
        Ok(TxnDescription {
            transactional_id: transactional_id.to_string(),
            value,
        })
    }

    /// Every transactional id this broker coordinates.
    pub fn list(&self, broker: &Broker) -> Vec<TxnDescription> {
        let txns: Vec<(String, Arc<Mutex<TxnMetadata>>)> = lock(&self.txns)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<TxnDescription> = txns
            .into_iter()
            .filter(|(id, _)| {
                broker
                    .replicas
                    .get(TXN_STATE_TOPIC, self.partition_for(id))
                    .is_some_and(|p| p.is_leader())
            })
            .map(|(id, t)| TxnDescription {
                transactional_id: id,
                value: lock(&t).value.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}

/// Why AddPartitionsToTxn failed: for the whole request, or for some partitions.
#[derive(Debug)]
pub enum AddPartitionsError {
    Request(ResponseError),
    Partitions(Vec<((String, i32), ResponseError)>),
}

impl From<ResponseError> for AddPartitionsError {
    fn from(e: ResponseError) -> Self {
        AddPartitionsError::Request(e)
    }
}
