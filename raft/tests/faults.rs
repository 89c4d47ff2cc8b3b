//! Seeded random faults against three voters with brokers heartbeating through them.
//!
//! Not a deterministic simulation: the nodes run on real time and real TCP, so thread
//! scheduling still varies between runs. The seed fixes the fault schedule (which node is
//! killed, restarted, cut off or healed, where writes go, and the pauses between steps), so a
//! failing seed replays the same schedule:
//!
//! `SLUICE_RAFT_SEEDS=42 SLUICE_RAFT_STEPS=60 cargo test -p sluice-raft --test faults -- --nocapture`
//!
//! Checked all along: one leader per term; on every node the image's offset, broker epochs,
//! leader epochs and partition epochs never go back and the order of committed values is
//! the same on every node. Checked at the end (all healed and restarted): every acknowledged
//! topic is on every node.
#![cfg(not(feature = "sim"))] // real TCP and threads: not under the simulation build

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{topic, Cluster, IDS};
use sluice_raft::{BrokerRegistration, ConfigOp, ControllerError, Endpoint, MetadataNode};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// splitmix64: a tiny seeded generator, so the schedule needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Observed {
    violations: Vec<String>,
    /// term → the node that led it.
    leaders: BTreeMap<u64, i32>,
    /// Per node, the distinct values of the cluster config "seq" in the order it saw them.
    seq_order: BTreeMap<i32, Vec<u64>>,
}

type Shared = Arc<Mutex<Observed>>;

fn record(obs: &Shared, f: impl FnOnce(&mut Observed)) {
    let mut g = obs.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut g);
}

/// Watches one node incarnation's images and quorum status for invariant violations.
fn monitor(node: MetadataNode, obs: Shared) -> JoinHandle<()> {
    tokio::spawn(async move {
        let id = node.node_id();
        let mut watch = node.watch();
        let mut offset = 0u64;
        let mut broker_epochs: HashMap<i32, i64> = HashMap::new();
        let mut partition_epochs: HashMap<(Uuid, i32), (i32, i32)> = HashMap::new();
        loop {
            let status = node.quorum_status();
            if status.is_leader {
                record(&obs, |o| match o.leaders.insert(status.term, id) {
                    Some(other) if other != id => o
                        .violations
                        .push(format!("term {} led by {other} and {id}", status.term)),
                    _ => {}
                });
            }
            let image = watch.borrow_and_update().clone();
            let mut bad = Vec::new();
            if image.offset < offset {
                bad.push(format!(
                    "node {id}: image offset {} after {offset}",
                    image.offset
                ));
            }
            offset = image.offset;
            for b in image.brokers.values() {
                let last = broker_epochs.entry(b.id).or_insert(b.epoch);
                if b.epoch < *last {
                    bad.push(format!(
                        "node {id}: broker {} epoch {} after {last}",
                        b.id, b.epoch
                    ));
                }
                *last = b.epoch;
            }
            for t in image.topics.values() {
                for p in &t.partitions {
                    let last = partition_epochs
                        .entry((t.id, p.partition))
                        .or_insert((p.leader_epoch, p.partition_epoch));
                    if p.leader_epoch < last.0 || p.partition_epoch < last.1 {
                        bad.push(format!(
                            "node {id}: {}-{} epochs went back",
                            t.name, p.partition
                        ));
                    }
                    *last = (p.leader_epoch, p.partition_epoch);
                }
            }
            let seq = image
                .cluster_configs
                .get("seq")
                .and_then(|v| v.parse::<u64>().ok());
            record(&obs, |o| {
                o.violations.extend(bad);
                if let Some(seq) = seq {
                    let order = o.seq_order.entry(id).or_default();
                    if order.last() != Some(&seq) && !order.contains(&seq) {
                        order.push(seq);
                    }
                }
            });
            let _ = tokio::time::timeout(Duration::from_millis(10), watch.changed()).await;
        }
    })
}

/// A broker hosted by node `id`: registers and heartbeats through it, re-registering when
/// its epoch goes stale. Errors while the node is cut off or the quorum moves are expected.
fn broker(node: MetadataNode, broker_id: i32) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut epoch = None;
        loop {
            match epoch {
                None => {
                    let reg = BrokerRegistration {
                        broker_id,
                        incarnation_id: Uuid::new_v4(),
                        listeners: vec![Endpoint {
                            name: "PLAINTEXT".into(),
                            host: "127.0.0.1".into(),
                            port: 9092,
                            security_protocol: 0,
                        }],
                        rack: Some(format!("rack-{}", broker_id % 2)),
                    };
                    if let Ok(Ok(e)) =
                        tokio::time::timeout(Duration::from_secs(2), node.register_broker(reg))
                            .await
                    {
                        epoch = Some(e);
                    }
                }
                Some(e) => {
                    let hb = node.broker_heartbeat(broker_id, e, false);
                    let r = tokio::time::timeout(Duration::from_secs(2), hb).await;
                    if let Ok(Err(
                        ControllerError::StaleBrokerEpoch | ControllerError::BrokerRegistration(_),
                    )) = r
                    {
                        epoch = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn run_seed(seed: u64, steps: usize) {
    eprintln!("seed {seed}: {steps} steps");
    let mut rng = Rng(seed);
    let mut c = Cluster::start().await;
    c.agreed_leader(&IDS, Duration::from_secs(15)).await;
    let obs: Shared = Arc::default();
    let mut monitors: BTreeMap<i32, JoinHandle<()>> = BTreeMap::new();
    let mut brokers: BTreeMap<i32, JoinHandle<()>> = BTreeMap::new();
    for id in IDS {
        monitors.insert(id, monitor(c.nodes[&id].clone(), obs.clone()));
        brokers.insert(id, broker(c.nodes[&id].clone(), 100 + id));
    }
    let mut down: Option<i32> = None;
    let mut cut: Option<i32> = None;
    let mut acked_topics = BTreeSet::new();
    let mut seq = 0u64;
    for step in 0..steps {
        let live: Vec<i32> = IDS.into_iter().filter(|id| Some(*id) != down).collect();
        let action = rng.below(10);
        match action {
            0 | 1 if down.is_none() && cut.is_none() => {
                // Half the time the leader, the interesting case.
                let leader = c.nodes[&IDS[0]]
                    .quorum_status()
                    .leader_id
                    .filter(|l| IDS.contains(l));
                let random = IDS[rng.below(3) as usize];
                let id = if rng.below(2) == 0 {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                eprintln!("step {step}: kill {id}");
                if let Some(b) = brokers.remove(&id) {
                    b.abort();
                }
                if let Some(m) = monitors.remove(&id) {
                    m.abort();
                }
                c.kill(id).await;
                down = Some(id);
            }
            2 if down.is_some() => {
                let id = down.take().unwrap_or_default();
                eprintln!("step {step}: restart {id}");
                c.restart(id).await;
                monitors.insert(id, monitor(c.nodes[&id].clone(), obs.clone()));
                brokers.insert(id, broker(c.nodes[&id].clone(), 100 + id));
            }
            3 if cut.is_none() && down.is_none() => {
                let leader = c.nodes[&IDS[0]]
                    .quorum_status()
                    .leader_id
                    .filter(|l| IDS.contains(l));
                let random = IDS[rng.below(3) as usize];
                let id = if rng.below(2) == 0 {
                    leader.unwrap_or(random)
                } else {
                    random
                };
                eprintln!("step {step}: cut {id} off");
                c.cut(id, true);
                cut = Some(id);
            }
            4 if cut.is_some() => {
                let id = cut.take().unwrap_or_default();
                eprintln!("step {step}: heal {id}");
                c.cut(id, false);
            }
            _ => {
                let id = live[rng.below(live.len() as u64) as usize];
                if rng.below(2) == 0 {
                    let name = format!("s{seed}-t{step}");
                    let r = tokio::time::timeout(
                        Duration::from_secs(3),
                        c.nodes[&id].create_topics(vec![topic(&name)], false),
                    )
                    .await;
                    if let Ok(r) = r {
                        if r[0].is_ok() {
                            acked_topics.insert(name);
                        }
                    }
                } else {
                    seq += 1;
                    let op = ConfigOp::Set("seq".into(), seq.to_string());
                    let _ = tokio::time::timeout(
                        Duration::from_secs(3),
                        c.nodes[&id].alter_cluster_configs(vec![op], false),
                    )
                    .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
    }
    // Heal everything and bring every node back.
    if let Some(id) = cut.take() {
        c.cut(id, false);
    }
    if let Some(id) = down.take() {
        c.restart(id).await;
        monitors.insert(id, monitor(c.nodes[&id].clone(), obs.clone()));
    }
    c.agreed_leader(&IDS, Duration::from_secs(20)).await;
    // A final write through each node proves the quorum works and lets everyone catch up.
    for id in IDS {
        let name = format!("s{seed}-final-{id}");
        c.nodes[&id].create_topics(vec![topic(&name)], false).await[0]
            .clone()
            .unwrap();
        acked_topics.insert(name);
    }
    for id in IDS {
        for name in &acked_topics {
            c.sees_topic(id, name, Duration::from_secs(10)).await;
        }
    }
    for (_, b) in brokers {
        b.abort();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (_, m) in monitors {
        m.abort();
    }
    {
        let obs = obs.lock().unwrap_or_else(|p| p.into_inner());
        // Committed values appear in the same order on every node.
        let orders: Vec<(&i32, &Vec<u64>)> = obs.seq_order.iter().collect();
        for (a, oa) in &orders {
            for (b, ob) in &orders {
                let common: Vec<u64> = oa.iter().filter(|v| ob.contains(v)).copied().collect();
                let common_b: Vec<u64> = ob.iter().filter(|v| oa.contains(v)).copied().collect();
                assert_eq!(
                    common, common_b,
                    "seed {seed}: nodes {a} and {b} saw committed values in different orders"
                );
            }
        }
        assert!(
            obs.violations.is_empty(),
            "seed {seed}: {:#?}",
            obs.violations
        );
        eprintln!(
            "seed {seed}: ok; {} acked topics, terms led: {:?}",
            acked_topics.len(),
            obs.leaders
        );
    }
    for id in IDS {
        c.nodes[&id].shutdown().await.unwrap();
    }
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_keep_committed_metadata() {
    let seeds = env_list("SLUICE_RAFT_SEEDS", &[1, 2]);
    let steps = env_list("SLUICE_RAFT_STEPS", &[25])[0] as usize;
    for seed in seeds {
        run_seed(seed, steps).await;
    }
}
