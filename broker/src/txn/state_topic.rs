//! The records of `__transaction_state`, in Kafka's own formats (TransactionLogKey version 0,
//! TransactionLogValue version 0), so the topic reads the same as Kafka's: one record per
//! change of a transactional id's metadata, the newest value per key being the state. A
//! record with a null value is a tombstone.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const TXN_STATE_TOPIC: &str = "__transaction_state";

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// A transaction's state, with Kafka's names (DescribeTransactions shows them) and the
/// numbers it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }

    fn id(self) -> i8 {
        TxnState::ALL.iter().position(|s| *s == self).unwrap_or(0) as i8
    }

    fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.get(usize::try_from(id).ok()?).copied()
    }
}

/// What `__transaction_state` keeps per transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// (topic, partition) of every partition in the transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

pub fn key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(KEY_VERSION);
    put_string(&mut b, transactional_id);
    b.freeze()
}

pub fn value(v: &TxnValue) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(VALUE_VERSION);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.state.id());
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, p) in &v.partitions {
        match by_topic.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*p),
            _ => by_topic.push((topic, vec![*p])),
        }
    }
    b.put_i32(by_topic.len() as i32);
    for (topic, ps) in by_topic {
        put_string(&mut b, topic);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    b.freeze()
}

/// Decodes one record: the transactional id and its value (None: a tombstone).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<(String, Option<TxnValue>), String> {
    let mut k = key;
    if k.remaining() < 2 || k.get_i16() != KEY_VERSION {
        return Err("unknown __transaction_state key version".into());
    }
    let id = get_string(&mut k)?;
    let Some(mut v) = value else {
        return Ok((id, None));
    };
    let short = || "truncated __transaction_state value".to_string();
    if v.remaining() < 2 + 8 + 2 + 4 + 1 + 4 {
        return Err(short());
    }
    let version = v.get_i16();
    if version != VALUE_VERSION {
        return Err(format!(
            "unknown __transaction_state value version {version}"
        ));
    }
    let producer_id = v.get_i64();
    let producer_epoch = v.get_i16();
    let timeout_ms = v.get_i32();
    let state = TxnState::from_id(v.get_i8()).ok_or("unknown transaction state")?;
    let topics = v.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut v)?;
        if v.remaining() < 4 {
            return Err(short());
        }
        let n = v.get_i32();
        if n < 0 || v.remaining() < n as usize * 4 {
            return Err(short());
        }
        for _ in 0..n {
            partitions.insert((topic.clone(), v.get_i32()));
        }
    }
    if v.remaining() < 16 {
        return Err(short());
    }
    Ok((
        id,
        Some(TxnValue {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms: v.get_i64(),
            start_ms: v.get_i64(),
        }),
    ))
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_string(b: &mut &[u8]) -> Result<String, String> {
    if b.remaining() < 2 {
        return Err("truncated string".into());
    }
    let len = b.get_i16();
    if len < 0 || b.remaining() < len as usize {
        return Err("truncated string".into());
    }
    let s = String::from_utf8(b[..len as usize].to_vec()).map_err(|e| e.to_string())?;
    b.advance(len as usize);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_match_kafkas_layout() {
        let v = TxnValue {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("a".to_string(), 1),
                ("a".to_string(), 0),
                ("b".to_string(), 2),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 11,
            start_ms: 10,
        };
        let (id, back) = decode(&key("tx-1"), Some(&value(&v))).unwrap();
        assert_eq!(id, "tx-1");
        assert_eq!(back, Some(v.clone()));
        // version, pid, epoch, timeout, state, 2 topics: "a" [0, 1], "b" [2], two timestamps.
        assert_eq!(
            value(&v).len(),
            2 + 8 + 2 + 4 + 1 + 4 + (2 + 1 + 4 + 8) + (2 + 1 + 4 + 4) + 16
        );
        assert_eq!(value(&v)[16], 1, "Ongoing is state 1 in Kafka");
        assert_eq!(
            decode(&key("tx-1"), None).unwrap(),
            ("tx-1".to_string(), None)
        );
        assert!(decode(b"\x00\x07junk", None).is_err());
        assert!(decode(&key("x"), Some(&value(&v)[..20])).is_err());
        for s in TxnState::ALL {
            assert_eq!(TxnState::from_name(s.name()), Some(s));
            assert_eq!(TxnState::from_id(s.id()), Some(s));
        }
    }
}
