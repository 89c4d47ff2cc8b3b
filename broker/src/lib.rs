//! sluice-broker: the data plane. Accepts Kafka client connections, turns each request into
//! a typed response through one handler per API, and keeps the partitions this broker hosts
//! (their logs, leader state and high watermarks) in step with the metadata image.
//!
//! Not here: bytes ↔ typed messages (sluice-protocol), the log format and files
//! (sluice-storage), cluster metadata and controller decisions (sluice-raft).
//!
//! Main types: [`Broker`] (what handlers reach) started with [`Broker::start`] into a
//! [`RunningBroker`]; [`BrokerConfig`]; [`ReplicaManager`](replica_manager::ReplicaManager)
//! and [`Partition`](partition::Partition); [`topic_config`] (Kafka's topic configs).

pub mod admin_http;
pub mod broker;
pub mod config;
pub mod config_resources;
mod connection;
pub mod errors;
pub mod group;
mod handlers;
pub mod internal_topics;
pub mod metrics;
pub mod partition;
pub mod producer_state;
pub mod replica_manager;
mod server;
pub mod topic_config;
pub mod txn;

pub use broker::{Broker, RunningBroker, StartError};
pub use config::BrokerConfig;
