//! The node: opens the store, starts the JSON-RPC server, the block producer and the
//! operations endpoint (`/metrics`, `/health`, `/ready`), and stops them in order.
//!
//! ```text
//!            ┌──────────── keel node ─────────────────────────────────┐
//!  JSON-RPC ─┤ rpc (jsonrpsee) ─► mempool ─► producer thread ─► store │
//!  :8545     │      ▲ reads                     │ on_committed         │
//!            │      └───────── snapshots ◄──────┘                      │
//!  ops :9545 ┤ /metrics /health /ready (axum)                          │
//!            └────────────────────────────────────────────────────────┘
//! ```
//!
//! Start-up is one path: open the store (which resumes at its last durable block, or writes
//! the genesis), then serve, then seal. There is no other way to start sealing.

mod admin;
mod cluster;
mod error;
mod health;
mod producer;

pub use cluster::{ClusterConfig, HEALTH_CHECK_INTERVAL_MIN, Member};
pub use error::NodeError;
pub use health::{APPLY_LAG_ENTRIES_MAX, Health};
pub use keel_cluster::{CAUGHT_UP_ENTRIES_MAX, ClusterSecret, NodeId};
pub use producer::Sealer;

use alloy::primitives::{Address, Bytes};
use keel_mempool::Mempool;
use keel_primitives::{ChainSpec, limits};
use keel_rpc::RpcContext;
use keel_storage::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Everything a node needs to start.
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
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Where JSON-RPC listens.
    pub rpc_addr: SocketAddr,
    /// Where the operations endpoint listens.
    pub metrics_addr: Option<SocketAddr>,
    /// The node's health.
    pub health: Arc<Health>,
    rpc: keel_rpc::ServerHandle,
    stop: Arc<AtomicBool>,
    producer: Option<std::thread::JoinHandle<()>>,
    cluster: Option<cluster::Running>,
    ops: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Stops sealing, then serving; waits for the producer to finish its block.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
        }
        let _ = self.rpc.stop();
        self.rpc.clone().stopped().await;
        if let Some(ops) = self.ops.take() {
            ops.abort();
        }
    }
}

/// Starts a node: store, JSON-RPC, producer, operations endpoint.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    config.validate()?;
    let metrics = prometheus();
    std::fs::create_dir_all(&config.datadir).map_err(NodeError::io(format!(
        "creating {}",
        config.datadir.display()
    )))?;
    let store = Arc::new(Store::open(
        &config.datadir.join("chain.redb"),
        &config.chain,
    )?);
    let (head_number, head_hash) = store.snapshot()?.head();
    tracing::info!(
        chain_id = config.chain.chain_id,
        head = head_number,
        %head_hash,
        datadir = %config.datadir.display(),
        "store opened"
    );
    metrics::gauge!("keel_head_number").set(head_number as f64);
    let mempool = Arc::new(Mempool::new(&config.chain, config.gas_limit));
    let client_version = format!(
        "keel/v{}/{}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let rpc_context = Arc::new(RpcContext::new(
        config.chain.clone(),
        store.clone(),
        mempool.clone(),
        client_version,
    )?);
    let (rpc_addr, rpc) = keel_rpc::start(rpc_context.clone(), config.rpc_addr)
        .await
        .map_err(NodeError::io(format!(
            "binding JSON-RPC to {}",
            config.rpc_addr
        )))?;
    let health = Arc::new(Health::with_clock(
        config.block_time_ms,
        config.clock.clone(),
    ));

    let sealer = producer::Sealer {
        chain: config.chain.clone(),
        mempool,
        gas_limit: config.gas_limit,
        beneficiary: config.beneficiary,
        extra_data: config.extra_data.clone(),
        clock: config.clock.clone(),
    };
    let announcer = producer::Announcer {
        store: store.clone(),
        mempool: sealer.mempool.clone(),
        rpc: rpc_context,
        health: health.clone(),
        block_time: Duration::from_millis(config.block_time_ms),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (producer, cluster, status) = match &config.cluster {
        None => {
            let producer = producer::Producer { sealer, announcer };
            let producer_stop = stop.clone();
            let producer = std::thread::Builder::new()
                .name("keel-producer".into())
                .spawn(move || producer.run(producer_stop))
                .map_err(NodeError::io("starting the block producer"))?;
            (Some(producer), None, None)
        }
        Some(cluster_config) => {
            let running = cluster::start(
                cluster_config,
                &config.datadir,
                &config.chain,
                store,
                sealer,
                announcer,
                health.clone(),
            )
            .await?;
            let (raft, node_id) = (running.raft.clone(), cluster_config.node_id);
            let status: health::Status = Arc::new(move || cluster::status(&raft, node_id));
            (None, Some(running), Some(status))
        }
    };

    let (metrics_addr, ops) = match config.metrics_addr {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(NodeError::io(format!(
                    "binding operations endpoint to {address}"
                )))?;
            let bound = listener
                .local_addr()
                .map_err(NodeError::io("operations address"))?;
            let router = health::router(health.clone(), metrics, status);
            let task = tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "operations endpoint failed");
                }
            });
            (Some(bound), Some(task))
        }
        None => (None, None),
    };

    health.set_ready(true);
    tracing::info!(%rpc_addr, metrics_addr = ?metrics_addr, block_time_ms = config.block_time_ms, "keel node running");
    Ok(RunningNode {
        rpc_addr,
        metrics_addr,
        health,
        rpc,
        stop,
        producer,
        cluster,
        ops,
    })
}
