//! sluice-protocol: bytes ↔ frames ↔ typed Kafka requests and responses.
//!
//! What it is for: cutting a TCP byte stream into size-checked frames ([`frame`]), decoding a
//! frame's request header and body into a typed [`Request`] ([`request`]), encoding a typed
//! [`Response`] with the right header version ([`response`]), and owning the one
//! [version table](versions) that is both what ApiVersions advertises and what the
//! dispatcher accepts.
//!
//! What it is not for: sockets, broker state, or record data. Record batches in produce
//! requests and fetch responses stay opaque `Bytes`, handed to and from storage untouched.
//!
//! Message structs come from the `kafka-protocol` crate (re-exported as [`kafka`]).

#[macro_use]
mod apis;
pub mod frame;
pub mod request;
pub mod response;
pub mod versions;

pub use kafka_protocol as kafka;
pub use kafka_protocol::error::ResponseError;
pub use kafka_protocol::messages::ApiKey;
pub use request::{decode_request, DecodeError, Request, RequestHeader};
pub use response::{encode_response, encode_response_segments, EncodeError, Response};
