//! Choosing the Kafka error code for a failure from storage or the controller, on purpose:
//! each is one a client acts on correctly (retry, refresh metadata, or give up).

use sluice_protocol::ResponseError;
use sluice_raft::ControllerError;
use sluice_storage::StorageError;

pub fn storage_error_code(e: &StorageError) -> ResponseError {
    match e {
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // A follower-only condition; to a client it means the replica is not usable now.
        StorageError::NonMonotonicOffset(_) => ResponseError::UnknownServerError,
        StorageError::Io(_) => ResponseError::KafkaStorageError,
        // The partition is going away (deletion, shutdown): retriable, refresh metadata.
        StorageError::Closed => ResponseError::NotLeaderOrFollower,
    }
}

pub fn controller_error_code(e: &ControllerError) -> ResponseError {
    match e {
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::NotController => ResponseError::NotController,
        ControllerError::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch,
        ControllerError::StalePartitionEpoch => ResponseError::InvalidUpdateVersion,
        ControllerError::BrokerRegistration(_) => ResponseError::BrokerIdNotRegistered,
        ControllerError::Timeout => ResponseError::RequestTimedOut,
        ControllerError::Internal(_) => ResponseError::UnknownServerError,
    }
}
