//! Idempotent producers on one partition: per producer id, its epoch and the sequence
//! ranges of its last five batches, as Kafka's ProducerStateManager keeps them.
//!
//! A retried batch that is one of the last five is a duplicate: it is answered with the
//! offset it got the first time and not written again. Otherwise the sequence must follow
//! the previous batch (OUT_OF_ORDER_SEQUENCE_NUMBER), and an older epoch is fenced
//! (INVALID_PRODUCER_EPOCH). A producer we know nothing of (new, or expired) may start at
//! any sequence, as in Kafka since KIP-360.
//!
//! Transactions add one thing per producer: the offset of its open transaction's first
//! batch here, from that batch until the coordinator's commit or abort marker. The smallest
//! such offset bounds the last stable offset (what `read_committed` consumers may read).
//!
//! The state is snapshotted at clean shutdown and rebuilt on open from the snapshot plus
//! the batches after it.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::{Buf, BufMut, BytesMut};
use sluice_protocol::ResponseError;

/// Batches remembered per producer (Kafka's max.in.flight.requests.per.connection bound).
pub const CACHED_BATCHES: usize = 5;
/// `producer.id.expiration.ms`: an idle producer's state is dropped after this.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
const SNAPSHOT_VERSION: u16 = 2;

/// Where one batch of a producer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    last_seen_ms: i64,
    /// First offset of this producer's open transaction on this partition.
    txn_first_offset: Option<i64>,
    /// Epoch of the coordinator that wrote this producer's last marker here (-1: none).
    coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16, now_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(CACHED_BATCHES),
            last_seen_ms: now_ms,
            txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub coordinator_epoch: i32,
    /// -1 when no transaction is open.
    pub current_txn_start_offset: i64,
}

/// The decision for an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Append,
    /// Already written: answer with where it went.
    Duplicate(BatchMeta),
}

/// The identity and sequence range of an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl ProducerBatch {
    /// From a batch header's fields; the last sequence wraps like Kafka's.
    pub fn new(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        last_offset_delta: i32,
    ) -> ProducerBatch {
        let last =
            (i64::from(base_sequence) + i64::from(last_offset_delta)) % (i64::from(i32::MAX) + 1);
        ProducerBatch {
            producer_id,
            epoch,
            first_seq: base_sequence,
            last_seq: last as i32,
        }
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (last_seq == i32::MAX && next_seq == 0)
}

#[derive(Debug, Default)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction.
    open_txns: BTreeSet<(i64, i64)>,
    last_expiry_ms: i64,
}

impl ProducerState {
    pub fn check(&self, b: &ProducerBatch) -> Result<Decision, ResponseError> {
        let Some(entry) = self.producers.get(&b.producer_id) else {
            return Ok(Decision::Append);
        };
        if b.epoch < entry.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if b.epoch == entry.epoch {
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|m| m.first_seq == b.first_seq && m.last_seq == b.last_seq)
            {
                return Ok(Decision::Duplicate(*dup));
            }
            if let Some(last) = entry.batches.back() {
                if !in_sequence(last.last_seq, b.first_seq) {
                    return Err(ResponseError::OutOfOrderSequenceNumber);
                }
            }
        } else if b.first_seq != 0 {
            // A new epoch starts its sequences at zero.
            return Err(ResponseError::OutOfOrderSequenceNumber);
        }
        Ok(Decision::Append)
    }

    /// Records a written batch; a transactional one opens its producer's transaction here
    /// if none is open yet.
    pub fn record(
        &mut self,
        b: &ProducerBatch,
        base_offset: i64,
        last_offset: i64,
        now_ms: i64,
        transactional: bool,
    ) {
        let entry = self.entry_at_epoch(b.producer_id, b.epoch, now_ms);
        if transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
            self.open_txns.insert((base_offset, b.producer_id));
        }
        let entry = self
            .producers
            .get_mut(&b.producer_id)
            .expect("entry just made");
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            base_offset,
            last_offset,
        });
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        if now_ms - self.last_expiry_ms > 60_000 {
            self.expire(now_ms);
        }
    }

    /// The producer's entry, moved to `epoch` if that is newer (a new epoch forgets the
    /// sequences of the old one).
    fn entry_at_epoch(&mut self, producer_id: i64, epoch: i16, now_ms: i64) -> &mut ProducerEntry {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch, now_ms));
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry
    }

    /// A transactional batch the coordinator wrote for this producer (offset commits in
    /// `__consumer_offsets`): it opens the transaction like a produced batch would, but has
    /// no sequence numbers to remember.
    pub fn record_coordinator_batch(
        &mut self,
        producer_id: i64,
        epoch: i16,
        base_offset: i64,
        now_ms: i64,
    ) {
        let entry = self.entry_at_epoch(producer_id, epoch, now_ms);
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        if entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
            self.open_txns.insert((base_offset, producer_id));
        }
    }

    /// Whether a marker from the coordinator may be written: markers carry the producer's
    /// newest epoch, so an older one is a stale coordinator's.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(ResponseError::InvalidProducerEpoch),
            _ => Ok(()),
        }
    }

    /// A commit or abort marker was written: the producer's transaction here is over.
    /// Returns the first offset of the transaction it ended, if one was open.
    pub fn end_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Option<i64> {
        let entry = self.entry_at_epoch(producer_id, epoch, now_ms);
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        let first = entry.txn_first_offset.take()?;
        self.open_txns.remove(&(first, producer_id));
        Some(first)
    }

    /// The first offset of the oldest open transaction: `read_committed` consumers stop
    /// before it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_txns.first().map(|(offset, _)| *offset)
    }

    /// Every producer, as DescribeProducers shows them.
    pub fn describe(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(pid, e)| ProducerSummary {
                producer_id: *pid,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp_ms: e.last_seen_ms,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|s| s.producer_id);
        out
    }

    /// Drops producers idle for longer than `producer.id.expiration.ms`, except those with
    /// a transaction still open (the coordinator will end it).
    pub fn expire(&mut self, now_ms: i64) {
        self.last_expiry_ms = now_ms;
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_seen_ms <= PRODUCER_ID_EXPIRATION_MS
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u16(SNAPSHOT_VERSION);
        b.put_u32(self.producers.len() as u32);
        for (pid, e) in &self.producers {
            b.put_i64(*pid);
            b.put_i16(e.epoch);
            b.put_i64(e.last_seen_ms);
            b.put_i64(e.txn_first_offset.unwrap_or(-1));
            b.put_i32(e.coordinator_epoch);
            b.put_u8(e.batches.len() as u8);
            for m in &e.batches {
                b.put_i32(m.first_seq);
                b.put_i32(m.last_seq);
                b.put_i64(m.base_offset);
                b.put_i64(m.last_offset);
            }
        }
        b.to_vec()
    }

    /// Decodes a snapshot; `None` if it is not one this version wrote (then the caller
    /// rebuilds from the log instead).
    pub fn decode(mut data: &[u8]) -> Option<ProducerState> {
        const ENTRY: usize = 8 + 2 + 8 + 8 + 4 + 1;
        const BATCH: usize = 4 + 4 + 8 + 8;
        if data.len() < 6 || data.get_u16() != SNAPSHOT_VERSION {
            return None;
        }
        let count = data.get_u32();
        let mut producers = HashMap::new();
        let mut open_txns = BTreeSet::new();
        for _ in 0..count {
            if data.len() < ENTRY {
                return None;
            }
            let pid = data.get_i64();
            let epoch = data.get_i16();
            let last_seen_ms = data.get_i64();
            let txn_first_offset = Some(data.get_i64()).filter(|o| *o >= 0);
            let coordinator_epoch = data.get_i32();
            let n = data.get_u8() as usize;
            if data.len() < n * BATCH || n > CACHED_BATCHES {
                return None;
            }
            let batches = (0..n)
                .map(|_| BatchMeta {
                    first_seq: data.get_i32(),
                    last_seq: data.get_i32(),
                    base_offset: data.get_i64(),
                    last_offset: data.get_i64(),
                })
                .collect();
            if let Some(first) = txn_first_offset {
                open_txns.insert((first, pid));
            }
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_seen_ms,
                    txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        Some(ProducerState {
            producers,
            open_txns,
            last_expiry_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch::new(pid, epoch, first, count - 1)
    }

    #[test]
    fn sequences_must_follow_and_retries_are_duplicates() {
        let mut s = ProducerState::default();
        let b0 = batch(7, 0, 0, 10);
        assert_eq!(s.check(&b0), Ok(Decision::Append));
        s.record(&b0, 100, 109, 0, false);
        let b1 = batch(7, 0, 10, 5);
        assert_eq!(s.check(&b1), Ok(Decision::Append));
        s.record(&b1, 110, 114, 0, false);
        // A retry of the first batch: answered with its original offsets.
        assert_eq!(
            s.check(&b0),
            Ok(Decision::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 9,
                base_offset: 100,
                last_offset: 109
            }))
        );
        // A gap.
        assert_eq!(
            s.check(&batch(7, 0, 20, 1)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        // An older epoch is fenced; a newer one must start at 0.
        s.record(&batch(7, 1, 0, 1), 115, 115, 0, false);
        assert_eq!(
            s.check(&batch(7, 0, 15, 1)),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            s.check(&batch(7, 2, 3, 1)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(&batch(7, 2, 0, 1)), Ok(Decision::Append));
        // Unknown producers may start anywhere.
        assert_eq!(s.check(&batch(8, 0, 42, 1)), Ok(Decision::Append));
    }

    #[test]
    fn only_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerState::default();
        for i in 0..6 {
            s.record(
                &batch(1, 0, i * 2, 2),
                i64::from(i) * 2,
                i64::from(i) * 2 + 1,
                0,
                false,
            );
        }
        assert_eq!(
            s.check(&batch(1, 0, 0, 2)),
            Err(ResponseError::OutOfOrderSequenceNumber),
            "evicted"
        );
        assert!(matches!(
            s.check(&batch(1, 0, 2, 2)),
            Ok(Decision::Duplicate(_))
        ));

        let mut w = ProducerState::default();
        let near_max = ProducerBatch::new(2, 0, i32::MAX - 1, 1);
        assert_eq!(near_max.last_seq, i32::MAX);
        w.record(&near_max, 0, 1, 0, false);
        assert_eq!(w.check(&batch(2, 0, 0, 1)), Ok(Decision::Append));
    }

    #[test]
    fn snapshot_round_trips_and_idle_producers_expire() {
        let mut s = ProducerState::default();
        s.record(&batch(1, 3, 0, 4), 10, 13, 1_000, false);
        s.record(&batch(2, 0, 0, 1), 14, 14, 2_000, false);
        let restored = ProducerState::decode(&s.encode()).unwrap();
        assert!(matches!(
            restored.check(&batch(1, 3, 0, 4)),
            Ok(Decision::Duplicate(_))
        ));
        assert_eq!(
            restored.check(&batch(1, 2, 4, 1)),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert!(ProducerState::decode(b"junk").is_none());

        let mut e = restored;
        e.expire(PRODUCER_ID_EXPIRATION_MS + 1_500);
        assert_eq!(
            e.len(),
            1,
            "producer 1 was idle for more than a day, producer 2 not"
        );
        assert!(matches!(
            e.check(&batch(2, 0, 0, 1)),
            Ok(Decision::Duplicate(_))
        ));
    }

    #[test]
    fn transactions_bound_the_last_stable_offset_and_survive_a_snapshot() {
        let mut s = ProducerState::default();
        s.record(&batch(1, 0, 0, 2), 10, 11, 0, true);
        s.record(&batch(2, 0, 0, 1), 12, 12, 0, true);
        s.record(&batch(1, 0, 2, 1), 13, 13, 0, true);
        s.record(&batch(3, 0, 0, 1), 14, 14, 0, false);
        assert_eq!(s.first_unstable_offset(), Some(10));
        let restored = ProducerState::decode(&s.encode()).unwrap();
        assert_eq!(restored.first_unstable_offset(), Some(10));
        assert_eq!(s.end_txn(1, 0, 5, 0), Some(10));
        assert_eq!(s.first_unstable_offset(), Some(12));
        assert_eq!(s.end_txn(1, 0, 5, 0), None, "already ended");
        // A marker with a bumped epoch (the coordinator fenced producer 2) ends it too,
        // and the old epoch is refused afterwards.
        assert_eq!(s.check_marker(2, 0), Ok(()));
        assert_eq!(s.end_txn(2, 1, 5, 0), Some(12));
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(
            s.check(&batch(2, 0, 1, 1)),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            s.check_marker(2, 0),
            Err(ResponseError::InvalidProducerEpoch)
        );
        let d = s.describe();
        assert_eq!(d[0].current_txn_start_offset, -1);
        assert_eq!(d[0].last_sequence, 2);
        assert_eq!(d[0].coordinator_epoch, 5);
        // Producers with an open transaction never expire.
        s.record_coordinator_batch(4, 0, 20, 0);
        s.expire(PRODUCER_ID_EXPIRATION_MS * 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.first_unstable_offset(), Some(20));
    }
}
