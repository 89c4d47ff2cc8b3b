//! Measurements, not checks (ignored by default). Run:
//! `cargo test -p sluice-raft --test measure -- --ignored --nocapture --test-threads 1`
//! Every metadata commit is fsynced on a majority, so these are fsync-bound.
#![cfg(not(feature = "sim"))] // real TCP and threads: not under the simulation build

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{live_broker, Cluster, IDS};
use sluice_raft::{ConfigOp, MetadataConfig, MetadataNode};

const COMMITS: usize = 300;

async fn commits_per_second(node: &MetadataNode, label: &str) {
    for concurrency in [1usize, 8] {
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let node = node.clone();
                tokio::spawn(async move {
                    for i in 0..COMMITS / concurrency {
                        let op = ConfigOp::Set(format!("k{t}"), i.to_string());
                        node.alter_cluster_configs(vec![op], false).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{label}: {COMMITS} commits, {concurrency} callers: {:.0} commits/s ({:.2} ms each)",
            COMMITS as f64 / secs,
            secs * 1000.0 / COMMITS as f64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_commits_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = MetadataNode::start(MetadataConfig {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
        controller_listen: None,
        voters: BTreeMap::new(),
        bootstrap: false,
        default_num_partitions: 1,
        default_replication_factor: 1,
        broker_session_timeout: Duration::from_secs(30),
    })
    .await
    .unwrap();
    commits_per_second(&node, "1 voter").await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_commits_three_nodes() {
    let c = Cluster::start().await;
    let leader = c.agreed_leader(&IDS, Duration::from_secs(10)).await;
    let follower = IDS.into_iter().find(|id| *id != leader).unwrap();
    live_broker(&c.nodes[&leader], 10).await;
    commits_per_second(&c.nodes[&leader], "3 voters, on the leader").await;
    commits_per_second(&c.nodes[&follower], "3 voters, forwarded from a follower").await;
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_election_after_leader_kill() {
    let mut c = Cluster::start().await;
    let mut times = Vec::new();
    for round in 0..5 {
        let leader = c.agreed_leader(&IDS, Duration::from_secs(15)).await;
        let killed_at = Instant::now();
        c.kill(leader).await;
        let survivors: Vec<i32> = IDS.into_iter().filter(|id| *id != leader).collect();
        let new_leader = c.agreed_leader(&survivors, Duration::from_secs(15)).await;
        let elected = killed_at.elapsed();
        let op = ConfigOp::Set("round".into(), round.to_string());
        c.nodes[&survivors[0]]
            .alter_cluster_configs(vec![op], false)
            .await
            .unwrap();
        let committed = killed_at.elapsed();
        eprintln!("round {round}: killed {leader}, node {new_leader} leads after {elected:?}, first commit after {committed:?}");
        times.push(committed);
        c.restart(leader).await;
    }
    times.sort();
    eprintln!(
        "first commit after leader kill: min {:?}, median {:?}, max {:?}",
        times[0], times[2], times[4]
    );
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}
