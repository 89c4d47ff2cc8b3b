//! Log-level tests: what the broker (and so a client) observes through the public API.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::*;

pub(crate) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        segment_index_bytes: 4096,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// A client batch of `n` records with keys `k{i}` and `value_len`-byte values.
pub(crate) fn client_batch(n: usize, ts: i64, value_len: usize) -> Bytes {
    let mut b = BatchBuilder::new(0, ts);
    for i in 0..n {
        let key = format!("k{i}");
        let value = vec![(i % 251) as u8; value_len];
        b.push(
            i as i32,
            ts + i as i64,
            Some(key.as_bytes()),
            Some(&value),
            &[],
        );
    }
    b.build().unwrap()
}

/// What the log should hold for a client batch appended at `base` in `epoch`.
pub(crate) fn stored(batch: &[u8], base: i64, epoch: i32) -> Vec<u8> {
    let mut v = batch.to_vec();
    set_base_offset(&mut v, base);
    set_partition_leader_epoch(&mut v, epoch);
    v
}

pub(crate) fn open(dir: &Path, cfg: LogConfig) -> Log {
    Log::open(dir.to_path_buf(), cfg).unwrap()
}

pub(crate) fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = log.log_start_offset();
    let end = log.log_end_offset();
    while off < end {
        let r = log.read(off, 1 << 20, i64::MAX, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        let mut last = off;
        for b in BatchIter::new(&r.records) {
            last = b.unwrap().next_offset();
        }
        out.extend_from_slice(&r.records);
        off = last;
    }
    out
}

#[test]
fn append_assigns_offsets_and_read_returns_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let mut expected = Vec::new();
    let mut next = 0;
    for i in 0..30 {
        let b = client_batch(1 + i % 4, 1000 + i as i64, 50);
        let info = log.append_as_leader(&b, 7, 5000).unwrap();
        assert_eq!(info.base_offset, next);
        assert_eq!(info.last_offset, next + (i % 4) as i64);
        assert_eq!(info.log_append_time_ms, -1);
        assert_eq!(info.record_count, 1 + (i % 4) as u64);
        expected.extend(stored(&b, next, 7));
        next = info.last_offset + 1;
    }
    assert_eq!(log.log_end_offset(), next);
    assert!(log.segment_count() > 1, "4 KiB segments must have rolled");
    assert_eq!(read_all(&log), expected);
    // A read from the middle of a batch starts at that batch.
    let r = log.read(2, 1, i64::MAX, true).unwrap();
    let first = RecordBatch::new(&r.records).unwrap();
    assert!(first.base_offset() <= 2 && first.last_offset() >= 2);
    assert_eq!(log.latest_epoch(), 7);
}

#[test]
fn read_follows_fetch_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            retention_ms: -1,
            ..LogConfig::default()
        },
    );
    let b = client_batch(3, 10, 100);
    for _ in 0..4 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    let size = b.len();
    // max_bytes below one batch: one whole batch only when min_one_batch.
    assert_eq!(log.read(0, 10, i64::MAX, true).unwrap().records.len(), size);
    assert_eq!(log.read(0, 10, i64::MAX, false).unwrap().records.len(), 0);
    // Never a partial batch.
    assert_eq!(
        log.read(0, size * 2 + 5, i64::MAX, true)
            .unwrap()
            .records
            .len(),
        size * 2
    );
    // High watermark: batches whose base offset is >= max_offset are not returned.
    assert_eq!(
        log.read(0, 1 << 20, 6, true).unwrap().records.len(),
        size * 2
    );
    assert_eq!(log.read(6, 1 << 20, 6, true).unwrap().records.len(), 0);
    // The log end is an empty read; beyond it and below the start are out of range.
    let r = log.read(12, 100, i64::MAX, true).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.log_end_offset, 12);
    assert!(matches!(
        log.read(13, 100, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn invalid_batches_are_refused_with_the_right_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 500,
            ..LogConfig::default()
        },
    );
    let good = client_batch(2, 0, 10);
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert!(matches!(
        log.append_as_leader(&bad_crc, 0, 0),
        Err(StorageError::CorruptMessage(_))
    ));
    let mut magic1 = good.to_vec();
    magic1[16] = 1;
    assert!(matches!(
        log.append_as_leader(&magic1, 0, 0),
        Err(StorageError::InvalidRecord(_))
    ));
    let big = client_batch(2, 0, 600);
    assert!(matches!(
        log.append_as_leader(&big, 0, 0),
        Err(StorageError::MessageTooLarge { .. })
    ));
    assert!(matches!(
        log.append_as_leader(&good[..good.len() - 3], 0, 0),
        Err(StorageError::CorruptMessage(_))
    ));
    let mut two = good.to_vec();
    two.extend_from_slice(&good[..20]);
    assert!(matches!(
        log.append_as_leader(&two, 0, 0),
        Err(StorageError::CorruptMessage(_))
    ));
    // Nothing of the refused appends was written.
    assert_eq!(log.log_end_offset(), 0);
    let info = log.append_as_leader(&good, 0, 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 1));
}

#[test]
fn several_batches_in_one_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let a = client_batch(2, 0, 10);
    let b = client_batch(3, 0, 10);
    let mut both = a.to_vec();
    both.extend_from_slice(&b);
    let info = log.append_as_leader(&both, 2, 0).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 4, 5)
    );
    let mut expected = stored(&a, 0, 2);
    expected.extend(stored(&b, 2, 2));
    assert_eq!(read_all(&log), expected);
}

#[test]
fn log_append_time_is_stamped_with_a_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg);
    let b = client_batch(3, 100, 10);
    let info = log.append_as_leader(&b, 0, 987_654).unwrap();
    assert_eq!(info.log_append_time_ms, 987_654);
    let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    let batch = RecordBatch::new(&r.records).unwrap();
    batch.validate_stored().unwrap();
    assert!(batch.is_log_append_time());
    assert_eq!(batch.max_timestamp(), 987_654);
    assert_eq!(
        batch.records_bytes(),
        RecordBatch::new(&b).unwrap().records_bytes()
    );
    assert!(batch
        .records()
        .unwrap()
        .iter()
        .all(|r| r.timestamp == 987_654));
    let found = log.find_offset_by_timestamp(987_000).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp_ms), (0, 987_654));
}

#[test]
fn follower_append_keeps_offsets_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("l"), LogConfig::default());
    let follower = open(&dir.path().join("f"), LogConfig::default());
    for e in [1, 1, 3] {
        leader
            .append_as_leader(&client_batch(2, 0, 5), e, 0)
            .unwrap();
    }
    let data = leader.read(0, 1 << 20, i64::MAX, true).unwrap().records;
    let info = follower.append_as_follower(&data).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 5));
    assert_eq!(follower.log_end_offset(), 6);
    assert_eq!(read_all(&follower), data.to_vec());
    assert_eq!(follower.end_offset_for_epoch(1), Some((1, 4)));
    assert_eq!(follower.latest_epoch(), 3);
    assert!(matches!(
        follower.append_as_follower(&data),
        Err(StorageError::NonMonotonicOffset(_))
    ));
}

#[test]
fn timestamp_lookup_is_record_exact_across_segments_and_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1024,
        ..small_config()
    };
    let log = open(dir.path(), cfg.clone());
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    // Batch i holds records with timestamps 1000*i + 10*j.
    for i in 0..20i64 {
        let mut b = BatchBuilder::new(0, 1000 * i).compression(codecs[i as usize % codecs.len()]);
        for j in 0..5 {
            b.push(
                j,
                1000 * i + 10 * j as i64,
                Some(b"k"),
                Some(&[1u8; 100]),
                &[],
            );
        }
        log.append_as_leader(&b.build().unwrap(), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    for (ts, offset, found_ts) in [
        (0, 0, 0),
        (5, 1, 10),
        (1000, 5, 1000),
        (7025, 38, 7030),
        (19040, 99, 19040),
    ] {
        let r = log.find_offset_by_timestamp(ts).unwrap().unwrap();
        assert_eq!(
            (r.offset, r.timestamp_ms),
            (offset, found_ts),
            "lookup of {ts}"
        );
    }
    assert_eq!(log.find_offset_by_timestamp(19041).unwrap(), None);
    let max = log.max_timestamp().unwrap().unwrap();
    assert_eq!((max.offset, max.timestamp_ms), (99, 19040));
    // The same after a clean reopen (time indexes from disk).
    log.close().unwrap();
    let log = open(dir.path(), cfg);
    let r = log.find_offset_by_timestamp(7025).unwrap().unwrap();
    assert_eq!(r.offset, 38);
    assert_eq!(log.max_timestamp().unwrap().unwrap().offset, 99);
}

#[test]
fn max_timestamp_picks_the_first_record_with_the_largest_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let mut b = BatchBuilder::new(0, 50);
    b.push(0, 50, None, Some(b"a"), &[]);
    b.push(1, 900, None, Some(b"b"), &[]);
    b.push(2, 70, None, Some(b"c"), &[]);
    log.append_as_leader(&b.build().unwrap(), 4, 0).unwrap();
    log.append_as_leader(&client_batch(2, 100, 1), 4, 0)
        .unwrap();
    let m = log.max_timestamp().unwrap().unwrap();
    assert_eq!(
        m,
        TimestampOffset {
            offset: 1,
            timestamp_ms: 900,
            leader_epoch: 4
        }
    );
    let empty = open(&dir.path().join("empty"), LogConfig::default());
    assert_eq!(empty.max_timestamp().unwrap(), None);
    assert_eq!(empty.find_offset_by_timestamp(0).unwrap(), None);
}

#[test]
fn reopen_after_clean_close_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let log = open(dir.path(), small_config());
        for i in 0..40 {
            let b = client_batch(2, i, 40);
            let info = log.append_as_leader(&b, 1, 0).unwrap();
            expected.extend(stored(&b, info.base_offset, 1));
        }
        log.close().unwrap();
        assert!(matches!(log.close(), Err(StorageError::Closed)));
        assert!(matches!(
            log.read(0, 10, 10, true),
            Err(StorageError::Closed)
        ));
        assert!(matches!(
            log.append_as_leader(&client_batch(1, 0, 1), 1, 0),
            Err(StorageError::Closed)
        ));
    }
    {
        let log = open(dir.path(), small_config());
        assert_eq!(log.log_end_offset(), 80);
        assert_eq!(read_all(&log), expected);
        let b = client_batch(2, 99, 40);
        log.append_as_leader(&b, 1, 0).unwrap();
        expected.extend(stored(&b, 80, 1));
        // Dropped without close: the next open recovers.
    }
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 82);
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.latest_epoch(), 1);
}

#[test]
fn recovery_truncates_at_the_first_corrupt_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let b = client_batch(2, 0, 100);
    {
        let log = open(dir.path(), cfg.clone());
        for _ in 0..10 {
            log.append_as_leader(&b, 0, 0).unwrap();
        }
    }
    // Flip a byte inside the 6th batch's records, and append garbage at the end.
    let seg = dir.path().join("00000000000000000000.log");
    let mut data = std::fs::read(&seg).unwrap();
    let at = 5 * b.len() + 70;
    data[at] ^= 0x55;
    data.extend_from_slice(&[0u8; 30]);
    std::fs::write(&seg, &data).unwrap();
    let log = open(dir.path(), cfg.clone());
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 5 * b.len() as u64);
    let info = log.append_as_leader(&b, 0, 0).unwrap();
    assert_eq!(info.base_offset, 10);
    assert_eq!(read_all(&log).len(), 6 * b.len());
}

#[test]
fn recovery_deletes_segments_after_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let b = client_batch(2, 0, 300);
    {
        let log = open(dir.path(), cfg.clone());
        for _ in 0..30 {
            log.append_as_leader(&b, 0, 0).unwrap();
        }
        assert!(log.segment_count() >= 3);
    }
    let mut logs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    // Corrupt the first batch of the second segment (the recovery point is 0: all unflushed).
    let mut data = std::fs::read(&logs[1]).unwrap();
    data[30] ^= 1;
    std::fs::write(&logs[1], &data).unwrap();
    let first_seg_batches = std::fs::metadata(&logs[0]).unwrap().len() / b.len() as u64;
    let log = open(dir.path(), cfg);
    assert_eq!(log.log_end_offset(), first_seg_batches as i64 * 2);
    assert_eq!(
        log.segment_count(),
        2,
        "the truncated segment stays (empty), later ones go"
    );
    assert!(!logs[2].exists());
}

#[test]
fn truncate_to_removes_whole_batches_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let b = client_batch(3, 0, 60);
    for e in 0..30 {
        log.append_as_leader(&b, e / 10, 0).unwrap();
    }
    let segs_before = log.segment_count();
    assert_eq!(log.log_end_offset(), 90);
    log.truncate_to(40).unwrap(); // inside the batch 39..=41, in the first segment
    assert_eq!(log.log_end_offset(), 39);
    assert!(log.segment_count() < segs_before);
    assert_eq!(log.latest_epoch(), 1);
    assert_eq!(read_all(&log).len(), 13 * b.len());
    let info = log.append_as_leader(&b, 5, 0).unwrap();
    assert_eq!(info.base_offset, 39);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 39)));
    log.truncate_to(1000).unwrap(); // above the end: nothing
    assert_eq!(log.log_end_offset(), 42);
    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.latest_epoch(), -1);
    assert_eq!(log.append_as_leader(&b, 6, 0).unwrap().base_offset, 0);
    // The truncation survives a crash and a clean reopen.
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log), stored(&b, 0, 6));
}

#[test]
fn delete_records_moves_the_start_and_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let b = client_batch(2, 0, 100);
    for _ in 0..40 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    let n = log.segment_count();
    assert_eq!(log.delete_records_before(41).unwrap(), 41);
    assert!(log.segment_count() < n);
    assert_eq!(log.log_start_offset(), 41);
    assert!(matches!(
        log.read(40, 100, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // The batch holding 41 (40..=41) is still served whole.
    let r = log.read(41, 1, i64::MAX, true).unwrap();
    assert_eq!(RecordBatch::new(&r.records).unwrap().base_offset(), 40);
    assert_eq!(
        log.delete_records_before(10).unwrap(),
        41,
        "never moves down"
    );
    assert!(matches!(
        log.delete_records_before(81),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), 41);
    assert_eq!(log.delete_records_before(80).unwrap(), 80);
    assert_eq!(log.read(80, 10, i64::MAX, true).unwrap().records.len(), 0);
}

#[test]
fn retention_by_size_and_time_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: 8192,
        ..small_config()
    };
    let log = open(dir.path(), cfg.clone());
    let b = client_batch(2, 0, 400);
    for _ in 0..40 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    log.maintain(1000).unwrap();
    assert!(log.size_bytes() <= 8192 + 4096, "size {}", log.size_bytes());
    assert!(log.log_start_offset() > 0);
    assert_eq!(log.log_end_offset(), 80);
    // Time: the batches' timestamps are 0..1; with retention.ms = 10 at now=1000 all go,
    // the active one too (after a roll).
    log.update_config(LogConfig {
        retention_bytes: -1,
        retention_ms: 10,
        ..cfg
    });
    log.maintain(1000).unwrap();
    assert_eq!(log.log_start_offset(), 80);
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.append_as_leader(&b, 0, 0).unwrap().base_offset, 80);
}

#[test]
fn retention_stops_at_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 10,
        ..small_config()
    };
    let log = open(dir.path(), cfg);
    let b = client_batch(2, 0, 400);
    for _ in 0..40 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    log.set_high_watermark(30);
    log.maintain(1000).unwrap();
    assert!(log.log_start_offset() <= 30 && log.log_start_offset() > 0);
}

#[test]
fn segment_ms_rolls_in_maintain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: 100,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg);
    let now = crate::log::now_ms();
    log.append_as_leader(&client_batch(1, now, 1), 0, now)
        .unwrap();
    log.maintain(now + 50).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.maintain(now + 10_000).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.maintain(now + 20_000).unwrap();
    assert_eq!(
        log.segment_count(),
        2,
        "an empty active segment does not roll"
    );
}

#[test]
fn producer_snapshots_round_trip_and_follow_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.load_producer_snapshot().unwrap(), None);
    for _ in 0..10 {
        log.append_as_leader(&client_batch(1, 0, 1), 0, 0).unwrap();
    }
    log.save_producer_snapshot(3, b"three").unwrap();
    log.save_producer_snapshot(8, b"eight").unwrap();
    assert_eq!(
        log.load_producer_snapshot().unwrap(),
        Some((8, b"eight".to_vec()))
    );
    log.truncate_to(5).unwrap();
    assert_eq!(
        log.load_producer_snapshot().unwrap(),
        Some((3, b"three".to_vec()))
    );
    for o in 0..6 {
        log.save_producer_snapshot(o, b"x").unwrap();
    }
    let n = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snapshot")
        })
        .count();
    assert_eq!(n, 3);
}

#[test]
fn epoch_cache_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), LogConfig::default());
        log.assign_leader_epoch(0, 0).unwrap();
        log.append_as_leader(&client_batch(5, 0, 1), 0, 0).unwrap();
        log.assign_leader_epoch(2, 5).unwrap();
        log.append_as_leader(&client_batch(5, 0, 1), 2, 0).unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.latest_epoch(), 2);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 5)));
    assert_eq!(log.end_offset_for_epoch(1), Some((0, 5)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 10)));
    assert_eq!(log.end_offset_for_epoch(3), None);
}

#[test]
fn flush_policies() {
    let dir = tempfile::tempdir().unwrap();
    for (i, flush) in [
        FlushPolicy::Always,
        FlushPolicy::Every {
            messages: 3,
            interval_ms: 1,
        },
        FlushPolicy::None,
    ]
    .into_iter()
    .enumerate()
    {
        let log = open(
            &dir.path().join(i.to_string()),
            LogConfig {
                flush,
                ..LogConfig::default()
            },
        );
        for _ in 0..5 {
            log.append_as_leader(&client_batch(1, 0, 1), 0, 0).unwrap();
        }
        log.flush_if_due(crate::log::now_ms() + 10).unwrap();
        log.flush().unwrap();
        assert_eq!(log.recovery_point_offset(), 5);
    }
}

#[test]
fn concurrent_readers_see_only_whole_appended_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), small_config()));
    let b = client_batch(2, 0, 70);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && reads < 100_000 {
                    let end = log.log_end_offset();
                    if end == 0 {
                        continue;
                    }
                    let off = (reads as i64 * 7) % end;
                    let r = log.read(off, 1000, i64::MAX, true).unwrap();
                    for batch in BatchIter::new(&r.records) {
                        let batch = batch.unwrap();
                        batch.validate_stored().unwrap();
                        assert!(batch.next_offset() <= r.log_end_offset);
                    }
                    reads += 1;
                }
            })
        })
        .collect();
    for _ in 0..300 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(log.log_end_offset(), 600);
}

#[test]
fn open_segment_files_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = HandleCache::new(2);
    let log =
        Log::open_with_cache(dir.path().to_path_buf(), small_config(), cache.clone()).unwrap();
    let b = client_batch(2, 0, 500);
    for _ in 0..60 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    assert!(log.segment_count() > 5);
    assert!(cache.open_count() <= 2);
    assert_eq!(read_all(&log).len(), 60 * b.len());
    assert!(cache.open_count() <= 2);
}

#[test]
fn log_manager_lays_out_and_lists_logs() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::new(dir.path().to_path_buf()).unwrap();
    std::fs::create_dir_all(dir.path().join("metadata")).unwrap();
    std::fs::write(dir.path().join("stray-file-1"), b"").unwrap();
    let a = m.open_log("my-topic", 0, LogConfig::default()).unwrap();
    let _b = m.open_log("my-topic", 1, LogConfig::default()).unwrap();
    let _c = m
        .open_log("__consumer_offsets", 7, LogConfig::default())
        .unwrap();
    assert!(Arc::ptr_eq(
        &a,
        &m.open_log("my-topic", 0, LogConfig::default()).unwrap()
    ));
    assert!(dir
        .path()
        .join("my-topic-0")
        .join("00000000000000000000.log")
        .exists());
    a.append_as_leader(&client_batch(2, 0, 1), 0, 0).unwrap();
    assert_eq!(
        m.logs_on_disk().unwrap(),
        vec![
            ("__consumer_offsets".to_string(), 7),
            ("my-topic".to_string(), 0),
            ("my-topic".to_string(), 1)
        ]
    );
    assert!(m.get("my-topic", 1).is_some());
    assert!(m.get("nope", 0).is_none());
    m.delete_log("my-topic", 1).unwrap();
    assert!(m.get("my-topic", 1).is_none());
    assert!(!dir.path().join("my-topic-1").exists());
    assert!(m.open_log("../x", 0, LogConfig::default()).is_err());
    m.start_background();
    m.close_all().unwrap();
    assert!(a.is_closed());
    assert!(dir
        .path()
        .join("my-topic-0")
        .join(".clean-shutdown")
        .exists());
    drop(m);
    let m = LogManager::new(dir.path().to_path_buf()).unwrap();
    assert_eq!(
        m.open_log("my-topic", 0, LogConfig::default())
            .unwrap()
            .log_end_offset(),
        2
    );
}

#[test]
fn background_thread_flushes_by_interval() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogManagerOptions {
        flush_check_interval: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    let m = LogManager::with_options(dir.path().to_path_buf(), opts).unwrap();
    let log = m
        .open_log(
            "t",
            0,
            LogConfig {
                flush: FlushPolicy::Every {
                    messages: 1_000_000,
                    interval_ms: 20,
                },
                ..LogConfig::default()
            },
        )
        .unwrap();
    m.start_background();
    log.append_as_leader(&client_batch(1, 0, 1), 0, 0).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.recovery_point_offset() < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(log.recovery_point_offset(), 1);
    m.close_all().unwrap();
}

#[test]
fn always_flush_appends_from_many_threads_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        dir.path(),
        LogConfig {
            flush: FlushPolicy::Always,
            ..small_config()
        },
    ));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let b = client_batch(2, 0, 100);
                (0..25)
                    .map(|_| log.append_as_leader(&b, 0, 0).unwrap().base_offset)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut bases: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    bases.sort_unstable();
    assert_eq!(bases, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(*crate::segment::lock(log.durable_end_for_tests()), 200);
}

#[test]
fn a_damaged_index_of_an_old_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let b = client_batch(2, 5, 300);
    let expected;
    {
        let log = open(
            dir.path(),
            LogConfig {
                segment_bytes: 64 * 1024,
                ..small_config()
            },
        );
        for _ in 0..400 {
            log.append_as_leader(&b, 0, 0).unwrap();
        }
        assert!(log.segment_count() >= 3);
        expected = read_all(&log);
        log.close().unwrap();
    }
    // Entries pointing past the segment end: fails the sanity check.
    let index = dir.path().join("00000000000000000000.index");
    let len = std::fs::metadata(&index).unwrap().len() as usize;
    std::fs::write(&index, vec![0xffu8; len]).unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 64 * 1024,
            ..small_config()
        },
    );
    assert_eq!(read_all(&log), expected);
    let r = log.read(101, 1, i64::MAX, true).unwrap();
    assert_eq!(RecordBatch::new(&r.records).unwrap().base_offset(), 100);
}

#[test]
fn log_and_manager_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
    check::<LogManager>();
    check::<Arc<Log>>();
}

/// Readers on several threads across many segments with a tiny open-file cap, while a
/// writer appends and a compactor swaps segments: every read is whole valid batches that
/// start at the batch holding the offset (or after it when compaction removed it).
#[test]
fn concurrent_reads_appends_compaction_and_eviction() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let cache = HandleCache::new(3);
    let cfg = LogConfig {
        segment_bytes: 8 * 1024,
        cleanup_policy: CleanupPolicy::Compact,
        ..small_config()
    };
    let log = Arc::new(Log::open_with_cache(dir.path().to_path_buf(), cfg, cache.clone()).unwrap());
    let append = |log: &Log, i: usize| {
        let mut b = BatchBuilder::new(0, 1000);
        for j in 0..3 {
            let key = format!("k{}", (i * 3 + j) % 17);
            b.push(
                j as i32,
                1000,
                Some(key.as_bytes()),
                Some(&[i as u8; 150]),
                &[],
            );
        }
        log.append_as_leader(&b.build().unwrap(), 0, 0).unwrap();
    };
    for i in 0..200 {
        append(&log, i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..3u64 {
        let log = log.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut x = 0x9e37_79b9u64 + t;
            let mut reads = 0;
            while reads < 20_000 && (reads < 3_000 || !stop.load(Ordering::Relaxed)) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let start = log.log_start_offset();
                let end = log.log_end_offset();
                let off = start + (x % (end - start).max(1) as u64) as i64;
                match log.read(off, 2000, i64::MAX, true) {
                    Ok(r) => {
                        let mut prev = i64::MIN;
                        for (n, b) in BatchIter::new(&r.records).enumerate() {
                            let b = b.unwrap();
                            b.validate_stored().unwrap();
                            assert!(b.base_offset() > prev);
                            if n == 0 {
                                assert!(b.last_offset() >= off, "batch {b:?} before offset {off}");
                            }
                            prev = b.last_offset();
                        }
                    }
                    Err(StorageError::OffsetOutOfRange { .. }) => {}
                    Err(e) => panic!("read {off}: {e}"),
                }
                reads += 1;
            }
        }));
    }
    {
        let log = log.clone();
        threads.push(std::thread::spawn(move || {
            for _ in 0..30 {
                log.compact_now(crate::log::now_ms()).unwrap();
            }
        }));
    }
    for i in 200..500 {
        append(&log, i);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(cache.open_count() <= 3);
    assert_eq!(log.log_end_offset(), 1500);
}
