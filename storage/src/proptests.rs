//! Property tests: random sequences of appends, truncations, DeleteRecords, compaction and
//! reopens (clean and crashed) against a simple model of what the log must hold.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::tests::{client_batch, stored};
use crate::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: usize,
        records: usize,
        value_len: usize,
    },
    Truncate {
        permille: u16,
    },
    DeleteRecords {
        permille: u16,
    },
    Reopen {
        clean: bool,
    },
    Read {
        permille: u16,
        max_bytes: usize,
        /// Where the high watermark (max_offset) sits between the offset and the log end.
        hw_permille: u16,
    },
    FindTimestamp {
        permille: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..4usize, 1..6usize, 0..400usize).prop_map(|(batches, records, value_len)| Op::Append { batches, records, value_len }),
        1 => (0..1000u16).prop_map(|permille| Op::Truncate { permille }),
        1 => (0..1000u16).prop_map(|permille| Op::DeleteRecords { permille }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        2 => (0..1000u16, 1..3000usize, 0..1001u16).prop_map(|(permille, max_bytes, hw_permille)| Op::Read { permille, max_bytes, hw_permille }),
        1 => (0..1000u16).prop_map(|permille| Op::FindTimestamp { permille }),
    ]
}

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        segment_index_bytes: 1024,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// The model: batches by base offset (stored bytes, last offset, max timestamp).
#[derive(Default)]
struct Model {
    batches: BTreeMap<i64, (Vec<u8>, i64, i64)>,
    start: i64,
    end: i64,
}

fn at(permille: u16, lo: i64, hi: i64) -> i64 {
    lo + (hi - lo) * permille as i64 / 1000
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(Log::open(dir.path().to_path_buf(), cfg()).unwrap());
        let mut m = Model::default();
        let mut ts = 1_000i64;
        for op in ops {
            let l = log.as_ref().unwrap();
            match op {
                Op::Append { batches, records, value_len } => {
                    let mut buf = Vec::new();
                    let mut parts = Vec::new();
                    for _ in 0..batches {
                        ts += 10;
                        let b = client_batch(records, ts, value_len);
                        buf.extend_from_slice(&b);
                        parts.push(b);
                    }
                    let info = l.append_as_leader(&buf, 1, 0).unwrap();
                    prop_assert_eq!(info.base_offset, m.end);
                    for b in parts {
                        let last = m.end + records as i64 - 1;
                        let max_ts = RecordBatch::new(&b).unwrap().max_timestamp();
                        m.batches.insert(m.end, (stored(&b, m.end, 1), last, max_ts));
                        m.end = last + 1;
                    }
                    prop_assert_eq!(info.last_offset, m.end - 1);
                }
                Op::Truncate { permille } => {
                    let target = at(permille, m.start, m.end);
                    l.truncate_to(target).unwrap();
                    // Whole batches holding `target` or later go.
                    let cut: Vec<i64> = m.batches.iter().filter(|(_, (_, last, _))| *last >= target).map(|(b, _)| *b).collect();
                    let new_end = cut.first().copied().map_or(target.min(m.end), |b| b.min(target));
                    for b in cut {
                        m.batches.remove(&b);
                    }
                    m.end = new_end.max(m.start);
                    prop_assert_eq!(l.log_end_offset(), m.end);
                }
                Op::DeleteRecords { permille } => {
                    let target = at(permille, m.start, m.end);
                    let s = l.delete_records_before(target).unwrap();
                    m.start = m.start.max(target);
                    prop_assert_eq!(s, m.start);
                }
                Op::Reopen { clean } => {
                    let old = log.take().unwrap();
                    if clean {
                        old.close().unwrap();
                    }
                    drop(old);
                    log = Some(Log::open(dir.path().to_path_buf(), cfg()).unwrap());
                }
                Op::Read { permille, max_bytes, hw_permille } => {
                    if m.end > m.start {
                        let off = at(permille, m.start, m.end - 1);
                        let hw = if hw_permille == 1000 { i64::MAX } else { at(hw_permille, off, m.end) };
                        let r = l.read(off, max_bytes, hw, true).unwrap();
                        let (&first_base, first) = m.batches.range(..=off).next_back().filter(|(_, (_, last, _))| *last >= off)
                            .or_else(|| m.batches.range(off..).next()).unwrap();
                        if first_base < hw {
                            prop_assert!(r.records.len() >= first.0.len());
                        } else {
                            prop_assert!(r.records.is_empty());
                        }
                        let mut expected = Vec::new();
                        for (&base, (bytes, _, _)) in m.batches.range(first_base..) {
                            if base >= hw || (!expected.is_empty() && expected.len() + bytes.len() > max_bytes) {
                                break;
                            }
                            expected.extend_from_slice(bytes);
                        }
                        // A read stops at a segment end, so it is a prefix of the expected run.
                        prop_assert!(expected.starts_with(&r.records));
                    }
                }
                Op::FindTimestamp { permille } => {
                    let target = at(permille, 990, ts + 20);
                    let got = l.find_offset_by_timestamp(target).unwrap();
                    // client_batch gives record j of a batch the timestamp ts + j.
                    let mut want = None;
                    'outer: for (base, (bytes, _, _)) in &m.batches {
                        for r in RecordBatch::new(bytes).unwrap().records().unwrap() {
                            if r.offset >= m.start && r.timestamp >= target {
                                want = Some((r.offset, r.timestamp));
                                break 'outer;
                            }
                        }
                        let _ = base;
                    }
                    prop_assert_eq!(got.map(|g| (g.offset, g.timestamp_ms)), want);
                }
            }
            let l = log.as_ref().unwrap();
            prop_assert_eq!(l.log_end_offset(), m.end);
            prop_assert_eq!(l.log_start_offset(), m.start);
        }
        // Finally the whole log equals the model from the batch holding the start on.
        let l = log.as_ref().unwrap();
        let mut got = Vec::new();
        let mut off = m.start;
        while off < m.end {
            let r = l.read(off, 1 << 20, i64::MAX, true).unwrap();
            prop_assert!(!r.records.is_empty());
            for b in BatchIter::new(&r.records) {
                off = b.unwrap().next_offset();
            }
            got.extend_from_slice(&r.records);
        }
        let mut expected = Vec::new();
        for (_, (bytes, last, _)) in m.batches.iter() {
            if *last >= m.start {
                expected.extend_from_slice(bytes);
            }
        }
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 100, ..ProptestConfig::default() })]

    /// Compaction keeps the last value of every key, changes no offset, and leaves at most
    /// one record per key below the active segment.
    #[test]
    fn compaction_keeps_the_last_value_per_key(
        writes in proptest::collection::vec((0..12u8, proptest::option::weighted(0.9, 0..1000u32)), 1..300),
        map_entries in 3..20usize,
        codec in 0..5u8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: 1024, index_interval_bytes: 128, segment_index_bytes: 1024, retention_ms: -1,
            cleanup_policy: CleanupPolicy::Compact, delete_retention_ms: i64::MAX / 4, ..LogConfig::default() };
        let log = Log::open(dir.path().to_path_buf(), cfg).unwrap();
        log.set_compaction_map_entries(map_entries);
        let codec = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec as usize];
        let mut written: BTreeMap<i64, (u8, Option<u32>)> = BTreeMap::new();
        let now = crate::log::now_ms();
        for chunk in writes.chunks(3) {
            let mut b = BatchBuilder::new(0, now).compression(codec);
            for (i, (k, v)) in chunk.iter().enumerate() {
                let value = v.map(|v| v.to_be_bytes());
                b.push(i as i32, now, Some(&[*k]), value.as_ref().map(|v| &v[..]), &[]);
            }
            let info = log.append_as_leader(&b.build().unwrap(), 0, now).unwrap();
            for (i, (k, v)) in chunk.iter().enumerate() {
                written.insert(info.base_offset + i as i64, (*k, *v));
            }
        }
        // Bounded: every round moves the dirty offset forward by at least one batch.
        let mut done = false;
        for _ in 0..200 {
            if log.compact_now(now).unwrap().is_none() {
                done = true;
                break;
            }
        }
        prop_assert!(done, "compaction did not finish in 200 rounds");
        let mut got: BTreeMap<i64, (u8, Option<u32>)> = BTreeMap::new();
        let mut off = 0;
        while off < log.log_end_offset() {
            let r = log.read(off, 1 << 20, i64::MAX, true).unwrap();
            prop_assert!(!r.records.is_empty());
            for b in BatchIter::new(&r.records) {
                let b = b.unwrap();
                b.validate_stored().unwrap();
                for rec in b.records().unwrap() {
                    let v = rec.value.map(|v| u32::from_be_bytes(v[..4].try_into().unwrap()));
                    prop_assert!(got.insert(rec.offset, (rec.key.unwrap()[0], v)).is_none());
                }
                off = b.next_offset();
            }
        }
        for (o, kv) in &got {
            prop_assert_eq!(written.get(o), Some(kv), "offset {} changed", o);
        }
        let mut last: BTreeMap<u8, i64> = BTreeMap::new();
        for (o, (k, _)) in &written {
            last.insert(*k, *o);
        }
        for (k, o) in &last {
            prop_assert!(got.contains_key(o), "latest record of key {} (offset {}) lost", k, o);
        }
        let active_base = log.segment_list().last().unwrap().base_offset;
        let mut seen = std::collections::HashSet::new();
        for (_, (k, _)) in got.range(..active_base) {
            prop_assert!(seen.insert(*k), "key {} twice below the active segment", k);
        }
    }
}
