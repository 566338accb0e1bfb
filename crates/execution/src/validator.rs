//! The block validator: re-executes a sealed block from its parent state (invariant I4).

use crate::error::BlockError;
use crate::executor::{BlockEnvironment, BlockExecutor, ExecutedBlock};
use alloy::consensus::Header;
use keel_primitives::{ChainSpec, SealedBlock, forced_cursor_of, limits, origin_of};
use keel_storage::Snapshot;

/// Checks `block` against the rules and its parent, re-executes every transaction through the
/// builder's own path, and compares every header field with the result.
///
/// ### Correctness
/// `parent` must be the state at the block's parent. On success the returned receipts and state
/// changes are the ones to persist; the returned block is equal to `block`.
pub fn validate_block(
    chain: &ChainSpec,
    parent: &Snapshot,
    block: &SealedBlock,
) -> Result<ExecutedBlock, BlockError> {
    let (head_number, head_hash) = parent.head();
    let parent_header = parent
        .header(head_number)?
        .ok_or_else(|| BlockError::State(format!("parent header {head_number} missing")))?;
    let header = &block.header;
    let number = header.number;
    let mismatch = |field: &'static str, got: String, expected: String| {
        Err(BlockError::HeaderMismatch {
            number,
            field,
            got,
            expected,
        })
    };
    if header.parent_hash != head_hash {
        return mismatch(
            "parentHash",
            header.parent_hash.to_string(),
            head_hash.to_string(),
        );
    }
    if number != head_number + 1 {
        return mismatch("number", number.to_string(), (head_number + 1).to_string());
    }
    if header.timestamp < parent_header.timestamp {
        return mismatch(
            "timestamp",
            header.timestamp.to_string(),
            format!(">= {}", parent_header.timestamp),
        );
    }
    // The L1 origin never goes backwards, and keeps its hash while its number stays (the
    // genesis names no origin: the rollup config does). Whether it is on the L1 chain, and
    // within the drift, derivation checks against the L1 (docs/protocol.md, "L1 origin").
    let (origin, parent_origin) = (origin_of(header), origin_of(&parent_header));
    if origin.number < parent_origin.number {
        return mismatch(
            "nonce (L1 origin number)",
            origin.number.to_string(),
            format!(">= {}", parent_origin.number),
        );
    }
    if head_number > 0 && origin.number == parent_origin.number && origin.hash != parent_origin.hash
    {
        return mismatch(
            "parentBeaconBlockRoot (L1 origin hash)",
            origin.hash.to_string(),
            parent_origin.hash.to_string(),
        );
    }
    // The forced cursor moves forward by at most one block's worth of forced transactions;
    // which ones, derivation checks against the L1.
    let parent_cursor = forced_cursor_of(&parent_header).unwrap_or(u64::MAX);
    match forced_cursor_of(header) {
        Some(cursor)
            if cursor >= parent_cursor
                && cursor - parent_cursor <= limits::FORCED_TRANSACTIONS_PER_BLOCK_MAX as u64 => {}
        _ => {
            return mismatch(
                "difficulty (forced cursor)",
                header.difficulty.to_string(),
                format!(
                    "{parent_cursor}..={}",
                    parent_cursor + limits::FORCED_TRANSACTIONS_PER_BLOCK_MAX as u64
                ),
            );
        }
    }
    if !(limits::BLOCK_GAS_LIMIT_MIN..=limits::BLOCK_GAS_LIMIT_MAX).contains(&header.gas_limit) {
        return mismatch(
            "gasLimit",
            header.gas_limit.to_string(),
            "within keel's limits".into(),
        );
    }
    let base_fee = chain.next_base_fee(&parent_header);
    if header.base_fee_per_gas != Some(base_fee) {
        return mismatch(
            "baseFeePerGas",
            format!("{:?}", header.base_fee_per_gas),
            base_fee.to_string(),
        );
    }
    if header.extra_data.len() > limits::EXTRA_DATA_BYTES_MAX {
        return mismatch(
            "extraData",
            header.extra_data.len().to_string(),
            "<= 32 bytes".into(),
        );
    }
    if block.rlp_length() > limits::BLOCK_RLP_BYTES_MAX {
        return mismatch(
            "size",
            block.rlp_length().to_string(),
            "within EIP-7934's limit".into(),
        );
    }
    let mut executor = BlockExecutor::new(chain, parent, BlockEnvironment::from_header(header));
    for (index, (transaction, sender)) in block.transactions.iter().zip(&block.senders).enumerate()
    {
        if let Err(error) = executor.execute_transaction(transaction, *sender) {
            return Err(BlockError::Transaction {
                number,
                index,
                hash: *transaction.tx_hash(),
                error: Box::new(error),
            });
        }
    }
    let executed = executor
        .finish()
        .map_err(|error| BlockError::State(error.0))?;
    compare_headers(header, &executed.output.block.header)?;
    assert_eq!(
        executed.output.block.hash, block.hash,
        "equal headers hash equally"
    );
    Ok(executed)
}

/// Names the first header field where the block and the re-execution differ.
fn compare_headers(got: &Header, expected: &Header) -> Result<(), BlockError> {
    macro_rules! compare {
        ($($field:ident => $name:literal),* $(,)?) => {$(
            if got.$field != expected.$field {
                return Err(BlockError::HeaderMismatch {
                    number: got.number,
                    field: $name,
                    got: format!("{:?}", got.$field),
                    expected: format!("{:?}", expected.$field),
                });
            }
        )*};
    }
    compare!(
        state_root => "stateRoot",
        receipts_root => "receiptsRoot",
        transactions_root => "transactionsRoot",
        logs_bloom => "logsBloom",
        gas_used => "gasUsed",
        ommers_hash => "sha3Uncles",
        difficulty => "difficulty",
        nonce => "nonce",
        withdrawals_root => "withdrawalsRoot",
        blob_gas_used => "blobGasUsed",
        excess_blob_gas => "excessBlobGas",
        parent_beacon_block_root => "parentBeaconBlockRoot",
        requests_hash => "requestsHash",
        block_access_list_hash => "blockAccessListHash",
        slot_number => "slotNumber",
    );
    if got != expected {
        return Err(BlockError::HeaderMismatch {
            number: got.number,
            field: "header",
            got: format!("{got:?}"),
            expected: format!("{expected:?}"),
        });
    }
    Ok(())
}
