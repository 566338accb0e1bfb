//! Forced transactions: signed L2 transactions sent to the force inbox on the L1
//! (docs/protocol.md, "Forced inclusion"), and the queue of those the safe chain has not
//! consumed yet, which derivation fills and the sequencer reads.
//!
//! ```text
//!  L1 force inbox ─(derivation reads each L1 block)─► ForcedInbox ─due(cursor, origin)─► Sealer
//!                                                          ▲ consumed by the safe chain
//! ```
//!
//! Every forced transaction has an index: its place in the sequence of all of them, in L1
//! order from the rollup's start. A block header's forced cursor is the index of the next one
//! due; the sequencer and derivation both take from there.

use crate::codec::{CodecError, DropReason};
use alloy::consensus::TxEnvelope;
use alloy::eips::Decodable2718;
use alloy::primitives::Address;
use keel_primitives::limits;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One forced transaction, as derivation read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedTransaction {
    /// Its place in the sequence of every forced transaction (the forced cursor before it).
    pub index: u64,
    /// The L1 block that carried it.
    pub l1_block: u64,
    /// The signed L2 transaction.
    pub transaction: TxEnvelope,
    /// Its sender, recovered from its signature.
    pub sender: Address,
}

/// The stored form of a forced transaction (the signature is recovered again on load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredForced {
    pub(crate) index: u64,
    pub(crate) l1_block: u64,
    pub(crate) raw: Vec<u8>,
}

/// Decodes a force-inbox payload: one signed L2 transaction of chain `chain_id`, at most
/// `limits::FORCED_PAYLOAD_BYTES_MAX` bytes, whose signature recovers.
pub fn decode_forced_payload(
    payload: &[u8],
    chain_id: u64,
) -> Result<(TxEnvelope, Address), CodecError> {
    let bad = |detail: String| Err(CodecError::new(DropReason::BadForcedPayload, detail));
    if payload.len() > limits::FORCED_PAYLOAD_BYTES_MAX {
        return bad(format!(
            "{} bytes, over {}",
            payload.len(),
            limits::FORCED_PAYLOAD_BYTES_MAX
        ));
    }
    let mut rest = payload;
    let transaction = match TxEnvelope::decode_2718(&mut rest) {
        Ok(transaction) => transaction,
        Err(error) => return bad(format!("not a signed transaction: {error}")),
    };
    if !rest.is_empty() {
        return bad(format!("{} bytes after the transaction", rest.len()));
    }
    if transaction.is_eip4844() {
        return bad("a blob transaction".into());
    }
    match alloy::consensus::Transaction::chain_id(&transaction) {
        Some(found) if found == chain_id => {}
        other => return bad(format!("chain id {other:?}, not {chain_id}")),
    }
    let sender =
        match alloy::consensus::transaction::SignerRecoverable::recover_signer(&transaction) {
            Ok(sender) => sender,
            Err(error) => return bad(format!("signature: {error}")),
        };
    Ok((transaction, sender))
}

impl ForcedTransaction {
    pub(crate) fn stored(&self) -> StoredForced {
        use alloy::eips::Encodable2718;
        StoredForced {
            index: self.index,
            l1_block: self.l1_block,
            raw: self.transaction.encoded_2718(),
        }
    }

    pub(crate) fn load(stored: &StoredForced, chain_id: u64) -> Result<Self, CodecError> {
        let (transaction, sender) = decode_forced_payload(&stored.raw, chain_id)?;
        Ok(Self {
            index: stored.index,
            l1_block: stored.l1_block,
            transaction,
            sender,
        })
    }
}

/// Why the sequencer cannot take forced transactions from the inbox for a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForcedError {
    /// The safe chain consumed forced transactions past the block's parent: the derived
    /// chain replaced blocks the sequencer built on, and the cluster must adopt it first.
    #[error(
        "the safe chain consumed forced transactions up to {safe_cursor}, past the head's cursor {cursor}: adopt the derived chain"
    )]
    BehindSafe {
        /// The parent's forced cursor.
        cursor: u64,
        /// The safe chain's.
        safe_cursor: u64,
    },
}

#[derive(Debug, Default)]
struct Queue {
    /// Unconsumed forced transactions, by index, contiguous.
    entries: VecDeque<ForcedTransaction>,
    /// The forced cursor of the safe chain: the index of the front entry, or of the next one
    /// read when there is none.
    safe_cursor: u64,
    /// The last L1 block whose force-inbox transactions are all in `entries`.
    read_through: Option<u64>,
}

/// The forced transactions derivation has read and the safe chain has not consumed yet,
/// shared with the sequencer.
///
/// ### Correctness
/// `entries` are contiguous by index from `safe_cursor`, in L1 order, and hold every forced
/// transaction of every L1 block up to `read_through` that the safe chain has not consumed.
/// So a block whose origin is at most `read_through` knows all of its due transactions.
#[derive(Debug, Default)]
pub struct ForcedInbox {
    queue: RwLock<Queue>,
}

impl ForcedInbox {
    /// The last L1 block whose forced transactions are all known; `None` before derivation
    /// read any.
    pub fn read_through(&self) -> Option<u64> {
        self.queue.read().read_through
    }

    /// How many are pending, and the L1 block of the oldest.
    pub fn pending(&self) -> (usize, Option<u64>) {
        let queue = self.queue.read();
        (
            queue.entries.len(),
            queue.entries.front().map(|entry| entry.l1_block),
        )
    }

    /// The forced transactions due in a block with origin `origin` whose parent's forced
    /// cursor is `cursor`: from index `cursor` on, those from L1 blocks up to `origin`, at
    /// most `limits::FORCED_TRANSACTIONS_PER_BLOCK_MAX`.
    pub fn due(&self, cursor: u64, origin: u64) -> Result<Vec<(TxEnvelope, Address)>, ForcedError> {
        let queue = self.queue.read();
        if cursor < queue.safe_cursor {
            return Err(ForcedError::BehindSafe {
                cursor,
                safe_cursor: queue.safe_cursor,
            });
        }
        let skip = (cursor - queue.safe_cursor) as usize;
        Ok(queue
            .entries
            .iter()
            .skip(skip)
            .take_while(|entry| entry.l1_block <= origin)
            .take(limits::FORCED_TRANSACTIONS_PER_BLOCK_MAX)
            .map(|entry| (entry.transaction.clone(), entry.sender))
            .collect())
    }

    /// Replaces the whole queue (derivation's start or reset).
    pub(crate) fn reset(
        &self,
        entries: Vec<ForcedTransaction>,
        safe_cursor: u64,
        read_through: Option<u64>,
    ) {
        let mut queue = self.queue.write();
        assert!(
            entries
                .iter()
                .enumerate()
                .all(|(offset, entry)| entry.index == safe_cursor + offset as u64),
            "the forced queue is contiguous from the safe cursor"
        );
        queue.entries = entries.into();
        queue.safe_cursor = safe_cursor;
        queue.read_through = read_through;
    }

    /// Appends what derivation read from one L1 block, and marks it read.
    pub(crate) fn read(
        &self,
        l1_block: u64,
        read: Vec<ForcedTransaction>,
    ) -> Result<(), CodecError> {
        let mut queue = self.queue.write();
        if queue.entries.len() + read.len() > limits::FORCED_QUEUE_MAX {
            return Err(CodecError::new(
                DropReason::BadForcedPayload,
                format!(
                    "more than {} forced transactions pending",
                    limits::FORCED_QUEUE_MAX
                ),
            ));
        }
        let first = queue.safe_cursor + queue.entries.len() as u64;
        for (next, entry) in (first..).zip(read) {
            assert_eq!(entry.index, next, "forced transactions are read in order");
            queue.entries.push_back(entry);
        }
        queue.read_through = Some(l1_block);
        Ok(())
    }

    /// The index the next forced transaction read gets.
    pub(crate) fn next_index(&self) -> u64 {
        let queue = self.queue.read();
        queue.safe_cursor + queue.entries.len() as u64
    }

    /// The safe chain consumed forced transactions up to `cursor` (exclusive).
    pub(crate) fn consumed_to(&self, cursor: u64) {
        let mut queue = self.queue.write();
        assert!(
            cursor >= queue.safe_cursor,
            "the safe cursor never goes back"
        );
        while queue.safe_cursor < cursor {
            let front = queue
                .entries
                .pop_front()
                .expect("the safe chain consumes only forced transactions read");
            assert_eq!(front.index, queue.safe_cursor);
            queue.safe_cursor += 1;
        }
    }

    /// The unconsumed entries, for a checkpoint.
    pub(crate) fn snapshot(&self) -> (Vec<StoredForced>, u64, Option<u64>) {
        let queue = self.queue.read();
        (
            queue
                .entries
                .iter()
                .map(ForcedTransaction::stored)
                .collect(),
            queue.safe_cursor,
            queue.read_through,
        )
    }

    /// The entries due by L1 block `origin`, from the safe cursor on (derivation's own view).
    pub(crate) fn due_for_safe(&self, origin: u64) -> Vec<(TxEnvelope, Address)> {
        let safe_cursor = self.queue.read().safe_cursor;
        self.due(safe_cursor, origin)
            .expect("the safe cursor is never behind itself")
    }

    /// The L1 block of the oldest unconsumed forced transaction.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.queue
            .read()
            .entries
            .front()
            .map(|entry| entry.l1_block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forced(index: u64, l1_block: u64) -> ForcedTransaction {
        let signer = &keel_primitives::dev_accounts()[0];
        let transaction = crate::codec::tests::transfer(signer, index);
        ForcedTransaction {
            index,
            l1_block,
            transaction,
            sender: signer.address(),
        }
    }

    #[test]
    fn payloads_are_signed_transactions_of_this_chain() {
        use alloy::eips::Encodable2718;
        let signer = &keel_primitives::dev_accounts()[0];
        let raw = crate::codec::tests::transfer(signer, 0).encoded_2718();
        let chain_id = keel_primitives::DEV_CHAIN_ID;
        let (_, sender) = decode_forced_payload(&raw, chain_id).unwrap();
        assert_eq!(sender, signer.address());
        let mut trailing = raw.clone();
        trailing.push(0);
        let table: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not a signed transaction"),
            (raw[..raw.len() - 1].to_vec(), "not a signed transaction"),
            (trailing, "after the transaction"),
            (vec![0xaa; limits::FORCED_PAYLOAD_BYTES_MAX + 1], "over"),
        ];
        for (payload, expected) in table {
            let error = decode_forced_payload(&payload, chain_id).unwrap_err();
            assert_eq!(error.reason, DropReason::BadForcedPayload);
            assert!(error.detail.contains(expected), "{error}");
        }
        let error = decode_forced_payload(&raw, 1).unwrap_err();
        assert!(error.detail.contains("chain id"), "{error}");
    }

    #[test]
    fn the_due_list_follows_the_cursor_and_the_origin() {
        let inbox = ForcedInbox::default();
        assert_eq!(inbox.read_through(), None);
        inbox.reset(Vec::new(), 5, Some(10));
        inbox.read(11, vec![forced(5, 11), forced(6, 11)]).unwrap();
        inbox.read(12, vec![forced(7, 12)]).unwrap();
        assert_eq!(inbox.read_through(), Some(12));
        assert_eq!(
            inbox.due(5, 10).unwrap().len(),
            0,
            "not due before its L1 block"
        );
        assert_eq!(inbox.due(5, 11).unwrap().len(), 2);
        assert_eq!(inbox.due(6, 12).unwrap().len(), 2, "from the cursor on");
        assert_eq!(inbox.due(8, 12).unwrap().len(), 0);
        inbox.consumed_to(7);
        assert_eq!(inbox.pending(), (1, Some(12)));
        assert_eq!(
            inbox.due(6, 12),
            Err(ForcedError::BehindSafe {
                cursor: 6,
                safe_cursor: 7
            })
        );
        assert_eq!(inbox.next_index(), 8);
    }
}
