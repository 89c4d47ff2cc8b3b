//! Local (single-voter) mode of the whole public API, on a real data dir.

use std::time::{Duration, Instant};

use super::*;

pub(crate) fn local_config(dir: &std::path::Path) -> MetadataConfig {
    MetadataConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        controller_listen: None,
        voters: BTreeMap::new(),
        bootstrap: false,
        default_num_partitions: 3,
        default_replication_factor: 1,
        broker_session_timeout: Duration::from_secs(9),
    }
}

pub(crate) fn registration(broker_id: i32, rack: Option<&str>) -> BrokerRegistration {
    BrokerRegistration {
        broker_id,
        incarnation_id: Uuid::new_v4(),
        listeners: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
            security_protocol: 0,
        }],
        rack: rack.map(str::to_string),
    }
}

pub(crate) fn new_topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
}

/// Registers broker `id` and heartbeats it once so it is unfenced; returns its epoch.
async fn live_broker(node: &MetadataNode, id: i32) -> i64 {
    let epoch = node.register_broker(registration(id, None)).await.unwrap();
    let reply = node.broker_heartbeat(id, epoch, false).await.unwrap();
    assert!(!reply.is_fenced);
    epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_bootstraps_and_serves_the_whole_api() {
    let dir = tempfile::tempdir().unwrap();
    let node = MetadataNode::start(local_config(dir.path())).await.unwrap();
    assert_eq!(node.node_id(), 1);
    let image = node.image();
    assert_eq!(image.controller_id, Some(1));
    assert_eq!(image.cluster_id.len(), 22);
    assert_eq!(node.cluster_id(), image.cluster_id);

    // Registration: fenced until the first heartbeat; the epoch is the log index.
    let epoch = node.register_broker(registration(1, None)).await.unwrap();
    assert!(epoch > 0);
    let b = node.image().brokers[&1].clone();
    assert!(b.fenced);
    assert_eq!(b.epoch, epoch);
    assert_eq!(
        node.broker_heartbeat(1, epoch + 1, false).await,
        Err(ControllerError::StaleBrokerEpoch)
    );
    let reply = node.broker_heartbeat(1, epoch, false).await.unwrap();
    assert!(!reply.is_fenced && !reply.should_shut_down);
    assert!(!node.image().brokers[&1].fenced);
    assert!(matches!(
        node.broker_heartbeat(9, 1, false).await,
        Err(ControllerError::BrokerRegistration(_))
    ));

    // CreateTopics: defaults, errors, one result per input in order.
    let results = node
        .create_topics(
            vec![
                new_topic("orders", -1, -1),
                new_topic("orders", 1, 1),
                new_topic("bad/name", 1, 1),
                new_topic("two-replicas", 1, 2),
                new_topic("zero", 0, 1),
                new_topic("..", 1, 1),
                new_topic(&"x".repeat(250), 1, 1),
            ],
            false,
        )
        .await;
    assert_eq!(results.len(), 7);
    let created = results[0].clone().unwrap();
    assert_eq!((created.num_partitions, created.replication_factor), (3, 1));
    assert!(!created.topic_id.is_nil());
    assert_eq!(
        results[1],
        Err(ControllerError::TopicAlreadyExists("orders".into()))
    );
    assert!(matches!(results[2], Err(ControllerError::InvalidTopic(_))));
    assert!(matches!(
        results[3],
        Err(ControllerError::InvalidReplicationFactor(_))
    ));
    assert!(matches!(
        results[4],
        Err(ControllerError::InvalidPartitions(_))
    ));
    assert!(matches!(results[5], Err(ControllerError::InvalidTopic(_))));
    assert!(matches!(results[6], Err(ControllerError::InvalidTopic(_))));
    let image = node.image();
    let topic = image.topics["orders"].clone();
    assert_eq!(topic.id, created.topic_id);
    assert_eq!(image.topic_names_by_id[&topic.id], "orders");
    assert_eq!(topic.partitions.len(), 3);
    for (i, p) in topic.partitions.iter().enumerate() {
        assert_eq!(p.partition, i as i32);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1], vec![1], 1)
        );
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
    }

    // validate_only commits nothing.
    let r = node.create_topics(vec![new_topic("dry", 2, 1)], true).await;
    assert!(r[0].is_ok());
    assert!(!node.image().topics.contains_key("dry"));

    // Partitions only grow.
    assert!(matches!(
        node.create_partitions("orders".into(), 3, vec![], false)
            .await,
        Err(ControllerError::InvalidPartitions(_))
    ));
    node.create_partitions("orders".into(), 5, vec![], false)
        .await
        .unwrap();
    assert_eq!(node.image().topics["orders"].partitions.len(), 5);
    assert!(matches!(
        node.create_partitions("nope".into(), 5, vec![], false)
            .await,
        Err(ControllerError::UnknownTopic(_))
    ));

    // Configs, atomically.
    node.alter_topic_configs(
        "orders".into(),
        vec![
            ConfigOp::Set("retention.ms".into(), "1000".into()),
            ConfigOp::Set("cleanup.policy".into(), "compact".into()),
        ],
        false,
    )
    .await
    .unwrap();
    node.alter_topic_configs(
        "orders".into(),
        vec![ConfigOp::Delete("cleanup.policy".into())],
        false,
    )
    .await
    .unwrap();
    let configs = node.image().topics["orders"].configs.clone();
    assert_eq!(
        configs,
        BTreeMap::from([("retention.ms".to_string(), "1000".to_string())])
    );
    node.alter_cluster_configs(
        vec![ConfigOp::Set("log.retention.ms".into(), "5".into())],
        false,
    )
    .await
    .unwrap();
    assert_eq!(node.image().cluster_configs["log.retention.ms"], "5");
    node.alter_cluster_configs(vec![ConfigOp::Set("x".into(), "y".into())], true)
        .await
        .unwrap();
    assert!(!node.image().cluster_configs.contains_key("x"));

    // Producer ids: disjoint blocks of 1000.
    let a = node.allocate_producer_ids(1, epoch).await.unwrap();
    let b = node.allocate_producer_ids(1, epoch).await.unwrap();
    assert_eq!(
        (a.first_producer_id, a.size, b.first_producer_id),
        (0, 1000, 1000)
    );
    assert_eq!(
        node.allocate_producer_ids(1, epoch - 1).await,
        Err(ControllerError::StaleBrokerEpoch)
    );

    // ISR change with the partition-epoch CAS.
    let p0 = node.image().topics["orders"].partitions[0].clone();
    let changed = node
        .alter_partition_isr(
            1,
            epoch,
            topic.id,
            0,
            p0.leader_epoch,
            p0.partition_epoch,
            vec![1],
        )
        .await;
    let changed = changed.unwrap();
    assert_eq!(changed.partition_epoch, p0.partition_epoch + 1);
    let stale = node
        .alter_partition_isr(
            1,
            epoch,
            topic.id,
            0,
            p0.leader_epoch,
            p0.partition_epoch,
            vec![1],
        )
        .await;
    assert_eq!(stale, Err(ControllerError::StalePartitionEpoch));

    // Delete.
    let r = node
        .delete_topics(vec!["orders".into(), "missing".into()])
        .await;
    assert_eq!(r[0], Ok(topic.id));
    assert_eq!(r[1], Err(ControllerError::UnknownTopic("missing".into())));
    assert!(node.image().topics.is_empty());
    assert!(node.image().topic_names_by_id.is_empty());

    node.shutdown().await.unwrap();
    // After shutdown: errors, not panics.
    assert!(node.register_broker(registration(2, None)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_recovers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_id, topic_id, epoch) = {
        let node = MetadataNode::start(local_config(dir.path())).await.unwrap();
        let epoch = live_broker(&node, 1).await;
        let r = node
            .create_topics(vec![new_topic("kept", 2, 1)], false)
            .await;
        let id = r[0].clone().unwrap().topic_id;
        node.shutdown().await.unwrap();
        (node.cluster_id(), id, epoch)
    };
    let started = Instant::now();
    let node = MetadataNode::start(local_config(dir.path())).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "restart took {took:?}");
    let image = node.image();
    assert_eq!(image.cluster_id, cluster_id);
    assert_eq!(image.topics["kept"].id, topic_id);
    assert_eq!(image.brokers[&1].epoch, epoch);
    // The restarted broker registers a new incarnation: a new, larger epoch; the old is stale.
    let epoch2 = node.register_broker(registration(1, None)).await.unwrap();
    assert!(epoch2 > epoch);
    assert_eq!(
        node.broker_heartbeat(1, epoch, false).await,
        Err(ControllerError::StaleBrokerEpoch)
    );
    node.broker_heartbeat(1, epoch2, false).await.unwrap();
    let p = node.image().topics["kept"].partitions[0].clone();
    assert_eq!(p.leader, 1);
    assert!(
        p.leader_epoch >= 1,
        "a new incarnation leads with a new leader epoch"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeout_fences_and_heartbeat_unfences() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.broker_session_timeout = Duration::from_millis(400);
    let node = MetadataNode::start(config).await.unwrap();
    let epoch = live_broker(&node, 1).await;
    node.create_topics(vec![new_topic("t", 1, 1)], false).await[0]
        .clone()
        .unwrap();
    let mut watch = node.watch();
    // No heartbeats: fenced, and the single-replica partition has no leader.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let image = watch.borrow_and_update().clone();
        if image.brokers[&1].fenced {
            let p = &image.topics["t"].partitions[0];
            assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (-1, vec![1], 1));
            break;
        }
        assert!(Instant::now() < deadline, "broker was not fenced");
        let _ = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
    }
    // A heartbeat unfences it and it leads again with a bumped leader epoch.
    let reply = node.broker_heartbeat(1, epoch, false).await.unwrap();
    assert!(!reply.is_fenced);
    let p = node.image().topics["t"].partitions[0].clone();
    assert_eq!((p.leader, p.leader_epoch), (1, 2));
    // Controlled shutdown with nowhere to move leadership: may shut down.
    let reply = node.broker_heartbeat(1, epoch, true).await.unwrap();
    assert!(reply.should_shut_down);
    assert!(node.image().brokers[&1].in_controlled_shutdown);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_data_dir_of_another_node_or_without_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = MetadataNode::start(local_config(dir.path())).await.unwrap();
    node.shutdown().await.unwrap();
    let mut other = local_config(dir.path());
    other.node_id = 2;
    assert!(matches!(
        MetadataNode::start(other).await,
        Err(ControllerError::Internal(_))
    ));
    std::fs::remove_dir_all(dir.path().join("metadata").join("log")).unwrap();
    assert!(matches!(
        MetadataNode::start(local_config(dir.path())).await,
        Err(ControllerError::Internal(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_without_bootstrap_do_not_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.controller_listen = Some(port);
    config.voters = BTreeMap::from([(1, port), (2, "127.0.0.1:9".parse().unwrap())]);
    let node = MetadataNode::start(config).await.unwrap();
    assert_eq!(node.image().controller_id, None);
    assert!(node.cluster_id().is_empty());
    assert!(node.image().cluster_id.is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_from_snapshot_plus_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = MetadataNode::start(local_config(dir.path())).await.unwrap();
    live_broker(&node, 1).await;
    for i in 0..5 {
        node.create_topics(vec![new_topic(&format!("s{i}"), 1, 1)], false)
            .await[0]
            .clone()
            .unwrap();
    }
    let snap = node.snapshot_now().await.unwrap();
    assert!(snap >= 7, "snapshot at {snap}");
    node.create_topics(vec![new_topic("after-snapshot", 1, 1)], false)
        .await[0]
        .clone()
        .unwrap();
    node.delete_topics(vec!["s0".into()]).await[0]
        .clone()
        .unwrap();
    let before = node.image();
    node.shutdown().await.unwrap();

    let node = MetadataNode::start(local_config(dir.path())).await.unwrap();
    let after = node.image();
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.brokers.keys().collect::<Vec<_>>(), vec![&1]);
    assert!(after.offset >= before.offset);
    assert!(dir.path().join("metadata/state/snapshot.json").exists());
    node.shutdown().await.unwrap();
}
