//! Wire micro-benchmarks: cutting frames off a read buffer, decoding a request's header and
//! body (a Produce request carrying one 16 KiB batch, Fetch requests), and encoding
//! responses (Produce; Fetch both contiguous and as segments that reference the log's
//! bytes). Run with `cargo bench -p sluice-benches --bench protocol` (add `-- --quick` for a
//! fast reading).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_protocol::frame::split_frame;
use sluice_protocol::kafka::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::kafka::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_protocol::kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::kafka::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use sluice_protocol::kafka::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use sluice_protocol::kafka::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
use sluice_protocol::{decode_request, encode_response, encode_response_segments, Response};
use sluice_storage::BatchBuilder;

/// Produce v9 and Fetch v12 are what librdkafka 2.x sends (flexible versions, topic names).
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const MAX_FRAME_BYTES: usize = 100 << 20;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("perf-topic"))
}

/// A client batch of 1 KiB values filling about 16 KiB, as librdkafka would send it.
fn batch_16k() -> Bytes {
    let mut b = BatchBuilder::new(0, 1_700_000_000_000);
    let value = vec![0x5au8; 1024];
    for i in 0..15 {
        b.push(i, 1_700_000_000_000, None, Some(&value), &[]);
    }
    b.build().expect("encode batch")
}

/// A whole frame, length prefix included, as a client writes it.
fn request_frame<R: Encodable>(key: ApiKey, version: i16, body: &R) -> Bytes {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    encode_request_header_into_buffer(&mut buf, &header).expect("header");
    body.encode(&mut buf, version).expect("body");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn produce_request(records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

fn fetch_request(partitions: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(123_456)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )])
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.sample_size(50).measurement_time(Duration::from_secs(3));

    let produce = request_frame(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &produce_request(batch_16k()),
    );
    g.throughput(Throughput::Bytes(produce.len() as u64));
    // What the connection does per frame: split it off the read buffer (no copy).
    g.bench_function("split_frame_produce_16KiB", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&produce[..]),
            |buf| black_box(split_frame(buf, MAX_FRAME_BYTES).expect("frame")),
            BatchSize::SmallInput,
        )
    });
    let produce_body = produce.slice(4..);
    g.bench_function("decode_produce_v9_16KiB", |b| {
        b.iter(|| black_box(decode_request(produce_body.clone()).expect("decode")))
    });
    g.bench_function("encode_produce_v9_16KiB", |b| {
        let req = produce_request(batch_16k());
        let mut buf = BytesMut::with_capacity(32 << 10);
        b.iter(|| {
            buf.clear();
            req.encode(&mut buf, PRODUCE_VERSION).expect("encode");
            black_box(buf.len())
        })
    });

    for partitions in [1, 64] {
        let fetch = request_frame(ApiKey::Fetch, FETCH_VERSION, &fetch_request(partitions));
        let body = fetch.slice(4..);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("decode_fetch_v12_{partitions}p"), |b| {
            b.iter(|| black_box(decode_request(body.clone()).expect("decode")))
        });
    }
    g.finish();
}

fn fetch_response(partitions: i32, records: &Bytes) -> Response {
    Response::Fetch(
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(topic())
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p)
                            .with_high_watermark(1_000_000)
                            .with_last_stable_offset(1_000_000)
                            .with_log_start_offset(0)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )]),
    )
}

fn responses(c: &mut Criterion) {
    let mut g = c.benchmark_group("response");
    g.sample_size(50).measurement_time(Duration::from_secs(3));

    let produce = Response::Produce(ProduceResponse::default().with_responses(vec![
        TopicProduceResponse::default()
            .with_name(topic())
            .with_partition_responses(vec![PartitionProduceResponse::default()
                .with_index(0)
                .with_base_offset(123_456)
                .with_log_start_offset(0)]),
    ]));
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_produce_v9_1p", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            encode_response(&mut buf, 42, PRODUCE_VERSION, &produce).expect("encode");
            black_box(buf.split().freeze())
        })
    });

    // 1 MiB of log per partition (a consumer's default max.partition.fetch.bytes).
    let records = Bytes::from(vec![0x5au8; 1 << 20]);
    for partitions in [1, 8] {
        let resp = fetch_response(partitions, &records);
        g.throughput(Throughput::Bytes(partitions as u64 * records.len() as u64));
        g.bench_function(
            format!("encode_fetch_v12_{partitions}x1MiB_segments"),
            |b| {
                b.iter(|| {
                    black_box(encode_response_segments(42, FETCH_VERSION, &resp).expect("encode"))
                })
            },
        );
        g.bench_function(format!("encode_fetch_v12_{partitions}x1MiB_copied"), |b| {
            let mut buf = BytesMut::new();
            b.iter(|| {
                buf.clear();
                encode_response(&mut buf, 42, FETCH_VERSION, &resp).expect("encode");
                black_box(buf.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frames, responses);
criterion_main!(benches);
