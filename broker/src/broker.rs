//! The broker: what a request handler can reach (config, metadata, partitions), and its
//! lifecycle (register with the controller, follow the metadata image, serve, shut down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use sluice_raft::{BrokerRegistration, ControllerError, Endpoint, MetadataImage, MetadataNode};
use sluice_storage::{LogManager, LogManagerOptions, StorageError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::group::GroupCoordinator;
use crate::replica_manager::ReplicaManager;
use crate::txn::state_topic::TXN_STATE_TOPIC;
use crate::txn::TxnCoordinator;
use crate::{admin_http, server};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not open the data directory")]
    Storage(#[from] StorageError),
    #[error("could not register with the metadata quorum")]
    Metadata(#[from] ControllerError),
    #[error("could not listen on {addr} (is another broker already running there?)")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataNode,
    pub replicas: ReplicaManager,
    pub groups: GroupCoordinator,
    pub txns: TxnCoordinator,
    /// The unused part of the producer-id block this broker holds: [next, end).
    producer_ids: tokio::sync::Mutex<std::ops::Range<i64>>,
    broker_epoch: std::sync::atomic::AtomicI64,
    ready: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    metrics: Option<PrometheusHandle>,
}

/// A running broker and its tasks.
pub struct RunningBroker {
    pub broker: Arc<Broker>,
    /// The Kafka listener's actual address (useful with port 0).
    pub local_addr: std::net::SocketAddr,
    pub admin_addr: Option<std::net::SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<()>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// Opens storage, registers with the metadata quorum, starts serving Kafka clients and
    /// the admin HTTP endpoint.
    pub async fn start(
        config: BrokerConfig,
        metadata: MetadataNode,
        metrics: Option<PrometheusHandle>,
    ) -> Result<RunningBroker, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };

        let options = LogManagerOptions {
            maintenance_interval: config.retention_check_interval,
            page_cache_max_bytes: config.page_cache_max_bytes,
            ..LogManagerOptions::default()
        };
        let logs = LogManager::with_options(config.data_dir.clone(), options)?;
        let replicas = ReplicaManager::new(config.node_id, logs, config.static_configs.clone());
        let (shutdown_tx, _) = watch::channel(false);
        let broker = Arc::new(Broker {
            replicas,
            groups: GroupCoordinator::new(config.groups.clone()),
            txns: TxnCoordinator::new(config.transactions.clone()),
            producer_ids: tokio::sync::Mutex::new(0..0),
            metadata,
            broker_epoch: std::sync::atomic::AtomicI64::new(-1),
            ready: AtomicBool::new(false),
            shutdown_tx,
            metrics,
            config,
        });

        let image = broker.metadata.image();
        broker.replicas.remove_stray_logs(&image);
        broker.replicas.apply_image(&image);
        broker.replicas.start_background();
        broker.register().await?;
        broker.load_groups();
        broker.load_transactions();

        let mut tasks = vec![
            tokio::spawn(follow_metadata(broker.clone())),
            tokio::spawn(group_timers(broker.clone())),
            tokio::spawn(transaction_timers(broker.clone())),
            tokio::spawn(heartbeat_loop(broker.clone())),
        ];
        let admin_addr = match admin_listener {
            Some(l) => {
                let addr = l.local_addr().ok();
                tasks.push(tokio::spawn(admin_http::serve(broker.clone(), l)));
                addr
            }
            None => None,
        };
        let server = tokio::spawn(server::serve(broker.clone(), listener));
        broker.ready.store(true, Ordering::Release);
        tracing::info!(
            node_id = broker.config.node_id,
            cluster_id = %broker.metadata.cluster_id(),
            listener = %local_addr,
            advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
            admin = %admin_addr.map_or("off".to_string(), |a| format!("http://{a}")),
            data_dir = %broker.config.data_dir.display(),
            "Sluice broker ready"
        );
        Ok(RunningBroker {
            broker,
            local_addr,
            admin_addr,
            tasks,
            server,
        })
    }

    async fn register(&self) -> Result<(), ControllerError> {
        let registration = BrokerRegistration {
            broker_id: self.config.node_id,
            incarnation_id: Uuid::new_v4(),
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: self.config.advertised_host.clone(),
                port: self.config.advertised_port,
                security_protocol: 0,
            }],
            rack: self.config.rack.clone(),
        };
        let epoch = self.metadata.register_broker(registration).await?;
        self.broker_epoch.store(epoch, Ordering::Release);
        // The first heartbeat unfences us, so topics can be placed here.
        self.metadata
            .broker_heartbeat(self.config.node_id, epoch, false)
            .await?;
        self.wait_for_image(|image| {
            image
                .brokers
                .get(&self.config.node_id)
                .is_some_and(|b| b.epoch == epoch && !b.fenced)
        })
        .await;
        Ok(())
    }

    /// Replays the `__consumer_offsets` partitions this broker leads, so groups and their
    /// committed offsets are there before the first client asks.
    fn load_groups(&self) {
        let Some(topic) = self.image().topics.get(OFFSETS_TOPIC).cloned() else {
            return;
        };
        self.groups
            .set_partition_count(topic.partitions.len() as i32);
        for p in topic
            .partitions
            .iter()
            .filter(|p| p.leader == self.config.node_id)
        {
            if let Err(e) = self.groups.load_partition(&self.replicas, p.partition) {
                tracing::error!(partition = p.partition, error = ?e, "could not load consumer groups");
            }
        }
    }

    /// Replays the `__transaction_state` partitions this broker leads and finishes the
    /// transactions a previous run left between Prepare and Complete. After the groups:
    /// finishing a transaction may commit offsets.
    fn load_transactions(&self) {
        let Some(topic) = self.image().topics.get(TXN_STATE_TOPIC).cloned() else {
            return;
        };
        self.txns.set_partition_count(topic.partitions.len() as i32);
        for p in topic
            .partitions
            .iter()
            .filter(|p| p.leader == self.config.node_id)
        {
            if let Err(e) = self.txns.load_partition(self, p.partition) {
                tracing::error!(partition = p.partition, error = ?e, "could not load transactions");
            }
        }
    }

    /// A fresh producer id for an idempotent producer, from this broker's block (a new
    /// block comes from the metadata quorum when it runs out).
    pub async fn next_producer_id(&self) -> Result<i64, ControllerError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            let epoch = self.broker_epoch.load(Ordering::Acquire);
            let block = self
                .metadata
                .allocate_producer_ids(self.config.node_id, epoch)
                .await?;
            *ids = block.first_producer_id..block.first_producer_id + i64::from(block.size);
        }
        let id = ids.start;
        ids.start += 1;
        Ok(id)
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// Waits (up to 5 s) until the local image satisfies `done`, applying it to the hosted
    /// partitions, and returns it. Used after a controller write so the response (and the
    /// next request) sees its effect.
    pub async fn wait_for_image(
        &self,
        done: impl Fn(&MetadataImage) -> bool,
    ) -> Arc<MetadataImage> {
        let mut rx = self.metadata.watch();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let image = rx.borrow_and_update().clone();
            if done(&image) {
                self.replicas.apply_image(&image);
                return image;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return image;
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn prometheus(&self) -> Option<&PrometheusHandle> {
        self.metrics.as_ref()
    }
}

impl RunningBroker {
    /// Graceful stop: stop accepting, let in-flight requests finish (bounded), tell the
    /// controller, close every log cleanly (the next start needs no recovery).
    pub async fn shutdown(self) -> Result<(), StorageError> {
        let broker = self.broker;
        broker.ready.store(false, Ordering::Release);
        let _ = broker.shutdown_tx.send(true);
        broker.groups.shutdown();
        if tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 10 s; closing logs anyway");
        }
        let epoch = broker.broker_epoch.load(Ordering::Acquire);
        if let Err(e) = tokio::time::timeout(
            Duration::from_secs(2),
            broker
                .metadata
                .broker_heartbeat(broker.config.node_id, epoch, true),
        )
        .await
        .unwrap_or(Err(ControllerError::Timeout))
        {
            tracing::debug!(error = %e, "controlled-shutdown heartbeat failed");
        }
        for t in self.tasks {
            t.abort();
        }
        let result = broker.replicas.close_all();
        tracing::info!("broker stopped; logs closed cleanly");
        result
    }
}

/// Applies every new metadata image to the hosted partitions.
async fn follow_metadata(broker: Arc<Broker>) {
    let mut rx = broker.metadata.watch();
    loop {
        let image = rx.borrow_and_update().clone();
        broker.replicas.apply_image(&image);
        if let Some(t) = image.topics.get(OFFSETS_TOPIC) {
            broker.groups.set_partition_count(t.partitions.len() as i32);
        }
        if let Some(t) = image.topics.get(TXN_STATE_TOPIC) {
            broker.txns.set_partition_count(t.partitions.len() as i32);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How often group deadlines (sessions, rebalances, offset expiry) are checked.
const GROUP_TICK: Duration = Duration::from_millis(100);

async fn group_timers(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(GROUP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        broker.groups.tick(&broker.replicas);
    }
}

/// Aborts timed-out transactions and retries unfinished ends, every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
async fn transaction_timers(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.txns.config().abort_timed_out_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Marker writes may fsync (flush policy Always): off the async workers.
        let b = broker.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || b.txns.tick(&b)).await {
            tracing::error!(error = %e, "transaction timer failed");
        }
    }
}

/// Keeps this broker's session with the controller alive; re-registers if fenced out.
async fn heartbeat_loop(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let epoch = broker.broker_epoch.load(Ordering::Acquire);
        match broker
            .metadata
            .broker_heartbeat(broker.config.node_id, epoch, false)
            .await
        {
            Ok(_) => {}
            Err(ControllerError::StaleBrokerEpoch)
            | Err(ControllerError::BrokerRegistration(_)) => {
                tracing::warn!("controller no longer knows this broker's epoch; registering again");
                if let Err(e) = broker.register().await {
                    tracing::error!(error = %e, "re-registration failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat to the controller failed"),
        }
    }
}
