//! The state a block executes against: the parent's stored state under the writes of the
//! transactions already in the block.
//!
//! ### Correctness: the transaction checkpoint (docs/design.md R2)
//! revm runs a transaction in its own journal and returns the touched accounts without writing
//! anything here. [`BlockState::commit`] is called only for a transaction that passed every
//! check and whose result the block keeps. A transaction that fails validation is dropped with
//! its journal, so it leaves no trace: the next transaction sees exactly the state before it.

use alloy::consensus::EMPTY_ROOT_HASH;
use alloy::consensus::constants::KECCAK_EMPTY;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use keel_primitives::trie::Bucket;
use keel_primitives::{AccountRecord, trie};
use keel_storage::{AccountBuckets, BucketChanges, Snapshot, StateChanges};
use revm::bytecode::Bytecode;
use revm::database_interface::DBErrorMarker;
use revm::primitives::{AddressMap, StorageKey, StorageValue};
use revm::state::{Account, AccountInfo};
use revm::{Database, DatabaseCommit};
use std::collections::{BTreeMap, HashMap};

/// A read of the parent state failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StateReadError(pub String);

impl DBErrorMarker for StateReadError {}

impl From<keel_storage::StorageError> for StateReadError {
    fn from(error: keel_storage::StorageError) -> Self {
        Self(error.to_string())
    }
}

/// A state override that cannot be applied, in geth's words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OverrideError {
    /// Both `state` and `stateDiff` for one account.
    #[error("account {0} has both 'state' and 'stateDiff'")]
    BothStateAndDiff(Address),
    /// `movePrecompileToAddress`, which keel does not serve.
    #[error("movePrecompileToAddress is not supported")]
    MovePrecompile,
    /// A block override keel does not apply on this method.
    #[error("block override \"{0}\" is not supported for this RPC method")]
    BlockField(&'static str),
    /// A block override's value does not fit the header field.
    #[error("block override \"{0}\" does not fit 64 bits")]
    TooLarge(&'static str),
    /// Reading the state under the override failed.
    #[error(transparent)]
    Read(#[from] StateReadError),
}

/// What the block did to one account so far.
#[derive(Debug, Clone, Default)]
struct AccountWrites {
    /// Latest account; `None` once destroyed (or cleared as empty, EIP-161).
    info: Option<AccountInfo>,
    /// The parent's storage no longer applies (the account was destroyed or created anew).
    storage_cleared: bool,
    /// Slots written by the block, by plain slot.
    storage: HashMap<U256, U256>,
}

/// The parent state plus the writes of this block's committed transactions.
#[derive(Clone)]
pub struct BlockState<'a> {
    parent: &'a Snapshot,
    writes: HashMap<Address, AccountWrites>,
    /// Code loaded or created during the block, by hash (analysed once per block).
    codes: HashMap<B256, Bytecode>,
    /// Code created by this block, to persist.
    new_codes: Vec<(B256, Bytes)>,
    /// Block hashes that BLOCKHASH answers instead of the chain's: a call's `blockHash`
    /// override and the blocks `eth_simulateV1` made. Empty for a real block.
    block_hashes: BTreeMap<u64, B256>,
}

impl std::fmt::Debug for BlockState<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlockState")
            .field("accounts_written", &self.writes.len())
            .finish()
    }
}

impl<'a> BlockState<'a> {
    /// A state with no writes yet, over `parent`.
    pub fn new(parent: &'a Snapshot) -> Self {
        Self {
            parent,
            writes: HashMap::new(),
            codes: HashMap::new(),
            new_codes: Vec::new(),
            block_hashes: BTreeMap::new(),
        }
    }

    /// Makes BLOCKHASH answer `hash` for block `number` (calls and simulations only).
    pub fn set_block_hash(&mut self, number: u64, hash: B256) {
        self.block_hashes.insert(number, hash);
    }

    /// The parent view.
    pub fn parent(&self) -> &'a Snapshot {
        self.parent
    }

    /// Lays geth's state overrides (`eth_call`'s third parameter) over the state, as if a
    /// block before the call had written them: balance, nonce, code, the whole storage
    /// (`state`) or some slots (`stateDiff`). Only calls use it; a block never does.
    pub fn apply_overrides(
        &mut self,
        overrides: &alloy::rpc::types::state::StateOverride,
    ) -> Result<(), OverrideError> {
        for (address, change) in overrides {
            if change.state.is_some() && change.state_diff.is_some() {
                return Err(OverrideError::BothStateAndDiff(*address));
            }
            if change.move_precompile_to.is_some() {
                return Err(OverrideError::MovePrecompile);
            }
            let mut info = Database::basic(self, *address)?.unwrap_or_default();
            if let Some(balance) = change.balance {
                info.balance = balance;
            }
            if let Some(nonce) = change.nonce {
                info.nonce = nonce;
            }
            if let Some(code) = &change.code {
                let bytecode = Bytecode::new_raw(code.clone());
                info.code_hash = bytecode.hash_slow();
                self.codes.insert(info.code_hash, bytecode.clone());
                info.code = Some(bytecode);
            }
            let writes = self.writes.entry(*address).or_default();
            if let Some(state) = &change.state {
                writes.storage_cleared = true;
                writes.storage = state
                    .iter()
                    .map(|(slot, value)| ((*slot).into(), (*value).into()))
                    .collect();
            }
            if let Some(diff) = &change.state_diff {
                for (slot, value) in diff {
                    writes.storage.insert((*slot).into(), (*value).into());
                }
            }
            writes.info = Some(info);
        }
        Ok(())
    }

    fn commit_account(&mut self, address: Address, account: Account) {
        if !account.is_touched() {
            return;
        }
        let writes = self.writes.entry(address).or_default();
        // Destroyed accounts and, after Spurious Dragon, touched empty ones leave the state.
        if account.is_selfdestructed() || account.is_empty() {
            writes.info = None;
            writes.storage_cleared = true;
            writes.storage.clear();
            return;
        }
        if account.is_created() {
            writes.storage_cleared = true;
            writes.storage.clear();
        }
        let mut info = account.info;
        if let Some(code) = info.code.take()
            && info.code_hash != KECCAK_EMPTY
            && !self.codes.contains_key(&info.code_hash)
        {
            self.new_codes.push((info.code_hash, code.original_bytes()));
            self.codes.insert(info.code_hash, code);
        }
        for (slot, value) in account.storage {
            if value.is_changed() {
                writes.storage.insert(slot, value.present_value());
            }
        }
        writes.info = Some(info);
    }

    /// The block's effect on the state, with storage roots and the new state root.
    ///
    /// Storage roots are recomputed only for accounts whose storage the block wrote; the state
    /// root is one ordered walk over the parent's accounts merged with the changed ones.
    pub fn into_changes(self) -> Result<(StateChanges, B256), StateReadError> {
        let mut changes = StateChanges::default();
        let mut changed: BTreeMap<B256, Option<AccountRecord>> = BTreeMap::new();
        let mut accounts_delta = 0i64;
        for (address, writes) in self.writes {
            let hashed_address = keccak256(address);
            if writes.storage_cleared {
                changes.storage_wipes.push(hashed_address);
            }
            let parent_record = self.parent.account_hashed(&hashed_address)?;
            let Some(info) = writes.info else {
                accounts_delta -= i64::from(parent_record.is_some());
                changed.insert(hashed_address, None);
                continue;
            };
            accounts_delta += i64::from(parent_record.is_none());
            let storage_root = if writes.storage.is_empty() {
                match (writes.storage_cleared, parent_record) {
                    (false, Some(parent)) => parent.storage_root,
                    _ => EMPTY_ROOT_HASH,
                }
            } else {
                let mut slots: BTreeMap<B256, U256> = BTreeMap::new();
                if !writes.storage_cleared {
                    for entry in self.parent.storage_slots(&hashed_address)? {
                        let (hashed_slot, value) = entry?;
                        slots.insert(hashed_slot, value);
                    }
                }
                for (slot, value) in writes.storage {
                    let hashed_slot = keccak256(B256::from(slot));
                    slots.insert(hashed_slot, value);
                    changes.storage.push((hashed_address, hashed_slot, value));
                }
                trie::storage_root_sorted(slots.into_iter().filter(|(_, value)| !value.is_zero()))
            };
            let record = AccountRecord {
                nonce: info.nonce,
                balance: info.balance,
                code_hash: info.code_hash,
                storage_root,
            };
            changed.insert(hashed_address, Some(record));
        }
        changes.storage.sort();
        changes.storage_wipes.sort();
        changes.codes = self.new_codes;
        let state_root = match self.parent.account_buckets() {
            Some(cache) => {
                let (root, buckets) =
                    bucketed_state_root(self.parent, cache, &changed, accounts_delta)?;
                changes.buckets = Some(buckets);
                root
            }
            None => walked_state_root(self.parent, &changed)?,
        };
        changes.accounts = changed.into_iter().collect();
        Ok((changes, state_root))
    }
}

/// Merges stored accounts (ascending) with updates (ascending; `None` removes) into the
/// resulting accounts, ascending.
fn merge_accounts<'u>(
    stored: impl Iterator<Item = Result<(B256, AccountRecord), keel_storage::StorageError>>,
    updates: impl Iterator<Item = (&'u B256, &'u Option<AccountRecord>)>,
    out: &mut Vec<(B256, AccountRecord)>,
) -> Result<(), StateReadError> {
    let mut stored = stored.peekable();
    let mut updates = updates.peekable();
    loop {
        let next_stored = match stored.peek() {
            Some(Ok((key, _))) => Some(*key),
            Some(Err(_)) => return Err(stored.next().expect("peeked").unwrap_err().into()),
            None => None,
        };
        let next_update = updates.peek().map(|(key, _)| **key);
        match (next_stored, next_update) {
            (None, None) => return Ok(()),
            (Some(stored_key), Some(update_key)) if update_key <= stored_key => {
                if update_key == stored_key {
                    stored.next();
                }
                let (_, record) = updates.next().expect("peeked");
                out.extend(record.map(|record| (update_key, record)));
            }
            (Some(_), _) => out.push(stored.next().expect("peeked")?),
            (None, Some(update_key)) => {
                let (_, record) = updates.next().expect("peeked");
                out.extend(record.map(|record| (update_key, record)));
            }
        }
    }
}

/// The state root of the parent's accounts overridden by `changed`, by one walk over every
/// account (used when no bucket cache describes the parent).
fn walked_state_root(
    parent: &Snapshot,
    changed: &BTreeMap<B256, Option<AccountRecord>>,
) -> Result<B256, StateReadError> {
    let mut merged = Vec::new();
    merge_accounts(parent.accounts()?, changed.iter(), &mut merged)?;
    Ok(trie::state_root_sorted(merged))
}

/// The state root from the parent's bucket cache: touched buckets are recomputed from their
/// accounts, every other bucket enters the root as its cached branch hash.
fn bucketed_state_root(
    parent: &Snapshot,
    cache: &AccountBuckets,
    changed: &BTreeMap<B256, Option<AccountRecord>>,
    accounts_delta: i64,
) -> Result<(B256, BucketChanges), StateReadError> {
    let depth = cache.depth;
    let mut touched: BTreeMap<usize, Vec<(&B256, &Option<AccountRecord>)>> = BTreeMap::new();
    for (hashed, record) in changed {
        touched
            .entry(trie::bucket_index(hashed, depth))
            .or_default()
            .push((hashed, record));
    }
    let mut root = trie::RootBuilder::default();
    let mut entries = Vec::with_capacity(touched.len());
    let mut members = Vec::new();
    for (index, cached) in cache.buckets.iter().enumerate() {
        let updates = touched.remove(&index);
        if updates.is_none() && *cached != Bucket::Leaves {
            root.add_bucket(index, depth, *cached, &[]);
            continue;
        }
        let (first, last) = trie::bucket_range(index, depth);
        members.clear();
        merge_accounts(
            parent.accounts_in(&first, &last)?,
            updates.into_iter().flatten(),
            &mut members,
        )?;
        let bucket = trie::bucket_of(&members, depth);
        root.add_bucket(index, depth, bucket, &members);
        if bucket != *cached {
            entries.push((index, bucket));
        }
    }
    Ok((
        root.root(),
        BucketChanges {
            depth,
            entries,
            accounts_delta,
        },
    ))
}

impl Database for BlockState<'_> {
    type Error = StateReadError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        // `code: None` makes revm load the code through `code_by_hash` (AccountInfo's default
        // carries empty code, which would run every contract as an empty account).
        revm::DatabaseRef::basic_ref(self, address)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        let code = revm::DatabaseRef::code_by_hash_ref(self, code_hash)?;
        if code_hash != KECCAK_EMPTY {
            self.codes.entry(code_hash).or_insert_with(|| code.clone());
        }
        Ok(code)
    }

    fn storage(
        &mut self,
        address: Address,
        index: StorageKey,
    ) -> Result<StorageValue, Self::Error> {
        revm::DatabaseRef::storage_ref(self, address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, Self::Error> {
        revm::DatabaseRef::block_hash_ref(self, number)
    }
}

impl DatabaseCommit for BlockState<'_> {
    fn commit(&mut self, changes: AddressMap<Account>) {
        for (address, account) in changes {
            self.commit_account(address, account);
        }
    }
}

/// The reads themselves; [`Database`] adds the code cache. The prestate tracer reads through
/// this, the state before a transaction after the transaction ran.
impl revm::DatabaseRef for BlockState<'_> {
    type Error = StateReadError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        if let Some(writes) = self.writes.get(&address) {
            return Ok(writes.info.clone());
        }
        Ok(self.parent.account(&address)?.map(|record| AccountInfo {
            balance: record.balance,
            nonce: record.nonce,
            code_hash: record.code_hash,
            code: None,
            ..Default::default()
        }))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        if code_hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self.codes.get(&code_hash) {
            return Ok(code.clone());
        }
        let bytes = self
            .parent
            .code(&code_hash)?
            .ok_or_else(|| StateReadError(format!("code {code_hash} missing from the store")))?;
        Ok(Bytecode::new_raw(bytes))
    }

    fn storage_ref(
        &self,
        address: Address,
        index: StorageKey,
    ) -> Result<StorageValue, Self::Error> {
        if let Some(writes) = self.writes.get(&address) {
            if let Some(value) = writes.storage.get(&index) {
                return Ok(*value);
            }
            if writes.storage_cleared {
                return Ok(U256::ZERO);
            }
        }
        Ok(self.parent.storage(&address, &B256::from(index))?)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, Self::Error> {
        if let Some(hash) = self.block_hashes.get(&number) {
            return Ok(*hash);
        }
        Ok(self.parent.block_hash(number)?.unwrap_or_default())
    }
}
