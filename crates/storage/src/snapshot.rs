//! Consistent read views of the store.

use crate::tables::*;
use crate::{Result, StorageError};
use alloy::consensus::{Header, ReceiptEnvelope};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::rlp::Decodable;
use keel_primitives::{AccountRecord, BlockWithReceipts, SealedBlock};
use redb::{ReadOnlyTable, ReadTransaction};

/// Where a transaction sits in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    /// Number of the block holding it.
    pub block_number: u64,
    /// Its index in that block.
    pub index: u32,
}

/// A read view of the store as of one committed block: every read through it sees the same
/// head and the same state, whatever is committed meanwhile (redb's MVCC).
///
/// A view of the head reads the state tables; a view of an older block ([`Snapshot::at`])
/// reads each key through its history ([`crate::history`]), and refuses walks over the whole
/// state ([`StorageError::NotHead`]).
pub struct Snapshot {
    /// The read transaction every table of this view is opened in, on first use.
    txn: ReadTransaction,
    head: (u64, B256),
    /// The block whose state reads answer, when older than `head` (`None`: the head).
    state_at: Option<(u64, B256)>,
    /// The lowest block whose state this store keeps.
    floor: u64,
    /// The history index's cursor: blocks above it are read from their change sets.
    indexed: u64,
    account_history: Lazy<&'static [u8; 40], &'static [u8]>,
    storage_history: Lazy<&'static [u8; 72], &'static [u8; 32]>,
    change_sets: Lazy<u64, &'static [u8]>,
    /// For a view of an older block: what changed after it, read once when a walk needs it.
    overlay: std::sync::OnceLock<Overlay>,
    /// For a view of an older block: what the blocks above it and above the index's cursor
    /// changed, read once when a single read needs it.
    unindexed: std::sync::OnceLock<Overlay>,
    meta: Lazy<&'static str, &'static [u8]>,
    buckets: Option<std::sync::Arc<crate::AccountBuckets>>,
    headers: Lazy<u64, &'static [u8]>,
    bodies: Lazy<u64, &'static [u8]>,
    receipts: Lazy<u64, &'static [u8]>,
    block_hashes: Lazy<u64, &'static [u8; 32]>,
    block_numbers: Lazy<&'static [u8; 32], u64>,
    tx_locations: Lazy<&'static [u8; 32], &'static [u8; 12]>,
    log_addresses: Lazy<&'static [u8; 28], u32>,
    accounts: Lazy<&'static [u8; 32], &'static [u8]>,
    storage: Lazy<&'static [u8; 64], &'static [u8; 32]>,
    codes: Lazy<&'static [u8; 32], &'static [u8]>,
}

/// A table of a view's read transaction, opened on its first use: a view opens only the tables
/// its reads need. Opening all fifteen for every view (one per JSON-RPC request, more for a
/// send) was 5% of a loaded leader's time.
struct Lazy<K: redb::Key + 'static, V: redb::Value + 'static> {
    definition: redb::TableDefinition<'static, K, V>,
    table: std::sync::OnceLock<ReadOnlyTable<K, V>>,
}

impl<K: redb::Key + 'static, V: redb::Value + 'static> Lazy<K, V> {
    fn new(definition: redb::TableDefinition<'static, K, V>) -> Self {
        Self {
            definition,
            table: std::sync::OnceLock::new(),
        }
    }

    /// The table, opened in `txn` the first time.
    fn open(&self, txn: &ReadTransaction) -> Result<&ReadOnlyTable<K, V>> {
        if let Some(table) = self.table.get() {
            return Ok(table);
        }
        let opened = txn.open_table(self.definition)?;
        // Another thread may have opened it meanwhile: either copy is the same table.
        Ok(self.table.get_or_init(|| opened))
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Snapshot")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    pub(crate) fn new(
        txn: ReadTransaction,
        buckets: Option<std::sync::Arc<crate::AccountBuckets>>,
    ) -> Result<Self> {
        let meta = Lazy::new(META);
        let (head, floor, indexed) = {
            let table = meta.open(&txn)?;
            let head: (u64, B256) = match table.get(HEAD_KEY)? {
                Some(guard) => decode_head(guard.value())?,
                None => return Err(StorageError::Corrupt("store has no head".into())),
            };
            let floor = crate::history::floor(table)?;
            (head, floor, crate::history::indexed(table, head.0)?)
        };
        // The bucket cache rides along only if it describes this very head.
        let buckets = buckets.filter(|buckets| buckets.head == head.1);
        Ok(Self {
            txn,
            head,
            state_at: None,
            floor,
            indexed,
            account_history: Lazy::new(ACCOUNT_HISTORY),
            storage_history: Lazy::new(STORAGE_HISTORY),
            change_sets: Lazy::new(CHANGE_SETS),
            overlay: std::sync::OnceLock::new(),
            unindexed: std::sync::OnceLock::new(),
            meta,
            buckets,
            headers: Lazy::new(HEADERS),
            bodies: Lazy::new(BODIES),
            receipts: Lazy::new(RECEIPTS),
            block_hashes: Lazy::new(BLOCK_HASHES),
            block_numbers: Lazy::new(BLOCK_NUMBERS),
            tx_locations: Lazy::new(TX_LOCATIONS),
            log_addresses: Lazy::new(LOG_ADDRESSES),
            accounts: Lazy::new(ACCOUNTS),
            storage: Lazy::new(STORAGE),
            codes: Lazy::new(CODES),
        })
    }

    /// The same view, reading the state as it was right after block `number`: the head's
    /// state for the head, the history's for an older block of the window. Refuses a block
    /// below the floor ([`StorageError::StatePruned`]); the block must be in the chain.
    pub fn at(mut self, number: u64) -> Result<Self> {
        if number == self.head.0 {
            return Ok(self);
        }
        if number < self.floor || number > self.head.0 {
            return Err(crate::history::pruned(number, self.floor));
        }
        let hash = self.block_hash(number)?.ok_or_else(|| {
            StorageError::Corrupt(format!("block {number} missing below the head"))
        })?;
        self.state_at = Some((number, hash));
        self.buckets = None;
        Ok(self)
    }

    /// The block whose state this view reads: the head, or the block given to [`Snapshot::at`].
    pub fn state_block(&self) -> (u64, B256) {
        self.state_at.unwrap_or(self.head)
    }

    /// The lowest block whose state the store keeps (its state-history window's start).
    pub fn history_floor(&self) -> u64 {
        self.floor
    }

    /// Refuses a walk over the whole state on a view of an older block.
    fn whole_state(&self) -> Result<()> {
        match self.state_at {
            Some((number, _)) => Err(StorageError::NotHead { number }),
            None => Ok(()),
        }
    }

    /// The account-trie buckets of this head, when the store's cache describes it.
    pub fn account_buckets(&self) -> Option<&crate::AccountBuckets> {
        self.buckets.as_deref()
    }

    /// Accounts in the state.
    pub fn account_count(&self) -> Result<usize> {
        self.whole_state()?;
        use redb::ReadableTableMetadata;
        Ok(self.accounts.open(&self.txn)?.len()? as usize)
    }

    /// The accounts whose hashed address is in `first..=last`, ascending.
    pub fn accounts_in(
        &self,
        first: &B256,
        last: &B256,
    ) -> Result<impl Iterator<Item = Result<(B256, AccountRecord)>> + '_> {
        self.whole_state()?;
        let range = self
            .accounts
            .open(&self.txn)?
            .range::<&[u8; 32]>(&first.0..=&last.0)?;
        Ok(range.map(|entry| {
            let (key, value) = entry?;
            Ok((
                B256::from(*key.value()),
                AccountRecord::decode(value.value())?,
            ))
        }))
    }

    /// A named value written with a block or by `Store::put_meta`.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .meta
            .open(&self.txn)?
            .get(key)?
            .map(|guard| guard.value().to_vec()))
    }

    /// The head block, its receipts and the whole state at it, as a state image for
    /// `Store::import` (a Raft snapshot's data).
    pub fn export(&self) -> Result<Vec<u8>> {
        use crate::image::{magic, put_bytes};
        self.whole_state()?;
        let genesis = self
            .meta(GENESIS_KEY)?
            .ok_or_else(|| StorageError::Corrupt("no genesis hash".into()))?;
        let head = self
            .block(self.head.0)?
            .ok_or_else(|| StorageError::Corrupt("head block missing".into()))?;
        let mut out = Vec::new();
        out.extend_from_slice(magic());
        out.extend_from_slice(&genesis);
        put_bytes(&mut out, &head.encode_header());
        put_bytes(&mut out, &head.encode_body());
        let receipts = self.receipts.open(&self.txn)?.get(self.head.0)?;
        put_bytes(
            &mut out,
            receipts
                .as_ref()
                .map(|guard| guard.value())
                .unwrap_or(&[0xc0]),
        );
        out.extend_from_slice(&(self.account_count()? as u64).to_be_bytes());
        for entry in self.accounts()? {
            let (key, record) = entry?;
            out.extend_from_slice(key.as_slice());
            out.extend_from_slice(&record.encode());
        }
        use redb::ReadableTableMetadata;
        out.extend_from_slice(&self.storage.open(&self.txn)?.len()?.to_be_bytes());
        for entry in self.storage.open(&self.txn)?.range::<&[u8; 64]>(..)? {
            let (key, value) = entry?;
            out.extend_from_slice(key.value());
            out.extend_from_slice(value.value());
        }
        out.extend_from_slice(&self.codes.open(&self.txn)?.len()?.to_be_bytes());
        for entry in self.codes.open(&self.txn)?.range::<&[u8; 32]>(..)? {
            let (key, value) = entry?;
            out.extend_from_slice(key.value());
            put_bytes(&mut out, value.value());
        }
        Ok(out)
    }

    /// Number and hash of the head block of this view.
    pub fn head(&self) -> (u64, B256) {
        self.head
    }

    /// The hash of block `number`, if the chain has it.
    pub fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        Ok(self
            .block_hashes
            .open(&self.txn)?
            .get(number)?
            .map(|guard| B256::from(*guard.value())))
    }

    /// The number of the block with `hash`, if the chain has it.
    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>> {
        Ok(self
            .block_numbers
            .open(&self.txn)?
            .get(&hash.0)?
            .map(|guard| guard.value()))
    }

    /// The header of block `number`.
    pub fn header(&self, number: u64) -> Result<Option<Header>> {
        let Some(guard) = self.headers.open(&self.txn)?.get(number)? else {
            return Ok(None);
        };
        let header = Header::decode(&mut guard.value())
            .map_err(|error| StorageError::Corrupt(format!("header {number}: {error}")))?;
        Ok(Some(header))
    }

    /// The whole block `number`.
    pub fn block(&self, number: u64) -> Result<Option<SealedBlock>> {
        let Some(header) = self.headers.open(&self.txn)?.get(number)? else {
            return Ok(None);
        };
        let body = self
            .bodies
            .open(&self.txn)?
            .get(number)?
            .ok_or_else(|| StorageError::Corrupt(format!("block {number} has no body")))?;
        Ok(Some(SealedBlock::decode(header.value(), body.value())?))
    }

    /// The receipts of block `number`, in transaction order.
    pub fn receipts(&self, number: u64) -> Result<Option<Vec<ReceiptEnvelope>>> {
        let Some(guard) = self.receipts.open(&self.txn)?.get(number)? else {
            return Ok(None);
        };
        let receipts = Vec::<ReceiptEnvelope>::decode(&mut guard.value())
            .map_err(|error| StorageError::Corrupt(format!("receipts {number}: {error}")))?;
        Ok(Some(receipts))
    }

    /// Block `number` with its receipts, decoded from disk; a stored block whose receipts do
    /// not pair with its transactions is a damaged store.
    pub fn block_with_receipts(&self, number: u64) -> Result<Option<BlockWithReceipts>> {
        let Some(block) = self.block(number)? else {
            return Ok(None);
        };
        let receipts = self.receipts(number)?.unwrap_or_default();
        if receipts.len() != block.transactions.len() {
            return Err(StorageError::Corrupt(format!(
                "block {number} has {} transactions and {} receipts",
                block.transactions.len(),
                receipts.len()
            )));
        }
        Ok(Some(BlockWithReceipts::new(block, receipts)))
    }

    /// Where the transaction with `hash` was included.
    pub fn tx_location(&self, hash: &B256) -> Result<Option<TxLocation>> {
        Ok(self
            .tx_locations
            .open(&self.txn)?
            .get(&hash.0)?
            .map(|guard| {
                let bytes = guard.value();
                TxLocation {
                    block_number: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
                    index: u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes")),
                }
            }))
    }

    /// Blocks in `from..=to` where `address` emitted logs, ascending.
    pub fn log_blocks(&self, address: &Address, from: u64, to: u64) -> Result<Vec<u64>> {
        let start = log_address_key(address, from);
        let end = log_address_key(address, to);
        let mut blocks = Vec::new();
        for entry in self
            .log_addresses
            .open(&self.txn)?
            .range::<&[u8; 28]>(&start..=&end)?
        {
            let (key, _) = entry?;
            blocks.push(u64::from_be_bytes(
                key.value()[20..].try_into().expect("8 bytes"),
            ));
        }
        Ok(blocks)
    }

    /// The account at `address`, if it exists.
    pub fn account(&self, address: &Address) -> Result<Option<AccountRecord>> {
        self.account_hashed(&keccak256(address))
    }

    /// The account whose hashed address is `hashed_address`.
    pub fn account_hashed(&self, hashed_address: &B256) -> Result<Option<AccountRecord>> {
        if let Some((number, _)) = self.state_at {
            if let Some(before) = crate::history::account_at(
                self.account_history.open(&self.txn)?,
                hashed_address,
                number,
                self.indexed,
            )? {
                return Ok(before);
            }
            if let Some(before) = self.unindexed()?.accounts.get(hashed_address) {
                return Ok(*before);
            }
        }
        let Some(guard) = self.accounts.open(&self.txn)?.get(&hashed_address.0)? else {
            return Ok(None);
        };
        Ok(Some(AccountRecord::decode(guard.value())?))
    }

    /// The value of `slot` in the storage of `address` (zero when unset).
    pub fn storage(&self, address: &Address, slot: &B256) -> Result<U256> {
        self.storage_hashed(&keccak256(address), &keccak256(slot))
    }

    /// The value of a storage slot by hashed address and hashed slot.
    pub fn storage_hashed(&self, hashed_address: &B256, hashed_slot: &B256) -> Result<U256> {
        if let Some((number, _)) = self.state_at {
            if let Some(before) = crate::history::storage_at(
                self.storage_history.open(&self.txn)?,
                hashed_address,
                hashed_slot,
                number,
                self.indexed,
            )? {
                return Ok(before);
            }
            if let Some(before) = self
                .unindexed()?
                .storage
                .get(&(*hashed_address, *hashed_slot))
            {
                return Ok(*before);
            }
        }
        let key = storage_key(hashed_address, hashed_slot);
        Ok(self
            .storage
            .open(&self.txn)?
            .get(&key)?
            .map(|guard| U256::from_be_bytes(*guard.value()))
            .unwrap_or_default())
    }

    /// Contract code by its hash.
    pub fn code(&self, hash: &B256) -> Result<Option<Bytes>> {
        Ok(self
            .codes
            .open(&self.txn)?
            .get(&hash.0)?
            .map(|guard| Bytes::copy_from_slice(guard.value())))
    }

    /// Every non-zero slot of one account, ascending by hashed slot.
    pub fn storage_slots(&self, hashed_address: &B256) -> Result<SlotIter<'_>> {
        let (start, end) = storage_range(hashed_address);
        let range = self
            .storage
            .open(&self.txn)?
            .range::<&[u8; 64]>(&start..=&end)?;
        let stored = range.map(|entry| {
            let (key, value) = entry?;
            Ok((
                B256::from_slice(&key.value()[32..]),
                U256::from_be_bytes(*value.value()),
            ))
        });
        Ok(match self.overlay()? {
            None => Box::new(stored),
            Some(overlay) => {
                let changed = overlay
                    .storage
                    .range(
                        (*hashed_address, B256::ZERO)..=(*hashed_address, B256::repeat_byte(0xff)),
                    )
                    .map(|((_, slot), value)| (*slot, (!value.is_zero()).then_some(*value)));
                Box::new(merge(stored, changed))
            }
        })
    }

    /// Every account, ascending by hashed address. On a view of an older block, the accounts
    /// as they were then (the state tables under [`Snapshot::overlay`]).
    pub fn accounts(&self) -> Result<AccountIter<'_>> {
        let range = self.accounts.open(&self.txn)?.range::<&[u8; 32]>(..)?;
        let stored = range.map(|entry| {
            let (key, value) = entry?;
            Ok((
                B256::from(*key.value()),
                AccountRecord::decode(value.value())?,
            ))
        });
        Ok(match self.overlay()? {
            None => Box::new(stored),
            Some(overlay) => Box::new(merge(
                stored,
                overlay.accounts.iter().map(|(key, value)| (*key, *value)),
            )),
        })
    }

    /// For a view of an older block: every key changed after it, with its value at the block
    /// (the "before" of its first change), from the change sets of the blocks above, at most
    /// [`keel_primitives::limits::STATE_WALK_HISTORY_BLOCKS_MAX`] of them. `None` for the head.
    fn overlay(&self) -> Result<Option<&Overlay>> {
        let Some((number, _)) = self.state_at else {
            return Ok(None);
        };
        if number >= self.indexed {
            // The same blocks as the single reads': decoded once for both.
            return self.unindexed().map(Some);
        }
        if let Some(overlay) = self.overlay.get() {
            return Ok(Some(overlay));
        }
        if self.head.0 - number > keel_primitives::limits::STATE_WALK_HISTORY_BLOCKS_MAX {
            return Err(StorageError::NotHead { number });
        }
        let overlay = self.changes_after(number)?;
        Ok(Some(self.overlay.get_or_init(|| overlay)))
    }

    /// For a view of an older block: what the blocks above both it and the index's cursor
    /// changed, with the values before (at most `HISTORY_UNINDEXED_BLOCKS_MAX` blocks; none
    /// when the index reaches the head).
    fn unindexed(&self) -> Result<&Overlay> {
        if let Some(overlay) = self.unindexed.get() {
            return Ok(overlay);
        }
        let after = self.state_block().0.max(self.indexed);
        let overlay = self.changes_after(after)?;
        Ok(self.unindexed.get_or_init(|| overlay))
    }

    /// Every key the blocks from `number + 1` to the head changed, with its value before the
    /// first of them that did: the state at `number` where it differs from the head's.
    fn changes_after(&self, number: u64) -> Result<Overlay> {
        let mut overlay = Overlay::default();
        for block in number + 1..=self.head.0 {
            let guard = self
                .change_sets
                .open(&self.txn)?
                .get(block)?
                .ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "block {block} above the floor has no change set"
                    ))
                })?;
            let set = crate::change_set::ChangeSet::decode(guard.value())?;
            for (hashed, before) in set.accounts {
                overlay.accounts.entry(hashed).or_insert(before);
            }
            for (hashed, slot, before) in set.storage {
                overlay.storage.entry((hashed, slot)).or_insert(before);
            }
        }
        Ok(overlay)
    }
}

/// Accounts in ascending hashed order, as a walk over the state yields them.
pub type AccountIter<'a> = Box<dyn Iterator<Item = Result<(B256, AccountRecord)>> + 'a>;
/// Slots of one account in ascending hashed order (no zero values).
pub type SlotIter<'a> = Box<dyn Iterator<Item = Result<(B256, U256)>> + 'a>;

/// What changed after an older view's block, with the values at that block.
#[derive(Debug, Default)]
struct Overlay {
    accounts: std::collections::BTreeMap<B256, Option<AccountRecord>>,
    /// Zero: absent at the block.
    storage: std::collections::BTreeMap<(B256, B256), U256>,
}

/// The stored entries (ascending) with the changed ones laid over them (ascending; `None`:
/// absent), ascending.
fn merge<'a, V: 'a>(
    stored: impl Iterator<Item = Result<(B256, V)>> + 'a,
    changed: impl Iterator<Item = (B256, Option<V>)> + 'a,
) -> impl Iterator<Item = Result<(B256, V)>> + 'a {
    let mut stored = stored.peekable();
    let mut changed = changed.peekable();
    std::iter::from_fn(move || {
        loop {
            let next_stored = match stored.peek() {
                Some(Ok((key, _))) => Some(*key),
                Some(Err(_)) => return stored.next(),
                None => None,
            };
            let next_changed = changed.peek().map(|(key, _)| *key);
            match (next_stored, next_changed) {
                (None, None) => return None,
                (Some(stored_key), Some(changed_key)) if changed_key <= stored_key => {
                    if changed_key == stored_key {
                        stored.next();
                    }
                    let (key, value) = changed.next().expect("peeked");
                    if let Some(value) = value {
                        return Some(Ok((key, value)));
                    }
                }
                (Some(_), _) => return stored.next(),
                (None, Some(_)) => {
                    let (key, value) = changed.next().expect("peeked");
                    if let Some(value) = value {
                        return Some(Ok((key, value)));
                    }
                }
            }
        }
    })
}
