//! [`EmbeddedL1`]: the client of a keel single-node chain running in the same process as the
//! node that reads it (the embedded dev L1; keel-node assembles that chain). It reads the
//! chain's store and writes its pool directly, the way its own JSON-RPC does, with no socket
//! in between: the deterministic simulation reaches its L1 this way too.

use crate::{
    InboxTransaction, L1BlockRef, L1Client, L1Error, L1Fees, L1Future, L1Head, L1Receipt, NonceAt,
};
use alloy::consensus::Transaction as _;
use alloy::primitives::{Address, B256, Bytes, U256};
use keel_mempool::{Mempool, PoolError, decode_and_recover};
use keel_primitives::chain::SUGGESTED_TIP_WEI;
use keel_primitives::{ChainSpec, SafeHeads, limits};
use keel_storage::{Snapshot, Store};
use std::sync::Arc;

/// A keel chain in this process, read as an L1.
#[derive(Debug, Clone)]
pub struct EmbeddedL1 {
    chain: ChainSpec,
    store: Arc<Store>,
    mempool: Arc<Mempool>,
    heads: Arc<SafeHeads>,
}

impl EmbeddedL1 {
    /// The client of the chain `chain` kept in `store`, taking transactions into `mempool`,
    /// with `safe` and `finalized` as `heads` says (the same value its JSON-RPC serves).
    pub fn new(
        chain: ChainSpec,
        store: Arc<Store>,
        mempool: Arc<Mempool>,
        heads: Arc<SafeHeads>,
    ) -> Self {
        Self {
            chain,
            store,
            mempool,
            heads,
        }
    }

    /// The hash of the canonical block at `number`, read at once (the simulation's driver
    /// checks derivation against it).
    pub fn block_hash_at(&self, number: u64) -> Option<B256> {
        self.store.snapshot().ok()?.block_hash(number).ok()?
    }

    fn snapshot(&self) -> Result<Snapshot, L1Error> {
        self.store.snapshot().map_err(L1Error::stopped)
    }

    fn block_at(snapshot: &Snapshot, number: u64) -> Result<Option<L1BlockRef>, L1Error> {
        let Some(header) = snapshot.header(number).map_err(L1Error::stopped)? else {
            return Ok(None);
        };
        let hash = snapshot
            .block_hash(number)
            .map_err(L1Error::stopped)?
            .ok_or_else(|| L1Error::stopped(format!("block {number} has a header, no hash")))?;
        Ok(Some(L1BlockRef {
            number,
            hash,
            parent_hash: header.parent_hash,
            timestamp: header.timestamp,
        }))
    }
}

/// What the embedded L1 answers right away: each call reads one snapshot.
fn ready<'a, T: Send + 'a>(result: Result<T, L1Error>) -> L1Future<'a, T> {
    Box::pin(std::future::ready(result))
}

impl L1Client for EmbeddedL1 {
    fn chain_id(&self) -> L1Future<'_, u64> {
        ready(Ok(self.chain.chain_id))
    }

    fn head(&self, which: L1Head) -> L1Future<'_, L1BlockRef> {
        ready((|| {
            let snapshot = self.snapshot()?;
            let latest = snapshot.head().0;
            let number = match which {
                L1Head::Latest => latest,
                L1Head::Safe => self.heads.safe(latest),
                L1Head::Finalized => self.heads.finalized(latest),
            };
            Self::block_at(&snapshot, number)?
                .ok_or_else(|| L1Error::stopped(format!("head block {number} missing")))
        })())
    }

    fn block_by_number(&self, number: u64) -> L1Future<'_, Option<L1BlockRef>> {
        ready(
            self.snapshot()
                .and_then(|snapshot| Self::block_at(&snapshot, number)),
        )
    }

    fn inbox_transactions<'a>(
        &'a self,
        block: &'a L1BlockRef,
        inboxes: &'a [Address],
    ) -> L1Future<'a, Vec<InboxTransaction>> {
        ready((|| {
            let snapshot = self.snapshot()?;
            if snapshot
                .block_hash(block.number)
                .map_err(L1Error::stopped)?
                != Some(block.hash)
            {
                return Err(L1Error::BlockGone { hash: block.hash });
            }
            let full = snapshot
                .block_with_receipts(block.number)
                .map_err(L1Error::stopped)?
                .ok_or(L1Error::BlockGone { hash: block.hash })?;
            let mut found = Vec::new();
            let rows = full
                .block
                .transactions
                .iter()
                .zip(&full.block.senders)
                .zip(&full.receipts);
            for (index, ((transaction, sender), receipt)) in rows.enumerate() {
                let Some(to) = transaction.to() else { continue };
                if !inboxes.contains(&to) {
                    continue;
                }
                if found.len() == limits::L1_INBOX_TRANSACTIONS_PER_BLOCK_MAX {
                    return Err(L1Error::Malformed {
                        doing: "reading an L1 block's inbox transactions",
                        reason: format!(
                            "block {} holds more than {} inbox transactions",
                            block.number,
                            limits::L1_INBOX_TRANSACTIONS_PER_BLOCK_MAX
                        ),
                    });
                }
                found.push(InboxTransaction {
                    hash: *transaction.tx_hash(),
                    index: index as u64,
                    from: *sender,
                    to,
                    input: transaction.input().clone(),
                    blob_hashes: transaction
                        .blob_versioned_hashes()
                        .map(<[B256]>::to_vec)
                        .unwrap_or_default(),
                    succeeded: receipt.status(),
                });
            }
            Ok(found)
        })())
    }

    fn send_raw_transaction(&self, raw: Bytes) -> L1Future<'_, B256> {
        ready((|| {
            let refused = |error: PoolError| L1Error::Rejected {
                code: -32000,
                message: error.to_string(),
            };
            let (envelope, sender) = decode_and_recover(&raw).map_err(refused)?;
            let hash = *envelope.tx_hash();
            let snapshot = self.snapshot()?;
            let head = snapshot
                .header(snapshot.head().0)
                .map_err(L1Error::stopped)?
                .ok_or_else(|| L1Error::stopped("head header missing"))?;
            let base_fee = self.chain.next_base_fee(&head);
            match self.mempool.add(envelope, sender, &snapshot, base_fee) {
                Ok(_) | Err(PoolError::AlreadyKnown) => Ok(hash),
                // Already included: the same bytes were sent before (idempotent).
                Err(PoolError::NonceTooLow { .. })
                    if snapshot
                        .tx_location(&hash)
                        .map_err(L1Error::stopped)?
                        .is_some() =>
                {
                    Ok(hash)
                }
                Err(error) => Err(refused(error)),
            }
        })())
    }

    fn receipt(&self, hash: B256) -> L1Future<'_, Option<L1Receipt>> {
        ready((|| {
            let snapshot = self.snapshot()?;
            let Some(location) = snapshot.tx_location(&hash).map_err(L1Error::stopped)? else {
                return Ok(None);
            };
            let full = snapshot
                .block_with_receipts(location.block_number)
                .map_err(L1Error::stopped)?
                .ok_or_else(|| L1Error::stopped("an indexed transaction's block is missing"))?;
            let index = location.index as usize;
            let (Some(transaction), Some(receipt)) =
                (full.block.transactions.get(index), full.receipts.get(index))
            else {
                return Err(L1Error::stopped(
                    "an indexed transaction is not in its block",
                ));
            };
            let before = index
                .checked_sub(1)
                .map(|previous| full.receipts[previous].cumulative_gas_used())
                .unwrap_or(0);
            let base_fee = full.block.header.base_fee_per_gas.unwrap_or_default();
            Ok(Some(L1Receipt {
                transaction_hash: hash,
                block_number: location.block_number,
                block_hash: full.block.hash,
                succeeded: receipt.status(),
                gas_used: receipt.cumulative_gas_used() - before,
                effective_gas_price: transaction.effective_gas_price(Some(base_fee)),
                blob_gas_used: None,
                blob_gas_price: None,
            }))
        })())
    }

    fn nonce(&self, address: Address, at: NonceAt) -> L1Future<'_, u64> {
        ready((|| {
            let snapshot = self.snapshot()?;
            let state = snapshot
                .account(&address)
                .map_err(L1Error::stopped)?
                .map(|account| account.nonce)
                .unwrap_or(0);
            Ok(match at {
                NonceAt::Latest => state,
                NonceAt::Pending => self.mempool.pending_nonce(&address, state),
            })
        })())
    }

    fn balance(&self, address: Address) -> L1Future<'_, U256> {
        ready((|| {
            let snapshot = self.snapshot()?;
            Ok(snapshot
                .account(&address)
                .map_err(L1Error::stopped)?
                .map(|account| account.balance)
                .unwrap_or_default())
        })())
    }

    fn fees(&self) -> L1Future<'_, L1Fees> {
        ready((|| {
            let snapshot = self.snapshot()?;
            let head = snapshot
                .header(snapshot.head().0)
                .map_err(L1Error::stopped)?
                .ok_or_else(|| L1Error::stopped("head header missing"))?;
            Ok(L1Fees {
                base_fee: head.base_fee_per_gas.unwrap_or_default().into(),
                tip: SUGGESTED_TIP_WEI,
                // keel's engine takes no blob transactions: the batcher posts calldata to it.
                blob_base_fee: None,
            })
        })())
    }

    fn blobs<'a>(
        &'a self,
        block: &'a L1BlockRef,
        hashes: &'a [B256],
    ) -> L1Future<'a, Vec<Box<alloy::eips::eip4844::Blob>>> {
        // keel's engine includes no blob transaction, so no block of it has blobs to read.
        ready(if hashes.is_empty() {
            Ok(Vec::new())
        } else {
            Err(L1Error::NoBeacon {
                block: block.number,
            })
        })
    }
}
