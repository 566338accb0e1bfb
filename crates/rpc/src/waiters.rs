//! Waiting for a transaction's block to be durable (`eth_sendRawTransactionSync`).

use alloy::primitives::B256;
use keel_primitives::BlockWithReceipts;
use keel_primitives::limits;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// What a waiter is told: the block that includes its transaction, and the index there.
pub type Inclusion = (Arc<BlockWithReceipts>, usize);

/// Who waits for which transaction. Bounded by `SEND_SYNC_WAITERS_MAX`.
#[derive(Debug, Default)]
pub struct InclusionWaiters {
    waiting: Mutex<HashMap<B256, Vec<oneshot::Sender<Inclusion>>>>,
}

/// A registered wait; dropping it unregisters.
#[derive(Debug)]
pub struct Waiter<'a> {
    waiters: &'a InclusionWaiters,
    hash: B256,
    /// Fires with the block and the transaction's index when a durable block includes it.
    pub included: oneshot::Receiver<Inclusion>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiters.waiting.lock();
        if let Some(senders) = waiting.get_mut(&self.hash) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiting.remove(&self.hash);
            }
        }
    }
}

impl InclusionWaiters {
    /// Registers a wait for `hash`, or `None` when too many are waiting already.
    pub fn register(&self, hash: B256) -> Option<Waiter<'_>> {
        let mut waiting = self.waiting.lock();
        if waiting.len() >= limits::SEND_SYNC_WAITERS_MAX {
            return None;
        }
        let (sender, included) = oneshot::channel();
        waiting.entry(hash).or_default().push(sender);
        Some(Waiter {
            waiters: self,
            hash,
            included,
        })
    }

    /// Wakes everyone waiting for a transaction of `block`. Call after the block is durable.
    pub fn notify(&self, committed: &Arc<BlockWithReceipts>) {
        let mut waiting = self.waiting.lock();
        if waiting.is_empty() {
            return;
        }
        for (index, transaction) in committed.block.transactions.iter().enumerate() {
            if let Some(senders) = waiting.remove(transaction.tx_hash()) {
                for sender in senders {
                    let _ = sender.send((committed.clone(), index));
                }
            }
        }
    }

    /// Transactions waited for.
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
