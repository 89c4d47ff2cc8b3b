//! Encoding a typed response, with its header, as one length-prefixed frame.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey};
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

            fn encode_body(&self, buf: &mut BytesMut, version: i16) -> Result<(), String> {
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
    fn flexible_responses_get_a_v1_header() {
        let mut buf = BytesMut::new();
        let resp = Response::Metadata(m::MetadataResponse::default());
        encode_response(&mut buf, 9, 12, &resp).unwrap();
        assert_eq!(&buf[4..8], &9i32.to_be_bytes());
        assert_eq!(buf[8], 0, "empty tagged-field section of the v1 header");
    }
}
