//! The controller transport: Raft RPCs (append entries, vote, snapshot install) and
//! forwarded controller requests over TCP, on the controller listener (never the Kafka one).
//!
//! Framing: a 4-byte big-endian length, then a JSON message; a frame above
//! [`MAX_FRAME_BYTES`] is refused before it is allocated. One request at a time per
//! connection, answered in order. Clients connect lazily, drop the connection on any error or
//! timeout and reconnect on the next call. The server bounds its connection count.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rt::{TcpListener, TcpStream};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::node::{ControllerRequest, ControllerResponse, NodeInner};
use crate::storage_util::lock;
use crate::types::{kafka_id, Node, NodeId, TypeConfig};

/// Largest frame either side accepts (snapshot chunks are 3 MiB by default).
pub(crate) const MAX_FRAME_BYTES: usize = 16 << 20;
/// Connections the controller listener serves at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 256;
/// How long to wait for a TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// An idle server-side connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle forwarding connections kept per peer.
const POOL_PER_PEER: usize = 4;

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerRequest),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Controller(ControllerResponse),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
    #[error("codec: {0}")]
    Codec(String),
    #[error("unexpected response type")]
    UnexpectedResponse,
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, msg: &T) -> Result<(), TransportError> {
    let body = serde_json::to_vec(msg).map_err(|e| TransportError::Codec(e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(TransportError::Codec(format!(
            "frame of {} bytes exceeds {MAX_FRAME_BYTES}",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut TcpStream,
) -> Result<Option<T>, TransportError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(TransportError::Codec(format!(
            "frame of {len} bytes exceeds {MAX_FRAME_BYTES}"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| TransportError::Codec(e.to_string()))
}

/// A lazily (re)connecting request/response connection to one address.
pub(crate) struct Connection {
    addr: String,
    stream: Option<TcpStream>,
}

impl Connection {
    pub fn new(addr: String) -> Self {
        Connection { addr, stream: None }
    }

    /// Sends `req` and waits for its response, all within `timeout`.
    ///
    /// Cancellation-safe: the stream is taken out for the call and put back only after a
    /// whole request/response exchange. If the call fails, times out, or the caller drops
    /// this future (openraft wraps RPCs in its own timeout), the stream is dropped with it,
    /// so a later call can never read the answer to an earlier request.
    pub async fn call(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let stream = self.stream.take();
        match tokio::time::timeout(timeout, Self::exchange(&self.addr, stream, req)).await {
            Ok(Ok((stream, resp))) => {
                self.stream = Some(stream);
                Ok(resp)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Timeout),
        }
    }

    async fn exchange(
        addr: &str,
        stream: Option<TcpStream>,
        req: &Request,
    ) -> Result<(TcpStream, Response), TransportError> {
        let mut stream = match stream {
            Some(s) => s,
            None => {
                let s = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(TransportError::Connect(addr.to_string(), e)),
                    Err(_) => {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                        return Err(TransportError::Connect(addr.to_string(), e));
                    }
                };
                s.set_nodelay(true)?;
                s
            }
        };
        write_frame(&mut stream, req).await?;
        match read_frame(&mut stream).await? {
            Some(resp) => Ok((stream, resp)),
            None => Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection").into(),
            ),
        }
    }
}

/// Where each voter's controller listener is: the local configuration wins over the address
/// recorded in the Raft membership (so a node can reach a peer through a proxy or a new IP).
#[derive(Clone, Default)]
pub(crate) struct PeerBook {
    configured: Arc<BTreeMap<i32, SocketAddr>>,
    pool: Arc<Mutex<BTreeMap<NodeId, Vec<Connection>>>>,
}

impl PeerBook {
    pub fn new(configured: BTreeMap<i32, SocketAddr>) -> Self {
        PeerBook {
            configured: Arc::new(configured),
            pool: Arc::default(),
        }
    }

    pub fn addr_of(&self, id: NodeId, node: Option<&Node>) -> Option<String> {
        self.configured
            .get(&kafka_id(id))
            .map(|a| a.to_string())
            .or_else(|| node.map(|n| n.addr.clone()).filter(|a| !a.is_empty()))
    }

    /// Sends a controller request to `target` on a pooled connection.
    pub async fn forward(
        &self,
        target: NodeId,
        node: Option<&Node>,
        req: ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerResponse, TransportError> {
        let Some(addr) = self.addr_of(target, node) else {
            let e = io::Error::new(io::ErrorKind::NotFound, "no address for the controller");
            return Err(TransportError::Connect(format!("node {target}"), e));
        };
        let pooled = lock(&self.pool).get_mut(&target).and_then(Vec::pop);
        let mut conn = pooled.unwrap_or_else(|| Connection::new(addr));
        let resp = conn.call(&Request::Controller(req), timeout).await?;
        {
            let mut pool = lock(&self.pool);
            let idle = pool.entry(target).or_default();
            if idle.len() < POOL_PER_PEER {
                idle.push(conn);
            }
        }
        match resp {
            Response::Controller(r) => Ok(r),
            _ => Err(TransportError::UnexpectedResponse),
        }
    }
}

/// Makes one [`PeerClient`] per target for openraft.
pub(crate) struct NetworkFactory {
    pub peers: PeerBook,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        let addr = self.peers.addr_of(target, Some(node)).unwrap_or_default();
        PeerClient {
            target,
            conn: Connection::new(addr),
        }
    }
}

/// openraft's view of one peer.
pub(crate) struct PeerClient {
    target: NodeId,
    conn: Connection,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

fn transport_err<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, Node, E> {
    match e {
        TransportError::Connect(..) => RPCError::Unreachable(Unreachable::new(&e)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl PeerClient {
    async fn call(&mut self, req: Request, option: &RPCOption) -> Result<Response, TransportError> {
        self.conn.call(&req, option.hard_ttl()).await
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self
            .call(Request::AppendEntries(rpc), &option)
            .await
            .map_err(transport_err)?
        {
            Response::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(transport_err(TransportError::UnexpectedResponse)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .call(Request::InstallSnapshot(rpc), &option)
            .await
            .map_err(transport_err)?
        {
            Response::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(transport_err(TransportError::UnexpectedResponse)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self
            .call(Request::Vote(rpc), &option)
            .await
            .map_err(transport_err)?
        {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(transport_err(TransportError::UnexpectedResponse)),
        }
    }
}

/// Serves the controller listener until the task is aborted (which aborts its connections).
pub(crate) async fn serve(listener: TcpListener, node: Arc<NodeInner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "controller listener at its connection limit; closing");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let node = node.clone();
                    conns.spawn(async move {
                        if let Err(e) = serve_connection(stream, node).await {
                            tracing::debug!(%peer, error = %e, "controller connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    node: Arc<NodeInner>,
) -> Result<(), TransportError> {
    loop {
        let req: Request = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        let raft = node.raft();
        let resp = match req {
            Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
            Request::Vote(r) if node.refuses_vote(&r) => {
                Response::Vote(Ok(VoteResponse::new(node.current_vote(), None, false)))
            }
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(raft.install_snapshot(r).await)
            }
            Request::Controller(r) => Response::Controller(node.handle_forwarded(r).await),
        };
        write_frame(&mut stream, &resp).await?;
    }
}
