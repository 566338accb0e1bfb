//! The simulation's L1: keel's own engine run as a second chain (the embedded dev L1's), sealed
//! by the simulation's driver on simulated time, read by every simulated node through the
//! in-process client, and faulted by the driver: reorgs, outages, a batcher out of funds.
//!
//! ```text
//!  driver step ─► SimL1::tick (an L1 block every L1 block time: Sealer::seal, commit, pool)
//!  nodes ─► OutageL1 (fails every call while an outage lasts) ─► EmbeddedL1 ─► L1 store, pool
//!  faults ─► reorg (Store::unwind_to, the removed transactions back to the pool), outage,
//!            the batcher's funds moved away and back
//! ```
//!
//! The L1 never crashes and never forks by itself: it is the one chain every node shares, as
//! Ethereum is. Its blocks' timestamps come from the simulated clock, so a seed replays it
//! exactly.

use alloy::primitives::{Address, B256, Bytes, U256};
use keel_l1::{
    EmbeddedL1, InboxTransaction, L1BlockRef, L1Client, L1Error, L1Fees, L1Future, L1Head,
    L1Receipt, NonceAt,
};
use keel_mempool::Mempool;
use keel_primitives::{ChainSpec, Clock, RollupConfig, SafeHeads, dev_accounts, limits};
use keel_storage::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The simulated L1's block time.
pub const SIM_L1_BLOCK_TIME_MS: u64 = 1_000;
/// Blocks the simulated L1's `safe` head trails `latest`.
const SIM_L1_SAFE_DEPTH: u64 = 4;
/// Blocks its `finalized` head trails `latest`: deeper than any reorg the driver makes, as
/// Ethereum's finality is deeper than its reorgs.
pub const SIM_L1_FINALIZED_DEPTH: u64 = 8;
/// The deepest reorg the driver makes: past the sequencer's confirmation depth, so that some
/// remove an origin, never past finality.
pub const SIM_L1_REORG_DEPTH_MAX: u64 = 6;
const _: () = assert!(SIM_L1_REORG_DEPTH_MAX < SIM_L1_FINALIZED_DEPTH);
const _: () = assert!(SIM_L1_REORG_DEPTH_MAX > limits::SEQUENCER_CONFIRMATION_DEPTH);
/// The forced-inclusion window the simulation's rollup uses: the smallest allowed, so that
/// the window passes inside a run.
pub const SIM_FORCE_INCLUSION_WINDOW_BLOCKS: u64 = limits::FORCE_INCLUSION_WINDOW_BLOCKS_MIN;

/// The simulated L1.
pub struct SimL1 {
    chain: ChainSpec,
    store: Arc<Store>,
    mempool: Arc<Mempool>,
    sealer: keel_node::Sealer,
    client: Arc<EmbeddedL1>,
    down: Arc<AtomicBool>,
    next_block_ms: u64,
    /// The rollup the simulated nodes run.
    pub rollup: RollupConfig,
}

impl std::fmt::Debug for SimL1 {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SimL1")
            .field("next_block_ms", &self.next_block_ms)
            .finish_non_exhaustive()
    }
}

impl SimL1 {
    /// A fresh L1 (the dev L1's genesis, the dev accounts funded) on an in-memory disk,
    /// timestamped by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, keel_storage::StorageError> {
        let chain = ChainSpec::dev_l1();
        let store = Arc::new(Store::open_with_backend(
            crate::disk::SimDisk::new(),
            &chain,
        )?);
        let mempool = Arc::new(Mempool::new(&chain, chain.genesis.gas_limit));
        let heads = Arc::new(SafeHeads::behind(SIM_L1_SAFE_DEPTH, SIM_L1_FINALIZED_DEPTH));
        let client = Arc::new(EmbeddedL1::new(
            chain.clone(),
            store.clone(),
            mempool.clone(),
            heads,
        ));
        let sealer = keel_node::Sealer {
            chain: chain.clone(),
            mempool: mempool.clone(),
            gas_limit: chain.genesis.gas_limit,
            beneficiary: Address::ZERO,
            extra_data: Bytes::new(),
            clock,
            origin: None,
        };
        let start = keel_primitives::L1Origin {
            number: 0,
            hash: chain.genesis_block().hash,
        };
        let mut rollup = RollupConfig::dev(keel_primitives::DEV_L1_CHAIN_ID, start);
        rollup.force_inclusion_window_blocks = SIM_FORCE_INCLUSION_WINDOW_BLOCKS;
        let mut l1 = Self {
            chain,
            store,
            mempool,
            sealer,
            client,
            down: Arc::default(),
            next_block_ms: 0,
            rollup,
        };
        // Blocks on the simulated clock before the L2 starts, so that its first block finds an
        // origin the confirmation depth allows within the drift (the genesis's timestamp is
        // the dev chain's, long before the simulation's epoch).
        for _ in 0..=limits::SEQUENCER_CONFIRMATION_DEPTH {
            l1.next_block_ms = 0;
            l1.tick(0);
        }
        Ok(l1)
    }

    /// What the nodes read the L1 through: the embedded client, failing while an outage lasts.
    pub fn client(&self) -> Arc<dyn L1Client> {
        Arc::new(OutageL1 {
            inner: self.client.clone(),
            down: self.down.clone(),
        })
    }

    /// The driver's own view, never down.
    pub fn direct(&self) -> &EmbeddedL1 {
        &self.client
    }

    /// Seals the next L1 block if it is due at `now_ms`; its number and transaction count.
    pub fn tick(&mut self, now_ms: u64) -> Option<(u64, usize)> {
        if now_ms < self.next_block_ms {
            return None;
        }
        self.next_block_ms = now_ms + SIM_L1_BLOCK_TIME_MS;
        let parent = self.store.snapshot().expect("the L1's store reads");
        let (validated, invalid) = self.sealer.seal(&parent).expect("the L1 seals");
        self.mempool.drop_invalid(&invalid, &parent);
        drop(parent);
        let number = validated.output.number();
        let block = validated.output.block.clone();
        let transactions = block.transactions.len();
        self.store
            .commit_block(validated.output, &validated.changes)
            .expect("the L1 commits");
        let head = self.store.snapshot().expect("the L1's store reads");
        self.mempool.on_block(&block, &head);
        Some((number, transactions))
    }

    /// The batcher's balance on the L1 now.
    pub fn batcher_balance(&self) -> U256 {
        let batcher = dev_accounts()[keel_primitives::rollup::DEV_BATCHER_INDEX].address();
        self.store
            .snapshot()
            .ok()
            .and_then(|view| view.account(&batcher).ok().flatten())
            .map(|account| account.balance)
            .unwrap_or_default()
    }

    /// The L1 head's number.
    pub fn head(&self) -> u64 {
        self.store.snapshot().map(|view| view.head().0).unwrap_or(0)
    }

    /// A reorg of `depth` blocks: they are removed, their transactions go back to the pool
    /// (as an L1's reorged-out transactions do), and the next blocks are sealed anew.
    pub fn reorg(&mut self, depth: u64) -> u64 {
        let head = self.head();
        let to = head.saturating_sub(depth).max(1);
        if to >= head {
            return 0;
        }
        let removed = self.store.unwind_to(to, &[]).expect("the L1 unwinds");
        let view = self.store.snapshot().expect("the L1's store reads");
        self.mempool.resync_all(&view);
        let header = view
            .header(to)
            .expect("the L1's store reads")
            .expect("the new head's header");
        let base_fee = self.chain.next_base_fee(&header);
        for block in removed.iter().rev() {
            for (transaction, sender) in block.block.transactions.iter().zip(&block.block.senders) {
                let _ = self
                    .mempool
                    .add(transaction.clone(), *sender, &view, base_fee);
            }
        }
        removed.len() as u64
    }

    /// Starts or ends an L1 outage: every node's call fails while it lasts.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Moves the batcher's ether to dev account 8 (`broke`), or back (`!broke`), through the
    /// L1's pool: its batches fail for want of funds until it is refunded.
    pub fn set_batcher_broke(&self, broke: bool) {
        let accounts = dev_accounts();
        let batcher = &accounts[keel_primitives::rollup::DEV_BATCHER_INDEX];
        let keeper = &accounts[8];
        let (from, to) = if broke {
            (batcher, keeper.address())
        } else {
            (keeper, batcher.address())
        };
        let view = self.store.snapshot().expect("the L1's store reads");
        let account = view
            .account(&from.address())
            .expect("the L1's store reads")
            .unwrap_or_default();
        let nonce = self.mempool.pending_nonce(&from.address(), account.nonce);
        let header = view
            .header(view.head().0)
            .expect("the L1's store reads")
            .expect("the head's header");
        let base_fee = self.chain.next_base_fee(&header);
        let max_fee = u128::from(base_fee) * 2 + 1_000_000;
        // Leave nothing, so that no batch fits: the tip equals the fee cap, so the transfer
        // pays exactly its cap and no unused fee comes back. Refund what was taken.
        let keep = U256::ZERO;
        let value = if broke {
            account
                .balance
                .saturating_sub(keep + U256::from(max_fee * 21_000))
        } else {
            U256::from(keel_primitives::chain::DEV_BALANCE_WEI / 2)
        };
        let transfer = alloy::consensus::TxEip1559 {
            chain_id: self.chain.chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: max_fee,
            to: alloy::primitives::TxKind::Call(to),
            value,
            ..Default::default()
        };
        let signed = keel_primitives::sign_transaction(from, transfer.into());
        let _ = self.mempool.add(signed, from.address(), &view, base_fee);
    }

    /// Sends `payload` to the force inbox from L1 dev account 7; the L1 transaction's hash.
    pub fn force(&self, payload: Bytes) -> Option<B256> {
        let payer = &dev_accounts()[7];
        let view = self.store.snapshot().ok()?;
        let account = view.account(&payer.address()).ok()?.unwrap_or_default();
        let nonce = self.mempool.pending_nonce(&payer.address(), account.nonce);
        let header = view.header(view.head().0).ok()??;
        let fees = L1Fees {
            base_fee: self.chain.next_base_fee(&header).into(),
            tip: keel_primitives::chain::SUGGESTED_TIP_WEI,
            blob_base_fee: None,
        };
        let (envelope, _) = keel_l1::sign_calldata(
            payer,
            self.chain.chain_id,
            nonce,
            self.rollup.force_inbox,
            payload,
            keel_l1::FeeCaps::for_fees(&fees),
        );
        let hash = *envelope.tx_hash();
        self.mempool
            .add(envelope, payer.address(), &view, fees.base_fee as u64)
            .ok()?;
        Some(hash)
    }

    /// The canonical L1 block holding transaction `hash`, if any.
    pub fn included_at(&self, hash: &B256) -> Option<u64> {
        let view = self.store.snapshot().ok()?;
        view.tx_location(hash)
            .ok()?
            .map(|location| location.block_number)
    }
}

/// The L1 as a node reads it in the simulation: the embedded client, with every call failing
/// while an outage lasts.
#[derive(Debug)]
struct OutageL1 {
    inner: Arc<EmbeddedL1>,
    down: Arc<AtomicBool>,
}

impl OutageL1 {
    fn check(&self, doing: &'static str) -> Result<(), L1Error> {
        if self.down.load(Ordering::Relaxed) {
            return Err(L1Error::Transport {
                doing,
                reason: "the L1 is down (simulated outage)".into(),
            });
        }
        Ok(())
    }
}

fn failed<'a, T: Send + 'a>(error: L1Error) -> L1Future<'a, T> {
    Box::pin(std::future::ready(Err(error)))
}

macro_rules! guarded {
    ($self:ident, $doing:literal, $call:expr) => {
        match $self.check($doing) {
            Ok(()) => $call,
            Err(error) => failed(error),
        }
    };
}

impl L1Client for OutageL1 {
    fn chain_id(&self) -> L1Future<'_, u64> {
        guarded!(self, "eth_chainId", self.inner.chain_id())
    }

    fn head(&self, which: L1Head) -> L1Future<'_, L1BlockRef> {
        guarded!(self, "eth_getBlockByNumber(head)", self.inner.head(which))
    }

    fn block_by_number(&self, number: u64) -> L1Future<'_, Option<L1BlockRef>> {
        guarded!(
            self,
            "eth_getBlockByNumber",
            self.inner.block_by_number(number)
        )
    }

    fn inbox_transactions<'a>(
        &'a self,
        block: &'a L1BlockRef,
        inboxes: &'a [Address],
    ) -> L1Future<'a, Vec<InboxTransaction>> {
        guarded!(
            self,
            "reading inbox transactions",
            self.inner.inbox_transactions(block, inboxes)
        )
    }

    fn send_raw_transaction(&self, raw: Bytes) -> L1Future<'_, B256> {
        guarded!(
            self,
            "eth_sendRawTransaction",
            self.inner.send_raw_transaction(raw)
        )
    }

    fn receipt(&self, hash: B256) -> L1Future<'_, Option<L1Receipt>> {
        guarded!(self, "eth_getTransactionReceipt", self.inner.receipt(hash))
    }

    fn nonce(&self, address: Address, at: NonceAt) -> L1Future<'_, u64> {
        guarded!(
            self,
            "eth_getTransactionCount",
            self.inner.nonce(address, at)
        )
    }

    fn balance(&self, address: Address) -> L1Future<'_, U256> {
        guarded!(self, "eth_getBalance", self.inner.balance(address))
    }

    fn fees(&self) -> L1Future<'_, L1Fees> {
        guarded!(self, "fees", self.inner.fees())
    }

    fn blobs<'a>(
        &'a self,
        block: &'a L1BlockRef,
        hashes: &'a [B256],
    ) -> L1Future<'a, Vec<Box<alloy::eips::eip4844::Blob>>> {
        guarded!(
            self,
            "GET /eth/v1/beacon/blobs",
            self.inner.blobs(block, hashes)
        )
    }
}
