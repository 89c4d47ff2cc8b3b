//! Three metadata voters as tasks on 127.0.0.1, each pair of nodes connected through a small
//! fault-injecting TCP proxy so a node can be cut off. Ports are chosen free at runtime;
//! every wait is bounded.
#![cfg(not(feature = "sim"))] // real TCP and threads: not under the simulation build

mod common;

use std::time::{Duration, Instant};

use common::{live_broker, topic, Cluster, IDS};
use sluice_raft::ControllerError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_survive_leader_loss_and_restart() {
    let mut c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.nodes[&leader].image().cluster_id.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the leader never committed a cluster id"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cluster_id = c.nodes[&leader].image().cluster_id.clone();
    assert_eq!(cluster_id.len(), 22);
    let follower = IDS.into_iter().find(|id| *id != leader).unwrap();

    // Requests on a follower are forwarded to the leader.
    live_broker(&c.nodes[&follower], 10).await;
    for i in 0..5 {
        let r = c.nodes[&follower]
            .create_topics(vec![topic(&format!("before-{i}"))], false)
            .await;
        r[0].clone().unwrap();
    }
    for id in IDS {
        c.sees_topic(id, "before-4", Duration::from_secs(5)).await;
        assert_eq!(c.nodes[&id].image().cluster_id, cluster_id);
    }

    // Kill the leader: the other two elect a new one and keep everything committed.
    let killed_at = Instant::now();
    c.kill(leader).await;
    let survivors: Vec<i32> = IDS.into_iter().filter(|id| *id != leader).collect();
    let new_leader = c.agreed_leader(&survivors, Duration::from_secs(10)).await;
    let elected_in = killed_at.elapsed();
    let r = c.nodes[&survivors[0]]
        .create_topics(vec![topic("after")], false)
        .await;
    r[0].clone().unwrap();
    let writable_in = killed_at.elapsed();
    eprintln!("leader {leader} killed: node {new_leader} elected in {elected_in:?}, first commit after {writable_in:?}");
    assert!(
        elected_in < Duration::from_secs(5),
        "election took {elected_in:?}"
    );
    for id in &survivors {
        let image = c.nodes[id].image();
        for i in 0..5 {
            assert!(
                image.topics.contains_key(&format!("before-{i}")),
                "node {id} lost before-{i}"
            );
        }
    }

    // The killed node restarts from its data dir and catches up.
    c.restart(leader).await;
    c.sees_topic(leader, "after", Duration::from_secs(10)).await;
    assert_eq!(c.nodes[&leader].image().cluster_id, cluster_id);
    let all = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    assert!(IDS.contains(&all));
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_minority_cannot_commit_majority_can() {
    let c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    live_broker(&c.nodes[&leader], 10).await;
    c.nodes[&leader]
        .create_topics(vec![topic("base")], false)
        .await[0]
        .clone()
        .unwrap();
    for id in IDS {
        c.sees_topic(id, "base", Duration::from_secs(5)).await;
    }

    // Cut the leader off: it is a minority of one.
    c.cut(leader, true);
    let majority: Vec<i32> = IDS.into_iter().filter(|id| *id != leader).collect();
    let minority = leader;
    // The minority's write cannot commit: it times out (and is never applied).
    let minority_write = {
        let node = c.nodes[&minority].clone();
        tokio::spawn(async move { node.create_topics(vec![topic("minority")], false).await })
    };
    let new_leader = c.agreed_leader(&majority, Duration::from_secs(10)).await;
    assert_ne!(new_leader, minority);
    c.nodes[&majority[0]]
        .create_topics(vec![topic("majority")], false)
        .await[0]
        .clone()
        .unwrap();
    c.sees_topic(majority[1], "majority", Duration::from_secs(5))
        .await;
    let r = minority_write.await.unwrap();
    assert_eq!(r[0], Err(ControllerError::Timeout));
    assert!(!c.nodes[&minority].image().topics.contains_key("majority"));
    for id in IDS {
        assert!(
            !c.nodes[&id].image().topics.contains_key("minority"),
            "node {id} applied a minority write"
        );
    }

    // Heal: the old leader steps down, catches up, and its uncommitted write is gone.
    c.cut(leader, false);
    c.sees_topic(minority, "majority", Duration::from_secs(10))
        .await;
    c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in IDS {
        assert!(
            !c.nodes[&id].image().topics.contains_key("minority"),
            "node {id} applied a minority write"
        );
        assert!(c.nodes[&id].image().topics.contains_key("base"));
    }
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_voter_catches_up_from_a_snapshot() {
    let mut c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    let lagging = IDS.into_iter().find(|id| *id != leader).unwrap();
    c.kill(lagging).await;
    live_broker(&c.nodes[&leader], 10).await;
    for i in 0..10 {
        c.nodes[&leader]
            .create_topics(vec![topic(&format!("t{i}"))], false)
            .await[0]
            .clone()
            .unwrap();
    }
    // The leader (and the other follower) purge the log the lagging node would need.
    for id in IDS.into_iter().filter(|id| *id != lagging) {
        c.nodes[&id].snapshot_now().await.unwrap();
    }
    c.restart(lagging).await;
    c.sees_topic(lagging, "t9", Duration::from_secs(10)).await;
    let image = c.nodes[&lagging].image();
    assert_eq!(image.topics, c.nodes[&leader].image().topics);
    assert!(image.brokers.contains_key(&10));
    // It got there by installing the leader's snapshot (installed snapshots are persisted).
    assert!(c.dirs[&lagging]
        .path()
        .join("metadata/state/snapshot.json")
        .exists());
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_can_be_added_and_removed() {
    let mut c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    live_broker(&c.nodes[&leader], 10).await;
    c.nodes[&leader]
        .create_topics(vec![topic("before")], false)
        .await[0]
        .clone()
        .unwrap();

    // A fourth node waits for a leader; adding it (through a follower) catches it up.
    let addr4 = c.start_extra(4).await;
    assert_eq!(c.nodes[&4].quorum_status().leader_id, None);
    let follower = IDS.into_iter().find(|id| *id != leader).unwrap();
    c.nodes[&follower].add_voter(4, addr4).await.unwrap();
    c.sees_topic(4, "before", Duration::from_secs(10)).await;
    let all = [1, 2, 3, 4];
    let leader = c.agreed_leader(&all, Duration::from_secs(10)).await;

    // Remove one original follower; then losing it and one more voter leaves two of the
    // three remaining voters, still a majority (it would not be one of four).
    let mut others = IDS.into_iter().filter(|id| *id != leader);
    let (removed, lost) = (others.next().unwrap(), others.next().unwrap());
    c.nodes[&leader].remove_voter(removed).await.unwrap();
    c.kill(removed).await;
    c.kill(lost).await;
    let r = c.nodes[&4]
        .create_topics(vec![topic("after-removal")], false)
        .await;
    r[0].clone().unwrap();
    c.sees_topic(leader, "after-removal", Duration::from_secs(5))
        .await;
    for id in [leader, 4] {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_receives_metadata_and_forwards_requests() {
    let c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    live_broker(&c.nodes[&leader], 10).await;
    c.nodes[&leader]
        .create_topics(vec![topic("a")], false)
        .await[0]
        .clone()
        .unwrap();

    // Node 10 is not among the voters: it joins as an observer (a Raft learner).
    let dir = tempfile::tempdir().unwrap();
    let config = sluice_raft::MetadataConfig {
        node_id: 10,
        data_dir: dir.path().to_path_buf(),
        controller_listen: Some(common::free_port()),
        voters: c.listen.clone(),
        bootstrap: false,
        default_num_partitions: 1,
        default_replication_factor: 1,
        broker_session_timeout: Duration::from_secs(30),
    };
    let observer = sluice_raft::MetadataNode::start(config.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !observer.image().topics.contains_key("a") || observer.image().controller_id.is_none() {
        assert!(
            Instant::now() < deadline,
            "the observer never received the metadata"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(observer.image().controller_id, Some(leader));
    assert!(!observer.quorum_status().is_leader);
    // Its controller requests go to the leader.
    observer
        .create_topics(vec![topic("from-observer")], false)
        .await[0]
        .clone()
        .unwrap();
    for id in IDS {
        c.sees_topic(id, "from-observer", Duration::from_secs(5))
            .await;
    }
    // Without the observer the voters go on; it restarts and catches up.
    observer.shutdown().await.unwrap();
    c.nodes[&leader]
        .create_topics(vec![topic("while-away")], false)
        .await[0]
        .clone()
        .unwrap();
    let observer = sluice_raft::MetadataNode::start(config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !observer.image().topics.contains_key("while-away") {
        assert!(
            Instant::now() < deadline,
            "the observer did not catch up after restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Removed (through a follower), it no longer receives the log; removing twice is a no-op.
    let follower = IDS.into_iter().find(|id| *id != leader).unwrap();
    c.nodes[&follower].remove_voter(10).await.unwrap();
    c.nodes[&follower].remove_voter(10).await.unwrap();
    c.nodes[&leader]
        .create_topics(vec![topic("after-removal")], false)
        .await[0]
        .clone()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!observer.image().topics.contains_key("after-removal"));
    observer.shutdown().await.unwrap();
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_counts_as_lost_until_it_has_a_log() {
    let mut c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    live_broker(&c.nodes[&leader], 10).await;
    c.nodes[&leader]
        .create_topics(vec![topic("kept")], false)
        .await[0]
        .clone()
        .unwrap();
    for id in IDS {
        c.sees_topic(id, "kept", Duration::from_secs(5)).await;
    }
    let mut followers = IDS.into_iter().filter(|id| *id != leader);
    let (wiped, other) = (followers.next().unwrap(), followers.next().unwrap());

    // The wiped node comes back with the same id and an empty disk, unreachable from the
    // leader; then the leader dies. The survivor must not win the wiped node's vote: with
    // one voter lost and one wiped, there is no quorum.
    c.kill(wiped).await;
    std::fs::remove_dir_all(c.dirs[&wiped].path().join("metadata")).unwrap();
    for (from, to) in [(leader, wiped), (wiped, leader)] {
        c.proxies[&(from, to)].set_enabled(false);
    }
    c.restart(wiped).await;
    c.kill(leader).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in [wiped, other] {
        let status = c.nodes[&id].quorum_status();
        assert!(
            !status.is_leader,
            "node {id} became leader without a real quorum: {status:?}"
        );
    }

    // The old leader returns: the quorum is back and the wiped node catches up.
    for (from, to) in [(leader, wiped), (wiped, leader)] {
        c.proxies[&(from, to)].set_enabled(true);
    }
    c.restart(leader).await;
    c.sees_topic(wiped, "kept", Duration::from_secs(15)).await;
    let r = c.nodes[&wiped]
        .create_topics(vec![topic("after")], false)
        .await;
    r[0].clone().unwrap();
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}
