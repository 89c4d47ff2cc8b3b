//! Broker metrics, exported in Prometheus format on the admin HTTP port.
//!
//! Names: `sluice_requests_total{api}`, `sluice_request_duration_seconds{api}` (histogram),
//! `sluice_request_errors_total{api,error}`, `sluice_bytes_in_total{topic}`,
//! `sluice_bytes_out_total{topic}`, `sluice_messages_in_total{topic}`, `sluice_connections`,
//! and per partition `sluice_partition_log_end_offset`, `sluice_partition_log_start_offset`,
//! `sluice_partition_high_watermark`, `sluice_partition_size_bytes` (labels `topic`,
//! `partition`). For consumer lag, kafka-exporter's names: `kafka_consumergroup_lag`,
//! `kafka_consumergroup_current_offset` (labels `consumergroup`, `topic`, `partition`),
//! `kafka_topic_partition_current_offset`, `kafka_topic_partition_oldest_offset`. Gauges
//! are computed from live state at each scrape.

use std::fmt::Write;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sluice_protocol::{Response, ResponseError};

use crate::broker::Broker;

/// Latency buckets (seconds) for request histograms: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder. Returns `None` if one is already installed
/// (e.g. a second broker in one test process), in which case metrics go to the first.
pub fn install_recorder() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
        .ok()?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}

/// Renders the Prometheus text: the recorder's counters and histograms, then gauges of
/// partitions and consumer groups computed from live state (so a deleted topic or group
/// leaves no stale series behind).
pub fn render(broker: &Broker) -> String {
    let mut out = match broker.prometheus() {
        Some(handle) => handle.render(),
        None => String::new(),
    };
    render_partitions(broker, &mut out);
    render_consumer_lag(broker, &mut out);
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn render_partitions(broker: &Broker, out: &mut String) {
    let mut partitions = broker.replicas.all();
    partitions.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    type Gauge = (
        &'static str,
        &'static str,
        fn(&crate::partition::Partition) -> i64,
    );
    let gauges: [Gauge; 6] = [
        (
            "sluice_partition_log_end_offset",
            "Next offset to be written.",
            |p| p.log().log_end_offset(),
        ),
        (
            "sluice_partition_log_start_offset",
            "First offset still in the log.",
            |p| p.log().log_start_offset(),
        ),
        (
            "sluice_partition_high_watermark",
            "Offsets below it are committed and readable.",
            |p| p.high_watermark(),
        ),
        (
            "sluice_partition_size_bytes",
            "Bytes of the partition's log on disk.",
            |p| p.log().size_bytes() as i64,
        ),
        // kafka-exporter's names, so dashboards and autoscalers built for it work unchanged.
        (
            "kafka_topic_partition_current_offset",
            "Latest (high watermark) offset of a partition.",
            |p| p.high_watermark(),
        ),
        (
            "kafka_topic_partition_oldest_offset",
            "Oldest offset of a partition.",
            |p| p.log().log_start_offset(),
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, help);
        for p in &partitions {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                escape(&p.topic),
                p.index,
                value(p)
            );
        }
    }
}

fn render_consumer_lag(broker: &Broker, out: &mut String) {
    let mut committed = broker.groups.committed_offsets();
    committed.sort();
    family(
        out,
        "kafka_consumergroup_current_offset",
        "Committed offset of a consumer group on a partition.",
    );
    for (g, t, p, offset) in &committed {
        let _ = writeln!(out, "kafka_consumergroup_current_offset{{consumergroup=\"{}\",topic=\"{}\",partition=\"{p}\"}} {offset}", escape(g), escape(t));
    }
    family(
        out,
        "kafka_consumergroup_lag",
        "Latest offset minus the committed offset of a consumer group on a partition.",
    );
    for (g, t, p, offset) in &committed {
        let Some(partition) = broker.replicas.get(t, *p) else {
            continue;
        };
        let lag = (partition.high_watermark() - offset).max(0);
        let _ = writeln!(
            out,
            "kafka_consumergroup_lag{{consumergroup=\"{}\",topic=\"{}\",partition=\"{p}\"}} {lag}",
            escape(g),
            escape(t)
        );
    }
}

fn count(api: &'static str, code: i16) {
    if code != 0 {
        let name = format!(
            "{:?}",
            ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code))
        );
        metrics::counter!("sluice_request_errors_total", "api" => api, "error" => name)
            .increment(1);
    }
}

/// Counts the error codes a response carries, per API and error name.
pub fn count_response_errors(api: &'static str, response: &Response) {
    match response {
        Response::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| count(api, p.error_code)),
        Response::Fetch(r) => {
            count(api, r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(api, p.error_code));
        }
        Response::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(api, p.error_code)),
        Response::Metadata(r) => r.topics.iter().for_each(|t| count(api, t.error_code)),
        Response::CreateTopics(r) => r.topics.iter().for_each(|t| count(api, t.error_code)),
        Response::DeleteTopics(r) => r.responses.iter().for_each(|t| count(api, t.error_code)),
        Response::CreatePartitions(r) => r.results.iter().for_each(|t| count(api, t.error_code)),
        Response::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(api, p.error_code)),
        Response::DescribeConfigs(r) => r.results.iter().for_each(|t| count(api, t.error_code)),
        Response::AlterConfigs(r) => r.responses.iter().for_each(|t| count(api, t.error_code)),
        Response::IncrementalAlterConfigs(r) => {
            r.responses.iter().for_each(|t| count(api, t.error_code))
        }
        Response::OffsetForLeaderEpoch(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(api, p.error_code)),
        Response::DescribeCluster(r) => count(api, r.error_code),
        Response::ApiVersions(r) => count(api, r.error_code),
        Response::FindCoordinator(r) => {
            count(api, r.error_code);
            r.coordinators.iter().for_each(|c| count(api, c.error_code));
        }
        Response::JoinGroup(r) => count(api, r.error_code),
        Response::InitProducerId(r) => count(api, r.error_code),
        Response::SyncGroup(r) => count(api, r.error_code),
        Response::Heartbeat(r) => count(api, r.error_code),
        Response::LeaveGroup(r) => {
            count(api, r.error_code);
            r.members.iter().for_each(|m| count(api, m.error_code));
        }
        Response::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(api, p.error_code)),
        Response::OffsetFetch(r) => {
            count(api, r.error_code);
            r.groups.iter().for_each(|g| count(api, g.error_code));
        }
        Response::DescribeGroups(r) => r.groups.iter().for_each(|g| count(api, g.error_code)),
        Response::ListGroups(r) => count(api, r.error_code),
        Response::DeleteGroups(r) => r.results.iter().for_each(|g| count(api, g.error_code)),
        Response::OffsetDelete(r) => {
            count(api, r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(api, p.error_code));
        }
        Response::AddPartitionsToTxn(r) => r
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| &t.results_by_partition)
            .for_each(|p| count(api, p.partition_error_code)),
        Response::AddOffsetsToTxn(r) => count(api, r.error_code),
        Response::EndTxn(r) => count(api, r.error_code),
        Response::TxnOffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(api, p.error_code)),
        Response::DescribeProducers(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| count(api, p.error_code)),
        Response::DescribeTransactions(r) => r
            .transaction_states
            .iter()
            .for_each(|t| count(api, t.error_code)),
        Response::ListTransactions(r) => count(api, r.error_code),
    }
}
