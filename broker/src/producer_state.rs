//! Idempotent producers on one partition: per producer id, its epoch and the sequence
//! ranges of its last five batches, as Kafka's ProducerStateManager keeps them.
//!
//! A retried batch that is one of the last five is a duplicate: it is answered with the
//! offset it got the first time and not written again. Otherwise the sequence must follow
//! the previous batch (OUT_OF_ORDER_SEQUENCE_NUMBER), and an older epoch is fenced
//! (INVALID_PRODUCER_EPOCH). A producer we know nothing of (new, or expired) may start at
//! any sequence, as in Kafka since KIP-360.
//!
//! The state is snapshotted at clean shutdown and rebuilt on open from the snapshot plus
//! the batches after it.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut, BytesMut};
use sluice_protocol::ResponseError;

/// Batches remembered per producer (Kafka's max.in.flight.requests.per.connection bound).
pub const CACHED_BATCHES: usize = 5;
/// `producer.id.expiration.ms`: an idle producer's state is dropped after this.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
const SNAPSHOT_VERSION: u16 = 1;

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

    /// Records a written batch.
    pub fn record(&mut self, b: &ProducerBatch, base_offset: i64, last_offset: i64, now_ms: i64) {
        let entry = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                batches: VecDeque::with_capacity(CACHED_BATCHES),
                last_seen_ms: now_ms,
            });
        if entry.epoch != b.epoch {
            entry.epoch = b.epoch;
            entry.batches.clear();
        }
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

    /// Drops producers idle for longer than `producer.id.expiration.ms`.
    pub fn expire(&mut self, now_ms: i64) {
        self.last_expiry_ms = now_ms;
        self.producers
            .retain(|_, e| now_ms - e.last_seen_ms <= PRODUCER_ID_EXPIRATION_MS);
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
        const ENTRY: usize = 8 + 2 + 8 + 1;
        const BATCH: usize = 4 + 4 + 8 + 8;
        if data.len() < 6 || data.get_u16() != SNAPSHOT_VERSION {
            return None;
        }
        let count = data.get_u32();
        let mut producers = HashMap::new();
        for _ in 0..count {
            if data.len() < ENTRY {
                return None;
            }
            let pid = data.get_i64();
            let epoch = data.get_i16();
            let last_seen_ms = data.get_i64();
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
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_seen_ms,
                },
            );
        }
        Some(ProducerState {
            producers,
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
        s.record(&b0, 100, 109, 0);
        let b1 = batch(7, 0, 10, 5);
        assert_eq!(s.check(&b1), Ok(Decision::Append));
        s.record(&b1, 110, 114, 0);
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
        s.record(&batch(7, 1, 0, 1), 115, 115, 0);
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
        w.record(&near_max, 0, 1, 0);
        assert_eq!(w.check(&batch(2, 0, 0, 1)), Ok(Decision::Append));
    }

    #[test]
    fn snapshot_round_trips_and_idle_producers_expire() {
        let mut s = ProducerState::default();
        s.record(&batch(1, 3, 0, 4), 10, 13, 1_000);
        s.record(&batch(2, 0, 0, 1), 14, 14, 2_000);
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
}
