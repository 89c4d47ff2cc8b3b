//! Turning flags, `SLUICE_*` environment variables and an optional TOML config file into the
//! broker's and the metadata quorum's settings.
//!
//! Precedence: flag, then environment variable (clap reads both), then the config file, then
//! the built-in default. The config file uses Kafka's broker config names, as a flat
//! `"log.retention.ms" = 86400000` or as TOML's dotted keys `log.retention.ms = 86400000`
//! (both mean the same here).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use sluice_broker::topic_config;
use sluice_broker::BrokerConfig;
use sluice_raft::MetadataConfig;

use crate::cli::ServeArgs;

/// Broker-level Kafka configs that are not topic-config synonyms but are read from the
/// config file.
const SERVER_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "log.dirs",
    "log.dir",
    "listeners",
    "advertised.listeners",
    "admin.listeners",
    "controller.listener",
    "controller.quorum.voters",
    "controller.quorum.bootstrap",
    "broker.rack",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "max.connections",
    "queued.max.request.bytes",
    "connections.max.idle.ms",
    "log.retention.check.interval.ms",
    "log.page.cache.max.bytes",
    "broker.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.retention.minutes",
    "offset.metadata.max.bytes",
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.max.timeout.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "transactional.id.expiration.ms",
];

pub struct Settings {
    pub broker: BrokerConfig,
    pub metadata: MetadataConfig,
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_config_file(path)?,
            None => BTreeMap::new(),
        };
        for (k, _) in &args.set {
            check_known(k)?;
        }
        // Explicit values by Kafka name: flags and env first, then `--set`, then the file.
        let mut explicit: BTreeMap<String, String> = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                explicit.entry(k.to_string()).or_insert(v);
            }
        };
        put("node.id", args.node_id.map(|v| v.to_string()));
        put(
            "log.dirs",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        put("listeners", args.listen.clone());
        put("advertised.listeners", args.advertise.clone());
        put("admin.listeners", args.admin_listen.clone());
        put("controller.listener", args.controller_listen.clone());
        put("controller.quorum.voters", args.voters.clone());
        put(
            "controller.quorum.bootstrap",
            args.bootstrap.then(|| "true".to_string()),
        );
        put("broker.rack", args.rack.clone());
        put("num.partitions", args.num_partitions.map(|v| v.to_string()));
        put(
            "default.replication.factor",
            args.default_replication_factor.map(|v| v.to_string()),
        );
        put(
            "auto.create.topics.enable",
            args.auto_create_topics_enable.map(|v| v.to_string()),
        );
        put(
            "message.max.bytes",
            args.message_max_bytes.map(|v| v.to_string()),
        );
        put(
            "log.retention.ms",
            args.log_retention_ms.map(|v| v.to_string()),
        );
        put(
            "log.retention.bytes",
            args.log_retention_bytes.map(|v| v.to_string()),
        );
        put(
            "log.segment.bytes",
            args.log_segment_bytes.map(|v| v.to_string()),
        );
        put(
            "log.flush.interval.messages",
            args.log_flush_interval_messages.map(|v| v.to_string()),
        );
        put(
            "log.flush.interval.ms",
            args.log_flush_interval_ms.map(|v| v.to_string()),
        );
        for (k, v) in &args.set {
            put(k, Some(v.clone()));
        }
        for (k, v) in file {
            put(&k, Some(v));
        }
        let log_dir = explicit.remove("log.dir");
        if let Some(v) = log_dir {
            explicit.entry("log.dirs".into()).or_insert(v);
        }
        if let Some(v) = explicit.remove("broker.id") {
            explicit.entry("node.id".into()).or_insert(v);
        }
        build(explicit)
    }
}

fn build(explicit: BTreeMap<String, String>) -> anyhow::Result<Settings> {
    let get = |k: &str| explicit.get(k).map(String::as_str);
    let node_id: i32 = parse(get("node.id"), "node.id", 1)?;
    if node_id < 0 {
        bail!("node.id must be 0 or more, got {node_id}");
    }
    let data_dir = PathBuf::from(get("log.dirs").unwrap_or("./sluice-data"));
    let listen = socket_addr(get("listeners").unwrap_or("0.0.0.0:9092"), "listeners")?;
    let (advertised_host, advertised_port) = match get("advertised.listeners") {
        Some(a) => host_port(a, "advertised.listeners")?,
        None => ("localhost".to_string(), listen.port()),
    };
    let admin_listen = match get("admin.listeners") {
        Some("none") | Some("") => None,
        Some(a) => Some(socket_addr(a, "admin.listeners")?),
        None => Some(socket_addr("0.0.0.0:9644", "admin.listeners")?),
    };

    let mut static_configs = BTreeMap::new();
    for (k, v) in &explicit {
        if let Some(def) = topic_config::def_for_broker_synonym(k) {
            topic_config::validate_value(def, v).map_err(|e| anyhow::anyhow!("{k}: {e}"))?;
            static_configs.insert(k.clone(), v.clone());
        }
    }

    let mut broker = BrokerConfig::new(data_dir.clone(), listen);
    broker.node_id = node_id;
    broker.advertised_host = advertised_host;
    broker.advertised_port = advertised_port;
    broker.admin_listen = admin_listen;
    broker.rack = get("broker.rack").map(String::from);
    broker.num_partitions = parse(get("num.partitions"), "num.partitions", 1)?;
    broker.default_replication_factor = parse(
        get("default.replication.factor"),
        "default.replication.factor",
        1,
    )?;
    broker.auto_create_topics = parse(
        get("auto.create.topics.enable"),
        "auto.create.topics.enable",
        true,
    )?;
    broker.max_request_bytes = parse(
        get("socket.request.max.bytes"),
        "socket.request.max.bytes",
        broker.max_request_bytes,
    )?;
    broker.max_connections = parse(
        get("max.connections"),
        "max.connections",
        broker.max_connections,
    )?;
    broker.max_queued_request_bytes = parse(
        get("queued.max.request.bytes"),
        "queued.max.request.bytes",
        broker.max_queued_request_bytes,
    )?;
    let check_ms: u64 = parse(
        get("log.retention.check.interval.ms"),
        "log.retention.check.interval.ms",
        30_000,
    )?;
    broker.retention_check_interval = Duration::from_millis(check_ms.max(10));
    let max_bytes: i64 = parse(
        get("log.page.cache.max.bytes"),
        "log.page.cache.max.bytes",
        broker.page_cache_max_bytes.map_or(-1, |w| w as i64),
    )?;
    broker.page_cache_max_bytes = match max_bytes {
        -1 => None,
        w if w >= 0 => Some(w as u64),
        _ => bail!("log.page.cache.max.bytes must be -1 (keep everything cached) or at least 0"),
    };
    let idle_ms: u64 = parse(
        get("connections.max.idle.ms"),
        "connections.max.idle.ms",
        600_000,
    )?;
    broker.connections_max_idle = Duration::from_millis(idle_ms.max(1));
    let groups = &mut broker.groups;
    let ms = |name: &str, default: Duration| -> anyhow::Result<Duration> {
        Ok(Duration::from_millis(parse(
            get(name),
            name,
            default.as_millis() as u64,
        )?))
    };
    groups.group.initial_rebalance_delay = ms(
        "group.initial.rebalance.delay.ms",
        groups.group.initial_rebalance_delay,
    )?;
    groups.group.min_session_timeout = ms(
        "group.min.session.timeout.ms",
        groups.group.min_session_timeout,
    )?;
    groups.group.max_session_timeout = ms(
        "group.max.session.timeout.ms",
        groups.group.max_session_timeout,
    )?;
    groups.group.max_size = parse(
        get("group.max.size"),
        "group.max.size",
        groups.group.max_size,
    )?;
    groups.offsets_topic_partitions = parse(
        get("offsets.topic.num.partitions"),
        "offsets.topic.num.partitions",
        groups.offsets_topic_partitions,
    )?;
    groups.offsets_topic_replication_factor = parse(
        get("offsets.topic.replication.factor"),
        "offsets.topic.replication.factor",
        groups.offsets_topic_replication_factor,
    )?;
    let retention_minutes: u64 = parse(
        get("offsets.retention.minutes"),
        "offsets.retention.minutes",
        groups.offsets_retention.as_secs() / 60,
    )?;
    groups.offsets_retention = Duration::from_secs(retention_minutes * 60);
    groups.offset_metadata_max_bytes = parse(
        get("offset.metadata.max.bytes"),
        "offset.metadata.max.bytes",
        groups.offset_metadata_max_bytes,
    )?;
    if groups.offsets_topic_partitions < 1 {
        bail!("offsets.topic.num.partitions must be at least 1");
    }
    let txns = &mut broker.transactions;
    txns.state_log_partitions = parse(
        get("transaction.state.log.num.partitions"),
        "transaction.state.log.num.partitions",
        txns.state_log_partitions,
    )?;
    txns.state_log_replication_factor = parse(
        get("transaction.state.log.replication.factor"),
        "transaction.state.log.replication.factor",
        txns.state_log_replication_factor,
    )?;
    txns.max_timeout_ms = parse(
        get("transaction.max.timeout.ms"),
        "transaction.max.timeout.ms",
        txns.max_timeout_ms,
    )?;
    txns.abort_timed_out_interval = ms(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        txns.abort_timed_out_interval,
    )?
    .max(Duration::from_millis(10));
    txns.id_expiration_ms = parse(
        get("transactional.id.expiration.ms"),
        "transactional.id.expiration.ms",
        txns.id_expiration_ms,
    )?;
    if txns.state_log_partitions < 1 {
        bail!("transaction.state.log.num.partitions must be at least 1");
    }
    broker.static_configs = static_configs;
    if broker.num_partitions < 1 {
        bail!("num.partitions must be at least 1");
    }
    if broker.default_replication_factor < 1 {
        bail!("default.replication.factor must be at least 1");
    }
    if broker.default_replication_factor as usize > sluice_broker::partition::MAX_REPLICATION_FACTOR
    {
        bail!("default.replication.factor above 1 is not supported yet: partitions are not replicated between brokers");
    }

    let voters = match get("controller.quorum.voters") {
        Some(v) if !v.trim().is_empty() => parse_voters(v)?,
        _ => BTreeMap::new(),
    };
    let controller_listen = match get("controller.listener") {
        Some(a) => Some(socket_addr(a, "controller.listener")?),
        None => voters.get(&node_id).copied(),
    };
    if !voters.is_empty() && !voters.contains_key(&node_id) {
        bail!("controller.quorum.voters does not list this node ({node_id}); observer brokers are not supported yet");
    }
    let session_ms: u64 = parse(
        get("broker.session.timeout.ms"),
        "broker.session.timeout.ms",
        9000,
    )?;
    let metadata = MetadataConfig {
        node_id,
        data_dir,
        controller_listen,
        voters,
        bootstrap: parse(
            get("controller.quorum.bootstrap"),
            "controller.quorum.bootstrap",
            false,
        )?,
        default_num_partitions: broker.num_partitions,
        default_replication_factor: broker.default_replication_factor,
        broker_session_timeout: Duration::from_millis(session_ms),
    };
    Ok(Settings { broker, metadata })
}

fn check_known(key: &str) -> anyhow::Result<()> {
    if SERVER_KEYS.contains(&key) || topic_config::def_for_broker_synonym(key).is_some() {
        return Ok(());
    }
    bail!(
        "unknown config '{key}'. Broker configs use Kafka's names, e.g. log.retention.ms, num.partitions, message.max.bytes \
         (topic-level names like retention.ms belong on topics: set them with CreateTopics or kafka-configs)"
    )
}

fn parse<T: std::str::FromStr>(value: Option<&str>, name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: cannot use '{v}': {e}")),
    }
}

/// Accepts `HOST:PORT` or Kafka's `PLAINTEXT://HOST:PORT` (the first listener of a list).
fn strip_listener(value: &str) -> &str {
    let first = value.split(',').next().unwrap_or(value).trim();
    first.split_once("://").map_or(first, |(_, rest)| rest)
}

fn socket_addr(value: &str, name: &str) -> anyhow::Result<SocketAddr> {
    let v = strip_listener(value);
    let v = if v.starts_with(':') {
        format!("0.0.0.0{v}")
    } else {
        v.to_string()
    };
    v.to_socket_addrs()
        .with_context(|| format!("{name}: '{value}' is not a HOST:PORT address"))?
        .next()
        .with_context(|| format!("{name}: '{value}' resolves to no address"))
}

fn host_port(value: &str, name: &str) -> anyhow::Result<(String, u16)> {
    let v = strip_listener(value);
    let (host, port) = v
        .rsplit_once(':')
        .with_context(|| format!("{name}: '{value}' is not HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("{name}: bad port in '{value}'"))?;
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

/// `1@host:port,2@host:port,3@host:port` (Kafka's controller.quorum.voters).
fn parse_voters(value: &str) -> anyhow::Result<BTreeMap<i32, SocketAddr>> {
    let mut voters = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .with_context(|| format!("controller.quorum.voters: '{entry}' is not ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .with_context(|| format!("controller.quorum.voters: bad id in '{entry}'"))?;
        voters.insert(id, socket_addr(addr, "controller.quorum.voters")?);
    }
    Ok(voters)
}

/// Reads a TOML config file into Kafka-named settings (nested tables joined with dots).
fn read_config_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut out);
    for k in out.keys() {
        check_known(k).with_context(|| format!("in {}", path.display()))?;
    }
    Ok(out)
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Array(items) => {
            let joined: Vec<String> = items.iter().map(scalar).collect();
            out.insert(prefix.to_string(), joined.join(","));
        }
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

fn scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => format!("{d:?}"),
        toml::Value::Array(_) | toml::Value::Table(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_quoted_keys_mean_the_same() {
        let dir = std::env::temp_dir().join(format!("sluice-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, "\"log.retention.ms\" = 1000\nnum.partitions = 3\nlisteners = \"PLAINTEXT://127.0.0.1:19092\"\n").unwrap();
        let m = read_config_file(&path).unwrap();
        assert_eq!(m.get("log.retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(m.get("num.partitions").map(String::as_str), Some("3"));
        let s = build(m).unwrap();
        assert_eq!(s.broker.num_partitions, 3);
        assert_eq!(s.broker.listen.port(), 19092);
        assert_eq!(
            s.broker
                .static_configs
                .get("log.retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        std::fs::write(&path, "retention.mss = 5\n").unwrap();
        assert!(read_config_file(&path)
            .unwrap_err()
            .chain()
            .any(|e| e.to_string().contains("unknown config")));
    }

    #[test]
    fn voters_and_listeners_parse() {
        let v = parse_voters("1@127.0.0.1:9093, 2@127.0.0.1:9094").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            host_port("PLAINTEXT://example.com:9092", "x").unwrap(),
            ("example.com".to_string(), 9092)
        );
        assert!(parse_voters("x@1").is_err());
        let max_bytes = |v: &str| {
            build(BTreeMap::from([(
                "log.page.cache.max.bytes".to_string(),
                v.to_string(),
            )]))
            .map(|s| s.broker.page_cache_max_bytes)
        };
        assert_eq!(max_bytes("-1").unwrap(), None);
        assert_eq!(max_bytes("1048576").unwrap(), Some(1 << 20));
        assert!(max_bytes("-2").is_err());
        assert!(build(BTreeMap::from([(
            "log.retention.ms".to_string(),
            "-5".to_string()
        )]))
        .is_err());
    }
}
