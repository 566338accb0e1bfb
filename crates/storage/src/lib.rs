//! The chain and state store, on redb.
//!
//! One redb file holds everything a node knows: headers, bodies, receipts, the transaction and
//! log indexes, the state (accounts, storage, code) and the head pointer.
//!
//! ```text
//!   builder/validator ── commit_block(block, receipts, changes) ──► one redb write transaction
//!                                                                    (fsynced on commit)
//!   rpc, execution    ◄── Snapshot (a redb read transaction: one consistent head) ◄─┘
//! ```
//!
//! ### Crash safety
//! A block and everything it changes are written in one write transaction, committed with
//! `Durability::Immediate`: redb fsyncs before `commit` returns, and a crash at any instant
//! leaves either the whole block or none of it. The head pointer is in the same transaction, so a
//! restarted node resumes at its last durable block. A store rebuilt from elsewhere (derivation's
//! own) may defer its blocks' fsync to its next fsynced write ([`BlockDurability::Deferred`]):
//! a crash then forgets whole blocks at the top, never part of one.
//!
//! ### Compare-and-append
//! [`Store::commit_block`] refuses a block whose parent is not the stored head, inside the write
//! transaction, so no caller can fork the chain however it races.
//!
//! The state is stored by hashed key (keccak of the address, keccak of the slot): the order the
//! Merkle-Patricia trie needs, so the state root is a single ordered walk.

mod background;
mod backup;
mod buckets;
mod change_set;
mod error;
mod history;
mod image;
mod snapshot;
mod stream;
mod tables;

pub use backup::{Backup, BackupProgress};
pub use buckets::{AccountBuckets, BucketChanges};

pub use error::StorageError;
pub use history::StateHistory;
pub use image::STATE_IMAGE_MAGIC;
use image::StateImage;
pub use snapshot::{AccountIter, SlotIter, Snapshot, TxLocation};
use stream::Feed;
pub use stream::{BlockStream, ChainEvent};

use alloy::primitives::{B256, Bytes, U256};
use keel_primitives::{AccountRecord, BlockWithReceipts, ChainSpec, SealedBlock};
use redb::ReadableDatabase;
use redb::{Database, Durability, ReadableTable};
use std::path::Path;
use std::sync::Arc;
use tables::*;

/// Result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What one block changed in the state, keyed by hash, ready to write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateChanges {
    /// `(keccak(address), record)`; `None` deletes the account.
    pub accounts: Vec<(B256, Option<AccountRecord>)>,
    /// Accounts whose whole storage is cleared before `storage` is applied (destroyed or
    /// re-created accounts).
    pub storage_wipes: Vec<B256>,
    /// `(keccak(address), keccak(slot), value)`; a zero value deletes the slot.
    pub storage: Vec<(B256, B256, U256)>,
    /// New contract code by hash.
    pub codes: Vec<(B256, Bytes)>,
    /// The account-trie buckets the block changed, when it was executed against the cache.
    pub buckets: Option<BucketChanges>,
}

/// The store of one node. Cheap to share behind an `Arc`: redb serialises writers and lets
/// readers run beside them.
#[derive(Debug)]
pub struct Store {
    db: Database,
    /// The account-trie buckets of the head (see [`AccountBuckets`]).
    buckets: parking_lot::Mutex<Arc<AccountBuckets>>,
    /// The recent blocks and the head watch behind every [`BlockStream`].
    feed: Feed,
    /// How much state history blocks record and the pruner keeps.
    history: parking_lot::Mutex<StateHistory>,
    /// Whether a committed block is fsynced before the commit returns.
    block_durability: parking_lot::Mutex<BlockDurability>,
    /// Blocks committed without an fsync since the last fsynced block
    /// (`limits::DEFERRED_BLOCKS_MAX` at most).
    deferred_blocks: std::sync::atomic::AtomicU64,
    /// The thread that fsyncs the deferred blocks, when [`Store::sync_in_background`] started
    /// one; without it the committer fsyncs them itself.
    background_sync: std::sync::OnceLock<background::BackgroundSync>,
}

/// When a block [`Store::commit_block`] wrote reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockDurability {
    /// Fsynced before the commit returns: the default, for every store a node serves.
    #[default]
    Immediate,
    /// On the disk with the next fsynced write of any kind (a [`Store::put_meta`], an unwind,
    /// an immediate block); every `limits::DEFERRED_BLOCKS_MAX`-th block in a row is fsynced
    /// right after its commit publishes it. A crash forgets the deferred blocks after the last
    /// fsynced write (at most `DEFERRED_BLOCKS_MAX`), never part of one. Only for a store rebuilt from elsewhere: derivation's own store, derived again from
    /// the L1 after the cursor it fsyncs once per L1 block, and a cluster member's chain,
    /// applied again from its Raft log (which is fsynced, its commit index too).
    Deferred,
}

/// What a state image holds, as [`read_state_image`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateImageSummary {
    /// The genesis the image belongs to.
    pub genesis: B256,
    /// Its head block's number and hash.
    pub head: (u64, B256),
    /// Accounts, storage slots and codes it carries.
    pub counts: (usize, usize, usize),
}

/// Reads a state image (a Raft snapshot's data, from a peer) as [`Store::import`] reads it
/// before writing anything: every length checked, every record decoded. Bad bytes give
/// [`StorageError::Corrupt`], never a panic (the fuzz target `state_image` holds it to that).
pub fn read_state_image(image: &[u8]) -> Result<StateImageSummary> {
    let image = StateImage::decode(image)?;
    Ok(StateImageSummary {
        genesis: image.genesis,
        head: (image.head.number(), image.head.hash),
        counts: (image.accounts.len(), image.storage.len(), image.codes.len()),
    })
}

impl Store {
    /// Cache redb may use, in bytes.
    pub const CACHE_BYTES: usize = 512 * 1024 * 1024;

    /// Opens (or creates) the store at `path`. A new store gets the genesis block of `chain`;
    /// an existing one must hold the same genesis.
    pub fn open(path: &Path, chain: &ChainSpec) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(Self::CACHE_BYTES)
            .create(path)?;
        Self::init(db, chain)
    }

    /// [`Store::open`] on storage of the caller's own instead of a file: the deterministic
    /// simulation's disk, which loses un-fsynced writes when its host crashes.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        chain: &ChainSpec,
    ) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(Self::CACHE_BYTES)
            .create_with_backend(backend)?;
        Self::init(db, chain)
    }

    fn init(db: Database, chain: &ChainSpec) -> Result<Self> {
        let genesis = chain.genesis_block();
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        {
            let mut tables = WriteTables::open(&txn)?;
            match tables.genesis_hash()? {
                Some(stored) if stored != genesis.hash => {
                    return Err(StorageError::GenesisMismatch {
                        stored,
                        configured: genesis.hash,
                    });
                }
                Some(_) => {}
                None => {
                    tables.put_genesis(chain, &genesis)?;
                    tables.put_meta_u64(HISTORY_FLOOR_KEY, 0)?;
                }
            }
            let (head, _) = read_head(&tables.meta)?;
            // A store written before state history was kept has none below its head.
            if tables.meta_u64(HISTORY_FLOOR_KEY)?.is_none() {
                tables.put_meta_u64(HISTORY_FLOOR_KEY, head)?;
            }
            // One written before the index was batched indexed every block in its commit;
            // one that stopped with blocks pending indexes them now, so the next batch starts
            // with none.
            if tables.meta_u64(HISTORY_INDEXED_KEY)?.is_none() {
                tables.put_meta_u64(HISTORY_INDEXED_KEY, head)?;
            }
            history::index(&mut tables, head, None)?;
        }
        txn.commit()?;
        let snapshot = Snapshot::new(db.begin_read()?, None)?;
        let buckets = parking_lot::Mutex::new(Arc::new(AccountBuckets::build(&snapshot)?));
        let feed = Feed::new(snapshot.head().0);
        drop(snapshot);
        Ok(Self {
            db,
            buckets,
            feed,
            history: parking_lot::Mutex::new(StateHistory::Archive),
            block_durability: parking_lot::Mutex::new(BlockDurability::Immediate),
            deferred_blocks: std::sync::atomic::AtomicU64::new(0),
            background_sync: std::sync::OnceLock::new(),
        })
    }

    /// Sets how much state history the blocks committed from now on record, and the pruner
    /// keeps (the default is [`StateHistory::Archive`]). Turning history off moves the floor
    /// to each new head; turning it on starts the window at the head of that moment.
    pub fn set_state_history(&self, history: StateHistory) {
        *self.history.lock() = history;
    }

    /// Sets when the blocks committed from now on reach the disk (the default is
    /// [`BlockDurability::Immediate`]).
    pub fn set_block_durability(&self, durability: BlockDurability) {
        *self.block_durability.lock() = durability;
    }

    /// Runs the fsync of every `limits::DEFERRED_BLOCKS_MAX`-th deferred block on a thread of
    /// its own, so that its commit returns once the block is published (see
    /// `background.rs`); the next commit waits for it. Calling it again changes nothing.
    pub fn sync_in_background(self: &Arc<Self>) -> Result<()> {
        if self.background_sync.get().is_none() {
            let started = background::BackgroundSync::start(self)?;
            // A second caller racing this one leaves its thread without a sender: it ends.
            let _ = self.background_sync.set(started);
        }
        Ok(())
    }

    /// The store's state-history setting.
    pub fn state_history(&self) -> StateHistory {
        *self.history.lock()
    }

    /// Prunes the change sets and history entries of the oldest blocks, up to block `target`
    /// and at most `max_blocks` of them, in one write transaction (not fsynced: a crash
    /// forgets the whole prune or none of it, and redo is harmless). Returns the floor: the
    /// lowest block whose state is still served.
    ///
    /// ### Correctness
    /// The caller picks `target` at or below the finalized block ([`StateHistory::prune_target`]):
    /// a pruned block has no change set, so the store can no longer unwind below it.
    pub fn prune_history(&self, target: u64, max_blocks: u64) -> Result<u64> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(redb::Error::from)?;
        let floor = {
            let mut tables = WriteTables::open(&txn)?;
            history::prune(&mut tables, target, max_blocks)?;
            tables.meta_u64(HISTORY_FLOOR_KEY)?.unwrap_or(0)
        };
        txn.commit()?;
        Ok(floor)
    }

    /// The blocks applied from now on, in order, none missed (see [`BlockStream`]).
    pub fn subscribe(self: &Arc<Self>) -> BlockStream {
        let next = self.feed.head_number() + 1;
        BlockStream::new(self.clone(), next)
    }

    /// The blocks from `number` on: the stored ones first, then each one applied.
    pub fn subscribe_from(self: &Arc<Self>, number: u64) -> BlockStream {
        BlockStream::new(self.clone(), number)
    }

    /// A recently applied block with its receipts, if the store still keeps it in memory
    /// (`limits::RECENT_BLOCKS_MAX`): hot reads skip decoding.
    pub fn recent_block(&self, number: u64) -> Option<Arc<BlockWithReceipts>> {
        self.feed.recent(number)
    }

    /// The block at `number` with its receipts: from memory if recent, else from disk.
    pub fn block_with_receipts(&self, number: u64) -> Result<Option<Arc<BlockWithReceipts>>> {
        if let Some(block) = self.feed.recent(number) {
            return Ok(Some(block));
        }
        Ok(self.snapshot()?.block_with_receipts(number)?.map(Arc::new))
    }

    /// A consistent read view of the current head and its state.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let buckets = self.buckets.lock().clone();
        Snapshot::new(self.db.begin_read()?, Some(buckets))
    }

    /// Makes `block` the new head: block, receipts, indexes and state changes in one write
    /// transaction, fsynced unless the store defers its blocks ([`BlockDurability`]).
    ///
    /// ### Correctness
    /// Refuses (with [`StorageError::NotOnHead`]) a block that is not the child of the stored
    /// head; the check and the write are one transaction. The caller must have validated the
    /// block and computed `changes` from the head's state: the store trusts both.
    pub fn commit_block(
        &self,
        block: Arc<BlockWithReceipts>,
        changes: &StateChanges,
    ) -> Result<()> {
        self.commit_block_with(block, changes, &[])
    }

    /// [`Store::commit_block`], writing `meta` (named values, such as the Raft log position
    /// the block was applied from) in the same transaction.
    /// Every [`BlockStream`] then yields it.
    pub fn commit_block_with(
        &self,
        applied: Arc<BlockWithReceipts>,
        changes: &StateChanges,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<()> {
        let (block, receipts) = (&applied.block, &applied.receipts);
        // Never more than `DEFERRED_BLOCKS_MAX` blocks without an fsync.
        if let Some(background) = self.background_sync.get() {
            background.wait()?;
        }
        let mut txn = self.db.begin_write()?;
        // A deferred store commits every block without an fsync; the
        // `DEFERRED_BLOCKS_MAX`-th in a row is fsynced right after it is published, so the
        // readers waiting on it (a receipt) do not wait for the pages of all the blocks before.
        let block_durability = *self.block_durability.lock();
        let deferred = block_durability == BlockDurability::Deferred;
        let (durability, sync_after) = match block_durability {
            BlockDurability::Immediate => (Durability::Immediate, false),
            BlockDurability::Deferred => {
                use std::sync::atomic::Ordering;
                // One committer at a time (redb's write lock follows), so a plain count.
                let deferred = self.deferred_blocks.load(Ordering::Relaxed) + 1;
                let sync_after = deferred >= keel_primitives::limits::DEFERRED_BLOCKS_MAX;
                self.deferred_blocks
                    .store(if sync_after { 0 } else { deferred }, Ordering::Relaxed);
                (Durability::None, sync_after)
            }
        };
        txn.set_durability(durability).map_err(redb::Error::from)?;
        {
            let mut tables = WriteTables::open(&txn)?;
            let (head_number, head) = read_head(&tables.meta)?;
            if block.header.parent_hash != head || block.number() != head_number + 1 {
                return Err(StorageError::NotOnHead {
                    number: block.number(),
                    parent: block.header.parent_hash,
                    head_number,
                    head,
                });
            }
            let reverse = reverse_changes(&tables, changes)?;
            tables
                .change_sets
                .insert(block.number(), reverse.encode().as_slice())?;
            if self.state_history().records() {
                // A deferred store indexes in the fsynced write after its batch (see
                // `history.rs`); one that fsyncs every block, in the block's own write.
                let indexed = history::indexed(&tables.meta, head_number)?;
                let unindexed = block.number() - indexed;
                if !deferred || unindexed > keel_primitives::limits::HISTORY_UNINDEXED_BLOCKS_MAX {
                    history::index(&mut tables, block.number(), Some(&reverse))?;
                }
            } else {
                tables.put_meta_u64(HISTORY_FLOOR_KEY, block.number())?;
                tables.put_meta_u64(HISTORY_INDEXED_KEY, block.number())?;
            }
            for hashed_address in &changes.storage_wipes {
                let (start, end) = storage_range(hashed_address);
                tables
                    .storage
                    .retain_in::<&[u8; 64], _>(&start..=&end, |_, _| false)?;
            }
            for (hashed_address, hashed_slot, value) in &changes.storage {
                let key = storage_key(hashed_address, hashed_slot);
                if value.is_zero() {
                    tables.storage.remove(&key)?;
                } else {
                    tables.storage.insert(&key, &value.to_be_bytes::<32>())?;
                }
            }
            for (hashed_address, record) in &changes.accounts {
                match record {
                    Some(record) => {
                        tables
                            .accounts
                            .insert(&hashed_address.0, record.encode().as_slice())?;
                    }
                    None => {
                        tables.accounts.remove(&hashed_address.0)?;
                    }
                }
            }
            for (hash, code) in &changes.codes {
                tables.codes.insert(&hash.0, code.as_ref())?;
            }
            tables.put_block(block, receipts)?;
            for (key, value) in meta {
                tables.meta.insert(*key, value.as_slice())?;
            }
        }
        txn.commit()?;
        self.advance_buckets(block, changes)?;
        self.feed.applied(applied);
        if sync_after {
            // Published before it is on the disk, as the deferred blocks before it were: a
            // crash now forgets at most `DEFERRED_BLOCKS_MAX` of them, and the Raft log holds
            // each (a deferred store's contract).
            let handed_off = self
                .background_sync
                .get()
                .is_some_and(|background| background.request());
            if !handed_off {
                self.fsync_now()?;
            }
        }
        Ok(())
    }

    /// Unwinds the chain to block `number`: every block above it is removed with its
    /// receipts and indexes, the state is restored from their change sets, `meta` is written,
    /// all in one fsynced write transaction. Returns the removed blocks, highest first.
    ///
    /// ### Correctness
    /// Afterwards the store is exactly as it was right after block `number` was committed
    /// (state, head, indexes), as the tests check against a store that never held the removed
    /// blocks. Every [`BlockStream`] reports the unwind ([`ChainEvent::Unwound`]) before any
    /// block applied after it. Refuses ([`StorageError::UnwindTooDeep`]) to go below a block
    /// without a change set: the genesis, or a snapshot's head.
    pub fn unwind_to(
        &self,
        number: u64,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<Vec<Arc<BlockWithReceipts>>> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        let mut removed = Vec::new();
        let target = {
            let mut tables = WriteTables::open(&txn)?;
            let (head_number, _) = read_head(&tables.meta)?;
            let indexed = history::indexed(&tables.meta, head_number)?;
            if number > head_number {
                return Err(StorageError::UnwindTooDeep {
                    number,
                    reason: format!("above the head {head_number}"),
                });
            }
            for unwound in (number + 1..=head_number).rev() {
                let reverse = match tables.change_sets.get(unwound)? {
                    Some(guard) => change_set::ChangeSet::decode(guard.value())?,
                    None => {
                        return Err(StorageError::UnwindTooDeep {
                            number,
                            reason: format!("block {unwound} has no change set"),
                        });
                    }
                };
                let applied = tables.block_with_receipts(unwound)?.ok_or_else(|| {
                    StorageError::Corrupt(format!("block {unwound} missing below the head"))
                })?;
                for hashed_address in &reverse.wipes {
                    let (start, end) = storage_range(hashed_address);
                    tables
                        .storage
                        .retain_in::<&[u8; 64], _>(&start..=&end, |_, _| false)?;
                }
                for (hashed_address, hashed_slot, value) in &reverse.storage {
                    let key = storage_key(hashed_address, hashed_slot);
                    if value.is_zero() {
                        tables.storage.remove(&key)?;
                    } else {
                        tables.storage.insert(&key, &value.to_be_bytes::<32>())?;
                    }
                }
                for (hashed_address, record) in &reverse.accounts {
                    match record {
                        Some(record) => {
                            tables
                                .accounts
                                .insert(&hashed_address.0, record.encode().as_slice())?;
                        }
                        None => {
                            tables.accounts.remove(&hashed_address.0)?;
                        }
                    }
                }
                if unwound <= indexed {
                    history::erase(&mut tables, unwound, &reverse)?;
                }
                tables.remove_block(&applied)?;
                tables.change_sets.remove(unwound)?;
                removed.push(Arc::new(applied));
            }
            let target = tables.block_with_receipts(number)?.ok_or_else(|| {
                StorageError::Corrupt(format!("block {number} missing below the head"))
            })?;
            tables.meta.insert(
                HEAD_KEY,
                tables::encode_head(number, &target.block.hash).as_slice(),
            )?;
            // History off keeps the floor at the head, which just moved down.
            let floor = tables.meta_u64(HISTORY_FLOOR_KEY)?.unwrap_or(0);
            tables.put_meta_u64(HISTORY_FLOOR_KEY, floor.min(number))?;
            tables.put_meta_u64(HISTORY_INDEXED_KEY, indexed.min(number))?;
            for (key, value) in meta {
                tables.meta.insert(*key, value.as_slice())?;
            }
            target
        };
        txn.commit()?;
        let snapshot = Snapshot::new(self.db.begin_read()?, None)?;
        *self.buckets.lock() = Arc::new(AccountBuckets::build(&snapshot)?);
        drop(snapshot);
        if !removed.is_empty() {
            self.feed.unwound(Arc::new(target));
        }
        Ok(removed)
    }

    /// Writes named values alone, fsynced (a Raft entry that carries no block).
    pub fn put_meta(&self, meta: &[(&str, Vec<u8>)]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        {
            let mut table = txn.open_table(META)?;
            for (key, value) in meta {
                table.insert(*key, value.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// An fsynced write that indexes the history of the blocks not indexed yet (see
    /// `history.rs`): the blocks committed before it without an fsync
    /// ([`BlockDurability::Deferred`]) are on the disk when it returns. Returns the failure of
    /// a background sync ([`Store::sync_in_background`]) since the last call, if one failed.
    pub fn sync(&self) -> Result<()> {
        if let Some(background) = self.background_sync.get() {
            background.wait()?;
        }
        self.fsync_now()
    }

    /// The fsynced write itself: the history index of the blocks above its cursor, and
    /// nothing else.
    fn fsync_now(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        {
            let mut tables = WriteTables::open(&txn)?;
            let (head, _) = read_head(&tables.meta)?;
            history::index(&mut tables, head, None)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the state with `image` (from [`Snapshot::export`]), makes its block the head
    /// and writes `meta`, in one fsynced transaction. Blocks already stored stay (they are the
    /// image head's ancestors on a committed chain); the blocks between them and the image's
    /// head are not in the image and stay missing. The image must belong to this store's
    /// genesis.
    pub fn import(&self, image: &[u8], meta: &[(&str, Vec<u8>)]) -> Result<()> {
        let image = StateImage::decode(image)?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        {
            let mut tables = WriteTables::open(&txn)?;
            let genesis = tables.genesis_hash()?;
            if genesis != Some(image.genesis) {
                return Err(StorageError::GenesisMismatch {
                    stored: genesis.unwrap_or_default(),
                    configured: image.genesis,
                });
            }
            tables.clear_state()?;
            for (hashed, record) in &image.accounts {
                tables
                    .accounts
                    .insert(&hashed.0, record.encode().as_slice())?;
            }
            for (key, value) in &image.storage {
                tables.storage.insert(key, value)?;
            }
            for (hash, code) in &image.codes {
                tables.codes.insert(&hash.0, code.as_slice())?;
            }
            tables.put_block(&image.head, &image.receipts)?;
            // The image carries no history: the state is known from its head on.
            let head = image.head.number();
            tables.put_meta_u64(HISTORY_FLOOR_KEY, head)?;
            tables.put_meta_u64(HISTORY_PRUNED_KEY, head)?;
            tables.put_meta_u64(HISTORY_INDEXED_KEY, head)?;
            for (key, value) in meta {
                tables.meta.insert(*key, value.as_slice())?;
            }
        }
        txn.commit()?;
        let snapshot = Snapshot::new(self.db.begin_read()?, None)?;
        *self.buckets.lock() = Arc::new(AccountBuckets::build(&snapshot)?);
        self.feed
            .installed(Arc::new(BlockWithReceipts::new(image.head, image.receipts)));
        Ok(())
    }

    /// Moves the bucket cache to the new head: by the block's bucket changes when they were
    /// computed on the cached parent, else (or when the bucket depth should change) by a walk.
    fn advance_buckets(&self, block: &SealedBlock, changes: &StateChanges) -> Result<()> {
        let mut cache = self.buckets.lock();
        if let Some(advanced) = cache.advance(
            block.header.parent_hash,
            block.hash,
            changes.buckets.as_ref(),
        ) {
            *cache = Arc::new(advanced);
            return Ok(());
        }
        let snapshot = Snapshot::new(self.db.begin_read()?, None)?;
        *cache = Arc::new(AccountBuckets::build(&snapshot)?);
        Ok(())
    }
}

/// What `changes` will overwrite, read before it does (inside the same write transaction).
fn reverse_changes(
    tables: &WriteTables<'_>,
    changes: &StateChanges,
) -> Result<change_set::ChangeSet> {
    let mut reverse = change_set::ChangeSet::default();
    for (hashed_address, _) in &changes.accounts {
        let before = match tables.accounts.get(&hashed_address.0)? {
            Some(guard) => Some(AccountRecord::decode(guard.value())?),
            None => None,
        };
        reverse.accounts.push((*hashed_address, before));
    }
    let mut slots = std::collections::BTreeMap::new();
    for hashed_address in &changes.storage_wipes {
        reverse.wipes.push(*hashed_address);
        let (start, end) = storage_range(hashed_address);
        for entry in tables.storage.range::<&[u8; 64]>(&start..=&end)? {
            let (key, value) = entry?;
            let key = key.value();
            slots.insert(
                (B256::from_slice(&key[..32]), B256::from_slice(&key[32..])),
                U256::from_be_bytes(*value.value()),
            );
        }
    }
    for (hashed_address, hashed_slot, _) in &changes.storage {
        if let std::collections::btree_map::Entry::Vacant(vacant) =
            slots.entry((*hashed_address, *hashed_slot))
        {
            let before = tables
                .storage
                .get(&storage_key(hashed_address, hashed_slot))?
                .map(|guard| U256::from_be_bytes(*guard.value()))
                .unwrap_or_default();
            vacant.insert(before);
        }
    }
    reverse.storage = slots
        .into_iter()
        .map(|((hashed_address, hashed_slot), value)| (hashed_address, hashed_slot, value))
        .collect();
    Ok(reverse)
}

pub(crate) fn read_head(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<(u64, B256)> {
    let guard = meta
        .get(HEAD_KEY)?
        .ok_or_else(|| StorageError::Corrupt("no head".into()))?;
    decode_head(guard.value())
}

#[cfg(test)]
mod tests;
