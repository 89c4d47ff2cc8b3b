//! Log-level tests of transaction support: markers written through the leader append, and
//! the aborted-transaction index as a read_committed fetch sees it through restarts,
//! crashes, truncation, retention and compaction.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::tests::{client_batch, open, read_all, small_config};
use crate::*;

fn abort(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id,
        first_offset,
        last_offset,
        last_stable_offset: first_offset,
    }
}

fn txn_index_file(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.txnindex"))
}

/// Base offsets of the `.txnindex` files in `dir`.
fn txn_index_files(dir: &Path) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".txnindex")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Bytes in all `.txnindex` files of `dir`.
fn txn_file_bytes(dir: &Path) -> u64 {
    txn_index_files(dir)
        .iter()
        .map(|&b| std::fs::metadata(txn_index_file(dir, b)).unwrap().len())
        .sum()
}

/// The base offset of the segment holding `offset`.
fn segment_of(log: &Log, offset: i64) -> i64 {
    log.segment_list()
        .iter()
        .map(|s| s.base_offset)
        .filter(|&b| b <= offset)
        .max()
        .unwrap()
}

/// A transactional batch of `n` records from `producer_id`.
fn txn_batch(producer_id: i64, producer_epoch: i16, base_sequence: i32, n: usize) -> Bytes {
    let mut b = BatchBuilder::new(0, 1000);
    b.transactional = true;
    b.producer_id = producer_id;
    b.producer_epoch = producer_epoch;
    b.base_sequence = base_sequence;
    for i in 0..n {
        b.push(i as i32, 1000, Some(b"k"), Some(&[7u8; 100]), &[]);
    }
    b.build().unwrap()
}

/// A log with 30 single-record batches (offsets 0..30) over several segments.
fn log_of_30(dir: &Path, cfg: LogConfig) -> Log {
    let log = open(dir, cfg);
    for i in 0..30 {
        log.append_as_leader(&client_batch(1, i, 200), 0, 0)
            .unwrap();
    }
    log
}

#[test]
fn a_control_batch_is_appended_as_leader_and_reads_back_as_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    log.append_as_leader(&client_batch(3, 1000, 10), 4, 0)
        .unwrap();
    let data = log.append_as_leader(&txn_batch(7, 2, 0, 2), 4, 0).unwrap();
    let abort_at = log
        .append_as_leader(&control_batch(7, 2, ControlType::Abort, 9, 2000), 4, 0)
        .unwrap();
    log.append_as_leader(&txn_batch(8, 0, 0, 1), 4, 0).unwrap();
    let commit_at = log
        .append_as_leader(&control_batch(8, 0, ControlType::Commit, 9, 3000), 4, 0)
        .unwrap();
    assert_eq!((data.base_offset, data.last_offset), (3, 4));
    assert_eq!((abort_at.base_offset, abort_at.last_offset), (5, 5));
    assert_eq!(abort_at.record_count, 1);
    assert_eq!(commit_at.base_offset, 7);
    assert_eq!(log.log_end_offset(), 8);

    let all = read_all(&log);
    let batches: Vec<RecordBatch<'_>> = BatchIter::new(&all).map(|b| b.unwrap()).collect();
    let seen: Vec<(i64, bool, bool, Option<ControlType>)> = batches
        .iter()
        .map(|b| {
            (
                b.base_offset(),
                b.is_control(),
                b.is_transactional(),
                b.control_type(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, false, false, None),
            (3, false, true, None),
            (5, true, true, Some(ControlType::Abort)),
            (6, false, true, None),
            (7, true, true, Some(ControlType::Commit)),
        ]
    );
    let marker = &batches[2];
    marker.validate_stored().unwrap();
    assert_eq!(marker.partition_leader_epoch(), 4);
    assert_eq!((marker.producer_id(), marker.producer_epoch()), (7, 2));
    assert_eq!(marker.base_sequence(), -1);
    let rec = &marker.records().unwrap()[0];
    assert_eq!(rec.offset, 5);
    assert_eq!(rec.timestamp, 2000);
    assert_eq!(&rec.key.as_ref().unwrap()[..], &[0, 0, 0, 0]);
    assert_eq!(&rec.value.as_ref().unwrap()[..], &[0, 0, 0, 0, 0, 9]);

    // The markers survive a crash (recovery checks every batch, markers included).
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(read_all(&log), all);
}

#[test]
fn aborted_txns_returns_the_overlapping_aborts_in_marker_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of_30(dir.path(), small_config());
    assert!(log.segment_count() >= 2);
    assert!(log.aborted_txns(0, 30).unwrap().is_empty());
    assert!(
        txn_index_files(dir.path()).is_empty(),
        "no aborts, no files"
    );

    let (a, b, c) = (abort(1, 2, 5), abort(2, 4, 20), abort(3, 21, 25));
    for t in [a, b, c] {
        log.append_aborted_txn(t).unwrap();
    }
    // B is a long transaction: begun in the first segment, aborted in a later one.
    assert_ne!(segment_of(&log, 4), segment_of(&log, 20));
    let q = |from, upper| log.aborted_txns(from, upper).unwrap();
    assert_eq!(q(0, 30), vec![a, b, c]);
    assert_eq!(q(5, 30), vec![a, b, c], "last_offset == from is included");
    assert_eq!(q(6, 30), vec![b, c]);
    assert_eq!(q(0, 21), vec![a, b], "first_offset == upper is excluded");
    assert_eq!(q(0, 22), vec![a, b, c]);
    assert_eq!(q(21, 22), vec![c]);
    assert_eq!(q(0, 3), vec![a], "B begins at 4");
    assert_eq!(
        q(0, 5),
        vec![a, b],
        "an abort in a later segment still counts"
    );
    assert_eq!(q(26, 30), vec![]);
    assert_eq!(q(10, 10), vec![], "empty range");

    // Appending an abort twice records it once.
    log.append_aborted_txn(b).unwrap();
    assert_eq!(q(0, 30), vec![a, b, c]);
    // Each entry sits in the file of the segment holding its marker, in Kafka's format.
    let files = txn_index_files(dir.path());
    let mut expected: Vec<i64> = [5, 20, 25].iter().map(|&o| segment_of(&log, o)).collect();
    expected.dedup();
    assert_eq!(files, expected);
    assert_eq!(txn_file_bytes(dir.path()), 3 * 34);

    // A marker must be in the log.
    assert!(matches!(
        log.append_aborted_txn(abort(4, 28, 30)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.append_aborted_txn(abort(4, 9, 8)),
        Err(StorageError::InvalidRecord(_))
    ));
}

#[test]
fn aborts_survive_a_clean_reopen_and_a_crash_with_a_torn_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (abort(1, 2, 5), abort(2, 4, 20), abort(3, 21, 25));
    {
        let log = log_of_30(dir.path(), small_config());
        log.append_aborted_txn(a).unwrap();
        log.append_aborted_txn(b).unwrap();
        log.close().unwrap();
    }
    let c_segment;
    {
        let log = open(dir.path(), small_config());
        assert_eq!(log.aborted_txns(0, 30).unwrap(), vec![a, b]);
        log.append_aborted_txn(c).unwrap();
        c_segment = segment_of(&log, 25);
        // Dropped without close: a crash.
    }
    // The crash tore a fourth entry half-way.
    let file = txn_index_file(dir.path(), c_segment);
    let mut bytes = std::fs::read(&file).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
    std::fs::write(&file, &bytes).unwrap();

    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.aborted_txns(0, 30).unwrap(), vec![a, b, c]);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), whole as u64);
    // Appends go on after the torn entry was cut.
    log.append_aborted_txn(abort(4, 26, 29)).unwrap();
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.aborted_txns(26, 30).unwrap(), vec![abort(4, 26, 29)]);
}

#[test]
fn recovery_forgets_aborts_whose_marker_was_lost_and_orphan_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let batch = client_batch(1, 0, 100);
    {
        let log = open(dir.path(), cfg.clone());
        for _ in 0..10 {
            log.append_as_leader(&batch, 0, 0).unwrap();
        }
        log.append_aborted_txn(abort(1, 0, 4)).unwrap();
        log.append_aborted_txn(abort(2, 3, 9)).unwrap();
        log.flush().unwrap();
    }
    // The crash lost the tail of the last batch (the marker at 9).
    let seg = dir.path().join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    // And an index file whose segment is gone.
    let orphan = txn_index_file(dir.path(), 500);
    std::fs::copy(txn_index_file(dir.path(), 0), &orphan).unwrap();

    let log = open(dir.path(), cfg.clone());
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.aborted_txns(0, 100).unwrap(), vec![abort(1, 0, 4)]);
    assert!(!orphan.exists());
    assert_eq!(
        std::fs::metadata(txn_index_file(dir.path(), 0))
            .unwrap()
            .len(),
        34
    );
}

#[test]
fn truncation_drops_aborts_at_and_above_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of_30(dir.path(), small_config());
    let (a, b, c) = (abort(1, 2, 5), abort(2, 4, 20), abort(3, 21, 25));
    for t in [a, b, c] {
        log.append_aborted_txn(t).unwrap();
    }
    log.truncate_to(21).unwrap();
    assert_eq!(log.log_end_offset(), 21);
    assert_eq!(log.aborted_txns(0, 100).unwrap(), vec![a, b]);
    assert_eq!(
        txn_file_bytes(dir.path()),
        2 * 34,
        "C's entry left its file"
    );
    log.truncate_to(20).unwrap();
    assert_eq!(log.aborted_txns(0, 100).unwrap(), vec![a]);
    assert_eq!(
        txn_file_bytes(dir.path()),
        34,
        "the files hold only what is left"
    );
    // A new abort at a re-used offset is taken.
    log.append_as_leader(&client_batch(1, 0, 10), 1, 0).unwrap();
    log.append_aborted_txn(abort(9, 6, 20)).unwrap();
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.aborted_txns(0, 100).unwrap(), vec![a, abort(9, 6, 20)]);
    log.truncate_to(0).unwrap();
    assert!(log.aborted_txns(0, 100).unwrap().is_empty());
    assert!(txn_index_files(dir.path()).is_empty());
}

#[test]
fn deleting_a_segment_deletes_its_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let log = log_of_30(dir.path(), cfg.clone());
    let (a, c) = (abort(1, 2, 5), abort(3, 21, 25));
    log.append_aborted_txn(a).unwrap();
    log.append_aborted_txn(c).unwrap();
    let second = log.segment_list()[1].base_offset;
    assert!(second > 5 && second <= 21);
    log.set_high_watermark(30);

    // DeleteRecords past the whole first segment.
    log.delete_records_before(second).unwrap();
    assert!(!txn_index_file(dir.path(), 0).exists());
    assert_eq!(log.aborted_txns(0, 100).unwrap(), vec![c]);

    // Retention by time takes everything (the timestamps are ancient).
    log.update_config(LogConfig {
        retention_ms: 10,
        ..cfg
    });
    log.maintain(1_000_000).unwrap();
    assert_eq!(log.log_start_offset(), 30);
    assert!(log.aborted_txns(0, 100).unwrap().is_empty());
    assert!(txn_index_files(dir.path()).is_empty());
}
