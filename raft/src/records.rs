//! Metadata records: the replicated changes to cluster metadata. One Raft entry carries a
//! [`MetadataBatch`]; its records are applied all or none (state_machine.rs).
//!
//! Entries and snapshots are serialized with serde_json: metadata is small and rarely
//! written, a text format is easy to inspect on disk, and the CRC in the log journal frames
//! catches torn writes.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ConfigOp, Endpoint, PartitionImage};

/// A change to cluster metadata. The controller decides every value (ids, epochs, placement)
/// before proposing, so applying a record is deterministic on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MetadataRecord {
    /// The cluster id; the first one in the log wins.
    ClusterId {
        cluster_id: String,
    },
    /// A broker (re-)registers: its epoch becomes this entry's log index; it starts fenced.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: Uuid,
        listeners: Vec<Endpoint>,
        rack: Option<String>,
    },
    /// Fence or unfence a broker (registration epoch `epoch`).
    BrokerFencing {
        broker_id: i32,
        epoch: i64,
        fenced: bool,
    },
    /// The broker asked to shut down; the controller moves leadership away.
    BrokerControlledShutdown {
        broker_id: i32,
        epoch: i64,
    },
    /// A new topic (its partitions follow as `Partition` records in the same batch).
    Topic {
        name: String,
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// The full new state of one partition (created or changed). Epochs never go back.
    Partition {
        topic_id: Uuid,
        partition: PartitionImage,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
    TopicConfigs {
        topic_id: Uuid,
        ops: Vec<ConfigOp>,
    },
    ClusterConfigs {
        ops: Vec<ConfigOp>,
    },
    /// Producer ids below `next_producer_id` are handed out.
    ProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
}

/// The application data of one Raft entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

impl fmt::Display for MetadataBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetadataBatch({} records)", self.records.len())
    }
}
