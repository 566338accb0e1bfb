//! Derivation: the L2 chain from the L1 alone (docs/protocol.md). One engine for every node:
//! `keel verify` derives into the store it serves; a sequencer or cluster node derives into a
//! store of its own beside its Raft-applied one and compares the two (I7).
//!
//! ```text
//!  L1Traversal ──► L1Retrieval ──► frames ──► ChannelAssembler ──► ChannelReader ──► batches
//!  (next L1 block,   (inbox txs:      (Holocene      (decompress,        │
//!   linked by        batcher's and    strict order)   decode)             ▼
//!   parent hash)     forced ones) ──► ForcedInbox ──────────────► BatchValidator + execution
//!                                         │                        (BlockExecutor, as sealing)
//!                                         └─ due past the window ─► forced-only blocks
//!                                                                          │
//!                                              derived store ◄─────────────┘ commit, cursor
//! ```
//!
//! The stages are named after kona's (and the OP Stack spec's), simplified where keel needs
//! less: one open channel at a time, no span batches, no deposits.
//!
//! ### Restart and reset
//! After each L1 block the pipeline writes its cursor (the L1 block, the open channel, the
//! forced queue, the finality points) into the derived store; every 16th L1 block it keeps a
//! checkpoint. A restart resumes from the cursor. An L1 reorg (a new block whose parent is not
//! the cursor's block, or a block gone when read by hash) is a reset: the pipeline goes back
//! to the newest checkpoint whose L1 block is still canonical, unwinds the derived store to
//! that checkpoint's safe head, and derives again from there (kona PR #19344: never a retry).

mod channel;

use crate::codec::{CodecError, DropReason, Frame};
use crate::forced::{ForcedInbox, ForcedTransaction, StoredForced, decode_forced_payload};
use crate::{Batch, BatchBlock, L1BlockRef, L1Client, L1Error, L1Head, decode_batches, decompress};
use alloy::consensus::TxEnvelope;
use alloy::consensus::transaction::SignerRecoverable;
use alloy::primitives::{Address, B256, Bytes, keccak256};
use channel::{Assembled, ChannelAssembler};
use keel_execution::{BlockEnvironment, BlockExecutor};
use keel_primitives::{
    ChainSpec, ErrorKind, L1Origin, RollupConfig, forced_cursor_of, limits, origin_of,
};
use keel_storage::{Snapshot, StorageError, Store};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// L1 blocks between checkpoints.
pub const CHECKPOINT_EVERY_BLOCKS: u64 = 16;
/// Checkpoints kept: together they reach back 256 L1 blocks, past Ethereum's finality.
pub const CHECKPOINTS_KEPT: usize = 16;
/// Finality points kept (an L1 block and the safe head after it): more than the L1 blocks
/// between `latest` and `finalized` on Ethereum (about 64); past it, finality advances late.
pub const FINALITY_POINTS_MAX: usize = 8_192;
const _: () = assert!(CHECKPOINT_EVERY_BLOCKS * CHECKPOINTS_KEPT as u64 >= 128);

const CURSOR_KEY: &str = "derive_cursor";
const CHECKPOINTS_KEY: &str = "derive_checkpoints";
/// The format byte of the stored cursor and checkpoints.
const CURSOR_FORMAT: u8 = 1;

/// Why derivation stopped a step, classed by what the caller does.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    /// The L1 failed or moved (its own class: a block gone is a reset).
    #[error(transparent)]
    L1(#[from] L1Error),
    /// The L1 no longer holds a block derivation read: an L1 reorg.
    #[error("L1 reorg at block {number}: derivation read {expected}, the L1 now holds {found}")]
    Reorg {
        /// The height whose block changed.
        number: u64,
        /// The hash derivation read there.
        expected: B256,
        /// The hash the L1 holds there now (zero: none).
        found: B256,
    },
    /// The derived store failed.
    #[error("derived store: {0}")]
    Storage(#[from] StorageError),
    /// Executing a derived block failed to read the state: the store is damaged.
    #[error("executing a derived block: {0}")]
    Execution(String),
    /// The rollup config's start block is not on the L1 at hand.
    #[error(
        "the rollup's L1 start block {number} is {found} on this L1, the config names {expected}"
    )]
    WrongStart {
        /// Its number.
        number: u64,
        /// The config's hash.
        expected: B256,
        /// The L1's.
        found: B256,
    },
    /// The stored cursor does not decode.
    #[error("derivation cursor: {0}")]
    Cursor(String),
}

impl DeriveError {
    /// What the caller does.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::L1(error) => error.kind(),
            Self::Reorg { .. } => ErrorKind::Reset,
            Self::Storage(error) => error.kind(),
            Self::Execution(_) | Self::WrongStart { .. } | Self::Cursor(_) => ErrorKind::Halt,
        }
    }
}

/// Where derivation stands, as the node reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DerivationStatus {
    /// The last L1 block derived from.
    pub l1: Option<L1BlockRef>,
    /// The derived chain's head.
    pub safe: u64,
    /// The last derived block from L1 blocks the L1 reports finalized.
    pub finalized: u64,
    /// Resets since the start.
    pub resets: u64,
    /// Why derivation stopped for good, if it did.
    pub halted: bool,
}

/// The pipeline's position, stored after every L1 block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// The last L1 block derived from.
    l1: L1BlockRef,
    /// The channel being assembled.
    assembler: ChannelAssembler,
    /// Forced transactions read and not consumed by the safe chain.
    forced: Vec<StoredForced>,
    /// The safe chain's forced cursor.
    forced_safe_cursor: u64,
    /// `(L1 block, safe head after it)` for L1 blocks not known final.
    finality: VecDeque<(u64, u64)>,
    /// The last derived block known final.
    finalized: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    cursor: Cursor,
    /// The safe head when the cursor was taken.
    safe: (u64, B256),
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![CURSOR_FORMAT]).expect("the cursor serialises")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DeriveError> {
    match bytes.split_first() {
        Some((&CURSOR_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|error| DeriveError::Cursor(error.to_string()))
        }
        _ => Err(DeriveError::Cursor("unknown format".into())),
    }
}

/// The batches of one batch-inbox transaction read on its own: its frames assembled (strict
/// order, as derivation does) into the channels they complete, each decompressed within its
/// bound and decoded. What derivation does with a transaction's data, without the L1 and
/// without the chain: the fuzz target's body, and a tool for operators.
pub fn decode_batch_transaction(data: &[u8]) -> Result<Vec<Batch>, CodecError> {
    let mut assembler = ChannelAssembler::default();
    let mut batches = Vec::new();
    for frame in Frame::parse_all(data)? {
        if let (Assembled::Complete(channel), _) = assembler.push(frame, 0, 1) {
            batches.extend(decode_batches(&decompress(&channel)?)?);
        }
    }
    Ok(batches)
}

/// Why one batch block is not derived: the rest of its batch is dropped.
#[derive(Debug)]
struct Invalid(String);

/// The derivation pipeline over one derived store.
pub struct Deriver {
    rollup: RollupConfig,
    chain: ChainSpec,
    client: Arc<dyn L1Client>,
    store: Arc<Store>,
    forced: Arc<ForcedInbox>,
    /// The rollup's L1 start block, as the L1 holds it.
    start: L1BlockRef,
    cursor: Cursor,
    /// L1 blocks derived from, newest last, at most `sequencing_window_blocks + 1`.
    window: VecDeque<L1BlockRef>,
    status: tokio::sync::watch::Sender<DerivationStatus>,
    resets: u64,
}

impl std::fmt::Debug for Deriver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Deriver")
            .field("l1", &self.cursor.l1.number)
            .finish_non_exhaustive()
    }
}

fn dropped(reason: DropReason, detail: &str) {
    metrics::counter!("keel_derivation_dropped_total", "reason" => reason.label()).increment(1);
    tracing::warn!(
        reason = reason.label(),
        detail,
        "derivation dropped L1 input"
    );
}

impl Deriver {
    /// Opens derivation over `store` (resuming from its cursor, or starting at the rollup's
    /// L1 start block), reading the L1 through `client` and keeping the forced queue in
    /// `forced`.
    pub async fn open(
        rollup: RollupConfig,
        chain: ChainSpec,
        client: Arc<dyn L1Client>,
        store: Arc<Store>,
        forced: Arc<ForcedInbox>,
    ) -> Result<Self, DeriveError> {
        let start = client
            .block_by_number(rollup.l1_start.number)
            .await?
            .ok_or(L1Error::BlockGone {
                hash: rollup.l1_start.hash,
            })?;
        if start.hash != rollup.l1_start.hash {
            return Err(DeriveError::WrongStart {
                number: start.number,
                expected: rollup.l1_start.hash,
                found: start.hash,
            });
        }
        let snapshot = store.snapshot()?;
        let cursor = match snapshot.meta(CURSOR_KEY)? {
            Some(bytes) => decode(&bytes)?,
            None => Self::genesis_cursor(start),
        };
        drop(snapshot);
        let (status, _) = tokio::sync::watch::channel(DerivationStatus::default());
        let mut deriver = Self {
            rollup,
            chain,
            client,
            store,
            forced,
            start,
            cursor,
            window: VecDeque::new(),
            status,
            resets: 0,
        };
        deriver.restore_forced()?;
        deriver.publish();
        Ok(deriver)
    }

    fn genesis_cursor(start: L1BlockRef) -> Cursor {
        Cursor {
            l1: start,
            assembler: ChannelAssembler::default(),
            forced: Vec::new(),
            forced_safe_cursor: 0,
            finality: VecDeque::new(),
            finalized: 0,
        }
    }

    /// Loads the cursor's forced queue into the shared inbox, dropping what the store's head
    /// consumed already (a crash between a derived block and the cursor after its L1 block).
    fn restore_forced(&mut self) -> Result<(), DeriveError> {
        let head_cursor = self.head_forced_cursor()?;
        let mut entries = Vec::new();
        for stored in &self.cursor.forced {
            if stored.index < head_cursor {
                continue;
            }
            let entry = ForcedTransaction::load(stored, self.chain.chain_id)
                .map_err(|error| DeriveError::Cursor(error.to_string()))?;
            entries.push(entry);
        }
        let safe_cursor = head_cursor.max(self.cursor.forced_safe_cursor);
        self.forced
            .reset(entries, safe_cursor, Some(self.cursor.l1.number));
        Ok(())
    }

    fn head_forced_cursor(&self) -> Result<u64, DeriveError> {
        let snapshot = self.store.snapshot()?;
        let header = Self::head_header(&snapshot)?;
        forced_cursor_of(&header)
            .ok_or_else(|| DeriveError::Cursor("the head's forced cursor overflows".into()))
    }

    fn head_header(snapshot: &Snapshot) -> Result<alloy::consensus::Header, DeriveError> {
        let (number, _) = snapshot.head();
        snapshot.header(number)?.ok_or_else(|| {
            DeriveError::Storage(StorageError::Corrupt(format!(
                "head header {number} missing"
            )))
        })
    }

    /// Where derivation stands, updated after every L1 block.
    pub fn status(&self) -> tokio::sync::watch::Receiver<DerivationStatus> {
        self.status.subscribe()
    }

    /// The derived store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn publish(&self) {
        let safe = self
            .store
            .snapshot()
            .map(|snapshot| snapshot.head().0)
            .unwrap_or(0);
        let status = DerivationStatus {
            l1: Some(self.cursor.l1),
            safe,
            finalized: self.cursor.finalized.min(safe),
            resets: self.resets,
            halted: false,
        };
        metrics::gauge!("keel_derivation_l1_block").set(status.l1.map_or(0, |l1| l1.number) as f64);
        metrics::gauge!("keel_derived_head").set(safe as f64);
        // Forced transactions not in the safe chain yet, and how many L1 blocks the oldest has
        // waited (the window is the rollup's forced-inclusion window).
        let (pending, oldest) = self.forced.pending();
        metrics::gauge!("keel_forced_pending").set(pending as f64);
        let age = oldest.map_or(0, |oldest| self.cursor.l1.number.saturating_sub(oldest));
        metrics::gauge!("keel_forced_oldest_age_l1_blocks").set(age as f64);
        self.status.send_replace(status);
    }

    /// Runs until `stop` turns true: a step per L1 block, waiting `poll` when caught up,
    /// resetting on a reorg, backing off on L1 trouble. Halts (and says so in its status) on
    /// an error that retrying cannot fix, and returns that error; `None` when stopped.
    pub async fn run(
        mut self,
        poll: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<DeriveError> {
        let mut backoff = poll;
        loop {
            if *stop.borrow() {
                return None;
            }
            let wait = match self.step().await {
                Ok(true) => {
                    backoff = poll;
                    continue;
                }
                Ok(false) => poll,
                Err(error) => match error.kind() {
                    ErrorKind::Retry => {
                        metrics::counter!("keel_derivation_errors_total", "kind" => "retry")
                            .increment(1);
                        tracing::debug!(%error, "derivation waits for the L1");
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        backoff
                    }
                    ErrorKind::Reset => {
                        tracing::warn!(%error, "derivation resets");
                        if let Err(error) = self.reset().await {
                            if error.kind() == ErrorKind::Halt {
                                self.halt(&error);
                                return Some(error);
                            }
                            tracing::warn!(%error, "derivation reset failed; trying again");
                        }
                        poll
                    }
                    ErrorKind::Halt => {
                        self.halt(&error);
                        return Some(error);
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn halt(&self, error: &DeriveError) {
        tracing::error!(%error, "derivation halted");
        metrics::gauge!("keel_derivation_halted").set(1.0);
        self.status.send_modify(|status| status.halted = true);
    }

    /// Derives from the next L1 block, if there is one. `Ok(false)` when caught up.
    pub async fn step(&mut self) -> Result<bool, DeriveError> {
        let number = self.cursor.l1.number + 1;
        let Some(block) = self.client.block_by_number(number).await? else {
            // Caught up; unless the L1 reorged to a shorter chain under the cursor.
            let held = self.client.block_by_number(self.cursor.l1.number).await?;
            if held.map(|block| block.hash) != Some(self.cursor.l1.hash) {
                return Err(DeriveError::Reorg {
                    number: self.cursor.l1.number,
                    expected: self.cursor.l1.hash,
                    found: held.map(|block| block.hash).unwrap_or_default(),
                });
            }
            return Ok(false);
        };
        if block.parent_hash != self.cursor.l1.hash {
            return Err(DeriveError::Reorg {
                number: self.cursor.l1.number,
                expected: self.cursor.l1.hash,
                found: block.parent_hash,
            });
        }
        let inboxes = [self.rollup.batch_inbox, self.rollup.force_inbox];
        let transactions = self.client.inbox_transactions(&block, &inboxes).await?;
        self.remember(block);
        if let Some(reason) = self
            .cursor
            .assembler
            .expire(number, self.rollup.channel_timeout_blocks)
        {
            dropped(reason, "open channel");
        }
        // Forced transactions first: every one of this L1 block is due in a block whose
        // origin is this block, and a batch in this very block may hold such a block.
        let mut forced = Vec::new();
        let mut next_forced = self.forced.next_index();
        let force_inbox = self.rollup.force_inbox;
        for transaction in transactions.iter().filter(|tx| tx.to == force_inbox) {
            if !transaction.succeeded {
                continue;
            }
            match decode_forced_payload(&transaction.input, self.chain.chain_id) {
                Ok((signed, sender)) => {
                    forced.push(ForcedTransaction {
                        index: next_forced,
                        l1_block: number,
                        transaction: signed,
                        sender,
                    });
                    next_forced += 1;
                }
                Err(error) => dropped(error.reason, &error.detail),
            }
        }
        if let Err(error) = self.forced.read(number, forced) {
            // The queue is full: the L1 is being flooded past what any window could carry.
            dropped(error.reason, &error.detail);
            self.forced
                .read(number, Vec::new())
                .expect("nothing to add");
        }
        // Then the batch inbox: the batcher's successful transactions only.
        let batch_inbox = self.rollup.batch_inbox;
        for transaction in transactions.iter().filter(|tx| tx.to == batch_inbox) {
            if transaction.from != self.rollup.batcher {
                dropped(DropReason::NotBatcher, &transaction.from.to_string());
                continue;
            }
            if !transaction.succeeded {
                dropped(DropReason::Failed, &transaction.hash.to_string());
                continue;
            }
            // A blob transaction's data is its blobs, each read as one calldata would be
            // (its calldata is ignored); a plain one's is its calldata.
            let datas: Vec<Bytes> = if transaction.blob_hashes.is_empty() {
                vec![transaction.input.clone()]
            } else {
                let blobs = self.client.blobs(&block, &transaction.blob_hashes).await?;
                let mut datas = Vec::with_capacity(blobs.len());
                for blob in blobs {
                    match crate::blob::decode_blob(blob.as_slice()) {
                        Ok(data) => datas.push(Bytes::from(data)),
                        Err(error) => dropped(error.reason, &error.detail),
                    }
                }
                datas
            };
            for data in datas {
                let frames = match Frame::parse_all(&data) {
                    Ok(frames) => frames,
                    Err(error) => {
                        dropped(error.reason, &error.detail);
                        continue;
                    }
                };
                for frame in frames {
                    let (assembled, drop) = self.cursor.assembler.push(
                        frame,
                        number,
                        self.rollup.channel_timeout_blocks,
                    );
                    if let Some(reason) = drop {
                        dropped(reason, "frame");
                    }
                    if let Assembled::Complete(channel) = assembled {
                        self.read_channel(&channel, &block).await?;
                    }
                }
            }
        }
        self.extend_for_forced(&block).await?;
        self.finish_block(block).await?;
        Ok(true)
    }

    fn remember(&mut self, block: L1BlockRef) {
        if self
            .window
            .back()
            .is_some_and(|last| last.number + 1 != block.number)
        {
            self.window.clear();
        }
        self.window.push_back(block);
        while self.window.len() as u64 > self.rollup.sequencing_window_blocks + 1 {
            self.window.pop_front();
        }
    }

    /// The canonical L1 block at `number`, at most the block being derived from.
    async fn l1_block(&self, number: u64) -> Result<L1BlockRef, DeriveError> {
        if number == self.start.number {
            return Ok(self.start);
        }
        if let Some(oldest) = self.window.front()
            && number >= oldest.number
            && let Some(found) = self.window.get((number - oldest.number) as usize)
        {
            return Ok(*found);
        }
        Ok(self
            .client
            .block_by_number(number)
            .await?
            .ok_or(L1Error::BlockGone { hash: B256::ZERO })?)
    }

    async fn read_channel(
        &mut self,
        channel: &[u8],
        inclusion: &L1BlockRef,
    ) -> Result<(), DeriveError> {
        let batches = match decompress(channel).and_then(|payload| decode_batches(&payload)) {
            Ok(batches) => batches,
            Err(CodecError { reason, detail }) => {
                dropped(reason, &detail);
                return Ok(());
            }
        };
        for batch in batches {
            self.apply_batch(&batch, inclusion).await?;
        }
        Ok(())
    }

    async fn apply_batch(
        &mut self,
        batch: &Batch,
        inclusion: &L1BlockRef,
    ) -> Result<(), DeriveError> {
        let snapshot = self.store.snapshot()?;
        let (safe, _) = snapshot.head();
        if batch.last_number() <= safe {
            dropped(
                DropReason::BatchPast,
                &format!("blocks {}..={}", batch.first_number, batch.last_number()),
            );
            return Ok(());
        }
        if batch.first_number > safe + 1 {
            dropped(
                DropReason::BatchFuture,
                &format!(
                    "batch starts at {}, the safe head is {safe}",
                    batch.first_number
                ),
            );
            return Ok(());
        }
        let parent = snapshot.block_hash(batch.first_number - 1)?;
        if parent != Some(batch.parent_hash) {
            dropped(
                DropReason::BatchFuture,
                &format!(
                    "batch parent {} is not the derived chain's",
                    batch.parent_hash
                ),
            );
            return Ok(());
        }
        drop(snapshot);
        let skip = (safe + 1 - batch.first_number) as usize;
        for block in batch.blocks.iter().skip(skip) {
            // The origin, read before the block: at most the batch's own L1 block.
            let origin = if block.origin_number <= inclusion.number {
                Some(self.l1_block(block.origin_number).await?)
            } else {
                None
            };
            if let Err(Invalid(reason)) =
                self.derive_batch_block(batch, block, origin, inclusion)?
            {
                dropped(DropReason::BatchInvalid, &reason);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Checks one batch block against the rules and derives it. `Ok(Err(_))` when the block
    /// breaks a rule (the rest of its batch is dropped).
    fn derive_batch_block(
        &mut self,
        batch: &Batch,
        block: &BatchBlock,
        origin: Option<L1BlockRef>,
        inclusion: &L1BlockRef,
    ) -> Result<Result<(), Invalid>, DeriveError> {
        let parent = self.store.snapshot()?;
        let header = Self::head_header(&parent)?;
        let parent_origin = self.parent_origin(&header);
        let invalid = |reason: String| Ok(Err(Invalid(reason)));
        let number = header.number + 1;
        if block.origin_number < parent_origin.number {
            return invalid(format!(
                "block {number}: origin {} before its parent's {}",
                block.origin_number, parent_origin.number
            ));
        }
        if block.origin_number > inclusion.number {
            return invalid(format!(
                "block {number}: origin {} after the batch's L1 block {}",
                block.origin_number, inclusion.number
            ));
        }
        if inclusion.number > block.origin_number + self.rollup.sequencing_window_blocks {
            return invalid(format!(
                "block {number}: batched at L1 block {}, past its origin {} plus the sequencing window",
                inclusion.number, block.origin_number
            ));
        }
        let Some(origin) = origin else {
            return invalid(format!("block {number}: no origin {}", block.origin_number));
        };
        if origin.number == parent_origin.number && origin.hash != parent_origin.hash {
            // The parent's origin is no longer the L1's: the reorg reached below the cursor.
            return Err(DeriveError::Reorg {
                number: origin.number,
                expected: parent_origin.hash,
                found: origin.hash,
            });
        }
        if block.timestamp < header.timestamp
            || block.timestamp < origin.timestamp
            || block.timestamp > origin.timestamp + self.rollup.max_sequencer_drift_s
        {
            return invalid(format!(
                "block {number}: timestamp {} outside the rules (parent {}, origin {}, drift {})",
                block.timestamp,
                header.timestamp,
                origin.timestamp,
                self.rollup.max_sequencer_drift_s
            ));
        }
        if !(limits::BLOCK_GAS_LIMIT_MIN..=limits::BLOCK_GAS_LIMIT_MAX).contains(&batch.gas_limit) {
            return invalid(format!(
                "gas limit {} outside keel's limits",
                batch.gas_limit
            ));
        }
        let mut listed = Vec::with_capacity(block.transactions.len());
        for transaction in &block.transactions {
            match transaction.recover_signer() {
                Ok(sender) => listed.push((transaction.clone(), sender)),
                Err(error) => {
                    return invalid(format!(
                        "block {number}: a signature does not recover: {error}"
                    ));
                }
            }
        }
        let env = self.environment(
            &parent,
            &header,
            block.timestamp,
            L1Origin {
                number: origin.number,
                hash: origin.hash,
            },
            batch.beneficiary,
            batch.gas_limit,
            batch.extra_data.clone(),
        );
        let due = self.forced.due_for_safe(origin.number);
        let mut executor = BlockExecutor::new(&self.chain, &parent, env);
        let consumed = executor
            .execute_forced(&due)
            .map_err(|error| DeriveError::Execution(error.0))?;
        let kept: Vec<&TxEnvelope> = due
            .iter()
            .zip(&consumed)
            .filter(|(_, kept)| **kept)
            .map(|((transaction, _), _)| transaction)
            .collect();
        let prefix_matches = listed.len() >= kept.len()
            && kept
                .iter()
                .zip(&listed)
                .all(|(forced, (listed, _))| forced.tx_hash() == listed.tx_hash());
        if !prefix_matches {
            return invalid(format!(
                "block {number}: a due forced transaction is missing or out of place"
            ));
        }
        for (index, (transaction, sender)) in listed.iter().enumerate().skip(kept.len()) {
            if let Err(error) = executor.execute_transaction(transaction, *sender) {
                return invalid(format!(
                    "block {number}: transaction {index} ({}) is invalid: {error}",
                    transaction.tx_hash()
                ));
            }
        }
        let executed = executor
            .finish()
            .map_err(|error| DeriveError::Execution(error.0))?;
        drop(parent);
        let cursor = forced_cursor_of(&executed.output.block.header).expect("set by execution");
        self.store
            .commit_block(executed.output, &executed.changes)?;
        self.forced.consumed_to(cursor);
        metrics::counter!("keel_derived_blocks_total", "from" => "batch").increment(1);
        Ok(Ok(()))
    }

    /// The origin of the block `header` heads: the rollup's start for the genesis.
    fn parent_origin(&self, header: &alloy::consensus::Header) -> L1Origin {
        if header.number == 0 {
            self.rollup.l1_start
        } else {
            origin_of(header)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn environment(
        &self,
        parent: &Snapshot,
        header: &alloy::consensus::Header,
        timestamp: u64,
        origin: L1Origin,
        beneficiary: Address,
        gas_limit: u64,
        extra_data: alloy::primitives::Bytes,
    ) -> BlockEnvironment {
        let (_, parent_hash) = parent.head();
        BlockEnvironment {
            parent_hash,
            number: header.number + 1,
            timestamp,
            beneficiary,
            gas_limit,
            base_fee: self.chain.next_base_fee(header),
            prevrandao: keccak256(parent_hash),
            extra_data,
            origin,
            forced_cursor: forced_cursor_of(header).unwrap_or(u64::MAX),
        }
    }

    /// The forced deadline (docs/protocol.md, "When no batch comes"): while the oldest
    /// pending forced transaction is from an L1 block at least the forced-inclusion window
    /// before `block`, derivation extends the safe chain by itself with blocks holding only
    /// due forced transactions.
    async fn extend_for_forced(&mut self, block: &L1BlockRef) -> Result<(), DeriveError> {
        while let Some(oldest) = self.forced.oldest() {
            if oldest + self.rollup.force_inclusion_window_blocks > block.number {
                return Ok(());
            }
            let header = Self::head_header(&self.store.snapshot()?)?;
            let parent_origin = self.parent_origin(&header);
            let origin = self.l1_block(parent_origin.number.max(oldest)).await?;
            let parent = self.store.snapshot()?;
            if parent.head().0 != header.number {
                return Err(DeriveError::Storage(StorageError::Corrupt(
                    "the derived store moved under derivation".into(),
                )));
            }
            let timestamp = header.timestamp.max(origin.timestamp);
            let env = self.environment(
                &parent,
                &header,
                timestamp,
                L1Origin {
                    number: origin.number,
                    hash: origin.hash,
                },
                Address::ZERO,
                header.gas_limit,
                Default::default(),
            );
            let due = self.forced.due_for_safe(origin.number);
            let mut executor = BlockExecutor::new(&self.chain, &parent, env);
            let consumed = executor
                .execute_forced(&due)
                .map_err(|error| DeriveError::Execution(error.0))?;
            assert!(
                !consumed.is_empty(),
                "a forced-only block consumes at least the oldest due transaction"
            );
            let executed = executor
                .finish()
                .map_err(|error| DeriveError::Execution(error.0))?;
            drop(parent);
            let cursor = forced_cursor_of(&executed.output.block.header).expect("set by execution");
            tracing::warn!(
                number = executed.output.number(),
                forced = consumed.len(),
                l1_block = block.number,
                "no batch held due forced transactions in time: derived a forced-only block"
            );
            self.store
                .commit_block(executed.output, &executed.changes)?;
            self.forced.consumed_to(cursor);
            metrics::counter!("keel_derived_blocks_total", "from" => "forced").increment(1);
        }
        Ok(())
    }

    /// Moves the cursor past `block`: finality, the stored cursor, a checkpoint now and then.
    async fn finish_block(&mut self, block: L1BlockRef) -> Result<(), DeriveError> {
        let safe = self.store.snapshot()?.head();
        self.cursor.l1 = block;
        let (forced, forced_safe_cursor, _) = self.forced.snapshot();
        self.cursor.forced = forced;
        self.cursor.forced_safe_cursor = forced_safe_cursor;
        self.cursor.finality.push_back((block.number, safe.0));
        while self.cursor.finality.len() > FINALITY_POINTS_MAX {
            self.cursor.finality.pop_front();
        }
        let finalized_l1 = self.client.head(L1Head::Finalized).await?.number;
        while let Some(&(l1, l2)) = self.cursor.finality.front() {
            if l1 > finalized_l1 {
                break;
            }
            self.cursor.finalized = self.cursor.finalized.max(l2);
            self.cursor.finality.pop_front();
        }
        let mut meta = vec![(CURSOR_KEY, encode(&self.cursor))];
        if block.number.is_multiple_of(CHECKPOINT_EVERY_BLOCKS) {
            let mut checkpoints = self.checkpoints()?;
            checkpoints.push(Checkpoint {
                cursor: self.cursor.clone(),
                safe,
            });
            while checkpoints.len() > CHECKPOINTS_KEPT {
                checkpoints.remove(0);
            }
            meta.push((CHECKPOINTS_KEY, encode(&checkpoints)));
        }
        let meta: Vec<(&str, Vec<u8>)> = meta;
        self.store.put_meta(&meta)?;
        self.publish();
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, DeriveError> {
        match self.store.snapshot()?.meta(CHECKPOINTS_KEY)? {
            Some(bytes) => decode(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Goes back to the newest checkpoint whose L1 block is still canonical (or to the start),
    /// unwinding the derived store to its safe head.
    pub async fn reset(&mut self) -> Result<(), DeriveError> {
        self.resets += 1;
        metrics::counter!("keel_derivation_resets_total").increment(1);
        let mut checkpoints = self.checkpoints()?;
        let snapshot = self.store.snapshot()?;
        let mut restored = None;
        while let Some(checkpoint) = checkpoints.pop() {
            let canonical = self
                .client
                .block_by_number(checkpoint.cursor.l1.number)
                .await?;
            let stored = snapshot.block_hash(checkpoint.safe.0)?;
            if canonical.map(|block| block.hash) == Some(checkpoint.cursor.l1.hash)
                && stored == Some(checkpoint.safe.1)
            {
                restored = Some(checkpoint);
                break;
            }
        }
        drop(snapshot);
        let (cursor, safe) = match restored {
            Some(checkpoint) => {
                let cursor = checkpoint.cursor.clone();
                checkpoints.push(checkpoint.clone());
                (cursor, checkpoint.safe.0)
            }
            None => {
                let start = self
                    .client
                    .block_by_number(self.rollup.l1_start.number)
                    .await?
                    .ok_or(L1Error::BlockGone {
                        hash: self.rollup.l1_start.hash,
                    })?;
                (Self::genesis_cursor(start), 0)
            }
        };
        tracing::warn!(
            l1 = cursor.l1.number,
            safe,
            "derivation reset to a checkpoint on the canonical L1"
        );
        let meta = vec![
            (CURSOR_KEY, encode(&cursor)),
            (CHECKPOINTS_KEY, encode(&checkpoints)),
        ];
        let head = self.store.snapshot()?.head().0;
        if head > safe {
            self.store.unwind_to(safe, &meta)?;
        } else {
            self.store.put_meta(&meta)?;
        }
        self.cursor = cursor;
        self.window.clear();
        self.restore_forced()?;
        self.publish();
        Ok(())
    }
}
