//! rskafka against a real sluice: controller create_topic, PartitionClient
//! produce (plain and gzip) and fetch_records, list offsets, byte-exact check.

use std::collections::BTreeMap;
use std::time::Duration;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use rskafka::BackoffConfig;
use sluice_client_tests::{payload, Broker};

const DEADLINE: Duration = Duration::from_secs(60);

fn record(i: usize) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert("seq".to_string(), i.to_string().into_bytes());
    headers.insert("empty".to_string(), Vec::new());
    Record {
        key: Some(format!("k{i}").into_bytes()),
        value: Some(payload(1000 + i as u64, 1 + (i * 101) % 5000)),
        headers,
        // Millisecond precision is what the wire carries.
        timestamp: Utc
            .timestamp_millis_opt(1_700_000_000_000 + i as i64)
            .unwrap(),
    }
}

async fn round_trip(broker: &Broker) {
    let client = ClientBuilder::new(vec![broker.bootstrap.clone()])
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(Duration::from_secs(20)),
        })
        .build()
        .await
        .expect("rskafka client");

    let topic = "rskafka-round-trip";
    let controller = client.controller_client().expect("controller client");
    controller
        .create_topic(topic, 2, 1, 10_000)
        .await
        .expect("create_topic");
    let topics = client.list_topics().await.expect("list_topics");
    let listed = topics
        .iter()
        .find(|t| t.name == topic)
        .expect("created topic is listed");
    assert_eq!(listed.partitions.len(), 2, "partition count in metadata");

    let partition = client
        .partition_client(topic, 1, UnknownTopicHandling::Error)
        .await
        .expect("partition client");

    let first: Vec<Record> = (0..50).map(record).collect();
    let second: Vec<Record> = (50..120).map(record).collect();
    let offsets = partition
        .produce(first.clone(), Compression::NoCompression)
        .await
        .expect("produce uncompressed");
    assert_eq!(offsets, (0..50).collect::<Vec<i64>>());
    let offsets = partition
        .produce(second.clone(), Compression::Gzip)
        .await
        .expect("produce gzip");
    assert_eq!(offsets, (50..120).collect::<Vec<i64>>());

    assert_eq!(partition.get_offset(OffsetAt::Earliest).await.unwrap(), 0);
    assert_eq!(partition.get_offset(OffsetAt::Latest).await.unwrap(), 120);

    let expected: Vec<Record> = first.into_iter().chain(second).collect();
    let mut got = Vec::new();
    let mut next = 0i64;
    // Bounded: at most one fetch per expected record plus slack.
    for _ in 0..(expected.len() + 10) {
        if next >= expected.len() as i64 {
            break;
        }
        let (records, high_watermark) = partition
            .fetch_records(next, 1..1_000_000, 1_000)
            .await
            .expect("fetch_records");
        assert_eq!(high_watermark, 120);
        for r in records {
            // A batch may start before `next`: rskafka returns whole batches.
            if r.offset < next {
                continue;
            }
            assert_eq!(r.offset, next, "offsets are contiguous");
            next += 1;
            got.push(r.record);
        }
    }
    assert_eq!(got.len(), expected.len(), "fetched every record");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g == e, "record at offset {i} differs: got {g:?}");
    }

    // The other partition is empty: an empty fetch at 0 returns nothing, hw 0.
    let other = client
        .partition_client(topic, 0, UnknownTopicHandling::Error)
        .await
        .expect("partition client 0");
    let (records, hw) = other
        .fetch_records(0, 1..1_000_000, 100)
        .await
        .expect("fetch empty partition");
    assert!(records.is_empty());
    assert_eq!(hw, 0);
}

#[tokio::test]
async fn rskafka_produce_fetch_round_trip() {
    let broker = Broker::start(&["--auto-create-topics-enable", "false"]);
    tokio::time::timeout(DEADLINE, round_trip(&broker))
        .await
        .expect("rskafka round trip timed out");
}
