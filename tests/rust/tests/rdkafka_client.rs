//! rdkafka (librdkafka built from source by rdkafka-sys) against a real sluice:
//! admin create topic, BaseProducer with keys/headers/lz4, BaseConsumer with
//! assign() (no group membership), byte-exact check.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use sluice_client_tests::{payload, Broker};

const PARTITIONS: i32 = 3;
const MESSAGES: usize = 300;
const DEADLINE: Duration = Duration::from_secs(60);

/// (key, partition, offset) of every acknowledged message, or the error.
#[derive(Default)]
struct Deliveries {
    acked: Mutex<Vec<(Vec<u8>, i32, i64)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(msg) => self.acked.lock().unwrap().push((
                msg.key().unwrap_or_default().to_vec(),
                msg.partition(),
                msg.offset(),
            )),
            Err((err, msg)) => self
                .failed
                .lock()
                .unwrap()
                .push(format!("{err} (partition {})", msg.partition())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

fn sent(i: usize) -> Sent {
    Sent {
        key: format!("key-{}", i % 7).into_bytes(),
        value: payload(i as u64, 1 + (i * 37) % 2000),
        headers: vec![
            ("seq".to_string(), i.to_string().into_bytes()),
            ("bin".to_string(), vec![0, 255, i as u8]),
        ],
    }
}

#[tokio::test]
async fn rdkafka_produce_consume_round_trip() {
    let broker = Broker::start(&["--auto-create-topics-enable", "false"]);
    let topic = "rdkafka-round-trip";

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("admin client");
    let created = tokio::time::timeout(
        DEADLINE,
        admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ),
    )
    .await
    .expect("create_topics timed out")
    .expect("create_topics request");
    assert_eq!(created, vec![Ok(topic.to_string())]);

    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("acks", "all")
        .set("compression.codec", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let messages: Vec<Sent> = (0..MESSAGES).map(sent).collect();
    for (i, m) in messages.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        // Explicit partition by key so the expected per-partition order is known.
        let partition = (i % 7) as i32 % PARTITIONS;
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&m.key)
                    .payload(&m.value)
                    .headers(headers)
                    .partition(partition),
            )
            .map_err(|(err, _)| err)
            .expect("enqueue message");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let ctx = producer.context();
    assert_eq!(*ctx.failed.lock().unwrap(), Vec::<String>::new());
    let acked = ctx.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), MESSAGES, "every message acknowledged");

    // Expected contents per partition, in send order; offsets must be 0..n.
    let mut expected: HashMap<i32, Vec<Sent>> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        expected
            .entry((i % 7) as i32 % PARTITIONS)
            .or_default()
            .push(m.clone());
    }
    for p in 0..PARTITIONS {
        let mut offsets: Vec<i64> = acked
            .iter()
            .filter(|(_, part, _)| *part == p)
            .map(|(_, _, o)| *o)
            .collect();
        offsets.sort_unstable();
        let want: Vec<i64> = (0..expected[&p].len() as i64).collect();
        assert_eq!(offsets, want, "acknowledged offsets on partition {p}");
    }

    // librdkafka's assign() needs a group.id even though no group is joined: nothing is
    // committed and subscribe() is never called.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "sluice-rdkafka-test-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&tpl).expect("assign");

    let mut got: HashMap<i32, Vec<(i64, Sent)>> = HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    let mut received = 0;
    while received < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "consumed only {received} of {MESSAGES} within {DEADLINE:?}"
        );
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = result.expect("consume error");
        let headers = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        got.entry(msg.partition()).or_default().push((
            msg.offset(),
            Sent {
                key: msg.key().unwrap_or_default().to_vec(),
                value: msg.payload().unwrap_or_default().to_vec(),
                headers,
            },
        ));
        received += 1;
    }
    for p in 0..PARTITIONS {
        let got_p = got.remove(&p).unwrap_or_default();
        let offsets: Vec<i64> = got_p.iter().map(|(o, _)| *o).collect();
        let want_offsets: Vec<i64> = (0..expected[&p].len() as i64).collect();
        assert_eq!(offsets, want_offsets, "consumed offsets on partition {p}");
        let contents: Vec<Sent> = got_p.into_iter().map(|(_, m)| m).collect();
        assert!(
            contents == expected[&p],
            "partition {p}: consumed records differ from the produced ones"
        );
    }

    // Watermarks agree with what was produced.
    for p in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(
            (low, high),
            (0, expected[&p].len() as i64),
            "watermarks of {p}"
        );
    }
}
