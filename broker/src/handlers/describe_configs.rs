//! DescribeConfigs: every config of a topic or of the broker with its effective value,
//! source, synonyms (v1+), type and documentation (v3+), as `kafka-configs --describe`
//! and admin clients expect.

use std::sync::Arc;

use sluice_protocol::kafka::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use sluice_protocol::kafka::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use sluice_protocol::kafka::protocol::StrBytes;

use super::{message, str_bytes};
use crate::broker::Broker;
use crate::config_resources::{self, Resource};
use crate::topic_config::{ConfigSource, TOPIC_CONFIGS};

/// Kafka's ConfigType codes for broker settings that are not topic-config synonyms.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_SHORT: i8 = 4;

/// One described entry before it is turned into the response struct.
struct Entry {
    name: String,
    value: String,
    source: ConfigSource,
    read_only: bool,
    config_type: i8,
    doc: &'static str,
    synonyms: Vec<(String, String, ConfigSource)>,
}

pub fn handle(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = config_resources::parse(r.resource_type, r.resource_name.as_str())
                .and_then(|res| entries(broker, &res));
            match entries {
                Err((code, why)) => result
                    .with_error_code(code.code())
                    .with_error_message(message(why)),
                Ok(entries) => {
                    let keys: Option<Vec<String>> = r
                        .configuration_keys
                        .map(|k| k.iter().map(|s| s.to_string()).collect());
                    let configs = entries
                        .into_iter()
                        .filter(|e| keys.as_ref().is_none_or(|k| k.contains(&e.name)))
                        .map(|e| {
                            to_result(
                                e,
                                version,
                                request.include_synonyms,
                                request.include_documentation,
                            )
                        })
                        .collect();
                    result.with_configs(configs)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entries(broker: &Broker, resource: &Resource) -> Result<Vec<Entry>, config_resources::Refusal> {
    let image = broker.image();
    let layers = broker.replicas.config_layers(&image);
    match resource {
        Resource::Topic(_) => {
            let overrides = config_resources::current(broker, resource)?;
            Ok(layers
                .resolve_all(&overrides)
                .into_iter()
                .map(|rc| Entry {
                    name: rc.def.name.to_string(),
                    value: rc.value,
                    source: rc.source,
                    read_only: false,
                    config_type: rc.def.kind.type_code(),
                    doc: rc.def.doc,
                    synonyms: rc
                        .synonyms
                        .into_iter()
                        .map(|s| (s.name, s.value, s.source))
                        .collect(),
                })
                .collect())
        }
        Resource::Broker(id) => {
            if let Some(id) = id {
                if *id != broker.config.node_id {
                    return Err((
                        sluice_protocol::ResponseError::InvalidRequest,
                        format!(
                            "this is broker {}; ask broker {id} for its configs",
                            broker.config.node_id
                        ),
                    ));
                }
            }
            let mut out = server_entries(broker);
            // Broker-level synonyms of topic configs, resolved below the topic layer.
            let none = Default::default();
            for def in TOPIC_CONFIGS {
                let rc = layers.resolve(def, &none);
                let synonyms: Vec<_> = rc
                    .synonyms
                    .into_iter()
                    .map(|s| (s.name, s.value, s.source))
                    .collect();
                out.push(Entry {
                    name: def.broker_synonym.to_string(),
                    value: rc.value,
                    source: rc.source,
                    read_only: false,
                    config_type: def.kind.type_code(),
                    doc: def.doc,
                    synonyms,
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out.dedup_by(|a, b| a.name == b.name);
            Ok(out)
        }
    }
}

/// The broker's own fixed settings (read-only: they change with a restart).
fn server_entries(broker: &Broker) -> Vec<Entry> {
    let c = &broker.config;
    let advertised = format!("PLAINTEXT://{}:{}", c.advertised_host, c.advertised_port);
    let fixed = |name: &str, value: String, config_type: i8, doc: &'static str| Entry {
        name: name.into(),
        value: value.clone(),
        source: ConfigSource::StaticBroker,
        read_only: true,
        config_type,
        doc,
        synonyms: vec![(name.into(), value, ConfigSource::StaticBroker)],
    };
    vec![
        fixed(
            "node.id",
            c.node_id.to_string(),
            TYPE_INT,
            "This broker's id.",
        ),
        fixed(
            "broker.id",
            c.node_id.to_string(),
            TYPE_INT,
            "This broker's id.",
        ),
        fixed(
            "log.dirs",
            c.data_dir.display().to_string(),
            TYPE_STRING,
            "Where partition logs are stored.",
        ),
        fixed(
            "listeners",
            format!("PLAINTEXT://{}", c.listen),
            TYPE_STRING,
            "The Kafka listener.",
        ),
        fixed(
            "advertised.listeners",
            advertised,
            TYPE_STRING,
            "The address clients are told to use.",
        ),
        fixed(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
            "Create unknown topics on metadata requests.",
        ),
        fixed(
            "num.partitions",
            c.num_partitions.to_string(),
            TYPE_INT,
            "Partitions of auto-created topics.",
        ),
        fixed(
            "default.replication.factor",
            c.default_replication_factor.to_string(),
            TYPE_SHORT,
            "Replication factor of auto-created topics.",
        ),
        fixed(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            TYPE_INT,
            "Largest request accepted.",
        ),
    ]
}

fn to_result(
    e: Entry,
    version: i16,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut r = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(e.name))
        .with_value(Some(str_bytes(e.value)))
        .with_read_only(e.read_only)
        .with_config_source(e.source as i8);
    if include_synonyms {
        r = r.with_synonyms(
            e.synonyms
                .into_iter()
                .map(|(n, v, s)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(n))
                        .with_value(Some(str_bytes(v)))
                        .with_source(s as i8)
                })
                .collect(),
        );
    }
    if version >= 3 {
        r = r.with_config_type(e.config_type);
        if include_documentation {
            r = r.with_documentation(Some(StrBytes::from_static_str(e.doc)));
        }
    }
    r
}
