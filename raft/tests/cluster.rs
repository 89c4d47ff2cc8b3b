//! Three metadata voters as tasks on 127.0.0.1, each pair of nodes connected through a small
//! fault-injecting TCP proxy so a node can be cut off. Ports are chosen free at runtime;
//! every wait is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_raft::{
    BrokerRegistration, ControllerError, Endpoint, MetadataConfig, MetadataNode, NewTopic,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Forwards TCP connections to `upstream` while enabled; disabling drops every connection
/// through it and refuses new ones (a network partition, both directions).
struct Proxy {
    addr: SocketAddr,
    enabled: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let enabled = Arc::new(watch::channel(true).0);
        let en = enabled.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                if !*en.borrow() {
                    continue;
                }
                let mut rx = en.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.wait_for(|on| !*on) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            enabled,
            task,
        }
    }

    fn set_enabled(&self, on: bool) {
        self.enabled.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Cluster {
    dirs: BTreeMap<i32, tempfile::TempDir>,
    listen: BTreeMap<i32, SocketAddr>,
    /// (from, to) → the proxy `from` dials to reach `to`.
    proxies: BTreeMap<(i32, i32), Proxy>,
    nodes: BTreeMap<i32, MetadataNode>,
}

const IDS: [i32; 3] = [1, 2, 3];

impl Cluster {
    async fn start() -> Cluster {
        let mut c = Cluster {
            dirs: BTreeMap::new(),
            listen: BTreeMap::new(),
            proxies: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for id in IDS {
            c.dirs.insert(id, tempfile::tempdir().unwrap());
            c.listen.insert(id, free_port());
        }
        for from in IDS {
            for to in IDS.into_iter().filter(|to| *to != from) {
                c.proxies
                    .insert((from, to), Proxy::start(c.listen[&to]).await);
            }
        }
        let starts: Vec<_> = IDS
            .into_iter()
            .map(|id| tokio::spawn(MetadataNode::start(c.config(id))))
            .collect();
        for (id, start) in IDS.into_iter().zip(starts) {
            c.nodes.insert(id, start.await.unwrap().unwrap());
        }
        c
    }

    fn config(&self, id: i32) -> MetadataConfig {
        let voters = IDS
            .into_iter()
            .map(|j| {
                (
                    j,
                    if j == id {
                        self.listen[&j]
                    } else {
                        self.proxies[&(id, j)].addr
                    },
                )
            })
            .collect();
        MetadataConfig {
            node_id: id,
            data_dir: self.dirs[&id].path().to_path_buf(),
            controller_listen: Some(self.listen[&id]),
            voters,
            bootstrap: id == 1,
            default_num_partitions: 1,
            default_replication_factor: 1,
            broker_session_timeout: Duration::from_secs(30),
        }
    }

    async fn restart(&mut self, id: i32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match MetadataNode::start(self.config(id)).await {
                Ok(node) => {
                    self.nodes.insert(id, node);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart of node {id} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("restart of node {id}: {e}"),
            }
        }
    }

    async fn kill(&mut self, id: i32) {
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    fn cut(&self, id: i32, cut: bool) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.set_enabled(!cut);
            }
        }
    }

    /// Waits until every node in `among` names the same leader, which is in `among`.
    async fn agreed_leader(&self, among: &[i32], within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Option<i32>> = among
                .iter()
                .map(|id| self.nodes[id].image().controller_id)
                .collect();
            if let Some(Some(l)) = views.first() {
                if among.contains(l) && views.iter().all(|v| *v == Some(*l)) {
                    return *l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` sees topic `name` (committed and applied there).
    async fn sees_topic(&self, id: i32, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.nodes[&id].image().topics.contains_key(name) {
            assert!(
                Instant::now() < deadline,
                "node {id} never saw topic {name}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: 1,
        replication_factor: 1,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
}

async fn live_broker(node: &MetadataNode, id: i32) {
    let reg = BrokerRegistration {
        broker_id: id,
        incarnation_id: Uuid::new_v4(),
        listeners: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
            security_protocol: 0,
        }],
        rack: None,
    };
    let epoch = node.register_broker(reg).await.unwrap();
    assert!(
        !node
            .broker_heartbeat(id, epoch, false)
            .await
            .unwrap()
            .is_fenced
    );
}

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
