//! Storage micro-benchmarks: append throughput, sequential reads, index lookups and open
//! (recovery) time of a large log. Run with `cargo bench -p sluice-benches --bench storage`.
//!
//! Environment: `SLUICE_BENCH_DIR` (default `/var/tmp`) holds the logs; `SLUICE_BENCH_LOG_MB`
//! (default 1024) is the size of the log the open benchmarks build.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_storage::{BatchBuilder, FlushPolicy, Log, LogConfig};

const BATCH_TARGET_BYTES: usize = 16 * 1024;

fn bench_dir() -> PathBuf {
    PathBuf::from(std::env::var("SLUICE_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
}

/// A client batch of `record_bytes`-byte values filling about 16 KiB.
fn batch(record_bytes: usize, seed: u64) -> Bytes {
    let per_record = record_bytes + 12; // value + record framing + small key
    let n = (BATCH_TARGET_BYTES / per_record).max(1);
    let mut b = BatchBuilder::new(0, 1_700_000_000_000 + seed as i64);
    let mut x = seed | 1;
    for i in 0..n {
        let value: Vec<u8> = (0..record_bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let key = (i as u32).to_be_bytes();
        b.push(
            i as i32,
            1_700_000_000_000 + seed as i64,
            Some(&key),
            Some(&value),
            &[],
        );
    }
    b.build().expect("encode")
}

fn config() -> LogConfig {
    LogConfig {
        retention_ms: -1,
        flush: FlushPolicy::None,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for record_bytes in [100usize, 1024] {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        let log = Log::open(
            dir.path().to_path_buf(),
            LogConfig {
                segment_bytes: 256 << 20,
                ..config()
            },
        )
        .expect("open");
        let b = batch(record_bytes, 1);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("{record_bytes}B_records_16KiB_batches"), |bench| {
            bench.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(log.append_as_leader(&b, 1, 0).expect("append"));
                }
                let spent = t.elapsed();
                // Keep the disk use bounded: start over beyond 1 GiB (not timed).
                if log.size_bytes() > 1 << 30 {
                    log.truncate_to(0).expect("truncate");
                }
                spent
            })
        });
        log.close().expect("close");
    }
    // fsync before acknowledging: appenders on several threads share fsyncs (group commit).
    for threads in [1usize, 4] {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 256 << 20,
            flush: FlushPolicy::Always,
            ..config()
        };
        let log = Log::open(dir.path().to_path_buf(), cfg).expect("open");
        let b = batch(1024, 2);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(
            format!("1024B_records_flush_always_{threads}_threads"),
            |bench| {
                bench.iter_custom(|iters| {
                    let per_thread = iters.div_ceil(threads as u64);
                    let t = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| {
                                for _ in 0..per_thread {
                                    black_box(log.append_as_leader(&b, 1, 0).expect("append"));
                                }
                            });
                        }
                    });
                    let spent = t.elapsed();
                    if log.size_bytes() > 1 << 30 {
                        log.truncate_to(0).expect("truncate");
                    }
                    spent
                })
            },
        );
        log.close().expect("close");
    }
    g.finish();
}

/// A log of about `mb` MiB of 1 KiB records in 16 KiB batches.
fn build_log(dir: &Path, mb: u64, cfg: LogConfig) -> Log {
    let log = Log::open(dir.to_path_buf(), cfg).expect("open");
    let batches: Vec<Bytes> = (0..16).map(|i| batch(1024, i)).collect();
    let mut i = 0;
    while log.size_bytes() < mb << 20 {
        log.append_as_leader(&batches[i % batches.len()], 1, 0)
            .expect("append");
        i += 1;
    }
    log
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let log = build_log(
        dir.path(),
        256,
        LogConfig {
            segment_bytes: 64 << 20,
            ..config()
        },
    );
    let end = log.log_end_offset();
    let mut g = c.benchmark_group("read");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("sequential_1MiB_fetches", |bench| {
        let mut off = 0i64;
        bench.iter(|| {
            let r = log.read(off, 1 << 20, i64::MAX, true).expect("read");
            let last = sluice_storage::BatchIter::new(&r.records)
                .last()
                .and_then(|b| b.ok())
                .map(|b| b.next_offset());
            off = last.unwrap_or(0);
            if off >= end {
                off = 0;
            }
            black_box(r.records.len())
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("random_offset_lookup_one_batch", |bench| {
        let mut x = 0x1234_5678u64;
        bench.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % end as u64) as i64;
            black_box(
                log.read(off, 1, i64::MAX, true)
                    .expect("read")
                    .records
                    .len(),
            )
        })
    });
    g.bench_function("timestamp_lookup", |bench| {
        let mut x = 0x8765_4321u64;
        bench.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ts = 1_700_000_000_000 + (x % 16) as i64;
            black_box(log.find_offset_by_timestamp(ts).expect("lookup"))
        })
    });
    g.finish();
    log.close().expect("close");
}

fn open(c: &mut Criterion) {
    let mb: u64 = std::env::var("SLUICE_BENCH_LOG_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let cfg = config(); // segment.bytes 1 GiB, as Kafka
    build_log(dir.path(), mb, cfg.clone())
        .close()
        .expect("close");
    let mut g = c.benchmark_group("open");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(mb << 20));
    g.bench_function(format!("clean_{mb}MiB"), |bench| {
        bench.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let log = Log::open(dir.path().to_path_buf(), cfg.clone()).expect("open");
                spent += t.elapsed();
                black_box(log.log_end_offset());
                // Closing (fsyncs, marker) is not timed: it is the next open that is measured.
                log.close().expect("close");
            }
            spent
        })
    });
    g.bench_function(format!("after_crash_{mb}MiB"), |bench| {
        bench.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // As after kill -9 with nothing flushed: no marker, recovery point 0.
                let _ = std::fs::remove_file(dir.path().join(".clean-shutdown"));
                std::fs::write(dir.path().join("log-offsets-checkpoint"), "0\n0 0\n")
                    .expect("checkpoint");
                let t = Instant::now();
                let log = Log::open(dir.path().to_path_buf(), cfg.clone()).expect("open");
                spent += t.elapsed();
                black_box(log.log_end_offset());
                drop(log);
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, append, reads, open);
criterion_main!(benches);
