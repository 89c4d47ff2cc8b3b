//! The replicated metadata state and how records change it. Pure and deterministic: every
//! voter applies the same entries in the same order and ends with the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{MetadataBatch, MetadataRecord};
use crate::{BrokerImage, ConfigOp, MetadataImage, PartitionImage, TopicImage};

/// Producer ids handed out per allocation (Kafka's block size).
pub(crate) const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

/// Everything the quorum replicates. A snapshot serializes all of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetadataState {
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    pub cluster_configs: BTreeMap<String, String>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
}

impl MetadataState {
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_names_by_id
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    /// The image brokers read; `controller_id` is filled in by the publisher.
    pub fn to_image(&self, offset: u64) -> MetadataImage {
        MetadataImage {
            offset,
            cluster_id: self.cluster_id.clone(),
            controller_id: None,
            brokers: self.brokers.clone(),
            topics: self.topics.clone(),
            topic_names_by_id: self.topic_names_by_id.clone(),
            cluster_configs: self.cluster_configs.clone(),
        }
    }

    /// Applies a whole batch or nothing: on an inconsistent record the state is unchanged
    /// and the reason is returned (the controller validated it, so this means a bug).
    pub fn apply_batch(&mut self, batch: &MetadataBatch, log_index: u64) -> Result<(), String> {
        let mut next = self.clone();
        for record in &batch.records {
            next.apply(record, log_index)?;
        }
        *self = next;
        Ok(())
    }

    fn apply(&mut self, record: &MetadataRecord, log_index: u64) -> Result<(), String> {
        match record {
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
            }
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                listeners,
                rack,
            } => {
                let epoch =
                    i64::try_from(log_index).map_err(|_| "log index overflow".to_string())?;
                if let Some(old) = self.brokers.get(broker_id) {
                    // TigerBeetle-style invariant: broker epochs only move forward.
                    if old.epoch >= epoch {
                        return Err(format!("broker {broker_id} epoch {epoch} <= {}", old.epoch));
                    }
                }
                self.brokers.insert(
                    *broker_id,
                    BrokerImage {
                        id: *broker_id,
                        incarnation_id: *incarnation_id,
                        epoch,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        in_controlled_shutdown: false,
                    },
                );
            }
            MetadataRecord::BrokerFencing {
                broker_id,
                epoch,
                fenced,
            } => {
                let broker = self.broker_mut(*broker_id, *epoch)?;
                broker.fenced = *fenced;
                if !*fenced {
                    broker.in_controlled_shutdown = false;
                }
            }
            MetadataRecord::BrokerControlledShutdown { broker_id, epoch } => {
                self.broker_mut(*broker_id, *epoch)?.in_controlled_shutdown = true;
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                configs,
            } => {
                if self.topics.contains_key(name) || self.topic_names_by_id.contains_key(topic_id) {
                    return Err(format!("topic {name} ({topic_id}) already exists"));
                }
                self.topic_names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        configs: configs.clone(),
                        partitions: Vec::new(),
                    }),
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
            } => {
                let name = self
                    .topic_names_by_id
                    .get(topic_id)
                    .ok_or_else(|| format!("partition of unknown topic {topic_id}"))?
                    .clone();
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or_else(|| format!("topic {name} missing from topics"))?;
                check_partition(partition)?;
                let topic = Arc::make_mut(topic);
                let index = usize::try_from(partition.partition)
                    .map_err(|_| "negative partition".to_string())?;
                match index.cmp(&topic.partitions.len()) {
                    std::cmp::Ordering::Less => {
                        let old = &topic.partitions[index];
                        if partition.leader_epoch < old.leader_epoch
                            || partition.partition_epoch < old.partition_epoch
                        {
                            return Err(format!("epochs of {name}-{index} would go back"));
                        }
                        topic.partitions[index] = partition.clone();
                    }
                    std::cmp::Ordering::Equal => topic.partitions.push(partition.clone()),
                    std::cmp::Ordering::Greater => {
                        return Err(format!("partition {index} of {name} skips indexes"))
                    }
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = self
                    .topic_names_by_id
                    .remove(topic_id)
                    .ok_or_else(|| format!("remove of unknown topic {topic_id}"))?;
                self.topics.remove(&name);
            }
            MetadataRecord::TopicConfigs { topic_id, ops } => {
                let name = self
                    .topic_names_by_id
                    .get(topic_id)
                    .ok_or_else(|| format!("configs of unknown topic {topic_id}"))?
                    .clone();
                if let Some(topic) = self.topics.get_mut(&name) {
                    apply_config_ops(&mut Arc::make_mut(topic).configs, ops);
                }
            }
            MetadataRecord::ClusterConfigs { ops } => {
                apply_config_ops(&mut self.cluster_configs, ops)
            }
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            } => {
                self.broker_mut(*broker_id, *broker_epoch)?;
                if *next_producer_id <= self.next_producer_id {
                    return Err("producer ids would go back".to_string());
                }
                self.next_producer_id = *next_producer_id;
            }
        }
        Ok(())
    }

    fn broker_mut(&mut self, broker_id: i32, epoch: i64) -> Result<&mut BrokerImage, String> {
        match self.brokers.get_mut(&broker_id) {
            Some(b) if b.epoch == epoch => Ok(b),
            Some(b) => Err(format!("broker {broker_id} epoch {epoch} != {}", b.epoch)),
            None => Err(format!("unknown broker {broker_id}")),
        }
    }
}

fn check_partition(p: &PartitionImage) -> Result<(), String> {
    if p.replicas.is_empty() {
        return Err(format!("partition {} has no replicas", p.partition));
    }
    if p.leader != -1 && !p.isr.contains(&p.leader) {
        return Err(format!(
            "partition {} leader {} not in ISR",
            p.partition, p.leader
        ));
    }
    if p.isr.iter().any(|r| !p.replicas.contains(r)) {
        return Err(format!("partition {} ISR not within replicas", p.partition));
    }
    Ok(())
}

pub(crate) fn apply_config_ops(configs: &mut BTreeMap<String, String>, ops: &[ConfigOp]) {
    for op in ops {
        match op {
            ConfigOp::Set(k, v) => {
                configs.insert(k.clone(), v.clone());
            }
            ConfigOp::Delete(k) => {
                configs.remove(k);
            }
        }
    }
}
