//! The partitions this broker hosts, kept in step with the metadata image: logs are opened
//! for new replicas, leader state is updated, and logs of deleted topics are removed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use sluice_raft::{MetadataImage, TopicImage};
use sluice_storage::{LogManager, StorageError};
use uuid::Uuid;

use crate::partition::{LeaderState, Partition};
use crate::topic_config::ConfigLayers;

type PartitionKey = (Arc<str>, i32);
/// A topic's hosted partitions by index.
type TopicPartitions = HashMap<i32, Arc<Partition>>;

pub struct ReplicaManager {
    node_id: i32,
    logs: LogManager,
    static_configs: BTreeMap<String, String>,
    /// Topic → partition index → partition. Looked up by `&str` without allocating.
    partitions: RwLock<HashMap<Arc<str>, TopicPartitions>>,
    /// Serializes image application; handlers may apply an image they just committed.
    apply_lock: Mutex<u64>,
}

impl ReplicaManager {
    pub fn new(
        node_id: i32,
        logs: LogManager,
        static_configs: BTreeMap<String, String>,
    ) -> ReplicaManager {
        ReplicaManager {
            node_id,
            logs,
            static_configs,
            partitions: RwLock::new(HashMap::new()),
            apply_lock: Mutex::new(0),
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)?
            .get(&partition)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|by_index| by_index.values().cloned())
            .collect()
    }

    /// The config layers for topics on this broker under `image`.
    pub fn config_layers<'a>(&'a self, image: &'a MetadataImage) -> ConfigLayers<'a> {
        ConfigLayers {
            cluster_dynamic: Some(&image.cluster_configs),
            broker_static: Some(&self.static_configs),
        }
    }

    pub fn static_configs(&self) -> &BTreeMap<String, String> {
        &self.static_configs
    }

    /// Brings hosted partitions in line with `image`. Idempotent; images older than the last
    /// one applied are ignored.
    pub fn apply_image(&self, image: &MetadataImage) {
        let mut applied = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        if image.offset < *applied {
            return;
        }
        *applied = image.offset;
        let layers = self.config_layers(image);

        let current: Vec<(PartitionKey, Arc<Partition>)> = self
            .all()
            .into_iter()
            .map(|p| ((p.topic.clone(), p.index), p))
            .collect();
        // Deleted topics, or a topic deleted and created again under the same name.
        for (key, partition) in &current {
            let alive = image
                .topics
                .get(&*key.0)
                .is_some_and(|t| t.id == partition.topic_id && hosts(t, key.1, self.node_id));
            if !alive {
                self.remove(key, partition.topic_id);
            }
        }
        for topic in image.topics.values() {
            let log_config = layers.log_config(&topic.configs);
            let min_isr = layers.min_insync_replicas(&topic.configs);
            for p in &topic.partitions {
                if !p.replicas.contains(&self.node_id) {
                    continue;
                }
                let state = LeaderState {
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    min_insync_replicas: min_isr,
                };
                if let Err(e) = self.ensure_partition(topic, p.partition, state, &log_config) {
                    tracing::error!(topic = %topic.name, partition = p.partition, error = %e, "could not open partition log");
                }
            }
        }
    }

    fn ensure_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        state: LeaderState,
        log_config: &sluice_storage::LogConfig,
    ) -> Result<(), StorageError> {
        if let Some(existing) = self.get(&topic.name, index) {
            if existing.log().config() != *log_config {
                existing.log().update_config(log_config.clone());
            }
            if existing.leader_state() != state {
                existing.update_leader_state(state)?;
            }
            return Ok(());
        }
        let log = self.logs.open_log(&topic.name, index, log_config.clone())?;
        let name: Arc<str> = Arc::from(topic.name.as_str());
        let partition = Arc::new(Partition::new(
            name.clone(),
            topic.id,
            index,
            self.node_id,
            log,
            state.clone(),
        ));
        partition.update_leader_state(state)?;
        tracing::info!(topic = %topic.name, partition = index, "hosting partition");
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default()
            .insert(index, partition);
        Ok(())
    }

    fn remove(&self, key: &PartitionKey, topic_id: Uuid) {
        {
            let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            if let Some(by_index) = partitions.get_mut(&key.0) {
                by_index.remove(&key.1);
                if by_index.is_empty() {
                    partitions.remove(&key.0);
                }
            }
        }
        match self.logs.delete_log(&key.0, key.1) {
            Ok(()) => {
                tracing::info!(topic = %key.0, partition = key.1, %topic_id, "deleted partition log")
            }
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "could not delete partition log")
            }
        }
    }

    /// Removes log directories that no topic in `image` owns (topics deleted while this
    /// broker was down).
    pub fn remove_stray_logs(&self, image: &MetadataImage) {
        let on_disk = match self.logs.logs_on_disk() {
            Ok(logs) => logs,
            Err(e) => {
                tracing::error!(error = %e, "could not list partition logs");
                return;
            }
        };
        for (topic, partition) in on_disk {
            let owned = image
                .topics
                .get(&topic)
                .is_some_and(|t| hosts(t, partition, self.node_id));
            if !owned {
                tracing::warn!(%topic, partition, "removing log of a partition the metadata no longer has");
                if let Err(e) = self.logs.delete_log(&topic, partition) {
                    tracing::error!(%topic, partition, error = %e, "could not remove stray log");
                }
            }
        }
    }

    /// Saves producer state, then flushes and closes every log (clean shutdown: the next
    /// start needs neither recovery nor a producer-state rebuild).
    pub fn close_all(&self) -> Result<(), StorageError> {
        for p in self.all() {
            if let Err(e) = p.save_producer_state() {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not save producer state");
            }
        }
        self.logs.close_all()
    }

    pub fn start_background(&self) {
        self.logs.start_background();
    }
}

fn hosts(topic: &TopicImage, partition: i32, node_id: i32) -> bool {
    topic
        .partitions
        .iter()
        .any(|p| p.partition == partition && p.replicas.contains(&node_id))
}
