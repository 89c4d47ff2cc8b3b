//! sluice-producer-perf: Kafka's `kafka-producer-perf-test` on librdkafka, without a JVM.
//!
//! Same options and same output: a progress line every 5 s and a summary line with latency
//! percentiles, latency being the time from `send` to the delivery report (the broker's
//! acknowledgement), as the Java tool measures it. Every `--producer-props`/`--producer.config`
//! entry goes to librdkafka as it is, so librdkafka's defaults apply where the Java producer's
//! differ (librdkafka: `acks=all`, `enable.idempotence=false`, `linger.ms=5`; Java 3.x+:
//! `acks=all`, `enable.idempotence=true`, `linger.ms=5` since 4.0). Unknown properties are
//! rejected with librdkafka's own error.
//!
//! Beyond the Java tool: `--create-topic PARTITIONS` creates the topic first (CreateTopics, or
//! the in-process mock cluster's topic when `test.mock.num.brokers` is set), and
//! `--print-latency-us` adds a line of percentiles in microseconds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use sluice_benches::perf::{parse_key_value, print_metrics, read_properties};

/// Progress lines come this often (the Java tool's fixed 5 s).
const REPORTING_INTERVAL: Duration = Duration::from_secs(5);
/// The Java tool keeps at most this many latency samples for percentiles.
const MAX_LATENCY_SAMPLES: u64 = 500_000;
/// How long one send may wait for room in librdkafka's queue (the Java producer's default
/// `max.block.ms`).
const MAX_BLOCK: Duration = Duration::from_secs(60);
/// Bound on the final flush: librdkafka's own `message.timeout.ms` (default 300 s) fails
/// undeliverable messages before this.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on topic creation and on waiting for its partitions to have leaders.
const CREATE_TOPIC_TIMEOUT: Duration = Duration::from_secs(30);
/// Delivery errors printed one by one before only counting them.
const MAX_PRINTED_ERRORS: u64 = 10;

/// Produce messages to a topic and report throughput and latency like kafka-producer-perf-test.
#[derive(Debug, Parser)]
#[command(name = "sluice-producer-perf", version)]
struct Args {
    /// Topic to produce to.
    #[arg(long)]
    topic: String,

    /// Number of messages to produce.
    #[arg(long = "num-records", value_name = "NUM-RECORDS")]
    num_records: u64,

    /// Message size in bytes (a fixed random payload of uppercase letters).
    #[arg(
        long = "record-size",
        value_name = "RECORD-SIZE",
        required_unless_present = "payload_file",
        conflicts_with = "payload_file"
    )]
    record_size: Option<usize>,

    /// File of payloads split by --payload-delimiter; each message gets one at random.
    #[arg(long = "payload-file", value_name = "PAYLOAD-FILE")]
    payload_file: Option<PathBuf>,

    /// Literal delimiter between payloads in --payload-file (Java treats it as a regex).
    #[arg(
        long = "payload-delimiter",
        value_name = "PAYLOAD-DELIMITER",
        default_value = "\n"
    )]
    payload_delimiter: String,

    /// Maximum messages/sec; -1 (any negative value) for no limit.
    #[arg(long, value_name = "THROUGHPUT", allow_negative_numbers = true)]
    throughput: f64,

    /// librdkafka producer properties, e.g. acks=1 linger.ms=5 (override --producer.config).
    #[arg(
        long = "producer-props",
        value_name = "PROP-NAME=PROP-VALUE",
        num_args = 1..,
        value_parser = parse_key_value
    )]
    producer_props: Vec<(String, String)>,

    /// Producer properties file (key=value lines).
    #[arg(long = "producer.config", value_name = "CONFIG-FILE")]
    producer_config: Option<PathBuf>,

    /// Kafka address(es) to connect to; overrides bootstrap.servers from the properties.
    #[arg(long = "bootstrap-server", value_name = "BOOTSTRAP-SERVERS")]
    bootstrap_server: Option<String>,

    /// Print librdkafka's client metrics at the end of the run.
    #[arg(long = "print-metrics")]
    print_metrics: bool,

    /// Create the topic with this many partitions before producing (not in the Java tool).
    #[arg(long = "create-topic", value_name = "PARTITIONS")]
    create_topic: Option<i32>,

    /// Replication factor for --create-topic.
    #[arg(long = "replication-factor", value_name = "N", default_value_t = 1)]
    replication_factor: i32,

    /// Also print latency percentiles in microseconds (not in the Java tool).
    #[arg(long = "print-latency-us")]
    print_latency_us: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.num_records == 0 {
        bail!("--num-records must be positive");
    }
    if args.throughput == 0.0 || args.throughput.is_nan() {
        bail!("--throughput must be positive, or -1 for no limit");
    }
    if args.create_topic.is_some_and(|p| p < 1) {
        bail!("--create-topic needs at least 1 partition");
    }
    let payloads = Payloads::load(&args)?;
    let config = client_config(&args)?;
    let mock = config.get("test.mock.num.brokers").is_some();
    if let (Some(partitions), false) = (args.create_topic, mock) {
        create_topic(&config, &args.topic, partitions, args.replication_factor)?;
    }

    let stats = Mutex::new(Stats::new(args.num_records));
    let context = PerfContext {
        epoch: Instant::now(),
        stats,
        errors: AtomicU64::new(0),
        last_statistics: Mutex::new(None),
    };
    let producer: ThreadedProducer<PerfContext> =
        ThreadedProducer::from_config_and_context(&config, context)
            .context("creating the producer")?;
    if let (Some(partitions), true) = (args.create_topic, mock) {
        let cluster = producer
            .client()
            .mock_cluster()
            .context("test.mock.num.brokers is set but the client has no mock cluster")?;
        cluster
            .create_topic(&args.topic, partitions, args.replication_factor)
            .context("creating the topic on the mock cluster")?;
    }

    let context = producer.context();
    let mut rng = XorShift::seeded();
    let start = Instant::now();
    context.stats.lock().expect("stats lock").restart(start);
    let mut throttler = Throttler::new(args.throughput, start);
    for i in 0..args.num_records {
        let payload = payloads.pick(&mut rng);
        let send_start = Instant::now();
        let opaque = send_start.duration_since(context.epoch).as_nanos() as usize;
        let mut record = BaseRecord::with_opaque_to(&args.topic, opaque).payload(payload);
        // librdkafka refuses a message when its queue is full; the Java producer blocks in
        // send() instead. Wait here the same way, bounded by max.block.ms's default; the
        // latency still counts from send_start, as Java's does.
        loop {
            match producer.send::<(), [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if send_start.elapsed() > MAX_BLOCK {
                        bail!("librdkafka's queue stayed full for {MAX_BLOCK:?} (message {i})");
                    }
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((err, _)) => bail!("send failed for message {i}: {err}"),
            }
        }
        if throttler.should_throttle(i, send_start) {
            throttler.throttle();
        }
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("flushing the producer")?;
    let end = Instant::now();
    let stats = context.stats.lock().expect("stats lock");
    stats.print_total(end);
    if args.print_latency_us {
        stats.print_latency_us();
    }
    drop(stats);
    if args.print_metrics {
        wait_for_fresh_statistics(context, end);
        match context
            .last_statistics
            .lock()
            .expect("statistics lock")
            .take()
        {
            Some((_, statistics)) => print_metrics(&statistics),
            None => eprintln!("no librdkafka statistics were reported"),
        }
    }
    let errors = context.errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("{errors} of {} messages failed", args.num_records);
    }
    Ok(())
}

/// The librdkafka configuration: --producer.config, then --producer-props, then
/// --bootstrap-server, each overriding the previous, as the Java tool applies them.
fn client_config(args: &Args) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("client.id", "perf-producer-client");
    if let Some(path) = &args.producer_config {
        for (key, value) in read_properties(path)? {
            config.set(key, value);
        }
    }
    for (key, value) in &args.producer_props {
        config.set(key, value);
    }
    if let Some(servers) = &args.bootstrap_server {
        config.set("bootstrap.servers", servers);
    }
    let mock = config.get("test.mock.num.brokers").is_some();
    if config.get("bootstrap.servers").is_none() && !mock {
        bail!("either --bootstrap-server or bootstrap.servers in --producer.config or --producer-props must be specified");
    }
    if args.print_metrics && config.get("statistics.interval.ms").is_none() {
        // --print-metrics needs librdkafka's statistics; they are off by default.
        config.set("statistics.interval.ms", "1000");
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    Ok(config)
}

/// Creates `topic` with CreateTopics and waits until every partition has a leader.
/// An existing topic with the same partition count is accepted.
fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating the admin client")?;
    let new_topic = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    let options = AdminOptions::new()
        .request_timeout(Some(CREATE_TOPIC_TIMEOUT))
        .operation_timeout(Some(CREATE_TOPIC_TIMEOUT));
    let results =
        block_on(admin.create_topics([&new_topic], &options)).context("CreateTopics request")?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("topic {topic} already exists; using it");
            }
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    let deadline = Instant::now() + CREATE_TOPIC_TIMEOUT;
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .context("fetching the new topic's metadata")?;
        if let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) {
            let count = found.partitions().len() as i32;
            let ready =
                found.error().is_none() && found.partitions().iter().all(|p| p.leader() >= 0);
            if ready && count != partitions {
                bail!("topic {topic} has {count} partitions, not {partitions}");
            }
            if ready {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("topic {topic} has no leader for every partition after {CREATE_TOPIC_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a future to completion on this thread. The admin client's futures are completed by
/// librdkafka's own threads, so no async runtime is needed.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            // park_timeout: a wake between poll and park is never lost for longer than this.
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// Waits (bounded) for a statistics report taken after the flush, so --print-metrics shows
/// the whole run.
fn wait_for_fresh_statistics(context: &PerfContext, flushed_at: Instant) {
    let deadline = flushed_at + Duration::from_secs(10);
    while Instant::now() < deadline {
        let fresh = matches!(
            &*context.last_statistics.lock().expect("statistics lock"),
            Some((at, _)) if *at >= flushed_at
        );
        if fresh {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Delivery reports and statistics, served on the ThreadedProducer's polling thread.
struct PerfContext {
    /// Send times travel through librdkafka as nanoseconds since this instant.
    epoch: Instant,
    stats: Mutex<Stats>,
    errors: AtomicU64,
    last_statistics: Mutex<Option<(Instant, Statistics)>>,
}

impl ClientContext for PerfContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // librdkafka only sends what log_level allows (warnings, unless the props say more).
        eprintln!("librdkafka {level:?} {fac}: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("librdkafka error: {error}: {reason}");
    }

    fn stats(&self, statistics: Statistics) {
        *self.last_statistics.lock().expect("statistics lock") = Some((Instant::now(), statistics));
    }
}

impl ProducerContext for PerfContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_nanos: usize) {
        let now = Instant::now();
        let sent_at = self.epoch + Duration::from_nanos(sent_at_nanos as u64);
        match result {
            Ok(message) => {
                let bytes = message.payload_len() as u64;
                let latency = now.saturating_duration_since(sent_at);
                self.stats
                    .lock()
                    .expect("stats lock")
                    .record(latency, bytes, now);
            }
            Err((err, _)) => {
                let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= MAX_PRINTED_ERRORS {
                    eprintln!("delivery failed: {err}");
                }
                if n == MAX_PRINTED_ERRORS {
                    eprintln!("(further delivery errors are only counted)");
                }
            }
        }
    }
}

/// The Java tool's `Stats`: totals, a 5 s window, and every `sampling`-th latency kept for
/// percentiles. Latencies are kept in microseconds; the Java-format lines print milliseconds.
struct Stats {
    start: Instant,
    window_start: Instant,
    sampling: u64,
    latencies_us: Vec<u32>,
    count: u64,
    bytes: u64,
    total_latency_us: u64,
    max_latency_us: u64,
    window_count: u64,
    window_bytes: u64,
    window_total_latency_us: u64,
    window_max_latency_us: u64,
}

impl Stats {
    fn new(num_records: u64) -> Stats {
        let sampling = num_records / num_records.min(MAX_LATENCY_SAMPLES);
        let now = Instant::now();
        Stats {
            start: now,
            window_start: now,
            sampling,
            latencies_us: Vec::with_capacity((num_records / sampling + 1) as usize),
            count: 0,
            bytes: 0,
            total_latency_us: 0,
            max_latency_us: 0,
            window_count: 0,
            window_bytes: 0,
            window_total_latency_us: 0,
            window_max_latency_us: 0,
        }
    }

    fn restart(&mut self, now: Instant) {
        self.start = now;
        self.window_start = now;
    }

    fn record(&mut self, latency: Duration, bytes: u64, now: Instant) {
        let latency_us = latency.as_micros().min(u128::from(u32::MAX)) as u64;
        if self.count.is_multiple_of(self.sampling) {
            self.latencies_us.push(latency_us as u32);
        }
        self.count += 1;
        self.bytes += bytes;
        self.total_latency_us += latency_us;
        self.max_latency_us = self.max_latency_us.max(latency_us);
        self.window_count += 1;
        self.window_bytes += bytes;
        self.window_total_latency_us += latency_us;
        self.window_max_latency_us = self.window_max_latency_us.max(latency_us);
        if now.duration_since(self.window_start) >= REPORTING_INTERVAL {
            self.print_window(now);
            self.window_start = now;
            self.window_count = 0;
            self.window_bytes = 0;
            self.window_total_latency_us = 0;
            self.window_max_latency_us = 0;
        }
    }

    fn print_window(&self, now: Instant) {
        let elapsed = now.duration_since(self.window_start).as_secs_f64();
        println!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
            self.window_count,
            self.window_count as f64 / elapsed,
            self.window_bytes as f64 / elapsed / (1024.0 * 1024.0),
            self.window_total_latency_us as f64 / self.window_count.max(1) as f64 / 1000.0,
            self.window_max_latency_us as f64 / 1000.0,
        );
    }

    /// Latency percentiles in microseconds, picked as the Java tool picks them.
    fn percentiles_us(&self, quantiles: &[f64]) -> Vec<u32> {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        quantiles
            .iter()
            .map(|q| {
                let index =
                    ((q * sorted.len() as f64) as usize).min(sorted.len().saturating_sub(1));
                sorted.get(index).copied().unwrap_or(0)
            })
            .collect()
    }

    fn print_total(&self, now: Instant) {
        let elapsed = now.duration_since(self.start).as_secs_f64().max(1e-6);
        let p = self.percentiles_us(&[0.5, 0.95, 0.99, 0.999]);
        println!(
            "{} records sent, {:.6} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {} ms 50th, {} ms 95th, {} ms 99th, {} ms 99.9th.",
            self.count,
            self.count as f64 / elapsed,
            self.bytes as f64 / elapsed / (1024.0 * 1024.0),
            self.total_latency_us as f64 / self.count.max(1) as f64 / 1000.0,
            self.max_latency_us as f64 / 1000.0,
            p[0] / 1000,
            p[1] / 1000,
            p[2] / 1000,
            p[3] / 1000,
        );
    }

    fn print_latency_us(&self) {
        let p = self.percentiles_us(&[0.5, 0.95, 0.99, 0.999]);
        println!(
            "latency us: {} avg, {} max, {} 50th, {} 95th, {} 99th, {} 99.9th.",
            self.total_latency_us / self.count.max(1),
            self.max_latency_us,
            p[0],
            p[1],
            p[2],
            p[3],
        );
    }
}

/// The Java tool's `ThroughputThrottler`: after each send, if the average rate since the
/// start is above the target, add one message's worth of sleep to a deficit and sleep once
/// the deficit reaches 2 ms.
struct Throttler {
    target_per_sec: f64,
    start: Instant,
    sleep_per_message: Duration,
    sleep_deficit: Duration,
}

impl Throttler {
    const MIN_SLEEP: Duration = Duration::from_millis(2);

    fn new(target_per_sec: f64, start: Instant) -> Throttler {
        let sleep_per_message = if target_per_sec > 0.0 {
            Duration::from_secs_f64(1.0 / target_per_sec)
        } else {
            Duration::ZERO
        };
        Throttler {
            target_per_sec,
            start,
            sleep_per_message,
            sleep_deficit: Duration::ZERO,
        }
    }

    fn should_throttle(&self, sent_so_far: u64, send_start: Instant) -> bool {
        if self.target_per_sec < 0.0 {
            return false;
        }
        let elapsed = send_start.duration_since(self.start).as_secs_f64();
        elapsed > 0.0 && sent_so_far as f64 / elapsed > self.target_per_sec
    }

    fn throttle(&mut self) {
        self.sleep_deficit += self.sleep_per_message;
        if self.sleep_deficit >= Self::MIN_SLEEP {
            std::thread::sleep(self.sleep_deficit);
            self.sleep_deficit = Duration::ZERO;
        }
    }
}

/// Payloads: one fixed random buffer (--record-size) or the pieces of --payload-file.
struct Payloads(Vec<Vec<u8>>);

impl Payloads {
    fn load(args: &Args) -> anyhow::Result<Payloads> {
        if let Some(size) = args.record_size {
            let mut rng = XorShift::seeded();
            let payload = (0..size).map(|_| b'A' + (rng.next() % 26) as u8).collect();
            return Ok(Payloads(vec![payload]));
        }
        let path = args
            .payload_file
            .as_ref()
            .context("either --record-size or --payload-file must be specified")?;
        if args.payload_delimiter.is_empty() {
            bail!("--payload-delimiter must not be empty");
        }
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        println!("Reading payloads from: {}", absolute.display());
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut pieces: Vec<Vec<u8>> = split_bytes(&text, args.payload_delimiter.as_bytes())
            .map(<[u8]>::to_vec)
            .collect();
        // Java's String.split drops trailing empty strings.
        while pieces.last().is_some_and(Vec::is_empty) {
            pieces.pop();
        }
        if pieces.is_empty() {
            bail!("file {} contains no payloads", path.display());
        }
        println!("Number of messages read: {}", pieces.len());
        Ok(Payloads(pieces))
    }

    fn pick(&self, rng: &mut XorShift) -> &[u8] {
        if self.0.len() == 1 {
            return &self.0[0];
        }
        &self.0[(rng.next() % self.0.len() as u64) as usize]
    }
}

fn split_bytes<'a>(text: &'a [u8], delimiter: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(delimiter.len())
            .position(|window| window == delimiter)
        {
            Some(at) => {
                rest = Some(&current[at + delimiter.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// A small PRNG for payload bytes and payload choice; quality is irrelevant here.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        XorShift(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
