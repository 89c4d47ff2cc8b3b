//! The command line: `sluice serve` and its options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Sluice: a Kafka-compatible log broker in one binary.
///
/// Every Kafka client (Java, librdkafka/kcat, franz-go, kafka-python, kafkajs, ...) connects
/// to it unchanged. With no options, `sluice serve` runs a single node: Kafka on port 9092,
/// data in ./sluice-data, metrics and health on http://localhost:9644.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker (and, in local mode, its one-node metadata quorum).
    Serve(ServeArgs),
}

/// Options of `sluice serve`. Each flag can also be set with the SLUICE_* environment
/// variable shown, or in the --config file under its Kafka name (shown in brackets).
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file of broker settings by Kafka name, e.g. `log.retention.ms = 86400000`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for partition logs and metadata [log.dirs]. Default: ./sluice-data
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Kafka listener address [listeners]. Default: 0.0.0.0:9092
    #[arg(long, env = "SLUICE_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// Address clients are told to connect to [advertised.listeners]. Default: localhost and the listener's port
    #[arg(long, env = "SLUICE_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Admin HTTP address for /metrics, /healthz, /readyz, or "none". Default: 0.0.0.0:9644
    #[arg(long, env = "SLUICE_ADMIN_LISTEN", value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,

    /// This node's id [node.id]. Default: 1
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    pub node_id: Option<i32>,

    /// Rack of this broker, used to spread replicas [broker.rack]
    #[arg(long, env = "SLUICE_RACK")]
    pub rack: Option<String>,

    /// Partitions of auto-created topics and of CreateTopics with -1 [num.partitions]. Default: 1
    #[arg(long, env = "SLUICE_NUM_PARTITIONS", value_name = "N")]
    pub num_partitions: Option<i32>,

    /// Replication factor of auto-created topics [default.replication.factor]. Default: 1
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR", value_name = "N")]
    pub default_replication_factor: Option<i16>,

    /// Create unknown topics when a client asks for their metadata [auto.create.topics.enable]. Default: true
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS_ENABLE", value_name = "BOOL")]
    pub auto_create_topics_enable: Option<bool>,

    /// Largest record batch a topic accepts unless it sets max.message.bytes [message.max.bytes]. Default: 1048588
    #[arg(long, env = "SLUICE_MESSAGE_MAX_BYTES", value_name = "BYTES")]
    pub message_max_bytes: Option<i32>,

    /// How long records are kept, -1 forever [log.retention.ms]. Default: 604800000 (7 days)
    #[arg(long, env = "SLUICE_LOG_RETENTION_MS", value_name = "MS")]
    pub log_retention_ms: Option<i64>,

    /// Largest partition size before old segments are deleted, -1 unlimited [log.retention.bytes]. Default: -1
    #[arg(long, env = "SLUICE_LOG_RETENTION_BYTES", value_name = "BYTES")]
    pub log_retention_bytes: Option<i64>,

    /// Size at which a new segment file starts [log.segment.bytes]. Default: 1073741824
    #[arg(long, env = "SLUICE_LOG_SEGMENT_BYTES", value_name = "BYTES")]
    pub log_segment_bytes: Option<i32>,

    /// fsync after this many messages; 1 = before every acknowledgement [log.flush.interval.messages].
    /// Default: never (page cache; durability from replication, as Kafka)
    #[arg(long, env = "SLUICE_LOG_FLUSH_INTERVAL_MESSAGES", value_name = "N")]
    pub log_flush_interval_messages: Option<i64>,

    /// fsync at least this often [log.flush.interval.ms]. Default: never
    #[arg(long, env = "SLUICE_LOG_FLUSH_INTERVAL_MS", value_name = "MS")]
    pub log_flush_interval_ms: Option<i64>,

    /// Raft listener for the metadata quorum [controller.listener]. Default: this node's entry in --voters
    #[arg(long, env = "SLUICE_CONTROLLER_LISTEN", value_name = "HOST:PORT")]
    pub controller_listen: Option<String>,

    /// Metadata quorum voters as ID@HOST:PORT,... [controller.quorum.voters]. Default: none (single node)
    #[arg(long, env = "SLUICE_VOTERS", value_name = "VOTERS")]
    pub voters: Option<String>,

    /// Create a new cluster on an empty data dir when --voters is set (run on one voter, once)
    #[arg(long, env = "SLUICE_BOOTSTRAP")]
    pub bootstrap: bool,

    /// Any other broker config by its Kafka name, e.g. --set log.cleanup.policy=compact (repeatable)
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))
}
