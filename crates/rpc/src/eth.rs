//! The methods, registered on one jsonrpsee module.

use crate::error::{self, internal, invalid_params, server, storage};
use crate::{Route, RpcContext, convert};
use alloy::consensus::{Header as ConsensusHeader, Transaction as _};
use alloy::primitives::{Address, B256, Bytes, U64, U256, keccak256};
use alloy::rpc::types::simulate::{SimulatePayload, SimulatedBlock};
use alloy::rpc::types::state::StateOverride;
use alloy::rpc::types::{
    BlockId, BlockNumberOrTag, BlockOverrides, FeeHistory, Filter, FilterBlockOption, Log,
    TransactionReceipt, TransactionRequest,
};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use keel_execution::{BlockEnvironment, CallError};
use keel_mempool::decode_and_recover;
use keel_primitives::BlockWithReceipts;
use keel_primitives::limits;
use keel_storage::Snapshot;
use std::sync::Arc;
use std::time::{Duration, Instant};

type RpcResult<T> = Result<T, ErrorObjectOwned>;

use keel_primitives::chain::SUGGESTED_TIP_WEI;

/// Records the latency of one call under its method name.
fn timed<T>(method: &'static str, call: impl FnOnce() -> RpcResult<T>) -> RpcResult<T> {
    let start = Instant::now();
    let result = call();
    metrics::histogram!("keel_rpc_request_seconds", "method" => method)
        .record(start.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("keel_rpc_errors_total", "method" => method).increment(1);
    }
    result
}

impl RpcContext {
    fn snapshot(&self) -> RpcResult<Snapshot> {
        self.store.snapshot().map_err(storage)
    }

    /// The number a tag or number names, if the chain has that block.
    pub(crate) fn resolve(&self, snapshot: &Snapshot, tag: BlockNumberOrTag) -> Option<u64> {
        let head = snapshot.head().0;
        match tag {
            BlockNumberOrTag::Earliest => Some(0),
            BlockNumberOrTag::Number(number) => (number <= head).then_some(number),
            BlockNumberOrTag::Latest | BlockNumberOrTag::Pending => Some(head),
            BlockNumberOrTag::Safe => Some(self.safe_heads.safe(head)),
            BlockNumberOrTag::Finalized => Some(self.safe_heads.finalized(head)),
        }
    }

    fn resolve_id(&self, snapshot: &Snapshot, id: BlockId) -> RpcResult<Option<u64>> {
        match id {
            BlockId::Number(tag) => Ok(self.resolve(snapshot, tag)),
            BlockId::Hash(hash) => snapshot.block_number(&hash.block_hash).map_err(storage),
        }
    }

    /// A view of the state `id` names (the head's when absent): geth's "header not found" for
    /// a block the chain does not have, and its "missing trie node" for one older than this
    /// node's state history (`--state-history-blocks`, or a node caught up by snapshot).
    pub(crate) fn state_view(&self, id: Option<BlockId>) -> RpcResult<Snapshot> {
        let snapshot = self.snapshot()?;
        let Some(id) = id else { return Ok(snapshot) };
        let Some(number) = self.resolve_id(&snapshot, id)? else {
            return Err(server("header not found"));
        };
        let root = snapshot
            .header(number)
            .map_err(storage)?
            .map(|header| header.state_root)
            .unwrap_or_default();
        snapshot.at(number).map_err(|error| match error {
            keel_storage::StorageError::StatePruned { floor, .. } => server(format!(
                "missing trie node {root} (path ) state {root} is not available: this node \
                 keeps the state from block {floor} on, not of block {number}"
            )),
            other => storage(other),
        })
    }

    /// The header of the block whose state `snapshot` reads (the head, or an older block).
    fn state_header(&self, snapshot: &Snapshot) -> RpcResult<ConsensusHeader> {
        let (number, _) = snapshot.state_block();
        snapshot
            .header(number)
            .map_err(storage)?
            .ok_or_else(|| internal("head header missing"))
    }

    pub(crate) fn committed(
        &self,
        snapshot: &Snapshot,
        number: u64,
    ) -> RpcResult<Option<Arc<BlockWithReceipts>>> {
        if let Some(found) = self.store.recent_block(number) {
            return Ok(Some(found));
        }
        Ok(snapshot
            .block_with_receipts(number)
            .map_err(storage)?
            .map(Arc::new))
    }

    fn receipt(&self, snapshot: &Snapshot, hash: &B256) -> RpcResult<Option<TransactionReceipt>> {
        let Some(location) = snapshot.tx_location(hash).map_err(storage)? else {
            return Ok(None);
        };
        let Some(committed) = self.committed(snapshot, location.block_number)? else {
            return Ok(None);
        };
        Ok(receipt_at(&committed, location.index as usize))
    }

    /// The block a method's first parameter names: a hash when `by_hash`, else a number or tag.
    fn block_param(
        &self,
        params: &mut jsonrpsee::types::params::ParamsSequence<'_>,
        by_hash: bool,
    ) -> RpcResult<Option<Arc<BlockWithReceipts>>> {
        let snapshot = self.snapshot()?;
        let number = if by_hash {
            snapshot
                .block_number(&params.next::<B256>()?)
                .map_err(storage)?
        } else {
            self.resolve(&snapshot, params.next::<BlockNumberOrTag>()?)
        };
        match number {
            Some(number) => self.committed(&snapshot, number),
            None => Ok(None),
        }
    }

    pub(crate) fn call_environment(&self, snapshot: &Snapshot) -> RpcResult<BlockEnvironment> {
        Ok(BlockEnvironment::from_header(&self.state_header(snapshot)?))
    }

    /// The environment a call runs in: the block's, under geth's block overrides if given.
    pub(crate) fn overridden_environment(
        &self,
        snapshot: &Snapshot,
        overrides: Option<&BlockOverrides>,
    ) -> RpcResult<BlockEnvironment> {
        let mut env = self.call_environment(snapshot)?;
        if let Some(overrides) = overrides {
            keel_execution::apply_block_overrides(&mut env, overrides).map_err(server)?;
        }
        Ok(env)
    }
}

/// The receipt of the transaction at `index` of a committed block.
fn receipt_at(committed: &BlockWithReceipts, index: usize) -> Option<TransactionReceipt> {
    convert::receipt(&committed.block, &committed.receipts, index)
}

/// Parses a storage slot as geth does: a hex string of up to 32 bytes.
fn parse_slot(raw: &str) -> RpcResult<B256> {
    let digits = raw.strip_prefix("0x").unwrap_or(raw);
    if digits.is_empty() || digits.len() > 64 {
        return Err(invalid_params(format!(
            "invalid argument 1: hex string of {} digits",
            digits.len()
        )));
    }
    U256::from_str_radix(digits, 16)
        .map(B256::from)
        .map_err(|error| invalid_params(format!("invalid argument 1: {error}")))
}

/// Parses a quantity sent as a hex string or a JSON number.
fn parse_quantity(value: &serde_json::Value, position: usize) -> RpcResult<u64> {
    match value {
        serde_json::Value::Number(number) => number.as_u64(),
        serde_json::Value::String(text) => match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        },
        _ => None,
    }
    .ok_or_else(|| invalid_params(format!("invalid argument {position}: not a quantity")))
}

/// Every method keel serves, on `context`.
pub fn module(context: Arc<RpcContext>) -> RpcModule<RpcContext> {
    let mut module = RpcModule::from_arc(context);
    register(&mut module).expect("method names are unique");
    module
}

fn register(
    module: &mut RpcModule<RpcContext>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_chainId", |_, context, _| {
        timed("eth_chainId", || Ok(U64::from(context.chain.chain_id)))
    })?;
    module.register_method("net_version", |_, context, _| {
        timed("net_version", || Ok(context.chain.chain_id.to_string()))
    })?;
    module.register_method("net_listening", |_, _, _| RpcResult::Ok(true))?;
    module.register_method("net_peerCount", |_, _, _| RpcResult::Ok(U64::ZERO))?;
    module.register_method("web3_clientVersion", |_, context, _| {
        RpcResult::Ok(context.client_version.clone())
    })?;
    module.register_method("web3_sha3", |params, _, _| {
        let data: Bytes = params.one()?;
        RpcResult::Ok(keccak256(&data))
    })?;
    module.register_method("eth_syncing", |_, _, _| RpcResult::Ok(false))?;
    module.register_method("eth_accounts", |_, _, _| {
        RpcResult::Ok(Vec::<Address>::new())
    })?;
    module.register_method("eth_blockNumber", |_, context, _| {
        timed("eth_blockNumber", || {
            Ok(U64::from(context.snapshot()?.head().0))
        })
    })?;

    module.register_method("eth_getBalance", |params, context, _| {
        timed("eth_getBalance", || {
            let mut params = params.sequence();
            let address: Address = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let snapshot = context.state_view(block)?;
            let account = snapshot.account(&address).map_err(storage)?;
            Ok(account.map(|account| account.balance).unwrap_or_default())
        })
    })?;
    module.register_async_method("eth_getTransactionCount", |params, context, _| async move {
        let start = Instant::now();
        let result = transaction_count(params, &context).await;
        metrics::histogram!("keel_rpc_request_seconds", "method" => "eth_getTransactionCount")
            .record(start.elapsed().as_secs_f64());
        result
    })?;
    module.register_method("eth_getCode", |params, context, _| {
        timed("eth_getCode", || {
            let mut params = params.sequence();
            let address: Address = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let snapshot = context.state_view(block)?;
            let Some(account) = snapshot.account(&address).map_err(storage)? else {
                return Ok(Bytes::new());
            };
            Ok(snapshot
                .code(&account.code_hash)
                .map_err(storage)?
                .unwrap_or_default())
        })
    })?;
    module.register_method("eth_getStorageAt", |params, context, _| {
        timed("eth_getStorageAt", || {
            let mut params = params.sequence();
            let address: Address = params.next()?;
            let slot: String = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let slot = parse_slot(&slot)?;
            let snapshot = context.state_view(block)?;
            let value = snapshot.storage(&address, &slot).map_err(storage)?;
            Ok(B256::from(value))
        })
    })?;

    module.register_blocking_method("eth_call", |params, context, _| {
        timed("eth_call", || {
            let mut params = params.sequence();
            let request: TransactionRequest = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let overrides: StateOverride = params.optional_next()?.unwrap_or_default();
            let block_overrides: Option<BlockOverrides> = params.optional_next()?;
            let snapshot = context.state_view(block)?;
            let env = context.overridden_environment(&snapshot, block_overrides.as_ref())?;
            let state =
                keel_execution::CallState::new(&snapshot, &overrides, block_overrides.as_ref());
            let result =
                keel_execution::call(&context.chain, state, &env, &request).map_err(error::call)?;
            let output = result.output().cloned().unwrap_or_default();
            match keel_execution::outcome(result, request.gas.unwrap_or(limits::CALL_GAS_MAX)) {
                Ok(_) => Ok(output),
                Err(error) => Err(error::call(error)),
            }
        })
    })?;
    module.register_blocking_method("eth_estimateGas", |params, context, _| {
        timed("eth_estimateGas", || {
            let mut params = params.sequence();
            let request: TransactionRequest = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let overrides: StateOverride = params.optional_next()?.unwrap_or_default();
            let block_overrides: Option<BlockOverrides> = params.optional_next()?;
            let snapshot = context.state_view(block)?;
            let mut env = context.call_environment(&snapshot)?;
            // Estimate against the next block's base fee, as the transaction will pay it.
            let header = context.state_header(&snapshot)?;
            env.base_fee = context.chain.next_base_fee(&header);
            if let Some(block_overrides) = &block_overrides {
                keel_execution::apply_block_overrides(&mut env, block_overrides).map_err(server)?;
            }
            let state =
                keel_execution::CallState::new(&snapshot, &overrides, block_overrides.as_ref());
            keel_execution::estimate_gas(&context.chain, state, &env, &request)
                .map(U64::from)
                .map_err(|error| match error {
                    CallError::Invalid(keel_execution::TxError::State(message)) => {
                        internal(message)
                    }
                    other => error::call(other),
                })
        })
    })?;
    module.register_blocking_method("eth_simulateV1", |params, context, _| {
        timed("eth_simulateV1", || {
            let mut params = params.sequence();
            let payload: SimulatePayload = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let snapshot = context.state_view(block)?;
            let base = context.state_header(&snapshot)?;
            // Each simulated block's state root walks the base's state, which an older view
            // serves only so far below the head (as eth_getProof).
            if snapshot.head().0 - base.number > limits::STATE_WALK_HISTORY_BLOCKS_MAX {
                return Err(server(keel_storage::StorageError::NotHead {
                    number: base.number,
                }));
            }
            let blocks = keel_execution::simulate(
                &context.chain,
                &snapshot,
                &base,
                &payload,
                Duration::from_millis(limits::SIMULATE_TIMEOUT_MS),
            )
            .map_err(error::simulate)?;
            Ok(blocks
                .into_iter()
                .map(|simulated| SimulatedBlock {
                    inner: convert::block(&simulated.block.block, payload.return_full_transactions),
                    calls: simulated.calls,
                })
                .collect::<Vec<_>>())
        })
    })?;
    module.register_blocking_method("eth_createAccessList", |params, context, _| {
        timed("eth_createAccessList", || {
            let mut params = params.sequence();
            let request: TransactionRequest = params.next()?;
            let block: Option<BlockId> = params.optional_next()?;
            let snapshot = context.state_view(block)?;
            let env = context.call_environment(&snapshot)?;
            keel_execution::create_access_list(
                &context.chain,
                keel_execution::CallState::plain(&snapshot),
                &env,
                &request,
            )
            .map_err(error::call)
        })
    })?;

    module.register_method("eth_gasPrice", |_, context, _| {
        timed("eth_gasPrice", || {
            let snapshot = context.snapshot()?;
            let header = context.state_header(&snapshot)?;
            Ok(U256::from(
                context.chain.next_base_fee(&header) as u128 + SUGGESTED_TIP_WEI,
            ))
        })
    })?;
    module.register_method("eth_maxPriorityFeePerGas", |_, _, _| {
        RpcResult::Ok(U256::from(SUGGESTED_TIP_WEI))
    })?;
    module.register_method("eth_feeHistory", |params, context, _| {
        timed("eth_feeHistory", || fee_history(params, context))
    })?;

    module.register_async_method("eth_sendRawTransaction", |params, context, _| async move {
        let start = Instant::now();
        let result = match context.route() {
            Route::Local => match params.one::<Bytes>() {
                Ok(raw) => submit(&context, &raw)
                    .await
                    .map(|hash| serde_json::json!(hash)),
                Err(error) => Err(error),
            },
            Route::Forward(url) => {
                let params: serde_json::Value = params.parse()?;
                let forwarded = context.forward_transaction(url, params).await;
                // The leader accepted it: this node's pending filters see it too.
                if let Some(hash) = forwarded
                    .as_ref()
                    .ok()
                    .and_then(|hash| hash.as_str()?.parse().ok())
                {
                    context.filters.on_pending(hash);
                }
                forwarded
            }
            Route::NoLeader => Err(no_leader()),
        };
        metrics::histogram!("keel_rpc_request_seconds", "method" => "eth_sendRawTransaction")
            .record(start.elapsed().as_secs_f64());
        result
    })?;
    module.register_async_method("eth_sendRawTransactionSync", |params, context, _| async move {
        let start = Instant::now();
        let result = send_sync(params, &context)
            .await
            .map(|receipt| serde_json::json!(receipt));
        metrics::histogram!("keel_rpc_request_seconds", "method" => "eth_sendRawTransactionSync")
            .record(start.elapsed().as_secs_f64());
        result
    })?;

    module.register_method("eth_getTransactionByHash", |params, context, _| {
        timed("eth_getTransactionByHash", || {
            let hash: B256 = params.one()?;
            let snapshot = context.snapshot()?;
            if let Some(location) = snapshot.tx_location(&hash).map_err(storage)?
                && let Some(committed) = context.committed(&snapshot, location.block_number)?
            {
                return Ok(Some(convert::transaction_at(
                    &committed.block,
                    location.index as usize,
                )));
            }
            Ok(context
                .mempool
                .get(&hash)
                .map(|pooled| convert::pending_transaction(pooled.envelope.clone(), pooled.sender)))
        })
    })?;
    module.register_method("eth_getTransactionReceipt", |params, context, _| {
        timed("eth_getTransactionReceipt", || {
            let hash: B256 = params.one()?;
            let snapshot = context.snapshot()?;
            context.receipt(&snapshot, &hash)
        })
    })?;
    // Each block method comes in a by-number and a by-hash form that differ only in how the
    // first parameter names the block.
    for (method, by_hash) in [
        ("eth_getBlockByNumber", false),
        ("eth_getBlockByHash", true),
    ] {
        module.register_method(method, move |params, context, _| {
            timed(method, || {
                let mut params = params.sequence();
                let block = context.block_param(&mut params, by_hash)?;
                let full: bool = params.optional_next()?.unwrap_or(false);
                Ok(block.map(|c| convert::block(&c.block, full)))
            })
        })?;
    }
    for (method, by_hash) in [
        ("eth_getBlockTransactionCountByNumber", false),
        ("eth_getBlockTransactionCountByHash", true),
    ] {
        module.register_method(method, move |params, context, _| {
            timed(method, || {
                let block = context.block_param(&mut params.sequence(), by_hash)?;
                Ok(block.map(|c| U64::from(c.block.transactions.len())))
            })
        })?;
    }
    for (method, by_hash) in [
        ("eth_getTransactionByBlockNumberAndIndex", false),
        ("eth_getTransactionByBlockHashAndIndex", true),
    ] {
        module.register_method(method, move |params, context, _| {
            timed(method, || {
                let mut params = params.sequence();
                let block = context.block_param(&mut params, by_hash)?;
                let index = params.next::<U64>()?.to::<usize>();
                Ok(block.and_then(|c| {
                    (index < c.block.transactions.len())
                        .then(|| convert::transaction_at(&c.block, index))
                }))
            })
        })?;
    }
    module.register_method("eth_getBlockReceipts", |params, context, _| {
        timed("eth_getBlockReceipts", || {
            let id: BlockId = params.one()?;
            let snapshot = context.snapshot()?;
            let Some(number) = context.resolve_id(&snapshot, id)? else {
                return Ok(None);
            };
            Ok(context
                .committed(&snapshot, number)?
                .map(|c| convert::receipts(&c.block, &c.receipts)))
        })
    })?;
    module.register_blocking_method("eth_getLogs", |params, context, _| {
        timed("eth_getLogs", || {
            let filter: Filter = params.one()?;
            get_logs(&context, &filter)
        })
    })?;

    crate::filters::register(module)?;
    crate::more::register(module)?;
    crate::debug::register(module)?;
    module.register_subscription(
        "eth_subscribe",
        "eth_subscription",
        "eth_unsubscribe",
        |params, pending, context, _| async move { subscribe(params, pending, context).await },
    )?;
    Ok(())
}

/// `eth_getTransactionCount`. The pending nonce counts the pool, which lives on the leader:
/// a follower asks the leader, so that clients behind one load balancer see one pool.
async fn transaction_count(
    params: Params<'static>,
    context: &RpcContext,
) -> RpcResult<serde_json::Value> {
    let raw: serde_json::Value = params.parse()?;
    let mut sequence = params.sequence();
    let address: Address = sequence.next()?;
    let block: Option<BlockId> = sequence.optional_next()?;
    let pending = matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending)));
    if pending && let Route::Forward(url) = context.route() {
        return context.forward(&url, "eth_getTransactionCount", raw).await;
    }
    let snapshot = context.state_view(if pending { None } else { block })?;
    let state_nonce = snapshot
        .account(&address)
        .map_err(storage)?
        .map(|account| account.nonce)
        .unwrap_or(0);
    if pending {
        return Ok(serde_json::json!(U64::from(
            context.mempool.pending_nonce(&address, state_nonce)
        )));
    }
    Ok(serde_json::json!(U64::from(state_nonce)))
}

/// The answer to a write while the cluster elects a leader.
fn no_leader() -> ErrorObjectOwned {
    server("no leader: the cluster is electing one; retry shortly")
}

/// Admits a transaction on the node that sequences: into the pool on a single node; checked
/// against the pool, then replicated through the intake on a cluster's leader (its hash is
/// answered once a quorum holds it).
pub(crate) async fn submit(context: &RpcContext, raw: &[u8]) -> RpcResult<B256> {
    let (envelope, sender) = decode_and_recover(raw).map_err(error::pool)?;
    let base_fee = context.next_base_fee();
    let snapshot = context.snapshot()?;
    let hash = match context.intake.get() {
        // A cluster member whose intake is not up yet (Raft starting) takes nothing.
        None if !context.admits_directly() => return Err(no_leader()),
        None => context
            .mempool
            .add(envelope, sender, &snapshot, base_fee)
            .map_err(error::pool)?,
        Some(intake) => {
            context
                .mempool
                .check(&envelope, sender, &snapshot, base_fee)
                .map_err(error::pool)?;
            // No read view held across the quorum's round.
            drop(snapshot);
            intake.take(envelope, sender).await?
        }
    };
    metrics::counter!("keel_transactions_accepted_total").increment(1);
    context.filters.on_pending(hash);
    Ok(hash)
}

/// `eth_sendRawTransactionSync`: admits the transaction and answers with its receipt once a
/// committed block includes it.
///
/// On a follower only the send is forwarded (batched with the other sends on their way to the
/// leader, as `eth_sendRawTransaction` is); the wait for the receipt happens here, on this
/// node's own stream of applied blocks, which are committed blocks as on the leader. Holding a
/// request open on the leader for each waiting client instead would make the leader's
/// connection limit the cluster's limit on waiting clients: at 2,000 transfers a second, half a
/// second's wait is more than `RPC_CONNECTIONS_MAX` connections.
async fn send_sync(params: Params<'static>, context: &RpcContext) -> RpcResult<TransactionReceipt> {
    let mut sequence = params.sequence();
    let raw: Bytes = sequence.next()?;
    let timeout_ms = match sequence.optional_next::<serde_json::Value>()? {
        Some(value) if !value.is_null() => parse_quantity(&value, 1)?,
        _ => limits::SEND_SYNC_TIMEOUT_MS_DEFAULT,
    }
    .min(limits::SEND_SYNC_TIMEOUT_MS_MAX);
    // The hash only: the pool (here or on the leader) recovers the sender once, on admission.
    let hash = *keel_mempool::decode(&raw).map_err(error::pool)?.tx_hash();
    // Register before submitting, so that a block sealed in between cannot be missed.
    let Some(mut waiter) = context.waiters.register(hash) else {
        return Err(server(
            "too many transactions waiting in eth_sendRawTransactionSync",
        ));
    };
    match context.route() {
        Route::Local => {
            submit(context, &raw).await?;
        }
        Route::Forward(url) => {
            context
                .forward_transaction(url, serde_json::json!([raw]))
                .await?;
            context.filters.on_pending(hash);
        }
        Route::NoLeader => return Err(no_leader()),
    }
    let snapshot = context.snapshot()?;
    if let Some(receipt) = context.receipt(&snapshot, &hash)? {
        return Ok(receipt);
    }
    drop(snapshot);
    let timeout = Duration::from_millis(timeout_ms);
    match tokio::time::timeout(timeout, &mut waiter.included).await {
        Ok(Ok((committed, index))) => receipt_at(&committed, index)
            .ok_or_else(|| internal("included transaction has no receipt")),
        Ok(Err(_)) | Err(_) => Err(ErrorObjectOwned::owned(
            error::SYNC_TIMEOUT,
            format!(
                "The transaction was added to the mempool but wasn't processed in {timeout_ms}ms."
            ),
            Some(hash),
        )),
    }
}

fn fee_history(params: Params<'_>, context: &RpcContext) -> RpcResult<FeeHistory> {
    let mut params = params.sequence();
    let count: serde_json::Value = params.next()?;
    let newest: BlockNumberOrTag = params.next()?;
    let percentiles: Option<Vec<f64>> = params.optional_next()?;
    let count = parse_quantity(&count, 0)?.min(limits::FEE_HISTORY_BLOCKS_MAX);
    if let Some(percentiles) = &percentiles {
        if percentiles.len() > limits::FEE_HISTORY_PERCENTILES_MAX {
            return Err(invalid_params("too many reward percentiles"));
        }
        let mut previous = 0.0;
        for percentile in percentiles {
            if !(0.0..=100.0).contains(percentile) || *percentile < previous {
                return Err(invalid_params(format!(
                    "invalid reward percentile: {percentile}"
                )));
            }
            previous = *percentile;
        }
    }
    let snapshot = context.snapshot()?;
    let Some(newest) = context.resolve(&snapshot, newest) else {
        return Err(invalid_params("request beyond head block"));
    };
    let count = count.min(newest + 1);
    let mut history = FeeHistory {
        oldest_block: newest + 1 - count,
        ..Default::default()
    };
    if count == 0 {
        return Ok(history);
    }
    let mut last_header = None;
    let mut rewards = Vec::new();
    for number in history.oldest_block..=newest {
        let header = snapshot
            .header(number)
            .map_err(storage)?
            .ok_or_else(|| internal("header missing"))?;
        let base_fee = header.base_fee_per_gas.unwrap_or_default();
        history.base_fee_per_gas.push(base_fee as u128);
        history
            .gas_used_ratio
            .push(header.gas_used as f64 / header.gas_limit as f64);
        history.base_fee_per_blob_gas.push(0);
        history.blob_gas_used_ratio.push(0.0);
        if let Some(percentiles) = &percentiles {
            let committed = context
                .committed(&snapshot, number)?
                .ok_or_else(|| internal("block missing"))?;
            rewards.push(block_rewards(&committed, base_fee, percentiles));
        }
        last_header = Some(header);
    }
    let last_header = last_header.expect("count > 0");
    history
        .base_fee_per_gas
        .push(context.chain.next_base_fee(&last_header) as u128);
    history.base_fee_per_blob_gas.push(0);
    if percentiles.is_some() {
        history.reward = Some(rewards);
    }
    Ok(history)
}

/// geth's reward percentiles: effective tips weighted by the gas each transaction used.
fn block_rewards(committed: &BlockWithReceipts, base_fee: u64, percentiles: &[f64]) -> Vec<u128> {
    let mut tips: Vec<(u128, u64)> = Vec::with_capacity(committed.block.transactions.len());
    let mut previous = 0;
    for (transaction, receipt) in committed.block.transactions.iter().zip(&committed.receipts) {
        let gas_used = receipt.cumulative_gas_used() - previous;
        previous = receipt.cumulative_gas_used();
        tips.push((
            transaction
                .effective_tip_per_gas(base_fee)
                .unwrap_or_default(),
            gas_used,
        ));
    }
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    tips.sort_unstable();
    let total: u64 = committed.block.header.gas_used;
    let mut rewards = Vec::with_capacity(percentiles.len());
    let mut index = 0;
    let mut sum = tips[0].1;
    for percentile in percentiles {
        let threshold = (total as f64 * percentile / 100.0) as u64;
        while sum < threshold && index < tips.len() - 1 {
            index += 1;
            sum += tips[index].1;
        }
        rewards.push(tips[index].0);
    }
    rewards
}

pub(crate) fn get_logs(context: &RpcContext, filter: &Filter) -> RpcResult<Vec<Log>> {
    let snapshot = context.snapshot()?;
    let head = snapshot.head().0;
    let (from, to) = match &filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            match snapshot.block_number(hash).map_err(storage)? {
                Some(number) => (number, number),
                None => return Err(server("unknown block")),
            }
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => {
            let resolve = |tag: Option<BlockNumberOrTag>| match tag.unwrap_or_default() {
                BlockNumberOrTag::Number(number) => number,
                other => context.resolve(&snapshot, other).unwrap_or(head),
            };
            (resolve(*from_block), resolve(*to_block).min(head))
        }
    };
    if from > to {
        if from > head {
            return Ok(Vec::new());
        }
        return Err(invalid_params("invalid block range params"));
    }
    if to - from + 1 > limits::LOGS_QUERY_BLOCKS_MAX {
        return Err(ErrorObjectOwned::owned(
            error::LIMIT_EXCEEDED,
            format!(
                "query exceeds max block range {}",
                limits::LOGS_QUERY_BLOCKS_MAX
            ),
            None::<()>,
        ));
    }
    let candidates: Vec<u64> = if filter.address.is_empty() {
        (from..=to).collect()
    } else {
        let mut blocks = Vec::new();
        for address in filter.address.iter() {
            blocks.extend(snapshot.log_blocks(address, from, to).map_err(storage)?);
        }
        blocks.sort_unstable();
        blocks.dedup();
        blocks
    };
    let mut logs = Vec::new();
    for number in candidates {
        if filter.address.is_empty() {
            let header = snapshot.header(number).map_err(storage)?;
            if !header.is_some_and(|header| filter.matches_bloom(header.logs_bloom)) {
                continue;
            }
        }
        let Some(committed) = context.committed(&snapshot, number)? else {
            continue;
        };
        logs.extend(convert::matching_logs(
            &committed.block,
            &committed.receipts,
            filter,
        ));
        if logs.len() > limits::LOGS_QUERY_RESULTS_MAX {
            return Err(ErrorObjectOwned::owned(
                error::LIMIT_EXCEEDED,
                format!(
                    "query returned more than {} results",
                    limits::LOGS_QUERY_RESULTS_MAX
                ),
                None::<()>,
            ));
        }
    }
    Ok(logs)
}

async fn subscribe(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    context: Arc<RpcContext>,
) -> jsonrpsee::core::SubscriptionResult {
    let mut params = params.sequence();
    let kind: String = match params.next() {
        Ok(kind) => kind,
        Err(error) => {
            pending.reject(error).await;
            return Ok(());
        }
    };
    let filter: Option<Filter> = match kind.as_str() {
        "newHeads" => None,
        "logs" => match params.optional_next::<Filter>() {
            Ok(filter) => Some(filter.unwrap_or_default()),
            Err(error) => {
                pending.reject(error).await;
                return Ok(());
            }
        },
        other => {
            pending
                .reject(invalid_params(format!("unsupported subscription: {other}")))
                .await;
            return Ok(());
        }
    };
    // The node's stream of applied blocks: a slow subscriber reads older blocks from the
    // store instead of missing them, and holds no buffer of its own.
    let mut blocks = context.store.subscribe();
    let sink = pending.accept().await?;
    loop {
        let committed = tokio::select! {
            _ = sink.closed() => return Ok(()),
            received = blocks.next() => match received {
                Some(Ok(event)) => event.block().clone(),
                Some(Err(error)) => {
                    tracing::warn!(%error, "subscription stopped: the store failed");
                    return Ok(());
                }
                None => return Ok(()),
            },
        };
        match &filter {
            None => {
                let header = convert::header(&committed.block);
                let message =
                    SubscriptionMessage::new("eth_subscription", sink.subscription_id(), &header)?;
                sink.send(message).await?;
            }
            Some(filter) => {
                if let Some(hash) = convert::filter_block_hash(filter)
                    && hash != committed.block.hash
                {
                    continue;
                }
                for log in convert::matching_logs(&committed.block, &committed.receipts, filter) {
                    let message =
                        SubscriptionMessage::new("eth_subscription", sink.subscription_id(), &log)?;
                    sink.send(message).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_quantities_parse_like_geth() {
        assert_eq!(parse_slot("0x0").unwrap(), B256::ZERO);
        assert_eq!(parse_slot("0x01").unwrap(), B256::with_last_byte(1));
        assert!(parse_slot("0x").is_err());
        assert!(parse_slot(&format!("0x{}", "1".repeat(65))).is_err());
        assert_eq!(parse_quantity(&serde_json::json!("0x10"), 0).unwrap(), 16);
        assert_eq!(parse_quantity(&serde_json::json!(7), 0).unwrap(), 7);
        assert!(parse_quantity(&serde_json::json!([]), 0).is_err());
    }

    /// "Accepted means kept" (I2): a cluster member whose Raft is not running yet refuses a
    /// write ("no leader") instead of taking it into its own pool, where no other node would
    /// ever hold it (chaos caught a restarted member doing so); a single node takes it.
    #[tokio::test]
    async fn a_cluster_member_takes_no_write_before_its_intake_runs() {
        use alloy::eips::eip2718::Encodable2718;
        let chain = keel_primitives::ChainSpec::dev();
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(keel_storage::Store::open(&dir.path().join("chain.redb"), &chain).unwrap());
        let mempool = Arc::new(keel_mempool::Mempool::new(&chain, 30_000_000));
        let transfer = keel_primitives::sign_transaction(
            &keel_primitives::dev_accounts()[0],
            alloy::consensus::TxEip1559 {
                chain_id: chain.chain_id,
                gas_limit: 21_000,
                max_fee_per_gas: 10_000_000_000,
                to: alloy::primitives::TxKind::Call(alloy::primitives::Address::repeat_byte(1)),
                ..Default::default()
            }
            .into(),
        );
        let raw = transfer.encoded_2718();
        let context = |clustered: bool| {
            let context = RpcContext::new(
                chain.clone(),
                store.clone(),
                mempool.clone(),
                "keel/test".into(),
            )
            .unwrap();
            if clustered {
                context.clustered()
            } else {
                context
            }
        };
        let member = context(true);
        assert_eq!(member.route(), Route::NoLeader);
        let refused = member.submit_here(&raw).await.unwrap_err();
        assert!(refused.message().contains("no leader"), "{refused:?}");
        assert!(mempool.is_empty(), "nothing entered the member's pool");
        context(false).submit_here(&raw).await.unwrap();
        assert_eq!(mempool.len(), 1);
    }
}
