//! ApiVersions: the version table, and the fallback for a client newer than us.

use sluice_protocol::kafka::messages::api_versions_response::ApiVersion;
use sluice_protocol::kafka::messages::{ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::versions::{is_supported, SUPPORTED};
use sluice_protocol::{ApiKey, ResponseError};

/// Returns the response and the version to encode it at. A version we do not know gets a v0
/// body with UNSUPPORTED_VERSION and our ranges, so the client can retry with one we do.
pub fn handle(version: i16, _request: ApiVersionsRequest) -> (ApiVersionsResponse, i16) {
    let api_keys = SUPPORTED
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect();
    let response = ApiVersionsResponse::default().with_api_keys(api_keys);
    if is_supported(ApiKey::ApiVersions, version) {
        (response, version)
    } else {
        (
            response.with_error_code(ResponseError::UnsupportedVersion.code()),
            0,
        )
    }
}
