//! Kafka's topic configs: names, types, defaults, validation, and how a topic's effective
//! value is resolved (topic override → cluster-wide dynamic default → the broker's static
//! setting → built-in default), which is what DescribeConfigs reports as sources and
//! synonyms and what the storage engine's `LogConfig` is built from.

use std::collections::BTreeMap;

use sluice_storage::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};

/// Kafka's `ConfigSource` codes as DescribeConfigs v1+ carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// Kafka's `ConfigType` codes (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    Int {
        min: i64,
    },
    Long {
        min: i64,
    },
    Double,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A comma-separated list whose items come from a fixed set.
    List(&'static [&'static str]),
}

impl ConfigKind {
    pub fn type_code(self) -> i8 {
        match self {
            ConfigKind::Boolean => 1,
            ConfigKind::Choice(_) => 2,
            ConfigKind::Int { .. } => 3,
            ConfigKind::Long { .. } => 5,
            ConfigKind::Double => 6,
            ConfigKind::List(_) => 7,
        }
    }
}

/// One topic-level config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker-level config that sets the default for every topic.
    pub broker_synonym: &'static str,
    pub default: &'static str,
    pub kind: ConfigKind,
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

/// The topic configs Sluice accepts, with Kafka 4's defaults.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
        default: "delete",
        kind: ConfigKind::List(&["delete", "compact"]),
        doc: "delete: drop old segments by retention; compact: keep the latest record per key.",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_synonym: "compression.type",
        default: "producer",
        kind: ConfigKind::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        doc: "Batches are stored as the producer compressed them.",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_synonym: "log.cleaner.delete.retention.ms",
        default: "86400000",
        kind: ConfigKind::Long { min: 0 },
        doc: "How long tombstones are kept in compacted topics.",
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        broker_synonym: "log.segment.delete.delay.ms",
        default: "60000",
        kind: ConfigKind::Long { min: 0 },
        doc: "Delay before a deleted segment's file is removed.",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_synonym: "log.flush.interval.messages",
        default: LONG_MAX,
        kind: ConfigKind::Long { min: 1 },
        doc: "fsync after this many messages (1: before every acknowledgement).",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_synonym: "log.flush.interval.ms",
        default: LONG_MAX,
        kind: ConfigKind::Long { min: 0 },
        doc: "fsync at least this often.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_synonym: "log.index.interval.bytes",
        default: "4096",
        kind: ConfigKind::Int { min: 0 },
        doc: "Bytes between offset index entries.",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_synonym: "log.cleaner.max.compaction.lag.ms",
        default: LONG_MAX,
        kind: ConfigKind::Long { min: 1 },
        doc: "Longest time a record may stay uncompacted.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
        default: "1048588",
        kind: ConfigKind::Int { min: 0 },
        doc: "Largest record batch the topic accepts.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_synonym: "log.message.timestamp.after.max.ms",
        default: "3600000",
        kind: ConfigKind::Long { min: 0 },
        doc: "How far in the future a CreateTime timestamp may be.",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_synonym: "log.message.timestamp.before.max.ms",
        default: LONG_MAX,
        kind: ConfigKind::Long { min: 0 },
        doc: "How far in the past a CreateTime timestamp may be.",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
        default: "CreateTime",
        kind: ConfigKind::Choice(&["CreateTime", "LogAppendTime"]),
        doc: "Whether record timestamps are the producer's or the broker's append time.",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        kind: ConfigKind::Double,
        doc: "Dirty fraction of the log that triggers compaction.",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        kind: ConfigKind::Long { min: 0 },
        doc: "Shortest time a record stays uncompacted.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
        default: "1",
        kind: ConfigKind::Int { min: 1 },
        doc: "Replicas that must acknowledge an acks=all write.",
    },
    TopicConfigDef {
        name: "preallocate",
        broker_synonym: "log.preallocate",
        default: "false",
        kind: ConfigKind::Boolean,
        doc: "Preallocate segment files.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
        default: "-1",
        kind: ConfigKind::Long { min: -1 },
        doc: "Largest size of a partition's log before old segments are deleted (-1: unlimited).",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: -1 },
        doc: "How long records are kept (-1: forever).",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
        default: "1073741824",
        kind: ConfigKind::Int { min: 14 },
        doc: "Size at which a new segment file is started.",
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        broker_synonym: "log.index.size.max.bytes",
        default: "10485760",
        kind: ConfigKind::Int { min: 4 },
        doc: "Largest size of a segment's offset index.",
    },
    TopicConfigDef {
        name: "segment.jitter.ms",
        broker_synonym: "log.roll.jitter.ms",
        default: "0",
        kind: ConfigKind::Long { min: 0 },
        doc: "Random jitter subtracted from segment.ms.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: 1 },
        doc: "Age at which a new segment file is started.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_synonym: "unclean.leader.election.enable",
        default: "false",
        kind: ConfigKind::Boolean,
        doc: "Allow an out-of-sync replica to become leader (may lose data).",
    },
];

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config whose broker-level synonym is `broker_name`.
pub fn def_for_broker_synonym(broker_name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_synonym == broker_name)
}

/// Checks a value against its kind; the error text goes back to the client with INVALID_CONFIG.
pub fn validate_value(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid value '{value}' for config '{}': {why}",
            def.name
        ))
    };
    match def.kind {
        ConfigKind::Boolean => match value {
            "true" | "false" => Ok(()),
            _ => bad("expected true or false"),
        },
        ConfigKind::Int { min } => match value.trim().parse::<i32>() {
            Ok(v) if i64::from(v) >= min => Ok(()),
            Ok(_) => bad(&format!("must be at least {min}")),
            Err(_) => bad("expected a 32-bit integer"),
        },
        ConfigKind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => bad(&format!("must be at least {min}")),
            Err(_) => bad("expected a 64-bit integer"),
        },
        ConfigKind::Double => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => bad("expected a number between 0 and 1"),
        },
        ConfigKind::Choice(choices) => {
            if choices.contains(&value) {
                Ok(())
            } else {
                bad(&format!("expected one of {}", choices.join(", ")))
            }
        }
        ConfigKind::List(items) => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            if !parts.is_empty() && parts.iter().all(|p| items.contains(p)) {
                Ok(())
            } else {
                bad(&format!(
                    "expected a comma-separated list of {}",
                    items.join(", ")
                ))
            }
        }
    }
}

/// Validates a topic config by name and value.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    match topic_config_def(name) {
        Some(def) => validate_value(def, value),
        None => Err(format!("unknown topic config '{name}'")),
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

/// A topic config's effective value with the chain of synonyms behind it, most specific first.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: ConfigSource,
    pub synonyms: Vec<Sourced>,
}

/// The layers a topic config is resolved through, below the topic's own overrides.
#[derive(Debug, Clone, Default)]
pub struct ConfigLayers<'a> {
    /// Cluster-wide dynamic broker configs (IncrementalAlterConfigs on the BROKER resource "").
    pub cluster_dynamic: Option<&'a BTreeMap<String, String>>,
    /// Broker configs set at startup (flags, env, config file).
    pub broker_static: Option<&'a BTreeMap<String, String>>,
}

impl ConfigLayers<'_> {
    /// Resolves one config for a topic with the given overrides.
    pub fn resolve(
        &self,
        def: &'static TopicConfigDef,
        overrides: &BTreeMap<String, String>,
    ) -> ResolvedConfig {
        let mut synonyms = Vec::with_capacity(3);
        if let Some(v) = overrides.get(def.name) {
            synonyms.push(Sourced {
                name: def.name.into(),
                value: v.clone(),
                source: ConfigSource::DynamicTopic,
            });
        }
        if let Some(v) = self.cluster_dynamic.and_then(|m| m.get(def.broker_synonym)) {
            synonyms.push(Sourced {
                name: def.broker_synonym.into(),
                value: v.clone(),
                source: ConfigSource::DynamicDefaultBroker,
            });
        }
        if let Some(v) = self.broker_static.and_then(|m| m.get(def.broker_synonym)) {
            synonyms.push(Sourced {
                name: def.broker_synonym.into(),
                value: v.clone(),
                source: ConfigSource::StaticBroker,
            });
        }
        synonyms.push(Sourced {
            name: def.broker_synonym.into(),
            value: def.default.into(),
            source: ConfigSource::Default,
        });
        let first = &synonyms[0];
        ResolvedConfig {
            def,
            value: first.value.clone(),
            source: first.source,
            synonyms,
        }
    }

    /// Every topic config, resolved.
    pub fn resolve_all(&self, overrides: &BTreeMap<String, String>) -> Vec<ResolvedConfig> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| self.resolve(def, overrides))
            .collect()
    }

    fn value(&self, name: &str, overrides: &BTreeMap<String, String>) -> String {
        match topic_config_def(name) {
            Some(def) => self.resolve(def, overrides).value,
            None => String::new(),
        }
    }

    fn long(&self, name: &str, overrides: &BTreeMap<String, String>) -> i64 {
        let fallback = topic_config_def(name)
            .and_then(|d| d.default.parse().ok())
            .unwrap_or(0);
        self.value(name, overrides)
            .trim()
            .parse()
            .unwrap_or(fallback)
    }

    /// The storage settings for a topic with these overrides.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let policy = self.value("cleanup.policy", overrides);
        let compact = policy.split(',').any(|p| p.trim() == "compact");
        let delete = policy.split(',').any(|p| p.trim() == "delete");
        let cleanup_policy = match (compact, delete) {
            (true, true) => CleanupPolicy::CompactDelete,
            (true, false) => CleanupPolicy::Compact,
            _ => CleanupPolicy::Delete,
        };
        let flush_messages = self.long("flush.messages", overrides);
        let flush_ms = self.long("flush.ms", overrides);
        let flush = if flush_messages <= 1 {
            FlushPolicy::Always
        } else if flush_messages == i64::MAX && flush_ms == i64::MAX {
            FlushPolicy::None
        } else {
            FlushPolicy::Every {
                messages: flush_messages as u64,
                interval_ms: flush_ms.max(0) as u64,
            }
        };
        let timestamp_type = if self.value("message.timestamp.type", overrides) == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        };
        LogConfig {
            segment_bytes: self.long("segment.bytes", overrides).max(14) as u64,
            segment_ms: self.long("segment.ms", overrides),
            retention_ms: self.long("retention.ms", overrides),
            retention_bytes: self.long("retention.bytes", overrides),
            cleanup_policy,
            delete_retention_ms: self.long("delete.retention.ms", overrides),
            min_compaction_lag_ms: self.long("min.compaction.lag.ms", overrides),
            index_interval_bytes: self
                .long("index.interval.bytes", overrides)
                .clamp(0, i64::from(u32::MAX)) as u32,
            segment_index_bytes: self
                .long("segment.index.bytes", overrides)
                .clamp(4, i64::from(u32::MAX)) as u32,
            max_message_bytes: self
                .long("max.message.bytes", overrides)
                .clamp(0, i64::from(u32::MAX)) as u32,
            timestamp_type,
            flush,
        }
    }

    /// `min.insync.replicas` for a topic.
    pub fn min_insync_replicas(&self, overrides: &BTreeMap<String, String>) -> i64 {
        self.long("min.insync.replicas", overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_order_is_topic_then_cluster_then_static_then_default() {
        let cluster = BTreeMap::from([("log.retention.ms".to_string(), "2000".to_string())]);
        let static_ = BTreeMap::from([
            ("log.retention.ms".to_string(), "3000".to_string()),
            ("log.segment.bytes".to_string(), "1048576".to_string()),
        ]);
        let layers = ConfigLayers {
            cluster_dynamic: Some(&cluster),
            broker_static: Some(&static_),
        };
        let topic = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let def = topic_config_def("retention.ms").unwrap();

        let r = layers.resolve(def, &topic);
        assert_eq!(
            (r.value.as_str(), r.source),
            ("1000", ConfigSource::DynamicTopic)
        );
        let sources: Vec<_> = r
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.source))
            .collect();
        assert_eq!(
            sources,
            [
                ("retention.ms", ConfigSource::DynamicTopic),
                ("log.retention.ms", ConfigSource::DynamicDefaultBroker),
                ("log.retention.ms", ConfigSource::StaticBroker),
                ("log.retention.ms", ConfigSource::Default),
            ]
        );
        assert_eq!(layers.resolve(def, &BTreeMap::new()).value, "2000");
        let seg = layers.resolve(topic_config_def("segment.bytes").unwrap(), &BTreeMap::new());
        assert_eq!(
            (seg.value.as_str(), seg.source),
            ("1048576", ConfigSource::StaticBroker)
        );
        let lc = layers.log_config(&topic);
        assert_eq!((lc.retention_ms, lc.segment_bytes), (1000, 1_048_576));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2")
            .unwrap_err()
            .contains("at least -1"));
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("no.such.config", "1")
            .unwrap_err()
            .contains("unknown"));
        assert!(validate("segment.bytes", "99999999999").is_err());
    }

    #[test]
    fn log_config_maps_policies() {
        let layers = ConfigLayers::default();
        let compact =
            BTreeMap::from([("cleanup.policy".to_string(), "compact,delete".to_string())]);
        assert_eq!(
            layers.log_config(&compact).cleanup_policy,
            CleanupPolicy::CompactDelete
        );
        let flush = BTreeMap::from([("flush.messages".to_string(), "1".to_string())]);
        assert_eq!(layers.log_config(&flush).flush, FlushPolicy::Always);
        assert_eq!(layers.log_config(&BTreeMap::new()).flush, FlushPolicy::None);
        assert_eq!(layers.log_config(&BTreeMap::new()), LogConfig::default());
    }
}
