//! Sealing blocks: build from the pool, re-validate (I4), then persist or propose; and the
//! single-node producer that does so every block time.
//!
//! ```text
//!  slot tick ─► Sealer::seal(head snapshot) ─ build_block(mempool.best) ─► validate_block (I4)
//!     single node: store.commit_block (one fsynced transaction)
//!     cluster:     raft.client_write ─► every node's state machine applies ─► store.commit_block
//!  store's stream of applied blocks ─► Announcer: mempool.on_block ─► rpc.on_applied
//!                                      (waiters) ─► metrics, health
//! ```
//!
//! The single-node producer runs on its own thread: building and validating are CPU work that
//! must not stall the RPC runtime. A block is announced only after it is durable (I2): the
//! announcer reads the store's stream, which yields a block once its write is fsynced, and in
//! a cluster that is after Raft committed it. If validation of its own block or the write
//! fails, the producer halts and the node reports unhealthy: it never seals on top of a state it
//! cannot trust (docs/design.md R2).

use crate::NodeError;
use crate::health::Health;
use alloy::consensus::TxEnvelope;
use alloy::primitives::{Address, B256, Bytes, keccak256};
use keel_execution::{
    BlockEnvironment, ExecutedBlock, SealError, TxError, build_block_with_forced, validate_block,
};
use keel_mempool::Mempool;
use keel_primitives::rollup::OriginError;
use keel_primitives::{ChainSpec, ErrorKind, L1Origin};
use keel_rpc::RpcContext;
use keel_storage::{BlockStream, ChainEvent, Snapshot, Store};
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
    /// How the L1 origin is chosen; `None` on a chain that settles nowhere (origin zero).
    pub origin: Option<OriginRule>,
}

/// The sequencer's choice of L1 origin (docs/protocol.md, "L1 origin", rule 4).
#[derive(Debug, Clone)]
pub struct OriginRule {
    /// The node's view of the L1.
    pub tracker: Arc<keel_l1::L1Tracker>,
    /// The rollup's rules (start, drift).
    pub rollup: keel_primitives::RollupConfig,
    /// L1 blocks the origin trails the L1 head.
    pub confirmation_depth: u64,
    /// The forced transactions derivation read and the safe chain has not consumed.
    pub forced: Arc<keel_l1::ForcedInbox>,
    /// The safe head (the batcher's backlog is what lies above it).
    pub safe: Arc<keel_primitives::SafeHeads>,
    /// The chain derived from the L1: what the sequencer adopts when it must.
    pub derived: Arc<Store>,
}

/// The replacement of unsafe blocks by derived ones (docs/protocol.md, "What gets
/// replaced"): unwind to `base`, then apply `blocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// The last block both chains hold: `(number, hash)`.
    pub base: (u64, B256),
    /// The derived blocks after it, at most `keel_cluster::REPLACE_BLOCKS_MAX`.
    pub blocks: Vec<keel_primitives::SealedBlock>,
}

impl OriginRule {
    /// What the sequencer adopts when sealing failed with a reset (the safe chain consumed
    /// forced transactions past the head, or the head's L1 origin is gone): the derived blocks
    /// past the last block both chains hold, replacing the applied ones there. `None` when the
    /// chains agree and the derived one is not ahead.
    pub fn adoption(&self, applied: &Snapshot) -> Result<Option<Adoption>, NodeError> {
        let derived = self.derived.snapshot()?;
        let (applied_head, derived_head) = (applied.head().0, derived.head().0);
        let mut base = applied_head.min(derived_head);
        while base > 0 && applied.block_hash(base)? != derived.block_hash(base)? {
            base -= 1;
        }
        if base == applied_head && base == derived_head {
            return Ok(None);
        }
        let base_hash = derived
            .block_hash(base)?
            .ok_or_else(|| NodeError::Config(format!("derived block {base} missing")))?;
        let last = derived_head.min(base + keel_cluster::REPLACE_BLOCKS_MAX as u64);
        let mut blocks = Vec::new();
        for number in base + 1..=last {
            blocks.push(
                derived
                    .block(number)?
                    .ok_or_else(|| NodeError::Config(format!("derived block {number} missing")))?,
            );
        }
        Ok(Some(Adoption {
            base: (base, base_hash),
            blocks,
        }))
    }

    /// Stops sealing on a chain the L1 has replaced: the derived chain holds, at a height this
    /// one holds, a block with other transactions (a forced-only block past a deadline no
    /// batch met). A block that differs with the same transactions is an execution
    /// disagreement (I7): the comparator alerts on it, and no adoption would fix it.
    fn check_replaced(&self, head: &Snapshot) -> Result<(), SealError> {
        let Ok(derived) = self.derived.snapshot() else {
            return Ok(());
        };
        let from = self.safe.safe(head.head().0);
        match crate::l1::matched_height(head, &derived, from) {
            Ok((_, Some(divergence))) if divergence.replaced => {
                Err(SealError::Origin(OriginError::SafeReplaced {
                    number: divergence.number,
                    derived: divergence.derived,
                    applied: divergence.applied,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Stops sealing while the oldest block above the safe head has an origin more than half
    /// the sequencing window behind the L1 head.
    fn check_backlog(&self, head: &Snapshot) -> Result<(), SealError> {
        let (Some(latest), number) = (self.tracker.heads().latest, head.head().0) else {
            return Ok(());
        };
        let safe = self.safe.safe(number);
        if safe >= number {
            return Ok(());
        }
        let Ok(Some(oldest)) = head.header(safe + 1) else {
            return Ok(());
        };
        let oldest_origin = keel_primitives::origin_of(&oldest).number;
        let lag = latest.number.saturating_sub(oldest_origin);
        let limit = self.rollup.sequencing_window_blocks / 2;
        if lag > limit {
            return Err(SealError::Origin(OriginError::Backlog {
                oldest_origin,
                lag,
                limit,
            }));
        }
        Ok(())
    }

    /// The origin of the child of `parent` sealed at `timestamp`, and the forced transactions
    /// due in it.
    pub fn choose(
        &self,
        parent: &alloy::consensus::Header,
        timestamp: u64,
    ) -> Result<(L1Origin, Vec<(TxEnvelope, Address)>), SealError> {
        // The genesis commits to no origin in its header: the rollup config names it.
        let parent_origin = if parent.number == 0 {
            self.rollup.l1_start
        } else {
            keel_primitives::origin_of(parent)
        };
        let chosen = self.tracker.choose_origin(
            parent_origin,
            timestamp,
            self.confirmation_depth,
            self.rollup.max_sequencer_drift_s,
            self.forced.read_through(),
        )?;
        let cursor = keel_primitives::forced_cursor_of(parent).unwrap_or(u64::MAX);
        let due = self
            .forced
            .due(cursor, chosen.number)
            .map_err(|error| match error {
                keel_l1::ForcedError::BehindSafe {
                    cursor,
                    safe_cursor,
                } => SealError::Origin(OriginError::SafeAhead {
                    cursor,
                    safe_cursor,
                }),
            })?;
        let origin = L1Origin {
            number: chosen.number,
            hash: chosen.hash,
        };
        Ok((origin, due))
    }
}

impl Sealer {
    /// Builds the child of `parent`'s head from the pool and re-validates it from the same
    /// parent state (I4). Returns the validated block and the pool transactions found invalid.
    pub fn seal(
        &self,
        parent: &Snapshot,
    ) -> Result<(ExecutedBlock, Vec<(B256, TxError)>), SealError> {
        let started = Instant::now();
        let (head_number, head_hash) = parent.head();
        let failed = |reason: String| SealError::Build {
            number: head_number + 1,
            reason,
        };
        let parent_header = parent
            .header(head_number)
            .map_err(|error| failed(error.to_string()))?
            .ok_or_else(|| failed("head header missing".into()))?;
        let timestamp = self.clock.now_s().max(parent_header.timestamp);
        let (origin, forced) = match &self.origin {
            Some(rule) => {
                rule.check_replaced(parent)?;
                rule.check_backlog(parent)?;
                rule.choose(&parent_header, timestamp)?
            }
            None => (L1Origin::default(), Vec::new()),
        };
        let env = BlockEnvironment {
            parent_hash: head_hash,
            number: head_number + 1,
            timestamp,
            beneficiary: self.beneficiary,
            gas_limit: self.gas_limit,
            base_fee: self.chain.next_base_fee(&parent_header),
            prevrandao: keccak256(head_hash),
            extra_data: self.extra_data.clone(),
            origin,
            forced_cursor: keel_primitives::forced_cursor_of(&parent_header).unwrap_or(u64::MAX),
        };
        let mut best = self.mempool.best(env.base_fee);
        let outcome = build_block_with_forced(&self.chain, parent, env, &forced, &mut best)
            .map_err(|error| failed(error.to_string()))?;
        metrics::histogram!("keel_block_seal_seconds").record(started.elapsed().as_secs_f64());
        // I4: a block leaves the builder only as the validator re-executes it.
        let validated = validate_block(&self.chain, parent, &outcome.executed.output.block)
            .map_err(|error| {
                metrics::counter!("keel_block_validation_failures_total").increment(1);
                SealError::OwnBlockInvalid(error)
            })?;
        Ok((validated, outcome.invalid))
    }
}

/// Tells the pool, the RPC (waiters), health and metrics of each block that became durable on
/// this node, in order, from the store's stream of applied blocks.
#[derive(Clone)]
pub(crate) struct Announcer {
    pub(crate) store: Arc<Store>,
    pub(crate) mempool: Arc<Mempool>,
    pub(crate) rpc: Arc<RpcContext>,
    pub(crate) health: Arc<Health>,
    pub(crate) block_time: Duration,
    pub(crate) clock: Arc<dyn keel_primitives::Clock>,
    /// Progress lines while this node is far behind (crate::catch_up).
    pub(crate) catch_up: Arc<parking_lot::Mutex<crate::catch_up::CatchUp>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Announcer").finish_non_exhaustive()
    }
}

impl Announcer {
    /// Announces every block `stream` yields until the store is gone; a store that fails to
    /// read halts the node.
    pub(crate) async fn run(self, mut stream: BlockStream) {
        while let Some(event) = stream.next().await {
            let announced = event
                .map_err(NodeError::from)
                .and_then(|event| self.announce(&event));
            if let Err(error) = announced {
                tracing::error!(%error, "announcing an applied block failed");
                self.health
                    .halt(format!("announcing an applied block: {error}"));
                return;
            }
        }
    }

    /// Announces one applied block (or the head a snapshot installed).
    fn announce(&self, event: &ChainEvent) -> Result<(), NodeError> {
        let applied = event.block();
        let block = &applied.block;
        let head = self.store.snapshot()?;
        match event {
            ChainEvent::Applied(_) => self.mempool.on_block(block, &head),
            // The head did not move by one block: every sender's nonce may have changed.
            ChainEvent::Installed(_) | ChainEvent::Unwound(_) => {
                self.mempool.on_block(block, &head);
                self.mempool.resync_all(&head);
            }
        }
        drop(head);
        let transactions = block.transactions.len();
        let gas_used = block.header.gas_used;
        let number = block.number();
        self.rpc.on_applied(applied);
        self.health.block_committed();
        metrics::gauge!("keel_head_number").set(number as f64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!("keel_head_applied_timestamp_seconds").set(now.as_secs_f64());
        metrics::histogram!("keel_block_transactions").record(transactions as f64);
        metrics::counter!("keel_transactions_included_total").increment(transactions as u64);
        metrics::counter!("keel_gas_used_total").increment(gas_used);
        metrics::gauge!("keel_gas_per_second").set(gas_used as f64 / self.block_time.as_secs_f64());
        metrics::gauge!("keel_mempool_transactions").set(self.mempool.len() as f64);
        tracing::debug!(number, transactions, gas_used, "block durable");
        let report =
            self.catch_up
                .lock()
                .applied(number, block.header.timestamp, self.clock.now_ms());
        if let Some(report) = report {
            tracing::info!("{report}");
        }
        Ok(())
    }
}

/// The single-node producer.
pub(crate) struct Producer {
    pub(crate) sealer: Sealer,
    pub(crate) store: Arc<Store>,
    pub(crate) health: Arc<Health>,
    pub(crate) block_time: Duration,
    pub(crate) seal_on_start: bool,
}

impl Producer {
    /// Seals blocks until `stop` is set or production halts.
    pub(crate) fn run(self, stop: Arc<AtomicBool>) {
        let block_time = self.block_time;
        let mut next_slot = if self.seal_on_start {
            Instant::now()
        } else {
            Instant::now() + block_time
        };
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
            match self.produce() {
                Ok(()) => self.health.sealing_blocked(None),
                Err(NodeError::Seal(error)) if error.kind() != ErrorKind::Halt => {
                    // The L1 offers no origin yet (or a reorg took the parent's): this slot
                    // is skipped, and `/health` says why while it lasts.
                    metrics::counter!("keel_block_slots_skipped_total", "kind" => error.kind().name())
                        .increment(1);
                    self.health.sealing_blocked(Some(error.to_string()));
                }
                Err(error) => {
                    tracing::error!(%error, "block production halted");
                    self.health.halt(error.to_string());
                    return;
                }
            }
        }
    }

    /// Seals and persists one block; the announcer hears of it from the store's stream.
    fn produce(&self) -> Result<(), NodeError> {
        let started = Instant::now();
        let parent = self.store.snapshot()?;
        let sealed = self.sealer.seal(&parent);
        self.health.seal_took(started.elapsed());
        if let Err(error) = &sealed
            && error.kind() == ErrorKind::Reset
            && let Some(rule) = &self.sealer.origin
            && let Some(adoption) = rule.adoption(&parent)?
        {
            drop(parent);
            return self.adopt(adoption);
        }
        let (validated, invalid) = sealed?;
        self.sealer.mempool.drop_invalid(&invalid, &parent);
        drop(parent);
        self.store
            .commit_block(validated.output, &validated.changes)?;
        metrics::histogram!("keel_block_commit_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Replaces the unsafe blocks above `adoption.base` by the derived blocks, each validated
    /// (I4), and returns the replaced blocks' other transactions to the pool.
    fn adopt(&self, adoption: Adoption) -> Result<(), NodeError> {
        let head = self.store.snapshot()?.head().0;
        let removed = if adoption.base.0 < head {
            self.store.unwind_to(adoption.base.0, &[])?
        } else {
            Vec::new()
        };
        if !removed.is_empty() {
            metrics::counter!("keel_unsafe_blocks_replaced_total").increment(removed.len() as u64);
        }
        tracing::warn!(
            base = adoption.base.0,
            replaced = removed.len(),
            adopted = adoption.blocks.len(),
            "adopting the chain derived from the L1"
        );
        for block in &adoption.blocks {
            let parent = self.store.snapshot()?;
            let validated = validate_block(&self.sealer.chain, &parent, block)
                .map_err(|error| NodeError::Seal(SealError::OwnBlockInvalid(error)))?;
            drop(parent);
            self.store
                .commit_block(validated.output, &validated.changes)?;
        }
        return_to_pool(
            &self.sealer.chain,
            &self.store,
            &self.sealer.mempool,
            &removed,
        )
    }
}

/// Puts what replaced blocks (`removed`, newest first as `Store::unwind_to` returns them) held and the chain now lacks back in
/// the pool, so that a replacement loses no user's transaction the new chain can still hold:
/// the single node after an adoption, every cluster member after a `Replace` entry.
pub(crate) fn return_to_pool(
    chain: &keel_primitives::ChainSpec,
    store: &Store,
    mempool: &keel_mempool::Mempool,
    removed: &[Arc<keel_primitives::BlockWithReceipts>],
) -> Result<(), NodeError> {
    let head = store.snapshot()?;
    let Some(header) = head.header(head.head().0)? else {
        return Ok(());
    };
    let base_fee = chain.next_base_fee(&header);
    let mut returned = 0u64;
    for block in removed.iter().rev() {
        for (transaction, sender) in block.block.transactions.iter().zip(&block.block.senders) {
            if head.tx_location(transaction.tx_hash())?.is_none()
                && mempool
                    .add(transaction.clone(), *sender, &head, base_fee)
                    .is_ok()
            {
                returned += 1;
            }
        }
    }
    if returned > 0 {
        tracing::info!(returned, "transactions of replaced blocks back in the pool");
    }
    Ok(())
}
