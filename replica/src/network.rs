//! Raft RPCs between the replicas of a group, over HTTP/1.1 on their own
//! port (`--raft-listen`): hyper 1.x, as the broker's API, so no second
//! HTTP stack. `POST /raft/{append,vote,snapshot}` with a bincode body
//! (entries carry message bodies: bincode sends them as raw bytes, where
//! JSON would send arrays of numbers), answered with a bincode
//! `Result<response, RaftError>`.
//!
//! [`Network`] is the client side: one pooled hyper-util client per peer,
//! so consecutive RPCs reuse a kept-alive connection. [`serve`] is the
//! server side, which hands each request to the local [`Raft`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Node, NodeId, Raft, TypeConfig};

/// The largest RPC body accepted (a snapshot chunk or a run of entries).
const MAX_RPC_BYTES: usize = 256 << 20;

type Pool = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// Makes the client of each peer.
#[derive(Clone)]
pub struct NetworkFactory {
    pool: Pool,
    cut: Arc<AtomicBool>,
}

impl NetworkFactory {
    /// A factory whose clients fail every call while `cut` is set (a
    /// network partition of this node, for fault tests).
    pub fn new(cut: Arc<AtomicBool>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        NetworkFactory { pool, cut }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Network {
        Network {
            pool: self.pool.clone(),
            cut: self.cut.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// The client of one peer.
pub struct Network {
    pool: Pool,
    cut: Arc<AtomicBool>,
    target: NodeId,
    node: Node,
}

/// How one call failed before the peer answered.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("bad answer: {0}")]
    Network(String),
}

impl Network {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Result<Resp, RaftError<NodeId, E>>, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.cut.load(Ordering::Relaxed) {
            return Err(CallError::Unreachable("this node is cut off".into()));
        }
        let body = bincode::serialize(req).map_err(|e| CallError::Network(e.to_string()))?;
        let request = Request::post(format!("http://{}{path}", self.node.addr))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Network(e.to_string()))?;
        let response = tokio::time::timeout(ttl, self.pool.request(request))
            .await
            .map_err(|_| CallError::Unreachable("timed out".into()))?
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(CallError::Network(format!("status {}", response.status())));
        }
        let bytes = tokio::time::timeout(ttl, response.into_body().collect())
            .await
            .map_err(|_| CallError::Unreachable("timed out".into()))?
            .map_err(|e| CallError::Unreachable(e.to_string()))?
            .to_bytes();
        bincode::deserialize(&bytes).map_err(|e| CallError::Network(e.to_string()))
    }

    fn fail<E: std::error::Error>(
        &self,
        error: CallError,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        match error {
            CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Network(_) => RPCError::Network(NetworkError::new(&error)),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        error: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            error,
        ))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.call("/raft/append", &rpc, option.hard_ttl()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(self.remote(error)),
            Err(error) => Err(self.fail(error)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call("/raft/snapshot", &rpc, option.hard_ttl()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(self.remote(error)),
            Err(error) => Err(self.fail(error)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.call("/raft/vote", &rpc, option.hard_ttl()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(self.remote(error)),
            Err(error) => Err(self.fail(error)),
        }
    }
}

fn answer<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match bincode::serialize(value) {
        Ok(bytes) => Response::new(Full::new(Bytes::from(bytes))),
        Err(_) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

fn bad(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

async fn handle(
    raft: Raft,
    cut: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if cut.load(Ordering::Relaxed) {
        return Ok(bad(StatusCode::SERVICE_UNAVAILABLE));
    }
    if req.method() != hyper::Method::POST {
        return Ok(bad(StatusCode::METHOD_NOT_ALLOWED));
    }
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_RPC_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(bad(StatusCode::BAD_REQUEST)),
    };
    Ok(match path.as_str() {
        "/raft/append" => match bincode::deserialize(&body) {
            Ok(rpc) => answer(&raft.append_entries(rpc).await),
            Err(_) => bad(StatusCode::BAD_REQUEST),
        },
        "/raft/vote" => match bincode::deserialize(&body) {
            Ok(rpc) => answer(&raft.vote(rpc).await),
            Err(_) => bad(StatusCode::BAD_REQUEST),
        },
        "/raft/snapshot" => match bincode::deserialize(&body) {
            Ok(rpc) => answer(&raft.install_snapshot(rpc).await),
            Err(_) => bad(StatusCode::BAD_REQUEST),
        },
        _ => bad(StatusCode::NOT_FOUND),
    })
}

/// Serves Raft RPCs for `raft` on `listener` until `stop` turns true,
/// refusing them while `cut` is set.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    cut: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, _peer): (_, SocketAddr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little, not spin.
                tracing::warn!(%error, "raft listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let cut = cut.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(raft.clone(), cut.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}
