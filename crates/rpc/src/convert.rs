//! keel's stored values as the JSON-RPC types alloy defines (and every client parses).

use alloy::consensus::transaction::Recovered;
use alloy::consensus::{ReceiptEnvelope, Transaction as _, TxEnvelope};
use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::{
    Block, BlockTransactions, Filter, FilterBlockOption, Header, Log, Transaction,
    TransactionReceipt,
};
use keel_execution::created_address;
use keel_primitives::SealedBlock;

/// A block as `eth_getBlockBy*` returns it.
pub(crate) fn block(block: &SealedBlock, full: bool) -> Block {
    let transactions = if full {
        BlockTransactions::Full(
            (0..block.transactions.len())
                .map(|index| transaction_at(block, index))
                .collect(),
        )
    } else {
        BlockTransactions::Hashes(block.transactions.iter().map(|tx| *tx.tx_hash()).collect())
    };
    Block {
        header: header(block),
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Default::default()),
    }
}

/// A header as `newHeads` and blocks carry it.
pub(crate) fn header(block: &SealedBlock) -> Header {
    Header {
        hash: block.hash,
        inner: block.header.clone(),
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(block.rlp_length())),
    }
}

/// The transaction at `index` of `block`.
pub(crate) fn transaction_at(block: &SealedBlock, index: usize) -> Transaction {
    let envelope = block.transactions[index].clone();
    let sender = block.senders[index];
    let effective_gas_price = envelope.effective_gas_price(block.header.base_fee_per_gas);
    Transaction {
        inner: Recovered::new_unchecked(envelope, sender),
        block_hash: Some(block.hash),
        block_number: Some(block.number()),
        transaction_index: Some(index as u64),
        effective_gas_price: Some(effective_gas_price),
        block_timestamp: Some(block.header.timestamp),
    }
}

/// A pool transaction, not yet in a block.
pub(crate) fn pending_transaction(envelope: TxEnvelope, sender: Address) -> Transaction {
    Transaction {
        inner: Recovered::new_unchecked(envelope, sender),
        block_hash: None,
        block_number: None,
        transaction_index: None,
        effective_gas_price: None,
        block_timestamp: None,
    }
}

/// Every receipt of `block`, with log indexes counted across the block.
pub(crate) fn receipts(
    block: &SealedBlock,
    receipts: &[ReceiptEnvelope],
) -> Vec<TransactionReceipt> {
    let mut log_index = 0u64;
    let mut previous_cumulative = 0u64;
    let mut out = Vec::with_capacity(receipts.len());
    for (index, stored) in receipts.iter().enumerate() {
        let transaction = &block.transactions[index];
        let sender = block.senders[index];
        let hash = *transaction.tx_hash();
        let gas_used = stored.cumulative_gas_used() - previous_cumulative;
        previous_cumulative = stored.cumulative_gas_used();
        let inner = stored.clone().map_logs(|log| {
            let rpc_log = Log {
                inner: log,
                block_hash: Some(block.hash),
                block_number: Some(block.number()),
                block_timestamp: Some(block.header.timestamp),
                transaction_hash: Some(hash),
                transaction_index: Some(index as u64),
                log_index: Some(log_index),
                removed: false,
            };
            log_index += 1;
            rpc_log
        });
        out.push(TransactionReceipt {
            inner,
            transaction_hash: hash,
            transaction_index: Some(index as u64),
            block_hash: Some(block.hash),
            block_number: Some(block.number()),
            gas_used,
            effective_gas_price: transaction.effective_gas_price(block.header.base_fee_per_gas),
            blob_gas_used: None,
            blob_gas_price: None,
            from: sender,
            to: transaction.to(),
            contract_address: created_address(transaction, sender),
        });
    }
    out
}

/// The logs of `block` that `filter` matches (its address and topics; the caller checks the
/// block range).
pub(crate) fn matching_logs(
    block: &SealedBlock,
    receipts: &[ReceiptEnvelope],
    filter: &Filter,
) -> Vec<Log> {
    if !filter.matches_bloom(block.header.logs_bloom) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut log_index = 0u64;
    for (index, receipt) in receipts.iter().enumerate() {
        for log in receipt.logs() {
            if filter.matches_address(log.address) && filter.matches_topics(log.topics()) {
                out.push(Log {
                    inner: log.clone(),
                    block_hash: Some(block.hash),
                    block_number: Some(block.number()),
                    block_timestamp: Some(block.header.timestamp),
                    transaction_hash: Some(*block.transactions[index].tx_hash()),
                    transaction_index: Some(index as u64),
                    log_index: Some(log_index),
                    removed: false,
                });
            }
            log_index += 1;
        }
    }
    out
}

/// The block hash a filter is pinned to, if any.
pub(crate) fn filter_block_hash(filter: &Filter) -> Option<B256> {
    match filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => Some(hash),
        FilterBlockOption::Range { .. } => None,
    }
}
