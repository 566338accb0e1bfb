//! Sealing blocks: build from the pool, re-validate (I4), then persist or propose; and the
//! single-node producer that does so every block time.
//!
//! ```text
//!  slot tick ─► Sealer::seal(head snapshot) ─ build_block(mempool.best) ─► validate_block (I4)
//!     single node: store.commit_block (one fsynced transaction) ─► announce
//!     cluster:     raft.client_write ─► every node's state machine applies ─► announce
//!  announce: mempool.on_block ─► rpc.on_committed (waiters, subscribers) ─► metrics, health
//! ```
//!
//! The single-node producer runs on its own thread: building and validating are CPU work that
//! must not stall the RPC runtime. A block is announced only after it is durable (I2). If
//! validation of its own block or the write fails, the producer halts and the node reports
//! unhealthy: it never seals on top of a state it cannot trust (DESIGN.md R2).

use crate::health::Health;
use alloy::consensus::ReceiptEnvelope;
use alloy::primitives::{Address, B256, Bytes, keccak256};
use keel_execution::{BlockEnvironment, ExecutedBlock, TxError, build_block, validate_block};
use keel_mempool::Mempool;
use keel_primitives::{ChainSpec, SealedBlock};
use keel_rpc::{CommittedBlock, RpcContext};
use keel_storage::{Snapshot, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What sealing a block needs: the chain, the pool, and the header fields the operator sets.
/// The node's one way to seal; the deterministic simulation (keel-testkit) seals with it too.
#[derive(Debug, Clone)]
pub struct Sealer {
    /// The chain's rules.
    pub chain: ChainSpec,
    /// Where transactions come from.
    pub mempool: Arc<Mempool>,
    /// The block gas limit.
    pub gas_limit: u64,
    /// The fee recipient.
    pub beneficiary: Address,
    /// The header's extra data.
    pub extra_data: Bytes,
    /// Block timestamps come from here.
    pub clock: Arc<dyn keel_primitives::Clock>,
}

impl Sealer {
    /// Builds the child of `parent`'s head from the pool and re-validates it from the same
    /// parent state (I4). Returns the validated block and the pool transactions found invalid.
    pub fn seal(&self, parent: &Snapshot) -> Result<(ExecutedBlock, Vec<(B256, TxError)>), String> {
        let started = Instant::now();
        let (head_number, head_hash) = parent.head();
        let parent_header = parent
            .header(head_number)
            .map_err(|error| error.to_string())?
            .ok_or("head header missing")?;
        let now_s = self.clock.now_s();
        let env = BlockEnvironment {
            parent_hash: head_hash,
            number: head_number + 1,
            timestamp: now_s.max(parent_header.timestamp),
            beneficiary: self.beneficiary,
            gas_limit: self.gas_limit,
            base_fee: self.chain.next_base_fee(&parent_header),
            prevrandao: keccak256(head_hash),
            extra_data: self.extra_data.clone(),
        };
        let mut best = self.mempool.best(env.base_fee);
        let outcome = build_block(&self.chain, parent, env, &mut best)
            .map_err(|error| format!("building block {}: {error}", head_number + 1))?;
        metrics::histogram!("keel_block_seal_seconds").record(started.elapsed().as_secs_f64());
        // I4: a block leaves the builder only as the validator re-executes it.
        let validated =
            validate_block(&self.chain, parent, &outcome.executed.block).map_err(|error| {
                metrics::counter!("keel_block_validation_failures_total").increment(1);
                format!("own block failed validation: {error}")
            })?;
        Ok((validated, outcome.invalid))
    }
}

/// Tells the pool, the RPC (receipts, waiters, subscribers), health and metrics of each block
/// that became durable on this node.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    pub(crate) store: Arc<Store>,
    pub(crate) mempool: Arc<Mempool>,
    pub(crate) rpc: Arc<RpcContext>,
    pub(crate) health: Arc<Health>,
    pub(crate) block_time: Duration,
}

impl Announcer {
    /// Announces `block`; `invalid` are pool transactions the builder found invalid.
    pub(crate) fn announce(
        &self,
        block: SealedBlock,
        receipts: Vec<ReceiptEnvelope>,
        invalid: &[(B256, TxError)],
    ) -> Result<(), String> {
        let head = self.store.snapshot().map_err(|error| error.to_string())?;
        self.mempool.on_block(&block, &head, invalid);
        drop(head);
        let transactions = block.transactions.len();
        let gas_used = block.header.gas_used;
        let number = block.number();
        self.rpc
            .on_committed(Arc::new(CommittedBlock { block, receipts }));
        self.health.block_committed();
        metrics::gauge!("keel_head_number").set(number as f64);
        metrics::histogram!("keel_block_transactions").record(transactions as f64);
        metrics::counter!("keel_transactions_included_total").increment(transactions as u64);
        metrics::counter!("keel_gas_used_total").increment(gas_used);
        metrics::gauge!("keel_gas_per_second").set(gas_used as f64 / self.block_time.as_secs_f64());
        metrics::gauge!("keel_mempool_transactions").set(self.mempool.len() as f64);
        tracing::debug!(number, transactions, gas_used, "block durable");
        Ok(())
    }
}

/// The single-node producer.
pub(crate) struct Producer {
    pub(crate) sealer: Sealer,
    pub(crate) announcer: Announcer,
}

impl Producer {
    /// Seals blocks until `stop` is set or production halts.
    pub(crate) fn run(self, stop: Arc<AtomicBool>) {
        let block_time = self.announcer.block_time;
        let mut next_slot = Instant::now() + block_time;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next_slot {
                std::thread::sleep((next_slot - now).min(Duration::from_millis(20)));
                continue;
            }
            next_slot += block_time;
            if next_slot < Instant::now() {
                metrics::counter!("keel_block_slots_missed_total").increment(1);
                next_slot = Instant::now() + block_time;
            }
            if let Err(reason) = self.produce() {
                tracing::error!(%reason, "block production halted");
                self.announcer.health.halt(reason);
                return;
            }
        }
    }

    /// Seals, persists and announces one block.
    fn produce(&self) -> Result<(), String> {
        let started = Instant::now();
        let store = &self.announcer.store;
        let parent = store.snapshot().map_err(|error| error.to_string())?;
        let sealed = self.sealer.seal(&parent);
        self.announcer.health.seal_took(started.elapsed());
        let (validated, invalid) = sealed?;
        drop(parent);
        store
            .commit_block(&validated.block, &validated.receipts, &validated.changes)
            .map_err(|error| format!("writing block {}: {error}", validated.block.number()))?;
        self.announcer
            .announce(validated.block, validated.receipts, &invalid)?;
        metrics::histogram!("keel_block_commit_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}
