//! The seams of the node assembly: what differs between a node on a host's disks and sockets
//! (`keel node`) and a node inside the deterministic simulation (keel-testkit), and nothing
//! else. [`crate::assemble`] wires everything else once, for both.
//!
//! ```text
//!                 HostSeams (keel node)              the simulation's seams
//!  chain store    redb file <datadir>/chain.redb     SimDisk (loses un-fsynced writes)
//!  derived store  redb file <datadir>/derived.redb   SimDisk
//!  Raft log       redb file <datadir>/raft.redb      SimDisk, behind a slow-disk wrapper
//!  state machine  StateMachine                       StateMachine, behind a slow-disk wrapper
//!  peer transport HTTP (reqwest)                     turmoil TCP, same HTTP framing
//!  peer listener  tokio TCP on raft_listen           turmoil TCP
//!  Raft's tasks   a runtime of its own (keel-raft)   the one simulated runtime
//!  JSON-RPC       jsonrpsee on rpc_addr              none (the workload writes into the pool)
//!  operations     axum on metrics_addr               none
//!  leader build   blocking pool                      on the leader's task (one seeded order)
//! ```
//!
//! The clock is the other seam; it travels in [`crate::NodeConfig::clock`].

use crate::runtime::OwnRuntime;
use crate::{Member, NodeConfig, NodeError};
use keel_cluster::{HttpTransport, LogStore, NodeId, PeerTransport, StateMachine, TypeConfig};
use keel_primitives::ChainSpec;
use keel_rpc::RpcContext;
use keel_storage::Store;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A served JSON-RPC endpoint: where it listens and the handle that stops it.
pub type RpcServer = (SocketAddr, keel_rpc::ServerHandle);

/// What the node assembly plugs in where hosts and the simulation differ.
///
/// ### Correctness
/// - `open_store` and `open_log` open the same durable state every time they are called for
///   one node (its disks): a restart resumes from them.
/// - `machine` wraps the state machine without changing what it applies or in which order;
///   `log` likewise for the Raft log.
/// - A transport delivers each request at most once per call (the simulation's duplication
///   fault is the one deliberate exception, and Raft's RPCs are idempotent).
/// - The assembly calls each `serve_*` at most once per start.
pub trait Seams: Send + Sync + 'static {
    /// Carries peer requests.
    type Transport: PeerTransport;
    /// The Raft log and vote storage.
    /// (Its reader is keel's own store: a restart reads the intake entries back from it.)
    type Log: RaftLogStorage<TypeConfig, LogReader = LogStore>;
    /// The state machine Raft applies committed entries through.
    type Machine: RaftStateMachine<TypeConfig>;

    /// Opens (or creates) this node's chain store.
    fn open_store(&self, chain: &ChainSpec) -> Result<Store, NodeError>;
    /// Opens (or creates) the store derivation writes on a sequencer (beside the chain store).
    fn open_derived_store(&self, chain: &ChainSpec) -> Result<Store, NodeError>;
    /// Opens this node's Raft log.
    fn open_log(&self) -> Result<Self::Log, NodeError>;
    /// The state machine over `machine`.
    fn machine(&self, machine: StateMachine) -> Self::Machine;
    /// The transport to peers, leaving from `me`.
    fn transport(&self, me: &Member) -> Self::Transport;
    /// The address peers reach member `id` at (its Raft membership address).
    fn peer_address(&self, id: NodeId, member: &Member) -> String;
    /// Raft's own runtime (`crate::runtime`), or `None` to run Raft on the caller's.
    fn raft_runtime(&self) -> Result<Option<OwnRuntime>, NodeError> {
        Ok(None)
    }
    /// Derivation's own runtime, at a lower priority (`crate::runtime::DERIVE_NICE`), or
    /// `None` to derive on the caller's.
    fn derive_runtime(&self) -> Result<Option<OwnRuntime>, NodeError> {
        Ok(None)
    }
    /// Serves `router` as this node's peer endpoint, on `runtime` when Raft has its own.
    fn serve_peers(
        &self,
        me: &Member,
        router: axum::Router,
        runtime: Option<&OwnRuntime>,
    ) -> impl Future<Output = Result<JoinHandle<()>, NodeError>> + Send;
    /// Serves JSON-RPC over `context`, or nothing.
    fn serve_rpc(
        &self,
        context: Arc<RpcContext>,
    ) -> impl Future<Output = Result<Option<RpcServer>, NodeError>> + Send;
    /// Serves `router` as the operations endpoint (`/metrics`, `/health`), or nothing.
    fn serve_operations(
        &self,
        router: axum::Router,
    ) -> impl Future<Output = Result<Option<(SocketAddr, JoinHandle<()>)>, NodeError>> + Send;
    /// Serves `router` as the admin API at `address`.
    fn serve_admin(
        &self,
        address: SocketAddr,
        router: axum::Router,
    ) -> impl Future<Output = Result<JoinHandle<()>, NodeError>> + Send;
    /// Whether the leader loop builds on its own task instead of the blocking pool.
    fn build_inline(&self) -> bool {
        false
    }
    /// Whether a member's chain store fsyncs its deferred blocks on a thread of its own
    /// (`Store::sync_in_background`) instead of in the apply that reached the count.
    fn sync_in_background(&self) -> bool {
        true
    }
}

/// A node on this host: redb files in the data directory, TCP listeners, HTTP to peers.
#[derive(Debug, Clone)]
pub struct HostSeams {
    datadir: PathBuf,
    rpc_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
}

impl HostSeams {
    /// The seams of `config`'s data directory and addresses; creates the directory.
    pub fn new(config: &NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.datadir).map_err(NodeError::io(format!(
            "creating {}",
            config.datadir.display()
        )))?;
        Ok(Self {
            datadir: config.datadir.clone(),
            rpc_addr: config.rpc_addr,
            metrics_addr: config.metrics_addr,
        })
    }
}

async fn serve(
    address: SocketAddr,
    what: &'static str,
    router: axum::Router,
) -> Result<(SocketAddr, JoinHandle<()>), NodeError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(NodeError::io(format!("binding the {what} to {address}")))?;
    let bound = listener
        .local_addr()
        .map_err(NodeError::io(format!("the {what}'s address")))?;
    // TCP_NODELAY on every accepted connection: an answer written in more than one piece (a
    // streamed body, the leader watch) must not wait on the peer's delayed ACK (40 ms).
    let listener =
        axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
            let _ = stream.set_nodelay(true);
        });
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the {what} failed");
        }
    });
    Ok((bound, task))
}

impl Seams for HostSeams {
    type Transport = HttpTransport;
    type Log = LogStore;
    type Machine = StateMachine;

    fn open_store(&self, chain: &ChainSpec) -> Result<Store, NodeError> {
        Ok(Store::open(&self.datadir.join("chain.redb"), chain)?)
    }

    fn open_derived_store(&self, chain: &ChainSpec) -> Result<Store, NodeError> {
        Ok(Store::open(&self.datadir.join("derived.redb"), chain)?)
    }

    fn open_log(&self) -> Result<LogStore, NodeError> {
        LogStore::open(&self.datadir.join("raft.redb")).map_err(|error| NodeError::Cluster {
            doing: "opening the Raft log",
            reason: error.to_string(),
        })
    }

    fn machine(&self, machine: StateMachine) -> StateMachine {
        machine
    }

    fn transport(&self, me: &Member) -> HttpTransport {
        if me.raft_listen.ip().is_unspecified() {
            HttpTransport::default()
        } else {
            HttpTransport::from_address(me.raft_listen.ip())
        }
    }

    fn peer_address(&self, _id: NodeId, member: &Member) -> String {
        member.raft_addr.to_string()
    }

    fn raft_runtime(&self) -> Result<Option<OwnRuntime>, NodeError> {
        OwnRuntime::start("keel-raft", crate::runtime::RAFT_WORKER_THREADS).map(Some)
    }

    fn derive_runtime(&self) -> Result<Option<OwnRuntime>, NodeError> {
        OwnRuntime::start_background(
            "keel-derive",
            crate::runtime::DERIVE_WORKER_THREADS,
            crate::runtime::DERIVE_NICE,
        )
        .map(Some)
    }

    async fn serve_peers(
        &self,
        me: &Member,
        router: axum::Router,
        runtime: Option<&OwnRuntime>,
    ) -> Result<JoinHandle<()>, NodeError> {
        let serving = serve(me.raft_listen, "peer endpoint", router);
        Ok(match runtime {
            Some(runtime) => runtime.run(serving).await?.1,
            None => serving.await?.1,
        })
    }

    async fn serve_rpc(&self, context: Arc<RpcContext>) -> Result<Option<RpcServer>, NodeError> {
        let server = keel_rpc::start(context, self.rpc_addr)
            .await
            .map_err(NodeError::io(format!(
                "binding JSON-RPC to {}",
                self.rpc_addr
            )))?;
        Ok(Some(server))
    }

    async fn serve_operations(
        &self,
        router: axum::Router,
    ) -> Result<Option<(SocketAddr, JoinHandle<()>)>, NodeError> {
        match self.metrics_addr {
            Some(address) => Ok(Some(serve(address, "operations endpoint", router).await?)),
            None => Ok(None),
        }
    }

    async fn serve_admin(
        &self,
        address: SocketAddr,
        router: axum::Router,
    ) -> Result<JoinHandle<()>, NodeError> {
        Ok(serve(address, "admin API", router).await?.1)
    }
}
