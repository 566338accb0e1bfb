//! The node: one assembly of store, pool, JSON-RPC, the block producer or the Raft cluster,
//! and the operations endpoint (`/metrics`, `/health`, `/ready`, `/dashboard`), started by `keel node` and by
//! the deterministic simulation alike, and stopped in order.
//!
//! ```text
//!            ┌──────────── keel node ────────────────────────────────────────┐
//!  JSON-RPC ─┤ rpc (jsonrpsee) ─► mempool ─► producer thread or leader loop   │
//!  :8545     │      ▲ reads                      │ seal ─► store (or Raft)     │
//!            │      │                            ▼                              │
//!            │      └──── Announcer ◄── store's stream of applied blocks        │
//!  ops :9545 ┤ /metrics /health /ready /cluster /dashboard (axum)              │
//!            └────────────────────────────────────────────────────────────────┘
//! ```
//!
//! [`assemble`] is the one place the node is wired; [`Seams`] is what it is generic over (disks,
//! sockets, transport: [`HostSeams`] for a host, the simulation's own in keel-testkit).
//! Start-up is one path: open the store (which resumes at its last durable block, or writes
//! the genesis), then serve, then seal; a cluster member starts Raft before it serves, which
//! applies again the blocks its store left to the Raft log. There is no other way to start
//! sealing.

mod admin;
pub mod catalog;
mod catch_up;
mod cluster;
pub mod dashboard;
mod disk;
mod error;
mod health;
mod intake;
mod l1;
mod producer;
mod pruner;
pub mod runtime;
mod seams;

pub use admin::{BACKUP_MANIFEST, BackupRequest, MemberRequest, TransferRequest};
pub use cluster::{ClusterConfig, HEALTH_CHECK_INTERVAL_MIN, Member};
pub use error::NodeError;
pub use health::{
    APPLY_LAG_ENTRIES_MAX, Health, L1_HEAD_STALE_BLOCKS, L1_UNREACHABLE_BLOCKS, Unhealthy,
};
pub use keel_cluster::{CAUGHT_UP_ENTRIES_MAX, ClusterSecret, NodeId};
pub use keel_storage::StateHistory;
pub use l1::{DevL1, DevL1Config, L1Settings};

/// A node's derivation, as a test or the simulation reads it.
#[derive(Debug, Clone)]
pub struct L1Derivation {
    /// The store derivation writes (the node's only store on a verifier).
    pub store: Arc<Store>,
    /// Where derivation stands.
    pub status: tokio::sync::watch::Receiver<keel_l1::DerivationStatus>,
}

/// The store meta key naming the rollup a store belongs to (its config's digest).
const ROLLUP_KEY: &str = "rollup";
pub use producer::{Adoption, OriginRule, Sealer};
pub use runtime::OwnRuntime;
pub use seams::{HostSeams, RpcServer, Seams};

use alloy::primitives::{Address, Bytes};
use keel_cluster::TypeConfig;
use keel_mempool::Mempool;
use keel_primitives::{ChainSpec, limits};
use keel_rpc::RpcContext;
use keel_storage::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use openraft::Raft;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Everything a node needs to start. `datadir`, `rpc_addr` and `metrics_addr` are read by the
/// host's seams ([`HostSeams`]); the simulation's seams keep their disks and listeners
/// elsewhere and ignore them.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The chain to follow.
    pub chain: ChainSpec,
    /// Where the store lives (`chain.redb` inside).
    pub datadir: PathBuf,
    /// JSON-RPC address, HTTP and WebSocket.
    pub rpc_addr: SocketAddr,
    /// Operations address (`/metrics`, `/health`, `/ready`); `None` serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// Time between blocks.
    pub block_time_ms: u64,
    /// Gas limit of the blocks this node seals.
    pub gas_limit: u64,
    /// Receives the priority fees.
    pub beneficiary: Address,
    /// Extra data of sealed headers.
    pub extra_data: Bytes,
    /// Cluster membership; `None` runs a single node.
    pub cluster: Option<ClusterConfig>,
    /// The time of day, for block timestamps and head ages (the system clock, or a test's).
    pub clock: Arc<dyn keel_primitives::Clock>,
    /// What the `safe` and `finalized` tags serve.
    pub safe_heads: Arc<keel_primitives::SafeHeads>,
    /// The L1 this node settles on; `None` runs a chain that settles nowhere.
    pub l1: Option<L1Settings>,
    /// Whether this node records metrics. `false` for the embedded dev L1, which shares the
    /// process (and its one metrics recorder) with the L2 node.
    pub record_metrics: bool,
    /// What the node does with its chain.
    pub mode: NodeMode,
    /// A single node seals its first block at once instead of a block time after starting
    /// (the embedded dev L1: an L2 can take an origin with a fresh timestamp right away).
    pub seal_on_start: bool,
    /// How much state history the node keeps and serves (archive by default).
    pub state_history: StateHistory,
}

/// What a node does with its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeMode {
    /// Seals blocks (a single node) or takes part in the Raft cluster that does; with an L1,
    /// it also derives, batches (when it leads) and serves `safe` from derivation.
    #[default]
    Sequencer,
    /// `keel verify`: follows the L1 alone, deriving the chain into its store, and serves it;
    /// no connection to any sequencer.
    Verifier,
}

impl NodeConfig {
    /// Checks the configuration against keel's limits.
    pub fn validate(&self) -> Result<(), NodeError> {
        if !(limits::BLOCK_TIME_MS_MIN..=limits::BLOCK_TIME_MS_MAX).contains(&self.block_time_ms) {
            return Err(NodeError::Config(format!(
                "block time {} ms outside {}..={} ms",
                self.block_time_ms,
                limits::BLOCK_TIME_MS_MIN,
                limits::BLOCK_TIME_MS_MAX
            )));
        }
        if !(limits::BLOCK_GAS_LIMIT_MIN..=limits::BLOCK_GAS_LIMIT_MAX).contains(&self.gas_limit) {
            return Err(NodeError::Config(format!(
                "gas limit {} outside {}..={}",
                self.gas_limit,
                limits::BLOCK_GAS_LIMIT_MIN,
                limits::BLOCK_GAS_LIMIT_MAX
            )));
        }
        if self.extra_data.len() > limits::EXTRA_DATA_BYTES_MAX {
            return Err(NodeError::Config("extra data longer than 32 bytes".into()));
        }
        Ok(())
    }
}

/// The process-wide Prometheus recorder (metrics has one global recorder).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            catalog::describe();
            handle
        })
        .clone()
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Where JSON-RPC listens, if it is served.
    pub rpc_addr: Option<SocketAddr>,
    /// Where the operations endpoint listens.
    pub metrics_addr: Option<SocketAddr>,
    /// The node's health.
    pub health: Arc<Health>,
    /// The node's chain store.
    pub store: Arc<Store>,
    /// The node's pool.
    pub mempool: Arc<Mempool>,
    /// What the node's JSON-RPC answers from (the simulation submits through it).
    pub rpc_context: Arc<RpcContext>,
    /// The head the store opened at: the stream of applied blocks from the next one on holds
    /// everything this start applied.
    pub opened_head: u64,
    /// The node's view of the L1, when it has one.
    pub l1: Option<Arc<keel_l1::L1Tracker>>,
    /// The forced transactions derivation read and the safe chain has not consumed.
    pub forced: Option<Arc<keel_l1::ForcedInbox>>,
    /// Derivation's store and where it stands, when the node has an L1.
    pub derivation: Option<L1Derivation>,
    l1_stop: Option<tokio::sync::watch::Sender<bool>>,
    derive_runtime: Option<runtime::OwnRuntime>,
    rpc: Option<keel_rpc::ServerHandle>,
    stop: Arc<AtomicBool>,
    producer: Option<std::thread::JoinHandle<()>>,
    cluster: Option<cluster::Running>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// This node's Raft, in a cluster.
    pub fn raft(&self) -> Option<&Raft<TypeConfig>> {
        self.cluster.as_ref().map(|cluster| &cluster.raft)
    }

    /// Stops sealing, then serving; waits for the producer to finish its block.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(stop) = self.l1_stop.take() {
            let _ = stop.send(true);
        }
        if let Some(producer) = self.producer.take() {
            let _ = tokio::task::spawn_blocking(move || producer.join()).await;
        }
        if let Some(cluster) = self.cluster.take() {
            let _ = cluster.stop.send(true);
            if let Err(error) = cluster.raft.shutdown().await {
                tracing::warn!(%error, "raft shutdown");
            }
            for task in cluster.tasks {
                task.abort();
            }
            if let Some(runtime) = cluster.runtime {
                runtime.stop().await;
            }
            // The blocks the store deferred to the log reach its disk now: a clean stop
            // leaves nothing to apply again at the next start.
            if let Err(error) = self.store.sync() {
                tracing::warn!(%error, "fsyncing the chain store at shutdown");
            }
        }
        if let Some(rpc) = self.rpc.take() {
            let _ = rpc.stop();
            rpc.stopped().await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(runtime) = self.derive_runtime.take() {
            runtime.stop().await;
        }
    }
}

/// Starts a node on this host: [`assemble`] over [`HostSeams`].
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let seams = HostSeams::new(&config)?;
    assemble(config, seams).await
}

/// Starts a node over `seams`: store, pool, JSON-RPC, the announcer of applied blocks, the
/// producer (single node) or Raft with its leader loop (cluster), the operations endpoint.
/// `keel node` and the deterministic simulation both start their nodes here.
pub async fn assemble<S: Seams>(config: NodeConfig, seams: S) -> Result<RunningNode, NodeError> {
    config.validate()?;
    let metrics = prometheus();
    let store = Arc::new(seams.open_store(&config.chain)?);
    store.set_state_history(config.state_history);
    // A cluster member's chain is applied from its Raft log, fsynced on a quorum before any
    // block commits, its commit index too: the store defers its blocks' fsync, and a crash
    // applies the lost ones again from the log before this node serves (docs/cluster.md,
    // "Applying without an fsync per block").
    let raft_applied = config.cluster.is_some() && config.mode != NodeMode::Verifier;
    if raft_applied {
        store.set_block_durability(keel_storage::BlockDurability::Deferred);
        // The entries applied behind the 16th block (intake: clients' sends) do not wait for
        // its fsync.
        if seams.sync_in_background() {
            store.sync_in_background()?;
        }
    }
    let (head_number, head_hash) = store.snapshot()?.head();
    tracing::info!(
        chain_id = config.chain.chain_id,
        head = head_number,
        %head_hash,
        "store opened"
    );
    metrics::gauge!("keel_head_number").set(head_number as f64);
    // Subscribed before anything can apply a block: the announcer misses none.
    let applied = store.subscribe_from(head_number + 1);
    let mempool = Arc::new(Mempool::new(&config.chain, config.gas_limit));
    let client_version = format!(
        "keel/v{}/{}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let rpc_context = RpcContext::new(
        config.chain.clone(),
        store.clone(),
        mempool.clone(),
        client_version,
    )?
    .with_safe_heads(config.safe_heads.clone())
    .with_beneficiary(config.beneficiary);
    // A cluster member's JSON-RPC serves reads from here on, and takes writes only once Raft
    // runs (chaos found a restarted member taking transactions into its own pool meanwhile).
    let rpc_context = Arc::new(match config.cluster {
        Some(_) => rpc_context.clustered(),
        None => rpc_context,
    });
    // A cluster member serves once Raft has started, which first applies again what a crash
    // took from its store (see above): never a head below one it served before.
    let served_early = match raft_applied {
        false => Some(seams.serve_rpc(rpc_context.clone()).await?),
        true => None,
    };
    // A verifier's head moves when batches land, about once an L1 block: its head may age
    // ten L1 blocks before it counts as stale.
    let head_time_ms = match (&config.mode, &config.l1) {
        (NodeMode::Verifier, Some(settings)) => settings.block_time_ms.max(config.block_time_ms),
        _ => config.block_time_ms,
    };
    let health = Arc::new(Health::with_clock(head_time_ms, config.clock.clone()));
    let block_time = Duration::from_millis(config.block_time_ms);
    let l1 = match config.l1.clone() {
        Some(settings) => {
            if !matches!(
                *config.safe_heads,
                keel_primitives::SafeHeads::Derived { .. }
            ) {
                return Err(NodeError::Config(
                    "a node with an L1 serves safe and finalized from derivation".into(),
                ));
            }
            bind_rollup(&store, &settings.rollup)?;
            let derived = match config.mode {
                NodeMode::Verifier => store.clone(),
                NodeMode::Sequencer => {
                    // Derivation's own store serves no state reads: it writes no history,
                    // and keeps its change sets for unwinds. Nor does it serve blocks: they
                    // reach the disk with the cursor derivation fsyncs after each L1 block, and
                    // a crash before it means deriving that L1 block again (a quarter of the
                    // bytes and fsyncs derivation wrote under load, docs/protocol.md).
                    let derived = seams.open_derived_store(&config.chain)?;
                    derived.set_state_history(StateHistory::Window(0));
                    derived.set_block_durability(keel_storage::BlockDurability::Deferred);
                    Arc::new(derived)
                }
            };
            let rollup = settings.rollup.clone();
            let confirmation_depth = settings.confirmation_depth;
            let batcher = settings.batcher.clone().map(|signer| {
                let config = keel_l1::BatcherConfig {
                    rollup: settings.rollup.clone(),
                    signer,
                    poll: l1::poll_interval(settings.block_time_ms),
                    compression: keel_l1::Compression::Zstd,
                    data: settings.data_availability,
                };
                (config, settings.client.clone())
            });
            let parts = l1::start(
                settings,
                config.chain.clone(),
                store.clone(),
                derived,
                config.safe_heads.clone(),
                health.clone(),
                seams.derive_runtime()?,
            );
            let origin = producer::OriginRule {
                tracker: parts.tracker.clone(),
                rollup,
                confirmation_depth,
                forced: parts.forced.clone(),
                safe: config.safe_heads.clone(),
                derived: parts.derived.clone(),
            };
            Some((parts, origin, batcher))
        }
        None if config.mode == NodeMode::Verifier => {
            return Err(NodeError::Config(
                "a verifier needs an L1 to derive from".into(),
            ));
        }
        None => None,
    };
    let sealer = producer::Sealer {
        chain: config.chain.clone(),
        mempool: mempool.clone(),
        gas_limit: config.gas_limit,
        beneficiary: config.beneficiary,
        extra_data: config.extra_data.clone(),
        clock: config.clock.clone(),
        origin: l1.as_ref().map(|(_, origin, _)| origin.clone()),
    };
    let announcer = producer::Announcer {
        store: store.clone(),
        mempool: mempool.clone(),
        rpc: rpc_context.clone(),
        health: health.clone(),
        block_time,
        clock: config.clock.clone(),
        catch_up: Arc::new(parking_lot::Mutex::new(catch_up::CatchUp::new(
            config.block_time_ms,
        ))),
    };
    metrics::gauge!("keel_block_time_seconds").set(block_time.as_secs_f64());
    let mut tasks = vec![
        tokio::spawn(announcer.run(applied)),
        tokio::spawn(disk::sample(config.datadir.clone())),
    ];
    if let Some(pruner) = pruner::Pruner::new(store.clone(), config.safe_heads.clone()) {
        tasks.push(tokio::spawn(pruner.run()));
    }
    let (l1, forced, l1_stop, batcher, derivation, derive_runtime) = match l1 {
        Some((parts, _, batcher)) => {
            tasks.extend(parts.tasks);
            let batcher = batcher.map(|(config, client)| {
                (config, client, parts.derived.clone(), parts.status.clone())
            });
            let derivation = L1Derivation {
                store: parts.derived.clone(),
                status: parts.status.clone(),
            };
            (
                Some(parts.tracker),
                Some(parts.forced),
                Some(parts.stop),
                batcher,
                Some(derivation),
                parts.runtime,
            )
        }
        None => (None, None, None, None, None, None),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (producer, cluster, status) = match &config.cluster {
        _ if config.mode == NodeMode::Verifier => (None, None, None),
        None => {
            let producer = producer::Producer {
                sealer,
                store: store.clone(),
                health: health.clone(),
                block_time,
                seal_on_start: config.seal_on_start,
            };
            let producer_stop = stop.clone();
            let record_metrics = config.record_metrics;
            let producer = std::thread::Builder::new()
                .name("keel-producer".into())
                .spawn(move || {
                    if !record_metrics {
                        l1::record_no_metrics();
                    }
                    producer.run(producer_stop)
                })
                .map_err(NodeError::io("starting the block producer"))?;
            (Some(producer), None, None)
        }
        Some(cluster_config) => {
            let running = cluster::start(
                &seams,
                cluster_config,
                &config.chain,
                store.clone(),
                sealer,
                rpc_context.clone(),
                health.clone(),
                block_time,
            )
            .await?;
            let (raft, node_id) = (running.raft.clone(), cluster_config.node_id);
            let status: health::Status = Arc::new(move || cluster::status(&raft, node_id));
            (None, Some(running), Some(status))
        }
    };
    let rpc = match served_early {
        Some(rpc) => rpc,
        None => seams.serve_rpc(rpc_context.clone()).await?,
    };

    // The batcher posts while this node sequences: always on a single node, while leading in
    // a cluster (fenced by the term).
    if let Some((batcher_config, client, derived, derivation)) = batcher
        && config.mode == NodeMode::Sequencer
    {
        let fence: keel_l1::Fence = match &cluster {
            Some(running) => {
                let raft = running.raft.clone();
                let me = config.cluster.as_ref().map(|cluster| cluster.node_id);
                Arc::new(move || {
                    let metrics = raft.metrics().borrow().clone();
                    (metrics.state == openraft::ServerState::Leader && metrics.current_leader == me)
                        .then_some(metrics.current_term)
                })
            }
            None => Arc::new(|| Some(0)),
        };
        tasks.push(tokio::spawn(l1::supervise_batcher(
            batcher_config,
            client,
            store.clone(),
            derived,
            derivation,
            fence,
        )));
    }

    let dashboard = dashboard::router(node_dashboard(
        config.cluster.as_ref(),
        health.clone(),
        metrics.clone(),
        status.clone(),
    ));
    let router = health::router(health.clone(), metrics, status).merge(dashboard);
    let metrics_addr = match seams.serve_operations(router).await? {
        Some((bound, task)) => {
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };

    health.set_ready(true);
    let (rpc_addr, rpc) = match rpc {
        Some((address, handle)) => (Some(address), Some(handle)),
        None => (None, None),
    };
    tracing::info!(rpc_addr = ?rpc_addr, metrics_addr = ?metrics_addr, block_time_ms = config.block_time_ms, "keel node running");
    Ok(RunningNode {
        rpc_addr,
        metrics_addr,
        health,
        store,
        mempool,
        rpc_context,
        opened_head: head_number,
        l1,
        forced,
        derivation,
        l1_stop,
        derive_runtime,
        rpc,
        stop,
        producer,
        cluster,
        tasks,
    })
}

/// The dashboard a node serves at `/dashboard`: itself read in process, its peers through
/// their `ops_addr`, actions through their `admin_addr` behind this node's admin token.
fn node_dashboard(
    cluster: Option<&ClusterConfig>,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    status: Option<health::Status>,
) -> dashboard::DashboardConfig {
    let local: dashboard::LocalRead = Arc::new(move || dashboard::NodeRead {
        cluster: status
            .as_ref()
            .map_or(serde_json::Value::Null, |status| status()),
        unhealthy: health.check().err().map(|reason| reason.to_string()),
        metrics: metrics.render(),
    });
    let http = |address: Option<SocketAddr>| address.map(|address| format!("http://{address}"));
    let (title, members, token) = match cluster {
        None => (
            "keel node".to_string(),
            vec![dashboard::Member {
                id: 1,
                source: Some(dashboard::Source::Local(local)),
                admin: None,
            }],
            None,
        ),
        Some(cluster) => (
            format!("keel node {}", cluster.node_id),
            cluster
                .members
                .iter()
                .map(|(id, member)| dashboard::Member {
                    id: *id,
                    source: if *id == cluster.node_id {
                        Some(dashboard::Source::Local(local.clone()))
                    } else {
                        http(member.ops_addr).map(dashboard::Source::Http)
                    },
                    admin: http(member.admin_addr).or_else(|| {
                        (*id == cluster.node_id)
                            .then(|| cluster.admin.as_ref().map(|(address, _)| *address))
                            .flatten()
                            .map(|address| format!("http://{address}"))
                    }),
                })
                .collect(),
            cluster.admin.as_ref().map(|(_, secret)| secret.clone()),
        ),
    };
    dashboard::DashboardConfig {
        title,
        members,
        token,
        processes: None,
        observe: dashboard::Observe::WhileWatched,
        prefix: "/dashboard",
    }
}

/// Binds the store to `rollup` on its first start with an L1, and refuses a store that belongs
/// to another rollup, or that holds blocks sealed with no L1 (they have no origin to derive
/// them from).
fn bind_rollup(store: &Store, rollup: &keel_primitives::RollupConfig) -> Result<(), NodeError> {
    let digest = rollup.digest();
    let snapshot = store.snapshot()?;
    match snapshot.meta(ROLLUP_KEY)? {
        Some(stored) if stored == digest.as_slice() => Ok(()),
        Some(stored) => Err(NodeError::Config(format!(
            "this data directory belongs to another rollup config (digest {}, this one {digest}): \
             use the config it was started with, or a fresh data directory",
            alloy::primitives::hex::encode_prefixed(stored)
        ))),
        None if snapshot.head().0 > 0 => Err(NodeError::Config(format!(
            "this data directory holds {} blocks sealed without an L1, which no L1 can derive: \
             start it without an L1 (--no-l1), or use a fresh data directory",
            snapshot.head().0
        ))),
        None => {
            drop(snapshot);
            store.put_meta(&[(ROLLUP_KEY, digest.to_vec())])?;
            Ok(())
        }
    }
}
