//! The methods beyond reading and sending that clients and tools still call: the raw
//! encodings (`debug_getRaw*`, `eth_getRawTransactionByHash`), the pool's view (`txpool_*`),
//! `rpc_modules`, `eth_blobBaseFee`, and the proof-of-work methods answered as geth answers
//! them on a post-merge chain.

use crate::error::{server, storage};
use crate::{Route, RpcContext, convert};
use alloy::consensus::{Block, BlockBody, Transaction as _};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, U64, U256};
use alloy::rpc::types::{BlockId, BlockNumberOrTag};
use jsonrpsee::RpcModule;
use jsonrpsee::types::ErrorObjectOwned;
use keel_mempool::PoolTransaction;
use std::collections::BTreeMap;
use std::sync::Arc;

type Answer<T> = Result<T, ErrorObjectOwned>;

/// The modules keel serves, with geth's version strings.
const MODULES: [&str; 5] = ["debug", "eth", "net", "txpool", "web3"];

/// eth/68, the devp2p protocol version geth and reth report.
const PROTOCOL_VERSION: u64 = 68;

impl RpcContext {
    /// The committed block `id` names, if the chain has it.
    fn block_by_id(&self, id: BlockId) -> Answer<Option<Arc<keel_primitives::BlockWithReceipts>>> {
        let snapshot = self.store.snapshot().map_err(storage)?;
        let number = match id {
            BlockId::Number(tag) => self.resolve(&snapshot, tag),
            BlockId::Hash(hash) => snapshot.block_number(&hash.block_hash).map_err(storage)?,
        };
        match number {
            Some(number) => self.committed(&snapshot, number),
            None => Ok(None),
        }
    }

    /// The raw EIP-2718 bytes of a transaction in the chain or, failing that, in the pool.
    fn raw_transaction(&self, hash: &B256) -> Answer<Option<Bytes>> {
        let snapshot = self.store.snapshot().map_err(storage)?;
        if let Some(location) = snapshot.tx_location(hash).map_err(storage)?
            && let Some(committed) = self.committed(&snapshot, location.block_number)?
        {
            let transaction = &committed.block.transactions[location.index as usize];
            return Ok(Some(transaction.encoded_2718().into()));
        }
        Ok(self
            .mempool
            .get(hash)
            .map(|pooled| pooled.envelope.encoded_2718().into()))
    }
}

/// The pool split as geth splits it: per sender, the transactions whose nonces run on from
/// the account's nonce without a gap are pending, the rest queued.
fn split_pool(context: &RpcContext) -> Answer<(PoolView, PoolView)> {
    let snapshot = context.store.snapshot().map_err(storage)?;
    let mut by_sender: BTreeMap<Address, Vec<Arc<PoolTransaction>>> = BTreeMap::new();
    for transaction in context.mempool.all() {
        by_sender
            .entry(transaction.sender)
            .or_default()
            .push(transaction);
    }
    let (mut pending, mut queued) = (PoolView::new(), PoolView::new());
    for (sender, mut transactions) in by_sender {
        transactions.sort_by_key(|transaction| transaction.envelope.nonce());
        let mut next = snapshot
            .account(&sender)
            .map_err(storage)?
            .map(|account| account.nonce)
            .unwrap_or(0);
        for transaction in transactions {
            let nonce = transaction.envelope.nonce();
            let view = if nonce == next {
                next += 1;
                &mut pending
            } else {
                &mut queued
            };
            view.entry(sender).or_default().insert(nonce, transaction);
        }
    }
    Ok((pending, queued))
}

type PoolView = BTreeMap<Address, BTreeMap<u64, Arc<PoolTransaction>>>;

/// A pool view as geth's `txpool_content` and `txpool_inspect` lay it out: sender, then nonce,
/// then what `show` makes of the transaction.
fn by_sender(
    view: PoolView,
    show: impl Fn(&PoolTransaction) -> serde_json::Value,
) -> serde_json::Value {
    view.into_iter()
        .map(|(sender, transactions)| {
            let by_nonce: serde_json::Map<_, _> = transactions
                .into_iter()
                .map(|(nonce, transaction)| (nonce.to_string(), show(&transaction)))
                .collect();
            (
                sender.to_checksum(None),
                serde_json::Value::Object(by_nonce),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// geth's one-line summary of a pool transaction (`txpool_inspect`).
fn summary(transaction: &PoolTransaction) -> String {
    let envelope = &transaction.envelope;
    let to = match envelope.to() {
        Some(to) => to.to_checksum(None),
        None => "contract creation".into(),
    };
    format!(
        "{to}: {} wei + {} gas × {} wei",
        envelope.value(),
        envelope.gas_limit(),
        envelope.max_fee_per_gas()
    )
}

/// `txpool_*` reads the leader's pool: a follower asks the leader, so that every node of a
/// cluster answers the same (as the pending nonce does).
async fn pool_method(
    context: &RpcContext,
    method: &'static str,
    local: impl FnOnce(&RpcContext) -> Answer<serde_json::Value>,
) -> Answer<serde_json::Value> {
    match context.route() {
        Route::Local => local(context),
        Route::Forward(url) => context.forward(&url, method, serde_json::json!([])).await,
        Route::NoLeader => Err(server(
            "no leader: the cluster is electing one; retry shortly",
        )),
    }
}

/// Registers the methods of this module.
pub(crate) fn register(
    module: &mut RpcModule<RpcContext>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("rpc_modules", |_, _, _| -> Answer<BTreeMap<&str, &str>> {
        Ok(MODULES.iter().map(|module| (*module, "1.0")).collect())
    })?;
    // Proof of work ended with the merge: geth answers these so on a post-merge chain.
    module.register_method("eth_mining", |_, _, _| Answer::Ok(false))?;
    module.register_method("eth_hashrate", |_, _, _| Answer::Ok(U64::ZERO))?;
    module.register_method("eth_protocolVersion", |_, _, _| {
        Answer::Ok(U64::from(PROTOCOL_VERSION))
    })?;
    module.register_method("eth_coinbase", |_, context, _| {
        Answer::Ok(context.beneficiary)
    })?;
    for (method, by_hash) in [
        ("eth_getUncleCountByBlockNumber", false),
        ("eth_getUncleCountByBlockHash", true),
    ] {
        module.register_method(method, move |params, context, _| -> Answer<Option<U64>> {
            let id = block_id(params.one::<serde_json::Value>()?, by_hash)?;
            Ok(context.block_by_id(id)?.map(|_| U64::ZERO))
        })?;
    }
    for method in [
        "eth_getUncleByBlockNumberAndIndex",
        "eth_getUncleByBlockHashAndIndex",
    ] {
        module.register_method(method, |_, _, _| Answer::Ok(serde_json::Value::Null))?;
    }
    // keel refuses blob transactions: the excess blob gas stays zero and the blob base fee at
    // its minimum, computed as the L1 would from the head's header.
    module.register_method("eth_blobBaseFee", |_, context, _| -> Answer<U256> {
        let snapshot = context.store.snapshot().map_err(storage)?;
        let header = snapshot
            .header(snapshot.head().0)
            .map_err(storage)?
            .ok_or_else(|| crate::error::internal("head header missing"))?;
        let excess = header.excess_blob_gas.unwrap_or_default();
        Ok(U256::from(
            alloy::eips::eip7840::BlobParams::osaka().calc_blob_fee(excess),
        ))
    })?;

    module.register_blocking_method("eth_getProof", |params, context, _| {
        let mut params = params.sequence();
        let address: Address = params.next()?;
        let keys: Vec<alloy::rpc::types::serde_helpers::JsonStorageKey> = params.next()?;
        let block: Option<BlockId> = params.optional_next()?;
        if keys.len() > keel_primitives::limits::PROOF_SLOTS_MAX {
            return Err(ErrorObjectOwned::owned(
                crate::error::LIMIT_EXCEEDED,
                format!(
                    "too many storage keys: {} asked, at most {}",
                    keys.len(),
                    keel_primitives::limits::PROOF_SLOTS_MAX
                ),
                None::<()>,
            ));
        }
        let view = context.state_view(block)?;
        let (number, _) = view.state_block();
        let header = view
            .header(number)
            .map_err(storage)?
            .ok_or_else(|| server("header not found"))?;
        let slots: Vec<B256> = keys.iter().map(|key| key.as_b256()).collect();
        let proof = keel_execution::account_proof(&view, header.state_root, &address, &slots)
            .map_err(|error| server(error.0))?;
        let account = proof.account;
        Answer::Ok(alloy::rpc::types::EIP1186AccountProofResponse {
            address,
            balance: account.map(|account| account.balance).unwrap_or_default(),
            code_hash: keel_execution::code_hash(account.as_ref()),
            nonce: account.map(|account| account.nonce).unwrap_or_default(),
            storage_hash: account
                .map(|account| account.storage_root)
                .unwrap_or(alloy::consensus::EMPTY_ROOT_HASH),
            account_proof: proof.account_proof,
            storage_proof: keys
                .into_iter()
                .zip(proof.storage)
                .map(
                    |(key, (_, value, proof))| alloy::rpc::types::EIP1186StorageProof {
                        key,
                        value,
                        proof,
                    },
                )
                .collect(),
        })
    })?;
    module.register_method(
        "debug_getRawHeader",
        |params, context, _| -> Answer<Bytes> {
            let id: BlockId = params.one()?;
            let block = context
                .block_by_id(id)?
                .ok_or_else(|| server("header not found"))?;
            Ok(block.block.encode_header().into())
        },
    )?;
    module.register_method("debug_getRawBlock", |params, context, _| -> Answer<Bytes> {
        let id: BlockId = params.one()?;
        let block = context
            .block_by_id(id)?
            .ok_or_else(|| server("block not found"))?;
        let full = Block {
            header: block.block.header.clone(),
            body: BlockBody {
                transactions: block.block.transactions.clone(),
                ommers: Vec::new(),
                withdrawals: Some(Default::default()),
            },
        };
        Ok(alloy::rlp::encode(&full).into())
    })?;
    module.register_method(
        "debug_getRawReceipts",
        |params, context, _| -> Answer<Vec<Bytes>> {
            let id: BlockId = params.one()?;
            let block = context
                .block_by_id(id)?
                .ok_or_else(|| server("block not found"))?;
            Ok(block
                .receipts
                .iter()
                .map(|receipt| receipt.encoded_2718().into())
                .collect())
        },
    )?;
    for method in ["debug_getRawTransaction", "eth_getRawTransactionByHash"] {
        module.register_method(method, |params, context, _| -> Answer<Option<Bytes>> {
            let hash: B256 = params.one()?;
            context.raw_transaction(&hash)
        })?;
    }

    module.register_async_method("txpool_status", |_, context, _| async move {
        pool_method(&context, "txpool_status", |context| {
            let (pending, queued) = split_pool(context)?;
            let count =
                |view: &PoolView| U64::from(view.values().map(BTreeMap::len).sum::<usize>());
            Ok(serde_json::json!({"pending": count(&pending), "queued": count(&queued)}))
        })
        .await
    })?;
    module.register_async_method("txpool_content", |_, context, _| async move {
        pool_method(&context, "txpool_content", |context| {
            let (pending, queued) = split_pool(context)?;
            let content = |view| {
                by_sender(view, |transaction| {
                    serde_json::json!(convert::pending_transaction(
                        transaction.envelope.clone(),
                        transaction.sender,
                    ))
                })
            };
            Ok(serde_json::json!({"pending": content(pending), "queued": content(queued)}))
        })
        .await
    })?;
    module.register_async_method("txpool_inspect", |_, context, _| async move {
        pool_method(&context, "txpool_inspect", |context| {
            let (pending, queued) = split_pool(context)?;
            let inspect = |view| by_sender(view, |transaction| summary(transaction).into());
            Ok(serde_json::json!({"pending": inspect(pending), "queued": inspect(queued)}))
        })
        .await
    })?;
    Ok(())
}

/// A block named by number (or tag) or by hash, as the uncle-count methods take them.
fn block_id(value: serde_json::Value, by_hash: bool) -> Answer<BlockId> {
    let invalid = |error: serde_json::Error| crate::error::invalid_params(error.to_string());
    Ok(if by_hash {
        BlockId::from(serde_json::from_value::<B256>(value).map_err(invalid)?)
    } else {
        BlockId::from(serde_json::from_value::<BlockNumberOrTag>(value).map_err(invalid)?)
    })
}
