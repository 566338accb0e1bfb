//! The state machine: committed entries applied to the chain store.
//!
//! ### Correctness
//! - **Compare-and-append (I3).** A block entry is applied only if its parent is the head and
//!   its number is the head's plus one. Anything else is recorded as
//!   [`ApplyOutcome::Rejected`]: a no-op that every node decides alike, so a stale leader
//!   cannot fork the chain even with a bug in its leader loop.
//! - **Validation (I4).** An applicable block is re-executed by `validate_block` from the
//!   head's state. A block that fails stops this node's apply with a storage error (openraft
//!   then stops the node): it never forks and never serves past its last valid block.
//! - **Durability.** The applied log id (and membership) is written in the transaction of the
//!   block it came with, or alone for entries without a block, except intake entries: their
//!   transactions go to the in-memory pool, so they write nothing. After a restart the
//!   applied position is the last entry before them, and openraft applies them again, which
//!   refills the pool. The intake entries before it are read back from the log before Raft
//!   starts ([`StateMachine::refill_pool`]), so what was pending survives a restart.
//! - **Snapshots** carry the durable applied position, never an intake entry's, and what the
//!   building node's pool held ([`crate::snapshot_data`]): a node installing one admits those
//!   against the image's head, then gets the intake entries after it from the log. What the
//!   pool took from entries after the position is admitted twice: the second time it is
//!   "already known", or pruned when the block that included it applies. The node keeps the
//!   pending part of the last snapshot it built or installed in its store, fsynced before
//!   openraft may purge the log up to it, and refills the pool from it after a restart: the
//!   intake entries a snapshot purged are not lost to this node.
//! - **Intake.** An intake entry's transactions go to the [`IntakeSink`] (the node's pool), in
//!   log order, against the head at that point of the log.
//! - **Snapshots have a head (R4).** A snapshot is a state image: the head block and the whole
//!   state at it, with the applied log id and membership in its meta.

use crate::{ApplyOutcome, IntakeRefusal, IntakeTransaction, NodeId, Proposal, TypeConfig};
use keel_execution::validate_block;
use keel_primitives::ChainSpec;
use keel_storage::Store;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::Mutex;
use std::io::Cursor;
use std::sync::Arc;

const APPLIED: &str = "raft_applied";
/// Bytes of intake entries a restarted node reads back into its pool: the pool's own limit.
pub const INTAKE_REFILL_BYTES_MAX: u64 = keel_primitives::limits::MEMPOOL_BYTES_MAX as u64;
const MEMBERSHIP: &str = "raft_membership";
/// What the pool held when this node last built or installed a snapshot (keel's codec of a list
/// of `IntakeTransaction`): the intake entries a snapshot lets openraft purge from the log are
/// refilled from here after a restart.
const SNAPSHOT_PENDING: &str = "raft_snapshot_pending";

type StorageResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// Why applying stopped.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    /// A committed block failed validation on this node (I4): this node halts.
    #[error("committed block failed validation: {0}")]
    InvalidBlock(#[from] keel_execution::BlockError),
    /// The chain store failed.
    #[error("store: {0}")]
    Storage(#[from] keel_storage::StorageError),
}

fn sm_read(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&error).into()
}

fn sm_write(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&error).into()
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// Where an intake entry's transactions go: the node's pool.
///
/// ### Correctness
/// - `admit` decides from `head` (the chain at this point of the log) and the pool only: no
///   clock, no randomness, so nodes that applied the same entries decide alike, up to the
///   transactions each pruned on its own (included, or found invalid by its builder).
/// - It returns at most one refusal per transaction, by position, in order.
/// - It never waits on I/O: it runs inside apply.
pub trait IntakeSink: Send + Sync + 'static {
    /// Puts `transactions` into the pool, validated against `head`; the refused ones.
    fn admit(
        &self,
        transactions: &[IntakeTransaction],
        head: &keel_storage::Snapshot,
    ) -> Vec<IntakeRefusal>;

    /// What the pool holds, each sender's in nonce order, at most `bytes_max` bytes of raw
    /// transactions: what a snapshot carries to a node that catches up by it.
    fn pending(&self, bytes_max: u64) -> Vec<IntakeTransaction>;
}

/// The block this node's builder validated before proposing it (I4), handed to this node's own
/// state machine so that applying it commits the validator's result instead of executing the
/// block a third time (build, validate, apply): on the leader, an apply that re-executes holds
/// every entry behind the block (the intake, the next block) for one more execution.
///
/// ### Correctness
/// - What [`OwnBlock::keep`] is given came out of `validate_block` on the state at the block's
///   parent: the same call `apply` would make. `apply` takes it only for the block with the
///   same hash applied on a head that is that parent (compare-and-append checks the parent
///   first), and a block hash commits to its parent and its state root, so the result is the
///   one re-execution would give. Any other block is validated as before.
/// - Followers never hold one: every block a follower applies is re-executed there (I4).
/// - It holds one block (the leader proposes one at a time, I3); a kept block that never
///   applies (leadership lost) is replaced by the next or dropped with the process.
#[derive(Clone, Default)]
pub struct OwnBlock(Arc<Mutex<Option<keel_execution::ExecutedBlock>>>);

impl std::fmt::Debug for OwnBlock {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().as_ref().map(|block| block.output.block.hash);
        formatter.debug_tuple("OwnBlock").field(&held).finish()
    }
}

impl OwnBlock {
    /// Keeps `validated`, the validator's result for a block about to be proposed.
    pub fn keep(&self, validated: keel_execution::ExecutedBlock) {
        *self.0.lock() = Some(validated);
    }

    /// The kept result for the block `hash`, if it is the one kept.
    fn take(&self, hash: alloy::primitives::B256) -> Option<keel_execution::ExecutedBlock> {
        let mut held = self.0.lock();
        if held.as_ref()?.output.block.hash != hash {
            return None;
        }
        held.take()
    }
}

/// The state machine over one node's chain store.
#[derive(Clone)]
pub struct StateMachine {
    chain: ChainSpec,
    store: Arc<Store>,
    current_snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    on_replaced: Option<OnReplaced>,
    intake: Option<Arc<dyn IntakeSink>>,
    /// The last entry applied by this instance, intake entries included: what `applied_state`
    /// reports while the process lives (openraft's contract); after a restart, the store's.
    applied_now: Arc<Mutex<Option<LogId<NodeId>>>>,
    own_block: OwnBlock,
}

/// Hears, after a `Replace` entry applied, the blocks it removed (newest first, as
/// `Store::unwind_to` returns them): the node
/// returns their transactions the new chain lacks to its pool, as a single node does when it
/// adopts the derived chain.
pub type OnReplaced = Arc<dyn Fn(&[Arc<keel_primitives::BlockWithReceipts>]) + Send + Sync>;

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StateMachine")
            .field("chain_id", &self.chain.chain_id)
            .field("on_replaced", &self.on_replaced.is_some())
            .field("intake", &self.intake.is_some())
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// A state machine applying to `store`, which follows `chain`.
    pub fn new(chain: ChainSpec, store: Arc<Store>) -> Self {
        Self {
            chain,
            store,
            current_snapshot: Arc::new(Mutex::new(None)),
            on_replaced: None,
            intake: None,
            applied_now: Arc::new(Mutex::new(None)),
            own_block: OwnBlock::default(),
        }
    }

    /// Takes the blocks this node's builder validated from `own_block` ([`OwnBlock`]).
    pub fn with_own_block(mut self, own_block: OwnBlock) -> Self {
        self.own_block = own_block;
        self
    }

    /// Hands each applied intake entry's transactions to `sink`. Without one, intake entries
    /// apply as no-ops (a node serving no pool).
    pub fn with_intake(mut self, sink: Arc<dyn IntakeSink>) -> Self {
        self.intake = Some(sink);
        self
    }

    /// Gives the pool back what the intake entries up to the durable applied position brought,
    /// before Raft starts (openraft applies the entries after it again on its own). A restart
    /// would otherwise lose the transactions still pending from intake entries older than the
    /// last block: on every node at once when the whole cluster restarts. The entries a
    /// snapshot let openraft purge come back from that snapshot's pool, kept in the store.
    ///
    /// The entries are the newest ones in `log` worth at most `INTAKE_REFILL_BYTES_MAX` (the
    /// pool's own byte limit: it could not hold more), admitted in log order against the head
    /// now, not the head at their point of the log: what a later block included is refused
    /// ("nonce too low") and stays out, the rest is pending again. Returns the transactions
    /// read and the ones the pool took.
    pub fn refill_pool(&self, log: &crate::LogStore) -> StorageResult<(usize, usize)> {
        let Some(sink) = &self.intake else {
            return Ok((0, 0));
        };
        let view = self.store.snapshot().map_err(sm_read)?;
        let (Some(applied), _) = Self::read_applied(&view)? else {
            return Ok((0, 0));
        };
        // The last snapshot's pool first: it is older than every entry the log still holds
        // past it (what a later entry replaced or a block included is refused again after).
        let snapshot_pool: Option<Vec<IntakeTransaction>> =
            match view.meta(SNAPSHOT_PENDING).map_err(sm_read)? {
                Some(bytes) => Some(crate::codec::decode(&bytes).map_err(sm_read)?),
                None => None,
            };
        let logged = log.intake_entries(applied.index, INTAKE_REFILL_BYTES_MAX)?;
        let (mut read, mut taken) = (0, 0);
        for transactions in snapshot_pool
            .into_iter()
            .chain(logged.into_iter().map(|(_, transactions)| transactions))
        {
            let refused = sink.admit(&transactions, &view);
            read += transactions.len();
            taken += transactions.len() - refused.len();
        }
        Ok((read, taken))
    }

    /// Calls `hook` with the blocks each applied `Replace` entry removed.
    pub fn on_replaced(mut self, hook: OnReplaced) -> Self {
        self.on_replaced = Some(hook);
        self
    }

    /// Applies to the store, outside Raft, every entry `log` holds up to its durable commit
    /// index that the store has not applied durably: what `Raft::new` does when a node starts.
    /// Disaster recovery calls it before it drops the log, since a member's chain store defers
    /// its blocks' fsync to the log (`BlockDurability::Deferred`). Ends with an fsynced write.
    /// Returns the entries applied.
    ///
    /// ### Correctness
    /// Only committed entries (the log's fsynced commit index, which openraft saves before it
    /// applies) are applied, in log order, by the same `apply` Raft calls: the blocks are the
    /// ones every node applied. A log that no longer holds the entries after the store's
    /// position (purged past it, which a snapshot's fsync of the store rules out) is an error,
    /// never a gap.
    pub async fn apply_logged(&mut self, log: &mut crate::LogStore) -> StorageResult<u64> {
        use openraft::RaftLogReader;
        use openraft::storage::RaftLogStorage;
        /// Entries read from the log at a time (openraft's own re-apply reads 64).
        const CHUNK: u64 = 64;
        let view = self.store.snapshot().map_err(sm_read)?;
        let (applied, _) = Self::read_applied(&view)?;
        drop(view);
        let Some(committed) = log.read_committed().await? else {
            return Ok(0);
        };
        let mut next = applied.map_or(0, |id| id.index + 1);
        let start = next;
        while next <= committed.index {
            let end = committed.index.min(next + CHUNK - 1);
            let entries = log.try_get_log_entries(next..=end).await?;
            let indexes: Vec<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
            if indexes != (next..=end).collect::<Vec<_>>() {
                return Err(sm_read(AnyError(format!(
                    "the Raft log does not hold entries {next}..={end} to apply (found {indexes:?})"
                ))));
            }
            self.apply(entries).await?;
            next = end + 1;
        }
        // The applied position is in the last block's transaction, maybe deferred: fsync it.
        self.store.sync().map_err(sm_write)?;
        Ok(next - start)
    }

    /// Disaster recovery: forgets which Raft log (and membership) the chain was applied from,
    /// keeping every block and the state, so that this store can found a new cluster after the
    /// old one lost its quorum for good. The caller removes the old Raft log file too.
    pub fn forget_raft_position(store: &Store) -> Result<(), keel_storage::StorageError> {
        let none: Option<LogId<NodeId>> = None;
        let applied = crate::codec::encode(&none).expect("serialises");
        let membership = crate::codec::encode(&Membership::default()).expect("serialises");
        store.put_meta(&[(APPLIED, applied), (MEMBERSHIP, membership)])
    }

    fn read_applied(
        snapshot: &keel_storage::Snapshot,
    ) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let applied = match snapshot.meta(APPLIED).map_err(sm_read)? {
            Some(bytes) => crate::codec::decode(&bytes).map_err(sm_read)?,
            None => None,
        };
        let membership = match snapshot.meta(MEMBERSHIP).map_err(sm_read)? {
            Some(bytes) => crate::codec::decode(&bytes).map_err(sm_read)?,
            None => Membership::default(),
        };
        Ok((applied, membership))
    }

    fn applied_meta(log_id: &LogId<NodeId>) -> StorageResult<(&'static str, Vec<u8>)> {
        Ok((
            APPLIED,
            crate::codec::encode(&Some(*log_id)).map_err(sm_write)?,
        ))
    }

    /// Applies one block entry: compare-and-append, validate, persist with the log id.
    async fn apply_block(
        &self,
        log_id: &LogId<NodeId>,
        block: &keel_primitives::SealedBlock,
    ) -> StorageResult<ApplyOutcome> {
        let head = self.store.snapshot().map_err(sm_read)?;
        let (head_number, head_hash) = head.head();
        let applied = [Self::applied_meta(log_id)?];
        if block.header.parent_hash != head_hash || block.number() != head_number + 1 {
            drop(head);
            self.store.put_meta(&applied).map_err(sm_write)?;
            // Each is a leader proposing on a head that is not the chain's: a stale leader
            // racing the real one (the race behind Base's June 2026 restart), counted by kind.
            let reason = if block.number() <= head_number {
                "height_taken"
            } else if block.number() > head_number + 1 {
                "gap"
            } else {
                "other_parent"
            };
            metrics::counter!("keel_raft_entries_refused_total", "reason" => reason).increment(1);
            tracing::warn!(number = block.number(), parent = %block.header.parent_hash, head = %head_hash, reason, "block entry not on the head: recorded as a no-op");
            return Ok(ApplyOutcome::Rejected {
                number: block.number(),
                parent: block.header.parent_hash,
                head: head_hash,
            });
        }
        let executed = match self.own_block.take(block.hash) {
            // Validated from this very head before it was proposed (OwnBlock's contract).
            Some(validated) => {
                metrics::counter!("keel_raft_own_blocks_applied_total").increment(1);
                validated
            }
            None => {
                let started = std::time::Instant::now();
                let validated = validate_block(&self.chain, &head, block).map_err(|error| {
                    tracing::error!(%error, number = block.number(), "committed block failed validation; this node halts");
                    StorageError::from(StorageIOError::apply(*log_id, &StateMachineError::from(error)))
                })?;
                metrics::histogram!("keel_block_validation_seconds")
                    .record(started.elapsed().as_secs_f64());
                validated
            }
        };
        drop(head);
        // The store's stream of applied blocks tells every consumer (RPC, pool, batcher).
        let started = std::time::Instant::now();
        self.store
            .commit_block_with(executed.output, &executed.changes, &applied)
            .map_err(|error| StorageError::from(StorageIOError::apply(*log_id, &error)))?;
        metrics::histogram!("keel_block_commit_seconds").record(started.elapsed().as_secs_f64());
        Ok(ApplyOutcome::Applied {
            number: block.number(),
            hash: block.hash,
        })
    }
}

impl StateMachine {
    /// Applies a replacement: if the chain holds `base`, unwinds to it and applies `blocks`
    /// (each validated, I4), with the log id written in the last transaction; else a no-op
    /// every node decides alike (as compare-and-append does for a block).
    async fn apply_replace(
        &self,
        log_id: &LogId<NodeId>,
        base: (u64, alloy::primitives::B256),
        blocks: &[keel_primitives::SealedBlock],
    ) -> StorageResult<ApplyOutcome> {
        let view = self.store.snapshot().map_err(sm_read)?;
        let head = view.head();
        let holds_base =
            base.0 <= head.0 && view.block_hash(base.0).map_err(sm_read)? == Some(base.1);
        drop(view);
        let applied = [Self::applied_meta(log_id)?];
        if !holds_base {
            self.store.put_meta(&applied).map_err(sm_write)?;
            metrics::counter!("keel_raft_entries_refused_total", "reason" => "replacement_off_chain")
                .increment(1);
            tracing::warn!(
                base = base.0,
                "replacement not on this chain: recorded as a no-op"
            );
            return Ok(ApplyOutcome::Rejected {
                number: base.0 + 1,
                parent: base.1,
                head: head.1,
            });
        }
        let fail = |error: &dyn std::error::Error| {
            StorageError::from(StorageIOError::apply(*log_id, &AnyError(error.to_string())))
        };
        // With no block to apply, the unwind itself records the entry.
        let unwind_meta: &[(&str, Vec<u8>)] = if blocks.is_empty() { &applied } else { &[] };
        let removed_blocks = if base.0 < head.0 {
            self.store
                .unwind_to(base.0, unwind_meta)
                .map_err(|error| fail(&error))?
        } else {
            if blocks.is_empty() {
                self.store.put_meta(&applied).map_err(sm_write)?;
            }
            Vec::new()
        };
        let removed = removed_blocks.len() as u64;
        if removed > 0 {
            metrics::counter!("keel_unsafe_blocks_replaced_total").increment(removed);
            tracing::warn!(
                base = base.0,
                removed,
                "unsafe blocks replaced by derived blocks"
            );
        }
        let mut new_head = base;
        for (index, block) in blocks.iter().enumerate() {
            let parent = self.store.snapshot().map_err(sm_read)?;
            let executed = validate_block(&self.chain, &parent, block).map_err(|error| {
                tracing::error!(%error, number = block.number(), "a derived block failed validation; this node halts");
                StorageError::from(StorageIOError::apply(*log_id, &StateMachineError::from(error)))
            })?;
            drop(parent);
            let meta: &[(&str, Vec<u8>)] = if index + 1 == blocks.len() {
                &applied
            } else {
                &[]
            };
            self.store
                .commit_block_with(executed.output, &executed.changes, meta)
                .map_err(|error| StorageError::from(StorageIOError::apply(*log_id, &error)))?;
            new_head = (block.number(), block.hash);
        }
        if let Some(hook) = &self.on_replaced
            && !removed_blocks.is_empty()
        {
            hook(&removed_blocks);
        }
        Ok(ApplyOutcome::Replaced {
            base: base.0,
            removed,
            head: new_head,
        })
    }
}

/// An error carried as its message, where openraft wants an `Error` value.
#[derive(Debug)]
struct AnyError(String);

impl std::fmt::Display for AnyError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for AnyError {}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // One read view: the image and the applied position describe the same instant.
        let view = self.store.snapshot().map_err(sm_read)?;
        let (applied, membership) = Self::read_applied(&view)?;
        let image = view.export().map_err(sm_read)?;
        let pending = match &self.intake {
            Some(sink) => sink.pending(INTAKE_REFILL_BYTES_MAX),
            None => Vec::new(),
        };
        let data = crate::snapshot_data::encode_snapshot(&image, &pending).map_err(sm_read)?;
        // Durable before openraft purges the log up to this snapshot: the intake entries it
        // purges refill the pool from here after a restart.
        let kept = crate::codec::encode(&pending).map_err(sm_write)?;
        self.store
            .put_meta(&[(SNAPSHOT_PENDING, kept)])
            .map_err(sm_write)?;
        let (number, hash) = view.head();
        let snapshot_id = match applied {
            Some(log_id) => format!(
                "{}-{}-{}-{number}-{hash}",
                log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
            ),
            None => format!("none-{number}-{hash}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        *self.current_snapshot.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        let view = self.store.snapshot().map_err(sm_read)?;
        let (durable, membership) = Self::read_applied(&view)?;
        Ok((durable.max(*self.applied_now.lock()), membership))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ApplyOutcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let outcome = match entry.payload {
                EntryPayload::Blank => {
                    self.store
                        .put_meta(&[Self::applied_meta(&log_id)?])
                        .map_err(sm_write)?;
                    ApplyOutcome::Noop
                }
                EntryPayload::Membership(membership) => {
                    let stored = Membership::new(Some(log_id), membership);
                    let encoded = crate::codec::encode(&stored).map_err(sm_write)?;
                    self.store
                        .put_meta(&[Self::applied_meta(&log_id)?, (MEMBERSHIP, encoded)])
                        .map_err(sm_write)?;
                    ApplyOutcome::Noop
                }
                EntryPayload::Normal(Proposal::Block(block)) => {
                    self.apply_block(&log_id, &block).await?
                }
                EntryPayload::Normal(Proposal::Replace { base, blocks }) => {
                    self.apply_replace(&log_id, base, &blocks).await?
                }
                EntryPayload::Normal(Proposal::Intake(transactions)) => {
                    let refused = match &self.intake {
                        Some(sink) => {
                            let head = self.store.snapshot().map_err(sm_read)?;
                            sink.admit(&transactions, &head)
                        }
                        None => Vec::new(),
                    };
                    ApplyOutcome::Intake { refused }
                }
            };
            outcomes.push(outcome);
            *self.applied_now.lock() = Some(log_id);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let unreadable = |error: &dyn std::error::Error| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                &AnyError(error.to_string()),
            ))
        };
        let read = crate::snapshot_data::decode_snapshot(&data).map_err(|e| unreadable(&e))?;
        let applied = crate::codec::encode(&meta.last_log_id).map_err(sm_write)?;
        let membership = crate::codec::encode(&meta.last_membership).map_err(sm_write)?;
        let kept = crate::codec::encode(&read.pending).map_err(sm_write)?;
        self.store
            .import(
                read.image,
                &[
                    (APPLIED, applied),
                    (MEMBERSHIP, membership),
                    (SNAPSHOT_PENDING, kept),
                ],
            )
            .map_err(|e| unreadable(&e))?;
        // The pool of the node that built it, against the image's head: what the cluster
        // accepted and had not included is pending here too.
        if let Some(sink) = &self.intake
            && !read.pending.is_empty()
        {
            let head = self.store.snapshot().map_err(sm_read)?;
            let refused = sink.admit(&read.pending, &head);
            tracing::info!(
                carried = read.pending.len(),
                pending = read.pending.len() - refused.len(),
                "the snapshot's pending transactions are in the pool"
            );
        }
        *self.current_snapshot.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        *self.applied_now.lock() = meta.last_log_id;
        metrics::counter!("keel_raft_snapshots_installed_total").increment(1);
        tracing::info!(snapshot = %meta.snapshot_id, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.current_snapshot.lock().clone().map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
