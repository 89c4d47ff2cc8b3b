//! Crash tests: a child process (this test binary re-executed with `SLUICE_CRASH_CHILD` set)
//! appends deterministic batches and prints each acknowledged offset; the parent SIGKILLs
//! it at seeded random points, reopens the log and checks that every acknowledged batch is
//! there byte for byte and that the log is exactly a prefix of what the child wrote. Then
//! the files are damaged on purpose (torn tail, flipped byte) and recovery must cut the log
//! at the first bad batch. A third test kills a child that compacts while it appends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_storage::{
    set_base_offset, set_partition_leader_epoch, BatchBuilder, BatchIter, CleanupPolicy,
    Compression, FlushPolicy, Log, LogConfig, RecordBatch,
};

const CHILD_ENV: &str = "SLUICE_CRASH_CHILD";
const EPOCH: i32 = 3;

/// xorshift64*: enough randomness, reproducible from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Batch `i` of the sequence: 1..=4 records of 10..2000 bytes, codec by `i`.
fn batch(i: u64) -> Bytes {
    let mut r = Rng(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n = 1 + r.below(4) as i32;
    let codec = if i % 5 == 4 {
        Compression::Lz4
    } else {
        Compression::None
    };
    let mut b = BatchBuilder::new(0, 1_700_000_000_000 + i as i64).compression(codec);
    for j in 0..n {
        let len = 10 + r.below(1990) as usize;
        let value: Vec<u8> = (0..len)
            .map(|k| (r.next() as u8).wrapping_add(k as u8))
            .collect();
        let key = format!("key-{}", r.below(50));
        b.push(
            j,
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(&value),
            &[],
        );
    }
    b.build().expect("encode")
}

fn record_count(i: u64) -> i64 {
    sluice_storage::RecordBatch::new(&batch(i))
        .expect("batch")
        .record_count() as i64
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        segment_index_bytes: 64 * 1024,
        retention_ms: -1,
        flush,
        ..LogConfig::default()
    }
}

fn flush_policy(name: &str) -> FlushPolicy {
    match name {
        "always" => FlushPolicy::Always,
        "every" => FlushPolicy::Every {
            messages: 7,
            interval_ms: 5,
        },
        _ => FlushPolicy::None,
    }
}

/// Mode "compact": a compacted log with a thread compacting all the time; otherwise the
/// name of a flush policy.
fn mode_config(mode: &str) -> LogConfig {
    if mode == "compact" {
        LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: 16 * 1024,
            ..config(FlushPolicy::None)
        }
    } else {
        config(flush_policy(mode))
    }
}

/// The child: append the sequence from where the log ends, acknowledging each append.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, mode) = spec.split_once('|').expect("spec");
    let log = std::sync::Arc::new(Log::open(dir.into(), mode_config(mode)).expect("open"));
    if mode == "compact" {
        let log = log.clone();
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                let _ = log.compact_now(i64::MAX / 2);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    let end = log.log_end_offset();
    let (mut i, mut offset) = (0u64, 0i64);
    while offset < end {
        offset += record_count(i);
        i += 1;
    }
    assert_eq!(
        offset, end,
        "log end is not at a batch boundary of the sequence"
    );
    let mut out = std::io::stdout().lock();
    // Bounded: the parent kills us long before this.
    for _ in 0..200_000 {
        let info = log.append_as_leader(&batch(i), EPOCH, 0).expect("append");
        use std::io::Write;
        writeln!(out, "ack {i} {}", info.base_offset).expect("stdout");
        out.flush().expect("stdout");
        i += 1;
    }
}

/// Reads the whole log and checks it is the sequence's prefix; returns the batches read.
fn check_prefix(log: &Log) -> u64 {
    let mut off = log.log_start_offset();
    let mut i = 0u64;
    while off < log.log_end_offset() {
        let r = log.read(off, 256 * 1024, i64::MAX, true).expect("read");
        assert!(
            !r.records.is_empty(),
            "empty read at {off} below the log end {}",
            log.log_end_offset()
        );
        for b in BatchIter::new(&r.records) {
            let b = b.expect("whole batch");
            let mut expected = batch(i).to_vec();
            set_base_offset(&mut expected, off);
            set_partition_leader_epoch(&mut expected, EPOCH);
            assert_eq!(
                b.as_bytes(),
                &expected[..],
                "batch {i} at offset {off} differs"
            );
            off = b.next_offset();
            i += 1;
        }
    }
    assert_eq!(off, log.log_end_offset());
    i
}

fn run_child_and_kill(dir: &Path, flush: &str, acks_before_kill: u64) -> Vec<(u64, i64)> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{flush}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (acks.len() as u64) < acks_before_kill && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("ack ") {
            let mut it = rest.split(' ');
            let i: u64 = it.next().and_then(|s| s.parse().ok()).expect("index");
            let o: i64 = it.next().and_then(|s| s.parse().ok()).expect("offset");
            acks.push((i, o));
        }
    }
    child.kill().expect("SIGKILL");
    // Acks printed before the kill still count.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ack ") {
            let mut it = rest.split(' ');
            if let (Some(Ok(i)), Some(Ok(o))) =
                (it.next().map(str::parse), it.next().map(str::parse))
            {
                acks.push((i, o));
            }
        }
    }
    child.wait().expect("reap");
    acks
}

#[test]
fn sigkill_never_loses_an_acknowledged_append() {
    let mut rng = Rng(0x5eed_1234);
    for flush in ["none", "always", "every"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all_acks = Vec::new();
        for _round in 0..6 {
            // An fsync per append is slow on a busy disk: fewer appends there.
            let max_acks = if flush == "always" { 100 } else { 400 };
            let acks = run_child_and_kill(dir.path(), flush, 1 + rng.below(max_acks));
            assert!(!acks.is_empty(), "child acknowledged nothing");
            all_acks.extend(acks);
            let log =
                Log::open(dir.path().to_path_buf(), config(flush_policy(flush))).expect("reopen");
            let batches = check_prefix(&log);
            let max_acked = all_acks.iter().map(|a| a.0).max().unwrap_or(0);
            assert!(
                batches > max_acked,
                "acked batch {max_acked} missing ({batches} batches, flush {flush})"
            );
            for &(i, o) in &all_acks {
                let r = log.read(o, 1, i64::MAX, true).expect("read acked");
                let b = sluice_storage::RecordBatch::new(&r.records).expect("one batch");
                assert_eq!(b.base_offset(), o, "acked batch {i}");
            }
            drop(log);
        }
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Batch boundaries (byte positions) of a segment file.
fn boundaries(data: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut pos = 0;
    for b in BatchIter::new(data) {
        pos += b.expect("valid").size_in_bytes();
        out.push(pos);
    }
    out
}

#[test]
fn recovery_cuts_at_the_first_damaged_batch() {
    let mut rng = Rng(0xbad_c0de);
    for round in 0..12 {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = 40 + rng.below(60);
        {
            let log = Log::open(dir.path().to_path_buf(), config(FlushPolicy::None)).expect("open");
            for i in 0..n {
                log.append_as_leader(&batch(i), EPOCH, 0).expect("append");
            }
            if round % 2 == 0 {
                log.close().expect("close"); // damage must be found even after a clean close
                std::fs::remove_file(dir.path().join(".clean-shutdown")).expect("marker");
            }
        }
        let segs = segment_files(dir.path());
        let last = segs.last().expect("a segment");
        let mut data = std::fs::read(last).expect("read");
        let bounds = boundaries(&data);
        let prior: u64 = segs[..segs.len() - 1]
            .iter()
            .map(|p| boundaries(&std::fs::read(p).expect("read")).len() as u64 - 1)
            .sum();
        // Damage batch k of the last segment: a torn tail or a flipped byte.
        let k = rng.below(bounds.len() as u64 - 1) as usize;
        let start = bounds[k];
        let len = bounds[k + 1] - start;
        if round % 3 == 0 {
            data.truncate(start + rng.below(len as u64) as usize);
        } else {
            // From the magic byte on: base offset and leader epoch are outside the CRC by
            // design (Kafka's format), so a flip there is not detectable.
            let at = start + 16 + rng.below(len as u64 - 16) as usize;
            data[at] ^= 1 << rng.below(8);
        }
        std::fs::write(last, &data).expect("write");
        let log = Log::open(dir.path().to_path_buf(), config(FlushPolicy::None)).expect("reopen");
        let batches = check_prefix(&log);
        assert_eq!(
            batches,
            prior + k as u64,
            "round {round}: the log must end right before the damaged batch {k}"
        );
        assert_eq!(
            std::fs::metadata(last).expect("meta").len() as usize,
            bounds[k]
        );
        // The log goes on from there.
        let end = log.log_end_offset();
        let info = log
            .append_as_leader(&batch(batches), EPOCH, 0)
            .expect("append after recovery");
        assert_eq!(info.base_offset, end);
    }
}

/// offset → (key, value) of the first `n` batches of the sequence.
fn sequence_records(n: u64) -> BTreeMap<i64, (Vec<u8>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut offset = 0i64;
    for i in 0..n {
        let b = batch(i);
        for r in RecordBatch::new(&b)
            .expect("batch")
            .records()
            .expect("records")
        {
            out.insert(
                offset + r.offset,
                (
                    r.key.expect("key").to_vec(),
                    r.value.expect("value").to_vec(),
                ),
            );
        }
        offset += record_count(i);
    }
    out
}

#[test]
fn sigkill_during_compaction_keeps_every_latest_value() {
    let mut rng = Rng(0xc0ff_ee00);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked_batches = 0u64;
    let mut compacted = false;
    for _round in 0..5 {
        let acks = run_child_and_kill(dir.path(), "compact", 50 + rng.below(300));
        assert!(!acks.is_empty(), "child acknowledged nothing");
        acked_batches = acked_batches.max(acks.iter().map(|a| a.0 + 1).max().unwrap_or(0));
        let log = Log::open(dir.path().to_path_buf(), mode_config("compact")).expect("reopen");
        // Read everything: whole valid batches, offsets strictly increasing.
        let mut got = BTreeMap::new();
        let mut off = 0;
        while off < log.log_end_offset() {
            let r = log.read(off, 1 << 20, i64::MAX, true).expect("read");
            assert!(!r.records.is_empty(), "empty read at {off}");
            for b in BatchIter::new(&r.records) {
                let b = b.expect("whole batch");
                b.validate_stored().expect("valid batch");
                for rec in b.records().expect("records") {
                    assert!(rec.offset >= off, "offsets go back at {}", rec.offset);
                    got.insert(
                        rec.offset,
                        (
                            rec.key.expect("key").to_vec(),
                            rec.value.expect("value").to_vec(),
                        ),
                    );
                }
                off = b.next_offset();
            }
        }
        let end = log.log_end_offset();
        let mut n = 0;
        let mut o = 0;
        while o < end {
            o += record_count(n);
            n += 1;
        }
        assert_eq!(o, end, "log end off the sequence's batch boundaries");
        assert!(
            n >= acked_batches,
            "acked batches lost: {n} < {acked_batches}"
        );
        let written = sequence_records(n);
        // Each record left is the one written at its offset, and each key's last one is there.
        for (offset, kv) in &got {
            assert_eq!(written.get(offset), Some(kv), "record at {offset} differs");
        }
        let mut last: BTreeMap<&[u8], i64> = BTreeMap::new();
        for (offset, (k, _)) in &written {
            last.insert(k, *offset);
        }
        compacted |= got.len() < written.len();
        for (k, offset) in last {
            assert!(
                got.contains_key(&offset),
                "latest record of {:?} at {offset} lost",
                String::from_utf8_lossy(k)
            );
        }
        drop(log);
    }
    assert!(compacted, "the child never compacted anything");
}
