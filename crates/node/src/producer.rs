//! The block producer: every block time, build, re-validate, persist, announce.
//!
//! ```text
//!  slot tick ─► snapshot(head) ─► build_block(mempool.best) ─► validate_block (I4)
//!            ─► store.commit_block (one fsynced transaction) ─► mempool.on_block
//!            ─► rpc.on_committed (waiters, subscribers) ─► metrics, health
//! ```
//!
//! It runs on its own thread: building and validating are CPU work that must not stall the
//! RPC runtime. A block is announced only after it is durable (I2 on one node). If validation
//! of its own block or the write fails, the producer halts and the node reports unhealthy: it
//! never seals on top of a state it cannot trust (DESIGN.md R2).

use crate::health::Health;
use alloy::primitives::{Address, Bytes, keccak256};
use keel_execution::{BlockEnvironment, build_block, validate_block};
use keel_mempool::Mempool;
use keel_primitives::ChainSpec;
use keel_rpc::{CommittedBlock, RpcContext};
use keel_storage::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the producer needs.
pub(crate) struct Producer {
    pub(crate) chain: ChainSpec,
    pub(crate) store: Arc<Store>,
    pub(crate) mempool: Arc<Mempool>,
    pub(crate) rpc: Arc<RpcContext>,
    pub(crate) health: Arc<Health>,
    pub(crate) block_time: Duration,
    pub(crate) gas_limit: u64,
    pub(crate) beneficiary: Address,
    pub(crate) extra_data: Bytes,
}

impl Producer {
    /// Seals blocks until `stop` is set or production halts.
    pub(crate) fn run(self, stop: Arc<AtomicBool>) {
        let mut next_slot = Instant::now() + self.block_time;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now < next_slot {
                std::thread::sleep((next_slot - now).min(Duration::from_millis(20)));
                continue;
            }
            next_slot += self.block_time;
            if next_slot < Instant::now() {
                metrics::counter!("keel_block_slots_missed_total").increment(1);
                next_slot = Instant::now() + self.block_time;
            }
            if let Err(reason) = self.produce() {
                tracing::error!(%reason, "block production halted");
                self.health.halt(reason);
                return;
            }
        }
    }

    /// Builds, validates, persists and announces one block.
    fn produce(&self) -> Result<(), String> {
        let started = Instant::now();
        let parent = self.store.snapshot().map_err(|error| error.to_string())?;
        let (head_number, head_hash) = parent.head();
        let parent_header = parent
            .header(head_number)
            .map_err(|error| error.to_string())?
            .ok_or("head header missing")?;
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
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
        let outcome = build_block(&self.chain, &parent, env, &mut best)
            .map_err(|error| format!("building block {}: {error}", head_number + 1))?;
        let sealed = started.elapsed();
        // I4: the block is made durable only as the validator re-executes it.
        let validated =
            validate_block(&self.chain, &parent, &outcome.executed.block).map_err(|error| {
                metrics::counter!("keel_block_validation_failures_total").increment(1);
                format!("own block failed validation: {error}")
            })?;
        drop(parent);
        self.store
            .commit_block(&validated.block, &validated.receipts, &validated.changes)
            .map_err(|error| format!("writing block {}: {error}", validated.block.number()))?;
        let head = self.store.snapshot().map_err(|error| error.to_string())?;
        self.mempool
            .on_block(&validated.block, &head, &outcome.invalid);
        let block = validated.block;
        let transactions = block.transactions.len();
        let gas_used = block.header.gas_used;
        let number = block.number();
        self.rpc.on_committed(Arc::new(CommittedBlock {
            block,
            receipts: validated.receipts,
        }));
        self.health.block_committed();

        let elapsed = started.elapsed();
        metrics::gauge!("keel_head_number").set(number as f64);
        metrics::histogram!("keel_block_seal_seconds").record(sealed.as_secs_f64());
        metrics::histogram!("keel_block_commit_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("keel_block_transactions").record(transactions as f64);
        metrics::counter!("keel_transactions_included_total").increment(transactions as u64);
        metrics::counter!("keel_gas_used_total").increment(gas_used);
        metrics::gauge!("keel_gas_per_second").set(gas_used as f64 / self.block_time.as_secs_f64());
        metrics::gauge!("keel_mempool_transactions").set(self.mempool.len() as f64);
        tracing::debug!(
            number,
            transactions,
            gas_used,
            elapsed_ms = elapsed.as_millis() as u64,
            "sealed block"
        );
        if !outcome.invalid.is_empty() {
            tracing::debug!(
                dropped = outcome.invalid.len(),
                "dropped invalid pool transactions"
            );
        }
        Ok(())
    }
}
