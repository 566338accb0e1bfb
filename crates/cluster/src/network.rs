//! Peer traffic: openraft's RPCs over HTTP between nodes, authenticated by a shared cluster
//! secret.
//!
//! ```text
//!  node A: Raft ─► PeerNetwork::append_entries ─POST /raft/append (Bearer secret)─► node B
//!                                                     router: check secret ─► raft.append_entries
//! ```
//!
//! A request without the secret is refused with 401 and counted
//! (`keel_peer_requests_refused_total`). Bodies are JSON (openraft's serde types) and bounded
//! by `PEER_REQUEST_BYTES_MAX`.

use crate::{NodeId, TypeConfig};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Bytes of one peer request (a batch of log entries or a snapshot chunk).
pub const PEER_REQUEST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The shared secret every peer request must carry.
#[derive(Clone)]
pub struct ClusterSecret(Arc<str>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The smallest secret accepted, in bytes.
    pub const BYTES_MIN: usize = 16;

    /// A secret, refused when shorter than [`ClusterSecret::BYTES_MIN`].
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < Self::BYTES_MIN {
            return Err(format!(
                "the cluster secret needs at least {} bytes",
                Self::BYTES_MIN
            ));
        }
        Ok(Self(secret.into()))
    }

    /// Whether `header` (an `authorization` value) carries this secret. Compares in time
    /// independent of where the bytes differ (a few lines rather than a dependency).
    pub fn admits(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
            return false;
        };
        let (expected, given) = (self.0.as_bytes(), token.as_bytes());
        if expected.len() != given.len() {
            return false;
        }
        expected
            .iter()
            .zip(given)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}

/// Makes a client per peer.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    http: reqwest::Client,
    secret: ClusterSecret,
}

impl PeerNetwork {
    /// Peers are reached with `secret`.
    pub fn new(secret: ClusterSecret) -> Self {
        Self {
            http: reqwest::Client::new(),
            secret,
        }
    }
}

/// The client of one peer.
#[derive(Debug)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: ClusterSecret,
    target: NodeId,
    address: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            http: self.http.clone(),
            secret: self.secret.clone(),
            target,
            address: node.addr.clone(),
        }
    }
}

impl PeerClient {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let response = self
            .http
            .post(format!("http://{}/raft/{path}", self.address))
            .bearer_auth(&self.secret.0)
            .timeout(option.hard_ttl())
            .json(request)
            .send()
            .await
            .map_err(|error| {
                if error.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&error))
                } else {
                    RPCError::Network(NetworkError::new(&error))
                }
            })?;
        if !response.status().is_success() {
            let error = std::io::Error::other(format!("peer answered {}", response.status()));
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let answer: Result<Resp, E> = response
            .json()
            .await
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("vote", &rpc, &option).await
    }
}

#[derive(Clone)]
struct PeerState {
    raft: Raft<TypeConfig>,
    secret: ClusterSecret,
}

fn refuse() -> Response {
    metrics::counter!("keel_peer_requests_refused_total").increment(1);
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong cluster secret\n",
    )
        .into_response()
}

fn authorized(state: &PeerState, headers: &HeaderMap) -> bool {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    state.secret.admits(header)
}

/// Checks the secret before reading the body, then decodes it and hands it to `call`.
async fn handle<Req, Resp, F, Fut>(
    state: PeerState,
    headers: HeaderMap,
    body: Bytes,
    call: F,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Raft<TypeConfig>, Req) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    if !authorized(&state, &headers) {
        return refuse();
    }
    match serde_json::from_slice::<Req>(&body) {
        Ok(request) => axum::Json(call(state.raft, request).await).into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("invalid peer request: {error}\n"),
        )
            .into_response(),
    }
}

/// The peer endpoint: `/raft/append`, `/raft/vote`, `/raft/snapshot`, for `raft`.
pub fn peer_router(raft: Raft<TypeConfig>, secret: ClusterSecret) -> Router {
    Router::new()
        .route(
            "/raft/append",
            post(|State(state): State<PeerState>, headers: HeaderMap, body: Bytes| {
                handle(state, headers, body, |raft, request: AppendEntriesRequest<TypeConfig>| async move {
                    raft.append_entries(request).await
                })
            }),
        )
        .route(
            "/raft/vote",
            post(|State(state): State<PeerState>, headers: HeaderMap, body: Bytes| {
                handle(state, headers, body, |raft, request: VoteRequest<NodeId>| async move {
                    raft.vote(request).await
                })
            }),
        )
        .route(
            "/raft/snapshot",
            post(|State(state): State<PeerState>, headers: HeaderMap, body: Bytes| {
                handle(state, headers, body, |raft, request: InstallSnapshotRequest<TypeConfig>| async move {
                    raft.install_snapshot(request).await
                })
            }),
        )
        .layer(DefaultBodyLimit::max(PEER_REQUEST_BYTES_MAX))
        .with_state(PeerState { raft, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_checked_exactly() {
        assert!(ClusterSecret::new("short").is_err());
        let secret = ClusterSecret::new("0123456789abcdef-cluster").unwrap();
        let table = [
            (Some("Bearer 0123456789abcdef-cluster"), true),
            (Some("Bearer 0123456789abcdef-clusteR"), false),
            (Some("Bearer 0123456789abcdef-cluste"), false),
            (Some("0123456789abcdef-cluster"), false),
            (None, false),
        ];
        for (header, admitted) in table {
            assert_eq!(secret.admits(header), admitted, "{header:?}");
        }
    }
}
