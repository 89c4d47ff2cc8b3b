//! Decoding a frame into a request header and a typed request body.

use bytes::Bytes;
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::versions;

/// The request header fields the broker uses.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeader {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<StrBytes>,
}

/// Why a frame could not be turned into a request. The caller closes the connection and logs
/// it; every variant carries what is known for that log line.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    Truncated(usize),
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} v{api_version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
}

macro_rules! request_enum {
    ($($variant:ident($req:ident, $resp:ident) $min:literal ..= $max:literal,)*) => {
        /// A decoded request of an API in the version table.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $($variant(m::$req),)*
        }

        fn decode_body(key: ApiKey, body: &mut Bytes, version: i16) -> anyhow_free::Result<Request> {
            match key {
                $(ApiKey::$variant => Ok(Request::$variant(m::$req::decode(body, version)?)),)*
                _ => Err(anyhow_free::Error(format!("{key:?} is not served"))),
            }
        }
    };
}
for_each_api!(request_enum);

/// kafka-protocol reports decode failures as `anyhow::Error`; keep that type out of our API.
mod anyhow_free {
    pub struct Error(pub String);
    pub type Result<T> = std::result::Result<T, Error>;
    impl<E: std::fmt::Display> From<E> for Error {
        fn from(e: E) -> Self {
            Error(e.to_string())
        }
    }
}

/// Decodes one frame body (the bytes after the length prefix).
///
/// ApiVersions at a version Sluice does not know decodes to a default ApiVersions request with
/// the header's version kept, without reading the body: the handler must answer it with a v0
/// UNSUPPORTED_VERSION response (clients probe with their newest version). Any other
/// unsupported version is an error.
pub fn decode_request(mut frame: Bytes) -> Result<(RequestHeader, Request), DecodeError> {
    let frame_len = frame.len();
    if frame_len < 8 {
        return Err(DecodeError::Truncated(frame_len));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    if versions::support(api_key).is_none() {
        return Err(DecodeError::UnknownApiKey {
            api_key: raw_key,
            correlation_id,
        });
    }
    let supported = versions::is_supported(api_key, api_version);
    if !supported && api_key != ApiKey::ApiVersions {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        api_version,
        reason,
    };
    // An ApiVersions request newer than ours still has a v2 (flexible) header, as Kafka
    // assumes; its body is not read.
    let header_version = api_key.request_header_version(api_version);
    let header = m::RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| malformed(e.to_string()))?;
    let header = RequestHeader {
        api_key,
        api_version,
        correlation_id: header.correlation_id,
        client_id: header.client_id,
    };
    if !supported {
        return Ok((
            header,
            Request::ApiVersions(m::ApiVersionsRequest::default()),
        ));
    }
    let request = decode_body(api_key, &mut frame, api_version).map_err(|e| malformed(e.0))?;
    // Bytes after the body are ignored, as Kafka does: librdkafka 2.16 writes a null
    // Metadata topics array as four bytes (librdkafka #5049) and relies on that.
    Ok((header, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable};

    fn frame_of<R: Encodable>(key: ApiKey, version: i16, body: &R) -> Bytes {
        let mut buf = BytesMut::new();
        let header = m::RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        encode_request_header_into_buffer(&mut buf, &header).unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_a_metadata_request() {
        let req = m::MetadataRequest::default().with_topics(None);
        let (header, decoded) = decode_request(frame_of(ApiKey::Metadata, 12, &req)).unwrap();
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client_id.as_deref(), Some("test"));
        assert_eq!(decoded, Request::Metadata(req));
    }

    #[test]
    fn unknown_api_version_of_api_versions_decodes_for_the_fallback() {
        let mut frame = BytesMut::from(
            &frame_of(ApiKey::ApiVersions, 3, &m::ApiVersionsRequest::default())[..],
        );
        frame[2..4].copy_from_slice(&127i16.to_be_bytes());
        let (header, decoded) = decode_request(frame.freeze()).unwrap();
        assert_eq!(header.api_version, 127);
        assert_eq!(
            decoded,
            Request::ApiVersions(m::ApiVersionsRequest::default())
        );
    }

    #[test]
    fn refuses_unknown_keys_unsupported_versions_and_garbage() {
        let mut frame =
            BytesMut::from(&frame_of(ApiKey::Metadata, 12, &m::MetadataRequest::default())[..]);
        frame[0..2].copy_from_slice(&9999i16.to_be_bytes());
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(DecodeError::UnknownApiKey { api_key: 9999, .. })
        ));

        let frame = frame_of(ApiKey::Fetch, 4, &m::FetchRequest::default());
        let mut frame = BytesMut::from(&frame[..]);
        frame[2..4].copy_from_slice(&3i16.to_be_bytes());
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(DecodeError::UnsupportedVersion { .. })
        ));

        // Produce v2 is advertised (for old librdkafka's codec choice) but not decodable.
        let mut frame =
            BytesMut::from(&frame_of(ApiKey::Produce, 3, &m::ProduceRequest::default())[..]);
        frame[2..4].copy_from_slice(&2i16.to_be_bytes());
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(DecodeError::Malformed { .. })
        ));

        let truncated = frame_of(
            ApiKey::Metadata,
            12,
            &m::MetadataRequest::default().with_topics(None),
        );
        assert!(matches!(
            decode_request(truncated.slice(..truncated.len() - 2)),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(b"abc")),
            Err(DecodeError::Truncated(3))
        ));
    }
}
