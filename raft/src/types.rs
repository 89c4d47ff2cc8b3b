//! The openraft type configuration: what one Raft entry carries and how nodes are named.
//!
//! Everything openraft-specific is crate-private; the public API (lib.rs) never names it.

use std::io::Cursor;

use crate::records::MetadataBatch;

openraft::declare_raft_types!(
    /// Sluice's metadata quorum: one entry is a [`MetadataBatch`] applied atomically.
    pub(crate) TypeConfig:
        D = MetadataBatch,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::rt::Runtime,
);

pub(crate) type NodeId = u64;
pub(crate) type Node = openraft::BasicNode;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// Kafka node ids are non-negative i32; Raft node ids are u64.
pub(crate) fn raft_id(node_id: i32) -> NodeId {
    node_id as u32 as u64
}

/// The inverse of [`raft_id`]; ids we never issued map to -1 (unknown).
pub(crate) fn kafka_id(id: NodeId) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}
