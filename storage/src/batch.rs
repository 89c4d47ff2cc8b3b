//! The magic-v2 record batch: a zero-copy header view, CRC-32C verification and the two
//! header fields the log rewrites (base offset and partition leader epoch, neither of which
//! is covered by the CRC).
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//!  0 baseOffset i64        8 batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16       23 lastOffsetDelta i32  27 baseTimestamp i64
//! 35 maxTimestamp i64     43 producerId i64       51 producerEpoch i16
//! 53 baseSequence i32     57 recordCount i32      61 records...
//! ```

use crate::error::StorageError;

/// Bytes before `batchLength` counts: base offset and the length field itself.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = 61;
/// The only record format this crate stores.
pub const MAGIC_V2: i8 = 2;

pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;
/// The CRC covers everything from the attributes to the end of the batch.
pub(crate) const CRC_START: usize = ATTRIBUTES_AT;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Record compression codec, from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Result<Compression, StorageError> {
        Ok(match attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => {
                return Err(StorageError::invalid(format!(
                    "unknown compression codec {other}"
                )))
            }
        })
    }

    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the total size (`LOG_OVERHEAD + batchLength`) of the batch starting at `buf`, if
/// `buf` holds at least its first 12 bytes. Errors on a length no v2 batch can have.
pub(crate) fn peek_batch_size(buf: &[u8]) -> Result<Option<usize>, StorageError> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let len = be_i32(buf, LENGTH_AT);
    if len < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
        return Err(StorageError::corrupt(format!(
            "batch length {len} below the v2 header size"
        )));
    }
    Ok(Some(LOG_OVERHEAD + len as usize))
}

/// A zero-copy view of one record batch. The slice holds at least the 61-byte header; for a
/// view made by [`RecordBatch::new`] it is exactly the whole batch.
#[derive(Clone, Copy)]
pub struct RecordBatch<'a> {
    buf: &'a [u8],
}

impl std::fmt::Debug for RecordBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset", &self.last_offset())
            .field("size", &self.size_in_bytes())
            .field("epoch", &self.partition_leader_epoch())
            .field("count", &self.record_count())
            .finish()
    }
}

impl<'a> RecordBatch<'a> {
    /// A view of exactly one whole batch: `buf.len()` must equal the batch's own length.
    pub fn new(buf: &'a [u8]) -> Result<RecordBatch<'a>, StorageError> {
        let Some(size) = peek_batch_size(buf)? else {
            return Err(StorageError::corrupt("truncated batch header"));
        };
        if buf.len() < HEADER_SIZE || size != buf.len() {
            return Err(StorageError::corrupt(format!(
                "batch length field says {size} bytes, have {}",
                buf.len()
            )));
        }
        Ok(RecordBatch { buf })
    }

    /// A header-only view (the records may be absent); used when scanning files.
    pub(crate) fn header(buf: &'a [u8]) -> Result<RecordBatch<'a>, StorageError> {
        if buf.len() < HEADER_SIZE {
            return Err(StorageError::corrupt("truncated batch header"));
        }
        peek_batch_size(buf)?;
        Ok(RecordBatch { buf })
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.buf, BASE_OFFSET_AT)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.buf, LENGTH_AT)
    }
    /// Whole size on disk / on the wire.
    pub fn size_in_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length() as usize
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.buf, LEADER_EPOCH_AT)
    }
    pub fn magic(&self) -> i8 {
        self.buf[MAGIC_AT] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.buf, CRC_AT) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.buf, ATTRIBUTES_AT)
    }
    pub fn compression(&self) -> Result<Compression, StorageError> {
        Compression::from_attributes(self.attributes())
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.buf, LAST_OFFSET_DELTA_AT)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.buf, BASE_TIMESTAMP_AT)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.buf, MAX_TIMESTAMP_AT)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.buf, PRODUCER_ID_AT)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.buf, PRODUCER_EPOCH_AT)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.buf, BASE_SEQUENCE_AT)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.buf, RECORD_COUNT_AT)
    }
    /// The compressed or plain record bytes after the header.
    pub fn records_bytes(&self) -> &'a [u8] {
        &self.buf[HEADER_SIZE..]
    }

    /// CRC-32C over bytes 21..end, as stored in the `crc` field.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.buf[CRC_START..])
    }

    pub fn verify_crc(&self) -> Result<(), StorageError> {
        let computed = self.compute_crc();
        if computed != self.crc() {
            return Err(StorageError::corrupt(format!(
                "CRC mismatch at base offset {}: stored {:#010x}, computed {computed:#010x}",
                self.base_offset(),
                self.crc()
            )));
        }
        Ok(())
    }

    /// Structural checks every stored batch must pass (magic, CRC, offset range). Client
    /// batches additionally go through the leader-path checks (record count, size).
    pub fn validate_stored(&self) -> Result<(), StorageError> {
        if self.magic() != MAGIC_V2 {
            return Err(StorageError::invalid(format!(
                "magic {} at base offset {} (only v2 is stored)",
                self.magic(),
                self.base_offset()
            )));
        }
        self.verify_crc()?;
        if self.last_offset_delta() < 0 || self.record_count() < 0 {
            return Err(StorageError::corrupt(format!(
                "negative last offset delta {} or record count {}",
                self.last_offset_delta(),
                self.record_count()
            )));
        }
        Ok(())
    }
}

/// Validates one batch a client produced (leader path): magic, size, CRC and the offset
/// range against the record count, as Kafka's `LogValidator` does for v2.
pub(crate) fn validate_client_batch(
    batch: &RecordBatch<'_>,
    max_message_bytes: usize,
) -> Result<(), StorageError> {
    if batch.magic() != MAGIC_V2 {
        return Err(StorageError::invalid(format!(
            "magic {} (only v2 record batches are accepted)",
            batch.magic()
        )));
    }
    if batch.size_in_bytes() > max_message_bytes {
        return Err(StorageError::MessageTooLarge {
            size: batch.size_in_bytes(),
            max: max_message_bytes,
        });
    }
    // One pass over the whole batch: checking header and records apart and combining the
    // two CRCs cost more than the CRC itself (crc32c_combine was most of a small append).
    batch.verify_crc()?;
    let count = batch.record_count();
    if count <= 0 {
        return Err(StorageError::invalid(
            "record batch must contain at least one record",
        ));
    }
    if batch.last_offset_delta() as i64 + 1 != count as i64 {
        return Err(StorageError::invalid(format!(
            "last offset delta {} does not match record count {count}",
            batch.last_offset_delta()
        )));
    }
    batch.compression()?;
    Ok(())
}

/// Iterates over whole batches in a buffer of concatenated batches. Stops with an error at
/// the first impossible length or a trailing partial batch.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter { buf, pos: 0 }
    }

    /// Byte position of the next batch within the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<RecordBatch<'a>, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let size = match peek_batch_size(rest) {
            Ok(Some(size)) => size,
            Ok(None) => {
                self.pos = self.buf.len();
                return Some(Err(StorageError::corrupt(format!(
                    "{} trailing bytes are not a whole batch",
                    rest.len()
                ))));
            }
            Err(e) => {
                self.pos = self.buf.len();
                return Some(Err(e));
            }
        };
        if size > rest.len() {
            self.pos = self.buf.len();
            return Some(Err(StorageError::corrupt(format!(
                "batch of {size} bytes truncated to {}",
                rest.len()
            ))));
        }
        self.pos += size;
        Some(RecordBatch::new(&rest[..size]))
    }
}

/// Overwrites the base offset of the batch at the start of `buf` (not under the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of the batch at the start of `buf` (not under the CRC).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// A copy of one batch's 61-byte header with the fields the leader assigns patched in. The
/// records after the header are never copied: they are written from the caller's buffer.
pub(crate) struct PatchedHeader {
    pub bytes: [u8; HEADER_SIZE],
}

impl PatchedHeader {
    pub fn new(batch: &RecordBatch<'_>) -> PatchedHeader {
        let mut bytes = [0u8; HEADER_SIZE];
        bytes.copy_from_slice(&batch.as_bytes()[..HEADER_SIZE]);
        PatchedHeader { bytes }
    }

    pub fn set_base_offset(&mut self, offset: i64) {
        set_base_offset(&mut self.bytes, offset);
    }

    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        set_partition_leader_epoch(&mut self.bytes, epoch);
    }

    /// LogAppendTime: stamps `max_timestamp`, sets the timestamp-type bit and recomputes the
    /// CRC over the new header part and the untouched `records` (the bytes after the
    /// header). Only LogAppendTime topics pay this second pass.
    pub fn set_log_append_time(&mut self, now_ms: i64, records: &[u8]) {
        let attrs = be_i16(&self.bytes, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
        self.bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
        self.bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        let head_crc = crc32c::crc32c(&self.bytes[CRC_START..HEADER_SIZE]);
        let crc = crc32c::crc32c_append(head_crc, records);
        self.bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}
