//! The version table: which (API, version) pairs Sluice speaks. ApiVersions advertises
//! exactly this table and the dispatcher accepts exactly these versions.

use kafka_protocol::messages::ApiKey;

/// One API and the inclusive range of versions Sluice serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSupport {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

macro_rules! version_table {
    ($($variant:ident($req:ident, $resp:ident) $min:literal ..= $max:literal,)*) => {
        /// Every API Sluice serves, in api-key order of the list in `apis.rs`.
        pub const SUPPORTED: &[ApiSupport] = &[
            $(ApiSupport { key: ApiKey::$variant, min: $min, max: $max },)*
        ];

        /// Kafka's name for a served API (a static string for metric labels and logs);
        /// "Unknown" for any other.
        pub fn api_name(key: ApiKey) -> &'static str {
            match key {
                $(ApiKey::$variant => stringify!($variant),)*
                _ => "Unknown",
            }
        }
    };
}
for_each_api!(version_table);

/// The supported range for `key`, if Sluice serves it at all.
pub fn support(key: ApiKey) -> Option<ApiSupport> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// Whether Sluice serves `version` of `key`.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    support(key).is_some_and(|s| (s.min..=s.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_each_api_once_with_sane_ranges() {
        for (i, a) in SUPPORTED.iter().enumerate() {
            assert!(a.min <= a.max, "{:?}", a.key);
            assert!(
                SUPPORTED[i + 1..].iter().all(|b| b.key != a.key),
                "{:?} twice",
                a.key
            );
        }
    }

    #[test]
    fn kafka4_minimums_and_produce_from_v0() {
        assert!(is_supported(ApiKey::Produce, 0));
        assert!(!is_supported(ApiKey::Fetch, 3));
        assert!(is_supported(ApiKey::Fetch, 4));
        assert!(!is_supported(ApiKey::CreateTopics, 1));
        assert!(!is_supported(ApiKey::ApiVersions, 5));
        assert!(!is_supported(ApiKey::OffsetCommit, 1));
        assert!(is_supported(ApiKey::JoinGroup, 0));
        assert!(is_supported(ApiKey::InitProducerId, 0));
        // Transactions without transaction.version 2 (KIP-890 part 2): the client versions
        // of AddPartitionsToTxn only, EndTxn and TxnOffsetCommit below their TV2 versions.
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 3));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 4));
        assert!(!is_supported(ApiKey::EndTxn, 5));
        assert!(!is_supported(ApiKey::TxnOffsetCommit, 5));
        // KIP-848 groups are not advertised, so clients use the classic protocol.
        assert!(support(ApiKey::ConsumerGroupHeartbeat).is_none());
    }
}
