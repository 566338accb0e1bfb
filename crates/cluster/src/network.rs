//! Peer traffic: openraft's RPCs over HTTP between nodes, authenticated by a shared cluster
//! secret.
//!
//! ```text
//!  node A: Raft ─► PeerNetwork::append_entries ─POST /raft/append (Bearer secret)─► node B
//!                                                     router: check secret ─► raft.append_entries
//! ```
//!
//! A request without the secret is refused with 401 and counted
//! (`keel_peer_requests_refused_total`). Raft bodies are openraft's serde types in keel's binary
//! codec (`codec`), bounded by `PEER_REQUEST_BYTES_MAX`.
//!
//! Beside Raft's three RPCs, the endpoint answers `/raft/health` (is this node ready to lead),
//! `/raft/transfer` (the leader hands leadership to this node: see `transfer`), `/raft/watch`
//! (held open by each follower while this node leads) and `/raft/leader-gone` (a follower
//! found the leader dead: see `failover`).

use crate::codec;
use crate::error::{ClusterError, NotHealthy, PeerError};
use crate::leader::LeaderControl;
use crate::{NodeId, TypeConfig};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
use std::time::Duration;

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
    pub fn new(secret: &str) -> Result<Self, ClusterError> {
        if secret.len() < Self::BYTES_MIN {
            return Err(ClusterError::SecretTooShort {
                bytes_min: Self::BYTES_MIN,
            });
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

/// A request to a peer, as keel's peer protocol frames it over HTTP.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// `GET` (health) or `POST` (everything else).
    pub post: bool,
    /// The peer's advertised address (`host:port`).
    pub address: String,
    /// The path (`/raft/append`, ...).
    pub path: &'static str,
    /// The `Authorization` header's value (`Bearer <secret>`).
    pub authorization: String,
    /// The body's media type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

/// A peer's answer: HTTP status and body.
#[derive(Debug, Clone)]
pub struct PeerAnswer {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl PeerAnswer {
    /// Whether the status is a 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The media type of the hand-over and health bodies (Raft messages use `codec::MEDIA_TYPE`).
const JSON: &str = "application/json";

/// Why a peer exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made: the peer is down or cut off. Raft backs off.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection failed or the time ran out mid-exchange: the request may or may not
    /// have been delivered (Raft's RPCs are idempotent, so a retry is safe).
    #[error("{0}")]
    Failed(String),
}

/// How a held-open request ([`PeerTransport::watch`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The peer answered with a status other than 200 (409: it does not lead).
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// No answer head within the time allowed.
    TimedOut,
    /// The answer's body ended cleanly: the peer stopped leading, or shut down in order.
    Ended,
    /// No connection, or the connection closed or broke without a clean end of the body: what a
    /// dead process's kernel does to its sockets.
    Broken(String),
}

/// The transport under keel's peer protocol: one request, one answer. `HttpTransport` carries
/// it over real sockets; the deterministic simulation (keel-testkit) carries it over turmoil's
/// simulated TCP, with the same HTTP framing, codec and router on the far side.
///
/// ### Correctness
/// An exchange returns the peer's answer to exactly this request, or an error within
/// `timeout`; it never retries on its own (openraft decides about retries).
pub trait PeerTransport: Clone + Send + Sync + 'static {
    /// Sends `request` and waits at most `timeout` for the answer.
    fn exchange(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<PeerAnswer, TransportError>> + Send;

    /// Sends `request` and holds its answer open until the body ends, waiting at most `timeout`
    /// for the answer's head and then without limit; says how it ended.
    ///
    /// ### Correctness
    /// [`WatchEnd::Broken`] only when no connection was made or it closed or failed before the
    /// body's end; a time limit is never `Broken`. The dead-leader detector treats `Broken` as a
    /// reason to probe, never as proof.
    fn watch(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> impl Future<Output = WatchEnd> + Send;
}

/// Peer requests over real sockets (reqwest, pooled keep-alive connections).
#[derive(Debug, Clone, Default)]
pub struct HttpTransport {
    http: reqwest::Client,
}

impl HttpTransport {
    /// Requests leave from the local address `source` (the address this node's peer endpoint
    /// listens on, so that peers and firewalls see one address per node).
    pub fn from_address(source: std::net::IpAddr) -> Self {
        let http = reqwest::Client::builder()
            .local_address(source)
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, %source, "peer client without a source address");
                reqwest::Client::new()
            });
        Self { http }
    }
}

impl PeerTransport for HttpTransport {
    async fn exchange(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerAnswer, TransportError> {
        let url = format!("http://{}{}", request.address, request.path);
        let builder = if request.post {
            self.http.post(url).body(request.body)
        } else {
            self.http.get(url)
        };
        let failed = |error: reqwest::Error| TransportError::Failed(described(&error));
        // No answer at all, short of a timeout (refused, reset, or closed before any answer, as
        // a proxy in front of a dead peer does), is unreachable: openraft then backs off
        // instead of retrying at once, which spun at a thousand requests a second.
        let unanswered = |error: reqwest::Error| {
            if error.is_timeout() {
                TransportError::Failed(described(&error))
            } else {
                TransportError::Unreachable(described(&error))
            }
        };
        let response = builder
            .header(axum::http::header::AUTHORIZATION, request.authorization)
            .header(axum::http::header::CONTENT_TYPE, request.content_type)
            .timeout(timeout)
            .send()
            .await
            .map_err(unanswered)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(failed)?;
        Ok(PeerAnswer { status, body })
    }

    async fn watch(&self, request: PeerRequest, timeout: Duration) -> WatchEnd {
        let url = format!("http://{}{}", request.address, request.path);
        let sent = self
            .http
            .get(url)
            .header(axum::http::header::AUTHORIZATION, request.authorization)
            .send();
        let mut response = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return WatchEnd::TimedOut,
            Ok(Err(error)) if error.is_timeout() => return WatchEnd::TimedOut,
            Ok(Err(error)) => return WatchEnd::Broken(described(&error)),
            Ok(Ok(response)) => response,
        };
        if response.status() != reqwest::StatusCode::OK {
            return WatchEnd::Refused {
                status: response.status().as_u16(),
            };
        }
        loop {
            match response.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => return WatchEnd::Ended,
                Err(error) => return WatchEnd::Broken(described(&error)),
            }
        }
    }
}

/// `error` with its causes: reqwest's own text ("error sending request for url …") hides
/// whether the peer refused, reset or timed out, which is what an operator reading
/// "peer unreachable" needs.
fn described(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Makes a client per peer, over transport `T`.
#[derive(Debug, Clone)]
pub struct PeerNetwork<T = HttpTransport> {
    transport: T,
    secret: ClusterSecret,
    /// Peers whose last Raft request found them unreachable: keel logs each change once,
    /// where openraft logs every failed retry.
    unreachable: Arc<std::sync::Mutex<std::collections::BTreeSet<NodeId>>>,
}

impl PeerNetwork {
    /// Peers are reached with `secret`, over real sockets.
    pub fn new(secret: ClusterSecret) -> Self {
        Self::with_transport(secret, HttpTransport::default())
    }

    /// Peers are reached with `secret`, from the local address `source`.
    pub fn from_address(secret: ClusterSecret, source: std::net::IpAddr) -> Self {
        Self::with_transport(secret, HttpTransport::from_address(source))
    }
}

impl<T: PeerTransport> PeerNetwork<T> {
    /// Peers are reached with `secret`, over `transport`.
    pub fn with_transport(secret: ClusterSecret, transport: T) -> Self {
        Self {
            transport,
            secret,
            unreachable: Arc::default(),
        }
    }

    /// Records whether `target` answered, logging only a change: one warning when it stops
    /// answering, one line when it is back.
    fn note_reachable(&self, target: NodeId, address: &str, reached: Result<(), &str>) {
        let mut unreachable = self.unreachable.lock().expect("peer set lock");
        match reached {
            Ok(()) => {
                if unreachable.remove(&target) {
                    tracing::info!(peer = target, %address, "peer reachable again");
                }
            }
            Err(error) => {
                if unreachable.insert(target) {
                    tracing::warn!(
                        peer = target,
                        %address,
                        %error,
                        "peer unreachable; retrying every {PEER_BACKOFF_MAX:?} at most"
                    );
                }
            }
        }
    }

    /// A request to `address`; `body` is the media type and bytes of a `POST`, `None` a `GET`.
    fn request(
        &self,
        address: &str,
        path: &'static str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> PeerRequest {
        let post = body.is_some();
        let (content_type, body) = body.unwrap_or((JSON, Vec::new()));
        PeerRequest {
            post,
            address: address.to_string(),
            path,
            authorization: format!("Bearer {}", self.secret.0),
            content_type,
            body,
        }
    }
}

/// What `/raft/health` answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeerHealth {
    /// Why the node is not healthy, or `None` when it is.
    pub unhealthy: Option<String>,
}

/// What `/raft/transfer` carries: `from`, leader in `term`, hands over to the receiver, which
/// campaigns for at most `deadline_ms`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HandOver {
    /// The leader handing over.
    pub from: NodeId,
    /// Its term.
    pub term: u64,
    /// How long the receiver campaigns before giving up.
    pub deadline_ms: u64,
}

/// The two calls a leadership hand-over makes to a peer beside Raft's own RPCs. With openraft's
/// `RaftNetworkFactory`, this is what a transport provides: `PeerNetwork` over HTTP here, a
/// simulated network in a deterministic simulation. The receiving side answers through
/// [`PeerEndpoint::health`] and [`PeerEndpoint::receive_hand_over`], whatever carried the call.
pub trait PeerControl: Send + Sync {
    /// Whether the peer at `address` is healthy (`Ok`), or why not; no answer within
    /// `timeout` is an answer.
    fn peer_health(
        &self,
        address: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PeerError>> + Send;

    /// Tells the peer at `address` that `from`, leader in `term`, hands leadership to it; it
    /// campaigns for at most `deadline`.
    fn hand_over(
        &self,
        address: &str,
        from: NodeId,
        term: u64,
        deadline: Duration,
    ) -> impl Future<Output = Result<(), PeerError>> + Send;

    /// Holds `/raft/watch` open on the peer at `address` (this node's leader) until it ends.
    fn watch_leader(&self, address: &str) -> impl Future<Output = WatchEnd> + Send;

    /// Tells the peer at `address` that this node found `gone.leader` dead, and asks whether it
    /// agrees (then it has forgotten that leader's lease) and how far its log reaches.
    fn leader_gone(
        &self,
        address: &str,
        gone: &LeaderGone,
    ) -> impl Future<Output = Result<LeaderGoneAnswer, PeerError>> + Send;
}

impl<T: PeerTransport> PeerNetwork<T> {
    /// One control call (health, hand-over, leader-gone): the body of a 2xx answer; any other
    /// status is a refusal.
    async fn control_call(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let answer = self.transport.exchange(request, timeout).await?;
        if !answer.is_success() {
            return Err(PeerError::Refused {
                status: answer.status,
            });
        }
        Ok(answer.body)
    }
}

/// A control call's JSON answer.
fn json_answer<A: DeserializeOwned>(body: &[u8]) -> Result<A, PeerError> {
    serde_json::from_slice(body).map_err(|error| PeerError::Unreadable(error.to_string()))
}

impl<T: PeerTransport> PeerControl for PeerNetwork<T> {
    async fn peer_health(&self, address: &str, timeout: Duration) -> Result<(), PeerError> {
        let request = self.request(address, "/raft/health", None);
        let health: PeerHealth = json_answer(&self.control_call(request, timeout).await?)?;
        match health.unhealthy {
            None => Ok(()),
            Some(reason) => Err(NotHealthy { reason }.into()),
        }
    }

    async fn hand_over(
        &self,
        address: &str,
        from: NodeId,
        term: u64,
        deadline: Duration,
    ) -> Result<(), PeerError> {
        let hand_over = HandOver {
            from,
            term,
            deadline_ms: deadline.as_millis() as u64,
        };
        let body = serde_json::to_vec(&hand_over).expect("a hand-over serialises");
        let request = self.request(address, "/raft/transfer", Some((JSON, body)));
        self.control_call(request, PEER_CONTROL_TIMEOUT).await?;
        Ok(())
    }

    async fn watch_leader(&self, address: &str) -> WatchEnd {
        let request = self.request(address, "/raft/watch", None);
        self.transport.watch(request, PEER_CONTROL_TIMEOUT).await
    }

    async fn leader_gone(
        &self,
        address: &str,
        gone: &LeaderGone,
    ) -> Result<LeaderGoneAnswer, PeerError> {
        let body = serde_json::to_vec(gone).expect("a leader-gone request serialises");
        let request = self.request(address, "/raft/leader-gone", Some((JSON, body)));
        json_answer(
            &self
                .control_call(request, crate::failover::LEADER_GONE_TIMEOUT)
                .await?,
        )
    }
}

/// What `/raft/leader-gone` carries: the leader the sender found dead, in its term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderGone {
    /// The leader found dead.
    pub leader: NodeId,
    /// The term it led.
    pub term: u64,
}

/// What `/raft/leader-gone` answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderGoneAnswer {
    /// Whether this node found the leader dead too, and so forgot its lease: it will vote for
    /// an up-to-date candidate at once.
    pub forgot: bool,
    /// The last entry of this node's log.
    pub last_log: Option<openraft::LogId<NodeId>>,
    /// Whether this node is ready to lead (R1: a node that is not is never chosen).
    pub healthy: bool,
}

/// How long a health or hand-over request to a peer may take.
pub const PEER_CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// The first wait before openraft retries an unreachable peer (its own default, constant).
pub(crate) const PEER_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between retries of an unreachable peer: the wait doubles up to this, so a
/// peer that is down costs a log line every 2 s rather than two a second, and one that comes
/// back is found within 2 s.
pub(crate) const PEER_BACKOFF_MAX: Duration = Duration::from_secs(2);
const _: () = assert!(PEER_BACKOFF_MIN.as_millis() < PEER_BACKOFF_MAX.as_millis());

/// The client of one peer.
#[derive(Debug)]
pub struct PeerClient<T = HttpTransport> {
    network: PeerNetwork<T>,
    target: NodeId,
    address: String,
}

impl<T: PeerTransport> RaftNetworkFactory<TypeConfig> for PeerNetwork<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient<T> {
        PeerClient {
            network: self.clone(),
            target,
            address: node.addr.clone(),
        }
    }
}

impl<T: PeerTransport> PeerClient<T> {
    async fn send<Req, Resp, E>(
        &self,
        path: &'static str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            codec::encode(request).map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let request = self
            .network
            .request(&self.address, path, Some((codec::MEDIA_TYPE, body)));
        let answer = self
            .network
            .transport
            .exchange(request, option.hard_ttl())
            .await;
        match &answer {
            Ok(_) => self
                .network
                .note_reachable(self.target, &self.address, Ok(())),
            Err(TransportError::Unreachable(error)) => {
                self.network
                    .note_reachable(self.target, &self.address, Err(error))
            }
            Err(TransportError::Failed(_)) => {}
        }
        let answer = answer.map_err(|error| match error {
            TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&error)),
            TransportError::Failed(_) => RPCError::Network(NetworkError::new(&error)),
        })?;
        if !answer.is_success() {
            let error = std::io::Error::other(format!("peer answered {}", answer.status));
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let answer: Result<Resp, E> = codec::decode(&answer.body)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl<T: PeerTransport> RaftNetwork<TypeConfig> for PeerClient<T> {
    /// Doubling waits, from [`PEER_BACKOFF_MIN`] to [`PEER_BACKOFF_MAX`], while a peer stays
    /// unreachable (openraft drops the iterator after a request succeeds).
    fn backoff(&self) -> openraft::network::Backoff {
        let doubling = std::iter::successors(Some(PEER_BACKOFF_MIN), |wait| {
            Some((*wait * 2).min(PEER_BACKOFF_MAX))
        });
        openraft::network::Backoff::new(doubling)
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send("/raft/vote", &rpc, &option).await
    }
}

/// Tells whether this node is healthy (`Ok`) or why not.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), NotHealthy> + Send + Sync>;

/// What the peer endpoint serves.
#[derive(Clone)]
pub struct PeerEndpoint {
    /// This node's Raft.
    pub raft: Raft<TypeConfig>,
    /// The secret every request must carry.
    pub secret: ClusterSecret,
    /// This node's building switches (a hand-over to this node records who handed over).
    pub control: Arc<LeaderControl>,
    /// This node's health, as `/raft/health` reports it.
    pub health: HealthCheck,
    /// What this node's dead-leader detector found (`/raft/leader-gone` asks it).
    pub failover: Arc<crate::failover::FailoverState>,
}

impl std::fmt::Debug for PeerEndpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PeerEndpoint")
            .finish_non_exhaustive()
    }
}

type PeerState = PeerEndpoint;

/// Bytes of a snapshot between two progress lines as it arrives.
pub(crate) const SNAPSHOT_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// The progress line a snapshot chunk calls for: its first, one each `SNAPSHOT_REPORT_BYTES`,
/// and its last. Worked out from the chunk alone (its offset and length), so the endpoint
/// keeps no state for it.
pub(crate) fn snapshot_progress(request: &InstallSnapshotRequest<TypeConfig>) -> Option<String> {
    let id = &request.meta.snapshot_id;
    let (offset, end) = (request.offset, request.offset + request.data.len() as u64);
    let megabytes = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    if request.done {
        Some(format!(
            "snapshot {id} received from node {}: {:.1} MiB; installing it",
            request.vote.leader_id().voted_for().unwrap_or_default(),
            megabytes(end)
        ))
    } else if offset == 0 {
        Some(format!(
            "receiving snapshot {id} from node {} (this node is behind the leader's log)",
            request.vote.leader_id().voted_for().unwrap_or_default()
        ))
    } else if offset / SNAPSHOT_REPORT_BYTES != end / SNAPSHOT_REPORT_BYTES {
        Some(format!(
            "receiving snapshot {id}: {:.0} MiB so far",
            megabytes(end)
        ))
    } else {
        None
    }
}

impl PeerEndpoint {
    /// This node's health, as a peer asks for it.
    pub fn health(&self) -> PeerHealth {
        PeerHealth {
            unhealthy: (self.health)().err().map(|not| not.reason),
        }
    }

    /// A leader hands leadership to this node: unless unhealthy (R1), it campaigns, in the
    /// background, for at most the request's deadline (60 s at most).
    pub fn receive_hand_over(&self, request: &HandOver) -> Result<(), NotHealthy> {
        (self.health)().map_err(|not| NotHealthy {
            reason: format!("not ready to lead: {}", not.reason),
        })?;
        let deadline = Duration::from_millis(request.deadline_ms.min(60_000));
        tokio::spawn(crate::transfer::campaign(
            self.raft.clone(),
            self.control.clone(),
            request.from,
            request.term,
            deadline,
        ));
        Ok(())
    }
}

impl PeerEndpoint {
    /// A follower found `gone.leader` dead: this node agrees only when its own detector finds
    /// the same within [`crate::failover::CONFIRM_WAIT`] (it is asked to look at once).
    pub async fn receive_leader_gone(&self, gone: LeaderGone) -> LeaderGoneAnswer {
        let forgot = self
            .failover
            .confirm(gone, crate::failover::CONFIRM_WAIT)
            .await;
        let last_log = crate::failover::last_log_id(&self.raft).await;
        LeaderGoneAnswer {
            forgot,
            last_log,
            healthy: crate::failover::ready_to_lead(&self.health, &self.control),
        }
    }

    /// `/raft/watch`: while this node leads, an answer whose body stays open (a line now, then
    /// one every [`crate::failover::WATCH_KEEPALIVE`]) and ends cleanly when it stops leading;
    /// otherwise 409. A follower holding it open sees the connection break the moment this
    /// process dies.
    fn watch(&self) -> Response {
        let mut metrics = self.raft.metrics();
        let (leading, term) = {
            let now = metrics.borrow_and_update();
            (now.state == openraft::ServerState::Leader, now.current_term)
        };
        if !leading {
            return (StatusCode::CONFLICT, "not the leader\n").into_response();
        }
        // The receiver travels in the stream's state, so each line waits on changes after the
        // last one seen; the keepalive runs from the last line, whatever changes meanwhile.
        let lines =
            futures::stream::unfold((metrics, true), move |(mut metrics, first)| async move {
                let line = |bytes: &'static [u8]| {
                    Ok::<_, std::convert::Infallible>(Bytes::from_static(bytes))
                };
                if first {
                    return Some((line(b"leading\n"), (metrics, false)));
                }
                let keepalive = tokio::time::sleep(crate::failover::WATCH_KEEPALIVE);
                tokio::pin!(keepalive);
                loop {
                    tokio::select! {
                        changed = metrics.changed() => {
                            let now = metrics.borrow_and_update();
                            if changed.is_err()
                                || now.state != openraft::ServerState::Leader
                                || now.current_term != term
                            {
                                return None;
                            }
                        }
                        _ = &mut keepalive => return Some((line(b"\n"), (metrics, false))),
                    }
                }
            });
        (
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            axum::body::Body::from_stream(lines),
        )
            .into_response()
    }
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
    match codec::decode::<Req>(&body) {
        Ok(request) => match codec::encode(&call(state.raft, request).await) {
            Ok(answer) => (
                [(axum::http::header::CONTENT_TYPE, codec::MEDIA_TYPE)],
                answer,
            )
                .into_response(),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the answer: {error}\n"),
            )
                .into_response(),
        },
        Err(error) => invalid_request(error),
    }
}

/// 400 for a peer request whose body does not decode.
fn invalid_request(error: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("invalid peer request: {error}\n"),
    )
        .into_response()
}

/// The peer endpoint: `/raft/append`, `/raft/vote`, `/raft/snapshot`, `/raft/health`,
/// `/raft/transfer`, `/raft/watch`, `/raft/leader-gone`.
pub fn peer_router(endpoint: PeerEndpoint) -> Router {
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
                    if let Some(line) = snapshot_progress(&request) {
                        tracing::info!("{line}");
                    }
                    raft.install_snapshot(request).await
                })
            }),
        )
        .route(
            "/raft/health",
            get(|State(state): State<PeerState>, headers: HeaderMap| async move {
                if !authorized(&state, &headers) {
                    return refuse();
                }
                axum::Json(state.health()).into_response()
            }),
        )
        .route(
            "/raft/transfer",
            post(|State(state): State<PeerState>, headers: HeaderMap, body: Bytes| async move {
                if !authorized(&state, &headers) {
                    return refuse();
                }
                let request = match serde_json::from_slice::<HandOver>(&body) {
                    Ok(request) => request,
                    Err(error) => return invalid_request(error),
                };
                // A node that is not healthy refuses, rather than lead badly (R1).
                match state.receive_hand_over(&request) {
                    Ok(()) => StatusCode::ACCEPTED.into_response(),
                    Err(reason) => (StatusCode::CONFLICT, format!("{reason}\n")).into_response(),
                }
            }),
        )
        .route(
            "/raft/watch",
            get(|State(state): State<PeerState>, headers: HeaderMap| async move {
                if !authorized(&state, &headers) {
                    return refuse();
                }
                state.watch()
            }),
        )
        .route(
            "/raft/leader-gone",
            post(|State(state): State<PeerState>, headers: HeaderMap, body: Bytes| async move {
                if !authorized(&state, &headers) {
                    return refuse();
                }
                match serde_json::from_slice::<LeaderGone>(&body) {
                    Ok(gone) => axum::Json(state.receive_leader_gone(gone).await).into_response(),
                    Err(error) => invalid_request(error),
                }
            }),
        )
        .layer(DefaultBodyLimit::max(PEER_REQUEST_BYTES_MAX))
        .with_state(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot's arrival is reported at its start, every 64 MiB and at its end, from each
    /// chunk alone.
    #[test]
    fn a_snapshot_arriving_reports_its_start_its_progress_and_its_end() {
        let chunk = |offset: u64, bytes: usize, done: bool| InstallSnapshotRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(3, 2),
            meta: openraft::SnapshotMeta {
                snapshot_id: "3-2-900-880-0xab".into(),
                ..Default::default()
            },
            offset,
            data: vec![0; bytes],
            done,
        };
        const CHUNK: usize = 3 * 1024 * 1024;
        let lines: Vec<String> = (0..30u64)
            .filter_map(|index| snapshot_progress(&chunk(index * CHUNK as u64, CHUNK, index == 29)))
            .collect();
        assert_eq!(
            lines,
            [
                "receiving snapshot 3-2-900-880-0xab from node 2 (this node is behind the leader's log)",
                "receiving snapshot 3-2-900-880-0xab: 66 MiB so far",
                "snapshot 3-2-900-880-0xab received from node 2: 90.0 MiB; installing it",
            ]
        );
    }

    /// `/raft/leader-gone`'s request and answer keep their wire form: members of different
    /// builds must read each other's (the fuzz seeds hold these bytes too).
    #[test]
    fn leader_gone_bodies_keep_their_wire_form() {
        let gone = LeaderGone {
            leader: 2,
            term: 41,
        };
        assert_eq!(
            serde_json::to_string(&gone).unwrap(),
            r#"{"leader":2,"term":41}"#
        );
        let answer = LeaderGoneAnswer {
            forgot: true,
            last_log: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(41, 2),
                90210,
            )),
            healthy: true,
        };
        let wire = r#"{"forgot":true,"last_log":{"leader_id":{"term":41,"node_id":2},"index":90210},"healthy":true}"#;
        assert_eq!(serde_json::to_string(&answer).unwrap(), wire);
        assert_eq!(
            serde_json::from_str::<LeaderGoneAnswer>(wire).unwrap(),
            answer
        );
    }

    /// A refused connection says so: the peer-unreachable warning and the dead-leader verdict
    /// name the cause, not only reqwest's "error sending request".
    #[tokio::test]
    async fn an_unreachable_peer_is_described_with_its_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let network = PeerNetwork::new(ClusterSecret::new("0123456789abcdef-cluster").unwrap());
        let error = network
            .peer_health(&address, Duration::from_secs(2))
            .await
            .unwrap_err();
        let PeerError::Transport(TransportError::Unreachable(text)) = &error else {
            panic!("a closed port is unreachable, not {error:?}");
        };
        assert!(text.contains("refused"), "{text}");
    }

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
