//! Broker settings: where it listens, its limits, and the broker-level Kafka configs it was
//! started with (which are the defaults behind every topic's configs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::group::CoordinatorConfig;

/// Everything the broker needs to run, fixed at startup.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`: this broker's id.
    pub node_id: i32,
    /// `log.dirs`: partition logs live in `<data_dir>/<topic>-<partition>/`.
    pub data_dir: PathBuf,
    /// `listeners`: the Kafka listener's bind address.
    pub listen: SocketAddr,
    /// `advertised.listeners`: the host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Admin HTTP listener (/metrics, /healthz, /readyz).
    pub admin_listen: Option<SocketAddr>,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions` for auto-created topics.
    pub num_partitions: i32,
    /// `default.replication.factor` for auto-created topics.
    pub default_replication_factor: i16,
    /// `socket.request.max.bytes`: the largest request frame accepted.
    pub max_request_bytes: usize,
    /// `max.connections`.
    pub max_connections: usize,
    /// Requests read ahead of the one being handled, per connection.
    pub max_inflight_requests_per_connection: usize,
    /// `queued.max.request.bytes`: bytes of request frames held across all connections;
    /// beyond it, connections wait before reading more (back-pressure).
    pub max_queued_request_bytes: usize,
    /// `log.retention.check.interval.ms`: how often retention, compaction and segment.ms
    /// rolls run over every log.
    pub retention_check_interval: Duration,
    /// `connections.max.idle.ms`: a connection that sends nothing for this long is closed.
    pub connections_max_idle: Duration,
    /// `log.page.cache.max.bytes` (Sluice's own): bytes of what partitions wrote kept in
    /// the page cache, least recently written released first; `None` (-1) keeps
    /// everything, as Kafka does.
    pub page_cache_max_bytes: Option<u64>,
    /// How often the broker heartbeats to the controller.
    pub heartbeat_interval: Duration,
    /// Group coordinator settings (`group.*`, `offsets.*`).
    pub groups: CoordinatorConfig,
    /// Transaction coordinator settings (`transaction.*`).
    pub transactions: crate::txn::TxnConfig,
    /// Broker-level Kafka configs set explicitly at startup, by Kafka name
    /// (`log.retention.ms`, `message.max.bytes`, ...). Source STATIC_BROKER_CONFIG.
    pub static_configs: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// A config for a broker on `listen` storing data in `data_dir`, everything else default.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> BrokerConfig {
        BrokerConfig {
            node_id: 1,
            data_dir,
            listen,
            advertised_host: "localhost".into(),
            advertised_port: listen.port(),
            rack: None,
            admin_listen: None,
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_inflight_requests_per_connection: 64,
            max_queued_request_bytes: 512 * 1024 * 1024,
            retention_check_interval: Duration::from_secs(30),
            connections_max_idle: Duration::from_millis(600_000),
            page_cache_max_bytes: Some(sluice_storage::DEFAULT_PAGE_CACHE_MAX_BYTES),
            heartbeat_interval: Duration::from_secs(1),
            groups: CoordinatorConfig::default(),
            transactions: crate::txn::TxnConfig::default(),
            static_configs: BTreeMap::new(),
        }
    }
}
