//! Record-batch header parse and CRC-32C check, what every produce request pays once per
//! batch before the append. Run with `cargo bench -p sluice-benches --bench batch`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_storage::{BatchBuilder, RecordBatch};

/// A client batch of `record_bytes`-byte values filling about 16 KiB.
fn batch_16k(record_bytes: usize) -> Bytes {
    let n = (16 * 1024 / (record_bytes + 12)).max(1);
    let mut b = BatchBuilder::new(0, 1_700_000_000_000);
    let value: Vec<u8> = (0..record_bytes).map(|i| (i * 31) as u8).collect();
    for i in 0..n {
        b.push(i as i32, 1_700_000_000_000, None, Some(&value), &[]);
    }
    b.build().expect("encode batch")
}

fn parse_and_verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    for record_bytes in [100usize, 1024] {
        let bytes = batch_16k(record_bytes);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("parse_header_{record_bytes}B_records_16KiB"), |b| {
            b.iter(|| {
                let batch = RecordBatch::new(black_box(&bytes)).expect("parse");
                black_box((batch.last_offset_delta(), batch.producer_id()))
            })
        });
        g.bench_function(
            format!("parse_and_verify_crc_{record_bytes}B_records_16KiB"),
            |b| {
                b.iter(|| {
                    let batch = RecordBatch::new(black_box(&bytes)).expect("parse");
                    batch.verify_crc().expect("crc");
                    black_box(batch.record_count())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, parse_and_verify);
criterion_main!(benches);
