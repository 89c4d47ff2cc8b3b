//! sluice-consumer-perf: Kafka's `kafka-consumer-perf-test` on librdkafka, without a JVM.
//!
//! Consumes `--messages` messages and prints the Java tool's columns: `start.time, end.time,
//! data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms,
//! fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec` (with `--show-detailed-stats`, one line per
//! reporting interval instead). Bytes are key plus value bytes, as Java counts them.
//!
//! With `--group` the consumer subscribes in that group, and `rebalance.time.ms` is the time
//! spent joining it; without one (the Java tool makes up a random group) it assigns every
//! partition itself, from the beginning (or the end with `--from-latest`), and commits nothing
//! (librdkafka still needs a `group.id` for that; it gets one that is never joined).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use clap::Parser;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_benches::perf::{format_java_date, print_metrics, read_properties};

/// One poll waits at most this long (the Java tool polls with 100 ms).
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Bound on the metadata request that finds the topic's partitions.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// The group.id librdkafka needs for assign() when --group is not given (never joined).
const NO_GROUP_ID: &str = "sluice-consumer-perf-no-group";
/// Consumer errors printed one by one before only counting them.
const MAX_PRINTED_ERRORS: u64 = 10;

/// Consume messages from a topic and report throughput like kafka-consumer-perf-test.
#[derive(Debug, Parser)]
#[command(name = "sluice-consumer-perf", version)]
struct Args {
    /// Kafka address(es) to connect to; overrides bootstrap.servers from --consumer.config.
    #[arg(long = "bootstrap-server", value_name = "BOOTSTRAP-SERVERS")]
    bootstrap_server: Option<String>,

    /// Topic to consume from.
    #[arg(long)]
    topic: String,

    /// Number of messages to consume.
    #[arg(long)]
    messages: u64,

    /// Consumer group to join; without it, all partitions are assigned with no group.
    #[arg(long)]
    group: Option<String>,

    /// Give up when no message arrived for this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout: u64,

    /// Consumer properties file (key=value lines), passed to librdkafka as they are.
    #[arg(long = "consumer.config", value_name = "CONFIG-FILE")]
    consumer_config: Option<PathBuf>,

    /// Print a line per reporting interval instead of one summary line.
    #[arg(long = "show-detailed-stats")]
    show_detailed_stats: bool,

    /// Milliseconds between detailed-stats lines.
    #[arg(
        long = "reporting-interval",
        value_name = "MS",
        default_value_t = 5_000
    )]
    reporting_interval: u64,

    /// Do not print the column header.
    #[arg(long = "hide-header")]
    hide_header: bool,

    /// Start from the end of the log instead of the beginning (auto.offset.reset=latest).
    #[arg(long = "from-latest")]
    from_latest: bool,

    /// Bytes to fetch per partition per request (max.partition.fetch.bytes).
    #[arg(long = "fetch-size", value_name = "BYTES")]
    fetch_size: Option<u64>,

    /// Print librdkafka's client metrics at the end of the run.
    #[arg(long = "print-metrics")]
    print_metrics: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.messages == 0 {
        bail!("--messages must be positive");
    }
    let config = client_config(&args)?;
    let context = PerfContext {
        join_started: Mutex::new(None),
        join_time_ms: AtomicU64::new(0),
        last_statistics: Mutex::new(None),
    };
    let consumer: BaseConsumer<PerfContext> =
        BaseConsumer::from_config_and_context(&config, context).context("creating the consumer")?;

    let timeout = Duration::from_millis(args.timeout);
    let reporting_interval = Duration::from_millis(args.reporting_interval.max(1));
    if !args.hide_header {
        print_header(args.show_detailed_stats);
    }

    let start_wall = SystemTime::now();
    let start = Instant::now();
    if args.group.is_some() {
        *consumer.context().join_started.lock().expect("join lock") = Some(start);
        consumer
            .subscribe(&[&args.topic])
            .context("subscribing to the topic")?;
    } else {
        assign_all_partitions(&consumer, &args.topic, args.from_latest)?;
    }

    let mut messages_read: u64 = 0;
    let mut bytes_read: u64 = 0;
    let mut errors: u64 = 0;
    let mut last_report = Progress {
        at: start,
        messages: 0,
        bytes: 0,
        join_time_ms: 0,
    };
    let mut now = Instant::now();
    let mut last_consumed = now;
    // Bounded: every pass either reads a message or lets time move towards the timeout.
    while messages_read < args.messages && now.duration_since(last_consumed) <= timeout {
        let polled = consumer.poll(POLL_TIMEOUT);
        now = Instant::now();
        match polled {
            Some(Ok(message)) => {
                last_consumed = now;
                messages_read += 1;
                bytes_read += (message.key_len() + message.payload_len()) as u64;
                if args.show_detailed_stats
                    && now.duration_since(last_report.at) >= reporting_interval
                {
                    let join_time_ms = consumer.context().join_time_ms.load(Ordering::Relaxed);
                    let current = Progress {
                        at: now,
                        messages: messages_read,
                        bytes: bytes_read,
                        join_time_ms,
                    };
                    print_progress(&last_report, &current, start_wall, start);
                    last_report = current;
                }
            }
            Some(Err(err)) => {
                errors += 1;
                if errors <= MAX_PRINTED_ERRORS {
                    eprintln!("consumer error: {err}");
                }
            }
            None => {}
        }
    }
    let end = Instant::now();
    if messages_read < args.messages {
        println!(
            "WARNING: Exiting before consuming the expected number of messages: timeout ({} ms) exceeded. You can use the --timeout option to increase the timeout.",
            args.timeout
        );
    }

    if !args.show_detailed_stats {
        let join_time_ms = consumer.context().join_time_ms.load(Ordering::Relaxed);
        let elapsed_ms = (end.duration_since(start).as_secs_f64() * 1000.0).max(1e-3);
        let fetch_time_ms = (elapsed_ms - join_time_ms as f64).max(1e-3);
        let mb = bytes_read as f64 / (1024.0 * 1024.0);
        println!(
            "{}, {}, {:.4}, {:.4}, {}, {:.4}, {}, {}, {:.4}, {:.4}",
            format_java_date(start_wall),
            format_java_date(start_wall + end.duration_since(start)),
            mb,
            1000.0 * mb / elapsed_ms,
            messages_read,
            messages_read as f64 / (elapsed_ms / 1000.0),
            join_time_ms,
            fetch_time_ms.round() as u64,
            mb / (fetch_time_ms / 1000.0),
            messages_read as f64 / (fetch_time_ms / 1000.0),
        );
    }
    if args.print_metrics {
        wait_for_fresh_statistics(&consumer, end);
        match consumer
            .context()
            .last_statistics
            .lock()
            .expect("statistics lock")
            .take()
        {
            Some((_, statistics)) => print_metrics(&statistics),
            None => eprintln!("no librdkafka statistics were reported"),
        }
    }
    if errors > MAX_PRINTED_ERRORS {
        eprintln!("{errors} consumer errors in all");
    }
    Ok(())
}

/// The librdkafka configuration: the Java tool's settings, then --consumer.config, then
/// the command-line options.
fn client_config(args: &Args) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("client.id", "perf-consumer-client");
    let reset = if args.from_latest {
        "latest"
    } else {
        "earliest"
    };
    config.set("auto.offset.reset", reset);
    // The Java tool turns CRC checks off; librdkafka's check.crcs is off by default.
    if let Some(path) = &args.consumer_config {
        for (key, value) in read_properties(path)? {
            config.set(key, value);
        }
    }
    if let Some(servers) = &args.bootstrap_server {
        config.set("bootstrap.servers", servers);
    }
    if config.get("bootstrap.servers").is_none() {
        bail!(
            "either --bootstrap-server or bootstrap.servers in --consumer.config must be specified"
        );
    }
    match &args.group {
        Some(group) => {
            config.set("group.id", group);
        }
        None => {
            if config.get("group.id").is_some() {
                bail!("group.id is set in --consumer.config; pass it as --group instead");
            }
            // librdkafka's assign() needs a group.id even though it joins no group; this
            // one is never joined and, with auto-commit off, never written to.
            config.set("group.id", NO_GROUP_ID);
            config.set("enable.auto.commit", "false");
        }
    }
    if let Some(bytes) = args.fetch_size {
        config.set("max.partition.fetch.bytes", bytes.to_string());
    }
    if args.print_metrics && config.get("statistics.interval.ms").is_none() {
        // --print-metrics needs librdkafka's statistics; they are off by default.
        config.set("statistics.interval.ms", "1000");
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    Ok(config)
}

/// Assigns every partition of `topic`, from the beginning or the end of each log.
fn assign_all_partitions(
    consumer: &BaseConsumer<PerfContext>,
    topic: &str,
    from_latest: bool,
) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .context("fetching the topic's metadata")?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} is not in the metadata"))?;
    if let Some(err) = found.error() {
        bail!(
            "topic {topic}: {:?}",
            rdkafka::types::RDKafkaErrorCode::from(err)
        );
    }
    if found.partitions().is_empty() {
        bail!("topic {topic} has no partitions");
    }
    let offset = if from_latest {
        Offset::End
    } else {
        Offset::Beginning
    };
    let mut assignment = TopicPartitionList::new();
    for partition in found.partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), offset)
            .context("building the assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning the partitions")?;
    Ok(())
}

fn print_header(show_detailed_stats: bool) {
    let extended = ", rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec";
    if show_detailed_stats {
        println!("time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec{extended}");
    } else {
        println!("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec{extended}");
    }
}

/// Totals at one reporting point, for the detailed-stats lines.
struct Progress {
    at: Instant,
    messages: u64,
    bytes: u64,
    join_time_ms: u64,
}

/// One `--show-detailed-stats` line, as the Java tool's `printConsumerProgress` prints it
/// (thread id 0: this tool consumes on one thread).
fn print_progress(last: &Progress, current: &Progress, start_wall: SystemTime, start: Instant) {
    let elapsed_ms = (current.at.duration_since(last.at).as_secs_f64() * 1000.0).max(1e-3);
    let join_ms = current.join_time_ms.saturating_sub(last.join_time_ms);
    let fetch_ms = (elapsed_ms - join_ms as f64).max(1e-3);
    let interval_mb = (current.bytes - last.bytes) as f64 / (1024.0 * 1024.0);
    let interval_messages = (current.messages - last.messages) as f64;
    println!(
        "{}, 0, {:.4}, {:.4}, {}, {:.4}, {}, {}, {:.4}, {:.4}",
        format_java_date(start_wall + current.at.duration_since(start)),
        current.bytes as f64 / (1024.0 * 1024.0),
        1000.0 * interval_mb / elapsed_ms,
        current.messages,
        1000.0 * interval_messages / elapsed_ms,
        join_ms,
        fetch_ms.round() as u64,
        1000.0 * interval_mb / fetch_ms,
        1000.0 * interval_messages / fetch_ms,
    );
}

/// Serves librdkafka's statistics and logs (while the consumer is polled), keeps the time
/// spent joining the group.
fn wait_for_fresh_statistics(consumer: &BaseConsumer<PerfContext>, after: Instant) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let fresh = matches!(
            &*consumer.context().last_statistics.lock().expect("statistics lock"),
            Some((at, _)) if *at >= after
        );
        if fresh {
            return;
        }
        // Statistics arrive through poll; a message polled here is past the run and dropped.
        let _ = consumer.poll(Duration::from_millis(50));
    }
}

struct PerfContext {
    /// When the current group join started (subscribe, or a revocation).
    join_started: Mutex<Option<Instant>>,
    /// Total time spent joining the group, as the Java tool's rebalance listener counts it.
    join_time_ms: AtomicU64,
    last_statistics: Mutex<Option<(Instant, Statistics)>>,
}

impl ClientContext for PerfContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // librdkafka only sends what log_level allows (warnings, unless the config says more).
        eprintln!("librdkafka {level:?} {fac}: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("librdkafka error: {error}: {reason}");
    }

    fn stats(&self, statistics: Statistics) {
        *self.last_statistics.lock().expect("statistics lock") = Some((Instant::now(), statistics));
    }
}

impl ConsumerContext for PerfContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            *self.join_started.lock().expect("join lock") = Some(Instant::now());
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            if let Some(started) = self.join_started.lock().expect("join lock").take() {
                let ms = started.elapsed().as_millis() as u64;
                self.join_time_ms.fetch_add(ms, Ordering::Relaxed);
            }
        }
    }
}
