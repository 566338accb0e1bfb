//! keel's Ethereum JSON-RPC: the `eth_*`, `net_*` and `web3_*` methods that wallets, cast,
//! viem, ethers, web3.py and alloy use, over HTTP and WebSocket on one port.
//!
//! ```text
//!  client ─HTTP/WS─► jsonrpsee server (bounded: body size, batch, connections, subscriptions)
//!                      │ reads: a storage Snapshot of the head (one consistent view per call)
//!                      │ writes: eth_sendRawTransaction ─► mempool
//!                      │ eth_sendRawTransactionSync waits on InclusionWaiters
//!                      └ eth_subscribe newHeads/logs ◄─ the node's committed-block broadcast
//! ```
//!
//! Errors use geth's codes and words (see [`error`]). The node serves only blocks it has
//! made durable; `safe` and `finalized` name what the node's [`SafeHeads`] say (`latest` on an
//! L2 node until derivation runs, fixed depths behind on the embedded dev L1), and `pending`
//! reads the head plus the pool's nonces.
//! State reads at an older block are served from the store's state history; below its window
//! they are refused with geth's "missing trie node" class of error.

mod batch;
mod convert;
mod debug;
pub mod error;
mod eth;
mod filters;
mod forward;
mod more;
mod waiters;

pub use eth::module;
pub use forward::{ForwardError, read_forwarded_answers};
/// The server handle type, re-exported for the node.
pub use jsonrpsee::server::ServerHandle;
pub use jsonrpsee::types::ErrorObjectOwned;
pub use waiters::{Inclusion, InclusionWaiters, Waiter};

use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig};
use keel_mempool::Mempool;
use keel_primitives::{BlockWithReceipts, ChainSpec, SafeHeads, limits};
use keel_storage::Store;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the RPC methods read and write.
#[derive(Debug)]
pub struct RpcContext {
    /// The chain served.
    pub chain: ChainSpec,
    /// The node's store.
    pub store: Arc<Store>,
    /// The node's pool.
    pub mempool: Arc<Mempool>,
    /// Waiters of `eth_sendRawTransactionSync`.
    pub waiters: Arc<InclusionWaiters>,
    /// What `web3_clientVersion` answers.
    pub client_version: String,
    /// What the `safe` and `finalized` tags name.
    pub safe_heads: Arc<SafeHeads>,
    /// Where this node's sealed blocks pay priority fees (`eth_coinbase`).
    pub beneficiary: alloy::primitives::Address,
    /// Base fee of the next block, kept current by [`RpcContext::on_applied`] so that
    /// admitting a transaction decodes no header.
    next_base_fee: std::sync::atomic::AtomicU64,
    /// Where writes go in a cluster; unset on a single node (every write is local).
    route: std::sync::OnceLock<Arc<dyn WriteRoute>>,
    /// Where a leader's admitted transactions go; unset on a single node (into the pool).
    intake: std::sync::OnceLock<Arc<dyn Intake>>,
    /// A cluster member: until its route and intake are set (Raft starting), it takes no
    /// write, instead of taking one into its own pool the way a single node does (which no
    /// other node would ever hold: accepted, then lost).
    clustered: bool,
    /// Client for forwarding writes to the leader.
    forwarder: reqwest::Client,
    /// Batches forwarded `eth_sendRawTransaction` calls.
    batched_forwarder: forward::Forwarder,
    /// The polling filters installed by clients.
    filters: filters::Filters,
}

/// The leader's JSON-RPC answer (`result` or `error`) as this node's.
pub(crate) fn forwarded_answer(
    answer: serde_json::Value,
) -> Result<serde_json::Value, jsonrpsee::types::ErrorObjectOwned> {
    if let Some(failure) = answer.get("error") {
        return Err(jsonrpsee::types::ErrorObjectOwned::owned(
            failure["code"]
                .as_i64()
                .unwrap_or(error::SERVER_ERROR as i64) as i32,
            failure["message"]
                .as_str()
                .unwrap_or("error from the leader")
                .to_string(),
            failure.get("data").cloned(),
        ));
    }
    Ok(answer["result"].clone())
}

/// Where a transaction submitted to this node should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node sequences: admit it here.
    Local,
    /// Another node leads: forward the call to its JSON-RPC URL.
    Forward(String),
    /// No leader is known (an election is under way).
    NoLeader,
}

/// Where a transaction this node admitted as the leader goes before its hash is answered.
/// Unset on a single node, which adds it to its pool; a cluster replicates it to every
/// node's pool first (keel-node's intake, through the Raft log).
///
/// ### Correctness
/// - `take` answers `Ok(hash)` only once the transaction is in this node's pool and durable
///   on a quorum: a client holding the hash holds a transaction that outlives this node.
/// - It answers an error the client can act on otherwise (geth's words for a pool refusal,
///   "no leader … retry" when leadership moved), never drops a transaction silently.
pub trait Intake: Send + Sync + std::fmt::Debug {
    /// Replicates `transaction` (decoded, its sender `sender` recovered, checked against the
    /// pool) and answers with its hash once it is in the pool.
    fn take(
        &self,
        transaction: alloy::consensus::TxEnvelope,
        sender: alloy::primitives::Address,
    ) -> futures::future::BoxFuture<'static, Result<alloy::primitives::B256, ErrorObjectOwned>>;
}

/// Decides where writes go; the cluster implements it from Raft's view of the leader.
pub trait WriteRoute: Send + Sync + std::fmt::Debug {
    /// The route for a write arriving now.
    fn route(&self) -> Route;
}

impl RpcContext {
    /// A context serving `store`, whose head must already be durable.
    pub fn new(
        chain: ChainSpec,
        store: Arc<Store>,
        mempool: Arc<Mempool>,
        client_version: String,
    ) -> Result<Self, keel_storage::StorageError> {
        let snapshot = store.snapshot()?;
        let head = snapshot
            .header(snapshot.head().0)?
            .ok_or_else(|| keel_storage::StorageError::Corrupt("head header missing".into()))?;
        let next_base_fee = chain.next_base_fee(&head).into();
        Ok(Self {
            chain,
            store,
            mempool,
            waiters: Default::default(),
            client_version,
            safe_heads: Arc::new(SafeHeads::Latest),
            beneficiary: Default::default(),
            next_base_fee,
            route: std::sync::OnceLock::new(),
            intake: std::sync::OnceLock::new(),
            clustered: false,
            forwarder: reqwest::Client::new(),
            batched_forwarder: forward::Forwarder::new(reqwest::Client::new()),
            filters: Default::default(),
        })
    }

    /// Serves `safe` and `finalized` from `heads` instead of `latest`.
    pub fn with_safe_heads(mut self, heads: Arc<SafeHeads>) -> Self {
        self.safe_heads = heads;
        self
    }

    /// A cluster member's context: writes are refused ("no leader") until
    /// [`RpcContext::set_route`] and [`RpcContext::set_intake`] are called.
    pub fn clustered(mut self) -> Self {
        self.clustered = true;
        self
    }

    /// Whether a write may be admitted into this node's pool directly: a single node's, never a
    /// cluster member's (whose writes go through the intake).
    pub(crate) fn admits_directly(&self) -> bool {
        !self.clustered
    }

    /// Answers `eth_coinbase` with `beneficiary`.
    pub fn with_beneficiary(mut self, beneficiary: alloy::primitives::Address) -> Self {
        self.beneficiary = beneficiary;
        self
    }

    /// Routes writes through `route` from now on (cluster mode; set once).
    pub fn set_route(&self, route: Arc<dyn WriteRoute>) {
        let _ = self.route.set(route);
    }

    /// Replicates the transactions this node admits as the leader through `intake` from now
    /// on (cluster mode; set once).
    pub fn set_intake(&self, intake: Arc<dyn Intake>) {
        let _ = self.intake.set(intake);
    }

    /// Admits `raw` here, as `eth_sendRawTransaction` does on the node that sequences: into
    /// the pool on a single node, through the intake on a cluster's leader (answered once a
    /// quorum holds it; a node that no longer leads refuses it). Never forwarded: the
    /// deterministic simulation's workload sends this way, with no HTTP in between.
    pub async fn submit_here(
        &self,
        raw: &[u8],
    ) -> Result<alloy::primitives::B256, jsonrpsee::types::ErrorObjectOwned> {
        eth::submit(self, raw).await
    }

    /// Where a write arriving now goes.
    pub fn route(&self) -> Route {
        match self.route.get() {
            Some(route) => route.route(),
            None if self.clustered => Route::NoLeader,
            None => Route::Local,
        }
    }

    /// Forwards a JSON-RPC call to `url` and returns its answer as this node's: reads of the
    /// leader's pool, answered at once, so within `FORWARD_TIMEOUT_MS_MAX` as a batch is.
    pub(crate) async fn forward(
        &self,
        url: &str,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, jsonrpsee::types::ErrorObjectOwned> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let timeout = std::time::Duration::from_millis(limits::FORWARD_TIMEOUT_MS_MAX);
        let answer = forward::post(&self.forwarder, url, &body, timeout)
            .await
            .and_then(|body| Ok(serde_json::from_slice(&body)?))
            .map_err(|failure: forward::ForwardError| {
                error::server(format!("forwarding to the leader failed: {failure}"))
            })?;
        forwarded_answer(answer)
    }

    /// Forwards an `eth_sendRawTransaction` (its params) to the leader at `url`, batched with
    /// others on their way there.
    pub async fn forward_transaction(
        &self,
        url: String,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, jsonrpsee::types::ErrorObjectOwned> {
        self.batched_forwarder
            .send_raw_transaction(url, params)
            .await
    }

    /// Base fee of the block after the head.
    pub fn next_base_fee(&self) -> u64 {
        self.next_base_fee
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes in a block from the node's stream of applied blocks: the next base fee, and the
    /// `eth_sendRawTransactionSync` waiters of its transactions. (Subscriptions read the
    /// stream themselves.)
    pub fn on_applied(&self, applied: &Arc<BlockWithReceipts>) {
        let next_base_fee = self.chain.next_base_fee(&applied.block.header);
        self.next_base_fee
            .store(next_base_fee, std::sync::atomic::Ordering::Relaxed);
        self.waiters.notify(applied);
    }
}

/// Starts the JSON-RPC server (HTTP and WebSocket) on `address`.
pub async fn start(
    context: Arc<RpcContext>,
    address: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let config = ServerConfig::builder()
        .max_request_body_size(limits::RPC_REQUEST_BYTES_MAX)
        .max_response_body_size(limits::RPC_RESPONSE_BYTES_MAX)
        .max_connections(limits::RPC_CONNECTIONS_MAX)
        .max_subscriptions_per_connection(limits::RPC_SUBSCRIPTIONS_PER_CONNECTION_MAX)
        .set_batch_request_config(BatchRequestConfig::Limit(limits::RPC_BATCH_CALLS_MAX))
        .build();
    let middleware = jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new()
        .layer_fn(|service| batch::ConcurrentBatch { service });
    let server = Server::builder()
        .set_config(config)
        .set_rpc_middleware(middleware)
        .build(address)
        .await?;
    let bound = server.local_addr()?;
    let handle = server.start(module(context));
    Ok((bound, handle))
}
