//! Transaction markers: the control batches that end a Kafka transaction in a partition.
//!
//! The transaction coordinator asks each partition leader to write one COMMIT or ABORT marker
//! per producer; the marker is a magic-v2 batch with the control and transactional attribute
//! bits set and a single control record (Kafka's `EndTransactionMarker`). Consumers never see
//! it as a record, but they use it: a read_committed consumer drops an aborted transaction's
//! records up to its ABORT marker. So the broker writes markers through the ordinary leader
//! append, and storage must keep them (compaction never drops a control batch).
//!
//! Control record layout (big endian), as Kafka's `ControlRecordType` and
//! `EndTransactionMarker`:
//!
//! ```text
//! key:   i16 version (0), i16 type (0 = ABORT, 1 = COMMIT)
//! value: i16 version (0), i32 coordinator epoch
//! ```

use bytes::Bytes;

use crate::records::BatchBuilder;
use crate::RecordBatch;

/// The key version this crate writes; Kafka reads newer versions by their first four bytes.
const CONTROL_KEY_VERSION: i16 = 0;
/// The `EndTransactionMarker` value version.
const END_TXN_MARKER_VERSION: i16 = 0;
const ABORT_TYPE: i16 = 0;
const COMMIT_TYPE: i16 = 1;

/// Commit or abort, the two control record types Kafka writes (key version 0, type 0 = ABORT, 1 = COMMIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    fn wire_type(self) -> i16 {
        match self {
            ControlType::Abort => ABORT_TYPE,
            ControlType::Commit => COMMIT_TYPE,
        }
    }

    /// Parses a control record key. Like Kafka, a key version newer than ours is still read
    /// by its type (the first four bytes keep their meaning); other control types (leader
    /// change, KRaft snapshots) are not transaction markers and give None.
    fn from_key(key: &[u8]) -> Option<ControlType> {
        let [v0, v1, t0, t1, ..] = *key else {
            return None;
        };
        if i16::from_be_bytes([v0, v1]) < 0 {
            return None;
        }
        match i16::from_be_bytes([t0, t1]) {
            ABORT_TYPE => Some(ControlType::Abort),
            COMMIT_TYPE => Some(ControlType::Commit),
            _ => None,
        }
    }
}

/// A magic-v2 control batch with one control record: attributes = transactional (bit 4) | control (bit 5), no compression,
/// producer id/epoch given, base sequence -1, base offset 0 (the log assigns it), record key = i16 version 0 + i16 type,
/// value = i16 version 0 + i32 coordinator_epoch, timestamps = timestamp_ms, correct CRC-32C.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    control: ControlType,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Bytes {
    let mut key = [0u8; 4];
    key[..2].copy_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    key[2..].copy_from_slice(&control.wire_type().to_be_bytes());
    let mut value = [0u8; 6];
    value[..2].copy_from_slice(&END_TXN_MARKER_VERSION.to_be_bytes());
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());

    let mut b = BatchBuilder::new(0, timestamp_ms);
    b.transactional = true;
    b.control = true;
    b.producer_id = producer_id;
    b.producer_epoch = producer_epoch;
    b.base_sequence = -1;
    b.push(0, timestamp_ms, Some(&key), Some(&value), &[]);
    // Uncompressed, so encoding cannot fail.
    b.build_uncompressed()
}

impl RecordBatch<'_> {
    /// For a control batch, the type read from its first record's key (None if not a control batch or the key is not a known control key).
    pub fn control_type(&self) -> Option<ControlType> {
        if !self.is_control() {
            return None;
        }
        let records = self.records().ok()?;
        let key = records.first()?.key.as_ref()?;
        ControlType::from_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchBuilder;

    #[test]
    fn a_control_batch_round_trips() {
        for (control, wire) in [(ControlType::Abort, 0i16), (ControlType::Commit, 1)] {
            let bytes = control_batch(4242, 7, control, 13, 1_700_000_000_000);
            let b = RecordBatch::new(&bytes).unwrap();
            b.verify_crc().unwrap();
            b.validate_stored().unwrap();
            assert!(b.is_control());
            assert!(b.is_transactional());
            assert_eq!(b.control_type(), Some(control));
            assert_eq!(b.producer_id(), 4242);
            assert_eq!(b.producer_epoch(), 7);
            assert_eq!(b.base_sequence(), -1);
            assert_eq!(b.base_offset(), 0);
            assert_eq!(b.record_count(), 1);
            assert_eq!(b.last_offset_delta(), 0);
            assert_eq!(b.compression().unwrap(), crate::Compression::None);
            assert_eq!(b.base_timestamp(), 1_700_000_000_000);
            assert_eq!(b.max_timestamp(), 1_700_000_000_000);

            let records = b.records().unwrap();
            assert_eq!(records.len(), 1);
            let r = &records[0];
            assert_eq!(r.offset, 0);
            assert_eq!(r.timestamp, 1_700_000_000_000);
            let key = r.key.as_ref().unwrap();
            assert_eq!(&key[..], &[0, 0, 0, wire as u8]);
            let value = r.value.as_ref().unwrap();
            assert_eq!(i16::from_be_bytes([value[0], value[1]]), 0);
            assert_eq!(
                i32::from_be_bytes([value[2], value[3], value[4], value[5]]),
                13
            );
            assert!(r.headers.is_empty());
        }
    }

    #[test]
    fn control_type_is_none_for_data_and_unknown_control_keys() {
        let data = crate::simple_batch(
            1,
            &[(Some(b"\0\0\0\0"), Some(b"v"))],
            crate::Compression::None,
        );
        assert_eq!(RecordBatch::new(&data).unwrap().control_type(), None);

        // A control batch of another type (Kafka's LEADER_CHANGE = 2) is not a marker.
        let mut b = BatchBuilder::new(0, 1);
        b.control = true;
        b.push(0, 1, Some(&[0, 0, 0, 2]), Some(b"x"), &[]);
        let other = b.build().unwrap();
        assert_eq!(RecordBatch::new(&other).unwrap().control_type(), None);

        // A key too short to hold a type.
        let mut b = BatchBuilder::new(0, 1);
        b.control = true;
        b.push(0, 1, Some(&[0, 0]), None, &[]);
        let short = b.build().unwrap();
        assert_eq!(RecordBatch::new(&short).unwrap().control_type(), None);

        // A newer key version is still read by its type, as Kafka does.
        let mut b = BatchBuilder::new(0, 1);
        b.control = true;
        b.push(0, 1, Some(&[0, 1, 0, 1, 9, 9]), None, &[]);
        let newer = b.build().unwrap();
        assert_eq!(
            RecordBatch::new(&newer).unwrap().control_type(),
            Some(ControlType::Commit)
        );
    }
}
