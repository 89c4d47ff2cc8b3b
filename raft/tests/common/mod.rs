//! Test harness shared by the multi-node tests: voters as tasks on 127.0.0.1 with a
//! fault-injecting TCP proxy between every pair of nodes. Every wait is bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_raft::{BrokerRegistration, Endpoint, MetadataConfig, MetadataNode, NewTopic};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Forwards TCP connections to `upstream` while enabled; disabling drops every connection
/// through it and refuses new ones (a network partition, both directions).
pub struct Proxy {
    pub addr: SocketAddr,
    enabled: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
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

    pub fn set_enabled(&self, on: bool) {
        self.enabled.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct Cluster {
    pub dirs: BTreeMap<i32, tempfile::TempDir>,
    pub listen: BTreeMap<i32, SocketAddr>,
    /// (from, to) → the proxy `from` dials to reach `to`.
    pub proxies: BTreeMap<(i32, i32), Proxy>,
    pub nodes: BTreeMap<i32, MetadataNode>,
}

pub const IDS: [i32; 3] = [1, 2, 3];

impl Cluster {
    pub async fn start() -> Cluster {
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

    pub fn config(&self, id: i32) -> MetadataConfig {
        // Through the proxy where there is one (nodes added later are reached directly).
        let voters = self
            .listen
            .keys()
            .map(|j| {
                let addr = match self.proxies.get(&(id, *j)) {
                    Some(p) if *j != id => p.addr,
                    _ => self.listen[j],
                };
                (*j, addr)
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

    /// Starts a node that is not among the initial voters (it waits to be added) and
    /// returns its controller address.
    pub async fn start_extra(&mut self, id: i32) -> SocketAddr {
        self.dirs.insert(id, tempfile::tempdir().unwrap());
        let addr = free_port();
        self.listen.insert(id, addr);
        self.restart(id).await;
        addr
    }

    pub async fn restart(&mut self, id: i32) {
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

    pub async fn kill(&mut self, id: i32) {
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    pub fn cut(&self, id: i32, cut: bool) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.set_enabled(!cut);
            }
        }
    }

    /// Waits until every node in `among` names the same leader, which is in `among`.
    pub async fn agreed_leader(&self, among: &[i32], within: Duration) -> i32 {
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
    pub async fn sees_topic(&self, id: i32, name: &str, within: Duration) {
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

pub fn topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: 1,
        replication_factor: 1,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
}

pub async fn live_broker(node: &MetadataNode, id: i32) {
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
