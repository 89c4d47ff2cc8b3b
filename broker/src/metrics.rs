//! Broker metrics, exported in Prometheus format on the admin HTTP port.
//!
//! Names: `sluice_requests_total{api}`, `sluice_request_duration_seconds{api}` (histogram),
//! `sluice_request_errors_total{api,error}`, `sluice_bytes_in_total{topic}`,
//! `sluice_bytes_out_total{topic}`, `sluice_messages_in_total{topic}`, `sluice_connections`,
//! and per partition `sluice_partition_log_end_offset`, `sluice_partition_log_start_offset`,
//! `sluice_partition_high_watermark`, `sluice_partition_size_bytes`
//! (labels `topic`, `partition`), refreshed when scraped.

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

/// Renders the Prometheus text, refreshing partition gauges first.
pub fn render(broker: &Broker) -> String {
    for p in broker.replicas.all() {
        let labels = [
            ("topic", p.topic.to_string()),
            ("partition", p.index.to_string()),
        ];
        let log = p.log();
        metrics::gauge!("sluice_partition_log_end_offset", &labels)
            .set(log.log_end_offset() as f64);
        metrics::gauge!("sluice_partition_log_start_offset", &labels)
            .set(log.log_start_offset() as f64);
        metrics::gauge!("sluice_partition_high_watermark", &labels).set(p.high_watermark() as f64);
        metrics::gauge!("sluice_partition_size_bytes", &labels).set(log.size_bytes() as f64);
    }
    match broker.prometheus() {
        Some(handle) => handle.render(),
        None => String::new(),
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
    }
}
