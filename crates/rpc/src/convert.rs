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
    let mut first_log_index = 0u64;
    (0..receipts.len())
        .map(|index| {
            let receipt = receipt_with(block, receipts, index, first_log_index);
            first_log_index += receipts[index].logs().len() as u64;
            receipt
        })
        .collect()
}

/// The receipt of the transaction at `index` in `block`, as [`receipts`] gives it, built
/// alone: a waiter for one transaction (`eth_sendRawTransactionSync`, `eth_getTransactionReceipt`)
/// must not convert the whole block's receipts, or a block of n transactions costs n² of them
/// (5% of a leader's time at 2,000 transfers a second before this).
pub(crate) fn receipt(
    block: &SealedBlock,
    receipts: &[ReceiptEnvelope],
    index: usize,
) -> Option<TransactionReceipt> {
    let earlier = receipts.get(..index)?;
    receipts.get(index)?;
    let first_log_index = earlier
        .iter()
        .map(|stored| stored.logs().len() as u64)
        .sum();
    Some(receipt_with(block, receipts, index, first_log_index))
}

/// The receipt at `index`, whose first log has the block-wide index `first_log_index`.
fn receipt_with(
    block: &SealedBlock,
    receipts: &[ReceiptEnvelope],
    index: usize,
    first_log_index: u64,
) -> TransactionReceipt {
    let stored = &receipts[index];
    let transaction = &block.transactions[index];
    let sender = block.senders[index];
    let hash = *transaction.tx_hash();
    let previous_cumulative = match index {
        0 => 0,
        _ => receipts[index - 1].cumulative_gas_used(),
    };
    let gas_used = stored.cumulative_gas_used() - previous_cumulative;
    let mut log_index = first_log_index;
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
    TransactionReceipt {
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
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::consensus::{Receipt, ReceiptWithBloom, Signed, TxEip1559};
    use alloy::primitives::{Bytes, Log as PrimitiveLog, Signature, TxKind};

    /// One receipt alone is the one the whole block's list gives at its index: its log
    /// indexes counted across the block, its gas from the cumulative gas before it.
    #[test]
    fn one_receipt_alone_equals_the_blocks_list_at_its_index() {
        let transactions: Vec<TxEnvelope> = (0..4u64)
            .map(|nonce| {
                let transaction = TxEip1559 {
                    chain_id: 1,
                    nonce,
                    gas_limit: 50_000,
                    to: TxKind::Call(Address::repeat_byte(7)),
                    ..Default::default()
                };
                Signed::new_unhashed(transaction, Signature::test_signature()).into()
            })
            .collect();
        let senders = vec![Address::repeat_byte(1); transactions.len()];
        let log =
            |byte| PrimitiveLog::new_unchecked(Address::repeat_byte(byte), vec![], Bytes::new());
        let mut cumulative = 0;
        let stored: Vec<ReceiptEnvelope> = [vec![], vec![log(1), log(2)], vec![], vec![log(3)]]
            .into_iter()
            .map(|logs| {
                cumulative += 21_000 + 1_000 * logs.len() as u64;
                ReceiptEnvelope::Eip1559(ReceiptWithBloom::from(Receipt {
                    status: true.into(),
                    cumulative_gas_used: cumulative,
                    logs,
                }))
            })
            .collect();
        let header = alloy::consensus::Header {
            number: 5,
            base_fee_per_gas: Some(7),
            ..Default::default()
        };
        let block = SealedBlock::new(header, transactions, senders);
        let all = receipts(&block, &stored);
        for (index, expected) in all.iter().enumerate() {
            assert_eq!(receipt(&block, &stored, index).as_ref(), Some(expected));
        }
        assert_eq!(all[3].inner.logs()[0].log_index, Some(2));
        assert_eq!(all[1].gas_used, 23_000);
        assert_eq!(receipt(&block, &stored, 4), None);
    }
}
