//! Encoding a typed response, with its header, as one length-prefixed frame.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

/// A response could not be encoded: a broker bug (a field set that the version cannot
/// carry). The connection is closed and the bug logged.
#[derive(Debug, thiserror::Error)]
#[error("could not encode {api_key:?} v{api_version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

macro_rules! response_enum {
    ($($variant:ident($req:ident, $resp:ident) $min:literal ..= $max:literal,)*) => {
        /// A response to a [`crate::Request`] of the same variant.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Response {
            $($variant(m::$resp),)*
        }

        impl Response {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Response::$variant(_) => ApiKey::$variant,)*
                }
            }

            fn encode_body<B: ByteBufMut>(&self, buf: &mut B, version: i16) -> Result<(), String> {
                match self {
                    $(Response::$variant(r) => r.encode(buf, version).map_err(|e| e.to_string()),)*
                }
            }
        }
    };
}
for_each_api!(response_enum);

/// Appends `response` to `buf` as a whole frame: length, header (v0 or v1 as the API and
/// version require; always v0 for ApiVersions), body.
pub fn encode_response(
    buf: &mut BytesMut,
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Result<(), EncodeError> {
    let api_key = response.api_key();
    let start = buf.len();
    buf.put_i32(0);
    let header = m::ResponseHeader::default().with_correlation_id(correlation_id);
    let fail = |reason: String| EncodeError {
        api_key,
        api_version,
        reason,
    };
    let result = header
        .encode(buf, api_key.response_header_version(api_version))
        .map_err(|e| e.to_string())
        .and_then(|()| response.encode_body(buf, api_version));
    if let Err(reason) = result {
        buf.truncate(start);
        return Err(fail(reason));
    }
    let len = buf.len() - start - 4;
    let len = i32::try_from(len).map_err(|_| fail(format!("{len} bytes is too large")))?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Slices at least this long are worth sending from their own buffer instead of copying.
const ZERO_COPY_MIN_BYTES: usize = 1024;

/// A response as a list of buffers to write in order (with vectored writes): the encoded
/// fields, and in between, the record sets of a Fetch response as the log handed them out,
/// not copied.
#[derive(Debug, Default)]
pub struct Segments {
    done: Vec<Bytes>,
    current: BytesMut,
    /// Buffers that may be referenced instead of copied: (address, length) → the buffer.
    borrowable: Vec<Bytes>,
    len: usize,
}

impl Segments {
    /// Lets `put_slice` of exactly this buffer's bytes reference it instead of copying.
    fn allow_borrow(&mut self, b: &Bytes) {
        if b.len() >= ZERO_COPY_MIN_BYTES {
            self.borrowable.push(b.clone());
        }
    }

    fn seal(&mut self) {
        if !self.current.is_empty() {
            self.done.push(self.current.split().freeze());
        }
    }

    /// The buffers, in order; their concatenation is the encoded bytes.
    pub fn into_buffers(mut self) -> Vec<Bytes> {
        self.seal();
        self.done
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

unsafe impl BufMut for Segments {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded; the caller initialised `cnt` bytes of `chunk_mut()`, which is
        // `current`'s chunk.
        unsafe { self.current.advance_mut(cnt) };
        self.len += cnt;
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= ZERO_COPY_MIN_BYTES {
            if let Some(b) = self
                .borrowable
                .iter()
                .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            {
                let b = b.clone();
                self.seal();
                self.len += b.len();
                self.done.push(b);
                return;
            }
        }
        self.current.extend_from_slice(src);
        self.len += src.len();
    }
}

impl ByteBufMut for Segments {
    fn offset(&self) -> usize {
        self.len
    }

    // Message encoders size everything up front and never seek back or reserve gaps.
    fn seek(&mut self, offset: usize) {
        let start = self.len - self.current.len();
        assert!(offset >= start, "Segments cannot seek into a sealed buffer");
        self.current.resize(offset - start, 0);
        self.len = offset;
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let start = self.len - self.current.len();
        assert!(
            r.start >= start,
            "Segments cannot reach into a sealed buffer"
        );
        &mut self.current[r.start - start..r.end - start]
    }
}

/// Encodes `response` as a whole frame into buffers to be written in order. The record sets
/// of a Fetch response are referenced, not copied.
pub fn encode_response_segments(
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Result<Vec<Bytes>, EncodeError> {
    let api_key = response.api_key();
    let fail = |reason: String| EncodeError {
        api_key,
        api_version,
        reason,
    };
    let mut body = Segments::default();
    if let Response::Fetch(f) = response {
        for p in f.responses.iter().flat_map(|t| &t.partitions) {
            if let Some(records) = &p.records {
                body.allow_borrow(records);
            }
        }
    }
    response.encode_body(&mut body, api_version).map_err(fail)?;
    let mut head = BytesMut::with_capacity(16);
    head.put_i32(0);
    m::ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut head, api_key.response_header_version(api_version))
        .map_err(|e| fail(e.to_string()))?;
    let len = head.len() - 4 + body.len();
    let len = i32::try_from(len).map_err(|_| fail(format!("{len} bytes is too large")))?;
    head[0..4].copy_from_slice(&len.to_be_bytes());
    let mut buffers = Vec::with_capacity(4);
    buffers.push(head.freeze());
    buffers.extend(body.into_buffers());
    Ok(buffers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_header_is_v0_even_at_v3() {
        let mut buf = BytesMut::new();
        let resp = Response::ApiVersions(m::ApiVersionsResponse::default());
        encode_response(&mut buf, 7, 3, &resp).unwrap();
        let len = i32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        assert_eq!(&buf[4..8], &7i32.to_be_bytes());
        // v0 header: the body (error code 0) follows the correlation id directly, with no
        // tagged-field byte in between.
        assert_eq!(&buf[8..10], &0i16.to_be_bytes());
    }

    #[test]
    fn segmented_fetch_response_equals_the_contiguous_encoding_and_borrows_records() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::TopicName;
        let big = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let small = Bytes::from_static(b"tiny records");
        for version in [4i16, 11, 12, 13, 16, 18] {
            let partitions = vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_records(Some(big.clone())),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(Some(small.clone())),
                PartitionData::default()
                    .with_partition_index(2)
                    .with_records(Some(Bytes::new())),
            ];
            let topic = FetchableTopicResponse::default()
                .with_topic(TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("t"),
                ))
                .with_partitions(partitions);
            let resp = Response::Fetch(m::FetchResponse::default().with_responses(vec![topic]));
            let mut contiguous = BytesMut::new();
            encode_response(&mut contiguous, 5, version, &resp).unwrap();
            let buffers = encode_response_segments(5, version, &resp).unwrap();
            let joined: Vec<u8> = buffers.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(joined, contiguous.to_vec(), "v{version}");
            assert!(
                buffers
                    .iter()
                    .any(|b| b.as_ptr() == big.as_ptr() && b.len() == big.len()),
                "v{version}: the large record set is referenced, not copied"
            );
        }
    }

    #[test]
    fn flexible_responses_get_a_v1_header() {
        let mut buf = BytesMut::new();
        let resp = Response::Metadata(m::MetadataResponse::default());
        encode_response(&mut buf, 9, 12, &resp).unwrap();
        assert_eq!(&buf[4..8], &9i32.to_be_bytes());
        assert_eq!(buf[8], 0, "empty tagged-field section of the v1 header");
    }
}
