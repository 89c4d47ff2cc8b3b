//! Records inside a batch: decoding (with decompression) for the features that need it
//! (compaction, timestamp lookup), and an encoder ([`BatchBuilder`]) used by compaction to
//! re-write batches and by tests to make valid client batches.
//!
//! A client's batch is never decoded on the produce or fetch path.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{self, Compression, RecordBatch, HEADER_SIZE};
use crate::error::StorageError;

/// Upper bound on one batch's decompressed records, so a hostile or corrupt batch cannot make
/// compaction or a timestamp lookup allocate without limit.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

/// One record header (`key` is a UTF-8 string on the wire; kept as bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One decoded record with its absolute offset and effective timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// For LogAppendTime batches this is the batch's max timestamp, as Kafka reports it.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
    /// The record's own delta fields, kept so that re-encoding is exact.
    pub(crate) offset_delta: i32,
    pub(crate) timestamp_delta: i64,
}

// ---- varints (zig-zag, as Kafka's ByteUtils) ----

fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, StorageError> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let Some(&b) = buf.get(*pos) else {
            return Err(StorageError::corrupt("truncated varint in record"));
        };
        *pos += 1;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(StorageError::corrupt("varint too long in record"));
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, StorageError> {
    let v = read_varlong(buf, pos)?;
    i32::try_from(v).map_err(|_| StorageError::corrupt("varint out of i32 range"))
}

pub(crate) fn write_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn read_nullable(buf: &Bytes, pos: &mut usize) -> Result<Option<Bytes>, StorageError> {
    let len = read_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| StorageError::corrupt("record field runs past the batch"))?;
    let out = buf.slice(*pos..end);
    *pos = end;
    Ok(Some(out))
}

// ---- codecs ----

const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

fn read_bounded(mut r: impl Read) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    let read = r
        .by_ref()
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| StorageError::corrupt(format!("decompression failed: {e}")))?;
    if read > MAX_DECOMPRESSED_BYTES {
        return Err(StorageError::corrupt(
            "decompressed batch exceeds the size limit",
        ));
    }
    Ok(out)
}

fn snappy_raw(data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let len = snap::raw::decompress_len(data)
        .map_err(|e| StorageError::corrupt(format!("snappy: {e}")))?;
    if len > MAX_DECOMPRESSED_BYTES {
        return Err(StorageError::corrupt(
            "decompressed batch exceeds the size limit",
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(data)
        .map_err(|e| StorageError::corrupt(format!("snappy: {e}")))
}

/// Kafka's Java client writes snappy in xerial's block framing; some clients (and old
/// librdkafka) write raw snappy. Both are accepted.
fn snappy_decompress(data: &[u8]) -> Result<Vec<u8>, StorageError> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snappy_raw(data);
    }
    let mut pos = XERIAL_HEADER_LEN.min(data.len());
    let mut out = Vec::new();
    while pos < data.len() {
        if pos + 4 > data.len() {
            return Err(StorageError::corrupt(
                "xerial snappy: truncated block length",
            ));
        }
        let len =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        pos += 4;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| StorageError::corrupt("xerial snappy: block runs past the data"))?;
        let block = snappy_raw(&data[pos..end])?;
        if out.len() + block.len() > MAX_DECOMPRESSED_BYTES {
            return Err(StorageError::corrupt(
                "decompressed batch exceeds the size limit",
            ));
        }
        out.extend_from_slice(&block);
        pos = end;
    }
    Ok(out)
}

/// Decompresses a batch's record bytes.
pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data)),
        Compression::Snappy => snappy_decompress(data),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data)),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data)
                .map_err(|e| StorageError::corrupt(format!("zstd: {e}")))?;
            read_bounded(decoder)
        }
    }
}

/// Compresses record bytes the way Kafka's Java producer does for each codec.
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let io = |e: std::io::Error| StorageError::Io(e);
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(io)?;
            enc.finish().map_err(io)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = enc
                    .compress_vec(chunk)
                    .map_err(|e| StorageError::corrupt(format!("snappy: {e}")))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.block_mode = lz4_flex::frame::BlockMode::Independent;
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(data).map_err(io)?;
            enc.finish()
                .map_err(|e| StorageError::corrupt(format!("lz4: {e}")))
        }
        Compression::Zstd => zstd::bulk::compress(data, 3).map_err(io),
    }
}

// ---- decoding ----

impl RecordBatch<'_> {
    /// Decodes every record (decompressing if needed). Control batches decode the same way
    /// (their key/value hold the control record).
    pub fn records(&self) -> Result<Vec<Record>, StorageError> {
        let codec = self.compression()?;
        let raw: Bytes = match codec {
            Compression::None => Bytes::copy_from_slice(self.records_bytes()),
            other => Bytes::from(decompress(other, self.records_bytes())?),
        };
        let count = self.record_count().max(0) as usize;
        // Each record takes at least 7 bytes, so a lying count cannot make us over-allocate.
        let mut out = Vec::with_capacity(count.min(raw.len() / 7 + 1));
        let mut pos = 0usize;
        for _ in 0..count {
            let len = read_varint(&raw, &mut pos)?;
            if len < 0 {
                return Err(StorageError::corrupt("negative record length"));
            }
            let end = pos
                .checked_add(len as usize)
                .filter(|&e| e <= raw.len())
                .ok_or_else(|| StorageError::corrupt("record runs past the batch"))?;
            let rec = raw.slice(..end);
            let mut p = pos;
            p += 1; // record attributes: unused in v2
            let timestamp_delta = read_varlong(&rec, &mut p)?;
            let offset_delta = read_varint(&rec, &mut p)?;
            let key = read_nullable(&rec, &mut p)?;
            let value = read_nullable(&rec, &mut p)?;
            let n_headers = read_varint(&rec, &mut p)?;
            if n_headers < 0 {
                return Err(StorageError::corrupt("negative header count"));
            }
            let mut headers = Vec::with_capacity((n_headers as usize).min(64));
            for _ in 0..n_headers {
                let key = read_nullable(&rec, &mut p)?
                    .ok_or_else(|| StorageError::corrupt("null header key"))?;
                let value = read_nullable(&rec, &mut p)?;
                headers.push(RecordHeader { key, value });
            }
            if p != end {
                return Err(StorageError::corrupt(
                    "record length does not match its fields",
                ));
            }
            let timestamp = if self.is_log_append_time() {
                self.max_timestamp()
            } else {
                self.base_timestamp().wrapping_add(timestamp_delta)
            };
            out.push(Record {
                offset: self.base_offset() + offset_delta as i64,
                timestamp,
                key,
                value,
                headers,
                offset_delta,
                timestamp_delta,
            });
            pos = end;
        }
        Ok(out)
    }
}

// ---- encoding ----

/// Builds one magic-v2 batch. Offsets are given as deltas from `base_offset`; the builder
/// keeps them as given, so compaction can drop records without moving the others.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub compression: Compression,
    pub log_append_time: bool,
    pub transactional: bool,
    pub control: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// The batch's first timestamp; record timestamps are stored as deltas from it.
    pub base_timestamp: i64,
    /// When set, written as the max timestamp instead of the records' maximum (LogAppendTime).
    pub max_timestamp_override: Option<i64>,
    /// When set, the last offset delta written instead of the last record's delta (Kafka keeps
    /// a compacted batch's original last offset so producer state stays right).
    pub last_offset_delta_override: Option<i32>,
    records: BytesMut,
    count: i32,
    last_delta: i32,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(base_offset: i64, base_timestamp: i64) -> BatchBuilder {
        BatchBuilder {
            base_offset,
            partition_leader_epoch: -1,
            compression: Compression::None,
            log_append_time: false,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            base_timestamp,
            max_timestamp_override: None,
            last_offset_delta_override: None,
            records: BytesMut::new(),
            count: 0,
            last_delta: -1,
            max_timestamp: -1,
        }
    }

    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Appends a record at `base_offset + offset_delta` (deltas must increase).
    pub fn push(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
    ) {
        debug_assert!(
            offset_delta > self.last_delta,
            "offset deltas must increase"
        );
        let mut body =
            BytesMut::with_capacity(16 + key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()));
        body.put_i8(0);
        write_varlong(&mut body, timestamp.wrapping_sub(self.base_timestamp));
        write_varlong(&mut body, offset_delta as i64);
        for field in [key, value] {
            match field {
                None => write_varlong(&mut body, -1),
                Some(b) => {
                    write_varlong(&mut body, b.len() as i64);
                    body.put_slice(b);
                }
            }
        }
        write_varlong(&mut body, headers.len() as i64);
        for h in headers {
            write_varlong(&mut body, h.key.len() as i64);
            body.put_slice(&h.key);
            match &h.value {
                None => write_varlong(&mut body, -1),
                Some(v) => {
                    write_varlong(&mut body, v.len() as i64);
                    body.put_slice(v);
                }
            }
        }
        write_varlong(&mut self.records, body.len() as i64);
        self.records.put_slice(&body);
        self.count += 1;
        self.last_delta = offset_delta;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Re-encodes a decoded record with its original offset and timestamp deltas.
    pub(crate) fn push_record(&mut self, r: &Record) {
        self.push(
            r.offset_delta,
            self.base_timestamp.wrapping_add(r.timestamp_delta),
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }

    /// The finished batch with its CRC.
    pub fn build(&self) -> Result<Bytes, StorageError> {
        let records = compress(self.compression, &self.records)?;
        Ok(self.encode(&records))
    }

    /// The finished batch, written uncompressed whatever `compression` says; unlike
    /// [`BatchBuilder::build`] it cannot fail (control batches are never compressed).
    pub(crate) fn build_uncompressed(&self) -> Bytes {
        let plain = BatchBuilder {
            compression: Compression::None,
            ..self.clone()
        };
        plain.encode(&self.records)
    }

    /// Header, CRC and the given (already compressed) record bytes.
    fn encode(&self, records: &[u8]) -> Bytes {
        let mut attrs = self.compression.id();
        if self.log_append_time {
            attrs |= 0x08;
        }
        if self.transactional {
            attrs |= 0x10;
        }
        if self.control {
            attrs |= 0x20;
        }
        let last_delta = self
            .last_offset_delta_override
            .unwrap_or(self.last_delta.max(0));
        let max_ts = self.max_timestamp_override.unwrap_or(if self.count == 0 {
            self.base_timestamp
        } else {
            self.max_timestamp
        });
        let mut out = BytesMut::with_capacity(HEADER_SIZE + records.len());
        out.put_i64(self.base_offset);
        out.put_i32((HEADER_SIZE - batch::LOG_OVERHEAD + records.len()) as i32);
        out.put_i32(self.partition_leader_epoch);
        out.put_i8(batch::MAGIC_V2);
        out.put_u32(0);
        out.put_i16(attrs);
        out.put_i32(last_delta);
        out.put_i64(self.base_timestamp);
        out.put_i64(max_ts);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.count);
        out.put_slice(records);
        let crc = crc32c::crc32c(&out[batch::CRC_START..]);
        out[batch::CRC_AT..batch::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }
}

/// A record's key and value, either possibly null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Test and benchmark helper: a client-style batch (base offset 0) of key/value records, all
/// with the same timestamp.
pub fn simple_batch(timestamp: i64, records: &[KeyValue<'_>], compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(0, timestamp).compression(compression);
    for (i, (k, v)) in records.iter().enumerate() {
        b.push(i as i32, timestamp, *k, *v, &[]);
    }
    // Only compression can fail, and the codecs do not fail on in-memory buffers.
    b.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(codec: Compression) -> Bytes {
        let mut b = BatchBuilder::new(100, 1_000).compression(codec);
        b.push(0, 1_000, Some(b"k1"), Some(b"v1"), &[]);
        b.push(
            1,
            1_005,
            None,
            Some(&[7u8; 3000]),
            &[RecordHeader {
                key: Bytes::from_static(b"h"),
                value: None,
            }],
        );
        b.push(2, 990, Some(b"k3"), None, &[]);
        b.build().unwrap()
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = sample(codec);
            let batch = RecordBatch::new(&bytes).unwrap();
            batch.validate_stored().unwrap();
            assert_eq!(batch.compression().unwrap(), codec);
            assert_eq!(batch.record_count(), 3);
            assert_eq!(batch.last_offset(), 102);
            assert_eq!(batch.max_timestamp(), 1_005);
            let recs = batch.records().unwrap();
            assert_eq!(recs.len(), 3);
            assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(recs[1].value.as_deref().map(|v| v.len()), Some(3000));
            assert_eq!(recs[1].headers.len(), 1);
            assert_eq!(recs[2].offset, 102);
            assert_eq!(recs[2].timestamp, 990);
            assert_eq!(recs[2].value, None);
        }
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let data = b"hello hello hello hello".repeat(20);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), data);
        let xerial = compress(Compression::Snappy, &data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &xerial).unwrap(), data);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let bytes = sample(Compression::None);
        for cut in [HEADER_SIZE + 1, HEADER_SIZE + 5, bytes.len() - 1] {
            let mut v = bytes[..cut].to_vec();
            let len = (v.len() - batch::LOG_OVERHEAD) as i32;
            v[8..12].copy_from_slice(&len.to_be_bytes());
            let b = RecordBatch::new(&v).unwrap();
            assert!(b.records().is_err());
        }
    }

    #[test]
    fn varlong_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = BytesMut::new();
            write_varlong(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_varlong(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }
}
